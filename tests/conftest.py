"""Shared fixtures: real generated worlds, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from datafirst.world import generate_world

WORLD_PEOPLE = 20_000


def pytest_collection_modifyitems(items):
    """The Spark modules first (the longest by far; local mode, then the standalone cluster): with
    two workers (pyproject.toml's addopts), one takes the first at once, the other the second."""
    spark_first = ("tests/test_spark.py", "tests/test_spark_cluster.py")
    items.sort(key=lambda item: next((i for i, m in enumerate(spark_first) if item.nodeid.startswith(m)), 2))


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """A 20,000-person world (about 58,000 source records), seed 11."""
    out = tmp_path_factory.mktemp("worlds") / "w20k"
    generate_world(out, WORLD_PEOPLE, seed=11)
    return out


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory) -> Path:
    """Releases are signed (docs/release.md): one key pair for the session, outside every
    workspace, named by DATAFIRST_SIGNING_KEY_FILE for this process and the ones it starts."""
    import os

    from datafirst.release.signing import SIGNING_KEY_FILE_ENV, new_key_pair

    path = tmp_path_factory.mktemp("signing") / "release.key"
    new_key_pair(path)
    os.environ[SIGNING_KEY_FILE_ENV] = str(path)
    return path


@pytest.fixture(autouse=True)
def _restore_salt_environment():
    """`datafirst demo` sets DATAFIRST_SALT_FILE for its own process; in tests that process is
    pytest, so put the environment back after every test."""
    import os

    saved = {k: os.environ.get(k) for k in ("DATAFIRST_SALT", "DATAFIRST_SALT_FILE")}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


TEST_SALT = "34787a38770e5656e4c06ab24c7f3f644724190015d0c2042f81483df59d771f"


# Workspaces already built on the session's world, by how far they were taken: a module's fixture
# gets a copy (a pipeline on the 20,000-person world takes about 40 s; a copy well under one).
_BUILT: dict[tuple[Path, str], Path] = {}


def build_pipeline(world: Path, root: Path, through: str):
    """A workspace on the world's extracts, run through `standardise`, `link` or `release`
    with real DuckDB and Splink (reports included), for module-scoped fixtures. The pipeline
    runs once per world and stage in a session: each caller gets its own copy to change."""
    import shutil
    import tempfile

    from datafirst.workspace import Workspace

    if (world.resolve(), through) not in _BUILT:
        _build(world, Path(tempfile.mkdtemp(dir=root.parent, prefix=f"built-{world.name}-")))
    ws_root = root / "ws"
    shutil.copytree(_BUILT[(world.resolve(), through)], ws_root, symlinks=True)
    return Workspace(ws_root)


def _build(world: Path, folder: Path) -> None:
    """Take a workspace on the world through every stage, keeping a copy after each stage a
    fixture may ask for (most modules ask for a release, so it is made the first time)."""
    import shutil

    from datafirst.workspace import Workspace

    ws = Workspace.init(folder / "ws", world / "extracts")

    def keep(stage: str) -> None:
        kept = folder / f"after-{stage}"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(ws.root, kept, symlinks=True)
        _BUILT[(world.resolve(), stage)] = kept

    run_pipeline(ws, "release", after=keep)


def run_pipeline(ws, through: str = "release", after=None) -> None:
    """Ingest and standardise a workspace, then train and link, then release (up to `through`),
    reports included, with real DuckDB and Splink; `after(stage)` is called after each of
    standardise, link and release."""
    from datafirst.engine import Engine
    from datafirst.link.quality import write_report as link_report
    from datafirst.link.stage import link
    from datafirst.link.train import train
    from datafirst.release.stage import release
    from datafirst.sources.ingest import ingest
    from datafirst.standardise.quality import write_report as dq_report
    from datafirst.standardise.stage import standardise

    done = after or (lambda stage: None)
    with Engine() as engine:
        ingest(ws, engine)
        standardise(ws, engine, as_of="2025-06-30")
        dq_report(ws, engine)
        done("standardise")
        if through == "standardise":
            return
        train(ws, engine)
        link(ws, engine)
        link_report(ws, engine)
        done("link")
        if through == "link":
            return
        release(ws, engine, salt=TEST_SALT)
        done("release")
