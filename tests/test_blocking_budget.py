"""The comparison budget (link/blocking.py): rules are costed, projected and narrowed or refused
before any pair is scored, on real DuckDB and Splink."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from datafirst.engine import Engine
from datafirst.link.blocking import _costs, _key_expressions, expected_true_pairs
from datafirst.link.inputs import LinkError
from datafirst.link.stage import link
from datafirst.link.train import train
from datafirst.workspace import ComparisonBudget, Workspace

from .conftest import build_pipeline


@pytest.fixture(scope="module")
def linked_ws(world, tmp_path_factory) -> Workspace:
    return build_pipeline(world, tmp_path_factory.mktemp("budget"), "link")


def test_a_rules_key_is_read_from_its_sql():
    assert _key_expressions('l."pnc" = r."pnc"') == ['"pnc"']
    assert _key_expressions('((l."forename" = r."forename") AND (l."surname" = r."surname")) AND '
                            '(l."year_of_birth" = r."year_of_birth")') == ['"forename"', '"surname"', '"year_of_birth"']
    assert _key_expressions("LEFT(l.other_id, 4) = LEFT(r.other_id, 4)") == ["LEFT(other_id, 4)"]
    # Crossed names are no one key: no block sizes for them.
    assert _key_expressions("l.forename = r.surname AND l.surname = r.forename") is None


def test_true_pairs_grow_with_the_records_and_the_rest_with_their_square():
    # 100 pairs of which the model says 30 are one person's: at 10 times the records,
    # 30 * 10 + 70 * 100.
    (cost,) = _costs(['l."pnc2" = r."pnc2"'], [100], None, {}, 0.0, 10.0)
    assert cost.true_pairs is None and cost.projected == 1000  # the model cannot say: taken as true
    # An id a source issues per person is one person's records, whatever the model says.
    (pnc,) = _costs(['l."pnc" = r."pnc"'], [100], {"comparisons": []}, {}, 50.0, 10.0)
    assert pnc.projected == 1000 and pnc.growth_exponent == pytest.approx(1.0)
    # The prior's true pairs scale with the records, not their square.
    assert expected_true_pairs(1e-4, 1000, 2000) == pytest.approx(1e-4 * 1000 * 999 / 2 * 2)


def test_training_narrows_rules_that_break_the_budget_and_linking_keeps_within_it(linked_ws, tmp_path):
    ws = Workspace(shutil.copytree(linked_ws.root, tmp_path / "ws"))
    with Engine() as engine:
        before = json.loads(next((ws.root / "models").glob("*.meta.json")).read_text())["prediction_rules_measured"]
    per_record = 1.0
    cfg = yaml.safe_load(ws.config_path.read_text())
    cfg.setdefault("link", {})["comparison_budget"] = {"pairs_per_record": per_record, "growth": 10}
    ws.config_path.write_text(yaml.safe_dump(cfg))
    with Engine() as engine:
        path = train(ws, engine)
        meta = json.loads(path.with_suffix(".meta.json").read_text())
        rules = meta["prediction_rules_measured"]
        records = meta["records"]
        # Within the budget now and at ten times the records.
        assert sum(r["comparisons"] for r in rules) <= per_record * records
        assert sum(r["projected"] for r in rules) <= per_record * records * 10
        narrowed = [r for r in rules if r["action"] == "narrowed"]
        notes = [n for n in meta["left_out"] if n.startswith("blocking rule")]
        assert narrowed or any("left out, about" in n for n in notes)
        for r in narrowed:
            assert r["from_rule"] and r["rule"].startswith("(") and r["from_rule"] in r["rule"] and ") AND (" in r["rule"]
        assert len(notes) >= len(narrowed)
        # Under the default budget the same world kept more pairs.
        assert sum(r["comparisons"] for r in before) > sum(r["comparisons"] for r in rules)
        # The costliest rules report their largest blocks (sizes only).
        sized = [r for r in rules if r["largest_blocks"]]
        assert sized and all(isinstance(x, int) for r in sized for x in r["largest_blocks"])
        summary = link(ws, engine, full=True)
        assert summary.edges > 0
        costs = json.loads((ws.zone("links") / "link.json").read_text())["blocking"]
        assert sum(c["comparisons"] for c in costs) <= per_record * summary.records
        # A budget the rules cannot meet is refused before anything is scored or written.
        with pytest.raises(LinkError, match="break the comparison budget.*max_pairs.*costliest"):
            link(ws, engine, full=True, comparison_budget=ComparisonBudget(max_pairs=10))
        assert json.loads((ws.zone("links") / "link.json").read_text())["blocking"] == costs
