"""A release's declared constraints (`constraints.json`), counted in the engine on the release
itself or on a synthetic twin of it: the same rules, the same SQL, any tables of those names.

Each constraint is one table's rule over its columns (and, with `join`, the one row of another
table of its source that each row joins by that table's key). A row breaks the rule when its
`check` is false; true or unknown (NULL) keeps it, as SQL's CHECK does.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlglot import exp

from ..engine import Engine
from ..sources.declared_sql import DIALECT

CONSTRAINTS_FILE = "constraints.json"


class ConstraintError(Exception):
    """A constraint that cannot be checked on the tables given; the message names it."""


def load_constraints(release_dir: Path) -> list[dict]:
    """The constraints a release declares (none for a release made before releases held them)."""
    path = Path(release_dir) / CONSTRAINTS_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["constraints"]


def _relation(engine: Engine, tables: dict[str, Path], name: str, constraint: dict) -> str:
    if name not in tables:
        raise ConstraintError(f"constraint {constraint['name']!r} reads table {name}: not among the tables given "
                              f"({', '.join(sorted(tables)) or 'none'})")
    return engine.parquet(Path(tables[name]))


def _name(identifier: str) -> str:
    """An alias or column as the check writes it (quoted where SQL needs it)."""
    return exp.to_identifier(identifier).sql(dialect=DIALECT)


def count_sql(engine: Engine, tables: dict[str, Path], constraint: dict) -> str:
    """One row: the rows the constraint checked and the rows that break it."""
    alias = _name(constraint["alias"])
    source = f"{_relation(engine, tables, constraint['table'], constraint)} AS {alias}"
    join = constraint.get("join")
    if join:
        other = _name(join["alias"])
        on = " AND ".join(f"{alias}.{_name(mine)} = {other}.{_name(theirs)}" for mine, theirs in join["keys"].items())
        source += f" LEFT JOIN {_relation(engine, tables, join['table'], constraint)} AS {other} ON {on}"
    return (f"SELECT count(*) AS rows_checked, coalesce(sum(CASE WHEN NOT ({constraint['check']}) THEN 1 ELSE 0 END), "
            f"0) AS violations FROM {source}")


def check(engine: Engine, tables: dict[str, Path], constraints: list[dict]) -> list[dict]:
    """Each constraint's name, table, rows checked and violations, in the order given. `tables`
    maps release table names to Parquet files (a release's tables, or a twin's)."""
    results = []
    for constraint in constraints:
        rows_checked, violations = engine.execute(count_sql(engine, tables, constraint))[0]
        results.append({"name": constraint["name"], "table": constraint["table"],
                        "rows_checked": int(rows_checked), "violations": int(violations)})
    return results
