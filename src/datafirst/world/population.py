"""People of the synthetic world: households, names, births, addresses, ids carried by people.

Generated one chunk at a time with numpy so that a world of any size streams through a
fixed amount of memory. Everything here is the *truth*: recording errors are added later,
per source, in corrupt.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reference import ORIGINS, Reference

PERIOD_START = np.datetime64("2011-01-01")
PERIOD_END = np.datetime64("2024-12-31")

# Share of households by name origin (England and Wales, approximate, 2011-2021 censuses).
ORIGIN_WEIGHTS = np.array([0.74, 0.025, 0.055, 0.04, 0.035, 0.02, 0.045, 0.018, 0.008, 0.014])

# 2021 census ethnic group codes, with how each name origin maps onto them.
ETHNICITY_BY_ORIGIN: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "british": (("W1", "W3", "M1", "M3", "W9", "B1"), (0.9, 0.01, 0.03, 0.02, 0.02, 0.02)),
    "irish": (("W2", "W1", "W3"), (0.7, 0.22, 0.08)),
    "south_asian_muslim": (("A2", "A3", "A9", "M3"), (0.62, 0.3, 0.05, 0.03)),
    "south_asian_hindu_sikh": (("A1", "A9", "M3"), (0.9, 0.07, 0.03)),
    "black_african": (("B2", "B9", "M2"), (0.88, 0.07, 0.05)),
    "black_caribbean": (("B1", "M1", "B9"), (0.75, 0.2, 0.05)),
    "east_european": (("W9", "W4"), (0.93, 0.07)),
    "arabic": (("O1", "A9", "O9"), (0.8, 0.1, 0.1)),
    "chinese": (("A4", "A9"), (0.92, 0.08)),
    "south_european": (("W9", "O9", "M9"), (0.85, 0.1, 0.05)),
}

# Letters that appear in the unit part of real UK postcodes (C I K M O V are never used).
UNIT_LETTERS = np.array(list("ABDEFGHJLNPQRSTUWXYZ"), dtype=object)
STREET_STEMS = np.array(
    "Church Station Victoria Park Mill High Queen King Albert Manor School Green Chapel Grange Windsor "
    "York Oak Elm Ash Beech Willow Meadow Orchard Castle Bridge Market Spring Hill Valley Brook "
    "Cross Priory Abbey Clarence Stanley Grosvenor Hawthorn Rowan Cedar Holly Heath Moor Forest Lime "
    "Nelson Wellington Cromwell Alexandra Princess Coronation Jubilee Derby Shakespeare Milton Byron".split(),
    dtype=object,
)
STREET_SUFFIXES = np.array("Road Street Lane Avenue Close Drive Way Gardens Crescent Terrace Place Grove Court".split(), dtype=object)

MAX_ADDRESSES = 6  # an address history holds at most this many addresses


def scramble_ids(counter: np.ndarray, shape: tuple[int, int], seed: int) -> np.ndarray:
    """A keyed bijection of 0..a*b-1 (a four-round Feistel network over Z_a x Z_b), so that
    sequential counters become unique ids that reveal neither the order of generation nor
    who sits next to whom."""
    a, b = shape
    x = counter.astype(np.int64)
    left, right = x // b, x % b
    for k in range(4):
        key = np.uint64((seed * 0x9E3779B1 + k * 0x85EBCA77) % 2**63)
        with np.errstate(over="ignore"):  # splitmix64 as the round function; wrapping is intended
            z = right.astype(np.uint64) + key
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            mix = z ^ (z >> np.uint64(31))
        left, right = right, (left + (mix % np.uint64(a)).astype(np.int64)) % a
        a, b = b, a
    return left * b + right


def _choice_by_group(rng: np.random.Generator, keys: np.ndarray, pools: dict, n: int) -> np.ndarray:
    """Sample one value per row from the pool named by that row's key."""
    out = np.empty(n, dtype=object)
    for key in sorted(set(keys.tolist()), key=str):
        idx = np.flatnonzero(keys == key)
        out[idx] = pools[key].sample(rng, len(idx))
    return out


def _forename_keys(origin: np.ndarray, sex: np.ndarray) -> np.ndarray:
    return (origin + "|" + sex).astype(object)


def forename_pools(ref: Reference) -> dict:
    return {f"{o}|{s}": pool for (o, s), pool in ref.forenames.items()}


def random_dates(rng: np.random.Generator, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """One uniform date per row in [start, end] (datetime64[D] arrays)."""
    span = (end - start).astype(np.int64)
    offset = np.floor(rng.random(len(span)) * (np.maximum(span, 0) + 1)).astype(np.int64)
    return start + offset.astype("timedelta64[D]")


def postcode_strings(ref: Reference, area_idx: np.ndarray, district: np.ndarray, sector: np.ndarray,
                     unit: np.ndarray) -> np.ndarray:
    areas = np.array([a["area"] for a in ref.postcode_areas], dtype=object)
    return np.array(
        [f"{a}{d} {s}{u}" for a, d, s, u in zip(areas[area_idx], district.tolist(), sector.tolist(), unit.tolist())],
        dtype=object,
    )


@dataclass
class People:
    """One chunk of people; every array has one row per person."""

    person_id: np.ndarray  # int64, global and dense
    household: np.ndarray  # int64 index into the chunk's households
    role: np.ndarray  # adult1 / adult2 / child
    sex: np.ndarray  # 'M' / 'F'
    origin: np.ndarray
    ethnicity: np.ndarray
    forename: np.ndarray
    middle_names: np.ndarray  # space separated, '' for none
    surname: np.ndarray  # surname now (end of period)
    previous_surname: np.ndarray  # '' unless the surname changed during the period
    surname_changed_on: np.ndarray  # datetime64[D], NaT unless changed during the period
    dob: np.ndarray  # datetime64[D]
    is_offender: np.ndarray  # bool
    pnc: np.ndarray  # '' for none
    cro: np.ndarray
    alias_forename: np.ndarray  # '' when the person uses no alias
    alias_surname: np.ndarray
    alias_dob: np.ndarray  # datetime64[D]
    # Household address histories: rows are households, columns are successive addresses.
    address_from: np.ndarray  # datetime64[D] (H, MAX_ADDRESSES), NaT past the last
    postcode: np.ndarray  # object (H, MAX_ADDRESSES)
    address_line: np.ndarray  # object (H, MAX_ADDRESSES)
    town: np.ndarray  # object (H, MAX_ADDRESSES)
    household_has_children: np.ndarray  # bool per household

    def __len__(self) -> int:
        return len(self.person_id)

    def address_index_at(self, person: np.ndarray, when: np.ndarray) -> np.ndarray:
        """Which address of the person's household history applies on each date."""
        starts = self.address_from[self.household[person]]
        valid = ~np.isnat(starts)
        return np.maximum((valid & (starts <= when[:, None])).sum(axis=1) - 1, 0)

    def surname_at(self, person: np.ndarray, when: np.ndarray) -> np.ndarray:
        changed = self.surname_changed_on[person]
        before = ~np.isnat(changed) & (when < changed)
        return np.where(before, self.previous_surname[person], self.surname[person])


def police_check_letter(year2: np.ndarray, serial: np.ndarray, serial_digits: int) -> np.ndarray:
    """PNC/CRO check character: (2-digit year and serial as one number) mod 23 indexes this
    alphabet (the letters I, O and S are not used). PNC serials have 7 digits, CRO 6."""
    letters = np.array(list("ZABCDEFGHJKLMNPQRTUVWXY"), dtype=object)
    return letters[((year2.astype(np.int64) * 10**serial_digits + serial.astype(np.int64)) % 23)]


def make_people(rng: np.random.Generator, ref: Reference, n_people: int, first_person_id: int) -> People:
    # --- households: type and size -------------------------------------------------------
    n_hh_guess = int(n_people * 0.6) + 16
    hh_type = rng.choice(4, size=n_hh_guess, p=[0.36, 0.2, 0.26, 0.18])  # single, couple, couple+kids, lone parent+kids
    n_kids = np.where(hh_type >= 2, 1 + rng.binomial(2, 0.4, n_hh_guess), 0)
    n_adults = np.where((hh_type == 1) | (hh_type == 2), 2, 1)
    size = n_adults + n_kids
    n_hh = int(np.searchsorted(np.cumsum(size), n_people) + 1)
    hh_type, n_kids, n_adults, size = hh_type[:n_hh], n_kids[:n_hh], n_adults[:n_hh], size[:n_hh]
    hh_origin = np.array(ORIGINS, dtype=object)[rng.choice(len(ORIGINS), size=n_hh, p=ORIGIN_WEIGHTS / ORIGIN_WEIGHTS.sum())]
    hh_surname = _choice_by_group(rng, hh_origin, ref.surnames, n_hh)
    hh_base_year = np.clip(np.round(rng.normal(1979, 13, n_hh)), 1940, 2003).astype(np.int64)

    household = np.repeat(np.arange(n_hh), size)[:n_people]
    rank = np.arange(len(household)) - np.repeat(np.cumsum(size) - size, size)[:n_people]
    role = np.where(rank == 0, "adult1", np.where(rank < n_adults[household], "adult2", "child")).astype(object)
    n = len(household)
    is_a1, is_a2, is_child = role == "adult1", role == "adult2", role == "child"

    # --- sex, origin, birth dates ---------------------------------------------------------
    lone_parent = hh_type[household] == 3
    p_male = np.where(is_a1, np.where(lone_parent, 0.12, 0.62), 0.5)
    sex = np.where(rng.random(n) < p_male, "M", "F").astype(object)
    a1_sex = sex[np.flatnonzero(is_a1)][household]  # the first row of every household is its adult1
    partner_opposite = rng.random(n) < 0.95
    sex = np.where(is_a2 & partner_opposite, np.where(a1_sex == "M", "F", "M"), sex).astype(object)
    origin = hh_origin[household].copy()
    mixed = is_a2 & (rng.random(n) < 0.1)
    origin[mixed] = np.array(ORIGINS, dtype=object)[rng.choice(len(ORIGINS), size=int(mixed.sum()), p=ORIGIN_WEIGHTS)]

    base = hh_base_year[household]
    birth_year = np.where(
        is_a1, base,
        np.where(is_a2, base + np.round(rng.normal(-2, 4, n)).astype(np.int64),
                 np.minimum(base + rng.integers(18, 41, n), 2022)),
    ).astype(np.int64)
    jan1 = (birth_year - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    dob = jan1 + rng.integers(0, 365, n).astype("timedelta64[D]")

    # --- names ----------------------------------------------------------------------------
    keys = _forename_keys(origin, sex)
    fpools = forename_pools(ref)
    forename = _choice_by_group(rng, keys, fpools, n)
    british_like = np.isin(origin, ["british", "irish", "black_caribbean"])
    n_middle = np.where(british_like, rng.choice(3, n, p=[0.3, 0.58, 0.12]), rng.choice(3, n, p=[0.6, 0.35, 0.05]))
    m1 = _choice_by_group(rng, keys, fpools, n)
    m2 = _choice_by_group(rng, keys, fpools, n)
    middle = np.where(n_middle == 0, "", np.where(n_middle == 1, m1, m1 + " " + m2)).astype(object)
    middle = np.where(middle == forename, "", middle).astype(object)

    own_surname = _choice_by_group(rng, origin, ref.surnames, n)
    took_name = is_a2 & (rng.random(n) < 0.55)
    surname = np.where(is_a1 | took_name, hh_surname[household], own_surname).astype(object)
    a2_rows = np.flatnonzero(is_a2)
    a2_surname_by_hh = np.full(n_hh, "", dtype=object)
    a2_surname_by_hh[household[a2_rows]] = surname[a2_rows]
    kid_draw = rng.random(n)
    other = a2_surname_by_hh[household]
    has_other = (other != "") & (other != hh_surname[household])
    surname = np.where(is_child & has_other & (kid_draw < 0.1), other, surname).astype(object)
    double = is_child & has_other & (kid_draw >= 0.1) & (kid_draw < 0.16)
    surname[double] = hh_surname[household[double]] + "-" + other[double]

    # Marriages during the period: the partner's earlier surname is used before that date.
    changed = took_name & (rng.random(n) < 0.3) & (own_surname != surname)
    previous_surname = np.where(changed, own_surname, "").astype(object)
    change_date = random_dates(rng, np.full(n, PERIOD_START), np.full(n, PERIOD_END - 365))
    surname_changed_on = np.where(changed, change_date, np.datetime64("NaT"))

    # People who share a name and birth year with someone else but are different people.
    singles = np.flatnonzero(is_a1 & (hh_type[household] == 0))
    n_twins = min(len(singles) // 2, int(0.01 * n))
    if n_twins:
        picks = rng.choice(singles, size=2 * n_twins, replace=False)
        src, dst = picks[:n_twins], picks[n_twins:]
        forename[dst], surname[dst], sex[dst] = forename[src], surname[src], sex[src]
        dob[dst] = (birth_year[src] - 1970).astype("datetime64[Y]").astype("datetime64[D]") + rng.integers(0, 365, n_twins).astype("timedelta64[D]")

    ethnicity = np.empty(n, dtype=object)
    for o in ORIGINS:
        idx = np.flatnonzero(origin == o)
        codes, probs = ETHNICITY_BY_ORIGIN[o]
        ethnicity[idx] = np.array(codes, dtype=object)[rng.choice(len(codes), size=len(idx), p=probs)]

    # --- offending population and the ids the police give them --------------------------
    age_2024 = 2024 - birth_year
    p_off = np.where(sex == "M", 0.62, 0.22) * np.where(age_2024 < 20, 0.3, 1.0)
    is_offender = (age_2024 >= 20) & (rng.random(n) < p_off) | ((age_2024 >= 17) & (rng.random(n) < 0.02))
    has_pnc = is_offender & (rng.random(n) < 0.92)
    pnc_year = np.clip(birth_year + rng.integers(16, 30, n), 1995, 2024)
    pnc_serial = rng.integers(1, 9_999_999, n)
    pnc = np.array(
        [f"{y}/{s:07d}{c}" for y, s, c in zip(pnc_year.tolist(), pnc_serial.tolist(),
                                               police_check_letter(pnc_year % 100, pnc_serial, 7).tolist())],
        dtype=object,
    )
    pnc[~has_pnc] = ""
    has_cro = has_pnc & (rng.random(n) < 0.55)
    cro_serial = rng.integers(1, 999_999, n)
    cro = np.array(
        [f"{s:06d}/{y % 100:02d}{c}" for y, s, c in zip(pnc_year.tolist(), cro_serial.tolist(),
                                                       police_check_letter(pnc_year % 100, cro_serial, 6).tolist())],
        dtype=object,
    )
    cro[~has_cro] = ""

    uses_alias = is_offender & (rng.random(n) < 0.06)
    alias_kind = rng.integers(0, 3, n)  # 0 other forename, 1 other surname, 2 both
    alt_fore = _choice_by_group(rng, keys, fpools, n)
    alt_sur = _choice_by_group(rng, origin, ref.surnames, n)
    alias_forename = np.where(uses_alias, np.where(alias_kind != 1, alt_fore, forename), "").astype(object)
    alias_surname = np.where(uses_alias, np.where(alias_kind != 0, alt_sur, surname), "").astype(object)
    alias_shift = np.where(rng.random(n) < 0.5, 0, rng.integers(-400, 400, n))
    alias_dob = dob + alias_shift.astype("timedelta64[D]")

    # --- household address histories -----------------------------------------------------
    moves = np.minimum(rng.poisson(0.13 * 14, n_hh), MAX_ADDRESSES - 1)
    move_dates = np.sort(
        PERIOD_START + np.floor(rng.random((n_hh, MAX_ADDRESSES - 1)) * 5113).astype("timedelta64[D]"), axis=1
    )
    address_from = np.full((n_hh, MAX_ADDRESSES), np.datetime64("NaT"), dtype="datetime64[D]")
    address_from[:, 0] = np.datetime64("1990-01-01")
    for k in range(1, MAX_ADDRESSES):
        address_from[:, k] = np.where(moves >= k, move_dates[:, k - 1], np.datetime64("NaT"))

    max_district = np.array([int(a["max_district"]) for a in ref.postcode_areas])
    towns = np.array([a["town"] for a in ref.postcode_areas], dtype=object)
    area = np.empty((n_hh, MAX_ADDRESSES), dtype=np.int64)
    district = np.empty((n_hh, MAX_ADDRESSES), dtype=np.int64)
    area[:, 0] = ref.area_pool.sample(rng, n_hh).astype(np.int64)
    district[:, 0] = 1 + np.floor(rng.random(n_hh) * max_district[area[:, 0]]).astype(np.int64)
    for k in range(1, MAX_ADDRESSES):
        how = rng.random(n_hh)
        new_area = ref.area_pool.sample(rng, n_hh).astype(np.int64)
        area[:, k] = np.where(how < 0.8, area[:, k - 1], new_area)
        new_district = 1 + np.floor(rng.random(n_hh) * max_district[area[:, k]]).astype(np.int64)
        district[:, k] = np.where(how < 0.45, district[:, k - 1], new_district)
    sector = rng.integers(0, 10, (n_hh, MAX_ADDRESSES))
    unit = UNIT_LETTERS[rng.integers(0, len(UNIT_LETTERS), (n_hh, MAX_ADDRESSES))] + UNIT_LETTERS[
        rng.integers(0, len(UNIT_LETTERS), (n_hh, MAX_ADDRESSES))]
    flat = postcode_strings(ref, area.ravel(), district.ravel(), sector.ravel(), unit.ravel())
    postcode = flat.reshape(n_hh, MAX_ADDRESSES)
    house = rng.integers(1, 240, (n_hh, MAX_ADDRESSES))
    street = STREET_STEMS[rng.integers(0, len(STREET_STEMS), (n_hh, MAX_ADDRESSES))] + " " + STREET_SUFFIXES[
        rng.integers(0, len(STREET_SUFFIXES), (n_hh, MAX_ADDRESSES))]
    address_line = np.array([f"{h} {s}" for h, s in zip(house.ravel().tolist(), street.ravel().tolist())],
                            dtype=object).reshape(n_hh, MAX_ADDRESSES)

    return People(
        person_id=first_person_id + np.arange(n, dtype=np.int64),
        household=household,
        role=role,
        sex=sex,
        origin=origin,
        ethnicity=ethnicity,
        forename=forename,
        middle_names=middle,
        surname=surname,
        previous_surname=previous_surname,
        surname_changed_on=surname_changed_on,
        dob=dob,
        is_offender=is_offender,
        pnc=pnc,
        cro=cro,
        alias_forename=alias_forename,
        alias_surname=alias_surname,
        alias_dob=alias_dob,
        address_from=address_from,
        postcode=postcode,
        address_line=address_line,
        town=towns[area],
        household_has_children=n_kids > 0,
    )
