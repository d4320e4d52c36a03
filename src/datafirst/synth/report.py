"""The utility and privacy report of a synthetic twin: `report.json` and `report.html`.

`write_report` measures the twin against the release it was made from, table by table
(`metrics.py`), compares the research queries and the declared constraints run on both (their
results are given, as `queries.run_queries` and `constraints.check` return them), applies the
release's small-count limit to every count and to every share that would give one back, gives
the report's text to the privacy guard, and only then writes the two files. The HTML is rendered
from the JSON's figures alone (Jinja2, autoescaped, one self-contained page that works from
`file://`), so the guard reads everything either shows. docs/synth.md (`## The report`) explains
each measure and its bar.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from .. import __version__
from ..engine import Engine
from . import metrics
from .metrics import CODE_LIST_PREFIX, Column, id_columns, record_level

REPORT_JSON, REPORT_HTML = "report.json", "report.html"
# The bars (issue 27, docs/synth.md): synthpop's usual bar for a useful twin; each research query
# cell within 20% (relative) of the real figure; no copy of a unique real row in a table of people
# or records; the twin no closer to its training rows than real people it never saw.
PMSE_RATIO_BAR = 10.0
QUERY_TOLERANCE = 0.20
# (passages, ignore) -> problems, as `release.site.text_guard` makes from the privacy guard.
Guard = Callable[[list[tuple[str, str]], set[str]], list[str]]
_METHOD_KEYS = {"kind", "metric", "methods", "bars", "samples"}  # the package's own words, not the data's


class ReportError(Exception):
    """A report that cannot be made or may not be written; the message says why and what to do."""


def _read_dictionary(real: Mapping[str, Path]) -> dict:
    """The release's dictionary.json, beside its `tables/` folder."""
    if not real:
        raise ReportError("no real table was given: give the release's tables (name -> Parquet path)")
    path = Path(next(iter(real.values()))).parent.parent / "dictionary.json"
    if not path.is_file():
        raise ReportError(f"{path} is missing: the report reads the release's dictionary (each table's unit, keys and "
                          "hashed ids); give the tables of a datafirst release, or pass dictionary=")
    return json.loads(path.read_text(encoding="utf-8"))


def shown_count(n: int | None, small: int) -> int | str | None:
    """A count as the report shows it: below the small-count limit (and not 0), `<limit`."""
    if n is None:
        return None
    return f"<{small}" if 0 < n < small else int(n)


def shown_share(k: int, n: int, small: int, places: int = 4) -> float | str | None:
    """k of n as a share, unless k is a small count that the share and n would give back."""
    if n == 0:
        return None
    return "suppressed" if 0 < k < small else round(k / n, places)


def _plain(value: object) -> object:
    """A value as JSON holds it (DuckDB gives Decimals, dates)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --- research queries and constraints ---------------------------------------------------------


def _cells(rows: list) -> dict[tuple, dict]:
    """A query's rows by their group: a row is a dict of its group columns, `value` and optionally
    `n` (the rows or people the value is computed from), or a tuple (group..., value)."""
    cells = {}
    for row in rows:
        if not isinstance(row, Mapping):
            row = {**{f"group_{i + 1}": v for i, v in enumerate(row[:-1])}, "value": row[-1]}
        group = tuple((k, _plain(v)) for k, v in row.items() if k not in ("value", "n"))
        cells[group] = {"value": _plain(row.get("value")), "n": None if row.get("n") is None else int(row["n"])}
    return cells


def _cell_shown(cell: dict, small: int) -> bool:
    """Whether a query cell may be shown: not computed from fewer than `small` rows, not a count
    below it, and not a share of n whose numerator or its complement is one."""
    value, n = cell["value"], cell["n"]
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < small:
        return False
    if n is not None:
        if 0 < n < small:
            return False
        if isinstance(value, float) and 0.0 <= value <= 1.0:
            k = round(value * n)
            return not (0 < k < small or 0 < n - k < small)
    return True


def _comparable(cell: dict, small: int) -> bool:
    """Whether a real cell's figure is one a relative difference means something for: a share
    rests on at least `small` rows in its numerator (a share of 0 or of 3 in 90 is not compared:
    20% of it is less than one person)."""
    value, n = cell["value"], cell["n"]
    if n is not None and isinstance(value, float) and 0.0 <= value <= 1.0:
        return round(value * n) >= small
    return True


def _within(real: float, twin: float) -> bool:
    return abs(twin - real) <= QUERY_TOLERANCE * abs(real) if real else twin == 0


def compare_queries(real: Mapping[str, list], twin: Mapping[str, list], small: int,
                    descriptions: Mapping[str, str] | None = None) -> list[dict]:
    """Each research query's cells, real against twin, with the relative difference. A real cell
    that may not be shown (`_cell_shown`) is neither shown nor compared; a twin cell that may not
    be shown is compared, but only whether it is within the tolerance is shown; a share with fewer
    than `small` rows in its numerator is shown but not compared (`_comparable`)."""
    out = []
    for name in sorted(real.keys() | twin.keys()):
        r_cells, t_cells = _cells(real.get(name, [])), _cells(twin.get(name, []))
        rows = []
        for group in list(r_cells) + [g for g in t_cells if g not in r_cells]:
            r, t = r_cells.get(group), t_cells.get(group)
            r_ok, t_ok = r is not None and _cell_shown(r, small), t is not None and _cell_shown(t, small)
            numeric = r_ok and t is not None and all(isinstance(c["value"], (int, float)) for c in (r, t))
            if r_ok and not _comparable(r, small):
                within = None
            else:
                within = _within(float(r["value"]), float(t["value"])) if numeric else (False if r_ok else None)
            difference = (round(abs(t["value"] - r["value"]) / abs(r["value"]), 4)
                          if numeric and t_ok and r["value"] else None)
            rows.append({"group": {k: v for k, v in group},
                         "real": (r["value"] if r_ok else "suppressed") if r else None,
                         "twin": (t["value"] if t_ok else "suppressed") if t else None,
                         "n_real": shown_count(r["n"], small) if r else None,
                         "n_twin": shown_count(t["n"], small) if t else None,
                         "relative_difference": difference, "within": within})
        compared = [row for row in rows if row["within"] is not None]
        out.append({"name": name, "description": (descriptions or {}).get(name, ""), "cells": rows,
                    "compared": len(compared), "within": sum(row["within"] for row in compared)})
    return out


def compare_constraints(real: list[dict], twin: list[dict], small: int) -> list[dict]:
    """Each declared constraint's violations in the real release and in the twin; it holds in the
    twin when the twin has none."""
    by_key = {(c["table"], c["name"]): c for c in twin}
    out = []
    for c in sorted(real, key=lambda c: (c["table"], c["name"])):
        t = by_key.get((c["table"], c["name"]))
        out.append({"table": c["table"], "name": c["name"], "description": c.get("description", ""),
                    "rows_checked_real": shown_count(c["rows_checked"], small),
                    "violations_real": shown_count(c["violations"], small),
                    "rows_checked_twin": shown_count(t["rows_checked"], small) if t else None,
                    "violations_twin": shown_count(t["violations"], small) if t else None,
                    "holds_in_twin": bool(t) and t["violations"] == 0})
    return out


# --- the tables ----------------------------------------------------------------------------------


def _table_utility(engine: Engine, name: str, real: str, twin: str, columns: list[Column], small: int) -> dict:
    rows_real, rows_twin = metrics.row_count(engine, real), metrics.row_count(engine, twin)
    entry = {"table": name, "rows_real": shown_count(rows_real, small), "rows_twin": shown_count(rows_twin, small),
             "columns": [], "pairs": [], "pmse": None}
    if rows_real and rows_twin and columns:
        entry["columns"] = metrics.univariate(engine, real, twin, columns)
        entry["pairs"] = metrics.pairwise(engine, real, twin, columns)
        pmse = metrics.pmse_ratio(engine, real, twin, columns)
        entry["pmse"] = {**pmse, "rows_real": shown_count(pmse["rows_real"], small),
                         "rows_twin": shown_count(pmse["rows_twin"], small)}
    return entry


def _copies(engine: Engine, name: str, real: str, twin: str, columns: list[Column], required: bool, small: int,
            baseline: tuple[str, str] | None) -> dict:
    found = metrics.copies(engine, real, twin, columns)
    entry = {"table": name, "zero_required": required, "twin_rows": shown_count(found["rows"], small),
             "copies": shown_count(found["copies"], small),
             "copy_share": shown_share(found["copies"], found["rows"], small),
             "unique_copies": shown_count(found["unique_copies"], small),
             "unique_copy_share": shown_share(found["unique_copies"], found["rows"], small),
             "passed": found["unique_copies"] == 0 if required else None, "holdout_copy_share": None}
    if baseline is not None:
        chance = metrics.copies(engine, *baseline, columns)
        entry["holdout_copy_share"] = shown_share(chance["copies"], chance["rows"], small)
    return entry


def _dcr(engine: Engine, name: str, split: tuple[str, str], twin: str, columns: list[Column], small: int) -> dict:
    found = metrics.distance_to_closest(engine, split[0], twin, split[1], columns)
    for side in ("twin", "holdout"):
        found[side]["rows"] = shown_count(found[side]["rows"], small)
    return {"table": name, **found, "reference_rows": shown_count(found["reference_rows"], small)}


def write_report(engine: Engine, real: Mapping[str, Path], twin: Mapping[str, Path], out: Path, *,
                 holdout: Mapping[str, Path] | None = None, train: Mapping[str, Path] | None = None,
                 holdout_twin: Mapping[str, Path] | None = None, constraints: Mapping[str, list[dict]] | None = None,
                 queries: Mapping[str, Mapping[str, list]] | None = None, small_count: int,
                 guard: Guard | None = None, dictionary: dict | None = None) -> dict:
    """Measure `twin` (table name -> Parquet) against `real` (the release's tables), write
    `out/report.json` and `out/report.html`, and return the report.

    - `train`, `holdout`: the release's tables split by person into the people a twin was fitted
      on and the rest; `holdout_twin`: the twin fitted on `train` alone (by default `twin`, when it
      was). With them, the distance to closest record and the chance copies between real people.
    - `constraints`: {"real": [...], "twin": [...]}, each `constraints.check`'s list of
      {name, table, rows_checked, violations}; `queries`: {"real": {...}, "twin": {...}}, each
      `queries.run_queries`'s {name: rows}, and optionally "descriptions": {name: text}.
    - `small_count`: the release's limit; no count below it is shown, nor a share that gives one back.
    - `guard`: the privacy guard over the report's text, (passages, ignore) -> problems, as
      `release.site.text_guard` makes it; any problem refuses the report and nothing is written.
    - `dictionary`: the release's dictionary (by default its dictionary.json beside the tables).
    """
    dictionary = dictionary or _read_dictionary(real)
    declared = {t["name"]: t for t in dictionary["tables"]}
    names = [n for n in sorted(real) if not n.startswith(CODE_LIST_PREFIX)]
    missing = [n for n in names if n not in twin]
    if missing:
        raise ReportError(f"the twin has no table {', '.join(missing)}: a twin holds every table of its release")
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise ReportError(f"the release's dictionary does not declare {', '.join(unknown)}: give the dictionary of "
                          "the release the tables come from")
    holdout_twin = holdout_twin or twin
    utility, copied, dcr, singled = [], [], [], []
    for name in names:
        table = declared[name]
        r, t = engine.parquet(Path(real[name])), engine.parquet(Path(twin[name]))
        columns = metrics.content_columns(engine, r, id_columns(table))
        utility.append(_table_utility(engine, name, r, t, columns, small_count))
        if not columns:
            continue
        required = record_level(table)
        split = train is not None and holdout is not None and name in train and name in holdout
        baseline = (engine.parquet(Path(train[name])), engine.parquet(Path(holdout[name]))) if split else None
        copied.append(_copies(engine, name, r, t, columns, required, small_count, baseline))
        if not required:
            continue
        if split and name in holdout_twin:
            dcr.append(_dcr(engine, name, baseline, engine.parquet(Path(holdout_twin[name])), columns, small_count))
        if len(columns) >= metrics.SINGLING_OUT_COLUMNS:
            attack = metrics.singling_out(engine, name, r, t, columns)
            singled.append({"table": name, **attack,
                            "predicates": {k: shown_count(v, small_count) for k, v in attack["predicates"].items()}})

    queries = queries or {}
    query_rows = compare_queries(queries.get("real", {}), queries.get("twin", {}), small_count,
                                 queries.get("descriptions")) if queries else []
    constraint_rows = compare_constraints(constraints.get("real", []), constraints.get("twin", []),
                                          small_count) if constraints else []
    report = {
        "synthetic": True,
        "generator": f"datafirst {__version__}",
        "small_count": small_count,
        "summary": _summary(utility, query_rows, constraint_rows, copied, dcr, singled),
        "utility": {"tables": utility, "research_queries": query_rows, "constraints": constraint_rows},
        "privacy": {"copies": copied, "distance_to_closest_record": dcr, "singling_out": singled},
        "bars": {"pmse_ratio_at_most": PMSE_RATIO_BAR, "research_query_relative_difference_at_most": QUERY_TOLERANCE,
                 "unique_copies_in_tables_of_people_or_records": 0,
                 "distance_to_closest_record": "no closer than the holdout's (5th percentile and median)"},
        "samples": {"pmse_rows_per_side": metrics.PMSE_ROWS, "pmse_permutations": metrics.PMSE_PERMUTATIONS,
                    "pair_columns": metrics.PAIR_COLUMNS, "dcr_query_rows": metrics.DCR_QUERY_ROWS,
                    "dcr_reference_rows": metrics.DCR_REFERENCE_ROWS,
                    "singling_out_column_sets": metrics.SINGLING_OUT_SUBSETS,
                    "singling_out_predicates_per_set": metrics.SINGLING_OUT_PREDICATES},
    }
    html = _render(report)
    if guard is not None:
        problems = guard(_passages(report), _declared_names(dictionary, query_rows, constraint_rows))
        if problems:
            raise ReportError("the report failed the privacy guard and was not written (each line names what it "
                              "holds, never the value):\n  " + "\n  ".join(problems))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for file_name, text in ((REPORT_JSON, json.dumps(report, indent=2, ensure_ascii=False) + "\n"),
                            (REPORT_HTML, html)):
        tmp = out / f".{file_name}.partial-{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / file_name)
    return report


def _summary(utility: list[dict], queries: list[dict], constraints: list[dict], copied: list[dict], dcr: list[dict],
             singled: list[dict]) -> dict:
    """The headline figures and whether each bar is met (None: not measured)."""
    ratios = [t["pmse"]["ratio"] for t in utility if t["pmse"] and t["pmse"]["ratio"] is not None]
    cells = sum(q["compared"] for q in queries)
    risks = [s["risk"] for s in singled if s["risk"] is not None]
    return {
        "pmse_ratio_max": max(ratios, default=None),
        "pmse_passed": all(r <= PMSE_RATIO_BAR for r in ratios) if ratios else None,
        "research_query_cells_compared": cells,
        "research_query_cells_within": sum(q["within"] for q in queries),
        "research_queries_passed": all(q["within"] == q["compared"] for q in queries) if cells else None,
        "constraints_hold_in_twin": all(c["holds_in_twin"] for c in constraints) if constraints else None,
        "copies_failed_tables": [c["table"] for c in copied if c["passed"] is False],
        "copies_passed": all(c["passed"] is not False for c in copied) if copied else None,
        "dcr_failed_tables": [d["table"] for d in dcr if d["passed"] is False],
        "dcr_passed": all(d["passed"] is not False for d in dcr) if dcr else None,
        "dcr_closer_beyond_sampling_error_tables": [d["table"] for d in dcr if d["closer_beyond_sampling_error"]],
        "singling_out_risk_max": max(risks, default=None),
    }


def _passages(report: dict) -> list[tuple[str, str]]:
    """Every text the report holds that comes from the data or its declarations (table and column
    names, query groups, descriptions), as (file, text) for the guard; the package's own words
    (metric names, bars) are not the data's. The HTML shows nothing the JSON does not hold."""
    passages: list[tuple[str, str]] = []

    def walk(value: object, key: str = "") -> None:
        if key in _METHOD_KEYS:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and key == "group":
                    passages.append((REPORT_JSON, k))
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and value.strip():
            passages.append((REPORT_JSON, value))

    walk(report)
    return passages


def _declared_names(dictionary: dict, queries: list[dict], constraints: list[dict]) -> set[str]:
    """The release's own names (tables, columns, queries, constraints): declared, so nobody's even
    where one equals a surname (a table named `person`)."""
    return ({t["name"] for t in dictionary["tables"]} | {c["name"] for t in dictionary["tables"] for c in t["columns"]}
            | {q["name"] for q in queries} | {c["name"] for c in constraints})


def _number(x: object, places: int = 3) -> str:
    """A figure as the page shows it: a float to `places`, a count with thousands separators,
    anything else (`<10`, `suppressed`) as it is; none as a dash."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{places}f}"
    return str(x)


def _verdict(passed: object) -> str:
    return "not measured" if passed is None else "passed" if passed else "failed"


def _render(report: dict) -> str:
    env = Environment(loader=PackageLoader("datafirst.synth", "report_templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(number=_number, verdict=_verdict)
    return env.get_template(REPORT_HTML).render(r=report, methods=_METHODS)


# What each measure is, shown with its figures (docs/synth.md says the same at length).
_METHODS = {
    "univariate": "Each content column (keys and hashed ids left out: a twin makes them anew), over the whole "
                  "tables: total variation distance between the real and twin shares of each value (missing "
                  "counted as a value) for categories; the Kolmogorov-Smirnov statistic (the largest gap between "
                  "the two cumulative distributions) for numbers and dates. 0 is the same distribution, 1 none "
                  "in common.",
    "pairwise": f"Total variation distance between the real and twin two-way tables of each pair of a table's first "
                f"{metrics.PAIR_COLUMNS} content columns, numbers and dates cut at the real deciles, categories as "
                f"their {metrics.TOP_CATEGORIES} commonest real values and the rest; the worst pairs are shown.",
    "pmse": f"synthpop's S_pMSE with a CART propensity model: a classification tree tells twin rows from real "
            f"ones on a sample of up to {metrics.PMSE_ROWS:,} rows each; pMSE is the mean squared distance of the "
            f"fitted propensities from the twin's share, divided by its mean over {metrics.PMSE_PERMUTATIONS} refits "
            f"with the real/twin labels permuted (its value when the twin is drawn from the real distribution). "
            f"About 1 is ideal; at most {PMSE_RATIO_BAR:g} is useful.",
    "queries": f"The release's research queries run on both; a cell passes within {QUERY_TOLERANCE:.0%} of the real "
               f"figure (relative). Cells from fewer rows than the small-count limit, or whose share gives back such "
               f"a count, are not shown.",
    "constraints": "Each constraint declared in the release's contracts, checked on both: it must hold on every row "
                   "of the twin.",
    "copies": "Twin rows equal to a real row on every content column, and those equal to a real row no other "
              "real row shares (a copy of one record: synthpop's replicated uniques), which must be none in the "
              "tables of one row per person or per record. The holdout's share (real people copying other real "
              "people by chance) is the yardstick for the first.",
    "dcr": f"Distance to closest record: the Gower distance (mean over the content columns of a category's "
           f"mismatch and a number's or date's gap over its range) from up to {metrics.DCR_QUERY_ROWS:,} distinct "
           f"twin rows to the closest of up to {metrics.DCR_REFERENCE_ROWS:,} distinct training rows, against the "
           f"same from the holdout's real rows; the twin passes when it is no closer, at the 5th percentile and "
           f"the median. Beside it, how much the two figures differ by the draw of the rows alone: the 2.5th to "
           f"97.5th percentile of twin minus holdout over {metrics.DCR_RESAMPLES} resamples of each side's distances; "
           f"where all of it is below 0, the twin is closer beyond sampling error.",
    "singling_out": f"An attacker holding only the twin takes combinations of values one twin row holds on "
                    f"{metrics.SINGLING_OUT_COLUMNS} columns ({metrics.SINGLING_OUT_SUBSETS} sets of columns, up to "
                    f"{metrics.SINGLING_OUT_PREDICATES} combinations each) and wins when exactly one real row matches; "
                    f"the baseline takes each value from a different twin row. Risk is the attack's success above the "
                    f"baseline's, as a share of what the baseline leaves: 0 is no better than chance, 1 always right.",
}
