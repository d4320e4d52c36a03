"""A mistake in datafirst.yaml or a contract, as a user makes it and sees it through the CLI:
the error names the file, the place in it and what is wrong, suggests the key or value that
was meant, and sends nobody to pydantic's web pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _datafirst(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datafirst", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture()
def workspace(tmp_path) -> Path:
    (tmp_path / "extracts").mkdir()
    made = _datafirst("init", str(tmp_path / "ws"), "--extracts", str(tmp_path / "extracts"))
    assert made.returncode == 0, made.stderr
    return tmp_path / "ws"


def _refused(ws: Path) -> str:
    result = _datafirst("ingest", "-w", str(ws))
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr
    assert err.startswith("error: ")
    assert "pydantic" not in err and "http" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("setting, expected", [
    # An unknown top-level key, with the key that was meant.
    ("engin: spark", "\n  engin: unknown key `engin`; did you mean `engine`?"),
    # An unknown nested key: its whole key path, and the key meant at that level.
    ("link:\n  threshold:\n    high: 0.99", "\n  link.threshold: unknown key `threshold`; did you mean `thresholds`?"),
    ("link:\n  thresholds:\n    hihg: 0.99", "\n  link.thresholds.hihg: unknown key `hihg`; did you mean `high`?"),
    # A value of the wrong type: the place, what it should be, and what was written.
    ("threads: many", "\n  threads: Input should be a valid integer, unable to parse string as an integer; got 'many'"),
    ("link:\n  blocking_rules: [[surname, 3]]", "\n  link.blocking_rules[0][1]: Input should be a valid string; got 3"),
    # A list where a section of keys belongs.
    ("link: [surname]", "\n  link: should hold keys (indented `key: value` lines); got ['surname']"),
    # No close key at all: the keys that are there.
    ("zzz: 1", "\n  zzz: unknown key `zzz`; the keys here are: extracts, contracts, engine,"),
])
def test_a_config_mistake_names_the_file_the_place_and_the_fix(workspace, setting, expected):
    config = workspace / "datafirst.yaml"
    config.write_text(config.read_text() + setting + "\n")
    err = _refused(workspace)
    assert err.startswith(f"error: {config} is not valid (see docs/config.md):\n"), err
    assert expected in err, err


def test_a_misspelt_engine_name_is_suggested(workspace):
    config = workspace / "datafirst.yaml"
    config.write_text(config.read_text().replace("engine: duckdb", "engine: duckbd"))
    err = _refused(workspace)
    assert "\n  engine: 'duckbd' is not one of: duckdb, spark; did you mean `duckdb`?" in err, err


def test_several_mistakes_are_all_reported_at_once(workspace):
    config = workspace / "datafirst.yaml"
    config.write_text(config.read_text() + "engin: spark\nthreads: many\nlink:\n  threshold: {high: 0.99}\n")
    err = _refused(workspace)
    assert [line.split(":")[0].strip() for line in err.splitlines()[1:]] == ["threads", "link.threshold", "engin"]


def test_a_config_that_is_not_a_mapping_says_what_it_must_hold(workspace):
    config = workspace / "datafirst.yaml"
    config.write_text("- extracts\n")
    err = _refused(workspace)
    assert err.startswith(f"error: {config} must hold `key: value` settings such as `extracts: PATH`"), err


def test_a_contract_mistake_names_the_contract_the_place_and_the_fix(workspace):
    contract = workspace / "contracts" / "crown.yaml"
    text = contract.read_text()
    assert "receipt_date: {type: date," in text
    contract.write_text(text.replace("receipt_date: {type: date,", "receipt_date: {tpye: integer, type: dte,"))
    err = _refused(workspace)
    assert err.startswith(f"error: contract {contract} is not valid:\n"), err
    assert ("\n  tables.defendants.columns.receipt_date.type: 'dte' is not one of: string, integer, decimal, date, "
            "boolean; did you mean `date`?") in err, err
    assert "\n  tables.defendants.columns.receipt_date.tpye: unknown key `tpye`; did you mean `type`?" in err, err
    assert "Nothing was loaded" in err
