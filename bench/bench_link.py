"""Benchmark: train and link on a world of about 1M source records; accuracy against the truth.

Prints train time, link time (predict + cluster + case journeys, with a saved model), peak
memory, and raw Splink's own predict + cluster time on the same standardised table in the
same process, so the pipeline's overhead is a ratio. Targets (issue 4): link at most 3 min,
training at most 5 min, at most 8 GB on the 2-core reference machine.

    python bench/bench_link.py                        # ~1M records (348k people), generated first
    python bench/bench_link.py --people 100000        # the 100k-person world of the accuracy target
    python bench/bench_link.py --world DIR            # reuse a world made by `datafirst world`
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from pathlib import Path

from splink import DuckDBAPI, Linker

from datafirst.engine import Engine
from datafirst.link.evaluate import pairwise_accuracy
from datafirst.link.inputs import INPUT_TABLE, current_model
from datafirst.link.stage import link
from datafirst.link.train import train
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace
from datafirst.world.labels import write_labels
from worlds import add_world_arguments, world_for


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(parser)
    args = parser.parse_args()
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-link-") as tmp:
        world = world_for(args, Path(tmp))
        out["source_records"] = json.loads((world / "world.json").read_text())["records"]
        ws = Workspace.init(Path(tmp) / "ws", world / "extracts")
        with Engine(temp_directory=ws.scratch) as engine:
            ingest(ws, engine)
            standardise(ws, engine)
        with Engine(temp_directory=ws.scratch) as engine:
            t = time.perf_counter()
            train(ws, engine)
            out["train_s"] = round(time.perf_counter() - t, 1)
        out["peak_after_train_mb"] = peak_mb()
        with Engine(temp_directory=ws.scratch) as engine:
            t = time.perf_counter()
            summary = link(ws, engine)
            out["link_s"] = round(time.perf_counter() - t, 1)
            out["records"], out["edges"], out["people"] = summary.records, summary.edges, summary.clusters
            out["peak_after_link_mb"] = peak_mb()
            # Raw Splink on the same input table, same model, same process: predict + 3 clusterings.
            model = json.loads(current_model(ws).read_text())
            t = time.perf_counter()
            linker = Linker(DuckDBAPI(engine.con).register(INPUT_TABLE, dataset_display_name="raw"), model,
                            log_level=logging.ERROR)
            pred = linker.inference.predict(threshold_match_probability=0.5)
            for p in ws.config().link.thresholds.model_dump().values():
                linker.clustering.cluster_pairwise_predictions_at_threshold(pred, threshold_match_probability=p)
            out["raw_splink_predict_cluster_s"] = round(time.perf_counter() - t, 1)
            out["link_over_raw_splink"] = round(out["link_s"] / out["raw_splink_predict_cluster_s"], 2)
            labels = write_labels(world, Path(tmp) / "labels.parquet")
            out["accuracy"] = pairwise_accuracy(engine, engine.parquet(ws.zone("links") / "clusters.parquet"),
                                                engine.parquet(labels))
        out["peak_rss_mb"] = peak_mb()
    print(f"{out['source_records']:,} source records ({out['records']:,} linked): train {out['train_s']} s, "
          f"link {out['link_s']} s (raw Splink predict+cluster {out['raw_splink_predict_cluster_s']} s, "
          f"ratio {out['link_over_raw_splink']}), peak {out['peak_rss_mb']:,} MB")
    for a in out["accuracy"]:
        print(f"  {a['threshold']:6} precision {a['precision']:.4f} recall {a['recall']:.4f} F1 {a['f1']:.4f}")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
