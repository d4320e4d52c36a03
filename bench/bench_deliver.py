"""Benchmark: a project's package of every table against the release stage's own build.

    python bench/bench_deliver.py WORKSPACE --salt SALT_FILE --signing-key KEY_FILE [--out DIR]

WORKSPACE holds a release and is only read: it is copied to a scratch folder, where the release
stage is run once more (a full build: products, guard, dictionary, site, checksums, signature)
and timed; then, in the same process and engine settings, a project approved for every column of
every table of the newest release is delivered (Parquet, CSV, and .dta when
`datafirst.deliver.stata` is there), with its dates coarsened to months, years of birth to age
bands, postcode districts to areas and codes to their groups, and timed. The target (issue 26):
the delivery takes at most twice the release stage's time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

import yaml

from datafirst.deliver.package import deliver
from datafirst.deliver.project_keys import KEYS_DIR_ENV, new_project_key
from datafirst.deliver.projects import add_project, approve_project
from datafirst.deliver.treatments import GROUP, MAPPING_COLUMN
from datafirst.engine import open_engine
from datafirst.release.hashing_key import SALT_FILE_ENV
from datafirst.release.signing import SIGNING_KEY_FILE_ENV
from datafirst.release.stage import published, release
from datafirst.workspace import Workspace

TARGET = 2.0


def _treatment(table: dict, column: dict) -> object:
    """Every column delivered, coarsened where a research project would coarsen it."""
    kind, ctype, name = column.get("declared", {}).get("kind"), column.get("type"), column["name"]
    if kind == "hashed_id":
        return "keep"
    if ctype == "DATE":
        return {"coarsen": "month"}
    if name == "year_of_birth":
        return {"coarsen": "age_band", "reference_date": "2026-01-01", "width": 10}
    if name == "postcode_district":
        return {"coarsen": "area"}
    origin = {column.get("harmonised_from"), name} - {None}
    if any(o["name"] != name and o.get("harmonised_from") in origin
           and (m := MAPPING_COLUMN.search(o.get("declared", {}).get("rule", ""))) and m.group("column") == GROUP
           for o in table["columns"]):
        return {"coarsen": "group"}
    return "keep"


def every_table_project(release_dir: Path, path: Path) -> Path:
    dictionary = json.loads((release_dir / "dictionary.json").read_text(encoding="utf-8"))
    tables = {t["name"]: {c["name"]: _treatment(t, c) for c in t["columns"]} for t in dictionary["tables"]}
    path.write_text(yaml.safe_dump({
        "id": "BENCH", "title": "Every table, coarsened", "legal_basis": "benchmark", "approval_reference": "BENCH",
        "tre": "other", "expires": "2099-12-31", "researchers": ["bench@example"], "tables": tables}, sort_keys=False))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--salt", type=Path, required=True, help="the hashing key file the release was made with")
    parser.add_argument("--signing-key", type=Path, required=True, help="the release signing key file")
    parser.add_argument("--out", type=Path, default=None, help="where the package goes (default: scratch)")
    args = parser.parse_args()
    os.environ[SALT_FILE_ENV] = str(args.salt.resolve())
    os.environ[SIGNING_KEY_FILE_ENV] = str(args.signing_key.resolve())
    scratch = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    try:
        root = scratch / "ws"
        shutil.copytree(args.workspace, root, symlinks=True, ignore=shutil.ignore_patterns(".datafirst.lock"))
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
        ws = Workspace(root)
        newest = published(ws)[-1]
        project = every_table_project(newest, scratch / "BENCH.yaml")
        keys = scratch / "keys"
        keys.mkdir(mode=0o700)
        os.environ[KEYS_DIR_ENV] = str(keys)
        add_project(ws.root, project, "requester")
        approve_project(ws.root, "BENCH", "approver")
        new_project_key(ws.root, "BENCH")
        with open_engine(ws) as engine:
            started = time.perf_counter()
            made = release(ws, engine, new_series=False, only_if_changed=False)
            release_seconds = time.perf_counter() - started
            started = time.perf_counter()
            package = deliver(ws, "BENCH", engine, by="bench", release=newest.name, out=args.out or scratch / "out")
            deliver_seconds = time.perf_counter() - started
        rows = sum(package.tables.values())
        size = sum(f.stat().st_size for f in package.path.rglob("*") if f.is_file())
        ratio = deliver_seconds / release_seconds
        print(f"workspace {args.workspace} (copied to {root}); engine {ws.config().engine}")
        print(f"release stage (full build of {made.version}): {release_seconds:8.1f} s, "
              f"{sum(made.tables.values()):,} rows in {len(made.tables)} tables")
        print(f"delivery of every table of {newest.name}:      {deliver_seconds:8.1f} s, {rows:,} rows in "
              f"{len(package.tables)} tables, formats {', '.join(package.formats)}, {size / 1e6:,.0f} MB "
              f"({package.path})")
        print(f"ratio delivery / release: {ratio:.2f} (target at most {TARGET:.0f}): "
              + ("PASS" if ratio <= TARGET else "FAIL"))
        return 0 if ratio <= TARGET else 1
    finally:
        if args.out is None:
            for p in [scratch, *scratch.rglob("*")]:
                if p.is_dir() and not p.is_symlink():
                    p.chmod(p.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
