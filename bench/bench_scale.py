"""Benchmark: the cost curve from about 100k to 10M source records, per stage, on one machine.

Each world size runs in its own child process: the world is generated (or reused from
`--cache`), then ingest, standardise, train, link and release run on DuckDB one after the other.
Per stage it records the time, the peak resident memory of that stage alone (Linux: the peak is
reset before each stage), and for the link the candidate pairs scored. The parent prints one
line per size, fits the exponent of time and of pairs against records (log-log least squares,
over all sizes and from 1M up), and draws the curve to an SVG (`--svg`, default
docs/images/scale-curve.svg).

Targets (issue 24): the 10M world end to end with a saved model in at most 10 minutes and 12 GB,
training at 10M in at most 3 minutes; from 1M to 10M the exponent of link time and of pairs at
most 1.15.

    python bench/bench_scale.py                                  # 100k, 300k, 1M, 3M, 10M records
    python bench/bench_scale.py --records 100000 1000000         # some sizes only
    python bench/bench_scale.py --cache /big/disk/worlds         # keep generated worlds for reruns
    python bench/bench_scale.py --memory-limit 10GB              # DuckDB's memory limit per stage
    python bench/bench_scale.py --records 10000000 --results R   # add one size to the sizes kept in R

`--results FILE` keeps each size's figures as a line of JSON (a size measured again replaces its
line); the exponents and the curve are drawn over every size the file holds, so sizes can be
measured in separate runs. A size that fails is reported and the others still run.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

RECORDS_PER_PERSON = 2.87  # source records per person in the world (bench_world.py measures it)
SIZES = (100_000, 300_000, 1_000_000, 3_000_000, 10_000_000)
STAGES = ("ingest", "standardise", "train", "link", "release")

CHILD = r"""
import json, os, sys, time
from pathlib import Path
from datafirst.engine import open_engine
from datafirst.link.stage import link
from datafirst.link.train import train
from datafirst.release.hashing_key import SALT_FILE_ENV, make_demo_salt
from datafirst.release.signing import SIGNING_KEY_FILE_ENV, make_demo_signing_key
from datafirst.release.stage import release
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace
from datafirst.world import generate_world

world, root, people, memory_limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def reset_peak():
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from now

def peak_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)

out = {"people": people, "stages": {}}
if not (world / "world.json").is_file():
    t = time.perf_counter()
    generate_world(world, people, seed=2026)
    out["world_s"] = round(time.perf_counter() - t, 1)
os.environ[SALT_FILE_ENV] = str(make_demo_salt(root.parent / "bench.salt"))
os.environ[SIGNING_KEY_FILE_ENV] = str(make_demo_signing_key(root.parent / "bench-signing.key"))
ws = Workspace.init(root, world / "extracts")
if memory_limit != "-":
    ws.config_path.write_text(ws.config_path.read_text() + f"memory_limit: {memory_limit}\n")
steps = {"ingest": lambda e: ingest(ws, e), "standardise": lambda e: standardise(ws, e),
         "train": lambda e: train(ws, e), "link": lambda e: link(ws, e, full=True),
         "release": lambda e: release(ws, e)}
for name, step in steps.items():
    reset_peak()
    t = time.perf_counter()
    with open_engine(ws) as engine:
        step(engine)
    out["stages"][name] = {"seconds": round(time.perf_counter() - t, 1), "peak_rss_mb": peak_mb()}
meta = json.loads((ws.zone("links") / "link.json").read_text())
out["identifier_records"] = meta["records"]
out["pairs_scored"] = sum(b["comparisons"] for b in meta["blocking"])
out["edges"] = meta["edges"]
print("RESULT " + json.dumps(out))
"""


def _source_records(world: Path) -> int:
    return int(json.loads((world / "world.json").read_text())["records"])


def run_size(records: int, cache: Path, work: Path, memory_limit: str) -> dict:
    people = max(50, round(records / RECORDS_PER_PERSON))
    world = cache / f"world-{people}"
    root = work / f"ws-{people}"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(world), str(root), str(people), memory_limit],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"size {records:,} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["records"] = _source_records(world)
    out["end_to_end_saved_model_s"] = round(sum(s["seconds"] for n, s in out["stages"].items() if n != "train"), 1)
    out["peak_rss_mb"] = max(s["peak_rss_mb"] for s in out["stages"].values())
    return out


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """The slope of log y against log x (least squares)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / den, 3) if den else None


def svg(results: list[dict], path: Path) -> None:
    """Log-log lines of each stage's seconds and of pairs scored (per 100k) against records."""
    w, h, pad, right = 760, 420, 60, 180  # room on the right for the lines' names
    xs = [r["records"] for r in results]
    series = {s: [r["stages"][s]["seconds"] for r in results] for s in STAGES}
    series["pairs scored / 100k"] = [r["pairs_scored"] / 1e5 for r in results]
    ys = [v for vals in series.values() for v in vals if v > 0]
    lx0, lx1 = math.log10(min(xs)), math.log10(max(xs))
    ly0, ly1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    lx1 = lx1 if lx1 > lx0 else lx0 + 1

    def px(x: float) -> float:
        return pad + (math.log10(x) - lx0) / (lx1 - lx0) * (w - pad - right)

    def py(y: float) -> float:
        return h - pad - (math.log10(y) - ly0) / (ly1 - ly0) * (h - 2 * pad)

    colours = ["#1b6ca8", "#7a9a01", "#c0392b", "#8e44ad", "#d35400", "#555555"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="11"><rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="13">datafirst on one machine: seconds per '
             'stage and pairs scored against source records (log-log)</text>']
    for e in range(ly0, ly1 + 1):
        parts.append(f'<line x1="{pad}" x2="{w - right}" y1="{py(10 ** e):.1f}" y2="{py(10 ** e):.1f}" stroke="#ddd"/>'
                     f'<text x="{pad - 6}" y="{py(10 ** e) + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
    for x in xs:
        parts.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{pad}" y2="{h - pad}" stroke="#eee"/>'
                     f'<text x="{px(x):.1f}" y="{h - pad + 16}" text-anchor="middle">{x / 1e6:.2g}M</text>')
    labels = []  # each line's name at its last point, moved down where it would overlap the one above
    for (name, vals), colour in zip(series.items(), colours):
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, vals) if y > 0)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        last = [(x, y) for x, y in zip(xs, vals) if y > 0][-1]
        labels.append((py(last[1]) + 4, px(last[0]) + 6, colour, name))
    previous = -math.inf
    for y, x, colour, name in sorted(labels):
        y = max(y, previous + 13)
        previous = y
        parts.append(f'<text x="{x:.1f}" y="{y:.1f}" fill="{colour}">{name}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">source records</text></svg>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=list(SIZES), help="source records per world")
    parser.add_argument("--cache", type=Path, help="keep generated worlds here (default: a temporary folder)")
    parser.add_argument("--memory-limit", default="-", help="DuckDB memory_limit for every stage, e.g. 10GB")
    parser.add_argument("--results", type=Path, help="a JSON-lines file keeping each size's figures across runs")
    parser.add_argument("--svg", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "images"
                        / "scale-curve.svg")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        cache = args.cache or Path(tmp) / "worlds"
        cache.mkdir(parents=True, exist_ok=True)
        kept = {}
        if args.results and args.results.is_file():
            kept = {r["people"]: r for r in map(json.loads, args.results.read_text().splitlines()) if r}
        failed = []
        for n in sorted(args.records):
            try:
                r = run_size(n, cache, Path(tmp), args.memory_limit)
            except RuntimeError as exc:
                print(exc, flush=True)
                failed.append(n)
                continue
            kept[r["people"]] = r
            if args.results:
                args.results.write_text("".join(json.dumps(x) + "\n" for x in kept.values()))
            stages = ", ".join(f"{k} {v['seconds']} s / {v['peak_rss_mb']} MB" for k, v in r["stages"].items())
            print(f"{r['records']:>11,} records ({r['identifier_records']:,} linked): {stages}; pairs scored "
                  f"{r['pairs_scored']:,}; end to end with a saved model {r['end_to_end_saved_model_s']} s, "
                  f"peak {r['peak_rss_mb']} MB", flush=True)
    results = sorted(kept.values(), key=lambda r: r["records"])
    xs = [r["records"] for r in results]
    fits = {}
    for label, subset in (("all sizes", results), ("1M and up", [r for r in results if r["records"] >= 900_000])):
        sx = [r["records"] for r in subset]
        fits[label] = {s: exponent(sx, [r["stages"][s]["seconds"] for r in subset]) for s in STAGES}
        fits[label]["pairs_scored"] = exponent(sx, [r["pairs_scored"] for r in subset])
        fits[label]["end_to_end_saved_model"] = exponent(sx, [r["end_to_end_saved_model_s"] for r in subset])
        print(f"exponents ({label}): " + ", ".join(f"{k} {v}" for k, v in fits[label].items()))
    if len(xs) >= 2:
        svg(results, args.svg)
        print(f"curve: {args.svg}")
    print(json.dumps({"sizes": results, "exponents": fits}, indent=2))
    if failed:
        raise SystemExit(f"failed: {', '.join(f'{n:,}' for n in failed)} records (above)")


if __name__ == "__main__":
    main()
