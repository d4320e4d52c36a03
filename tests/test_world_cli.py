"""The command-line tool on real worlds, and its refusals of bad arguments."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.world import WorldError, generate_world

runner = CliRunner()


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name]


def test_world_command_writes_a_world_and_realism_reads_it(tmp_path):
    out = tmp_path / "w"
    result = runner.invoke(app, ["world", "--people", "400", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "magistrates/defendants.csv" in result.output
    manifest = json.loads((out / "world.json").read_text())
    assert manifest["people"] == 400 and manifest["seed"] == 3
    result = runner.invoke(app, ["realism", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {s["source"] for s in data["sources"]} >= {"magistrates", "crown", "prison", "probation", "family", "civil"}
    assert 0 < data["overall"]["share_in_2plus_sources"] < 1


@pytest.mark.parametrize("people, message", [("-5", "at least 50"), ("0", "at least 50"),
                                             ("1000000000000", "beyond what this generator supports")])
def test_absurd_sizes_are_refused_cleanly(tmp_path, people, message):
    out = tmp_path / "w"
    result = runner.invoke(app, ["world", "--people", people, "--out", str(out)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and _leftovers(tmp_path) == []


def test_non_numeric_size_is_refused_by_the_parser(tmp_path):
    result = runner.invoke(app, ["world", "--people", "lots", "--out", str(tmp_path / "w")])
    assert result.exit_code == 2 and "Invalid value" in result.output and "Traceback" not in result.output


def test_non_empty_output_folder_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["world", "--people", "100", "--out", str(out)])
    assert result.exit_code == 2 and "not empty" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_output_path_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "a-file"
    out.write_text("x")
    with pytest.raises(WorldError, match="not a folder"):
        generate_world(out, 100, 1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; the /proc case below covers root")
def test_unwritable_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(WorldError, match="not writable"):
        generate_world(ro / "w", 100, 1)


def test_path_that_cannot_be_created_is_refused_without_leftovers(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(WorldError):
        generate_world(blocker / "sub" / "w", 100, 1)
    with pytest.raises(WorldError, match="cannot write"):
        generate_world(Path("/proc/datafirst-world"), 100, 1)


def test_failure_midway_leaves_nothing_half_written(tmp_path, monkeypatch):
    from datafirst.world import generate as gen

    calls = {"n": 0}
    real = gen._write_chunk

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "_write_chunk", failing)
    with pytest.raises(WorldError, match="nothing was kept"):
        generate_world(tmp_path / "w", 300, 1, chunk_people=100)
    assert not (tmp_path / "w").exists() and _leftovers(tmp_path) == []


def test_help_text_for_every_command():
    for command in ("world", "realism", "init", "ingest", "standardise", "train", "link", "demo"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and len(result.output) > 100


def test_demo_runs_the_pipeline_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--people", "600", "--seed", "4"])
    assert result.exit_code == 0, result.output
    for stage in ("ingest", "standardise", "train", "link", "release"):
        assert f"  {stage}" in result.output
    assert "against labels" in result.output and "Latest release" in result.output
    assert (out / "reports" / "data_quality" / "report.html").is_file()
    assert (out / "reports" / "linkage_quality" / "report.html").is_file()
    assert sorted(p.name for p in (out / "zones").iterdir()) == ["content", "identifiers", "landed", "links"]
    assert (out / "releases" / "v0001" / "dictionary.md").is_file()
    # A second demo in the same folder replaces the first: a fresh series from v0001.
    result = runner.invoke(app, ["demo", "--out", str(out), "--people", "600", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in sorted((out / "releases").glob("v*"))] == ["v0001"]


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--people", "100"])
    assert result.exit_code == 2 and "not a datafirst demo workspace" in result.output
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_ingest_outside_a_workspace_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["ingest", "--workspace", str(tmp_path)])
    assert result.exit_code == 2 and "datafirst init" in result.output


def test_run_with_a_missing_labels_file_is_refused_before_any_stage(tmp_path):
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["init", str(ws), "--extracts", str(tmp_path / "extracts")])
    assert result.exit_code == 0, result.output
    missing = tmp_path / "no-such-labels.parquet"
    result = runner.invoke(app, ["run", "--workspace", str(ws), "--labels", str(missing)])
    assert result.exit_code == 2, result.output
    assert "labels file" in result.output and "not found" in result.output and "Traceback" not in result.output
    assert "Running ingest" not in result.output
    assert not any((ws / "zones").rglob("*.parquet"))
