"""Link: score candidate pairs with a saved model and cluster them, writing the links zone.

`link` reuses a saved model (link/train.py) without retraining: it checks the model fits the
identifiers, scores candidate pairs (every pair once on a full link, after checking no blocking
rule would explode; only the changed records' pairs on an incremental one, see `incremental`),
keeps the edges with their match weights and clusters them at three named thresholds, so every
record gets a person id at each (high within medium within low).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from splink import Linker, block_on
from splink.internals.database_api import DatabaseAPI

from ..engine import Engine
from ..files import file_sha256
from ..engine.sql import sql_string
from ..workspace import ComparisonBudget, Workspace, holding_lock, replace_folder
from . import incremental
from .inputs import (INPUT_TABLE, LinkError, check_linkable, check_rule_columns, current_model, identifier_files,
                     linker as make_linker, load_input)
from .blocking import check_blocking, expected_true_pairs
from .clusters import cluster
from .journeys import link_journeys
from .settings import Thresholds

LINKS = "links"
# Edges below this probability are not kept (nor below the low threshold, if that is lower):
# they join nothing at any threshold.
EDGE_FLOOR = 0.5


@dataclass
class LinkSummary:
    records: int
    edges: int
    clusters: dict[str, int]  # threshold name -> number of people
    model: Path
    mode: str = "full"  # or "incremental"
    changes: incremental.Changes | None = None

    def how(self) -> str:
        c = self.changes
        if self.mode != "incremental" or c is None:
            return "full link"
        return (f"incremental: {c.new:,} new, {c.changed:,} changed, {c.deleted:,} deleted records; "
                f"{c.affected:,} records re-clustered")


# Columns the link input derives from an identifier column (see _load_input).
DERIVED_FROM = {"dob_text": "date_of_birth", "forename_groups": "forename", "forename_group": "forename",
                "address_tokens": "address"}


def _model_columns(model: dict) -> set[str]:
    """The identifier columns a model's comparisons read (a derived column counts as its source)."""
    cols = set()
    for comparison in model.get("comparisons", []):
        for level in comparison.get("comparison_levels", []):
            for name in re.findall(r"\b([A-Za-z_]\w*)_[lr]\b", level.get("sql_condition", "")):
                cols.add(DERIVED_FROM.get(name, name))
    return cols


def check_model_fits(model: dict, present: set[str], path: Path) -> None:
    """Refuse a saved model whose comparisons use columns the identifiers no longer hold."""
    needed = _model_columns(model)
    missing = sorted(needed - present)
    if missing:
        raise LinkError(f"model {path.name} compares {sorted(needed)}, but the identifiers now hold no values for "
                        f"{missing}; it would be silently misapplied. Retrain with `datafirst train`.")
    # A column that has values now but had none when the model was trained means the model
    # is stale (the metadata says what training saw). Without metadata, any key column the
    # model does not compare counts as unseen.
    meta_path = path.with_suffix(".meta.json")
    seen = set(json.loads(meta_path.read_text(encoding="utf-8"))["columns"]) if meta_path.is_file() else needed
    unused = sorted({"forename", "surname", "date_of_birth", "postcode", "pnc"} & present - seen)
    if unused:
        raise LinkError(f"model {path.name} was trained without {unused}, which the identifiers now hold; "
                        "retrain with `datafirst train` so they count.")


@holding_lock
def link(ws: Workspace, engine: Engine, *, thresholds: Thresholds | None = None, model_path: Path | None = None,
         blocking_rules: list | None = None, comparison_budget: ComparisonBudget | None = None,
         full: bool = False, progress: Callable[[str, int, int], None] | None = None) -> LinkSummary:
    """Score candidate pairs with a saved model and cluster them; writes the links zone.
    Thresholds, blocking rules and the comparison budget default to the workspace config.

    When the last link used the same model, thresholds and rules, only the records that
    changed since are scored and only the people they touch are clustered again (see
    `incremental`); `full` scores everything. `progress(step, done, total)` hears of each slice of
    records scored (the CLI's bar and time estimate)."""
    cfg = ws.config().link
    thresholds = thresholds or Thresholds(**cfg.thresholds.model_dump())
    if blocking_rules is None and cfg.blocking_rules:
        blocking_rules = [block_on(*cols) for cols in cfg.blocking_rules]
    budget = comparison_budget or cfg.comparison_budget
    files = identifier_files(ws)
    check_linkable(engine, files)
    present = load_input(engine, files)
    check_rule_columns(engine, cfg.blocking_rules, "link.blocking_rules", ws)
    path = model_path or current_model(ws)
    model = json.loads(path.read_text(encoding="utf-8"))
    check_model_fits(model, present, path)
    if blocking_rules is not None:
        model["blocking_rules_to_generate_predictions"] = [
            r.get_blocking_rule(engine.dialect).as_dict() if hasattr(r, "get_blocking_rule") else r
            for r in blocking_rules]
    model = engine.model(model)  # a model trained on the other engine: its SQL in this one's dialect
    db_api = engine.splink_api()
    linker = make_linker(engine, model, db_api)
    frozen_tf = use_term_frequencies(engine, db_api, linker, model, path)
    n_records = int(engine.scalar(f"SELECT count(*) FROM {INPUT_TABLE}"))
    incremental.digest_input(engine, INPUT_TABLE, engine.columns(INPUT_TABLE))
    edge_floor = min(EDGE_FLOOR, thresholds.low)
    run = {"model": path.name, "model_sha256": file_sha256(path), "term_frequencies_saved": frozen_tf,
           "thresholds": thresholds.named(), "edge_floor": edge_floor,
           "prediction_rules": model["blocking_rules_to_generate_predictions"],
           "comparison_budget": budget.model_dump(), "record_digest": incremental.DIGEST_SCHEME}
    previous = ws.zone(LINKS)
    why_full = "asked for a full link" if full else incremental.reusable(previous, run)
    changes = None
    if why_full is None:
        changes = incremental.record_changes(engine, previous)
        share = (changes.new + changes.changed + changes.deleted) / max(n_records, 1)
        if share > incremental.MAX_CHANGED_SHARE:
            why_full = f"{share:.0%} of records changed (more than {incremental.MAX_CHANGED_SHARE:.0%})"
    tmp = ws.zones / f".{LINKS}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if why_full is None:
            # The blocking estimate of the link built on (at most MAX_CHANGED_SHARE of records have
            # changed since, and a new limit links in full, which estimates again).
            blocking = json.loads((previous / "link.json").read_text(encoding="utf-8"))["blocking"]
            incremental.link_changes(engine, db_api, linker, previous, INPUT_TABLE, thresholds.named(),
                                     edge_floor, changes)
        else:
            blocking = check_blocking(linker, engine, INPUT_TABLE, n_records, budget, model,
                                      true_pairs_of(model, path, n_records))
            # Slices by pairs, not records: each slice joins its records with all the others, so
            # slicing more finely than memory needs repeats that work (six 1M-record slices of the
            # 10M-record world's 23M pairs took 123 s to score, one 70 s).
            pairs = sum(b["comparisons"] for b in blocking)
            _link_all(engine, db_api, linker, thresholds, edge_floor,
                      chunks=max(1, -(-pairs // cfg.predict_chunk_pairs)), progress=progress)
            engine.execute("CREATE OR REPLACE TABLE link_strongest AS "
                           + incremental.strongest_links("link_edges", thresholds.medium))
        clusters = {name: int(engine.scalar(f"SELECT count(DISTINCT person_id) FROM clusters_{name}"))
                    for name in thresholds.named()}
        n_edges = engine.to_parquet("SELECT * FROM link_edges", tmp / "edges.parquet")
        engine.to_parquet("SELECT * FROM link_input_digests ORDER BY record_key", tmp / incremental.RECORDS)
        flags_sql = f"""
            SELECT i.record_key, i.source,
                   h.person_id AS person_id_high, m.person_id AS person_id_medium, l.person_id AS person_id_low,
                   h.cluster_size AS cluster_size_high, m.cluster_size AS cluster_size_medium,
                   l.cluster_size AS cluster_size_low,
                   -- uncertainty flags for sensitivity analysis
                   h.cluster_size <> l.cluster_size AS person_changes_between_thresholds,
                   s.strongest AS strongest_link_medium,
                   {reliability_sql("i", "h", "m", "l")}
            FROM {INPUT_TABLE} i
            JOIN clusters_high h USING (record_key) JOIN clusters_medium m USING (record_key)
            JOIN clusters_low l USING (record_key)
            LEFT JOIN link_strongest s USING (record_key)
            ORDER BY i.record_key"""
        engine.to_parquet(flags_sql, tmp / "clusters.parquet")
        n_journeys = link_journeys(ws, engine, tmp / "case_journeys.parquet",
                                   engine.parquet(tmp / "clusters.parquet"), cfg.journey)
        (tmp / "link.json").write_text(json.dumps({
            **run, "records": n_records, "edges": n_edges, "people": clusters, "blocking": blocking,
            "case_journeys": n_journeys,
            "mode": "full" if why_full else "incremental", "why_full": why_full,
            "changes": asdict(changes) if changes else None,
        }, indent=2), encoding="utf-8")
        replace_folder(tmp, ws.zone(LINKS))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return LinkSummary(records=n_records, edges=n_edges, clusters=clusters, model=path,
                       mode="full" if why_full else "incremental", changes=changes)


# A record with none of these is linked on names and places alone, which households and
# namesakes share: its links are flagged weak (`link_reliability_<threshold>`). The flag's values
# hold an underscore, so that none of them can be a released person's name (the privacy guard
# checks every released value against the identifiers: 'Strong' is a surname).
OWN_EVIDENCE = ("year_of_birth", "pnc", "cro", "other_id")
RELIABILITY = {"not_linked": "no other record shares its person id at this threshold",
               "strong_evidence": "linked, and the record holds a date of birth or an own identifier (police or "
                                  "system id)",
               "names_and_places_only": "linked on names and places alone (the record has no date of birth and no "
                                        "own identifier): household members and namesakes can look the same; treat "
                                        "with care"}


def true_pairs_of(model: dict, path: Path, records: int) -> float:
    """Pairs of one person's records expected among `records`, from the model's prior and the
    records it was trained on (its metadata; without it, taken as today's)."""
    meta_path = path.with_suffix(".meta.json")
    trained = json.loads(meta_path.read_text(encoding="utf-8")).get("records", records) if meta_path.is_file() else records
    return expected_true_pairs(model.get("probability_two_random_records_match"), trained, records)


def reliability_sql(record: str, *clusters: str) -> str:
    """The columns `link_reliability_high`, `_medium`, `_low` (see RELIABILITY), from the input
    record's alias and the aliases of its high, medium and low clusters."""
    weak = " AND ".join(f"{record}.{c} IS NULL" for c in OWN_EVIDENCE)
    return ", ".join(f"CASE WHEN {c}.cluster_size = 1 THEN 'not_linked' WHEN {weak} THEN 'names_and_places_only' "
                     f"ELSE 'strong_evidence' END AS link_reliability_{name}"
                     for name, c in zip(("high", "medium", "low"), clusters))


def use_term_frequencies(engine: Engine, db_api: DatabaseAPI, linker: Linker, model: dict, path: Path) -> bool:
    """Score with the term frequencies saved with the model, so that a pair's score depends on
    the pair and the model only, not on what else is in today's data: a full link and an
    incremental one then give the same scores, and a pair keeps its score until retraining.
    A value the model never saw counts as the rarest it saw. Models saved without term
    frequencies use today's data's (and the result says so: False)."""
    meta_path = path.with_suffix(".meta.json")
    saved = json.loads(meta_path.read_text(encoding="utf-8")).get("term_frequencies", {}) if meta_path.is_file() else {}
    frozen = True
    for col in incremental.tf_columns(model):
        if col not in saved:
            linker.table_management.compute_tf_table(col)
            frozen = False
            continue
        table = sql_string(path.parent / saved[col])
        engine.execute(f"""CREATE OR REPLACE TABLE link_tf_{col} AS
            SELECT {col}, tf_{col} FROM read_parquet({table})
            UNION ALL
            SELECT DISTINCT i.{col}, (SELECT min(tf_{col}) FROM read_parquet({table})) FROM {INPUT_TABLE} i
            WHERE i.{col} IS NOT NULL AND i.{col} NOT IN (SELECT {col} FROM read_parquet({table}))""")
        linker.table_management.register_term_frequency_lookup(
            db_api.register(f"link_tf_{col}", dataset_display_name=f"term frequencies of {col}"), col)
    return frozen


def _link_all(engine: Engine, db_api: DatabaseAPI, linker: Linker, thresholds: Thresholds, edge_floor: float,
              chunks: int, progress: Callable[[str, int, int], None] | None = None) -> None:
    """`link_edges` and `clusters_<threshold>` from scoring every candidate pair.

    With more than one chunk, pairs are scored a slice of left-hand records at a time
    (Splink's `predict_chunk`): each pair still once, but the engine holds and spills only
    one slice's blocked pairs at a time (before the comparison budget, the 10M-record world's
    blocking made billions of pairs, and scoring them at once filled 70 GB of disk)."""
    report = progress or (lambda step, done, total: None)
    steps = chunks + 1
    report("scoring pairs", 0, steps)
    if chunks <= 1:
        parts = [linker.inference.predict(threshold_match_probability=edge_floor)]
        report("scoring pairs", 1, steps)
    else:
        parts = []
        for i in range(1, chunks + 1):
            parts.append(linker.inference.predict_chunk(left_chunk=(i, chunks), threshold_match_probability=edge_floor))
            report(f"scoring pairs: slice {i} of {chunks}", i, steps)
    engine.execute("CREATE OR REPLACE TABLE link_edges AS " + " UNION ALL ".join(
        f"SELECT record_key_l, record_key_r, source_l, source_r, match_weight, match_probability "
        f"FROM {p.physical_name}" for p in parts) + " ORDER BY record_key_l, record_key_r")
    for p in parts:
        p.drop_table_from_database_and_remove_from_cache()
    report("clustering", chunks, steps)
    cluster(engine, db_api, INPUT_TABLE, "link_edges", thresholds.named(), incremental.cluster_label)
    report("clustered", steps, steps)
