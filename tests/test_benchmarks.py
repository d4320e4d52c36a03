"""Held-out public benchmarks onboarded through contracts alone (no per-dataset tuning)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_benchmarks", ROOT / "bench" / "bench_benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (DATA / "febrl4a.csv").is_file(), reason="../shared/data is not beside the repository")
def test_febrl4_links_through_contracts_alone(tmp_path):
    result = _bench().run_benchmark("febrl4", DATA, tmp_path)
    acc = {a["threshold"]: a for a in result["accuracy"]}
    # Measured: medium F1 0.9989 (issue 22's target is 0.999; 0.9994 before it): precision 1.0, 11
    # of 5,000 pairs missed. The model now learns each comparison from the EM sessions not mixed
    # with look-alikes, which puts FEBRL4's outright date-of-birth and id disagreements at their
    # measured rates (4%) rather than 14-17%, and a pair whose date and id were both replaced
    # ends at 0.9878. See docs/linkage.md.
    assert acc["medium"]["f1"] >= 0.998
    assert acc["high"]["precision"] > 0.999


@pytest.mark.skipif(not (DATA / "febrl3.csv").is_file(), reason="../shared/data is not beside the repository")
def test_febrl3_dedupes_through_a_contract_alone(tmp_path):
    result = _bench().run_benchmark("febrl3", DATA, tmp_path)
    acc = {a["threshold"]: a for a in result["accuracy"]}
    # Measured: medium F1 0.9992 (issue 22's target 0.995), precision 1.0.
    assert acc["medium"]["f1"] >= 0.995
    assert acc["high"]["precision"] > 0.999


@pytest.mark.skipif(not (DATA / "fake_1000.csv").is_file(), reason="../shared/data is not beside the repository")
def test_fake_1000_dedupes_through_a_contract_alone(tmp_path):
    # Emails onboarded as a hand-typed id, cities as the only address: roles the world's sources
    # do not use this way. Measured: medium F1 0.931 (0.940 before issue 22; 0.896 before u was
    # cleared of matches).
    result = _bench().run_benchmark("fake_1000", DATA, tmp_path)
    acc = {a["threshold"]: a for a in result["accuracy"]}
    assert acc["medium"]["f1"] > 0.93
    assert acc["high"]["precision"] > 0.95
