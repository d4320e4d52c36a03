"""Linkage accuracy on the test sets unlike the justice world: datafirst against a plain Splink model.

For each test set (src/datafirst/testsets: `census`, a US census extract and a benefits
registry; `historical`, old European records to deduplicate): generate it, onboard it through
its contracts alone, run ingest, standardise, train and link with datafirst's default model,
and measure pairwise precision, recall and F1 against the set's labels (overall and per pair
of sources). Then, on the same standardised identifiers in the same process, run the anchor:
a plain Splink 5 model written by hand as a competent Splink user would (name, date of birth,
address, postcode, sex, birth place and occupation comparisons with term frequencies, a
handful of blocking rules, the usual three training steps), clustered at datafirst's medium threshold.
The anchor uses only the identifier columns that exist and hold values, so it keeps working
while the linkage model changes. A datafirst failure is reported and the anchor still runs.

    python bench/bench_testsets.py [--sets census historical] [--seed 1] [--people N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from datafirst.engine import Engine
from datafirst.engine.sql import sql_string
from datafirst.link.evaluate import accuracy_by_source_pair, pairwise_accuracy
from datafirst.link.stage import link
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.testsets import TESTSETS
from datafirst.workspace import Workspace

try:
    from datafirst.link.train import train
except ImportError:  # train lived in link.stage before the linkage model's rewrite
    from datafirst.link.stage import train

MEDIUM = 0.99           # datafirst's medium threshold (match probability)
PREDICT_FROM = 0.5      # pairs scored below this are not kept
U_PAIRS = 5e6
RECALL_OF_RULES = 0.7   # the assumed recall of the deterministic rules for the prior
USEFUL = 0.01           # a column is used when at least this share of records has a value
# Columns the anchor may use, as the identifiers zone names them (compare attributes by name).
ANCHOR_COLUMNS = ("forename", "surname", "date_of_birth", "year_of_birth", "address", "postcode", "sex",
                  "birth_place", "occupation")


def _truth(engine: Engine, labels: Path) -> None:
    engine.execute(f"""CREATE OR REPLACE TABLE truth AS
        SELECT source || '|' || "table" || '|' || record_id AS record_key, true_id
        FROM read_csv({sql_string(labels)}, all_varchar = true)""")


def run_datafirst(ws: Workspace, engine: Engine) -> dict:
    """Datafirst's stages with their times, then its accuracy at every threshold."""
    times = {}
    for name, stage in (("ingest", ingest), ("standardise", standardise), ("train", train), ("link", link)):
        started = time.perf_counter()
        try:
            stage(ws, engine)
        except Exception as exc:
            raise RuntimeError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
        times[name] = round(time.perf_counter() - started, 1)
    clusters = engine.parquet(ws.zone("links") / "clusters.parquet")
    return {"seconds": times, "accuracy": pairwise_accuracy(engine, clusters, "truth"),
            "by_source_pair": accuracy_by_source_pair(engine, clusters, "truth")}


def _filled(engine: Engine, table: str, columns: list[str]) -> set[str]:
    """The columns of `table` with a value in at least USEFUL of its rows."""
    shares = engine.execute(f"SELECT {', '.join(f'avg(({c} IS NOT NULL)::INT)' for c in columns)} FROM {table}")[0]
    return {c for c, share in zip(columns, shares) if share is not None and share >= USEFUL}


def anchor_settings(have: set[str]) -> tuple[SettingsCreator, list, list]:
    """The hand-written model for the columns `have`: settings, the deterministic rules for the
    prior, and the EM blocking rules."""
    comparisons = []
    for name in ("forename", "surname"):
        if name in have:
            comparisons.append(cl.NameComparison(name).configure(term_frequency_adjustments=True))
    if "date_of_birth" in have:
        comparisons.append(cl.DateOfBirthComparison("date_of_birth", input_is_string=False))
    elif "year_of_birth" in have:
        comparisons.append(cl.CustomComparison("year_of_birth", [
            cll.NullLevel("year_of_birth"), cll.ExactMatchLevel("year_of_birth"),
            cll.AbsoluteDifferenceLevel("year_of_birth", 1), cll.AbsoluteDifferenceLevel("year_of_birth", 3),
            cll.ElseLevel()]))
    if "address" in have:
        comparisons.append(cl.JaroWinklerAtThresholds("address", [0.95, 0.88]).configure(
            term_frequency_adjustments=True))
    if "postcode" in have:
        comparisons.append(cl.PostcodeComparison("postcode"))
    if "sex" in have:
        comparisons.append(cl.ExactMatch("sex"))
    if "birth_place" in have:
        comparisons.append(cl.ExactMatch("birth_place").configure(term_frequency_adjustments=True))
    if "occupation" in have:
        comparisons.append(cl.JaroWinklerAtThresholds("occupation", [0.9, 0.8]))
    candidates = [("forename", "surname"), ("surname", "date_of_birth"), ("forename", "date_of_birth"),
                  ("surname", "year_of_birth"), ("surname", "birth_place"), ("forename", "birth_place"),
                  ("address",), ("postcode",), ("surname", "occupation")]
    blocking = [block_on(*cols) for cols in candidates if set(cols) <= have]
    dob = "date_of_birth" if "date_of_birth" in have else "year_of_birth"
    deterministic = [block_on(*cols) for cols in (("forename", "surname", dob), ("forename", "surname", "address"),
                                                   ("forename", "surname", "birth_place")) if set(cols) <= have]
    em = [block_on(*cols) for cols in ((dob,), ("forename", "surname"), ("surname", "address"),
                                       ("surname", "birth_place")) if set(cols) <= have][:3]
    settings = SettingsCreator(link_type="dedupe_only", comparisons=comparisons,
                               blocking_rules_to_generate_predictions=blocking, retain_matching_columns=False,
                               retain_intermediate_calculation_columns=False)
    return settings, deterministic, em


def run_anchor(engine: Engine, ws: Workspace) -> dict:
    """The hand-written Splink model on datafirst's identifiers zone, clustered at MEDIUM."""
    started = time.perf_counter()
    zone = f"read_parquet({sql_string(str(ws.zone('identifiers') / '*.parquet'))})"
    present = [c for c in ANCHOR_COLUMNS if c in {r[0] for r in engine.execute(f"DESCRIBE SELECT * FROM {zone}")}]
    engine.execute(f"CREATE OR REPLACE TABLE anchor_input AS SELECT record_key AS unique_id, source, "
                   f"{', '.join(present)} FROM {zone}")
    have = _filled(engine, "anchor_input", present)
    # The full date when most records with a known year have one (else the year alone: old
    # records, or a date known only by its year).
    if {"date_of_birth", "year_of_birth"} <= have:
        dated, yeared = engine.execute("SELECT count(date_of_birth), count(year_of_birth) FROM anchor_input")[0]
        if dated < 0.5 * yeared:
            have.discard("date_of_birth")
    settings, deterministic, em = anchor_settings(have)
    linker = Linker(DuckDBAPI(engine.con).register("anchor_input", dataset_display_name="anchor"), settings,
                    log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=RECALL_OF_RULES)
    linker.training.estimate_u_using_random_sampling(max_pairs=U_PAIRS, seed=1)
    for rule in em:
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    predictions = linker.inference.predict(threshold_match_probability=PREDICT_FROM)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, MEDIUM)
    engine.execute(f"""CREATE OR REPLACE TABLE anchor_clusters AS
        SELECT c.unique_id AS record_key, c.cluster_id AS person_id_medium, i.source
        FROM {clusters.physical_name} c JOIN anchor_input i USING (unique_id)""")
    return {"seconds": round(time.perf_counter() - started, 1), "columns": sorted(have),
            "blocking_rules": len(settings.blocking_rules_to_generate_predictions),
            "accuracy": pairwise_accuracy(engine, "anchor_clusters", "truth", thresholds=("medium",)),
            "by_source_pair": accuracy_by_source_pair(engine, "anchor_clusters", "truth", thresholds=("medium",))}


def run_set(name: str, out: Path, people: int | None, seed: int) -> dict:
    shutil.rmtree(out / name, ignore_errors=True)  # a set's folder from an earlier run with the same --out
    started = time.perf_counter()
    data = TESTSETS[name](out / name / "data", people=people, seed=seed)
    result: dict = {"set": name, "generate_s": round(time.perf_counter() - started, 1),
                    "records": json.loads((data / "testset.json").read_text())["records"]}
    ws = Workspace.init(out / name / "workspace", data / "extracts", with_world_contracts=False)
    for contract in sorted((data / "contracts").glob("*.yaml")):
        shutil.copyfile(contract, ws.root / "contracts" / contract.name)
    with Engine(temp_directory=ws.scratch) as engine:
        _truth(engine, data / "labels.csv")
        try:
            result["datafirst"] = run_datafirst(ws, engine)
        except Exception as exc:  # report and go on with the anchor: the model is being rewritten
            result["datafirst"] = {"error": str(exc), "traceback": traceback.format_exc()}
        if not ws.zone("identifiers").exists() or not any(ws.zone("identifiers").glob("*.parquet")):
            result["anchor"] = {"error": "no identifiers zone (standardise did not finish)"}
        else:
            result["anchor"] = run_anchor(engine, ws)
    return result


def _medium(part: dict) -> str:
    if "error" in part:
        return f"{'error':>24}"
    a = next(a for a in part["accuracy"] if a["threshold"] == "medium")
    return f"{a['precision']:>7.4f} {a['recall']:>7.4f} {a['f1']:>7.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(TESTSETS), default=list(TESTSETS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--people", type=int, default=None, help="people per set (default: each set's own)")
    parser.add_argument("--out", type=Path, default=None, help="keep the sets and workspaces here (a set's folder is replaced)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-testsets-") as tmp:
        out = args.out or Path(tmp)
        results = [run_set(name, out, args.people, args.seed) for name in args.sets]
    for r in results:
        df = r["datafirst"]
        if "error" in df:
            print(f"{r['set']}: datafirst failed: {df['error']}")
        for part in ("datafirst", "anchor"):
            for a in r[part].get("by_source_pair", []):
                if a["threshold"] == "medium":
                    print(f"{r['set']:10} {part:9} {' x '.join(a['sources']):22} precision {a['precision']:.4f} "
                          f"recall {a['recall']:.4f} F1 {a['f1']:.4f} ({a['true_pairs']:,} true pairs)")
    print(json.dumps([{**r, "datafirst": {k: v for k, v in r["datafirst"].items() if k != "traceback"}}
                      for r in results], indent=1, ensure_ascii=False))
    print(f"\n{'set':10} {'records':>8}  {'datafirst medium P / R / F1':>24}  {'anchor P / R / F1':>24}  "
          f"{'gen s':>5} {'datafirst s':>11} {'anchor s':>8}")
    for r in results:
        seconds = {part: (f"{sum(r[part]['seconds'].values()):.1f}" if isinstance(r[part].get("seconds"), dict)
                          else str(r[part].get("seconds", "-"))) for part in ("datafirst", "anchor")}
        print(f"{r['set']:10} {r['records']:>8,}  {_medium(r['datafirst'])}  {_medium(r['anchor'])}  "
              f"{r['generate_s']:>5} {seconds['datafirst']:>11} {seconds['anchor']:>8}")

if __name__ == "__main__":
    main()
