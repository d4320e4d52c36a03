"""The one place that knows which database runs the SQL: DuckDB by default, Spark when the
data outgrows one machine. Stages write DuckDB-dialect SQL; `SparkEngine` translates it."""

from __future__ import annotations

from .duckdb_engine import Engine
from .sql import sql_string

ENGINES = ("duckdb", "spark")


def open_engine(ws):
    """The engine for a workspace: the one chosen for this session, else the config's."""
    config = ws.config()
    name = ws.engine_override or config.engine
    if name == "duckdb":
        return Engine(threads=config.threads, memory_limit=config.memory_limit, temp_directory=ws.scratch)
    if name == "spark":
        try:
            from .spark_engine import SparkEngine
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise RuntimeError("engine 'spark' needs PySpark and Java 17: pip install 'datafirst[spark]'") from exc
        return SparkEngine(config.spark.master, threads=config.threads, memory_limit=config.memory_limit,
                           temp_directory=ws.scratch, conf=config.spark.conf)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "open_engine", "sql_string"]
