"""The default Splink model, built from identifier roles and declared attributes alone.

Every source's identifiers share one schema (standardise/stage.py), so the model is the same
whatever the sources: a comparison per role that some source provides, each with levels that
degrade gracefully (a nickname, a day and month swapped, an initial against a full name are
partial evidence, not none), blocking rules that use only what is present, and term-frequency
adjustment on names (a match on a rare surname says more than a match on Smith). Nothing here
is tuned to a data set: the knowledge is general (how people's names, dates and addresses are
written and mistyped) plus one public nickname list (link/reference/).

`model_spec` also says what it left out and why (`ModelSpec.notes`), so that `datafirst train`
can print it: a comparison without data, a rule whose columns are empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import SettingsCreator, block_on
from splink.blocking_rule_library import CustomRule

# Roles that are strong enough for linkage when combined; a source needs at least two
# of these (a name counts once) to be linked at all.
LINKING_ROLES = ("name", "date_of_birth", "postcode", "address", "pnc", "cro", "other_id")
MIN_LINKING_ROLES = 2

# The label of the forename level for names that are unrelated in every way the model knows
# (not equal, swapped, a nickname, close in spelling, an initial, the other's middle name).
FORENAME_UNRELATED = "forenames unrelated"
# The levels of the family comparison (see family_comparison), most specific first.
FAMILY_LEVELS = {
    "home_and_birth": "same surname, place and date of birth; forenames unrelated (twins at home)",
    "home": "same surname and place; forenames unrelated (household members)",
    "birth": "same surname and date of birth; forenames unrelated (twins)",
}


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
    notes: list[str] = field(default_factory=list)  # what was left out, and why


# Candidate prediction blocking rules, strongest first; each is used where its columns hold data.
# Each catches pairs the others miss (a wrong date of birth, a misspelt or changed name, a
# missing id); every pair is scored once however many rules catch it. Names are blocked only in
# compound keys (with another name, a date or a place), so that no rule's pairs grow with the
# square of the records. `forename_group` is the forename's canonical name in the public nickname
# list (link/nicknames.py): Bill, Will and William block together.
PREDICTION_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("person_key",), ("pnc",), ("cro",), ("other_id",),
    ("forename", "surname"), ("surname", "date_of_birth"), ("forename", "date_of_birth"),
    ("surname_soundex", "forename_soundex", "year_of_birth"),
    ("postcode", "surname_soundex"), ("postcode", "forename"),
    ("date_of_birth", "postcode_district"), ("date_of_birth", "forename_soundex"),
    ("forename_group", "surname"), ("forename", "surname", "swapped"),
    # Last and alone: kept only where the comparison budget allows it (blocking.plan_blocking);
    # it reaches pairs whose names were both replaced or swapped with a typo (FEBRL's duplicates).
    ("date_of_birth",),
)
# Rules for data without postcodes but with address text.
ADDRESS_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("address",), ("surname_soundex", "year_of_birth"), ("surname_soundex", "forename_soundex"),
)
# EM sessions: each holds some columns equal so that the others can be estimated; "place" is the
# postcode, else the address (see model_spec). Which block is rich in one person's records
# depends on the data: on old records, namesakes (many a Johann Muller) fill a block on names
# alone; in a census, fathers and sons of one name share an address. train.py takes each
# comparison's figures from the session whose matches disagree on it least (cleanest_sessions).
TRAINING_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("date_of_birth",), ("forename", "surname"), ("forename", "surname", "place"), ("pnc",), ("other_id",),
)
# The prior: pairs these rules find are counted as matches (scaled by the rules' recall).
DETERMINISTIC_CANDIDATES: tuple[tuple[str, ...], ...] = (("forename", "surname", "date_of_birth"), ("pnc",))


def model_spec(present: set[str], attributes: dict[str, str] | None = None, dialect: str = "duckdb") -> ModelSpec:
    """Comparisons and rules for the identifier columns that hold any values, and the declared
    attributes (name -> kind: category, text, number or date) that hold any. `dialect`: the
    engine's SQL (the family comparison is written from the forename comparison's SQL in it)."""
    spec = ModelSpec()
    has = present.__contains__
    attributes = {a: k for a, k in (attributes or {}).items() if has(a)}

    for col, other in (("forename", "surname"), ("surname", "forename")):
        if has(col):
            spec.comparisons.append(forename_comparison(has) if col == "forename"
                                    else surname_comparison(has("forename")))
    if has("middle_names"):
        spec.comparisons.append(middle_names_comparison())
    if has("year_of_birth"):
        spec.comparisons.append(date_of_birth_comparison(has("date_of_birth")))
    if has("postcode"):
        spec.comparisons.append(postcode_comparison())
    if has("address") and not has("postcode"):
        # Address text and postcode say the same thing; comparing both would count living
        # together twice and merge families. Address is compared only where no postcode exists.
        spec.comparisons.append(address_comparison())
    elif has("address"):
        spec.notes.append("address: not compared, because postcodes are (comparing both would count one place twice)")
    for col in ("sex", "pnc", "cro"):
        if has(col):
            spec.comparisons.append(cl.ExactMatch(col))
    if has("other_id"):
        # Other ids (prisoner numbers, social security numbers) are typed by hand: one or two
        # edits apart (a transposition counts as one) is still evidence, weighed by the model.
        spec.comparisons.append(cl.DamerauLevenshteinAtThresholds("other_id", [1, 2]))
    if has("person_key"):
        spec.comparisons.append(person_key_comparison())
    for name, kind in attributes.items():
        spec.comparisons.append(attribute_comparison(name, kind))
    family = family_comparison(spec.comparisons[0], has, dialect) if has("forename") and has("surname") else None
    if family is not None:
        spec.comparisons.append(family)
    for role, cols in (("name", ("forename", "surname")), ("date_of_birth", ("year_of_birth",)),
                       ("sex", ("sex",)), ("postcode", ("postcode",)), ("pnc", ("pnc",)), ("cro", ("cro",)),
                       ("other_id", ("other_id",)), ("middle names", ("middle_names",))):
        if not any(has(c) for c in cols):
            spec.notes.append(f"{role}: not compared, no source holds a value")

    candidates = list(PREDICTION_CANDIDATES)
    if has("address") and not has("postcode"):
        candidates += ADDRESS_CANDIDATES
    # A declared category (a birth place, an ethnicity) narrows a name: with the surname, and
    # with the forename, it still reaches pairs whose date of birth is missing or mistyped.
    candidates += [(a, name) for a, kind in attributes.items() if kind == "category" for name in ("surname", "forename")]
    for cols in candidates:
        usable = [c for c in cols if has(c) or c == "swapped"]
        if len(usable) == len(cols):
            spec.prediction_rules.append(_block(cols))
        elif cols != ("person_key",):
            spec.notes.append(f"blocking rule on {' + '.join(cols)}: left out, no values in "
                              f"{', '.join(c for c in cols if not has(c))}")
    if has("other_id"):
        # A hand-typed id one edit out (the model's Damerau-Levenshtein level) still agrees on
        # its first or its last four characters; exact-id blocking alone never scores it.
        spec.prediction_rules += [block_on("left(other_id, 4)"), block_on("right(other_id, 4)")]
    place = next((c for c in ("postcode", "address") if has(c)), None)
    for cols in TRAINING_CANDIDATES:
        cols = tuple(c for c in cols if c != "place") + ((place,) if "place" in cols and place else ())
        if all(has(c) for c in cols):
            spec.training_rules.append(block_on(*cols))
        else:
            spec.notes.append(f"training step blocked on {' + '.join(cols)}: left out, no values in "
                              f"{', '.join(c for c in cols if not has(c))}")
    for cols in DETERMINISTIC_CANDIDATES:
        if all(has(c) for c in cols):
            spec.deterministic_rules.append(block_on(*cols))
    return spec


def _block(cols: tuple[str, ...]):
    if cols == ("forename", "surname", "swapped"):
        # Forename and surname crossed; symmetric, so a pair is found whichever record is left.
        return CustomRule("l.forename = r.surname AND l.surname = r.forename")
    return block_on(*cols)


def forename_comparison(has) -> cl.CustomComparison:
    """Forenames, from agreement to strong disagreement.

    Exact (term-frequency adjusted), the other record's surname (clerks swap the two), a
    nickname or variant in the public list (Bill / William), close in spelling, an initial
    against a name with that initial, the other record's middle name (a person known by a
    middle name), loosely similar, and unrelated. Every level is symmetric, so a pair scores the
    same whichever record is on the left (incremental linkage scores pairs in another orientation
    than a full link).
    """
    levels = [cll.NullLevel("forename"), cll.ExactMatchLevel("forename").configure(tf_adjustment_column="forename")]
    if has("surname"):
        # Written in DuckDB's SQL; Splink translates it for the engine (in Spark's, "x" is a string).
        levels.append(cll.CustomLevel('("forename_l" = "surname_r" OR "forename_r" = "surname_l")',
                                      label_for_charts="forename equals the other record's surname",
                                      base_dialect_str="duckdb"))
    if has("forename_groups"):
        levels.append(cll.ArrayIntersectLevel("forename_groups", 1).configure(
            label_for_charts="nickname or variant of the other (public nickname list)"))
    levels += [cll.JaroWinklerLevel("forename", 0.92), cll.JaroWinklerLevel("forename", 0.88)]
    levels.append(cll.CustomLevel(
        '("forename_is_initial_l" OR "forename_is_initial_r") AND substr("forename_l", 1, 1) = substr("forename_r", 1, 1)',
        label_for_charts="an initial and a name with that initial", base_dialect_str="duckdb"))
    if has("middle_names"):
        levels.append(cll.CustomLevel(
            """(contains(' ' || "middle_names_r" || ' ', ' ' || "forename_l" || ' ')
                OR contains(' ' || "middle_names_l" || ' ', ' ' || "forename_r" || ' '))""",
            label_for_charts="forename is the other record's middle name", base_dialect_str="duckdb"))
    levels += [cll.JaroWinklerLevel("forename", 0.7), cll.ElseLevel().configure(label_for_charts=FORENAME_UNRELATED)]
    return cl.CustomComparison(comparison_levels=levels, output_column_name="forename",
                               comparison_description="forename: exact, swapped, nickname, close, initial, middle "
                                                      "name, loosely similar, unrelated")


def family_comparison(forename: cl.CustomComparison, has, dialect: str = "duckdb") -> cl.CustomComparison | None:
    """A correction for families, which Fellegi-Sunter's independence cannot see.

    Household members share a surname and a place, twins a date of birth too, and their
    agreements add up as if each were a coincidence among strangers. This comparison's levels
    pick out those patterns (the surname and a place or a date of birth agreeing exactly while the
    forenames are unrelated), and its weights are not estimated by EM: they start at zero and
    training sets them from how much of each pattern the data shows to be families
    (link/families.py). So data without families (FEBRL, whose generator replaces whole
    forenames of duplicates) keeps linking such pairs, and a census of households does not.
    """
    # Unquoted names, which read the same in every engine's SQL (Spark takes "x" for a string).
    places = [f"{c}_l = {c}_r" for c in ("postcode", "address") if has(c)]
    # The forename's levels in the engine's own SQL: a similarity function has another name on
    # each engine (Splink's jar on Spark), which no translation of DuckDB's text would give.
    levels_sql = forename.get_comparison(dialect).comparison_levels
    related = [lv.sql_condition for lv in levels_sql if not lv.is_null_level and lv.sql_condition.strip().upper() != "ELSE"]
    # Of the Jaro-Winkler levels only the loosest matters here (the others imply it).
    similarity = [c for c in related if c.startswith("jaro_winkler_similarity")]
    related = [c for c in related if c not in similarity[:-1]]
    # DuckDB's list_intersect has no Spark twin in translation; array_intersect, its alias, has.
    related = [c.replace("list_intersect(", "array_intersect(") for c in related]
    # A CASE, not NOT(a OR b ...): its tests run in order, each only on the pairs the earlier ones
    # left (an OR evaluated the nickname lists' intersection for every pair: 1.9 s of 12 s).
    unrelated = ('CASE WHEN forename_l IS NULL OR forename_r IS NULL THEN false '
                 + " ".join(f"WHEN coalesce({c}, false) THEN false" for c in related) + " ELSE true END")
    same_surname = "surname_l = surname_r"
    same_place = f"({' OR '.join(places)})" if places else None
    same_birth = "date_of_birth_l = date_of_birth_r" if has("date_of_birth") else None
    patterns = {"home_and_birth": [same_place, same_birth], "home": [same_place], "birth": [same_birth]}
    levels = []
    for key, parts in patterns.items():
        if all(parts):
            levels.append(cll.CustomLevel(" AND ".join([same_surname, *parts, f"({unrelated})"]),
                                          label_for_charts=FAMILY_LEVELS[key], base_dialect_str=dialect)
                          .configure(m_probability=1.0, u_probability=1.0, fix_m_probability=True,
                                     fix_u_probability=True))
    if not levels:
        return None
    levels.append(cll.ElseLevel().configure(m_probability=1.0, u_probability=1.0, fix_m_probability=True,
                                            fix_u_probability=True))
    return cl.CustomComparison(comparison_levels=levels, output_column_name="family",
                               comparison_description="family patterns: same surname and place or date of birth, "
                                                      "forenames unrelated (weights set by training)")


def surname_comparison(has_forename: bool) -> cl.CustomComparison:
    """Surnames: exact (term-frequency adjusted), the full name swapped, close in spelling, one
    part of a double-barrelled name, loosely similar, else. The swap level counts only when both
    names are crossed (the forename comparison already counts a single crossed name)."""
    levels = [cll.NullLevel("surname"), cll.ExactMatchLevel("surname").configure(tf_adjustment_column="surname")]
    if has_forename:
        levels.append(cll.ColumnsReversedLevel("surname", "forename", symmetrical=True))
    levels += [cll.JaroWinklerLevel("surname", 0.92), cll.JaroWinklerLevel("surname", 0.88),
               cll.CustomLevel("""(contains(' ' || "surname_l" || ' ', ' ' || "surname_r" || ' ')
                                   OR contains(' ' || "surname_r" || ' ', ' ' || "surname_l" || ' '))""",
                               label_for_charts="one surname is part of the other (double-barrelled)",
                               base_dialect_str="duckdb"),
               cll.JaroWinklerLevel("surname", 0.7), cll.ElseLevel()]
    return cl.CustomComparison(comparison_levels=levels, output_column_name="surname",
                               comparison_description="surname: exact, swapped, close, part of, loosely similar")


def middle_names_comparison() -> cl.CustomComparison:
    """Middle names: exact, close, an initial against a name with that initial ('S' and 'Sasha'),
    else. A record with no middle name says nothing (NULL), as middle names are often dropped."""
    return cl.CustomComparison(
        comparison_levels=[
            cll.NullLevel("middle_names"), cll.ExactMatchLevel("middle_names"),
            cll.JaroWinklerLevel("middle_names", 0.9),
            cll.CustomLevel("""(length("middle_names_l") = 1 OR length("middle_names_r") = 1)
                               AND substr("middle_names_l", 1, 1) = substr("middle_names_r", 1, 1)""",
                            label_for_charts="an initial and a middle name with that initial", base_dialect_str="duckdb"),
            cll.ElseLevel()],
        output_column_name="middle_names", comparison_description="middle names: exact, close, initial, else")


def date_of_birth_comparison(has_full_dates: bool) -> cl.CustomComparison:
    """Dates of birth, from exact to the year alone.

    Exact; day and month swapped (03/04 against 04/03); one digit mistyped (on the ISO text, all
    dates the same length) or two neighbouring digits swapped; the same year and month; the same year (which is all a
    year-only date, such as a 1 January written for an unknown day, can say); years one apart
    (a year worked out from an age). A pair where either side has no year says nothing.
    """
    levels = [cll.CustomLevel('"year_of_birth_l" IS NULL OR "year_of_birth_r" IS NULL',
                              label_for_charts="no year of birth on one side", base_dialect_str="duckdb")
              .configure(is_null_level=True)]
    if has_full_dates:
        d_l, d_r = '"date_of_birth_l"', '"date_of_birth_r"'
        # Two neighbouring digits swapped in the year's last two (1985 / 1958) or in the day (12 /
        # 21), in whole-number arithmetic: Damerau-Levenshtein on the text cost 3.8 s of the 12 s
        # of scoring 5.6 million pairs on the 1M-record world; this and Levenshtein cost 0.9 s.
        year_digits = (f"month({d_l}) = month({d_r}) AND day({d_l}) = day({d_r}) "
                       f"AND year({d_l}) // 100 = year({d_r}) // 100 "
                       f"AND year({d_l}) % 10 = (year({d_r}) // 10) % 10 AND (year({d_l}) // 10) % 10 = year({d_r}) % 10")
        day_digits = (f"year({d_l}) = year({d_r}) AND month({d_l}) = month({d_r}) "
                      f"AND day({d_l}) % 10 = day({d_r}) // 10 AND day({d_l}) // 10 = day({d_r}) % 10")
        levels += [
            cll.ExactMatchLevel("date_of_birth"),
            cll.CustomLevel(f"year({d_l}) = year({d_r}) AND month({d_l}) = day({d_r}) AND day({d_l}) = month({d_r})",
                            label_for_charts="day and month swapped", base_dialect_str="duckdb"),
            cll.CustomLevel(f'levenshtein("dob_text_l", "dob_text_r") <= 1 OR ({year_digits}) OR ({day_digits})',
                            label_for_charts="one digit apart, or two neighbouring digits swapped",
                            base_dialect_str="duckdb"),
            cll.CustomLevel(f"year({d_l}) = year({d_r}) AND month({d_l}) = month({d_r})",
                            label_for_charts="same year and month", base_dialect_str="duckdb"),
        ]
    levels += [cll.ExactMatchLevel("year_of_birth").configure(label_for_charts="same year"),
               cll.AbsoluteDifferenceLevel("year_of_birth", 1).configure(label_for_charts="years one apart"),
               cll.ElseLevel()]
    return cl.CustomComparison(comparison_levels=levels, output_column_name="date_of_birth",
                               comparison_description="date of birth: exact, day/month swapped, one character, "
                                                      "year and month, year")


# The weight of two records sharing a declared person key: decisive (2^40 to 1), whatever else
# they disagree on (an alias is another name and date of birth for the same prisoner).
PERSON_KEY_U = 2.0 ** -40


def person_key_comparison() -> cl.CustomComparison:
    """A person key (a contract's `person_key`: an id its source issues per person) decides: equal
    keys are one person. Not learned: EM would weigh it against the names an alias changes.
    Different keys say nothing (a person may be issued a second number)."""
    return cl.CustomComparison(
        comparison_levels=[
            cll.NullLevel("person_key"),
            cll.ExactMatchLevel("person_key").configure(m_probability=1.0, u_probability=PERSON_KEY_U,
                                                        fix_m_probability=True, fix_u_probability=True,
                                                        label_for_charts="the same person key (declared)"),
            cll.ElseLevel().configure(m_probability=1.0, u_probability=1.0, fix_m_probability=True,
                                      fix_u_probability=True)],
        output_column_name="person_key", comparison_description="person key: equal (decisive) or not (no evidence)")


def postcode_comparison() -> cl.CustomComparison:
    """Postcodes: full, sector, district, area. The parts are cut at standardisation
    (postcode_sector, _district, _area), so scoring compares them without regular expressions
    (Splink's PostcodeComparison extracts them per pair: 1.6 s of 12 s on 5.6 million pairs). A
    record that gave only the outward code ('SW1A') still agrees at district level."""
    return cl.CustomComparison(
        comparison_levels=[
            cll.NullLevel("postcode_district"),
            cll.ExactMatchLevel("postcode").configure(label_for_charts="Exact match on full postcode"),
            cll.ExactMatchLevel("postcode_sector").configure(label_for_charts="Exact match on sector"),
            cll.ExactMatchLevel("postcode_district").configure(label_for_charts="Exact match on district"),
            cll.ExactMatchLevel("postcode_area").configure(label_for_charts="Exact match on area"),
            cll.ElseLevel()],
        output_column_name="postcode", comparison_description="postcode: full, sector, district, area")


def address_comparison() -> cl.CustomComparison:
    return cl.CustomComparison(
        # Close in spelling before three words in common: a word split by a typo ('mortlac h')
        # leaves three words in common of an address that is otherwise the same.
        # Exact ignoring spaces: a space dropped or moved when an address was typed
        # ('mckinleycircuit', 'brackenl eigh') leaves the same place.
        comparison_levels=[cll.NullLevel("address"),
                           cll.CustomLevel("replace(address_l, ' ', '') = replace(address_r, ' ', '')",
                                           label_for_charts="Exact match ignoring spaces"),
                           cll.ArrayIntersectLevel("address_tokens", 4), cll.JaroWinklerLevel("address", 0.9),
                           cll.ArrayIntersectLevel("address_tokens", 3), cll.JaroWinklerLevel("address", 0.8),
                           cll.ElseLevel()],
        output_column_name="address",
        comparison_description="address: exact ignoring spaces, 4+ words in common, Jaro-Winkler 0.9, 3+ words, Jaro-Winkler 0.8")


def attribute_comparison(name: str, kind: str) -> cl.CustomComparison:
    """A declared attribute (a contract's `compare`), by its kind.

    No term-frequency adjustment: an attribute's u is estimated among people who share a
    surname (train.py, families.shared_surname_u), because birth places, occupations and the
    like run in families, and a term frequency would replace that u with the population's."""
    levels = [cll.NullLevel(name)]
    if kind == "category":
        levels += [cll.ExactMatchLevel(name)]
        what = "exact"
    elif kind == "text":
        levels += [cll.ExactMatchLevel(name), cll.JaroWinklerLevel(name, 0.92),
                   cll.CustomLevel(f"""(contains(' ' || "{name}_l" || ' ', ' ' || "{name}_r" || ' ')
                                        OR contains(' ' || "{name}_r" || ' ', ' ' || "{name}_l" || ' '))""",
                                   label_for_charts=f"one {name} is part of the other", base_dialect_str="duckdb"),
                   cll.JaroWinklerLevel(name, 0.8)]
        what = "exact, close, part of, similar"
    elif kind == "number":
        levels += [cll.ExactMatchLevel(name), cll.PercentageDifferenceLevel(name, 0.01),
                   cll.PercentageDifferenceLevel(name, 0.1)]
        what = "exact, within 1%, within 10%"
    elif kind == "date":
        levels += [cll.ExactMatchLevel(name), cll.AbsoluteDateDifferenceLevel(name, input_is_string=False,
                                                                              threshold=1, metric="month"),
                   cll.AbsoluteDateDifferenceLevel(name, input_is_string=False, threshold=1, metric="year")]
        what = "exact, within a month, within a year"
    else:
        raise ValueError(f"unknown attribute kind {kind!r}")
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(comparison_levels=levels, output_column_name=name,
                               comparison_description=f"{name} ({kind}): {what}")


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
