"""Spark as the engine, for data that outgrows one machine.

The stages' SQL (DuckDB dialect) is translated by `spark_sql` and run with `spark.sql`. The
statements Spark has no equivalent of are carried out here with DataFrames:

- `CREATE [TEMP] TABLE x AS query` materialises the query (a local checkpoint, which also
  cuts the lineage that long pipelines otherwise build up) and names it as a temp view;
- `CREATE TEMP TABLE x (columns)` is an empty view with that schema, and `INSERT INTO x query`
  replaces it with the union;
- `read_parquet(...)` becomes a view over `spark.read.parquet`;
- `CREATE MACRO` is expanded inline wherever the macro is called;
- `SET VARIABLE v = ?` puts the value in the one row of a temp view that `getvariable('v')`
  reads (see `_set_variable`): not a Spark session variable, whose value Spark writes into its
  plans, errors and UI. The release's hashing key is passed this way.

Files are written as single Parquet files (see `to_parquet`) so that a workspace, its zones and
its releases have the same layout, checksums and readers whichever engine wrote them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from .spark_sql import SparkTranslator, TranslationError, model_for_dialect, variable_view
from ..workspace import memory_mb
from .sql import sql_string

# The settings that make Spark give DuckDB's answers: UTC for dates and times, and NULL
# (not an error) from a failed cast, as DuckDB's TRY_CAST and try_strptime give.
ANSWER_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # DuckDB's json_valid accepts a repeated key; Spark's JSON parser must too.
    "spark.sql.variant.allowDuplicateKeys": "true",
}


def _to_python(value: Any) -> Any:
    from pyspark.sql import Row

    if isinstance(value, Row):
        return {k: _to_python(v) for k, v in value.asDict(recursive=False).items()}
    if isinstance(value, list):
        return [_to_python(v) for v in value]
    return value


class SparkEngine:
    name = "spark"
    dialect = "spark"

    def __init__(self, master: str | None = None, *, threads: int | None = None, memory_limit: str | None = None,
                 temp_directory: Path | None = None, conf: dict[str, str] | None = None):
        from pyspark.sql import SparkSession
        from splink.backends.spark import similarity_jar_location

        master = master or os.environ.get("DATAFIRST_SPARK_MASTER") or f"local[{threads or os.cpu_count() or 1}]"
        builder = SparkSession.builder.master(master).appName("datafirst")
        settings = {
            "spark.jars": similarity_jar_location(),
            "spark.ui.enabled": "false" if master.startswith("local") else "true",
            "spark.ui.showConsoleProgress": "false",  # datafirst shows its own progress
            # Local mode: few partitions; a cluster's own default suits it better.
            **({"spark.sql.shuffle.partitions": str(max(4, 2 * (threads or os.cpu_count() or 1))),
                "spark.default.parallelism": str(max(4, 2 * (threads or os.cpu_count() or 1)))}
               if master.startswith("local") else {}),
            **ANSWER_SETTINGS,
        }
        if master.startswith("local"):
            # Local mode runs everything in the driver's JVM, whose default heap (1 GB) cannot
            # even broadcast a 1M-record world's join sides: default to 3/4 of the machine's
            # memory, as DuckDB defaults to most of it.
            settings["spark.driver.memory"] = f"{memory_mb(memory_limit) if memory_limit else _machine_memory_mb() * 3 // 4}m"
        # Absolute (see `_for_spark`); and Spark's warehouse there, not in the working folder.
        self.scratch = Path(temp_directory or Path.cwd() / ".spark-scratch").absolute()
        settings["spark.sql.warehouse.dir"] = str(self.scratch / "warehouse")
        if master.startswith("local"):
            settings["spark.local.dir"] = str(self.scratch / "local")
        elif _on_loopback(master):
            # A master on this machine's loopback (datafirst.engine.spark_cluster's) has its
            # executors here too: they reach the driver there, not at the host name, which may
            # resolve to an address nothing listens on.
            settings["spark.driver.host"] = settings["spark.driver.bindAddress"] = "127.0.0.1"
        settings.update(conf or {})
        for key, value in settings.items():
            builder = builder.config(key, value)
        self.spark = builder.getOrCreate()
        for key, value in ANSWER_SETTINGS.items():  # an existing session keeps its settings otherwise
            self.spark.conf.set(key, value)
        self.spark.sparkContext.setLogLevel("ERROR")
        if (master.startswith("local") or _on_loopback(master)) and not os.environ.get("PYSPARK_PYTHON"):
            # Executors run some Python (they unpickle the rows of a list given to createDataFrame,
            # as a variable's row is) with PySpark's `python3` from the path unless told: another
            # Python, perhaps without this one's version. Executors on this machine run this one.
            self.spark.sparkContext.pythonExec = sys.executable
        checkpoints = _for_spark(os.environ.get("DATAFIRST_SPARK_CHECKPOINT_DIR") or str(self.scratch / "checkpoints"))
        self.spark.sparkContext.setCheckpointDir(checkpoints)
        self.translator = SparkTranslator(self._parquet_view)
        self._tables: dict[str, Any] = {}
        self._parquet_views: set[str] = set()

    # --- the Engine interface -------------------------------------------------------------------
    def concurrently(self, jobs, sizes=None):  # noqa: ARG002 - the interface's; order is the given one
        """Run jobs one after the other: Spark spreads each query over the cluster already, and
        the engine's temp views are shared, so jobs running at once could clash."""
        return [job(self) for job in jobs]

    def execute(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        """Run one statement and return all its rows."""
        df = self._run(sql, params)
        if df is None:
            return []
        return [tuple(_to_python(v) for v in row) for row in df.collect()]

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    def register(self, name: str, table: pa.Table) -> None:
        from pyspark.sql.pandas.types import from_arrow_schema

        df = self.spark.createDataFrame(table) if table.num_rows else self.spark.createDataFrame(
            [], schema=from_arrow_schema(table.schema))
        df.createOrReplaceTempView(name)
        self._tables[name] = df

    def unregister(self, name: str) -> None:
        self._drop(name)

    def columns(self, relation: str) -> list[str]:
        return list(self._run(f"SELECT * FROM {relation}").columns)

    @property
    def version(self) -> str:
        return self.spark.version

    def schema(self, relation: str) -> list[tuple[str, str]]:
        """Column names and types (DuckDB's type names, so reports agree between engines)."""
        df = self._run(f"SELECT * FROM {relation}")
        return [(f.name, _duckdb_type(f.dataType.simpleString())) for f in df.schema.fields]

    def to_parquet(self, relation_sql: str, path: Path) -> int:
        """Write a query's rows to one Parquet file; returns the row count.

        Spark writes a folder of part files; the query is computed in parallel, then brought
        to one partition (after any ORDER BY, keeping the order) and written as one file."""
        path = Path(_for_spark(str(path)))
        path.parent.mkdir(parents=True, exist_ok=True)
        df = self._run(relation_sql)
        tmp = path.parent / f".{path.name}.spark-{uuid.uuid4().hex[:8]}"
        # maxRecordsPerFile 0: one file whatever the session's setting (which would split it).
        df.coalesce(1).write.mode("overwrite").option("compression", "zstd").option("maxRecordsPerFile", 0) \
            .parquet(str(tmp))
        parts = sorted(tmp.glob("part-*.parquet"))
        if len(parts) == 1:
            os.replace(parts[0], path)
        elif not parts:  # no rows: Spark may write no part file; write the empty table with its schema
            pq.write_table(df.limit(0).toArrow(), path)
        else:  # pragma: no cover - a Spark setting this code does not know of
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"Spark wrote {len(parts)} files for {path.name}, expected one; check spark.conf")
        shutil.rmtree(tmp, ignore_errors=True)
        return pq.ParquetFile(path).metadata.num_rows

    def parquet(self, path: Path) -> str:
        """A relation reading a Parquet file, for use inside SQL."""
        return f"read_parquet({sql_string(path)})"

    def splink_api(self):
        from splink import SparkAPI

        return SparkAPI(spark_session=self.spark, break_lineage_method="parquet")

    def model(self, model: dict) -> dict:
        """A saved Splink model with its SQL in Spark's dialect."""
        return model_for_dialect(model, "spark")

    def close(self) -> None:
        for name in list(self._tables):
            self._drop(name)
        for view in self._parquet_views:
            self.spark.catalog.dropTempView(view)
        self._parquet_views.clear()

    def stop(self) -> None:
        """Stop the Spark session (close only releases this engine's tables)."""
        self.close()
        self.spark.stop()

    def __enter__(self) -> "SparkEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- statements -----------------------------------------------------------------------------
    def _run(self, sql: str, params: list[Any] | None = None):
        """Carry out one statement; returns a DataFrame for a query, None otherwise."""
        words = sql.split()
        if [w.upper() for w in words[:2]] == ["RESET", "VARIABLE"]:  # sqlglot has no tree for it
            self.spark.catalog.dropTempView(variable_view(words[2]))
            return None
        node = self.translator.parse(sql)
        if isinstance(node, exp.Create):
            return self._create(node, params)
        if isinstance(node, exp.Insert):
            name = node.this.name
            added = self._query(node.expression, params)
            current = self._tables[name]
            self._materialise(name, current.union(added.toDF(*current.columns)))
            return None
        if isinstance(node, exp.Drop):
            kind = (node.args.get("kind") or "").upper()
            for table in node.args.get("tables") or [node.this]:
                if kind == "MACRO":
                    self.translator.macros.pop(table.name.lower(), None)
                else:
                    self._drop(table.name)
            return None
        if isinstance(node, exp.Set):
            return self._set_variable(node, params)
        if isinstance(node, exp.Describe):
            raise TranslationError("DESCRIBE is DuckDB's: use engine.schema(relation)")
        return self._query(node, params)

    def _query(self, node: exp.Expression, params: list[Any] | None = None):
        if params:
            # Bound as literals before macros expand (a macro may use its argument twice).
            values = iter(params)
            node = node.transform(lambda n: exp.convert(next(values)) if isinstance(n, exp.Placeholder) else n)
        return self.spark.sql(self.translator.query(node))

    def _create(self, node: exp.Create, params: list[Any] | None = None):
        kind = (node.args.get("kind") or "").upper()
        if kind == "MACRO":
            self.translator.define_macro(node)
            return None
        target = node.this
        if kind == "VIEW":
            self._query(node.expression, params).createOrReplaceTempView(target.name)
            return None
        if kind != "TABLE":
            raise TranslationError(f"CREATE {kind} is not supported on Spark")
        if isinstance(target, exp.Schema):  # CREATE TEMP TABLE x (col type, ...)
            ddl = ", ".join(f"`{c.name}` {c.args['kind'].sql('spark')}" for c in target.expressions)
            self._materialise(target.this.name, self.spark.createDataFrame([], schema=ddl))
            return None
        self._materialise(target.name, self._query(node.expression, params))
        return None

    def _materialise(self, name: str, df) -> None:
        old = self._tables.get(name)
        df = df.localCheckpoint(eager=True)
        df.createOrReplaceTempView(name)
        self._tables[name] = df
        if old is not None:
            old.unpersist()

    def _drop(self, name: str) -> None:
        df = self._tables.pop(name, None)
        self.spark.catalog.dropTempView(name)
        if df is not None:
            df.unpersist()

    def _set_variable(self, node: exp.Set, params: list[Any] | None):
        """A variable is a one-row view that queries read (see spark_sql.variable_view): a Spark
        session variable's value is written into every plan that reads it, and plans are shown in
        error messages, logs and the Spark UI. A view's rows are not."""
        item = node.expressions[0].this
        var = item.this.name
        if isinstance(item.expression, exp.Placeholder):
            (value,) = params or [None]
        else:
            value = self.spark.sql(f"SELECT {self.translator.query(item.expression)}").first()[0]
        self.spark.createDataFrame([(None if value is None else str(value),)], "value STRING") \
            .createOrReplaceTempView(variable_view(var))
        return None

    def _parquet_view(self, paths: list[str], union_by_name: bool) -> str:
        key = hashlib.sha256(repr((paths, union_by_name)).encode()).hexdigest()[:16]
        view = f"_parquet_{key}"
        # A file may be rewritten between statements (zones are replaced whole): read afresh.
        reader = self.spark.read.option("mergeSchema", "true") if union_by_name else self.spark.read
        reader.parquet(*[self._visible(_for_spark(p)) for p in paths]).createOrReplaceTempView(view)
        self._parquet_views.add(view)
        return view

    def _visible(self, path: str) -> str:
        """Spark (Hadoop) skips files whose names start with '_' or '.', such as the landed zone's
        `_quarantine.parquet`: such a file is read through a link with a plain name."""
        name = Path(path).name
        if not name.startswith(("_", ".")) or "*" in name:
            return path
        links = self.scratch / "spark-links"
        links.mkdir(parents=True, exist_ok=True)
        link = links / (hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16] + ".parquet")
        if not link.is_symlink():
            link.symlink_to(Path(path).resolve())
        return str(link)


def _for_spark(path: str) -> str:
    """A path as Spark must be given it: absolute. The JVM resolves a relative path against its
    own working folder, fixed when it started, not the Python process's current one (a
    notebook or a test that changes folder would write elsewhere); a URI (hdfs://, s3a://) is
    left as it is."""
    return path if "://" in path else os.path.abspath(path)


def _on_loopback(master: str) -> bool:
    """Whether a `spark://host:port` master (or several, for standby masters) is on loopback."""
    if not master.startswith("spark://"):
        return False
    hosts = [h.rsplit(":", 1)[0].strip("[]") for h in master[len("spark://"):].split(",")]
    return all(h == "localhost" or h == "::1" or h.startswith("127.") for h in hosts)


def _machine_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


_TYPE_NAMES = {"string": "VARCHAR", "bigint": "BIGINT", "int": "INTEGER", "double": "DOUBLE", "float": "FLOAT",
               "boolean": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP", "timestamp_ntz": "TIMESTAMP",
               "binary": "BLOB", "smallint": "SMALLINT", "tinyint": "TINYINT"}


def _duckdb_type(spark_type: str) -> str:
    if spark_type.startswith("array<"):
        return _duckdb_type(spark_type[6:-1]) + "[]"
    if spark_type.startswith("decimal"):
        return spark_type.upper()
    return _TYPE_NAMES.get(spark_type, spark_type.upper())
