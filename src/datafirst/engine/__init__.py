"""The one place that knows which database runs the SQL (DuckDB by default)."""

from .duckdb_engine import Engine

__all__ = ["Engine"]
