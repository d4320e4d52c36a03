"""Benchmark (issue 27): synthetic twins of the 1M world's release, low and mid fidelity.

    python bench/bench_synth.py RELEASE_WORKSPACE [--seed S] [--out DIR]

RELEASE_WORKSPACE holds a release and is only read (the twins are written to a scratch folder,
or DIR). Printed, against the issue's targets:
1. low and mid fidelity: wall time and peak RSS of each, made in a child process of its own so
   each peak is its own (targets: low <= 60 s, mid <= 10 min, peak RSS <= 8 GB);
2. the mid twin's pMSE ratio per table (synthpop's S_pMSE with a CART propensity model, from
   the twin's report; target <= 10);
3. each declared research query, real against the mid twin, each cell's relative difference,
   on cells above the release's small-count limit (target: within 20%);
4. distance to closest record: the people are split in two by a hash of their id; a mid twin is
   fitted on one half (train) only, and its rows' distances to the train half are compared with
   the held-out half's distances to the train half (target: the twin no closer than the holdout);
5. the declared constraints, checked on the real release and on both twins.

It is written against the synth package's interfaces: `synthesise` (datafirst.synth.generate),
`write_report` (datafirst.synth.report), `check` (datafirst.synth.constraints) and
`run_queries` (datafirst.synth.queries); they are imported inside main() so the file can be
read, and its argument parsing run, before they exist.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"low_seconds": 60.0, "mid_seconds": 600.0, "peak_rss_gb": 8.0, "pmse_ratio": 10.0, "query_relative": 0.20}


def _make_twin(workspace: Path, fidelity: str, seed: int, out: Path, train_people: Path | None) -> dict:
    """In the child process: one twin, timed; its folder and table paths as JSON."""
    from datafirst.synth.generate import synthesise

    from datafirst.engine import open_engine
    from datafirst.release.stage import published
    from datafirst.workspace import Workspace

    ws = Workspace(workspace)
    release = published(ws)[-1]
    started = time.perf_counter()
    with open_engine(ws) as engine:
        twin = synthesise(ws, release, fidelity, seed, engine, out=out, train_people=train_people)
    return {"seconds": time.perf_counter() - started, "path": str(twin.path),
            "tables": {k: str(v) for k, v in twin.tables.items()}, "rows": dict(twin.rows)}


def _in_child(args: argparse.Namespace, fidelity: str, out: Path, train_people: Path | None = None) -> dict:
    """Make a twin in a child process; its own peak RSS from the kernel's accounting of that child."""
    result = out.with_suffix(".json")
    cmd = [sys.executable, __file__, str(args.workspace), "--seed", str(args.seed),
           "--child", fidelity, "--child-out", str(out)]
    if train_people is not None:
        cmd += ["--child-train", str(train_people)]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the {fidelity} twin failed (exit {proc.returncode})")
    made = json.loads(result.read_text())
    made["peak_rss_gb"] = usage.ru_maxrss / 1024 ** 2  # ru_maxrss is in KiB on Linux
    return made


def _split_people(engine, release: Path, scratch: Path) -> tuple[Path, dict, dict]:
    """Train and holdout halves of the people (by a hash of their id), and every release table
    that has a person column restricted to each half."""
    from datafirst.engine import sql_string

    tables = {p.stem: p for p in sorted((release / "tables").glob("*.parquet"))}
    person = tables["person"]
    train_ids = scratch / "train_people.parquet"
    engine.execute(f"""COPY (SELECT person_id_medium FROM read_parquet({sql_string(person)})
                             WHERE md5(person_id_medium) < '8') TO {sql_string(train_ids)} (FORMAT parquet)""")
    halves: dict[str, dict] = {"train": {}, "holdout": {}}
    for name, path in tables.items():
        if "person_id_medium" not in engine.columns(f"read_parquet({sql_string(path)})"):
            continue
        for half, test in (("train", "IN"), ("holdout", "NOT IN")):
            target = scratch / half / f"{name}.parquet"
            engine.to_parquet(f"""SELECT * FROM read_parquet({sql_string(path)}) WHERE person_id_medium {test}
                                  (SELECT person_id_medium FROM read_parquet({sql_string(train_ids)}))""", target)
            halves[half][name] = target
    return train_ids, halves["train"], halves["holdout"]


def _find(report: dict, word: str, path: str = "") -> list[tuple[str, object]]:
    """Every (path, value) in the report whose key names `word` (its layout is the report's own)."""
    found = []
    items = report.items() if isinstance(report, dict) else enumerate(report) if isinstance(report, list) else []
    for key, value in items:
        here = f"{path}.{key}" if path else str(key)
        if word in str(key).lower() and not isinstance(value, (dict, list)):
            found.append((here, value))
        found += _find(value, word, here)
    return found


def _cells(rows: list) -> dict[tuple, tuple[float, int | None]]:
    """A query's rows as {group: (value, count or None)}: tuples are (group..., value); dict rows
    name their value `value` and may carry the cell's count as `n`."""
    cells = {}
    for r in rows:
        if isinstance(r, dict):
            group = tuple(v for k, v in r.items() if k not in ("value", "n"))
            cells[group] = (r["value"], r.get("n"))
        else:
            cells[tuple(r[:-1])] = (r[-1], None)
    return cells


def _query_differences(real: dict, twin: dict, small_count: int) -> list[tuple[str, tuple, float, float | None, float | None]]:
    """(query, group, real value, twin value, relative difference) for every cell of every query
    whose count, where the query gives one, is at least the small-count limit."""
    rows = []
    for name, real_rows in real.items():
        twin_cells = _cells(twin.get(name, []))
        for group, (value, n) in _cells(real_rows).items():
            if n is not None and n < small_count:
                continue
            other = twin_cells.get(group, (None, None))[0]
            diff = None if other is None or not value else abs(other - value) / abs(value)
            rows.append((name, group, value, other, diff))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="where the twins go (default: scratch, removed)")
    parser.add_argument("--child", choices=["low", "mid"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-train", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        made = _make_twin(args.workspace, args.child, args.seed, args.child_out, args.child_train)
        args.child_out.with_suffix(".json").write_text(json.dumps(made))
        return 0

    from datafirst.synth.constraints import check
    from datafirst.synth.queries import run_queries
    from datafirst.synth.report import write_report

    from datafirst.engine import open_engine
    from datafirst.release.site import small_count_of
    from datafirst.release.stage import published
    from datafirst.workspace import Workspace

    ws = Workspace(args.workspace)
    release = published(ws)[-1]
    manifest = json.loads((release / "manifest.json").read_text())
    small_count = small_count_of(release, manifest)
    constraints = json.loads((release / "constraints.json").read_text()) if (release / "constraints.json").exists() else []
    queries = json.loads((release / "research_queries.json").read_text()) \
        if (release / "research_queries.json").exists() else []
    real = {p.stem: p for p in sorted((release / "tables").glob("*.parquet"))}
    scratch = args.out or Path(tempfile.mkdtemp(prefix="bench-synth-"))
    scratch.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    try:
        print(f"release {release} ({len(real)} tables, small count {small_count})")
        twins = {}
        for fidelity in ("low", "mid"):
            twins[fidelity] = made = _in_child(args, fidelity, scratch / f"twin-{fidelity}")
            target = TARGETS[f"{fidelity}_seconds"]
            print(f"{fidelity}: {made['seconds']:.1f} s (target {target:.0f} s), peak RSS {made['peak_rss_gb']:.2f} GB "
                  f"(target {TARGETS['peak_rss_gb']:.0f} GB), {sum(made['rows'].values()):,} rows")
            if made["seconds"] > target or made["peak_rss_gb"] > TARGETS["peak_rss_gb"]:
                failures.append(f"{fidelity} time or memory")

        with open_engine(ws) as engine:
            mid_tables = {k: Path(v) for k, v in twins["mid"]["tables"].items()}
            for fidelity, made in twins.items():
                results = check(engine, {k: Path(v) for k, v in made["tables"].items()}, constraints)
                broken = [r for r in results if r["violations"]]
                print(f"constraints on the {fidelity} twin: {len(results)} checked, "
                      + ("all hold" if not broken else "broken: " + ", ".join(f"{r['name']} ({r['violations']})"
                                                                              for r in broken)))
                if broken:
                    failures.append(f"constraints on the {fidelity} twin")
            real_checks = {r["name"]: r["violations"] for r in check(engine, real, constraints)}
            print(f"constraints on the real release: {sum(1 for v in real_checks.values() if v)} of "
                  f"{len(real_checks)} with violations")

            # Research queries, real against the mid twin.
            differences = _query_differences(run_queries(engine, real, queries), run_queries(engine, mid_tables, queries),
                                             small_count)
            within = [d for d in differences if d[4] is not None and d[4] <= TARGETS["query_relative"]]
            print(f"research queries (mid): {len(within)} of {len(differences)} cells within "
                  f"{100 * TARGETS['query_relative']:.0f}% of the real figure")
            for name, group, value, other, diff in differences:
                if diff is None or diff > TARGETS["query_relative"]:
                    shown = "missing" if diff is None else f"{100 * diff:.0f}%"
                    print(f"  {name} {group}: real {value}, twin {other} ({shown})")
            if len(within) < len(differences):
                failures.append("research queries")

            # Holdout: a mid twin of the train half; its report's distances to closest record.
            train_ids, train, holdout = _split_people(engine, release, scratch / "split")
            half = _in_child(args, "mid", scratch / "twin-mid-train", train_people=train_ids)
            report = write_report(engine, real, mid_tables, scratch / "report-mid", holdout=holdout, train=train,
                                  holdout_twin={k: Path(v) for k, v in half["tables"].items()},
                                  constraints=constraints, queries=queries, small_count=small_count)

        ratios = [(where, v) for where, v in _find(report, "pmse") if "ratio" in where.lower()]
        for where, value in ratios:
            print(f"pMSE ratio {where}: {value:.2f} (target <= {TARGETS['pmse_ratio']:.0f})")
            if isinstance(value, (int, float)) and (math.isnan(value) or value > TARGETS["pmse_ratio"]):
                failures.append(f"pMSE ratio {where}")
        if not ratios:
            failures.append("no pMSE ratio in the report")
        for where, value in _find(report, "dcr"):
            print(f"DCR {where}: {value}")
        print(f"report: {scratch / 'report-mid'}")
        print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    finally:
        if args.out is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
