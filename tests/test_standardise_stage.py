"""Standardise on a real world: separation of identifiers from content, and the quality report."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import duckdb
import pytest

from datafirst.engine import Engine
from datafirst.sources.contract import load_contracts
from datafirst.standardise.quality import write_report
from datafirst.standardise.stage import IDENTIFIER_COLUMNS, REDUCED_QUASI_IDENTIFIERS
from datafirst.workspace import Workspace

from .conftest import build_pipeline


@pytest.fixture(scope="module")
def std_ws(world, tmp_path_factory) -> Workspace:
    return build_pipeline(world, tmp_path_factory.mktemp("std"), "standardise")


def test_identifiers_and_content_hold_every_landed_row_exactly_once(std_ws):
    con = duckdb.connect()
    z = std_ws.zones
    for contract in load_contracts(std_ws.contracts):
        for name, spec in contract.tables.items():
            key = contract.table_key(name)
            landed = f"read_parquet('{z}/landed/{key}.parquet')"
            content = f"read_parquet('{z}/content/{key}.parquet')"
            n = con.execute(f"SELECT count(*) FROM {landed}").fetchall()[0][0]
            assert con.execute(f"SELECT count(*), count(DISTINCT record_key) FROM {content}").fetchall()[0] == (n, n)
            missing = con.execute(f"SELECT count(*) FROM {landed} l ANTI JOIN {content} c ON c.record_key = l.record_key").fetchall()
            assert missing == [(0,)]
            if spec.is_person_table:
                ids = f"read_parquet('{z}/identifiers/{key}.parquet')"
                assert con.execute(f"SELECT count(*), count(DISTINCT record_key) FROM {ids}").fetchall()[0] == (n, n)
                joined = con.execute(f"SELECT count(*) FROM {ids} i JOIN {content} c USING (record_key)").fetchall()
                assert joined == [(n,)]
            else:
                assert not (z / "identifiers" / f"{key}.parquet").exists()


def test_no_identifying_column_reaches_a_content_table(std_ws):
    con = duckdb.connect()
    for contract in load_contracts(std_ws.contracts):
        for name, spec in contract.tables.items():
            cols = {r[0] for r in con.execute(
                f"DESCRIBE SELECT * FROM read_parquet('{std_ws.zones}/content/{contract.table_key(name)}.parquet')").fetchall()}
            reduced = set(REDUCED_QUASI_IDENTIFIERS)
            identifying = {n for n, c in spec.columns.items() if c.role and not c.native_id} - reduced
            assert not cols & identifying, (contract.source, name, cols & identifying)
            assert not cols & (set(IDENTIFIER_COLUMNS) - {"record_key"} - reduced), (contract.source, name)
            if spec.is_person_table:
                assert reduced <= cols  # year of birth, sex, postcode district: what research needs, no more
    # And no surname value from the identifiers zone appears in any content column.
    surnames = "(SELECT DISTINCT upper(surname) AS v FROM read_parquet('{z}/identifiers/*.parquet') WHERE length(surname) > 4)"
    for path in (std_ws.zones / "content").glob("*.parquet"):
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()]
        text_cols = [c for c in cols if c not in ("record_key", "_source", "_table", "_file")]
        for col in text_cols:
            hits = con.execute(f"""SELECT count(*) FROM read_parquet('{path}') c
                JOIN {surnames.format(z=std_ws.zones)} s ON upper(CAST(c."{col}" AS VARCHAR)) = s.v""").fetchall()[0][0]
            assert hits == 0, (path.name, col)


def test_identifiers_share_one_schema_across_sources(std_ws):
    con = duckdb.connect()
    for path in (std_ws.zones / "identifiers").glob("*.parquet"):
        cols = tuple(r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall())
        assert cols == IDENTIFIER_COLUMNS, path.name


def test_standardised_identifiers_recover_the_truth(std_ws, world):
    """Cleaning brings sources written in different conventions to the same values."""
    con = duckdb.connect()
    agree = con.execute(f"""
        SELECT avg(CASE WHEN i.date_of_birth = p.date_of_birth THEN 1.0 ELSE 0 END),
               avg(CASE WHEN i.sex = p.sex THEN 1.0 ELSE 0 END),
               avg(CASE WHEN i.surname = lower(regexp_replace(p.surname, '[^A-Za-z]', '', 'g')) THEN 1.0 ELSE 0 END)
        FROM read_parquet('{std_ws.zones}/identifiers/*.parquet') i
        JOIN read_parquet('{world}/truth/records.parquet') t
          ON i.record_key = t.source || '|' || t."table" || '|' || t.record_id
        JOIN read_parquet('{world}/truth/people.parquet') p USING (person_id)
        WHERE t.errors = '' AND t.defect = '' AND i.date_of_birth IS NOT NULL
          AND p.previous_surname = '' AND p.surname NOT LIKE '%-%' AND p.surname NOT LIKE '% %'""").fetchall()[0]
    dob, sex, surname = agree
    assert dob > 0.999 and sex > 0.99 and surname > 0.97, agree


def test_quality_report_measures_and_compares(std_ws, world):
    data = json.loads((std_ws.reports / "data_quality" / "latest.json").read_text())
    tables = {(t["source"], t["table"]): t for t in data["tables"]}
    assert len(tables) == 11
    mags = tables[("magistrates", "defendants")]
    assert mags["read"] == mags["landed"] + mags["quarantined"]
    assert 0 < mags["duplicate_rate"] < 0.02
    pnc = next(f for f in mags["fields"] if f["field"] == "pnc_id")
    assert 0.4 < pnc["completeness"] < 0.8 and 0.95 < pnc["validity"] < 1.0  # mistyped PNCs fail their check
    postcode = next(f for f in mags["fields"] if f["field"] == "postcode")
    assert postcode["placeholder_rate"] > 0
    assert {r["reason"] for r in mags["quarantine_reasons"]} >= {"exact duplicate row", "bytes that are not valid UTF-8"}
    assert data["previous_run"] is None

    # A second run where a key identifier loses completeness raises an alert.
    drop = json.loads(json.dumps(data))
    for t in drop["tables"]:
        # Figures measured from other outputs than today's (a table measured from the same
        # outputs keeps its previous figures: they would come out the same).
        t["measured_from"] = None
        for f in t["fields"]:
            if t["source"] == "magistrates" and f["field"] == "pnc_id":
                f["completeness"] = 0.95  # pretend the previous run had far more PNC ids
    (std_ws.reports / "data_quality" / "latest.json").write_text(json.dumps(drop))
    with Engine() as engine:
        _, html_path, again = write_report(std_ws, engine)
    alerts = [c for c in again["changes"] if c["alert"]]
    assert [(c["source"], c["field"]) for c in alerts] == [("magistrates", "pnc_id")]

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

    page = html_path.read_text()
    parser = Collect()
    parser.feed(page)
    assert parser.tags.count("svg") >= 11 and "table" in parser.tags
    assert "lost more than" in page
    # The report holds figures, not values: no surname from the identifiers zone appears in it.
    surnames = duckdb.connect().execute(f"""SELECT DISTINCT surname FROM read_parquet('{std_ws.zones}/identifiers/*.parquet')
                                            WHERE length(surname) > 5""").fetchall()
    lowered = page.lower()
    assert not [s for (s,) in surnames if f">{s}<" in lowered or f" {s} " in lowered]


def test_placeholder_values_never_reach_the_identifiers(std_ws, world):
    """A placeholder must not be able to drive a match: none survives into the linkage zone,
    although the world plants them (ZZ99 3VZ, NFA, UNKNOWN, 1900-01-01, 01/01 dates)."""
    con = duckdb.connect()
    ids = f"read_parquet('{std_ws.zones}/identifiers/*.parquet')"
    planted = con.execute(f"""SELECT count(*) FROM read_parquet('{world}/truth/records.parquet')
                              WHERE errors LIKE '%placeholder%'""").fetchall()[0][0]
    assert planted > 100
    leaks = con.execute(f"""SELECT count(*) FROM {ids}
        WHERE postcode IN ('ZZ99 3VZ') OR lower(coalesce(forename, '')) IN ('unknown', 'nfa', 'n/a')
           OR lower(coalesce(surname, '')) IN ('unknown', 'nfa', 'n/a')
           OR date_of_birth IN (DATE '1900-01-01', DATE '1901-01-01')
           OR (month(date_of_birth) = 1 AND day(date_of_birth) = 1)""").fetchall()[0][0]
    assert leaks == 0
    flagged = con.execute(f"""SELECT count(*) FROM {ids} WHERE list_contains(flags, 'postcode:placeholder')
                              OR list_contains(flags, 'date_of_birth:placeholder')""").fetchall()[0][0]
    assert flagged > 50
