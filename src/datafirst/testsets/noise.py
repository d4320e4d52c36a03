"""What the test-set generators share: the reference lists, weighted draws, scrambled ids, the
ways a clerk mistypes a name or a date, and the files every set writes beside its extracts
(labels.csv, testset.json, contracts/).

Nothing here reads the justice world's reference lists (src/datafirst/world/reference/) nor
the nickname list the linkage model uses: names come from reference/ beside this file
(SOURCES.md says from where), nicknames from its own hand-made list.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parent / "reference"
CONTRACTS = Path(__file__).resolve().parent / "contracts"

# Keys next to each other on a QWERTY keyboard (a typo hits a neighbour).
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _neighbours(row: int, i: int) -> str:
    """The keys left and right of key i in its row, and the two touching it above and below."""
    out = [_ROWS[row][j] for j in (i - 1, i + 1) if 0 <= j < len(_ROWS[row])]
    for other, cols in ((row - 1, (i, i + 1)), (row + 1, (i - 1, i))):
        if 0 <= other < len(_ROWS):
            out += [_ROWS[other][j] for j in cols if 0 <= j < len(_ROWS[other])]
    return "".join(out)


KEYBOARD = {ch: _neighbours(r, i) for r, keys in enumerate(_ROWS) for i, ch in enumerate(keys)}
# Misspellings by ear: (pattern, replacement), one occurrence replaced.
PHONETIC = [(r"ph", "f"), (r"f", "ph"), (r"ck", "k"), (r"c(?=[aou])", "k"), (r"k", "c"), (r"(?<=.)y", "i"),
            (r"(?<=.)i", "y"), (r"ie$", "y"), (r"y$", "ie"), (r"ee", "ea"), (r"ea", "ee"), (r"ou", "ow"),
            (r"th", "t"), (r"(?<=.)([lnmrst])\1", r"\1"), (r"(?<=[aeiou])([lnrt])(?=[aeiou])", r"\1\1"),
            (r"son$", "sen"), (r"sen$", "son"), (r"mann$", "man"), (r"z", "s"), (r"(?<=.)s(?=[aeiou])", "z"),
            (r"w", "v"), (r"ae", "e"), (r"ei", "ie"), (r"ie(?!$)", "ei"), (r"ey$", "y")]


@lru_cache(maxsize=None)
def read_reference(name: str) -> tuple[dict, ...]:
    with open(REFERENCE / name, newline="", encoding="utf-8") as f:
        return tuple(csv.DictReader(f))


class Picker:
    """Draws values with the given weights (long-tailed lists make common names common)."""

    def __init__(self, values: list, weights: list[float]):
        self.values = list(values)
        cum = np.cumsum(np.asarray(weights, dtype=float))
        self.cum = cum / cum[-1]

    def one(self, rng: np.random.Generator):
        return self.values[min(int(np.searchsorted(self.cum, rng.random(), side="right")), len(self.values) - 1)]

    def many(self, rng: np.random.Generator, n: int) -> list:
        idx = np.minimum(np.searchsorted(self.cum, rng.random(n), side="right"), len(self.values) - 1)
        return [self.values[i] for i in idx]


def nicknames(traditions: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """Our own hand-made diminutives (reference/nicknames.csv): name -> nicknames."""
    out: dict[str, list[str]] = {}
    for row in read_reference("nicknames.csv"):
        if traditions is None or row["tradition"] in traditions:
            out.setdefault(row["name"], []).append(row["nickname"])
    return out


def spelling_variants(kind: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in read_reference("spelling_variants.csv"):
        if row["kind"] == kind:
            out.setdefault(row["name"], []).append(row["variant"])
    return out


def scrambled_ids(rng: np.random.Generator, n: int, width: int, prefix: str = "") -> list[str]:
    """n unique ids of `width` digits, in an order that reveals neither generation order nor who
    is related to whom: a permutation spread over the id space with random offsets."""
    stride = 10 ** width // max(n, 1)
    if stride < 2:
        raise ValueError(f"{n} ids do not fit in {width} digits")
    values = rng.permutation(n) * stride + rng.integers(0, stride, n)
    return [f"{prefix}{v:0{width}d}" for v in values]


def random_dates(rng: np.random.Generator, start: date, end: date, n: int) -> list[date]:
    days = rng.integers(0, (end - start).days + 1, n)
    return [start + timedelta(days=int(d)) for d in days]


def keyboard_typo(rng: np.random.Generator, text: str) -> str:
    """One slip of the finger: a neighbouring key, a letter dropped or doubled, two swapped."""
    if len(text) < 3:
        return text
    i = int(rng.integers(1, len(text)))  # the first letter is usually right
    kind = rng.random()
    if kind < 0.2 and i < len(text) - 1:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if kind < 0.4:
        return text[:i] + text[i + 1:]
    if kind < 0.55:
        return text[:i] + text[i] + text[i:]
    near = KEYBOARD.get(text[i].lower())
    if not near:
        return text[:i] + text[i + 1:]
    ch = near[int(rng.integers(0, len(near)))]
    return text[:i] + (ch.upper() if text[i].isupper() else ch) + text[i + 1:]


def phonetic_variant(rng: np.random.Generator, text: str) -> str:
    """The name as heard and spelt by someone else (Catherine -> Katherine, Smith -> Smyth);
    the text itself when no rule applies."""
    lower = text.lower()
    rules = [(p, r) for p, r in PHONETIC if re.search(p, lower)]
    if not rules:
        return text
    pattern, repl = rules[int(rng.integers(0, len(rules)))]
    out = re.sub(pattern, repl, lower, count=1)
    return out[:1].upper() + out[1:] if text[:1].isupper() else out


def truncation(name: str) -> str | None:
    """A rule-made short form: up to the first consonant after the first vowels, extended to
    the next syllable when that is under three letters (Christopher -> Chris, Benjamin -> Ben,
    Alexander -> Alex). None for names too short to shorten."""
    if len(name) < 6:
        return None
    for m in re.finditer(r"[aeiouyäöüåøéè]+[^aeiouyäöüåøéè]", name.lower()):
        if m.end() >= 3:
            return name[:m.end()] if m.end() < len(name) - 1 else None
    return None


def digit_typo(rng: np.random.Generator, text: str, positions: list[int] | None = None) -> str:
    """One digit of `text` replaced by another (at one of `positions`, or any digit)."""
    spots = positions if positions is not None else [i for i, ch in enumerate(text) if ch.isdigit()]
    if not spots:
        return text
    i = spots[int(rng.integers(0, len(spots)))]
    new = str((int(text[i]) + int(rng.integers(1, 10))) % 10)
    return text[:i] + new + text[i + 1:]


def write_delimited(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        out.writerow(header)
        out.writerows(rows)
    return len(rows)


def finish(out: Path, name: str, seed: int, people: int, rows: dict[str, int], labels: list[tuple],
           rates: dict) -> Path:
    """Write labels.csv, copy the set's contracts and write testset.json; returns `out`."""
    write_delimited(out / "labels.csv", ["source", "table", "record_id", "true_id"], labels)
    (out / "contracts").mkdir(parents=True, exist_ok=True)
    for contract in sorted((CONTRACTS / name).glob("*.yaml")):
        shutil.copyfile(contract, out / "contracts" / contract.name)
    manifest = {"name": name, "seed": seed, "people": people, "true_people": len({label[3] for label in labels}),
                "records": sum(rows.values()), "rows": rows, "noise": rates}
    (out / "testset.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out
