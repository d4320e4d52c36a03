"""The default Splink model, built from identifier roles alone.

Every source's identifiers share one schema (standardise/stage.py), so the model is the same
whatever the sources: a comparison per role that some source provides, blocking rules that
use only roles present, term-frequency adjustment on names (a match on a rare surname says
more than a match on Smith). Nothing here is tuned to the synthetic world.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import SettingsCreator, block_on

# Roles that are strong enough for linkage when combined; a source needs at least two
# of these (a name counts once) to be linked at all.
LINKING_ROLES = ("name", "date_of_birth", "postcode", "address", "pnc", "cro", "other_id")
MIN_LINKING_ROLES = 2


@dataclass(frozen=True)
class Thresholds:
    """Match probabilities at which a pair is the same person, named for researchers."""

    high: float = 0.999
    medium: float = 0.99
    low: float = 0.95

    def named(self) -> dict[str, float]:
        return {"high": self.high, "medium": self.medium, "low": self.low}

    def __post_init__(self) -> None:
        if not (0 < self.low <= self.medium <= self.high < 1):
            raise ValueError("thresholds must satisfy 0 < low <= medium <= high < 1")


@dataclass
class ModelSpec:
    """What the model compares and how it blocks, given the columns that carry data."""

    comparisons: list = field(default_factory=list)
    prediction_rules: list = field(default_factory=list)
    training_rules: list = field(default_factory=list)
    deterministic_rules: list = field(default_factory=list)


def model_spec(present: set[str]) -> ModelSpec:
    """Comparisons and rules for the identifier columns that hold any values."""
    spec = ModelSpec()
    has = present.__contains__
    for col, other in (("forename", "surname"), ("surname", "forename")):
        if has(col):
            spec.comparisons.append(_name_comparison(col, other if has(other) else None,
                                                     partial_swap=col == "forename"))
    if has("middle_names"):
        spec.comparisons.append(cl.JaroWinklerAtThresholds("middle_names", [0.9]))
    if has("date_of_birth"):
        spec.comparisons.append(cl.DateOfBirthComparison("date_of_birth", input_is_string=False))
    if has("postcode"):
        spec.comparisons.append(cl.PostcodeComparison("postcode"))
    if has("address") and not has("postcode"):
        # Address text and postcode say the same thing; comparing both would count living
        # together twice and merge families. Address is compared only where no postcode exists.
        spec.comparisons.append(cl.CustomComparison(
            comparison_levels=[cll.NullLevel("address"), cll.ExactMatchLevel("address"),
                               cll.ArrayIntersectLevel("address_tokens", 4), cll.ArrayIntersectLevel("address_tokens", 3),
                               cll.JaroWinklerLevel("address", 0.85), cll.ElseLevel()],
            output_column_name="address",
            comparison_description="address: exact, 4+ or 3+ words in common, Jaro-Winkler 0.85"))
    for col in ("sex", "pnc", "cro"):
        if has(col):
            spec.comparisons.append(cl.ExactMatch(col))
    if has("other_id"):
        # Other ids (prisoner numbers, social security numbers) are typed by hand: one or two
        # edits apart (a transposition counts as one) is still evidence, weighed by the model.
        spec.comparisons.append(cl.DamerauLevenshteinAtThresholds("other_id", [1, 2]))

    # Prediction blocking: each rule catches pairs the others miss (a wrong date of birth,
    # a misspelt name, a missing PNC). Every pair is scored once however many rules catch it.
    for cols in (("pnc",), ("cro",), ("other_id",), ("date_of_birth",),
                 ("surname_soundex", "forename_soundex", "year_of_birth"), ("forename", "surname"),
                 ("postcode", "surname_soundex"), ("postcode", "forename", "year_of_birth")):
        if all(has(c) for c in cols):
            spec.prediction_rules.append(block_on(*cols))
    if has("other_id"):
        # A hand-typed id one edit out (the model's Damerau-Levenshtein level) still agrees on
        # its first or its last four characters; exact-id blocking alone never scores it.
        spec.prediction_rules += [block_on("left(other_id, 4)"), block_on("right(other_id, 4)")]
    if has("address") and not has("postcode"):
        spec.prediction_rules += [block_on("address"), block_on("surname_soundex", "year_of_birth"),
                                  block_on("surname_soundex", "forename_soundex")]
    # Training: EM sessions each fix some columns so the others can be estimated.
    for cols in (("date_of_birth",), ("surname_soundex", "forename_soundex"), ("pnc",), ("other_id",)):
        if all(has(c) for c in cols):
            spec.training_rules.append(block_on(*cols))
    for cols in (("forename", "surname", "date_of_birth"), ("pnc",)):
        if all(has(c) for c in cols):
            spec.deterministic_rules.append(block_on(*cols))
    return spec


def _name_comparison(col: str, other: str | None, *, partial_swap: bool) -> cl.CustomComparison:
    """Exact (with term-frequency adjustment), swapped with the other name, then Jaro-Winkler.

    Clerks swap forename and surname; without the swapped level such a pair disagrees on both
    names and is pushed apart however well everything else agrees. Every level is symmetric,
    so a pair scores the same whichever record is on the left (incremental linkage scores
    pairs in another orientation than a full link). One comparison (`partial_swap`) counts a
    name of either record found as the other's other name, typo or not in the rest; the other
    counts only a full swap, so a single crossed name is evidence once and a full swap twice.
    """
    levels = [cll.NullLevel(col), cll.ExactMatchLevel(col).configure(tf_adjustment_column=col)]
    if other and partial_swap:
        # Written in DuckDB's SQL; Splink translates it for the engine (in Spark's, "x" is a string).
        levels.append(cll.CustomLevel(f'("{col}_l" = "{other}_r" OR "{col}_r" = "{other}_l")',
                                      label_for_charts=f"{col} equals the other record's {other}",
                                      base_dialect_str="duckdb"))
    elif other:
        levels.append(cll.ColumnsReversedLevel(col, other, symmetrical=True))
    levels += [cll.JaroWinklerLevel(col, t) for t in (0.92, 0.88, 0.7)]
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(comparison_levels=levels, output_column_name=col,
                               comparison_description=f"{col}: exact, swapped, Jaro-Winkler 0.92/0.88/0.7")


def settings(spec: ModelSpec) -> SettingsCreator:
    return SettingsCreator(
        link_type="dedupe_only",  # all sources in one table: every pair scored once, within and across
        unique_id_column_name="record_key",
        comparisons=spec.comparisons,
        blocking_rules_to_generate_predictions=spec.prediction_rules,
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
        additional_columns_to_retain=["source"],
    )
