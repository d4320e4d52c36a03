"""The attack simulation: an EVALUATION TOOL that reads a source's raw extract (identifiable data,
on the data owner's side) and measures how many of its rows an attacker holding that extract
could pin to exactly one row of a release or package table, and how many of those pins are right.

The attacker matches on every column both hold: the table's content columns (its contract's
columns that are neither identifiers nor native ids: a court, a date, an outcome, a sentence),
under the package's treatments when it coarsened them (a raw date to its month, as the package
did). Missing values match missing values. A raw row is matched uniquely when exactly one table
row holds its values; correctly when that row is the raw row's own: the evaluator holds the
release salt, so it computes each raw row's row_id_hash as the release did (products.py's
keyed_hash of the record key) and, for a package re-keyed per project, re-keys it with the
project key as the package does (`project_keys.install_project_hash`), and compares. Everything runs in the engine; the salt and the project
key are session variables, never SQL text.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string
from ..release.products import forget_keyed_hash, install_keyed_hash
from ..sources.contract import Contract
from ..sources.ingest import _typed
from .project_keys import forget_project_hash, install_project_hash
from .projects import Treatment
from .risk import coarsened

EVALUATION_NOTE = ("evaluation tool: this reads the raw extract {path} (identifiable records); run it only on "
                   "the data owner's side, and keep its output with the release's disclosure review")


class AttackError(Exception):
    """An extract or table the attack cannot read; the message names it and what to do."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def raw_relation(contract: Contract, table: str, extracts: Path) -> str:
    """SQL reading the raw extract of `contract`'s `table`, every contract column typed as the
    contract says (dates by its formats), with the record key the release hashed."""
    spec = contract.tables.get(table)
    if spec is None:
        raise AttackError(f"contract {contract.source} has no table {table!r} (it has {', '.join(contract.tables)})")
    path = extracts / spec.file
    if not path.is_file():
        raise AttackError(f"the raw extract {path} does not exist; give the extracts folder the contract's "
                          f"`file: {spec.file}` is relative to")
    if spec.format != "csv" or not spec.header:
        raise AttackError(f"{path}: the attack reads delimited extracts with a header; {contract.source}.{table} is "
                          f"{spec.format}{'' if spec.header else ' without a header'}")
    parts = [f"CAST({_q(c)} AS VARCHAR)" for c in spec.record_id_columns]
    if len(parts) > 1:  # as ingest joins a composite id (sources/ingest.py)
        parts = [f"replace(replace({p}, '\\', '\\\\'), '|', '\\|')" for p in parts]
    key = f"{sql_string(contract.source)} || '|' || {sql_string(table)} || '|' || concat_ws('|', {', '.join(parts)})"
    typed = ", ".join(f"{_typed(_q(c), col)} AS {_q(c)}" for c, col in spec.columns.items())
    # Extracts are messy (a stray quote, a short line): an attacker uses the rows they can read, so
    # unreadable lines are skipped (ingest quarantines them, and the release never held them).
    read = (f"read_csv({sql_string(path)}, header = true, all_varchar = true, delim = {sql_string(spec.delimiter)}, "
            f"quote = {sql_string(spec.quote)}, strict_mode = false, null_padding = true, ignore_errors = true)")
    return f"(SELECT {key} AS _record_key, {typed} FROM {read})"


def attack(engine: Engine, contract: Contract, table: str, extracts: Path, target: Path, salt: str, *,
           treatments: dict[str, Treatment] | None = None, project_key: str | None = None) -> dict:
    """Match the raw extract of `contract`'s `table` against `target` (the release's table, or a
    package's), coarsening the raw values by `treatments` as the package did; re-key with
    `project_key` when the package's ids are the project's. Returns the figures, JSON-able."""
    spec = contract.tables.get(table)
    if spec is None:
        raise AttackError(f"contract {contract.source} has no table {table!r} (it has {', '.join(contract.tables)})")
    treatments = treatments or {}
    raw = raw_relation(contract, table, extracts)
    held = set(engine.columns(engine.parquet(target)))
    content = [c for c, col in spec.columns.items() if col.role is None and not col.native_id]
    columns = [c for c in content if c in held and treatments.get(c, "keep") != "drop"]
    if not columns:
        raise AttackError(f"{target} holds none of {contract.source}.{table}'s content columns: nothing to match on")
    install_keyed_hash(engine, salt)
    expected = "keyed_hash(r._record_key)"
    if project_key is not None:
        install_project_hash(engine, project_key)
        expected = f"project_hash({expected})"
    own_id = "min(row_id_hash)" if "row_id_hash" in held else "NULL::VARCHAR"
    cols = ", ".join(_q(c) for c in columns)
    raw_values = ", ".join(f"{coarsened(_q(c), treatments.get(c, 'keep'))} AS {_q(c)}" for c in columns)
    on = " AND ".join(f"r.{_q(c)} IS NOT DISTINCT FROM t.{_q(c)}" for c in columns)
    try:
        row = engine.execute(f"""
            WITH targets AS (SELECT {cols}, count(*) AS n, {own_id} AS only_id
                             FROM {engine.parquet(target)} GROUP BY {cols}),
                 raw AS (SELECT _record_key, {raw_values} FROM {raw})
            SELECT count(*), coalesce(sum(CASE WHEN t.n = 1 THEN 1 ELSE 0 END), 0),
                   coalesce(sum(CASE WHEN t.n = 1 AND t.only_id = {expected} THEN 1 ELSE 0 END), 0)
            FROM raw r LEFT JOIN targets t ON {on}""")[0]
    finally:
        forget_keyed_hash(engine)
        if project_key is not None:
            forget_project_hash(engine)
    rows, unique, correct = (int(v) for v in row)
    path = extracts / spec.file
    return {"note": EVALUATION_NOTE.format(path=path), "source": contract.source, "table": table,
            "extract": str(path), "target": str(target), "matched_on": columns, "raw_rows": rows,
            "matched_uniquely": unique, "unique_share": round(unique / rows, 6) if rows else 0.0,
            "unique_and_correct": correct if "row_id_hash" in held else None,
            "unique_and_correct_share": round(correct / rows, 6) if rows and "row_id_hash" in held else None}
