"""Rebuild the world's name tails (run by hand, never at run time; the output is shipped).

    PYTHONPATH=src python src/datafirst/world/reference/build_name_tails.py

Writes surname_tail.csv (name, origin) and forename_tail.csv (name, sex, origin) beside this
file. The hand-compiled lists (surnames.csv, forenames.csv) stay the head of each distribution;
the tail is made of new names, drawn from a character Markov model trained on the head names of
the same origin (and sex, for forenames), so that a tail name reads like a name of that origin
and the world's typing and phonetic errors act on it as on a real one. Rows are in rank order
within their origin: the loader (reference.py) gives rank r a weight proportional to r^-a.
Deterministic: the same script always writes the same files. docs/world.md gives the shape.
"""

from __future__ import annotations

import csv
import math
import random
import re
import zlib
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Tail names per origin. The British tail is the long one, as in England and Wales; the Chinese
# one is short because Chinese surnames are few and concentrated. docs/world.md has the reasons.
SURNAME_TAIL = {
    "british": 80_000, "irish": 8_000, "south_asian_muslim": 6_000, "south_asian_hindu_sikh": 6_000,
    "black_african": 12_000, "black_caribbean": 5_000, "east_european": 15_000, "arabic": 5_000,
    "chinese": 600, "south_european": 12_000,
}
FORENAME_TAIL = {"british": 3_000}  # per sex; every other origin has FORENAME_TAIL_OTHER per sex
FORENAME_TAIL_OTHER = 400
GIVE_UP_AFTER = 20_000  # draws in a row without a new name: the model has run dry

# A capital only starts the name or follows an apostrophe or Mc/Mac (O'Brien, McDonald, MacLeod).
WELL_FORMED = re.compile(r"^(?:O'|D'|Mc|Mac)?[A-ZÀ-ÞĀ-ſ][a-zß-ÿĀ-ſ']*[a-zß-ÿĀ-ſ]$")


def _context_lengths(n_training: int) -> tuple[int, ...]:
    """Characters of context, tried in turn: three where the head is long enough to give
    variety (names read closer to real ones), then two, which finds more names."""
    return (3, 2) if n_training >= 100 else (2,)


class CharModel:
    """An order-k character Markov model over whole names, with start and end marks."""

    def __init__(self, names: list[str], k: int) -> None:
        self.k = k
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for name in names:
            padded = "^" * k + name + "$"
            for i in range(k, len(padded)):
                counts[padded[i - k:i]][padded[i]] += 1
        self.next = {ctx: (list(c), [float(v) for v in c.values()]) for ctx, c in counts.items()}
        self.logp = {ctx: {ch: math.log(v / sum(c.values())) for ch, v in c.items()} for ctx, c in counts.items()}
        lengths = sorted(len(n) for n in names)
        # Up to the 95th percentile length (plus two): the longest heads (Featherstonehaugh) are rare.
        self.min_len, self.max_len = max(2, lengths[0]), lengths[int(0.95 * (len(lengths) - 1))] + 2

    def draw(self, rng: random.Random) -> str:
        ctx, out = "^" * self.k, []
        while len(out) <= self.max_len:
            chars, weights = self.next[ctx]
            c = rng.choices(chars, weights)[0]
            if c == "$":
                break
            out.append(c)
            ctx = ctx[1:] + c
        return "".join(out)

    def log_prob(self, name: str) -> float:
        """The log-probability that the model draws this name: the rank of a tail name follows it."""
        padded = "^" * self.k + name + "$"
        return sum(self.logp[padded[i - self.k:i]][padded[i]] for i in range(self.k, len(padded)))


def _plausible(name: str, model: CharModel) -> bool:
    return (model.min_len <= len(name) <= model.max_len and WELL_FORMED.match(name) is not None
            and re.search(r"(.)\1\1", name) is None)


def generate(names: list[str], n: int, taken: set[str], seed_text: str) -> list[str]:
    """Up to n new names from models of `names`, none in `taken` (which grows), the most probable first.

    Each model draws until it has found n names or `GIVE_UP_AFTER` draws in a row found nothing new.
    Names of a longer-context model rank before those of a shorter one, so the commonest tail names
    are the ones most like the head."""
    out: list[str] = []
    for k in _context_lengths(len(names)):
        model = CharModel(names, k)
        rng = random.Random(zlib.crc32(f"{seed_text}|{k}".encode()))
        found: list[str] = []
        misses = 0
        while len(out) + len(found) < n and misses < GIVE_UP_AFTER:
            name = model.draw(rng)
            key = name.casefold()
            if key in taken or not _plausible(name, model):
                misses += 1
                continue
            misses = 0
            taken.add(key)
            found.append(name)
        out += sorted(found, key=lambda v: (-model.log_prob(v), v))
    return out


def _read(name: str) -> list[dict[str, str]]:
    with open(HERE / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _single_word(name: str) -> bool:
    return " " not in name and "-" not in name


def _english_words() -> set[str]:
    """Common English words (english_words.txt): a generated name that is one reads as no name
    (the n-gram models made 'And', 'When' and 'Merge'), and would collide with every text."""
    lines = (HERE / "english_words.txt").read_text(encoding="utf-8").splitlines()
    return {w.strip().casefold() for w in lines if w.strip() and not w.startswith("#")}


def main() -> None:
    surnames = _read("surnames.csv")
    forenames = _read("forenames.csv")
    words = _english_words()
    taken = {r["name"].casefold() for r in surnames} | words
    rows = []
    for origin, n in SURNAME_TAIL.items():
        head = [r["name"] for r in surnames if r["origin"] == origin and _single_word(r["name"])]
        tail = generate(head, n, taken, f"surname|{origin}")
        print(f"surnames {origin:24} {len(tail):>7,} of {n:,}")
        rows += [(name, origin) for name in tail]
    with open(HERE / "surname_tail.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "origin"])
        w.writerows(rows)

    taken = {r["name"].casefold() for r in forenames} | words
    rows = []
    for origin in SURNAME_TAIL:
        for sex in ("M", "F"):
            head = [r["name"] for r in forenames if (r["origin"], r["sex"]) == (origin, sex) and _single_word(r["name"])]
            n = FORENAME_TAIL.get(origin, FORENAME_TAIL_OTHER)
            tail = generate(head, n, taken, f"forename|{origin}|{sex}")
            print(f"forenames {origin:24} {sex} {len(tail):>6,} of {n:,}")
            rows += [(name, sex, origin) for name in tail]
    with open(HERE / "forename_tail.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "sex", "origin"])
        w.writerows(rows)


if __name__ == "__main__":
    main()
