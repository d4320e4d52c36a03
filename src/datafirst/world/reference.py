"""Reference lists that the world draws from (names, postcodes, offences, courts, prisons).

These lists are the generator's knowledge only. Nothing in the pipeline may read them:
linkage is measured on sources it has never seen, so the standardise and link stages must
not learn this world's nickname or variant tables.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

ORIGINS = (
    "british",
    "irish",
    "south_asian_muslim",
    "south_asian_hindu_sikh",
    "black_african",
    "black_caribbean",
    "east_european",
    "arabic",
    "chinese",
    "south_european",
)


def _read(name: str) -> list[dict[str, str]]:
    text = resources.files("datafirst.world").joinpath("reference", name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


# The name tails (surname_tail.csv, forename_tail.csv, made by build_name_tails.py) are in rank
# order per origin; rank r of a tail (counting on from the head) gets a weight proportional to
# r^-TAIL_EXPONENT. 1.2 is the slope of the US 2010 census surname table between rank ~1,400
# (about 0.011% of people) and rank ~162,000 (100 people in 295 million); docs/world.md.
TAIL_EXPONENT = 1.2
# Share of each origin's people whose surname is not in the hand-compiled head. Chosen so that
# the whole world matches public anchors (Smith about 1.2% of people, the top 1,000 surnames about
# half); origins whose surnames are concentrated in a few (Chinese, Patel/Singh/Kaur) get less.
SURNAME_TAIL_SHARE = {
    "british": 0.6, "irish": 0.45, "south_asian_muslim": 0.25, "south_asian_hindu_sikh": 0.25,
    "black_african": 0.5, "black_caribbean": 0.45, "east_european": 0.55, "arabic": 0.3, "chinese": 0.1,
    "south_european": 0.45,
}
# Forenames are more concentrated than surnames: a moderate tail (docs/world.md).
FORENAME_TAIL_SHARE = 0.1


@dataclass(frozen=True)
class WeightedPool:
    """Values with sampling probabilities."""

    values: np.ndarray  # object array of str
    probs: np.ndarray  # float64, sums to 1
    cdf: np.ndarray  # cumulative probs, last 1: sampling is a binary search, not a pass over the pool

    @classmethod
    def of(cls, values: list[str], weights: list[float] | np.ndarray) -> "WeightedPool":
        w = np.asarray(weights, dtype=np.float64)
        cdf = np.cumsum(w)
        return cls(np.asarray(values, dtype=object), w / w.sum(), cdf / cdf[-1])

    @classmethod
    def with_tail(cls, head: list[str], head_weights: list[float], tail: list[str], tail_share: float) -> "WeightedPool":
        """The head keeps its own shape; the tail (in rank order) follows the power law, with
        `tail_share` of the weight, but no tail name outweighs the head's median name."""
        h = np.asarray(head_weights, dtype=np.float64)
        h = h / h.sum()
        if not tail or tail_share <= 0:
            return cls.of(head, h)
        t = (len(head) + 1 + np.arange(len(tail), dtype=np.float64)) ** -TAIL_EXPONENT
        t = t / t.sum() * tail_share / (1 - tail_share)
        t = t * min(1.0, float(np.median(h)) / t[0])
        return cls.of(head + tail, np.concatenate([h, t]))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if n == 0:
            return np.empty(0, dtype=object)
        idx = np.searchsorted(self.cdf, rng.random(n), side="right")
        return self.values[np.minimum(idx, len(self.values) - 1)]

    @classmethod
    def mixture(cls, pools: list["WeightedPool"], weights: list[float]) -> "WeightedPool":
        """One pool drawing from each of `pools` in proportion to `weights`."""
        return cls.of(list(np.concatenate([p.values for p in pools])),
                      np.concatenate([p.probs * w for p, w in zip(pools, weights)]))


@dataclass(frozen=True)
class Reference:
    forenames: dict[tuple[str, str], WeightedPool]  # (origin, sex) -> pool
    surnames: dict[str, WeightedPool]  # origin -> pool
    nicknames: dict[str, tuple[str, ...]]  # formal forename -> short forms
    variants: dict[str, tuple[str, ...]]  # name -> other spellings of the same name
    postcode_areas: list[dict[str, str]]
    area_pool: WeightedPool  # index into postcode_areas, as str
    offences: list[dict[str, str]]
    offence_pool: WeightedPool  # index into offences
    prisons: WeightedPool  # establishment codes
    magistrates_courts: WeightedPool
    crown_courts: WeightedPool
    all_forenames: WeightedPool  # any origin, for inserted middle names and aliases
    all_surnames: WeightedPool


def _tails(name: str, *keys: str) -> dict[tuple[str, ...], list[str]]:
    """A tail file's names by key (origin, or origin and sex), in the file's rank order."""
    text = resources.files("datafirst.world").joinpath("reference", name).read_text(encoding="utf-8")
    rows = csv.reader(text.splitlines())
    header = next(rows)
    at, key_at = header.index("name"), [header.index(k) for k in keys]
    out: dict[tuple[str, ...], list[str]] = {}
    for r in rows:  # ~100,000 rows: csv.reader, as DictReader costs a dict per row
        out.setdefault(tuple(r[i] for i in key_at), []).append(r[at])
    return out


@lru_cache(maxsize=1)
def load_reference() -> Reference:
    fore_rows, fore_tail = _read("forenames.csv"), _tails("forename_tail.csv", "origin", "sex")
    forenames: dict[tuple[str, str], WeightedPool] = {}
    fore_mass: list[float] = []  # each pool's head weight, to mix the pools as the head lists do
    for origin in ORIGINS:
        for sex in ("M", "F"):
            o = origin if any(r["origin"] == origin and r["sex"] == sex for r in fore_rows) else "british"
            rows = [r for r in fore_rows if r["origin"] == o and r["sex"] == sex]
            tail = fore_tail.get((o, sex), [])
            forenames[(origin, sex)] = WeightedPool.with_tail(
                [r["name"] for r in rows], [float(r["weight"]) for r in rows], tail, FORENAME_TAIL_SHARE)
            fore_mass.append(sum(float(r["weight"]) for r in rows))

    sur_rows, sur_tail = _read("surnames.csv"), _tails("surname_tail.csv", "origin")
    surnames = {}
    sur_mass: list[float] = []
    for origin in ORIGINS:
        o = origin if any(r["origin"] == origin for r in sur_rows) else "british"
        rows = [r for r in sur_rows if r["origin"] == o]
        surnames[origin] = WeightedPool.with_tail([r["name"] for r in rows], [float(r["weight"]) for r in rows],
                                                  sur_tail.get((o,), []),
                                                  SURNAME_TAIL_SHARE[o])
        sur_mass.append(sum(float(r["weight"]) for r in rows))

    nick: dict[str, list[str]] = {}
    for r in _read("nicknames.csv"):
        nick.setdefault(r["name"], []).append(r["nickname"])

    # Variant rows are pairs; treat them as symmetric groups (union-find over the pairs).
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in _read("name_variants.csv"):
        a, b = find(r["name"]), find(r["variant"])
        if a != b:
            parent[b] = a
    groups: dict[str, list[str]] = {}
    for name in list(parent):
        groups.setdefault(find(name), []).append(name)
    variants = {n: tuple(sorted(m for m in g if m != n)) for g in groups.values() for n in g}

    areas = _read("postcode_areas.csv")
    offences = _read("offences.csv")
    prisons = _read("establishments.csv")
    courts = _read("courts.csv")
    mags = [c for c in courts if c["kind"] == "magistrates"]
    crown = [c for c in courts if c["kind"] == "crown"]
    return Reference(
        forenames=forenames,
        surnames=surnames,
        nicknames={k: tuple(v) for k, v in nick.items()},
        variants=variants,
        postcode_areas=areas,
        area_pool=WeightedPool.of([str(i) for i in range(len(areas))], [float(a["weight"]) for a in areas]),
        offences=offences,
        offence_pool=WeightedPool.of([str(i) for i in range(len(offences))], [float(o["weight"]) for o in offences]),
        prisons=WeightedPool.of([p["code"] for p in prisons], [float(p["weight"]) for p in prisons]),
        magistrates_courts=WeightedPool.of([c["code"] for c in mags], [float(c["weight"]) for c in mags]),
        crown_courts=WeightedPool.of([c["code"] for c in crown], [float(c["weight"]) for c in crown]),
        all_forenames=WeightedPool.mixture(list(forenames.values()), fore_mass),
        all_surnames=WeightedPool.mixture(list(surnames.values()), sur_mass),
    )
