"""The link stage's input: every source's identifiers in one table, checked and ready for Splink.

Shared by training (link/train.py) and linking (link/stage.py): the identifier files, the
checks that a source can be linked at all, the input table with the columns the comparisons
derive, the saved models' folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from splink import Linker
from splink.internals.database_api import DatabaseAPI

from ..engine import Engine
from ..engine.sql import sql_string
from ..files import file_sha256
from ..standardise.stage import IDENTIFIERS
from ..workspace import Workspace
from .nicknames import load_groups
from .settings import LINKING_ROLES, MIN_LINKING_ROLES

MODELS = "models"
INPUT_TABLE = "link_input"
ROLE_COLUMNS = {"name": ("forename", "surname"), "date_of_birth": ("year_of_birth",), "postcode": ("postcode",),
                "address": ("address",), "pnc": ("pnc",), "cro": ("cro",), "other_id": ("other_id",)}


class LinkError(Exception):
    """Linkage that must not go ahead; the message says why and what to do."""


def identifier_files(ws: Workspace) -> list[Path]:
    files = sorted(ws.zone(IDENTIFIERS).glob("*.parquet"))
    if not files:
        raise LinkError(f"no identifiers in {ws.zone(IDENTIFIERS)}; run `datafirst standardise` first")
    return files


def check_linkable(engine: Engine, files: list[Path]) -> None:
    """Refuse a source whose identifiers give too few roles to link on. An address counts only
    where the model compares it: when no source has postcodes (see settings.model_spec)."""
    by_file = {}
    for path in files:
        counts = engine.execute(
            "SELECT " + ", ".join(f"count(*) FILTER (WHERE {' OR '.join(f'{c} IS NOT NULL' for c in cols)})"
                                  for cols in ROLE_COLUMNS.values()) + f", count(*) FROM {engine.parquet(path)}")[0]
        if counts[-1]:
            by_file[path] = [role for role, n in zip(ROLE_COLUMNS, counts[:-1]) if n > 0]
    postcodes = any("postcode" in roles for roles in by_file.values())
    for path, roles in by_file.items():
        present = [r for r in roles if not (r == "address" and postcodes)]
        if len(present) < MIN_LINKING_ROLES:
            missing = [r for r in LINKING_ROLES if r not in present]
            unused = (" (its address is not compared, because other sources have postcodes: give it a postcode "
                      "role)" if "address" in roles and postcodes else "")
            raise LinkError(
                f"{path.stem.replace('__', '/')} cannot be linked: its identifiers give only {present or 'no roles'}"
                f"{unused}; linkage needs at least {MIN_LINKING_ROLES} of {list(LINKING_ROLES)}. Missing: {missing}. "
                "Give the columns that hold them a `role` in the source's contract, or leave the source out.")


def load_input(engine: Engine, files: list[Path]) -> set[str]:
    """Union every identifiers table into the engine, with the columns the comparisons derive
    from them; returns the columns that hold any value."""
    paths = "[" + ", ".join(sql_string(p) for p in files) + "]"
    groups = load_groups(engine)
    # Address words as a list, for comparing addresses that gained or lost a word; the date of
    # birth as ISO text, for a digit mistyped; the forename's nickname groups and, for blocking, its one
    # canonical group (link/nicknames.py).
    engine.execute(f"""CREATE OR REPLACE TABLE {INPUT_TABLE} AS
        SELECT i.* EXCLUDE (flags), list_distinct(string_split(i.address, ' ')) AS address_tokens,
               CAST(i.date_of_birth AS VARCHAR) AS dob_text, g.groups AS forename_groups,
               coalesce(g.canonical, i.forename) AS forename_group
        FROM read_parquet({paths}) i LEFT JOIN {groups} g ON g.name = i.forename
        ORDER BY i.record_key""")
    cols = engine.columns(INPUT_TABLE)
    *counts, keys = engine.execute("SELECT " + ", ".join(f"count({c})" for c in cols)
                                   + f", count(DISTINCT record_key) FROM {INPUT_TABLE}")[0]
    if keys != counts[cols.index("record_key")]:
        raise LinkError(f"the identifiers hold {counts[cols.index('record_key')] - keys:,} repeated record keys; "
                        "each record must appear once. Check the contracts' record_id columns and standardise again.")
    return {c for c, n in zip(cols, counts) if n > 0}


def check_rule_columns(engine: Engine, rules: list[list[str]] | None, key: str, ws: Workspace) -> None:
    """Refuse a configured rule naming a column the identifiers do not have (it would stop in the
    engine with a binder error)."""
    columns = engine.columns(INPUT_TABLE)
    for rule in rules or []:
        unknown = [c for c in rule if c not in columns]
        if unknown:
            raise LinkError(f"{key} in {ws.config_path}: the rule {rule} names {unknown}, which the identifiers do "
                            f"not have; the columns are {', '.join(c for c in columns if c != 'record_key')}")


def linker(engine: Engine, model, db_api: DatabaseAPI | None = None, table: str = INPUT_TABLE) -> Linker:
    db_api = db_api or engine.splink_api()
    sdf = db_api.register(table, dataset_display_name="identifiers")
    return Linker(sdf, model, log_level=logging.ERROR)  # Splink warnings would drown the progress output


def fingerprint(files: list[Path]) -> list[dict]:
    out = []
    for p in files:
        out.append({"table": p.stem, "sha256": file_sha256(p)})
    return out


def current_model(ws: Workspace) -> Path:
    pointer = ws.root / MODELS / "current.json"
    if not pointer.is_file():
        raise LinkError(f"no trained model in {ws.root / MODELS}; run `datafirst train` first")
    return ws.root / MODELS / json.loads(pointer.read_text(encoding="utf-8"))["model"]
