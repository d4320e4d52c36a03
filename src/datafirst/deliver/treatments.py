"""A project's disclosure treatments as SQL expressions, checked against the release they apply to.

Each approved column's treatment (`projects.Treatment`) becomes one expression over the release
table (alias `t`), in DuckDB's dialect kept to functions the Spark engine translates (date_trunc,
regexp_extract, floor, CASE), so the engine coarsens every row and no value passes through Python.
What a treatment needs of its column is checked against the release's data dictionary first: a
date coarsened to a month must be a date, a code grouped must have a group the release holds.

Where a code's group comes from (`coarsen: group`):
- a column a contract's `harmonise` adds with the mapping's `group` column, from the same source
  column (`ethnicity_2021_code` and `ethnic_group_5` both map `self_defined_ethnicity`; the
  dictionary records `harmonised_from` and the mapping column in the rule): the group column of
  the same row, since the mapping gives each code one group;
- the column's code list, when its reference table in the release has a column named `group`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.sql import sql_string
from .projects import Band, Coarsen, TopCode, Treatment

# A harmonised column's rule ends with the mapping file and its column: "... in scheme.csv (group)".
MAPPING_COLUMN = re.compile(r" in \S+ \((?P<column>[^()]+)\)$")
GROUP = "group"
DATE_TYPES = ("DATE",)
NUMBER_TYPE = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|FLOAT|DOUBLE|DECIMAL.*)$")


class TreatmentError(Exception):
    """A treatment its column cannot take; the message names the table, the column and what to do."""


@dataclass
class Treated:
    """One delivered column: its SQL, its type, the treatment in words and what it may hold
    (None: as the release declares)."""

    sql: str
    type: str
    treatment: str
    declared: dict | None = None
    reads: list[str] = field(default_factory=list)  # other release columns the expression reads


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def describe(treatment: Treatment) -> str:
    """A treatment in words, for the dictionary, the manifest and the README."""
    if treatment == "keep":
        return "kept as released"
    if isinstance(treatment, Coarsen):
        return {"week": "date coarsened to the Monday of its week", "month": "date coarsened to the first of its month",
                "year": "date coarsened to the first of its year",
                "age_band": f"year of birth coarsened to the age band ({treatment.width} years wide) reached in "
                            f"{treatment.reference_date.year if treatment.reference_date else ''}",
                "area": "postcode district coarsened to its area (the leading letters)",
                "group": "code coarsened to its group"}[treatment.coarsen]
    if isinstance(treatment, TopCode):
        return f"top-coded at {_num(treatment.top_code)}" + (
            f" and bottom-coded at {_num(treatment.bottom_code)}" if treatment.bottom_code is not None else "")
    if isinstance(treatment, Band):
        return "banded: " + ", ".join(band_labels(treatment.band))
    return str(treatment)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def band_labels(edges: list[float]) -> list[str]:
    """`[0, 1000, 5000]` -> `<0`, `0-999`, `1000-4999`, `5000+` (whole-number edges), else
    `0 to under 0.5`, ... ."""
    whole = all(float(e).is_integer() for e in edges)
    inner = [f"{_num(a)}-{_num(b - 1)}" if whole else f"{_num(a)} to under {_num(b)}" for a, b in zip(edges, edges[1:])]
    return [f"<{_num(edges[0])}", *inner, f"{_num(edges[-1])}+"]


def _group_source(table: dict, column: dict, release_tables: dict[str, dict]) -> tuple[str, object] | None:
    """Where `column`'s group comes from: ("column", name) of a sibling holding the group, or
    ("code_list", (table, key column, values)) of its code list's group column; None if nowhere."""
    origin = {column.get("harmonised_from"), column["name"]} - {None}
    for other in table["columns"]:
        if other["name"] == column["name"] or other.get("harmonised_from") not in origin:
            continue
        found = MAPPING_COLUMN.search(other.get("declared", {}).get("rule", ""))
        if found and found.group("column") == GROUP:
            return "column", other
    listed = column.get("declared", {}).get("code_list")
    if listed:
        reference = release_tables.get(listed["table"])
        groups = [c for c in (reference or {}).get("columns", []) if c["name"] == GROUP]
        if groups:
            return "code_list", (listed["table"], listed["column"], groups[0])
    return None


def coarsened_sql(col: str, treatment: Treatment) -> str:
    """The SQL of a treatment that needs nothing but its column (every one but `group`, which
    needs the release's mapping: see `treat`). The disclosure measures (risk.py) use it too, so
    what they measure is what a package holds."""
    if treatment == "keep":
        return col
    if isinstance(treatment, Coarsen) and treatment.coarsen in ("week", "month", "year"):
        return f"CAST(date_trunc('{treatment.coarsen}', {col}) AS DATE)"
    if isinstance(treatment, Coarsen) and treatment.coarsen == "age_band":
        year, width = treatment.reference_date.year, treatment.width
        age = f"({year} - CAST({col} AS BIGINT))"
        low = f"CAST(floor({age} / {width}) * {width} AS BIGINT)"
        return (f"CASE WHEN {col} IS NULL OR {age} < 0 THEN NULL "
                f"ELSE CAST({low} AS VARCHAR) || '-' || CAST({low} + {width - 1} AS VARCHAR) END")
    if isinstance(treatment, Coarsen) and treatment.coarsen == "area":
        return f"nullif(regexp_extract(CAST({col} AS VARCHAR), '^[A-Z]+', 0), '')"
    if isinstance(treatment, TopCode):
        cases = f"WHEN {col} > {treatment.top_code} THEN {treatment.top_code} "
        if treatment.bottom_code is not None:
            cases += f"WHEN {col} < {treatment.bottom_code} THEN {treatment.bottom_code} "
        return f"CASE {cases}ELSE {col} END"
    if isinstance(treatment, Band):
        labels = band_labels(treatment.band)
        whens = [f"WHEN {col} < {treatment.band[0]} THEN {sql_string(labels[0])}"]
        whens += [f"WHEN {col} < {b} THEN {sql_string(label)}" for b, label in zip(treatment.band[1:], labels[1:])]
        return f"CASE WHEN {col} IS NULL THEN NULL {' '.join(whens)} ELSE {sql_string(labels[-1])} END"
    raise TreatmentError(f"no column-only SQL for the treatment {treatment!r}")


def treat(table: dict, column: dict, treatment: Treatment, release_dir: Path,
          release_tables: dict[str, dict]) -> Treated:
    """The expression delivering `column` of release `table` (dictionary entries) under `treatment`.
    Hashed ids are re-keyed by the package, not here: they only take keep (or drop)."""
    name, ctype = column["name"], column.get("type", "")
    col = f"t.{q(name)}"
    where = f"{table['name']}.{name}"
    kind = column.get("declared", {}).get("kind")
    if treatment == "keep":
        return Treated(col, ctype, describe(treatment))
    if kind == "hashed_id":
        raise TreatmentError(f"{where} is an id (a keyed hash): it is re-keyed with the project's key, and takes "
                             "`keep` or `drop`, not a coarsening")
    if isinstance(treatment, Coarsen) and treatment.coarsen in ("week", "month", "year"):
        if ctype not in DATE_TYPES:
            raise TreatmentError(f"{where} is {ctype or 'not a date'}: `coarsen: {treatment.coarsen}` applies to "
                                 "dates only")
        declared = dict(column.get("declared", {}))
        declared["rule"] = f"{declared.get('rule', 'date')}; {describe(treatment)}"
        return Treated(coarsened_sql(col, treatment), "DATE", describe(treatment), declared)
    if isinstance(treatment, Coarsen) and treatment.coarsen == "age_band":
        if not NUMBER_TYPE.match(ctype):
            raise TreatmentError(f"{where} is {ctype or 'not a number'}: `coarsen: age_band` applies to a year of "
                                 "birth (a number)")
        year, width = treatment.reference_date.year, treatment.width
        return Treated(coarsened_sql(col, treatment), "VARCHAR", describe(treatment), {
            "kind": "code", "declared_in": "project", "rule": f"age band, {width} years wide, in {year}",
            "pattern": r"[0-9]+-[0-9]+"})
    if isinstance(treatment, Coarsen) and treatment.coarsen == "area":
        if ctype != "VARCHAR":
            raise TreatmentError(f"{where} is {ctype}: `coarsen: area` applies to a postcode district (text)")
        return Treated(coarsened_sql(col, treatment), "VARCHAR", describe(treatment), {
            "kind": "code", "declared_in": "project", "rule": "postcode area (the district's leading letters)",
            "pattern": "[A-Z]{1,2}"})
    if isinstance(treatment, Coarsen) and treatment.coarsen == "group":
        source = _group_source(table, column, release_tables)
        if source is None:
            raise TreatmentError(f"{where} has no group the release knows: `coarsen: group` needs a column mapped "
                                 "from the same source column by a harmonise mapping's `group` column (as "
                                 "ethnic_group_5 is), or a code list whose table has a `group` column. Use another "
                                 "treatment (keep or drop), or add the group to the contract (docs/contracts.md)")
        how, found = source
        if how == "column":
            group = found
            sql, reads = f"t.{q(group['name'])}", [group["name"]]
            via = f"its group in {group['name']}"
        else:
            list_table, key, group = found
            path = release_dir / "tables" / f"{list_table}.parquet"
            # Aggregated: a correlated scalar subquery must be, on Spark (the key is unique).
            sql = (f"(SELECT max(g.{q(GROUP)}) FROM read_parquet({sql_string(path)}) g "
                   f"WHERE g.{q(key)} = {col})")
            reads, via = [], f"its group in the code list {list_table}"
        declared = {k: v for k, v in group.get("declared", {}).items() if k != "code_list"}
        declared["rule"] = f"{describe(treatment)} ({via})"
        return Treated(sql, "VARCHAR", f"{describe(treatment)} ({via})", declared, reads)
    if isinstance(treatment, TopCode):
        if not NUMBER_TYPE.match(ctype):
            raise TreatmentError(f"{where} is {ctype}: top_code applies to numbers")
        declared = dict(column.get("declared", {}))
        declared["max"] = treatment.top_code
        if treatment.bottom_code is not None:
            declared["min"] = treatment.bottom_code
        declared["rule"] = f"{declared.get('rule', 'number')}; {describe(treatment)}"
        return Treated(f"CAST({coarsened_sql(col, treatment)} AS {ctype})", ctype, describe(treatment), declared)
    if isinstance(treatment, Band):
        if not NUMBER_TYPE.match(ctype):
            raise TreatmentError(f"{where} is {ctype}: band applies to numbers")
        labels = band_labels(treatment.band)
        return Treated(coarsened_sql(col, treatment), "VARCHAR", describe(treatment), {
            "kind": "code", "declared_in": "project", "rule": describe(treatment), "values": labels})
    raise TreatmentError(f"{where}: unknown treatment {treatment!r}")
