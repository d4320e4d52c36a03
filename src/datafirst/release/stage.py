"""Release: build the products and write them as a versioned, immutable folder, atomically.

The release is assembled in a temporary folder beside the others; the privacy guard and the
key check run on it there; only a release that passes is moved into place (one rename), and
then made read-only. A failure at any point leaves no partial release and the previous one
untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from ..engine import Engine
from ..files import file_sha256
from ..sources.contract import load_contracts
from ..standardise.stage import IDENTIFIERS, PROVENANCE
from ..workspace import Workspace
from . import documentation
from .privacy import build_sensitive_values, check_keys, check_table
from .products import Product, case_journeys, content_product, forget_keyed_hash, install_keyed_hash, \
    person_link_lookup, person_products
from .hashing_key import load_salt

RELEASES = "releases"
VERSION = re.compile(r"^v(\d{4})$")


class ReleaseError(Exception):
    """A release that must not be published; nothing was written."""


@dataclass
class ReleaseSummary:
    version: str
    path: Path
    tables: dict[str, int]  # table -> rows


def releases_dir(ws: Workspace) -> Path:
    return ws.root / RELEASES


def published(ws: Workspace) -> list[Path]:
    folder = releases_dir(ws)
    return sorted(p for p in folder.iterdir() if VERSION.match(p.name)) if folder.is_dir() else []


def plan_products(ws: Workspace) -> list[Product]:
    links_dir = ws.zone("links")
    if not (links_dir / "clusters.parquet").is_file():
        raise ReleaseError(f"no links in {links_dir}; run `datafirst link` first")
    links = f"read_parquet('{links_dir / 'clusters.parquet'}')"
    contracts = load_contracts(ws.contracts)
    products = [person_link_lookup(links)]
    if (links_dir / "case_journeys.parquet").is_file():
        products.append(case_journeys(f"read_parquet('{links_dir / 'case_journeys.parquet'}')"))
    for contract in contracts:
        for name, spec in contract.tables.items():
            path = ws.zone("content") / f"{contract.table_key(name)}.parquet"
            if not path.is_file():
                raise ReleaseError(f"{path} is missing; run `datafirst standardise` again")
            products.append(_content(contract, name, spec, path, links))
    products += person_products(ws, contracts, links)
    return products


def _content(contract, name, spec, path: Path, links: str) -> Product:
    keep = [c for c in pq.read_schema(path).names if c != "record_key" and c not in PROVENANCE]
    return content_product(contract, name, f"read_parquet('{path}')", links if spec.is_person_table else None, keep)


def release(ws: Workspace, engine: Engine, *, salt: str | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> ReleaseSummary:
    salt = salt if salt is not None else load_salt()
    products = plan_products(ws)
    previous = published(ws)
    number = int(VERSION.match(previous[-1].name).group(1)) + 1 if previous else 1
    version = f"v{number:04d}"
    folder = releases_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{version}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "tables").mkdir(parents=True)
    install_keyed_hash(engine, salt)
    try:
        rows = {}
        for i, product in enumerate(products):
            if progress:
                progress(product.name, i, len(products))
            rows[product.name] = engine.to_parquet(product.sql, tmp / "tables" / f"{product.name}.parquet")
        if progress:
            progress("privacy guard", len(products), len(products))
        contracts = load_contracts(ws.contracts)
        build_sensitive_values(engine, ws.zone(IDENTIFIERS) / "*.parquet", ws.zone("content"), contracts)
        allow = set(ws.config().release.privacy_allow)
        problems = []
        for product in products:
            path = tmp / "tables" / f"{product.name}.parquet"
            problems += check_table(engine, product.name, path, allow)
            problems += check_keys(engine, product.name, path, product.keys)
        if problems:
            raise ReleaseError("the release failed its privacy and key checks and was not published:\n  "
                               + "\n  ".join(problems))
        digests = {f"tables/{p.name}.parquet": file_sha256(tmp / "tables" / f"{p.name}.parquet") for p in products}
        documentation.write_all(ws, engine, tmp, version, products, rows, previous[-1] if previous else None, digests)
        _write_checksums(tmp, digests)
        os.rename(tmp, folder / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        forget_keyed_hash(engine)
        engine.execute("DROP TABLE IF EXISTS sensitive_values")
        engine.execute("DROP TABLE IF EXISTS birth_dates")
    _make_read_only(folder / version)
    return ReleaseSummary(version=version, path=folder / version, tables=rows)


def _write_checksums(root: Path, known: dict[str, str]) -> None:
    """SHA256SUMS for every file; the tables' digests are computed once and passed in."""
    names = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
    lines = [f"{known.get(n) or file_sha256(root / n)}  {n}" for n in names]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _make_read_only(root: Path) -> None:
    for p in [*root.rglob("*"), root]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def verify(path: Path) -> list[str]:
    """Files of a release whose checksum does not match (empty when the release is intact)."""
    sums = path / "SHA256SUMS"
    if not sums.is_file():
        return ["SHA256SUMS is missing"]
    bad = []
    listed = set()
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, name = line.split("  ", 1)
        listed.add(name)
        f = path / name
        if not f.is_file() or file_sha256(f) != digest:
            bad.append(name)
    extra = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()
             and p.name != "SHA256SUMS" and p.relative_to(path).as_posix() not in listed]
    return bad + [f"{e} (not listed)" for e in extra]

