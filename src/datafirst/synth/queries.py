"""A release's research queries (`research_queries.json`), run in the engine on the release
itself or on a synthetic twin of it, so the two can be compared figure by figure.

Each query names release tables; here each name reads the Parquet file `tables` gives for it, so
the same call answers on a release and on its twin. A query returns one row per cell: its group
columns, then `n` (what the figure is computed from) and `value`.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from sqlglot import exp

from ..engine import Engine
from ..sources.declared_sql import DIALECT, parse_query, query_tables
from ..sources.research_queries import RESULT_COLUMNS

QUERIES_FILE = "research_queries.json"


class QueryError(Exception):
    """A research query that cannot run on the tables given; the message names the query."""


def load_queries(release_dir: Path) -> list[dict]:
    """The research queries a release declares (none for a release made before releases held them)."""
    path = Path(release_dir) / QUERIES_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["queries"]


def query_sql(engine: Engine, tables: dict[str, Path], query: dict) -> str:
    """The query's SQL with each release table it names read from its Parquet file in `tables`."""
    tree = parse_query(query["sql"])
    missing = [t for t in query_tables(tree) if t not in tables]
    if missing:
        raise QueryError(f"research query {query['name']!r} reads {', '.join(missing)}: not among the tables "
                         f"given ({', '.join(sorted(tables)) or 'none'})")
    # Each table as a WITH clause around the query (which may have WITH clauses of its own).
    reads = ", ".join(f"{exp.to_identifier(t).sql(dialect=DIALECT)} AS (SELECT * FROM "
                      f"{engine.parquet(Path(tables[t]))})" for t in query_tables(tree))
    return f"WITH {reads} SELECT * FROM ({tree.sql(dialect=DIALECT)}) AS query" if reads else tree.sql(dialect=DIALECT)


def result_columns(engine: Engine, sql: str, query: dict) -> list[str]:
    """The query's columns, refused unless they end with `n` and `value`."""
    columns = engine.columns(f"({sql})")
    if tuple(columns[-2:]) != RESULT_COLUMNS:
        raise QueryError(f"research query {query['name']!r} returns {', '.join(columns)}: its last two columns must "
                         "be `n` (what the figure is computed from) and `value` (the figure), after its groups")
    return columns


def _plain(value: object) -> object:
    """A value as JSON holds it (dates as ISO text, decimals as floats)."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def run_queries(engine: Engine, tables: dict[str, Path], queries: list[dict]) -> dict[str, list[dict]]:
    """Each query's rows by its name, each row {column: value}, in the order of its group columns.
    `tables` maps release table names to Parquet files (a release's tables, or a twin's)."""
    results: dict[str, list[dict]] = {}
    for query in queries:
        sql = query_sql(engine, tables, query)
        columns = result_columns(engine, sql, query)
        rows = [dict(zip(columns, map(_plain, row))) for row in engine.execute(sql)]
        groups = columns[:-2]
        rows.sort(key=lambda r: [(r[g] is None, str(r[g])) for g in groups])
        results[query["name"]] = rows
    return results
