"""Disclosure risk of a package (deliver/risk.py), the attack simulation (deliver/attack.py) and the
research template (deliver/templates.py), on small hand-made tables, a contract of our own and a
release dictionary of our own (the template must fit any release, not only the world's)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml

from datafirst.deliver.attack import AttackError, attack, raw_relation
from datafirst.deliver.project_keys import forget_project_hash, install_project_hash
from datafirst.deliver.projects import (
    Band,
    Coarsen,
    Disclosure,
    Project,
    TopCode,
    parse_project,
)
from datafirst.deliver.risk import RiskError, assess, coarsened, measure
from datafirst.deliver.templates import fit_template, research_template
from datafirst.engine import Engine
from datafirst.engine.sql import sql_string
from datafirst.release.products import forget_keyed_hash, install_keyed_hash
from datafirst.sources.contract import load_contract

SALT = "34787a38770e5656e4c06ab24c7f3f644724190015d0c2042f81483df59d771f"


@pytest.fixture(scope="module")
def engine():
    with Engine(threads=1) as e:
        yield e


def _table(engine: Engine, path: Path, select: str) -> Path:
    engine.to_parquet(select, path)
    return path


@pytest.fixture
def classes(engine, tmp_path) -> Path:
    """Classes over (sex, band) of sizes 1, 2, 5 and 12 (20 rows); `outcome` one value in the class of 12."""
    return _table(engine, tmp_path / "t.parquet", """
        SELECT * FROM (VALUES ('F', 'a', 'x')) v(sex, band, outcome)
        UNION ALL SELECT 'F', 'b', CASE WHEN i = 0 THEN 'x' ELSE 'y' END FROM range(2) r(i)
        UNION ALL SELECT 'M', 'a', CASE WHEN i % 2 = 0 THEN 'x' ELSE 'y' END FROM range(5) r(i)
        UNION ALL SELECT 'M', 'b', 'y' FROM range(12) r(i)""")


def test_measures_known_classes(engine, classes):
    m = measure(engine, engine.parquet(classes), ['"sex"', '"band"'], ["outcome"], 5)
    assert (m.rows, m.classes, m.min_k) == (20, 4, 1)
    assert m.unique_share == pytest.approx(1 / 20)
    assert m.below_k_share == m.under_5_share == pytest.approx(3 / 20)
    assert m.under_10_share == pytest.approx(8 / 20)
    assert m.l_diversity == {"outcome": 1}  # the unique row, and the class of 12 with one outcome


def test_null_is_a_value_of_its_own(engine, tmp_path):
    path = _table(engine, tmp_path / "n.parquet",
                  "SELECT CASE WHEN i < 3 THEN NULL ELSE 'M' END AS sex FROM range(10) r(i)")
    m = measure(engine, engine.parquet(path), ['"sex"'], [], 5)
    assert (m.classes, m.min_k, m.below_k_share) == (2, 3, pytest.approx(0.3))


def test_local_suppression_within_the_budget(engine, classes, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    d = Disclosure(quasi_identifiers={"t": ["sex", "band"]}, k=5, max_unique_share=0.0, max_suppressed_share=0.25)
    a = assess(engine, {"t": classes}, d, work)
    assert a.passed, a.problems
    entry = a.report["tables"]["t"]
    # the 3 rows of the small classes, and 2 of the largest (M, b) so that the all-NULL class reaches k
    assert entry["suppressed_rows"] == 5 and entry["after"]["min_k"] == 5
    assert a.tables["t"] == work / "t.parquet"
    rows = engine.execute(f"SELECT sex, band, outcome FROM {engine.parquet(a.tables['t'])} WHERE sex IS NULL ORDER BY 3")
    assert [r[2] for r in rows] == ["x", "x", "y", "y", "y"] and all(r[1] is None for r in rows)
    # beyond the budget, nothing is suppressed and the table fails
    tight = assess(engine, {"t": classes}, d.model_copy(update={"max_suppressed_share": 0.2}), work)
    assert not tight.passed and tight.tables["t"] == classes
    assert engine.scalar(f"SELECT count(*) FROM {engine.parquet(a.tables['t'])}") == 20


def test_suppressing_fewer_than_k_rows_takes_the_rest_from_the_largest_class(engine, tmp_path):
    """Two rows below k would form an all-NULL class of 2: three more come from the largest class."""
    path = _table(engine, tmp_path / "t.parquet", """SELECT 'a' AS g FROM range(2) UNION ALL SELECT 'b' FROM range(20)
                                                      UNION ALL SELECT 'c' FROM range(6)""")
    (tmp_path / "w").mkdir()
    a = assess(engine, {"t": path}, Disclosure(quasi_identifiers={"t": ["g"]}, max_suppressed_share=0.2), tmp_path / "w")
    assert a.passed, a.problems
    assert a.report["tables"]["t"]["suppressed_rows"] == 5
    counts = dict(engine.execute(f"SELECT g, count(*) FROM {engine.parquet(a.tables['t'])} GROUP BY g"))
    assert counts == {None: 5, "b": 17, "c": 6}


def test_a_delivery_below_k_fails_and_names_the_columns_to_coarsen(engine, tmp_path):
    """Daily dates make every row unique; the problem names the date and the month that passes."""
    path = _table(engine, tmp_path / "d.parquet", """
        SELECT CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END AS sex,
               DATE '2020-01-01' + CAST(i AS INTEGER) AS hearing_date, 'C' || (i % 2) AS court
        FROM range(600) r(i)""")
    (tmp_path / "w").mkdir()
    d = Disclosure(quasi_identifiers={"cases": ["sex", "hearing_date", "court"]}, k=5, max_suppressed_share=0.02)
    a = assess(engine, {"cases": path}, d, tmp_path / "w")
    assert not a.passed and a.tables["cases"] == path  # no suppression beyond the budget
    [problem] = a.problems
    assert problem.startswith("cases: 100.0% of rows are in classes smaller than 5 over sex, hearing_date, court")
    assert "coarsening hearing_date to month gives k>=5 for 100.0% (suppress 0.0%)" in problem
    assert "without hearing_date: 0.0% unique" in problem and "without court: 100.0% unique" in problem
    # what it suggests passes: measured again, coarsened as it says
    month = [coarsened('"sex"', "keep"), coarsened('"hearing_date"', Coarsen(coarsen="month")), '"court"']
    assert measure(engine, engine.parquet(path), month, [], 5).min_k >= 5


def test_l_diversity_fails_a_package(engine, classes, tmp_path):
    (tmp_path / "w").mkdir()
    d = Disclosure(quasi_identifiers={"t": ["sex"]}, sensitive={"t": ["outcome"]}, l_diversity=2, k=5)
    a = assess(engine, {"t": classes}, d.model_copy(update={"max_suppressed_share": 0.5}), tmp_path / "w")
    assert a.passed, a.problems  # F's 3 rows and 2 of M's suppressed; every class holds x and y
    d3 = Disclosure(quasi_identifiers={"t": ["band"]}, sensitive={"t": ["outcome"]}, l_diversity=3, k=5)
    a3 = assess(engine, {"t": classes}, d3, tmp_path / "w")
    assert not a3.passed and "holds only 2 distinct value(s) of outcome (l-diversity 3 asked)" in a3.problems[0]


def test_a_declaration_naming_a_missing_column_is_refused(engine, classes, tmp_path):
    with pytest.raises(RiskError, match=r"disclosure for t names postcode, which the package's t does not hold"):
        assess(engine, {"t": classes}, Disclosure(quasi_identifiers={"t": ["postcode"]}), tmp_path)
    with pytest.raises(RiskError, match=r"names tables the package does not hold: u"):
        assess(engine, {"t": classes}, Disclosure(quasi_identifiers={"u": ["sex"]}), tmp_path)


def test_coarsening_sql_matches_the_treatments(engine):
    ref = date(2026, 1, 1)
    assert engine.scalar(f"SELECT {coarsened('DATE ' + sql_string('2024-05-17'), Coarsen(coarsen='month'))}") \
        == date(2024, 5, 1)
    assert engine.scalar(f"SELECT {coarsened('DATE ' + sql_string('2024-05-17'), Coarsen(coarsen='week'))}") \
        == date(2024, 5, 13)  # a Monday
    band = Coarsen(coarsen="age_band", reference_date=ref, width=10)
    assert engine.scalar(f"SELECT {coarsened('1990', band)}") == "30-39"
    assert engine.scalar(f"SELECT {coarsened(sql_string('LS12'), Coarsen(coarsen='area'))}") == "LS"
    assert [engine.scalar(f"SELECT {coarsened(str(v), Band(band=[0, 1000, 5000]))}") for v in (-1, 0, 999, 4999, 5000)] \
        == ["<0", "0-999", "0-999", "1000-4999", "5000+"]
    assert engine.scalar(f"SELECT {coarsened('25000', TopCode(top_code=20000))}") == 20000


# --- the attack, on a source of our own ----------------------------------------------------------

@pytest.fixture
def source(tmp_path) -> tuple:
    """A contract of our own, its raw extract (400 hearings, ids H0..H399), and its 'release' table:
    the content columns and each row's row_id_hash as the release computes it."""
    (tmp_path / "extracts").mkdir()
    lines = ["hearing_id|court|heard|result|name"] + [
        f"H{i}|C{i % 4}|{1 + i % 28:02d}/{1 + (i // 28) % 12:02d}/2021|{'guilty' if i % 3 else 'dismissed'}|Person {i}"
        for i in range(400)]
    (tmp_path / "extracts" / "hearings.psv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    contract_path = tmp_path / "courts.yaml"
    contract_path.write_text("""source: courts
tables:
  hearings:
    file: hearings.psv
    delimiter: "|"
    record_id: hearing_id
    columns:
      hearing_id: {native_id: true}
      court: {allowed: [C0, C1, C2, C3]}
      heard: {type: date, formats: ["%d/%m/%Y"]}
      result: {allowed: [guilty, dismissed]}
      name: {role: surname}
""", encoding="utf-8")
    return load_contract(contract_path), tmp_path / "extracts"


def _release_table(engine: Engine, contract, extracts: Path, out: Path) -> Path:
    """The released table: content columns and the salted row id hash, no name."""
    install_keyed_hash(engine, SALT)
    try:
        return _table(engine, out, f"SELECT keyed_hash(_record_key) AS row_id_hash, court, heard, result "
                                   f"FROM {raw_relation(contract, 'hearings', extracts)}")
    finally:
        forget_keyed_hash(engine)


def test_the_attack_matches_raw_rows_uniquely_and_correctly(engine, source, tmp_path):
    contract, extracts = source
    release = _release_table(engine, contract, extracts, tmp_path / "courts__hearings.parquet")
    r = attack(engine, contract, "hearings", extracts, release, SALT)
    assert r["matched_on"] == ["court", "heard", "result"] and r["raw_rows"] == 400
    assert "evaluation tool" in r["note"] and str(extracts / "hearings.psv") in r["note"]
    # the days repeat every 336 rows with the same court and result: rows 0-63 and 336-399 pair up
    assert r["unique_and_correct"] == r["matched_uniquely"] == 272
    # under coarsening to the month, the same attacker pins nobody
    coarse = {"heard": Coarsen(coarsen="month")}
    package = _table(engine, tmp_path / "package.parquet",
                     f"SELECT row_id_hash, court, {coarsened('heard', coarse['heard'])} AS heard, result "
                     f"FROM {engine.parquet(release)}")
    after = attack(engine, contract, "hearings", extracts, package, SALT, treatments=coarse)
    assert after["unique_and_correct"] < r["unique_and_correct"] and after["unique_and_correct_share"] < 0.05
    # with the wrong salt, the unique matches are not known to be right
    wrong = attack(engine, contract, "hearings", extracts, release, "f" * 64)
    assert wrong["matched_uniquely"] == r["matched_uniquely"] and wrong["unique_and_correct"] == 0


def test_the_attack_checks_a_rekeyed_package_with_the_project_key(engine, source, tmp_path):
    contract, extracts = source
    release = _release_table(engine, contract, extracts, tmp_path / "r.parquet")
    key = "9" * 16 + "a1b2c3d4e5f6a7b8" * 3
    install_project_hash(engine, key)
    package = _table(engine, tmp_path / "p.parquet",
                     f"SELECT project_hash(row_id_hash) AS row_id_hash, court, heard, result FROM {engine.parquet(release)}")
    forget_project_hash(engine)
    plain = attack(engine, contract, "hearings", extracts, package, SALT)
    rekeyed = attack(engine, contract, "hearings", extracts, package, SALT, project_key=key)
    assert plain["unique_and_correct"] == 0 and rekeyed["unique_and_correct"] == rekeyed["matched_uniquely"] == 272


def test_the_attack_names_a_missing_extract(engine, source, tmp_path):
    contract, _ = source
    with pytest.raises(AttackError, match=r"the raw extract .*nowhere.hearings.psv does not exist"):
        attack(engine, contract, "hearings", tmp_path / "nowhere", tmp_path / "x.parquet", SALT)


# --- the research template, on a release of our own ------------------------------------------------

def _release(engine: Engine, folder: Path) -> Path:
    """A two-table release folder: tables/*.parquet and the dictionary.json describing them."""
    (folder / "tables").mkdir(parents=True)
    _table(engine, folder / "tables" / "src__people.parquet", """
        SELECT 'h' || i AS row_id_hash, CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END AS sex,
               1950 + i % 50 AS year_of_birth, 'LS' || (i % 30) AS postcode_district,
               DATE '2015-01-01' + CAST(i * 3 AS INTEGER) AS event_date, ['A1', 'A2', 'B1', 'C1'][1 + i % 4] AS eth,
               ['A', 'A', 'B', 'C'][1 + i % 4] AS eth_group, 'X' || (i % 40) AS site, i * 37 % 5000 AS amount,
               i % 2 = 0 AS flag
        FROM range(3000) r(i)""")
    col = lambda name, kind, type_="VARCHAR", **more: {"name": name, "type": type_, "declared": {"kind": kind, **{
        k: v for k, v in more.items() if k in ("values", "min", "max")}}, **{k: v for k, v in more.items()
                                                                          if k not in ("values", "min", "max")}}
    dictionary = {"tables": [
        {"name": "src__people", "rows": 3000, "columns": [
            col("row_id_hash", "hashed_id"), col("sex", "code", values=["F", "M"]),
            col("year_of_birth", "number", "BIGINT", min=1000, distinct_values=50),
            col("postcode_district", "code"), col("event_date", "date", "DATE"),
            col("eth", "code", values=["A1", "A2", "B1", "C1"]),
            col("eth_group", "code", values=["A", "B", "C"], harmonised_from="eth"),
            col("site", "code", values=[f"X{i}" for i in range(40)]),
            col("amount", "number", "BIGINT", min=0, max=5000, distinct_values=3000),
            col("flag", "flag", "BOOLEAN")]},
        {"name": "code_list__sites", "code_list": {"file": "sites.csv"}, "rows": 40,
         "columns": [col("code", "code", values=[f"X{i}" for i in range(40)])]}]}
    (folder / "dictionary.json").write_text(json.dumps(dictionary), encoding="utf-8")
    return folder


def test_the_research_template_from_a_dictionary_alone(engine, tmp_path):
    release = _release(engine, tmp_path / "v0001")
    p = research_template(release, "P9", reference_date=date(2026, 1, 1))
    # code lists, reference data about codes, are delivered as they are
    assert isinstance(p, Project) and list(p.tables) == ["src__people", "code_list__sites"]
    assert set(p.tables["code_list__sites"].values()) == {"keep"} and "code_list__sites" not in p.disclosure.quasi_identifiers
    t = p.tables["src__people"]
    assert t["row_id_hash"] == "keep" and t["sex"] == "keep" and t["flag"] == "keep"
    assert t["event_date"] == Coarsen(coarsen="month")
    assert t["year_of_birth"] == Coarsen(coarsen="age_band", reference_date=date(2026, 1, 1), width=10)
    assert t["postcode_district"] == Coarsen(coarsen="area")
    assert (t["eth"], t["eth_group"]) == ("drop", "keep")  # the recorded code to its group
    assert t["site"] == "drop"  # 40 values: fine
    assert t["amount"].band[:4] == [0, 1, 2, 5] and t["amount"].band[-1] == 5000
    assert p.disclosure.quasi_identifiers == {
        "src__people": ["sex", "year_of_birth", "postcode_district", "eth_group", "event_date", "amount"]}
    assert (p.disclosure.k, p.disclosure.max_suppressed_share) == (5, 0.02)
    # Round trip through the project file format
    assert parse_project(yaml.safe_dump(p.model_dump(mode="json")), "t.yaml") == p


def test_fitting_the_template_reaches_k_within_the_budget(engine, tmp_path):
    release = _release(engine, tmp_path / "v0001")
    p, changes = fit_template(engine, release, research_template(release, "P9", reference_date=date(2026, 1, 1)))
    assert changes and changes[0].startswith("src__people: postcode_district dropped")
    t, qis = p.tables["src__people"], p.disclosure.quasi_identifiers["src__people"]
    exprs = [coarsened(f'"{c}"', t[c]) for c in qis]
    m = measure(engine, engine.parquet(release / "tables" / "src__people.parquet"), exprs, [], 5)
    assert m.below_k_share <= 0.02
    assert t["postcode_district"] == "drop" and "postcode_district" not in qis
