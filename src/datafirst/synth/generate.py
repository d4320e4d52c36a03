"""The twin's rows, generated in the engine from the release's structure and column models.

People first: each twin person's attributes (the person table's own columns its records carry,
such as sex and year of birth), the set of record tables they appear in (drawn whole, so sources
per person keep their distribution), and their number of records in each. Then every record
table's rows per person, every child table's rows per parent row (offences per defendant), and
the group tables made by gathering record rows into groups of the real sizes (parties into
claims). Each non-key column is drawn from its model (`models`), in the release's order, except:
- ids: new values from the seed and a counter (`synth_id`), never a real one; a child copies the
  ids it shares with its parent (an offence its defendant's case id), and an id a person's rows of
  a source share in the release (a prisoner number) is shared by the twin person's rows too;
- a person's attributes on each of their records: the person's, missing as often as in the table;
- a column the release holds as a function of an earlier one (an offence title of its code, an
  ethnic group of the recorded ethnicity): looked up from the release's pairs, so they agree;
- a number that counts rows within their parent (an offence's sequence): counted again;
- a date that always falls on one side of an earlier date (its own row's, or its parent's) in the
  release: that date plus or minus an offset drawn from the release's offsets, so date orders
  (offence before hearing before sentence, reception before release) hold in the twin as they do
  in the release, whatever constraints are declared.

The case journeys link each twin Crown Court record (as often as in the release) to a
magistrates' record of the same person, and the derived tables are then made again from the
twin's records with the release's own SQL (`stage`).
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string
from ..release.products import LOOKUP
from ..workspace import JourneySpec
from .constraints import Drawn, columns_by_table, hold
from .models import Feature, Fitter, Model, SynthError, features_for, q
from .structure import CASE_JOURNEYS, PERSON, PERSON_ID, PERSON_IDS, Column, Structure, TableInfo

CATEGORY_LIMIT = 12  # a number or date with at most this many distinct values is drawn as a category
MAX_FEATURES = 60
REFERENCE = "reference"  # release.products.case_journeys: the Crown Court record names the magistrates' case
PEOPLE = "synth_people"
PEOPLE_REAL = "synth_real_people"


def syn(name: str) -> str:
    return q(f"synth_syn_{name}")


def real_view(name: str) -> str:
    return q(f"synth_real_{name}")


def real_ctx(name: str) -> str:
    return q(f"synth_rctx_{name}")


def kind_of(c: Column) -> str:
    """How a column is drawn and used as a feature: category, number or date."""
    if c.type.endswith("[]") or c.is_id:
        return "skip"
    if (c.is_date or c.is_number) and c.distinct > CATEGORY_LIMIT:
        return "date" if c.is_date else "number"
    return "category"


def feature_kind(c: Column) -> str:
    if c.type.endswith("[]") or c.is_id:
        return "skip"
    return "date" if c.is_date else "number" if (c.is_number or c.type == "BOOLEAN") else "category"


class Generator:
    def __init__(self, engine: Engine, structure: Structure, fitter: Fitter, journey: JourneySpec,
                 train_people: Path | None):
        self.engine, self.s, self.fitter, self.journey = engine, structure, fitter, journey
        self.train_people = train_people
        self.context_columns: dict[str, list[tuple[str, str]]] = {}  # table -> (context column, feature kind)
        # table -> the columns drawn freely (no other column looked up from or dated after them):
        # what the repair of copies (`copies`) may draw again
        self.free: dict[str, list[str]] = {}
        # table -> (its lookups: column -> the column it is looked up from; its dates' anchors): how
        # the declared constraints may draw its columns again (`keep_constraints`)
        self.bound: dict[str, tuple[dict[str, str], dict[str, tuple]]] = {}
        self.repaired: dict = {}  # what the repair of copies took (`copies.remove_copies`)
        self.ratio = 1.0

    # --- the release's rows, as the models see them ---------------------------------------------

    def real_views(self) -> None:
        """A view of each source and derived table over the training people only (all of them
        unless `train_people` names some): a child through its parent, a group through its members."""
        e, s = self.engine, self.s
        train = (f"(SELECT person_id_medium FROM read_parquet({sql_string(self.train_people)}))"
                 if self.train_people is not None else None)

        def plain(t: TableInfo) -> str:
            return f"SELECT * FROM read_parquet({sql_string(t.path)})"

        for t in s.tables.values():
            if t.role == "code_list":
                continue
            sql = plain(t)
            if train is not None and PERSON_ID in t.names and t.role in ("record", "derived"):
                sql += f" WHERE {PERSON_ID} IN {train}"
            e.execute(f"CREATE OR REPLACE TEMP VIEW {real_view(t.name)} AS {sql}")
        for t in s.in_order():
            if t.role == "child" and train is not None:
                e.execute(f"CREATE OR REPLACE TEMP VIEW {real_view(t.name)} AS {plain(t)} WHERE {q(t.join)} IN "
                          f"(SELECT {q(t.join)} FROM {real_view(t.parent)})")
            if t.role == "group" and train is not None:
                e.execute(f"CREATE OR REPLACE TEMP VIEW {real_view(t.name)} AS {plain(t)} WHERE {q(t.join)} IN "
                          f"(SELECT {q(t.join)} FROM {real_view(t.parent)})")
        if CASE_JOURNEYS in s.tables and train is not None and self.journey.crown_table in s.tables:
            e.execute(f"""CREATE OR REPLACE TEMP VIEW {real_view(CASE_JOURNEYS)} AS
                SELECT * FROM read_parquet({sql_string(s.tables[CASE_JOURNEYS].path)})
                WHERE crown_row_id_hash IN (SELECT row_id_hash FROM {real_view(self.journey.crown_table)})""")

    # --- drawing one column ----------------------------------------------------------------------

    def _features(self, table: str, columns: list[str]) -> list[Feature]:
        if self.fitter.fidelity != "mid":
            return []
        kinds = dict(self.context_columns[table])
        out: list[Feature] = []
        # Numbers first (one feature each), then categories, the most recently drawn first: when
        # the limit bites, what goes is what lies furthest from the column drawn.
        numbers = [c for c in columns if kinds.get(c) in ("number", "date")]
        for c in [*numbers, *reversed([c for c in columns if c not in numbers])]:
            if kinds.get(c, "skip") != "skip":
                out += features_for(self.engine, real_ctx(table), c, kinds[c], self.fitter.small_count)
        return out[:MAX_FEATURES]

    def _add(self, table: str, column: str, sql_value: str) -> None:
        """Add (or replace) a column of the twin's working table, computed from its other columns."""
        kept = [q(c) for c in self.engine.columns(syn(table)) if c != column]
        self.engine.execute(f"CREATE OR REPLACE TEMP TABLE {syn(table)} AS "
                            f"SELECT {', '.join(kept)}, {sql_value} AS {q(column)} FROM {syn(table)}")

    def _draw(self, table: str, column: str, target: str, numeric: bool, features: list[str], cast: str,
              real: str | None = None, when: str | None = None, structural: bool = False,
              carry: tuple[str, ...] = ()) -> Model:
        """Fit `target` on the table's real context (or `real`) and draw it as `column` of the twin's."""
        model = self.fitter.fit(real or real_ctx(table), target, numeric, self._features(table, features),
                                f"{table}|{column}", structural)
        kept = [f"s.{q(c)}" for c in self.engine.columns(syn(table)) if c != column]
        value = "v._value" if when is None else f"CASE WHEN {when} THEN v._value END"
        drawn = self.fitter.draw(model, syn(table), f"{table}|{column}", cast, carry)
        self.engine.execute(f"CREATE OR REPLACE TEMP TABLE {syn(table)} AS SELECT {', '.join(kept)}, {value} AS "
                            f"{q(column)} FROM {syn(table)} s JOIN ({drawn}) v USING (_n)")
        return model

    # --- people ----------------------------------------------------------------------------------

    def people(self) -> int:
        """The twin's people: as many as the release's (training) people, with their attributes,
        the record tables they appear in and their records in each."""
        e, s = self.engine, self.s
        records = s.record_tables
        if not records:
            raise SynthError(f"release {s.release.name} has no table of people's records (a table whose row_id_hash "
                             "joins person_link_lookup): there is nobody to make a twin of")
        counted = " ".join(
            f"LEFT JOIN (SELECT {PERSON_ID}, count(*) AS n FROM {real_view(t.name)} GROUP BY 1) c{i} USING ({PERSON_ID})"
            for i, t in enumerate(records))
        n_cols = ", ".join(f"coalesce(c{i}.n, 0) AS _n_{i}" for i in range(len(records)))
        attrs = ", ".join(f"p.{q(a.name)} AS {q('_p_' + a.name)}" for a in s.person_attributes)
        pattern = ", ".join(f"CASE WHEN c{i}.n > 0 THEN {sql_string(t.name)} END" for i, t in enumerate(records))
        total = " + ".join(f"coalesce(c{i}.n, 0)" for i in range(len(records)))
        e.execute(f"""CREATE OR REPLACE TEMP TABLE {real_ctx(PERSON)} AS
            SELECT p.{PERSON_ID} AS _key, {attrs + ', ' if attrs else ''}{n_cols}, {total} AS _p_records,
                   concat_ws(',', {pattern}) AS _p_pattern
            FROM {real_view(PERSON)} p {counted} WHERE {total} > 0""")
        n = int(e.scalar(f"SELECT count(*) FROM {real_ctx(PERSON)}"))
        real_people = int(e.scalar(f"SELECT count(*) FROM {real_view(PERSON)}"))
        self.ratio = n / real_people if real_people else 1.0
        if n == 0:
            raise SynthError(f"release {s.release.name} has no person with a record: there is nobody to make a twin of")
        self.context_columns[PERSON] = [("_p_" + a.name, feature_kind(a)) for a in s.person_attributes] + [
            ("_p_pattern", "category"), ("_p_records", "number")]
        e.execute(f"CREATE OR REPLACE TEMP TABLE {syn(PERSON)} AS SELECT range + 1 AS _n FROM range({n})")
        done: list[str] = []
        for a in s.person_attributes:
            k = kind_of(a)
            self._draw(PERSON, "_p_" + a.name, q("_p_" + a.name) if k == "category" else _numeric_target(a, "_p_" + a.name),
                       k != "category", done, "{v}" if k == "category" else _numeric_cast(a))
            done.append("_p_" + a.name)
        self._draw(PERSON, "_p_pattern", "_p_pattern", False, done, "{v}", structural=True)
        for i, t in enumerate(records):
            present = f"list_contains(string_split(s._p_pattern, ','), {sql_string(t.name)})"
            self._draw(PERSON, f"_n_{i}", f"_n_{i}", False, [*done, "_p_pattern"], "{v}",
                       real=f"(SELECT * FROM {real_ctx(PERSON)} WHERE _n_{i} > 0)", when=present, structural=True)
            self._add(PERSON, f"_n_{i}", f"coalesce(_n_{i}, 0)")
        self._add(PERSON, "_p_records", " + ".join(f"_n_{i}" for i in range(len(records))))
        ids = ", ".join(f"synth_id({sql_string(c)}, _n) AS {c}" for c in PERSON_IDS)
        e.execute(f"CREATE OR REPLACE TEMP TABLE {syn(PERSON)} AS SELECT *, {ids} FROM {syn(PERSON)}")
        return n

    # --- source tables ---------------------------------------------------------------------------

    def tables(self) -> None:
        for t in self.s.in_order():
            if t.role == "group":
                self._group(t)
            else:
                self._rows(t)
            self._columns(t)
        for t in self.s.record_tables:  # a group table's members now hold its new ids
            for g in t.groups:
                self._add(t.name, self.s.tables[g].join, f"CASE WHEN {q('_group_' + g)} IS NOT NULL THEN "
                          f"synth_id({sql_string(g + '|' + self.s.tables[g].join)}, {q('_group_' + g)}) END")

    def _rows(self, t: TableInfo) -> None:
        """The twin table's rows with their keys and context (person, parent), and the real context."""
        e, s = self.engine, self.s
        own = ", ".join(f"t.{q(c)}" for c in t.names)
        if t.role == "record":
            i = s.record_tables.index(t)
            p_cols = [c for c, _ in self.context_columns[PERSON]]
            e.execute(f"""CREATE OR REPLACE TEMP TABLE {real_ctx(t.name)} AS
                SELECT {own}, t.row_id_hash AS _key, {', '.join('p.' + q(c) for c in p_cols)}
                FROM {real_view(t.name)} t LEFT JOIN {real_ctx(PERSON)} p ON p._key = t.{PERSON_ID}""")
            e.execute(f"""CREATE OR REPLACE TEMP TABLE {syn(t.name)} AS
                SELECT row_number() OVER (ORDER BY _pn, _k) AS _n, * FROM (
                  SELECT _n AS _pn, unnest(range(_n_{i})) AS _k, {', '.join(PERSON_IDS)},
                         {', '.join(q(c) for c in p_cols)} FROM {syn(PERSON)} WHERE _n_{i} > 0)""")
            self.context_columns[t.name] = list(self.context_columns[PERSON])
        elif t.role == "child":
            parent = s.tables[t.parent]
            p_ctx = [c for c, _ in self.context_columns[parent.name] if c.startswith("_p_")]
            renamed = ", ".join([*(f"p.{q(c)} AS {q('_parent_' + c)}" for c in parent.names),
                                 *(f"p.{q(c)}" for c in p_ctx)])
            e.execute(f"""CREATE OR REPLACE TEMP TABLE {real_ctx(t.name)} AS
                SELECT {own}, t.row_id_hash AS _key, {renamed}
                FROM {real_view(t.name)} t LEFT JOIN {real_ctx(parent.name)} p ON p.{q(t.join)} = t.{q(t.join)}""")
            # How many rows each parent row has (none too), drawn per twin parent row.
            e.execute(f"""CREATE OR REPLACE TEMP TABLE {q('synth_rctx_count_' + t.name)} AS
                SELECT p.*, coalesce(c.n, 0) AS _children FROM {real_ctx(parent.name)} p
                LEFT JOIN (SELECT {q(t.join)}, count(*) AS n FROM {real_view(t.name)} GROUP BY 1) c
                ON c.{q(t.join)} = p.{q(t.join)}""")
            parent_features = [c for c in parent.names if feature_kind(parent.column(c)) != "skip"]
            model = self.fitter.fit(q("synth_rctx_count_" + t.name), "_children", False,
                                    self._features(parent.name, [*p_ctx, *parent_features]), f"{t.name}|rows",
                                    structural=True)
            counted = self.fitter.draw(model, syn(parent.name), f"{t.name}|rows", "{v}")
            # The parent's columns a child row needs: the ids it shares, the dates it may follow,
            # and (mid) the values its columns are drawn given.
            carried = [c for c in parent.columns if (c.is_id and c.name in t.names and c.name != "row_id_hash")
                       or c.is_date or (self.fitter.fidelity == "mid" and feature_kind(c) != "skip")]
            e.execute(f"""CREATE OR REPLACE TEMP TABLE {syn(t.name)} AS
                SELECT row_number() OVER (ORDER BY _pn, _k) AS _n, * FROM (
                  SELECT s._n AS _pn, unnest(range(coalesce(v._value, 0))) AS _k,
                         {', '.join([*(f's.{q(c.name)} AS {q("_parent_" + c.name)}' for c in carried),
                                     *(f's.{q(c)}' for c in p_ctx)])}
                  FROM {syn(parent.name)} s JOIN ({counted}) v USING (_n))""")
            self.context_columns[t.name] = [(c, k) for c, k in self.context_columns[parent.name] if c.startswith("_p_")] + [
                ("_parent_" + c.name, feature_kind(c)) for c in carried]
        else:  # free: as many rows as the release's, scaled as the people are
            n = round(int(e.scalar(f"SELECT count(*) FROM {real_view(t.name)}")) * self.ratio)
            e.execute(f"CREATE OR REPLACE TEMP TABLE {real_ctx(t.name)} AS SELECT {own}, t.{q(key_of(t))} AS _key "
                      f"FROM {real_view(t.name)} t")
            e.execute(f"CREATE OR REPLACE TEMP TABLE {syn(t.name)} AS SELECT range + 1 AS _n FROM range({n})")
            self.context_columns[t.name] = []
        self._ids(t)

    def _ids(self, t: TableInfo) -> None:
        """New values of every id column: copied from the parent where shared, else made from the seed."""
        parent = self.s.tables[t.parent] if t.role == "child" else None
        group_joins = {self.s.tables[g].join for g in t.groups}
        for c in t.columns:
            if not c.is_id or c.name in PERSON_IDS:
                continue
            stream = sql_string(f"{t.name}|{c.name}")
            if parent is not None and c.name in parent.names and c.name != "row_id_hash":
                value = q("_parent_" + c.name)
            elif c.name in group_joins:
                value = "NULL::VARCHAR"  # the group's id, once the groups are made
            else:
                unique = c.distinct >= round(t.rows * (1 - c.missing_share)) - 1 or c.name == "row_id_hash"
                shared_by_person = t.role == "record" and not unique
                value = (f"synth_id({sql_string(t.source + '|' + c.name)}, _pn)" if shared_by_person
                         else f"synth_id({stream}, _n)")
                if c.missing_share > 0 and c.name != "row_id_hash" and not (t.role == "group" and c.name == t.join):
                    value = f"CASE WHEN synth_u({stream} || '|missing', _n) < {c.missing_share!r} THEN NULL ELSE {value} END"
            self._add(t.name, c.name, value)

    def _group(self, t: TableInfo) -> None:
        """A group table's rows: its members' twin rows (those with the id) gathered into groups of
        the release's sizes, plus as many memberless rows as the release has (scaled)."""
        e = self.engine
        members = self.s.tables[t.parent]
        own = ", ".join(f"t.{q(c)}" for c in t.names)
        e.execute(f"""CREATE OR REPLACE TEMP TABLE {real_ctx(t.name)} AS
            SELECT {own}, t.{q(key_of(t))} AS _key, coalesce(m.n, 0) AS _size FROM {real_view(t.name)} t
            LEFT JOIN (SELECT {q(t.join)}, count(*) AS n FROM {real_view(members.name)} GROUP BY 1) m
            ON m.{q(t.join)} = t.{q(t.join)}""")
        col = members.column(t.join)
        stream = sql_string(f"{members.name}|{t.join}")
        member_rows = (f"SELECT _n FROM {syn(members.name)} WHERE synth_u({stream} || '|missing', _n) >= "
                       f"{col.missing_share!r}")
        m = int(e.scalar(f"SELECT count(*) FROM ({member_rows})"))
        # Sizes drawn for as many groups as could be needed; those starting past the last member go.
        e.execute(f"CREATE OR REPLACE TEMP TABLE {syn(t.name)} AS SELECT range + 1 AS _n FROM range({max(m, 1)})")
        self.context_columns[t.name] = []
        self._draw(t.name, "_size", "_size", False, [], "{v}", real=f"(SELECT * FROM {real_ctx(t.name)} WHERE _size > 0)",
                   structural=True)
        e.execute(f"""CREATE OR REPLACE TEMP TABLE {syn(t.name)} AS
            SELECT _n, _start FROM (SELECT _n, sum(_size) OVER (ORDER BY _n) - _size AS _start FROM {syn(t.name)})
            WHERE _start < {m}""")
        # Each member (in an order drawn from the seed) joins the group whose span holds its place.
        placed = q("synth_members_" + t.name)
        e.execute(f"""CREATE OR REPLACE TEMP TABLE {placed} AS
            WITH p AS (SELECT _n, row_number() OVER (ORDER BY synth_u({stream} || '|order', _n), _n) - 1 AS pos
                       FROM ({member_rows}))
            SELECT p._n, g._n AS g FROM p ASOF JOIN {syn(t.name)} g ON p.pos >= g._start""")
        self._add(members.name, "_group_" + t.name, f"(SELECT g FROM {placed} x WHERE x._n = {syn(members.name)}._n)")
        formed = int(e.scalar(f"SELECT count(*) FROM {syn(t.name)}"))
        memberless = round(int(e.scalar(f"SELECT count(*) FROM {real_ctx(t.name)} WHERE _size = 0")) * self.ratio)
        e.execute(f"""CREATE OR REPLACE TEMP TABLE {syn(t.name)} AS
            SELECT _n FROM {syn(t.name)} UNION ALL SELECT {formed} + range + 1 FROM range({memberless})""")
        self._ids(t)

    # --- the non-key columns of one table --------------------------------------------------------

    def _columns(self, t: TableInfo) -> None:
        e, s = self.engine, self.s
        attributes = {a.name for a in s.person_attributes} if t.role == "record" else set()
        todo = [c for c in t.columns if not c.is_id and c.name not in PERSON_IDS]
        sequences = self._sequences(t, todo) if t.role == "child" else set()
        lookups = self._functions(t, [c for c in todo if kind_of(c) == "category" and not c.is_date
                                      and c.name not in attributes and c.name not in sequences])
        dates = [c for c in todo if c.is_date and c.name not in attributes and c.name not in lookups]
        others = [c for c in todo if c not in dates]
        anchors = self._anchors(t, dates)
        done = [c for c, _ in self.context_columns[t.name]]
        redraw: list[tuple] = []  # (column, model, cast, carried columns) of the columns drawn by a model
        for c in [*others, *sorted(dates, key=lambda d: anchors[d.name][3])]:
            stream = sql_string(f"{t.name}|{c.name}")
            if c.name in attributes:
                value = f"_p_{c.name}"
                if c.missing_share > 0:
                    value = f"CASE WHEN synth_u({stream}, _n) < {c.missing_share!r} THEN NULL ELSE {q(value)} END"
                self._add(t.name, c.name, value)
            elif c.name in sequences:
                self._add(t.name, c.name, "_k + 1")
            elif c.name in lookups:
                source = lookups[c.name]
                pairs = q(f"synth_pairs_{t.name}_{c.name}")
                e.execute(f"CREATE OR REPLACE TEMP TABLE {pairs} AS SELECT DISTINCT {q(source)} AS a, {q(c.name)} AS b "
                          f"FROM {real_view(t.name)}")
                self._add(t.name, c.name, f"(SELECT b FROM {pairs} x WHERE x.a IS NOT DISTINCT FROM "
                          f"{syn(t.name)}.{q(source)})")
            elif c.is_date and anchors[c.name][0] is not None:
                anchor, sign, _, _ = anchors[c.name]
                target = f"CAST(date_diff('day', {q(anchor)}, {q(c.name)}) AS DOUBLE) * {sign}"
                cast = f"{q(anchor)} + CAST(round({{v}}) AS INTEGER) * {sign}"
                model = self._draw(t.name, c.name, target, True, done, cast, carry=(q(anchor),))
                redraw.append((c, model, cast, (q(anchor),)))
            else:
                k = kind_of(c)
                numeric = k != "category"
                cast = _numeric_cast(c) if numeric else "{v}"
                model = self._draw(t.name, c.name, _numeric_target(c, c.name) if numeric else q(c.name), numeric,
                                   done, cast)
                redraw.append((c, model, cast, ()))
            done.append(c.name)
            self.context_columns[t.name].append((c.name, feature_kind(c)))
        # The drawn columns that no other column is looked up from or dated after, the one with the
        # most values first: what the repair of copies (`copies`) may draw again.
        fixed = set(lookups.values()) | {a[0] for a in anchors.values() if a[0]}
        free = sorted((r for r in redraw if r[0].name not in fixed), key=lambda r: (-r[0].distinct, r[0].name))
        self.free[t.name] = [r[0].name for r in free]
        self.bound[t.name] = (lookups, anchors)

    def _drawn(self, t: TableInfo, named: set[str]) -> Drawn:
        """How the declared constraints may draw this table's columns again (`constraints.hold`):
        a column with those looked up from it, and each date or number of many values a
        constraint names (`named`) as present or missing, a new one being its anchor date plus
        the offset of another twin row's (or another twin row's value, without an anchor)."""
        lookups, anchors = self.bound[t.name]
        groups: list[set[str]] = []
        for b, a in lookups.items():
            joined = [g for g in groups if a in g or b in g]
            groups = [g for g in groups if g not in joined] + [set().union({a, b}, *joined)]
        filled = {}
        for c in t.columns:
            if c.name not in named or c.is_id or c.name in PERSON_IDS or kind_of(c) == "category":
                continue
            anchor = anchors.get(c.name, (None,))[0]
            values = q(f"synth_fill_{t.name}_{c.name}")
            value = f"date_diff('day', {q(anchor)}, {q(c.name)})" if anchor else q(c.name)
            self.engine.execute(f"CREATE OR REPLACE TEMP TABLE {values} AS SELECT row_number() OVER (ORDER BY _n) AS i, "
                                f"{value} AS x FROM {syn(t.name)} WHERE {q(c.name)} IS NOT NULL"
                                + (f" AND {q(anchor)} IS NOT NULL" if anchor else ""))
            n = int(self.engine.scalar(f"SELECT count(*) FROM {values}"))
            if not n:
                continue
            other = (f"(SELECT x FROM {values} WHERE i = 1 + CAST(floor(synth_u({sql_string(f'{t.name}|{c.name}|fill')}, "
                     f"v._n) * {n}) AS BIGINT))")
            filled[c.name] = f"v.{q(anchor)} + CAST({other} AS INTEGER)" if anchor else other
        return Drawn(groups, filled)

    def keep_constraints(self, constraints: list[dict]) -> list[dict]:
        """Every declared constraint held by the generated source tables (`constraints.hold`), the
        broken rows' columns drawn again from the release's combinations (with --epsilon, from the
        twin's own: nothing more is read of the release)."""
        named = columns_by_table(constraints)
        made = {n: syn(n) for n in self.bound}
        rows = made if self.fitter.private is not None else {n: real_view(n) for n in self.bound}
        drawn = {n: self._drawn(self.s.tables[n], named[n]) for n in self.bound if n in named}
        return hold(self.engine, constraints, made, rows, self.fitter.small_count, drawn=drawn)

    def _sequences(self, t: TableInfo, columns: list[Column]) -> set[str]:
        """Integer columns that number a parent's rows 1, 2, ... in the release."""
        ints = [c.name for c in columns if c.is_integer]
        if not ints:
            return set()
        checks = ", ".join(f"count(*) FILTER (WHERE {q(c)} IS DISTINCT FROM row_number() OVER "
                           f"(PARTITION BY {q(t.join)} ORDER BY {q(c)}))" for c in ints)
        # Window functions cannot sit inside an aggregate: number the rows first.
        numbered = ", ".join(f"{q(c)}, row_number() OVER (PARTITION BY {q(t.join)} ORDER BY {q(c)}) AS {q('rn_' + c)}"
                             for c in ints)
        checks = ", ".join(f"count(*) FILTER (WHERE {q(c)} IS DISTINCT FROM {q('rn_' + c)})" for c in ints)
        row = self.engine.execute(f"SELECT count(*), {checks} FROM (SELECT {numbered} FROM {real_view(t.name)})")[0]
        return {c for c, bad in zip(ints, row[1:]) if row[0] and bad == 0}

    def _functions(self, t: TableInfo, columns: list[Column]) -> dict[str, str]:
        """Category columns the release holds as a function of an earlier category column (each
        value of which is common enough to tell): column -> the column it is looked up from."""
        out: dict[str, str] = {}
        small = self.fitter.small_count
        if self.fitter.private is not None:  # pairs read from the release would reveal which values occur
            return out
        for i, a in enumerate(columns):
            later = [b for b in columns[i + 1:] if b.name not in out]
            if not later or a.name in out or a.distinct == 0 or t.rows / max(a.distinct, 1) < small:
                continue
            counts = ", ".join(f"max(d{j})" for j in range(len(later)))
            inner = ", ".join(f"count(DISTINCT coalesce(CAST({q(b.name)} AS VARCHAR), '\x01')) AS d{j}"
                              for j, b in enumerate(later))
            row = self.engine.execute(f"SELECT {counts} FROM (SELECT {inner} FROM {real_view(t.name)} "
                                      f"GROUP BY {q(a.name)})")[0]
            for b, n in zip(later, row):
                if n == 1 and b.distinct > 1:
                    out[b.name] = a.name
        return out

    def _anchors(self, t: TableInfo, dates: list[Column]) -> dict[str, tuple]:
        """Each date column's anchor: (anchor column or None, +1 after it / -1 before it, spread,
        order). A date's anchor is the earlier-drawn date (of its row or its parent's) that it never
        precedes (or never follows) in the release, present wherever it is, closest in days."""
        e = self.engine
        if not dates:
            return {}
        # Drawn in the order the release keeps: a date after every date it always follows.
        pairs = [(a, b) for a in dates for b in dates if a is not b]
        stats = e.execute("SELECT " + ", ".join(
            f"count(*) FILTER (WHERE {q(a.name)} < {q(b.name)}), count(*) FILTER (WHERE {q(a.name)} IS NOT NULL "
            f"AND {q(b.name)} IS NOT NULL)" for a, b in pairs) + f" FROM {real_view(t.name)}")[0] if pairs else []
        follows = {d.name: 0 for d in dates}
        for k, (a, b) in enumerate(pairs):
            if stats[2 * k] == 0 and stats[2 * k + 1] >= self.fitter.small_count:
                follows[a.name] += 1
        order = sorted(range(len(dates)), key=lambda i: (follows[dates[i].name], dates[i].name))
        parent_dates = ["_parent_" + c.name for c in self.s.tables[t.parent].columns if c.is_date] \
            if t.role == "child" else []
        out: dict[str, tuple] = {}
        small = self.fitter.small_count
        for rank, i in enumerate(order):
            d = q(dates[i].name)
            candidates = [*parent_dates, *(dates[j].name for j in order[:rank])]
            best = None
            if candidates:
                stats = e.execute("SELECT " + ", ".join(
                    f"count(*) FILTER (WHERE {d} < {q(a)}), count(*) FILTER (WHERE {d} > {q(a)}), "
                    f"count(*) FILTER (WHERE {d} IS NOT NULL AND {q(a)} IS NOT NULL), "
                    f"count(*) FILTER (WHERE {d} IS NOT NULL AND {q(a)} IS NULL), count({d}), "
                    f"median(abs(date_diff('day', {q(a)}, {d})))" for a in candidates) + f" FROM {real_ctx(t.name)}")[0]
                for k, a in enumerate(candidates):
                    lt, gt, both, alone, present, spread = stats[6 * k:6 * k + 6]
                    if both < small or alone > 0.01 * present or (lt and gt):
                        continue
                    if best is None or spread < best[2]:
                        best = (a, -1 if lt else 1, spread)
            out[dates[i].name] = (*(best or (None, 1, None)), rank)
        return out

    # --- the link lookup and the case journeys ---------------------------------------------------

    def lookup(self) -> None:
        """The lookup's rows: one per twin record, its other columns drawn (given the person's
        number of records); its cluster sizes are counted again with the derived tables."""
        e, s = self.engine, self.s
        info = s.tables[LOOKUP]
        parts = " UNION ALL ".join(
            f"SELECT {sql_string(t.source)} AS source_dataset, {sql_string(t.name.split('__', 1)[1])} AS source_table, "
            f"row_id_hash, {', '.join(PERSON_IDS)}, _p_records FROM {syn(t.name)}" for t in s.record_tables)
        e.execute(f"CREATE OR REPLACE TEMP TABLE {syn(LOOKUP)} AS SELECT row_number() OVER "
                  f"(ORDER BY source_dataset, source_table, row_id_hash) AS _n, * FROM ({parts})")
        e.execute(f"""CREATE OR REPLACE TEMP TABLE {real_ctx(LOOKUP)} AS
            SELECT *, row_id_hash AS _key, cluster_size_medium AS _p_records FROM {real_view(LOOKUP)}""")
        self.context_columns[LOOKUP] = [("_p_records", "number"), ("source_dataset", "category")]
        counted = {"cluster_size_high", "cluster_size_medium", "cluster_size_low", "person_changes_between_thresholds"}
        for c in info.columns:  # counted again over the twin's records with the derived tables
            if c.name in counted:
                self._add(LOOKUP, c.name, f"NULL::{c.type}")
        done = ["_p_records", "source_dataset"]
        for c in info.columns:
            if c.is_id or c.name in counted or c.name in ("source_dataset", "source_table") or c.name in PERSON_IDS:
                continue
            numeric = kind_of(c) != "category"
            self._draw(LOOKUP, c.name, _numeric_target(c, c.name) if numeric else q(c.name), numeric, done,
                       _numeric_cast(c) if numeric else "{v}")
            done.append(c.name)
            self.context_columns[LOOKUP].append((c.name, feature_kind(c)))
        self.free[LOOKUP] = done[2:]

    def case_journeys(self) -> bool:
        """Link twin Crown Court records to a magistrates' record of the same person, as often as
        the release links those whose person has one; the Crown record then names the case it
        came from when linked by reference. A magistrates' record flagged as sent to the Crown Court
        is chosen first, then the latest before the Crown Court's date."""
        e, s, j = self.engine, self.s, self.journey
        crown, mags = s.tables.get(j.crown_table), s.tables.get(j.mags_table)
        needed = [(crown, [f"{j.crown_case}_hash", j.crown_date]), (mags, [f"{j.mags_case}_hash", j.mags_date])]
        if CASE_JOURNEYS not in s.tables or any(t is None or t.role != "record" or not set(c) <= set(t.names)
                                                for t, c in needed):
            return False
        eligible = int(e.scalar(f"SELECT count(*) FROM {real_view(crown.name)} WHERE {PERSON_ID} IN "
                                f"(SELECT {PERSON_ID} FROM {real_view(mags.name)})"))
        linked = int(e.scalar(f"SELECT count(*) FROM {real_view(CASE_JOURNEYS)}"))
        share = min(1.0, linked / eligible) if eligible else 0.0
        flag = j.mags_sent_flag if j.mags_sent_flag in mags.names else None
        prefer = f"m.{q(flag)} DESC NULLS LAST, " if flag else ""
        e.execute(f"""CREATE OR REPLACE TEMP TABLE {syn(CASE_JOURNEYS)} AS
            SELECT row_number() OVER (ORDER BY _crown) AS _n, * EXCLUDE (_crown) FROM (
              SELECT c._n AS _crown, c.{q(j.crown_case + '_hash')} AS crown_case_hash,
                     c.row_id_hash AS crown_row_id_hash, m.{q(j.mags_case + '_hash')} AS magistrates_case_hash,
                     m.row_id_hash AS magistrates_row_id_hash,
                     date_diff('day', m.{q(j.mags_date)}, c.{q(j.crown_date)}) AS days_between
              FROM {syn(crown.name)} c JOIN {syn(mags.name)} m ON m.{PERSON_ID} = c.{PERSON_ID}
              WHERE synth_u('case_journeys|link', c._n) < {share!r}
              QUALIFY row_number() OVER (PARTITION BY c._n ORDER BY {prefer}
                      (m.{q(j.mags_date)} <= c.{q(j.crown_date)}) DESC NULLS LAST, m.{q(j.mags_date)} DESC NULLS LAST,
                      m._n) = 1)""")
        e.execute(f"CREATE OR REPLACE TEMP TABLE {real_ctx(CASE_JOURNEYS)} AS SELECT *, crown_row_id_hash AS _key "
                  f"FROM {real_view(CASE_JOURNEYS)}")
        info = s.tables[CASE_JOURNEYS]
        self.context_columns[CASE_JOURNEYS] = [("days_between", "number")]
        done = ["days_between"]
        for c in info.columns:
            if c.is_id or c.name == "days_between":
                continue
            numeric = kind_of(c) != "category"
            self._draw(CASE_JOURNEYS, c.name, _numeric_target(c, c.name) if numeric else q(c.name), numeric, done,
                       _numeric_cast(c) if numeric else "{v}")
            done.append(c.name)
            self.context_columns[CASE_JOURNEYS].append((c.name, feature_kind(c)))
        self.free[CASE_JOURNEYS] = [c for c in done[1:] if c != "link_method"]  # the link method names the case
        ref = f"{j.crown_reference}_hash"
        if ref in crown.names and "link_method" in info.names:
            self._add(crown.name, ref, f"(SELECT x.magistrates_case_hash FROM {syn(CASE_JOURNEYS)} x WHERE "
                      f"x.crown_row_id_hash = {syn(crown.name)}.row_id_hash AND x.link_method = {sql_string(REFERENCE)})")
        return True


def key_of(t: TableInfo) -> str:
    """The column a table's rows are told apart by (its sample is drawn in that column's hash order)."""
    return "row_id_hash" if "row_id_hash" in t.names else t.keys[0] if t.keys else t.names[0]


def _numeric_target(c: Column, name: str) -> str:
    if c.is_date:
        return f"CAST(date_diff('day', DATE '1970-01-01', {q(name)}) AS DOUBLE)"
    return f"CAST({q(name)} AS DOUBLE)"


def _numeric_cast(c: Column) -> str:
    if c.is_date:
        return "DATE '1970-01-01' + CAST(round({v}) AS INTEGER)"
    if c.is_integer:
        return "CAST(round({v}) AS BIGINT)"
    return "{v}"
