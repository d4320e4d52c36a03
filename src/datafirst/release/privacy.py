"""The privacy guard and the key check that every release must pass.

The guard fails a release when any value present in the identifiers zone (names, postcodes,
PNC and CRO numbers, other ids, dates of birth written as text) or any raw native id
appears in any text column of any product, or when a date column looks like dates of birth
(it equals the record's own date of birth far more often than chance). The key check fails
it when a key documented as unique is not.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string
from ..sources.contract import Contract

MIN_NAME_LENGTH = 4  # shorter names (Al, Li, Ng) collide with codes and words; the other checks still hold
DOB_LIKE_SHARE = 0.05  # a date column equal to the record's own birth date this often is a birth date
# The shape of a keyed hash (products.HASH_CHARS hex digits) and of a person id (the same after
# a 'P'). Most of a release's text is such values, and they are all distinct, so joining them
# to the sensitive values is most of the guard's work; a value of this shape can equal a
# sensitive value only if a sensitive value has the shape too, which is checked (see
# `build_sensitive_values`), and when one does, every value is joined.
HASH_SHAPED = "^P?[0-9a-f]{20}$"


def build_sensitive_values(engine: Engine, identifiers_glob: Path, content_dir: Path, contracts: list[Contract],
                           clusters: Path) -> int:
    ids = f"read_parquet({sql_string(identifiers_glob)}, union_by_name = true)"
    # The links zone's internal cluster ids are unkeyed digests of record keys: never released.
    internal = [f"SELECT lower(person_id_{t}), 'internal cluster id' FROM read_parquet({sql_string(clusters)})"
                for t in ("high", "medium", "low")]
    parts = [
        f"SELECT lower(surname) AS v, 'surname' AS kind FROM {ids} WHERE length(surname) >= {MIN_NAME_LENGTH}",
        f"SELECT lower(forename), 'forename' FROM {ids} WHERE length(forename) >= {MIN_NAME_LENGTH}",
        f"SELECT lower(pnc), 'pnc' FROM {ids} WHERE pnc IS NOT NULL",
        f"SELECT lower(cro), 'cro' FROM {ids} WHERE cro IS NOT NULL",
        f"SELECT lower(other_id), 'other id' FROM {ids} WHERE other_id IS NOT NULL",
        f"SELECT lower(postcode), 'postcode' FROM {ids} WHERE postcode IS NOT NULL",
        f"SELECT lower(replace(postcode, ' ', '')), 'postcode' FROM {ids} WHERE postcode IS NOT NULL",
        f"SELECT strftime(date_of_birth, '%Y-%m-%d'), 'date of birth' FROM {ids} WHERE date_of_birth IS NOT NULL",
        f"SELECT strftime(date_of_birth, '%d/%m/%Y'), 'date of birth' FROM {ids} WHERE date_of_birth IS NOT NULL",
        *internal,
    ]
    for contract in contracts:
        for name, spec in contract.tables.items():
            path = content_dir / f"{contract.table_key(name)}.parquet"
            for col, cspec in spec.columns.items():
                if cspec.native_id and path.is_file():
                    parts.append(f"SELECT lower(CAST(\"{col}\" AS VARCHAR)), 'native id' FROM read_parquet({sql_string(path)}) "
                                 f"WHERE \"{col}\" IS NOT NULL")
            parts.append(f"SELECT lower(record_key), 'record key' FROM read_parquet({sql_string(path)})"
                         if path.is_file() else "SELECT NULL, NULL WHERE false")
    # Not temp tables: they may be built by a job on another connection (Engine.concurrently)
    # while the products are written.
    engine.execute("CREATE OR REPLACE TABLE sensitive_values AS SELECT DISTINCT v, kind FROM ("
                   + " UNION ALL ".join(parts) + ") WHERE v IS NOT NULL AND v <> ''")
    engine.execute(f"""CREATE OR REPLACE TABLE sensitive_hash_shaped AS
        SELECT count(*) AS n FROM sensitive_values WHERE regexp_matches(v, {sql_string(HASH_SHAPED.replace('P', 'p'))})""")
    engine.execute(f"""CREATE OR REPLACE TABLE birth_dates AS
        SELECT keyed_hash(record_key) AS row_id_hash, date_of_birth FROM {ids} WHERE date_of_birth IS NOT NULL""")
    return int(engine.scalar("SELECT count(*) FROM sensitive_values"))


def check_table(engine: Engine, name: str, path: Path, allow: set[str]) -> list[str]:
    """Problems found in one product table (empty when it is clean)."""
    return check_tables(engine, {name: path}, allow)


def check_tables(engine: Engine, tables: dict[str, Path], allow: set[str]) -> list[str]:
    """Problems found in product tables (name -> Parquet file); empty when they are clean."""
    problems = []
    text = []
    for name, path in tables.items():
        rel = f"read_parquet({sql_string(path)})"
        schema = engine.schema(rel)
        # Each text column's distinct values, counted (codes and person ids repeat). Hashes and
        # person ids are left out when no sensitive value has their shape (see HASH_SHAPED).
        text += [f"""SELECT {sql_string(name)} AS tbl, {sql_string(c)} AS col, "{c}" AS v, count(*) AS n FROM {rel}
                     WHERE NOT regexp_matches("{c}", {sql_string(HASH_SHAPED)}) OR (SELECT n FROM sensitive_hash_shaped) > 0
                     GROUP BY ALL""" for c, t in schema if t == "VARCHAR" and f"{name}.{c}" not in allow]
        problems += _list_and_date_problems(engine, name, rel, schema, allow)
    if text:
        # Every text column of every table in one join, so that the sensitive values (millions)
        # are hashed once rather than once per table.
        hits = engine.execute(f"""SELECT p.tbl, p.col, s.kind, CAST(sum(p.n) AS BIGINT)
                                  FROM ({" UNION ALL ".join(text)}) p JOIN sensitive_values s ON lower(trim(p.v)) = s.v
                                  GROUP BY ALL ORDER BY 1, 2, 4 DESC""")
        problems = [f"{name}.{col}: {n:,} value(s) equal to a {kind} from the identifiers zone"
                    for name, col, kind, n in hits] + problems
    return problems


def _list_and_date_problems(engine: Engine, name: str, rel: str, schema: list[tuple[str, str]],
                            allow: set[str]) -> list[str]:
    problems = []
    for col, ctype in schema:
        if f"{name}.{col}" in allow:
            continue
        q = '"' + col + '"'
        if ctype == "VARCHAR[]":
            hits = engine.execute(f"""SELECT s.kind, count(*) FROM (SELECT unnest({q}) AS x FROM {rel}) p
                                      JOIN sensitive_values s ON lower(trim(p.x)) = s.v GROUP BY 1""")
            for kind, n in hits:
                problems.append(f"{name}.{col}: {n:,} list value(s) equal to a {kind} from the identifiers zone")
        elif ctype == "DATE" and "row_id_hash" in {c for c, _ in schema}:
            share = engine.scalar(f"""SELECT avg(CASE WHEN p.{q} = b.date_of_birth THEN 1.0 ELSE 0 END)
                                      FROM {rel} p JOIN birth_dates b USING (row_id_hash) WHERE p.{q} IS NOT NULL""")
            if share is not None and share > DOB_LIKE_SHARE:
                problems.append(f"{name}.{col}: equals the record's own date of birth in {share:.0%} of rows; "
                                "full dates of birth must not be released (use year_of_birth)")
    return problems


def check_keys(engine: Engine, name: str, path: Path, keys: list[str], facts: dict[str, dict] | None = None) -> list[str]:
    """Problems with a table's documented key. `facts` (the dictionary's, by column) answer for a
    one-column key without another scan: unique and never empty when its distinct values
    (which leave out NULL) are as many as the rows."""
    if facts is not None and len(keys) == 1:
        rows, distinct = facts[keys[0]]["rows"], facts[keys[0]]["distinct_values"]
        null_rows = facts[keys[0]]["missing"]
        distinct += 1 if null_rows else 0  # count(DISTINCT) leaves NULL out; a scan would count it
    else:
        rel = f"read_parquet({sql_string(path)})"
        cols = ", ".join('"' + k + '"' for k in keys)
        nulls = " OR ".join(f'"{k}" IS NULL' for k in keys)
        rows, distinct, null_rows = engine.execute(
            f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {rel})), "
            f"count(*) FILTER (WHERE {nulls}) FROM {rel}")[0]
    problems = []
    if distinct != rows:
        problems.append(f"{name}: key ({', '.join(keys)}) is documented unique but {rows - distinct:,} rows repeat it")
    if null_rows:
        problems.append(f"{name}: key ({', '.join(keys)}) is empty in {null_rows:,} rows")
    return problems
