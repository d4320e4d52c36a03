"""The release's derived tables, made again from the records of a project's approved sources only.

The release's person tables summarise every source (`person.sources` lists each source holding a
person, `records` counts their records, first and last event span all of them), the person
journey holds every source's events and `person_link_lookup` every linked record. Delivered as
released they would tell a project about sources it was not approved for. So a package rebuilds
them, with the release's own SQL (`products.person_products`), from the release's tables of the
approved sources: the linked records of those sources (in `person_link_lookup`), the events of
their tables that name an `event_date` (reached through their person tables as in the release,
`products.event_tables`), and the reduced demographics of their person tables. A person with no
record in an approved source is in no person table of the package.

A source is approved when one of its tables (`<source>__<table>`) is.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string
from ..release.products import LOOKUP, PERSON_TABLES, event_tables, person_products
from ..sources.contract import Contract
from .treatments import q

JOURNEY = "person_journey"
DERIVED = (*PERSON_TABLES.values(), JOURNEY, LOOKUP)
EVENTS = "delivery_person_events"
RECORDS = "delivery_person_records"


class DerivedError(Exception):
    """A derived table that cannot be made again from the release for this project."""


def approved_sources(tables: list[str], sources: list[str]) -> list[str]:
    """The sources (of `sources`, the release's) one of whose tables is among `tables`."""
    return sorted({t.split("__", 1)[0] for t in tables if "__" in t} & set(sources))


def _release_table(release_dir: Path, name: str, columns: set[str], needed: list[str]) -> str:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DerivedError(f"the release's {name} has no column {', '.join(missing)}, which the workspace's contracts "
                           "name for the person tables and journey: the contracts changed since the release was made; "
                           "deliver from a release made with them")
    return f"read_parquet({sql_string(release_dir / 'tables' / f'{name}.parquet')})"


def build_inputs(engine: Engine, release_dir: Path, release_columns: dict[str, set[str]],
                 contracts: list[Contract], sources: list[str]) -> None:
    """Make EVENTS and RECORDS (as `products.person_inputs_sql` makes the release's, with each
    record's row_id_hash in place of its record key) from the release's tables of `sources`."""
    approved = set(sources)
    lookup = _release_table(release_dir, LOOKUP, release_columns[LOOKUP], ["row_id_hash", "source_dataset"])
    listed = ", ".join(sql_string(s) for s in sorted(approved)) or "NULL"
    events = []
    for ev in event_tables(contracts):
        contract, spec = ev.contract, ev.spec
        if contract.source not in approved:
            continue
        name = contract.table_key(ev.name)
        fields = (f"e.{q(spec.event_date)} AS event_date, {sql_string(ev.event_type)} AS event_type, "
                  f"{sql_string(contract.source)} AS source_dataset, {sql_string(ev.name)} AS source_table")
        table = _release_table(release_dir, name, release_columns.get(name, set()), ["row_id_hash", spec.event_date])
        if spec.is_person_table:
            events.append(f"SELECT e.row_id_hash AS record_row, e.row_id_hash, true AS own, {fields} FROM {table} e")
        for person_table, ids in ev.via.items():
            pname = contract.table_key(person_table)
            hashed = [f"{c}_hash" for c in ids]  # a native id is released as its keyed hash
            person = _release_table(release_dir, pname, release_columns.get(pname, set()), ["row_id_hash", *hashed])
            _release_table(release_dir, name, release_columns.get(name, set()), hashed)
            on = " AND ".join(f"p.{q(c)} = e.{q(c)}" for c in hashed)
            events.append(f"SELECT p.row_id_hash AS record_row, e.row_id_hash, false AS own, {fields} "
                          f"FROM {table} e JOIN {person} p ON {on}")
    union = " UNION ALL ".join(events) if events else (
        "SELECT NULL::VARCHAR AS record_row, NULL::VARCHAR AS row_id_hash, false AS own, NULL::DATE AS event_date, "
        "NULL::VARCHAR AS event_type, NULL::VARCHAR AS source_dataset, NULL::VARCHAR AS source_table WHERE false")
    engine.execute(f"""CREATE OR REPLACE TABLE {EVENTS} AS
        SELECT l.person_id_medium, e.event_date, e.event_type, e.source_dataset, e.source_table, e.row_id_hash, e.own,
               e.record_row
        FROM ({union}) e JOIN {lookup} l ON l.row_id_hash = e.record_row""")
    demographics = []
    for contract in contracts:
        if contract.source not in approved:
            continue
        for tname, spec in contract.tables.items():
            if spec.is_person_table:
                name = contract.table_key(tname)
                table = _release_table(release_dir, name, release_columns.get(name, set()),
                                       ["row_id_hash", "sex", "year_of_birth"])
                demographics.append(f"SELECT row_id_hash, sex, year_of_birth FROM {table}")
    people = " UNION ALL ".join(demographics) if demographics else (
        "SELECT NULL::VARCHAR AS row_id_hash, NULL::VARCHAR AS sex, NULL::BIGINT AS year_of_birth WHERE false")
    engine.execute(f"""CREATE OR REPLACE TABLE {RECORDS} AS
        SELECT l.person_id_high, l.person_id_medium, l.person_id_low, l.row_id_hash, l.source_dataset AS source,
               r.sex, r.year_of_birth, d.first_event, d.last_event
        FROM (SELECT * FROM {lookup} WHERE source_dataset IN ({listed})) l
        LEFT JOIN ({people}) r ON r.row_id_hash = l.row_id_hash
        LEFT JOIN (SELECT record_row, min(event_date) AS first_event, max(event_date) AS last_event
                   FROM {EVENTS} GROUP BY record_row) d ON d.record_row = l.row_id_hash""")


def drop_inputs(engine: Engine) -> None:
    for table in (EVENTS, RECORDS):
        engine.execute(f"DROP TABLE IF EXISTS {table}")


def derived_sql(contracts: list[Contract], release_dir: Path, sources: list[str],
                lookup_columns: list[str]) -> dict[str, str]:
    """Each derived table's SQL over EVENTS and RECORDS (made by `build_inputs`), with the columns
    the release gives it; the lookup's cluster sizes and flag counted over the approved records."""
    made = {p.name: p.sql for p in person_products(contracts, records=RECORDS, events=EVENTS)}
    lookup = f"read_parquet({sql_string(release_dir / 'tables' / f'{LOOKUP}.parquet')})"
    listed = ", ".join(sql_string(s) for s in sources) or "NULL"
    sizes = {f"cluster_size_{t}": f"count(*) OVER (PARTITION BY person_id_{t})" for t in ("high", "medium", "low")}
    counted = {**sizes, "person_changes_between_thresholds":
               f"{sizes['cluster_size_high']} <> {sizes['cluster_size_low']}"}
    select = ", ".join(f"{counted[c]} AS {q(c)}" if c in counted else q(c) for c in lookup_columns)
    made[LOOKUP] = f"SELECT {select} FROM {lookup} WHERE source_dataset IN ({listed}) ORDER BY row_id_hash"
    return {name: made[name] for name in DERIVED}
