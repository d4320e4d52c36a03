"""The differentially private low-fidelity twin (`datafirst synth --fidelity low --epsilon E`).

`PrivateCounts` stands where the exact counts would be: every marginal a low twin draws from the
release (each column's values with their missingness, people's sets of record tables and records
per table, rows per parent row, group sizes) becomes a noisy histogram from `dp.noisy_counts`:
- over the DECLARED domain only (the release dictionary's `declared`: a code list's or
  contract's values, a number's or date's declared min and max), never the values that occur;
  a number or date is counted in `BINS` equal bins of its declared range, an offset between two
  dates in bins of 0 to the range's span;
- a column with no declared domain (a code declared only by a pattern, a number with no
  maximum) is not counted at all: the twin holds it as missing, and the manifest names it;
- each person bounded: a marginal over people (one row each) with c = 1, one over records with
  c = `ROWS_PER_PERSON` (a record is its table's person's; a child row its parent's; a group row
  its member with the smallest person id); a row of no person is a person of its own;
- with its share of E from `dp.split_budget`, over every marginal the structure can ask for
  (fixed before any count is read, so the split reveals nothing; a share not used is not spent);
- kept under `<ws>/synthetic/.dp/<twin>/`, so the same command again reads them back, spends
  nothing more and gives a byte-identical twin.
What stays exact (the key structure, the number of people, ...) is listed in docs/synth.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string
from ..release.products import LOOKUP
from .dp import BudgetError, noisy_counts, split_budget
from .models import QUANTILES, SynthError
from .structure import CASE_JOURNEYS, PERSON, PERSON_ID, PERSON_IDS, Structure

BINS = 40  # bins of a number's or date's declared range
ROWS_PER_PERSON = 3  # c for marginals over records: the rows of one person counted at most
MAX_RECORDS = 50  # records per person per table, rows per parent, group sizes: counted up to this (above: this)
CATEGORY_LIMIT = 12  # as generate.CATEGORY_LIMIT: a number with at most this many declared values is a category
OUT_OF_DOMAIN = -1  # the bin of a number outside its declared range (not counted)
EPOCH = date(1970, 1, 1)
PEOPLE_MAP = "synth_dp_people"


class Declared:
    """One column's declared domain: `values` (a category) or `lo`/`hi` (a number or date, in the
    numbers the generator draws: days since 1970 for a date), or neither (not counted)."""

    def __init__(self, spec: dict, sql_type: str):
        self.values: list | None = None
        self.lo = self.hi = None
        kind = spec.get("kind")
        if sql_type == "BOOLEAN":
            self.values = [False, True]
        elif "values" in spec and kind != "number":
            self.values = list(spec["values"])
        elif "min" in spec and "max" in spec:
            lo, hi = (_number(spec[k], sql_type) for k in ("min", "max"))
            integer = sql_type == "DATE" or sql_type in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT")
            if integer and hi - lo + 1 <= CATEGORY_LIMIT:
                self.values = [date.fromordinal(EPOCH.toordinal() + int(v)) if sql_type == "DATE" else int(v)
                               for v in range(int(lo), int(hi) + 1)]
            else:
                self.lo, self.hi = float(lo), float(hi)

    @property
    def counted(self) -> bool:
        return self.values is not None or self.lo is not None

    @property
    def size(self) -> int:
        """How many values the column can take, as the generator's `distinct` (a range: many)."""
        return len(self.values) if self.values is not None else (CATEGORY_LIMIT + 1 if self.lo is not None else 0)


def _number(v, sql_type: str) -> float:
    if sql_type == "DATE":
        return float((date.fromisoformat(str(v)) - EPOCH).days)
    return float(v)


class PrivateCounts:
    def __init__(self, engine: Engine, structure: Structure, epsilon: float, seed: int, store: Path | None):
        self.engine, self.s, self.seed, self.store = engine, structure, seed, store
        dictionary = json.loads((structure.release / "dictionary.json").read_text(encoding="utf-8"))
        self.declared = {(t["name"], c["name"]): Declared(c.get("declared", {}), c["type"])
                         for t in dictionary["tables"] for c in t["columns"]}
        self.not_counted: list[str] = []
        self.spent: dict[str, float] = {}
        self.shares = split_budget(epsilon, self.marginals())
        self.epsilon = epsilon

    # --- the plan --------------------------------------------------------------------------------

    def structure(self) -> Structure:
        """The structure with each column's number of values its declared one (the generator
        chooses category or number by it), so no choice is made from the data's own values."""
        for t in self.s.tables.values():
            t.columns = [c if c.is_id else replace(c, distinct=self.declared[(t.name, c.name)].size)
                         for c in t.columns]
        self.s.person_attributes = [replace(a, distinct=self.declared[(PERSON, a.name)].size)
                                    for a in self.s.person_attributes]
        return self.s

    def marginals(self) -> list[str]:
        """Every marginal (by the generator's stream name) a low twin of this structure can draw:
        fixed from the structure alone, before any count is read."""
        s = self.s
        def counted(table: str, column: str) -> bool:  # a column with no declared domain is drawn missing
            return self.declared[(table, column)].counted

        out = [f"{PERSON}|_p_{a.name}" for a in s.person_attributes if counted(PERSON, a.name)]
        out += [f"{PERSON}|_p_pattern"]
        out += [f"{PERSON}|_n_{i}" for i in range(len(s.record_tables))]
        attributes = {a.name for a in s.person_attributes}
        for t in s.in_order():
            if t.role == "child":
                out.append(f"{t.name}|rows")
            if t.role == "group":
                out.append(f"{t.name}|_size")
            out += [f"{t.name}|{c.name}" for c in t.columns if not c.is_id and c.name not in PERSON_IDS
                    and not (t.role == "record" and c.name in attributes) and not c.type.endswith("[]")
                    and counted(t.name, c.name)]
        skip = {"cluster_size_high", "cluster_size_medium", "cluster_size_low", "person_changes_between_thresholds",
                "source_dataset", "source_table", "days_between"}
        for name in (LOOKUP, CASE_JOURNEYS):
            if name in s.tables:
                out += [f"{name}|{c.name}" for c in s.tables[name].columns if not c.is_id and c.name not in skip
                        and c.name not in PERSON_IDS and counted(name, c.name)]
        return out

    def people(self) -> None:
        """`synth_dp_people(_key, dp_person)`: the person each row the models see belongs to (a
        person, a record, a child row through its parent, a group row through its first member)."""
        e, s = self.engine, self.s

        def rows(t) -> str:
            return f"read_parquet({sql_string(t.path)})"

        parts = [f"SELECT {PERSON_ID} AS _key, {PERSON_ID} AS dp_person FROM {rows(s.tables[PERSON])}"]
        of: dict[str, str] = {}  # table -> SQL (row_id_hash, every column, dp_person)
        for t in s.in_order():
            if "row_id_hash" not in t.names:
                continue
            if t.role == "record":
                of[t.name] = f"SELECT *, {PERSON_ID} AS dp_person FROM {rows(t)}"
            elif t.role == "child" and t.parent in of:
                of[t.name] = (f"SELECT c.*, p.dp_person FROM {rows(t)} c LEFT JOIN (SELECT DISTINCT \"{t.join}\", "
                              f"dp_person FROM ({of[t.parent]})) p USING (\"{t.join}\")")
            elif t.role == "group" and t.parent in of:
                of[t.name] = (f"SELECT g.*, p.dp_person FROM {rows(t)} g LEFT JOIN (SELECT \"{t.join}\", "
                              f"min(dp_person) AS dp_person FROM ({of[t.parent]}) GROUP BY 1) p USING (\"{t.join}\")")
        parts += [f"SELECT row_id_hash AS _key, dp_person FROM ({sql})" for sql in of.values()]
        e.execute(f"CREATE OR REPLACE TEMP TABLE {PEOPLE_MAP} AS SELECT _key, min(dp_person) AS dp_person "
                  f"FROM ({' UNION ALL '.join(parts)}) GROUP BY 1")

    # --- one marginal ----------------------------------------------------------------------------

    def _domain(self, stream: str, target: str) -> tuple[str, Declared | None, bool]:
        """(how the marginal is counted: category, number, offset or structural; its declared
        domain; whether its rows are people)."""
        table, column = stream.split("|", 1)
        if column == "_p_pattern":
            return "pattern", None, True
        if column in ("rows", "_size") or re.fullmatch(r"_n_\d+", column):
            return "structural", None, table == PERSON
        if table == PERSON and column.startswith("_p_"):
            return "value", self.declared[(PERSON, column[3:])], True
        declared = self.declared[(table, column)]
        # An anchored date is drawn as its offset from an earlier date (generate._columns).
        offset = target.startswith("CAST(date_diff('day', ") and "DATE '1970-01-01'" not in target
        return ("offset" if offset else "value"), declared, False

    def relation(self, real: str, target: str, numeric: bool, stream: str) -> str:
        """The noisy counts of `target` over the rows of `real`:
        for a category the SQL of (value, n); for a number or date the SQL of the one row
        (leaf, missing, q) its model draws from (the quantiles of its noisy histogram). A column
        with no declared domain is not counted and drawn missing."""
        how, declared, people = self._domain(stream, target)
        column = stream.split("|", 1)[1]
        c = 1 if people else ROWS_PER_PERSON
        base = f"FROM {real} r LEFT JOIN {PEOPLE_MAP} m ON m._key = r._key"
        if how == "pattern":
            names = [t.name for t in self.s.record_tables]
            domain = [",".join(n for i, n in enumerate(names) if mask >> i & 1) for mask in range(1, 2 ** len(names))]
            sql, domain_of = f"SELECT {target} AS value, m.dp_person {base}", domain
        elif how == "structural":
            sql = f"SELECT least({target}, {MAX_RECORDS}) AS value, m.dp_person {base}"
            domain_of = list(range(0 if column == "rows" else 1, MAX_RECORDS + 1))  # rows per parent may be none
        elif declared is None or not declared.counted:
            self.not_counted.append(stream)
            return ("SELECT 0 AS leaf, 1.0 AS missing, NULL::DOUBLE[] AS q" if numeric
                    else "SELECT NULL AS value, 1 AS n")
        elif declared.values is not None and not numeric:
            sql, domain_of = f"SELECT {target} AS value, m.dp_person {base}", declared.values
        else:
            if declared.lo is None:  # many declared numbers: their range
                declared.lo, declared.hi = (min(_number(v, "DATE" if isinstance(v, date) else "") for v in declared.values),
                                            max(_number(v, "DATE" if isinstance(v, date) else "") for v in declared.values))
            lo, hi = (0.0, declared.hi - declared.lo) if how == "offset" else (declared.lo, declared.hi)
            width = (hi - lo) / BINS or 1.0
            sql = (f"SELECT CASE WHEN v IS NULL THEN NULL WHEN v < {lo!r} OR v > {hi!r} THEN {OUT_OF_DOMAIN} "
                   f"ELSE least({BINS - 1}, CAST(floor((v - {lo!r}) / {width!r}) AS INTEGER)) END AS value, "
                   f"dp_person FROM (SELECT {target} AS v, m.dp_person {base})")
            counts = dict(self.engine.execute(self._noisy(stream, sql, list(range(BINS)), c)))
            return self._quantiles(counts, lo, width)
        return self._noisy(stream, sql, domain_of, c)

    @staticmethod
    def _quantiles(counts: dict, lo: float, width: float) -> str:
        """SQL of the one row (leaf, missing, q) a numeric model draws from: the missing share and
        the QUANTILES of the noisy histogram (linear within a bin)."""
        present = [counts.get(b, 0) for b in range(BINS)]
        total = sum(present) + counts.get(None, 0)
        missing = counts.get(None, 0) / total if total else 1.0
        if not sum(present):
            return f"SELECT 0 AS leaf, {missing!r} AS missing, NULL::DOUBLE[] AS q"
        qs, below, b = [], 0.0, 0
        for p in QUANTILES:
            want = p * sum(present)
            while b < BINS - 1 and below + present[b] < want:
                below += present[b]
                b += 1
            inside = (want - below) / present[b] if present[b] else 0.0
            qs.append(lo + (b + min(1.0, max(0.0, inside))) * width)
        return f"SELECT 0 AS leaf, {missing!r} AS missing, {[float(x) for x in qs]!r}::DOUBLE[] AS q"

    def _noisy(self, stream: str, sql: str, domain: list, c: int) -> str:
        if stream not in self.shares:  # a generator drawing a marginal the plan missed: never overspend
            raise AssertionError(f"marginal {stream} is not in the planned budget split")
        epsilon = self.shares[stream]
        store = None
        if self.store is not None:
            store = self.store / (re.sub(r"[^A-Za-z0-9_.-]", "_", stream) + ".parquet")
        try:
            counts = noisy_counts(self.engine, sql, ["value"], epsilon, self.seed, domains={"value": domain},
                                  person="dp_person", max_contribution=c, store=store)
        except BudgetError as exc:
            raise SynthError(f"--epsilon: {exc}") from None
        self.spent[stream] = epsilon
        return counts

    def manifest(self) -> dict:
        """What the twin's manifest says about its privacy: the budget, its split, what was spent."""
        return {"epsilon": self.epsilon, "mechanism": "OpenDP discrete Laplace, scale c / epsilon_i, clamped at 0",
                "unit": f"one person ({PERSON_ID})", "rows_per_person_bound": ROWS_PER_PERSON,
                "people_marginals_bound": 1, "number_bins": BINS, "counts_capped_at": MAX_RECORDS,
                "budget_split": {k: round(v, 12) for k, v in self.shares.items()},
                "spent": round(sum(self.spent.values()), 12),
                "not_counted_drawn_missing": sorted(set(self.not_counted)),
                "not_protected": "the key structure and sizes; see docs/synth.md, Differential privacy"}
