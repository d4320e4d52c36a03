"""Benchmark (issue 27): synthetic twins of a release (the 1M world's), low and mid fidelity.

    python bench/bench_synth.py WORKSPACE [--seed S] [--out DIR]

WORKSPACE holds a release (the newest is used) and is only read; the twins are written to a
scratch folder, or DIR. Each twin is made in a child process of its own, so each peak RSS is its
own (the kernel's accounting of that child). Printed, against the issue's targets:
1. low fidelity, the twin alone (`synth.stage.synthesise`): wall time and peak RSS (targets 60 s,
   8 GB);
2. mid fidelity as `datafirst synth` makes it (`synth.evaluate.twin_with_report`: the evaluation
   twin on half the people, the twin, and its report): wall time and peak RSS (targets 10
   minutes, 8 GB);
3. from each twin's manifest: the declared constraints it breaks and the unique real rows it copies
   (both none), and what the repair of copies took;
4. from the mid twin's own report (report/report.json): the pMSE ratio per table (target <= 10),
   the research query cells within 20% of the real figure, the declared constraints on both
   sides, replicated uniques, and distance to closest record against the holdout (target: the
   twin no closer than the held-out people), with the spread of the difference over resamples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"low_seconds": 60.0, "mid_seconds": 600.0, "peak_rss_gb": 8.0, "pmse_ratio": 10.0}


def _make_twin(workspace: Path, fidelity: str, seed: int, out: Path) -> dict:
    """In the child process: one twin, timed; its folder as JSON."""
    from datafirst.engine import open_engine
    from datafirst.release.stage import published
    from datafirst.synth.evaluate import twin_with_report
    from datafirst.synth.stage import synthesise
    from datafirst.workspace import Workspace

    ws = Workspace(workspace)
    release = published(ws)[-1]
    make = synthesise if fidelity == "low" else twin_with_report
    started = time.perf_counter()
    with open_engine(ws) as engine:
        twin = make(ws, release, fidelity, seed, engine, out=out)
    return {"seconds": time.perf_counter() - started, "path": str(twin.path), "rows": dict(twin.rows)}


def _in_child(args: argparse.Namespace, fidelity: str, out: Path) -> dict:
    result = out / f"{fidelity}.json"
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, str(args.workspace), "--seed", str(args.seed),
                             "--child", fidelity, "--child-out", str(out)])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the {fidelity} twin failed")
    made = json.loads(result.read_text())
    made["peak_rss_gb"] = usage.ru_maxrss / 1024 ** 2  # KiB on Linux
    made["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # the work, whatever else shares the cores
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="where the twins go (default: scratch, removed)")
    parser.add_argument("--child", choices=["low", "mid"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        made = _make_twin(args.workspace, args.child, args.seed, args.child_out)
        (args.child_out / f"{args.child}.json").write_text(json.dumps(made))
        return 0
    scratch = args.out or Path(tempfile.mkdtemp(prefix="bench-synth-"))
    failures: list[str] = []
    try:
        twins = {}
        for fidelity in ("low", "mid"):
            twins[fidelity] = made = _in_child(args, fidelity, scratch / fidelity)
            what = "the twin alone" if fidelity == "low" else "evaluation twin + twin + report"
            target = TARGETS[f"{fidelity}_seconds"]
            print(f"{fidelity} ({what}): {made['seconds']:.1f} s (target {target:.0f} s), peak RSS "
                  f"{made['peak_rss_gb']:.2f} GB (target {TARGETS['peak_rss_gb']:.0f} GB), "
                  f"{sum(made['rows'].values()):,} rows; CPU {made['cpu_seconds']:.1f} s")
            if made["seconds"] > target or made["peak_rss_gb"] > TARGETS["peak_rss_gb"]:
                failures.append(f"{fidelity} time or memory")
            # The twin's own account (manifest.json): constraints broken and unique rows copied, as
            # the generator measured them on the tables it wrote.
            manifest = json.loads((Path(made["path"]) / "manifest.json").read_text())
            broken = {n: v for n, v in manifest["constraints"]["violations"].items() if v}
            left = manifest["copies_repaired"]["replicated_uniques_left"]
            print(f"  {fidelity} manifest: constraints broken {broken or 'none'}; replicated uniques left "
                  f"{left or 'none'}; copies repair {({k: v for k, v in manifest['copies_repaired'].items() if k != 'replicated_uniques_left'})}")
            if broken or left:
                failures.append(f"{fidelity} constraints or copies")
        report = json.loads((Path(twins["mid"]["path"]) / "report" / "report.json").read_text())
        for t in report["utility"]["tables"]:
            ratio = (t.get("pmse") or {}).get("ratio")
            if ratio is not None:
                print(f"pMSE ratio {t['table']}: {ratio:.2f}")
                if ratio > TARGETS["pmse_ratio"]:
                    failures.append(f"pMSE ratio {t['table']}")
        s = report["summary"]
        print(f"research query cells within 20%: {s['research_query_cells_within']} of "
              f"{s['research_query_cells_compared']}")
        for c in report["utility"]["constraints"]:
            if c["violations_twin"]:
                print(f"constraint broken in the twin: {c['table']}.{c['name']}: {c['violations_twin']} of "
                      f"{c['rows_checked_twin']} rows (real: {c['violations_real']})")
        print(f"copies of unique real rows: {'none' if s['copies_passed'] else s['copies_failed_tables']}")
        for d in report["privacy"]["distance_to_closest_record"]:
            spread = d.get("difference_spread") or {}
            print(f"DCR {d['table']}: twin p5 {d['twin']['p5']} median {d['twin']['median']}; holdout p5 "
                  f"{d['holdout']['p5']} median {d['holdout']['median']}: {'pass' if d['passed'] else 'FAIL'}"
                  + (f" (twin - holdout resampled 2.5%-97.5%: p5 {spread['p5'][0]} to {spread['p5'][1]}, median "
                     f"{spread['median'][0]} to {spread['median'][1]}; "
                     f"{'closer beyond' if d['closer_beyond_sampling_error'] else 'within'} sampling error)"
                     if spread else ""))
        for key in ("research_queries_passed", "constraints_hold_in_twin", "copies_passed", "dcr_passed"):
            if s[key] is False:
                failures.append(key)
        print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    finally:
        if args.out is None:
            from datafirst.workspace import remove_tree
            remove_tree(scratch)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
