"""Release by allow-list: every released column is declared (contracts for a source's columns,
release/products.py for the derived ones); an undeclared content column is withheld and listed;
values outside a declaration are emptied and counted; a product column with no declaration is
refused; exemptions from the privacy guard need a reason and are listed; code lists may live in
a file beside the contract. And the independent scan finds nothing in the world's release."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
import yaml

from datafirst.engine import Engine
from datafirst.release import stage as release_stage
from datafirst.release.stage import ReleaseError, published, release
from datafirst.sources.contract import ContractError, load_contract
from datafirst.workspace import Workspace, WorkspaceError

from .conftest import TEST_SALT, build_pipeline
from .test_release_attacks import independent_scan


@pytest.fixture(scope="module")
def released_ws(world, tmp_path_factory) -> Workspace:
    return build_pipeline(world, tmp_path_factory.mktemp("allow"), "release")


def _notes(ws: Workspace) -> str:
    return (published(ws)[-1] / "RELEASE_NOTES.md").read_text()


def _dictionary(ws: Workspace) -> dict:
    return json.loads((published(ws)[-1] / "dictionary.json").read_text())


def _edit_contract(ws: Workspace, name: str, edit) -> None:
    path = ws.contracts / name
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _restore_contracts(ws: Workspace) -> None:
    shipped = Path(release_stage.__file__).parents[1] / "sources" / "contracts"
    for path in shipped.glob("*.yaml"):
        shutil.copyfile(path, ws.contracts / path.name)


def _set_config(ws: Workspace, **release_config) -> None:
    config = yaml.safe_load(ws.config_path.read_text())
    config["release"] = release_config
    ws.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_every_column_of_the_worlds_release_is_declared_and_kept(released_ws):
    """The world's contracts declare every content column, so the release keeps them all, and
    the dictionary says what each may hold and where that is declared."""
    d = _dictionary(released_ws)
    for t in d["tables"]:
        assert "withheld_columns" not in t, (t["name"], t.get("withheld_columns"))
        for c in t["columns"]:
            assert c["declared"]["kind"] in ("code", "date", "number", "hashed_id", "flag"), (t["name"], c)
    columns = {t["name"]: {c["name"]: c for c in t["columns"]} for t in d["tables"]}
    assert columns["magistrates__offences"]["offence_title"]["declared"]["declared_in"] == "magistrates.yaml"
    assert "offences.csv (title)" in columns["magistrates__offences"]["offence_title"]["declared"]["rule"]
    assert columns["crown__defendants"]["custodial_months"]["declared"] | {} == {
        "kind": "number", "declared_in": "crown.yaml", "rule": "number, 1 to 600", "min": 1, "max": 600}
    assert columns["person"]["year_of_birth"]["declared"]["declared_in"] == "products.py"
    # Every column the release held before declarations existed is still there.
    for table, names in {
        "magistrates__defendants": {"court_code", "self_defined_ethnicity", "outcome", "sentence_type", "sentence_date",
                                    "sent_to_crown_court", "year_of_birth", "sex", "postcode_district"},
        "magistrates__offences": {"offence_seq", "offence_code", "offence_title", "offence_date", "plea", "verdict"},
        "crown__defendants": {"court_centre", "main_offence_code", "outcome", "disposal", "custodial_months"},
        "prison__bookings": {"ethnicity_code", "establishment_code", "release_date", "sentence_length_days"},
        "probation__events": {"ethnicity", "sentence_type", "length_months"},
        "probation__requirements": {"requirement_seq", "requirement_type", "start_date", "amount", "unit"},
        "family__cases": {"court", "law_type", "order_type", "applicant_authority"},
        "civil__claims": {"claim_type", "claimant_name", "arrears_amount", "outcome"},
    }.items():
        assert names <= set(columns[table]), (table, names - set(columns[table]))
    notes = _notes(released_ws)
    assert "Withheld (no declaration): none." in notes and "Exempt from the privacy guard" in notes


def test_the_independent_scan_finds_nothing_in_the_worlds_release(released_ws, tmp_path):
    release_dir = published(released_ws)[-1]
    assert independent_scan(released_ws, release_dir) == []
    # The scan is not blind: in a copy of the release with one offence title replaced by the full
    # name of someone in the identifiers zone, it finds that value.
    leaky = tmp_path / "leaky"
    shutil.copytree(release_dir, leaky)
    (leaky / "tables").chmod(0o755)
    offences = leaky / "tables" / "magistrates__offences.parquet"
    offences.chmod(0o644)
    ids = released_ws.zones / "identifiers" / "*.parquet"
    with duckdb.connect() as con:
        forename, surname = con.execute(
            f"SELECT forename, surname FROM read_parquet('{ids}', union_by_name = true) "
            "WHERE length(forename) > 3 AND length(surname) > 3 ORDER BY record_key LIMIT 1").fetchall()[0]
        planted = f"victim {forename.title()} {surname.upper()} of the estate"
        con.execute(f"COPY (SELECT * REPLACE (CASE WHEN row_number() OVER () = 1 THEN ? ELSE offence_title END "
                    f"AS offence_title) FROM read_parquet('{offences}')) TO '{offences}.new' (FORMAT parquet)",
                    [planted])
    Path(f"{offences}.new").replace(offences)
    found = independent_scan(released_ws, leaky)
    assert any(f[0] == "magistrates__offences" and f[1] == "offence_title" and planted in map(str, f)
               for f in found), found


def test_an_undeclared_column_is_withheld_and_listed_with_what_to_declare(released_ws):
    _edit_contract(released_ws, "civil.yaml", lambda doc: doc["tables"]["claims"]["columns"]["claim_type"].pop("allowed"))
    _edit_contract(released_ws, "crown.yaml",
                   lambda doc: doc["tables"]["defendants"]["columns"]["custodial_months"].pop("max"))
    try:
        with Engine() as engine:
            rel = release(released_ws, engine, salt=TEST_SALT).path
    finally:
        _restore_contracts(released_ws)
    con = duckdb.connect()
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{rel}/tables/civil__claims.parquet')").fetchall()]
    assert "claim_type" not in cols and "claimant_name" in cols
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{rel}/tables/crown__defendants.parquet')").fetchall()]
    assert "custodial_months" not in cols
    notes = (rel / "RELEASE_NOTES.md").read_text()
    assert "- `civil__claims.claim_type`: text with no code list: declare `allowed` in civil.yaml" in notes
    assert "- `crown__defendants.custodial_months`: a number without a range: declare its plausible `min` and `max` " \
           "in crown.yaml" in notes
    assert "`civil__claims.claim_type` removed (breaking)" in notes  # and the schema change says so
    d = json.loads((rel / "dictionary.json").read_text())
    claims = next(t for t in d["tables"] if t["name"] == "civil__claims")
    assert [w["name"] for w in claims["withheld_columns"]] == ["claim_type"]


def test_values_outside_a_declaration_are_emptied_and_counted(released_ws):
    """A contract narrowed after ingest (or a value ingest let through): the release empties
    what falls outside, and the notes and the dictionary count it per column."""
    content = released_ws.zone("content") / "crown__defendants.parquet"
    con = duckdb.connect()
    over = con.execute(f"SELECT count(*) FROM read_parquet('{content}') WHERE custodial_months > 24").fetchall()[0][0]
    outside = con.execute(f"SELECT count(*) FROM read_parquet('{content}') WHERE outcome NOT IN ('guilty', 'other')"
                          ).fetchall()[0][0]
    assert over > 0 and outside > 0

    def narrow(doc):
        doc["tables"]["defendants"]["columns"]["custodial_months"]["max"] = 24
        doc["tables"]["defendants"]["columns"]["outcome"]["allowed"] = ["guilty", "other"]
    _edit_contract(released_ws, "crown.yaml", narrow)
    try:
        with Engine() as engine:
            rel = release(released_ws, engine, salt=TEST_SALT).path
    finally:
        _restore_contracts(released_ws)
    table = f"read_parquet('{rel}/tables/crown__defendants.parquet')"
    assert con.execute(f"SELECT max(custodial_months) FROM {table}").fetchall()[0][0] <= 24
    assert con.execute(f"SELECT count(*) FROM {table} WHERE outcome NOT IN ('guilty', 'other')").fetchall()[0][0] == 0
    d = json.loads((rel / "dictionary.json").read_text())
    crown = {c["name"]: c for c in next(t for t in d["tables"] if t["name"] == "crown__defendants")["columns"]}
    assert crown["custodial_months"]["suppressed_values"] == over
    assert crown["outcome"]["suppressed_values"] == outside
    assert crown["disposal"]["suppressed_values"] == 0
    notes = (rel / "RELEASE_NOTES.md").read_text()
    assert f"| `crown__defendants.custodial_months` | {over:,} | number, 1 to 24 |" in notes
    assert f"{over:,} values outside it emptied" in (rel / "dictionary.md").read_text()


def test_a_product_column_without_a_declaration_is_refused(released_ws, monkeypatch):
    real_plan = release_stage.plan_products

    def tampered(ws):
        products = real_plan(ws)
        target = next(p for p in products if p.name == "probation__events")
        target.sql = f"SELECT *, 'x' || row_id_hash AS note FROM ({target.sql})"
        return products

    monkeypatch.setattr(release_stage, "plan_products", tampered)
    before = published(released_ws)
    with Engine() as engine, pytest.raises(ReleaseError, match=r"probation__events\.note: no declaration of what it "
                                                               r"may hold .* bug in release/products.py"):
        release(released_ws, engine, salt=TEST_SALT)
    assert published(released_ws) == before


def test_a_derived_column_breaking_its_declaration_is_refused(released_ws, monkeypatch):
    real_plan = release_stage.plan_products

    def tampered(ws):
        products = real_plan(ws)
        target = next(p for p in products if p.name == "person")
        target.sql = f"SELECT * REPLACE (CASE WHEN records > 1 THEN 'X' ELSE sex END AS sex) FROM ({target.sql})"
        return products

    monkeypatch.setattr(release_stage, "plan_products", tampered)
    with Engine() as engine, pytest.raises(ReleaseError, match=r"person\.sex: declared as code from a list of 2 "
                                                               r"\(products.py\) but holds 1 distinct values outside it"):
        release(released_ws, engine, salt=TEST_SALT)


def test_exemptions_need_a_reason_and_are_listed_in_the_notes(released_ws):
    original = released_ws.config_path.read_text()
    try:
        _set_config(released_ws, privacy_allow=["civil__claims.claimant_name"])
        with pytest.raises(WorkspaceError, match=r"(?s)release.privacy_allow is a mapping .* not a list. Write it as:"
                                                 r".*civil__claims.claimant_name: <why"):
            released_ws.config()
        _set_config(released_ws, privacy_allow={"civil__claims.claimant_name": " "})
        with pytest.raises(WorkspaceError, match="civil__claims.claimant_name has no reason"):
            released_ws.config()
        _set_config(released_ws, privacy_allow={"civil__claims.claimant": "reviewed"})
        with Engine() as engine, pytest.raises(ReleaseError, match=r"names civil__claims.claimant, which no table"):
            release(released_ws, engine, salt=TEST_SALT)
        reason = "organisations only: the list was checked against the register of providers (ticket 42)"
        _set_config(released_ws, privacy_allow={"civil__claims.claimant_name": reason})
        with Engine() as engine:
            rel = release(released_ws, engine, salt=TEST_SALT).path
    finally:
        released_ws.config_path.write_text(original)
    notes = (rel / "RELEASE_NOTES.md").read_text()
    assert f"- `civil__claims.claimant_name`: {reason}" in notes
    d = json.loads((rel / "dictionary.json").read_text())
    claims = {c["name"]: c for c in next(t for t in d["tables"] if t["name"] == "civil__claims")["columns"]}
    assert claims["claimant_name"]["privacy_guard_exemption"] == reason


def test_a_code_list_may_live_in_a_file_beside_the_contract(tmp_path):
    (tmp_path / "codes.csv").write_text("code,title\nA1,First\nB2,Second\n\n", encoding="utf-8")

    def contract(allowed: str) -> Path:
        path = tmp_path / "src.yaml"
        path.write_text(f"""source: src
tables:
  t:
    file: t.csv
    record_id: id
    columns:
      id: {{native_id: true}}
      kind: {{allowed: {allowed}}}
""", encoding="utf-8")
        return path

    col = load_contract(contract("{file: codes.csv, column: code}")).tables["t"].columns["kind"]
    assert col.allowed == ["A1", "B2"] and col.allowed_from == "codes.csv (code)"
    with pytest.raises(ContractError, match=r"tables.t.columns.kind.allowed: code list file .*missing.csv not found"):
        load_contract(contract("{file: missing.csv, column: code}"))
    with pytest.raises(ContractError, match=r"has no column 'name' \(its columns: code, title\)"):
        load_contract(contract("{file: codes.csv, column: name}"))
    with pytest.raises(ContractError, match=r"a \.csv path relative to the contract's folder, inside it"):
        load_contract(contract("{file: ../codes.csv, column: code}"))
    # `datafirst init` ships the code lists the world's contracts name, beside them.
    ws = Workspace.init(tmp_path / "ws", tmp_path)
    assert (ws.contracts / "offences.csv").is_file() and (ws.contracts / "possession_claimants.csv").is_file()
