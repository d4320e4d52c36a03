"""Link two parties' encoded files, holding neither party's identifiers nor the secret.

`datafirst pprl-link` checks both files were made under the linker's schema, one standardisation
and one secret (by the key check), loads them as one table, and runs a Splink model in the engine:
candidate pairs are those sharing a match key; each field is compared by the Dice coefficient of
its filters (popcount of the AND over the popcounts, on 64-bit words), at the schema's Dice levels;
the model is trained as datafirst's plaintext model is (link/train.py): a prior from exact-match
rules, u by random sampling cleared of true matches, m by EM in sessions blocked on each match key,
the sessions mixed with look-alikes left out, untrained levels counted as no evidence. Records are
clustered at the three thresholds and the link table holds opaque tokens and person ids only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from statistics import median

import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import Linker, SettingsCreator, block_on
from splink.blocking_rule_library import CustomRule
from splink.clustering import cluster_pairwise_predictions_at_threshold
from splink.internals.exceptions import EMTrainingException, SplinkException

from .. import __version__
from ..engine import Engine, sql_string
from ..link.families import shared_surname_u
from ..link.settings import FORENAME_UNRELATED
from ..link.train import (
    ASSUMED_RECALL,
    CONTAMINATED_RATIO,
    U_SAMPLE_PAIRS,
    correct_u_for_matches,
    fill_untrained,
)
from .encode import EncodeError, read_metadata, word_columns
from .schema import SCHEMA_FORMAT, LoadedSchema, Schema

INPUT = "pprl_input"
LINKS_FILE = "links.parquet"
LEVELS = ("high", "medium", "low")


class PprlLinkError(Exception):
    """Encoded files that cannot be linked together; the message says why and what to do."""


def check_files(engine: Engine, loaded: LoadedSchema, paths: list[Path]) -> list[dict]:
    """Each file's metadata, refused unless every file was made under the linker's schema, the
    same standardisation, the same secret, and by different parties."""
    metas = []
    for path in paths:
        try:
            meta = read_metadata(engine, path)
        except EncodeError as exc:
            raise PprlLinkError(str(exc)) from None
        if meta.get("format") != SCHEMA_FORMAT:
            raise PprlLinkError(f"{path}: encoded as {meta.get('format')!r}, this datafirst reads {SCHEMA_FORMAT!r}")
        if meta.get("schema_sha256") != loaded.sha256:
            raise PprlLinkError(
                f"{path}: encoded under another linkage schema (SHA-256 {str(meta.get('schema_sha256'))[:12]}…, version "
                f"{meta.get('schema_version')}) than {loaded.path} (SHA-256 {loaded.sha256[:12]}…, version "
                f"{loaded.schema.version}): both parties must encode with the very file the linker holds; share it "
                "again and re-encode")
        metas.append(meta)
    first = metas[0]
    for i, (path, meta) in enumerate(zip(paths[1:], metas[1:]), start=1):
        if meta.get("standardisation") != first.get("standardisation"):
            raise PprlLinkError(f"{path}: its identifiers were standardised by other code ({meta.get('standardisation')}) "
                                f"than {paths[0]}'s ({first.get('standardisation')}): equal names would encode apart. "
                                "Both parties must standardise with the same datafirst version, then re-encode")
        if meta.get("key_check") != first.get("key_check"):
            raise PprlLinkError(f"{path} and {paths[0]} were encoded with different secrets (their key checks differ): "
                                "no record could match. The two data holders must encode with one shared secret")
        if meta.get("party") in {m.get("party") for m in metas[:i]}:
            raise PprlLinkError(f"{path}: party {meta.get('party')!r} again; each file must come from another party")
    return metas


def _dice(field: str, words: int) -> str:
    inter = " + ".join(f'bit_count("{w}_l" & "{w}_r")' for w in word_columns(field, words))
    return f'(2.0 * ({inter}) / ("{field}__n_l" + "{field}__n_r"))'


def _comparison(schema: Schema, field: str) -> cl.CustomComparison:
    """A field's comparison: NULL when either side has no value; then one level per Dice level
    (1.0: the filters equal, term-frequency adjusted on names), else."""
    f, words = schema.fields[field], schema.words(field)
    missing = f'"{field}__n_l" IS NULL OR "{field}__n_r" IS NULL'
    salt = schema.hardening_of(field).salt
    if salt in schema.fields:
        # Salted apart: where the two records' salts differ or one is missing, their filters of
        # this field share no positions whatever the values, so the comparison says nothing.
        # (FEBRL4: pairs whose year of birth was mistyped or missing scored their names as
        # unrelated, and recall at medium fell from 0.992 to 0.986.)
        salt_words = word_columns(salt, schema.words(salt))
        missing += (f' OR "{salt}__n_l" IS NULL OR "{salt}__n_r" IS NULL OR NOT ('
                    + " AND ".join(f'"{w}_l" = "{w}_r"' for w in salt_words) + ")")
    levels = [cll.CustomLevel(missing, label_for_charts=f"{field}: no value on one side"
                              + (f", or {salt} differs" if salt in schema.fields else "")).configure(is_null_level=True)]
    for d in f.dice_levels:
        if d >= 1.0:
            # On the filter as one text (the column named for the field, see load), so that Splink
            # can count how common each filter is.
            level = cll.ExactMatchLevel(field).configure(label_for_charts=f"{field}: filters equal")
            if f.tf:
                level = level.configure(tf_adjustment_column=field)
        else:
            level = cll.CustomLevel(f"{_dice(field, words)} >= {d}", label_for_charts=f"{field}: Dice >= {d}")
        levels.append(level)
    # The forename's last level carries the label link/families.py looks for.
    levels.append(cll.ElseLevel().configure(label_for_charts=FORENAME_UNRELATED if field == "forename" else "else"))
    return cl.CustomComparison(comparison_levels=levels, output_column_name=field,
                               comparison_description=f"{field}: Dice of keyed Bloom filters at {f.dice_levels}")


def load(engine: Engine, schema: Schema, paths: list[Path]) -> tuple[set[str], set[str]]:
    """The union of the files as INPUT, with each field's popcount (`<field>__n`) and its words as
    one text under the field's own name (for exact levels, term frequencies and link/families.py's
    blocking on equal surnames); returns the fields and match keys holding values on more than one party."""
    cols = ["party", "token"]
    extra = []
    for name in schema.fields:
        ws = word_columns(name, schema.words(name))
        cols += ws
        extra.append(f"CASE WHEN {ws[0]} IS NULL THEN NULL ELSE {' + '.join(f'bit_count({w})' for w in ws)} END "
                     f"AS {name}__n")
        extra.append(f"CASE WHEN {ws[0]} IS NULL THEN NULL ELSE concat_ws('-', {', '.join(ws)}) END AS {name}")
    keys = [f"mk_{k}" for k in schema.match_keys]
    cols += keys
    union = " UNION ALL ".join(f"SELECT {', '.join(cols)} FROM read_parquet({sql_string(p)})" for p in paths)
    engine.execute(f"""CREATE OR REPLACE TABLE {INPUT} AS
        SELECT party || ':' || token AS record_key, *, {', '.join(extra)} FROM ({union})""")
    counts = engine.execute("SELECT " + ", ".join(
        [f"count(DISTINCT party) FILTER (WHERE {n}__n IS NOT NULL)" for n in schema.fields]
        + [f"count(DISTINCT party) FILTER (WHERE {k} IS NOT NULL)" for k in keys]) + f" FROM {INPUT}")[0]
    fields = {n for n, c in zip(schema.fields, counts) if c >= 2}
    present_keys = {k for k, c in zip(schema.match_keys, counts[len(schema.fields):]) if c >= 2}
    return fields, present_keys


def _equal_fields_rule(schema: Schema, fields: list[str]) -> CustomRule:
    return CustomRule(" AND ".join(f"l.{w} = r.{w}" for f in fields for w in word_columns(f, schema.words(f))))


def _deterministic_recall(engine: Engine, linker: Linker, rules: list[list[str]]) -> float | None:
    """As link.train.deterministic_recall, for rules of equal filters: a rule finds a true match
    when its fields are present on both records and their filters equal (the m of each field's
    first level), the fields independent given a match."""
    n = engine.scalar(f"SELECT count(*) FROM {INPUT}")
    by_field = {c.output_column_name: c for c in linker._settings_obj.comparisons}
    missed = 1.0
    for rule in rules:
        m = 1.0
        for f in rule:
            exact = next(lv for lv in by_field[f].comparison_levels if not lv.is_null_level)
            if exact.m_probability is None:
                return None
            m *= exact.m_probability
        present = engine.scalar(f"SELECT count(*) FILTER (WHERE {' AND '.join(f'{f}__n IS NOT NULL' for f in rule)}) "
                                f"FROM {INPUT}") / n
        missed *= 1.0 - m * present ** 2
    return min(1.0, max(0.05, 1.0 - missed))


def independent_sessions(linker: Linker, schema: Schema) -> dict:
    """Each comparison's m from the EM sessions whose match key does not hold its field, in place;
    returns {field: sessions used}.

    Splink leaves a comparison out of a session blocked on its own column, but a match key is
    opaque to it: in the session on soundex(surname) + soundex(forename) + year of birth, every
    pair's surnames sound alike, and EM put the share of a person's records with unrelated
    surnames at 0, a weight of -133 against any such pair (FEBRL4 recall 0.78). So a field's m is
    taken from the sessions whose key reads neither the field nor its salt (a pair's names encode
    alike only in one salt group), then, as link/train.cleanest_sessions does, those mixed with
    look-alikes (an "else" m over CONTAMINATED_RATIO times the lowest) are left out and the
    median of the rest taken, renormalised. A field every session depends on keeps Splink's median."""
    used = {}
    for comparison in linker._settings_obj.comparisons:
        name = comparison.output_column_name
        f = schema.fields[name]
        reads = set(f.columns or []) if f.tokens == "columns" else {name}
        reads |= {schema.hardening_of(name).salt} - {None}
        if name == "date_of_birth":
            reads.add("year_of_birth")
        if name == "surname":
            reads.add("surname_soundex")
        if name == "forename":
            reads.add("forename_soundex")
        if name == "postcode":
            reads |= {"postcode", "postcode_sector", "postcode_district", "postcode_area"}
        independent = {f'"mk_{k}"' for k, cols in schema.match_keys.items() if not reads & set(cols)}
        levels = [lv for lv in comparison.comparison_levels if not lv.is_null_level]
        by_session: dict[str, dict[int, float]] = {}
        for i, lv in enumerate(levels):
            for est in lv._trained_m_probabilities:
                if isinstance(est["probability"], (int, float)) and any(k in est["description"] for k in independent):
                    by_session.setdefault(est["description"], {})[i] = est["probability"]
        sessions = {d: est for d, est in by_session.items() if len(levels) - 1 in est}
        if not sessions:
            continue
        cleanest = min(est[len(levels) - 1] for est in sessions.values())
        kept = [d for d, est in sessions.items() if est[len(levels) - 1] <= CONTAMINATED_RATIO * max(cleanest, 1e-9)]
        values = [median([sessions[d].get(i, 0.0) for d in kept]) for i in range(len(levels))]
        total = sum(values) or 1.0
        for lv, v in zip(levels, values):
            lv.m_probability = v / total if v > 0 else None  # not reached: counted as no evidence later
        used[name] = kept
    return used


# A match key whose blocks would give more candidate pairs than this per record is not used to
# predict (as link/blocking.py's budget for plaintext rules): its pairs grow with the square of the records.
MAX_PAIRS_PER_RECORD = 50


def prediction_keys(engine: Engine, schema: Schema, keys: set[str]) -> tuple[list[str], dict[str, str]]:
    """The match keys to block predictions on, and those left out with why.

    A key over MAX_PAIRS_PER_RECORD pairs per record is left out; so is a key whose columns hold
    another kept key's (surname + date of birth, beside the date of birth alone): its pairs are
    all among the other's, and Splink's blocking excludes each rule's pairs from the rules after it,
    at a cost per rule (the world's 1M candidate pairs: 10 keys' blocking took most of pprl-link's
    scoring time). Every key still trains: each is an EM session."""
    records = int(engine.scalar(f"SELECT count(*) FROM {INPUT}"))
    dropped, kept = {}, []
    for key in schema.match_keys:
        if key not in keys:
            continue
        pairs = int(engine.scalar(f"SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM (SELECT count(*) AS n FROM {INPUT} "
                                  f"WHERE mk_{key} IS NOT NULL GROUP BY mk_{key})"))
        if pairs > MAX_PAIRS_PER_RECORD * records:
            dropped[key] = f"{pairs:,} pairs, over {MAX_PAIRS_PER_RECORD} per record"
        else:
            kept.append(key)
    cols = {k: set(schema.match_keys[k]) for k in kept}
    predicting = []
    for key in kept:
        within = next((o for o in kept if o != key and cols[o] < cols[key]), None)
        if within:
            dropped[key] = f"its pairs are among those of {within}"
        else:
            predicting.append(key)
    return predicting, dropped


def train_model(engine: Engine, schema: Schema, fields: set[str], keys: set[str], seed: int = 42) -> tuple[dict, dict]:
    """A trained Splink model (as JSON) over the encodings, and what training did."""
    compared = [f for f, spec in schema.fields.items() if f in fields and spec.compare]
    if "postcode" in compared and "address" in compared:
        # As datafirst's plaintext model (link/settings.py): an address and a postcode say the same
        # thing, and comparing both counted living together twice (the world: household members
        # linked on place alone, precision 0.63 at medium).
        compared.remove("address")
    comparisons = [_comparison(schema, f) for f in compared]
    rules = [block_on(f"mk_{k}") for k in schema.match_keys if k in keys]  # EM sessions: every key
    predicting, dropped = prediction_keys(engine, schema, keys)
    if not comparisons or not rules:
        raise PprlLinkError("the files share no encoded field or no match key with values on both sides: nothing to link on")
    settings = SettingsCreator(link_type="dedupe_only", unique_id_column_name="record_key", comparisons=comparisons,
                               blocking_rules_to_generate_predictions=[block_on(f"mk_{k}") for k in predicting],
                               retain_matching_columns=False,
                               retain_intermediate_calculation_columns=False, additional_columns_to_retain=["party"])
    api = engine.splink_api()
    linker = Linker(api.register(INPUT, dataset_display_name="encodings"), settings, log_level=logging.ERROR)
    records = int(engine.scalar(f"SELECT count(*) FROM {INPUT}"))
    pairs = records * (records - 1) // 2
    deterministic = [r for r in schema.deterministic if all(f in fields for f in r)]
    det_rules = [_equal_fields_rule(schema, r) for r in deterministic]

    def prior(recall: float) -> None:
        if det_rules:
            linker.training.estimate_probability_two_random_records_match(det_rules, recall=recall)
        s = linker._settings_obj
        if not det_rules or not 0 < s._probability_two_random_records_match < 1:
            s._probability_two_random_records_match = 1.0 / max(pairs, 2)

    prior(ASSUMED_RECALL)
    linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=seed, min_count_per_level=None)
    skipped = []
    for rule in rules:
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(rule)
        except (EMTrainingException, SplinkException, ValueError, ZeroDivisionError):
            skipped.append(rule.get_blocking_rule("duckdb").blocking_rule_sql)
    if len(skipped) == len(rules):
        raise PprlLinkError("no match key found a pair of records to train on: too few records, or none shared")
    sessions = independent_sessions(linker, schema)
    recall = _deterministic_recall(engine, linker, deterministic) if deterministic else None
    if recall is not None:
        prior(recall)
    model = linker.misc.save_model_to_json()
    p = linker._settings_obj._probability_two_random_records_match
    sampled = min(U_SAMPLE_PAIRS, pairs)
    corrected = correct_u_for_matches(model, p, sampled) if det_rules else {}
    untrained = fill_untrained(model, sampled)
    # As for plaintext: u of postcodes among pairs sharing a surname but not a forename, date of
    # birth or id (relatives share a place far more often than strangers do).
    shared = shared_surname_u(engine, model, INPUT) if {"surname", "forename"} <= fields else None
    return model, {"prediction_keys": predicting, "prediction_keys_left_out": dropped, "shared_surname_u": shared, "prior": p, "deterministic_recall": recall, "training_steps_skipped": skipped,
                   "m_from_session": sessions, "u_corrected_for_matches": corrected, "untrained_levels": untrained}


def person_label(level: str) -> str:
    """SQL of an opaque person id from Splink's cluster id (a record key of one of the parties)."""
    return f"'P' || substr(md5('pprl|{level}|' || cluster_id), 1, 16)"


def pprl_link(engine: Engine, loaded: LoadedSchema, paths: list[Path], out: Path, seed: int = 42) -> dict:
    """Link the encoded files; writes `out`/links.parquet (party, token, person ids), model.json
    and link.json (what was done and what the linker saw), and returns link.json's content."""
    if len(paths) < 2:
        raise PprlLinkError("give two encoded files (one per party) to link")
    for p in paths:
        if not Path(p).is_file():
            raise PprlLinkError(f"{p}: no such encoded file")
    schema = loaded.schema
    metas = check_files(engine, loaded, paths)
    started = time.perf_counter()
    fields, keys = load(engine, schema, paths)
    model, trained = train_model(engine, schema, fields, keys, seed)
    train_s = time.perf_counter() - started
    api = engine.splink_api()
    linker = Linker(api.register(INPUT, dataset_display_name="encodings"), model, log_level=logging.ERROR)
    started, cpu = time.perf_counter(), time.process_time()
    floor = min(0.5, schema.thresholds["low"])
    edges = linker.inference.predict(threshold_match_probability=floor)
    predict_s, predict_cpu = time.perf_counter() - started, time.process_time() - cpu
    candidate_pairs = _candidate_pairs(engine, schema, keys)
    engine.execute(f"CREATE OR REPLACE TABLE pprl_edges AS SELECT record_key_l, record_key_r, match_probability "
                   f"FROM {edges.physical_name}")
    edges.drop_table_from_database_and_remove_from_cache()
    nodes = api.register(INPUT, dataset_display_name="records")
    edge_table = api.register("pprl_edges", dataset_display_name="edges")
    selects = []
    for level in LEVELS:
        result = cluster_pairwise_predictions_at_threshold(nodes, edge_table, api, "record_key", "record_key_l",
                                                           "record_key_r",
                                                           threshold_match_probability=schema.thresholds[level])
        engine.execute(f"CREATE OR REPLACE TABLE pprl_clusters_{level} AS SELECT record_key, {person_label(level)} "
                       f"AS person_id FROM {result.physical_name}")
        result.drop_table_from_database_and_remove_from_cache()
        selects.append(f"pprl_clusters_{level}.person_id AS person_id_{level}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    joins = " ".join(f"JOIN pprl_clusters_{lv} USING (record_key)" for lv in LEVELS)
    written = engine.to_parquet(f"SELECT i.party, i.token, {', '.join(selects)} FROM {INPUT} i {joins} "
                                "ORDER BY i.party, i.token", out / LINKS_FILE)
    (out / "model.json").write_text(json.dumps(model, indent=2), encoding="utf-8")
    summary = engine.execute(f"""SELECT count(*) FILTER (WHERE match_probability >= {schema.thresholds['medium']}),
                                        count(*) FILTER (WHERE split_part(record_key_l, ':', 1) <> split_part(record_key_r, ':', 1)
                                                         AND match_probability >= {schema.thresholds['medium']})
                                 FROM pprl_edges""")[0]
    persons = {lv: engine.scalar(f"SELECT count(DISTINCT person_id) FROM pprl_clusters_{lv}") for lv in LEVELS}
    info = {
        "schema": str(loaded.path.name), "schema_sha256": loaded.sha256, "schema_version": schema.version,
        "standardisation": metas[0].get("standardisation"),
        "parties": {m["party"]: {"file": Path(p).name, "records": m["records"]} for m, p in zip(metas, paths)},
        "thresholds": schema.thresholds, "fields_compared": sorted(fields), "match_keys": sorted(keys),
        "candidate_pairs": candidate_pairs, "pairs_at_medium": summary[0], "cross_party_pairs_at_medium": summary[1],
        "persons": persons, "records_written": written,
        "seconds": {"train": round(train_s, 2), "score": round(predict_s, 2), "score_cpu": round(predict_cpu, 2)},
        "training": trained, "datafirst": __version__,
        "model_sha256": hashlib.sha256((out / "model.json").read_bytes()).hexdigest(),
    }
    (out / "link.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    for level in LEVELS:
        engine.execute(f"DROP TABLE IF EXISTS pprl_clusters_{level}")
    return info


def _candidate_pairs(engine: Engine, schema: Schema, keys: set[str]) -> int:
    """Distinct pairs sharing some match key (what the model scores)."""
    used = [f"mk_{k}" for k in schema.match_keys if k in keys]
    parts = " UNION ".join(f"""SELECT l.record_key AS a, r.record_key AS b FROM {INPUT} l JOIN {INPUT} r
                               ON l.{k} = r.{k} AND l.record_key < r.record_key""" for k in used)
    return int(engine.scalar(f"SELECT count(*) FROM ({parts})"))
