"""Standardise: clean identifiers per role, and split every landed table in two.

For each person-bearing table the output is an **identifiers** table (record key + cleaned
identifiers, in one schema shared by every source so that linkage can compare any two) and a
**content** table (record key + everything that does not identify). The two are joined only
by the record key; identifiers stay in the linkage zone and never reach a product. Tables
with no identifier roles (offences, cases, claims) go to content whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from ..engine import Engine
from ..engine.sql import sql_string
from ..sources.contract import Contract, ContractError, Table, load_contracts
from ..sources.ingest import ACCOUNTING_FILE, LANDED, spec_sha256
from ..workspace import DateOfBirthConfig, Workspace, holding_lock, replace_folder
from . import cleaning as c

IDENTIFIERS = "identifiers"
CONTENT = "content"
# Where each content row came from, as the landed zone says (the same columns in the same order,
# so that a table without identifiers is its landed file, linked, not copied); `_line_md5` (the
# digest of its extract line) also lets the next standardise keep the identifiers of rows whose
# line is unchanged (see _known_rows).
PROVENANCE = ("_source", "_table", "_file", "_row_number", "_file_sha256", "_loaded_at", "_line_md5")

# The identifiers schema shared by every source (a role a source lacks is NULL), followed by the
# attributes the contracts declare for comparison (`compare`), in name order.
IDENTIFIER_COLUMNS = (
    "record_key", "source", "source_table", "forename", "middle_names", "surname", "forename_soundex",
    "surname_soundex", "forename_is_initial", "date_of_birth", "year_of_birth", "sex", "postcode",
    "postcode_sector", "postcode_district", "postcode_area", "address", "pnc", "cro", "other_id", "person_key",
    "flags",
)
# The SQL type of an attribute of each `compare` kind in the identifiers zone.
ATTRIBUTE_TYPES = {"category": "VARCHAR", "text": "VARCHAR", "number": "DOUBLE", "date": "DATE"}


def attributes(contracts: list[Contract]) -> dict[str, str]:
    """The attributes declared for comparison across all contracts: name -> kind, in name order.
    One name is one attribute in every source that holds it, so its kind must agree."""
    found: dict[str, tuple[str, str]] = {}
    for contract in contracts:
        for table_name, spec in contract.tables.items():
            for column in spec.compared_columns:
                name, kind = spec.attribute_name(column), spec.columns[column].compare
                where = f"{contract.path or contract.source}: tables.{table_name}.columns.{column}"
                if name in IDENTIFIER_COLUMNS or name in RESERVED_FOR_LINKAGE:
                    raise ContractError(f"{where}: the attribute name {name!r} is datafirst's own identifier "
                                        "column; give it another with `compare_as`")
                if name in found and found[name][0] != kind:
                    raise ContractError(f"{where} compares {name!r} as {kind}, but {found[name][1]} compares it as "
                                        f"{found[name][0]}: one attribute has one kind (or name them apart with "
                                        "`compare_as`)")
                found.setdefault(name, (kind, where))
    return {name: found[name][0] for name in sorted(found)}


# Columns the link stage derives from the identifiers (link/stage.py); an attribute may not take their names.
RESERVED_FOR_LINKAGE = ("address_tokens", "forename_groups", "forename_group", "dob_text")


def identifier_columns(attrs: dict[str, str]) -> tuple[str, ...]:
    """The identifiers zone's columns: the shared schema, then the declared attributes."""
    return IDENTIFIER_COLUMNS + tuple(attrs)


def dob_rules(spec: Table, defaults: DateOfBirthConfig) -> c.DobRules:
    """The date-of-birth cleaning rules of a table: its contract's, where its date_of_birth
    column declares them, else the workspace config's."""
    declared = [spec.columns[n] for n in spec.role_columns("date_of_birth")]

    def pick(key: str):
        return next((getattr(col, key) for col in declared if getattr(col, key) is not None), getattr(defaults, key))

    earliest = pick("earliest")
    return c.DobRules(earliest=earliest.isoformat() if earliest else None,
                      placeholders=tuple(d.isoformat() for d in pick("placeholder_dates")),
                      year_only=tuple(pick("year_only_dates")))


@dataclass
class TableSplit:
    source: str
    table: str
    rows: int
    identifiers: int  # rows written to the identifiers zone (0 for content-only tables)
    content: int
    reused: bool = False  # its landed table unchanged since the last standardise: outputs kept
    cleaned: int | None = None  # identifier rows cleaned this time (the others kept); None: all or none


# What each table's outputs were made from, kept in the content zone: a table whose landed rows
# (the same file under the same contract and loader), cleaning code and engine are unchanged is
# not standardised again (sources deliver on their own schedules; see _reusable).
STATE_FILE = "_standardised.json"
CODE_SHA256 = hashlib.sha256(b"".join((Path(__file__).parent / f).read_bytes()
                                      for f in ("stage.py", "cleaning.py"))).hexdigest()


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
        self._columns: dict[str, tuple[str, str, dict[str, str], dict[str, str]]] = {}

    def _entry(self, column: str, row: str | None) -> tuple[str, str, dict[str, str], dict[str, str]]:
        """`column`: a column of the source, or an expression of its columns; `row`: the same
        expression on the main query's row (by default, the column under the main alias)."""
        if column not in self._columns:
            self._columns[column] = (f"per_value_{len(self._columns)}", row or f"{self.alias}.{column}", {}, {})
        return self._columns[column]

    @staticmethod
    def _put(exprs: dict[str, str], column: str, name: str, expr_of_v: str) -> None:
        if exprs.get(name, expr_of_v) != expr_of_v:  # one column in two roles that clean it differently
            raise ValueError(f"column {column} is given two meanings of {name!r}; give it one role in the contract")
        exprs[name] = expr_of_v

    def inner(self, column: str, name: str, expr_of_v: str, row: str | None = None) -> str:
        """An intermediate computed once per value (usable by name in `value` expressions)."""
        self._put(self._entry(column, row)[2], column, name, expr_of_v)
        return name

    def value(self, column: str, name: str, expr_of_v: str, row: str | None = None) -> str:
        """SQL for `expr_of_v` (an expression of `v`, the column's value) on each row."""
        alias, _, _, outputs = self._entry(column, row)
        self._put(outputs, column, name, expr_of_v)
        return f"{alias}.{name}"

    def joins(self) -> str:
        out = []
        for column, (alias, row, inner, outputs) in self._columns.items():
            values = f"SELECT DISTINCT {column} AS v FROM {self.source} WHERE {column} IS NOT NULL"
            if inner:
                values = f"SELECT v, {', '.join(f'{e} AS {n}' for n, e in inner.items())} FROM ({values})"
            select = ", ".join(f"{e} AS {n}" for n, e in outputs.items())
            out.append(f"LEFT JOIN (SELECT v, {select} FROM ({values})) {alias} ON {alias}.v = {row}")
        return "\n        ".join(out)


def _name_parts(spec: Table, per_value: _PerValue) -> tuple[str, str, str]:
    """SQL for (all forenames, surname, middle-names-from-own-columns), cleaned.

    Names in their own columns come first; a full name fills in what they leave empty (an
    index may give both the name as written and its parts: counting both would count every
    forename twice). A generational suffix typed into a surname column (Smith Jr) is removed,
    as it is from a full name."""
    fore = [per_value.value(_q(n), "forenames", c.strip_titles(c.forename_clean("v")))
            for n in spec.role_columns("forename") + spec.role_columns("forenames")]
    middle = [per_value.value(_q(n), "middle_names", c.forename_clean("v")) for n in spec.role_columns("middle_names")]
    surname = [per_value.value(_q(n), "surname", c.strip_titles(c.name_clean("v"))) for n in spec.role_columns("surname")]
    full_fore = []
    for n in spec.role_columns("full_name"):
        if spec.columns[n].name_order == "surname_comma_forenames":
            full_fore.append(per_value.value(_q(n), "forenames", c.forenames_from_comma_name("v")))
            surname.append(per_value.value(_q(n), "surname", c.surname_from_comma_name("v")))
        else:
            # As forenames_from_full_name / surname_from_full_name, with the words picked once.
            words = (per_value.inner(_q(n), "forename_words", c.forenames_words_from_full_name("v")),
                     per_value.inner(_q(n), "surname_words", c.surname_words_from_full_name("v")))
            full_fore.append(per_value.value(_q(n), "forenames", c.strip_titles(c.forename_clean(words[0]))))
            surname.append(per_value.value(_q(n), "surname", c.strip_titles(c.name_clean(words[1]))))
    forenames = (f"coalesce({_concat(fore)}, {_concat(full_fore)})" if fore and full_fore
                 else _concat(fore or full_fore))
    surname_sql = (surname[0] if len(surname) == 1 else f"coalesce({', '.join(surname)})" if surname else "NULL::VARCHAR")
    return forenames, surname_sql, _concat(middle)


def _first(cols: list[str], alias: str = "l.") -> str:
    """The first non-NULL of landed columns (under `alias`)."""
    if not cols:
        return "NULL"
    return f"{alias}{_q(cols[0])}" if len(cols) == 1 else f"coalesce({', '.join(f'{alias}{_q(x)}' for x in cols)})"


def _role_text(spec: Table, role: str, alias: str = "l.") -> str:
    """A role's value as text: the first non-NULL of its landed columns."""
    return f"CAST({_first(spec.role_columns(role), alias)} AS VARCHAR)"


def identifiers_steps(contract: Contract, name: str, spec: Table, landed: str, as_of: str,
                      rules: c.DobRules = c.DobRules(), attrs: dict[str, str] | None = None) -> list[str]:
    """Two SELECTs, the second reading the first's result (materialised by the caller as
    `step_raw`): the role values, cleaned where a landed column holds them alone, then what is
    derived from values combined from several columns (given names, soundex) and the flags.
    Costly cleaning is evaluated once per distinct value (see _PerValue), the rest once per row."""
    names = _PerValue(landed, "l")
    forenames, surname, middle_own = _name_parts(spec, names)
    dob = _first(spec.role_columns("date_of_birth"))
    placeholder_flags = [f"CASE WHEN {names.value(_q(n), 'placeholder', c.is_placeholder('v'))} THEN '{role}:placeholder' END"
                         for role in ("forename", "forenames", "middle_names", "surname", "full_name", "address")
                         for n in spec.role_columns(role)]
    placeholder_flags += [f"CASE WHEN {c.is_placeholder(f'CAST(l.{_q(n)} AS VARCHAR)')} THEN 'sex:placeholder' END"
                          for n in spec.role_columns("sex")]
    address = _concat([names.value(_q(n), "address", c.address_clean("v")) for n in spec.role_columns("address")])
    # Postcode, PNC and CRO: per value of the role's text (the first of its columns).
    intermediates = {"postcode": {"clean": c.postcode_clean("v"), "district": c.postcode_district("v")},
                     "pnc": {"candidate": c.pnc_candidate("v")}, "cro": {"candidate": c.cro_candidate("v")}}

    def per_role(role: str, name: str, expr_of_v: str) -> str:
        if not spec.role_columns(role):
            return "NULL::VARCHAR"
        column, row = _role_text(spec, role, ""), _role_text(spec, role)
        for inner_name, inner_expr in intermediates[role].items():
            names.inner(column, inner_name, inner_expr, row)
        return names.value(column, name, expr_of_v, row)

    # Declared attributes: each cleaned by its kind (text folded to lower-case words), NULL where
    # this table does not hold it; the first of a table's columns with a value when several do.
    attrs = attrs or {}
    held: dict[str, list[str]] = {}
    for col in spec.compared_columns:
        held.setdefault(spec.attribute_name(col), []).append(col)
    attribute_values = "".join(
        f",\n            CAST({_attribute_value(spec, held[a], kind, names) if a in held else 'NULL'} "
        f"AS {ATTRIBUTE_TYPES[kind]}) AS {_q(a)}" for a, kind in attrs.items())
    raw = f"""
        SELECT l.record_key, l._row_number, {forenames} AS _forenames, {surname} AS _surname, {middle_own} AS _middle_own,
            {dob if dob != 'NULL' else 'NULL::DATE'} AS _dob,
            {_role_text(spec, 'sex')} AS _sex,
            {per_role("postcode", "clean", "clean")} AS postcode,
            {per_role("postcode", "flag", c.postcode_flag("v"))} AS _postcode_flag,
            {per_role("postcode", "district", "district")} AS postcode_district,
            {per_role("postcode", "sector", c.postcode_sector("clean"))} AS postcode_sector,
            {per_role("postcode", "area", c.postcode_area("district"))} AS postcode_area,
            {per_role("pnc", "clean", c.pnc_from_candidate("candidate"))} AS pnc,
            {per_role("pnc", "flag", c.pnc_flag_from_candidate("v", "candidate"))} AS _pnc_flag,
            {per_role("cro", "clean", c.cro_from_candidate("candidate"))} AS cro,
            {per_role("cro", "flag", c.cro_flag_from_candidate("v", "candidate"))} AS _cro_flag,
            {address} AS address,
            {_concat([f"nullif(trim(CAST(l.{_q(n)} AS VARCHAR)), '')" for n in spec.role_columns('other_id')])} AS other_id,
            {_person_key(contract.source, spec)} AS person_key,
            {f"list_filter([{', '.join(placeholder_flags)}], lambda x: x IS NOT NULL)" if placeholder_flags else "[]::VARCHAR[]"}
                AS _placeholder_flags{attribute_values}
        FROM {landed} l
        {names.joins()}"""
    # Given names, surnames, sex and dates of birth recur: derived once per distinct value too.
    derived = _PerValue("step_raw", "r")
    derived.inner("_forenames", "forename", c.first_token("v"))
    forename = derived.value("_forenames", "forename", "forename")
    dob_flag = derived.value("_dob", "flag", c.dob_flag("v", as_of, rules))
    flags = ("list_concat(r._placeholder_flags, list_filter(["
             f"'date_of_birth:' || {dob_flag}, 'postcode:' || r._postcode_flag, 'pnc:' || r._pnc_flag, "
             "'cro:' || r._cro_flag], lambda x: x IS NOT NULL))")
    final = f"""
        SELECT r.record_key, {sql_string(contract.source)} AS source, {sql_string(name)} AS source_table,
            {forename} AS forename,
            {_concat([derived.value("_forenames", "rest", c.rest_tokens("v")), "r._middle_own"])} AS middle_names,
            r._surname AS surname,
            {derived.value("_forenames", "soundex", c.soundex("forename"))} AS forename_soundex,
            {derived.value("_surname", "soundex", c.soundex("v"))} AS surname_soundex,
            coalesce({derived.value("_forenames", "is_initial", c.is_initial("forename"))}, false) AS forename_is_initial,
            {derived.value("_dob", "date_of_birth", c.dob_clean_from_flag("v", "flag"))} AS date_of_birth,
            {derived.value("_dob", "year_of_birth", c.year_of_birth_from_flag("v", "flag"))} AS year_of_birth,
            {derived.value("_sex", "sex", c.sex_clean("v"))} AS sex,
            r.postcode, r.postcode_sector, r.postcode_district, r.postcode_area, r.address, r.pnc, r.cro, r.other_id,
            r.person_key,
            {flags} AS flags{"".join(f", r.{_q(a)}" for a in attrs)}
        FROM step_raw r
        {derived.joins()}
        ORDER BY r._row_number"""
    return [raw, final]


def _person_key(source: str, spec: Table) -> str:
    """SQL for the record's person key: its source and the value of its `person_key` column (an id
    the source issues per person, such as a prisoner number on bookings and on aliases), so that
    equal keys of one source mean one person and another source's ids never collide with them."""
    cols = [n for n in spec.role_columns("other_id") if spec.columns[n].person_key]
    if not cols:
        return "NULL::VARCHAR"
    value = f"nullif(trim(CAST(l.{_q(cols[0])} AS VARCHAR)), '')"
    return f"{sql_string(source + ':')} || {value}"


def _attribute_value(spec: Table, columns: list[str], kind: str, per_value: "_PerValue") -> str:
    """SQL for a declared attribute's cleaned value in a table holding it in `columns`."""
    if kind in ("category", "text"):
        return "coalesce(" + ", ".join(per_value.value(_q(n), "attribute", c.address_clean("v")) for n in columns) + ")"
    return f"coalesce({', '.join(f'l.{_q(n)}' for n in columns)})"


# Quasi-identifiers reduced enough for research (the SAIL/ONS practice): they go to content
# beside the record, while the full values stay in the identifiers zone.
REDUCED_QUASI_IDENTIFIERS = ("year_of_birth", "sex", "postcode_district")


# Provenance the same for every row of a landed file (ingest writes them as constants).
CONSTANT_PROVENANCE = ("_source", "_table", "_file", "_file_sha256", "_loaded_at")


def content_sql(spec: Table, landed: str, identifiers: str, constants: dict[str, str]) -> str:
    """A person table's content: its landed columns but the identifiers, with the reduced
    quasi-identifiers. (A table without identifiers is its landed file: see PROVENANCE.)
    `constants`: the SQL literal of each CONSTANT_PROVENANCE column, added after the sort by row
    (sorted along with every row, long constants cost the sort much of its time)."""
    # A person table may have no content column (every column an identifier), and may hold
    # every reduced quasi-identifier itself.
    varying = ["record_key", *(p for p in PROVENANCE if p not in CONSTANT_PROVENANCE),
               *(_q(n) for n in spec.content_columns)]
    qis = [c for c in REDUCED_QUASI_IDENTIFIERS if c not in spec.content_columns]
    inner = [f"l.{c}" for c in varying] + [f"i.{c}" for c in qis]
    outer = ["record_key", *(f"{constants[p]} AS {p}" if p in CONSTANT_PROVENANCE else p for p in PROVENANCE),
             *(_q(n) for n in spec.content_columns), *qis]
    return (f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {landed} l "
            f"JOIN {identifiers} i ON i.record_key = l.record_key ORDER BY l._row_number)")


def _constants(engine: Engine, landed: str) -> dict[str, str]:
    """The CONSTANT_PROVENANCE of a landed file as SQL literals (typed NULLs when it has no row)."""
    rows = engine.execute(f"SELECT {', '.join(f'CAST({c} AS VARCHAR)' for c in CONSTANT_PROVENANCE)} FROM {landed} LIMIT 1")
    values = rows[0] if rows else (None,) * len(CONSTANT_PROVENANCE)
    return {c: f"CAST({'NULL' if v is None else sql_string(v)} AS {'TIMESTAMP' if c == '_loaded_at' else 'VARCHAR'})"
            for c, v in zip(CONSTANT_PROVENANCE, values)}


class ContractChanged(ContractError):
    """The landed zone was loaded under another version of a contract."""


@holding_lock
def standardise(ws: Workspace, engine: Engine, *, as_of: str | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> list[TableSplit]:
    """Write the identifiers and content zones from the landed zone (replacing both on success)."""
    landed_dir = ws.zone(LANDED)
    if not (landed_dir / ACCOUNTING_FILE).is_file():
        raise FileNotFoundError(f"no landed zone in {ws.root}; run `datafirst ingest` first")
    # One date for every table, fixed before any is cleaned (a run may cross midnight).
    as_of = as_of or str(engine.scalar("SELECT CAST(current_date AS VARCHAR)"))
    as_of_sql = f"DATE {sql_string(as_of)}"
    contracts = load_contracts(ws.contracts)
    tables = [(ct, n, t) for ct in contracts for n, t in ct.tables.items()]
    attrs = attributes(contracts)
    dob_defaults = ws.config().standardise.date_of_birth
    rules = {ct.table_key(n): dob_rules(t, dob_defaults) for ct, n, t in tables}
    accounting = {(r["source"], r["table"]): r for r in pq.read_table(landed_dir / ACCOUNTING_FILE).to_pylist()}
    loaded_under = {k: r.get("spec_sha256") for k, r in accounting.items()}
    for contract, name, spec in tables:
        path = landed_dir / f"{contract.table_key(name)}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the contracts changed since the last ingest; "
                                    "run `datafirst ingest` again")
        # Landed under another contract (or loader), its columns and types may not be the contract's.
        if loaded_under.get((contract.source, name)) not in (None, spec_sha256(contract, name, spec)):
            raise ContractChanged(f"table {name!r} of {contract.path or contract.source} changed since the last "
                                  "ingest (or datafirst did); run `datafirst ingest` again")
    tmp_ids = ws.zones / f".{IDENTIFIERS}.partial-{os.getpid()}"
    tmp_content = ws.zones / f".{CONTENT}.partial-{os.getpid()}"
    for d in (tmp_ids, tmp_content):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    started = iter(range(len(tables)))  # next() on it is atomic: jobs report progress from their threads

    previous = standardised_state(ws)
    made_from = {contract.table_key(name): {
        "file_sha256": accounting.get((contract.source, name), {}).get("file_sha256"),
        "spec_sha256": spec_sha256(contract, name, spec), "code": CODE_SHA256, "engine": engine.name,
        "as_of": as_of,
        # The cleaning's declared choices and the identifiers' schema (every table carries every
        # attribute any contract declares): outputs made under others are not reused.
        "rules": hashlib.sha256(json.dumps([vars(rules[contract.table_key(name)]), attrs],
                                           sort_keys=True).encode()).hexdigest()}
        for contract, name, spec in tables}

    def split(contract: Contract, name: str, spec: Table, job_engine: Engine) -> TableSplit:
        if progress:
            progress(f"{contract.source}/{name}", next(started), len(tables))
        key = contract.table_key(name)
        landed = job_engine.parquet(landed_dir / f"{key}.parquet")
        rows = int(job_engine.scalar(f"SELECT count(*) FROM {landed}"))
        kept = _reusable(job_engine, ws, spec, key, landed, previous.get(key), made_from[key])
        if kept is not None:
            for zone, out in ((IDENTIFIERS, tmp_ids), (CONTENT, tmp_content)):
                if (ws.zone(zone) / f"{key}.parquet").is_file():
                    _link_or_copy(ws.zone(zone) / f"{key}.parquet", out / f"{key}.parquet")
            return TableSplit(contract.source, name, rows, kept[0], kept[1], reused=True)
        n_ids, cleaned = 0, None
        if spec.is_person_table:
            known = _known_rows(job_engine, ws, spec, key, landed, previous.get(key), made_from[key])
            if known is None:
                raw, final = identifiers_steps(contract, name, spec, landed, as_of_sql, rules[key], attrs)
                job_engine.execute(f"CREATE OR REPLACE TEMP TABLE step_raw AS {raw}")
                n_ids = job_engine.to_parquet(final, tmp_ids / f"{key}.parquet")
            else:
                # The other rows (few: a delivery's new and changed lines) cleaned as usual, from a
                # table of their own (the cleaning reads its input once per distinct-value step).
                job_engine.execute(f"""CREATE OR REPLACE TEMP TABLE step_todo AS SELECT * FROM {landed}
                                       WHERE record_key NOT IN (SELECT record_key FROM {known})""")
                raw, final = identifiers_steps(contract, name, spec, "step_todo", as_of_sql, rules[key], attrs)
                job_engine.execute(f"CREATE OR REPLACE TEMP TABLE step_raw AS {raw}")
                cleaned = int(job_engine.scalar("SELECT count(*) FROM step_raw"))
                before = job_engine.parquet(ws.zone(IDENTIFIERS) / f"{key}.parquet")
                cols = ", ".join(_q(col) for col in identifier_columns(attrs))
                n_ids = job_engine.to_parquet(f"""
                    SELECT {cols} FROM (
                        SELECT n.*, t._row_number AS _order FROM ({final}) n JOIN step_todo t ON t.record_key = n.record_key
                        UNION ALL
                        SELECT i.*, k._row_number AS _order FROM {before} i JOIN {known} k ON k.record_key = i.record_key)
                    ORDER BY _order""", tmp_ids / f"{key}.parquet")
                job_engine.execute(f"DROP TABLE {known}")
                job_engine.execute("DROP TABLE step_todo")
            job_engine.execute("DROP TABLE step_raw")
        if spec.is_person_table:
            ids = job_engine.parquet(tmp_ids / f"{key}.parquet")
            n_content = job_engine.to_parquet(content_sql(spec, landed, ids, _constants(job_engine, landed)),
                                              tmp_content / f"{key}.parquet")
        else:
            # Its content is its landed rows, column for column (see PROVENANCE): linked, not written again.
            _link_or_copy(landed_dir / f"{key}.parquet", tmp_content / f"{key}.parquet")
            n_content = rows
        return TableSplit(contract.source, name, rows, n_ids, n_content, cleaned=cleaned)

    try:
        # Tables are independent: several at once, the largest first (see Engine.concurrently).
        splits = engine.concurrently([lambda e, t=t: split(*t, e) for t in tables],
                                     sizes=[(landed_dir / f"{c.table_key(n)}.parquet").stat().st_size for c, n, _ in tables])
        if progress:
            progress("done", len(tables), len(tables))
        (tmp_content / STATE_FILE).write_text(json.dumps({contract.table_key(t.table): {
            **made_from[contract.table_key(t.table)], "identifiers": t.identifiers, "content": t.content}
            for (contract, _, _), t in zip(tables, splits)}, indent=2, sort_keys=True), encoding="utf-8")
        replace_folder(tmp_ids, ws.zone(IDENTIFIERS))
        replace_folder(tmp_content, ws.zone(CONTENT))
    except BaseException:
        shutil.rmtree(tmp_ids, ignore_errors=True)
        shutil.rmtree(tmp_content, ignore_errors=True)
        raise
    return splits


def reuse_summary(splits: list[TableSplit]) -> str:
    """What a standardise kept from the last one, as a phrase to append ('' when nothing)."""
    kept = sum(1 for s in splits if s.reused)
    partly = [s for s in splits if s.cleaned is not None]
    parts = [f"{kept} of {len(splits)} tables unchanged, kept"] if kept else []
    if partly:
        parts.append(f"{sum(s.identifiers - s.cleaned for s in partly):,} identifier rows of unchanged lines kept, "
                     f"{sum(s.cleaned for s in partly):,} cleaned")
    return f" ({'; '.join(parts)})" if parts else ""


def standardised_state(ws: Workspace) -> dict:
    """What each table's standardised outputs were made from (see STATE_FILE), by table key."""
    path = ws.zone(CONTENT) / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}  # unreadable: every table is standardised again


def _reusable(engine: Engine, ws: Workspace, spec: Table, key: str, landed: str, before: dict | None,
              now: dict) -> tuple[int, int] | None:
    """(identifier rows, content rows) of the table's last outputs when they are what
    standardising it again would give, else None: the same landed rows (file, contract, loader),
    cleaning code and engine, both output files still there, and no date of birth that the
    change of date turns into a future one or back (`in_future` is the only flag that depends on
    the date: a date of birth later than the earlier date and not later than the later one)."""
    if not before or any(before.get(k) != now[k] for k in ("file_sha256", "spec_sha256", "code", "engine", "rules")) \
            or now["file_sha256"] is None:
        return None
    outputs = [ws.zone(CONTENT) / f"{key}.parquet"] + ([ws.zone(IDENTIFIERS) / f"{key}.parquet"]
                                                     if spec.is_person_table else [])
    if not all(p.is_file() for p in outputs):
        return None
    dob = _first(spec.role_columns("date_of_birth"), "")
    if before["as_of"] != now["as_of"] and dob != "NULL":
        earlier, later = sorted((before["as_of"], now["as_of"]))
        crossing = engine.scalar(f"SELECT count(*) FROM {landed} WHERE {dob} > DATE {sql_string(earlier)} "
                                 f"AND {dob} <= DATE {sql_string(later)}")
        if crossing:
            return None
    return int(before["identifiers"]), int(before["content"])


def _known_rows(engine: Engine, ws: Workspace, spec: Table, key: str, landed: str, before: dict | None,
                now: dict) -> str | None:
    """A temp table of the record keys (with their row) whose identifiers the last standardise
    made and would make again, for a table whose file has changed since (a new delivery): the
    same contract, loader, cleaning code and engine, and the record's extract line unchanged (the
    same `_line_md5`, so the same landed values), but for a date of birth that the change of date
    turns into a future one or back (see _reusable). None when the last outputs cannot be used."""
    if not before or any(before.get(k) != now[k] for k in ("spec_sha256", "code", "engine", "rules")):
        return None
    ids, content = ws.zone(IDENTIFIERS) / f"{key}.parquet", ws.zone(CONTENT) / f"{key}.parquet"
    if not (ids.is_file() and content.is_file()):
        return None
    dob = _first(spec.role_columns("date_of_birth"))
    crossing = "false"
    if before["as_of"] != now["as_of"] and dob != "NULL":
        earlier, later = sorted((before["as_of"], now["as_of"]))
        crossing = f"coalesce({dob} > DATE {sql_string(earlier)} AND {dob} <= DATE {sql_string(later)}, false)"
    table = _q(f"known_{key}")
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT l.record_key, l._row_number FROM {landed} l
        JOIN {engine.parquet(content)} p ON p.record_key = l.record_key AND p._line_md5 = l._line_md5
        WHERE NOT {crossing}""")
    return table


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # zones are replaced whole, never written in place
    except OSError:
        shutil.copy2(source, target)
