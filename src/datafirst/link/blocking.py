"""Blocking: which candidate pairs get scored, and how many true pairs that can reach.

`choose_prediction_rules` (training) keeps the candidate rules whose measured comparisons fit a
budget per record; `check_blocking` (linking) refuses a rule that would explode on today's data;
`estimated_recall` says, from the trained model, what share of true pairs agree on the columns of
at least one rule (pairs that agree on none are never scored, whatever the model would say), and
`measured_recall` counts it where labels say which pairs are true.
"""

from __future__ import annotations

import itertools
import re
import warnings

from splink import Linker

from ..engine import Engine
from .inputs import LinkError

# A prediction rule may add at most this many comparisons per record (beyond the rules before
# it); one that would add more is left out of the model. Rules on keys whose values do not grow
# with the data (a date of birth alone) pass on small data and fail on large.
RULE_COMPARISONS_PER_RECORD = 10


def choose_prediction_rules(linker: Linker, rules: list, records: int, sampled: int) -> tuple[list, list[dict], list[str]]:
    """The candidate prediction rules whose measured comparisons fit RULE_COMPARISONS_PER_RECORD,
    with every candidate's count and the notes for those left out.

    Counted on the training table (a sample of `sampled` of the `records` past the training cap,
    then scaled by the square of the share), exactly up to 200,000 records and from a 10% sample
    above, as Splink estimates."""
    proportion = 1.0 if sampled <= 200_000 else 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a rare key on a sample: see check_blocking
        counts = linker.blocking_analysis.count_comparisons_from_blocking_rules(
            rules, record_sample_proportion=proportion)
    scale = (records / sampled) ** 2 if sampled else 1.0
    budget = RULE_COMPARISONS_PER_RECORD * records
    kept, measured, notes = [], [], []
    for rule, rec in zip(rules, counts):
        n = int(rec["marginal_comparison_count"] * scale)
        ok = n <= budget
        measured.append({"rule": rec["blocking_rule"], "comparisons": n, "kept": ok})
        if ok:
            kept.append(rule)
        else:
            notes.append(f"blocking rule {rec['blocking_rule']}: left out, about {n:,} comparisons "
                         f"(more than {RULE_COMPARISONS_PER_RECORD} per record)")
    return kept, measured, notes



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


# --- blocking recall ---------------------------------------------------------------------------

# Each comparison's levels grouped into how far a pair agrees on the field, by label (the rest
# is "other": disagreeing, or empty on either side).
_LEVEL_GROUPS = {
    "forename": {"Exact match on forename": "exact", "forename equals the other record's surname": "swapped",
                 "nickname or variant of the other (public nickname list)": "nickname",
                 "Jaro-Winkler distance of forename >= 0.92": "close", "Jaro-Winkler distance of forename >= 0.88": "close"},
    "surname": {"Exact match on surname": "exact", "Jaro-Winkler distance of surname >= 0.92": "close",
                "Jaro-Winkler distance of surname >= 0.88": "close"},
    "date_of_birth": {"Exact match on date_of_birth": "exact", "day and month swapped": "year",
                      "same year and month": "year", "same year": "year"},
    "postcode": {"Exact match on full postcode": "exact", "Exact match on sector": "district",
                 "Exact match on district": "district"},
    "other_id": {"Exact match on other_id": "exact", "Damerau-Levenshtein distance of other_id <= 1": "close"},
}
# A rule column: the field it reads and the agreements of that field that satisfy it. A soundex
# is taken to agree when the names are exact or close in spelling.
_RULE_COLUMNS = {
    "forename": ("forename", {"exact"}), "forename_soundex": ("forename", {"exact", "close"}),
    "forename_group": ("forename", {"exact", "nickname"}),
    "surname": ("surname", {"exact"}), "surname_soundex": ("surname", {"exact", "close"}),
    "date_of_birth": ("date_of_birth", {"exact"}), "year_of_birth": ("date_of_birth", {"exact", "year"}),
    "postcode": ("postcode", {"exact"}), "postcode_sector": ("postcode", {"exact", "district"}),
    "postcode_district": ("postcode", {"exact", "district"}),
}
# The presence column of each field (a date of birth's year is there whenever any of it is).
_PRESENCE = {"date_of_birth": "year_of_birth"}
_SWAP = re.compile(r"l\.\"?forename\"?\s*=\s*r\.\"?surname\"?", re.IGNORECASE)
_PART_OF_ID = re.compile(r"(left|right)\s*\(\s*l\.\"?other_id\"?", re.IGNORECASE)


def _requirements(rule_sql: str) -> dict[str, set[str]] | None:
    """{field: agreements that satisfy the rule} of a rule's SQL; None when it reads a column
    this estimate does not model."""
    if _SWAP.search(rule_sql):
        return {"forename": {"swapped"}}
    if _PART_OF_ID.search(rule_sql):
        return {"other_id": {"exact", "close"}}
    needs: dict[str, set[str]] = {}
    for col in set(re.findall(r"\bl\.\"?([A-Za-z_][A-Za-z0-9_]*)\"?", rule_sql)):
        field, ok = _RULE_COLUMNS.get(col, (col, {"exact"}))
        needs[field] = needs.get(field, ok) & ok
    return needs or None


def estimated_recall(model: dict, presence: dict[str, float], rules: list[str]) -> dict:
    """The share of true pairs that at least one prediction rule reaches, by the model.

    A true pair reaches a rule when it agrees on the rule's columns as the rule needs (exactly,
    or by soundex or nickname group). By the model, a field agrees at a level with its m
    probability, given the field is on both records (the share of records holding it, squared);
    fields are taken as independent, as Fellegi-Sunter takes them. So this is the model's view,
    and it misses what the model misses (true pairs the blocking never showed EM); with labels,
    `measured_recall` counts it."""
    comparisons = {c["output_column_name"]: c for c in model.get("comparisons", [])}
    per_rule, needs = [], []
    for rule in rules:
        req = _requirements(rule)
        if req is None or any(f not in comparisons for f in req):
            continue
        needs.append((rule, req))
    fields = sorted({f for _, req in needs for f in req})
    dists = {}
    for field in fields:
        both = presence.get(_PRESENCE.get(field, field), 0.0) ** 2
        dist: dict[str, float] = {}
        for level in comparisons[field]["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            label = level.get("label_for_charts", "")
            group = _LEVEL_GROUPS.get(field, {}).get(label, "exact" if label == f"Exact match on {field}" else None)
            if group:
                dist[group] = dist.get(group, 0.0) + both * float(level.get("m_probability") or 0.0)
        dist["other"] = max(0.0, 1.0 - sum(dist.values()))
        dists[field] = dist
    for rule, req in needs:
        p = 1.0
        for field, ok in req.items():
            p *= sum(v for k, v in dists[field].items() if k in ok)
        per_rule.append({"rule": rule, "recall": round(p, 4)})
    reached = 0.0
    for combo in itertools.product(*(dists[f].items() for f in fields)):
        level = {f: g for f, (g, _) in zip(fields, combo)}
        if any(all(level[f] in ok for f, ok in req.items()) for _, req in needs):
            p = 1.0
            for _, prob in combo:
                p *= prob
            reached += p
    return {"recall": round(reached, 4), "rules": per_rule,
            "rules_not_modelled": [r for r in rules if r not in {n for n, _ in needs}]}


def measured_recall(engine: Engine, rules: list[str], records: str, truth: str) -> dict:
    """The share of true pairs (records sharing a true id in `truth`) that at least one rule
    reaches, overall and per rule, counted on `records` (the link input)."""
    conditions = list(rules)
    counts = engine.execute(f"""
        WITH t AS (SELECT i.*, lab.true_id FROM {records} i JOIN {truth} lab USING (record_key)),
        pairs AS (SELECT {', '.join(f'coalesce({c}, false) AS r{i}' for i, c in enumerate(conditions))}
                  FROM t l JOIN t r ON l.true_id = r.true_id AND l.record_key < r.record_key)
        SELECT count(*), count(*) FILTER (WHERE {' OR '.join(f'r{i}' for i in range(len(rules))) or 'false'}),
               {', '.join(f'count(*) FILTER (WHERE r{i})' for i in range(len(rules))) or '0'}
        FROM pairs""")[0]
    total, reached, *each = counts
    return {"true_pairs": int(total), "recall": round(reached / total, 4) if total else None,
            "rules": [{"rule": r, "recall": round(n / total, 4) if total else None} for r, n in zip(rules, each)]}
