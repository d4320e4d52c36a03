"""Benchmark: the pipeline on Spark local mode against DuckDB, on the same world, in one process.

Both engines run ingest, standardise, link and release from the same contracts and config,
linking with the same saved model (trained once on DuckDB, as a production run reuses its
model; `--train-on-spark` also times training on Spark). Prints each stage's time per engine,
the Spark/DuckDB ratio, peak memory (DuckDB: this process; Spark: this process plus the
JVM it starts, sampled every half second), and whether the clusters are the same.

    python bench/bench_spark.py [--world DIR | --people N] [--driver-memory 16g] [--train-on-spark]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import duckdb

from datafirst.engine import Engine
from datafirst.link.stage import link
from datafirst.link.train import train
from datafirst.release.hashing_key import SALT_FILE_ENV, make_demo_salt
from datafirst.release.signing import SIGNING_KEY_FILE_ENV, make_demo_signing_key
from datafirst.release.stage import release
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace
from worlds import add_world_arguments, world_for


def _tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    keep, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in keep:
                keep.add(child)
                frontier.append(child)
    return sum(rss.get(p, 0) for p in keep) / 2**20


class PeakSampler:
    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_mb(os.getpid()))
            self._stop.wait(0.5)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _stages(ws: Workspace, engine, *, with_training: bool) -> dict[str, float]:
    times = {}
    for name, work in (("ingest", lambda: ingest(ws, engine)), ("standardise", lambda: standardise(ws, engine)),
                       *([("train", lambda: train(ws, engine))] if with_training else []),
                       ("link", lambda: link(ws, engine, full=True)), ("release", lambda: release(ws, engine))):
        started = time.perf_counter()
        work()
        times[name] = round(time.perf_counter() - started, 1)
        print(f"  {engine.name:<7} {name:<12} {times[name]:>8.1f} s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(parser)
    parser.add_argument("--driver-memory", default="16g", help="Spark local mode: the JVM's heap")
    parser.add_argument("--train-on-spark", action="store_true", help="also time training on Spark")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        world = world_for(args, Path(tmp))
        os.environ[SALT_FILE_ENV] = str(make_demo_salt(Path(tmp) / "bench.salt"))
        os.environ[SIGNING_KEY_FILE_ENV] = str(make_demo_signing_key(Path(tmp) / "bench-signing.key"))
        on_duckdb = Workspace.init(Path(tmp) / "duckdb", world / "extracts")
        on_spark = Workspace.init(Path(tmp) / "spark", world / "extracts")
        with Engine(temp_directory=on_duckdb.scratch) as engine:
            ingest(on_duckdb, engine)
            standardise(on_duckdb, engine)
            train(on_duckdb, engine)  # the saved model both engines link with
        (on_spark.root / "models").mkdir()
        for f in (on_duckdb.root / "models").iterdir():
            (on_spark.root / "models" / f.name).write_bytes(f.read_bytes())

        with Engine(temp_directory=on_duckdb.scratch) as engine:
            duckdb_times = _stages(on_duckdb, engine, with_training=False)
        duckdb_peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

        from datafirst.engine.spark_engine import SparkEngine

        with PeakSampler() as sampler:
            spark = SparkEngine(None, temp_directory=on_spark.scratch,
                                conf={"spark.driver.memory": args.driver_memory})
            try:
                spark_times = _stages(on_spark, spark, with_training=args.train_on_spark)
            finally:
                spark.stop()
        con = duckdb.connect()
        differing = {t: con.execute(f"""
            SELECT count(*) FROM '{on_duckdb.zone('links') / 'clusters.parquet'}' d
            FULL JOIN '{on_spark.zone('links') / 'clusters.parquet'}' s USING (record_key)
            WHERE d.person_id_{t} IS DISTINCT FROM s.person_id_{t}""").fetchall()[0][0]
            for t in ("high", "medium", "low")}
        shared = [s for s in duckdb_times if s in spark_times]
        out = {
            "source_records": json.loads((world / "world.json").read_text())["records"],
            "duckdb_s": duckdb_times, "spark_s": spark_times,
            "spark_over_duckdb": {s: round(spark_times[s] / duckdb_times[s], 2) for s in shared},
            "total_spark_over_duckdb": round(sum(spark_times[s] for s in shared) / sum(duckdb_times.values()), 2),
            "peak_mb": {"duckdb": duckdb_peak, "spark_python_plus_jvm": round(sampler.peak)},
            "records_clustered_differently": differing,
        }
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
