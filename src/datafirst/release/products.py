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
from ..sources.contract import Contract
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


def content_product(contract: Contract, table: str, content: str, links: str | None, columns: list[str]) -> Product:
    spec = contract.tables[table]
    # The links relation holds each record's row_id_hash already (hashed once per release).
    select = ["coalesce(l.row_id_hash, keyed_hash(t.record_key)) AS row_id_hash" if links is not None
              else "keyed_hash(t.record_key) AS row_id_hash"]
    meaning = {"row_id_hash": "keyed hash of the record's id" + ("; joins to person_link_lookup" if links is not None
                                                                  else "")}
    declared = {"row_id_hash": HASHED_ID}
    withheld, suppressing = {}, []
    if links is not None:
        select.append(_person_ids("l"))
        meaning.update(PERSON_ID_COLUMNS)
        declared.update(PERSON_ID_DECLARED)
    for col in columns:
        cspec = spec.columns.get(col)
        # Reduced quasi-identifiers added at standardisation (a source column with a role may share
        # the name, as `sex` does: it is the identifier, which content never holds)
        if col in REDUCED_DECLARED and (cspec is None or cspec.role is not None):
            select.append(f"t.{_q(col)}")
            meaning[col] = {"year_of_birth": "year of birth (the full date is not released)",
                            "sex": "sex as recorded, cleaned to M or F (empty when unknown)",
                            "postcode_district": "postcode district (outward code) at the time of the record; "
                                                 "the full postcode is not released"}[col]
            declared[col] = REDUCED_DECLARED[col]
            continue
        if cspec is None:  # added by standardisation and declared nowhere: the release refuses it, by name
            select.append(f"t.{_q(col)}")
            continue
        decl = contract_column(contract, cspec)
        if isinstance(decl, str):
            withheld[col] = decl
        elif cspec.native_id:
            select.append(f"keyed_hash(t.{_q(col)}) AS {_q(col + '_hash')}")
            meaning[col + "_hash"] = f"keyed hash of {col} (the source system's id)" + (
                f": {cspec.description}" if cspec.description else "")
            declared[col + "_hash"] = decl
        else:
            select.append(f"{suppressed_sql(f't.{_q(col)}', decl)} AS {_q(col)}")
            meaning[col] = cspec.description or f"{col} as recorded by {contract.source}"
            declared[col] = decl
            suppressing.append(col)
    # The links of this table's records only (keys are `source|table|id`): each person table's join
    # then holds its own records' links, not every record's.
    prefix = sql_string(f"{contract.source}|{table}|")
    join = (f"LEFT JOIN (SELECT * FROM {links} WHERE starts_with(record_key, {prefix})) l ON l.record_key = t.record_key"
            if links is not None else "")
    # In keyed-hash order: in the extract's order, someone holding the extract could match the
    # released rows to its lines by position.
    sql = f"SELECT {', '.join(select)} FROM {content} t {join} ORDER BY row_id_hash"
    return Product(contract.table_key(table), sql, spec.unit or "one row per source record",
                   spec.description or f"{contract.source} {table}: {contract.description}", ["row_id_hash"], meaning,
                   source=contract.source, table=table, needs_person_ids=links is not None, declared=declared,
                   withheld=withheld, suppressing=suppressing,
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


def _most_common(column: str) -> str:
    """A CTE `most_common_<column>`: each person's most common non-missing value of a column of
    `recorded`, ties going to the first in order, so that every engine and run agrees."""
    return f"""most_common_{column} AS (
            SELECT person_id_medium, {column} FROM (
                SELECT person_id_medium, {column},
                       row_number() OVER (PARTITION BY person_id_medium ORDER BY count(*) DESC, {column}) AS rank
                FROM recorded WHERE {column} IS NOT NULL GROUP BY person_id_medium, {column})
            WHERE rank = 1)"""


PERSON_RECORDS = "release_person_records"  # made by the stage from person_records_sql, for both person products


def person_records_sql(ws: Workspace, contracts: list[Contract], links: str) -> str:
    """Every linked record with its person, reduced demographics and event (when its table has
    one): what the person table and the person journey table are both built from, joined once.
    Only person tables' records are linked (and carry the reduced sex and year of birth)."""
    tables = []
    for contract in contracts:
        for name, spec in contract.tables.items():
            if spec.is_person_table:
                path = ws.zone("content") / f"{contract.table_key(name)}.parquet"
                # An event date outside its declaration is emptied here as in the table's own product.
                event = "NULL::DATE" if not spec.event_date else suppressed_sql(
                    f"c.{_q(spec.event_date)}", contract_column(contract, spec.columns[spec.event_date]))
                tables.append(f"""SELECT c.record_key, c.sex, c.year_of_birth, {event} AS event_date,
                    {sql_string(spec.event_type or name)} AS event_type, {sql_string(contract.source)} AS source_dataset,
                    {sql_string(name)} AS source_table, {'true' if spec.event_date else 'false'} AS has_event
                    FROM read_parquet({sql_string(str(path))}) c""")
    union = " UNION ALL ".join(tables) if tables else \
        "SELECT NULL::VARCHAR AS record_key, NULL::VARCHAR AS sex, NULL::BIGINT AS year_of_birth, " \
        "NULL::DATE AS event_date, NULL::VARCHAR AS event_type, NULL::VARCHAR AS source_dataset, " \
        "NULL::VARCHAR AS source_table, false AS has_event WHERE false"
    return f"""SELECT l.person_id_medium, l.row_id_hash, l.source, r.sex, r.year_of_birth, r.event_date, r.event_type,
                      r.source_dataset, r.source_table, coalesce(r.has_event, false) AS has_event
               FROM {links} l LEFT JOIN ({union}) r USING (record_key)"""


def person_products(contracts: list[Contract], records: str = PERSON_RECORDS) -> list[Product]:
    """The person table and the person journey table (analytics-ready), from `person_records_sql`;
    the journey's events are those of the person tables that name an `event_date`."""
    events = [f"{spec.event_type or name} ({contract.source})" for contract in contracts
              for name, spec in contract.tables.items() if spec.is_person_table and spec.event_date]
    event_dates = _event_dates(contracts)
    journey_sql = f"""
        SELECT person_id_medium, event_date, event_type, source_dataset, source_table, row_id_hash,
               row_number() OVER (PARTITION BY person_id_medium ORDER BY event_date, row_id_hash) AS event_sequence
        FROM {records} WHERE has_event
        ORDER BY person_id_medium, event_sequence"""
    person_sql = f"""
        WITH recorded AS (SELECT person_id_medium, sex, year_of_birth FROM {records}),
        {_most_common("sex")},
        {_most_common("year_of_birth")},
        demo AS (SELECT person_id_medium, s.sex, y.year_of_birth
                 FROM most_common_sex s FULL JOIN most_common_year_of_birth y USING (person_id_medium))
        SELECT r.person_id_medium,
               list_sort(list_distinct(list(r.source))) AS sources, count(*) AS records,
               any_value(d.sex) AS sex, any_value(d.year_of_birth) AS year_of_birth,
               min(r.event_date) FILTER (WHERE r.has_event) AS first_event,
               max(r.event_date) FILTER (WHERE r.has_event) AS last_event
        FROM {records} r LEFT JOIN demo d USING (person_id_medium)
        GROUP BY r.person_id_medium ORDER BY 1"""
    return [
        Product("person", person_sql, "one row per person (medium threshold)", (
            "Analytics-ready summary of each estimated person: which sources hold them, how many records, their "
            "first and last event, and reduced demographics."), ["person_id_medium"], {
            "person_id_medium": PERSON_ID_COLUMNS["person_id_medium"],
            "sources": "the source systems holding records of the person",
            "records": "number of source records",
            "sex": "most common recorded sex (M or F) across the records (on a tie, the first in order)",
            "year_of_birth": "most common recorded year of birth (on a tie, the earliest)",
            "first_event": "date of the earliest event in the person journey",
            "last_event": "date of the latest event in the person journey",
        }, declared={"person_id_medium": HASHED_ID, "sources": code([c.source for c in contracts]), "records": COUNT,
                     "sex": REDUCED_DECLARED["sex"], "year_of_birth": REDUCED_DECLARED["year_of_birth"],
                     "first_event": event_dates, "last_event": event_dates}),
        Product("person_journey", journey_sql, "one row per person per event, in time order", (
            "Every dated event of every person across the sources, in order: "
            + (", ".join(events) if events else "none (no person table names an event_date)") + "."),
            ["person_id_medium", "event_sequence"], {
            "person_id_medium": PERSON_ID_COLUMNS["person_id_medium"],
            "event_date": "date of the event", "event_type": "what happened",
            "source_dataset": "source system of the event", "source_table": "table of that source",
            "row_id_hash": "hashed row id of the event's record (joins to that source's table)",
            "event_sequence": "position of the event in the person's journey (1 = first)",
        }, declared={"person_id_medium": HASHED_ID, "event_date": event_dates,
                     "event_type": code([spec.event_type or name for c in contracts
                                         for name, spec in c.tables.items() if spec.is_person_table]),
                     "source_dataset": code([c.source for c in contracts]),
                     "source_table": code([t for c in contracts for t, spec in c.tables.items()
                                           if spec.is_person_table]),
                     "row_id_hash": HASHED_ID, "event_sequence": COUNT},
            references={"row_id_hash": (LOOKUP, "row_id_hash")}),
    ]


def _event_dates(contracts: list[Contract]) -> Declared:
    """The journey's dates: within the widest range the person tables' event dates declare
    (no limit on a side where one of them declares none)."""
    columns = [spec.columns[spec.event_date] for c in contracts for spec in c.tables.values()
               if spec.is_person_table and spec.event_date]
    lows, highs = [c.min for c in columns], [c.max for c in columns]
    low = min(lows) if lows and None not in lows else None
    high = max(highs) if highs and None not in highs else None
    return dates(low, high)

