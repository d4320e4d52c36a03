"""The census test set: a US-style census extract and a benefits registry, to be linked.

A population in households at one point in time (census day, 1 April 2020): single adults,
couples (most sharing a surname, some not), children, lone parents, homes of three generations
and unrelated housemates. Twins (3% of births) share surname, date of birth and address and
differ only in forename, sometimes barely (Mary and Marie); some sons carry their father's
forename, middle name and surname (Jr). Dates of birth run from 1920 to 2024.

- `census/census_2020.csv` (comma CSV, MM/DD/YYYY): everyone at their home address, with a
  middle initial, an age and the relationship to the reference person. Some people are counted
  twice (a child at both separated parents' homes, a student at college and at home, a mover at
  the old and the new address), so the census has duplicates of its own.
- `benefits/registrations.txt` (pipe-delimited, YYYYMMDD): about half the adults and some
  children register, some more than once (re-registrations with changed details), and some
  registrants are not in the census at all (moved in or born after census day). Full middle
  names, a phone number, and no address.

What it deliberately does not share with the justice world: US names (Faker's en_US lists), US
addresses (street, city, state, ZIP: no UK postcode), month-first dates, no police or prison ids,
a general population rather than an offending one, twins and juniors, and nicknames from a list
of our own (reference/nicknames.csv), never the one the linkage model uses. The noise rates are
the constants below; testset.json records them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from .noise import (Picker, digit_typo, finish, keyboard_typo, nicknames, phonetic_variant, read_reference,
                    scrambled_ids, truncation, write_delimited)

NAME = "census"
PEOPLE = 17_000                 # the census population (registry-only people come on top)
CENSUS_DAY = date(2020, 4, 1)
LAST_BIRTH = date(2024, 12, 31)  # registry-only babies are born up to here

HOUSEHOLDS = {"single": 0.27, "couple": 0.22, "couple_children": 0.24, "lone_parent": 0.09, "three_generations": 0.06,
              "housemates": 0.12}
CHILDREN = (1, 2, 3, 4)
CHILDREN_P = (0.35, 0.40, 0.18, 0.07)
SHARED_SURNAME = 0.75           # couples where the partner took the other's surname
CHILD_OTHER_SURNAME = 0.15      # of couples not sharing a surname: child takes the mother's (as many hyphenated)
TWIN_RATE = 0.03                # of births
TWIN_SIMILAR_NAME = 0.25        # of twins: forenames sharing their first three letters (Mary / Marie)
JUNIOR_RATE = 0.12              # of couples' first sons: named after the father (Jr)
UNIT_RATE = 0.3                 # addresses with an apartment or unit
DIRECTION_RATE = 0.15           # street names with a direction (W 34th Ave)
NUMBERED_STREET_RATE = 0.15     # numbered streets (34th Ave)
MIDDLE_NAME_RATE = 0.8          # people with a middle name

# Census duplicates: people counted twice.
CHILD_TWO_HOMES = 0.25          # of lone parents' children: the other parent lives apart and counts them too
STUDENT_TWICE = 0.3             # of 18-22 year olds living with a parent: counted at college as well
MOVER_TWICE = 0.01              # of everyone: counted at the old address too

# The benefits registry.
REGISTER_ADULT = 0.5
REGISTER_CHILD = 0.08
REREGISTER = 0.12               # of registrants: a second registration
OUTSIDERS = 0.1                 # registrants not in the census, as a share of those who are
MAIDEN_NAME = 0.35              # of women who took a partner's surname: registered under the birth surname
PHONE_KEPT = 0.6                # re-registrations with the same phone number

# Noise rates per field and source (share of records).
NOISE = {
    "census": {"typo_first": 0.02, "typo_last": 0.02, "phonetic_first": 0.015, "phonetic_last": 0.015,
               "nickname": 0.0, "swap_first_middle": 0.01, "initial_only": 0.01, "blank_first": 0.005,
               "middle_missing": 0.15, "dob_day_month_swap": 0.01, "dob_digit": 0.01, "dob_jan_first": 0.01,
               "dob_missing": 0.01, "sex_blank": 0.01, "age_off_by_one": 0.03, "zip_typo": 0.02,
               "house_number_typo": 0.02, "suffix_in_surname": 0.5},
    "benefits": {"typo_first": 0.03, "typo_last": 0.03, "phonetic_first": 0.02, "phonetic_last": 0.02,
                 "nickname": 0.05, "swap_first_middle": 0.015, "initial_only": 0.01, "blank_first": 0.01,
                 "middle_missing": 0.45, "dob_day_month_swap": 0.015, "dob_digit": 0.015, "dob_jan_first": 0.01,
                 "dob_missing": 0.04, "sex_unknown": 0.02},
}

RELATIONSHIPS = {"child": {"M": "Son", "F": "Daughter"}, "parent": {"M": "Father", "F": "Mother"}}


@dataclass(frozen=True)
class Person:
    pid: int
    first: str
    middle: str
    last: str
    birth_last: str             # the surname before marriage (the same when unchanged)
    sex: str
    dob: date
    suffix: str = ""


@dataclass(frozen=True)
class Address:
    number: str
    street: str
    unit: str
    city: str
    state: str
    zipcode: str


class _Population:
    """People and households, drawn from the reference lists with one random generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        fore = read_reference("us_forenames.csv")
        self.forenames = {s: Picker([r["name"] for r in fore if r["sex"] == s],
                                    [float(r["weight"]) for r in fore if r["sex"] == s]) for s in "MF"}
        self.by_prefix = {s: {} for s in "MF"}
        for r in fore:
            self.by_prefix[r["sex"]].setdefault(r["name"][:3], []).append(r["name"])
        sur = read_reference("us_surnames.csv")
        self.surnames = Picker([r["name"] for r in sur], [float(r["weight"]) for r in sur])
        places = read_reference("us_places.csv")
        self.places = Picker([(r["city"], r["state"], r["zip"]) for r in places], [float(r["weight"]) for r in places])
        parts = read_reference("us_street_parts.csv")
        self.street = {k: Picker([r["value"] for r in parts if r["kind"] == k],
                                 [float(r["weight"]) for r in parts if r["kind"] == k])
                       for k in ("base", "suffix", "direction", "unit")}
        self.people: list[Person] = []
        self.counted: list[tuple[int, Address, str]] = []   # (person, address, relationship): census rows
        self.in_census: set[int] = set()

    def address(self) -> Address:
        rng = self.rng
        city, state, zipcode = self.places.one(rng)
        if rng.random() < NUMBERED_STREET_RATE:
            n = int(rng.integers(1, 120))
            base = f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
        else:
            base = self.street["base"].one(rng)
        direction = self.street["direction"].one(rng) + " " if rng.random() < DIRECTION_RATE else ""
        unit = f"{self.street['unit'].one(rng)} {int(rng.integers(1, 40))}" if rng.random() < UNIT_RATE else ""
        return Address(str(int(rng.integers(1, 9999))), f"{direction}{base} {self.street['suffix'].one(rng)}", unit,
                       city, state, f"{int(zipcode) + int(rng.integers(0, 10)):05d}")

    def person(self, sex: str, dob: date, last: str | None = None, first: str | None = None,
               middle: str | None = None, suffix: str = "") -> Person:
        rng = self.rng
        if middle is None:
            middle = self.forenames[sex].one(rng) if rng.random() < MIDDLE_NAME_RATE else ""
        last = last or self.surnames.one(rng)
        p = Person(len(self.people), first or self.forenames[sex].one(rng), middle, last, last, sex, dob, suffix)
        self.people.append(p)
        return p

    def born(self, age_low: float, age_high: float) -> date:
        """A date of birth for someone aged between the two on census day."""
        days = self.rng.uniform(age_low, age_high) * 365.25
        return CENSUS_DAY - timedelta(days=int(days))

    def sex(self) -> str:
        return "M" if self.rng.random() < 0.5 else "F"

    def count(self, p: Person, at: Address, relationship: str) -> None:
        self.counted.append((p.pid, at, relationship))
        self.in_census.add(p.pid)

    def couple(self, age_low: float, age_high: float) -> tuple[Person, Person]:
        rng = self.rng
        man = self.person("M", self.born(age_low, age_high))
        woman = self.person("F", man.dob + timedelta(days=int(rng.normal(700, 1400))))
        if rng.random() < SHARED_SURNAME:
            woman = replace(woman, last=man.last)
            self.people[woman.pid] = woman
        return man, woman

    def children(self, father: Person, mother: Person) -> list[Person]:
        """1-4 children born to the mother at 18-42, still at home (under 25) on census day."""
        rng, mother_dob = self.rng, mother.dob
        if father.last == mother.last or rng.random() >= CHILD_OTHER_SURNAME:
            last = father.last
        else:
            last = mother.last if rng.random() < 0.5 else f"{father.last}-{mother.last}"
        kids: list[Person] = []
        for _ in range(int(rng.choice(CHILDREN, p=CHILDREN_P))):
            earliest = max(mother_dob + timedelta(days=int(18 * 365.25)), CENSUS_DAY - timedelta(days=int(25 * 365.25)))
            latest = min(mother_dob + timedelta(days=int(42 * 365.25)), CENSUS_DAY - timedelta(days=1))
            if earliest >= latest:
                break
            dob = earliest + timedelta(days=int(rng.integers(0, (latest - earliest).days)))
            sex = self.sex()
            junior = (sex == "M" and last == father.last and not any(k.sex == "M" for k in kids)
                      and rng.random() < JUNIOR_RATE)
            kid = (self.person("M", dob, last, father.first, father.middle, "Jr") if junior
                   else self.person(sex, dob, last, self.fresh_forename(sex, kids)))
            kids.append(kid)
            if rng.random() < TWIN_RATE:
                twin_sex = sex if rng.random() < 0.6 else self.sex()
                similar = [n for n in self.by_prefix[twin_sex].get(kid.first[:3], []) if n != kid.first]
                name = (similar[int(rng.integers(0, len(similar)))] if similar and rng.random() < TWIN_SIMILAR_NAME
                        else self.fresh_forename(twin_sex, kids))
                kids.append(self.person(twin_sex, dob, last, name))
        return kids

    def fresh_forename(self, sex: str, siblings: list[Person]) -> str:
        """A forename none of the siblings has (parents rarely give one name twice)."""
        taken = {k.first for k in siblings}
        while (name := self.forenames[sex].one(self.rng)) in taken:
            pass
        return name

    def household(self, kind: str) -> None:
        rng = self.rng
        home = self.address()
        if kind == "single":
            self.count(self.person(self.sex(), self.born(18, 100)), home, "Householder")
        elif kind == "housemates":
            for i in range(int(rng.integers(2, 5))):
                self.count(self.person(self.sex(), self.born(19, 40)), home, "Householder" if i == 0 else "Roommate")
        elif kind == "couple":
            for p, relationship in zip(self.couple(18, 95), ("Householder", "Spouse")):
                self.count(p, home, relationship)
        else:
            father, mother = self.couple(20, 55) if kind == "lone_parent" else self.couple(22, 60)
            parents = [father, mother]
            absent = None
            if kind == "lone_parent":  # separated: one parent lives elsewhere
                absent = father if rng.random() < 0.8 else mother
                parents.remove(absent)
            partner = "Spouse" if father.last == mother.last else "Unmarried partner"
            for i, p in enumerate(parents):
                self.count(p, home, "Householder" if i == 0 else partner)
            elsewhere = None
            if absent is not None and rng.random() < CHILD_TWO_HOMES:
                elsewhere = self.address()
                self.count(absent, elsewhere, "Householder")
            for k in self.children(father, mother):
                self.count(k, home, RELATIONSHIPS["child"][k.sex])
                if elsewhere is not None:
                    self.count(k, elsewhere, RELATIONSHIPS["child"][k.sex])
                age = (CENSUS_DAY - k.dob).days / 365.25
                if 18 <= age < 23 and rng.random() < STUDENT_TWICE:
                    self.count(k, self.address(), "Roommate")
            if kind == "three_generations":
                for _ in range(int(rng.integers(1, 3))):
                    grandparent = self.person(self.sex(), father.dob - timedelta(days=int(rng.uniform(20, 35) * 365.25)),
                                              father.last)
                    self.count(grandparent, home, RELATIONSHIPS["parent"][grandparent.sex])


def _dob_text(rng: np.random.Generator, dob: date, rates: dict, fmt: str) -> str:
    """The date of birth as a clerk wrote it: sometimes missing, 1 January of the year, day
    and month swapped, or one digit wrong."""
    u = rng.random(4)
    if u[0] < rates["dob_missing"]:
        return ""
    if u[1] < rates["dob_jan_first"]:
        dob = date(dob.year, 1, 1)
    elif u[2] < rates["dob_day_month_swap"] and dob.day <= 12 and dob.day != dob.month:
        dob = date(dob.year, dob.day, dob.month)
    text = dob.strftime(fmt)
    if u[3] < rates["dob_digit"]:
        # A digit of the day, the month or the year's last two; the century stays.
        layout = fmt.replace("%Y", "CCYY").replace("%m", "MM").replace("%d", "DD")
        text = digit_typo(rng, text, [i for i, ch in enumerate(layout) if ch in "YMD"])
    return text


def _names(rng: np.random.Generator, p: Person, rates: dict, nick: dict[str, list[str]], last: str) -> tuple[str, str, str]:
    """Forename, middle name and surname as recorded, with the source's name noise."""
    first, middle = p.first, p.middle
    u = rng.random(9)
    if u[0] < rates["nickname"]:
        shorter = nick.get(first, []) + [t for t in (truncation(first),) if t]
        if shorter:
            first = shorter[int(rng.integers(0, len(shorter)))]
    if u[1] < rates["swap_first_middle"] and middle:
        first, middle = middle, first
    if u[2] < rates["typo_first"]:
        first = keyboard_typo(rng, first)
    if u[3] < rates["phonetic_first"]:
        first = phonetic_variant(rng, first)
    if u[4] < rates["initial_only"]:
        first = first[:1]
    if u[5] < rates["blank_first"]:
        first = ""
    if u[6] < rates["typo_last"]:
        last = keyboard_typo(rng, last)
    if u[7] < rates["phonetic_last"]:
        last = phonetic_variant(rng, last)
    if u[8] < rates["middle_missing"]:
        middle = ""
    return first, middle, last


def generate(out: Path, people: int | None = None, seed: int = 1) -> Path:
    """Write the census set into `out` (extracts/, contracts/, labels.csv, testset.json)."""
    out, people = Path(out), people or PEOPLE
    rng = np.random.default_rng(seed)
    pop = _Population(rng)
    kinds, probs = list(HOUSEHOLDS), list(HOUSEHOLDS.values())
    while len(pop.in_census) < people:
        pop.household(kinds[int(rng.choice(len(kinds), p=probs))])
    movers = [i for i in range(len(pop.counted)) if rng.random() < MOVER_TWICE]
    pop.counted += [(pop.counted[i][0], pop.address(), pop.counted[i][2]) for i in movers]
    in_census = sorted(pop.in_census)
    nick = nicknames(("english",))

    rates = NOISE["census"]
    census_ids = scrambled_ids(rng, len(pop.counted), 9)
    rows, labels = [], []
    for rid, (pid, at, relationship) in zip(census_ids, pop.counted):
        p = pop.people[pid]
        last = f"{p.last} {p.suffix}" if p.suffix and rng.random() < rates["suffix_in_surname"] else p.last
        first, middle, last = _names(rng, p, rates, nick, last)
        age = (CENSUS_DAY.year - p.dob.year) - ((CENSUS_DAY.month, CENSUS_DAY.day) < (p.dob.month, p.dob.day))
        if rng.random() < rates["age_off_by_one"]:
            age = max(0, age + (1 if rng.random() < 0.5 else -1))
        number = digit_typo(rng, at.number) if rng.random() < rates["house_number_typo"] else at.number
        zipcode = digit_typo(rng, at.zipcode, [2, 3, 4]) if rng.random() < rates["zip_typo"] else at.zipcode
        sex = "" if rng.random() < rates["sex_blank"] else {"M": "Male", "F": "Female"}[p.sex]
        rows.append([rid, first, middle[:1], last, _dob_text(rng, p.dob, rates, "%m/%d/%Y"), age, sex, number,
                     at.street, at.unit, at.city, at.state, zipcode, relationship])
        labels.append(("census", "persons", rid, f"P{pid:07d}"))
    files = {"census/census_2020.csv": write_delimited(
        out / "extracts" / "census" / "census_2020.csv",
        ["person_id_census", "first_name", "middle_initial", "last_name", "date_of_birth", "age", "sex",
         "street_number", "street_name", "unit", "city", "state", "zipcode", "relationship"], rows)}

    # The registry: a share of the census population, plus people it never counted.
    registrants = [pid for pid in in_census
                   if rng.random() < (REGISTER_ADULT if (CENSUS_DAY - pop.people[pid].dob).days >= 18 * 365.25
                                      else REGISTER_CHILD)]
    for _ in range(int(len(registrants) * OUTSIDERS)):
        baby = rng.random() < 0.3
        dob = (CENSUS_DAY + timedelta(days=int(rng.integers(1, (LAST_BIRTH - CENSUS_DAY).days)))) if baby \
            else pop.born(18, 90)
        registrants.append(pop.person(pop.sex(), dob).pid)
    entries = [(pid, 0) for pid in registrants] + [(pid, 1) for pid in registrants if rng.random() < REREGISTER]
    entries = [entries[i] for i in rng.permutation(len(entries))]
    rates = NOISE["benefits"]
    phones = {pid: f"({rng.integers(201, 990)}) {rng.integers(200, 1000)}-{rng.integers(0, 10000):04d}"
              for pid in registrants}
    reg_ids = scrambled_ids(rng, len(entries), 8, "R")
    rows = []
    for rid, (pid, again) in zip(reg_ids, entries):
        p = pop.people[pid]
        maiden = p.birth_last != p.last and rng.random() < MAIDEN_NAME and not again
        first, middle, last = _names(rng, p, rates, nick, p.birth_last if maiden else p.last)
        gender = "U" if rng.random() < rates["sex_unknown"] else p.sex
        phone = phones[pid] if not again or rng.random() < PHONE_KEPT else \
            f"({rng.integers(201, 990)}) {rng.integers(200, 1000)}-{rng.integers(0, 10000):04d}"
        registered = max(p.dob, date(2012, 1, 1)) + timedelta(days=int(rng.integers(0, 800 + 800 * again)))
        rows.append([rid, first, middle, last, _dob_text(rng, p.dob, rates, "%Y%m%d"), gender, phone,
                     registered.strftime("%Y%m%d")])
        labels.append(("benefits", "registrations", rid, f"P{pid:07d}"))
    files["benefits/registrations.txt"] = write_delimited(
        out / "extracts" / "benefits" / "registrations.txt",
        ["reg_no", "first_name", "middle_name", "surname", "dob", "gender", "phone", "registered"], rows, "|")
    structure = {"twins": TWIN_RATE, "twin_similar_name": TWIN_SIMILAR_NAME, "junior": JUNIOR_RATE,
                 "shared_surname": SHARED_SURNAME, "child_two_homes": CHILD_TWO_HOMES, "student_twice": STUDENT_TWICE,
                 "mover_twice": MOVER_TWICE, "register_adult": REGISTER_ADULT, "register_child": REGISTER_CHILD,
                 "reregister": REREGISTER, "outsiders": OUTSIDERS, "maiden_name": MAIDEN_NAME}
    return finish(out, NAME, seed, people, files, labels, {"structure": structure, "fields": NOISE})
