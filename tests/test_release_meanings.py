"""Column meanings: every column of the world's release has a meaning written in a contract or a
product (none generated from its name), and every column empty in every row says why. A
contract of a user's own with no description gets the dictionary's plain "no description"
marker, naming the key to write, and its `empty_because` reaches the dictionary; `datafirst
release` warns of such columns."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.engine import Engine
from datafirst.engine.sql import sql_string
from datafirst.release import documentation
from datafirst.release import stage as release_stage
from datafirst.release.meanings import NO_VALUE_DELIVERED, check_dictionary, is_template, meaning_notes
from datafirst.release.products import content_product, forget_keyed_hash, install_keyed_hash
from datafirst.release.profile import table_profile
from datafirst.release.stage import published
from datafirst.sources.contract import ContractError, load_contract
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import PROVENANCE, standardise
from datafirst.workspace import Workspace

from .conftest import TEST_SALT, build_pipeline

ROOT = Path(__file__).resolve().parents[1]

# Empty in every row of the world's release because their table's contract maps no column to
# the role they are made from.
EMPTY_BY_CONTRACT = {("civil__parties", "year_of_birth"): "date_of_birth", ("civil__parties", "sex"): "sex",
                     ("prison__aliases", "sex"): "sex", ("prison__aliases", "postcode_district"): "postcode"}


@pytest.fixture(scope="module")
def released_ws(world, tmp_path_factory) -> Workspace:
    return build_pipeline(world, tmp_path_factory.mktemp("meanings"), "release")


def _dictionary(release: Path) -> dict:
    return json.loads((release / "dictionary.json").read_text(encoding="utf-8"))


def _columns(d: dict) -> dict[tuple[str, str], dict]:
    return {(t["name"], c["name"]): c for t in d["tables"] for c in t["columns"]}


def test_a_template_meaning_is_recognised():
    assert is_template("outcome", "outcome as recorded by civil")
    assert is_template("issue_date", "Issue date.")
    assert is_template("claim_number_hash", "claim number")
    assert not is_template("issue_date", "the date the court issued the claim")
    assert not is_template("outcome", "")  # missing, not a template: counted as missing instead
    check = check_dictionary({"tables": [{"name": "t", "rows": 2, "columns": [
        {"name": "a", "description": "a as recorded by s"}, {"name": "b", "description": ""},
        {"name": "c", "description": "what c is", "empty_unexplained": "no reason given"}]}]})
    assert (check.columns, check.template, check.missing, check.empty_unexplained) == (3, ["t.a"], ["t.b"], ["t.c"])
    assert check.lines()[0] == "template meanings: 1 of 3 columns (t.a)"


def test_every_column_of_the_worlds_release_has_a_written_meaning(released_ws):
    """No meaning generated from a column's name, none missing, and every column empty in every
    row explained (the four made from a role their contract does not map, from the contract)."""
    release = published(released_ws)[-1]
    d = _dictionary(release)
    check = check_dictionary(d)
    assert check.columns > 150
    assert check.template == [] and check.missing == [] and check.empty_unexplained == [], check.lines()
    columns = _columns(d)
    empty = {key for key, c in columns.items() if c["distinct_values"] == 0
             and next(t for t in d["tables"] if t["name"] == key[0])["rows"] > 0}
    assert set(EMPTY_BY_CONTRACT) <= empty
    for key in empty:
        assert columns[key].get("empty_because") and "empty_unexplained" not in columns[key], key
    for (table, column), role in EMPTY_BY_CONTRACT.items():
        why = columns[table, column]["empty_because"]
        assert f"maps no column of tables.{table.split('__')[1]} to the {role} role" in why, why
        assert f"{column} is always empty" in why
    assert "claim_type as recorded" not in (release / "dictionary.md").read_text()
    notes = (release / "RELEASE_NOTES.md").read_text()
    assert "Columns without a meaning: none." in notes
    assert "- `prison__aliases.postcode_district`: prison__aliases records no postcode" in notes
    # The script the integrator runs on any release says the same.
    said = subprocess.run([sys.executable, str(ROOT / "bench" / "check_meanings.py"), str(release)],
                          capture_output=True, text=True, check=False)
    assert said.returncode == 0 and f"template meanings: 0 of {check.columns} columns" in said.stdout, said


def _restore_contracts(ws: Workspace) -> None:
    shipped = Path(release_stage.__file__).parents[1] / "sources" / "contracts"
    for path in shipped.glob("*.yaml"):
        shutil.copyfile(path, ws.contracts / path.name)


def test_a_missing_description_is_reported_by_release(released_ws, monkeypatch):
    """A contract column without a description: `datafirst release` warns, the dictionary has an
    empty meaning and the marker naming the key to write, the notes and dictionary.md list it;
    an `empty_because` on a role column reaches the reduced column made from it."""
    path = released_ws.contracts / "civil.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["tables"]["claims"]["columns"]["outcome"].pop("description")
    doc["tables"]["claims"]["columns"]["claim_number"].pop("description")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path = released_ws.contracts / "crown.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["tables"]["defendants"]["columns"]["gender"]["empty_because"] = "not asked before 2015"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("DATAFIRST_SALT", TEST_SALT)
    try:
        said = CliRunner().invoke(app, ["release", "-w", str(released_ws.root)])
    finally:
        _restore_contracts(released_ws)
    assert said.exit_code == 0, said.output
    output = " ".join(said.output.split())
    assert "Warning: 2 columns have no meaning in their contract" in output, output
    release = published(released_ws)[-1]
    columns = _columns(_dictionary(release))
    outcome = columns["civil__claims", "outcome"]
    assert outcome["description"] == ""
    assert outcome["meaning_missing"] == ("no description in contract civil.yaml, tables.claims.columns.outcome."
                                          "description: write one")
    claim = columns["civil__claims", "claim_number_hash"]
    assert claim["description"] == "keyed hash of claim_number (the source system's id)"
    assert "tables.claims.columns.claim_number.description" in claim["meaning_missing"]
    assert columns["crown__defendants", "sex"]["empty_because"] == "not asked before 2015"
    notes = (release / "RELEASE_NOTES.md").read_text()
    assert ("- `civil__claims.outcome`: no description in contract civil.yaml, tables.claims.columns.outcome."
            "description: write one") in notes
    markdown = (release / "dictionary.md").read_text()
    assert "| outcome | VARCHAR | (**no description in contract civil.yaml" in markdown
    assert "outcome as recorded by" not in markdown


OWN_CONTRACT = """\
source: lettings
tables:
  tenancies:
    file: tenancies.csv
    record_id: tenancy_ref
    columns:
      tenancy_ref: {required: true, native_id: true}
      tenant_surname: {role: surname}
      tenant_postcode: {role: postcode}
      band: {allowed: [A, B, C]}
      ended_on: {type: date, formats: ["%Y-%m-%d"], min: 2000-01-01, max: 2030-12-31,
                 description: the date the tenancy ended, empty_because: "empty while the tenancy continues"}
      arrears_flag: {allowed: [Y, N], description: "Y when the tenancy was in arrears at its end"}
"""


def _own_dictionary(tmp_path: Path) -> dict:
    """A release dictionary of the table of a contract of our own, through the real ingest,
    standardisation, product SQL and profile."""
    (tmp_path / "extracts").mkdir()
    (tmp_path / "extracts" / "tenancies.csv").write_text(
        "tenancy_ref,tenant_surname,tenant_postcode,band,ended_on,arrears_flag\n"
        "T1,Smith,LS1 4AP,A,,\nT2,Jones,M1 1AE,B,2021-03-04,\nT3,Khan,,C,,\n", encoding="utf-8")
    ws = Workspace.init(tmp_path / "ws", tmp_path / "extracts", with_world_contracts=False)
    (ws.contracts / "lettings.yaml").write_text(OWN_CONTRACT, encoding="utf-8")
    contract = load_contract(ws.contracts / "lettings.yaml")
    with Engine() as engine:
        ingest(ws, engine)
        standardise(ws, engine, as_of="2025-06-30")
        content = ws.zone("content") / "lettings__tenancies.parquet"
        columns = [name for name, _ in engine.schema(f"read_parquet({sql_string(content)})")
                   if name != "record_key" and name not in PROVENANCE]
        product = content_product(contract, "tenancies", f"read_parquet({sql_string(content)})", None, columns)
        install_keyed_hash(engine, TEST_SALT)
        out = tmp_path / "lettings__tenancies.parquet"
        engine.execute(f"COPY ({product.sql}) TO {sql_string(out)} (FORMAT parquet)")
        forget_keyed_hash(engine)
        facts = {product.name: table_profile(engine, out)}
    return documentation.dictionary([product], {product.name: 3}, facts)


def test_an_own_contract_without_descriptions_is_reported_not_templated(tmp_path):
    d = _own_dictionary(tmp_path)
    columns = _columns(d)
    table = "lettings__tenancies"
    band = columns[table, "band"]
    assert band["description"] == ""
    assert band["meaning_missing"] == ("no description in contract lettings.yaml, tables.tenancies.columns.band."
                                       "description: write one")
    assert columns[table, "tenancy_ref_hash"]["meaning_missing"].startswith(
        "no description in contract lettings.yaml, tables.tenancies.columns.tenancy_ref.description")
    assert "meaning_missing" not in columns[table, "arrears_flag"]
    # The contract's reason is carried through; the table maps no date of birth or sex, so its
    # year_of_birth and sex say so; arrears_flag is empty in every row with no reason: flagged.
    assert columns[table, "ended_on"]["empty_because"] == "empty while the tenancy continues"
    assert "maps no column of tables.tenancies to the sex role" in columns[table, "sex"]["empty_because"]
    assert "empty_because" not in columns[table, "postcode_district"]  # two of three have one
    flag = columns[table, "arrears_flag"]
    assert flag["empty_because"] == NO_VALUE_DELIVERED
    assert flag["empty_unexplained"] == ("no reason given: write one as contract lettings.yaml, "
                                         "tables.tenancies.columns.arrears_flag.empty_because")
    check = check_dictionary(d)
    assert check.template == []
    assert set(check.missing) == {f"{table}.band", f"{table}.tenancy_ref_hash"}
    assert check.empty_unexplained == [f"{table}.arrears_flag"]
    notes = "\n".join(meaning_notes(d))
    assert "- `lettings__tenancies.band`: no description in contract lettings.yaml" in notes
    assert (f"- `{table}.arrears_flag`: {NO_VALUE_DELIVERED} (unexplained: no reason given: write one as contract "
            "lettings.yaml, tables.tenancies.columns.arrears_flag.empty_because)") in notes
    markdown = documentation.dictionary_markdown("v0001", d)
    assert "| band | VARCHAR | (**no description in contract lettings.yaml" in markdown
    assert "as recorded by" not in markdown


def test_empty_because_on_a_column_no_release_holds_is_refused(tmp_path):
    path = tmp_path / "lettings.yaml"
    path.write_text(OWN_CONTRACT.replace("tenant_surname: {role: surname}",
                                         "tenant_surname: {role: surname, empty_because: withheld}"), encoding="utf-8")
    with pytest.raises(ContractError, match=r"(?s)lettings.yaml.*tenant_surname.*`empty_because` explains a released "
                                            r"column's empty values.*not released"):
        load_contract(path)
    path.write_text(OWN_CONTRACT.replace("empty_because:", "empty_becuase:"), encoding="utf-8")
    with pytest.raises(ContractError, match="(?s)empty_becuase.*empty_because"):
        load_contract(path)
