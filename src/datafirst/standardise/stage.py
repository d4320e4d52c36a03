"""Standardise: clean identifiers per role, and split every landed table in two.

For each person-bearing table the output is an **identifiers** table (record key + cleaned
identifiers, in one schema shared by every source so that linkage can compare any two) and a
**content** table (record key + everything that does not identify). The two are joined only
by the record key; identifiers stay in the linkage zone and never reach a product. Tables
with no identifier roles (offences, cases, claims) go to content whole.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..engine import Engine
from ..engine.duckdb_engine import sql_string
from ..sources.contract import Contract, Table, load_contracts
from ..sources.ingest import LANDED
from ..workspace import Workspace, replace_folder
from . import cleaning as c

IDENTIFIERS = "identifiers"
CONTENT = "content"
PROVENANCE = ("_source", "_table", "_file", "_row_number")

# The identifiers schema shared by every source (a role a source lacks is NULL).
IDENTIFIER_COLUMNS = (
    "record_key", "source", "source_table", "forename", "middle_names", "surname", "forename_soundex",
    "surname_soundex", "forename_is_initial", "date_of_birth", "year_of_birth", "sex", "postcode",
    "postcode_sector", "postcode_district", "postcode_area", "address", "pnc", "cro", "other_id", "flags",
)


@dataclass
class TableSplit:
    source: str
    table: str
    rows: int
    identifiers: int  # rows written to the identifiers zone (0 for content-only tables)
    content: int


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _concat(exprs: list[str]) -> str:
    """Space-joined non-null parts, NULL when there are none."""
    if not exprs:
        return "NULL::VARCHAR"
    if len(exprs) == 1:
        return exprs[0]
    return f"nullif(concat_ws(' ', {', '.join(exprs)}), '')"


def _name_parts(spec: Table) -> tuple[str, str, str]:
    """SQL for (all forenames, surname, middle-names-from-own-columns), cleaned."""
    fore = [c.strip_titles(c.name_clean(_q(n))) for n in spec.role_columns("forename") + spec.role_columns("forenames")]
    middle = [c.name_clean(_q(n)) for n in spec.role_columns("middle_names")]
    surname = [c.name_clean(_q(n)) for n in spec.role_columns("surname")]
    for n in spec.role_columns("full_name"):
        if spec.columns[n].name_order == "surname_comma_forenames":
            fore.append(c.forenames_from_comma_name(_q(n)))
            surname.append(c.surname_from_comma_name(_q(n)))
        else:
            fore.append(c.forenames_from_full_name(_q(n)))
            surname.append(c.surname_from_full_name(_q(n)))
    return _concat(fore), (surname[0] if len(surname) == 1 else f"coalesce({', '.join(surname)})" if surname else "NULL::VARCHAR"), _concat(middle)


def _first(cols: list[str]) -> str:
    if not cols:
        return "NULL"
    return _q(cols[0]) if len(cols) == 1 else f"coalesce({', '.join(_q(x) for x in cols)})"


def identifiers_sql(contract: Contract, name: str, spec: Table, landed: str, as_of: str) -> str:
    forenames, surname, middle_own = _name_parts(spec)
    dob = _first(spec.role_columns("date_of_birth"))
    postcode = _first(spec.role_columns("postcode"))
    sex = _first(spec.role_columns("sex"))
    pnc = _first(spec.role_columns("pnc"))
    cro = _first(spec.role_columns("cro"))
    address = _concat([c.address_clean(_q(n)) for n in spec.role_columns("address")])
    other = _concat([f"nullif(trim(CAST({_q(n)} AS VARCHAR)), '')" for n in spec.role_columns("other_id")])
    flag_parts = []
    for role in ("forename", "forenames", "middle_names", "surname", "full_name", "sex", "address"):
        for n in spec.role_columns(role):
            flag_parts.append(f"CASE WHEN {c.is_placeholder(_q(n))} THEN '{role}:placeholder' END")
    if dob != "NULL":
        flag_parts.append(f"CASE WHEN {c.dob_flag(dob, as_of)} IS NOT NULL THEN 'date_of_birth:' || {c.dob_flag(dob, as_of)} END")
    if postcode != "NULL":
        flag_parts.append(f"CASE WHEN {c.postcode_flag(postcode)} IS NOT NULL THEN 'postcode:' || {c.postcode_flag(postcode)} END")
    if pnc != "NULL":
        flag_parts.append(f"CASE WHEN {c.pnc_flag(pnc)} IS NOT NULL THEN 'pnc:' || {c.pnc_flag(pnc)} END")
    if cro != "NULL":
        flag_parts.append(f"CASE WHEN {c.cro_flag(cro)} IS NOT NULL THEN 'cro:' || {c.cro_flag(cro)} END")
    flags = f"list_filter([{', '.join(flag_parts)}], lambda x: x IS NOT NULL)" if flag_parts else "[]::VARCHAR[]"
    middle = _concat([c.rest_tokens("_forenames"), "_middle_own"])
    pc_clean = c.postcode_clean(postcode) if postcode != "NULL" else "NULL::VARCHAR"
    return f"""
        SELECT _record_key AS record_key, {sql_string(contract.source)} AS source, {sql_string(name)} AS source_table,
            {c.first_token('_forenames')} AS forename,
            {middle} AS middle_names,
            _surname AS surname,
            {c.soundex(c.first_token('_forenames'))} AS forename_soundex,
            {c.soundex('_surname')} AS surname_soundex,
            coalesce({c.is_initial(c.first_token('_forenames'))}, false) AS forename_is_initial,
            {c.dob_clean(dob, as_of) if dob != 'NULL' else 'NULL::DATE'} AS date_of_birth,
            {c.year_of_birth(dob, as_of) if dob != 'NULL' else 'NULL::BIGINT'} AS year_of_birth,
            {c.sex_clean(sex) if sex != 'NULL' else 'NULL::VARCHAR'} AS sex,
            {pc_clean} AS postcode,
            {c.postcode_sector(pc_clean) if postcode != 'NULL' else 'NULL::VARCHAR'} AS postcode_sector,
            {c.postcode_district(postcode) if postcode != 'NULL' else 'NULL::VARCHAR'} AS postcode_district,
            {c.postcode_area(c.postcode_district(postcode)) if postcode != 'NULL' else 'NULL::VARCHAR'} AS postcode_area,
            {address} AS address,
            {c.pnc_clean(pnc) if pnc != 'NULL' else 'NULL::VARCHAR'} AS pnc,
            {c.cro_clean(cro) if cro != 'NULL' else 'NULL::VARCHAR'} AS cro,
            {other} AS other_id,
            {flags} AS flags
        FROM (SELECT *, {forenames} AS _forenames, {surname} AS _surname, {middle_own} AS _middle_own FROM {landed})
        ORDER BY _row_number"""


def content_sql(spec: Table, landed: str) -> str:
    cols = ", ".join(_q(n) for n in spec.content_columns)
    prov = ", ".join(PROVENANCE)
    return f"SELECT _record_key AS record_key, {prov}, {cols} FROM {landed} ORDER BY _row_number"


def standardise(ws: Workspace, engine: Engine, *, as_of: str | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> list[TableSplit]:
    """Write the identifiers and content zones from the landed zone (replacing both on success)."""
    landed_dir = ws.zone(LANDED)
    if not (landed_dir / "_accounting.parquet").is_file():
        raise FileNotFoundError(f"no landed zone in {ws.root}; run `datafirst ingest` first")
    as_of_sql = f"DATE {sql_string(as_of)}" if as_of else "current_date"
    contracts = load_contracts(ws.contracts)
    tmp_ids = ws.zones / f".{IDENTIFIERS}.partial-{os.getpid()}"
    tmp_content = ws.zones / f".{CONTENT}.partial-{os.getpid()}"
    for d in (tmp_ids, tmp_content):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    splits = []
    tables = [(ct, n, t) for ct in contracts for n, t in ct.tables.items()]
    try:
        for i, (contract, name, spec) in enumerate(tables):
            if progress:
                progress(f"{contract.source}/{name}", i, len(tables))
            key = contract.table_key(name)
            path = landed_dir / f"{key}.parquet"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: the contracts changed since the last ingest; "
                                        "run `datafirst ingest` again")
            landed = engine.parquet(path)
            rows = int(engine.scalar(f"SELECT count(*) FROM {landed}"))
            n_ids = engine.to_parquet(identifiers_sql(contract, name, spec, landed, as_of_sql), tmp_ids / f"{key}.parquet") \
                if spec.is_person_table else 0
            n_content = engine.to_parquet(content_sql(spec, landed), tmp_content / f"{key}.parquet")
            splits.append(TableSplit(contract.source, name, rows, n_ids, n_content))
        if progress:
            progress("done", len(tables), len(tables))
        replace_folder(tmp_ids, ws.zone(IDENTIFIERS))
        replace_folder(tmp_content, ws.zone(CONTENT))
    except BaseException:
        shutil.rmtree(tmp_ids, ignore_errors=True)
        shutil.rmtree(tmp_content, ignore_errors=True)
        raise
    return splits


def identifier_tables(ws: Workspace) -> list[Path]:
    return sorted(ws.zone(IDENTIFIERS).glob("*.parquet"))

