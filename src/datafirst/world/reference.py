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


@dataclass(frozen=True)
class WeightedPool:
    """Values with sampling probabilities."""

    values: np.ndarray  # object array of str
    probs: np.ndarray  # float64, sums to 1

    @classmethod
    def of(cls, values: list[str], weights: list[float]) -> "WeightedPool":
        w = np.asarray(weights, dtype=np.float64)
        return cls(np.asarray(values, dtype=object), w / w.sum())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if n == 0:
            return np.empty(0, dtype=object)
        return self.values[rng.choice(len(self.values), size=n, p=self.probs)]


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


@lru_cache(maxsize=1)
def load_reference() -> Reference:
    fore_rows = _read("forenames.csv")
    forenames: dict[tuple[str, str], WeightedPool] = {}
    for origin in ORIGINS:
        for sex in ("M", "F"):
            rows = [r for r in fore_rows if r["origin"] == origin and r["sex"] == sex]
            if not rows:  # fall back to British names rather than fail on a thin list
                rows = [r for r in fore_rows if r["origin"] == "british" and r["sex"] == sex]
            forenames[(origin, sex)] = WeightedPool.of([r["name"] for r in rows], [float(r["weight"]) for r in rows])

    sur_rows = _read("surnames.csv")
    surnames = {}
    for origin in ORIGINS:
        rows = [r for r in sur_rows if r["origin"] == origin] or [r for r in sur_rows if r["origin"] == "british"]
        surnames[origin] = WeightedPool.of([r["name"] for r in rows], [float(r["weight"]) for r in rows])

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
        all_forenames=WeightedPool.of([r["name"] for r in fore_rows], [float(r["weight"]) for r in fore_rows]),
        all_surnames=WeightedPool.of([r["name"] for r in sur_rows], [float(r["weight"]) for r in sur_rows]),
    )
