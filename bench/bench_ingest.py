"""Benchmark: ingest + standardise on a world of about 1M source records (time, peak memory).

Target (issue 3): at most 60 s and 4 GB on the 2-core reference machine.

    python bench/bench_ingest.py                 # generates a 1M-record world first (about 25 s, not timed)
    python bench/bench_ingest.py --world DIR     # reuse a world made by `datafirst world`
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from datafirst.engine import Engine
from datafirst.sources.ingest import ingest
from datafirst.standardise.quality import write_report
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace
from worlds import add_world_arguments, world_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        world = world_for(args, Path(tmp))
        records = json.loads((world / "world.json").read_text())["records"]
        ws = Workspace.init(Path(tmp) / "ws", world / "extracts")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with Engine(temp_directory=ws.scratch) as engine:
            t0 = time.perf_counter()
            loads = ingest(ws, engine)
            t1 = time.perf_counter()
            standardise(ws, engine)
            t2 = time.perf_counter()
            write_report(ws, engine)
            t3 = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result = {
            "source_records": records, "landed": sum(x.landed for x in loads),
            "quarantined": sum(x.quarantined for x in loads),
            "ingest_s": round(t1 - t0, 1), "standardise_s": round(t2 - t1, 1), "quality_report_s": round(t3 - t2, 1),
            "total_s": round(t3 - t0, 1), "peak_rss_mb": round(peak), "peak_rss_before_mb": round(rss_before / 1024),
        }
        print(f"{records:,} records: ingest {result['ingest_s']} s, standardise {result['standardise_s']} s, "
              f"quality report {result['quality_report_s']} s, total {result['total_s']} s, peak {result['peak_rss_mb']:,} MB")
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
