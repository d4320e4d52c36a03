"""One scan of each release table for what the release's checks and documents need to know
of its columns: the data dictionary (type, rows, missing, distinct values, the values of
columns that have few), the key check (a one-column key's uniqueness) and the privacy guard
(the text values that are not hashes). Reading each table once for all three, in the jobs
that profile the tables at once, costs less than a scan per use: most of the time went on
reading the columns again and on one small query per column.
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


def table_profile(engine: Engine, path: Path) -> dict[str, dict]:
    """Per column of a table: `type`, `rows`, `missing`, `distinct_values` (NULL left out),
    `allowed_values` (sorted, for a code or flag column with at most MAX_LISTED_VALUES), and
    `checked_values`: for a text column its distinct values not shaped like a hash, for a list
    column its distinct elements (the values the privacy guard looks up)."""
    rel = f"read_parquet({sql_string(path)})"
    schema = engine.schema(rel)
    exprs, at = ["count(*)"], {}
    for name, ctype in schema:
        q = _q(name)
        at[name] = len(exprs)
        exprs += [f"count({q})", f"count(DISTINCT {q})"]
        if ctype == "VARCHAR":
            exprs.append(f"list(DISTINCT {q}) FILTER (WHERE NOT regexp_matches({q}, {sql_string(HASH_SHAPED)}))")
        elif ctype == "VARCHAR[]":
            exprs.append(f"flatten(list(DISTINCT {q}) FILTER (WHERE {q} IS NOT NULL))")
        elif ctype == "BOOLEAN":
            exprs.append(f"list(DISTINCT {q}) FILTER (WHERE {q} IS NOT NULL)")
    row = engine.execute(f"SELECT {', '.join(exprs)} FROM {rel}")[0]
    rows = int(row[0])
    profile = {}
    for name, ctype in schema:
        i = at[name]
        present, distinct = int(row[i]), int(row[i + 1])
        f = {"type": ctype, "rows": rows, "missing": rows - present, "distinct_values": distinct}
        values = None
        if ctype in ("VARCHAR", "VARCHAR[]", "BOOLEAN"):
            values = sorted({v for v in (row[i + 2] or []) if v is not None}, key=str)
        if ctype in ("VARCHAR", "VARCHAR[]"):
            f["checked_values"] = values
        if _listed(name, ctype) and distinct <= MAX_LISTED_VALUES:
            if len(values) < distinct:  # a hash-shaped value among a few codes: read them all
                values = [r[0] for r in engine.execute(f"SELECT DISTINCT {_q(name)} FROM {rel} WHERE {_q(name)} IS NOT NULL")]
            f["allowed_values"] = sorted(str(v) for v in values)
        profile[name] = f
    return profile
