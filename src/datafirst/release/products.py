"""Research-ready products, built from the content and links zones only.

Never from the identifiers zone: that is what keeps names, full dates of birth, postcodes
and police ids out of every product. Every column is declared with what it may hold
(`allowlist.Declared`): a source's columns by its contract, the derived ones here; a content
column its contract does not declare is withheld. Every native id becomes a keyed, salted hash
(`<column>_hash`) that is the same wherever the same id appears in a release; record keys
become `row_id_hash`. Person ids come from `person_ids` (persistent across releases), in
the links relation the products are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine import Engine
from ..engine.sql import sql_string
from ..link.stage import RELIABILITY
from ..sources.code_lists import CodeList, CodeListError
from ..sources.contract import Contract, Harmonise, Table
from ..workspace import Workspace
from .allowlist import FLAG, HASHED_ID, Declared, code, contract_column, dates, number, suppressed_sql

HASH_CHARS = 20  # 80 bits: no collision in practice for a national population of ids


def install_keyed_hash(engine: Engine, salt: str) -> None:
    """Make `keyed_hash(x)` available in SQL. The salt is passed as a parameter and held in
    a session variable, so it never appears in SQL text, logs or error messages."""
    engine.execute("SET VARIABLE datafirst_release_salt = ?", [salt])
    engine.execute(f"""CREATE OR REPLACE TEMP MACRO keyed_hash(x) AS CASE WHEN x IS NULL THEN NULL
        ELSE substr(sha256(getvariable('datafirst_release_salt') || '|' || CAST(x AS VARCHAR)), 1, {HASH_CHARS}) END""")


def forget_keyed_hash(engine: Engine) -> None:
    engine.execute("DROP MACRO IF EXISTS keyed_hash")
    engine.execute("RESET VARIABLE datafirst_release_salt")


@dataclass
class Product:
    """One release table: its SQL, and what the data dictionary says about it."""

    name: str
    sql: str
    unit: str
    description: str
    keys: list[str]  # columns that together are unique
    columns: dict[str, str] = field(default_factory=dict)  # column -> meaning
    source: str = ""
    table: str = ""
    # Whether its SQL reads the released person ids (person_ids.ASSIGNED, CHANGES or the person
    # records): a table that does not can be written while the ids are assigned.
    needs_person_ids: bool = True
    declared: dict[str, Declared] = field(default_factory=dict)  # column -> what it may hold
    withheld: dict[str, str] = field(default_factory=dict)  # source column left out -> why, and what to declare
    # Columns whose values outside their declaration are emptied as the table is written; the
    # release counts them against the content file's empty values.
    suppressing: list[str] = field(default_factory=list)
    # Columns whose contract gives no description -> where to write one (the dictionary says so
    # rather than inventing a meaning).
    meaning_missing: dict[str, str] = field(default_factory=dict)
    # Why a column is empty: the contract's `empty_because`, or what its contract implies.
    empty_because: dict[str, str] = field(default_factory=dict)
    # Where a user writes `empty_because` for a column that has none (for the dictionary's hint).
    empty_reason_at: dict[str, str] = field(default_factory=dict)
    # Columns a contract's `harmonise` adds -> the source column they map; a value with no row in
    # the mapping is emptied, and the release counts those.
    harmonised: dict[str, str] = field(default_factory=dict)
    # Columns that hold another release table's key, declared where the product is defined:
    # column -> (table, column). `joins.candidates` adds those the contracts imply.
    references: dict[str, tuple[str, str]] = field(default_factory=dict)
    code_list: CodeList | None = None  # a code list's reference table: the list, for its metadata


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_PERSISTENT = "; kept across releases while the person continues (see person_id_changes)"
PERSON_ID_COLUMNS = {
    "person_id_high": "estimated person id at the high threshold (fewest false links; a person may be split)"
                      + _PERSISTENT,
    "person_id_medium": "estimated person id at the medium threshold (the recommended default)" + _PERSISTENT,
    "person_id_low": "estimated person id at the low threshold (fewest missed links; people may be merged)"
                     + _PERSISTENT,
}


PERSON_ID_DECLARED = {c: HASHED_ID for c in PERSON_ID_COLUMNS}
THRESHOLDS = ("high", "medium", "low")
# The reduced quasi-identifiers standardisation adds to a person table's content.
REDUCED_DECLARED = {
    "year_of_birth": number(1000, None),  # standardisation empties dates of birth in the future
    "sex": code(["M", "F"]),
    "postcode_district": Declared("code", pattern=r"[A-Z]{1,2}[0-9][A-Z0-9]?", where="products.py"),
}
# The identifier role each reduced column is made from at standardisation.
REDUCED_FROM_ROLE = {"year_of_birth": "date_of_birth", "sex": "sex", "postcode_district": "postcode"}
REDUCED_MEANING = {"year_of_birth": "year of birth (the full date is not released)",
                   "sex": "sex as recorded, cleaned to M or F (empty when unknown)",
                   "postcode_district": "postcode district (outward code) at the time of the record; the full "
                                        "postcode is not released"}
SCORE = number(0, 1)
COUNT = number(1, None)


LOOKUP = "person_link_lookup"


def _person_ids(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in PERSON_ID_COLUMNS)


def person_link_lookup(links: str, contracts: list[Contract]) -> Product:
    sql = f"""
        SELECT c.source AS source_dataset, split_part(c.record_key, '|', 2) AS source_table,
               c.row_id_hash, {_person_ids('c')},
               c.cluster_size_high, c.cluster_size_medium, c.cluster_size_low,
               c.person_changes_between_thresholds, round(c.strongest_link_medium, 6) AS strongest_link_medium,
               c.link_reliability_high, c.link_reliability_medium, c.link_reliability_low
        FROM {links} c ORDER BY row_id_hash"""
    return Product(LOOKUP, sql, "one row per linked source record (the records that describe a person)", (
        "Links every record of a person table (by its hashed row id) to an estimated person id at three "
        "thresholds, with flags for sensitivity analysis. Join a person table (one with person_id columns) to it "
        "on row_id_hash; other tables (offences, claims, ...) join to their person table through their native-id "
        "hashes (case_id_hash, ...). Such a row may have no row in its person table (that row was quarantined at "
        "ingest, or is missing from the extract): it then has no person."), ["row_id_hash"], {
        "source_dataset": "the source system the record came from",
        "source_table": "the table of that source",
        "row_id_hash": "keyed hash of the record's id; the same in every table of the release",
        **PERSON_ID_COLUMNS,
        "cluster_size_high": "records sharing the person id at high",
        "cluster_size_medium": "records sharing the person id at medium",
        "cluster_size_low": "records sharing the person id at low",
        "person_changes_between_thresholds": "true when the record's person differs between high and low: treat "
                                             "results that depend on it with care",
        "strongest_link_medium": "match probability of the best link holding the record in its medium person "
                                 "(empty when it has no link); close to the threshold means loosely held",
        **{f"link_reliability_{t}": f"how far to trust the record's person at {t}: " + "; ".join(
            f"{value}: {meaning}" for value, meaning in RELIABILITY.items()) for t in ("high", "medium", "low")},
    }, declared={
        "source_dataset": code([c.source for c in contracts]),
        "source_table": code([t for c in contracts for t, spec in c.tables.items() if spec.is_person_table]),
        "row_id_hash": HASHED_ID, **PERSON_ID_DECLARED,
        **{f"cluster_size_{t}": COUNT for t in THRESHOLDS},
        "person_changes_between_thresholds": FLAG, "strongest_link_medium": SCORE,
        **{f"link_reliability_{t}": code(list(RELIABILITY)) for t in THRESHOLDS},
    })


def person_id_changes(changes: str) -> Product:
    sql = f"SELECT threshold, change, person_id, into_person_id, records FROM {changes} ORDER BY ALL"
    return Product("person_id_changes", sql, "one row per previous person id and the current id it merged or "
                   "split into, at each threshold", (
        "The change log of person ids since the previous release: which ids merged into which, which split, and "
        "how many records moved. Ids not listed continued unchanged or are new people."),
        ["threshold", "person_id", "into_person_id"], {
        "threshold": "high, medium or low: the person id column the row is about",
        "change": "merged (into_person_id also holds records of other previous ids) or split (some of the "
                  "previous id's records now sit under into_person_id, which holds no other previous id)",
        "person_id": "the person id in the previous release",
        "into_person_id": "the id in this release that now holds those records",
        "records": "records of the previous id now held by into_person_id",
    }, declared={"threshold": code(THRESHOLDS), "change": code(["merged", "split"]), "person_id": HASHED_ID,
                 "into_person_id": HASHED_ID, "records": COUNT})


def case_journeys(journeys: str) -> Product:
    sql = f"""
        SELECT keyed_hash(crown_case) AS crown_case_hash, keyed_hash(crown_record_key) AS crown_row_id_hash,
               keyed_hash(mags_case) AS magistrates_case_hash, keyed_hash(magistrates_record_key) AS magistrates_row_id_hash,
               method AS link_method, round(estimated_match_score, 4) AS estimated_match_score, days_between
        FROM {journeys} ORDER BY crown_row_id_hash"""
    return Product("case_journeys", sql, "one row per Crown Court case (defendant) linked to a magistrates' case", (
        "The magistrates' court case each Crown Court case came from."), ["crown_row_id_hash"], {
        "crown_case_hash": "keyed hash of the Crown Court case number",
        "crown_row_id_hash": "hashed row id of the Crown Court record",
        "magistrates_case_hash": "keyed hash of the magistrates' case id",
        "magistrates_row_id_hash": "hashed row id of the magistrates' defendant record",
        "link_method": "reference (the Crown record names the case) or person_dates_offences (inferred)",
        "estimated_match_score": "1 for references; otherwise a score from same person, sent-up flag, offence "
                                 "and dates (0.5 to 1)",
        "days_between": "days from the magistrates' first hearing to Crown Court receipt",
    }, needs_person_ids=False, declared={
        "crown_case_hash": HASHED_ID, "crown_row_id_hash": HASHED_ID, "magistrates_case_hash": HASHED_ID,
        "magistrates_row_id_hash": HASHED_ID, "link_method": code(["reference", "person_dates_offences"]),
        "estimated_match_score": SCORE,
        "days_between": number(-36525, 36525),  # two event dates a century apart at most, either way
    }, references={"crown_row_id_hash": (LOOKUP, "row_id_hash"), "magistrates_row_id_hash": (LOOKUP, "row_id_hash")})


def _reduced_empty_because(contract: Contract, table: str, col: str, contract_file: str) -> tuple[str, str]:
    """Why a reduced column (year_of_birth, sex, postcode_district) is empty, and where the
    contract would say so: always, when the table maps no column to the role it is made from;
    otherwise the `empty_because` of that role's column, if it has one."""
    spec, role = contract.tables[table], REDUCED_FROM_ROLE[col]
    held = spec.role_columns(role)
    if not held:
        why = (f"{contract.table_key(table)} records no {role.replace('_', ' ')} ({contract_file} maps no column of "
               f"tables.{table} to the {role} role), so {col} is always empty")
        return why, ""
    reason = next((spec.columns[c].empty_because for c in held if spec.columns[c].empty_because), "")
    return reason, f"{contract_file}, tables.{table}.columns.{held[0]}.empty_because"


def content_product(contract: Contract, table: str, content: str, links: str | None, columns: list[str]) -> Product:
    spec = contract.tables[table]
    # The links relation holds each record's row_id_hash already (hashed once per release).
    select = ["coalesce(l.row_id_hash, keyed_hash(t.record_key)) AS row_id_hash" if links is not None
              else "keyed_hash(t.record_key) AS row_id_hash"]
    meaning = {"row_id_hash": "keyed hash of the record's id" + ("; joins to person_link_lookup" if links is not None
                                                                  else "")}
    declared = {"row_id_hash": HASHED_ID}
    withheld, suppressing, harmonised, joins = {}, [], {}, []
    if links is not None:
        select.append(_person_ids("l"))
        meaning.update(PERSON_ID_COLUMNS)
        declared.update(PERSON_ID_DECLARED)
    contract_file = f"contract {contract.path.name}" if contract.path is not None else f"the {contract.source} contract"
    meaning_missing, empty_because, empty_reason_at = {}, {}, {}
    for col in columns:
        cspec = spec.columns.get(col)
        # Reduced quasi-identifiers added at standardisation (a source column with a role may share
        # the name, as `sex` does: it is the identifier, which content never holds)
        if col in REDUCED_DECLARED and (cspec is None or cspec.role is not None):
            select.append(f"t.{_q(col)}")
            meaning[col] = REDUCED_MEANING[col]
            declared[col] = REDUCED_DECLARED[col]
            reason, at = _reduced_empty_because(contract, table, col, contract_file)
            if reason:
                empty_because[col] = reason
            else:
                empty_reason_at[col] = at
            continue
        if cspec is None:  # added by standardisation and declared nowhere: the release refuses it, by name
            select.append(f"t.{_q(col)}")
            continue
        decl = contract_column(contract, cspec)
        if isinstance(decl, str):
            withheld[col] = decl
            continue
        at = f"{contract_file}, tables.{table}.columns.{col}"
        released = col + "_hash" if cspec.native_id else col
        if cspec.native_id:
            select.append(f"keyed_hash(t.{_q(col)}) AS {_q(released)}")
            meaning[released] = f"keyed hash of {col} (the source system's id)" + (
                f": {cspec.description}" if cspec.description else "")
        else:
            select.append(f"{suppressed_sql(f't.{_q(col)}', decl)} AS {_q(col)}")
            meaning[col] = cspec.description  # none is invented: the dictionary says where to write one
            suppressing.append(col)
        declared[released] = decl
        if not cspec.description:
            meaning_missing[released] = f"no description in {at}.description: write one"
        if cspec.empty_because:
            empty_because[released] = cspec.empty_because
        else:
            empty_reason_at[released] = f"{at}.empty_because"
        if cspec.harmonise is not None:
            # Mapped from the value as released (the raw one when the column itself is withheld: the
            # added columns hold only the mapping's values, a code list).
            value = f"t.{_q(col)}" if isinstance(decl, str) else suppressed_sql(f"t.{_q(col)}", decl)
            alias = f"h{len(joins)}"
            joins.append(_mapping_join(cspec.harmonise, alias, value))
            where = contract.path.name if contract.path is not None else f"the {contract.source} contract"
            for added, aspec in cspec.harmonise.columns.items():
                select.append(f"{alias}.{_q(added)}")
                meaning[added] = aspec.description
                if not aspec.description:
                    meaning_missing[added] = f"no description in {at}.harmonise.columns.{added}.description: write one"
                declared[added] = Declared("code", values=tuple(cspec.harmonise.codes(added)), where=where,
                                           listed_in=cspec.harmonise.listed_in(added))
                harmonised[added] = col
    # The links of this table's records only (keys are `source|table|id`): each person table's join
    # then holds its own records' links, not every record's.
    prefix = sql_string(f"{contract.source}|{table}|")
    join = (f"LEFT JOIN (SELECT * FROM {links} WHERE starts_with(record_key, {prefix})) l ON l.record_key = t.record_key"
            if links is not None else "")
    # In keyed-hash order: in the extract's order, someone holding the extract could match the
    # released rows to its lines by position.
    sql = f"SELECT {', '.join(select)} FROM {content} t {join} {' '.join(joins)} ORDER BY row_id_hash"
    return Product(contract.table_key(table), sql, spec.unit or "one row per source record",
                   spec.description or f"{contract.source} {table}: {contract.description}", ["row_id_hash"], meaning,
                   source=contract.source, table=table, needs_person_ids=links is not None, declared=declared,
                   withheld=withheld, suppressing=suppressing, meaning_missing=meaning_missing,
                   empty_because=empty_because, empty_reason_at=empty_reason_at, harmonised=harmonised,
                   references={"row_id_hash": (LOOKUP, "row_id_hash")} if links is not None else {})


def code_list_product(code_list: CodeList) -> Product:
    """A code list as a reference table (`code_list__<name>`): every row of its file, its columns as
    text, in the order of its key. Its values are those of a file beside the contracts, read with
    them: written into the SQL, so that it runs alike on every engine."""
    names = code_list.header
    rows = ", ".join("(" + ", ".join(sql_string(v) if v else "NULL" for v in row) + ")" for row in code_list.rows)
    sql = (f"SELECT {', '.join(f'CAST({_q(c)} AS VARCHAR) AS {_q(c)}' for c in names)} "
           f"FROM (VALUES {rows}) AS t({', '.join(_q(c) for c in names)}) ORDER BY {_q(code_list.key)}")
    where = code_list.declared_in or code_list.file
    undeclared = (f" Its source and licence are not declared: describe the list in "
                  f"{code_list.path.stem}.codelist.yaml beside it (docs/contracts.md).")
    return Product(code_list.table, sql, f"one row per code of the {code_list.name} code list", (
        (code_list.description or f"The code list {code_list.file}.")
        + ("" if code_list.declared_in else undeclared)), [code_list.key],
        {c: code_list.meanings.get(c, "") for c in names}, needs_person_ids=False,
        declared={c: Declared("code", values=tuple(sorted(set(code_list.values(c)))), where=where,
                              listed_in=f"{code_list.file} ({c})") for c in names},
        code_list=code_list)


def code_list_products(contracts: list[Contract], products: list[Product]) -> list[Product]:
    """The reference tables of the code lists that released columns use (a column withheld for
    want of a declaration uses none), each list once however many columns use it."""
    released = {(p.source, p.table): p for p in products if p.source}
    lists: dict[str, CodeList] = {}
    for contract in contracts:
        for name, spec in contract.tables.items():
            product = released.get((contract.source, name))
            for column, cspec in spec.columns.items():
                if product is None or cspec.code_list is None or column not in product.declared:
                    continue
                code_list = cspec.code_list[0]
                first = lists.setdefault(code_list.table, code_list)
                if first.path.resolve() != code_list.path.resolve():
                    raise CodeListError(f"code lists {first.path} and {code_list.path} are both named "
                                        f"{code_list.name!r}, and a release holds one table of that name: declare "
                                        f"another `name` in the declaration of one of them (docs/contracts.md)")
    return [code_list_product(lists[t]) for t in sorted(lists)]


def _mapping_join(harmonise: Harmonise, alias: str, value: str) -> str:
    """A LEFT JOIN adding a `harmonise` mapping's columns (as `alias`) to each row by `value`:
    the mapping is written into the SQL as a VALUES list (a scheme's few rows), so the engine
    does the lookup and nothing is read row by row."""
    added = list(harmonise.columns)
    rows = ", ".join("(" + ", ".join(sql_string(v) if v is not None else "NULL::VARCHAR"
                                     for v in [source, *(to.get(a) for a in added)]) + ")"
                     for source, to in harmonise.mapping.items())
    names = ", ".join(["_source_value", *(_q(a) for a in added)])
    return f"LEFT JOIN (VALUES {rows}) {alias}({names}) ON {alias}._source_value = {value}"


def _most_common(column: str, person: str) -> str:
    """A CTE `most_common_<column>`: each person's (`person`: their id column) most common
    non-missing value of a column of `recorded`, ties going to the first in order, so that every
    engine and run agrees."""
    return f"""most_common_{column} AS (
            SELECT {person}, {column} FROM (
                SELECT {person}, {column},
                       row_number() OVER (PARTITION BY {person} ORDER BY count(*) DESC, {column}) AS rank
                FROM recorded WHERE {column} IS NOT NULL GROUP BY {person}, {column})
            WHERE rank = 1)"""


# Made by the stage from person_inputs_sql, for the person products: every dated event with each
# linked record it belongs to, and every linked record with its person ids, reduced demographics
# and first and last event.
PERSON_RECORDS = "release_person_records"
PERSON_EVENTS = "release_person_events"
PERSON_INPUTS = (PERSON_RECORDS, PERSON_EVENTS)


@dataclass
class EventTable:
    """A table whose rows are events of people (it names an `event_date`), and how its rows reach
    their people: a person table's row is its own person's; any other table's row belongs to the
    people of the rows of its source's person table(s) sharing the most native ids with it, joined
    on those ids (an offence to its defendant, a family case to each of its parties)."""

    contract: Contract
    name: str
    via: dict[str, list[str]]  # person table -> the native-id columns joined on ({} for a person table itself)

    @property
    def spec(self) -> Table:
        return self.contract.tables[self.name]

    @property
    def event_type(self) -> str:
        return self.spec.event_type or self.name

    @property
    def reached(self) -> bool:
        return self.spec.is_person_table or bool(self.via)


def event_tables(contracts: list[Contract]) -> list[EventTable]:
    """Every table with an `event_date`, with the person tables its rows reach (see EventTable)."""
    out = []
    for contract in contracts:
        people = {n: t for n, t in contract.tables.items() if t.is_person_table}
        for name, spec in contract.tables.items():
            if not spec.event_date:
                continue
            via: dict[str, list[str]] = {}
            if not spec.is_person_table:
                ids = [c for c, col in spec.columns.items() if col.native_id]
                shared = {p: [c for c in ids if c in t.columns and t.columns[c].native_id] for p, t in people.items()}
                most = max((len(c) for c in shared.values()), default=0)
                via = {p: c for p, c in shared.items() if most and len(c) == most}
            out.append(EventTable(contract, name, via))
    return out


def person_inputs_sql(ws: Workspace, contracts: list[Contract], links: str) -> dict[str, str]:
    """What the person tables and the person journey are built from, each joined once (made in
    this order: the records read the events):
    PERSON_EVENTS, every dated event of every table with an `event_date`, once for each linked
    record it belongs to (`event_tables`): that record's key and medium person id, and the event's
    row id (`own` when the event is that record's own row);
    PERSON_RECORDS, every linked record with its person ids, reduced demographics (only person
    tables' records are linked, and carry the reduced sex and year of birth) and the first and
    last date of its events, from which each threshold's person table takes its own."""

    def content(contract: Contract, table: str) -> str:
        return f"read_parquet({sql_string(str(ws.zone('content') / f'{contract.table_key(table)}.parquet'))})"

    events = []
    for ev in event_tables(contracts):
        spec, contract = ev.spec, ev.contract
        # An event date outside its declaration is emptied here as in the table's own product.
        date = suppressed_sql(f"e.{_q(spec.event_date)}", contract_column(contract, spec.columns[spec.event_date]))
        fields = (f"{date} AS event_date, {sql_string(ev.event_type)} AS event_type, "
                  f"{sql_string(contract.source)} AS source_dataset, {sql_string(ev.name)} AS source_table")
        if spec.is_person_table:  # its own record: the links hold its row id already
            events.append(f"SELECT e.record_key, NULL::VARCHAR AS row_id_hash, {fields} "
                          f"FROM {content(contract, ev.name)} e")
        for person_table, ids in ev.via.items():
            on = " AND ".join(f"p.{_q(c)} = e.{_q(c)}" for c in ids)
            events.append(f"SELECT p.record_key, keyed_hash(e.record_key) AS row_id_hash, {fields} "
                          f"FROM {content(contract, ev.name)} e JOIN {content(contract, person_table)} p ON {on}")
    union = " UNION ALL ".join(events) if events else (
        "SELECT NULL::VARCHAR AS record_key, NULL::VARCHAR AS row_id_hash, NULL::DATE AS event_date, "
        "NULL::VARCHAR AS event_type, NULL::VARCHAR AS source_dataset, NULL::VARCHAR AS source_table WHERE false")
    dated = f"""SELECT e.record_key, l.person_id_medium, e.event_date, e.event_type, e.source_dataset, e.source_table,
                       coalesce(e.row_id_hash, l.row_id_hash) AS row_id_hash, e.row_id_hash IS NULL AS own
                FROM ({union}) e JOIN {links} l USING (record_key)"""
    demographics = [f"SELECT c.record_key, c.sex, c.year_of_birth FROM {content(contract, name)} c"
                    for contract in contracts for name, spec in contract.tables.items() if spec.is_person_table]
    records = f"""SELECT l.person_id_high, l.person_id_medium, l.person_id_low, l.row_id_hash, l.source,
                         r.sex, r.year_of_birth, d.first_event, d.last_event
                  FROM {links} l LEFT JOIN ({' UNION ALL '.join(demographics) if demographics else
                      'SELECT NULL::VARCHAR AS record_key, NULL::VARCHAR AS sex, NULL::BIGINT AS year_of_birth WHERE false'}
                  ) r USING (record_key)
                  LEFT JOIN (SELECT record_key, min(event_date) AS first_event, max(event_date) AS last_event
                             FROM {PERSON_EVENTS} GROUP BY record_key) d USING (record_key)"""
    return {PERSON_EVENTS: dated, PERSON_RECORDS: records}


# The person table at each threshold (medium keeps the name `person`, as before there were three).
PERSON_TABLES = {"high": "person_high", "medium": "person", "low": "person_low"}
_THRESHOLD_MEANING = {
    "high": "the high threshold (fewest false links; a person may be split over several ids)",
    "medium": "the medium threshold (the recommended default)",
    "low": "the low threshold (fewest missed links; people may be merged)",
}


def person_products(contracts: list[Contract], records: str = PERSON_RECORDS,
                    events: str = PERSON_EVENTS) -> list[Product]:
    """The person table at each threshold and the person journey table (analytics-ready), from
    `person_inputs_sql`; the events are those of every table that names an `event_date`."""
    tables = event_tables(contracts)
    described = [f"{t.event_type} ({t.contract.source}"
                 + (f", through {' and '.join(t.via)})" if t.via else ")") for t in tables if t.reached]
    unreached = [f"{t.contract.source}.{t.name}" for t in tables if not t.reached]
    event_dates = _event_dates(contracts)
    sources = code([c.source for c in contracts])
    # A record's own event is its person's once; an event reached through records (a case through
    # its parties) once per person, however many of the person's records it reaches.
    fields = "person_id_medium, event_date, event_type, source_dataset, source_table, row_id_hash"
    journey_sql = f"""
        SELECT {fields},
               row_number() OVER (PARTITION BY person_id_medium ORDER BY event_date, row_id_hash) AS event_sequence
        FROM (SELECT {fields} FROM {events} WHERE own UNION ALL SELECT DISTINCT {fields} FROM {events} WHERE NOT own)
        ORDER BY person_id_medium, event_sequence"""
    products = []
    for threshold, name in PERSON_TABLES.items():
        person = f"person_id_{threshold}"
        sql = f"""
        WITH recorded AS (SELECT {person}, sex, year_of_birth FROM {records}),
        {_most_common("sex", person)},
        {_most_common("year_of_birth", person)},
        demo AS (SELECT {person}, s.sex, y.year_of_birth
                 FROM most_common_sex s FULL JOIN most_common_year_of_birth y USING ({person}))
        SELECT r.{person},
               list_sort(list_distinct(list(r.source))) AS sources, count(*) AS records,
               any_value(d.sex) AS sex, any_value(d.year_of_birth) AS year_of_birth,
               min(r.first_event) AS first_event, max(r.last_event) AS last_event
        FROM {records} r LEFT JOIN demo d USING ({person})
        GROUP BY r.{person} ORDER BY 1"""
        products.append(Product(name, sql, f"one row per person ({threshold} threshold)", (
            f"Analytics-ready summary of each estimated person at {_THRESHOLD_MEANING[threshold]}: which sources "
            "hold them, how many records, their first and last event, and reduced demographics. "
            + ", ".join(f"`{n}` is at {t}" for t, n in PERSON_TABLES.items())
            + "; join a table's person_id column of the same threshold."), [person], {
            person: PERSON_ID_COLUMNS[person],
            "sources": "the source systems holding records of the person",
            "records": "number of source records (the records of person tables, as in person_link_lookup)",
            "sex": "most common recorded sex (M or F) across the records (on a tie, the first in order)",
            "year_of_birth": "most common recorded year of birth (on a tie, the earliest)",
            "first_event": "date of the person's earliest event: the earliest event_date of their records' events "
                           "(as in person_journey, at this threshold)",
            "last_event": "date of the person's latest event (as first_event)",
        }, declared={person: HASHED_ID, "sources": sources, "records": COUNT,
                     "sex": REDUCED_DECLARED["sex"], "year_of_birth": REDUCED_DECLARED["year_of_birth"],
                     "first_event": event_dates, "last_event": event_dates}))
    products.append(Product("person_journey", journey_sql, "one row per person (medium threshold) per event, in "
                            "time order", (
        "Every dated event of every person (medium threshold) across the sources, in order: "
        + (", ".join(described) if described else "none (no table names an event_date)")
        + ". A table of no person (a case, a claim, an offence) gives an event to each person of the records "
          "it shares its native ids with (each party of a case), dated by its own event date."
        + (f" Not in the journey, for sharing no native id with a person table of their source: "
           f"{', '.join(unreached)}." if unreached else "")),
        ["person_id_medium", "event_sequence"], {
        "person_id_medium": PERSON_ID_COLUMNS["person_id_medium"],
        "event_date": "date of the event", "event_type": "what happened",
        "source_dataset": "source system of the event", "source_table": "table of that source",
        "row_id_hash": "hashed row id of the event's record (joins to that source's table)",
        "event_sequence": "position of the event in the person's journey (1 = first)",
    }, declared={"person_id_medium": HASHED_ID, "event_date": event_dates,
                 "event_type": code([t.event_type for t in tables if t.reached]),
                 "source_dataset": sources,
                 "source_table": code([t.name for t in tables if t.reached]),
                 "row_id_hash": HASHED_ID, "event_sequence": COUNT},
        references={"row_id_hash": (LOOKUP, "row_id_hash")}))
    return products


def _event_dates(contracts: list[Contract]) -> Declared:
    """The journey's dates: within the widest range the tables' event dates declare (no limit on
    a side where one of them declares none)."""
    columns = [t.spec.columns[t.spec.event_date] for t in event_tables(contracts) if t.reached]
    lows, highs = [c.min for c in columns], [c.max for c in columns]
    low = min(lows) if lows and None not in lows else None
    high = max(highs) if highs and None not in highs else None
    return dates(low, high)

