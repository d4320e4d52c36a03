"""The default Splink model, built from identifier roles alone.

Every source's identifiers share one schema (standardise/stage.py), so the model is the same
whatever the sources: a comparison per role that some source provides, blocking rules that
use only roles present, term-frequency adjustment on names (a match on a rare surname says
more than a match on Smith). Nothing here is tuned to the synthetic world.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import splink.comparison_library as cl
from splink import SettingsCreator, block_on

# Roles that are strong enough for linkage when combined; a source needs at least two
# of these (a name counts once) to be linked at all.
LINKING_ROLES = ("name", "date_of_birth", "postcode", "pnc", "cro", "other_id")
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

    present: set[str]
    comparisons: list = field(default_factory=list)
    prediction_rules: list = field(default_factory=list)
    training_rules: list = field(default_factory=list)
    deterministic_rules: list = field(default_factory=list)


def model_spec(present: set[str]) -> ModelSpec:
    """Comparisons and rules for the identifier columns that hold any values."""
    spec = ModelSpec(present=present)
    has = present.__contains__
    if has("forename"):
        spec.comparisons.append(cl.NameComparison("forename").configure(term_frequency_adjustments=True))
    if has("surname"):
        spec.comparisons.append(cl.NameComparison("surname").configure(term_frequency_adjustments=True))
    if has("middle_names"):
        spec.comparisons.append(cl.JaroWinklerAtThresholds("middle_names", [0.9]))
    if has("date_of_birth"):
        spec.comparisons.append(cl.DateOfBirthComparison("date_of_birth", input_is_string=False))
    if has("postcode"):
        spec.comparisons.append(cl.PostcodeComparison("postcode"))
    for col in ("sex", "pnc", "cro", "other_id"):
        if has(col):
            spec.comparisons.append(cl.ExactMatch(col))

    # Prediction blocking: each rule catches pairs the others miss (a wrong date of birth,
    # a misspelt name, a missing PNC). Every pair is scored once however many rules catch it.
    for cols in (("pnc",), ("cro",), ("other_id",), ("date_of_birth",),
                 ("surname_soundex", "forename_soundex", "year_of_birth"), ("forename", "surname"),
                 ("postcode", "surname_soundex"), ("postcode", "forename", "year_of_birth")):
        if all(has(c) for c in cols):
            spec.prediction_rules.append(block_on(*cols))
    # Training: EM sessions each fix some columns so the others can be estimated.
    for cols in (("date_of_birth",), ("surname_soundex", "forename_soundex")):
        if all(has(c) for c in cols):
            spec.training_rules.append(block_on(*cols))
    for cols in (("forename", "surname", "date_of_birth"), ("pnc",)):
        if all(has(c) for c in cols):
            spec.deterministic_rules.append(block_on(*cols))
    return spec


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
