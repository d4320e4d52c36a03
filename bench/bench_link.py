"""Benchmark: train and link on a world of about 1M source records; accuracy against the truth.

Prints train time, link time (predict + cluster + case journeys, with a saved model), peak
memory, raw Splink's own predict + cluster time with datafirst's model on the same standardised
table in the same process (the pipeline's overhead as a ratio), and, as the accuracy anchor, a
plain tutorial-style Splink model written by hand over the same identifiers zone (name, surname,
date of birth, postcode, sex, PNC and CRO comparisons; blocking on forename + surname, surname +
date of birth, forename + date of birth, postcode + surname, PNC and CRO), trained and timed in
the same process. Accuracy (pairwise precision, recall, F1) for each, and datafirst's per pair of
sources at medium. Targets (issue 22): datafirst's medium F1 at least 0.99 and 0.005 above the
plain model's; every source pair with 50+ true pairs at precision and recall 0.95 at medium.

    python bench/bench_link.py                        # ~1M records (348k people), generated first
    python bench/bench_link.py --people 100000        # a smaller world
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

import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from datafirst.engine import Engine
from datafirst.link.evaluate import accuracy_by_source_pair, pairwise_accuracy
from datafirst.link.inputs import INPUT_TABLE, current_model
from datafirst.link.stage import link
from datafirst.link.train import train
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace
from datafirst.world.labels import write_labels
from worlds import add_world_arguments, world_for

MEDIUM = 0.99


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def plain_splink(engine: Engine) -> dict:
    """The tutorial-style model the issue names, on the link input datafirst built: trained with
    Splink's usual steps, then predict and cluster at MEDIUM, timed apart from training."""
    settings = SettingsCreator(
        link_type="dedupe_only", unique_id_column_name="record_key",
        comparisons=[cl.NameComparison("forename").configure(term_frequency_adjustments=True),
                     cl.NameComparison("surname").configure(term_frequency_adjustments=True),
                     cl.DateOfBirthComparison("date_of_birth", input_is_string=False),
                     cl.PostcodeComparison("postcode"), cl.ExactMatch("sex"), cl.ExactMatch("pnc"),
                     cl.ExactMatch("cro")],
        blocking_rules_to_generate_predictions=[
            block_on("forename", "surname"), block_on("surname", "date_of_birth"),
            block_on("forename", "date_of_birth"), block_on("postcode", "surname"), block_on("pnc"), block_on("cro")],
        retain_matching_columns=False, retain_intermediate_calculation_columns=False)
    out = {}
    started = time.perf_counter()
    linker = Linker(DuckDBAPI(engine.con).register(INPUT_TABLE, dataset_display_name="plain"), settings,
                    log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("forename", "surname", "date_of_birth"), block_on("pnc")], recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=1)
    for rule in (block_on("date_of_birth"), block_on("forename", "surname"), block_on("pnc")):
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    out["train_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, MEDIUM)
    out["predict_cluster_s"] = round(time.perf_counter() - started, 1)
    engine.execute(f"""CREATE OR REPLACE TABLE plain_clusters AS
        SELECT c.record_key, c.cluster_id AS person_id_medium, i.source
        FROM {clusters.physical_name} c JOIN {INPUT_TABLE} i USING (record_key)""")
    return out


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
            truth = engine.parquet(labels)
            clusters = engine.parquet(ws.zone("links") / "clusters.parquet")
            out["accuracy"] = pairwise_accuracy(engine, clusters, truth)
            out["by_source_pair"] = accuracy_by_source_pair(engine, clusters, truth, ("medium",))
            out["plain_splink"] = plain_splink(engine)
            out["plain_splink"]["accuracy"] = pairwise_accuracy(engine, "plain_clusters", truth, ("medium",))
        out["peak_rss_mb"] = peak_mb()
    print(f"{out['source_records']:,} source records ({out['records']:,} linked): train {out['train_s']} s, "
          f"link {out['link_s']} s (raw Splink predict+cluster {out['raw_splink_predict_cluster_s']} s, "
          f"ratio {out['link_over_raw_splink']}), peak {out['peak_rss_mb']:,} MB")
    for a in out["accuracy"]:
        print(f"  datafirst {a['threshold']:6} precision {a['precision']:.4f} recall {a['recall']:.4f} F1 {a['f1']:.4f}")
    plain = out["plain_splink"]
    a = plain["accuracy"][0]
    print(f"  plain Splink medium precision {a['precision']:.4f} recall {a['recall']:.4f} F1 {a['f1']:.4f} "
          f"(train {plain['train_s']} s, predict+cluster {plain['predict_cluster_s']} s)")
    medium = next(x for x in out["accuracy"] if x["threshold"] == "medium")
    print(f"  datafirst medium F1 minus plain Splink's: {medium['f1'] - a['f1']:+.4f}")
    print("  per pair of sources at medium (pairs with 50+ true pairs; * below 0.95):")
    for p in out["by_source_pair"]:
        if p["true_pairs"] >= 50:
            flag = " *" if min(p["precision"], p["recall"]) < 0.95 else ""
            print(f"    {p['sources'][0]:>12} - {p['sources'][1]:<12} true {p['true_pairs']:>9,} "
                  f"P {p['precision']:.4f} R {p['recall']:.4f}{flag}")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
