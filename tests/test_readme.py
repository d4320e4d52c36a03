"""The README's two commands are real: CI runs the test one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_gives_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    main, tests = commands
    assert "datafirst demo" in main and "pytest" in tests
    for command in commands:
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    _, tests = _readme_commands()
    assert tests in ci.splitlines()
