"""The release's structure: ethnicity harmonised to one declared scheme (the source value kept),
every table with an event date in the person journey (a case or claim through its parties), and
a person table at each threshold. Run on the world with one source swapped for a contract of the
test's own (a tribunal's hearings and people, with a mapping of its own), so that nothing holds
only for the world's names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pytest
import yaml

from datafirst.release.products import PERSON_TABLES, person_products
from datafirst.release.stage import published
from datafirst.sources.contract import ContractError, load_contract, load_contracts
from datafirst.workspace import Workspace

from .conftest import run_pipeline

CONTRACTS = Path(__file__).resolve().parents[1] / "src" / "datafirst" / "sources" / "contracts"
THRESHOLDS = ("high", "medium", "low")


def _tribunal_contract() -> dict:
    """The family court's extracts under a contract of the test's own: another source name, other
    table names, its own event type, and its own mapping of party roles (`child` left unmapped)."""
    family = yaml.safe_load((CONTRACTS / "family.yaml").read_text())
    hearings, people = family["tables"]["cases"], family["tables"]["parties"]
    hearings["event_type"] = "tribunal_hearing"
    hearings["unit"] = "one row per hearing"
    for constraint in people["constraints"]:  # its constraints name the table it joins, renamed here
        constraint["join"]["table"] = "hearings"
        constraint["check"] = constraint["check"].replace("cases.", "hearings.")
    people["columns"]["party_role"]["harmonise"] = {
        "file": "sides.csv", "match": "role",
        "columns": {"side": {"column": "side", "description": "which side of the hearing the person is on"}}}
    return {"source": "tribunal", "description": "A tribunal's hearings and the people named in them.",
            "tables": {"hearings": hearings, "people": people}}


@pytest.fixture(scope="module")
def ws(world, tmp_path_factory) -> Workspace:
    ws = Workspace.init(tmp_path_factory.mktemp("structure") / "ws", world / "extracts")
    (ws.contracts / "family.yaml").unlink()
    (ws.contracts / "tribunal.yaml").write_text(yaml.safe_dump(_tribunal_contract(), sort_keys=False))
    (ws.contracts / "sides.csv").write_text("role,side\napplicant,initiating\nrespondent,responding\n")
    run_pipeline(ws)
    return ws


def _table(ws: Workspace, name: str) -> str:
    return f"read_parquet('{published(ws)[-1] / 'tables' / f'{name}.parquet'}')"


def _dictionary(ws: Workspace) -> dict[str, dict]:
    return {t["name"]: t for t in json.loads((published(ws)[-1] / "dictionary.json").read_text())["tables"]}


# --- the person journey -----------------------------------------------------------------------------


def _dated_records(ws: Workspace) -> str:
    """Every (person ids, event date, event row) the release's own tables give, found here from
    the released tables alone: a person table's dated rows through the person link lookup, and a
    case or claim through the person table it shares native-id hashes with."""
    lookup = _table(ws, "person_link_lookup")
    ids = "l.person_id_high, l.person_id_medium, l.person_id_low"
    own = [("magistrates__defendants", "first_hearing_date"), ("crown__defendants", "receipt_date"),
           ("prison__bookings", "reception_date"), ("probation__events", "sentence_date")]
    through = [("civil__claims", "issue_date", "civil__parties", ["claim_number_hash"]),
               ("tribunal__hearings", "issue_date", "tribunal__people", ["case_number_hash"])]
    parts = [f"SELECT {ids}, t.{date} AS event_date, t.row_id_hash, '{name}' AS source FROM {_table(ws, name)} t "
             f"JOIN {lookup} l USING (row_id_hash)" for name, date in own]
    parts += [f"SELECT {ids}, t.{date} AS event_date, t.row_id_hash, '{name}' AS source FROM {_table(ws, name)} t "
              f"JOIN {_table(ws, people)} p USING ({', '.join(keys)}) JOIN {lookup} l ON l.row_id_hash = p.row_id_hash"
              for name, date, people, keys in through]
    return " UNION ALL ".join(parts)


def test_every_person_with_a_dated_record_has_a_first_and_last_event_at_every_threshold(ws):
    """Family and civil records never reached the journey, so their people had no first or last
    event (13.3% of people in the demo). Now each case and claim is an event of each of its
    parties, dated by the case's own date, at every threshold."""
    con = duckdb.connect()
    con.execute(f"CREATE TABLE dated AS {_dated_records(ws)}")
    assert con.execute("SELECT count(DISTINCT source) FROM dated WHERE event_date IS NOT NULL").fetchone()[0] == 6
    for threshold in THRESHOLDS:
        person = f"person_id_{threshold}"
        missing, outside = con.execute(f"""
            SELECT count(*) FILTER (WHERE p.first_event IS NULL OR p.last_event IS NULL),
                   count(*) FILTER (WHERE d.event_date < p.first_event OR d.event_date > p.last_event)
            FROM dated d JOIN {_table(ws, PERSON_TABLES[threshold])} p USING ({person})
            WHERE d.event_date IS NOT NULL""").fetchone()
        assert (missing, outside) == (0, 0), threshold
        # The earliest and latest of those dates are the person's first and last event.
        differ = con.execute(f"""SELECT count(*) FROM (SELECT {person}, min(event_date) AS first, max(event_date) AS last
                                 FROM dated GROUP BY ALL) d JOIN {_table(ws, PERSON_TABLES[threshold])} p USING ({person})
                                 WHERE d.first <> p.first_event OR d.last <> p.last_event""").fetchone()[0]
        assert differ == 0, threshold
    # Family-court (here the tribunal's) and civil people: everyone has a first event now.
    civil_only = con.execute(f"""SELECT count(*), count(*) FILTER (WHERE first_event IS NULL)
                                 FROM {_table(ws, 'person')} WHERE sources = ['civil'] OR sources = ['tribunal']""").fetchone()
    assert civil_only[0] > 100 and civil_only[1] == 0
    # The journey holds each (person, event) once: a case is an event of each of its people.
    journey = con.execute(f"SELECT person_id_medium, row_id_hash, event_date FROM {_table(ws, 'person_journey')} "
                          "EXCEPT SELECT person_id_medium, row_id_hash, event_date FROM dated").fetchall()
    assert journey == []
    expected, got = con.execute(f"""SELECT (SELECT count(*) FROM (SELECT DISTINCT person_id_medium, row_id_hash FROM dated)),
                                           (SELECT count(*) FROM {_table(ws, 'person_journey')})""").fetchone()
    assert expected == got


def test_a_contract_of_ones_own_with_an_event_date_joins_the_journey(ws):
    con = duckdb.connect()
    hearings, parties_with_a_person = con.execute(f"""
        SELECT (SELECT count(*) FROM {_table(ws, 'person_journey')} WHERE event_type = 'tribunal_hearing'
                AND source_dataset = 'tribunal' AND source_table = 'hearings'),
               (SELECT count(*) FROM (SELECT DISTINCT l.person_id_medium, h.row_id_hash
                FROM {_table(ws, 'tribunal__hearings')} h JOIN {_table(ws, 'tribunal__people')} p USING (case_number_hash)
                JOIN {_table(ws, 'person_link_lookup')} l ON l.row_id_hash = p.row_id_hash))""").fetchone()
    assert hearings == parties_with_a_person > 500
    # Every table whose contract names an event date is in the journey, and no other.
    dated = {(c.source, t) for c in load_contracts(ws.contracts) for t, spec in c.tables.items() if spec.event_date}
    assert set(con.execute(f"SELECT DISTINCT source_dataset, source_table FROM {_table(ws, 'person_journey')}")
               .fetchall()) == dated
    journey = _dictionary(ws)["person_journey"]
    assert "tribunal_hearing (tribunal, through people)" in journey["description"]
    assert "medium threshold" in journey["unit"]
    declared = {c["name"]: c["declared"] for c in journey["columns"]}
    assert "tribunal_hearing" in declared["event_type"]["values"] and "hearings" in declared["source_table"]["values"]


def test_a_dated_table_that_reaches_no_person_is_named_in_the_journeys_description(tmp_path):
    (tmp_path / "c.yaml").write_text("""
source: registry
tables:
  people:
    file: r/people.csv
    record_id: person_ref
    columns:
      person_ref: {native_id: true}
      surname: {role: surname}
  notices:
    file: r/notices.csv
    record_id: notice_ref
    event_date: served_on
    columns:
      notice_ref: {native_id: true}
      served_on: {type: date, formats: ["%Y-%m-%d"]}
  visits:
    file: r/visits.csv
    record_id: visit_ref
    event_date: visited_on
    columns:
      visit_ref: {native_id: true}
      person_ref: {native_id: true}
      visited_on: {type: date, formats: ["%Y-%m-%d"]}
""")
    journey = next(p for p in person_products([load_contract(tmp_path / "c.yaml")]) if p.name == "person_journey")
    assert "visits (registry, through people)" in journey.description
    assert "Not in the journey, for sharing no native id with a person table of their source: registry.notices" \
        in journey.description
    assert journey.declared["event_type"].values == ("visits",)


# --- person tables at each threshold ---------------------------------------------------------------


def test_a_person_table_at_each_threshold_with_the_same_columns_and_its_threshold_said(ws):
    con = duckdb.connect()
    d = _dictionary(ws)
    lookup = _table(ws, "person_link_lookup")
    columns = {}
    people = {}
    for threshold, name in PERSON_TABLES.items():
        person = f"person_id_{threshold}"
        table = d[name]
        assert table["keys"] == [person] and f"({threshold} threshold)" in table["unit"]
        assert f"at the {threshold} threshold" in table["description"]
        columns[threshold] = [c["name"] for c in table["columns"]]
        assert all(c["description"] and c["declared"] for c in table["columns"])
        rows, ids, records = con.execute(f"""SELECT count(*), count(DISTINCT {person}), sum(records)
                                            FROM {_table(ws, name)}""").fetchone()
        assert (rows, ids) == (table["rows"], table["rows"])
        # One row per person of the lookup at that threshold, holding every linked record once.
        assert con.execute(f"SELECT count(DISTINCT {person}), count(*) FROM {lookup}").fetchone() == (rows, records)
        people[threshold] = rows
    assert columns["high"][1:] == columns["medium"][1:] == columns["low"][1:]
    assert people["high"] >= people["medium"] >= people["low"]
    package = {r["name"]: r for r in json.loads((published(ws)[-1] / "datapackage.json").read_text())["resources"]}
    assert package["person_high"]["schema"]["primaryKey"] == ["person_id_high"]
    assert package["person_low"]["schema"]["primaryKey"] == ["person_id_low"]


# --- ethnicity ------------------------------------------------------------------------------------


def test_ethnicity_is_harmonised_to_the_2021_codes_and_groups_with_the_source_value_kept(ws):
    """Magistrates and prison record 2021 census codes, probation the labels: every table now also
    has the code and the high-level group, mapped in the engine from the contract's declared file."""
    scheme = list(csv.DictReader((CONTRACTS / "ethnic_groups_2021_scheme.csv").open(encoding="utf-8")))
    listed = list(csv.DictReader((CONTRACTS / "ethnic_groups_2021.csv").open(encoding="utf-8")))
    assert [(r["code"], r["label"]) for r in scheme] == [(r["code"], r["label"]) for r in listed]  # the same 19
    assert {r["group"] for r in scheme} == {"A", "B", "M", "W", "O"}
    by_code = {r["code"]: r for r in scheme}
    by_label = {r["label"]: r for r in scheme}
    con = duckdb.connect()
    d = _dictionary(ws)
    for table, source, lookup in [("magistrates__defendants", "self_defined_ethnicity", by_code),
                                  ("prison__bookings", "ethnicity_code", by_code),
                                  ("probation__events", "ethnicity", by_label)]:
        rows = con.execute(f"SELECT {source}, ethnicity_2021_code, ethnic_group_5, count(*) FROM {_table(ws, table)} "
                           "GROUP BY ALL").fetchall()
        assert len(rows) > 10, table
        for value, code, group, _ in rows:
            if value is None:
                assert code is None and group is None
            else:
                assert (code, group) == (lookup[value]["code"], lookup[value]["group"]), (table, value)
        columns = {c["name"]: c for c in d[table]["columns"]}
        names = [c["name"] for c in d[table]["columns"]]
        assert names.index("ethnicity_2021_code") == names.index(source) + 1  # beside the source value
        for added, file_column in (("ethnicity_2021_code", "code"), ("ethnic_group_5", "group")):
            c = columns[added]
            assert c["harmonised_from"] == source and c["declared"]["kind"] == "code"
            assert f"ethnic_groups_2021_scheme.csv ({file_column})" in c["declared"]["rule"]
            assert sorted(c["declared"]["values"]) == sorted({r[file_column] for r in scheme})
            assert "as recorded by" not in c["description"] and "2021 census" in c["description"]
            assert not c.get("suppressed_values")  # every recorded value maps


def test_a_value_with_no_row_in_the_mapping_is_emptied_and_counted(ws):
    """The tribunal's own mapping lists applicants and respondents, not children."""
    con = duckdb.connect()
    counts = dict(con.execute(f"SELECT party_role, count(*) FILTER (WHERE side IS NULL) FROM "
                              f"{_table(ws, 'tribunal__people')} GROUP BY ALL").fetchall())
    assert counts["child"] > 100 and counts["applicant"] == counts["respondent"] == 0
    side = next(c for c in _dictionary(ws)["tribunal__people"]["columns"] if c["name"] == "side")
    assert side["suppressed_values"] == counts["child"] and side["harmonised_from"] == "party_role"
    assert side["declared"]["values"] == ["initiating", "responding"]
    notes = (published(ws)[-1] / "RELEASE_NOTES.md").read_text()
    assert f"| `tribunal__people.side` | {counts['child']:,} |" in notes and "no row in the mapping" in notes
    assert "with no row in the mapping emptied" in (published(ws)[-1] / "dictionary.md").read_text()


# --- the contract key -----------------------------------------------------------------------------


def _contract(tmp_path: Path, column: str, mapping: str = "role,side\napplicant,a\nrespondent,b\n") -> Path:
    (tmp_path / "sides.csv").write_text(mapping)
    path = tmp_path / "c.yaml"
    path.write_text(f"""
source: s
tables:
  t:
    file: t.csv
    record_id: id
    columns:
      id: {{native_id: true}}
      surname: {{role: surname}}
      {column}
""")
    return path


@pytest.mark.parametrize("column, problem", [
    ("role: {harmonise: {file: sides.csv, match: role, columns: {surname: {column: side}}}}",
     r"tables\.t.*harmonise\.columns\.surname: the name is taken by column 'surname'"),
    ("role: {harmonise: {file: sides.csv, match: role, columns: {id_hash: {column: side}}}}",
     r"'id_hash' is a name releases derive themselves"),
    ("role: {harmonise: {file: sides.csv, match: role, columns: {year_of_birth: {column: side}}}}",
     r"'year_of_birth' is a name releases derive themselves"),
    ("role: {role: forename, harmonise: {file: sides.csv, match: role, columns: {side: {column: side}}}}",
     r"`harmonise` is for string content columns"),
    ("role: {harmonise: {file: ../sides.csv, match: role, columns: {side: {column: side}}}}",
     r"a harmonise file is a \.csv path relative to the contract's folder"),
    ("role: {harmonise: {file: sides.csv, match: role, columns: {}}}", r"`columns` names at least one column"),
    ("role: {harmonise: {file: sides.csv, match: role, colums: {side: {column: side}}}}", r"colums"),
])
def test_a_bad_harmonise_declaration_is_refused_naming_the_place(tmp_path, column, problem):
    with pytest.raises(ContractError, match=problem):
        load_contract(_contract(tmp_path, column))


def test_a_mapping_file_must_hold_its_columns_and_each_value_once(tmp_path):
    ok = "role: {harmonise: {file: sides.csv, match: role, columns: {side: {column: side}}}}"
    col = load_contract(_contract(tmp_path, ok)).tables["t"].columns["role"]
    assert col.harmonise.mapping == {"applicant": {"side": "a"}, "respondent": {"side": "b"}}
    with pytest.raises(ContractError, match=r"tables\.t\.columns\.role\.harmonise: mapping file .*other\.csv not found; keep it beside"):
        load_contract(_contract(tmp_path, ok.replace("sides.csv", "other.csv")))
    with pytest.raises(ContractError, match=r"mapping file .*sides\.csv has no column 'group' \(its columns: role, side\)"):
        load_contract(_contract(tmp_path, ok.replace("column: side", "column: group")))
    with pytest.raises(ContractError, match=r"'applicant' is listed twice in column 'role'"):
        load_contract(_contract(tmp_path, ok, "role,side\napplicant,a\napplicant,b\n"))
