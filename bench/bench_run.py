"""Benchmark: `datafirst run` on a world of about 1M source records, per stage, with a saved model.

The model is trained first (not timed here: see bench_link.py), as in production where a run
reuses the saved model. Prints each stage's time, the whole run's, peak memory, and the whole
run as a multiple of the link stage timed in the same run (target, issue 5: at most 1.5x,
at most 8 GB).

    python bench/bench_run.py [--world DIR | --people N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from datafirst.engine import Engine
from datafirst.link.stage import train
from datafirst.release.hashing_key import SALT_FILE_ENV, make_demo_salt
from datafirst.run import Runner, peak_memory_mb
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace
from worlds import add_world_arguments, world_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        world = world_for(args, Path(tmp))
        os.environ[SALT_FILE_ENV] = str(make_demo_salt(Path(tmp) / "bench.salt"))
        # A saved model, as a production run would have.
        model_ws = Workspace.init(Path(tmp) / "model", world / "extracts")
        with Engine() as engine:
            ingest(model_ws, engine)
            standardise(model_ws, engine)
            train(model_ws, engine)
        ws = Workspace.init(Path(tmp) / "ws", world / "extracts")
        (ws.root / "models").mkdir()
        for f in (model_ws.root / "models").iterdir():
            (ws.root / "models" / f.name).write_bytes(f.read_bytes())
        started = time.perf_counter()
        results = Runner(ws).run()
        total = time.perf_counter() - started
        stages = {r.stage: r.seconds for r in results}
        out = {"source_records": json.loads((world / "world.json").read_text())["records"], "stages_s": stages,
               "total_s": round(total, 1), "run_over_link": round(total / stages["link"], 2),
               "peak_rss_mb": peak_memory_mb()}
        print(" ".join(f"{k} {v} s" for k, v in stages.items()) + f"; total {out['total_s']} s = "
              f"{out['run_over_link']} x link; peak {out['peak_rss_mb']:,} MB")
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
