"""Recording errors: turn a person's true identity at a date into what a clerk typed.

Rates come from error_rates.yaml (error_model.py); this module holds how each kind of
error is made. The knowledge used here (keyboard neighbours, phonetic spellings, the
nickname and variant tables) belongs to the world only and must not be reused by the
pipeline that later resolves these errors.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from .error_model import SourceErrorRates
from .population import People
from .reference import Reference

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(KEYBOARD_ROWS):
    for _i, _ch in enumerate(_row):
        near = _row[max(0, _i - 1):_i] + _row[_i + 1:_i + 2]
        for _other in (KEYBOARD_ROWS[_r - 1] if _r else "", KEYBOARD_ROWS[_r + 1] if _r < 2 else ""):
            near += _other[max(0, _i - 1):_i + 1]
        NEIGHBOURS[_ch] = near

# Spellings a clerk writes from hearing a name (lower case; one rule applied once).
PHONETIC_RULES = tuple((re.compile(p), r) for p, r in (
    ("ph", "f"), ("f", "ph"), ("ck", "k"), ("c(?=[aou])", "k"), ("k", "c"), ("ie$", "y"), ("y$", "ie"),
    ("ey$", "y"), ("ou", "ow"), ("ee", "ea"), ("ea", "ee"), ("th", "t"), ("ll", "l"), ("(?<=[aeiou])l(?=[aeiou])", "ll"),
    ("nn", "n"), ("tt", "t"), ("mm", "m"), ("ss", "s"), ("ei", "ie"), ("ie", "ei"), ("son$", "sen"), ("z", "s"),
    ("(?<=[aeiou])s(?=[aeiou])", "z"), ("ai", "ay"), ("ay", "ai"), ("w", "v"), ("v", "w"), ("oo", "u"),
    ("aa", "a"), ("gh", "g"), ("kh", "k"), ("^wh", "w"), ("ch", "sh"), ("j", "dj"), ("x", "ks"), ("qu", "kw"),
))
PLACEHOLDER_POSTCODES = (("ZZ99 3VZ", 0.6), ("NFA", 0.25), ("UNKNOWN", 0.15))


@dataclass
class Identity:
    """What one source records about each of its records' people (mutable, one row a record)."""

    forename: np.ndarray
    middle_names: np.ndarray
    surname: np.ndarray
    dob_y: np.ndarray  # 0 when not recorded
    dob_m: np.ndarray
    dob_d: np.ndarray
    sex: np.ndarray
    postcode: np.ndarray
    address_line: np.ndarray
    town: np.ndarray
    pnc: np.ndarray
    cro: np.ndarray
    errors: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.forename)

    def error_strings(self) -> np.ndarray:
        return np.array([";".join(e) for e in self.errors], dtype=object)


def snapshot(people: People, person: np.ndarray, when: np.ndarray) -> Identity:
    """The true identity of each record's person as it stood on the record's date."""
    hh = people.household[person]
    addr = people.address_index_at(person, when)
    dob = people.dob[person].astype(object)
    return Identity(
        forename=people.forename[person].copy(),
        middle_names=people.middle_names[person].copy(),
        surname=people.surname_at(person, when).astype(object),
        dob_y=np.array([d.year for d in dob], dtype=np.int64),
        dob_m=np.array([d.month for d in dob], dtype=np.int64),
        dob_d=np.array([d.day for d in dob], dtype=np.int64),
        sex=people.sex[person].copy(),
        postcode=people.postcode[hh, addr].copy(),
        address_line=people.address_line[hh, addr].copy(),
        town=people.town[hh, addr].copy(),
        pnc=people.pnc[person].copy(),
        cro=people.cro[person].copy(),
        errors=[[] for _ in range(len(person))],
    )


def _recase(original: str, lowered: str) -> str:
    if original.isupper():
        return lowered.upper()
    return lowered[:1].upper() + lowered[1:] if original[:1].isupper() else lowered


def typo(s: str, r: random.Random) -> str:
    if not s:
        return s
    low = s.lower()
    i = r.randrange(len(s))
    op = r.randrange(4) if len(s) > 2 else 2
    ch = low[i]
    near = NEIGHBOURS.get(ch, "aeiou")
    if op == 0:
        out = low[:i] + r.choice(near) + low[i + 1:]
    elif op == 1:
        out = low[:i] + low[i + 1:]
    elif op == 2:
        out = low[:i] + r.choice(near) + low[i:]
    else:
        j = i + 1 if i + 1 < len(low) else i - 1
        a, b = sorted((i, j))
        out = low[:a] + low[b] + low[a] + low[b + 1:]
    if out == low:
        out = low[:i] + low[i + 1:] if len(low) > 1 else low + "e"
    return _recase(s, out)


_phonetic_cache: dict[str, tuple[int, ...]] = {}


def phonetic_rules_for(s: str) -> tuple[int, ...]:
    rules = _phonetic_cache.get(s)
    if rules is None:
        low = s.lower()
        rules = tuple(k for k, (pat, _) in enumerate(PHONETIC_RULES) if pat.search(low))
        _phonetic_cache[s] = rules
    return rules


def phonetic(s: str, r: random.Random) -> str:
    pat, rep = PHONETIC_RULES[r.choice(phonetic_rules_for(s))]
    return _recase(s, pat.sub(rep, s.lower(), count=1))


def change_pnc_digit(s: str, r: random.Random) -> str:
    year, rest = s.split("/")
    digits, check = rest[:-1], rest[-1]
    i = r.randrange(len(digits))
    new = str((int(digits[i]) + r.randrange(1, 10)) % 10)
    return f"{year}/{digits[:i]}{new}{digits[i + 1:]}{check}"


def _valid(y: int, m: int, d: int) -> bool:
    try:
        date(y, m, d)
        return True
    except ValueError:
        return False


def dob_digit_typo(y: int, m: int, d: int, r: random.Random) -> tuple[int, int, int]:
    for _ in range(8):
        part = r.randrange(3)
        if part == 0:
            ny, nm, nd = y - y % 10 + (y % 10 + r.randrange(1, 10)) % 10, m, d
        elif part == 1:
            nd = (d // 10) * 10 + (d % 10 + r.randrange(1, 10)) % 10
            ny, nm = y, m
        else:
            nm = (m // 10) * 10 + (m % 10 + r.randrange(1, 10)) % 10
            ny, nd = y, d
        if (ny, nm, nd) != (y, m, d) and _valid(ny, nm, nd) and 1900 < ny <= 2024:
            return ny, nm, nd
    return y + 1, m, d if _valid(y + 1, m, d) else 28


class Corrupter:
    """Applies one source's declared error rates to the identities of its records."""

    def __init__(self, rng: np.random.Generator, ref: Reference, rates: SourceErrorRates):
        self.rng = rng
        self.ref = ref
        self.rates = rates
        self.py = random.Random(int(rng.integers(0, 2**62)))

    def _draw(self, field_name: str, n: int, applicable: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Which records get which kind of error in this field (kinds are exclusive). A kind
        restricted to some records is drawn among them at a higher probability, so that its
        share over all records still meets the declared rate."""
        untouched = np.ones(n, dtype=bool)
        chosen: dict[str, np.ndarray] = {}
        for kind, rate in self.rates.kinds(field_name):
            can = applicable.get(kind, np.ones(n, dtype=bool)) & untouched
            share = can.mean() if n else 0.0
            p = min(1.0, rate / share) if share > 0 else 0.0
            pick = can & (self.rng.random(n) < p)
            chosen[kind] = pick
            untouched &= ~pick
        return chosen

    @staticmethod
    def _log(ident: Identity, mask: np.ndarray, label: str) -> None:
        for i in np.flatnonzero(mask):
            ident.errors[i].append(label)

    def _map(self, values: np.ndarray, mask: np.ndarray, fn) -> None:
        idx = np.flatnonzero(mask)
        values[idx] = [fn(v) for v in values[idx]]

    def apply(self, ident: Identity, people: People, person: np.ndarray, when: np.ndarray) -> None:
        n = len(ident)
        if n == 0:
            return
        py, ref = self.py, self.ref
        has = lambda a: a != ""  # noqa: E731

        # Aliases first: the record then carries the alias identity, with its own errors.
        c = self._draw("name", n, {"alias": has(people.alias_forename[person])})
        if "alias" in c:
            m = c["alias"]
            ident.forename[m] = people.alias_forename[person[m]]
            ident.surname[m] = people.alias_surname[person[m]]
            adob = people.alias_dob[person[m]].astype(object)
            ident.dob_y[m] = [d.year for d in adob]
            ident.dob_m[m] = [d.month for d in adob]
            ident.dob_d[m] = [d.day for d in adob]
            self._log(ident, m, "name:alias")
        swap = c.get("swap")

        f = ident.forename
        c = self._draw("forename", n, {
            "typo": has(f), "phonetic": np.array([bool(v) and bool(phonetic_rules_for(v)) for v in f]),
            "nickname": np.array([v in ref.nicknames for v in f]),
            "variant": np.array([v in ref.variants for v in f]),
            "initial_only": np.array([len(v) > 1 for v in f]), "missing": has(f),
        })
        for kind, fn in (("typo", lambda v: typo(v, py)), ("phonetic", lambda v: phonetic(v, py)),
                         ("nickname", lambda v: py.choice(ref.nicknames[v])),
                         ("variant", lambda v: py.choice(ref.variants[v])),
                         ("initial_only", lambda v: v[0]), ("missing", lambda v: "")):
            if kind in c:
                self._map(f, c[kind], fn)
                self._log(ident, c[kind], f"forename:{kind}")

        mid = ident.middle_names
        c = self._draw("middle_names", n, {"dropped": has(mid)})
        if "dropped" in c:
            self._map(mid, c["dropped"], lambda v: "")
            self._log(ident, c["dropped"], "middle_names:dropped")
        if "added" in c:
            extra = ref.all_forenames.sample(self.rng, int(c["added"].sum()))
            idx = np.flatnonzero(c["added"])
            mid[idx] = [f"{m} {e}".strip() for m, e in zip(mid[idx], extra)]
            self._log(ident, c["added"], "middle_names:added")

        s = ident.surname
        changed_on = people.surname_changed_on[person]
        stale_ok = has(people.previous_surname[person]) & ~np.isnat(changed_on) & (when >= changed_on)
        c = self._draw("surname", n, {
            "typo": has(s), "phonetic": np.array([bool(v) and bool(phonetic_rules_for(v)) for v in s]),
            "variant": np.array([v in ref.variants for v in s]), "double_barrel": has(s), "stale_surname": stale_ok,
        })
        others = ref.all_surnames.sample(self.rng, n)
        for kind, fn in (("typo", lambda v: typo(v, py)), ("phonetic", lambda v: phonetic(v, py)),
                         ("variant", lambda v: py.choice(ref.variants[v]))):
            if kind in c:
                self._map(s, c[kind], fn)
                self._log(ident, c[kind], f"surname:{kind}")
        if "double_barrel" in c:
            idx = np.flatnonzero(c["double_barrel"])
            s[idx] = [v.split("-")[py.randrange(2)] if "-" in v else f"{v}-{o}" for v, o in zip(s[idx], others[idx])]
            self._log(ident, c["double_barrel"], "surname:double_barrel")
        if "stale_surname" in c:
            m = c["stale_surname"]
            s[m] = people.previous_surname[person[m]]
            self._log(ident, m, "surname:stale_surname")

        if swap is not None:
            ident.forename[swap], ident.surname[swap] = ident.surname[swap].copy(), ident.forename[swap].copy()
            self._log(ident, swap, "name:swap")

        y, mo, d = ident.dob_y, ident.dob_m, ident.dob_d
        present = y > 0
        c = self._draw("date_of_birth", n, {
            "day_month_swap": present & (d <= 12) & (d != mo), "digit_typo": present,
            "placeholder_jan1": present & ~((mo == 1) & (d == 1)), "placeholder_1900": present, "missing": present,
        })
        if "day_month_swap" in c:
            m = c["day_month_swap"]
            mo[m], d[m] = d[m].copy(), mo[m].copy()
        if "digit_typo" in c:
            for i in np.flatnonzero(c["digit_typo"]):
                y[i], mo[i], d[i] = dob_digit_typo(int(y[i]), int(mo[i]), int(d[i]), py)
        if "placeholder_jan1" in c:
            m = c["placeholder_jan1"]
            mo[m], d[m] = 1, 1
        if "placeholder_1900" in c:
            m = c["placeholder_1900"]
            y[m], mo[m], d[m] = 1900, 1, 1
        if "missing" in c:
            m = c["missing"]
            y[m], mo[m], d[m] = 0, 0, 0
        for kind, m in c.items():
            self._log(ident, m, f"date_of_birth:{kind}")

        sx = ident.sex
        c = self._draw("sex", n, {"wrong": has(sx), "missing": has(sx)})
        if "wrong" in c:
            sx[c["wrong"]] = np.where(sx[c["wrong"]] == "M", "F", "M")
        if "missing" in c:
            sx[c["missing"]] = ""
        for kind, m in c.items():
            self._log(ident, m, f"sex:{kind}")

        pc = ident.postcode
        hh = people.household[person]
        addr = people.address_index_at(person, when)
        c = self._draw("postcode", n, {"stale": addr >= 1, "typo": has(pc), "placeholder": has(pc), "missing": has(pc)})
        if "stale" in c:
            m = c["stale"]
            pc[m] = people.postcode[hh[m], addr[m] - 1]
            ident.address_line[m] = people.address_line[hh[m], addr[m] - 1]
            ident.town[m] = people.town[hh[m], addr[m] - 1]
        if "typo" in c:
            self._map(pc, c["typo"], lambda v: self._postcode_typo(v))
        if "placeholder" in c:
            m = c["placeholder"]
            values, probs = zip(*PLACEHOLDER_POSTCODES)
            pc[m] = np.array(values, dtype=object)[self.rng.choice(len(values), size=int(m.sum()), p=probs)]
            ident.address_line[m] = np.where(pc[m] == "ZZ99 3VZ", "No fixed abode", "")
        if "missing" in c:
            pc[c["missing"]] = ""
        for kind, m in c.items():
            self._log(ident, m, f"postcode:{kind}")

        c = self._draw("pnc", n, {"mistyped": has(ident.pnc), "missing": has(ident.pnc)})
        if "mistyped" in c:
            self._map(ident.pnc, c["mistyped"], lambda v: change_pnc_digit(v, py))
        if "missing" in c:
            ident.pnc[c["missing"]] = ""
        for kind, m in c.items():
            self._log(ident, m, f"pnc:{kind}")

    def _postcode_typo(self, v: str) -> str:
        positions = [i for i, ch in enumerate(v) if ch != " "]
        i = self.py.choice(positions)
        ch = v[i]
        if ch.isdigit():
            new = str((int(ch) + self.py.randrange(1, 10)) % 10)
        else:
            new = self.py.choice([c for c in "ABDEFGHJLNPQRSTUWXYZ" if c != ch])
        return v[:i] + new + v[i + 1:]
