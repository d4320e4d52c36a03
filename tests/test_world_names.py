"""The world's name distribution: a long tail of surnames, a moderate one of forenames, shares
near the public anchors of docs/world.md, deterministic draws, and a pipeline that never reads it."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datafirst.world.population import ORIGIN_WEIGHTS, _choice_by_group
from datafirst.world.reference import ORIGINS, load_reference

DRAWS = 200_000
SRC = Path(__file__).resolve().parents[1] / "src" / "datafirst"


def _draw_surnames(seed: int) -> np.ndarray:
    """Surnames of DRAWS people of origins drawn at the world's shares (as make_people does)."""
    ref = load_reference()
    rng = np.random.default_rng(seed)
    origin = np.array(ORIGINS, dtype=object)[rng.choice(len(ORIGINS), size=DRAWS, p=ORIGIN_WEIGHTS / ORIGIN_WEIGHTS.sum())]
    return _choice_by_group(rng, origin, ref.surnames, DRAWS)


@pytest.fixture(scope="module")
def surname_counts() -> Counter:
    return Counter(_draw_surnames(24).tolist())


def test_the_surname_and_forename_pools_have_tails_beyond_the_hand_lists():
    ref = load_reference()
    british = ref.surnames["british"]
    assert len(british.values) > 50_000
    head = set(british.values[:400])
    assert {"Smith", "Jones"} <= head
    # The tail is new names, rarer than the head's median, falling with rank.
    tail_probs = british.probs[-len(british.values) + 400:]
    assert np.all(np.diff(tail_probs) <= 0)
    assert tail_probs[0] <= np.median(british.probs[:375])
    assert sum(len(p.values) for p in ref.surnames.values()) > 90_000
    assert len(ref.forenames[("british", "F")].values) > 2_000
    # Every origin keeps its hand-compiled head first, so variants and nicknames still apply.
    assert all(v in ref.variants for v in ("Mohammed", "Muhammad"))


def test_a_surname_draw_is_deterministic_for_a_seed():
    a, b, c = _draw_surnames(5), _draw_surnames(5), _draw_surnames(6)
    assert (a == b).all()
    assert (a != c).any()


def test_surname_shares_match_the_public_anchors(surname_counts):
    """docs/world.md: Smith about 1.2% of people (England and Wales), the top 1,000 surnames
    about half, and about half of people holding a surname held by fewer than 0.01% of people.
    At 200,000 draws a 0.01% surname has fewer than 20 bearers; sampling noise is well inside
    the ranges."""
    n = sum(surname_counts.values())
    ranked = [k for _, k in surname_counts.most_common()]
    top = surname_counts.most_common(1)[0]
    assert top[0] == "Smith" and 0.009 <= top[1] / n <= 0.015
    assert 0.04 <= sum(ranked[:10]) / n <= 0.08
    assert 0.40 <= sum(ranked[:1000]) / n <= 0.62
    rare = sum(k for k in ranked if k < 0.0001 * n) / n
    assert 0.30 <= rare <= 0.60
    assert len(surname_counts) > 30_000  # many distinct surnames; the old lists had 841 in all


def test_forenames_get_a_moderate_tail():
    """Forenames stay more concentrated than surnames: the top 10 per sex hold 15-30%."""
    ref = load_reference()
    rng = np.random.default_rng(7)
    for sex in ("M", "F"):
        drawn = Counter(ref.forenames[("british", sex)].sample(rng, DRAWS).tolist())
        top10 = sum(k for _, k in drawn.most_common(10)) / DRAWS
        head = set(ref.forenames[("british", sex)].values[:140])
        outside = sum(k for v, k in drawn.items() if v not in head) / DRAWS
        assert 0.15 <= top10 <= 0.30, (sex, top10)
        assert 0.05 <= outside <= 0.15, (sex, outside)


def _imports_world(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.startswith("datafirst.world") or (node.level and module.split(".")[0] == "world"):
                bad.append(f"{path}: from {'.' * node.level}{module} import ...")
        elif isinstance(node, ast.Import):
            bad += [f"{path}: import {a.name}" for a in node.names if a.name.startswith("datafirst.world")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "world/reference" in node.value \
                and id(node) not in docstrings:
            bad.append(f"{path}: reads {node.value!r}")
    return bad


def test_nothing_in_the_pipeline_reads_the_world_or_its_reference_lists():
    """Linkage is measured on sources the pipeline has never seen: only the world's own package
    and the CLI's `world`/`demo` commands (which make worlds) may import it."""
    allowed = {SRC / "cli.py"}
    offending = [hit for path in sorted(SRC.rglob("*.py"))
                 if "world" not in path.relative_to(SRC).parts[:1] and path not in allowed
                 for hit in _imports_world(path)]
    assert offending == []
    # The check itself finds an import (so an empty list above means something).
    assert _imports_world(SRC / "cli.py")
