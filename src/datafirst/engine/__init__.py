"""The one place that knows which database runs the SQL: DuckDB by default, Spark when the
data outgrows one machine. Stages write DuckDB-dialect SQL; `SparkEngine` translates it."""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from .duckdb_engine import Engine
from .sql import sql_string

ENGINES = ("duckdb", "spark")


# With `database: auto`, past this many identifier records the DuckDB engine keeps its working
# tables in a file (see Engine): the link's candidate pairs and edges at 10M records are larger
# than a laptop's memory.
DISK_ABOVE_RECORDS = 2_000_000


def _identifier_rows(ws) -> int:
    """Records in the identifiers zone, from the Parquet footers (no data read)."""
    return sum(pq.read_metadata(p).num_rows for p in ws.zone("identifiers").glob("*.parquet"))


def open_engine(ws):
    """The engine for a workspace: the one chosen for this session, else the config's."""
    config = ws.config()
    name = ws.engine_override or config.engine
    if name == "duckdb":
        on_disk = config.database == "disk" or (config.database == "auto" and _identifier_rows(ws) > DISK_ABOVE_RECORDS)
        return Engine(threads=config.threads, memory_limit=config.memory_limit, temp_directory=ws.scratch,
                      database=ws.scratch / f"engine-{os.getpid()}.duckdb" if on_disk else None)
    if name == "spark":
        try:
            from .spark_engine import SparkEngine
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise RuntimeError("engine 'spark' needs PySpark and Java 17: pip install 'datafirst[spark]'") from exc
        return SparkEngine(config.spark.master, threads=config.threads, memory_limit=config.memory_limit,
                           temp_directory=ws.scratch, conf=config.spark.conf)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "open_engine", "sql_string"]
