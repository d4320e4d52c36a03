"""The historical test set: one file of old records to deduplicate.

About 12,000 people born 1650-1920 in seven European naming traditions (English, German,
French, Italian, Dutch, Scandinavian, Polish), each with 1 to 20 records (long-tailed: most have
2-6), about 50,000 records in `historical/records.csv`, as a genealogy index might hold them:
baptisms, marriages, censuses, burials, each transcribed by someone else.

People come in families (parents and children sharing a surname and a birth place, women
appearing under their birth and their married surnames, first sons named after their father)
and as namesakes (many a Johann Müller, some copied on purpose, more by chance from long-tailed
name lists). Every record carries what its transcriber made of the person: the name as written
(`full_name`, with a title such as Rev or Dr and a suffix such as Jr now and then), the first
forename and surname as indexed, a date of birth (often missing, often only the year, written
YYYY-01-01), the birth place (sometimes another spelling: Cöln, Danzig, Lyons), an occupation in
free text (cloth merchant, draper, clothier), a made-up UK-format postcode of one of the
person's addresses (Scottish and Northern Irish areas), and the gender.

What it deliberately does not share with the justice world: dates before 1900 everywhere,
continental European names with their diacritics and diminutives (Hans for Johann, Kasia for
Katarzyna, Kees for Cornelis, from our own list reference/nicknames.csv), compound forenames
and Rufnamen (Johann Georg known as Georg), Polish feminine surname forms, birth place and
occupation as the evidence beside the name, one source to deduplicate rather than many to
link, and no police ids. The noise rates are the constants below; testset.json records them.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from .noise import (Picker, digit_typo, finish, keyboard_typo, nicknames, phonetic_variant, random_dates,
                    read_reference, scrambled_ids, spelling_variants, truncation, write_delimited)

NAME = "historical"
PEOPLE = 12_000
FIRST_BIRTH, LAST_BIRTH = date(1650, 1, 1), date(1920, 12, 31)
TRADITIONS = {"english": 0.25, "german": 0.22, "french": 0.13, "italian": 0.12, "dutch": 0.10, "scandinavian": 0.10,
              "polish": 0.08}
SECOND_FORENAME = {"english": 0.15, "german": 0.5, "french": 0.3, "italian": 0.2, "dutch": 0.3, "scandinavian": 0.3,
                   "polish": 0.15}
RECORDS_SHAPE, RECORDS_MEAN, RECORDS_MAX = 1.2, 4.2, 20   # 1 + negative binomial, capped
FAMILY_SHARE = 0.6              # of households: parents with 1-6 children (the rest: one person)
FATHERS_NAME = 0.2              # of families: the first son gets his father's forenames (Jr)
NAMESAKE_RATE = 0.03            # people given the forenames and surname of another, unrelated person
PARENT_BORN_ELSEWHERE = 0.5     # parents born in another town of their tradition
WOMEN_WITHOUT_OCCUPATION = 0.5
POSTCODES = (1, 2, 3)           # addresses a person has had
POSTCODE_AREAS = ("AB", "DD", "DG", "EH", "FK", "G", "HS", "IV", "KA", "KW", "KY", "ML", "PA", "PH", "TD", "ZE", "BT")
POSTCODE_UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
TITLES = {"priest": "Rev", "pastor": "Rev", "physician": "Dr", "lawyer": "Dr", "gentleman": "Sir", "mariner": "Capt"}

# Noise rates (share of records; a rate for a kind of person is a share of that person's records).
NOISE = {
    "nickname": 0.05, "spelling_variant": 0.06, "typo_first": 0.03, "initial_only": 0.03, "first_missing": 0.03,
    "no_forename": 0.01, "only_first_forename": 0.3, "only_second_forename": 0.08, "diacritics_dropped": 0.15,
    "surname_variant": 0.05, "typo_surname": 0.03, "surname_missing": 0.01, "maiden_name": 0.3,
    "polish_masculine_form": 0.15, "title_shown": 0.5, "suffix_shown": 0.5,
    "dob_missing": 0.3, "dob_year_only": 0.25, "dob_year_off_by_one": 0.04, "dob_digit": 0.02,
    "dob_day_month_swap": 0.02,
    "birth_place_missing": 0.2, "birth_place_variant": 0.05, "birth_place_typo": 0.02,
    "occupation_missing": 0.35, "occupation_variant": 0.3, "occupation_other": 0.05,
    "postcode_missing": 0.35, "postcode_typo": 0.02, "gender_missing": 0.05,
}


@dataclass
class Person:
    pid: int
    tradition: str
    sex: str
    forenames: list[str]
    surname: str
    dob: date
    town: str
    occupation: str | None
    postcodes: list[str]
    birth_surname: str = ""     # a married woman's surname before marriage
    suffix: str = ""
    records: int = 1


def feminine(surname: str) -> str:
    """The Polish feminine form (Kowalski -> Kowalska, Zieliński -> Zielińska)."""
    for male, female in (("ski", "ska"), ("cki", "cka"), ("dzki", "dzka")):
        if surname.endswith(male):
            return surname[: -len(male)] + female
    return surname


def fold(text: str, rng: np.random.Generator) -> str:
    """Diacritics as a transcriber without them wrote the name: dropped (Müller -> Muller) or,
    half the time for German umlauts, spelt out (Müller -> Mueller)."""
    if rng.random() < 0.5:
        for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("Ä", "Ae"), ("Ö", "Oe"), ("Ü", "Ue")):
            text = text.replace(a, b)
    for a, b in (("ß", "ss"), ("ł", "l"), ("Ł", "L"), ("ø", "o"), ("Ø", "O"), ("æ", "ae"), ("å", "aa")):
        text = text.replace(a, b)
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))


class _World:
    """The people, drawn from the reference lists with one random generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        fore, sur, towns = (read_reference(f"historical_{n}.csv") for n in ("forenames", "surnames", "towns"))
        self.forenames = {(t, s): Picker([r["name"] for r in fore if (r["tradition"], r["sex"]) == (t, s)],
                                         [float(r["weight"]) for r in fore if (r["tradition"], r["sex"]) == (t, s)])
                          for t in TRADITIONS for s in "mf"}
        self.surnames = {t: Picker([r["name"] for r in sur if r["tradition"] == t],
                                   [float(r["weight"]) for r in sur if r["tradition"] == t]) for t in TRADITIONS}
        self.towns = {t: Picker([r["town"] for r in towns if r["tradition"] == t],
                                [float(r["weight"]) for r in towns if r["tradition"] == t]) for t in TRADITIONS}
        jobs = read_reference("occupations.csv")
        self.jobs = {s: Picker([r["occupation"] for r in jobs if r["sex"] in (s, "a")],
                               [float(r["weight"]) for r in jobs if r["sex"] in (s, "a")]) for s in "mf"}
        self.job_variants = {r["occupation"]: r["variants"].split(";") for r in jobs}
        self.traditions = Picker(list(TRADITIONS), list(TRADITIONS.values()))
        self.people: list[Person] = []

    def postcode(self) -> str:
        rng = self.rng
        area = POSTCODE_AREAS[int(rng.integers(0, len(POSTCODE_AREAS)))]
        unit = "".join(POSTCODE_UNIT_LETTERS[int(i)] for i in rng.integers(0, len(POSTCODE_UNIT_LETTERS), 2))
        return f"{area}{int(rng.integers(1, 21))} {int(rng.integers(0, 10))}{unit}"

    def person(self, tradition: str, sex: str, dob: date, surname: str | None = None, town: str | None = None,
               forenames: list[str] | None = None) -> Person:
        rng = self.rng
        if forenames is None:
            forenames = [self.forenames[tradition, sex].one(rng)]
            if rng.random() < SECOND_FORENAME[tradition]:
                second = self.forenames[tradition, sex].one(rng)
                if second != forenames[0]:
                    forenames.append(second)
        surname = surname or self.surnames[tradition].one(rng)
        if tradition == "polish" and sex == "f":
            surname = feminine(surname)
        occupation = None if sex == "f" and rng.random() < WOMEN_WITHOUT_OCCUPATION else self.jobs[sex].one(rng)
        records = 1 + min(RECORDS_MAX - 1, int(rng.negative_binomial(
            RECORDS_SHAPE, RECORDS_SHAPE / (RECORDS_SHAPE + RECORDS_MEAN - 1))))
        p = Person(len(self.people), tradition, sex, forenames, surname, dob, town or self.towns[tradition].one(rng),
                   occupation, [self.postcode() for _ in range(int(rng.choice(POSTCODES)))], records=records)
        self.people.append(p)
        return p

    def family(self) -> None:
        """Two parents and 1-6 children born in the family's town, all under the father's surname
        (the mother's own surname kept as her birth surname)."""
        rng = self.rng
        tradition = self.traditions.one(rng)
        town = self.towns[tradition].one(rng)
        father_dob = random_dates(rng, FIRST_BIRTH, date(1880, 12, 31), 1)[0]

        def born_where() -> str | None:
            return None if rng.random() < PARENT_BORN_ELSEWHERE else town

        father = self.person(tradition, "m", father_dob, town=born_where())
        mother = self.person(tradition, "f", max(FIRST_BIRTH, father_dob + timedelta(days=int(rng.normal(900, 1500)))),
                             town=born_where())
        mother.birth_surname, mother.surname = mother.surname, (
            feminine(father.surname) if tradition == "polish" else father.surname)
        start = mother.dob + timedelta(days=int(18 * 365.25))
        end = min(mother.dob + timedelta(days=int(42 * 365.25)), LAST_BIRTH)
        if start >= end:
            return
        named_after = rng.random() < FATHERS_NAME
        for dob in sorted(random_dates(rng, start, end, int(rng.integers(1, 7)))):
            sex = "m" if rng.random() < 0.5 else "f"
            if named_after and sex == "m":
                self.person(tradition, sex, dob, father.surname, town, list(father.forenames)).suffix = "Jr"
                father.suffix, named_after = "Sr", False
            else:
                self.person(tradition, sex, dob, father.surname, town)

    def namesakes(self) -> None:
        """Give some people the names of another, unrelated person of the same tradition and sex."""
        rng = self.rng
        n = len(self.people)
        for i in np.flatnonzero(rng.random(n) < NAMESAKE_RATE):
            other = self.people[int(rng.integers(0, n))]
            p = self.people[int(i)]
            if other.tradition == p.tradition and other.sex == p.sex and other.pid != p.pid and not p.birth_surname:
                p.forenames, p.surname = list(other.forenames), other.surname


class _Transcriber:
    """One record of a person, as a transcriber wrote it."""

    def __init__(self, world: _World, rng: np.random.Generator):
        self.world, self.rng = world, rng
        self.nick = nicknames()
        self.variants = {k: spelling_variants(k) for k in ("forename", "surname", "town")}

    def u(self) -> float:
        return self.rng.random()

    def _pick(self, options: list[str]) -> str:
        return options[int(self.rng.integers(0, len(options)))]

    def _forename(self, name: str) -> str:
        u = self.u
        if u() < NOISE["nickname"]:
            short = self.nick.get(name, []) + [t for t in (truncation(name),) if t]
            name = self._pick(short) if short else name
        elif u() < NOISE["spelling_variant"]:
            name = self._pick(self.variants["forename"][name]) if name in self.variants["forename"] \
                else phonetic_variant(self.rng, name)
        if u() < NOISE["typo_first"]:
            name = keyboard_typo(self.rng, name)
        return fold(name, self.rng) if u() < NOISE["diacritics_dropped"] else name

    def _surname(self, p: Person) -> str:
        u = self.u
        name = p.birth_surname if p.birth_surname and u() < NOISE["maiden_name"] else p.surname
        if p.tradition == "polish" and p.sex == "f" and u() < NOISE["polish_masculine_form"]:
            name = next((s for s in self.world.surnames["polish"].values if feminine(s) == name and s != name), name)
        if u() < NOISE["surname_variant"]:
            name = self._pick(self.variants["surname"][name]) if name in self.variants["surname"] \
                else phonetic_variant(self.rng, name)
        if u() < NOISE["typo_surname"]:
            name = keyboard_typo(self.rng, name)
        return fold(name, self.rng) if u() < NOISE["diacritics_dropped"] else name

    def _dob(self, dob: date) -> str:
        u = self.u
        if u() < NOISE["dob_missing"]:
            return ""
        year = dob.year + (int(self.rng.choice((-1, 1))) if u() < NOISE["dob_year_off_by_one"] else 0)
        if u() < NOISE["dob_year_only"]:
            dob = date(year, 1, 1)
        elif u() < NOISE["dob_day_month_swap"] and dob.day <= 12 and dob.day != dob.month:
            dob = date(year, dob.day, dob.month)
        elif year != dob.year:
            dob = date(year, dob.month, 28) if (dob.month, dob.day) == (2, 29) else date(year, dob.month, dob.day)
        text = dob.isoformat()
        return digit_typo(self.rng, text, [2, 3, 5, 6, 8, 9]) if u() < NOISE["dob_digit"] else text

    def record(self, p: Person) -> list[str]:
        u, rng = self.u, self.rng
        forenames = list(p.forenames)
        if len(forenames) > 1:
            if u() < NOISE["only_first_forename"]:
                forenames = forenames[:1]
            elif u() < NOISE["only_second_forename"]:
                forenames = forenames[1:]
        forenames = [self._forename(n) for n in forenames]
        if u() < NOISE["initial_only"]:
            forenames[0] = forenames[0][:1] + "."
        if u() < NOISE["no_forename"]:
            forenames = []
        surname = self._surname(p)
        title = TITLES.get(p.occupation or "", "")
        parts = ([title] if title and u() < NOISE["title_shown"] else []) + forenames + [surname]
        if p.suffix and u() < NOISE["suffix_shown"]:
            parts.append(p.suffix)
        first = "" if not forenames or u() < NOISE["first_missing"] else forenames[0]
        town = "" if u() < NOISE["birth_place_missing"] else p.town
        if town and u() < NOISE["birth_place_variant"]:
            town = self._pick(self.variants["town"][town]) if town in self.variants["town"] else fold(town, rng)
        if town and u() < NOISE["birth_place_typo"]:
            town = keyboard_typo(rng, town)
        job = p.occupation
        if job and u() < NOISE["occupation_other"]:
            job = self.world.jobs[p.sex].one(rng)
        job = "" if not job or u() < NOISE["occupation_missing"] else (
            self._pick(self.world.job_variants[job]) if u() < NOISE["occupation_variant"] else job)
        postcode = "" if u() < NOISE["postcode_missing"] else self._pick(p.postcodes)
        if postcode and u() < NOISE["postcode_typo"]:
            postcode = digit_typo(rng, postcode)
        gender = "" if u() < NOISE["gender_missing"] else p.sex
        return [" ".join(parts), first, "" if u() < NOISE["surname_missing"] else surname, self._dob(p.dob), town,
                job, postcode, gender]


def generate(out: Path, people: int | None = None, seed: int = 1) -> Path:
    """Write the historical set into `out` (extracts/, contracts/, labels.csv, testset.json)."""
    out, people = Path(out), people or PEOPLE
    rng = np.random.default_rng(seed)
    world = _World(rng)
    while len(world.people) < people:
        if rng.random() < FAMILY_SHARE:
            world.family()
        else:
            tradition = world.traditions.one(rng)
            world.person(tradition, "m" if rng.random() < 0.5 else "f",
                         random_dates(rng, FIRST_BIRTH, LAST_BIRTH, 1)[0])
    world.namesakes()
    order = [p.pid for p in world.people for _ in range(p.records)]
    order = [order[i] for i in rng.permutation(len(order))]
    transcriber = _Transcriber(world, rng)
    ids = scrambled_ids(rng, len(order), 8)
    rows = [[rid] + transcriber.record(world.people[pid]) for rid, pid in zip(ids, order)]
    labels = [("historical", "records", rid, f"H{pid:06d}") for rid, pid in zip(ids, order)]
    files = {"historical/records.csv": write_delimited(
        out / "extracts" / "historical" / "records.csv",
        ["record_no", "full_name", "first_name", "surname", "dob", "birth_place", "occupation", "postcode", "gender"],
        rows)}
    structure = {"family_share": FAMILY_SHARE, "fathers_name": FATHERS_NAME, "namesakes": NAMESAKE_RATE,
                 "parent_born_elsewhere": PARENT_BORN_ELSEWHERE, "records_per_person_mean": RECORDS_MEAN,
                 "records_per_person_max": RECORDS_MAX}
    return finish(out, NAME, seed, people, files, labels, {"structure": structure, "fields": NOISE})
