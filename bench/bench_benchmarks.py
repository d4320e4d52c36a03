"""Linkage accuracy on public labelled benchmarks, each onboarded through a contract alone.

FEBRL3 (dedupe), FEBRL4 (two files to link) and Splink's fake_1000 (dedupe; names, dates of
birth, cities and emails) from ../shared/data, with the default model
(no per-dataset tuning: the contracts in bench/contracts only give column roles). Prints
pairwise precision, recall and F1 at each threshold, and the time taken.

    python bench/bench_benchmarks.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from datafirst.engine import Engine
from datafirst.engine.sql import sql_string
from datafirst.link.evaluate import pairwise_accuracy
from datafirst.link.stage import link
from datafirst.link.train import train
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace

HERE = Path(__file__).resolve().parent
BENCHMARKS = {"febrl3": ["febrl3.yaml"], "febrl4": ["febrl4a.yaml", "febrl4b.yaml"], "fake_1000": ["fake_1000.yaml"]}
# The true person of each record. FEBRL record ids are rec-N-org / rec-N-dup-k: the same N is
# the same person. fake_1000 says it in a `cluster` column, which its contract keeps as content.
TRUTH = {
    "febrl3": "SELECT record_key, regexp_extract(record_key, 'rec-([0-9]+)', 1) AS true_id FROM {clusters}",
    "febrl4": "SELECT record_key, regexp_extract(record_key, 'rec-([0-9]+)', 1) AS true_id FROM {clusters}",
    "fake_1000": "SELECT record_key, CAST(cluster AS VARCHAR) AS true_id FROM read_parquet({content})",
}


def run_benchmark(name: str, data: Path, root: Path) -> dict:
    ws = Workspace.init(root / name, data, with_world_contracts=False)
    for contract in BENCHMARKS[name]:
        shutil.copyfile(HERE / "contracts" / contract, ws.root / "contracts" / contract)
    started = time.perf_counter()
    with Engine() as engine:
        ingest(ws, engine)
        standardise(ws, engine)
        train(ws, engine)
        link(ws, engine)
        clusters = f"read_parquet({sql_string(ws.zone('links') / 'clusters.parquet')})"
        content = sql_string(f"{ws.zone('content')}/*.parquet")
        engine.execute("CREATE TABLE truth AS " + TRUTH[name].format(clusters=clusters, content=content))
        acc = pairwise_accuracy(engine, clusters, "truth")
    return {"benchmark": name, "seconds": round(time.perf_counter() - started, 1), "accuracy": acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-febrl-") as tmp:
        for name in BENCHMARKS:
            r = run_benchmark(name, args.data, Path(tmp))
            results.append(r)
            for a in r["accuracy"]:
                print(f"{name:7} {a['threshold']:6} precision {a['precision']:.4f} recall {a['recall']:.4f} "
                      f"F1 {a['f1']:.4f}  ({a['true_pairs']:,} true pairs)")
            print(f"{name:7} {r['seconds']} s")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
