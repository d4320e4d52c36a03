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
from ..engine.sql import sql_string
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


class _PerValue:
    """Cleaning computed once per distinct value of a column, and joined back to the rows.

    A value recurs across records (a forename in thousands of them, a postcode or a PNC id in
    a few), and the cleaning of a value is a chain of regular expressions; computing it over
    the distinct values and joining the result back costs a fraction of computing it per row
    (standardise took 8 s on the 1M-record world that way). Every cleaning function is
    deterministic and NULL-safe, so a row whose value is NULL gets NULL from the join as it
    would from the function.
    """

    def __init__(self, source: str, alias: str):
        self.source, self.alias = source, alias  # the relation read, and its alias in the main query
        self._columns: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {}

    def _entry(self, column: str) -> tuple[str, dict[str, str], dict[str, str]]:
        if column not in self._columns:
            self._columns[column] = (f"per_value_{len(self._columns)}", {}, {})
        return self._columns[column]

    @staticmethod
    def _put(exprs: dict[str, str], column: str, name: str, expr_of_v: str) -> None:
        if exprs.get(name, expr_of_v) != expr_of_v:  # one column in two roles that clean it differently
            raise ValueError(f"column {column} is given two meanings of {name!r}; give it one role in the contract")
        exprs[name] = expr_of_v

    def inner(self, column: str, name: str, expr_of_v: str) -> str:
        """An intermediate computed once per value (usable by name in `value` expressions)."""
        self._put(self._entry(column)[1], column, name, expr_of_v)
        return name

    def value(self, column: str, name: str, expr_of_v: str) -> str:
        """SQL for `expr_of_v` (an expression of `v`, the column's value) on each row."""
        alias, _, outputs = self._entry(column)
        self._put(outputs, column, name, expr_of_v)
        return f"{alias}.{name}"

    def joins(self) -> str:
        out = []
        for column, (alias, inner, outputs) in self._columns.items():
            values = f"SELECT DISTINCT {column} AS v FROM {self.source} WHERE {column} IS NOT NULL"
            if inner:
                values = f"SELECT v, {', '.join(f'{e} AS {n}' for n, e in inner.items())} FROM ({values})"
            select = ", ".join(f"{e} AS {n}" for n, e in outputs.items())
            out.append(f"LEFT JOIN (SELECT v, {select} FROM ({values})) {alias} ON {alias}.v = {self.alias}.{column}")
        return "\n        ".join(out)


def _name_parts(spec: Table, per_value: _PerValue) -> tuple[str, str, str]:
    """SQL for (all forenames, surname, middle-names-from-own-columns), cleaned."""
    fore = [per_value.value(_q(n), "forenames", c.strip_titles(c.forename_clean("v")))
            for n in spec.role_columns("forename") + spec.role_columns("forenames")]
    middle = [per_value.value(_q(n), "middle_names", c.forename_clean("v")) for n in spec.role_columns("middle_names")]
    surname = [per_value.value(_q(n), "surname", c.name_clean("v")) for n in spec.role_columns("surname")]
    for n in spec.role_columns("full_name"):
        if spec.columns[n].name_order == "surname_comma_forenames":
            fore.append(per_value.value(_q(n), "forenames", c.forenames_from_comma_name("v")))
            surname.append(per_value.value(_q(n), "surname", c.surname_from_comma_name("v")))
        else:
            # As forenames_from_full_name / surname_from_full_name, with the words picked once.
            words = (per_value.inner(_q(n), "forename_words", c.forenames_words_from_full_name("v")),
                     per_value.inner(_q(n), "surname_words", c.surname_words_from_full_name("v")))
            fore.append(per_value.value(_q(n), "forenames", c.strip_titles(c.forename_clean(words[0]))))
            surname.append(per_value.value(_q(n), "surname", c.strip_titles(c.name_clean(words[1]))))
    return _concat(fore), (surname[0] if len(surname) == 1 else f"coalesce({', '.join(surname)})" if surname else "NULL::VARCHAR"), _concat(middle)


def _first(cols: list[str]) -> str:
    """The first non-NULL of landed columns (alias `l`)."""
    if not cols:
        return "NULL"
    return f"l.{_q(cols[0])}" if len(cols) == 1 else f"coalesce({', '.join(f'l.{_q(x)}' for x in cols)})"


def _soundex_of_each(column: str) -> str:
    """Soundex of each distinct value of a step_cleaned column (see _PerValue)."""
    return (f"SELECT name, {c.soundex('name')} AS soundex FROM "
            f"(SELECT DISTINCT {column} AS name FROM step_cleaned WHERE {column} IS NOT NULL)")


def identifiers_steps(contract: Contract, name: str, spec: Table, landed: str, as_of: str) -> list[str]:
    """Three SELECTs, each reading the previous one's result (materialised by the caller):
    raw role values, then cleaned values, then derived keys and flags. Staging keeps every
    cleaning expression evaluated once per row instead of once per use, and the costly ones
    are evaluated once per distinct value (see _PerValue)."""
    names = _PerValue(landed, "l")
    forenames, surname, middle_own = _name_parts(spec, names)
    dob = _first(spec.role_columns("date_of_birth"))
    postcode = _first(spec.role_columns("postcode"))
    placeholder_flags = [f"CASE WHEN {names.value(_q(n), 'placeholder', c.is_placeholder('v'))} THEN '{role}:placeholder' END"
                         for role in ("forename", "forenames", "middle_names", "surname", "full_name", "address")
                         for n in spec.role_columns(role)]
    placeholder_flags += [f"CASE WHEN {c.is_placeholder(f'l.{_q(n)}')} THEN 'sex:placeholder' END"
                          for n in spec.role_columns("sex")]
    address = _concat([names.value(_q(n), "address", c.address_clean("v")) for n in spec.role_columns("address")])
    raw = f"""
        SELECT l._record_key, l._row_number, {forenames} AS _forenames, {surname} AS _surname, {middle_own} AS _middle_own,
            {dob if dob != 'NULL' else 'NULL::DATE'} AS _dob,
            CAST({postcode} AS VARCHAR) AS _postcode,
            CAST({_first(spec.role_columns('sex'))} AS VARCHAR) AS _sex,
            CAST({_first(spec.role_columns('pnc'))} AS VARCHAR) AS _pnc,
            CAST({_first(spec.role_columns('cro'))} AS VARCHAR) AS _cro,
            {address} AS address,
            {_concat([f"nullif(trim(CAST(l.{_q(n)} AS VARCHAR)), '')" for n in spec.role_columns('other_id')])} AS other_id,
            {f"list_filter([{', '.join(placeholder_flags)}], lambda x: x IS NOT NULL)" if placeholder_flags else "[]::VARCHAR[]"}
                AS _placeholder_flags
        FROM {landed} l
        {names.joins()}"""
    ids = _PerValue("step_raw", "r")
    ids.inner("_postcode", "clean", c.postcode_clean("v"))
    ids.inner("_postcode", "district", c.postcode_district("v"))
    ids.inner("_pnc", "candidate", c.pnc_candidate("v"))
    ids.inner("_cro", "candidate", c.cro_candidate("v"))
    cleaned = f"""
        SELECT r.*, {c.first_token('r._forenames')} AS forename,
            {_concat([c.rest_tokens('r._forenames'), 'r._middle_own'])} AS middle_names,
            {c.dob_flag('r._dob', as_of)} AS _dob_flag,
            {ids.value("_postcode", "clean", "clean")} AS postcode,
            {ids.value("_postcode", "flag", c.postcode_flag("v"))} AS _postcode_flag,
            {ids.value("_postcode", "district", "district")} AS postcode_district,
            {ids.value("_postcode", "sector", c.postcode_sector("clean"))} AS postcode_sector,
            {ids.value("_postcode", "area", c.postcode_area("district"))} AS postcode_area,
            {c.sex_clean('r._sex')} AS sex,
            {ids.value("_pnc", "clean", c.pnc_from_candidate("candidate"))} AS pnc,
            {ids.value("_pnc", "flag", c.pnc_flag_from_candidate("v", "candidate"))} AS _pnc_flag,
            {ids.value("_cro", "clean", c.cro_from_candidate("candidate"))} AS cro,
            {ids.value("_cro", "flag", c.cro_flag_from_candidate("v", "candidate"))} AS _cro_flag
        FROM step_raw r
        {ids.joins()}"""
    flags = ("list_concat(_placeholder_flags, list_filter(["
             "'date_of_birth:' || _dob_flag, 'postcode:' || _postcode_flag, 'pnc:' || _pnc_flag, 'cro:' || _cro_flag"
             "], lambda x: x IS NOT NULL))")
    final = f"""
        SELECT _record_key AS record_key, {sql_string(contract.source)} AS source, {sql_string(name)} AS source_table,
            forename, middle_names, _surname AS surname,
            forename_sx.soundex AS forename_soundex, surname_sx.soundex AS surname_soundex,
            coalesce({c.is_initial('forename')}, false) AS forename_is_initial,
            -- as cleaning.dob_clean / cleaning.year_of_birth, from the flag computed once above
            CASE WHEN _dob_flag IS NULL THEN _dob END AS date_of_birth,
            CASE WHEN coalesce(_dob_flag, 'jan_first') = 'jan_first' THEN year(_dob) END AS year_of_birth,
            sex, postcode, postcode_sector, postcode_district, postcode_area, address, pnc, cro, other_id,
            {flags} AS flags
        FROM step_cleaned
        LEFT JOIN ({_soundex_of_each('forename')}) forename_sx ON forename_sx.name = step_cleaned.forename
        LEFT JOIN ({_soundex_of_each('_surname')}) surname_sx ON surname_sx.name = step_cleaned._surname
        ORDER BY _row_number"""
    return [raw, cleaned, final]


# Quasi-identifiers reduced enough for research (the SAIL/ONS practice): they go to content
# beside the record, while the full values stay in the identifiers zone.
REDUCED_QUASI_IDENTIFIERS = ("year_of_birth", "sex", "postcode_district")


def content_sql(spec: Table, landed: str, identifiers: str | None = None) -> str:
    cols = ", ".join(f"l.{_q(n)}" for n in spec.content_columns)
    prov = ", ".join(f"l.{p}" for p in PROVENANCE)
    if identifiers is None:
        return f"SELECT l._record_key AS record_key, {prov}, {cols} FROM {landed} l ORDER BY l._row_number"
    reduced = ", ".join(f"i.{c}" for c in REDUCED_QUASI_IDENTIFIERS if c not in spec.content_columns)
    return (f"SELECT l._record_key AS record_key, {prov}, {cols}, {reduced} FROM {landed} l "
            f"JOIN {identifiers} i ON i.record_key = l._record_key ORDER BY l._row_number")


def standardise(ws: Workspace, engine: Engine, *, as_of: str | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> list[TableSplit]:
    """Write the identifiers and content zones from the landed zone (replacing both on success)."""
    landed_dir = ws.zone(LANDED)
    if not (landed_dir / "_accounting.parquet").is_file():
        raise FileNotFoundError(f"no landed zone in {ws.root}; run `datafirst ingest` first")
    as_of_sql = f"DATE {sql_string(as_of)}" if as_of else "current_date"
    contracts = load_contracts(ws.contracts)
    tables = [(ct, n, t) for ct in contracts for n, t in ct.tables.items()]
    for contract, name, _ in tables:
        path = landed_dir / f"{contract.table_key(name)}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the contracts changed since the last ingest; "
                                    "run `datafirst ingest` again")
    tmp_ids = ws.zones / f".{IDENTIFIERS}.partial-{os.getpid()}"
    tmp_content = ws.zones / f".{CONTENT}.partial-{os.getpid()}"
    for d in (tmp_ids, tmp_content):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    started = iter(range(len(tables)))  # next() on it is atomic: jobs report progress from their threads

    def split(contract: Contract, name: str, spec: Table, job_engine: Engine) -> TableSplit:
        if progress:
            progress(f"{contract.source}/{name}", next(started), len(tables))
        key = contract.table_key(name)
        landed = job_engine.parquet(landed_dir / f"{key}.parquet")
        rows = int(job_engine.scalar(f"SELECT count(*) FROM {landed}"))
        n_ids = 0
        if spec.is_person_table:
            raw, cleaned, final = identifiers_steps(contract, name, spec, landed, as_of_sql)
            job_engine.execute(f"CREATE OR REPLACE TEMP TABLE step_raw AS {raw}")
            job_engine.execute(f"CREATE OR REPLACE TEMP TABLE step_cleaned AS {cleaned}")
            n_ids = job_engine.to_parquet(final, tmp_ids / f"{key}.parquet")
            job_engine.execute("DROP TABLE step_raw")
            job_engine.execute("DROP TABLE step_cleaned")
        ids = job_engine.parquet(tmp_ids / f"{key}.parquet") if spec.is_person_table else None
        n_content = job_engine.to_parquet(content_sql(spec, landed, ids), tmp_content / f"{key}.parquet")
        return TableSplit(contract.source, name, rows, n_ids, n_content)

    try:
        # Tables are independent: several at once, the largest first (see Engine.concurrently).
        splits = engine.concurrently([lambda e, t=t: split(*t, e) for t in tables],
                                     sizes=[(landed_dir / f"{c.table_key(n)}.parquet").stat().st_size for c, n, _ in tables])
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

