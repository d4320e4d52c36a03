"""One query of each release table for what the release's checks and documents need to know
of its columns: the data dictionary (type, rows, missing, distinct values, the values of
columns that have few), the key check (a one-column key's uniqueness), the allow-list check (the
smallest and largest number or date, the text values) and the privacy guard (the text values
that are not hashes). One query for all of them, in the jobs that profile the
tables at once, costs less than a query per use: most of the time went on reading the columns
again and on one small query per column.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string

MAX_LISTED_VALUES = 12
# The shape of a keyed hash (products.HASH_CHARS hex digits) and of a person id (the same after
# a 'P'). Most of a release's text is such values, all distinct: the guard looks up the others
# (see privacy.check_tables), and these only when an identifier has the shape too.
HASH_SHAPED = "^P?[0-9a-f]{20}$"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _listed(name: str, ctype: str) -> bool:
    """Whether the dictionary lists a column's values when it has few: codes and flags, not ids."""
    return ctype in ("VARCHAR", "BOOLEAN") and not name.endswith("_hash") and "person_id" not in name


def ranged_type(ctype: str) -> bool:
    """Whether a column's smallest and largest values are profiled (numbers and dates: what their
    declared ranges are checked against)."""
    return ctype == "DATE" or ctype.startswith("DECIMAL") or ctype in (
        "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
        "FLOAT", "DOUBLE")


def table_profile(engine: Engine, path: Path) -> dict[str, dict]:
    """Per column of a table: `type`, `rows`, `missing`, `distinct_values` (NULL left out),
    `min` and `max` (numbers and dates),
    `allowed_values` (sorted, for a code or flag column with at most MAX_LISTED_VALUES), and
    `checked_values`: for a text column its distinct values not shaped like a hash, for a list
    column its distinct elements (the values the privacy guard looks up)."""
    rel = f"read_parquet({sql_string(path)})"
    schema = engine.schema(rel)
    # One statement: the counts in one scan, then per text, flag or list column its distinct values
    # once, counted and (text) tested for the hash shape. Testing the distinct values rather than
    # every row, with one distinct pass per column rather than two (a count and a list), takes a
    # release's profiles about 40% less time: person ids recur in every record of their person.
    ranged = [(i, name) for i, (name, ctype) in enumerate(schema) if ranged_type(ctype)]
    parts = ["SELECT count(*) AS n, " + ", ".join(
        [f"count({_q(name)}) AS c{i}" for i, (name, _) in enumerate(schema)]
        + [f"min({_q(name)}) AS lo{i}, max({_q(name)}) AS hi{i}" for i, name in ranged]) + f" FROM {rel}"]
    for i, (name, ctype) in enumerate(schema):
        values = f"SELECT DISTINCT {_q(name)} AS v FROM {rel} WHERE {_q(name)} IS NOT NULL"
        if ctype == "VARCHAR":
            listed = f"list(v) FILTER (WHERE NOT regexp_matches(v, {sql_string(HASH_SHAPED)}))"
        elif ctype == "VARCHAR[]":
            listed = "flatten(list(v))"
        elif ctype == "BOOLEAN":
            listed = "list(v)"
        else:
            parts.append(f"SELECT count(DISTINCT {_q(name)}) AS d{i}, NULL AS l{i} FROM {rel}")
            continue
        parts.append(f"SELECT count(*) AS d{i}, {listed} AS l{i} FROM ({values})")
    row = engine.execute("SELECT * FROM " + ", ".join(f"({part}) p{k}" for k, part in enumerate(parts)))[0]
    rows, n, r = int(row[0]), len(schema), 2 * len(ranged)
    present = row[1:1 + n]
    bounds = {i: (row[1 + n + 2 * k], row[2 + n + 2 * k]) for k, (i, _) in enumerate(ranged)}
    distinct = row[1 + n + r::2]
    lists = row[2 + n + r::2]
    profile = {}
    for i, (name, ctype) in enumerate(schema):
        f = {"type": ctype, "rows": rows, "missing": rows - int(present[i]), "distinct_values": int(distinct[i])}
        if i in bounds:
            f["min"], f["max"] = bounds[i]
        values = None
        if ctype in ("VARCHAR", "VARCHAR[]", "BOOLEAN"):
            values = sorted({v for v in (lists[i] or []) if v is not None}, key=str)
        if ctype in ("VARCHAR", "VARCHAR[]"):
            f["checked_values"] = values
        if _listed(name, ctype) and f["distinct_values"] <= MAX_LISTED_VALUES:
            if len(values) < f["distinct_values"]:  # a hash-shaped value among a few codes: read them all
                values = [r[0] for r in engine.execute(f"SELECT DISTINCT {_q(name)} FROM {rel} WHERE {_q(name)} IS NOT NULL")]
            f["allowed_values"] = sorted(str(v) for v in values)
        profile[name] = f
    return profile
