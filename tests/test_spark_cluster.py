"""The whole pipeline on a real Spark standalone cluster, with DuckDB's answer.

A master and two workers run as separate processes on this machine (datafirst.engine.spark_cluster),
so the engine's work runs in executor JVMs that are not the driver's: Splink's similarity jar is
shipped to them, they read and write the workspace's files, and the driver reaches them over the
network. A small world goes through ingest, standardise, link and release there, and DuckDB takes
the same world through the same stages; both link with one model, trained on DuckDB (training
samples with each engine's own random functions) and so translated to Spark's SQL for the
cluster. The people must be the same, record by record. Training on the cluster is left to
`bench/bench_spark.py --cluster` (it takes minutes there; tests/test_spark.py trains on Spark in
local mode).
The workspaces are given as relative paths, in a folder the test changes to after the session
started: Spark's JVMs (the driver's and the executors') have working folders of their own.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")

from datafirst.engine import Engine  # noqa: E402
from datafirst.engine.spark_cluster import standalone_cluster  # noqa: E402
from datafirst.link.stage import link  # noqa: E402
from datafirst.link.train import train  # noqa: E402
from datafirst.release.stage import release  # noqa: E402
from datafirst.sources.ingest import ingest  # noqa: E402
from datafirst.standardise.stage import standardise  # noqa: E402
from datafirst.workspace import Workspace  # noqa: E402
from datafirst.world import generate_world  # noqa: E402

from .conftest import TEST_SALT  # noqa: E402
from .test_spark import _differences, _types  # noqa: E402

THRESHOLDS = ("high", "medium", "low")


@pytest.fixture(scope="module")
def cluster():
    with standalone_cluster(workers=2, cores_per_worker=1, memory_per_worker="2g") as running:
        yield running


@pytest.fixture(scope="module")
def spark(cluster, tmp_path_factory):
    from datafirst.engine.spark_engine import SparkEngine

    # A small world: one partition per executor core (a task each per stage), not a cluster's 200.
    engine = SparkEngine(cluster.master, temp_directory=tmp_path_factory.mktemp("cluster-scratch"),
                         conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
                               "spark.executor.memory": "1g"})
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("cluster-runs")
    generate_world(root / "world", 1_500, seed=23)
    here = Path.cwd()
    os.chdir(root)  # relative workspace paths (see the module's docstring)
    try:
        on_cluster = Workspace.init(Path("cluster"), Path("world/extracts"))
        on_duckdb = Workspace.init(Path("duckdb"), Path("world/extracts"))
        with Engine() as engine:
            ingest(on_duckdb, engine)
            standardise(on_duckdb, engine, as_of="2025-06-30")
            train(on_duckdb, engine)
            duckdb_link = link(on_duckdb, engine)
            release(on_duckdb, engine, salt=TEST_SALT)
        (on_cluster.root / "models").mkdir(exist_ok=True)
        for f in (on_duckdb.root / "models").iterdir():
            (on_cluster.root / "models" / f.name).write_bytes(f.read_bytes())
        ingest(on_cluster, spark)
        standardise(on_cluster, spark, as_of="2025-06-30")
        cluster_link = link(on_cluster, spark)
        release(on_cluster, spark, salt=TEST_SALT)
    finally:
        os.chdir(here)
    return {"cluster": Workspace(root / "cluster"), "duckdb": Workspace(root / "duckdb"),
            "links": (cluster_link, duckdb_link)}


def test_the_work_ran_on_the_clusters_two_executors(runs, spark, cluster):
    context = spark.spark.sparkContext
    assert context.master == cluster.master and cluster.master.startswith("spark://")
    # The master's account: two live workers, each lending its core to this application.
    workers = cluster.alive_workers()
    assert len(workers) == 2 and all(w["coresused"] == 1 for w in workers)
    (app,) = [a for a in cluster.status()["activeapps"] if a["id"] == context.applicationId]
    assert app["cores"] == 2
    # The driver's account: two executors besides itself, each of which ran tasks.
    with urllib.request.urlopen(f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}/executors",
                                timeout=10) as response:
        executors = [e for e in json.load(response) if e["id"] != "driver"]
    assert len(executors) == 2
    assert all(e["totalTasks"] > 0 and e["failedTasks"] == 0 for e in executors), executors
    assert [e["totalTasks"] for e in json.load(urllib.request.urlopen(
        f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}/allexecutors", timeout=10))
        if e["id"] == "driver"] == [0]  # nothing ran in the driver's JVM


def test_the_cluster_linked_with_the_model_duckdb_trained(runs):
    """The model is DuckDB's SQL (its list and similarity functions), translated for the cluster."""
    (meta,) = (runs["cluster"].root / "models").glob("model-*.meta.json")
    assert json.loads(meta.read_text(encoding="utf-8"))["code"]["engine"] == "duckdb"
    model = meta.with_name(meta.name.replace(".meta.json", ".json")).read_text(encoding="utf-8")
    assert "list_intersect(" in model and "jaro_winkler_similarity(" in model


def test_same_scored_pairs_and_the_same_people_record_by_record(runs):
    cluster_zone, duckdb_zone = runs["cluster"].zone("links"), runs["duckdb"].zone("links")
    con = duckdb.connect()
    n, in_duckdb, in_cluster, worst = con.execute(f"""
        SELECT count(*), count(d.record_key_l), count(c.record_key_l), max(abs(c.match_weight - d.match_weight))
        FROM '{cluster_zone / "edges.parquet"}' c FULL JOIN '{duckdb_zone / "edges.parquet"}' d
          USING (record_key_l, record_key_r)""").fetchall()[0]
    assert n > 1000 and n == in_duckdb == in_cluster
    assert worst < 1e-9  # floating-point summation order
    # Internal person ids are digests of the threshold and the cluster's smallest record key
    # (link.incremental.cluster_label): equal ids, record by record, are equal partitions.
    assert _differences(cluster_zone / "clusters.parquet", duckdb_zone / "clusters.parquet",
                        skip=("strongest_link_medium",)) == {"only_in_spark": 0, "only_in_duckdb": 0}
    (strongest,) = con.execute(f"""
        SELECT max(abs(c.strongest_link_medium - d.strongest_link_medium))
        FROM '{cluster_zone / "clusters.parquet"}' c JOIN '{duckdb_zone / "clusters.parquet"}' d USING (record_key)
        """).fetchall()[0]
    assert strongest <= 1e-6  # rounded to 6 places: a halfway value may round either way
    cluster_link, duckdb_link = runs["links"]
    assert cluster_link.clusters == duckdb_link.clusters
    assert cluster_link.records == duckdb_link.records > 2000
    assert len({cluster_link.clusters[t] for t in THRESHOLDS}) > 1  # the thresholds do cut differently


def test_same_release_tables_and_people(runs):
    cluster_tables, duckdb_tables = (runs[k].root / "releases" / "v0001" / "tables" for k in ("cluster", "duckdb"))
    names = sorted(p.name for p in cluster_tables.glob("*.parquet"))
    assert names == sorted(p.name for p in duckdb_tables.glob("*.parquet")) and len(names) > 5
    for name in names:
        a, b = cluster_tables / name, duckdb_tables / name
        assert _types(a) == _types(b), name
        # Released person ids are drawn from each workspace's own random id series
        # (release.person_ids): everything else row by row, the people as partitions below.
        ids = tuple(c for c in pq.read_schema(a).names if c.startswith("person_id") or c == "into_person_id")
        assert _differences(a, b, skip=ids) == {"only_in_spark": 0, "only_in_duckdb": 0}, name
    con = duckdb.connect()
    for t in THRESHOLDS:
        col = f"person_id_{t}"
        pairs, left, right, rows = con.execute(f"""
            SELECT count(DISTINCT (c.{col}, d.{col})), count(DISTINCT c.{col}), count(DISTINCT d.{col}), count(*)
            FROM '{cluster_tables / "person_link_lookup.parquet"}' c
            JOIN '{duckdb_tables / "person_link_lookup.parquet"}' d USING (source_dataset, row_id_hash)""").fetchall()[0]
        assert pairs == left == right and rows > pairs, t  # one-to-one: the same people


def test_a_worker_that_fails_to_start_is_reported_and_nothing_is_left_running(tmp_path, monkeypatch):
    from datafirst.engine import spark_cluster

    started = []

    class Recorded(spark_cluster.subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(spark_cluster.subprocess, "Popen", Recorded)
    with pytest.raises(spark_cluster.ClusterFailed, match="worker-1 exited") as failed:
        with standalone_cluster(workers=1, memory_per_worker="lots", log_dir=tmp_path / "logs"):
            pass  # pragma: no cover - never reached
    assert "worker-1.log" in str(failed.value)
    assert len(started) == 2 and all(p.returncode is not None for p in started)  # master and worker
    deadline = time.monotonic() + 10  # nor anything of their process groups (a zombie shell is reaped soon)
    while any(_group_alive(p.pid) for p in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_group_alive(p.pid) for p in started)
    assert (tmp_path / "logs" / "master.log").stat().st_size > 0  # the caller's folder is kept


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
