"""Column models a twin draws its values from, fitted on the release and evaluated in the engine.

A model gives each row a leaf (an SQL expression over the row's context: its person, its parent
row, the columns drawn before it) and each leaf a distribution drawn from with a hash-based
uniform (`synth_u`): categories by their leaf frequencies, numbers and dates by the leaf's
quantiles (interpolated). Low fidelity is one leaf per column (the marginal); mid fidelity fits
a CART classifier (scikit-learn) on a bounded sample of the release and compiles the tree to a
nested SQL CASE, so that drawing runs in the engine at any size. Every count read from the
release goes through `_counts` (exact), or with `--epsilon` through `private.PrivateCounts`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..engine import Engine
from ..engine.sql import sql_string

QUANTILES = [round(0.005 + i * 0.99 / 40, 6) for i in range(41)]  # 0.5% to 99.5%: no real extreme is drawn
TOP_VALUES = 12  # the categories of a feature one-hot encoded for the trees
MISSING_NUMBER = -1e9  # a missing number or date as a tree feature (below every real value)
if TYPE_CHECKING:  # private.py builds on this module's QUANTILES
    from .private import PrivateCounts

HASH_CHARS = 20  # as the release's keyed hashes (release.products.HASH_CHARS)


class SynthError(Exception):
    """A twin that cannot be made; nothing was written. The message says why and what to do."""


def _counts(engine: Engine, sql: str, columns: list[str]) -> str:
    """SQL of the relation (`columns`..., n): the rows of `sql` counted by `columns`, exactly. With
    `--epsilon` the fitter reads `private.PrivateCounts` instead (noisy counts over declared domains)."""
    cols = ", ".join(columns)
    return f"SELECT {cols}, count(*) AS n FROM ({sql}) GROUP BY {cols}"


def install_random(engine: Engine, seed: int) -> None:
    """`synth_u(stream, k)`: a uniform in [0, 1) from the seed, a stream name and a row's number;
    `synth_id(stream, k)`: a new id (as long as a release's keyed hashes) from the same. Hash-based,
    so the same seed gives the same draws whatever the threads or the engine."""
    engine.execute("SET VARIABLE synth_seed = ?", [str(seed)])
    engine.execute("""CREATE OR REPLACE TEMP MACRO synth_u(stream, k) AS
        CAST(md5_number_lower(getvariable('synth_seed') || '|' || stream || '|' || CAST(k AS VARCHAR)) >> 11 AS DOUBLE)
        / 9007199254740992.0""")
    engine.execute(f"""CREATE OR REPLACE TEMP MACRO synth_id(stream, k) AS
        substr(sha256('datafirst synthetic|' || getvariable('synth_seed') || '|' || stream || '|' || CAST(k AS VARCHAR)),
               1, {HASH_CHARS})""")


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Feature:
    name: str
    sql: str  # a DOUBLE over the context row


def features_for(engine: Engine, real: str, column: str, kind: str, small_count: int) -> list[Feature]:
    """A context column as tree features: a number or date as itself (missing below every value);
    a category one-hot over its most common values (each held by at least `small_count` rows)."""
    c = q(column)
    if kind == "date":
        return [Feature(column, f"coalesce(CAST(date_diff('day', DATE '1970-01-01', {c}) AS DOUBLE), {MISSING_NUMBER})")]
    if kind == "number":
        return [Feature(column, f"coalesce(CAST({c} AS DOUBLE), {MISSING_NUMBER})")]
    top = engine.execute(f"SELECT CAST({c} AS VARCHAR) v FROM {real} WHERE {c} IS NOT NULL GROUP BY 1 "
                         f"HAVING count(*) >= {small_count} ORDER BY count(*) DESC, 1 LIMIT {TOP_VALUES}")
    out = [Feature(f"{column}={v}", f"CAST(coalesce(CAST({c} AS VARCHAR) = {sql_string(v)}, false) AS DOUBLE)")
           for (v,) in top]
    return out + [Feature(f"{column} missing", f"CAST({c} IS NULL AS DOUBLE)")]


def _category_dist(counted: str, small_count: int, structural: bool) -> str:
    """SQL of each leaf's category distribution (leaf, value, lo: where the value's slice of [0, 1)
    starts), from `counted` (leaf, value, n).

    A value held by fewer than small_count rows of the release is never drawn (unless no value is
    that common), so a twin reproduces no small count; a `structural` target keeps every value.
    The rows of the values left out are given to the leaf's other values, never to missing: each
    leaf keeps its share of missing values, and its present values share the rest in their
    proportions (a leaf whose present values are all rare draws them from the table's common
    ones). Giving them to missing, as renormalising over what is left would, made a column of
    many rare values mostly missing (a prison booking's postcode district: 70% missing in a twin
    of half the 1M world's people, 38% in the release), and a twin row missing a value is close to
    every real row missing it: the twin sat closer to its training people than real people do."""
    keep = (f"{'true' if structural else 'false'} OR value IS NULL OR total >= {small_count} "
            f"OR max(CASE WHEN value IS NOT NULL THEN total END) OVER () < {small_count}")
    return f"""
        WITH t AS (SELECT leaf, value, n, sum(n) OVER (PARTITION BY value) AS total FROM ({counted}) WHERE n > 0),
             k AS (SELECT leaf, value, n, {keep} AS kept FROM t),
             l AS (SELECT leaf, CAST(coalesce(sum(n) FILTER (WHERE value IS NOT NULL), 0) AS DOUBLE) AS present,
                          coalesce(sum(n) FILTER (WHERE value IS NOT NULL AND kept), 0) AS kept_present
                   FROM k GROUP BY leaf),
             common AS (SELECT value, CAST(sum(n) AS DOUBLE) / sum(sum(n)) OVER () AS share FROM k
                        WHERE kept AND value IS NOT NULL GROUP BY value),
             c AS (SELECT k.leaf, k.value, CASE WHEN k.value IS NULL THEN k.n ELSE k.n * l.present / l.kept_present END AS w
                   FROM k JOIN l USING (leaf) WHERE k.kept AND (k.value IS NULL OR l.kept_present > 0)
                   UNION ALL
                   SELECT l.leaf, common.value, l.present * common.share FROM l, common
                   WHERE l.kept_present = 0 AND l.present > 0)
        SELECT leaf, value, (sum(w) OVER (PARTITION BY leaf ORDER BY value NULLS FIRST) - w) / sum(w) OVER (PARTITION BY leaf) AS lo
        FROM c"""


@dataclass
class Model:
    leaf: str  # SQL: the leaf of a row of the context
    dist: str  # the engine table of each leaf's distribution
    numeric: bool


class Fitter:
    """Fits the models of one twin: the engine, the fidelity, and how big a sample a tree sees."""

    def __init__(self, engine: Engine, fidelity: str, seed: int, small_count: int, fit_rows: int,
                 epsilon: float | None, private: PrivateCounts | None = None):
        self.engine, self.fidelity, self.seed = engine, fidelity, seed
        self.small_count, self.fit_rows, self.epsilon = max(1, small_count), fit_rows, epsilon
        self.private = private
        self.made = 0

    def fit(self, real: str, target: str, numeric: bool, features: list[Feature], stream: str,
            structural: bool = False) -> Model:
        """A model of `target` (SQL over the context `real`, which has a `_key` column) given
        `features` (mid fidelity; low ignores them). A `structural` target (a number of rows) keeps
        its rare values; a column's value held by fewer than small_count rows is never drawn."""
        self.made += 1
        dist = f"synth_dist_{self.made}"
        leaf = "0"
        if self.fidelity == "mid" and features:
            leaf = self._tree(real, target, numeric, features, stream)
        rows = f"SELECT {leaf} AS leaf, {target} AS value FROM {real}"
        if self.private is not None:
            relation = self.private.relation(real, target, numeric, stream)
            if numeric:
                self.engine.execute(f"CREATE OR REPLACE TEMP TABLE {dist} AS {relation}")
                return Model(leaf, dist, numeric)
            counted = f"SELECT 0 AS leaf, value, n FROM ({relation})"
        elif numeric:
            missing = _counts(self.engine, f"SELECT leaf, value IS NULL AS missing FROM ({rows})", ["leaf", "missing"])
            quantiles = ", ".join(str(x) for x in QUANTILES)
            self.engine.execute(f"""CREATE OR REPLACE TEMP TABLE {dist} AS
                WITH m AS (SELECT leaf, sum(n) FILTER (WHERE missing) / sum(n) AS missing FROM ({missing}) GROUP BY leaf),
                     v AS (SELECT leaf, quantile_cont(value, [{quantiles}]) AS q FROM ({rows}) WHERE value IS NOT NULL
                           GROUP BY leaf)
                SELECT m.leaf, coalesce(m.missing, 0) AS missing, v.q FROM m LEFT JOIN v USING (leaf)""")
        else:
            counted = _counts(self.engine, rows, ["leaf", "value"])
        if not numeric:
            self.engine.execute(f"CREATE OR REPLACE TEMP TABLE {dist} AS {_category_dist(counted, self.small_count, structural)}")
        return Model(leaf, dist, numeric)

    def _tree(self, real: str, target: str, numeric: bool, features: list[Feature], stream: str) -> str:
        from sklearn.tree import DecisionTreeClassifier

        select = ", ".join(f"{f.sql} AS f{i}" for i, f in enumerate(features))
        sample = self.engine.con.sql(
            f"SELECT {select}, {target} AS y FROM {real} ORDER BY synth_u({sql_string('fit|' + stream)}, _key), _key "
            f"LIMIT {self.fit_rows}").to_arrow_table()
        if sample.num_rows < 2 * self.small_count:
            return "0"
        x = np.column_stack([sample.column(f"f{i}").to_numpy(zero_copy_only=False).astype(float)
                             for i in range(len(features))])
        y_raw = sample.column("y").to_pylist()
        if numeric:
            values = np.array([np.nan if v is None else float(v) for v in y_raw])
            present = values[~np.isnan(values)]
            edges = np.unique(np.quantile(present, np.linspace(0, 1, 11))[1:-1]) if present.size else np.array([])
            y = np.where(np.isnan(values), -1, np.searchsorted(edges, np.nan_to_num(values), side="right"))
        else:
            y = np.array(["\0missing" if v is None else str(v) for v in y_raw])
        if len(set(y.tolist())) < 2:
            return "0"
        with warnings.catch_warnings():  # many classes for few rows: a tree of few leaves, as wanted
            warnings.simplefilter("ignore", UserWarning)
            tree = DecisionTreeClassifier(min_samples_leaf=max(self.small_count, 20), max_leaf_nodes=32,
                                          random_state=self.seed % (2 ** 32)).fit(x, y)
        return compile_tree(tree, [f.sql for f in features])

    def draw(self, model: Model, syn: str, stream: str, cast: str, carry: tuple[str, ...] = ()) -> str:
        """SQL of (`_n`, `_value`): each row of `syn` with its drawn value (cast by `cast`, a template
        over `v` that may name the columns `carry`): its leaf, then the value its uniform falls on.
        Only the row number, the leaf and the uniform go through the join (a narrow sort)."""
        s = sql_string(stream)
        carried = "".join(f", {c}" for c in carry)
        if model.numeric:
            n = len(QUANTILES) - 1
            pos = f"(synth_u({s} || '|q', s._n) * {n})"
            value = (f"CASE WHEN d.q IS NULL OR synth_u({s} || '|m', s._n) < d.missing THEN NULL ELSE "
                     f"d.q[CAST(floor({pos}) AS INTEGER) + 1] + (d.q[CAST(floor({pos}) AS INTEGER) + 2] - "
                     f"d.q[CAST(floor({pos}) AS INTEGER) + 1]) * ({pos} - floor({pos})) END")
            return (f"SELECT s._n, {cast.format(v=value)} AS _value FROM (SELECT _n{carried}, {model.leaf} AS _leaf "
                    f"FROM {syn}) s LEFT JOIN {model.dist} d ON d.leaf = s._leaf")
        return (f"SELECT s._n, {cast.format(v='d.value')} AS _value FROM "
                f"(SELECT _n{carried}, {model.leaf} AS _leaf, synth_u({s}, _n) AS _u FROM {syn}) s "
                f"ASOF LEFT JOIN {model.dist} d ON s._leaf = d.leaf AND s._u >= d.lo")


def compile_tree(tree, features: list[str]) -> str:
    """A fitted scikit-learn tree as SQL: a nested CASE giving the node number of the row's leaf."""
    t = tree.tree_

    def node(i: int) -> str:
        if t.children_left[i] == -1:
            return str(i)
        return (f"CASE WHEN {features[t.feature[i]]} <= {float(t.threshold[i])!r} "
                f"THEN {node(t.children_left[i])} ELSE {node(t.children_right[i])} END")

    return node(0)
