"""Blocking: which candidate pairs get scored, what that costs, and how many true pairs it can reach.

The comparison budget (`link.comparison_budget`, docs/linkage.md) is checked before any pair is
scored, on Splink's sampled per-rule counts. A rule's pairs are of two kinds: pairs of one
person's records, which grow with the records, and pairs of different people who share the key,
which grow with their square wherever the key's values do not grow with the data (a date of birth
alone, a soundex, a common name). The model says how many of a rule's pairs are true ones (the
prior, and each rule's share of true pairs from the m probabilities: `estimated_recall`), so the
rest can be projected to `growth` times the records. `plan_blocking` (training) narrows a rule
that would take the run over budget, now or at that size, with one more column (a year of birth,
a postcode district), or leaves it out; `check_blocking` (linking with a saved model) refuses such
a rule with advice. `estimated_recall` and `measured_recall` give the blocking's recall.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from dataclasses import asdict, dataclass, field

from splink import Linker
from splink.blocking_rule_library import CustomRule

from ..engine import Engine
from .inputs import LinkError

# Columns that narrow a rule, in order of preference: each splits a block of namesakes or of one
# birthday into smaller ones while costing few true pairs (a person's records rarely disagree on
# the year of birth or the postcode district, and never both where the model learns from them).
NARROWING_COLUMNS = ("year_of_birth", "postcode_district", "sex")
# A column a rule holds already makes narrowing by these pointless.
_IMPLIES = {"year_of_birth": ("date_of_birth", "year_of_birth"),
            "postcode_district": ("postcode", "postcode_sector", "postcode_district"),
            "sex": ("sex",)}
# Splink counts exactly up to this many records, and on a 10% sample (its estimate) above.
EXACT_COUNT_RECORDS = 200_000
# Ids a source issues per person: records sharing one are one person's, whatever the model's
# presence figures say (they take an id's presence as independent between two records, which
# it is not: a person with a police number has it on all their records).
ONE_PERSON_KEYS = {"person_key", "pnc", "cro", "other_id"}
# A rule whose pairs the model expects to hold fewer true pairs than this share of all true
# pairs (and fewer than one) reaches nothing worth its join.
NO_TRUE_PAIRS_SHARE = 1e-5
# How many times a rule may be narrowed before it is left out.
MAX_NARROWINGS = 2


@dataclass
class RuleCost:
    """One prediction rule's measured and projected cost, and what the budget did with it."""

    rule: str
    comparisons: int  # marginal: beyond the rules before it, on today's records
    true_pairs: int | None  # of those, expected to be one person's records (None: the model cannot say)
    projected: int  # at `growth` times the records
    growth_exponent: float | None  # log(projected / comparisons) / log(growth)
    largest_blocks: list[int] = field(default_factory=list)  # records in the largest blocks
    top10_share: float | None = None  # share of the rule's pairs in its 10 largest blocks
    action: str = "kept"  # kept | narrowed | left out
    from_rule: str | None = None  # the rule it narrows


def expected_true_pairs(prior: float | None, trained_on: int, records: int) -> float:
    """Pairs of one person's records among `records`, from a model's prior (the share of pairs
    that match among the `trained_on` records it was trained on). True pairs grow with the
    records (each person has a few records), not with their square."""
    if not prior or trained_on < 2:
        return 0.0
    return prior * trained_on * (trained_on - 1) / 2 * records / trained_on


def rule_sql(rule, dialect: str = "duckdb") -> str:
    return rule if isinstance(rule, str) else rule.get_blocking_rule(dialect).blocking_rule_sql


def _columns(sql: str) -> set[str]:
    return set(re.findall(r"\bl\.[\"`]?([A-Za-z_][A-Za-z0-9_]*)[\"`]?", sql))


def narrowed(rule, column: str, dialect: str = "duckdb"):
    """The rule with `column` held equal too."""
    return CustomRule(f"({rule_sql(rule, dialect)}) AND (l.\"{column}\" = r.\"{column}\")")


def _unwrap(sql: str) -> str:
    """`sql` without parentheses wrapping all of it."""
    sql = sql.strip()
    while sql.startswith("(") and sql.endswith(")"):
        depth = 0
        for i, ch in enumerate(sql):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0 and i < len(sql) - 1:
                return sql  # the first parenthesis closes before the end: "(a) AND (b)"
        sql = sql[1:-1].strip()
    return sql


def _conjuncts(sql: str) -> list[str]:
    """The parts of `sql` joined by AND outside any parentheses."""
    parts, depth, start = [], 0, 0
    for m in re.finditer(r"\(|\)|\bAND\b", sql, flags=re.IGNORECASE):
        token = m.group(0)
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0:
            parts.append(sql[start:m.start()])
            start = m.end()
    parts.append(sql[start:])
    out = []
    for part in parts:
        inner = _unwrap(part)
        out += _conjuncts(inner) if inner != part.strip() and re.search(r"\bAND\b", inner, re.IGNORECASE) else [inner]
    return out


def _key_expressions(sql: str) -> list[str] | None:
    """The key a rule blocks on, as expressions over one record; None for a rule that is not a
    conjunction of equal expressions of the two records (names crossed)."""
    keys = []
    for part in _conjuncts(_unwrap(sql)):
        sides = part.split("=")
        if len(sides) != 2:
            return None
        left, right = (x.strip() for x in sides)
        if "r." in left or left.replace("l.", "r.") != right:
            return None
        # DuckDB's quoting, whatever the engine's dialect wrote (Spark quotes with backticks):
        # the engine translates the SQL it is given from DuckDB's.
        keys.append(left.replace("l.", "").replace("`", '"'))
    return keys or None


def block_sizes(engine: Engine, table: str, sql: str) -> tuple[list[int], float | None]:
    """The sizes of a rule's five largest blocks on `table`, and the share of its pairs in its
    ten largest (a skewed key: a few values hold most pairs). Sizes only, never the values."""
    keys = _key_expressions(sql)
    if not keys:
        return [], None
    present = " AND ".join(f"({k}) IS NOT NULL" for k in keys)
    blocks = f"SELECT count(*) AS c FROM {table} WHERE {present} GROUP BY {', '.join(keys)}"
    top = [int(c) for (c,) in engine.execute(f"SELECT c FROM ({blocks}) b ORDER BY c DESC LIMIT 10")]
    pairs = engine.scalar(f"SELECT sum(c * (c - 1) / 2) FROM ({blocks}) b")
    top10 = sum(c * (c - 1) / 2 for c in top)
    return top[:5], (round(top10 / float(pairs), 4) if pairs else None)


def _count(linker: Linker, rules: list, records: int, sampled: int) -> list[int]:
    """Each rule's marginal comparisons on `records` records, counted on the linker's table of
    `sampled` (a random sample of them past the training cap: pairs scale with its square)."""
    proportion = 1.0 if sampled <= EXACT_COUNT_RECORDS else 0.1
    with warnings.catch_warnings():
        # On a sample, Splink warns that rare-key rules rest on few pairs; such rules are the
        # ones that cannot explode, and the estimate is only used to catch the ones that can.
        warnings.simplefilter("ignore", UserWarning)
        counts = linker.blocking_analysis.count_comparisons_from_blocking_rules(
            rules, record_sample_proportion=proportion)
    scale = (records / sampled) ** 2 if sampled else 1.0
    return [int(rec["marginal_comparison_count"] * scale) for rec in counts]


def _costs(rules_sql: list[str], counts: list[int], model: dict | None, presence: dict[str, float],
           true_pairs: float, growth: float) -> list[RuleCost]:
    """Each rule's true pairs (the model's share of all true pairs that the rule reaches beyond
    the rules before it) and its pairs projected to `growth` times the records."""
    costs, reached = [], 0.0
    for i, (sql, n) in enumerate(zip(rules_sql, counts)):
        keys = _key_expressions(sql) or []
        one_person = bool(keys) and all(k.strip('"') in ONE_PERSON_KEYS for k in keys)
        recall = estimated_recall(model, presence, rules_sql[:i + 1]) if model and not one_person else None
        modelled = recall is not None and sql not in recall["rules_not_modelled"]
        if modelled:
            now = recall["recall"]
            true = min(n, max(0.0, now - reached) * true_pairs)
            reached = max(reached, now)
        else:  # pairs sharing an id of one person, or rules the model cannot judge: taken as true
            true = n
        projected = growth * true + growth ** 2 * (n - true)
        exponent = math.log(projected / n) / math.log(growth) if n and growth > 1 else None
        costs.append(RuleCost(sql, n, round(true) if modelled else None, round(projected),
                              round(exponent, 3) if exponent is not None else None))
    return costs


def _strangers(cost: RuleCost, growth: float) -> float:
    """A rule's projected pairs of different people (those that grow with the square)."""
    true = cost.comparisons if cost.true_pairs is None else cost.true_pairs
    return cost.projected - growth * true


def _over(costs: list[RuleCost], records: int, budget) -> str | None:
    """Why the rules break the budget, or None."""
    now = sum(c.comparisons for c in costs)
    later = sum(c.projected for c in costs)
    if budget.max_pairs and now > budget.max_pairs:
        return f"{now:,} pairs, more than link.comparison_budget.max_pairs ({budget.max_pairs:,})"
    if now > budget.pairs_per_record * records:
        return f"{now / records:.1f} pairs per record, more than {budget.pairs_per_record:g}"
    if later > budget.pairs_per_record * records * budget.growth:
        return (f"{later / (records * budget.growth):.1f} pairs per record at {budget.growth:g} times the records, "
                f"more than {budget.pairs_per_record:g}")
    return None


def _presence(engine: Engine, table: str) -> dict[str, float]:
    cols = engine.columns(table)
    *counts, n = engine.execute("SELECT " + ", ".join(f"count({c})" for c in cols) + f", count(*) FROM {table}")[0]
    return {c: k / n if n else 0.0 for c, k in zip(cols, counts)}


def plan_blocking(linker: Linker, engine: Engine, rules: list, *, table: str, records: int, sampled: int,
                  budget, model: dict | None, true_pairs: float) -> tuple[list, list[dict], list[str]]:
    """The prediction rules that fit the comparison budget, each rule's cost, and a note per rule
    narrowed or left out.

    While the rules break the budget (now, or at `budget.growth` times the records), the rule whose
    pairs of different people would be most at that size is narrowed by the first column of
    NARROWING_COLUMNS it lacks and the data holds (at most MAX_NARROWINGS times), else left out;
    a narrowed rule that another rule already covers is left out. The narrowed rule replaces the
    original in place, so the order (and so each rule's marginal count) stays the same."""
    dialect = linker._db_api.sql_dialect.sql_dialect_str
    presence = _presence(engine, table)
    held = {c for c, share in presence.items() if share > 0}
    rules, origins, depth, notes = list(rules), [None] * len(rules), [0] * len(rules), []
    while True:
        sqls = [rule_sql(r, dialect) for r in rules]
        costs = _costs(sqls, _count(linker, rules, records, sampled), model, presence, true_pairs, budget.growth)
        why = _over(costs, records, budget)
        if why is None or not rules:
            break
        i = max(range(len(rules)), key=lambda k: _strangers(costs[k], budget.growth))
        cols = _columns(sqls[i])
        extra = next((c for c in NARROWING_COLUMNS if c in held and not any(x in cols for x in _IMPLIES[c])), None)
        if extra is None or depth[i] >= MAX_NARROWINGS or any(
                _columns(s) == cols | {extra} for j, s in enumerate(sqls) if j != i):
            notes.append(f"blocking rule {sqls[i]}: left out, about {costs[i].comparisons:,} comparisons now and "
                         f"{costs[i].projected:,} at {budget.growth:g} times the records ({why})")
            del rules[i], origins[i], depth[i]
            continue
        notes.append(f"blocking rule {sqls[i]}: narrowed with {extra}, about {costs[i].comparisons:,} comparisons now "
                     f"and {costs[i].projected:,} at {budget.growth:g} times the records ({why})")
        origins[i] = origins[i] or sqls[i]
        rules[i] = narrowed(rules[i], extra, dialect)
        depth[i] += 1
    # A rule that finds no pair, or whose pairs the model expects to hold no true pair, still
    # costs a join over every record when scoring: left out. (On the 1M-record world the first
    # and last four characters of the other id, 69,000 pairs of different people.)
    floor = max(1.0, NO_TRUE_PAIRS_SHARE * true_pairs)
    useless = [i for i, c in enumerate(costs)
               if c.comparisons == 0 or (c.true_pairs is not None and c.true_pairs < floor)]
    for i in useless:
        notes.append(f"blocking rule {costs[i].rule}: left out, " + (
            "it finds no pair of records" if costs[i].comparisons == 0 else
            f"about {costs[i].comparisons:,} comparisons, of which the model expects {costs[i].true_pairs:,} to be one "
            "person's records"))
    keep = [i for i in range(len(rules)) if i not in useless]
    if not keep:  # Splink with no prediction rule would score every pair of records
        raise LinkError("no prediction blocking rule fits the comparison budget and reaches a true pair: "
                        + "; ".join(notes) + ". Raise `link.comparison_budget` in the workspace config, or give "
                        "`link.blocking_rules` of your own (docs/linkage.md)")
    if useless:  # counted again: each rule's marginal pairs depend on the rules before it
        rules, origins = [rules[i] for i in keep], [origins[i] for i in keep]
        sqls = [rule_sql(r, dialect) for r in rules]
        costs = _costs(sqls, _count(linker, rules, records, sampled), model, presence, true_pairs, budget.growth)
    for cost, origin in zip(costs, origins):
        cost.from_rule = origin
        cost.action = "narrowed" if origin else "kept"
    _add_block_sizes(engine, table, costs)
    return rules, [asdict(c) for c in costs], notes


def _add_block_sizes(engine: Engine, table: str, costs: list[RuleCost], top_rules: int = 3) -> None:
    """Block sizes of the rules with the most pairs (the ones worth looking at)."""
    for cost in sorted(costs, key=lambda c: -c.comparisons)[:top_rules]:
        cost.largest_blocks, cost.top10_share = block_sizes(engine, table, cost.rule)


def check_blocking(linker: Linker, engine: Engine, table: str, n_records: int, budget, model: dict,
                   true_pairs: float) -> list[dict]:
    """Each prediction rule's cost on today's records; refuses rules that break the budget
    (now, or at `budget.growth` times the records), saying which and how to narrow them."""
    rules = linker._settings_obj._blocking_rules_to_generate_predictions
    sqls = [r.blocking_rule_sql for r in rules]
    presence = _presence(engine, table)
    costs = _costs(sqls, _count(linker, sqls, n_records, n_records), model, presence, true_pairs, budget.growth)
    why = _over(costs, n_records, budget)
    if why:
        worst = sorted(costs, key=lambda c: -_strangers(c, budget.growth))[:3]
        listing = "; ".join(f"{c.rule}: about {c.comparisons:,} comparisons now, {c.projected:,} at "
                            f"{budget.growth:g} times the records" for c in worst)
        raise LinkError(f"the blocking rules break the comparison budget on {n_records:,} records: {why}. The "
                        f"costliest: {listing}. Make them stricter (add a column such as year_of_birth or "
                        "postcode_district) in `link.blocking_rules` in the workspace config, or retrain "
                        "(`datafirst train` narrows default rules to fit), or raise `link.comparison_budget` "
                        "if the machine can take it (docs/linkage.md).")
    _add_block_sizes(engine, table, costs)
    return [asdict(c) for c in costs]


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
_SWAP = re.compile(r"l\.[\"`]?forename[\"`]?\s*=\s*r\.[\"`]?surname[\"`]?", re.IGNORECASE)
_PART_OF_ID = re.compile(r"(left|right)\s*\(\s*l\.[\"`]?other_id[\"`]?", re.IGNORECASE)


def _requirements(rule_sql: str) -> dict[str, set[str]] | None:
    """{field: agreements that satisfy the rule} of a rule's SQL; None when it reads a column
    this estimate does not model."""
    if _SWAP.search(rule_sql):
        return {"forename": {"swapped"}}
    if _PART_OF_ID.search(rule_sql):
        return {"other_id": {"exact", "close"}}
    needs: dict[str, set[str]] = {}
    for col in _columns(rule_sql):
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
