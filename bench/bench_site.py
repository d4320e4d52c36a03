"""Benchmark: building a release's catalogue site (issue 25: at most 10 s on the 1M-record world).

Times `datafirst site` on a published release, as the command does it: with the privacy guard
reading every page against the workspace's identifiers zone (the release sits in the workspace's
releases/ folder), and without it (the pages alone), each the median of `--repeat` builds. Prints
the pages written and the tables and columns they describe.

    python bench/bench_site.py WORKSPACE/releases/vNNNN [--repeat 3]

Make a 1M-record release first, e.g.
    datafirst world --people 330000 --seed 7 --out WORLD
    datafirst init WS --extracts WORLD/extracts && datafirst run -w WS
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from datafirst.release.site import site_for_release, workspace_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path, help="a published release folder (WORKSPACE/releases/vNNNN)")
    parser.add_argument("--repeat", type=int, default=3, help="builds of each kind (the median is printed)")
    args = parser.parse_args()
    ws = workspace_of(args.release)
    if ws is None:
        raise SystemExit(f"{args.release} is not in a workspace's releases/ folder: the guard needs one")
    dictionary = json.loads((args.release / "dictionary.json").read_text())
    rows = sum(t["rows"] for t in dictionary["tables"])
    columns = sum(len(t["columns"]) for t in dictionary["tables"])
    print(f"release {args.release.name}: {len(dictionary['tables'])} tables, {columns} columns, {rows:,} rows")
    for label, workspace in (("with the privacy guard", ws), ("pages alone", None)):
        times = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                summary = site_for_release(args.release, Path(tmp) / "site", workspace)
                times.append(time.perf_counter() - started)
        print(f"site {label:<24} {summary.pages} pages  median {statistics.median(times):.2f} s  "
              f"(runs: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
