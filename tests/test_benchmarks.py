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
    # Measured: medium F1 0.9994 (issue target 0.999), precision 1.0 at every threshold.
    assert acc["medium"]["f1"] >= 0.999
    assert acc["high"]["precision"] > 0.999


@pytest.mark.skipif(not (DATA / "fake_1000.csv").is_file(), reason="../shared/data is not beside the repository")
def test_fake_1000_dedupes_through_a_contract_alone(tmp_path):
    # Emails onboarded as a hand-typed id, cities as the only address: roles the world's sources
    # do not use this way. Measured: medium F1 0.940 (0.896 before u was cleared of matches).
    result = _bench().run_benchmark("fake_1000", DATA, tmp_path)
    acc = {a["threshold"]: a for a in result["accuracy"]}
    assert acc["medium"]["f1"] > 0.93
    assert acc["high"]["precision"] > 0.95
