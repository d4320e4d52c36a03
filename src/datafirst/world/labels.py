"""Labels for evaluating linkage on a generated world: record key -> true person, with the
groups (sex, ethnicity, name origin, age band) that accuracy is broken down by.

Evaluation code only (the demo, benchmarks, tests): the pipeline never reads the truth.
The record key is built the way the shipped contracts build it: source|table|native id.
The file's extension says its format: `.csv` (with a header; what `datafirst world` writes as
truth/labels.csv) or `.parquet`. Either is a labels file for `--labels` (docs/labels.md).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ..engine.sql import sql_string


def write_labels(world: Path, out: Path) -> Path:
    world, out = Path(world), Path(out)
    formats = {".csv": "FORMAT csv, HEADER true", ".parquet": "FORMAT parquet"}
    if out.suffix.lower() not in formats:
        raise ValueError(f"labels file {out}: write .csv or .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    records = sql_string(world / "truth" / "records.parquet")
    people = sql_string(world / "truth" / "people.parquet")
    with duckdb.connect() as con:
        con.execute(f"""
            COPY (
                SELECT t.source || '|' || t."table" || '|' || t.record_id AS record_key, t.person_id AS true_id,
                       p.sex, p.ethnicity, p.name_origin,
                       CASE WHEN year(p.date_of_birth) >= 2000 THEN 'born 2000+'
                            WHEN year(p.date_of_birth) >= 1985 THEN 'born 1985-99'
                            WHEN year(p.date_of_birth) >= 1970 THEN 'born 1970-84' ELSE 'born before 1970' END AS age_band
                FROM read_parquet({records}) t
                JOIN read_parquet({people}) p USING (person_id)
                WHERE t.defect = ''
                ORDER BY record_key  -- the same world gives the same file
            ) TO {sql_string(out)} ({formats[out.suffix.lower()]})""")
    return out
