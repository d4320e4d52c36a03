"""Train and link: Splink over the identifiers zone, writing the links zone.

`train` estimates a model from the identifiers and saves it as a versioned Splink JSON with
metadata. `link` reuses a saved model without retraining: it checks the model fits the
identifiers, scores candidate pairs (every pair once on a full link, after checking no blocking
rule would explode; only the changed records' pairs on an incremental one, see `incremental`),
keeps the edges with their match weights and clusters them at three named thresholds, so every
record gets a person id at each (high within medium within low).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from splink import Linker, block_on
from splink.internals.database_api import DatabaseAPI
from splink.internals.exceptions import EMTrainingException
from splink.clustering import cluster_pairwise_predictions_at_threshold
from splink.internals.parse_sql import get_columns_used_from_sql
from splink.internals.settings import Settings

from .. import __version__
from ..engine import Engine
from ..files import file_sha256
from ..engine.sql import sql_string
from ..standardise.stage import IDENTIFIERS
from ..workspace import Workspace, holding_lock, replace_folder
from . import incremental
from .journeys import link_journeys
from .settings import LINKING_ROLES, MIN_LINKING_ROLES, Thresholds, model_spec, settings

LINKS = "links"
MODELS = "models"
INPUT_TABLE = "link_input"
# Edges below this probability are not kept (nor below the low threshold, if that is lower):
# they join nothing at any threshold.
EDGE_FLOOR = 0.5
ROLE_COLUMNS = {"name": ("forename", "surname"), "date_of_birth": ("date_of_birth",), "postcode": ("postcode",),
                "address": ("address",), "pnc": ("pnc",), "cro": ("cro",), "other_id": ("other_id",)}


# Recall assumed for the deterministic rules before the model can estimate it.
ASSUMED_RECALL = 0.8
# Bounds on the estimated recall: below the floor the estimate is a failed fit, not data.
MIN_RECALL, MAX_RECALL = 0.05, 1.0
# Record pairs sampled at random to estimate u.
U_SAMPLE_PAIRS = 2_000_000


class LinkError(Exception):
    """Linkage that must not go ahead; the message says why and what to do."""


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


def _identifier_files(ws: Workspace) -> list[Path]:
    files = sorted(ws.zone(IDENTIFIERS).glob("*.parquet"))
    if not files:
        raise LinkError(f"no identifiers in {ws.zone(IDENTIFIERS)}; run `datafirst standardise` first")
    return files


def check_linkable(engine: Engine, files: list[Path]) -> None:
    """Refuse a source whose identifiers give too few roles to link on. An address counts only
    where the model compares it: when no source has postcodes (see settings.model_spec)."""
    by_file = {}
    for path in files:
        counts = engine.execute(
            "SELECT " + ", ".join(f"count(*) FILTER (WHERE {' OR '.join(f'{c} IS NOT NULL' for c in cols)})"
                                  for cols in ROLE_COLUMNS.values()) + f", count(*) FROM {engine.parquet(path)}")[0]
        if counts[-1]:
            by_file[path] = [role for role, n in zip(ROLE_COLUMNS, counts[:-1]) if n > 0]
    postcodes = any("postcode" in roles for roles in by_file.values())
    for path, roles in by_file.items():
        present = [r for r in roles if not (r == "address" and postcodes)]
        if len(present) < MIN_LINKING_ROLES:
            missing = [r for r in LINKING_ROLES if r not in present]
            unused = (" (its address is not compared, because other sources have postcodes: give it a postcode "
                      "role)" if "address" in roles and postcodes else "")
            raise LinkError(
                f"{path.stem.replace('__', '/')} cannot be linked: its identifiers give only {present or 'no roles'}"
                f"{unused}; linkage needs at least {MIN_LINKING_ROLES} of {list(LINKING_ROLES)}. Missing: {missing}. "
                "Give the columns that hold them a `role` in the source's contract, or leave the source out.")


def _load_input(engine: Engine, files: list[Path]) -> set[str]:
    """Union every identifiers table into the engine; returns the columns that hold any value."""
    paths = "[" + ", ".join(sql_string(p) for p in files) + "]"
    # Address words as a list, for comparing addresses that gained or lost a word.
    engine.execute(f"CREATE OR REPLACE TABLE {INPUT_TABLE} AS "
                   f"SELECT * EXCLUDE (flags), list_distinct(string_split(address, ' ')) AS address_tokens "
                   f"FROM read_parquet({paths}) ORDER BY record_key")
    cols = engine.columns(INPUT_TABLE)
    *counts, keys = engine.execute("SELECT " + ", ".join(f"count({c})" for c in cols)
                                   + f", count(DISTINCT record_key) FROM {INPUT_TABLE}")[0]
    if keys != counts[cols.index("record_key")]:
        raise LinkError(f"the identifiers hold {counts[cols.index('record_key')] - keys:,} repeated record keys; "
                        "each record must appear once. Check the contracts' record_id columns and standardise again.")
    return {c for c, n in zip(cols, counts) if n > 0}


def _check_rule_columns(engine: Engine, rules: list[list[str]] | None, key: str, ws: Workspace) -> None:
    """Refuse a configured rule naming a column the identifiers do not have (it would stop in the
    engine with a binder error)."""
    columns = engine.columns(INPUT_TABLE)
    for rule in rules or []:
        unknown = [c for c in rule if c not in columns]
        if unknown:
            raise LinkError(f"{key} in {ws.config_path}: the rule {rule} names {unknown}, which the identifiers do "
                            f"not have; the columns are {', '.join(c for c in columns if c != 'record_key')}")


def _linker(engine: Engine, model, db_api: DatabaseAPI | None = None, table: str = INPUT_TABLE) -> Linker:
    db_api = db_api or engine.splink_api()
    sdf = db_api.register(table, dataset_display_name="identifiers")
    return Linker(sdf, model, log_level=logging.ERROR)  # Splink warnings would drown the progress output


def _fingerprint(files: list[Path]) -> list[dict]:
    out = []
    for p in files:
        out.append({"table": p.stem, "sha256": file_sha256(p)})
    return out


def deterministic_recall(engine: Engine, linker: Linker, rules: list) -> float | None:
    """Recall of the deterministic rules implied by the trained model, or None if it cannot say.

    An exact-match rule finds a true match only if every column it uses is present on both
    records and agrees exactly. The trained m probability of a column's exact level is
    P(agree exactly | match, both present); presence is taken as for any pair (the share of
    records holding all the rule's columns, squared). As Fellegi-Sunter does, columns are
    treated as independent given a match, within a rule and between rules. A rule using a
    column no exact level compares (a soundex, say) gives None: keep the assumed recall.
    """
    settings_obj = linker._settings_obj
    dialect = linker._db_api.sql_dialect
    n = engine.scalar(f"SELECT count(*) FROM {INPUT_TABLE}")
    if not n:
        return None
    missed = 1.0
    for rule in rules:
        sql = rule.get_blocking_rule(dialect.sql_dialect_str).blocking_rule_sql
        cols = set(get_columns_used_from_sql(sql, dialect.sqlglot_dialect))
        levels = Settings._get_comparison_levels_corresponding_to_training_blocking_rule(
            blocking_rule_sql=sql, sqlglot_dialect=dialect.sqlglot_dialect, comparisons=settings_obj.comparisons)
        covered = set().union(*(set(info["level"]._exact_match_colnames) for info in levels)) if levels else set()
        if not cols or covered != cols:
            return None
        m = 1.0
        for info in levels:
            level_m = info["level"].m_probability
            if level_m is None:
                return None
            m *= level_m
        all_present = " AND ".join(f"{c} IS NOT NULL" for c in sorted(cols))
        present = engine.scalar(f"SELECT count(*) FILTER (WHERE {all_present}) FROM {INPUT_TABLE}") / n
        missed *= 1.0 - m * present ** 2
    return min(MAX_RECALL, max(MIN_RECALL, 1.0 - missed))


def correct_u_for_matches(model: dict, prior: float, sampled_pairs: int) -> dict:
    """Take the true matches out of u, in place; returns the levels changed (before, after).

    u is estimated from record pairs drawn at random, and a share `prior` of those pairs are
    true matches. For a level that matches rarely reach by chance (an exact id, an exact date
    of birth), they dominate what the sample sees: FEBRL4's social security numbers agree in
    9e-5 of random pairs, nearly all of them the same person, which caps the weight of an
    exact id at 13 bits however unique the ids are. Since the sample's agreement rate is
    prior * m + (1 - prior) * u, u = (observed - prior * m) / (1 - prior). A level whose
    agreements the matches explain entirely gets at most one agreement in the sample
    (1 / sampled_pairs), the finest rate the sample can resolve. Levels with u below that
    already, or without both estimates, are left alone; each comparison's u is renormalised. A
    comparison with a level whose u is fixed (`fix_u_probability`) is left alone whole.
    """
    floor = 1.0 / max(sampled_pairs, 1)
    changed: dict = {}
    if not prior or prior <= 0 or prior >= 1:
        return changed
    for comparison in model.get("comparisons", []):
        levels = [lv for lv in comparison.get("comparison_levels", []) if not lv.get("is_null_level")]
        if any(lv.get("m_probability") is None or lv.get("u_probability") is None or lv.get("fix_u_probability")
               for lv in levels):
            continue  # untrained, or u fixed by the model's author
        corrected = []
        for lv in levels:
            u, m = lv["u_probability"], lv["m_probability"]
            corrected.append(u if u <= floor else max((u - prior * m) / (1 - prior), floor))
        total = sum(corrected)
        for lv, u in zip(levels, corrected):
            new = u / total
            if abs(new - lv["u_probability"]) > 1e-3 * lv["u_probability"]:
                changed.setdefault(comparison.get("output_column_name", "?"), {})[lv.get("label_for_charts", "?")] = [
                    lv["u_probability"], new]
            lv["u_probability"] = new
    return changed


@holding_lock
def train(ws: Workspace, engine: Engine, *, seed: int = 42) -> Path:
    """Estimate a model from the identifiers and save it (Splink JSON + metadata)."""
    cfg = ws.config().link
    files = _identifier_files(ws)
    check_linkable(engine, files)
    present = _load_input(engine, files)
    _check_rule_columns(engine, cfg.training_rules, "link.training_rules", ws)
    spec = model_spec(present)
    model = settings(spec)
    if cfg.settings_file:
        path = ws.resolve(cfg.settings_file)
        try:
            model = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise LinkError(f"cannot read link.settings_file {path}: {exc}") from exc
        # The platform's own conventions, whatever the file says.
        model.update({"link_type": "dedupe_only", "unique_id_column_name": "record_key",
                      "additional_columns_to_retain": sorted(set(model.get("additional_columns_to_retain", []))
                                                             | {"source"})})
    training_rules = [block_on(*cols) for cols in cfg.training_rules] if cfg.training_rules else spec.training_rules
    records = int(engine.scalar(f"SELECT count(*) FROM {INPUT_TABLE}"))
    # Pairs in an EM session's blocks grow with the square of the records, the estimates do
    # not need them all: past the cap, train on a fixed random sample (the same records for
    # the same data). The prior is unchanged by sampling (matches and pairs both scale with
    # the square of the share kept); term frequencies below come from every record.
    table = INPUT_TABLE
    if records > cfg.training_records:
        table = "link_training_sample"
        engine.execute(f"""CREATE OR REPLACE TABLE {table} AS SELECT * FROM {INPUT_TABLE}
                           ORDER BY md5(record_key) LIMIT {int(cfg.training_records)}""")
    linker = _linker(engine, model, table=table)
    if spec.deterministic_rules:
        linker.training.estimate_probability_two_random_records_match(spec.deterministic_rules, recall=ASSUMED_RECALL)
    # Every sampled pair is used (no early stop once each level has 100 agreements), so the
    # number of pairs behind each u is known: the correction below floors u at one of them.
    linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=seed, min_count_per_level=None)
    skipped = []
    for rule in training_rules:
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(rule)
        except EMTrainingException as exc:
            rule_sql = rule.get_blocking_rule("duckdb").blocking_rule_sql
            if cfg.training_rules:  # the user's own steps: each must find pairs
                raise LinkError(f"the training rule {rule_sql} (link.training_rules in {ws.config_path}) finds no "
                                "pair of records sharing its values; choose columns the sources share") from exc
            # A default step for a role that few records hold (a small or single source): the
            # other steps train its comparisons too; said in the model's metadata.
            skipped.append(rule_sql)
    if skipped and len(skipped) == len(training_rules):
        raise LinkError("no training step found a pair of records sharing values (" + "; ".join(skipped) + "): the "
                        "identifiers hold too few records to train on; set link.training_rules in "
                        f"{ws.config_path}, or train on a larger delivery")
    recall = None
    if spec.deterministic_rules:
        # The prior counted the rules' matches and scaled by an assumed recall. Now the model
        # says how often a true match agrees exactly on the rules' columns, so recount with
        # that recall instead. m and u stay as trained: each EM session estimates its own prior.
        recall = deterministic_recall(engine, linker, spec.deterministic_rules)
        if recall is not None:
            linker.training.estimate_probability_two_random_records_match(spec.deterministic_rules, recall=recall)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = ws.root / MODELS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"model-{stamp}.json"
    linker.misc.save_model_to_json(str(path), overwrite=True)
    # Only with a prior estimated from this data: without deterministic rules Splink's prior is
    # a placeholder, and correcting by it would invent weight.
    u_corrected = "not corrected: the prior was not estimated (no deterministic rule applies)"
    if spec.deterministic_rules:
        prior = linker._settings_obj._probability_two_random_records_match
        trained_on = min(records, cfg.training_records)
        sampled = min(U_SAMPLE_PAIRS, trained_on * (trained_on - 1) // 2)
        model_json = json.loads(path.read_text(encoding="utf-8"))
        u_corrected = correct_u_for_matches(model_json, prior, sampled)
        path.write_text(json.dumps(model_json, indent=2), encoding="utf-8")
    term_frequencies = {}
    for col in incremental.tf_columns(json.loads(path.read_text(encoding="utf-8"))):
        term_frequencies[col] = f"{path.stem}.tf-{col}.parquet"
        # Splink's definition (share of the non-empty values), over every record.
        engine.to_parquet(f"""SELECT {col}, CAST(count(*) AS DOUBLE) / (SELECT count({col}) FROM {INPUT_TABLE})
                                  AS tf_{col}
                              FROM {INPUT_TABLE} WHERE {col} IS NOT NULL GROUP BY 1 ORDER BY ALL""",
                          folder / term_frequencies[col])
    engine.execute("DROP TABLE IF EXISTS link_training_sample")
    meta = {
        "model": path.name, "trained_at": stamp, "records": records,
        "trained_on_records": min(records, cfg.training_records), "columns": sorted(present),
        "term_frequencies": term_frequencies,
        "identifiers": _fingerprint(files), "seed": seed,
        # The prior match probability and the deterministic rules' recall it was scaled by
        # (estimated from the model; null where the assumed recall was kept).
        "probability_two_random_records_match": linker._settings_obj._probability_two_random_records_match,
        "deterministic_recall": recall,
        # Default training steps that found no pair of records (see above).
        "training_steps_skipped": skipped,
        # u of the levels that true matches inflated in the random sample: {comparison: {level: [before, after]}}.
        "u_corrected_for_matches": u_corrected,
        "code": {"datafirst": __version__, "splink": version("splink"),
                 "engine": engine.name, engine.name: engine.version},
    }
    path.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (folder / "current.json").write_text(json.dumps({"model": path.name}, indent=2), encoding="utf-8")
    return path


def current_model(ws: Workspace) -> Path:
    pointer = ws.root / MODELS / "current.json"
    if not pointer.is_file():
        raise LinkError(f"no trained model in {ws.root / MODELS}; run `datafirst train` first")
    return ws.root / MODELS / json.loads(pointer.read_text(encoding="utf-8"))["model"]


def _model_columns(model: dict) -> set[str]:
    cols = set()
    for comparison in model.get("comparisons", []):
        for level in comparison.get("comparison_levels", []):
            sql = level.get("sql_condition", "")
            for token in ("forename", "surname", "middle_names", "date_of_birth", "postcode", "address", "sex", "pnc",
                          "cro", "other_id"):
                if f"{token}_l" in sql or f'"{token}_l"' in sql:
                    cols.add(token)
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


def check_blocking(linker: Linker, n_records: int, limit: int) -> list[dict]:
    """Estimate each prediction rule's comparisons and refuse any above `limit` (the config's
    `link.max_comparisons_per_rule`)."""
    sample = 1.0 if n_records <= 200_000 else 0.1
    with warnings.catch_warnings():
        # On a sample, Splink warns that rare-key rules rest on few pairs; such rules are the
        # ones that cannot explode, and the estimate is only used to catch the ones that can.
        warnings.simplefilter("ignore", UserWarning)
        counts = linker.blocking_analysis.count_comparisons_from_blocking_rules(record_sample_proportion=sample)
    rows = []
    for rec in counts:
        # The marginal count is the work a rule adds beyond the rules before it.
        rule, n = rec["blocking_rule"], int(rec["marginal_comparison_count"])
        rows.append({"rule": rule, "comparisons": n, "estimated": bool(rec["is_estimate"])})
        if n > limit:
            raise LinkError(f"blocking rule {rule} would generate about {n:,} comparisons (limit {limit:,}) on "
                            f"{n_records:,} records. Make it stricter (add a column such as year_of_birth or "
                            "surname_soundex) in `link.blocking_rules` in the workspace config (when it is not set, the "
                            "rules are the defaults made from the roles: list your own there), or raise "
                            "`link.max_comparisons_per_rule` if the machine can take it.")
    return rows


@holding_lock
def link(ws: Workspace, engine: Engine, *, thresholds: Thresholds | None = None, model_path: Path | None = None,
         blocking_rules: list | None = None, max_comparisons_per_rule: int | None = None,
         full: bool = False) -> LinkSummary:
    """Score candidate pairs with a saved model and cluster them; writes the links zone.
    Thresholds, blocking rules and the comparison limit default to the workspace config.

    When the last link used the same model, thresholds and rules, only the records that
    changed since are scored and only the people they touch are clustered again (see
    `incremental`); `full` scores everything."""
    cfg = ws.config().link
    thresholds = thresholds or Thresholds(**cfg.thresholds.model_dump())
    if blocking_rules is None and cfg.blocking_rules:
        blocking_rules = [block_on(*cols) for cols in cfg.blocking_rules]
    max_comparisons_per_rule = max_comparisons_per_rule or cfg.max_comparisons_per_rule
    files = _identifier_files(ws)
    check_linkable(engine, files)
    present = _load_input(engine, files)
    _check_rule_columns(engine, cfg.blocking_rules, "link.blocking_rules", ws)
    path = model_path or current_model(ws)
    model = json.loads(path.read_text(encoding="utf-8"))
    check_model_fits(model, present, path)
    if blocking_rules is not None:
        model["blocking_rules_to_generate_predictions"] = [
            r.get_blocking_rule(engine.dialect).as_dict() if hasattr(r, "get_blocking_rule") else r
            for r in blocking_rules]
    model = engine.model(model)  # a model trained on the other engine: its SQL in this one's dialect
    db_api = engine.splink_api()
    linker = _linker(engine, model, db_api)
    frozen_tf = use_term_frequencies(engine, db_api, linker, model, path)
    n_records = int(engine.scalar(f"SELECT count(*) FROM {INPUT_TABLE}"))
    incremental.digest_input(engine, INPUT_TABLE, engine.columns(INPUT_TABLE))
    edge_floor = min(EDGE_FLOOR, thresholds.low)
    run = {"model": path.name, "model_sha256": file_sha256(path), "term_frequencies_saved": frozen_tf,
           "thresholds": thresholds.named(), "edge_floor": edge_floor,
           "prediction_rules": model["blocking_rules_to_generate_predictions"],
           "max_comparisons_per_rule": max_comparisons_per_rule, "record_digest": incremental.DIGEST_SCHEME}
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
            blocking = check_blocking(linker, n_records, max_comparisons_per_rule)
            _link_all(engine, db_api, linker, thresholds, edge_floor,
                      chunks=max(1, -(-n_records // cfg.predict_chunk_records)))
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
                   s.strongest AS strongest_link_medium
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
              chunks: int) -> None:
    """`link_edges` and `clusters_<threshold>` from scoring every candidate pair.

    With more than one chunk, pairs are scored a slice of left-hand records at a time
    (Splink's `predict_chunk`): each pair still once, but the engine holds and spills only
    one slice's blocked pairs at a time. Unchunked, 10M records filled 70 GB of disk."""
    if chunks <= 1:
        parts = [linker.inference.predict(threshold_match_probability=edge_floor)]
    else:
        parts = [linker.inference.predict_chunk(left_chunk=(i, chunks), threshold_match_probability=edge_floor)
                 for i in range(1, chunks + 1)]
    engine.execute("CREATE OR REPLACE TABLE link_edges AS " + " UNION ALL ".join(
        f"SELECT record_key_l, record_key_r, source_l, source_r, match_weight, match_probability "
        f"FROM {p.physical_name}" for p in parts) + " ORDER BY record_key_l, record_key_r")
    for p in parts:
        p.drop_table_from_database_and_remove_from_cache()
    nodes = db_api.register(INPUT_TABLE, dataset_display_name="records to cluster")
    edges = db_api.register("link_edges", dataset_display_name="scored edges")
    for name, p in thresholds.named().items():
        result = cluster_pairwise_predictions_at_threshold(
            nodes, edges, db_api, "record_key", "record_key_l", "record_key_r", threshold_match_probability=p)
        engine.execute(f"""CREATE OR REPLACE TABLE clusters_{name} AS
            SELECT record_key, {incremental.cluster_label(name)} AS person_id,
                   count(*) OVER (PARTITION BY cluster_id) AS cluster_size
            FROM {result.physical_name}""")
        result.drop_table_from_database_and_remove_from_cache()
