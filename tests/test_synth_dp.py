"""Differentially private counts for synthetic twins (datafirst.synth.dp): OpenDP's discrete
Laplace noise of the stated scale over the whole declared domain, clamped at 0, each person's
rows bounded, the budget validated and split, and noisy counts kept so a twin can be made again
byte for byte without spending the budget twice."""

from __future__ import annotations

import math
import statistics
from datetime import date

import pytest

from datafirst.engine import Engine
from datafirst.synth.dp import (
    BudgetError,
    laplace_scale,
    laplace_variance,
    noisy_counts,
    split_budget,
)


@pytest.fixture(scope="module")
def engine():
    with Engine(threads=2) as e:
        # 2,000 cells of 100 records each, every record its own person: true counts of 100, so
        # the clamp at 0 never acts and the noise can be read off exactly.
        e.execute("""CREATE TABLE wide AS
            SELECT i % 2000 AS cell, 'p' || i AS person_id FROM range(200000) AS t(i)""")
        # A table of a user's own: hearings with a court code from a code list, an outcome,
        # and a person who may have many rows.
        e.execute("CREATE TABLE courts AS SELECT * FROM (VALUES ('C01'), ('C02'), ('C03')) AS t(code)")
        e.execute("""CREATE TABLE hearings AS SELECT * FROM (VALUES
            ('h1', 'P1', 'C01', 'guilty', DATE '2020-01-01'),
            ('h2', 'P1', 'C01', 'guilty', DATE '2020-01-01'),
            ('h3', 'P1', 'C02', 'guilty', DATE '2020-01-01'),
            ('h4', 'P2', 'C02', NULL,     DATE '2021-01-01'),
            ('h5', NULL, 'C02', 'acquitted', DATE '2021-01-01'),
            ('h6', NULL, 'C02', 'acquitted', DATE '2021-01-01'),
            ('h7', 'P3', 'X99', 'guilty', DATE '2021-01-01')) AS t(hearing_id, person_id, court, outcome, day)""")
        for i in range(50):  # one person with fifty hearings in one cell
            e.execute(f"INSERT INTO hearings VALUES ('m{i}', 'P9', 'C03', 'guilty', DATE '2022-01-01')")
        yield e


def _rows(engine, sql):
    return engine.execute(f"SELECT * FROM ({sql}) ORDER BY ALL NULLS LAST")


def test_noise_has_the_discrete_laplace_scale(engine):
    for epsilon in (0.5, 2.0):
        sql = noisy_counts(engine, "SELECT * FROM wide", ["cell"], epsilon, seed=1,
                           domains={"cell": range(2000)}, person="person_id")
        noise = [n - 100 for cell, n in _rows(engine, sql) if cell is not None]
        assert len(noise) == 2000
        expected = laplace_variance(laplace_scale(epsilon, 1))
        # Loose bounds: the sample variance of 2,000 Laplace draws has a relative sd of ~5%.
        assert 0.75 * expected < statistics.pvariance(noise) < 1.25 * expected, (epsilon, expected)
        assert abs(statistics.fmean(noise)) < 5 * math.sqrt(expected / 2000)
        assert len(set(noise)) > 3 and all(isinstance(v, int) for v in noise)  # integer noise, not constant


def test_variance_formula_tends_to_the_continuous_laplace():
    assert laplace_scale(0.5, 3) == 6.0
    assert laplace_variance(100.0) == pytest.approx(2 * 100.0 ** 2, rel=1e-3)


def test_every_declared_cell_appears_none_negative(engine):
    # Tiny epsilon on mostly empty cells: without the clamp about half would be negative.
    sql = noisy_counts(engine, "SELECT * FROM hearings", ["court", "outcome"], 0.05, seed=1,
                       domains={"court": "SELECT code FROM courts", "outcome": ["guilty", "acquitted", "withdrawn"]},
                       person="person_id")
    rows = _rows(engine, sql)
    cells = {(c, o) for c, o, _ in rows}
    assert cells == {(c, o) for c in ("C01", "C02", "C03", None) for o in ("acquitted", "guilty", "withdrawn", None)}
    assert len(rows) == 16  # one row per cell, none for the undeclared court X99
    assert min(n for *_, n in rows) == 0 and max(n for *_, n in rows) > 0


def test_each_person_contributes_at_most_the_bound(engine):
    # epsilon so large the noise is 0: the counts are the bounded exact counts.
    def counts(seed, bound=1):
        sql = noisy_counts(engine, "SELECT * FROM hearings", ["court"], 1e6, seed=seed,
                           domains={"court": "SELECT code FROM courts"}, person="person_id",
                           max_contribution=bound)
        return dict(_rows(engine, sql))

    once = counts(seed=7)
    # P9's fifty rows count once; P1's three rows (two courts) once; rows with no person each
    # count as a person of their own; X99 is not declared so not counted.
    assert once["C03"] == 1
    assert once["C01"] + once["C02"] == 1 + 1 + 2
    assert once[None] == 0
    assert counts(seed=7) == once  # the kept row is chosen by the seed, the same every run
    assert counts(seed=7, bound=2)["C03"] == 2
    assert {tuple(sorted(counts(s).items(), key=str)) for s in range(8)} != {tuple(sorted(once.items(), key=str))}


def test_counts_keep_the_source_types(engine):
    sql = noisy_counts(engine, "SELECT * FROM hearings", ["day"], 1.0, seed=1,
                       domains={"day": [date(2020, 1, 1), date(2021, 1, 1), date(2022, 1, 1), date(2023, 1, 1)]},
                       person="person_id")
    assert dict(engine.schema(f"({sql})")) == {"day": "DATE", "n": "BIGINT"}
    joined = engine.scalar(f"SELECT count(*) FROM hearings h JOIN ({sql}) d ON h.day = d.day")
    assert joined == engine.scalar("SELECT count(*) FROM hearings")


def test_kept_counts_are_read_back_not_drawn_again(engine, tmp_path):
    store = tmp_path / "dp" / "hearings__court.parquet"
    args = {"domains": {"court": "SELECT code FROM courts"}, "person": "person_id", "store": store}
    first = _rows(engine, noisy_counts(engine, "SELECT * FROM hearings", ["court"], 0.1, 1, **args))
    again = [_rows(engine, noisy_counts(engine, "SELECT * FROM hearings", ["court"], 0.1, 1, **args))
             for _ in range(5)]
    assert all(a == first for a in again)
    fresh = [_rows(engine, noisy_counts(engine, "SELECT * FROM hearings", ["court"], 0.1, 1,
                                        domains=args["domains"], person="person_id")) for _ in range(5)]
    assert any(f != first for f in fresh)  # without the store each call draws afresh
    with pytest.raises(BudgetError, match="another marginal or budget"):
        noisy_counts(engine, "SELECT * FROM hearings", ["court"], 0.2, 1, **args)


@pytest.mark.parametrize("epsilon", [0, -1, float("nan"), float("inf"), "1", True, None])
def test_epsilon_is_validated(engine, epsilon):
    with pytest.raises(BudgetError, match="epsilon must be a finite number above 0"):
        noisy_counts(engine, "SELECT * FROM hearings", ["court"], epsilon, 1,
                     domains={"court": ["C01"]}, person="person_id")


def test_bad_arguments_are_named(engine):
    base = {"sql": "SELECT * FROM hearings", "epsilon": 1.0, "seed": 1, "person": "person_id"}
    with pytest.raises(BudgetError, match="no declared domain for column.*outcome"):
        noisy_counts(engine, columns=["court", "outcome"], domains={"court": ["C01"]}, **base)
    with pytest.raises(BudgetError, match="courtroom not in the rows to count"):
        noisy_counts(engine, columns=["courtroom"], domains={"courtroom": ["C01"]}, **base)
    with pytest.raises(BudgetError, match="max_contribution must be a whole number"):
        noisy_counts(engine, columns=["court"], domains={"court": ["C01"]}, max_contribution=0, **base)
    with pytest.raises(BudgetError, match="has 2,003,001 cells"):
        noisy_counts(engine, columns=["court", "outcome"], domains={"court": range(2000), "outcome": range(1000)},
                     **base)
    with pytest.raises(BudgetError, match="domain of column 'court' must be a list"):
        noisy_counts(engine, columns=["court"], domains={"court": 3}, **base)


def test_budget_split_adds_up():
    shares = split_budget(1.0, ["person.sex", "person.year_of_birth", "records_per_person"])
    assert shares == pytest.approx({"person.sex": 1 / 3, "person.year_of_birth": 1 / 3, "records_per_person": 1 / 3})
    weighted = split_budget(2.0, ["a", "b"], weights={"b": 3})
    assert weighted == pytest.approx({"a": 0.5, "b": 1.5}) and sum(weighted.values()) == pytest.approx(2.0)
    with pytest.raises(BudgetError, match="epsilon must be"):
        split_budget(0, ["a"])
    with pytest.raises(BudgetError, match="at least one marginal"):
        split_budget(1, [])
    with pytest.raises(BudgetError, match="named twice"):
        split_budget(1, ["a", "a"])
    with pytest.raises(BudgetError, match="not being counted: c"):
        split_budget(1, ["a"], weights={"c": 1})
    with pytest.raises(BudgetError, match="weight of marginal 'a'"):
        split_budget(1, ["a"], weights={"a": -1})


# --- the differentially private low twin (datafirst synth --fidelity low --epsilon E) -----------

def _twin_sums(folder):
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dp_release(tmp_path_factory):
    from datafirst.release.chain import published
    from datafirst.world import generate_world

    from .conftest import build_pipeline

    root = tmp_path_factory.mktemp("synth_dp")
    generate_world(root / "world", 600, seed=5)
    ws = build_pipeline(root / "world", root, "release")
    return ws, published(ws.root / "releases")[-1], root


def test_a_low_twin_with_epsilon_is_drawn_from_kept_noisy_counts_and_made_again_byte_for_byte(dp_release):
    import json
    import shutil

    from datafirst.synth.stage import synthesise

    ws, release, root = dp_release
    with Engine(threads=2) as e:
        twin = synthesise(ws, release, "low", 3, e, epsilon=1.0)
    manifest = json.loads((twin.path / "manifest.json").read_text())
    dp = manifest["differential_privacy"]
    assert manifest["epsilon"] == 1.0 and dp["epsilon"] == 1.0 and twin.path.name == f"{release.name}-low-e1"
    assert sum(dp["budget_split"].values()) == pytest.approx(1.0) and 0 < dp["spent"] <= 1.0 + 1e-9
    assert "person|_p_pattern" in dp["budget_split"] and "crown__defendants|outcome" in dp["budget_split"]
    # postcode districts are declared by a pattern only, year of birth has no maximum: not counted
    assert "crown__defendants|postcode_district" in dp["not_counted_drawn_missing"]
    kept = ws.root / "synthetic" / ".dp" / twin.path.name
    assert (kept / "crown__defendants_outcome.parquet").is_file()
    first = _twin_sums(twin.path)
    stored = _twin_sums(kept)
    with Engine(threads=2) as e:  # the same command again: the kept counts are read, nothing is drawn
        again = synthesise(ws, release, "low", 3, e, epsilon=1.0, out=root / "again")
    assert _twin_sums(again.path) == first and _twin_sums(kept) == stored
    shutil.rmtree(kept)  # without the kept counts, the noise is drawn afresh: another twin
    with Engine(threads=2) as e:
        fresh = synthesise(ws, release, "low", 3, e, epsilon=1.0, out=root / "fresh")
    assert _twin_sums(fresh.path) != first


def test_no_value_outside_the_declared_domain_reaches_the_twin(dp_release, monkeypatch):
    """A release whose dictionary declares fewer outcomes than occur: the undeclared one is never
    counted, so never drawn (the exact twin draws it, from the data's own values)."""
    import json
    import shutil

    import duckdb

    from datafirst.synth import stage
    from datafirst.synth.stage import synthesise

    ws, release, root = dp_release
    edited = root / "edited" / "v0099"  # a version of its own: its noisy counts are kept apart
    shutil.copytree(release, edited)
    for p in [edited, *edited.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    d = json.loads((edited / "dictionary.json").read_text())
    table = next(t for t in d["tables"] if t["name"] == "crown__defendants")
    outcome = next(c for c in table["columns"] if c["name"] == "outcome")
    real = duckdb.sql(f"SELECT outcome, count(*) FROM read_parquet('{edited / table['path']}') "
                      "WHERE outcome IS NOT NULL GROUP BY 1 ORDER BY 2 DESC").fetchall()
    dropped = real[0][0]  # the commonest outcome: the exact twin always draws it
    outcome["declared"]["values"] = [v for v in outcome["declared"]["values"] if v != dropped]
    (edited / "dictionary.json").write_text(json.dumps(d))
    monkeypatch.setattr(stage, "verified", lambda *a: None)  # the edit breaks its checksums, on purpose
    path = lambda twin: twin.path / "tables" / "crown__defendants.parquet"  # noqa: E731
    with Engine(threads=2) as e:
        private = synthesise(ws, edited, "low", 1, e, epsilon=1.0, out=root / "edited_dp")
        exact = synthesise(ws, edited, "low", 1, e, out=root / "edited_exact")
    drawn = lambda twin: {v for (v,) in duckdb.sql(f"SELECT DISTINCT outcome FROM read_parquet('{path(twin)}')").fetchall()}  # noqa: E731
    assert dropped in drawn(exact)
    assert dropped not in drawn(private)
    assert drawn(private) - {None} <= set(outcome["declared"]["values"])


def test_epsilon_with_mid_fidelity_is_refused(dp_release):
    from typer.testing import CliRunner

    from datafirst.cli import app

    ws, release, _ = dp_release
    result = CliRunner().invoke(app, ["synth", str(release), "--fidelity", "mid", "--epsilon", "1"])
    assert result.exit_code != 0
    assert "--epsilon applies to the low fidelity only" in result.output
    assert not (ws.root / "synthetic" / f"{release.name}-mid-e1").exists()
