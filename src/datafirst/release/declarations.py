"""What a release publishes of the workspace's declarations for checking data like it: the
contracts' constraints as `constraints.json` (over the release's own column names: a native id is
its keyed hash, `<name>_hash`) and the research queries as `research_queries.json`. Each is tried
on the release's tables before it is published (a check or query that does not run there is an
error now, not in a researcher's hands later); neither holds a count of the data."""

from __future__ import annotations

import json
from pathlib import Path

from ..engine import Engine
from ..sources.contract import Contract
from ..sources.declared_sql import parse_check, rewrite_check
from ..sources.research_queries import QUERIES_FILE, ResearchQueryError, load_research_queries
from ..synth.constraints import CONSTRAINTS_FILE, count_sql
from ..synth.queries import QUERIES_FILE as RELEASED_QUERIES_FILE
from ..synth.queries import QueryError, query_sql, result_columns
from .chain import ReleaseError
from .products import Product


def constraints_document(contracts: list[Contract], products: list[Product]) -> dict:
    """Every contract's constraints, in release terms: table and column names as the release has
    them. A constraint over a column the release withholds (for want of a declaration) cannot be
    checked on it: it is listed under `not_checked` with the reason, and the release goes ahead."""
    by_name = {p.name: p for p in products}
    checked, not_checked = [], []
    for contract in contracts:
        for table, spec in contract.tables.items():
            for constraint in spec.constraints:
                join = constraint.join
                aliases = {None: table, table: table, **({join.table: join.table} if join else {})}
                uses = [(aliases[q], c) for q, c in constraint.columns()]
                if join is not None:
                    uses += [(table, c) for c in join.keys] + [(join.table, c) for c in join.keys.values()]
                withheld = [f"{t}.{c} ({by_name[contract.table_key(t)].withheld[c]})" for t, c in dict.fromkeys(uses)
                            if c in by_name[contract.table_key(t)].withheld]
                entry = {"name": constraint.name, "description": constraint.description,
                         "table": contract.table_key(table)}
                if withheld:
                    not_checked.append({**entry, "reason": f"the release withholds {'; '.join(withheld)}"})
                    continue
                named = {(q, c): (aliases[q], contract.tables[aliases[q]].release_columns()[c])
                         for q, c in constraint.columns()}
                entry.update(alias=table, check=rewrite_check(parse_check(constraint.check), named))
                if join is not None:
                    mine, theirs = spec.release_columns(), contract.tables[join.table].release_columns()
                    entry["join"] = {"table": contract.table_key(join.table), "alias": join.table,
                                     "keys": {mine[a]: theirs[b] for a, b in join.keys.items()}}
                checked.append(entry)
    return {"constraints": checked, "not_checked": not_checked}


def queries_document(contracts_folder: Path, products: list[Product]) -> dict:
    """The workspace's research queries, each refused if it reads a table the release does not hold."""
    try:
        queries = load_research_queries(contracts_folder)
    except ResearchQueryError as exc:
        raise ReleaseError(str(exc)) from exc
    names = {p.name for p in products}
    for query in queries:
        unknown = [t for t in query.tables if t not in names]
        if unknown:
            raise ReleaseError(f"research query {query.name!r} in {contracts_folder / QUERIES_FILE} reads "
                               f"{', '.join(unknown)}, which this release does not hold: name release tables "
                               "(source__table, person, person_journey, ...) or remove the query")
    return {"queries": [q.model_dump() for q in queries]}


def write(root: Path, engine: Engine, contracts: list[Contract], products: list[Product], tables: dict[str, Path],
          contracts_folder: Path) -> None:
    """Write both documents into the release folder `root`, once each check and query has run
    (without reading any rows) on the release's `tables`."""
    constraints = constraints_document(contracts, products)
    queries = queries_document(contracts_folder, products)
    for constraint in constraints["constraints"]:
        try:
            engine.columns(f"({count_sql(engine, tables, constraint)})")
        except Exception as exc:  # the engine's own error (DuckDB or Spark) says what does not bind
            raise ReleaseError(f"constraint {constraint['name']!r} of {constraint['table']} does not run on the "
                               f"release: {_first_line(exc)}; correct its check in the contract") from exc
    for query in queries["queries"]:
        try:
            result_columns(engine, query_sql(engine, tables, query), query)
        except QueryError as exc:
            raise ReleaseError(f"{exc} ({contracts_folder / QUERIES_FILE})") from exc
        except Exception as exc:
            raise ReleaseError(f"research query {query['name']!r} in {contracts_folder / QUERIES_FILE} does not run "
                               f"on the release: {_first_line(exc)}") from exc
    (root / CONSTRAINTS_FILE).write_text(json.dumps(constraints, indent=2), encoding="utf-8")
    (root / RELEASED_QUERIES_FILE).write_text(json.dumps(queries, indent=2), encoding="utf-8")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
