"""A frequency and similarity attack on encoded names, to measure what the encodings leak.

The attacker is the linker (or anyone who obtains an encoded file): it holds the encodings, the
schema (Kerckhoffs: the method is public, only the secret is not) and a public list of names with
their frequencies, and tries to recover each record's name without the secret. Never used by the
pipeline: the bench and the tests run it, with the world's name lists standing for the public list.

1. **Frequency alignment** (Kuzu et al. 2011). A field's filter is a deterministic function of its
   value (and salt), so records with one name share one filter. The filters, most frequent first,
   are aligned with the public names, most frequent first.
2. **Similarity (graph) attack** (after Vidanage et al.). Filters keep similarity: each filter's
   Dice with a few known filters (anchors, first the first ranks of step 1) is a fingerprint to
   match with each public name's q-gram Dice with the anchors' names (`similarity_attack`).
3. **Partitioned by the salt.** Salting keys a field's positions by another value (the year of
   birth), so one name encodes apart in each year. But where the salt's own encoding is
   deterministic (the year's filter), the attacker groups records by it and runs 1 and 2 per group.

Mining q-gram positions from bit co-occurrence (Christen et al. 2018) was tried and left out: at
datafirst's filter sizes each position is shared by about 20 q-grams, and no q-gram's positions
stood apart (docs/pprl.md). A record is re-identified on a field when the guess equals its true
standardised value; its full name when forename and surname both are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The first anchors: the most frequent filters, taken for the most frequent public names.
FIRST_ANCHORS = 5
# Rounds of the similarity attack, each adding the filters placed with most confidence as anchors.
ROUNDS = 6


@dataclass
class PublicNames:
    """Public names, most frequent first, with their shares (summing to 1)."""

    names: list[str]
    shares: np.ndarray


def public_names(pairs: list[tuple[str, float]]) -> PublicNames:
    totals: dict[str, float] = {}
    for name, weight in pairs:
        if name:
            totals[name] = totals.get(name, 0.0) + float(weight)
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    weights = np.array([w for _, w in ordered], dtype=float)
    return PublicNames([n for n, _ in ordered], weights / weights.sum())


def qgrams(name: str, q: int, pad: bool) -> list[str]:
    x = f"_{name}_" if pad else name
    return [x] if len(x) <= q else sorted({x[i:i + q] for i in range(len(x) - q + 1)})


def _popcount(a: np.ndarray) -> np.ndarray:
    return np.bitwise_count(a).sum(axis=-1)


def _align(filters: np.ndarray, public: PublicNames) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Distinct filters (most frequent first), each record's index into them, their counts, and
    the aligned public name of each (None past the list's end)."""
    uniq, inverse, counts = np.unique(filters, axis=0, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    aligned = [public.names[i] if i < len(public.names) else None for i in range(len(order))]
    return uniq[order], rank[inverse.ravel()], counts[order], aligned


def _dice_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice of every filter in `a` with every filter in `b` (both records x words, uint64)."""
    inter = np.bitwise_count(a[:, None, :] & b[None, :, :]).sum(axis=-1)
    return 2.0 * inter / np.maximum(_popcount(a)[:, None] + _popcount(b)[None, :], 1)


def _qgram_dice(grams: list[set], anchors: list[set]) -> np.ndarray:
    out = np.zeros((len(grams), len(anchors)))
    for j, a in enumerate(anchors):
        for i, g in enumerate(grams):
            out[i, j] = 2.0 * len(g & a) / (len(g) + len(a)) if g or a else 0.0
    return out


def similarity_attack(uniq: np.ndarray, public: PublicNames, q: int, pad: bool) -> list:
    """The public name of each distinct filter (most frequent first), or None.

    Bloom filters keep similarity: two names' filters are about as alike, by Dice, as the names'
    q-gram sets. So once a few filters are known (anchors: first the most frequent filters, by
    frequency alignment), every filter's Dice with the anchors' filters is a fingerprint to be
    matched with each public name's q-gram Dice with the anchors' names (a graph-matching attack,
    as Vidanage et al.), after a linear fit of filter Dice on q-gram Dice over the anchors. Each
    round adds the filters matched with the widest margin as anchors, one filter per name."""
    n, names = len(uniq), public.names
    grams = [set(qgrams(x, q, pad)) for x in names]
    anchors = {i: i for i in range(min(FIRST_ANCHORS, n, len(names)))}  # filter -> name
    best = np.full(n, -1)
    for _ in range(ROUNDS):
        f_idx, x_idx = list(anchors), list(anchors.values())
        d = _dice_matrix(uniq, uniq[f_idx])  # filters x anchors
        e = _qgram_dice(grams, [grams[x] for x in x_idx])  # names x anchors
        # filter Dice ~ alpha + beta * q-gram Dice, fitted on the anchors with one another
        fa, ea = d[f_idx].ravel(), e[x_idx].ravel()
        beta, alpha = np.polyfit(ea, fa, 1) if len(f_idx) > 1 and ea.std() > 0 else (1.0, 0.0)
        expected = alpha + beta * e
        # squared distance of each filter's fingerprint from each name's expected one
        dist = (d ** 2).sum(1)[:, None] - 2 * d @ expected.T + (expected ** 2).sum(1)[None, :]
        order = np.argsort(dist, axis=1)
        best = order[:, 0]
        margin = dist[np.arange(n), order[:, 1]] - dist[np.arange(n), order[:, 0]] if dist.shape[1] > 1 else np.ones(n)
        taken = set(anchors.values())
        grow = max(len(anchors), 10)
        for i in np.argsort(-margin):
            if grow == 0:
                break
            if i not in anchors and best[i] not in taken:
                anchors[int(i)] = int(best[i])
                taken.add(int(best[i]))
                grow -= 1
    guesses = [names[b] if b >= 0 else None for b in best]
    for i, x in anchors.items():
        guesses[i] = names[x]
    return guesses


STRATEGIES = ("frequency", "similarity")


def attack_field(filters: np.ndarray, valid: np.ndarray, public: PublicNames, q: int, pad: bool,
                 groups: np.ndarray | None = None, strategies: tuple[str, ...] = STRATEGIES) -> dict[str, np.ndarray]:
    """Each record's guessed value of one field under each strategy (None where no guess), from
    its filter words (records x words, uint64); `valid`: records holding a value; `groups`: the
    partition by salt (an integer per record), or None for one group. "frequency": step 1 alone;
    "similarity": step 1's first ranks as anchors, then the similarity attack."""
    out = {s: np.full(len(filters), None, dtype=object) for s in strategies}
    groups = np.zeros(len(filters), dtype=np.int64) if groups is None else groups
    for g in np.unique(groups[valid]):
        idx = np.flatnonzero(valid & (groups == g))
        uniq, rank, _, aligned = _align(filters[idx], public)
        if "frequency" in out:
            out["frequency"][idx] = np.array(aligned, dtype=object)[rank]
        if "similarity" in out:
            out["similarity"][idx] = np.array(similarity_attack(uniq, public, q, pad), dtype=object)[rank]
    return out


def salt_groups(filters: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """An integer per record naming its salt group: records with equal salt filters share one
    (records without one: group -1)."""
    out = np.full(len(filters), -1, dtype=np.int64)
    if valid.any():
        _, inverse = np.unique(filters[valid], axis=0, return_inverse=True)
        out[valid] = inverse.ravel()
    return out


def reidentification(guesses: dict[str, dict[str, np.ndarray]], truth: dict[str, np.ndarray]) -> dict:
    """Share of records whose each field was recovered, per strategy, and whose full name (every
    attacked field, by one strategy) was: the best strategy's figure is the attack's."""
    n = len(next(iter(truth.values())))
    out: dict = {"records": n}
    strategies = sorted({s for by in guesses.values() for s in by})
    full = {}
    for strategy in strategies:
        every = np.ones(n, dtype=bool)
        for field, by in guesses.items():
            hit = np.array([g is not None and g == t for g, t in zip(by[strategy], truth[field])])
            out[f"{field}_recovered_{strategy}"] = round(float(hit.mean()), 5)
            every &= hit
        full[strategy] = round(float(every.mean()), 5)
        out[f"full_name_recovered_{strategy}"] = full[strategy]
    for field in guesses:
        out[f"{field}_recovered"] = max(out[f"{field}_recovered_{s}"] for s in strategies)
    out["full_name_recovered"] = max(full.values())
    return out


def read_filters(engine, path, schema, field: str) -> tuple[np.ndarray, np.ndarray]:
    """A field's filter words (records x words, uint64) and which records hold one, in the file's order."""
    from ..engine import sql_string
    from .encode import word_columns

    cols = word_columns(field, schema.words(field))
    table = engine.con.sql(f"SELECT {', '.join(cols)} FROM read_parquet({sql_string(path)}) ORDER BY token").arrow()
    if hasattr(table, "read_all"):  # a record batch reader in newer DuckDB
        table = table.read_all()
    valid = np.asarray(table.column(0).is_valid())
    words = np.stack([np.asarray(table.column(c).fill_null(0), dtype=np.uint64) for c in cols], axis=1)
    return words, valid


def attack_file(engine, path, schema, public: dict[str, PublicNames],
                strategies: tuple[str, ...] = STRATEGIES) -> dict[str, dict[str, np.ndarray]]:
    """Guesses for each field in `public` (name -> public list) of the encoded file at `path`,
    one per record in token order, partitioned by the salt's own filter where it is encoded."""
    out = {}
    for field, names in public.items():
        spec = schema.fields[field]
        filters, valid = read_filters(engine, path, schema, field)
        salt = schema.hardening_of(field).salt
        groups = None
        if salt and salt in schema.fields:
            salt_filters, salt_valid = read_filters(engine, path, schema, salt)
            groups = salt_groups(salt_filters, salt_valid)
        out[field] = attack_field(filters, valid, names, spec.q, spec.pad, groups, strategies)
    return out
