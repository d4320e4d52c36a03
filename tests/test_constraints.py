"""Constraints declared in contracts and research queries declared beside them (issue 27): refused
when badly declared, published with each release in its own column names, counted and run in the
engine on a release (and so on a synthetic twin, which has the same tables)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from datafirst.engine import Engine
from datafirst.release import declarations
from datafirst.release.chain import ReleaseError
from datafirst.release.products import content_product
from datafirst.release.stage import plan_products
from datafirst.sources.contract import ContractError, load_contract, load_contracts
from datafirst.sources.research_queries import ResearchQueryError, load_research_queries
from datafirst.synth.constraints import ConstraintError, check, load_constraints
from datafirst.synth.queries import QueryError, load_queries, run_queries

from .conftest import build_pipeline

# A source of our own (not the world's): hospital visits and the procedures done in them.
CLINIC = """
source: clinic
tables:
  visits:
    file: visits.csv
    record_id: visit_id
    columns:
      visit_id: {native_id: true, description: the visit}
      surname: {role: surname}
      ward: {allowed: [a, b], description: the ward}
      admitted: {type: date, formats: ["%Y-%m-%d"], min: 2000-01-01, max: 2030-12-31, description: admitted on}
      discharged: {type: date, formats: ["%Y-%m-%d"], min: 2000-01-01, max: 2030-12-31, description: discharged on}
      outcome: {allowed: [discharged, died, in_hospital], description: how the visit ended}
      notes: {description: "notes typed by hand (no code list, so a release withholds them)"}
    constraints:
      - name: discharged_after_admitted
        description: a patient leaves on or after the day they came
        check: discharged >= admitted
      - name: discharge_date_exactly_when_discharged
        description: the discharge date is recorded when, and only when, the patient was discharged
        check: "CASE WHEN outcome = 'discharged' THEN discharged IS NOT NULL ELSE discharged IS NULL END"
      - name: notes_only_on_ward_a
        description: notes are kept on ward a only
        check: notes IS NULL OR ward = 'a'
  procedures:
    file: procedures.csv
    record_id: [visit_id, seq]
    columns:
      visit_id: {native_id: true, description: the visit}
      seq: {type: integer, min: 1, max: 99, description: the procedure's number in the visit}
      done_on: {type: date, formats: ["%Y-%m-%d"], min: 2000-01-01, max: 2030-12-31, description: done on}
    constraints:
      - name: done_during_the_visit
        description: a procedure is done between admission and discharge
        join: {table: visits, keys: {visit_id: visit_id}}
        check: done_on >= visits.admitted AND (visits.discharged IS NULL OR done_on <= visits.discharged)
"""


def _clinic(folder: Path, text: str = CLINIC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clinic.yaml"
    path.write_text(text)
    return path


def _write(con: duckdb.DuckDBPyConnection, path: Path, sql: str) -> Path:
    con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    return path


def test_a_contracts_constraints_are_published_in_release_terms_and_counted(tmp_path):
    """Our own contract: native ids become their hashes, each column is named by its table's alias,
    the join goes by the joined table's key, a constraint over a withheld column is listed as not
    checked (with why), and violations are counted (NULL keeps a rule, as CHECK does)."""
    contract = load_contract(_clinic(tmp_path / "contracts"))
    products = [content_product(contract, name, "(SELECT 1)", None, list(spec.content_columns))
                for name, spec in contract.tables.items()]
    doc = declarations.constraints_document([contract], products)
    by_name = {c["name"]: c for c in doc["constraints"]}
    assert set(by_name) == {"discharged_after_admitted", "discharge_date_exactly_when_discharged",
                            "done_during_the_visit"}
    done = by_name["done_during_the_visit"]
    assert done["table"] == "clinic__procedures" and done["alias"] == "procedures"
    assert done["join"] == {"table": "clinic__visits", "alias": "visits", "keys": {"visit_id_hash": "visit_id_hash"}}
    assert done["check"] == ("procedures.done_on >= visits.admitted AND (visits.discharged IS NULL OR "
                             "procedures.done_on <= visits.discharged)")
    [skipped] = doc["not_checked"]
    assert skipped["name"] == "notes_only_on_ward_a" and "visits.notes" in skipped["reason"]

    con = duckdb.connect()
    tables = {
        "clinic__visits": _write(con, tmp_path / "v.parquet", """
            SELECT * FROM (VALUES ('h1', 'a', DATE '2024-01-01', DATE '2024-01-05', 'discharged'),
                                  ('h2', 'b', DATE '2024-02-01', DATE '2024-01-30', 'discharged'),
                                  ('h3', 'a', DATE '2024-03-01', NULL, 'in_hospital'),
                                  ('h4', 'b', DATE '2024-03-01', DATE '2024-03-02', 'died'))
            t(visit_id_hash, ward, admitted, discharged, outcome)"""),
        "clinic__procedures": _write(con, tmp_path / "p.parquet", """
            SELECT * FROM (VALUES ('h1', 1, DATE '2024-01-02'), ('h1', 2, DATE '2024-01-09'),
                                  ('h3', 1, DATE '2024-04-01'), ('h3', 2, DATE '2024-02-01'),
                                  ('gone', 1, DATE '2024-01-01'))
            t(visit_id_hash, seq, done_on)"""),
    }
    with Engine() as engine:
        counted = {r["name"]: (r["rows_checked"], r["violations"]) for r in check(engine, tables, doc["constraints"])}
    # h2 leaves before it came; h4 died but has a discharge date; h1's second procedure is after
    # discharge and h3's second before admission; a procedure of an unknown visit breaks nothing.
    assert counted == {"discharged_after_admitted": (4, 1), "discharge_date_exactly_when_discharged": (4, 1),
                       "done_during_the_visit": (5, 2)}


BAD = [
    ("check: discharged >= admitted", "check: dischraged >= admitted",
     ("tables.visits.constraints.discharged_after_admitted.check: 'dischraged' is not a column of visits; did you "
      "mean `discharged`?")),
    ("check: discharged >= admitted", "check: surname IS NOT NULL",
     "column 'surname' of visits is an identifier (surname) that no release holds"),
    ("check: discharged >= admitted", "check: year(discharged) >= 2000",
     "constraint 'discharged_after_admitted': the check uses `YEAR(discharged)`"),
    ("check: discharged >= admitted", "check: discharged >= (SELECT max(admitted) FROM visits)",
     "the check uses `(SELECT MAX(admitted) FROM visits)` (Subquery), which a check may not"),
    ("check: discharged >= admitted", "check: discharged >= admitted; DROP TABLE visits",
     "the check must be one SQL expression, got 2 statements"),
    ("check: discharged >= admitted", "check: \"'yes'\"", "is not a condition: it must be true or false"),
    ("check: discharged >= admitted", "check: discharged >=", "the check is not valid SQL"),
    ("        description: a patient leaves on or after the day they came\n", "        description: ''\n",
     "write what the rule means in words"),
    ("- name: notes_only_on_ward_a", "- name: discharged_after_admitted",
     "tables.visits.constraints.discharged_after_admitted: the name is used twice in this table"),
    ("join: {table: visits,", "join: {table: vists,",
     "join.table: 'vists' is not another table of this contract; did you mean `visits`?"),
    ("keys: {visit_id: visit_id}", "keys: {visit_id: ward}",
     "join.keys: the joined columns must be visits's record_id (visit_id), so a row joins at most one row"),
    ("        join: {table: visits, keys: {visit_id: visit_id}}\n", "",
     "`visits.admitted` names table 'visits'; a check reads procedures (another table of the contract needs `join:`)"),
    ("join: {table: visits, keys: {visit_id: visit_id}}", "join: {table: visits, on: {visit_id: visit_id}}",
     "tables.procedures.constraints[0].join: write the join's columns under `keys:`"),
]


@pytest.mark.parametrize("old, new, message", BAD, ids=[b[2][:40] for b in BAD])
def test_a_bad_constraint_is_refused_naming_the_file_table_and_constraint(tmp_path, old, new, message):
    assert old in CLINIC
    path = _clinic(tmp_path, CLINIC.replace(old, new, 1))
    with pytest.raises(ContractError) as caught:
        load_contract(path)
    text = str(caught.value)
    assert str(path) in text and message in text, text


def test_research_queries_are_declared_beside_the_contracts_and_refused_when_bad(tmp_path):
    folder = tmp_path / "contracts"
    _clinic(folder)
    good = "queries:\n  - name: visits_by_ward\n    description: visits per ward (n visits, value the same)\n" \
           "    sql: SELECT ward, count(*) AS n, count(*) AS value FROM clinic__visits GROUP BY ward\n"
    (folder / "research_queries.yaml").write_text(good)
    assert [c.source for c in load_contracts(folder)] == ["clinic"]  # not read as a contract
    [query] = load_research_queries(folder)
    assert query.tables == ["clinic__visits"]
    for bad, message in [
        (good.replace("SELECT ward", "CREATE TABLE x AS SELECT ward"), "the query must be a SELECT, got CREATE"),
        (good.replace("FROM clinic__visits", "FROM read_csv('/etc/passwd')"), "the query reads a file"),
        (good + good.replace("queries:\n", ""), "query names are used twice: visits_by_ward"),
        (good.replace("name: visits_by_ward", "name: Visits"), "a query's name must be lower case"),
        (good.replace("    sql:", "    sq1:"), "unknown key `sq1`; did you mean `sql`?"),
        ("- just a list\n", "must be a YAML mapping with `queries:`"),
    ]:
        (folder / "research_queries.yaml").write_text(bad)
        with pytest.raises(ResearchQueryError) as caught:
            load_research_queries(folder)
        assert str(folder / "research_queries.yaml") in str(caught.value) and message in str(caught.value), \
            str(caught.value)


@pytest.fixture(scope="module")
def released(world, tmp_path_factory):
    """The session's world taken through a release (shared with the other modules' fixtures)."""
    ws = build_pipeline(world, tmp_path_factory.mktemp("constraints"), "release")
    return ws, ws.root / "releases" / "v0001"


def _tables(release: Path) -> dict[str, Path]:
    return {p.stem: p for p in (release / "tables").glob("*.parquet")}


def test_the_worlds_release_publishes_its_constraints_and_keeps_every_one(released):
    """The world's truth keeps each rule it declares (its recording errors are in identifiers and
    whole rows, which never reach content): 0 violations, every row of each table checked."""
    ws, release = released
    sums = (release / "SHA256SUMS").read_text()
    assert "  constraints.json\n" in sums and "  research_queries.json\n" in sums
    constraints = load_constraints(release)
    declared = {(c.table_key(t), k.name) for c in load_contracts(ws.contracts) for t, s in c.tables.items()
                for k in s.constraints}
    assert {(c["table"], c["name"]) for c in constraints} == declared and len(declared) >= 15
    assert json.loads((release / "constraints.json").read_text())["not_checked"] == []
    rows = json.loads((release / "manifest.json").read_text())["tables"]
    with Engine() as engine:
        results = check(engine, _tables(release), constraints)
    assert [(r["name"], r["violations"]) for r in results if r["violations"]] == []
    assert all(r["rows_checked"] == rows[r["table"]] > 0 for r in results)


def test_a_planted_bad_row_is_counted_against_its_rule_alone(released, tmp_path):
    """One sentence dated before its first hearing, one guilty plea found not guilty: each breaks
    its own rule once, and nothing else."""
    _, release = released
    tables = _tables(release)
    con = duckdb.connect()
    for name, change in [
        ("magistrates__defendants", ("CASE WHEN row_id_hash = (SELECT min(row_id_hash) FROM t WHERE outcome = "
                                     "'guilty') THEN first_hearing_date - 1 ELSE sentence_date END AS sentence_date")),
        ("magistrates__offences", ("CASE WHEN row_id_hash = (SELECT min(row_id_hash) FROM t WHERE plea = 'guilty') "
                                   "THEN 'not_guilty' ELSE verdict END AS verdict")),
    ]:
        column = change.rsplit(" AS ", 1)[1]
        tables[name] = _write(con, tmp_path / f"{name}.parquet",
                              f"WITH t AS (SELECT * FROM '{tables[name]}') SELECT * REPLACE ({change}) FROM t")
        assert column in [c[0] for c in con.execute(f"DESCRIBE SELECT * FROM '{tables[name]}'").fetchall()]
    with Engine() as engine:
        results = check(engine, tables, load_constraints(release))
    broken = {r["name"]: r["violations"] for r in results if r["violations"]}
    assert broken == {"first_hearing_before_sentence": 1, "guilty_plea_never_acquitted": 1}


def test_research_queries_run_on_the_release(released):
    ws, release = released
    queries = load_queries(release)
    assert [q["name"] for q in queries] == [q.name for q in load_research_queries(ws.contracts)]
    assert {"reoffending_within_a_year_by_sex_and_age_band", "custody_rate_by_magistrates_court"} <= \
        {q["name"] for q in queries} and len(queries) >= 4
    tables = _tables(release)
    with Engine() as engine:
        results = run_queries(engine, tables, queries)
    for name, rows in results.items():
        assert rows and all(list(r)[-2:] == ["n", "value"] and r["n"] > 0 for r in rows), name
    reoffending = results["reoffending_within_a_year_by_sex_and_age_band"]
    assert {"M", "F"} <= {r["sex"] for r in reoffending} and {"18-24", "25-34"} <= {r["age_band"] for r in reoffending}
    assert all(0 <= r["value"] <= 1 for r in reoffending) and any(r["value"] > 0 for r in reoffending)
    # The custody rate per court, counted again here on the table itself.
    defendants = tables["magistrates__defendants"]
    again = {court: (n, share) for court, n, share in duckdb.sql(
        f"SELECT court_code, count(*), avg((sentence_type = 'custody')::INT) FROM '{defendants}' "
        "WHERE outcome = 'guilty' GROUP BY 1").fetchall()}
    assert {r["court_code"]: (r["n"], pytest.approx(r["value"])) for r in
            results["custody_rate_by_magistrates_court"]} == again
    people = duckdb.sql(f"SELECT count(*) FROM '{tables['person']}'").fetchall()[0][0]
    assert sum(r["n"] for r in results["people_in_more_than_one_source_by_sex"]) == people


def test_the_release_refuses_queries_and_checks_that_do_not_run_on_it(released, tmp_path):
    """What the release writes is what `declarations.write` makes of the workspace (byte for byte);
    a query over a column or table the release lacks is refused, naming the query and the file."""
    ws, release = released
    contracts, products = load_contracts(ws.contracts), plan_products(ws)
    tables = _tables(release)
    out = tmp_path / "out"
    out.mkdir()
    with Engine() as engine:
        declarations.write(out, engine, contracts, products, tables, ws.contracts)
        for name in ("constraints.json", "research_queries.json"):
            assert (out / name).read_bytes() == (release / name).read_bytes()
        folder = tmp_path / "contracts"
        shutil.copytree(ws.contracts, folder)
        path = folder / "research_queries.yaml"
        good = path.read_text()
        for bad, message in [
            (good.replace("SELECT court_code, count(*)", "SELECT court, count(*)"), "does not run on the release"),
            (good.replace("FROM magistrates__defendants\n", "FROM magistrates__defendant\n"),
             "reads magistrates__defendant, which this release does not hold"),
            (good.replace("count(*) AS n,\n        avg(CASE WHEN sentence_type",
                          "count(*) AS cases,\n        avg(CASE WHEN sentence_type"),
             "its last two columns must be `n`"),
        ]:
            assert bad != good
            path.write_text(bad)
            with pytest.raises(ReleaseError) as caught:
                declarations.write(out, engine, contracts, products, tables, folder)
            assert message in str(caught.value) and str(path) in str(caught.value), str(caught.value)
            assert "custody_rate_by_magistrates_court" in str(caught.value)
    only = {"magistrates__defendants": tables["magistrates__defendants"]}
    with Engine() as engine:
        with pytest.raises(QueryError, match="reads person, person_journey: not among the tables given"):
            run_queries(engine, only, load_queries(release))
        with pytest.raises(ConstraintError, match="reads table crown__defendants: not among the tables given"):
            check(engine, only, load_constraints(release))
