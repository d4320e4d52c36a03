"""`datafirst diff A B`: what changed between two releases.

Rows per table, schema changes, and, at each threshold, people and what happened to their
ids: how many continued, and the merges (an id of B holding records of two or more ids of A)
and splits (an id of A whose records are under two or more ids of B), over the records both
releases hold (joined on
the hashed row id, which is the same in both when they were made with the same key).
Both releases are checked first as `datafirst verify` checks them (`chain.release_problems`:
in a workspace, every release there, their signatures and chain, and the ledger): a diff of an
altered or forged release would describe data nobody published.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..engine import Engine
from ..engine.sql import sql_string
from .chain import MANIFEST, ReleaseError, release_problems
from .person_ids import THRESHOLDS
from .signing import trusted_public_keys


def _checked(releases: tuple[Path, ...], keys: list[Ed25519PublicKey]) -> None:
    """Refuse unless both releases (and the releases folder each is in) verify."""
    problems: list[str] = []
    checked: dict = {}  # a releases folder holding both is checked once
    for path in releases:
        if not (path / MANIFEST).is_file():
            raise ReleaseError(f"{path} is not a release (no {MANIFEST})")
        problems += [p for p in release_problems(path, keys, checked=checked) if p not in problems]
    if problems:
        raise ReleaseError("cannot compare releases that do not verify:\n  " + "\n  ".join(problems))


def _load(path: Path) -> dict:
    return {"manifest": json.loads((path / MANIFEST).read_text(encoding="utf-8")),
            "dictionary": json.loads((path / "dictionary.json").read_text(encoding="utf-8"))}


def schema_changes(a: dict, b: dict) -> list[dict]:
    old = {t["name"]: {c["name"]: c["type"] for c in t["columns"]} for t in a["tables"]}
    new = {t["name"]: {c["name"]: c["type"] for c in t["columns"]} for t in b["tables"]}
    out = [{"change": "table added", "table": n} for n in sorted(new.keys() - old.keys())]
    out += [{"change": "table removed", "table": n} for n in sorted(old.keys() - new.keys())]
    for n in sorted(old.keys() & new.keys()):
        out += [{"change": "column added", "table": n, "column": c, "type": new[n][c]}
                for c in sorted(new[n].keys() - old[n].keys())]
        out += [{"change": "column removed", "table": n, "column": c, "type": old[n][c]}
                for c in sorted(old[n].keys() - new[n].keys())]
        out += [{"change": "type changed", "table": n, "column": c, "from": old[n][c], "to": new[n][c]}
                for c in sorted(old[n].keys() & new[n].keys()) if old[n][c] != new[n][c]]
    return out


def diff(engine: Engine, a: Path, b: Path, keys: list[Ed25519PublicKey] | None = None) -> dict:
    """`keys`: the trusted public keys (by default `signing.trusted_public_keys`)."""
    _checked((a, b), keys if keys is not None else trusted_public_keys())
    ra, rb = _load(a), _load(b)
    rows_a = {t["name"]: t["rows"] for t in ra["dictionary"]["tables"]}
    rows_b = {t["name"]: t["rows"] for t in rb["dictionary"]["tables"]}
    out = {
        "a": a.name, "b": b.name,
        "same_key": ra["manifest"].get("key_check") == rb["manifest"].get("key_check"),
        "tables": [{"table": n, "rows_a": rows_a.get(n), "rows_b": rows_b.get(n)}
                   for n in sorted(rows_a.keys() | rows_b.keys())],
        "schema_changes": schema_changes(ra["dictionary"], rb["dictionary"]),
    }
    la = sql_string(a / "tables" / "person_link_lookup.parquet")
    lb = sql_string(b / "tables" / "person_link_lookup.parquet")
    (only_a, only_b, both), = engine.execute(f"""
        SELECT count(*) FILTER (b.row_id_hash IS NULL), count(*) FILTER (a.row_id_hash IS NULL),
               count(*) FILTER (a.row_id_hash IS NOT NULL AND b.row_id_hash IS NOT NULL)
        FROM read_parquet({la}) a FULL JOIN read_parquet({lb}) b USING (row_id_hash)""")
    out["records"] = {"only_in_a": only_a, "only_in_b": only_b, "in_both": both}
    out["people"] = {}
    for t in THRESHOLDS:
        col = f"person_id_{t}"
        engine.execute(f"""CREATE OR REPLACE TEMP TABLE diff_pairs AS
            SELECT a.{col} AS id_a, b.{col} AS id_b, count(*) AS n
            FROM read_parquet({la}) a JOIN read_parquet({lb}) b USING (row_id_hash) GROUP BY ALL""")
        (people_a, people_b, kept, merges, splits), = engine.execute(f"""
            SELECT (SELECT count(DISTINCT {col}) FROM read_parquet({la})),
                   (SELECT count(DISTINCT {col}) FROM read_parquet({lb})),
                   (SELECT count(*) FROM (SELECT DISTINCT {col} FROM read_parquet({la}))
                      SEMI JOIN (SELECT DISTINCT {col} FROM read_parquet({lb})) USING ({col})),
                   (SELECT count(*) FROM (SELECT id_b FROM diff_pairs GROUP BY 1 HAVING count(*) > 1)),
                   (SELECT count(*) FROM (SELECT id_a FROM diff_pairs GROUP BY 1 HAVING count(*) > 1))""")
        engine.execute("DROP TABLE diff_pairs")
        out["people"][t] = {"people_a": people_a, "people_b": people_b, "ids_in_both": kept,
                            "ids_only_in_a": people_a - kept, "ids_only_in_b": people_b - kept,
                            "merges": merges, "splits": splits}
    return out
