"""Labels for evaluating linkage on a generated world: record key -> true person, with the
groups (sex, ethnicity, name origin, age band) that accuracy is broken down by.

Evaluation code only (the demo, benchmarks, tests): the pipeline never reads the truth.
The record key is built the way the shipped contracts build it: source|table|native id.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


def write_labels(world: Path, out: Path) -> Path:
    world, out = Path(world), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"""
        COPY (
            SELECT t.source || '|' || t."table" || '|' || t.record_id AS record_key, t.person_id AS true_id,
                   p.sex, p.ethnicity, p.name_origin,
                   CASE WHEN year(p.date_of_birth) >= 2000 THEN 'born 2000+'
                        WHEN year(p.date_of_birth) >= 1985 THEN 'born 1985-99'
                        WHEN year(p.date_of_birth) >= 1970 THEN 'born 1970-84' ELSE 'born before 1970' END AS age_band
            FROM read_parquet('{world / "truth" / "records.parquet"}') t
            JOIN read_parquet('{world / "truth" / "people.parquet"}') p USING (person_id)
            WHERE t.defect = ''
        ) TO '{out}' (FORMAT parquet)""")
    con.close()
    return out
