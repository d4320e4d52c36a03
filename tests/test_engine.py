"""The DuckDB engine's jobs run at once (`Engine.concurrently`): isolated, ordered, and giving the
same zones as one job after the other."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pytest

from datafirst.engine import Engine
from datafirst.sources.ingest import ingest
from datafirst.standardise.quality import measure
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace


def test_results_come_back_in_the_order_given_however_the_jobs_finish():
    def job(n: int, pause: float):
        def run(e: Engine) -> int:
            time.sleep(pause)
            return e.scalar(f"SELECT {n} * 10")
        return run

    with Engine(threads=2) as engine:
        assert engine.concurrently([job(1, 0.3), job(2, 0.0), job(3, 0.1), job(4, 0.0)]) == [10, 20, 30, 40]


def test_sizes_start_the_largest_jobs_first_and_results_keep_the_given_order():
    started = []

    def job(n: int):
        def run(e: Engine) -> int:
            started.append(n)
            time.sleep(0.2)
            return e.scalar(f"SELECT {n}")
        return run

    with Engine(threads=2) as engine:
        assert engine.concurrently([job(0), job(1), job(2)], sizes=[1, 3, 2]) == [0, 1, 2]
    assert sorted(started[:2]) == [1, 2] and started[2] == 0  # the smallest waited for a free connection


def test_jobs_run_at_the_same_time_each_with_its_own_temp_tables():
    both_started = threading.Barrier(2, timeout=10)  # fails unless the two jobs overlap

    def job(value: int):
        def run(e: Engine) -> int:
            e.execute(f"CREATE TEMP TABLE scratch AS SELECT {value} AS v")  # the same name in both jobs
            both_started.wait()
            return e.scalar("SELECT v FROM scratch")
        return run

    with Engine(threads=2) as engine:
        assert engine.concurrently([job(1), job(2)]) == [1, 2]
        # Nothing of the jobs' is left on the engine's own connection.
        assert engine.scalar("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scratch'") == 0


def test_jobs_see_the_engines_tables_but_not_its_temp_tables():
    with Engine(threads=2) as engine:
        engine.execute("CREATE TABLE shared AS SELECT 7 AS v")
        engine.execute("CREATE TEMP TABLE private AS SELECT 8 AS v")

        def read_shared(e: Engine) -> int:
            return e.scalar("SELECT v FROM shared")

        def read_private(e: Engine) -> int:
            return e.scalar("SELECT v FROM private")

        assert engine.concurrently([read_shared, read_shared]) == [7, 7]
        with pytest.raises(duckdb.CatalogException, match="private"):
            engine.concurrently([read_shared, read_private])


def test_a_failing_job_fails_the_call_after_the_others_have_finished():
    finished = []

    def slow(e: Engine) -> int:
        time.sleep(0.3)
        finished.append("slow")
        return 1

    def bad(e: Engine) -> int:
        return e.scalar("SELECT * FROM no_such_table")

    with Engine(threads=2) as engine:
        with pytest.raises(duckdb.CatalogException, match="no_such_table"):
            engine.concurrently([bad, slow])
    assert finished == ["slow"]  # nothing is still writing when the caller cleans up


def test_one_thread_runs_the_jobs_on_the_engine_itself_in_order():
    order = []
    with Engine(threads=1) as engine:
        engine.execute("CREATE TEMP TABLE private AS SELECT 5 AS v")

        def job(n: int):
            def run(e: Engine) -> int:
                order.append(n)
                return e.scalar("SELECT v FROM private") + n  # the engine's own temp table is visible
            return run

        assert engine.concurrently([job(1), job(2), job(3)]) == [6, 7, 8]
    assert order == [1, 2, 3]


def _zone_rows(folder: Path, ignore: set[str]) -> dict[str, list[tuple]]:
    """Every Parquet file of a zone, row by row in file order (columns in `ignore` left out)."""
    con = duckdb.connect()
    out = {}
    for f in sorted(folder.glob("*.parquet")):
        cols = [c[0] for c in con.execute(f"DESCRIBE SELECT * FROM '{f}'").fetchall() if c[0] not in ignore]
        out[f.name] = con.execute(f"SELECT {', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)} FROM '{f}'").fetchall()
    con.close()
    return out


def test_ingest_and_standardise_give_the_same_zones_with_jobs_at_once_as_one_after_the_other(world, tmp_path):
    zones = {}
    reports = {}
    for threads in (1, 2):
        ws = Workspace.init(tmp_path / f"threads{threads}", world / "extracts")
        with Engine(threads=threads) as engine:
            ingest(ws, engine)
            standardise(ws, engine, as_of="2025-06-30")
            reports[threads] = measure(ws, engine)["tables"]
        zones[threads] = {zone: _zone_rows(ws.zone(zone), {"_loaded_at", "loaded_at"})
                          for zone in ("landed", "identifiers", "content")}
    for zone in ("landed", "identifiers", "content"):
        assert zones[1][zone].keys() == zones[2][zone].keys()
        for name in zones[1][zone]:
            assert zones[1][zone][name] == zones[2][zone][name], f"{zone}/{name} differs"
    assert reports[1] == reports[2]


@pytest.mark.parametrize("setting, match", [
    ("memory_limit: lots", "memory_limit"), ("memory_limit: 1.5GB", "memory_limit"), ("threads: 0", "threads"),
    ("link: {thresholds: {high: 99.9}}", "0 < low <= medium <= high < 1"),
    ("release: {small_count: 0}", "small_count"),
    ("engine: spark", "found the key 'engine' a second time"),  # init wrote `engine: duckdb`
])
def test_config_values_the_engines_cannot_use_are_refused_naming_the_file(tmp_path, setting, match):
    from datafirst.workspace import Workspace, WorkspaceError

    ws = Workspace.init(tmp_path / "ws", tmp_path, with_world_contracts=False)
    ws.config_path.write_text(ws.config_path.read_text() + setting + "\n")
    with pytest.raises(WorkspaceError, match=match) as exc:
        ws.config()
    assert str(ws.config_path) in str(exc.value)


def test_memory_sizes_are_read_in_mb():
    from datafirst.workspace import memory_mb

    assert (memory_mb("8GB"), memory_mb("512 MB")) == (8000, 512)
