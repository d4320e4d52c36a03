"""Differentially private counts for synthetic twins (`datafirst synth --epsilon E`).

A low-fidelity twin is drawn from counts: per-column marginals, records per person, and so on.
With `--epsilon`, every one of those counts is released through `noisy_counts`: the exact counts
over the column's whole declared domain, each person's rows bounded first, plus discrete
Laplace noise from OpenDP, clamped at 0. The twin is then drawn from the noisy counts only, so
it is post-processing of differentially private counts and keeps their guarantee.

Why OpenDP and why its "contrib" feature: OpenDP samples the discrete Laplace distribution
exactly, with integer arithmetic and the operating system's cryptographic random source, so
there is no floating-point attack on the noise (the classic one on textbook Laplace noise) and
no seed to guess. `make_laplace` on integer vectors is in OpenDP's "contrib" set: its proof is
written but not yet through OpenDP's vetting, and OpenDP makes callers opt in to such
components with `enable_features("contrib")`. We opt in for this one measurement only, and
check its privacy map (OpenDP's own account of the epsilon it spends) against the budget.

Why the seed does not choose the noise: OpenDP cannot be seeded, on purpose, and it is right.
The seed of a twin is published in its manifest; noise drawn from a published seed can be drawn
again by anyone and subtracted, giving back the exact counts, so the guarantee would be void.
The seed is used only where it may be public: to choose which of a person's rows are kept when
that person has more than the contribution bound (a choice within one person's own rows).

Byte-identical twins with noise: the noisy counts of a marginal are drawn once and kept in a
Parquet file (`store`). A later run with the same store reads them back instead of drawing
again, so the same seed gives the same twin, and the budget is not spent twice: each fresh
draw of the same counts would spend epsilon again (two independent noisy copies average the
noise away). The kept file holds only the noisy counts, which are the published output of the
mechanism (keeping them leaks nothing the twin does not); the noise itself is never kept,
since noisy count minus noise is the exact count.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

import pyarrow as pa
import pyarrow.parquet as pq

from ..engine import Engine, sql_string

# The largest product of domain sizes one marginal may have: every cell's count is fetched and
# noised, so a marginal over, say, offence x court x date would be millions of cells of pure
# noise. Coarsen such columns (years, bands) before counting them.
MAX_CELLS = 1_000_000

# Kept beside the noisy counts so a reuse can tell it is the same marginal at the same budget.
# Only public facts: columns, domains, epsilon and the bound (never the SQL, which names paths).
_FINGERPRINT_KEY = b"datafirst.dp"


class BudgetError(ValueError):
    """An epsilon, a budget split or a contribution bound that cannot be used."""


def _check_epsilon(epsilon: Any, what: str = "epsilon") -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) \
            or epsilon <= 0:
        raise BudgetError(f"{what} must be a finite number above 0 (got {epsilon!r}); "
                          "e.g. --epsilon 1 (smaller is more private and noisier)")
    return float(epsilon)


def laplace_scale(epsilon: float, max_contribution: int) -> float:
    """The discrete Laplace scale for counts where one person changes at most
    `max_contribution` cells' counts by 1 in total (the L1 sensitivity): b = c / epsilon."""
    return max_contribution / _check_epsilon(epsilon)


def laplace_variance(scale: float) -> float:
    """Variance of the discrete Laplace distribution with scale b (P(k) ∝ exp(-|k|/b)):
    2 e^(-1/b) / (1 - e^(-1/b))^2, which tends to the continuous 2 b^2 for large b."""
    q = math.exp(-1.0 / scale)
    return 2 * q / (1 - q) ** 2


def split_budget(epsilon: float, marginals: Sequence[str],
                 weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Share a twin's total epsilon across its marginals (sequential composition: one person
    can be in every marginal, so the epsilons add up to the total). Equal shares unless
    `weights` gives some marginals more (a marginal with many cells, or one that matters most
    to users, can be given a larger share); a marginal missing from `weights` weighs 1."""
    total = _check_epsilon(epsilon)
    names = list(marginals)
    if not names:
        raise BudgetError("split_budget needs at least one marginal to spend epsilon on")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise BudgetError(f"marginals named twice in the budget split: {', '.join(dupes)}")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise BudgetError(f"weights for marginals that are not being counted: {', '.join(unknown)}")
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise BudgetError(f"the weight of marginal {name!r} must be a number above 0 (got {w!r})")
    share = {n: float(weights.get(n, 1.0)) for n in names}
    whole = sum(share.values())
    return {n: total * w / whole for n, w in share.items()}


def _measurement(scale: float):
    """OpenDP's discrete Laplace on a vector of integer counts (see the module's docstring for
    why the contrib feature is enabled)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=scale)


def _domain_values(engine: Engine, column: str, domain: Any) -> list:
    """A column's declared values (NULL added: missingness is part of the marginal)."""
    if isinstance(domain, str):
        # SQL of a one-column relation of declared values, e.g. a code list's code column.
        values = [r[0] for r in engine.execute(f"SELECT DISTINCT * FROM ({domain}) AS d")]
    elif isinstance(domain, (list, tuple, range)):
        values = list(domain)
    else:
        raise BudgetError(f"the domain of column {column!r} must be a list of its declared values or the SQL "
                          f"of a one-column relation of them (got {type(domain).__name__})")
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    return sorted(distinct, key=lambda v: (str(type(v)), v)) + [None]


def _fingerprint(columns: Sequence[str], domains: Sequence[list], epsilon: float, max_contribution: int) -> str:
    return json.dumps({"columns": list(columns), "domains": [[str(v) for v in d] for d in domains],
                       "epsilon": epsilon, "max_contribution": max_contribution}, sort_keys=True)


def noisy_counts(engine: Engine, sql: str, columns: Sequence[str], epsilon: float, seed: int, *,
                 domains: Mapping[str, Any], person: str, max_contribution: int = 1,
                 store: Path | None = None) -> str:
    """The SQL of a relation (the `columns`..., `n`) of differentially private counts of the rows
    of `sql`, with one row for every cell of the declared domain, including empty cells.

    - `sql`: a relation with one row per record, holding `person` (the person the record is
      about; NULL counts as a person of its own) and the `columns` to count by.
    - `domains`: for every column, its declared values (a list, or the SQL of a one-column
      relation such as a code list); NULL is always a cell. Records whose value is not in the
      domain are not counted (a cell for them would reveal that they exist). Domains must come
      from declarations, never from the data being protected.
    - `max_contribution` (c): each person's rows are cut to at most c (which ones: by a hash of
      the seed and the row, so the choice is the same on every run and engine), so adding or
      removing a person changes the counts by at most c in total: the L1 sensitivity.
    - Noise: discrete Laplace with scale c / epsilon (OpenDP), then counts below 0 set to 0.
    - `seed`: chooses the kept rows only; the noise is never seeded (see the module docstring).
    - `store`: a Parquet file for the noisy counts. If it holds the counts of the same
      marginal (columns, domains, epsilon, c), they are read back and no budget is spent;
      otherwise they are drawn and written there. Without a store, they are held in the engine
      for its lifetime and each call draws (and spends) afresh.
    """
    epsilon = _check_epsilon(epsilon)
    if isinstance(max_contribution, bool) or not isinstance(max_contribution, int) or max_contribution < 1:
        raise BudgetError(f"max_contribution must be a whole number of rows, at least 1 (got {max_contribution!r})")
    columns = list(columns)
    if not columns:
        raise BudgetError("noisy_counts needs at least one column to count by")
    if "n" in columns:
        raise BudgetError("a counted column named 'n' would clash with the count column: rename it in the SQL")
    missing = [c for c in columns if c not in domains]
    if missing:
        raise BudgetError(f"no declared domain for column(s) {', '.join(missing)}: give each counted column its "
                          "declared values (a code list, the contract's allowed values, or a range of years)")
    source_types = dict(engine.schema(f"({sql})"))
    absent = [c for c in [*columns, person] if c not in source_types]
    if absent:
        raise BudgetError(f"column(s) {', '.join(absent)} not in the rows to count "
                          f"(they have: {', '.join(source_types)})")
    values = [_domain_values(engine, c, domains[c]) for c in columns]
    cells = math.prod(len(v) for v in values)
    if cells > MAX_CELLS:
        raise BudgetError(f"the marginal over {', '.join(columns)} has {cells:,} cells (more than {MAX_CELLS:,}): "
                          "coarsen a column (years, bands) or count the columns separately")
    fingerprint = _fingerprint(columns, values, epsilon, max_contribution)

    if store is not None and Path(store).exists():
        kept = pq.read_table(store)
        if (kept.schema.metadata or {}).get(_FINGERPRINT_KEY, b"").decode() != fingerprint:
            raise BudgetError(f"{store} holds noisy counts of another marginal or budget; delete it to draw again "
                              "(which spends the budget again: every earlier twin from it stays published)")
        return _typed(engine.parquet(Path(store)), columns, source_types)

    grid = pa.table({"dp_cell": pa.array(range(cells), pa.int64()),
                     **{c: pa.array([row[i] for row in itertools.product(*values)]) for i, c in enumerate(columns)}})
    counts = _exact_counts(engine, sql, columns, person, max_contribution, seed, grid)
    scale = laplace_scale(epsilon, max_contribution)
    mechanism = _measurement(scale)
    # OpenDP's own privacy map: the epsilon this mechanism spends when one person moves the
    # counts by c in L1. It equals c / scale; checked so a change of mechanism cannot overspend.
    if mechanism.map(max_contribution) > epsilon * (1 + 1e-9):
        raise BudgetError(f"the mechanism would spend {mechanism.map(max_contribution)} > epsilon {epsilon}")
    noisy = [max(0, n) for n in mechanism(counts)]
    table = grid.drop_columns(["dp_cell"]).append_column("n", pa.array(noisy, pa.int64()))
    table = table.replace_schema_metadata({_FINGERPRINT_KEY: fingerprint.encode()})
    if store is not None:
        store = Path(store)
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f".{store.name}.{uuid4().hex[:8]}")
        pq.write_table(table, tmp)
        tmp.replace(store)
        relation = engine.parquet(store)
    else:
        relation = f"dp_counts_{uuid4().hex[:12]}"
        engine.register(relation, table)
    return _typed(relation, columns, source_types)


def _exact_counts(engine: Engine, sql: str, columns: list[str], person: str, max_contribution: int,
                  seed: int, grid: pa.Table) -> list[int]:
    """The exact count of every cell of `grid` (in its order), each person's rows cut to the bound."""
    name = f"dp_grid_{uuid4().hex[:12]}"
    engine.register(name, grid)
    try:
        cols = ", ".join(_q(c) for c in columns)
        row_key = ", ".join([sql_string(str(seed)), f"CAST({_q(person)} AS VARCHAR)",
                             *[f"CAST({_q(c)} AS VARCHAR)" for c in columns]])
        on = " AND ".join(f"g.{_q(c)} IS NOT DISTINCT FROM k.{_q(c)}" for c in columns)
        rows = engine.execute(f"""
            WITH ranked AS (
                SELECT {cols}, {_q(person)} AS dp_person,
                       row_number() OVER (PARTITION BY {_q(person)} ORDER BY md5(concat_ws('|', {row_key}))) AS dp_k
                FROM ({sql}) AS r),
            kept AS (
                SELECT {cols}, count(*) AS n FROM ranked
                WHERE dp_k <= {max_contribution} OR dp_person IS NULL
                GROUP BY {cols})
            SELECT coalesce(k.n, 0) FROM {name} AS g LEFT JOIN kept AS k ON {on} ORDER BY g.dp_cell""")
    finally:
        engine.unregister(name)
    return [int(r[0]) for r in rows]


def _typed(relation: str, columns: list[str], types: Mapping[str, str]) -> str:
    """The noisy counts with each column in its source type (so they join to the real columns)."""
    cast = ", ".join(f"CAST({_q(c)} AS {types[c]}) AS {_q(c)}" for c in columns)
    return f"SELECT {cast}, n FROM {relation}"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
