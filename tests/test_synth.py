"""Synthetic twins of a release (issue 27, Y2 the generator): the twin keeps the release's tables,
columns, types, code lists and joins with new ids, the cardinalities of its people and records,
the release's date orders and declared constraints, no real id and no copy of a unique real row
in any table of people or records (the report's measure); the same seed gives the same bytes;
everything is marked SYNTHETIC; the release is untouched. One small world (1,000 people) through
the real pipeline twice: with the world's contracts, and with contracts of the test's own (the
family court's extracts as a "tribunal", and the prisons; no magistrates' or Crown Court)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.deliver import derived
from datafirst.engine import Engine
from datafirst.release.chain import published
from datafirst.release.products import LOOKUP
from datafirst.release.site import small_count_of
from datafirst.sources.contract import load_contracts
from datafirst.synth import metrics, stage
from datafirst.synth.constraints import check, load_constraints
from datafirst.synth.models import SynthError
from datafirst.synth.report import write_report
from datafirst.synth.stage import synthesise
from datafirst.synth.structure import read_structure
from datafirst.workspace import Workspace
from datafirst.world import generate_world

from .conftest import build_pipeline, run_pipeline

CONTRACTS = Path(__file__).resolve().parents[1] / "src" / "datafirst" / "sources" / "contracts"
cli = CliRunner()


def _tribunal_contract() -> dict:
    family = yaml.safe_load((CONTRACTS / "family.yaml").read_text())
    for table in family["tables"].values():
        for constraint in table.get("constraints", []):  # joined by the family tables' names
            if "join" in constraint:
                constraint["join"]["table"] = {"cases": "hearings", "parties": "people"}[constraint["join"]["table"]]
            constraint["check"] = constraint["check"].replace("cases.", "hearings.").replace("parties.", "people.")
    # Rules of the test's own, not the world's contracts' (each true of the world's data): a twin
    # drawn column by column breaks them unless the generator keeps declared constraints generically.
    family["tables"]["cases"]["constraints"].append({
        "name": "authority_exactly_for_public_orders",
        "description": "a local authority applies for care, supervision and emergency protection orders only",
        "check": "(applicant_authority IS NOT NULL) = (order_type IN ('care_order', 'supervision_order', "
                 "'emergency_protection'))"})
    family["tables"]["parties"]["constraints"].append({
        "name": "no_applicant_party_beside_an_authority",
        "description": "where a local authority applies, no party is the applicant",
        "join": {"table": "hearings", "keys": {"case_number": "case_number"}},
        "check": "NOT (hearings.applicant_authority IS NOT NULL AND party_role = 'applicant')"})
    return {"source": "tribunal", "description": "A tribunal's hearings and the people named in them.",
            "tables": {"hearings": family["tables"]["cases"], "people": family["tables"]["parties"]}}


def _sums(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("synth")
    generate_world(root / "world", 1000, seed=27)
    ws = build_pipeline(root / "world", root, "release")
    own = Workspace.init(root / "own", root / "world" / "extracts")
    for f in own.contracts.glob("*.yaml"):
        if f.name not in ("prison.yaml", "family.yaml") and not f.name.endswith(".codelist.yaml"):
            f.unlink()
    (own.contracts / "family.yaml").unlink()
    (own.contracts / "tribunal.yaml").write_text(yaml.safe_dump(_tribunal_contract(), sort_keys=False))
    run_pipeline(own)
    release, own_release = published(ws.root / "releases")[-1], published(own.root / "releases")[-1]
    before = {"world": _sums(release), "own": _sums(own_release)}
    with Engine() as engine:
        twins = {"low": synthesise(ws, release, "low", 1, engine),
                 "mid": synthesise(ws, release, "mid", 1, engine),
                 "mid again": synthesise(ws, release, "mid", 1, engine, out=root / "again"),
                 "low seed 2": synthesise(ws, release, "low", 2, engine, out=root / "seed2")}
        with pytest.MonkeyPatch.context() as patch:  # the same twin as it was before its copies were repaired
            patch.setattr(stage, "remove_copies", lambda *_, **__: {
                "units_shifted": 0, "shift_rounds": 0, "cells_redrawn": 0, "cells_suppressed": 0,
                "replicated_uniques_left": {}})
            twins["mid unrepaired"] = synthesise(ws, release, "mid", 1, engine, out=root / "unrepaired")
        twins["own low"] = synthesise(own, own_release, "low", 1, engine, out=root / "own low")
    result = cli.invoke(app, ["synth", str(own_release), "--fidelity", "mid", "--seed", "1"])
    assert result.exit_code == 0, result.output
    twins["own"] = own.root / "synthetic" / f"{own_release.name}-mid"
    return {"ws": ws, "release": release, "own": own, "own_release": own_release, "before": before,
            "twins": {k: (v if isinstance(v, Path) else v.path) for k, v in twins.items()}, "root": root}


def _dictionary(folder: Path) -> dict[str, dict]:
    return {t["name"]: t for t in json.loads((folder / "dictionary.json").read_text())["tables"]}


def _t(folder: Path, name: str) -> str:
    return f"read_parquet('{folder / 'tables' / f'{name}.parquet'}')"


CASES = [("low", "release"), ("mid", "release"), ("own", "own_release")]


@pytest.mark.parametrize("twin, release", CASES)
def test_the_twin_has_every_table_column_and_type_and_is_marked_synthetic(made, twin, release):
    folder, real = made["twins"][twin], made[release]
    assert folder.parent.name in ("synthetic",) and folder.name.endswith("-low" if twin == "low" else "-mid")
    con = duckdb.connect()
    for name in _dictionary(real):
        assert con.execute(f"DESCRIBE SELECT * FROM {_t(folder, name)}").fetchall() == \
            con.execute(f"DESCRIBE SELECT * FROM {_t(real, name)}").fetchall(), name
        assert pq.read_schema(folder / "tables" / f"{name}.parquet").metadata[b"synthetic"] == b"true"
        if name.startswith("code_list__"):  # public reference data, as released
            assert con.execute(f"SELECT * FROM {_t(folder, name)} EXCEPT SELECT * FROM {_t(real, name)}").fetchall() == []
    d = json.loads((folder / "dictionary.json").read_text())
    assert d["synthetic"] is True
    assert all(t["description"].startswith("SYNTHETIC: ") and all(c["description"].startswith("SYNTHETIC: ")
                                                                   for c in t["columns"]) for t in d["tables"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["source_release"]["version"] == real.name
    assert manifest["fidelity"] == folder.name.split("-")[1] and manifest["seed"] == 1
    assert (folder / "README.md").read_text().startswith("SYNTHETIC DATA")
    listed = dict(reversed(line.split("  ", 1)) for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert listed == {k: v for k, v in _sums(folder).items() if k != "SHA256SUMS"}
    assert not any(p.stat().st_mode & 0o222 for p in [folder, *folder.rglob("*")])  # read-only, owner too


@pytest.mark.parametrize("twin, release", CASES)
def test_joins_hold_and_the_cardinalities_are_the_releases(made, twin, release):
    folder, real = made["twins"][twin], made[release]
    con = duckdb.connect()
    declared = _dictionary(real)
    for name, table in _dictionary(folder).items():
        released = {(j["columns"][0], j["references"]["table"]): j for j in declared[name]["joins"]}
        for j in table["joins"]:
            if released[(j["columns"][0], j["references"]["table"])]["foreign_key"]:
                assert j["foreign_key"], (name, j)  # every foreign key of the release holds in the twin
                col, ref = j["columns"][0], j["references"]
                assert con.execute(f"SELECT count(*) FROM {_t(folder, name)} WHERE {col} IS NOT NULL AND {col} NOT IN "
                                   f"(SELECT {ref['columns'][0]} FROM {_t(folder, ref['table'])})").fetchone()[0] == 0
        assert len(table["joins"]) == len(declared[name]["joins"])

    def figures(f: Path) -> tuple:
        return con.execute(f"SELECT avg(len(sources)), avg(records), count(*) FROM {_t(f, 'person')}").fetchone()

    (sources, records, people), (real_sources, real_records, real_people) = figures(folder), figures(real)
    assert people == real_people
    assert abs(sources / real_sources - 1) < 0.1 and abs(records / real_records - 1) < 0.15
    lookup = con.execute(f"SELECT count(*) FROM {_t(folder, 'person_link_lookup')}").fetchone()[0]
    assert con.execute(f"SELECT sum(records) FROM {_t(folder, 'person')}").fetchone()[0] == lookup
    # Each group and child: as many members or children per parent as in the release (roughly).
    pairs = [("magistrates__offences", "magistrates__defendants", "defendant_id_hash"),
             ("civil__parties", "civil__claims", "claim_number_hash"),
             ("probation__requirements", "probation__events", "crn_hash")] if twin != "own" else [
             ("tribunal__people", "tribunal__hearings", "case_number_hash")]
    for child, parent, key in pairs:
        per = f"SELECT avg(n) FROM (SELECT count(*) n FROM {{}} c WHERE {key} IN (SELECT {key} FROM {{}}) GROUP BY {key})"
        made_, released = (con.execute(per.format(_t(f, child), _t(f, parent))).fetchone()[0] for f in (folder, real))
        assert abs(made_ / released - 1) < 0.2, (child, made_, released)


def test_case_journeys_link_the_same_persons_records_once(made):
    folder = made["twins"]["mid"]
    con = duckdb.connect()
    rows = con.execute(f"""SELECT count(*), count(DISTINCT j.crown_row_id_hash),
               count(*) FILTER (WHERE c.person_id_medium = m.person_id_medium),
               count(*) FILTER (WHERE j.link_method = 'reference' AND c.magistrates_case_ref_hash = j.magistrates_case_hash)
               , count(*) FILTER (WHERE j.link_method = 'reference')
        FROM {_t(folder, 'case_journeys')} j JOIN {_t(folder, 'crown__defendants')} c ON c.row_id_hash = j.crown_row_id_hash
        JOIN {_t(folder, 'magistrates__defendants')} m ON m.row_id_hash = j.magistrates_row_id_hash""").fetchone()
    assert rows[0] > 0 and rows[0] == rows[1] == rows[2] and rows[3] == rows[4]


def test_the_same_seed_gives_byte_identical_twins(made):
    assert _sums(made["twins"]["mid"]) == _sums(made["twins"]["mid again"])
    other = _sums(made["twins"]["low seed 2"])
    assert other["tables/person.parquet"] != _sums(made["twins"]["low"])["tables/person.parquet"]


@pytest.mark.parametrize("twin, release", CASES)
def test_no_real_id_or_hash_appears(made, twin, release):
    folder, real = made["twins"][twin], made[release]
    con = duckdb.connect()

    def ids(f: Path) -> str:
        parts = [f"SELECT CAST({c['name']} AS VARCHAR) AS v FROM {_t(f, t['name'])}" for t in _dictionary(real).values()
                 for c in t["columns"] if c.get("declared", {}).get("kind") == "hashed_id"]
        return " UNION ".join(parts)

    assert con.execute(f"SELECT count(*) FROM ({ids(folder)}) WHERE v IS NOT NULL").fetchone()[0] > 0
    assert con.execute(f"SELECT count(*) FROM ({ids(folder)}) t JOIN ({ids(real)}) r USING (v)").fetchone()[0] == 0


@pytest.mark.parametrize("twin, release", CASES)
def test_no_twin_row_copies_a_unique_real_row_in_any_table_of_people_or_records(made, twin, release):
    """Measured with the report's own definition (its tables of one row per person or per record,
    their content columns, a real row no other real row equals): none copied, in the records, their
    children, the groups, the lookup and the person tables made from them alike."""
    folder, real = made["twins"][twin], made[release]
    checked = []
    with Engine() as engine:
        for name, entry in _dictionary(real).items():
            if not metrics.record_level(entry):
                continue
            r, t = engine.parquet(real / "tables" / f"{name}.parquet"), engine.parquet(folder / "tables" / f"{name}.parquet")
            columns = metrics.content_columns(engine, r, metrics.id_columns(entry))
            if columns:
                assert metrics.copies(engine, r, t, columns)["unique_copies"] == 0, name
                checked.append(name)
    assert {"person", "person_high", "person_link_lookup", "prison__bookings"} <= set(checked)
    repaired = json.loads((folder / "manifest.json").read_text())["copies_repaired"]
    assert repaired["replicated_uniques_left"] == {}


@pytest.mark.parametrize("twin, release", [*CASES, ("own low", "own_release")])
def test_every_declared_constraint_holds_in_the_twin(made, twin, release):
    """Every constraint the release declares (the world's, and the test's own on its own contract,
    among them a joined one) has no violation in the twin at either fidelity, counted by the same
    SQL as on the release, and the twin's manifest says so."""
    folder, real = made["twins"][twin], made[release]
    declared = load_constraints(real)
    names = {c["name"] for c in declared}
    if release == "own_release":
        assert {"authority_exactly_for_public_orders", "no_applicant_party_beside_an_authority"} <= names
    else:
        assert {"guilty_plea_never_acquitted", "no_applicant_party_in_public_law", "verdict_unless_sent_to_crown"} <= names
    with Engine() as engine:
        assert all(c["violations"] == 0 for c in check(engine, _paths(real), declared))
        counted = check(engine, _paths(folder), declared)
    assert [c for c in counted if c["violations"]] == []
    assert all(c["rows_checked"] > 0 for c in counted)
    manifest = json.loads((folder / "manifest.json").read_text())["constraints"]
    assert manifest["violations"] == {c["name"]: 0 for c in declared}
    if twin in ("low", "own low"):  # columns drawn independently break them: the twin drew rows again
        assert any(n for n in manifest["rows_redrawn"].values())


@pytest.mark.parametrize("twin, release", CASES)
def test_the_reports_copy_figure_is_zero_in_every_table_of_people_or_records(made, twin, release, tmp_path):
    """The report's own figure, on the twin as written: no copy of a unique real row in any table
    of one row per person or record (the own twin's report as `datafirst synth` wrote it; the
    world's twins measured by `write_report`), and the manifest's measure agrees."""
    folder, real = made["twins"][twin], made[release]
    written = folder / "report" / "report.json"
    if written.is_file():
        report = json.loads(written.read_text())
    else:
        small = small_count_of(real, json.loads((real / "manifest.json").read_text()))
        with Engine() as engine:
            report = write_report(engine, _paths(real), _paths(folder), tmp_path / "report", small_count=small)
    required = {c["table"]: c for c in report["privacy"]["copies"] if c["zero_required"]}
    parties = "tribunal__people" if twin == "own" else "family__parties"
    assert {"person", "person_link_lookup", parties} <= set(required)
    assert {t: c["unique_copies"] for t, c in required.items() if c["unique_copies"] != 0} == {}
    assert report["summary"]["copies_passed"] is True
    assert json.loads((folder / "manifest.json").read_text())["copies_repaired"]["replicated_uniques_left"] == {}


def test_the_repair_breaks_no_declared_constraint(made):
    """The repair moves a person's dates together and draws again or suppresses only columns no
    constraint names: every declared constraint holds in the repaired twin wherever it held in the
    same twin before the repair (which the generator made keep them all), and the repair changed
    some rows."""
    real, folder, unrepaired = made["release"], made["twins"]["mid"], made["twins"]["mid unrepaired"]
    declared = load_constraints(real)
    assert declared
    with Engine() as engine:
        before = {(c["table"], c["name"]): c["violations"] for c in check(engine, _paths(unrepaired), declared)}
        for c in check(engine, _paths(folder), declared):
            assert c["violations"] <= before[(c["table"], c["name"])], c
    assert _sums(folder) != _sums(unrepaired)


@pytest.mark.parametrize("twin, release", CASES)
def test_the_person_tables_and_journey_are_what_the_records_make(made, twin, release):
    """The repair shifts the person tables and the journey with the records, in place: they are
    what the release's SQL makes again from the twin's records."""
    folder, real = made["twins"][twin], made[release]
    with Engine() as engine:
        ws = made["ws"] if release == "release" else made["own"]
        contracts = load_contracts(ws.contracts)
        structure = read_structure(real)
        sources = sorted({c.source for c in contracts})
        made_again = derived.derived_sql(contracts, folder, sources, structure.tables[LOOKUP].names)
        derived.build_inputs(engine, folder, {n: set(t.names) for n, t in structure.tables.items()}, contracts, sources)
        for name in ("person", "person_high", "person_low", "person_journey"):
            twin_rows = f"SELECT * FROM {engine.parquet(folder / 'tables' / f'{name}.parquet')}"
            again = f"SELECT * FROM ({made_again[name]})"
            for a, b in ((twin_rows, again), (again, twin_rows)):
                assert engine.scalar(f"SELECT count(*) FROM ({a} EXCEPT ALL {b})") == 0, name
        derived.drop_inputs(engine)


def _paths(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in (folder / "tables").glob("*.parquet")}


@pytest.mark.parametrize("twin", ["mid", "own"])
def test_dates_keep_the_releases_order_and_sentences_only_follow_convictions(made, twin):
    folder = made["twins"][twin]
    con = duckdb.connect()
    checks = [f"SELECT count(*) FROM {_t(folder, 'prison__bookings')} WHERE release_date < reception_date"]
    if twin == "mid":
        checks += [
            (f"SELECT count(*) FROM {_t(folder, 'magistrates__offences')} o JOIN {_t(folder, 'magistrates__defendants')} d "
             "USING (defendant_id_hash) WHERE o.offence_date > d.first_hearing_date"),
            f"SELECT count(*) FROM {_t(folder, 'magistrates__defendants')} WHERE sentence_date < first_hearing_date",
            f"SELECT count(*) FROM {_t(folder, 'crown__defendants')} WHERE sentence_date < receipt_date",
            (f"SELECT count(*) FROM {_t(folder, 'magistrates__defendants')} WHERE (sentence_type IS NOT NULL) <> "
             "(outcome = 'guilty')")]
    for sql in checks:
        assert con.execute(sql).fetchone()[0] == 0, sql
    assert con.execute(f"SELECT count(*) FROM {_t(folder, 'prison__bookings')} WHERE release_date IS NOT NULL"
                       ).fetchone()[0] > 0


def test_the_release_is_untouched(made):
    assert _sums(made["release"]) == made["before"]["world"]
    assert _sums(made["own_release"]) == made["before"]["own"]


def test_refusals_name_the_problem_and_write_nothing(made, tmp_path):
    ws, release = made["ws"], made["release"]
    with Engine() as engine:
        with pytest.raises(SynthError, match="--epsilon applies to the low fidelity only"):
            synthesise(ws, release, "mid", 1, engine, epsilon=1.0, out=tmp_path)
        with pytest.raises(SynthError, match="epsilon must be a finite number above 0"):
            synthesise(ws, release, "low", 1, engine, epsilon=0.0, out=tmp_path)
        with pytest.raises(SynthError, match="choose one of low, mid"):
            synthesise(ws, release, "high", 1, engine, out=tmp_path)
        with pytest.raises(SynthError, match="exists already"):
            synthesise(ws, release, "low", 1, engine)
        tampered = tmp_path / "copy" / "releases" / release.name
        shutil.copytree(release, tampered)
        os.chmod(tampered / "manifest.json", 0o644)
        (tampered / "manifest.json").write_text((tampered / "manifest.json").read_text().replace("v0001", "v0009"))
        with pytest.raises(SynthError, match="does not verify"):
            synthesise(ws, tampered, "low", 1, engine, out=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]


def test_a_twin_fitted_on_some_people_has_as_many(made, tmp_path):
    """The holdout evaluation's twin: fitted on the people of a file only, as many people as it names."""
    release = made["release"]
    people = tmp_path / "train.parquet"
    duckdb.connect().execute(f"COPY (SELECT person_id_medium FROM {_t(release, 'person')} ORDER BY person_id_medium "
                             f"LIMIT 200) TO '{people}' (FORMAT parquet)")
    with Engine() as engine:
        twin = synthesise(made["ws"], release, "low", 1, engine, out=tmp_path / "half", train_people=people)
    assert twin.rows["person"] == 200
    assert "people_file_sha256" in json.loads((twin.path / "manifest.json").read_text())["fitted_on"]
