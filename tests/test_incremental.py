"""Persistent person ids, incremental runs and `datafirst diff`, on two deliveries of the world.

The earlier delivery lacks 1% of person records (new next time) and holds 0.2% with a
typo (corrected next time); the later one has lost 0.2% (deleted). Workspace `inc` links
the earlier delivery, then the later one incrementally; workspace `full` links the later
one from scratch with the same model. Real DuckDB and Splink throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from datafirst.engine import Engine
from datafirst.link.stage import link
from datafirst.link.train import train
from datafirst.release.diff import schema_changes
from datafirst.release.stage import ReleaseError, published, release
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace
from datafirst.world.deliveries import write_deliveries

from .conftest import TEST_SALT

THRESHOLDS = ("high", "medium", "low")


def _prepare(ws: Workspace, engine: Engine) -> None:
    ingest(ws, engine)
    standardise(ws, engine, as_of="2025-06-30")


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("incremental")
    counts = write_deliveries(world, root / "earlier", root / "later", new=0.01, corrected=0.002, deleted=0.002,
                              seed=5)
    shutil.copytree(root / "earlier", root / "extracts")
    inc = Workspace.init(root / "inc", root / "extracts")
    with Engine() as engine:
        _prepare(inc, engine)
        train(inc, engine)
        first = link(inc, engine)
        release(inc, engine, salt=TEST_SALT)
    shutil.rmtree(root / "extracts")
    shutil.copytree(root / "later", root / "extracts")
    with Engine() as engine:
        _prepare(inc, engine)
        second = link(inc, engine)
        release(inc, engine, salt=TEST_SALT)
    full = Workspace.init(root / "full", root / "extracts")
    shutil.copytree(inc.root / "models", full.root / "models")
    with Engine() as engine:
        _prepare(full, engine)
        whole = link(full, engine)
    return {"inc": inc, "full": full, "first": first, "second": second, "whole": whole, "counts": counts,
            "root": root}


def _q(sql: str) -> list[tuple]:
    return duckdb.connect().execute(sql).fetchall()


def test_the_second_link_is_incremental_and_scores_only_the_changes(runs):
    first, second, counts = runs["first"], runs["second"], runs["counts"]
    assert first.mode == "full" and second.mode == "incremental" and runs["whole"].mode == "full"
    c = second.changes
    # Rows that were new or deleted in the extracts are new or deleted records (an exact
    # duplicate row in the extract can stand in for a held-back one, hence the tolerance).
    assert 0.9 * counts["new"] <= c.new <= counts["new"]
    assert 0.9 * counts["deleted"] <= c.deleted <= counts["deleted"]
    assert 0.9 * counts["corrected"] <= c.changed <= counts["corrected"]
    assert c.affected < 0.5 * second.records


def test_a_defendants_offences_come_and_go_with_it(runs, world):
    """A delivery never holds offences of a defendant it does not hold: an offence arrives with
    its new defendant and leaves with its deleted one (the world's own orphans aside)."""
    root, counts = runs["root"], runs["counts"]

    def offences(folder: Path) -> tuple[int, int]:
        mags = folder / "magistrates"
        return _q(f"""WITH o AS (SELECT defendant_id FROM read_csv('{mags}/offences.csv', all_varchar = true,
                                                                    ignore_errors = true)),
                          d AS (SELECT defendant_id FROM read_csv('{mags}/defendants.csv', all_varchar = true,
                                                                    ignore_errors = true, strict_mode = false))
                     SELECT count(*) FILTER (WHERE defendant_id NOT IN (SELECT defendant_id FROM d)), count(*)
                     FROM o""")[0]

    (orphans_world, _), (orphans_earlier, earlier), (orphans_later, later) = (
        offences(world / "extracts"), offences(root / "earlier"), offences(root / "later"))
    assert orphans_earlier == orphans_later == orphans_world
    assert counts["new_child_rows"] > 0 and counts["deleted_child_rows"] > 0
    assert later - earlier == counts["new_child_rows"] - counts["deleted_child_rows"]


def test_incremental_link_equals_a_full_link(runs):
    a, b = runs["inc"].zone("links"), runs["full"].zone("links")
    for t in THRESHOLDS:
        differ = _q(f"""SELECT count(*) FROM read_parquet('{a}/clusters.parquet') x
            FULL JOIN read_parquet('{b}/clusters.parquet') y USING (record_key)
            WHERE x.person_id_{t} IS DISTINCT FROM y.person_id_{t}""")[0][0]
        assert differ == 0, f"{differ} records are clustered differently at {t}"
    # And every other column too: person sizes, the uncertainty flags, the strongest links.
    for x, y in ((a, b), (b, a)):
        extra = _q(f"""SELECT count(*) FROM (SELECT * FROM read_parquet('{x}/clusters.parquet')
                                             EXCEPT ALL SELECT * FROM read_parquet('{y}/clusters.parquet'))""")[0][0]
        assert extra == 0
    edges = _q(f"""SELECT count(*) FROM read_parquet('{a}/edges.parquet') x
        FULL JOIN read_parquet('{b}/edges.parquet') y USING (record_key_l, record_key_r)
        WHERE x.record_key_l IS NULL OR y.record_key_l IS NULL OR x.match_weight <> y.match_weight""")[0][0]
    assert edges == 0
    assert runs["second"].clusters == runs["whole"].clusters


def test_a_new_delivery_keeps_the_large_majority_of_ids(runs):
    manifest = json.loads((published(runs["inc"])[-1] / "manifest.json").read_text())
    ids = manifest["person_ids"]
    assert ids["carried_from"] == "v0001"
    for t in THRESHOLDS:
        s = ids["thresholds"][t]
        assert s["previous_ids_kept_share"] >= 0.97, (t, s)
        assert s["new_people"] > 0 and s["previous_ids_removed"] > 0
        assert s["continued"] + s["previous_ids_retired"] + s["previous_ids_removed"] == s["previous_people"]


def test_a_person_whose_records_did_not_change_keeps_their_id(runs):
    v1, v2 = published(runs["inc"])[:2]
    for t in THRESHOLDS:
        col = f"person_id_{t}"
        (unchanged, kept), = _q(f"""
            WITH a AS (SELECT row_id_hash, {col} AS id FROM read_parquet('{v1}/tables/person_link_lookup.parquet')),
                 b AS (SELECT row_id_hash, {col} AS id FROM read_parquet('{v2}/tables/person_link_lookup.parquet')),
                 size_a AS (SELECT id, count(*) AS n FROM a GROUP BY 1),
                 size_b AS (SELECT id, count(*) AS n FROM b GROUP BY 1),
                 pairs AS (SELECT a.id AS id_a, b.id AS id_b, count(*) AS n FROM a JOIN b USING (row_id_hash) GROUP BY ALL)
            SELECT count(*), count(*) FILTER (id_a = id_b) FROM pairs
            JOIN size_a ON size_a.id = id_a AND size_a.n = pairs.n JOIN size_b ON size_b.id = id_b AND size_b.n = pairs.n""")
        assert unchanged > 0.9 * _q(f"SELECT count(DISTINCT {col}) FROM read_parquet('{v1}/tables/person_link_lookup.parquet')")[0][0]
        assert kept == unchanged, f"{unchanged - kept} people with the same records got another id at {t}"


def test_every_merge_and_split_in_the_change_log_is_real(runs):
    v1, v2 = published(runs["inc"])[:2]
    old, new = f"read_parquet('{v1}/tables/person_link_lookup.parquet')", f"read_parquet('{v2}/tables/person_link_lookup.parquet')"
    changes = f"read_parquet('{v2}/tables/person_id_changes.parquet')"
    assert _q(f"SELECT count(*) FROM {changes}")[0][0] > 0
    for t in THRESHOLDS:
        col = f"person_id_{t}"
        # Each row's records: records of the previous id now held by the new id, counted afresh.
        wrong = _q(f"""
            WITH moved AS (SELECT o.{col} AS person_id, n.{col} AS into_person_id, count(*) AS records
                           FROM {old} o JOIN {new} n USING (row_id_hash) GROUP BY ALL),
                 per_new AS (SELECT into_person_id, count(*) AS sources FROM moved GROUP BY 1),
                 per_old AS (SELECT person_id, count(*) AS targets FROM moved GROUP BY 1)
            SELECT c.* FROM {changes} c
            LEFT JOIN moved m USING (person_id, into_person_id)
            LEFT JOIN per_new USING (into_person_id) LEFT JOIN per_old USING (person_id)
            WHERE c.threshold = '{t}' AND (m.records IS DISTINCT FROM c.records OR c.person_id = c.into_person_id
                  OR (c.change = 'merged' AND sources < 2) OR (c.change = 'split' AND targets < 2))""")
        assert wrong == [], wrong[:5]
        (rows, pairs), = _q(f"""SELECT count(*), count(DISTINCT (person_id, into_person_id)) FROM {changes}
                                WHERE threshold = '{t}'""")
        assert rows == pairs  # one row per move
        # And every merge and split that happened is in the log.
        missing = _q(f"""
            WITH moved AS (SELECT o.{col} AS person_id, n.{col} AS into_person_id, count(*) AS records
                           FROM {old} o JOIN {new} n USING (row_id_hash) GROUP BY ALL),
                 m AS (SELECT *, count(*) OVER (PARTITION BY into_person_id) AS sources,
                              count(*) OVER (PARTITION BY person_id) AS targets FROM moved)
            SELECT * FROM m WHERE person_id <> into_person_id AND (sources > 1 OR targets > 1)
              AND NOT EXISTS (SELECT 1 FROM {changes} c WHERE c.threshold = '{t}' AND c.person_id = m.person_id
                              AND c.into_person_id = m.into_person_id)""")
        assert missing == [], missing[:5]


def test_deleted_rows_leave_the_release_and_new_rows_join_it(runs):
    inc = runs["inc"]
    v2 = published(inc)[-1]
    links = inc.zone("links")
    with Engine() as engine:
        engine.execute("SET VARIABLE s = ?", [TEST_SALT])
        engine.execute("CREATE TEMP MACRO kh(x) AS substr(sha256(getvariable('s') || '|' || x), 1, 20)")
        released = f"read_parquet('{v2}/tables/person_link_lookup.parquet')"
        (records,), = engine.execute(f"SELECT count(*) FROM read_parquet('{links}/clusters.parquet')")
        (joined,), = engine.execute(f"""SELECT count(*) FROM read_parquet('{links}/clusters.parquet') c
                                        JOIN {released} r ON r.row_id_hash = kh(c.record_key)""")
        assert joined == records == engine.scalar(f"SELECT count(*) FROM {released}")
    first_keys = _q(f"SELECT count(*) FROM read_parquet('{runs['full'].zone('links')}/clusters.parquet')")[0][0]
    assert first_keys == records


def test_identical_inputs_give_identical_ids_and_an_empty_change_log(runs, tmp_path):
    inc = Workspace(tmp_path / "again")
    shutil.copytree(runs["inc"].root, inc.root, symlinks=True)
    before = published(inc)[-1]
    with Engine() as engine:
        again = link(inc, engine)
        after = release(inc, engine, salt=TEST_SALT).path
    assert again.mode == "incremental" and again.changes.new == again.changes.changed == again.changes.deleted == 0
    cols = "row_id_hash, person_id_high, person_id_medium, person_id_low"
    q = f"SELECT {cols} FROM read_parquet('{{}}/tables/person_link_lookup.parquet') ORDER BY 1"
    assert _q(q.format(before)) == _q(q.format(after))
    assert _q(f"SELECT count(*) FROM read_parquet('{after}/tables/person_id_changes.parquet')")[0][0] == 0


def _writable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.mark.parametrize("tamper", ["table", "checksums", "missing"])
def test_an_altered_or_missing_previous_release_is_refused(runs, tmp_path, tamper):
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(runs["inc"].root, ws.root, symlinks=True)
    latest = published(ws)[-1]
    _writable(ws.root / "releases")
    if tamper == "table":
        with open(latest / "tables" / "person_link_lookup.parquet", "ab") as f:
            f.write(b"\0")
        match = "altered or is incomplete"
    elif tamper == "checksums":
        # Someone edits a table and rewrites SHA256SUMS to match: the ledger still knows.
        from datafirst.release.stage import _write_checksums

        (latest / "RELEASE_NOTES.md").write_text("edited")
        (latest / "SHA256SUMS").unlink()
        _write_checksums(latest, {})
        match = "SHA256SUMS differs from the digest recorded"
    else:
        shutil.rmtree(published(ws)[0])
        match = "is missing"
    before = sorted(p.name for p in (ws.root / "releases").iterdir())
    with Engine() as engine, pytest.raises(ReleaseError, match=match):
        release(ws, engine, salt=TEST_SALT)
    assert sorted(p.name for p in (ws.root / "releases").iterdir()) == before


@pytest.mark.parametrize("folder_made_it", [True, False])
def test_a_release_interrupted_around_its_rename_is_settled(runs, tmp_path, folder_made_it):
    """A crash between entering a release in the ledger (pending) and marking it published."""
    from datafirst.release.stage import LEDGER, read_ledger

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(runs["inc"].root, ws.root, symlinks=True)
    _writable(ws.root / "releases")
    ledger = read_ledger(ws)
    ledger[-1]["state"] = "pending"
    last = ledger[-1]["version"]
    if not folder_made_it:
        shutil.rmtree(ws.root / "releases" / last)
    (ws.root / "releases" / LEDGER).write_text(json.dumps({"releases": ledger}))
    with Engine() as engine:
        made = release(ws, engine, salt=TEST_SALT)
    manifest = json.loads((made.path / "manifest.json").read_text())
    expected = last if folder_made_it else f"v{int(last[1:]) - 1:04d}"
    assert manifest["person_ids"]["carried_from"] == expected
    assert [e.get("state") for e in read_ledger(ws)] == ["published"] * len(read_ledger(ws))


def test_diff_lists_rows_people_merges_splits_and_schema(runs):
    v1, v2 = published(runs["inc"])[:2]
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "datafirst", "diff", str(v1), str(v2), "--json"],
                         capture_output=True, text=True, env=env, check=True).stdout
    d = json.loads(out)
    c = runs["second"].changes
    assert d["same_key"] and d["schema_changes"] == []
    assert d["records"]["only_in_b"] == c.new and d["records"]["only_in_a"] == c.deleted
    lookup = next(t for t in d["tables"] if t["table"] == "person_link_lookup")
    assert lookup["rows_b"] - lookup["rows_a"] == c.new - c.deleted
    manifest = json.loads((v2 / "manifest.json").read_text())["person_ids"]["thresholds"]
    for t in THRESHOLDS:
        p, m = d["people"][t], manifest[t]
        assert p["ids_in_both"] == m["continued"]
        assert p["merges"] == m["merges"] and p["splits"] == m["previous_ids_split"]
    text = subprocess.run([sys.executable, "-m", "datafirst", "diff", str(v1), str(v2)], capture_output=True,
                          text=True, env=env, check=True).stdout
    assert "People and their ids" in text and "merges" in text
    bad = subprocess.run([sys.executable, "-m", "datafirst", "diff", str(v1), str(v2 / "tables")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "not a release" in bad.stderr


def test_schema_changes_name_each_table_and_column():
    a = {"tables": [{"name": "t", "columns": [{"name": "x", "type": "INTEGER"}, {"name": "y", "type": "VARCHAR"}]},
                    {"name": "gone", "columns": []}]}
    b = {"tables": [{"name": "t", "columns": [{"name": "x", "type": "BIGINT"}, {"name": "z", "type": "DATE"}]},
                    {"name": "added", "columns": []}]}
    assert schema_changes(a, b) == [
        {"change": "table added", "table": "added"}, {"change": "table removed", "table": "gone"},
        {"change": "column added", "table": "t", "column": "z", "type": "DATE"},
        {"change": "column removed", "table": "t", "column": "y", "type": "VARCHAR"},
        {"change": "type changed", "table": "t", "column": "x", "from": "INTEGER", "to": "BIGINT"}]


def test_the_linkage_report_says_what_the_incremental_link_did(runs):
    from datafirst.link.quality import write_report

    with Engine() as engine:
        _, html_path, report = write_report(runs["inc"], engine)
    c = runs["second"].changes
    assert report["mode"] == "incremental" and report["record_changes"]["new"] == c.new
    assert f"This link was incremental: {c.new:,} new" in html_path.read_text()
