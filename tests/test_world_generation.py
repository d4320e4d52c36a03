"""The synthetic world: determinism, truth integrity, referential integrity, planted defects."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest

from datafirst.world import generate_world
from datafirst.world.extracts import EXTRACTS
from datafirst.world.population import scramble_ids


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "extracts").rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_extracts(tmp_path):
    a = generate_world(tmp_path / "a", 3000, seed=5, chunk_people=1000)
    b = generate_world(tmp_path / "b", 3000, seed=5, chunk_people=1000)
    c = generate_world(tmp_path / "c", 3000, seed=6, chunk_people=1000)
    fa, fb, fc = _files(a.out), _files(b.out), _files(c.out)
    assert fa.keys() == fb.keys() and len(fa) == len(EXTRACTS)
    assert fa == fb
    assert (a.out / "truth" / "records.parquet").read_bytes() == (b.out / "truth" / "records.parquet").read_bytes()
    assert all(fa[k] != fc[k] for k in fa), "a different seed must give a different world"


def test_manifest_counts_and_checksums_match_the_files(world):
    import hashlib

    manifest = json.loads((world / "world.json").read_text())
    for path, spec in manifest["extracts"].items():
        data = (world / "extracts" / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == spec["sha256"]
        lines = data.count(b"\r\n") if spec["encoding"] == "cp1252" else data.count(b"\n")
        header = 0 if spec["format"] == "jsonl" else 1
        assert lines - header == spec["rows"], path
        assert spec["rows"] > 0, f"{path} is empty in a 20,000-person world"
    assert manifest["records"] == sum(s["rows"] for s in manifest["extracts"].values())


def test_every_record_has_exactly_one_true_person(world):
    manifest = json.loads((world / "world.json").read_text())
    con = duckdb.connect()
    con.execute(f"CREATE TABLE rec AS SELECT * FROM read_parquet('{world}/truth/records.parquet')")
    # Every data line of every person-bearing file is one truth row, and no line twice.
    for path, spec in manifest["extracts"].items():
        if not spec["record_id"]:
            continue
        n, distinct_rows, lo, hi, null_people = con.execute(
            "SELECT count(*), count(DISTINCT row_number), min(row_number), max(row_number), "
            "count(*) FILTER (WHERE person_id IS NULL) FROM rec WHERE file = ?", [path]).fetchall()[0]
        assert n == distinct_rows == spec["rows"] and (lo, hi) == (1, spec["rows"]), path
        assert null_people == 0
    # A native record id never points at two people.
    clashes = con.execute("""SELECT source, "table", record_id FROM rec GROUP BY ALL
                             HAVING count(DISTINCT person_id) > 1 LIMIT 5""").fetchall()
    assert clashes == []
    # Every true person in the records exists in the people table.
    orphans = con.execute(f"""SELECT count(*) FROM rec r ANTI JOIN read_parquet('{world}/truth/people.parquet') p
                              USING (person_id)""").fetchall()[0][0]
    assert orphans == 0


def test_record_ids_in_truth_are_the_ids_in_the_files(world):
    """The truth's record id on each row is the native id printed on that line."""
    con = duckdb.connect()
    rows = con.execute(f"""SELECT file, row_number, record_id FROM read_parquet('{world}/truth/records.parquet')
                           WHERE file = 'magistrates/defendants.csv' AND defect = '' ORDER BY row_number LIMIT 500""").fetchall()
    lines = (world / "extracts" / "magistrates" / "defendants.csv").read_text(encoding="utf-8", errors="replace").splitlines()
    for _, row_number, record_id in rows:
        assert lines[row_number].split(",")[1] == record_id


def test_every_referenced_magistrates_case_exists(world):
    con = duckdb.connect()
    ext = world / "extracts"
    # Read case ids from the raw bytes: malformed rows still name their case in the first field.
    raw = (ext / "magistrates" / "defendants.csv").read_bytes().split(b"\n")[1:-1]
    con.execute("CREATE TABLE mags (case_id VARCHAR)")
    con.executemany("INSERT INTO mags VALUES (?)", [[line.split(b",", 1)[0].decode()] for line in raw])
    refs, missing = con.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE case_id IS NULL) FROM (
            SELECT c.magistrates_case_ref, m.case_id FROM read_csv('{ext}/crown/defendants.psv', delim='|',
                all_varchar=true, ignore_errors=true) c
            LEFT JOIN (SELECT DISTINCT case_id FROM mags) m ON m.case_id = c.magistrates_case_ref
            WHERE c.magistrates_case_ref IS NOT NULL AND c.case_number NOT IN (
                SELECT record_id FROM read_parquet('{world}/truth/records.parquet')
                WHERE source = 'crown' AND defect NOT IN ('', 'duplicate_row')))""").fetchall()[0]
    assert refs > 100 and missing == 0
    # The truth's journeys point at real cases too, and cover every Crown row.
    j_missing = con.execute(f"""SELECT count(*) FROM read_parquet('{world}/truth/case_journeys.parquet') j
                                ANTI JOIN (SELECT DISTINCT case_id FROM mags) m ON m.case_id = j.magistrates_case_id""").fetchall()[0][0]
    assert j_missing == 0
    offences_orphans = con.execute(f"""SELECT count(*) FROM read_csv('{ext}/magistrates/offences.csv', all_varchar=true) o
                                       ANTI JOIN (SELECT DISTINCT case_id FROM mags) m USING (case_id)""").fetchall()[0][0]
    assert offences_orphans == 0


def _line(world: Path, path: str, row_number: int, encoding: str) -> bytes:
    data = (world / "extracts" / path).read_bytes()
    sep = b"\r\n" if encoding == "cp1252" else b"\n"
    lines = data.split(sep)
    return lines[row_number] if not path.endswith(".jsonl") else lines[row_number - 1]


def test_planted_defects_are_really_broken_and_clean_rows_are_not(world):
    manifest = json.loads((world / "world.json").read_text())
    con = duckdb.connect()
    truth = con.execute(f"""SELECT file, row_number, defect FROM read_parquet('{world}/truth/records.parquet')
                            ORDER BY file, row_number""").fetchall()
    by_file: dict[str, list[tuple[int, str]]] = {}
    for file, row, defect in truth:
        by_file.setdefault(file, []).append((row, defect))
    kinds_seen = set()
    for path, rows in by_file.items():
        spec = manifest["extracts"][path]
        sep = b"\r\n" if spec["encoding"] == "cp1252" else b"\n"
        raw = (world / "extracts" / path).read_bytes().removeprefix(b"\xef\xbb\xbf")
        lines = raw.split(sep)[:-1]
        header_lines = 0 if spec["format"] == "jsonl" else 1
        n_cols = len(lines[0].decode(spec["encoding"]).split(spec["delimiter"])) if header_lines else 0
        for row, defect in rows:
            line = lines[row - 1 + header_lines]
            kinds_seen.add(defect)
            try:
                text = line.decode(spec["encoding"])
                decodes = True
            except UnicodeDecodeError:
                decodes = False
            if defect == "broken_bytes":
                assert not decodes, (path, row)
                continue
            assert decodes, (path, row, defect)
            if spec["format"] == "jsonl":
                if defect == "invalid_json":
                    with pytest.raises(json.JSONDecodeError):
                        json.loads(text)
                    continue
                record = json.loads(text)
                dob = record["offender"]["dateOfBirth"]
                assert (defect == "impossible_date") == (dob is not None and dob[5:7] == "02" and dob[8:] in ("30", "31"))
            else:
                fields = next(csv.reader(io.StringIO(text), delimiter=spec["delimiter"]))
                assert (len(fields) != n_cols) == (defect == "wrong_column_count"), (path, row, defect)
            if defect == "duplicate_row":
                assert lines[row - 2 + header_lines] == line
    assert {"broken_bytes", "wrong_column_count", "impossible_date", "invalid_json", "duplicate_row"} <= kinds_seen


def test_native_ids_do_not_reveal_generation_order():
    import numpy as np

    ids = scramble_ids(np.arange(1000), (10**5, 10**5), seed=3)
    assert len(set(ids.tolist())) == 1000
    steps = np.diff(ids)
    assert len(set(steps.tolist())) > 900, "consecutive ids must not differ by a constant"
    assert not (np.all(steps > 0) or np.all(steps < 0))


def test_world_shape_is_plausible(world):
    """Repeat offending, cross-source overlap, families and people sharing name and birth year."""
    con = duckdb.connect()
    t = f"read_parquet('{world}/truth/records.parquet')"
    repeaters = con.execute(f"""SELECT avg(CASE WHEN n > 1 THEN 1.0 ELSE 0 END) FROM (
        SELECT person_id, count(*) n FROM {t} WHERE source = 'magistrates' GROUP BY 1)""").fetchall()[0][0]
    assert 0.3 < repeaters < 0.8
    multi = con.execute(f"""SELECT avg(CASE WHEN n > 1 THEN 1.0 ELSE 0 END) FROM (
        SELECT person_id, count(DISTINCT source) n FROM {t} GROUP BY 1)""").fetchall()[0][0]
    assert 0.3 < multi < 0.9
    namesakes = con.execute(f"""SELECT count(*) FROM (
        SELECT forename, surname, year(date_of_birth) FROM read_parquet('{world}/truth/people.parquet')
        GROUP BY ALL HAVING count(*) > 1)""").fetchall()[0][0]
    assert namesakes > 50
    shared_surname_households = con.execute(f"""SELECT count(*) FROM (
        SELECT household FROM read_parquet('{world}/truth/people.parquet') GROUP BY household
        HAVING count(*) > 1 AND count(DISTINCT surname) < count(*))""").fetchall()[0][0]
    assert shared_surname_households > 1000
    origins = con.execute(f"SELECT count(DISTINCT name_origin) FROM read_parquet('{world}/truth/people.parquet')").fetchall()[0][0]
    assert origins == 10


def test_a_strict_csv_reader_rejects_exactly_the_planted_malformed_rows(world):
    """The planted defects are the kind a real loader meets: DuckDB's own CSV reader, told the
    header, rejects every wrong-column-count row and nothing that is not planted. (DuckDB 2.0
    lets a few invalid UTF-8 sequences through, so broken bytes are checked by Python's strict
    decoder in the test above; the ingest stage must check encodings itself.)"""
    path = world / "extracts" / "magistrates" / "defendants.csv"
    header = path.open(encoding="utf-8").readline().strip().split(",")
    con = duckdb.connect()
    columns = ", ".join(f"'{c}': 'VARCHAR'" for c in header)
    n_ok = con.execute(f"""SELECT count(*) FROM read_csv('{path}', header=true, delim=',', quote='"', escape='"',
        auto_detect=false, columns={{{columns}}}, store_rejects=true, rejects_scan='rs', rejects_table='re')""").fetchall()[0][0]
    rejected = {r[0] - 1 for r in con.execute("SELECT DISTINCT line FROM re").fetchall()}  # minus the header line
    planted = dict(con.execute(f"""SELECT row_number, defect FROM read_parquet('{world}/truth/records.parquet')
        WHERE file = 'magistrates/defendants.csv' AND defect IN ('wrong_column_count', 'broken_bytes')""").fetchall())
    wrong_count = {r for r, d in planted.items() if d == "wrong_column_count"}
    assert wrong_count and wrong_count <= rejected <= set(planted)
    total = con.execute(f"""SELECT count(*) FROM read_parquet('{world}/truth/records.parquet')
                            WHERE file = 'magistrates/defendants.csv'""").fetchall()[0][0]
    assert n_ok + len(rejected) == total
