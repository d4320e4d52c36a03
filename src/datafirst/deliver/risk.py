"""Disclosure risk of a project's package, measured in the engine: k-anonymity over each table's
declared quasi-identifiers, l-diversity of its sensitive columns, local suppression to reach k, and,
when the package still fails, the coarsening that would pass (measured, not guessed).

An equivalence class is a set of rows that hold the same values in every quasi-identifier. A
NULL counts as a value of its own (SQL's GROUP BY puts every NULL in one group), so a suppressed
row (its quasi-identifiers set to NULL) falls into the one all-NULL class, together with any row
that recorded none of them: suppression never creates a class of its own per row, and an attacker
learns only that the row's values were withheld. The alternative (NULL as "could be anything")
would make a suppressed row match every class, which overstates k; we take the conservative
reading, in which the all-NULL class must itself reach k.

Every figure is SQL over the staged Parquet files (GROUP BY, window-free), so it runs on DuckDB
and on Spark SQL alike; nothing reads rows into Python.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ..engine import Engine
from ..release.products import PERSON_TABLES
from .projects import Coarsen, Disclosure, Treatment
from .treatments import TreatmentError, coarsened_sql

# The person tables' quasi-identifiers when a project declares none for them: what an attacker is
# most likely to know of a person (the measurement: 84% of people unique on these).
PERSON_QUASI_IDENTIFIERS = ("sex", "year_of_birth", "first_event")
# Classes smaller than these are reported as well as the project's own k (the usual SDC thresholds).
REPORTED_SIZES = (5, 10)
# The age band reference date a suggestion uses (its text names it; a project declares its own).
SUGGESTION_AGE_WIDTHS = (10, 20)


class RiskError(Exception):
    """A disclosure declaration that does not fit the package (a column it names is not there)."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def coarsened(expr: str, treatment: Treatment) -> str:
    """SQL giving `expr` under a treatment, the package's own (treatments.coarsened_sql). A code's
    `group` needs the release's mapping, which the package step holds, so it is refused here."""
    try:
        return coarsened_sql(expr, treatment)
    except TreatmentError as exc:
        raise RiskError(f"{exc}; measure the package that applied it") from None


def treated_select(columns: list[str], treatments: dict[str, Treatment]) -> str:
    """The select list of a table under a project's treatments: each delivered column by its
    treatment (a column not named is kept; a dropped one left out)."""
    out = []
    for col in columns:
        treatment = treatments.get(col, "keep")
        if treatment != "drop":
            out.append(f"{coarsened(_q(col), treatment)} AS {_q(col)}")
    return ", ".join(out)


@dataclass
class Measures:
    """k-anonymity and l-diversity of one table over its quasi-identifiers."""

    rows: int
    classes: int
    min_k: int
    unique_share: float
    below_k_share: float  # rows in classes smaller than the project's k
    under_5_share: float
    under_10_share: float
    l_diversity: dict[str, int] = field(default_factory=dict)  # sensitive column -> fewest distinct values in a class

    def passes(self, disclosure: Disclosure) -> bool:
        return (self.rows == 0 or self.min_k >= disclosure.k) and self.unique_share <= disclosure.max_unique_share \
            and all(v >= disclosure.l_diversity for v in self.l_diversity.values())


def measure(engine: Engine, relation: str, qis: list[str], sensitive: list[str], k: int) -> Measures:
    """The figures of `relation` (SQL, e.g. read_parquet(...)) over the quasi-identifier
    expressions `qis` (SQL; NULL is a value, see the module's docstring)."""
    if not qis:
        rows = int(engine.scalar(f"SELECT count(*) FROM {relation}"))
        return Measures(rows, 1 if rows else 0, rows, 0.0, 0.0, 0.0, 0.0, {})
    keys = ", ".join(f"{e} AS _qi{i}" for i, e in enumerate(qis))
    group = ", ".join(f"_qi{i}" for i in range(len(qis)))
    # l-diversity: distinct values per class, a NULL counting as one more value (as for the QIs)
    diverse = "".join(f", count(DISTINCT {_q(s)}) + max(CASE WHEN {_q(s)} IS NULL THEN 1 ELSE 0 END) AS _l{i}"
                      for i, s in enumerate(sensitive))
    lows = "".join(f", min(_l{i})" for i in range(len(sensitive)))
    row = engine.execute(f"""
        WITH classes AS (
            SELECT count(*) AS n{diverse}
            FROM (SELECT {keys}{''.join(', ' + _q(s) for s in sensitive)} FROM {relation}) t GROUP BY {group})
        SELECT coalesce(sum(n), 0), count(*), min(n),
               coalesce(sum(CASE WHEN n = 1 THEN n ELSE 0 END), 0),
               coalesce(sum(CASE WHEN n < {int(k)} THEN n ELSE 0 END), 0),
               coalesce(sum(CASE WHEN n < 5 THEN n ELSE 0 END), 0),
               coalesce(sum(CASE WHEN n < 10 THEN n ELSE 0 END), 0){lows}
        FROM classes""")[0]
    rows = int(row[0])
    share = (lambda x: round(int(x) / rows, 6) if rows else 0.0)
    return Measures(rows, int(row[1]), int(row[2] or 0), share(row[3]), share(row[4]), share(row[5]), share(row[6]),
                    {s: int(row[7 + i] or 0) for i, s in enumerate(sensitive)})


def _suppressed_sql(relation: str, columns: list[str], qis: list[str], k: int, extra: int) -> str:
    """The table with every quasi-identifier of the rows in classes smaller than `k` set to NULL,
    and of `extra` rows of the largest class (see `_suppression`)."""
    group = ", ".join(_q(c) for c in qis)
    # Small classes are found by counting, then joined back (null-safe, as a NULL is a value).
    on = " AND ".join(f"t.{_q(c)} IS NOT DISTINCT FROM s.{_q(c)}" for c in qis)
    hide = "s._small"
    source = relation
    if extra:
        order = ", ".join(_q(c) for c in columns)
        source = f"(SELECT *, row_number() OVER (PARTITION BY {group} ORDER BY {order}) AS _nth FROM {relation})"
        on_largest = " AND ".join(f"t.{_q(c)} IS NOT DISTINCT FROM b.{_q(c)}" for c in qis)
        hide = f"(s._small OR (t._nth <= {int(extra)} AND EXISTS (SELECT 1 FROM (SELECT {group} FROM {relation} " \
               f"GROUP BY {group} ORDER BY count(*) DESC, {group} LIMIT 1) b WHERE {on_largest})))"
    select = ", ".join(f"CASE WHEN {hide} THEN NULL ELSE t.{_q(c)} END AS {_q(c)}" if c in qis else f"t.{_q(c)}"
                       for c in columns)
    return f"""SELECT {select} FROM {source} t
        LEFT JOIN (SELECT {group}, true AS _small FROM {relation} GROUP BY {group} HAVING count(*) < {int(k)}) s
        ON {on}"""


def _suppression(engine: Engine, relation: str, qis: list[str], k: int) -> tuple[int, int]:
    """How many rows to suppress (those in classes below k), and how many more to take from the
    largest class. The suppressed rows join the all-NULL class, which must reach k too: when fewer
    than k would be suppressed and no all-NULL class of k or more takes them in, the difference
    is taken from the largest class (which stays at k or more), so that no small class remains."""
    group = ", ".join(_q(c) for c in qis)
    all_null = " AND ".join(f"{_q(c)} IS NULL" for c in qis)
    small, largest = engine.execute(f"""SELECT coalesce(sum(CASE WHEN n < {int(k)} THEN n ELSE 0 END), 0), max(n)
                                        FROM (SELECT count(*) AS n FROM {relation} GROUP BY {group})""")[0]
    nulls = int(engine.scalar(f"SELECT count(*) FROM {relation} WHERE {all_null}"))
    small = int(small)
    extra = k - small if 0 < small < k and nulls < k else 0
    if extra and largest - extra < k:
        extra = 0  # no class can spare the rows: the all-NULL class stays small and the table fails, by name
    return small, extra


@dataclass
class Assessment:
    """What `assess` found: the package's tables as they should be delivered (suppressed where
    that was applied), the report (JSON-able) and the problems (none: the package passes)."""

    tables: dict[str, Path]
    report: dict
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.report, indent=2) + "\n", encoding="utf-8")


def quasi_identifiers(table: str, columns: list[str], disclosure: Disclosure) -> list[str]:
    """A table's declared quasi-identifiers; a person table with none declared gets
    PERSON_QUASI_IDENTIFIERS (those it holds)."""
    if table in disclosure.quasi_identifiers:
        return list(disclosure.quasi_identifiers[table])
    if table in PERSON_TABLES.values():
        return [c for c in PERSON_QUASI_IDENTIFIERS if c in columns]
    return []


def assess(engine: Engine, tables: dict[str, Path], disclosure: Disclosure, work: Path) -> Assessment:
    """Measure every table of a package (name -> its staged Parquet file), suppress locally where
    that reaches k within `max_suppressed_share` (the suppressed tables are written into `work`),
    measure again, and name what would pass where the package does not."""
    declared = set(disclosure.quasi_identifiers) | set(disclosure.sensitive)
    missing = sorted(declared - set(tables))
    if missing:
        raise RiskError(f"disclosure names tables the package does not hold: {', '.join(missing)} "
                        f"(it holds {', '.join(sorted(tables))}); fix disclosure.quasi_identifiers / sensitive")
    final: dict[str, Path] = dict(tables)
    report: dict = {"k": disclosure.k, "max_unique_share": disclosure.max_unique_share,
                    "l_diversity": disclosure.l_diversity, "max_suppressed_share": disclosure.max_suppressed_share,
                    "null_is_a_value": True, "tables": {}}
    problems: list[str] = []
    for name in sorted(tables):
        relation = engine.parquet(tables[name])
        columns = engine.columns(relation)
        qis = quasi_identifiers(name, columns, disclosure)
        sensitive = list(disclosure.sensitive.get(name, []))
        unknown = [c for c in qis + sensitive if c not in columns]
        if unknown:
            raise RiskError(f"disclosure for {name} names {', '.join(unknown)}, which the package's {name} does not "
                            f"hold (it holds {', '.join(columns)}); name delivered columns")
        if not qis and not sensitive:
            continue
        before = measure(engine, relation, [_q(c) for c in qis], sensitive, disclosure.k)
        entry: dict = {"quasi_identifiers": qis, "sensitive": sensitive, "before": before.__dict__,
                       "suppressed_rows": 0, "suppressed_share": 0.0}
        after = before
        small, extra = _suppression(engine, relation, qis, disclosure.k) if qis and before.below_k_share else (0, 0)
        suppressed = small + extra
        if suppressed and suppressed <= disclosure.max_suppressed_share * before.rows:
            out = work / f"{name}.parquet"
            engine.to_parquet(_suppressed_sql(relation, columns, qis, disclosure.k, extra), out)
            final[name] = out
            after = measure(engine, engine.parquet(out), [_q(c) for c in qis], sensitive, disclosure.k)
            entry.update(suppressed_rows=suppressed, suppressed_share=round(suppressed / before.rows, 6),
                         after=after.__dict__)
        entry["passes"] = after.passes(disclosure)
        if not entry["passes"]:
            problem = _problem(engine, name, relation, qis, sensitive, before, after, disclosure)
            entry["problem"] = problem
            problems.append(problem)
        report["tables"][name] = entry
    report["passed"] = not problems
    return Assessment(final, report, problems)


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def _candidates(engine: Engine, relation: str, column: str) -> list[tuple[str, str]]:
    """Coarser versions of a quasi-identifier worth measuring: (what to write in the project,
    SQL). Dates to month, then year; a year of birth to 10- and 20-year age bands; a postcode
    district to its area. Dropping it is always measured besides."""
    kind = dict(engine.schema(relation)).get(column, "").upper()
    col = _q(column)
    if kind.startswith(("DATE", "TIMESTAMP")):
        return [(f"{{coarsen: {g}}}", coarsened(col, Coarsen(coarsen=g))) for g in ("month", "year")]
    if column.endswith("year_of_birth") and not kind.startswith("VARCHAR"):  # a VARCHAR one is banded already
        ref = date(date.today().year, 1, 1)
        return [(f"{{coarsen: age_band, reference_date: {ref}, width: {w}}}",
                 coarsened(col, Coarsen(coarsen="age_band", reference_date=ref, width=w))) for w in SUGGESTION_AGE_WIDTHS]
    if "postcode" in column:
        return [("{coarsen: area}", coarsened(col, Coarsen(coarsen="area")))]
    return []


def _problem(engine: Engine, name: str, relation: str, qis: list[str], sensitive: list[str], before: Measures,
             after: Measures, disclosure: Disclosure) -> str:
    """What fails, which quasi-identifiers drive the small classes (each coarsened or dropped in
    turn, measured), and the first treatment found that would pass."""
    k = disclosure.k
    fails = []
    if after.rows and after.min_k < k:
        fails.append(f"{_pct(before.below_k_share)} of rows are in classes smaller than {k} over {', '.join(qis)}")
    if after.unique_share > disclosure.max_unique_share:
        fails.append(f"{_pct(after.unique_share)} of rows are unique (at most {_pct(disclosure.max_unique_share)} allowed)")
    for s, l in after.l_diversity.items():
        if l < disclosure.l_diversity:
            fails.append(f"a class holds only {l} distinct value(s) of {s} (l-diversity {disclosure.l_diversity} asked)")
    text = f"{name}: " + "; ".join(fails)
    if not qis or not (after.min_k < k or after.unique_share > disclosure.max_unique_share):
        return text + ("; make the classes larger (coarsen the quasi-identifiers) or declare fewer sensitive columns"
                       if not fails[:-1] else "")
    plain = [_q(c) for c in qis]
    tried = []
    for i, column in enumerate(qis):
        options = _candidates(engine, relation, column) + [("drop", None)]
        for label, sql in options:
            exprs = plain[:i] + ([sql] if sql else []) + plain[i + 1:]
            m = measure(engine, relation, exprs, [], k)
            tried.append((column, label, m))
    measured = "; ".join(f"without {c}: {_pct(m.unique_share)} unique" for c, label, m in tried if label == "drop")
    # Suppression then empties the small classes, and with them every unique row.
    fits = [(c, label, m) for c, label, m in tried if m.below_k_share <= disclosure.max_suppressed_share]
    if fits:
        # The least loss first: a coarsening before a drop, the finest coarsening (candidates come
        # finest first), then the fewest rows to suppress.
        column, label, m = min(fits, key=lambda f: (f[1] == "drop", _fineness(f[1]), f[2].below_k_share))
        how = f"dropping {column}" if label == "drop" else f"coarsening {column} to {_describe(label)}"
        return (f"{text}; {how} gives k>={k} for {_pct(1 - m.below_k_share)} (suppress {_pct(m.below_k_share)})"
                f" [{measured}]")
    column, label, m = min(tried, key=lambda f: f[2].below_k_share)
    how = f"dropping {column}" if label == "drop" else f"coarsening {column} to {_describe(label)}"
    return (f"{text}; no single change passes: the best, {how}, still leaves {_pct(m.below_k_share)} in classes "
            f"smaller than {k}; coarsen or drop more than one of them [{measured}]")


def _fineness(label: str) -> int:
    """How coarse a suggested treatment is (0: finest), so a month is suggested before a year."""
    order = ["week", "month", "width: 10", "area", "year", "width: 20"]
    return next((i for i, word in enumerate(order) if word in label), len(order))


def _describe(label: str) -> str:
    """'{coarsen: month}' -> 'month'; an age band names its width."""
    width = re.search(r"width: (\d+)", label)
    if width:
        return f"{width.group(1)}-year age bands"
    return re.sub(r"[{}]|coarsen: ", "", label)
