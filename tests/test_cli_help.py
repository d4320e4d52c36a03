"""Every command's `--help`, as a user runs it, reads naturally: flags shown bare, no raw type
labels such as `<bool>` or `<str>` where a word belongs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import typer

from datafirst.cli import app

# Type labels Typer prints when an option declares none of its own: a flag is not given a value,
# and `<str>` or `<list[str]>` says nothing about what to write.
RAW_METAVAR = re.compile(r"<(bool|str|list\[[^>]*\])>")


def _command_paths(command, prefix=()) -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as the words that name it (the top level is ())."""
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths += _command_paths(sub, (*prefix, name))
    return paths


def test_help_of_every_command_shows_no_raw_type_labels():
    paths = _command_paths(typer.main.get_command(app))
    assert {("run",), ("demo",), ("diff",), ("init",)} <= set(paths)  # the walk found the commands
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    for words in paths:
        result = subprocess.run([sys.executable, "-m", "datafirst", *words, "--help"], capture_output=True,
                                text=True, env=env, timeout=60)
        assert result.returncode == 0, (words, result.stderr)
        assert "Usage: datafirst" in result.stdout and "--help" in result.stdout, words
        raw = RAW_METAVAR.findall(result.stdout)
        assert not raw, f"`datafirst {' '.join(words)} --help` shows {raw}:\n{result.stdout}"
    # A flag is listed bare, its help beside it; an option taking a value names what it takes.
    run_help = subprocess.run([sys.executable, "-m", "datafirst", "run", "--help"], capture_output=True, text=True,
                              env=env, timeout=60).stdout
    assert re.search(r"--full\s+Score every pair", run_help)
    assert re.search(r"--engine\s+duckdb\|spark\s+Run on this engine", run_help)
