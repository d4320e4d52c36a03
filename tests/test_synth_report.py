"""The utility and privacy report of a synthetic twin (synth/report.py, synth/metrics.py).

The generator is not needed: the twins here are made from a small real release in the test, each
with new ids: an exact copy of every content value (which must fail the copy check and single
people out), a twin whose columns are shuffled independently (the right marginals, no joint
distribution) and an independent-noise twin (each value drawn uniformly from its column's
values: wrong marginals too)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datafirst.engine import Engine
from datafirst.engine.sql import sql_string
from datafirst.synth import metrics
from datafirst.synth.report import (
    REPORT_HTML,
    REPORT_JSON,
    ReportError,
    id_columns,
    record_level,
    write_report,
)

SMALL = 10
# A few tables of each kind: people, records with a child table, and prison records.
TABLES = ["person", "magistrates__defendants", "magistrates__offences", "prison__bookings"]
COUNT_KEYS = {"rows_real", "rows_twin", "twin_rows", "copies", "unique_copies", "n_real", "n_twin",
              "rows_checked_real", "violations_real", "rows_checked_twin", "violations_twin", "rows", "reference_rows",
              "attack", "baseline"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _twin_value(engine: Engine, path: Path, base: str, c: str, is_id: bool, kind: str) -> str:
    """Column `c` of a twin row `b` (a row of `base`, numbered `synth_i`)."""
    if is_id:
        return f"CASE WHEN {_q(c)} IS NULL THEN NULL ELSE md5('twin|' || CAST({_q(c)} AS VARCHAR)) END"
    if kind == "copy":
        return _q(c)
    if kind == "shuffled":
        return (f"(SELECT x.{_q(c)} FROM (SELECT {_q(c)}, row_number() OVER (ORDER BY hash(synth_i, "
                f"{sql_string(c)})) AS j FROM {base}) x WHERE x.j = b.synth_i)")
    distinct = f"(SELECT list(DISTINCT {_q(c)} ORDER BY {_q(c)}) FROM {engine.parquet(path)})"
    return f"{distinct}[CAST(1 + hash(b.synth_i, {sql_string(c)}) % nullif(len({distinct}), 0) AS BIGINT)]"


def make_twin(engine: Engine, tables: dict[str, Path], dictionary: dict, out: Path, kind: str) -> dict[str, Path]:
    """A twin of `tables` in `out`: every hashed id replaced by a new one; the content copied
    (`copy`), each column shuffled on its own (`shuffled`) or drawn uniformly from its column's
    distinct values (`noise`)."""
    declared = {t["name"]: t for t in dictionary["tables"]}
    twin = {}
    for name, path in tables.items():
        ids = id_columns(declared[name])
        columns = [c for c, _ in engine.schema(engine.parquet(path))]
        base = f"(SELECT row_number() OVER () AS synth_i, * FROM {engine.parquet(path)})"
        # New text ids; a numeric key (an event's sequence) is made like the content.
        select = ", ".join(
            f"CAST({_twin_value(engine, path, base, c, c in ids and t == 'VARCHAR', kind)} AS {t}) AS {_q(c)}"
            for c, t in engine.schema(engine.parquet(path)))
        twin[name] = out / f"{name}.parquet"
        engine.to_parquet(f"SELECT {select} FROM {base} b ORDER BY b.synth_i", twin[name])
        assert columns == [c for c, _ in engine.schema(engine.parquet(twin[name]))]
    return twin


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A real datafirst release of 1,500 people (the demo, about 20 s)."""
    root = tmp_path_factory.mktemp("synth_report")
    subprocess.run([sys.executable, "-m", "datafirst", "demo", "--people", "1500"], cwd=root, check=True,
                   capture_output=True, env={**os.environ})
    return root / "demo-workspace" / "releases" / "v0001"


@pytest.fixture(scope="module")
def dictionary(release: Path) -> dict:
    return json.loads((release / "dictionary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def real(release: Path) -> dict[str, Path]:
    return {name: release / "tables" / f"{name}.parquet" for name in TABLES}


@pytest.fixture(scope="module")
def reports(release: Path, real: dict[str, Path], dictionary: dict, tmp_path_factory) -> dict[str, dict]:
    """The report of each kind of twin (no holdout; research queries and constraints aside)."""
    out = {}
    with Engine() as engine:
        for kind in ("copy", "shuffled", "noise"):
            folder = tmp_path_factory.mktemp(f"twin_{kind}")
            twin = make_twin(engine, real, dictionary, folder, kind)
            out[kind] = write_report(engine, real, twin, folder / "report", small_count=SMALL)
    return out


def _table(report: dict, section: str, name: str) -> dict:
    return next(t for t in report["privacy"][section] if t["table"] == name)


def _utility(report: dict, name: str) -> dict:
    return next(t for t in report["utility"]["tables"] if t["table"] == name)


def test_the_pmse_ratio_orders_a_copy_a_shuffled_twin_and_noise(reports):
    for name in ("magistrates__defendants", "magistrates__offences", "prison__bookings"):
        ratios = [_utility(reports[kind], name)["pmse"]["ratio"] for kind in ("copy", "shuffled", "noise")]
        assert ratios[0] < ratios[1] < ratios[2], (name, ratios)
    # A copy cannot be told from the real rows at all: no propensity differs from the share.
    assert _utility(reports["copy"], "person")["pmse"]["pmse"] == 0
    assert reports["copy"]["summary"]["pmse_passed"] is True


def test_univariate_and_pairwise_distances_see_what_each_twin_breaks(reports):
    def worst(kind: str, part: str, name: str = "magistrates__offences") -> float:
        return max(x["distance"] for x in _utility(reports[kind], name)[part])

    # Shuffled: every column's distribution kept (distance 0), the pairs broken (offence code and title).
    assert worst("copy", "columns") == 0 and worst("copy", "pairs") == 0
    assert worst("shuffled", "columns") == 0 and worst("shuffled", "pairs") > 0.5
    assert worst("noise", "columns") > 0.3
    kinds = {c["column"]: c["metric"] for c in _utility(reports["copy"], "magistrates__offences")["columns"]}
    assert kinds["offence_date"] == "Kolmogorov-Smirnov statistic" and kinds["plea"] == "total variation distance"
    # Keys and hashed ids are no part of the content compared.
    assert not {"row_id_hash", "case_id_hash", "defendant_id_hash"} & set(kinds)


def test_the_copy_check_catches_a_copy_in_the_tables_of_people_and_records(reports):
    copy, shuffled = reports["copy"], reports["shuffled"]
    assert copy["summary"]["copies_passed"] is False
    assert set(copy["summary"]["copies_failed_tables"]) == set(TABLES)
    person = _table(copy, "copies", "person")
    assert person["zero_required"] and person["copy_share"] == 1.0 and person["unique_copy_share"] > 0.9
    # Shuffling columns leaves no person's row whole.
    assert _table(shuffled, "copies", "person")["unique_copies"] == 0
    for name in TABLES:
        assert _table(shuffled, "copies", name)["copy_share"] in (0, "suppressed") or \
            _table(shuffled, "copies", name)["copy_share"] < 0.01


def test_the_singling_out_attack_wins_on_a_copy_and_not_on_a_shuffled_twin(reports):
    for name in TABLES:
        copy, shuffled = _table(reports["copy"], "singling_out", name), _table(reports["shuffled"], "singling_out", name)
        assert copy["attack_rate"] == 1.0 and copy["risk"] > 0.5, (name, copy)
        assert shuffled["risk"] < 0.2 and shuffled["risk"] < copy["risk"], (name, shuffled)


def test_records_and_people_are_told_from_other_tables_by_the_dictionary(dictionary):
    declared = {t["name"]: t for t in dictionary["tables"]}
    assert record_level(declared["person"]) and record_level(declared["magistrates__offences"])
    assert not record_level(declared["person_journey"])  # a person's events: keyed by person and sequence
    assert not record_level(declared["code_list__offences"])
    # A user's own table, keyed by its own hashed id, with a column named like nothing of datafirst's.
    own = {"name": "tribunal__appeals", "keys": ["appeal_ref"], "unit": "one row per appeal",
           "columns": [{"name": "appeal_ref", "declared": {"kind": "hashed_id"}}, {"name": "lodged_on"},
                       {"name": "panel_ref", "declared": {"kind": "hashed_id"}}]}
    assert record_level(own) and id_columns(own) == {"appeal_ref", "panel_ref"}


def test_a_users_own_release_gets_a_report(tmp_path):
    """A release of one table of the user's own contract: its hashed id and its columns are read
    from its dictionary, and a copy with new ids is caught."""
    tables = tmp_path / "release" / "tables"
    tables.mkdir(parents=True)
    dictionary = {"tables": [{"name": "tribunal__appeals", "keys": ["appeal_ref"], "unit": "one row per appeal",
                              "columns": [{"name": "appeal_ref", "declared": {"kind": "hashed_id"}},
                                          {"name": "lodged_on"}, {"name": "grounds"}, {"name": "award"}]}]}
    (tmp_path / "release" / "dictionary.json").write_text(json.dumps(dictionary), encoding="utf-8")
    with Engine() as engine:
        engine.to_parquet("""SELECT md5(CAST(i AS VARCHAR)) AS appeal_ref, DATE '2020-01-01' + CAST(i % 700 AS INTEGER) AS lodged_on,
                                    ['procedure', 'merits', 'costs'][1 + i % 3] AS grounds, CAST(i * 37 % 1000 AS DOUBLE) AS award
                             FROM range(400) r(i)""", tables / "tribunal__appeals.parquet")
        real = {"tribunal__appeals": tables / "tribunal__appeals.parquet"}
        twin = make_twin(engine, real, dictionary, tmp_path, "copy")
        report = write_report(engine, real, twin, tmp_path / "report", small_count=SMALL)
    copies = _table(report, "copies", "tribunal__appeals")
    assert copies["zero_required"] and copies["unique_copy_share"] == 1.0 and not report["summary"]["copies_passed"]
    assert [c["column"] for c in _utility(report, "tribunal__appeals")["columns"]] == ["lodged_on", "grounds", "award"]


def test_distance_to_closest_record_against_a_holdout(release, real, dictionary, tmp_path):
    """People split in two: a twin that copies its training people is closer to them than the
    holdout's real people are; a shuffled twin of the training people is not."""
    names = ["person", "prison__bookings"]
    train, holdout = {}, {}
    with Engine() as engine:
        for name in names:
            source = engine.parquet(real[name])
            for part, rest, side in ((train, "= 0", "train"), (holdout, "= 1", "holdout")):
                part[name] = tmp_path / side / f"{name}.parquet"
                engine.to_parquet(f"SELECT * FROM {source} WHERE hash(person_id_medium) % 2 {rest}", part[name])
        results = {}
        for kind in ("copy", "shuffled"):
            (tmp_path / kind).mkdir()
            fitted_on_train = make_twin(engine, train, dictionary, tmp_path / kind, kind)
            results[kind] = write_report(engine, {n: real[n] for n in names}, fitted_on_train, tmp_path / kind / "report",
                                         train=train, holdout=holdout, small_count=SMALL)
    copy, shuffled = results["copy"], results["shuffled"]
    assert copy["summary"]["dcr_passed"] is False and set(copy["summary"]["dcr_failed_tables"]) == set(names)
    person = _table(copy, "distance_to_closest_record", "person")
    assert person["twin"]["median"] == 0 and person["holdout"]["median"] > 0
    # A copy is closer beyond any sampling error: the whole of the resampled difference is below 0.
    assert person["closer_beyond_sampling_error"] is True and person["difference_spread"]["median"][1] < 0
    assert set(copy["summary"]["dcr_closer_beyond_sampling_error_tables"]) == set(names)
    assert shuffled["summary"]["dcr_passed"] is True
    assert shuffled["summary"]["dcr_closer_beyond_sampling_error_tables"] == []
    # Real people copying other real people by chance: the yardstick beside the twin's copies.
    assert _table(copy, "copies", "prison__bookings")["holdout_copy_share"] is not None


def _counts(value: object, key: str = ""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _counts(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _counts(v, key)
    elif key in COUNT_KEYS:
        yield key, value


def test_small_counts_are_never_shown_and_the_guard_reads_the_report(real, release, dictionary, tmp_path):
    real_courts = [{"court_code": "2570", "value": 0.25, "n": 4},  # from 4 people: not shown
                   {"court_code": "2571", "value": 0.04, "n": 50},  # 2 of 50: a share that gives back 2
                   {"court_code": "2572", "value": 0.3, "n": 100},  # shown and compared
                   {"court_code": "2573", "value": 0.5, "n": 40}]
    twin_courts = [{"court_code": "2570", "value": 0.5, "n": 6}, {"court_code": "2571", "value": 0.06, "n": 50},
                   {"court_code": "2572", "value": 0.33, "n": 90}, {"court_code": "2573", "value": 0.75, "n": 40}]
    queries = {"real": {"custody_rate_by_court": real_courts, "people_by_sex": [("F", 7), ("M", 940)]},  # 7: not shown
               "twin": {"custody_rate_by_court": twin_courts, "people_by_sex": [("F", 12), ("M", 1000)]},
               "descriptions": {"custody_rate_by_court": "share of defendants sentenced to custody, by court"}}
    constraints = {"real": [{"name": "hearing_after_offence", "table": "magistrates__offences", "rows_checked": 4000,
                             "violations": 3}],
                   "twin": [{"name": "hearing_after_offence", "table": "magistrates__offences", "rows_checked": 3990,
                             "violations": 0}]}
    seen = []

    def guard(passages, ignore):
        seen.append((passages, ignore))
        return []

    with Engine() as engine:
        small = {"person": real["person"]}
        (tmp_path / "twin").mkdir()
        twin = make_twin(engine, small, dictionary, tmp_path / "twin", "shuffled")
        report = write_report(engine, small, twin, tmp_path / "report", queries=queries, constraints=constraints,
                              small_count=SMALL, guard=guard)
        written = (tmp_path / "report" / REPORT_JSON).read_text(encoding="utf-8")
        page = (tmp_path / "report" / REPORT_HTML).read_text(encoding="utf-8")
        assert json.loads(written) == report
        for key, value in _counts(report):
            assert value is None or value == f"<{SMALL}" or (isinstance(value, int) and not 0 < value < SMALL), (key, value)
        cells = {c["group"]["court_code"]: c for c in report["utility"]["research_queries"][0]["cells"]}
        assert cells["2570"]["real"] == "suppressed" and cells["2570"]["n_real"] == f"<{SMALL}"
        assert cells["2570"]["within"] is None  # not compared: the real cell may not be shown
        assert cells["2571"]["real"] == "suppressed" and cells["2571"]["twin"] == "suppressed"
        assert cells["2572"]["real"] == 0.3 and cells["2572"]["within"] is True
        assert cells["2573"]["within"] is False and cells["2573"]["relative_difference"] == 0.5
        sexes = {c["group"]["group_1"]: c for c in report["utility"]["research_queries"][1]["cells"]}
        assert sexes["F"]["real"] == "suppressed" and sexes["M"]["real"] == 940
        assert report["summary"]["research_queries_passed"] is False
        assert report["utility"]["constraints"][0]["violations_real"] == f"<{SMALL}"
        assert report["summary"]["constraints_hold_in_twin"] is True
        for hidden in ("0.2500", "0.0400", "0.25,", "0.04,"):
            assert hidden not in page and hidden not in written
        assert "&lt;10" in page and "SYNTHETIC DATA" in page
        # The guard read the report's text before it was written: table and column names, the query
        # groups and descriptions, with the release's own names to ignore.
        (passages, ignore), = seen
        texts = {text for _, text in passages}
        assert {"person", "sex", "2572", "share of defendants sentenced to custody, by court"} <= texts
        assert {"person", "year_of_birth", "custody_rate_by_court", "hearing_after_offence"} <= ignore

        # A guard that finds an identifying value refuses the report: nothing is written.
        def refusing(passages, ignore):
            return ["report.json: 1 passage(s) hold a surname of the identifiers zone"]

        with pytest.raises(ReportError, match="failed the privacy guard"):
            write_report(engine, small, twin, tmp_path / "refused", queries=queries, small_count=SMALL, guard=refusing)
        assert not (tmp_path / "refused").exists()


def test_the_same_twin_gives_the_same_report_byte_for_byte(real, dictionary, tmp_path):
    with Engine() as engine:
        small = {"magistrates__defendants": real["magistrates__defendants"]}
        (tmp_path / "twin").mkdir()
        twin = make_twin(engine, small, dictionary, tmp_path / "twin", "shuffled")
        for run in ("a", "b"):
            write_report(engine, small, twin, tmp_path / run, small_count=SMALL)
    for name in (REPORT_JSON, REPORT_HTML):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_bad_inputs_are_named(real, tmp_path):
    with Engine() as engine:
        with pytest.raises(ReportError, match="the twin has no table person"):
            write_report(engine, {"person": real["person"]}, {}, tmp_path, small_count=SMALL)
        loose = tmp_path / "loose" / "tables"
        loose.mkdir(parents=True)
        shutil.copy(real["person"], loose / "person.parquet")
        with pytest.raises(ReportError, match="dictionary.json is missing"):
            write_report(engine, {"person": loose / "person.parquet"}, {"person": loose / "person.parquet"}, tmp_path,
                         small_count=SMALL)


def test_sample_sizes_bound_the_work(monkeypatch, real, dictionary, tmp_path):
    """The samples the models read are bounded by the module's constants, whatever the table's size."""
    monkeypatch.setattr(metrics, "PMSE_ROWS", 300)
    with Engine() as engine:
        small = {"magistrates__offences": real["magistrates__offences"]}
        (tmp_path / "twin").mkdir()
        twin = make_twin(engine, small, dictionary, tmp_path / "twin", "noise")
        report = write_report(engine, small, twin, tmp_path / "report", small_count=SMALL)
    pmse = _utility(report, "magistrates__offences")["pmse"]
    assert pmse["rows_real"] == pmse["rows_twin"] == 300


def test_a_share_resting_on_fewer_than_the_small_count_is_shown_but_not_compared():
    from datafirst.synth.report import compare_queries

    real = {"q": [{"band": "a", "n": 56, "value": 0.0}, {"band": "b", "n": 400, "value": 0.25}]}
    twin = {"q": [{"band": "a", "n": 120, "value": 0.05}, {"band": "b", "n": 410, "value": 0.27}]}
    (query,) = compare_queries(real, twin, 10)
    cells = {c["group"]["band"]: c for c in query["cells"]}
    assert cells["a"]["within"] is None and cells["a"]["real"] == 0.0  # 0 of 56: 20% of it is nobody
    assert cells["b"]["within"] is True and query["compared"] == 1 and query["within"] == 1
