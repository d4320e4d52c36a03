"""The test-set generators (src/datafirst/testsets): deterministic by seed, shaped as their
contracts say, fully labelled, and with their planted defects at about the declared rates.
No linkage here (bench/bench_testsets.py links them)."""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from datetime import date

import numpy as np
import pytest

from datafirst.sources.contract import load_contracts
from datafirst.testsets import TESTSETS, census, generate, historical
from datafirst.testsets.noise import keyboard_typo, phonetic_variant, truncation

SIZES = {"census": 3000, "historical": 2500}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("testsets")
    return {name: generate(name, root / name, people=SIZES[name], seed=7) for name in TESTSETS}


def _rows(out, contract, table) -> list[dict]:
    spec = contract.tables[table]
    with open(out / "extracts" / spec.file, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter=spec.delimiter))


def _labels(out) -> list[dict]:
    with open(out / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _near(observed: float, rate: float, n: int, slack: float = 0.005) -> bool:
    """Within four standard errors (plus a little slack) of the declared rate."""
    return abs(observed - rate) <= 4 * math.sqrt(rate * (1 - rate) / n) + slack


def test_same_seed_same_bytes_other_seed_other_data(sets, tmp_path):
    for name, out in sets.items():
        again = generate(name, tmp_path / name, people=SIZES[name], seed=7)
        files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
        assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
        other = generate(name, tmp_path / f"{name}-other", people=SIZES[name], seed=8)
        assert (other / "labels.csv").read_bytes() != (out / "labels.csv").read_bytes()


def test_contracts_load_and_match_the_files(sets):
    for name, out in sets.items():
        contracts = load_contracts(out / "contracts")
        manifest = json.loads((out / "testset.json").read_text())
        assert manifest["name"] == name and manifest["seed"] == 7 and manifest["noise"]["fields"]
        labels = _labels(out)
        for contract in contracts:
            for table, spec in contract.tables.items():
                rows = _rows(out, contract, table)
                assert list(rows[0]) == list(spec.columns), (name, table)
                assert manifest["rows"][spec.file] == len(rows)
                ids = [r[spec.record_id] for r in rows]
                assert len(set(ids)) == len(ids)
                labelled = [lab["record_id"] for lab in labels if (lab["source"], lab["table"]) == (contract.source, table)]
                assert sorted(labelled) == sorted(ids), (name, table)
        assert manifest["records"] == len(labels)
        # The truth never appears in an extract.
        pattern = re.compile(r"\b[PH][0-9]{6,7}\b")
        assert all(pattern.fullmatch(lab["true_id"]) for lab in labels)
        for path in (out / "extracts").rglob("*.*"):
            assert not pattern.search(path.read_text(encoding="utf-8")), path


def test_census_structure(sets):
    out = sets["census"]
    contracts = {c.source: c for c in load_contracts(out / "contracts")}
    people = _rows(out, contracts["census"], "persons")
    regs = _rows(out, contracts["benefits"], "registrations")
    truth = {(lab["source"], lab["record_id"]): lab["true_id"] for lab in _labels(out)}
    in_census = Counter(truth["census", r["person_id_census"]] for r in people)
    in_registry = Counter(truth["benefits", r["reg_no"]] for r in regs)
    assert 0.01 < sum(n - 1 for n in in_census.values()) / len(people) < 0.08       # counted twice
    assert any(n > 1 for n in in_registry.values())                                  # re-registrations
    assert 0.05 < len(set(in_registry) - set(in_census)) / len(in_registry) < 0.15   # not in the census
    assert 0.3 < len(set(in_registry) & set(in_census)) / len(in_census) < 0.6
    # Twins: same surname, date of birth and address, different people and forenames.
    homes = Counter((r["last_name"], r["date_of_birth"], r["street_number"], r["street_name"], r["zipcode"])
                    for r in people if r["relationship"] in ("Son", "Daughter"))
    assert sum(n > 1 for n in homes.values()) >= 5
    assert any(r["last_name"].endswith(" Jr") for r in people)
    years = [int(r["date_of_birth"][-4:]) for r in people if r["date_of_birth"]] + [int(r["dob"][:4]) for r in regs
                                                                                     if r["dob"]]
    assert min(years) < 1930 and max(years) > 2020
    assert all(len(r["zipcode"]) == 5 and r["zipcode"].isdigit() for r in people)
    assert {r["gender"] for r in regs} <= {"M", "F", "U"} and {r["sex"] for r in people} <= {"Male", "Female", ""}


def test_census_defect_rates(sets):
    out = sets["census"]
    contracts = {c.source: c for c in load_contracts(out / "contracts")}
    people = _rows(out, contracts["census"], "persons")
    regs = _rows(out, contracts["benefits"], "registrations")
    rates = census.NOISE
    assert _near(sum(r["date_of_birth"] == "" for r in people) / len(people), rates["census"]["dob_missing"], len(people))
    assert _near(sum(r["dob"] == "" for r in regs) / len(regs), rates["benefits"]["dob_missing"], len(regs))
    assert _near(sum(r["sex"] == "" for r in people) / len(people), rates["census"]["sex_blank"], len(people))
    assert _near(sum(r["gender"] == "U" for r in regs) / len(regs), rates["benefits"]["sex_unknown"], len(regs))
    blank_first = sum(r["first_name"] == "" for r in regs) / len(regs)
    assert _near(blank_first, rates["benefits"]["blank_first"], len(regs))
    # Middle names: missing for people without one, and dropped at the source's rate.
    expected = 1 - census.MIDDLE_NAME_RATE * (1 - rates["benefits"]["middle_missing"])
    assert _near(sum(r["middle_name"] == "" for r in regs) / len(regs), expected, len(regs), slack=0.02)
    # Dates: the written date against the truth, through the function that writes it.
    rng, n = np.random.default_rng(3), 20000
    dob = date(1970, 5, 9)
    written = Counter(census._dob_text(rng, dob, rates["benefits"], "%Y%m%d") for _ in range(n))
    assert _near(written[""] / n, rates["benefits"]["dob_missing"], n)
    assert _near(written["19700101"] / n, rates["benefits"]["dob_jan_first"] * (1 - rates["benefits"]["dob_missing"]), n)
    assert written["19700905"] > 0 and sum(v for k, v in written.items() if k not in ("", "19700101", "19700509",
                                                                                         "19700905")) > 0


def test_historical_structure_and_rates(sets):
    out = sets["historical"]
    contract = load_contracts(out / "contracts")[0]
    rows = _rows(out, contract, "records")
    truth = {lab["record_id"]: lab["true_id"] for lab in _labels(out)}
    per_person = Counter(truth[r["record_no"]] for r in rows)
    assert max(per_person.values()) <= historical.RECORDS_MAX
    assert 3.5 < len(rows) / len(per_person) < 5
    assert 0.3 < sum(2 <= n <= 6 for n in per_person.values()) / len(per_person)
    dated = [r["dob"] for r in rows if r["dob"]]
    assert sum(d < "1900" for d in dated) / len(dated) > 0.8
    assert min(dated) < "1700"
    n, rates = len(rows), historical.NOISE
    assert _near(sum(r["dob"] == "" for r in rows) / n, rates["dob_missing"], n)
    year_only = sum(r["dob"].endswith("-01-01") for r in rows) / n
    assert _near(year_only, rates["dob_year_only"] * (1 - rates["dob_missing"]), n, slack=0.01)
    assert _near(sum(r["birth_place"] == "" for r in rows) / n, rates["birth_place_missing"], n)
    assert _near(sum(r["postcode"] == "" for r in rows) / n, rates["postcode_missing"], n)
    assert _near(sum(r["gender"] == "" for r in rows) / n, rates["gender_missing"], n)
    # Namesakes: one written name shared by several people.
    people_by_name: dict = {}
    for r in rows:
        people_by_name.setdefault((r["first_name"], r["surname"]), set()).add(truth[r["record_no"]])
    assert max(len(p) for p in people_by_name.values()) >= 5
    assert any(r["full_name"].split()[0] in ("Rev", "Dr", "Sir", "Capt") for r in rows)
    assert any("ä" in r["full_name"] or "ü" in r["full_name"] or "ł" in r["full_name"] for r in rows)


def test_noise_functions():
    rng = np.random.default_rng(1)
    assert all(keyboard_typo(rng, "Margaret") != "Margaret" for _ in range(50))
    assert phonetic_variant(rng, "Philipp") != "Philipp" and phonetic_variant(rng, "Xq") == "Xq"
    assert [truncation(n) for n in ("Christopher", "Benjamin", "Alexander", "Anna")] == ["Chris", "Ben", "Alex", None]
    assert historical.feminine("Kowalski") == "Kowalska" and historical.feminine("Nowak") == "Nowak"
