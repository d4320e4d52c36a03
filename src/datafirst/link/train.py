"""Train: estimate a Splink model from the identifiers and save it, versioned, with metadata.

Splink does the estimation (a prior from deterministic rules, u from random pairs, m by EM in
sessions blocked on different columns); what follows it here corrects what Splink's estimates
get wrong on real data, each step explained where it is made and in docs/linkage.md.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from statistics import median

from splink import Linker, block_on
from splink.internals.blocking import BlockingRule
from splink.internals.exceptions import EMTrainingException, SplinkException
from splink.internals.parse_sql import get_columns_used_from_sql
from splink.internals.settings import Settings

from .. import __version__
from ..engine import Engine
from ..sources.contract import load_contracts
from ..standardise.stage import attributes
from ..workspace import Workspace, holding_lock
from . import incremental
from .inputs import (INPUT_TABLE, MODELS, LinkError, check_linkable, check_rule_columns, fingerprint,
                     identifier_files, linker as make_linker, load_input)
from .blocking import expected_true_pairs, plan_blocking
from .families import calibrate as calibrate_families, shared_surname_u
from .settings import model_spec, settings

# Recall assumed for the deterministic rules before the model can estimate it.
ASSUMED_RECALL = 0.8
# Bounds on the estimated recall: below the floor the estimate is a failed fit, not data.
MIN_RECALL, MAX_RECALL = 0.05, 1.0
# Record pairs sampled at random to estimate u.
U_SAMPLE_PAIRS = 2_000_000


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


# Fewer identifier records than this are too few to train on (issue 22: a 40-row source died
# with a math domain error inside Splink's EM).
MIN_TRAINING_RECORDS = 100


def _estimate_prior(linker: Linker, rules: list, recall: float, pairs: int) -> None:
    """Splink's prior from the deterministic rules' matches; at least one match among all pairs.

    Where no pair agrees on any rule (a source without duplicates, or few records), Splink's
    estimate is 0, which no weight can overcome and which stops EM with a math domain error; a
    prior of one match among the pairs is the least the data cannot rule out."""
    linker.training.estimate_probability_two_random_records_match(rules, recall=recall)
    settings = linker._settings_obj
    if not 0 < settings._probability_two_random_records_match < 1:
        settings._probability_two_random_records_match = 1.0 / max(pairs, 2)


# A session whose matches disagree outright on a comparison more than this many times as often
# as in the cleanest session has mixed look-alikes into its matches (see cleanest_sessions).
CONTAMINATED_RATIO = 2.0


def cleanest_sessions(linker: Linker) -> dict:
    """Leave out, per comparison, the EM sessions whose matches were mixed with look-alikes, in
    place on the linker's settings; returns {comparison: sessions kept}.

    Splink takes the median of the sessions' estimates. A session whose block mixes in people who
    are not one person but look alike (namesakes in a block on names; a father and a son of one
    name in a block on name and address) takes many of them for matches, and so overstates how
    often a person's records disagree: on the historical test set the blocks on names put the share
    of matches whose dates of birth disagree outright at 34% and 74% (1.2% in truth; the block on
    name and postcode: 0.8%), and on the census the block on name and address put it at 99% (the
    block on names: 25%). The "else" level's m (a person's records disagreeing outright) is the
    least such a mixture can make it, so a session whose else-m is more than CONTAMINATED_RATIO
    times the lowest is left out of that comparison's median; the others are kept (small data
    gives noisy sessions, which the median evens out: Splink's fake_1000 F1 0.907 with the single
    cleanest session, 0.936 with this)."""
    kept_by_comparison = {}
    for comparison in linker._settings_obj.comparisons:
        levels = [lv for lv in comparison.comparison_levels if not lv.is_null_level]
        if len(levels) < 2 or any(lv._fix_m_probability for lv in levels):
            continue
        by_session: dict[str, dict[int, float]] = {}
        for i, lv in enumerate(levels):
            for est in lv._trained_m_probabilities:
                if isinstance(est["probability"], (int, float)):
                    by_session.setdefault(est["description"], {})[i] = est["probability"]
        candidates = {d: est for d, est in by_session.items() if len(levels) - 1 in est}
        if len(candidates) < 2:
            continue
        cleanest = min(est[len(levels) - 1] for est in candidates.values())
        kept = [d for d, est in candidates.items() if est[len(levels) - 1] <= CONTAMINATED_RATIO * max(cleanest, 1e-9)]
        for i, lv in enumerate(levels):
            values = [candidates[d][i] for d in kept if i in candidates[d]]
            lv.m_probability = median(values) if values else None  # not reached in those sessions: filled later
        kept_by_comparison[comparison.output_column_name] = kept
    return kept_by_comparison


def fill_untrained(model: dict, sampled_pairs: int) -> list[str]:
    """Complete every level that training did not reach, in place; returns those given no weight.

    A level no random pair reached has no u: it is rarer among random pairs than the sample
    resolves, so u is set to one pair in `sampled_pairs` (an exact prisoner number, say). A level
    no EM session reached has no m (the world has no middle initials, so "an initial and a middle
    name with that initial" is never seen): Splink would fall back to default values by the
    level's position, an arbitrary weight; here it counts as no evidence (m equal to u)."""
    floor = 1.0 / max(sampled_pairs, 1)
    no_weight = []
    for comparison in model.get("comparisons", []):
        for level in comparison.get("comparison_levels", []):
            if level.get("is_null_level"):
                continue
            m, u = level.get("m_probability"), level.get("u_probability")
            if not (isinstance(u, (int, float)) and u > 0):
                level["u_probability"] = u = floor
            if not (isinstance(m, (int, float)) and m > 0):
                level["m_probability"] = u
                no_weight.append(f"{comparison.get('output_column_name')}: {level.get('label_for_charts')}")
    return no_weight


def training_notes(meta: dict) -> list[str]:
    """What a trained model left out or learned otherwise than plain Splink would, from its
    metadata, one line each: comparisons, blocking rules and training steps left out (and why),
    levels no training pair reached, and the family patterns weighed down."""
    notes = list(meta.get("left_out") or [])
    notes += [f"training step blocked on {rule}: found no pair of records, skipped" for rule in
              meta.get("training_steps_skipped") or []]
    notes += [f"{level}: no training pair reached it, counted as no evidence" for level in
              meta.get("untrained_levels") or []]
    for pattern, found in (meta.get("families") or {}).items():
        if found.get("weight"):
            notes.append(f"family pattern '{pattern}': {found['family_share']:.0%} of its {found['pairs']:,} pairs are "
                         f"family (by sex and date of birth), weighed {found['weight']:+.1f} bits")
    return notes


@holding_lock
def train(ws: Workspace, engine: Engine, *, seed: int = 42) -> Path:
    """Estimate a model from the identifiers and save it (Splink JSON + metadata)."""
    cfg = ws.config().link
    files = identifier_files(ws)
    check_linkable(engine, files)
    present = load_input(engine, files)
    check_rule_columns(engine, cfg.training_rules, "link.training_rules", ws)
    spec = model_spec(present, attributes(load_contracts(ws.contracts)), engine.dialect)
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
    if records < MIN_TRAINING_RECORDS:
        raise LinkError(f"the identifiers hold {records:,} records, too few to learn what a match looks like from "
                        f"(at least {MIN_TRAINING_RECORDS:,}, some of them the same person in two records). Train on a "
                        "delivery with the other sources present, or give a model with fixed m and u in "
                        f"link.settings_file ({ws.config_path}; docs/config.md).")
    pairs = records * (records - 1) // 2
    linker = make_linker(engine, model, table=table)
    if spec.deterministic_rules:
        _estimate_prior(linker, spec.deterministic_rules, ASSUMED_RECALL, pairs)
    # Every sampled pair is used (no early stop once each level has 100 agreements), so the
    # number of pairs behind each u is known: the correction below floors u at one of them.
    linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=seed, min_count_per_level=None)
    skipped = []
    for rule in training_rules:
        try:
            # A session's pairs are capped (Splink keeps a hash sample of each side's records):
            # on the training sample of 1M records a block on the date of birth alone holds about
            # 14M pairs, and m needs far fewer.
            linker.training.estimate_parameters_using_expectation_maximisation(rule, max_pairs=cfg.training_pairs)
        except (EMTrainingException, SplinkException, ValueError, ZeroDivisionError) as exc:
            # Splink's EM stops with a math domain error, or SQL with an infinite weight, when a
            # block's pairs drive the share of matches to 0 or 1 (a few records, all of them one
            # person): as good as no pairs to learn from.
            rule_sql = rule.get_blocking_rule("duckdb").blocking_rule_sql
            if cfg.training_rules:  # the user's own steps: each must find pairs
                raise LinkError(f"the training rule {rule_sql} (link.training_rules in {ws.config_path}) finds no "
                                "pair of records sharing its values; choose columns the sources share") from exc
            # A default step for a role that few records hold (a small or single source): the
            # other steps train its comparisons too; said in the model's metadata.
            skipped.append(rule_sql)
    sessions = cleanest_sessions(linker) if not cfg.settings_file else {}
    blocking_measured = None
    if not cfg.settings_file:
        sampled_records = min(records, cfg.training_records)
        prior = linker._settings_obj._probability_two_random_records_match
        chosen, blocking_measured, dropped = plan_blocking(
            linker, engine, spec.prediction_rules, table=table, records=records, sampled=sampled_records,
            budget=cfg.comparison_budget, model=linker.misc.save_model_to_json(),
            true_pairs=expected_true_pairs(prior, records, records))
        spec.notes += dropped
        linker._settings_obj._blocking_rules_to_generate_predictions = BlockingRule._add_preceding_rules_to_each_blocking_rule(
            [r.get_blocking_rule(linker._db_api.sql_dialect.sql_dialect_str) for r in chosen])
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
            _estimate_prior(linker, spec.deterministic_rules, recall, pairs)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = ws.root / MODELS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"model-{stamp}.json"
    linker.misc.save_model_to_json(str(path), overwrite=True)
    # Only with a prior estimated from this data: without deterministic rules Splink's prior is
    # a placeholder, and correcting by it would invent weight.
    u_corrected = "not corrected: the prior was not estimated (no deterministic rule applies)"
    model_json = json.loads(path.read_text(encoding="utf-8"))
    prior = linker._settings_obj._probability_two_random_records_match
    trained_on = min(records, cfg.training_records)
    sampled = min(U_SAMPLE_PAIRS, trained_on * (trained_on - 1) // 2)
    if spec.deterministic_rules:
        u_corrected = correct_u_for_matches(model_json, prior, sampled)
    # A settings file is the user's model: its untrained levels keep Splink's own defaults.
    untrained = fill_untrained(model_json, sampled) if not cfg.settings_file else []
    shared_surname, family = None, None
    if not cfg.settings_file:
        shared_surname = shared_surname_u(engine, model_json, table)
        family = calibrate_families(engine, model_json, table, present)
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
        "identifiers": fingerprint(files), "seed": seed,
        # The prior match probability and the deterministic rules' recall it was scaled by
        # (estimated from the model; null where the assumed recall was kept).
        "probability_two_random_records_match": linker._settings_obj._probability_two_random_records_match,
        "deterministic_recall": recall,
        # Default training steps that found no pair of records (see above).
        "training_steps_skipped": skipped,
        # What the default model left out, and why (comparisons, blocking rules, training steps).
        "left_out": [] if cfg.settings_file else spec.notes,
        # u of the levels that true matches inflated in the random sample: {comparison: {level: [before, after]}}.
        "u_corrected_for_matches": u_corrected,
        # Each candidate prediction rule's measured comparisons, and whether it was kept.
        "prediction_rules_measured": blocking_measured,
        # The EM sessions each comparison's m was taken from (see cleanest_sessions).
        "m_from_session": sessions,
        # Levels no training pair reached, counted as no evidence: ["comparison: level"].
        "untrained_levels": untrained,
        # u of places and attributes among pairs sharing a surname but not a forename
        # (link/families.py): {comparison: {level: [u from random pairs, u used]}}.
        "shared_surname_u": shared_surname,
        # The family comparison: each pattern's share of family pairs and the weight set from it.
        "families": family,
        "code": {"datafirst": __version__, "splink": version("splink"),
                 "engine": engine.name, engine.name: engine.version},
    }
    path.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (folder / "current.json").write_text(json.dumps({"model": path.name}, indent=2), encoding="utf-8")
    return path
