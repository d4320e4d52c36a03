"""Encode a party's standardised identifiers as keyed Bloom filters and keyed match keys.

Run by each data holder (`datafirst encode`). All of it runs in the engine's SQL, per distinct
value rather than per record: a field's distinct values are cut into tokens, each distinct token
(with its salt, under salting) gets its positions from keyed SHA-256 digests, each value's filter
is the OR of its tokens' positions as 64-bit words, and the records join their values' filters.

Positions: for token t of field f (salt s), digest b = SHA256(K || SHA256(K || "|f|s|t|b")) (an
envelope MAC: K is never at the end, so SHA-256's length extension cannot forge one), and
position j is the 16-bit slice j of digest j // 16, modulo the filter's bits (a power of two, so
no bias). Every position is an independent keyed hash: not clkhash's h1 + i*h2 (clkhash#33),
whose positions of a token lie on one arithmetic progression an attacker can recover.

The secret stays out of the SQL text (a session variable set with a parameter, reset after).
The output holds an opaque record token (a keyed hash of the party and its record key), each
field's filter words and the match keys; its Parquet metadata says which schema, standardisation
and party made it, and a key check (a keyed hash of a constant) that lets the linker refuse two
files made with different secrets without learning the secret.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__
from ..engine import Engine, sql_string
from .schema import (
    SCHEMA_FORMAT,
    STANDARDISATION_VERSION,
    EncodedField,
    LoadedSchema,
    Schema,
)

METADATA_KEY = "datafirst_pprl"
SECRET_VARIABLE = "datafirst_pprl_secret"
IDS = "pprl_identifiers"
ALL_ONES = (1 << 64) - 1
TOKEN_CHARS = 32  # 128 bits: the record token
MATCH_KEY_CHARS = 16  # 64 bits: a match key (collisions at 1e8 records: about one pair)


class EncodeError(Exception):
    """Input that cannot be encoded; the message says which and what to do."""


def keyed(message_sql: str) -> str:
    """SQL for the keyed hash (hex) of a message given as SQL; the key is the session variable."""
    k = f"getvariable('{SECRET_VARIABLE}')"
    return f"sha256({k} || sha256({k} || {message_sql}))"


def record_token_sql(party: str, record_key_sql: str) -> str:
    """SQL of a record's opaque token: a keyed hash of its party and record key. Only the holders
    of the secret can recompute it, which is how a party maps the linker's table back."""
    tag = sql_string(f"|record|{party}|")
    return f"substr({keyed(f'{tag} || {record_key_sql}')}, 1, {TOKEN_CHARS})"


def word_columns(field: str, words: int) -> list[str]:
    return [f"{field}__w{i}" for i in range(words)]


def identifier_inputs(path: Path) -> list[Path]:
    """The identifier files at `path`: a Parquet file, a folder of them, or a datafirst workspace
    (its identifiers zone)."""
    path = Path(path)
    if path.is_file():
        return [path]
    folder = path / "zones" / "identifiers" if (path / "datafirst.yaml").is_file() else path
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise EncodeError(f"{path}: no identifiers found (give a datafirst workspace after `datafirst standardise`, "
                          "its zones/identifiers folder, or a Parquet file of standardised identifiers)")
    return files


def value_sql(name: str, f: EncodedField) -> str:
    """SQL of a record's value of the field as text (NULL when it has none): the column, or for
    `tokens: columns` each present column's value tagged by its place (a district is not a sector)."""
    if f.tokens != "columns":
        return f"CAST({name} AS VARCHAR)"
    parts = ", ".join(f"CASE WHEN {c} IS NULL THEN NULL ELSE '{i}:' || CAST({c} AS VARCHAR) END"
                      for i, c in enumerate(f.columns or []))
    return f"nullif(concat_ws(chr(31), {parts}), '')"


def tokens_sql(f: EncodedField, v: str = "v") -> str:
    """SQL of the tokens (a list) of a value `v` given as text by value_sql."""
    if f.tokens == "qgrams":
        x = f"('_' || {v} || '_')" if f.pad else v
        return (f"CASE WHEN length({x}) <= {f.q} THEN [{x}] ELSE "
                f"list_transform(range(1, length({x}) - {f.q} + 2), lambda i: substr({x}, i, {f.q})) END")
    if f.tokens == "whole":
        return f"[{v}]"
    if f.tokens == "date_parts":  # year, month, day, and the unordered day-month pair (a swap keeps it)
        d = f"CAST({v} AS DATE)"
        return (f"['y' || year({d}), 'm' || month({d}), 'd' || day({d}), "
                f"'md' || least(month({d}), day({d})) || '-' || greatest(month({d}), day({d}))]")
    return f"string_split({v}, chr(31))"


def salt_sql(schema: Schema, name: str) -> str:
    hardening = schema.hardening_of(name)
    return f"coalesce(CAST({hardening.salt} AS VARCHAR), '')" if hardening.kind == "salt" else "''"


def _filter_table(engine: Engine, schema: Schema, name: str) -> str:
    """A table of the field's distinct (value, salt) with its raw filter words b0, b1, ...

    Distinct values, then distinct (salt, token) pairs numbered, so that the big join (a value's
    tokens to their positions) and the grouping run on integers (on the token lists themselves,
    FEBRL's 9,377 salted addresses took 12 s; on integers, well under one)."""
    f = schema.fields[name]
    table = f"pprl_filters_{name}"
    blocks = (f.hashes + 15) // 16
    bit_words = ", ".join(f"bit_or(CASE WHEN p // 64 = {w} THEN 1::UBIGINT << (p % 64) ELSE 0::UBIGINT END) AS b{w}"
                          for w in range(f.bits // 64))
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE {table} AS
        WITH vals AS (SELECT v, salt, row_number() OVER () AS vid FROM (
                          SELECT DISTINCT {value_sql(name, f)} AS v, {salt_sql(schema, name)} AS salt FROM {IDS})
                      WHERE v IS NOT NULL),
        vt AS (SELECT vid, salt, unnest({tokens_sql(f)}) AS t FROM vals),
        ut AS (SELECT salt, t, row_number() OVER () AS tid FROM (SELECT DISTINCT salt, t FROM vt)),
        dig AS (SELECT tid, b, {keyed(f"'|' || {sql_string(name)} || '|' || salt || '|' || t || '|' || b")} AS d
                FROM ut, range({blocks}) r(b)),
        pos AS (SELECT tid, unnest([CAST(('0x' || substr(d, 1 + 4 * j, 4))::INTEGER % {f.bits} AS INTEGER)
                                    for j in range(least(16, {f.hashes} - 16 * b))]) AS p FROM dig),
        vp AS (SELECT vt.vid, pos.p FROM vt JOIN ut USING (salt, t) JOIN pos USING (tid))
        SELECT vals.v, vals.salt, w.* EXCLUDE (vid) FROM vals JOIN (SELECT vid, {bit_words} FROM vp GROUP BY vid) w
        USING (vid)""")
    return table


def _hardened_words(schema: Schema, name: str) -> list[str]:
    """SQL of the stored words from the raw words b0.. (see schema.Hardening)."""
    words = schema.fields[name].bits // 64
    kind = schema.hardening_of(name).kind
    raw = [f"b{w}" for w in range(words)]
    if kind == "xor_fold":
        return [f"xor(b{w}, b{w + words // 2})" for w in range(words // 2)]
    if kind == "balance":
        return raw + [f"xor(b{w}, {ALL_ONES}::UBIGINT)" for w in range(words)]
    return raw


def encode(engine: Engine, loaded: LoadedSchema, secret: str, inputs: list[Path], out: Path, party: str,
           sources: list[str] | None = None) -> dict:
    """Encode the identifiers in `inputs` (only `sources`, if given) as party `party`; writes `out`
    and returns its metadata."""
    schema = loaded.schema
    if not party or not party.replace("_", "").replace("-", "").isalnum():
        raise EncodeError(f"party {party!r}: give a short name of letters, digits, - and _ (e.g. courts, education)")
    paths = "[" + ", ".join(sql_string(p) for p in inputs) + "]"
    have = {c for c, _ in engine.schema(f"(SELECT * FROM read_parquet({paths}) LIMIT 0)")}
    if "record_key" not in have:
        raise EncodeError(f"{inputs[0]}: no record_key column; encode the standardised identifiers (`datafirst "
                          "standardise` writes them), not an extract")
    missing = sorted(schema.source_columns() - have)
    # A column the schema reads but the input lacks is empty for every record (a source without it).
    cols = ", ".join(f"{c}" if c in have else f"NULL AS {c}" for c in sorted(schema.source_columns()))
    where = ""
    if sources:
        if "source" not in have:
            raise EncodeError(f"{inputs[0]}: no source column, so --source cannot choose records")
        known = {r[0] for r in engine.execute(f"SELECT DISTINCT source FROM read_parquet({paths})")}
        unknown = sorted(set(sources) - known)
        if unknown:
            raise EncodeError(f"--source {', '.join(unknown)}: not in the identifiers (they hold {', '.join(sorted(known))})")
        where = "WHERE source IN (" + ", ".join(sql_string(s) for s in sources) + ")"
    engine.execute(f"CREATE OR REPLACE TEMP TABLE {IDS} AS SELECT record_key, {cols} FROM read_parquet({paths}) {where}")
    records = int(engine.scalar(f"SELECT count(*) FROM {IDS}"))
    if not records:
        raise EncodeError("no records to encode" + (f" from sources {', '.join(sources)}" if sources else ""))
    engine.execute(f"SET VARIABLE {SECRET_VARIABLE} = ?", [secret])
    try:
        selects, joins = [], []
        for name, f in schema.fields.items():
            table = _filter_table(engine, schema, name)
            alias = f"f_{name}"
            joins.append(f"LEFT JOIN {table} {alias} ON {alias}.v = {value_sql(name, f)} AND {alias}.salt = "
                         f"{salt_sql(schema, name)}")
            for out_col, expr in zip(word_columns(name, schema.words(name)), _hardened_words(schema, name)):
                selects.append(f"CAST({_qualify(expr, alias)} AS UBIGINT) AS {out_col}")
        for key, key_cols in schema.match_keys.items():
            parts = " || '|' || ".join(f"CAST(i.{c} AS VARCHAR)" for c in key_cols)
            tag = sql_string(f"|mk|{key}|")
            selects.append(f"substr({keyed(f'{tag} || {parts}')}, 1, {MATCH_KEY_CHARS}) AS mk_{key}")
        token = record_token_sql(party, "i.record_key")
        key_check = engine.scalar(f"SELECT substr({keyed(sql_string('|key check|' + SCHEMA_FORMAT))}, 1, 16)")
        meta = {
            "format": SCHEMA_FORMAT, "schema_sha256": loaded.sha256, "schema_version": schema.version,
            "standardisation": STANDARDISATION_VERSION, "party": party, "records": records,
            "key_check": key_check, "datafirst": __version__,
            "encoded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fields": {n: {"bits": schema.encoded_bits(n), "hardening": schema.hardening_of(n).kind}
                       for n in schema.fields},
            "columns_empty": missing,
        }
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        kv = json.dumps(meta, sort_keys=True)
        # Rows in token order: the file says nothing of the order of the party's records.
        engine.execute(f"""COPY (SELECT {sql_string(party)} AS party, {token} AS token, {', '.join(selects)}
                                 FROM {IDS} i {' '.join(joins)} ORDER BY token)
                           TO {sql_string(out)} (FORMAT parquet, KV_METADATA {{{METADATA_KEY}: {sql_string(kv)}}})""")
    finally:
        engine.execute(f"RESET VARIABLE {SECRET_VARIABLE}")
        engine.execute(f"DROP TABLE IF EXISTS {IDS}")
        for name in schema.fields:
            engine.execute(f"DROP TABLE IF EXISTS pprl_filters_{name}")
    return meta


def _qualify(expr: str, alias: str) -> str:
    """`xor(b0, b4)` -> `xor(alias.b0, alias.b4)`: the raw words of one field's filter table."""
    return re.sub(r"\bb(\d+)\b", lambda m: f"{alias}.b{m.group(1)}", expr)


def read_metadata(engine: Engine, path: Path) -> dict:
    """An encoded file's metadata; EncodeError when the file is not one."""
    try:
        rows = engine.execute(f"SELECT decode(value) FROM parquet_kv_metadata({sql_string(path)}) "
                              f"WHERE decode(key) = {sql_string(METADATA_KEY)}")
    except Exception as exc:  # noqa: BLE001 - DuckDB's IO and format errors alike
        raise EncodeError(f"{path}: cannot read it as an encoded file ({str(exc).splitlines()[0]})") from None
    if not rows:
        raise EncodeError(f"{path}: not an encoded file (no {METADATA_KEY} metadata); make it with `datafirst encode`")
    return json.loads(rows[0][0])
