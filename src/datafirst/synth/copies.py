"""No twin row of a table of people or records copies a record the release holds once.

The generator draws rows from the release's distributions; in dense tables (an offence's code,
date, plea and verdict; a person's sources, records, year of birth and first and last event) some
rows come out equal, by chance, to a real row no other real row equals: synthpop's *replicated
uniques*, which the report (`metrics`) requires to be none in every table of one row per person
or per record. This step, run in the engine on the written twin before its dictionary and report,
removes them with the report's own definition (`metrics.record_level`, `metrics.id_columns`,
`metrics.content_columns`, `metrics.unique_rows_sql`, `metrics.copies_unique`). In the tables the
generator draws row by row it also avoids, by steps 1 and 2 only, every combination fewer than
the release's small count of rows hold (small counts are never reproduced where a move or a draw
can help; step 3 loses a value, so it is kept for copies of unique rows, the report's bar):

1. **Shift a person's dates.** A person any of whose dated rows (a record, a child of one, a group
   they belong to, their rows of the derived person tables) copies a real unique has every date of
   every one of their rows moved by the same hash-drawn number of days (1 to MAX_SHIFT_DAYS, never
   0, kept inside each column's range in the release). People who share a group row (the parties
   of one family case) move together, as one unit, so the group's date moves with all of them.
   Every order between dates of one person (offence before hearing before sentence; reception
   before release; the journey's sequence) and every declared constraint are kept, since they
   compare dates of one unit. The derived tables move with the records exactly as the release's
   SQL would make them again (first and last events are a min and a max, the journey is ordered by
   date), so they are shifted in place, not made again. Checked again after each round; a unit
   still copying moves again with a new offset, up to SHIFT_ROUNDS rounds.
2. **Draw a free column again.** A row of the generator's tables (first, before step 1), of a
   table with no date (a party, an alias, a link lookup row), or still copying after the rounds,
   has a free column (one the generator drew and nothing is looked up from or dated after, not a
   person's attribute, not a date; a value breaking a declared constraint is never taken)
   given the value of another twin row of its table, chosen by a hash: a draw from the twin's own
   distribution of that column, CANDIDATES_REDRAWN rows tried at once and the first leaving the
   row no copy taken. Up to REDRAW_ROUNDS rounds, the free columns in turn.
   A person whose person-table row still copies (no date to move) and who has no value of an
   attribute (sex, year of birth) is given one drawn from another twin person, on all their
   records and in the person tables alike.
3. **Suppress one cell.** A row of a person's record lacking the person's attribute (sex, year of
   birth) is given it; a row still copying has the first of those columns whose absence makes it
   no copy set missing (then a person's attribute, where another of their records keeps it). The cells suppressed are counted (in the manifest; a handful on the
   1M-world's release).

Everything is SQL over the twin's tables; every draw is a hash of the seed and a row's key, so the
same seed gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string
from ..release.products import LOOKUP
from . import metrics
from .constraints import columns_by_table, holds_sql, load_constraints
from .models import q
from .structure import MADE_AGAIN, PERSON, PERSON_ID, PERSON_IDS, Structure, TableInfo

SHIFT_ROUNDS = 8
OPEN_ROUNDS = 2  # rounds in which the rows of every table move their unit (then only the person tables')
CANDIDATES = 16  # offsets tried at once for each unit in a round
MAX_SHIFT_DAYS = 28
REDRAW_ROUNDS = 6
UNITS = "synth_fix_units"  # person_id_medium -> the unit (the least person id of those sharing a group row)
GENERATED = ("record", "child", "group", "free")  # the roles of the tables the generator draws row by row
CANDIDATES_REDRAWN = 8  # other rows' values tried at once for a copying row's free column


def work(name: str) -> str:
    return q(f"synth_fix_{name}")


def unique(name: str) -> str:
    return q(f"synth_fix_unique_{name}")


class CopyRepair:
    """The repair of one twin (see the module's docstring). `tables`: the twin's Parquet files by
    table name; `free`: the columns the generator drew freely, by table; `write(name, relation)`
    writes a repaired table back as the twin's (its columns, types and order)."""

    def __init__(self, engine: Engine, structure: Structure, dictionary: dict, tables: dict[str, Path],
                 free: dict[str, list[str]], write: Callable[[str, str], None], small_count: int):
        self.e, self.s, self.free, self.write = engine, structure, free, write
        self.entries = {t["name"]: t for t in dictionary["tables"]}
        self.loaded = [n for n in tables if n in self.entries and not n.startswith(metrics.CODE_LIST_PREFIX)]
        for name in self.loaded:
            engine.execute(f"CREATE OR REPLACE TEMP TABLE {work(name)} AS SELECT * FROM {engine.parquet(tables[name])}")
        # The tables a copy is measured in, each with its content columns and the real rows a twin
        # row may not equal: those no other real row equals (the report's replicated uniques) in
        # the tables of people or records, and in the generator's own tables any combination
        # fewer than small_count rows hold (small counts are never reproduced).
        self.columns: dict[str, list[metrics.Column]] = {}
        self.avoided: dict[str, str] = {}  # table -> the relation of real rows its twin rows may not equal
        for name in self.loaded:
            entry = self.entries[name]
            generated = structure.tables[name].role in GENERATED and len(entry.get("keys") or []) == 1
            if not (metrics.record_level(entry) or generated):
                continue
            real = engine.parquet(structure.tables[name].path)
            cols = metrics.content_columns(engine, real, metrics.id_columns(entry))
            if cols:
                self.columns[name] = cols
                engine.execute(f"CREATE OR REPLACE TEMP TABLE {unique(name)} AS {metrics.unique_rows_sql(real, cols)}")
                self.avoided[name] = unique(name)
                if generated and small_count > 2:
                    self.avoided[name] = q(f"synth_fix_rare_{name}")
                    engine.execute(f"CREATE OR REPLACE TEMP TABLE {self.avoided[name]} AS SELECT "
                                   f"{', '.join(q(c.name) for c in cols)} FROM {real} GROUP BY ALL "
                                   f"HAVING count(*) < {int(small_count)}")
        self.key = {n: self.entries[n]["keys"][0] for n in self.columns}
        self.dates = {n: [c for c, t in engine.schema(work(n)) if t == "DATE"] for n in self.loaded}
        self.changed: set[str] = set()
        self.counted: dict[tuple[str, bool], int] = {}
        self.rules: dict[str, list[dict]] = {}  # table -> its declared constraints (kept by step 2)
        self.summary = {"units_shifted": 0, "shift_rounds": 0, "cells_redrawn": 0, "cells_suppressed": 0}

    # --- which rows copy -------------------------------------------------------------------------

    def copying(self, name: str, where: str = "true", bar: bool = False) -> str:
        """SQL: the rows of the twin's `name` (alias t) that copy a real row they may not equal
        (with `bar`, only those copying a real unique row: the report's replicated uniques)."""
        return (f"SELECT * FROM {work(name)} t WHERE ({where}) AND "
                f"{metrics.copies_unique(self.columns[name], 't', self.rows(name, bar))}")

    def rows(self, name: str, bar: bool = False) -> str:
        return unique(name) if bar else self.avoided[name]

    def count(self, name: str, bar: bool = False) -> int:
        """The rows of `name` copying (counted again only once the table changed)."""
        if (name, bar) not in self.counted:
            self.counted[(name, bar)] = int(self.e.scalar(f"SELECT count(*) FROM ({self.copying(name, bar=bar)})"))
        return self.counted[(name, bar)]

    def touch(self, name: str) -> None:
        self.changed.add(name)
        self.counted.pop((name, False), None)
        self.counted.pop((name, True), None)

    # --- units: people, and the people who share a group row ------------------------------------

    def units(self) -> None:
        """Each person's unit, and each loaded table's rows' unit (`_unit`; none for rows of no
        person: a free table's, a group's without members)."""
        e, s = self.e, self.s
        e.execute(f"CREATE OR REPLACE TEMP TABLE {UNITS} AS SELECT DISTINCT {PERSON_ID} AS person, {PERSON_ID} AS unit "
                  f"FROM {work(LOOKUP)}")
        members = [(g, t) for t in s.record_tables for g in t.groups if t.name in self.loaded]
        if members:
            edges = " UNION ALL ".join(
                f"SELECT {PERSON_ID} AS person, {sql_string(g + '|')} || {q(s.tables[g].join)} AS grp FROM {work(t.name)} "
                f"WHERE {q(s.tables[g].join)} IS NOT NULL" for g, t in members)
            e.execute(f"CREATE OR REPLACE TEMP TABLE synth_fix_edges AS {edges}")
            # The least person id of each connected set of people and group rows (label propagation).
            while True:
                e.execute(f"""CREATE OR REPLACE TEMP TABLE synth_fix_next AS
                    WITH g AS (SELECT x.grp, min(u.unit) AS unit FROM synth_fix_edges x JOIN {UNITS} u USING (person)
                               GROUP BY 1)
                    SELECT u.person, least(u.unit, min(g.unit)) AS unit FROM {UNITS} u
                    LEFT JOIN synth_fix_edges x USING (person) LEFT JOIN g USING (grp) GROUP BY u.person, u.unit""")
                moved = e.scalar(f"SELECT count(*) FROM synth_fix_next n JOIN {UNITS} u USING (person) "
                                 "WHERE n.unit <> u.unit")
                e.execute(f"CREATE OR REPLACE TEMP TABLE {UNITS} AS SELECT * FROM synth_fix_next")
                if not moved:
                    break
        done: set[str] = set()
        pending = list(self.loaded)
        while pending:
            ready = [(n, m) for n in pending if (m := self._unit_of(n, done)) is not None]
            for name, (mapping, column) in ready:
                e.execute(f"CREATE OR REPLACE TEMP TABLE {work(name)} AS SELECT t.*, m.unit AS _unit FROM {work(name)} t "
                          f"LEFT JOIN ({mapping}) m ON m.id = t.{q(column)}" if mapping else
                          f"CREATE OR REPLACE TEMP TABLE {work(name)} AS SELECT *, NULL::VARCHAR AS _unit FROM {work(name)}")
                done.add(name)
                pending.remove(name)
            if not ready:
                raise RuntimeError(f"tables {', '.join(pending)} join in a circle")  # structure.in_order refuses these

    def _unit_of(self, name: str, done: set[str]) -> tuple[str | None, str] | None:
        """(a relation of (id, unit), the table's column it is joined by) giving a row's unit; (None,
        "") for rows of nobody (a free table's, a table made from none of the people); None while
        the table it comes through has no unit yet."""
        columns = self.e.columns(work(name))
        info: TableInfo | None = self.s.tables.get(name)
        if PERSON_ID in columns:
            return f"SELECT person AS id, unit FROM {UNITS}", PERSON_ID
        for pid in PERSON_IDS:
            if pid in columns:
                return (f"SELECT DISTINCT p.{q(pid)} AS id, u.unit FROM {work(LOOKUP)} p "
                        f"JOIN {UNITS} u ON u.person = p.{PERSON_ID}"), pid
        if info is not None and info.role in ("child", "group") and info.join:
            if info.parent not in done:
                return None
            # A child's parent row, or a group's member rows (all of one unit).
            return f"SELECT {q(info.join)} AS id, min(_unit) AS unit FROM {work(info.parent)} GROUP BY 1", info.join
        return None, ""

    # --- 1. shifting a unit's dates --------------------------------------------------------------

    def shift(self) -> None:
        e = self.e
        shiftable = [n for n in self.loaded if self.dates[n]]
        dated = [n for n in self.columns if any(c.name in self.dates[n] for c in self.columns[n])]
        if not dated:
            return
        bounds = {}
        for n in shiftable:
            real = e.parquet(self.s.tables[n].path)
            row = e.execute("SELECT " + ", ".join(f"min({q(d)}), max({q(d)})" for d in self.dates[n]) + f" FROM {real}")[0]
            bounds[n] = {d: (row[2 * i], row[2 * i + 1]) for i, d in enumerate(self.dates[n])}
        last = "true"
        for rnd in range(SHIFT_ROUNDS):
            # A row with no date is left to the last resorts (a shift cannot change it); after
            # OPEN_ROUNDS rounds, so is every row of a table the generator drew (a few offences of
            # people with many), and the rounds go on for the tables made from the records alone.
            flagging = [n for n in dated if rnd < OPEN_ROUNDS or not self.fallback(n)]
            flagged = " UNION ".join(
                f"SELECT _unit AS unit FROM ({self.copying(n, last, bar=True)}) t WHERE _unit IS NOT NULL AND "
                f"coalesce({', '.join(q(c.name) for c in self.columns[n] if c.name in self.dates[n])}) IS NOT NULL"
                for n in flagging)
            if not flagged:
                break
            e.execute(f"CREATE OR REPLACE TEMP TABLE synth_fix_flagged AS {flagged}")
            if not e.scalar("SELECT count(*) FROM synth_fix_flagged"):
                break
            # The room each flagged unit has below and above, within each date column's real range.
            room = " UNION ALL ".join(
                "SELECT _unit AS unit, " + (f"least({', '.join(self._gap(lo, d) for d, (lo, _) in bounds[n].items() if lo)})"
                                            if any(lo for lo, _ in bounds[n].values()) else "NULL") + " AS below, "
                + (f"least({', '.join(self._gap(d, hi) for d, (_, hi) in bounds[n].items() if hi)})"
                   if any(hi for _, hi in bounds[n].values()) else "NULL")
                + f" AS above FROM {work(n)} WHERE _unit IN (SELECT unit FROM synth_fix_flagged)" for n in shiftable)
            # CANDIDATES offsets a unit, each kept inside that room; the first that leaves none of
            # the unit's rows copying is taken (else the one leaving fewest: it moves again next round).
            draws = " UNION ALL ".join(
                f"SELECT unit, below, above, {k} AS k, 1 + CAST(floor(synth_u({sql_string(f'copies|shift|{rnd}|{k}')}, "
                f"unit) * {MAX_SHIFT_DAYS}) AS INTEGER) AS m, synth_u({sql_string(f'copies|sign|{rnd}|{k}')}, unit) < 0.5 "
                f"AS down FROM r" for k in range(CANDIDATES))
            e.execute(f"""CREATE OR REPLACE TEMP TABLE synth_fix_candidates AS
                WITH r AS (SELECT unit, min(below) AS below, min(above) AS above FROM ({room}) GROUP BY unit)
                SELECT unit, k, CASE WHEN down AND coalesce(below, 0) >= m THEN -m
                                     WHEN coalesce(above, 0) >= m THEN m
                                     WHEN coalesce(below, 0) >= m THEN -m ELSE 0 END AS days
                FROM ({draws})""")
            copied = " UNION ALL ".join(self._copies_if_shifted(n) for n in dated if n in shiftable)
            e.execute(f"""CREATE OR REPLACE TEMP TABLE synth_fix_offsets AS
                SELECT c.unit, arg_min(c.days, (coalesce(x.n, 0), c.k)) AS days
                FROM synth_fix_candidates c
                LEFT JOIN (SELECT unit, k, sum(n) AS n FROM ({copied}) GROUP BY ALL) x USING (unit, k)
                WHERE c.days <> 0 GROUP BY c.unit""")
            e.execute("DELETE FROM synth_fix_offsets WHERE days = 0")
            moved = int(e.scalar("SELECT count(*) FROM synth_fix_offsets"))
            if not moved:
                break
            self.summary["units_shifted"] += moved
            self.summary["shift_rounds"] = rnd + 1
            for n in shiftable:
                sets = ", ".join(f"{q(d)} = {q(d)} + o.days" for d in self.dates[n])
                e.execute(f"UPDATE {work(n)} SET {sets} FROM synth_fix_offsets o WHERE {work(n)}._unit = o.unit")
                self.touch(n)
            last = "t._unit IN (SELECT unit FROM synth_fix_offsets)"  # only the moved rows can copy anew

    def fallback(self, name: str) -> bool:
        """Whether a table's rows can be drawn again or suppressed (step 2 and 3): the generator's
        tables, not those made from the records alone (the person tables)."""
        return name not in MADE_AGAIN or name in self.free

    def _copies_if_shifted(self, name: str) -> str:
        """SQL (unit, k, n): how many of a flagged unit's rows of `name` would copy a real unique
        row with its k-th candidate offset."""
        cols = ", ".join(f"t.{q(c)} + c.days AS {q(c)}" if c in self.dates[name] else f"t.{q(c)}"
                         for c in (x.name for x in self.columns[name]))
        return (f"SELECT unit, k, count(*) AS n FROM (SELECT c.unit, c.k, {cols} FROM {work(name)} t "
                f"JOIN synth_fix_candidates c ON t._unit = c.unit WHERE c.days <> 0) s "
                f"WHERE {metrics.copies_unique(self.columns[name], 's', unique(name))} GROUP BY ALL")

    @staticmethod
    def _gap(a: object, b: object) -> str:
        """Days from a to b, each a column name or a date."""
        def term(x: object) -> str:
            return q(x) if isinstance(x, str) else f"DATE {sql_string(x.isoformat())}"
        return f"date_diff('day', {term(a)}, {term(b)})"

    # --- 2 and 3. drawing a free column again, then suppressing one ------------------------------

    def free_columns(self, name: str) -> list[str]:
        """The columns step 2 may draw again: drawn freely, content, not a person's attribute, not
        a date (a record's dates make the person tables' first and last events and the journey:
        only step 1 moves them, all of a unit's at once). A value a declared constraint would
        refuse is never taken."""
        content = {c.name for c in self.columns[name]}
        attributes = {a.name for a in self.s.person_attributes}
        return [c for c in self.free.get(name, []) if c in content and c not in attributes and c not in self.dates[name]]

    def redraw(self, name: str, free: list[str]) -> None:
        """Give each copying row's free column the value of another twin row of its table, picked
        by a hash: CANDIDATES_REDRAWN rows at once, the first whose value leaves the row no copy and
        breaks no declared constraint of the table taken (the row keeps its own value where none
        copies less). Up to REDRAW_ROUNDS rounds, the next free column in each."""
        e, key = self.e, q(self.key[name])
        cols = self.columns[name]
        joins, holds = holds_sql(self.rules.get(name, []), "x", {n: work(n) for n in self.loaded})
        for rnd in range(REDRAW_ROUNDS):
            if not self.count(name):
                return
            column = free[rnd % len(free)]
            stream = sql_string(f"copies|{name}|{column}|{rnd}|")
            n = int(e.scalar(f"SELECT count(*) FROM {work(name)}"))
            e.execute(f"""CREATE OR REPLACE TEMP TABLE synth_fix_donor AS
                SELECT row_number() OVER (ORDER BY {key}) AS i, {q(column)} AS v FROM {work(name)}""")
            # Attempt 0 is the row's own value (which keeps every constraint).
            e.execute(f"""CREATE OR REPLACE TEMP TABLE synth_fix_redrawn AS
                SELECT _k AS k, arg_min({q(column)}, (_broken, _bar, _avoided, _attempt)) AS v FROM (
                  SELECT x._k, x._attempt, x.{q(column)}, NOT ({holds}) AS _broken,
                         {metrics.copies_unique(cols, 'x', unique(name))} AS _bar,
                         {metrics.copies_unique(cols, 'x', self.rows(name))} AS _avoided
                  FROM (
                    SELECT c.* REPLACE (CASE WHEN a.range = 0 THEN c.{q(column)} ELSE d.v END AS {q(column)}),
                           c.{key} AS _k, a.range AS _attempt
                    FROM ({self.copying(name)}) c CROSS JOIN range({CANDIDATES_REDRAWN + 1}) a
                    LEFT JOIN synth_fix_donor d ON a.range > 0 AND d.i = 1 + CAST(floor(synth_u(
                        {stream} || CAST(a.range AS VARCHAR), c.{key}) * {n}) AS BIGINT)) x {joins})
                GROUP BY _k HAVING arg_min(_attempt, (_broken, _bar, _avoided, _attempt)) > 0""")
            self.summary["cells_redrawn"] += int(e.scalar("SELECT count(*) FROM synth_fix_redrawn"))
            e.execute(f"UPDATE {work(name)} SET {q(column)} = r.v FROM synth_fix_redrawn r WHERE {work(name)}.{key} = r.k")
            self.touch(name)

    def suppress(self, name: str, column: str, only: str = "true") -> None:
        """Set `column` missing in the rows still copying (those meeting `only` too) whose copy ends so."""
        e, key = self.e, q(self.key[name])
        cols = self.columns[name]
        select = ", ".join(f"NULL AS {q(x.name)}" if x.name == column else f"t.{q(x.name)}" for x in cols)
        e.execute(f"""CREATE OR REPLACE TEMP TABLE synth_fix_nulled AS
            SELECT k FROM (SELECT t.{key} AS k, {select} FROM ({self.copying(name, only, bar=True)}) t) t
            WHERE NOT {metrics.copies_unique(cols, 't', unique(name))}""")
        done = int(e.scalar("SELECT count(*) FROM synth_fix_nulled"))
        if done:
            self.summary["cells_suppressed"] += done
            e.execute(f"UPDATE {work(name)} SET {q(column)} = NULL WHERE {key} IN (SELECT k FROM synth_fix_nulled)")
            self.touch(name)

    def restore(self, name: str, column: str) -> None:
        """Give the rows still copying that lack a person's attribute the person's own value (a
        record's attribute is the person's, or missing): the person tables stay as they are."""
        e, key = self.e, q(self.key[name])
        person = work(PERSON)
        e.execute(f"""CREATE OR REPLACE TEMP TABLE synth_fix_restored AS
            SELECT t.{key} AS k, p.{q(column)} AS v FROM ({self.copying(name, f't.{q(column)} IS NULL', bar=True)}) t
            JOIN {person} p ON p.{PERSON_ID} = t.{PERSON_ID} WHERE p.{q(column)} IS NOT NULL""")
        done = int(e.scalar("SELECT count(*) FROM synth_fix_restored"))
        if done:
            self.summary["cells_redrawn"] += done
            e.execute(f"UPDATE {work(name)} SET {q(column)} = r.v FROM synth_fix_restored r WHERE {work(name)}.{key} = r.k")
            self.touch(name)

    def keeps_attribute(self, name: str, column: str) -> str:
        """SQL condition on a row t of a record table: another of the person's records holds the
        attribute, so the person's own value (their records' most common) stays as it is."""
        others = [t.name for t in self.s.record_tables if t.name in self.loaded and column in t.names]
        return "(" + " OR ".join(
            f"EXISTS (SELECT 1 FROM {work(o)} x WHERE x.{PERSON_ID} = t.{PERSON_ID} AND x.{q(column)} IS NOT NULL"
            + (f" AND x.{q(self.key[name])} <> t.{q(self.key[name])})" if o == name else ")") for o in others) + ")"

    def fill_person(self, column: str) -> None:
        """A person whose row of a person table still copies (one with no date to move) and who
        has no value of an attribute is given one, drawn from another twin person by a hash, on
        all their records and in the person tables alike (their records' most common value)."""
        e = self.e
        people = [n for n in self.columns if not self.fallback(n) and column in self.e.columns(work(n))]
        if not people:
            return
        pairs = f"(SELECT DISTINCT {', '.join(PERSON_IDS)} FROM {work(LOOKUP)})"
        stuck = " UNION ".join(
            f"SELECT p.{PERSON_ID} AS person FROM ({self.copying(n, f't.{q(column)} IS NULL', bar=True)}) t "
            f"JOIN {pairs} p ON p.{q(self.key[n])} = t.{q(self.key[n])}" for n in people)
        e.execute(f"""CREATE OR REPLACE TEMP TABLE synth_fix_donor AS
            SELECT row_number() OVER (ORDER BY {PERSON_ID}) AS i, {q(column)} AS v FROM {work(PERSON)}
            WHERE {q(column)} IS NOT NULL""")
        n = int(e.scalar("SELECT count(*) FROM synth_fix_donor"))
        if not n:
            return
        e.execute(f"""CREATE OR REPLACE TEMP TABLE synth_fix_filled AS
            SELECT s.person, d.v FROM ({stuck}) s JOIN synth_fix_donor d
            ON d.i = 1 + CAST(floor(synth_u({sql_string('copies|person|' + column)}, s.person) * {n}) AS BIGINT)""")
        for t in [*(r.name for r in self.s.record_tables if r.name in self.loaded and column in r.names), *people]:
            pid = PERSON_ID if PERSON_ID in e.columns(work(t)) else self.key[t]
            via = (f"(SELECT p.{q(pid)} AS id, f.v FROM synth_fix_filled f JOIN {pairs} p ON p.{PERSON_ID} = f.person)")
            done = int(e.scalar(f"SELECT count(*) FROM {work(t)} WHERE {q(pid)} IN (SELECT id FROM {via})"))
            if done:
                self.summary["cells_redrawn"] += done
                e.execute(f"UPDATE {work(t)} SET {q(column)} = x.v FROM {via} x WHERE {work(t)}.{q(pid)} = x.id")
                self.touch(t)

    def draw_free(self, constraints: dict[str, set[str]]) -> None:
        """Before any date moves: the copying rows of the generator's tables have their free
        columns drawn again (step 2), so a person's dates move only where that is not enough."""
        for name in self.columns:
            free = self.free_columns(name)
            if free and self.fallback(name) and self.count(name):
                self.redraw(name, free)

    def last_resorts(self, constraints: dict[str, set[str]]) -> None:
        attributes = sorted(self.s.person_attributes, key=lambda a: (-a.distinct, a.name))
        named = set().union(*constraints.values()) if constraints else set()
        for a in attributes:
            if a.name not in named:  # it would change the person's value on records a constraint reads
                self.fill_person(a.name)
        for name in self.columns:
            if not self.count(name):
                continue
            constrained = constraints.get(name, set())
            free = self.free_columns(name)
            if free:
                self.redraw(name, free)
            free = [c for c in free if c not in constrained]  # a missing value could break a constraint
            if not self.fallback(name):
                continue  # made from the records: only their dates move (step 1)
            content = [c.name for c in self.columns[name]]
            others = [c for c in content if c not in free and c not in constrained and c not in self.dates[name]
                      and c not in {a.name for a in attributes}]
            for column in [*free, *others]:
                if self.count(name, bar=True):
                    self.suppress(name, column)
            record = self.s.tables[name].role == "record"
            for a in attributes:  # a person's attribute missing on the record: the person's
                if record and a.name in content and a.name not in constrained and self.count(name, bar=True):
                    self.restore(name, a.name)
            for a in attributes:  # a person's attribute, where another of their records keeps it
                if record and a.name in content and a.name not in constrained and self.count(name, bar=True):
                    self.suppress(name, a.name, self.keeps_attribute(name, a.name))
    def remaining(self) -> dict[str, int]:
        return {n: c for n in self.columns if (c := self.count(n, bar=True))}

    def save(self) -> None:
        for name in self.loaded:
            if name in self.changed:
                self.write(name, work(name))


def remove_copies(engine: Engine, structure: Structure, tables: dict[str, Path], free: dict[str, list[str]],
                  write: Callable[[str, str], None], small_count: int) -> dict:
    """Repair the twin whose tables are `tables` (see the module's docstring) and write back the
    tables it changed; returns what it took (units shifted, rounds, cells redrawn and suppressed)
    and the replicated uniques left per table (none expected)."""
    dictionary = json.loads((structure.release / "dictionary.json").read_text(encoding="utf-8"))
    repair = CopyRepair(engine, structure, dictionary, tables, free, write, small_count)
    # A column a declared constraint names is never drawn again or suppressed, so it still holds.
    declared = load_constraints(structure.release)
    constrained = columns_by_table(declared)
    repair.rules = {t: [c for c in declared if c["table"] == t] for t in constrained}
    repair.units()
    repair.draw_free(constrained)
    repair.shift()
    repair.last_resorts(constrained)
    left = repair.remaining()
    repair.save()
    return {**repair.summary, "replicated_uniques_left": left}
