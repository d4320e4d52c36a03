"""Linkage that generalises (issue 22): each cause found on data nobody here wrote, shown fixed.

Real DuckDB and Splink throughout, on the test sets unlike the justice world
(src/datafirst/testsets) and on small extracts written here.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.engine import Engine
from datafirst.link.blocking import estimated_recall, measured_recall
from datafirst.link.evaluate import accuracy_by_source_pair
from datafirst.link.inputs import INPUT_TABLE, LinkError, current_model, identifier_files, load_input
from datafirst.link.settings import model_spec, settings
from datafirst.link.stage import link
from datafirst.link.train import train
from datafirst.sources.ingest import ingest
from datafirst.standardise.quality import write_report as dq_report
from datafirst.standardise.stage import standardise
from datafirst.testsets import generate
from datafirst.workspace import Workspace


def _onboard(data: Path, root: Path) -> Workspace:
    """A workspace on a test set's extracts with its contracts, as a user onboards it."""
    ws = Workspace.init(root, data / "extracts", with_world_contracts=False)
    for contract in (data / "contracts").glob("*.yaml"):
        shutil.copyfile(contract, ws.root / "contracts" / contract.name)
    return ws


@pytest.fixture(scope="module")
def census(tmp_path_factory) -> tuple[Workspace, Path]:
    """The census + benefits test set (3,000 people: households, twins, Jr/Sr), linked."""
    root = tmp_path_factory.mktemp("census")
    data = generate("census", root / "data", people=3000, seed=3)
    ws = _onboard(data, root / "ws")
    with Engine() as engine:
        ingest(ws, engine)
        standardise(ws, engine)
        train(ws, engine)
        link(ws, engine)
    return ws, data / "labels.csv"


def _with_truth(engine: Engine, ws: Workspace, labels: Path) -> None:
    engine.execute(f"""CREATE OR REPLACE TABLE truth AS SELECT source || '|' || "table" || '|' || record_id AS record_key,
                       true_id FROM read_csv('{labels}', all_varchar = true)""")
    engine.execute(f"""CREATE OR REPLACE TABLE j AS SELECT i.*, t.true_id, c.person_id_medium AS pid
        FROM read_parquet('{ws.zone('identifiers')}/*.parquet') i JOIN truth t USING (record_key)
        JOIN read_parquet('{ws.zone('links') / 'clusters.parquet'}') c USING (record_key)""")


class Null:
    """A NULL of a type, where DuckDB must know it (year(NULL) has two candidates)."""

    def __init__(self, sql_type: str):
        self.sql_type = sql_type


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Null):
        return f"NULL::{value.sql_type}"
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(x) for x in value) + "]::VARCHAR[]"
    return "'" + str(value).replace("'", "''") + "'"


def _level(model: dict, comparison: str, left: dict, right: dict) -> str:
    """The label of the level a pair of records falls in, by the model's own SQL on DuckDB."""
    cmp = next(c for c in model["comparisons"] if c["output_column_name"] == comparison)
    select = ", ".join(f'{_literal(left.get(c))} AS "{c}_l", {_literal(right.get(c))} AS "{c}_r"'
                       for c in sorted(set(left) | set(right)))
    case = " ".join(f"WHEN {lv['sql_condition']} THEN {_literal(lv.get('label_for_charts', 'null'))}"
                    for lv in cmp["comparison_levels"] if lv["sql_condition"].strip().upper() != "ELSE")
    otherwise = next((lv.get("label_for_charts", "else") for lv in cmp["comparison_levels"]
                      if lv["sql_condition"].strip().upper() == "ELSE"), "else")
    return duckdb.connect().execute(
        f"SELECT CASE {case} ELSE {_literal(otherwise)} END FROM (SELECT {select})").fetchall()[0][0]


def _default_model(present: set[str]) -> dict:
    return settings(model_spec(present)).create_settings_dict("duckdb")


# --- 1. no silent loss --------------------------------------------------------------------------

HISTORICAL_CONTRACT = """
source: parish
tables:
  burials:
    file: burials.csv
    record_id: id
    columns:
      id: {required: true, native_id: true}
      forename: {role: forename}
      surname: {role: surname}
      born: {type: date, formats: ["%Y-%m-%d"], role: date_of_birth}
"""


def _parish(tmp_path: Path, contract: str = HISTORICAL_CONTRACT) -> Workspace:
    ext = tmp_path / "extracts"
    ext.mkdir(exist_ok=True)
    rows = ["1,John,Hale,1685-03-21", "2,Mary,Hale,1850-06-02", "3,Ann,Cox,1900-01-01", "4,Tom,Cox,1899-01-01",
            "5,Jane,Lee,1979-11-30"]
    (ext / "burials.csv").write_text("id,forename,surname,born\n" + "\n".join(rows) + "\n")
    ws = Workspace.init(tmp_path / "ws", ext, with_world_contracts=False)
    (ws.root / "contracts" / "parish.yaml").write_text(contract)
    return ws


def test_old_dates_of_birth_are_kept_and_every_rule_that_empties_one_is_counted(tmp_path):
    """A fixed 1900 limit emptied 35,942 of 38,000 dates of a historical set without a word."""
    ws = _parish(tmp_path)
    with Engine() as engine:
        ingest(ws, engine)
        standardise(ws, engine, as_of="2025-01-01")
        _, _, report = dq_report(ws, engine)
        kept = dict(engine.execute(f"SELECT record_key, date_of_birth FROM read_parquet('{ws.zone('identifiers')}/*.parquet')"))
    assert str(kept["parish|burials|1"]) == "1685-03-21" and str(kept["parish|burials|2"]) == "1850-06-02"
    rules = {r["rule"]: r for r in report["tables"][0]["cleaning_rules"]}
    # 1900-01-01 is a placeholder; 1899-01-01 is a 1 January: its year is kept, the day is not.
    assert rules["date_of_birth:placeholder"]["records"] == 1
    assert rules["date_of_birth:year_only"]["records"] == 1
    assert "placeholder_dates" in rules["date_of_birth:placeholder"]["change"]
    # `datafirst standardise` prints each rule with its count and where to change it.
    out = CliRunner().invoke(app, ["standardise", "-w", str(ws.root)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "parish/burials date_of_birth:placeholder: 1 of 5 records" in text
    assert "standardise.date_of_birth.year_only_dates in datafirst.yaml" in text


def test_the_earliest_plausible_date_is_a_declared_choice_of_the_contract(tmp_path):
    ws = _parish(tmp_path, HISTORICAL_CONTRACT.replace("role: date_of_birth}",
                                                       "role: date_of_birth, earliest: 1800-01-01, year_only_dates: []}"))
    with Engine() as engine:
        ingest(ws, engine)
        standardise(ws, engine, as_of="2025-01-01")
        _, _, report = dq_report(ws, engine)
        kept = dict(engine.execute(f"SELECT record_key, date_of_birth FROM read_parquet('{ws.zone('identifiers')}/*.parquet')"))
    assert kept["parish|burials|1"] is None and str(kept["parish|burials|4"]) == "1899-01-01"
    rules = {r["rule"]: r["records"] for r in report["tables"][0]["cleaning_rules"]}
    assert rules == {"date_of_birth:before_earliest": 1, "date_of_birth:placeholder": 1}


def test_train_says_what_it_left_out_and_why(census):
    ws, _ = census
    meta = json.loads(current_model(ws).with_suffix(".meta.json").read_text())
    left_out = " | ".join(meta["left_out"])
    assert "postcode: not compared, no source holds a value" in left_out
    assert "blocking rule on pnc: left out, no values in pnc" in left_out


# --- 2. attributes by declaration -----------------------------------------------------------------


def test_a_declared_attribute_is_linked_on_and_reaches_content_only_when_declared(tmp_path):
    data = generate("historical", tmp_path / "data", people=700, seed=5)
    ws = _onboard(data, tmp_path / "ws")
    contract = ws.root / "contracts" / "historical.yaml"
    contract.write_text(contract.read_text().replace("occupation: {compare: text,", "occupation: {compare: text, content: true,"))
    with Engine() as engine:
        ingest(ws, engine)
        standardise(ws, engine)
        ids = engine.columns(f"read_parquet('{ws.zone('identifiers')}/*.parquet')")
        content = engine.columns(f"read_parquet('{ws.zone('content')}/*.parquet')")
        path = train(ws, engine)
    assert {"birth_place", "occupation"} <= set(ids)
    assert "birth_place" not in content and "occupation" in content
    model = json.loads(path.read_text())
    compared = {c["output_column_name"]: c for c in model["comparisons"]}
    exact = next(lv for lv in compared["birth_place"]["comparison_levels"] if lv.get("label_for_charts", "").startswith("Exact"))
    assert exact["m_probability"] > exact["u_probability"]  # trained, and agreeing counts for a match


# --- 3. households and twins ----------------------------------------------------------------------


def test_twins_and_household_members_are_not_merged(census):
    """Twins share a surname, a date of birth and an address; before, all 23 twin pairs of this set
    were linked at medium (p > 0.99). Measured now: 2 of 24."""
    ws, labels = census
    with Engine() as engine:
        _with_truth(engine, ws, labels)
        twins, twins_linked = engine.execute("""
            SELECT count(*), count(*) FILTER (WHERE a.pid = b.pid) FROM j a JOIN j b
            ON a.surname = b.surname AND a.date_of_birth = b.date_of_birth AND a.address = b.address
            AND a.true_id <> b.true_id AND a.record_key < b.record_key AND a.forename <> b.forename""")[0]
        households, households_linked = engine.execute("""
            SELECT count(*), count(*) FILTER (WHERE a.pid = b.pid) FROM j a JOIN j b
            ON a.surname = b.surname AND a.address = b.address AND a.true_id <> b.true_id
            AND a.record_key < b.record_key AND a.forename <> b.forename""")[0]
    assert twins >= 10 and twins_linked / twins <= 0.25
    assert households >= 500 and households_linked / households <= 0.02
    meta = json.loads(current_model(ws).with_suffix(".meta.json").read_text())
    assert meta["families"]["same surname and place; forenames unrelated (household members)"]["family_share"] > 0.9


# --- 4 and 5. comparisons that degrade gracefully ----------------------------------------------------


def test_a_middle_initial_agrees_with_a_full_middle_name():
    model = _default_model({"forename", "surname", "middle_names"})
    assert _level(model, "middle_names", {"middle_names": "s"}, {"middle_names": "sasha"}) == \
        "an initial and a middle name with that initial"
    assert _level(model, "middle_names", {"middle_names": "s"}, {"middle_names": "marie"}) == "All other comparisons"


def test_an_address_with_a_space_dropped_or_moved_is_the_same_address():
    # FEBRL4's last missed pairs at medium: 'mckinleycircuit' for 'mckinley circuit',
    # 'brackenl eigh' for 'bracken leigh'; word overlap alone scored them below the threshold.
    model = _default_model({"forename", "surname", "address"})

    def level(a: str, b: str) -> str:
        return _level(model, "address", {"address": a, "address_tokens": a.split()},
                      {"address": b, "address_tokens": b.split()})

    assert level("2 mckinley circuit lemon tree passage", "2 mckinleycircuit lemon tree passage") == \
        "Exact match ignoring spaces"
    assert level("2 denovan circuit bracken leigh", "2 denovan circuit brackenl eigh") == "Exact match ignoring spaces"
    assert level("2 denovan circuit bracken leigh", "4 denovan circuit bracken leigh") != "Exact match ignoring spaces"


def test_dates_with_swapped_day_and_month_typos_and_only_a_year_are_partial_evidence():
    model = _default_model({"forename", "surname", "date_of_birth", "year_of_birth"})

    def level(a: str | None, b: str | None, year_a: int, year_b: int) -> str:
        return _level(model, "date_of_birth",
                      {"date_of_birth": date.fromisoformat(a) if a else Null("DATE"), "year_of_birth": year_a,
                       "dob_text": a},
                      {"date_of_birth": date.fromisoformat(b) if b else Null("DATE"), "year_of_birth": year_b,
                       "dob_text": b})

    assert level("1985-03-04", "1985-04-03", 1985, 1985) == "day and month swapped"
    assert level("1985-06-12", "1985-06-13", 1985, 1985) == "one digit apart, or two neighbouring digits swapped"
    assert level("1958-06-12", "1985-06-12", 1958, 1985) == "one digit apart, or two neighbouring digits swapped"
    # A 1 January written for an unknown day keeps its year (the identifiers zone has no date).
    assert level(None, "1985-06-12", 1985, 1985) == "same year"
    assert level("1940-02-02", "1985-06-12", 1940, 1985) == "All other comparisons"


def test_a_nickname_from_the_public_list_is_its_own_level(tmp_path):
    with Engine() as engine:
        from datafirst.link.nicknames import load_groups

        table = load_groups(engine)
        groups = dict(engine.execute(f"SELECT name, groups FROM {table} WHERE name IN ('bill', 'william', 'peggy')"))
    model = _default_model({"forename", "surname", "forename_groups"})
    bill, william, peggy = ({"forename": n, "forename_groups": groups[n], "surname": "smith",
                             "forename_is_initial": False} for n in ("bill", "william", "peggy"))
    assert _level(model, "forename", bill, william) == "nickname or variant of the other (public nickname list)"
    assert _level(model, "forename", peggy, william) == "forenames unrelated"


# --- 6. blocking when the date of birth is unusable -------------------------------------------------


def test_blocking_reaches_nicknames_and_typos_without_a_date_of_birth_and_says_how_much_it_reaches(census):
    ws, labels = census
    model = json.loads(current_model(ws).read_text())
    rules = [r["blocking_rule"] for r in model["blocking_rules_to_generate_predictions"]]
    assert any("forename_group" in r for r in rules)
    with Engine() as engine:
        present = load_input(engine, identifier_files(ws))
        engine.execute("""CREATE TABLE nicknamed AS
            SELECT 'a' AS record_key, 'bill' AS forename, 'smith' AS surname, 'william' AS forename_group UNION ALL
            SELECT 'b', 'william', 'smith', 'william'""")
        engine.execute("CREATE TABLE nick_truth AS SELECT 'a' AS record_key, '1' AS true_id UNION ALL SELECT 'b', '1'")
        nick_rules = [r for r in rules if "forename_group" in r]
        assert measured_recall(engine, nick_rules, "nicknamed", "nick_truth")["recall"] == 1.0
        engine.execute(f"CREATE TABLE truth AS SELECT source || '|' || \"table\" || '|' || record_id AS record_key, "
                       f"true_id FROM read_csv('{labels}', all_varchar = true)")
        measured = measured_recall(engine, rules, INPUT_TABLE, "truth")
        n = engine.scalar(f"SELECT count(*) FROM {INPUT_TABLE}")
        presence = {c: k / n for c, k in zip(present, engine.execute(
            "SELECT " + ", ".join(f"count({c})" for c in present) + f" FROM {INPUT_TABLE}")[0])}
    presence["forename_group"] = presence["forename"]
    estimated = estimated_recall(model, presence, rules)
    assert measured["true_pairs"] > 1000 and measured["recall"] > 0.95
    assert abs(estimated["recall"] - measured["recall"]) < 0.05


# --- 6b. quality per source pair ----------------------------------------------------------------------


def test_accuracy_per_pair_of_sources_counts_pairs_by_their_two_sources():
    with Engine() as engine:
        engine.execute("""CREATE TABLE c AS SELECT * FROM (VALUES
            ('a1', 'a', 'P1'), ('a2', 'a', 'P1'), ('b1', 'b', 'P1'), ('b2', 'b', 'P2'), ('b3', 'b', 'P2'))
            t(record_key, source, person_id_medium)""")
        engine.execute("""CREATE TABLE t AS SELECT * FROM (VALUES
            ('a1', 'T1'), ('a2', 'T2'), ('b1', 'T1'), ('b2', 'T2'), ('b3', 'T3')) t(record_key, true_id)""")
        rows = {tuple(r["sources"]): r for r in accuracy_by_source_pair(engine, "c", "t", ("medium",))}
    # a-a: predicted a1~a2 (wrong); a-b: predicted a1~b1 (right), a2~b1 (wrong), true a2~b2 (missed);
    # b-b: predicted b2~b3 (wrong).
    assert (rows[("a", "a")]["predicted_pairs"], rows[("a", "a")]["true_positives"]) == (1, 0)
    assert (rows[("a", "b")]["true_pairs"], rows[("a", "b")]["predicted_pairs"], rows[("a", "b")]["true_positives"]) == (2, 2, 1)
    assert rows[("b", "b")]["precision"] == 0.0


# --- 8. small sources ---------------------------------------------------------------------------------


def test_a_forty_row_source_gets_a_clear_error_not_a_traceback(tmp_path):
    """docs/contracts.md's housing-benefit example with a 40-row file died in Splink with
    `ValueError: math domain error`."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "contracts.md").read_text()
    contract = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    ext = tmp_path / "extracts" / "hb"
    ext.mkdir(parents=True)
    rows = [f"HB{i:04d};{['Smith', 'Jones', 'Khan', 'Wong'][i % 4]};{['John', 'Mary', 'Li', 'Raj', 'Ann'][i % 5]};"
            f"{(i % 28) + 1:02d}.{(i % 12) + 1:02d}.19{50 + i};{'MF'[i % 2]};SW1A {i % 9 + 1}AA;AB{100000 + i}C;"
            f"01.03.2024;{50 + i}.00;open" for i in range(40)]
    (ext / "claimants_2024.txt").write_text(
        "claim_ref;claimant_surname;claimant_forenames;birth_dt;sex_code;post_code;ni_number;claim_start;"
        "weekly_amount;status\n" + "\n".join(rows) + "\n", encoding="cp1252")
    ws = Workspace.init(tmp_path / "ws", tmp_path / "extracts", with_world_contracts=False)
    (ws.root / "contracts" / "hb.yaml").write_text(contract)
    with Engine() as engine:
        ingest(ws, engine)
        standardise(ws, engine)
        with pytest.raises(LinkError, match="40 records, too few to learn"):
            train(ws, engine)
    out = CliRunner().invoke(app, ["train", "-w", str(ws.root)])
    assert out.exit_code != 0 and "too few to learn" in out.output and "Traceback" not in out.output
