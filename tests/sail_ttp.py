"""A simulated trusted third party for SAIL split files (test helper; not part of the package).

SAIL's TTP matches File 1's identifiers to its population index and returns, for each system
id, the anonymous linking field (ALF) of the person it found. Here the index is File 1 itself: one
person per distinct (forename, surname, date of birth, sex), numbered in that order; a record
missing any of them is a person of its own. It reads only File 1, as the TTP does.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

MATCHED_ON = ("forename", "surname", "date_of_birth", "sex")


def person_key_sql(alias: str = "") -> str:
    """The identity the TTP groups records on (a record missing a part is its own person)."""
    p = f"{alias}." if alias else ""
    parts = " || '|' || ".join(f"coalesce(CAST({p}{c} AS VARCHAR), '')" for c in MATCHED_ON)
    missing = " OR ".join(f"{p}{c} IS NULL" for c in MATCHED_ON)
    return f"CASE WHEN {missing} THEN 'alone|' || {p}system_id ELSE {parts} END"


def assign_alfs(file1: Path, returned: Path) -> Path:
    """Read File 1 (its CSV), write system_id -> alf to `returned` (CSV); returns `returned`."""
    con = duckdb.connect()
    con.execute(f"""COPY (
        SELECT system_id, 1000000 + dense_rank() OVER (ORDER BY {person_key_sql()}) AS alf
        FROM read_csv('{file1}', all_varchar = true) ORDER BY system_id
    ) TO '{returned}' (FORMAT csv, HEADER)""")
    con.close()
    return returned
