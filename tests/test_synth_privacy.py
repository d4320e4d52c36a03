"""A twin's category columns keep the release's missing values where rare values are left out
(synth/models.py, `_category_dist`).

A value fewer than small_count rows hold is never drawn. Its rows used to go to every value left
in the leaf, missing among them, so a column of many rare values (a postcode district) came out
mostly missing, and a twin row missing a value is close to every real row missing it: on the 1M
world's release the evaluation twin sat closer to its training people than real unseen people
do (prison bookings' median distance to closest record 0.044 against the holdout's 0.109)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from datafirst.engine import Engine
from datafirst.engine.sql import sql_string
from datafirst.release.chain import published
from datafirst.synth.models import _category_dist
from datafirst.synth.stage import synthesise

from .conftest import build_pipeline


def _shares(engine: Engine, counts: list[tuple[int, str | None, int]], small: int, structural: bool = False) -> dict:
    """Each leaf's drawn shares {leaf: {value: share}} of the counted (leaf, value, n) rows."""
    rows = " UNION ALL ".join(f"SELECT {leaf} AS leaf, {'NULL' if v is None else sql_string(v)} AS value, {n} AS n"
                              for leaf, v, n in counts)
    got = engine.execute(f"""SELECT leaf, value, coalesce(lead(lo) OVER (PARTITION BY leaf ORDER BY lo), 1) - lo
                             FROM ({_category_dist(rows, small, structural)}) ORDER BY leaf, lo""")
    out: dict = {}
    for leaf, value, share in got:
        out.setdefault(leaf, {})[value] = round(share, 9)
    return out


def test_rare_values_go_to_the_common_ones_and_the_missing_share_stays():
    """A category model of a user's own column (any names): the values held by fewer than the
    small count are never drawn, each leaf keeps its missing share, and a leaf whose present
    values are all rare draws the table's common values instead of missing."""
    counts = [(1, "north", 50), (1, "south", 30), (1, "isle", 3), (1, "fell", 2), (1, None, 15),
              (2, "isle", 4), (2, None, 6)]
    with Engine() as engine:
        shares = _shares(engine, counts, small=10)
        assert shares[1] == {None: 0.15, "north": 0.53125, "south": 0.31875}  # 85% present, 50:30
        assert shares[2] == {None: 0.6, "north": 0.25, "south": 0.15}  # 40% present, as the table's common values
        # A structural target (a number of rows) keeps every value, rare or not.
        assert _shares(engine, counts, small=10, structural=True)[1]["fell"] == 0.02
        # No value common enough: nothing is left out.
        assert _shares(engine, [(0, "a", 2), (0, "b", 1), (0, None, 1)], small=10)[0] == {None: 0.25, "a": 0.5, "b": 0.25}


@pytest.fixture(scope="module")
def release(world, tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("synth_privacy")
    ws = build_pipeline(world, root, "release")
    return ws, published(ws.root / "releases")[-1], root


def test_a_column_of_many_rare_values_keeps_its_missing_share(release):
    """The session world's magistrates' postcode districts: most are held by fewer than ten
    defendants, and the twin is missing one no more often than the release (it was 0.08 against
    0.57 on a 1,500-person demo release before)."""
    ws, rel, root = release
    table, column = "magistrates__defendants", "postcode_district"
    with Engine() as engine:
        twin = synthesise(ws, rel, "low", 1, engine, out=root / "twins")

    def shares(path: Path) -> tuple[float, float]:
        return duckdb.sql(f"""WITH c AS (SELECT {column} AS v, count(*) AS n FROM read_parquet('{path}') GROUP BY 1)
                              SELECT sum(n) FILTER (WHERE v IS NULL) / sum(n),
                                     sum(n) FILTER (WHERE v IS NOT NULL AND n < 10) / sum(n) FROM c""").fetchall()[0]

    real_missing, real_rare = shares(rel / "tables" / f"{table}.parquet")
    twin_missing, _ = shares(twin.path / "tables" / f"{table}.parquet")
    assert real_rare > 0.2  # the case in point: much of the column is rare values the twin never draws
    assert abs(twin_missing - real_missing) < 0.02, (twin_missing, real_missing)
