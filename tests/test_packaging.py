"""A wheel, as `pip install .` builds it, holds every file the package reads, and the demo runs
from the wheel's files alone (a normal install once lacked sources/contracts and crashed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "datafirst"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source (the build writes into the tree it builds),
    with the build backend pyproject.toml asks for, as `pip install .` does."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "src" / "datafirst", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = (tmp / "dist").glob("datafirst-*.whl")
    return path


def _package_files() -> set[str]:
    return {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_the_wheel_holds_every_file_of_the_package(wheel):
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    files = _package_files()
    data = {f for f in files if not f.endswith(".py")}
    assert "datafirst/sources/contracts/magistrates.yaml" in data  # what the demo's workspace copies
    assert data - in_wheel == set(), "package-data in pyproject.toml misses these"
    assert files - in_wheel == set()


def test_the_demo_runs_from_the_wheel_alone(wheel, tmp_path):
    """The wheel unpacked, with nothing of the source tree on the path: `datafirst demo` makes its
    workspace from the packaged contracts and releases."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k not in ("DATAFIRST_SALT", "DATAFIRST_SALT_FILE")}
    env["PYTHONPATH"] = str(site)
    where = subprocess.run([sys.executable, "-c", "import datafirst; print(datafirst.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    done = subprocess.run([sys.executable, "-m", "datafirst", "demo", "--people", "300", "--out", "demo"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "demo" / "contracts" / "magistrates.yaml").is_file()
    assert (tmp_path / "demo" / "releases" / "v0001" / "dictionary.md").is_file()


def test_ci_installs_a_wheel_and_runs_the_demo_from_outside_the_repository():
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    readme = next(i for i, line in enumerate(lines) if line.endswith(".venv/bin/python -m pytest -q"))
    after = "\n".join(lines[readme + 1:])
    assert "python3 -m venv .venv-wheel && .venv-wheel/bin/pip install -q ." in after  # not -e: a wheel
    assert 'cd "$wheel_demo"' in after and '.venv-wheel/bin/datafirst" demo' in after
