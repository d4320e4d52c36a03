"""Control totals (issue 23): a delivery whose rows per table fall or rise beyond the limit
against the load the latest release was made from, or whose file ends in a line cut short, is
not released until accepted for that delivery; the release notes record what was accepted.
A small generated world through the real pipeline (DuckDB, Splink)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.release.hashing_key import SALT_ENV, SALT_FILE_ENV
from datafirst.release.stage import ReleaseError, published
from datafirst.run import Runner
from datafirst.sources.control_totals import beyond_limit, table_name
from datafirst.workspace import Workspace
from datafirst.world import generate_world

KEY = "3f9a51c2e07b4d86a1c95e2f7b30d84c6e1a92f5b7c03d68e4a1f9c27b5d0e83"
TABLE = "magistrates__defendants"


def _use_key(mp: pytest.MonkeyPatch) -> None:
    mp.delenv(SALT_FILE_ENV, raising=False)
    mp.setenv(SALT_ENV, KEY)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workspace on its own small world, run once through every stage (release v0001)."""
    root = tmp_path_factory.mktemp("control_totals") / "ws"
    root.mkdir()
    generate_world(root / "world", 300, seed=5)
    ws = Workspace.init(root, root / "world" / "extracts")
    with pytest.MonkeyPatch.context() as mp:
        _use_key(mp)
        Runner(ws).run()
    assert [p.name for p in published(ws)] == ["v0001"]
    return root


@pytest.fixture
def ws(base, tmp_path, monkeypatch) -> Workspace:
    _use_key(monkeypatch)
    shutil.copytree(base, tmp_path / "ws")
    return Workspace((tmp_path / "ws").resolve())


def _extract(ws: Workspace) -> Path:
    return ws.extracts / "magistrates" / "defendants.csv"


def _cut_in_half(ws: Workspace) -> tuple[int, int]:
    """Half the extract's rows, as a delivery cut part-way would have: (rows before, rows kept)."""
    lines = _extract(ws).read_bytes().splitlines(keepends=True)
    keep = len(lines) // 2
    _extract(ws).write_bytes(b"".join(lines[:keep]))
    return len(lines) - 1, keep - 1


def _landed(ws: Workspace) -> int:
    return duckdb.connect().execute(f"""SELECT landed FROM read_parquet('{ws.zone("landed")}/_accounting.parquet')
        WHERE source = 'magistrates' AND "table" = 'defendants'""").fetchall()[0][0]


def _versions(ws: Workspace) -> list[str]:
    return [p.name for p in published(ws)]


def test_the_limit_is_a_share_either_way():
    assert not beyond_limit(100, 80, 0.2) and beyond_limit(100, 79, 0.2)
    assert not beyond_limit(100, 120, 0.2) and beyond_limit(100, 121, 0.2)
    assert beyond_limit(0, 1, 0.2) and not beyond_limit(0, 0, 0.2)
    assert table_name("magistrates.defendants") == table_name("magistrates/defendants") == TABLE == table_name(TABLE)


def test_a_truncated_delivery_is_not_released_until_accepted_and_only_for_that_delivery(ws):
    before = _landed(ws)
    whole = _extract(ws).read_bytes()
    _cut_in_half(ws)
    runner = Runner(ws)
    with pytest.raises(ReleaseError) as refused:
        runner.run()
    now = _landed(ws)
    said = str(refused.value)
    assert f"{TABLE}: rows landed fell from {before:,} (the latest release's load) to {now:,}" in said, said
    assert f"--accept-volume-change {TABLE}" in said and "volume_change_limit" in said
    assert _versions(ws) == ["v0001"]
    # The ingest said so as soon as the delivery landed; the data quality report alerts by the same rule.
    details = {r.stage: r.detail for r in runner.results}
    assert f"CONTROL TOTALS {TABLE}: rows landed fell from {before:,}" in details["ingest"]
    assert f"ALERT magistrates/defendants: rows landed fell from {before:,} to {now:,} (more than 20%)" in \
        details["standardise"]
    # Still refused on the next run (nothing to do but the release, which is refused again).
    with pytest.raises(ReleaseError, match=TABLE):
        Runner(ws).run()
    # Accepted (as source.table): released, and the notes and manifest say what was accepted.
    Runner(ws, accept_volume_change=["magistrates.defendants"]).run()
    assert _versions(ws) == ["v0001", "v0002"]
    notes = (published(ws)[-1] / "RELEASE_NOTES.md").read_text()
    assert "## Volume changes accepted" in notes
    assert f"- {TABLE}: rows landed fell from {before:,} (the latest release's load) to {now:,}" in notes
    manifest = json.loads((published(ws)[-1] / "manifest.json").read_text())
    assert [(a["table"], a["rows_before"], a["rows_now"]) for a in manifest["control_totals"]["accepted"]] == \
        [(TABLE, before, now)]
    assert manifest["control_totals"]["tables"][TABLE]["landed"] == now
    # The accepted delivery is the new baseline; the next one is compared with it, not accepted in advance.
    _extract(ws).write_bytes(whole)  # the whole extract again
    with pytest.raises(ReleaseError, match=f"{TABLE}: rows landed rose from {now:,} .* to {before:,}"):
        Runner(ws).run()
    assert _versions(ws) == ["v0001", "v0002"]


def test_a_file_whose_last_line_is_cut_is_not_released_until_accepted(ws):
    data = _extract(ws).read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    _extract(ws).write_bytes(data.rstrip(b"\n")[:-len(last) // 2])  # the last row cut in the middle, no line break
    with pytest.raises(ReleaseError, match=f"{TABLE}: its file ends in a line cut short") as refused:
        Runner(ws).run()
    assert "rows landed" not in str(refused.value)  # one row fewer is within the limit
    assert _versions(ws) == ["v0001"]
    Runner(ws, accept_volume_change=[TABLE]).run()
    assert _versions(ws) == ["v0001", "v0002"]
    assert "its file ends in a line cut short" in (published(ws)[-1] / "RELEASE_NOTES.md").read_text()


def test_the_limit_is_a_setting(ws):
    config = ws.config_path.read_text() + "ingest:\n  volume_change_limit: 0.9\n"
    ws.config_path.write_text(config)
    _cut_in_half(ws)
    results = {r.stage: r.detail for r in Runner(ws).run()}
    assert _versions(ws) == ["v0001", "v0002"]
    assert "CONTROL TOTALS" not in results["ingest"] and "rows landed" not in results["standardise"]


def test_the_cli_refuses_with_an_error_line_and_accepts_with_the_option(ws):
    _cut_in_half(ws)
    cli = CliRunner()
    ingested = cli.invoke(app, ["ingest", "-w", str(ws.root)])
    assert ingested.exit_code == 0 and f"control totals: {TABLE}: rows landed fell" in " ".join(ingested.output.split())
    run = cli.invoke(app, ["run", "-w", str(ws.root)])
    said = " ".join(run.output.split())
    assert run.exit_code == 2 and f"error: the delivery is beyond its control totals" in said, said
    assert _versions(ws) == ["v0001"]
    unknown = cli.invoke(app, ["release", "-w", str(ws.root), "--accept-volume-change", "magistrates.nothing"])
    assert unknown.exit_code == 2 and "names tables that were not landed: magistrates__nothing" in \
        " ".join(unknown.output.split())
    released = cli.invoke(app, ["release", "-w", str(ws.root), "--accept-volume-change", TABLE])
    assert released.exit_code == 0, released.output
    assert _versions(ws) == ["v0001", "v0002"]
