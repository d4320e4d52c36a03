"""Code lists declared beside their CSV files (`<stem>.codelist.yaml`) and published in releases as
reference tables with their source and licence; joins between release tables derived from the
contracts and product definitions, declared in datapackage.json as foreign keys only where they
hold; and the data package validated by frictionless (types, constraints, keys, bytes, hashes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from datafirst.release import joins
from datafirst.release.package_check import validate_release
from datafirst.release.products import code_list_products, content_product
from datafirst.release.stage import published
from datafirst.sources.contract import ContractError, load_contract, load_contracts
from datafirst.workspace import Workspace

from .conftest import build_pipeline

HOUSING = """source: housing
description: Housing benefit claims.
tables:
  claims:
    file: claims.csv
    record_id: claim_ref
    columns:
      claim_ref: {native_id: true}
      council: {allowed: {file: councils.csv, column: code}}
      status: {allowed: [open, closed]}
  payments:
    file: payments.csv
    record_id: payment_ref
    columns:
      payment_ref: {native_id: true}
      claim_ref: {native_id: true}
      office: {native_id: true}
      reason: {allowed: {file: reasons.csv, column: label}}
  visits:
    file: visits.csv
    record_id: visit_ref
    columns:
      visit_ref: {native_id: true}
      office: {native_id: true}
"""
COUNCILS = """# beside councils.csv
description: Councils that pay housing benefit.
key: code
labels: [name]
columns: {code: the council's code, name: the council's name}
source: {title: ONS local authority districts, path: "https://example.org/lad"}
licence: {name: OGL-UK-3.0, title: Open Government Licence v3.0}
version: "2024"
"""


def _housing(folder: Path, declaration: str | None = COUNCILS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "housing.yaml").write_text(HOUSING, encoding="utf-8")
    (folder / "councils.csv").write_text("code,name\nE1,Bath\nE2,Leeds\n", encoding="utf-8")
    (folder / "reasons.csv").write_text("code,label\nR1,rent\nR2,rates\n", encoding="utf-8")
    if declaration is not None:
        (folder / "councils.codelist.yaml").write_text(declaration, encoding="utf-8")
    return folder / "housing.yaml"


def test_a_code_list_is_declared_beside_its_file(tmp_path):
    contract = load_contract(_housing(tmp_path))
    code_list, column = contract.tables["claims"].columns["council"].code_list
    assert column == "code" and code_list.table == "code_list__councils"
    assert code_list.metadata() == {
        "name": "councils", "file": "councils.csv", "declared_in": "councils.codelist.yaml", "key": "code",
        "labels": ["name"], "description": "Councils that pay housing benefit.",
        "source": {"title": "ONS local authority districts", "path": "https://example.org/lad"},
        "licence": {"name": "OGL-UK-3.0", "title": "Open Government Licence v3.0"}, "version": "2024"}
    # A list without a declaration still works: named after its file, keyed by its first column.
    reasons, column = contract.tables["payments"].columns["reason"].code_list
    assert (reasons.name, reasons.key, column, reasons.declared_in, reasons.licence) == \
        ("reasons", "code", "label", None, None)
    # The declaration is not a contract.
    assert [c.source for c in load_contracts(tmp_path)] == ["housing"]


@pytest.mark.parametrize("declaration, message", [
    (COUNCILS.replace("licence:", "licnce:"), r"licnce: unknown key `licnce`; did you mean `licence`\?"),
    (COUNCILS.replace("key: code", "key: id"), r"'id' not a column of councils.csv \(its columns: code, name\)"),
    (COUNCILS.replace("licence: {name: OGL-UK-3.0, title: Open Government Licence v3.0}\n", ""),
     r"licence: missing \(this key is required\)"),
    (COUNCILS.replace("key: code", "key: name\nname: Bad-Name"), r"lower case letters, digits and single underscores"),
])
def test_a_bad_declaration_names_the_file_and_the_key(tmp_path, declaration, message):
    with pytest.raises(ContractError, match=r"tables.claims.columns.council.allowed: .*councils.codelist.yaml"):
        load_contract(_housing(tmp_path, declaration))
    with pytest.raises(ContractError, match=message):
        load_contract(_housing(tmp_path, declaration))


def test_a_code_list_key_must_be_unique(tmp_path):
    path = _housing(tmp_path, declaration=None)
    (tmp_path / "councils.csv").write_text("code,name\nE1,Bath\nE1,Leeds\n", encoding="utf-8")
    with pytest.raises(ContractError, match=r"its first column `code` .* repeats 'E1'.*declare `key` in "
                                            r"councils.codelist.yaml"):
        load_contract(path)


def test_joins_come_from_the_contracts_of_any_source(tmp_path):
    """Not the world's names: a source of one's own gives its code-list keys, its child table's
    native id that is another table's record id (a foreign key to check), and a shared id that is
    the record id of neither (many to many: documented, never checked)."""
    contract = load_contract(_housing(tmp_path))
    products = [content_product(contract, name, f"t_{name}", None, list(spec.columns))
                for name, spec in contract.tables.items()]
    products += code_list_products([contract], products)
    assert [p.name for p in products[3:]] == ["code_list__councils", "code_list__reasons"]
    found = {(j.table, j.column, j.references, j.referenced, j.many_to_many)
             for j in joins.candidates(products, [contract])}
    assert found == {
        ("housing__claims", "council", "code_list__councils", "code", False),
        ("housing__payments", "claim_ref_hash", "housing__claims", "claim_ref_hash", False),
        ("housing__payments", "office_hash", "housing__visits", "office_hash", True),
    }  # `reason` holds the reasons' labels, not their key: described by the list, not joined to it


@pytest.fixture(scope="module")
def release_dir(world, tmp_path_factory) -> Path:
    ws: Workspace = build_pipeline(world, tmp_path_factory.mktemp("codelists"), "release")
    return published(ws)[-1]


def test_the_code_lists_a_release_uses_are_published_with_source_and_licence(release_dir):
    d = json.loads((release_dir / "dictionary.json").read_text())
    tables = {t["name"]: t for t in d["tables"]}
    shipped = Path(load_contracts.__code__.co_filename).parent / "contracts"
    lists = {n for n in tables if n.startswith("code_list__")}
    assert lists == {"code_list__offences", "code_list__magistrates_courts", "code_list__crown_courts",
                     "code_list__prison_establishments", "code_list__ethnic_groups_2021",
                     "code_list__local_authorities", "code_list__possession_claimants"}
    offences = tables["code_list__offences"]
    assert offences["keys"] == ["code"] and offences["code_list"]["licence"]["name"] == "MIT"
    assert "Illustrative" in offences["description"] and "Open Government Licence" in offences["description"]
    assert all(c["description"] and c["declared"]["kind"] == "code" for t in lists for c in tables[t]["columns"])
    # The table is the file: every code and title, keyed by the code.
    con = duckdb.connect()
    released = con.execute(f"SELECT code, title FROM '{release_dir / offences['path']}' ORDER BY code").fetchall()
    listed = con.execute(f"SELECT code, title FROM read_csv('{shipped / 'offences.csv'}', all_varchar=true) "
                         "ORDER BY code").fetchall()
    assert released == listed and offences["rows"] == len(listed)
    # Each column using a list says which table and column hold it.
    title = next(c for c in tables["magistrates__offences"]["columns"] if c["name"] == "offence_title")
    assert title["declared"]["code_list"] == {"table": "code_list__offences", "column": "title"}
    package = {r["name"]: r for r in json.loads((release_dir / "datapackage.json").read_text())["resources"]}
    assert package["code_list__offences"]["licenses"] == [{"name": "MIT", "title": "MIT License (the datafirst "
                                                                                  "project's licence)"}]
    assert package["code_list__offences"]["sources"][0]["title"].startswith("Illustrative list")
    markdown = (release_dir / "dictionary.md").read_text()
    assert "## code_list__offences" in markdown and "- licence: MIT License" in markdown


def test_declared_foreign_keys_hold_and_orphans_are_documented(release_dir):
    package = json.loads((release_dir / "datapackage.json").read_text())
    con = duckdb.connect()
    declared = []
    for r in package["resources"]:
        for fk in r["schema"].get("foreignKeys", []):
            (column,), (referenced,) = fk["fields"], fk["reference"]["fields"]
            target = release_dir / "tables" / f"{fk['reference']['resource']}.parquet"
            orphans = con.execute(f"""SELECT count(*) FROM '{release_dir / r['path']}' a
                WHERE a."{column}" IS NOT NULL AND a."{column}" NOT IN (SELECT "{referenced}" FROM '{target}')""").fetchone()
            assert orphans == (0,), (r["name"], fk)
            declared.append((r["name"], column, fk["reference"]["resource"]))
    expected = {("magistrates__offences", "offence_code", "code_list__offences"),
                ("crown__defendants", "row_id_hash", "person_link_lookup"),
                ("prison__bookings", "person_id_medium", "person"),
                ("person_journey", "person_id_medium", "person"),
                ("civil__parties", "claim_number_hash", "civil__claims"),
                ("probation__requirements", "crn_hash", "probation__events")}
    assert expected <= set(declared)
    # Offences whose defendant row was quarantined at ingest: the join is documented with its
    # orphans, and not declared.
    d = {t["name"]: t for t in json.loads((release_dir / "dictionary.json").read_text())["tables"]}
    to_defendants = next(j for j in d["magistrates__offences"]["joins"]
                         if j["references"]["table"] == "magistrates__defendants")
    assert to_defendants["orphans"] > 0 and not to_defendants["foreign_key"]
    assert ("magistrates__offences", "defendant_id_hash", "magistrates__defendants") not in declared
    shared = next(j for j in d["magistrates__defendants"]["joins"] if j["columns"] == ["case_id_hash"])
    assert shared["cardinality"] == "many-to-many" and not shared["foreign_key"]


def test_frictionless_validates_the_data_package_with_its_foreign_keys(release_dir, tmp_path):
    report = validate_release(release_dir)
    assert report.valid, report.flatten(["taskName", "rowNumber", "fieldName", "type", "message"])[:10]
    assert len(report.tasks) == len(json.loads((release_dir / "datapackage.json").read_text())["resources"])
    # It checks what the package says: a foreign key that does not hold, a wrong hash and byte count fail.
    copy = tmp_path / "v"
    shutil.copytree(release_dir, copy)
    (copy / "datapackage.json").chmod(0o644)
    package = json.loads((copy / "datapackage.json").read_text())
    resources = {r["name"]: r for r in package["resources"]}
    resources["magistrates__offences"]["schema"]["foreignKeys"] = [
        {"fields": ["defendant_id_hash"], "reference": {"resource": "magistrates__defendants",
                                                        "fields": ["defendant_id_hash"]}}]
    resources["person"]["hash"] = "sha256:" + "0" * 64
    resources["case_journeys"]["bytes"] += 1
    (copy / "datapackage.json").write_text(json.dumps(package))
    errors = {(task.name, e.type) for task in validate_release(copy).tasks for e in task.errors}
    assert {("magistrates__offences", "foreign-key"), ("person", "hash-count"),
            ("case_journeys", "byte-count")} <= errors
