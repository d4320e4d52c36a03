"""Input hygiene (issue 23): ranges, control characters, long lines, JSON that is not an object,
rows and files cut short, the fingerprint of what was read, the lock, a read-only workspace.
Real files through the real loader and DuckDB; in every test read = landed + quarantined."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from datafirst.engine import Engine
from datafirst.sources.contract import ContractError, load_contract
from datafirst.sources.ingest import ingest
from datafirst.workspace import LOCK_FILE, Workspace, WorkspaceBusy

CASES = """
source: cases
tables:
  sentences:
    file: sentences.csv
    record_id: id
    columns:
      id: {required: true, native_id: true}
      note: {}
      custodial_months: {type: integer, min: 0, max: 600}
      arrears: {type: decimal, min: 0}
      sentenced: {type: date, formats: ["%d/%m/%Y"], min: 1950-01-01, max: 2030-12-31}
"""
HEADER = "id,note,custodial_months,arrears,sentenced\n"


def _workspace(tmp_path: Path, files: dict[str, bytes | str], contract: str = CASES) -> Workspace:
    ext = tmp_path / "extracts"
    ext.mkdir(exist_ok=True)
    for name, body in files.items():
        (ext / name).write_bytes(body.encode() if isinstance(body, str) else body)
    ws = Workspace.init(tmp_path / "ws", ext, with_world_contracts=False)
    (ws.root / "contracts" / "cases.yaml").write_text(contract)
    return ws


def _ingest(ws: Workspace):
    with Engine() as engine:
        loads = ingest(ws, engine)
    for load in loads:
        assert load.read == load.landed + load.quarantined, load
    return loads


def _rows(ws: Workspace, sql: str) -> list[tuple]:
    return duckdb.connect().execute(sql.replace("{landed}", str(ws.zone("landed")))).fetchall()


def _quarantine(ws: Workspace) -> list[tuple]:
    return _rows(ws, """SELECT "table", row_number, "column", reason FROM '{landed}/_quarantine.parquet'
                        ORDER BY "table", row_number""")


# --- 1. ranges ------------------------------------------------------------------------------------

def test_values_outside_the_declared_range_are_quarantined_naming_column_value_and_range(tmp_path):
    ws = _workspace(tmp_path, {"sentences.csv": HEADER + "1,ok,12,0,01/02/2020\n2,ok,-36,0,01/02/2020\n"
                                                        "3,ok,99999999,0,01/02/2020\n4,ok,6,-250.5,01/02/2020\n"
                                                        "5,ok,6,10,01/02/1900\n6,ok,600,0.0,31/12/2030\n"})
    (load,) = _ingest(ws)
    assert (load.read, load.landed, load.quarantined) == (6, 2, 4)
    assert _quarantine(ws) == [
        ("sentences", 2, "custodial_months", "outside the range 0 to 600: -36"),
        ("sentences", 3, "custodial_months", "outside the range 0 to 600: 99999999"),
        ("sentences", 4, "arrears", "below the minimum 0: -250.5"),
        ("sentences", 5, "sentenced", "outside the range 1950-01-01 to 2030-12-31: 01/02/1900"),
    ]
    assert _rows(ws, "SELECT id FROM '{landed}/cases__sentences.parquet' ORDER BY id") == [("1",), ("6",)]


def test_under_on_invalid_null_a_value_outside_the_range_is_emptied_and_the_row_kept(tmp_path):
    contract = CASES.replace("{type: integer, min: 0, max: 600}", "{type: integer, min: 0, max: 600, on_invalid: null}")
    ws = _workspace(tmp_path, {"sentences.csv": HEADER + "1,ok,-36,0,01/02/2020\n2,ok,7,0,01/02/2020\n"}, contract)
    (load,) = _ingest(ws)
    assert (load.read, load.landed, load.quarantined) == (2, 2, 0)
    assert _rows(ws, "SELECT id, custodial_months FROM '{landed}/cases__sentences.parquet' ORDER BY id") == \
        [("1", None), ("2", 7)]


# --- 2. control characters ------------------------------------------------------------------------

def test_text_holding_a_control_character_never_lands(tmp_path):
    c1 = "\u0085".encode()  # NEXT LINE, a C1 control, written as UTF-8
    body = (HEADER.encode() + b"1,fine\x00x,1,0,01/02/2020\n2,bell\x07,1,0,01/02/2020\n3,del\x7f,1,0,01/02/2020\n"
            b"4,c1" + c1 + b",1,0,01/02/2020\n5,tab\tand \xc3\xa9,1,0,01/02/2020\n")
    ws = _workspace(tmp_path, {"sentences.csv": body})
    (load,) = _ingest(ws)
    assert (load.read, load.landed, load.quarantined) == (5, 1, 4)
    hint = " (remove it at the source, or declare control_characters: remove in the contract)"
    assert _quarantine(ws) == [("sentences", 1, "note", "control character in text: U+0000" + hint),
                               ("sentences", 2, "note", "control character in text: U+0007" + hint),
                               ("sentences", 3, "note", "control character in text: U+007F" + hint),
                               ("sentences", 4, "note", "control character in text: U+0085" + hint)]
    assert _rows(ws, "SELECT note FROM '{landed}/cases__sentences.parquet'") == [("tab\tand é",)]


def test_control_characters_in_json_escapes_are_caught_and_can_be_removed_where_the_contract_says(tmp_path):
    contract = """
source: cases
tables:
  events:
    file: events.jsonl
    format: jsonl
    record_id: id
    columns:
      id: {path: $.id}
      title: {path: $.title}
      note: {path: $.note, control_characters: remove}
"""
    body = ('{"id": "1", "title": "fine\\u0000x", "note": "a"}\n{"id": "2", "title": "ok", "note": "fine\\u0000x\\b"}\n'
            '{"id": "3", "title": "line\\nbreak", "note": "\\u0007"}\n')
    ws = _workspace(tmp_path, {"events.jsonl": body}, contract)
    (load,) = _ingest(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 2, 1)
    assert _quarantine(ws)[0][:3] == ("events", 1, "title")
    assert _rows(ws, "SELECT id, title, note FROM '{landed}/cases__events.parquet' ORDER BY id") == \
        [("2", "ok", "finex"), ("3", "line\nbreak", None)]
    nul = _rows(ws, "SELECT count(*) FROM '{landed}/cases__events.parquet' WHERE contains(title || coalesce(note, ''), chr(0))")
    assert nul == [(0,)]


def test_control_characters_is_a_key_of_string_columns_only(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CASES.replace("{type: integer, min: 0, max: 600}", "{type: integer, control_characters: remove}"))
    with pytest.raises(ContractError, match="`control_characters` is for string columns"):
        load_contract(path)
    path.write_text(CASES.replace("note: {}", "note: {control_characters: keep}"))
    with pytest.raises(ContractError, match="control_characters"):
        load_contract(path)


# --- 3. long lines --------------------------------------------------------------------------------

def test_a_line_longer_than_the_readers_block_is_read_and_the_other_rows_land(tmp_path):
    # A 17 MiB line from 15 MiB into the file: it crosses two of the reader's 16 MiB blocks.
    ws = _workspace(tmp_path, {"sentences.csv": HEADER + f"1,{'y' * (15 << 20)},1,0,01/02/2020\n"
                                                        f"2,{'x' * (17 << 20)},1,0,01/02/2020\n3,ok,2,0,01/02/2020\n"})
    (load,) = _ingest(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 3, 0)
    assert _rows(ws, "SELECT id, length(note) FROM '{landed}/cases__sentences.parquet' ORDER BY id") == \
        [("1", 15 << 20), ("2", 17 << 20), ("3", 2)]


# --- 4. JSON that is not an object ----------------------------------------------------------------

def test_json_lines_that_are_not_objects_say_so(tmp_path):
    contract = """
source: cases
tables:
  events:
    file: events.jsonl
    format: jsonl
    record_id: id
    columns:
      id: {path: $.id}
"""
    body = '{"id": "1"}\n[1, 2]\n42\n"text"\nnull\ntrue\n  {"id": "2"}\n'
    ws = _workspace(tmp_path, {"events.jsonl": body}, contract)
    (load,) = _ingest(ws)
    assert (load.read, load.landed, load.quarantined) == (7, 2, 5)
    assert [(r[1], r[3]) for r in _quarantine(ws)] == [
        (2, "not a JSON object: an array (each line must be one JSON object)"),
        (3, "not a JSON object: a number (each line must be one JSON object)"),
        (4, "not a JSON object: a string (each line must be one JSON object)"),
        (5, "not a JSON object: null (each line must be one JSON object)"),
        (6, "not a JSON object: true or false (each line must be one JSON object)"),
    ]


# --- 5. rows and files cut short ------------------------------------------------------------------

def test_a_row_cut_before_its_last_field_is_quarantined_and_the_file_flagged_cut(tmp_path):
    ws = _workspace(tmp_path, {"sentences.csv": HEADER + "1,ok,1,0,01/02/2020\n2,short,3,0\n3,ok,2,0,"})
    (load,) = _ingest(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 1, 2)
    assert load.last_line_cut
    assert _quarantine(ws) == [
        ("sentences", 2, None, "expected 5 fields, found 4"),
        ("sentences", 3, None, "cut short: the file ends on this row, just after a ',' and without a line break, "
                               "so its last field is missing (expected 5 fields); export the file again"),
    ]
    assert _rows(ws, "SELECT last_line_cut FROM '{landed}/_accounting.parquet'") == [(True,)]


@pytest.mark.parametrize("name, body, cut", [
    ("sentences.csv", HEADER + "1,ok,1,0,01/02/2020\n2,ok,1,0,01/02/20", True),   # cut inside the last value
    ("sentences.csv", HEADER + "1,ok,1,0,01/02/2020\n2,ok,1", True),              # too few fields
    ("sentences.csv", HEADER + "1,ok,1,0,01/02/2020\n2,ok,1,0,01/02/2020", False),  # complete, no final line break
    ("sentences.csv", HEADER + "1,ok,1,0,01/02/2020\n2,ok,1,0,\n", False),        # an empty last field, line ended
    ("events.jsonl", '{"id": "1"}\n{"id": "2", "no', True),
    ("events.jsonl", '{"id": "1"}\n{"id": "2"}', False),
])
def test_a_file_is_flagged_cut_only_when_its_unterminated_last_line_cannot_be_loaded(tmp_path, name, body, cut):
    contract = CASES if name.endswith(".csv") else """
source: cases
tables:
  events:
    file: events.jsonl
    format: jsonl
    record_id: id
    columns:
      id: {path: $.id}
"""
    (load,) = _ingest(_workspace(tmp_path, {name: body}, contract))
    assert load.last_line_cut is cut
    assert load.quarantined == (1 if cut else 0) and load.read == 2


# --- 7. the fingerprint describes what was loaded -------------------------------------------------

def test_a_file_replaced_while_it_is_read_lands_under_the_hash_of_the_bytes_loaded(tmp_path, monkeypatch):
    import datafirst.sources.ingest as ingest_module

    first = HEADER + "1,first,1,0,01/02/2020\n"
    second = HEADER + "1,second,1,0,01/02/2020\n2,second,1,0,01/02/2020\n"
    ws = _workspace(tmp_path, {"sentences.csv": first})
    path = ws.extracts / "sentences.csv"
    real = ingest_module.read_lines

    def a_delivery_lands_then_the_file_is_read(*args, **kwargs):
        path.write_text(second)  # between the digest and the lines: the next delivery replaces the file
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "read_lines", a_delivery_lands_then_the_file_is_read)
    _ingest(ws)
    monkeypatch.setattr(ingest_module, "read_lines", real)
    landed = _rows(ws, "SELECT DISTINCT note, _file_sha256 FROM '{landed}/cases__sentences.parquet'")
    assert len(landed) == 1
    note, digest = landed[0]
    # Whichever version was loaded, the digest is of those bytes.
    assert digest == hashlib.sha256((first if note == "first" else second).encode()).hexdigest()
    # The next ingest sees the file now there as a change (not "unchanged") and lands it.
    (load,) = _ingest(ws)
    assert not load.reused and load.sha256 == hashlib.sha256(second.encode()).hexdigest()
    assert _rows(ws, "SELECT DISTINCT note FROM '{landed}/cases__sentences.parquet'") == [("second",)]


# --- 8. the lock holds when its file is deleted or replaced ---------------------------------------

@pytest.mark.parametrize("swap", ["deleted", "replaced"])
def test_the_lock_holds_when_its_file_is_deleted_or_replaced(tmp_path, swap):
    ws = _workspace(tmp_path, {"sentences.csv": HEADER})
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with ws.lock():
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        lock_file = ws.root / LOCK_FILE
        lock_file.unlink()
        if swap == "replaced":
            lock_file.write_text("{}")
        with pytest.raises(WorkspaceBusy, match="is in use by"):
            with ws.lock():
                pass
        # Another process is refused too.
        other = subprocess.run([sys.executable, "-m", "datafirst", "ingest", "-w", str(ws.root)],
                               capture_output=True, text=True, timeout=120)
        assert other.returncode == 2 and "is in use by" in " ".join(other.stderr.split()), other.stderr
    finally:
        done.set()
        holder.join()
    with ws.lock():  # free again once the holder let go
        pass


# --- 9. a workspace that cannot be written --------------------------------------------------------

def _without_write_access(args: list[str]) -> subprocess.CompletedProcess:
    """`datafirst ARGS` as a process that file permissions hold back: root writes anything, so
    as root the command runs without the capabilities that override them."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv, which could drop the right to override permissions")
        drop = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", "--"]
    return subprocess.run([*prefix, sys.executable, "-m", "datafirst", *args], capture_output=True, text=True,
                          timeout=120)


def _writable(path: Path, yes: bool) -> None:
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode | stat.S_IWUSR if yes else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_a_read_only_workspace_gives_an_error_line_naming_the_path(tmp_path):
    ws = _workspace(tmp_path, {"sentences.csv": HEADER + "1,ok,1,0,01/02/2020\n"})
    _writable(ws.root, False)
    try:
        done = _without_write_access(["ingest", "-w", str(ws.root)])
    finally:
        _writable(ws.root, True)
    said = " ".join(done.stderr.split())
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert said.startswith("error: cannot write ") and str(ws.root) in said and "writable" in said, said


def test_a_workspace_whose_zones_cannot_be_written_gives_an_error_line(tmp_path):
    ws = _workspace(tmp_path, {"sentences.csv": HEADER + "1,ok,1,0,01/02/2020\n"})
    ws.zones.mkdir()
    _writable(ws.zones, False)  # the workspace folder itself is writable: the lock is taken
    try:
        done = _without_write_access(["ingest", "-w", str(ws.root)])
    finally:
        _writable(ws.zones, True)
    said = " ".join(done.stderr.split())
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert said.startswith("error: cannot write ") and str(ws.zones) in said and "permission denied" in said, said
    assert not (ws.zones / "landed").exists()
