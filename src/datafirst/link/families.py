"""Families: keep household members, twins and namesakes apart, as far as the data shows they are there.

Two corrections to Fellegi-Sunter's independence, both estimated from the data after EM:
`shared_surname_u` (places and attributes weighed among people who share a surname) and
`calibrate` (the family comparison's weights).

A place or an attribute runs in families: relatives share an address, and a surname is local,
so two Ferraris born in Varese are far likelier than two random people born there. Its u from
random pairs therefore overstates what agreeing on it adds to an agreeing surname, and a
namesake or a relative is linked on name and place alone. So u of postcodes, addresses and
declared attributes is estimated among pairs that share a surname but neither a forename nor a
date of birth nor an own identifier (police or system id): pairs that are not one person, in
which that agreement has to tell people apart. (Without the date of birth, FEBRL's duplicates,
whose forename its generator replaced, counted as strangers sharing an address.)

Fellegi-Sunter adds the fields' weights as if they were independent given a non-match. In a
family they are not: household members share a surname and an address, twins a date of birth
too, so their agreements add up to far more than they are worth and they were linked at
p > 0.99 (issue 22). The model's family comparison (settings.family_comparison) picks out those
patterns: the surname and a place, a date of birth, or both agreeing exactly while the forenames
are unrelated. Its weights are set here, after EM, from the data.

How much such a pattern says depends on the data. In FEBRL, whose generator replaces a whole
forename of a duplicate record, a pair with one surname, one address and unrelated forenames is
the same person; in a census of households it is a spouse, a child or a twin. The data says
which through fields that family members do not share but one person's records do: the sex
(family pairs differ in it about half the time, one person's records almost never) and, where
the pattern does not fix it, the date of birth (family members' differ, bar twins). Among a
pattern's pairs with the field on both sides, the share disagreeing estimates the share of
family pairs, `phi`:

    observed disagreement = (1 - phi) * a + phi * b,  so  phi = (observed - a) / (b - a)

with `a` the model's disagreement rate among matches (the m of the field's "else" level) and `b`
among random pairs (its u), clipped to [0, 1]. Where families dominate a pattern (phi >= FAMILY_SHARE),
its weight is set so that the median pair of the pattern that no such field tells apart (same
sex, date of birth agreeing or missing) ends at a match probability of 1 - phi (at least 1%):
those pairs are at least as likely to be family as the pattern's pairs overall. Where they do not
(phi < FAMILY_SHARE, or too few pairs to say), the weight stays zero and the model links as it would
without the comparison. The estimates and weights are saved in the model's metadata.
"""

from __future__ import annotations

import json
import math

from splink import block_on

from ..engine import Engine
from .inputs import linker as make_linker
from .settings import FAMILY_LEVELS, FORENAME_UNRELATED

# Fields whose disagreement family members show and one person's records do not.
INSTRUMENTS = ("sex", "date_of_birth")
# Fewer pattern pairs with an instrument than this say nothing.
MIN_PATTERN_PAIRS = 30
# The family share above which a pattern is weighed down: a quarter is far beyond what
# independence allows for (about none), and twins, whose sex agrees more often than two random
# people's, make the estimate low (0.44 on the census test set, where they are nearly all family).
FAMILY_SHARE = 0.25
# The lowest match probability a pattern's median indistinguishable pair is set to.
MIN_TARGET = 0.01


def _levels(comparison: dict) -> list[tuple[int, dict]]:
    """(gamma value, level) of a comparison's non-null levels, strongest first."""
    levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
    return [(len(levels) - 1 - i, lv) for i, lv in enumerate(levels)]


# Comparisons whose u is estimated among people who share a surname: places and attributes.
NOT_SHARED_SURNAME = ("forename", "surname", "middle_names", "date_of_birth", "sex", "pnc", "cro", "other_id",
                      "person_key", "family")
# Same-surname pairs to sample (by sampling records: pairs grow with the square of a surname's records).
SHARED_SURNAME_PAIRS = 2_000_000
# Fewer pairs with both values than this leave a comparison's u as random sampling gave it.
MIN_SHARED_SURNAME_PAIRS = 200
# Fewer pairs at a level than this leave that level's u as random sampling gave it.
MIN_LEVEL_PAIRS = 10
# The least rise over the random pairs' u that counts as families sharing the value.
SHARED_SURNAME_EFFECT = 2.0


def _marked(model: dict, names: set[str]) -> dict:
    """A copy of `model` in which each non-null level of the comparisons `names` has a weight of
    its own, -(its position + 1): Splink keeps each comparison's weight in predictions (mw_) but
    not which level gave it, so the weight says the level."""
    marked = json.loads(json.dumps(model))
    for comparison in marked["comparisons"]:
        if comparison["output_column_name"] in names:
            for i, (_, level) in enumerate(_levels(comparison)):
                level.update({"m_probability": 2.0 ** -(i + 1), "u_probability": 1.0, "tf_adjustment_column": None})
    return marked


def shared_surname_u(engine: Engine, model: dict, table: str) -> dict:
    """Estimate u of places and attributes among pairs sharing a surname but not a forename, in
    place on `model`; returns {comparison: {level: [u before, u after]}} and the pairs used."""
    comparisons = [c for c in model["comparisons"] if c["output_column_name"] not in NOT_SHARED_SURNAME]
    forename = next((c for c in model["comparisons"] if c["output_column_name"] == "forename"), None)
    if not comparisons or forename is None:
        return {}
    unrelated = next(i for i, (_, lv) in enumerate(_levels(forename)) if lv.get("label_for_charts") == FORENAME_UNRELATED)
    # Fields that, agreeing, say a pair may be one person: it must not agree on any (null or "else").
    own = {c["output_column_name"]: len(_levels(c)) for c in model["comparisons"]
           if c["output_column_name"] in ("date_of_birth", "pnc", "cro", "other_id")}
    squares = engine.scalar(f"SELECT sum(n * n) FROM (SELECT count(*) AS n FROM {table} WHERE surname IS NOT NULL "
                            "GROUP BY surname)") or 0
    share = min(1.0, math.sqrt(2 * SHARED_SURNAME_PAIRS / squares)) if squares else 1.0
    # A fixed sample of records (the same for the same data), as for training.
    named = engine.scalar(f"SELECT count(*) FROM {table} WHERE surname IS NOT NULL AND forename IS NOT NULL")
    engine.execute(f"""CREATE OR REPLACE TABLE link_surname_sample AS SELECT * FROM {table}
                       WHERE surname IS NOT NULL AND forename IS NOT NULL
                       ORDER BY md5(record_key) LIMIT {max(1, int(share * named))}""")
    names = {c["output_column_name"] for c in comparisons} | {"forename"} | set(own)
    marked = _marked(model, names)
    marked.update({"retain_intermediate_calculation_columns": True, "retain_matching_columns": False,
                   "blocking_rules_to_generate_predictions": [
                       block_on("surname").get_blocking_rule(engine.dialect).as_dict()]})
    pairs = make_linker(engine, marked, table="link_surname_sample").inference.predict()
    out: dict = {"pairs_sampled": 0}
    try:
        where = f'FROM {pairs.physical_name} WHERE "mw_forename" = {-(unrelated + 1)}' + "".join(
            f' AND "mw_{name}" IN (0, {-levels})' for name, levels in own.items())
        out["pairs_sampled"] = int(engine.scalar(f"SELECT count(*) {where}"))
        for comparison in comparisons:
            name = comparison["output_column_name"]
            counts = dict(engine.execute(f'SELECT "mw_{name}", count(*) {where} AND "mw_{name}" <> 0 GROUP BY 1'))
            total = sum(counts.values())
            if total < MIN_SHARED_SURNAME_PAIRS:
                continue
            changed = {}
            for i, (_, level) in enumerate(_levels(comparison)):
                # Never below u among random pairs: sharing a surname does not make agreeing on a
                # place rarer. A level these pairs reach only a few times keeps its u too: a count
                # that small says nothing the random pairs, far more of them, did not.
                # Only a clear effect counts: a u under SHARED_SURNAME_EFFECT times the random pairs' is
                # within what a smaller sample of pairs gives by chance (FEBRL, without families: 1.2).
                seen = counts.get(-(i + 1), 0)
                u = level["u_probability"]
                if seen >= MIN_LEVEL_PAIRS and seen / total > SHARED_SURNAME_EFFECT * u:
                    u = seen / total
                changed[level.get("label_for_charts", str(i))] = [level["u_probability"], u]
                level["u_probability"] = u
            out[name] = changed
    finally:
        pairs.drop_table_from_database_and_remove_from_cache()
        engine.execute("DROP TABLE IF EXISTS link_surname_sample")
    return out


def calibrate(engine: Engine, model: dict, table: str, present: set[str]) -> dict:
    """Set the family comparison's weights from the data, in place on `model` (a trained Splink
    model as JSON); returns per pattern what was measured and the weight set."""
    comparisons = {c["output_column_name"]: c for c in model["comparisons"]}
    family = comparisons.get("family")
    if family is None:
        return {}
    instruments = [f for f in INSTRUMENTS if f in comparisons]
    contexts = [c for c in ("postcode", "address", "date_of_birth") if c in present]
    # Splink keeps each comparison's weight (mw_) but not its level: for this scoring each family
    # level is marked by a weight of its own (-10, -20, ...), and an instrument's "else" level is
    # known by its weight.
    marked = json.loads(json.dumps(model))
    for i, (_, level) in enumerate(_levels(next(c for c in marked["comparisons"] if c["output_column_name"] == "family"))):
        if level.get("label_for_charts") in FAMILY_LEVELS.values():
            level["m_probability"], level["u_probability"] = 2.0 ** (-10 * (i + 1)), 1.0
    marked.update({"retain_intermediate_calculation_columns": True, "blocking_rules_to_generate_predictions": [
        block_on("surname", c).get_blocking_rule(engine.dialect).as_dict() for c in contexts]})
    pairs = make_linker(engine, marked, table=table).inference.predict()
    out = {}
    try:
        for i, (_, level) in enumerate(_levels(family)):
            label = level.get("label_for_charts", "")
            if label not in FAMILY_LEVELS.values():
                continue
            pattern = f'FROM {pairs.physical_name} WHERE "mw_family" = {-10 * (i + 1)}'
            found = {"pairs": int(engine.scalar(f"SELECT count(*) {pattern}")), "by_field": {}, "weight": 0.0}
            out[label] = found
            weighted, counted, hard = 0.0, 0, []
            for field in instruments:
                if field == "date_of_birth" and "date of birth" in label:
                    continue  # fixed by the pattern itself
                _, else_level = _levels(comparisons[field])[-1]
                a, b = else_level["m_probability"], else_level["u_probability"]
                differs = f'abs("mw_{field}" - ({math.log2(a / b)!r})) < 1e-9'
                n, disagreeing = engine.execute(
                    f'SELECT count(*), count(*) FILTER (WHERE {differs}) {pattern} AND "mw_{field}" <> 0')[0]
                hard.append(f"NOT ({differs})")
                if n < MIN_PATTERN_PAIRS or b <= a:
                    continue
                phi = min(1.0, max(0.0, (disagreeing / n - a) / (b - a)))
                found["by_field"][field] = {"pairs": int(n), "disagreeing": int(disagreeing), "family_share": round(phi, 4)}
                weighted, counted = weighted + phi * n, counted + n
            if not counted:
                found["note"] = f"fewer than {MIN_PATTERN_PAIRS} pairs with sex or date of birth: weight left at 0"
                continue
            phi = weighted / counted
            found["family_share"] = round(phi, 4)
            if phi < FAMILY_SHARE:
                found["note"] = "mostly one person's records: weight left at 0"
                continue
            median = engine.scalar(f'SELECT median(match_weight - "mw_family") {pattern}'
                                   + "".join(f" AND {h}" for h in hard))
            if median is None:
                found["note"] = "no pair of the pattern agrees on every field family members differ in"
                continue
            target = max(1.0 - phi, MIN_TARGET)
            weight = math.log2(target / (1 - target)) - float(median)
            if weight < 0:
                level["m_probability"], level["u_probability"] = 2.0 ** weight, 1.0
                found["weight"] = round(weight, 3)
                found["target_probability"] = round(target, 4)
    finally:
        pairs.drop_table_from_database_and_remove_from_cache()
    return out
