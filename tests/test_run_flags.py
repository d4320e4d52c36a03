"""`datafirst run` skipping and forcing: the same workspace by another path or moved skips every
stage; --new-series, --full and --labels are not ignored on unchanged inputs; another hashing key
releases again; `datafirst demo` in an earlier demo's folder starts afresh. Small worlds, real
DuckDB and Splink."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.engine import Engine
from datafirst.release.hashing_key import SALT_ENV, SALT_FILE_ENV, SecretError
from datafirst.release.stage import ReleaseError, published
from datafirst.run import STATE_DIR, Runner, key_check
from datafirst.sources.ingest import ingest
from datafirst.workspace import Workspace, WorkspaceBusy
from datafirst.world import generate_world

STAGES = ["ingest", "standardise", "train", "link", "release"]
SALT = "8694924f67c79d3e5e55e12f20d6a7564db9a04cb0a3e33613849698766fc6f9"
OTHER_SALT = "f55a7d63b90db361f3e738d9a50b25203f4dc0fa29355cd992771c7cee5beb00"


def _use_key(monkeypatch, salt: str | None) -> None:
    monkeypatch.delenv(SALT_FILE_ENV, raising=False)
    if salt is None:
        monkeypatch.delenv(SALT_ENV, raising=False)
    else:
        monkeypatch.setenv(SALT_ENV, salt)


def _ran(results) -> list[str]:
    return [r.stage for r in results if r.ran]


def _versions(ws: Workspace) -> list[str]:
    return [p.name for p in published(ws)]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workspace holding its own small world (extracts at world/extracts, as the demo's),
    run once through every stage by its absolute path."""
    root = tmp_path_factory.mktemp("run_flags") / "ws"
    root.mkdir()
    generate_world(root / "world", 300, seed=5)
    ws = Workspace.init(root, root / "world" / "extracts")
    assert ws.config().extracts == Path("world/extracts")
    with pytest.MonkeyPatch.context() as mp:
        _use_key(mp, SALT)
        assert _ran(Runner(Workspace(root.resolve())).run()) == STAGES
    assert _versions(ws) == ["v0001"]
    return root


@pytest.fixture
def ws(base, tmp_path, monkeypatch) -> Workspace:
    """A copy of the base workspace (file times kept: a moved workspace), with the base's key."""
    _use_key(monkeypatch, SALT)
    shutil.copytree(base, tmp_path / "ws")
    return Workspace((tmp_path / "ws").resolve())


def test_moved_workspace_and_relative_path_skip_every_stage(ws, tmp_path, monkeypatch):
    results = Runner(ws).run()
    assert _ran(results) == [], [(r.stage, r.detail) for r in results]
    monkeypatch.chdir(tmp_path)
    again = Runner(Workspace(Path("ws"))).run()
    assert _ran(again) == [] and all(r.detail for r in again)
    assert _versions(ws) == ["v0001"]
    state = json.loads((ws.root / STATE_DIR / "release.json").read_text())
    assert SALT not in json.dumps(state)


def test_new_series_releases_again_on_unchanged_inputs(ws):
    results = Runner(ws, new_series=True).run()
    assert _ran(results) == ["release"]
    assert _versions(ws) == ["v0001", "v0002"]
    manifests = [json.loads((p / "manifest.json").read_text()) for p in published(ws)]
    assert manifests[0]["id_series"] != manifests[1]["id_series"]
    assert _ran(Runner(ws).run()) == []


def test_another_key_releases_again_and_is_refused_unless_a_new_series(ws, monkeypatch):
    manifest = json.loads((published(ws)[-1] / "manifest.json").read_text())
    assert key_check() == manifest["key_check"]  # the manifest's check, computed without the engine
    _use_key(monkeypatch, OTHER_SALT)
    assert key_check() != manifest["key_check"]
    runner = Runner(ws)
    with pytest.raises(ReleaseError, match="key differs"):
        runner.run()
    assert _ran(runner.results) == [] and [r.stage for r in runner.results] == STAGES[:-1]
    assert _versions(ws) == ["v0001"]
    assert _ran(Runner(ws, new_series=True).run()) == ["release"]
    assert _ran(Runner(ws).run()) == []
    _use_key(monkeypatch, SALT)  # back to the first key: v0002 was made with the other one
    with pytest.raises(ReleaseError, match="key differs"):
        Runner(ws).run()
    assert _versions(ws) == ["v0001", "v0002"]


def test_a_missing_key_stops_the_run_before_any_stage(ws, monkeypatch):
    _use_key(monkeypatch, None)
    assert key_check() is None
    runner = Runner(ws)
    with pytest.raises(SecretError, match="no hashing salt"):
        runner.run()
    assert runner.results == []


@pytest.mark.parametrize("key", [None, "justice-data-2024", "justice-data-2024-justice-data-2024"])
def test_a_missing_or_weak_key_stops_run_and_demo_before_ingest(base, tmp_path, monkeypatch, key):
    """The release needs the key, but it used to be looked for only after ingest, standardise,
    train and link: a new user waited for all of them to learn it was missing."""
    shutil.copytree(base / "world", tmp_path / "world")
    ws = Workspace.init(tmp_path / "ws", tmp_path / "world" / "extracts")
    _use_key(monkeypatch, key)
    result = CliRunner().invoke(app, ["run", "-w", str(ws.root)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and ("no hashing salt" if key is None else "too easy to guess") in said, said
    assert not ws.zone("landed").exists() and not (ws.root / STATE_DIR).exists()
    if key is not None:  # the demo makes its own key when none is set; a weak one set is refused at once
        demo = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--people", "300"])
        assert demo.exit_code == 2 and "too easy to guess" in " ".join(demo.output.split())
        assert not (tmp_path / "demo").exists()


def test_labels_remake_the_report_and_full_links_again(ws):
    from datafirst.world.labels import write_labels

    labels = write_labels(ws.root / "world", ws.root / "world" / "labels.parquet")
    results = Runner(ws, labels=labels).run()
    assert _ran(results) == ["link"]
    link = results[STAGES.index("link")].detail
    assert "links unchanged" in link and "against labels" in link
    report = json.loads((ws.reports / "linkage_quality" / "latest.json").read_text())
    assert report.get("accuracy")
    results = Runner(ws, full_link=True).run()
    assert _ran(results) == ["link", "release"]
    assert "full link" in results[STAGES.index("link")].detail
    # Linked again in full, the same people: the release would equal v0001, so none is published.
    assert results[STAGES.index("release")].detail.startswith("no change since v0001")
    assert _versions(ws) == ["v0001"]


def test_demo_again_with_another_world_starts_afresh(tmp_path, monkeypatch):
    cli = CliRunner()
    out = tmp_path / "demo"
    # What a demo killed while writing its world leaves: its world's partial folder.
    stopped = out / ".world.partial-4194305" / "extracts"
    stopped.mkdir(parents=True)
    (stopped / "half.csv").write_text("id\n1\n")
    _use_key(monkeypatch, None)
    first = cli.invoke(app, ["demo", "--out", str(out), "--people", "300", "--seed", "1"])
    assert first.exit_code == 0, first.output
    assert not stopped.parent.exists()
    key = (out / "secrets" / "demo.salt").read_text()
    (out / "releases" / "v0001").chmod(0o555)  # releases are read-only; clearing copes
    _use_key(monkeypatch, None)  # as a new process would start
    second = cli.invoke(app, ["demo", "--out", str(out), "--people", "300", "--seed", "2"])
    assert second.exit_code == 0, second.output
    ws = Workspace(out)
    assert _versions(ws) == ["v0001"]
    assert [e["version"] for e in json.loads((out / "releases" / "ledger.json").read_text())["releases"]] == ["v0001"]
    manifest = json.loads((out / "releases" / "v0001" / "manifest.json").read_text())
    assert not manifest.get("previous")
    assert json.loads((out / "world" / "world.json").read_text())["seed"] == 2
    assert (out / "secrets" / "demo.salt").read_text() == key
    assert len(list((out / "models").glob("model-*.meta.json"))) == 1  # the earlier model went too


def test_demo_refuses_a_workspace_that_is_not_an_earlier_demo(tmp_path, monkeypatch):
    extracts = tmp_path / "extracts"
    extracts.mkdir()
    real = Workspace.init(tmp_path / "real", extracts)
    (real.root / "releases").mkdir()
    result = CliRunner().invoke(app, ["demo", "--out", str(real.root), "--people", "100"])
    assert result.exit_code == 2 and "not a datafirst demo workspace" in result.output
    assert real.config_path.is_file() and (real.root / "releases").is_dir() and not (real.root / "world").exists()


# A process that holds the workspace until killed (a scheduled run, say).
HOLD_WORKSPACE = """import sys, time
from datafirst.workspace import Workspace
with Workspace(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(300)
"""


def _holder(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_WORKSPACE, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_workspace_in_use_is_refused_and_free_again_when_its_holder_is_killed(ws):
    holder = _holder(ws.root)
    try:
        with pytest.raises(WorkspaceBusy, match=f"in use by process {holder.pid} "):
            Runner(ws, full_link=True, new_series=True).run()
        with pytest.raises(WorkspaceBusy), Engine() as engine:
            ingest(ws, engine)
        result = CliRunner().invoke(app, ["release", "-w", str(ws.root), "--new-series"])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and f"is in use by process {holder.pid}" in said, said
        assert _versions(ws) == ["v0001"]
    finally:
        holder.kill()
        holder.wait()
    # Killed, the holder's lock went with it: no stale lock to clear by hand.
    assert _ran(Runner(ws, new_series=True).run()) == ["release"]
    assert _versions(ws) == ["v0001", "v0002"]
    _holder(ws.root).kill()  # and this process let go of it when the run ended


def test_partial_folders_of_a_killed_run_are_removed_by_the_next(ws):
    zone = ws.zones / ".landed.partial-999999"
    zone.mkdir()
    (zone / "magistrates__defendants.parquet").write_bytes(b"cut short")
    release = ws.root / "releases" / ".v0002.partial-999999"
    (release / "tables").mkdir(parents=True)
    (release / "tables" / "person.parquet").write_bytes(b"cut short")
    for p in (release / "tables" / "person.parquet", release / "tables", release):
        p.chmod(0o444 if p.is_file() else 0o555)  # releases are made read-only before their rename
    ledger = ws.root / "releases" / ".ledger.json.999999"
    ledger.write_text("{")
    other = ws.zones / ".notes"  # not something datafirst writes: left alone
    other.mkdir()
    results = Runner(ws).run()
    assert _ran(results) == []
    assert not zone.exists() and not release.exists() and not ledger.exists()
    assert other.is_dir() and _versions(ws) == ["v0001"]


def test_an_extract_replaced_while_ingest_runs_is_taken_in_by_the_next_run(ws, monkeypatch):
    import datafirst.sources.ingest as ingest_module
    from datafirst.files import file_sha256

    extract = ws.extracts / "civil" / "claims.csv"
    lines = extract.read_bytes().splitlines(keepends=True)
    real = ingest_module.ingest

    def ingest_then_a_delivery_lands(*args, **kwargs):
        loads = real(*args, **kwargs)
        extract.write_bytes(b"".join(lines[:-1]))  # the next delivery: one row deleted
        return loads

    monkeypatch.setattr(ingest_module, "ingest", ingest_then_a_delivery_lands)
    extract.touch()
    assert "ingest" in _ran(Runner(ws).run())
    monkeypatch.setattr(ingest_module, "ingest", real)
    assert "ingest" in _ran(Runner(ws).run())
    accounting = duckdb.connect().execute(f"""SELECT file_sha256, read FROM
        read_parquet('{ws.zone("landed")}/_accounting.parquet') WHERE file = 'civil/claims.csv'""").fetchall()
    assert accounting == [(file_sha256(extract), len(lines) - 2)]  # header and the deleted row


def test_names_left_in_a_content_column_by_a_contract_edit_fail_the_release(ws):
    """A name column whose role was removed from its contract lands in content. Undeclared, it is
    withheld (the allow-list); declared free text, its values ('SMITH, John') equal no single
    identifier, but the guard sees the names in them."""
    contract = ws.contracts / "crown.yaml"
    text = contract.read_text()
    role = "defendant_name: {role: full_name, name_order: surname_comma_forenames}"
    assert role in text
    contract.write_text(text.replace(role, "defendant_name: {}"))
    Runner(ws).run()
    assert _versions(ws) == ["v0001", "v0002"]
    notes = (ws.root / "releases" / "v0002" / "RELEASE_NOTES.md").read_text()
    assert "- `crown__defendants.defendant_name`: text with no code list" in notes
    contract.write_text(text.replace(role, "defendant_name: {free_text: true}"))
    with pytest.raises(ReleaseError, match=r"crown__defendants\.defendant_name: .* look like personal names"):
        Runner(ws).run()
    assert _versions(ws) == ["v0001", "v0002"]


@pytest.mark.parametrize("damage", ["deleted", "altered"])
def test_a_run_with_nothing_to_do_still_refuses_a_damaged_release(ws, damage):
    latest = ws.root / "releases" / "v0001"
    for p in [latest, *latest.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    if damage == "deleted":
        shutil.rmtree(latest)
    else:
        table = latest / "tables" / "person.parquet"
        table.write_bytes(table.read_bytes()[:-1] + b"\0")
    with pytest.raises(ReleaseError, match="missing" if damage == "deleted" else "altered"):
        Runner(ws).run()


def test_inputs_touched_but_unchanged_publish_no_new_release(ws):
    extract = ws.extracts / "civil" / "claims.csv"
    extract.write_bytes(extract.read_bytes())  # the same bytes, a new modification time
    results = Runner(ws).run()
    release = next(r for r in results if r.stage == "release")
    assert release.ran and release.detail.startswith("no change since v0001"), release.detail
    assert _versions(ws) == ["v0001"]
    assert _ran(Runner(ws).run()) == []


def test_a_release_published_just_before_a_crash_is_not_published_twice(ws):
    extract = ws.extracts / "civil" / "claims.csv"
    lines = extract.read_bytes().splitlines(keepends=True)
    extract.write_bytes(b"".join(lines[:-1]))  # a new delivery: one claim deleted
    Runner(ws).run()
    assert _versions(ws) == ["v0001", "v0002"]
    (ws.root / STATE_DIR / "release.json").unlink()  # killed after the rename, before the run noted it
    again = next(r for r in Runner(ws).run() if r.stage == "release")
    assert again.detail.startswith("no change since v0002") and _versions(ws) == ["v0001", "v0002"]


def test_a_ledger_entry_without_a_version_is_refused_with_a_message(ws):
    ledger = ws.root / "releases" / "ledger.json"
    ledger.write_text(json.dumps({"releases": [{"v": "v0001"}]}))
    result = CliRunner().invoke(app, ["release", "-w", str(ws.root)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "ledger.json is unreadable (entry 1 is not a release" in said, said


def test_a_blocking_rule_on_a_column_the_identifiers_lack_is_refused_with_a_message(ws):
    from datafirst.link.inputs import LinkError

    with open(ws.config_path, "a", encoding="utf-8") as f:
        f.write("link:\n  blocking_rules: [[surname], [nosuchcol]]\n")
    with pytest.raises(LinkError, match=r"link.blocking_rules in .*datafirst.yaml: the rule \['nosuchcol'\] names "
                                        r"\['nosuchcol'\], which the identifiers do not have; the columns are source"):
        Runner(ws).run()
    assert (ws.zone("links") / "clusters.parquet").is_file()


def test_an_engine_error_and_bad_labels_end_on_an_error_line_not_a_traceback(ws, tmp_path):
    """The console command itself (`python -m datafirst`): a setting naming a column the content
    lacks stops DuckDB mid-stage; labels without their columns are refused before any stage."""
    with open(ws.config_path, "a", encoding="utf-8") as f:
        f.write("link:\n  journey: {crown_case: nosuchcol}\n")
    done = subprocess.run([sys.executable, "-m", "datafirst", "run", "-w", str(ws.root)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert "error: the engine stopped:" in done.stderr and "nosuchcol" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    labels = tmp_path / "labels.parquet"
    duckdb.connect().execute(f"COPY (SELECT 'a' AS record_key) TO '{labels}' (FORMAT parquet)").fetchall()
    result = CliRunner().invoke(app, ["link", "-w", str(ws.root), "--labels", str(labels)])
    assert result.exit_code == 2 and "has no true_id column" in " ".join(result.output.split()), result.output


def test_reports_that_are_gone_are_remade_without_standardising_or_linking_again(ws):
    zones = {z: sorted((p.name, p.stat().st_mtime_ns) for p in ws.zone(z).iterdir()) for z in ("content", "links")}
    shutil.rmtree(ws.reports)
    results = {r.stage: r for r in Runner(ws).run()}
    assert _ran(results.values()) == ["standardise", "link"]
    assert "not standardised again" in results["standardise"].detail
    assert "not linked again" in results["link"].detail
    assert zones == {z: sorted((p.name, p.stat().st_mtime_ns) for p in ws.zone(z).iterdir()) for z in ("content", "links")}
    for report in ("data_quality", "linkage_quality"):
        assert (ws.reports / report / "report.html").is_file() and (ws.reports / report / "latest.json").is_file()
    assert _versions(ws) == ["v0001"]


def test_a_table_that_lands_far_fewer_rows_raises_an_alert(ws):
    extract = ws.extracts / "crown" / "defendants.psv"
    extract.write_bytes(extract.read_bytes().splitlines(keepends=True)[0])  # the header alone: an empty delivery
    runner = Runner(ws)
    with pytest.raises(ReleaseError, match="crown__defendants: rows landed fell"):  # control totals (their tests)
        runner.run()
    standardised = next(r for r in runner.results if r.stage == "standardise")
    assert "ALERT crown/defendants: rows landed fell from " in standardised.detail
    assert " to 0 (more than 20%): check the delivery" in standardised.detail
    page = (ws.reports / "data_quality" / "report.html").read_text()
    assert "crown/defendants: rows landed fell from" in page


def test_a_demo_over_an_earlier_demo_in_use_is_refused_before_anything_is_removed(tmp_path):
    out = tmp_path / "demo"
    ws = Workspace.init(out, out / "world" / "extracts")
    (out / "world").mkdir()
    (out / "world" / "world.json").write_text("{}")
    (out / "releases" / "v0001").mkdir(parents=True)
    holder = _holder(out)
    try:
        result = CliRunner().invoke(app, ["demo", "--out", str(out), "--people", "500"])
    finally:
        holder.kill()
        holder.wait()
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and f"is in use by process {holder.pid}" in said, said
    assert (out / "releases" / "v0001").is_dir() and ws.config_path.is_file() and (out / "world" / "world.json").is_file()


def test_another_thread_of_the_process_is_refused_too(ws):
    import threading

    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with ws.lock():
            with ws.lock():  # re-entrant within its thread
                held.set()
                done.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(WorkspaceBusy, match="in use by process"):
            with ws.lock():
                pass
    finally:
        done.set()
        thread.join()
    with ws.lock():  # free again once the thread let go
        pass
