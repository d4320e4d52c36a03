"""Projects and their packages (issue 26, deliverables 1, 2 and 6): the registry and separation of
duties, the refusals, the treatments as SQL, re-keying (two projects' packages share no id), the
derived tables made again from the approved sources only, and the package's checksums. One small
world (800 people) through the real pipeline, released and signed; each test copies it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pyreadstat
import pytest
import yaml
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.deliver import package as pkg
from datafirst.deliver.project_keys import KEYS_DIR_ENV, new_project_key
from datafirst.deliver.projects import ProjectError, add_project, approve_project, expire_project, get_project, \
    list_projects, parse_project
from datafirst.deliver.treatments import TreatmentError, treat
from datafirst.engine import Engine
from datafirst.workspace import Workspace
from datafirst.world import generate_world

from .conftest import build_pipeline

cli = CliRunner()

BASE = {
    "title": "Reoffending after a possession claim", "legal_basis": "Digital Economy Act 2017, s.64",
    "approval_reference": "RAP-2026-117", "tre": "SRS", "expires": "2030-12-31",
    "researchers": ["a.researcher@uni.example"],
    # These tests check a package's making on an 800-person world, where nearly everyone is unique:
    # they lift the disclosure limits, and the test below shows the project's own limits refuse it.
    "disclosure": {"k": 1, "max_unique_share": 1.0},
}
TREATED = {
    "magistrates__defendants": {
        "row_id_hash": "keep", "person_id_medium": "keep", "first_hearing_date": {"coarsen": "month"},
        "sentence_date": {"coarsen": "week"},
        "year_of_birth": {"coarsen": "age_band", "reference_date": "2026-01-01", "width": 10},
        "postcode_district": {"coarsen": "area"}, "ethnicity_2021_code": {"coarsen": "group"}, "sex": "keep",
        "outcome": "keep", "court_code": "drop"},
    "civil__claims": {"claim_number_hash": "keep", "arrears_amount": {"top_code": 20000}, "issue_date": {"coarsen": "year"}},
    "probation__requirements": {"amount": {"band": [10, 50, 100]}},
}
PERSON_TABLES = {
    "person": {"person_id_medium": "keep", "sources": "keep", "records": "keep", "sex": "keep", "year_of_birth": "keep",
               "first_event": "keep", "last_event": "keep"},
    "person_high": {"person_id_high": "keep", "sources": "keep", "records": "keep", "sex": "keep",
                    "year_of_birth": "keep", "first_event": "keep", "last_event": "keep"},
    "person_journey": {"person_id_medium": "keep", "event_date": "keep", "event_type": "keep", "source_dataset": "keep",
                       "source_table": "keep", "event_sequence": "keep"},
    "person_link_lookup": {"row_id_hash": "keep", "person_id_medium": "keep", "source_dataset": "keep",
                           "cluster_size_medium": "keep", "cluster_size_high": "keep", "cluster_size_low": "keep",
                           "person_changes_between_thresholds": "keep"},
}


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deliver")
    generate_world(root / "world", 800, seed=5)
    return build_pipeline(root / "world", root, "release").root


@pytest.fixture
def ws(released, tmp_path, monkeypatch) -> Workspace:
    """A writable copy of the released workspace, with a folder of project keys outside it."""
    shutil.copytree(released, tmp_path / "ws", symlinks=True)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    monkeypatch.setenv(KEYS_DIR_ENV, str(keys))
    return Workspace(tmp_path / "ws")


def _project_file(folder: Path, project_id: str, tables: dict, **extra) -> Path:
    path = folder / f"{project_id}.yaml"
    path.write_text(yaml.safe_dump({"id": project_id, **BASE, "tables": tables, **extra}, sort_keys=False))
    return path


def _approved(ws: Workspace, project_id: str, tables: dict, **extra) -> None:
    add_project(ws.root, _project_file(ws.root.parent, project_id, tables, **extra), "alice")
    approve_project(ws.root, project_id, "bob")
    new_project_key(ws.root, project_id)


def _approved_file(ws: Workspace, path: Path) -> None:
    project_id = parse_project(path.read_text(), str(path)).id
    add_project(ws.root, path, "alice")
    approve_project(ws.root, project_id, "bob")
    new_project_key(ws.root, project_id)


def _deliver(ws: Workspace, project_id: str, **kwargs) -> pkg.Delivery:
    with Engine() as engine:
        return pkg.deliver(ws, project_id, engine, by="carol", **kwargs)


def _rows(path: Path, sql: str) -> list[tuple]:
    return duckdb.sql(sql.replace("{T}", f"read_parquet('{path}')")).fetchall()


def _release_table(ws: Workspace, name: str) -> Path:
    return ws.root / "releases" / "v0001" / "tables" / f"{name}.parquet"


# --- the registry and separation of duties ---------------------------------------------------

def test_registry_records_who_did_what_and_refuses_the_requester_as_approver(ws):
    source = _project_file(ws.root.parent, "P1", TREATED)
    record = add_project(ws.root, source, "alice")
    assert record.status == "requested" and record.requested_by == "alice"
    assert (ws.root / "governance" / "projects" / "P1.yaml").read_bytes() == source.read_bytes()
    with pytest.raises(ProjectError, match="already"):
        add_project(ws.root, source, "alice")
    with pytest.raises(ProjectError, match="alice requested project P1, so cannot approve it"):
        approve_project(ws.root, "P1", "alice")
    approved = approve_project(ws.root, "P1", "bob")
    assert approved.approval["by"] == "bob" and approved.approval["sha256"] == approved.yaml_sha256
    with pytest.raises(ProjectError, match="approved already"):
        approve_project(ws.root, "P1", "dave")
    with pytest.raises(ProjectError, match="did you mean `P1`"):
        get_project(ws.root, "P11")
    assert [(r.project.id, r.effective_status()) for r in list_projects(ws.root)] == [("P1", "approved")]
    # Past its `expires` date a project counts as expired, whatever is recorded.
    assert get_project(ws.root, "P1").effective_status(today=date(2031, 1, 1)) == "expired"
    expire_project(ws.root, "P1", "bob")
    record = get_project(ws.root, "P1")
    assert record.effective_status() == "expired"
    assert [(e["action"], e["by"]) for e in record.history] == [("requested", "alice"), ("approved", "bob"),
                                                               ("expired", "bob")]


def test_unknown_unapproved_expired_and_edited_projects_are_refused(ws):
    with pytest.raises(pkg.DeliveryError, match="no project 'P9'"):
        _deliver(ws, "P9")
    add_project(ws.root, _project_file(ws.root.parent, "P1", TREATED), "alice")
    new_project_key(ws.root, "P1")
    with pytest.raises(pkg.DeliveryError, match="is requested, not approved"):
        _deliver(ws, "P1")
    approve_project(ws.root, "P1", "bob")
    with pytest.raises(pkg.DeliveryError, match="has expired"):
        _deliver(ws, "P1", today=date(2031, 1, 1))
    registered = ws.root / "governance" / "projects" / "P1.yaml"
    registered.write_text(registered.read_text().replace("court_code: drop", "court_code: keep"))
    with pytest.raises(pkg.DeliveryError, match="edited after its approval"):
        _deliver(ws, "P1")
    approve_project(ws.root, "P1", "bob")  # the edit approved: delivered again
    assert "court_code" in pq.read_schema(_deliver(ws, "P1").path / "tables" / "magistrates__defendants.parquet").names
    expire_project(ws.root, "P1", "bob")
    with pytest.raises(pkg.DeliveryError, match="has expired"):
        _deliver(ws, "P1")
    assert not any((ws.root / "deliveries" / "P1").glob(".*partial*"))


def test_tables_columns_and_treatments_the_release_cannot_take_are_refused(ws):
    _approved(ws, "P1", {"magistrates__defendant": {"sex": "keep"},
                         "civil__claims": {"arrears_amont": "keep", "issue_date": {"coarsen": "age_band",
                                                                                   "reference_date": "2026-01-01"}},
                         "crown__defendants": {"outcome": {"coarsen": "group"}, "row_id_hash": {"coarsen": "year"}}})
    with pytest.raises(pkg.DeliveryError) as refused:
        _deliver(ws, "P1")
    said = str(refused.value)
    assert "no table 'magistrates__defendant'; did you mean `magistrates__defendants`?" in said
    assert "civil__claims has no column 'arrears_amont'; did you mean `arrears_amount`?" in said
    assert "civil__claims.issue_date is DATE: `coarsen: age_band` applies to a year of birth" in said
    assert "crown__defendants.outcome has no group the release knows" in said
    assert "crown__defendants.row_id_hash is an id" in said


def test_a_release_that_does_not_verify_is_refused(ws):
    _approved(ws, "P1", TREATED)
    table = _release_table(ws, "civil__claims")
    table.chmod(0o644)
    table.write_bytes(table.read_bytes() + b"\0")
    with pytest.raises(pkg.DeliveryError, match="(?s)release v0001 does not verify.*civil__claims.parquet"):
        _deliver(ws, "P1")
    assert not (ws.root / "deliveries" / "P1").exists() or not any((ws.root / "deliveries" / "P1").iterdir())


# --- treatments -------------------------------------------------------------------------------

def test_treatments_coarsen_in_the_engine(ws):
    _approved(ws, "P1", TREATED)
    d = _deliver(ws, "P1")
    mags = d.path / "tables" / "magistrates__defendants.parquet"
    release = _release_table(ws, "magistrates__defendants")
    assert pq.read_schema(mags).names == [c for c, t in TREATED["magistrates__defendants"].items() if t != "drop"]
    assert _rows(mags, "SELECT count(*) FROM {T} WHERE day(first_hearing_date) <> 1") == [(0,)]
    assert _rows(mags, "SELECT count(*) FROM {T} WHERE dayofweek(sentence_date) <> 1") == [(0,)]  # Mondays
    # The same distributions as the release's values coarsened.
    assert sorted(_rows(mags, "SELECT first_hearing_date, count(*) FROM {T} GROUP BY 1")) == sorted(
        _rows(release, "SELECT date_trunc('month', first_hearing_date)::DATE, count(*) FROM {T} GROUP BY 1"))
    assert sorted(_rows(mags, "SELECT year_of_birth, count(*) FROM {T} GROUP BY 1"), key=str) == sorted(_rows(
        release, "SELECT CASE WHEN year_of_birth IS NULL THEN NULL ELSE (((2026 - year_of_birth) // 10) * 10)::VARCHAR "
                 "|| '-' || (((2026 - year_of_birth) // 10) * 10 + 9)::VARCHAR END, count(*) FROM {T} GROUP BY 1"), key=str)
    assert sorted(_rows(mags, "SELECT ethnicity_2021_code, count(*) FROM {T} GROUP BY 1"), key=str) == sorted(
        _rows(release, "SELECT ethnic_group_5, count(*) FROM {T} GROUP BY 1"), key=str)
    assert _rows(mags, "SELECT count(*) FROM {T} WHERE NOT regexp_matches(postcode_district, '^[A-Z]{1,2}$')") == [(0,)]
    claims = d.path / "tables" / "civil__claims.parquet"
    assert _rows(claims, "SELECT max(arrears_amount) <= 20000, count(*) FILTER (WHERE arrears_amount = 20000), "
                         "count(*) FILTER (WHERE month(issue_date) <> 1) FROM {T}") == _rows(
        _release_table(ws, "civil__claims"), "SELECT true, count(*) FILTER (WHERE arrears_amount >= 20000), 0 FROM {T}")
    amounts = d.path / "tables" / "probation__requirements.parquet"
    assert {r[0] for r in _rows(amounts, "SELECT DISTINCT amount FROM {T}")} <= {"<10", "10-49", "50-99", "100+", None}
    dictionary = json.loads((d.path / "dictionary.json").read_text())
    band = next(c for t in dictionary["tables"] for c in t["columns"] if c["name"] == "amount")
    assert band["allowed_values"] == sorted(["<10", "10-49", "50-99", "100+"]) and band["type"] == "VARCHAR"
    ethnicity = next(c for t in dictionary["tables"] if t["name"] == "magistrates__defendants"
                     for c in t["columns"] if c["name"] == "ethnicity_2021_code")
    assert "group" in ethnicity["treatment"] and set(ethnicity["declared"]["values"]) == set("WMABO")
    assert "court_code" not in {c["name"] for t in dictionary["tables"] for c in t["columns"]}


def test_a_code_lists_group_column_groups_a_users_own_codes(tmp_path):
    """Not the world's: a contract of one's own whose code list table carries a `group` column."""
    (tmp_path / "tables").mkdir()
    duckdb.sql(f"""COPY (SELECT * FROM (VALUES ('K1', 'North'), ('K2', 'North'), ('K3', 'South')) v(code, "group"))
                   TO '{tmp_path / "tables" / "code_list__areas.parquet"}' (FORMAT parquet)""")
    duckdb.sql(f"COPY (SELECT * FROM (VALUES ('K1'), ('K3'), (NULL)) v(area)) TO '{tmp_path / 'tables' / 'x.parquet'}' "
               "(FORMAT parquet)")
    column = {"name": "area", "type": "VARCHAR", "declared": {"kind": "code", "values": ["K1", "K2", "K3"],
                                                               "code_list": {"table": "code_list__areas", "column": "code"}}}
    table = {"name": "visits__visits", "columns": [column]}
    reference = {"name": "code_list__areas", "columns": [
        {"name": "code", "type": "VARCHAR"},
        {"name": "group", "type": "VARCHAR", "declared": {"kind": "code", "values": ["North", "South"]}}]}
    project = parse_project(yaml.safe_dump({"id": "P1", **BASE, "tables": {"visits__visits": {
        "area": {"coarsen": "group"}}}}), "p.yaml")
    treatment = project.tables["visits__visits"]["area"]
    treated = treat(table, column, treatment, tmp_path, {"code_list__areas": reference, "visits__visits": table})
    got = duckdb.sql(f"SELECT {treated.sql} FROM read_parquet('{tmp_path / 'tables' / 'x.parquet'}') t").fetchall()
    assert got == [("North",), ("South",), (None,)] and treated.declared["values"] == ["North", "South"]
    with pytest.raises(TreatmentError, match="no group the release knows"):
        treat(table, column, treatment, tmp_path, {"visits__visits": table})


# --- re-keying and derived tables -------------------------------------------------------------

def _ids(path: Path) -> set[str]:
    """Every value of every id column of a package."""
    out: set[str] = set()
    for table in (path / "tables").glob("*.parquet"):
        for col in pq.read_schema(table).names:
            if col.endswith("_hash") or col.startswith("person_id"):
                out |= {r[0] for r in _rows(table, f'SELECT DISTINCT "{col}" FROM {{T}} WHERE "{col}" IS NOT NULL')}
    return out


def test_two_projects_packages_share_no_id(ws):
    tables = {**TREATED, **PERSON_TABLES}
    _approved(ws, "P1", tables)
    _approved(ws, "P2", tables)
    one, two = _deliver(ws, "P1"), _deliver(ws, "P2")
    ids_one, ids_two = _ids(one.path), _ids(two.path)
    assert len(ids_one) > 1000 and len(ids_one) == len(ids_two)
    assert ids_one & ids_two == set()
    assert ids_one & _ids(ws.root / "releases" / "v0001") == set()
    # Within a package the ids still join: every defendant's person is in the person table.
    mags, person = one.path / "tables" / "magistrates__defendants.parquet", one.path / "tables" / "person.parquet"
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{mags}') m ANTI JOIN read_parquet('{person}') p "
                      "USING (person_id_medium) WHERE m.person_id_medium IS NOT NULL").fetchall() == [(0,)]
    # A second package of a project: the same ids (numbered -2), a project key check that agrees.
    again = _deliver(ws, "P1")
    assert again.path.name == "v0001-2" and _ids(again.path) == ids_one
    manifests = [json.loads((p.path / "manifest.json").read_text()) for p in (one, two, again)]
    assert manifests[0]["project_key_check"] == manifests[2]["project_key_check"] != manifests[1]["project_key_check"]


def test_derived_tables_are_made_from_the_approved_sources_only(ws):
    sources = ["civil", "crown", "family", "magistrates", "prison", "probation"]
    all_sources = {**PERSON_TABLES, **{t: {"row_id_hash": "keep"} for t in (
        "civil__parties", "crown__defendants", "family__parties", "magistrates__defendants", "prison__bookings",
        "probation__events")}}
    _approved(ws, "ALL", all_sources)
    _approved(ws, "MAGS", {**PERSON_TABLES, "magistrates__defendants": {"row_id_hash": "keep"}})
    full, mags = _deliver(ws, "ALL"), _deliver(ws, "MAGS")
    assert full.sources == sources and mags.sources == ["magistrates"]
    # Every source approved: the person tables are the release's, but for the ids.
    summary = "SELECT sources, records, sex, year_of_birth, first_event, last_event FROM {T} ORDER BY ALL"
    for name in ("person", "person_high"):
        assert _rows(full.path / "tables" / f"{name}.parquet", summary) == _rows(_release_table(ws, name), summary)
    journey = "SELECT event_date, event_type, source_dataset, source_table, event_sequence FROM {T} ORDER BY ALL"
    assert _rows(full.path / "tables" / "person_journey.parquet", journey) == _rows(
        _release_table(ws, "person_journey"), journey)
    # One source approved: no other source shows, in any derived table.
    person = mags.path / "tables" / "person.parquet"
    assert _rows(person, "SELECT DISTINCT sources FROM {T}") == [(["magistrates"],)]
    lookup = _release_table(ws, "person_link_lookup")
    assert _rows(person, "SELECT count(*), sum(records) FROM {T}") == _rows(
        lookup, "SELECT count(DISTINCT person_id_medium), count(*) FROM {T} WHERE source_dataset = 'magistrates'")
    assert _rows(mags.path / "tables" / "person_journey.parquet", "SELECT DISTINCT source_dataset FROM {T}") == [
        ("magistrates",)]
    assert _rows(mags.path / "tables" / "person_link_lookup.parquet",
                 "SELECT DISTINCT source_dataset, bool_and(cluster_size_medium = n) FROM (SELECT *, count(*) OVER "
                 "(PARTITION BY person_id_medium) AS n FROM {T}) GROUP BY 1") == [("magistrates", True)]
    # The release counted other sources' records in the same people's clusters.
    assert _rows(lookup, "SELECT sum(cluster_size_medium) FROM {T} WHERE source_dataset = 'magistrates'") > _rows(
        mags.path / "tables" / "person_link_lookup.parquet", "SELECT sum(cluster_size_medium) FROM {T}")
    # The first and last events are the approved source's: the magistrates' dates.
    assert _rows(person, "SELECT min(first_event), max(last_event) FROM {T}") == _rows(
        _release_table(ws, "magistrates__defendants"), "SELECT min(first_hearing_date), max(first_hearing_date) FROM {T}")
    # The case journeys tell of the Crown Court as well: not for a project approved for magistrates only.
    journeys = {"case_journeys": {"crown_row_id_hash": "keep", "magistrates_row_id_hash": "keep"}}
    _approved(ws, "MAGS2", {"magistrates__defendants": {"row_id_hash": "keep"}, **journeys})
    with pytest.raises(pkg.DeliveryError, match="case_journeys links each Crown Court case .* both sources "
                                                "\\(crown, magistrates\\); approve a table of each"):
        _deliver(ws, "MAGS2")
    _approved(ws, "BOTH", {"magistrates__defendants": {"row_id_hash": "keep"},
                           "crown__defendants": {"row_id_hash": "keep"}, **journeys})
    assert _deliver(ws, "BOTH").tables["case_journeys"] > 0


def test_the_package_holds_its_files_and_checksums_that_verify(ws):
    _approved(ws, "P1", {**TREATED, **PERSON_TABLES})
    d = _deliver(ws, "P1")
    for name in ("README.md", "manifest.json", "dictionary.json", "dictionary.md", "SHA256SUMS"):
        assert (d.path / name).is_file()
    for table in d.tables:
        assert (d.path / "csv" / f"{table}.csv").is_file() and (d.path / "tables" / f"{table}.parquet").is_file()
    assert pkg.verify_package(d.path) == []
    # every table in Stata too, with the delivered (coarsened) values labelled, and its short names listed
    assert sorted(p.stem for p in (d.path / "stata").glob("*.dta")) == sorted(d.tables)
    frame, meta = pyreadstat.read_dta(str(d.path / "stata" / "magistrates__defendants.dta"))
    assert len(frame) == d.tables["magistrates__defendants"]
    assert set(meta.variable_value_labels["ethnicity_2021_code"].values()) <= {"A", "B", "M", "O", "W"}
    assert meta.column_names_to_labels["first_hearing_date"]
    names = (d.path / "stata" / "variable_names.csv").read_text().splitlines()
    assert names[0] == "table,column,stata_name" and \
        "person_link_lookup,person_changes_between_thresholds,person_changes_between_thr_310a" in names
    manifest = json.loads((d.path / "manifest.json").read_text())
    release_manifest = ws.root / "releases" / "v0001" / "manifest.json"
    assert manifest["release"] == {**manifest["release"], "version": "v0001",
                                   "manifest_sha256": hashlib.sha256(release_manifest.read_bytes()).hexdigest()}
    assert manifest["project"]["approved_by"] == "bob" and manifest["delivered_by"] == "carol"
    assert manifest["tables"]["civil__claims"]["columns"]["arrears_amount"] == "top-coded at 20000"
    assert manifest["tables"]["person"]["rows"] == d.tables["person"]
    csv_person = (d.path / "csv" / "person.csv").read_text().splitlines()
    assert len(csv_person) == d.tables["person"] + 1
    assert not os.stat(d.path / "manifest.json").st_mode & stat.S_IWUSR  # read-only once made
    (d.path / "csv").chmod(0o755)
    (d.path / "csv" / "person.csv").chmod(0o644)
    (d.path / "csv" / "person.csv").write_text("edited")
    assert pkg.verify_package(d.path) == ["csv/person.csv"]


def test_cli_project_and_deliver(ws):
    source = _project_file(ws.root.parent, "P1", TREATED)
    w = ["-w", str(ws.root)]
    assert cli.invoke(app, ["project", "add", str(source), *w, "--by", "alice"]).exit_code == 0
    refused = cli.invoke(app, ["project", "approve", "P1", *w, "--by", "alice"])
    assert refused.exit_code == 2 and "separation of duties" in refused.output
    assert cli.invoke(app, ["project", "approve", "P1", *w, "--by", "bob"]).exit_code == 0
    said = cli.invoke(app, ["deliver", "--project", "P1", *w])
    assert said.exit_code == 2 and "datafirst project key new P1" in " ".join(said.output.split())
    assert cli.invoke(app, ["project", "key", "new", "P1", *w]).exit_code == 0
    out = ws.root.parent / "out"
    done = cli.invoke(app, ["deliver", "--project", "P1", *w, "--out", str(out), "--by", "carol"])
    assert done.exit_code == 0, done.output
    assert (out / "P1" / "v0001-1" / "manifest.json").is_file()
    listed = cli.invoke(app, ["project", "list", *w])
    assert "P1" in listed.output and "approved" in listed.output
    unknown = cli.invoke(app, ["project", "show", "P2", *w])
    assert unknown.exit_code == 2 and "the projects here are: P1" in unknown.output


def test_a_package_below_the_projects_k_is_refused_and_names_the_columns_to_coarsen(ws):
    _approved(ws, "P1", {**TREATED, **PERSON_TABLES}, disclosure={
        "quasi_identifiers": {"magistrates__defendants": ["sex", "year_of_birth", "postcode_district"]}, "k": 5})
    with pytest.raises(pkg.DeliveryError) as refused:
        _deliver(ws, "P1")
    message = str(refused.value)
    assert "fails its disclosure limits (k 5" in message and "nothing was delivered" in message
    # the person table is unique on its day-exact first event; the message says so, and what would pass
    assert "person: " in message and "first_event" in message
    assert not list((ws.root / "deliveries" / "P1").glob("v*")), "a refused package leaves nothing behind"


def test_the_research_template_drafted_by_the_cli_is_delivered_and_passes_its_limits(ws):
    """`project template` fits the default research template to the release; registered as it
    is, it delivers every table, and every table its quasi-identifiers cover reaches k."""
    w = ["-w", str(ws.root)]
    drafted = ws.root.parent / "R1.yaml"
    made = cli.invoke(app, ["project", "template", "R1", "--out", str(drafted), *w])
    assert made.exit_code == 0, made.output
    project = parse_project(drafted.read_text(), str(drafted))
    assert project.disclosure.k == 5 and project.disclosure.max_suppressed_share == 0.02
    assert project.tables["magistrates__defendants"]["ethnicity_2021_code"] == "drop"  # the 5 groups instead
    again = cli.invoke(app, ["project", "template", "R1", "--out", str(drafted), *w])
    assert again.exit_code == 2 and "exists" in again.output
    _approved_file(ws, drafted)
    d = _deliver(ws, "R1")
    assert set(d.tables) == {t["name"] for t in json.loads(
        (ws.root / "releases" / "v0001" / "dictionary.json").read_text())["tables"]}
    report = json.loads((d.path / "manifest.json").read_text())["disclosure"]
    assert report["passed"] and report["tables"]
    for name, entry in report["tables"].items():
        after = entry.get("after", entry["before"])
        assert after["min_k"] >= 5 and entry["suppressed_share"] <= 0.02, name
