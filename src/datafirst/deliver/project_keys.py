"""Each project's own key, with which every id of its packages is re-keyed.

A release's ids are keyed hashes made with the release's key; a package re-hashes each of them
with its project's key, so two projects' packages share no id and cannot be joined, while the
packages of one project (across releases) join to each other. The key is a file
`$DATAFIRST_PROJECT_KEYS_DIR/<project id>.key`, kept outside the workspace (whoever can read the
workspace could otherwise re-key one package into another's ids), readable by its owner only,
and as strong as the release's key (`hashing_key.check_key`). `datafirst project key new P`
writes one.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..engine import Engine
from ..release.chain import inside
from ..release.hashing_key import SecretError, read_key_file, write_new_key
from ..release.products import HASH_CHARS

KEYS_DIR_ENV = "DATAFIRST_PROJECT_KEYS_DIR"
PROJECT_HASH_CHARS = HASH_CHARS  # a package's ids have the release's shape


def keys_dir(workspace: Path) -> Path:
    """The folder of project keys: named by DATAFIRST_PROJECT_KEYS_DIR, outside the workspace."""
    named = os.environ.get(KEYS_DIR_ENV)
    if not named:
        raise SecretError(f"no folder of project keys: set {KEYS_DIR_ENV} to a folder outside the workspace, readable "
                          "by you only (the data owner's secrets), then `datafirst project key new PROJECT`")
    folder = Path(named)
    if inside(folder, workspace):
        raise SecretError(f"{KEYS_DIR_ENV} names {folder}, inside the workspace {workspace}: whoever can read the "
                          "workspace could read every project's key; keep the keys outside it")
    return folder


def key_path(workspace: Path, project_id: str) -> Path:
    return keys_dir(workspace) / f"{project_id}.key"


def new_project_key(workspace: Path, project_id: str) -> Path:
    """Write a new random key for the project (refused when it has one: its packages' ids would no
    longer join). The folder is made owner-only when it is not there."""
    folder = keys_dir(workspace)
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True)
    return write_new_key(folder / f"{project_id}.key")


def load_project_key(workspace: Path, project_id: str) -> str:
    """The project's key; refused when missing, weak, or readable or writable by others."""
    path = key_path(workspace, project_id)
    return read_key_file(path, "key", f"file {path} ({KEYS_DIR_ENV})",
                         f"make a new one with `datafirst project key new {project_id}`",
                         missing=f"project {project_id} has no key ({path} is not there): make one with "
                                 f"`datafirst project key new {project_id}`")


def install_project_hash(engine: Engine, key: str) -> None:
    """`project_hash(x)`: a release id hashed again with the project's key (held in a session
    variable, so it never appears in SQL text). A person id keeps its `P`, so ids keep their shape."""
    engine.execute("SET VARIABLE datafirst_project_key = ?", [key])
    engine.execute(f"""CREATE OR REPLACE TEMP MACRO project_hash(x) AS CASE WHEN x IS NULL THEN NULL
        ELSE (CASE WHEN substr(CAST(x AS VARCHAR), 1, 1) = 'P' THEN 'P' ELSE '' END)
             || substr(sha256(getvariable('datafirst_project_key') || '|' || CAST(x AS VARCHAR)), 1,
                       {PROJECT_HASH_CHARS}) END""")


def forget_project_hash(engine: Engine) -> None:
    engine.execute("DROP MACRO IF EXISTS project_hash")
    engine.execute("RESET VARIABLE datafirst_project_key")
