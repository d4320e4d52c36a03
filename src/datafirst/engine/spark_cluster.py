"""A Spark standalone cluster on this machine: a master and its workers as separate processes.

Local mode (`local[*]`) runs the whole job in the driver's JVM, so it never ships a jar to an
executor, never reads a file from another process and never loses an executor. A standalone
cluster does all of that with the same code paths as a real one, on one machine: try the
pipeline on a cluster before having one, and test it (`tests/test_spark_cluster.py`,
`bench/bench_spark.py --cluster`).

    from datafirst.engine.spark_cluster import standalone_cluster
    with standalone_cluster(workers=2) as cluster:
        engine = SparkEngine(cluster.master)          # or DATAFIRST_SPARK_MASTER=cluster.master

The master and workers are started with the PySpark package's own launcher (`bin/spark-class`,
Java 17 on the path or in JAVA_HOME), each in a process group of its own, bound to 127.0.0.1
on free ports. Their logs, the workers' work folders (each executor's stdout and stderr) and
their shuffle folders are in one folder (`cluster.log_dir`); it is removed on a clean exit and
kept when the body raised, for its logs. Leaving the block stops every process (workers, the
executors they started, the master) however the block ends; on Linux they also end if the
calling thread dies without leaving it (killed by a timeout, say).

All processes share this machine's file system, so local absolute paths are shared storage
here; on a real cluster they are not (see docs/spark.md, "Running on a real cluster").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

HOST = "127.0.0.1"


class ClusterFailed(RuntimeError):
    """A master or worker did not start, or did not come up in time."""


@dataclass
class StandaloneCluster:
    """A running cluster: its master URL (what a Spark session connects to), the master's web
    UI (whose `/json/` lists the workers) and the folder holding every process's logs."""

    master: str
    web_ui: str
    log_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def status(self) -> dict:
        """The master's own account of the cluster (its web UI's JSON): workers, cores, apps."""
        with urllib.request.urlopen(f"{self.web_ui}/json/", timeout=5) as response:
            return json.load(response)

    def alive_workers(self) -> list[dict]:
        return [w for w in self.status().get("workers", []) if w.get("state") == "ALIVE"]


def spark_class() -> Path:
    """The launcher of the installed PySpark (`pip install 'datafirst[spark]'`)."""
    try:
        import pyspark
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ClusterFailed("a Spark cluster needs PySpark and Java 17: pip install 'datafirst[spark]'") from exc
    launcher = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not launcher.exists():  # pragma: no cover - a PySpark without its launcher
        raise ClusterFailed(f"{launcher} is missing: reinstall PySpark (pip install --force-reinstall pyspark)")
    return launcher


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's choice; taken by the caller just after)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def standalone_cluster(workers: int = 2, cores_per_worker: int = 1, memory_per_worker: str = "2g", *,
                       log_dir: Path | None = None, timeout_s: float = 120) -> Iterator[StandaloneCluster]:
    """Start a master and `workers` workers (each offering `cores_per_worker` cores and
    `memory_per_worker` of executor memory), wait until every worker has registered, yield the
    cluster, and stop all of it on leaving. `log_dir` keeps the logs in a folder of the
    caller's (never removed); by default a temporary folder, removed unless the block raised."""
    launcher = spark_class()
    own_dir = log_dir is None
    logs = Path(tempfile.mkdtemp(prefix="datafirst-spark-cluster-")) if own_dir else Path(log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SPARK_HOME": str(launcher.parent.parent),
        "SPARK_LOCAL_IP": HOST,  # the daemons and the executors they start listen on loopback only
        "SPARK_DAEMON_MEMORY": "512m",  # the master's and workers' own heaps; executors get their own
    }
    env.pop("SPARK_CONF_DIR", None)  # the cluster's settings are all on its command lines
    master_port, master_ui = free_port(), free_port()
    cluster = StandaloneCluster(master=f"spark://{HOST}:{master_port}", web_ui=f"http://{HOST}:{master_ui}",
                                log_dir=logs)
    failed = False
    try:
        _start(cluster, launcher, env, "master", ["org.apache.spark.deploy.master.Master", "--host", HOST,
                                                  "--port", str(master_port), "--webui-port", str(master_ui)])
        _wait(cluster, timeout_s, "the master to answer", lambda status: status.get("status") == "ALIVE")
        for n in range(1, workers + 1):
            work, local = logs / f"worker-{n}-work", logs / f"worker-{n}-local"
            work.mkdir(exist_ok=True)
            local.mkdir(exist_ok=True)
            _start(cluster, launcher, {**env, "SPARK_LOCAL_DIRS": str(local)}, f"worker-{n}", [
                "org.apache.spark.deploy.worker.Worker", cluster.master, "--host", HOST,
                "--port", str(free_port()), "--webui-port", str(free_port()),
                "--cores", str(cores_per_worker), "--memory", memory_per_worker, "--work-dir", str(work)])
        _wait(cluster, timeout_s, f"{workers} workers to register",
              lambda status: sum(w.get("state") == "ALIVE" for w in status.get("workers", [])) >= workers)
        yield cluster
    except BaseException:
        failed = True
        raise
    finally:
        # Workers first (each takes its executors down with its process group), then the master.
        for process in reversed(cluster.processes):
            _stop(process)
        if own_dir and not failed:
            shutil.rmtree(logs, ignore_errors=True)
        elif failed:
            print(f"Spark cluster logs kept in {logs}", file=sys.stderr)


def _start(cluster: StandaloneCluster, launcher: Path, env: dict[str, str], name: str, args: list[str]) -> None:
    log = open(cluster.log_dir / f"{name}.log", "wb")
    try:
        # A session (and process group) of its own: stopping it reaches the JVM and every
        # executor a worker launched, and a Ctrl-C meant for the caller does not hit it first.
        # Started through `_ORPHAN_GUARD`, so that it also ends if the caller is killed before
        # it can stop the cluster (a CI timeout, say) rather than living on as an orphan.
        process = subprocess.Popen([sys.executable, "-c", _ORPHAN_GUARD, str(os.getpid()), str(launcher), *args],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    finally:
        log.close()  # the child holds its own descriptor
    process.name = name  # type: ignore[attr-defined] - for the messages below
    cluster.processes.append(process)


# Run in the new process before it becomes Spark's launcher (exec keeps the setting): Linux sends
# it SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG, option 1 of prctl). A
# trampoline rather than Popen's preexec_fn, which is unsafe once the caller has threads (a
# Spark session's). If the caller is already gone, exit at once.
_ORPHAN_GUARD = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _wait(cluster: StandaloneCluster, timeout_s: float, what: str, ready) -> None:
    """Poll the master's JSON until `ready(status)`; fail early if a process has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        for process in cluster.processes:
            if process.poll() is not None:
                raise ClusterFailed(f"Spark {process.name} exited with code {process.returncode} while waiting for "
                                    f"{what}; its log: {cluster.log_dir / (process.name + '.log')}\n"
                                    + _tail(cluster.log_dir / f"{process.name}.log"))
        try:
            if ready(cluster.status()):
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise ClusterFailed(f"timed out after {timeout_s:.0f} s waiting for {what}; logs in {cluster.log_dir}")
        time.sleep(0.5)


def _stop(process: subprocess.Popen, grace_s: float = 15) -> None:
    """End a process group: TERM (a worker then stops its executors), KILL whatever is left.
    The group leader is reaped only after the last signal, so the group id cannot have been
    given to another process in between."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # what is left: the JVM, an executor still shutting down
    except ProcessLookupError:
        pass
    process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:  # pragma: no cover
        return ""
