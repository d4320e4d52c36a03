"""SQL written in a declaration (a contract's constraint checks, a workspace's research queries),
parsed with sqlglot and held to what such a declaration may say.

A constraint's `check` is a condition over one row: column names, literals, comparisons, BETWEEN,
IN (...), IS [NOT] NULL, AND, OR, NOT and CASE. Nothing else: no function, no arithmetic,
no subquery, no second statement, so a check cannot read another table or run anything, and the
same text runs on DuckDB and on Spark. A research query is one SELECT (with WITH, joins and
aggregates), never a statement that writes.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

DIALECT = "duckdb"  # the project's SQL dialect; the Spark engine translates it
CHECK_GRAMMAR = ("column names, literals, comparisons (= <> < <= > >=), BETWEEN, IN (...), IS [NOT] NULL, AND, OR, "
                 "NOT, and CASE WHEN ... THEN ... ELSE ... END")
_CHECK_NODES = (exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.And, exp.Or,
                exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Is, exp.Between,
                exp.Case, exp.If, exp.Neg, exp.Tuple)
# What a check's outermost expression may be: something true or false.
_CONDITIONS = (exp.Column, exp.Paren, exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
               exp.In, exp.Is, exp.Between, exp.Case, exp.Boolean)


_FILE_READER = re.compile(r"^(read_|glob$|parquet_|sniff_)", re.IGNORECASE)


class DeclaredSqlError(ValueError):
    """SQL in a declaration that is not allowed there; the message says what to write instead."""


def _one(text: str, what: str) -> exp.Expression:
    try:
        parsed = [e for e in sqlglot.parse(text, read=DIALECT) if e is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise DeclaredSqlError(f"{what} is not valid SQL ({str(exc).splitlines()[0]})") from exc
    if len(parsed) != 1:
        raise DeclaredSqlError(f"{what} must be one SQL expression, got {len(parsed)} statements")
    return parsed[0]


def parse_check(text: str) -> exp.Expression:
    """A constraint's check, refused unless it is a condition in the safe subset."""
    tree = _one(text, "the check")
    for node in tree.walk():
        if not isinstance(node, _CHECK_NODES):
            shown = node.sql(dialect=DIALECT)
            raise DeclaredSqlError(f"the check uses `{shown[:60]}` ({type(node).__name__}), which a check may not: "
                                   f"write it with {CHECK_GRAMMAR}")
        if isinstance(node, exp.Column) and (node.args.get("db") or node.args.get("catalog")):
            raise DeclaredSqlError(f"`{node.sql(dialect=DIALECT)}`: name a column as `column` or `table.column`")
    if not isinstance(tree, _CONDITIONS):
        raise DeclaredSqlError(f"the check `{text}` is not a condition: it must be true or false for a row "
                               "(a comparison, IN, IS NULL, ... joined by AND, OR, NOT)")
    return tree


def check_columns(tree: exp.Expression) -> list[tuple[str | None, str]]:
    """Each column the check names, as (table qualifier or None, column), in order, once."""
    return list(dict.fromkeys((c.table or None, c.name) for c in tree.find_all(exp.Column)))


def rewrite_check(tree: exp.Expression, rename: dict[tuple[str | None, str], tuple[str, str]]) -> str:
    """The check's SQL with each (qualifier, column) replaced by its (alias, column) in `rename`."""
    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            alias, column = rename[(node.table or None, node.name)]
            return exp.column(column, table=alias)
        return node
    return tree.copy().transform(swap).sql(dialect=DIALECT)


def parse_query(text: str) -> exp.Query:
    """A research query: one SELECT (a WITH, a UNION), refused if it would write or set anything."""
    tree = _one(text, "the query")
    if not isinstance(tree, exp.Query):
        raise DeclaredSqlError(f"the query must be a SELECT, got {type(tree).__name__.upper()}")
    for node in tree.walk():
        if isinstance(node, (exp.DDL, exp.DML, exp.Command, exp.Set, exp.Pragma, exp.Into)):
            raise DeclaredSqlError(f"the query may only read: `{node.sql(dialect=DIALECT)[:60]}` is not allowed")
        # Release tables by name only: a query never reads a file (it runs on a twin and on the
        # release alike, and travels with the release).
        if isinstance(node, (exp.ReadCSV, exp.ReadParquet)) or (
                isinstance(node, exp.Func) and _FILE_READER.match(node.name or node.sql_name())):
            raise DeclaredSqlError(f"the query reads a file (`{node.sql(dialect=DIALECT)[:60]}`): name release "
                                   "tables instead (magistrates__defendants, person, ...)")
    return tree


def query_tables(tree: exp.Query) -> list[str]:
    """The tables a query reads (not the names of its own WITH clauses), in order, once."""
    own = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return list(dict.fromkeys(t.name for t in tree.find_all(exp.Table) if t.name not in own))
