"""SQL text helpers shared by every engine (the stages write DuckDB-dialect SQL)."""

from __future__ import annotations

from pathlib import Path


def sql_string(value: str | Path) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"
