"""Labelled record-linkage test sets unlike the synthetic justice world.

Each set writes raw extracts as a source system would deliver them, the datafirst contracts a
user onboarding them would write, and the truth (labels.csv: the true person of every record),
so that linkage can be measured on data nobody tuned the model on:

- `census`: a US-style census extract and a benefits registry (census.py);
- `historical`: one file of records of people born 1650-1920 across European naming
  traditions, to deduplicate (historical.py).

    from datafirst.testsets import generate
    generate("census", Path("out/census"), seed=1)

`bench/bench_testsets.py` links each set with datafirst and with a plain hand-written Splink
model and prints the accuracy of both.
"""

from __future__ import annotations

from pathlib import Path

from . import census, historical

TESTSETS = {"census": census.generate, "historical": historical.generate}


def generate(name: str, out: Path, people: int | None = None, seed: int = 1) -> Path:
    """Write test set `name` into `out` (default size unless `people`); the same seed gives
    byte-identical files. Returns `out`."""
    if name not in TESTSETS:
        raise ValueError(f"unknown test set {name!r}; one of {sorted(TESTSETS)}")
    return TESTSETS[name](Path(out), people=people, seed=seed)
