"""Benchmark: the pipeline on Spark (local mode; standalone too) against DuckDB, on the same world, in one process.

Both engines run ingest, standardise, link and release from the same contracts and config,
linking with the same saved model (trained once on DuckDB, as a production run reuses its
model; `--train-on-spark` also times training on Spark). Prints each stage's time per engine,
the Spark/DuckDB ratio, peak memory (DuckDB: this process; Spark: this process plus the
JVM it starts, sampled every half second), and whether the clusters are the same.

With `--cluster`, the same stages also run on a Spark standalone cluster that the benchmark starts
on this machine (`datafirst.engine.spark_cluster`: a master and `--workers` workers as separate
processes, each worker lending `--worker-cores` cores and `--worker-memory` to one executor), so
local mode and a cluster are compared in one run; its peak memory counts every process it started.

    python bench/bench_spark.py [--world DIR | --people N] [--driver-memory 16g] [--train-on-spark]
                                [--cluster [--workers 2] [--worker-cores 1] [--worker-memory 6g]]
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


def _spark_run(ws: Workspace, master: str | None, conf: dict[str, str], *, with_training: bool) -> dict:
    """The stages on one Spark master: their times and the peak memory of this process and
    every process it started (the driver's JVM; with `--cluster`, the master, workers and executors)."""
    from datafirst.engine.spark_engine import SparkEngine

    with PeakSampler() as sampler:
        spark = SparkEngine(master, temp_directory=ws.scratch, conf=conf)
        try:
            print(f"  spark master: {spark.spark.sparkContext.master}", flush=True)
            times = _stages(ws, spark, with_training=with_training)
        finally:
            spark.stop()
    return {"times": times, "peak_mb": round(sampler.peak)}


def _differing(a: Workspace, b: Workspace) -> dict[str, int]:
    """Records whose person id (a digest of the cluster's smallest record key) differs, per threshold."""
    con = duckdb.connect()
    return {t: con.execute(f"""
        SELECT count(*) FROM '{a.zone('links') / 'clusters.parquet'}' d
        FULL JOIN '{b.zone('links') / 'clusters.parquet'}' s USING (record_key)
        WHERE d.person_id_{t} IS DISTINCT FROM s.person_id_{t}""").fetchall()[0][0]
        for t in ("high", "medium", "low")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(parser)
    parser.add_argument("--driver-memory", default="16g", help="Spark local mode: the JVM's heap")
    parser.add_argument("--train-on-spark", action="store_true", help="also time training on Spark")
    parser.add_argument("--cluster", action="store_true",
                        help="also run on a Spark standalone cluster started here (a master and workers)")
    parser.add_argument("--workers", type=int, default=2, help="--cluster: workers (one executor each)")
    parser.add_argument("--worker-cores", type=int, default=1, help="--cluster: cores per worker")
    parser.add_argument("--worker-memory", default="6g", help="--cluster: each worker's and executor's memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        world = world_for(args, Path(tmp))
        os.environ[SALT_FILE_ENV] = str(make_demo_salt(Path(tmp) / "bench.salt"))
        os.environ[SIGNING_KEY_FILE_ENV] = str(make_demo_signing_key(Path(tmp) / "bench-signing.key"))
        on_duckdb = Workspace.init(Path(tmp) / "duckdb", world / "extracts")
        on_spark = Workspace.init(Path(tmp) / "spark", world / "extracts")
        on_cluster = Workspace.init(Path(tmp) / "cluster", world / "extracts") if args.cluster else None
        with Engine(temp_directory=on_duckdb.scratch) as engine:
            ingest(on_duckdb, engine)
            standardise(on_duckdb, engine)
            train(on_duckdb, engine)  # the saved model every engine links with
        for ws in (on_spark, on_cluster):
            if ws is not None:
                (ws.root / "models").mkdir()
                for f in (on_duckdb.root / "models").iterdir():
                    (ws.root / "models" / f.name).write_bytes(f.read_bytes())

        with Engine(temp_directory=on_duckdb.scratch) as engine:
            duckdb_times = _stages(on_duckdb, engine, with_training=False)
        duckdb_peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

        local = _spark_run(on_spark, None, {"spark.driver.memory": args.driver_memory},
                           with_training=args.train_on_spark)
        spark_times = local["times"]
        shared = [s for s in duckdb_times if s in spark_times]
        out = {
            "source_records": json.loads((world / "world.json").read_text())["records"],
            "duckdb_s": duckdb_times, "spark_s": spark_times,
            "spark_over_duckdb": {s: round(spark_times[s] / duckdb_times[s], 2) for s in shared},
            "total_spark_over_duckdb": round(sum(spark_times[s] for s in shared) / sum(duckdb_times.values()), 2),
            "peak_mb": {"duckdb": duckdb_peak, "spark_python_plus_jvm": local["peak_mb"]},
            "records_clustered_differently": _differing(on_duckdb, on_spark),
        }
        if on_cluster is not None:
            from datafirst.engine.spark_cluster import standalone_cluster

            # The driver is this process's JVM, started by the local run with --driver-memory.
            with standalone_cluster(args.workers, args.worker_cores, args.worker_memory) as cluster:
                standalone = _spark_run(on_cluster, cluster.master, {"spark.executor.memory": args.worker_memory},
                                        with_training=args.train_on_spark)
            cluster_times = standalone["times"]
            out |= {
                "standalone": f"{args.workers} workers x {args.worker_cores} cores, {args.worker_memory} each",
                "standalone_s": cluster_times,
                "standalone_over_local": {s: round(cluster_times[s] / spark_times[s], 2) for s in cluster_times},
                "total_standalone_over_duckdb": round(
                    sum(cluster_times[s] for s in shared) / sum(duckdb_times.values()), 2),
                "standalone_records_clustered_differently": _differing(on_duckdb, on_cluster),
            }
            out["peak_mb"]["standalone_all_processes"] = standalone["peak_mb"]
        print(json.dumps(out, indent=2))

if __name__ == "__main__":
    main()
