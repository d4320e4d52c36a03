"""SAIL split files: File 1 (identifiers + system id) to the trusted third party, File 2 (content +
system id) to SAIL, the owner's mapping kept back; the TTP's answer joined back (simulated TTP)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from datafirst.deliver import split_file
from datafirst.deliver.projects import add_project, approve_project, parse_project
from datafirst.deliver.split_file import FILE1, FILE1_IDENTIFIERS, FILE2, OWNER, SplitFileError, join_alf, \
    write_split_files
from datafirst.engine import Engine
from datafirst.release.stage import published

from .conftest import TEST_SALT, build_pipeline
from .sail_ttp import assign_alfs

OTHER_SALT = "8534026d12e72f8fa7e931134b5b1e3b022c46c306120b565f10c8c81d88ce71"
# A project of the user's own shape: person tables of two sources, a table of no person, the lookup.
PROJECT = """
id: SAIL1
title: Reoffending and custody
legal_basis: Digital Economy Act 2017, s.64
approval_reference: RAP-1
tre: {tre}
expires: {expires}
researchers: [r@uni.example]
tables:
  magistrates__defendants: {{row_id_hash: keep, person_id_medium: keep, case_id_hash: keep, outcome: keep,
                            first_hearing_date: keep, sex: keep, year_of_birth: keep}}
  magistrates__offences: {{row_id_hash: keep, case_id_hash: keep, offence_code: keep}}
  prison__bookings: {{person_id_medium: keep, establishment_code: keep, reception_date: keep}}
  person_link_lookup: {{row_id_hash: keep, source_dataset: keep, source_table: keep, person_id_medium: keep}}
"""
PERSON_TABLES = ("magistrates__defendants", "prison__bookings")


def _project(tre: str = "SAIL", expires: str = "2099-12-31"):
    return parse_project(PROJECT.format(tre=tre, expires=expires), "SAIL1.yaml")


@pytest.fixture(scope="module")
def released(world, tmp_path_factory):
    return build_pipeline(world, tmp_path_factory.mktemp("split"), "release")


@pytest.fixture(scope="module")
def split(released, tmp_path_factory):
    out = tmp_path_factory.mktemp("split-out") / "SAIL1"
    with Engine() as engine:
        write_split_files(engine, released, published(released)[0], _project(), out, TEST_SALT)
    return out


def _read(path: Path) -> str:
    return f"read_parquet('{path}')"


def test_split_files_join_back_through_a_simulated_trusted_third_party(released, split, tmp_path):
    con = duckdb.connect()
    file1 = split / FILE1 / "identifiers.csv"
    # File 1: the system id and the identifiers, nothing else; one row per released person record.
    assert con.execute(f"DESCRIBE SELECT * FROM {_read(split / FILE1 / 'identifiers.parquet')}").fetchall()[0][0] == \
        "system_id"
    assert [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {_read(split / FILE1 / 'identifiers.parquet')}")
            .fetchall()] == ["system_id", *FILE1_IDENTIFIERS]
    released_rows = sum(con.execute(f"SELECT count(*) FROM {_read(published(released)[0] / 'tables' / f'{t}.parquet')}")
                        .fetchall()[0][0] for t in PERSON_TABLES)
    assert con.execute(f"SELECT count(*), count(DISTINCT system_id) FROM read_csv('{file1}')").fetchall()[0] == \
        (released_rows, released_rows)
    # File 2's person tables start with the system id; their record hash is not delivered.
    for table in PERSON_TABLES:
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {_read(split / FILE2 / f'{table}.parquet')}").fetchall()]
        assert cols[0] == "system_id" and "row_id_hash" not in cols
    returned = assign_alfs(file1, tmp_path / "returned.csv")
    with Engine() as engine:
        rows = join_alf(engine, split / FILE2, returned, tmp_path / "joined")
    assert rows["magistrates__defendants"] == con.execute(
        f"SELECT count(*) FROM {_read(split / FILE2 / 'magistrates__defendants.parquet')}").fetchall()[0][0]
    for table in PERSON_TABLES:
        joined = tmp_path / "joined" / f"{table}.parquet"
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {_read(joined)}").fetchall()]
        assert cols[0] == "alf" and "system_id" not in cols
        n, with_alf = con.execute(f"SELECT count(*), count(alf) FROM {_read(joined)}").fetchall()[0]
        assert n > 0 and with_alf == n, table  # every row has its ALF
    # Each row has the ALF returned for its own system id (rows matched on their case, one per row).
    file2, joined = (_read(split / FILE2 / "magistrates__defendants.parquet"),
                     _read(tmp_path / "joined" / "magistrates__defendants.parquet"))
    assert con.execute(f"SELECT count(*) = count(DISTINCT case_id_hash) FROM {file2}").fetchall()[0][0]
    wrong = con.execute(f"""SELECT count(*) FROM {file2} f JOIN {joined} j USING (case_id_hash)
                            JOIN read_csv('{returned}', types = {{'system_id': 'VARCHAR'}}) r USING (system_id)
                            WHERE r.alf IS DISTINCT FROM j.alf""").fetchall()[0][0]
    assert wrong == 0
    # File 1's identifiers are those of the record its system id stands for (found through the
    # owner's mapping and the identifiers zone, which only the data owner holds).
    ids = f"read_parquet('{released.zone('identifiers')}/*.parquet', union_by_name = true)"
    con.execute("SET VARIABLE s = ?", [TEST_SALT])
    differ = con.execute(f"""
        WITH zone AS (SELECT substr(sha256(getvariable('s') || '|' || record_key), 1, 20) AS row_id_hash,
                             forename, surname, date_of_birth, sex, postcode FROM {ids})
        SELECT count(*) FROM {_read(split / OWNER / 'system_ids.parquet')} o JOIN zone z USING (row_id_hash)
        JOIN {_read(split / FILE1 / 'identifiers.parquet')} f USING (system_id)
        WHERE (f.forename, f.surname, f.date_of_birth, f.sex, f.postcode)
              IS DISTINCT FROM (z.forename, z.surname, z.date_of_birth, z.sex, z.postcode)""").fetchall()[0][0]
    owned = con.execute(f"SELECT count(*) FROM {_read(split / OWNER / 'system_ids.parquet')}").fetchall()[0][0]
    assert differ == 0 and owned == released_rows
    # The TTP found people across sources: some ALFs hold records of both person tables.
    both = con.execute(f"""SELECT count(*) FROM (SELECT alf FROM {_read(tmp_path / 'joined' / 'prison__bookings.parquet')}
                           INTERSECT SELECT alf FROM {joined})""").fetchall()[0][0]
    assert both > 0
    # The lookup keeps approved person tables' rows only.
    kept = {r[0] for r in con.execute(f"SELECT DISTINCT source_dataset || '__' || source_table "
                                      f"FROM {_read(split / FILE2 / 'person_link_lookup.parquet')}").fetchall()}
    assert kept == set(PERSON_TABLES)


def test_file2_holds_no_identifier_and_file1_no_content(released, split):
    """The independent scan of test_release.py on File 2, and File 1 checked for content values."""
    con = duckdb.connect()
    z = released.zones
    ids = f"read_parquet('{z}/identifiers/*.parquet', union_by_name = true)"
    con.execute(f"""CREATE TABLE direct AS SELECT DISTINCT v FROM (
        SELECT pnc AS v FROM {ids} UNION ALL SELECT other_id FROM {ids} UNION ALL SELECT postcode FROM {ids}
        UNION ALL SELECT record_key FROM {ids} UNION ALL SELECT surname FROM {ids} WHERE length(surname) > 5
        UNION ALL SELECT CAST(date_of_birth AS VARCHAR) FROM {ids}) WHERE v IS NOT NULL""")
    files = sorted((split / FILE2).glob("*.parquet"))
    assert {p.stem for p in files} == {"magistrates__defendants", "magistrates__offences", "prison__bookings",
                                       "person_link_lookup"}
    for path in files:
        cols = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {_read(path)}").fetchall()}
        assert not set(cols) & {"forename", "surname", "date_of_birth", "postcode", "pnc", "cro", "record_key"}
        for col, ctype in cols.items():
            if ctype == "VARCHAR":
                hits = con.execute(f'SELECT count(*) FROM {_read(path)} p JOIN direct d ON p."{col}" = d.v').fetchall()
                assert hits[0][0] == 0, (path.name, col)
    # File 1 holds no content: none of File 2's values other than the system id (no hash, code, date).
    file1 = _read(split / FILE1 / "identifiers.parquet")
    for path in files:
        for col, ctype, *_ in con.execute(f"DESCRIBE SELECT * FROM {_read(path)}").fetchall():
            if col == "system_id":
                continue
            shared = con.execute(f"""SELECT count(*) FROM (SELECT DISTINCT CAST("{col}" AS VARCHAR) AS v FROM {_read(path)}) c
                JOIN (SELECT CAST(forename AS VARCHAR) AS v FROM {file1} UNION SELECT surname FROM {file1}
                      UNION SELECT system_id FROM {file1}) f USING (v)""").fetchall()[0][0]
            assert shared == 0 or col in ("sex", "source_dataset"), (path.name, col, shared)


def test_system_ids_are_fresh_per_delivery_and_not_the_release_hashes(released, split, tmp_path):
    con = duckdb.connect()
    rel = published(released)[0]
    with Engine() as engine:
        write_split_files(engine, released, rel, _project(), tmp_path / "again", TEST_SALT)
    first = {r[0] for r in con.execute(f"SELECT system_id FROM {_read(split / FILE1 / 'identifiers.parquet')}").fetchall()}
    second = {r[0] for r in con.execute(f"SELECT system_id FROM {_read(tmp_path / 'again' / FILE1 / 'identifiers.parquet')}")
              .fetchall()}
    assert len(first) == len(second) and not first & second  # a new secret: no id repeats
    release_hashes = {r[0] for t in ("magistrates__defendants", "prison__bookings", "magistrates__offences")
                      for r in con.execute(f"SELECT row_id_hash FROM {_read(rel / 'tables' / f'{t}.parquet')}").fetchall()}
    release_people = {r[0] for r in con.execute(f"SELECT person_id_medium FROM {_read(rel / 'tables' / 'person.parquet')}")
                      .fetchall()}
    assert not first & release_hashes
    # No hashed id of File 2 is the release's (every one is re-keyed): it joins to nothing outside.
    for path in (split / FILE2).glob("*.parquet"):
        for col, ctype, *_ in con.execute(f"DESCRIBE SELECT * FROM {_read(path)}").fetchall():
            if ctype == "VARCHAR":
                values = {r[0] for r in con.execute(f'SELECT DISTINCT "{col}" FROM {_read(path)}').fetchall()}
                assert not values & (release_hashes | release_people), (path.name, col)
    # The owner's mapping is what relates a system id to the release; it is in neither file.
    owner = con.execute(f"SELECT count(*), count(DISTINCT row_id_hash) FROM {_read(split / OWNER / 'system_ids.parquet')}"
                        ).fetchall()[0]
    assert owner == (len(first), len(first))
    sent = " ".join(p.read_text(errors="replace") for folder in (FILE1, FILE2) for p in (split / folder).glob("*.csv"))
    assert not any(h in sent for h in list(release_hashes)[:200])


def test_refusals(released, split, tmp_path, monkeypatch):
    rel = published(released)[0]
    with Engine() as engine:
        with pytest.raises(SplitFileError, match="SAIL's intake .* TRE is SRS"):
            write_split_files(engine, released, rel, _project(tre="SRS"), tmp_path / "a", TEST_SALT)
        with pytest.raises(SplitFileError, match="expired on 2020-01-01"):
            write_split_files(engine, released, rel, _project(expires="2020-01-01"), tmp_path / "b", TEST_SALT)
        with pytest.raises(SplitFileError, match="hashing key differs"):
            write_split_files(engine, released, rel, _project(), tmp_path / "c", OTHER_SALT)
        # A planted identifier in File 2 is caught by the privacy guard; nothing is left to send.
        (surname,) = duckdb.connect().execute(
            f"SELECT surname FROM read_parquet('{released.zone('identifiers')}/prison__bookings.parquet') "
            "WHERE length(surname) > 6 LIMIT 1").fetchall()[0]
        original = split_file._write_file2_table

        def planted(engine, release, name, entry, columns, person_tables, out):
            rows = original(engine, release, name, entry, columns, person_tables, out)
            if name == "magistrates__offences":
                path = out / f"{name}.parquet"
                engine.to_parquet(f"SELECT *, '{surname}' AS note FROM read_parquet('{path}')", out / "x.parquet")
                (out / "x.parquet").replace(path)
            return rows

        monkeypatch.setattr(split_file, "_write_file2_table", planted)
        with pytest.raises(SplitFileError, match=r"magistrates__offences.note: [0-9,]+ value.* a surname"):
            write_split_files(engine, released, rel, _project(), tmp_path / "d", TEST_SALT)
    assert not [p for p in tmp_path.iterdir()]  # no folder, no partial folder
    returned = tmp_path / "short.csv"
    returned.write_text("system_id,alf\nnot-an-id,1\n")
    with Engine() as engine, pytest.raises(SplitFileError, match="have no ALF"):
        join_alf(engine, split / FILE2, returned, tmp_path / "j")


def test_deliver_split_command(released, tmp_path):
    (tmp_path / "SAIL1.yaml").write_text(PROJECT.format(tre="SAIL", expires="2099-12-31"))
    (tmp_path / "SRS1.yaml").write_text(PROJECT.format(tre="SRS", expires="2099-12-31").replace("id: SAIL1", "id: SRS1"))
    env = {**os.environ, "DATAFIRST_SALT": TEST_SALT, "COLUMNS": "200"}
    env.pop("DATAFIRST_SALT_FILE", None)
    add_project(released.root, tmp_path / "SAIL1.yaml", "alice")
    unapproved = subprocess.run([sys.executable, "-m", "datafirst", "deliver-split", "--project", "SAIL1", "-w",
                                 str(released.root)], capture_output=True, text=True, env=env, timeout=300)
    assert unapproved.returncode == 2 and "project SAIL1 is requested, not approved" in unapproved.stderr
    approve_project(released.root, "SAIL1", "bob")
    add_project(released.root, tmp_path / "SRS1.yaml", "alice")
    approve_project(released.root, "SRS1", "bob")
    run = subprocess.run([sys.executable, "-m", "datafirst", "deliver-split", "--project", "SAIL1", "-w", str(released.root)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    out = released.root / "deliveries" / "SAIL1" / f"{published(released)[-1].name}-split-1"
    assert (out / FILE1 / "identifiers.csv").is_file() and (out / FILE2 / "SHA256SUMS").is_file()
    assert "File 1 (to the trusted third party only)" in run.stdout
    refused = subprocess.run([sys.executable, "-m", "datafirst", "deliver-split", "--project", "SRS1", "-w",
                              str(released.root)], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "TRE is SRS" in refused.stderr
