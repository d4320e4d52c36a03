"""Release: build the products and write them as a versioned, immutable folder, atomically.

The release is assembled in a temporary folder beside the others; the privacy guard and the
key check run on it there; only a release that passes is checksummed, signed, made read-only
and moved into place (one rename). A failure at any point leaves no partial release and the
previous one untouched.

Person ids carry over from the latest release (see `person_ids`), and the new manifest links to
it, so every release must be trusted first: before anything is built, the whole chain is
checked against the trusted public key (`chain.check_series`: each release's checksums and
signature, the links between manifests, the ledger `releases/ledger.json` and the anchor),
and a release is refused on any problem, or when the latest was made with another hashing key.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..engine import Engine
from ..engine.sql import sql_string
from ..files import file_sha256
from ..sources import control_totals
from ..sources.code_lists import CodeListError
from ..sources.contract import load_contracts
from ..standardise.stage import IDENTIFIERS, PROVENANCE
from ..workspace import Workspace, holding_lock, remove_tree
from . import allowlist, declarations, documentation, joins, person_ids, site
from .chain import ANCHOR_FILE_ENV, MANIFEST, RELEASES, SIGNATURE, SUMS, VERSION, Head, ReleaseError, anchor_file, \
    check_series, misplaced, settle_pending, write_anchor, write_ledger
from .chain import published as published_in, read_ledger as read_ledger_in
from .chain import LEDGER, verify  # noqa: F401 - kept here for callers that read the ledger or check one release
from .signing import VERIFY_KEY_FILE_ENV, fingerprint, load_signing_key, public_key_files, trusted_public_keys
from .privacy import SensitiveValues, build_sensitive_values, check_keys, check_tables
from .profile import table_profile
from .products import PERSON_INPUTS, Product, case_journeys, code_list_products, content_product, \
    forget_keyed_hash, install_keyed_hash, person_id_changes, person_inputs_sql, person_link_lookup, person_products
from .hashing_key import check_key, load_salt

# Hashed with the key and kept in each manifest: tells whether two releases share a key
# without revealing it.
KEY_CHECK = "datafirst hashing key check"


@dataclass
class ReleaseSummary:
    version: str
    path: Path
    tables: dict[str, int]  # table -> rows
    person_ids: dict[str, dict]  # threshold -> what happened to the previous release's ids
    unchanged: bool = False  # nothing new since `version`, which is the previous release: none was written


def releases_dir(ws: Workspace) -> Path:
    return ws.root / RELEASES


def published(ws: Workspace) -> list[Path]:
    return published_in(releases_dir(ws))


def read_ledger(ws: Workspace) -> list[dict]:
    return read_ledger_in(releases_dir(ws))


def trusted_previous(ws: Workspace, keys: list[Ed25519PublicKey] | None = None) -> Path | None:
    """The latest release, once every release of the workspace has been checked against the
    trusted public keys (`keys`, by default `signing.trusted_public_keys`; see
    `chain.check_series`): person ids are carried from it and the new manifest links to it, so
    the chain up to it must be complete, unaltered and this workspace's. None when there is no
    release yet."""
    misplaced_files = misplaced(ws.root, public_key_files(), anchor_file())
    if misplaced_files:
        raise ReleaseError("\n".join(misplaced_files))
    folder = releases_dir(ws)
    settle_pending(folder)
    check = check_series(folder, keys if keys is not None else trusted_public_keys(), anchor_file())
    if check.problems:
        raise ReleaseError(f"the releases in {folder} cannot be trusted:\n  " + "\n  ".join(check.problems) + "\n"
                           "Restore them from your archive (datafirst never mints person ids from, or links a new "
                           "release to, a release it cannot trust), or move the releases folder aside to start a "
                           "new series. `datafirst verify` lists every problem.")
    return folder / check.head.version if check.releases else None


def plan_products(ws: Workspace, links: str = person_ids.ASSIGNED) -> list[Product]:
    """The release's products; `links` is the clusters with released person ids
    (`person_ids.assign` makes it)."""
    links_dir = ws.zone("links")
    if not (links_dir / "clusters.parquet").is_file():
        raise ReleaseError(f"no links in {links_dir}; run `datafirst link` first")
    contracts = load_contracts(ws.contracts)
    products = [person_link_lookup(links, contracts), person_id_changes(person_ids.CHANGES)]
    if (links_dir / "case_journeys.parquet").is_file():
        products.append(case_journeys(f"read_parquet({sql_string(links_dir / 'case_journeys.parquet')})"))
    for contract in contracts:
        for name, spec in contract.tables.items():
            path = ws.zone("content") / f"{contract.table_key(name)}.parquet"
            if not path.is_file():
                raise ReleaseError(f"{path} is missing; run `datafirst standardise` again")
            products.append(_content(contract, name, spec, path, links))
    products += person_products(contracts)
    try:
        products += code_list_products(contracts, products)
    except CodeListError as exc:
        raise ReleaseError(str(exc)) from exc
    clash = sorted({p.name for p in products if [q.name for q in products].count(p.name) > 1})
    if clash:
        raise ReleaseError(f"two release tables would be named {', '.join(clash)} (a code list's table is "
                           "code_list__<name>): rename the code list in its declaration, or the source")
    return products


def _content(contract, name, spec, path: Path, links: str) -> Product:
    keep = [c for c in pq.read_schema(path).names if c != "record_key" and c not in PROVENANCE]
    return content_product(contract, name, f"read_parquet({sql_string(path)})", links if spec.is_person_table else None,
                           keep)


@holding_lock
def release(ws: Workspace, engine: Engine, *, salt: str | None = None, new_series: bool = False,
            only_if_changed: bool = False, accept_volume_change: Sequence[str] = (),
            progress: Callable[[str, int, int], None] | None = None) -> ReleaseSummary:
    """Build, check and publish the next release. Person ids carry over from the previous
    release unless `new_series` (every person gets a new id; needed after a change of key).
    `only_if_changed`: publish nothing when the release would equal the previous one (the same
    tables, dictionary and quality summaries, and no person id changed), as `datafirst run` asks
    when its inputs were touched but not changed. `accept_volume_change`: the tables whose
    delivery is beyond its control totals that may be released all the same (see
    `control_totals`; refused otherwise). The release is signed with the key named by
    DATAFIRST_SIGNING_KEY_FILE (`signing.load_signing_key`), loaded before anything is built."""
    salt = check_key(salt, "the salt given to release()") if salt is not None else load_salt()
    signing_key = load_signing_key()
    keys = trusted_public_keys()
    if fingerprint(signing_key.public_key()) not in {fingerprint(k) for k in keys}:
        raise ReleaseError(f"the signing key's public key ({fingerprint(signing_key.public_key())}) is not in "
                           f"{VERIFY_KEY_FILE_ENV}, so the release it signs would not verify: add it to that file "
                           "(after a change of signing key it holds the old public key and the new)")
    anchor = anchor_file()
    if anchor is not None and not anchor.parent.is_dir():  # found out now, not once the release is published
        raise ReleaseError(f"the folder of the anchor file {anchor} ({ANCHOR_FILE_ENV}) does not exist: make it, "
                           "outside the workspace")
    products = plan_products(ws)
    exemptions = _exemptions(ws, products)
    previous = trusted_previous(ws, keys)
    try:
        totals = control_totals.check(ws, previous, accept_volume_change)
    except control_totals.VolumeChangeError as exc:
        raise ReleaseError(str(exc)) from exc
    number = int(VERSION.match(previous.name).group(1)) + 1 if previous else 1
    version = f"v{number:04d}"
    folder = releases_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{version}.partial-{os.getpid()}"
    remove_tree(tmp)
    (tmp / "tables").mkdir(parents=True)
    install_keyed_hash(engine, salt)
    try:
        key_check = engine.scalar("SELECT keyed_hash(?)", [KEY_CHECK])
        carry_from = previous
        if previous is not None:
            before = json.loads((previous / "manifest.json").read_text(encoding="utf-8")).get("key_check")
            if before != key_check and not new_series:
                raise ReleaseError(f"the hashing key differs from the one {previous.name} was made with, so no hash "
                                   "or person id would carry over. Use the same key (DATAFIRST_SALT_FILE or "
                                   "DATAFIRST_SALT), or start a new series of ids with --new-series.")
            if new_series:
                carry_from = None
        series = (json.loads((carry_from / "manifest.json").read_text(encoding="utf-8")).get("id_series")
                  if carry_from else None) or person_ids.new_series()
        contracts = load_contracts(ws.contracts)
        # The products, and the sensitive values the guard checks them against, are independent:
        # written at once by jobs on their own connections (Engine.concurrently), largest first.
        # Each job installs the keyed hash on its connection; what they share (the person ids, the
        # change log, the person records, the birth dates) are tables of the engine's database.
        # The tables that hold no person id (offences, claims, case journeys, ...) are written
        # while the ids are assigned, which keeps one core busy for part of its time.
        started = iter(range(len(products)))  # next() on it is atomic: jobs report progress from their threads

        def keyed(work: Callable[[Engine], Any]) -> Callable[[Engine], Any]:
            def job(e: Engine) -> Any:
                if e is engine:  # jobs run one after the other on this engine (Spark)
                    return work(e)
                install_keyed_hash(e, salt)
                try:
                    return work(e)
                finally:
                    forget_keyed_hash(e)
            return job

        def write(product: Product, e: Engine) -> tuple[int, dict, str]:
            """Write a product and read it back once for the dictionary, the key check and the
            guard, and take its checksum (in the same job: no table waits for the slowest write
            to be profiled, and no checksum for the last one to be written)."""
            if progress:
                progress(product.name, next(started), len(products))
            path = tmp / "tables" / f"{product.name}.parquet"
            return e.to_parquet(product.sql, path), table_profile(e, path), file_sha256(path)

        def assign_ids(e: Engine) -> dict[str, dict]:
            changes = person_ids.assign(e, ws.zone("links") / "clusters.parquet",
                                        carry_from / "tables" / "person_link_lookup.parquet" if carry_from else None,
                                        version, series)
            # Not temp: read by the person products' jobs, on their own connections.
            for table, sql in person_inputs_sql(ws, contracts, person_ids.ASSIGNED).items():
                e.execute(f"CREATE OR REPLACE TABLE {table} AS {sql}")
            return changes

        def sensitive(e: Engine) -> SensitiveValues:
            return build_sensitive_values(e, ws.zone(IDENTIFIERS) / "*.parquet", ws.zone("content"), contracts,
                                          ws.zone("links") / "clusters.parquet", person_ids.ASSIGNED)

        # Largest first: the person ids and the sensitive values, the products over every record
        # (lookup, person, journey), then the content tables by the size of their content file.
        content_dir = ws.zone("content")
        everything = sum(f.stat().st_size for f in content_dir.glob("*.parquet"))

        def size(p: Product) -> int:
            return (content_dir / f"{p.name}.parquet").stat().st_size if p.source else everything

        written: dict[str, tuple[int, dict, str]] = {}
        first = [p for p in products if not p.needs_person_ids]
        try:
            done = engine.concurrently([keyed(assign_ids)] + [keyed(lambda e, p=p: write(p, e)) for p in first],
                                       [3 * everything] + [size(p) for p in first])
        except person_ids.IdClash as exc:
            raise ReleaseError(str(exc)) from exc
        id_changes = done[0]
        written.update({p.name: w for p, w in zip(first, done[1:])})
        then = [p for p in products if p.needs_person_ids]
        done = engine.concurrently([keyed(sensitive)] + [keyed(lambda e, p=p: write(p, e)) for p in then],
                                   [2 * everything] + [size(p) for p in then])
        written.update({p.name: w for p, w in zip(then, done[1:])})
        found = done[0]
        rows = {p.name: written[p.name][0] for p in products}
        facts = {p.name: written[p.name][1] for p in products}
        if progress:
            progress("privacy guard", len(products), len(products))
        paths = {p.name: tmp / "tables" / f"{p.name}.parquet" for p in products}
        problems = [v for p in products for v in allowlist.violations(p.name, facts[p.name], p.declared)]
        problems += check_tables(engine, paths, set(exemptions), found, facts,
                                 frozenset(p.name for p in products if p.code_list is not None),
                                 {f"{p.name}.{c}": d.values for p in products for c, d in p.declared.items() if d.values})
        for product in products:
            problems += check_keys(engine, product.name, paths[product.name], product.keys, facts[product.name])
        if problems:
            raise ReleaseError("the release failed its allow-list, privacy and key checks and was not published:\n  "
                               + "\n  ".join(problems))
        suppressed = {p.name: allowlist.suppressed_counts(engine, content_dir / f"{p.name}.parquet", p.suppressing,
                                                          facts[p.name], p.harmonised)
                      for p in products if p.suppressing or p.harmonised}
        digests = {f"tables/{p.name}.parquet": written[p.name][2] for p in products}
        table_joins = joins.check(engine, joins.candidates(products, contracts), paths, facts)
        # The contracts' constraints and the research queries, for checking this release and its twins.
        declarations.write(tmp, engine, contracts, products, paths, ws.contracts)
        # The chain: the previous manifest's hash (its version is `previous`), and the key that signs.
        documentation.write_all(ws, tmp, version, products, rows, facts, previous, digests,
                                {"previous_manifest_sha256": file_sha256(previous / MANIFEST) if previous else None,
                                 "signing_key_fingerprint": fingerprint(signing_key.public_key()),
                                 "key_check": key_check, "id_series": series, "control_totals": totals,
                                 "small_count": ws.config().release.small_count,
                                 "person_ids": {
                                    "carried_from": carry_from.name if carry_from else None, "thresholds": id_changes}},
                                suppressed=suppressed, exemptions=exemptions, joins=table_joins)
        if only_if_changed and carry_from is not None and _same_as(carry_from, tmp, digests, rows):
            remove_tree(tmp)
            return ReleaseSummary(version=carry_from.name, path=carry_from, tables=rows, person_ids=id_changes,
                                  unchanged=True)
        # The site is part of the release (signed with it), built once the release is known to be
        # new; `_same_as` compares the documents it is made from, not the site.
        with Engine() as text_engine:  # DuckDB reads the zones whatever the release's engine
            site.build_site(tmp, tmp / site.SITE, site.text_guard(text_engine, found), ws.config().release.small_count)
        _write_checksums(tmp, digests)
        (tmp / SIGNATURE).write_bytes(signing_key.sign((tmp / SUMS).read_bytes()))
        _make_read_only(tmp)
        ledger = read_ledger(ws)
        write_ledger(folder, [*ledger, {"version": version, "sha256sums": file_sha256(tmp / SUMS),
                                        "state": "pending"}])
        try:
            os.rename(tmp, folder / version)
        except BaseException:
            write_ledger(folder, ledger)
            raise
    except BaseException:
        remove_tree(tmp)
        raise
    finally:
        forget_keyed_hash(engine)
        for table in ("birth_dates", *PERSON_INPUTS, person_ids.ASSIGNED, person_ids.CHANGES):
            engine.execute(f"DROP TABLE IF EXISTS {table}")
    settle_pending(folder)
    if anchor is not None:  # after the rename: an anchor never names a release that is not there
        write_anchor(anchor, Head(version, file_sha256(folder / version / MANIFEST)))
    return ReleaseSummary(version=version, path=folder / version, tables=rows, person_ids=id_changes)


def _exemptions(ws: Workspace, products: list[Product]) -> dict[str, str]:
    """`release.privacy_allow`: each exempted column and the reason. One that names no column of
    the release is refused: a stale exemption could silently cover a new column of that name."""
    exemptions = ws.config().release.privacy_allow
    columns = {f"{p.name}.{c}" for p in products for c in p.declared}
    unknown = [k for k in exemptions if k not in columns]
    if unknown:
        raise ReleaseError(f"release.privacy_allow in {ws.config_path} names {', '.join(unknown)}, which no table of "
                           "the release has (a release table is named source__table; a column may have been "
                           "withheld for want of a declaration): correct or remove the entry")
    return dict(exemptions)


def _same_as(previous: Path, new: Path, digests: dict[str, str], rows: dict[str, int]) -> bool:
    """Whether the release in `new` (not yet checksummed) holds what `previous` does: the same
    tables byte for byte, an empty person id change log, the same dictionary and quality
    summaries (but for their times and the change log's rows), and the same provenance (model,
    thresholds, id series and key)."""
    if rows.get(person_ids.CHANGES):
        return False
    provenance = ("model", "thresholds", "id_series", "key_check")
    manifests = [json.loads((folder / "manifest.json").read_text(encoding="utf-8")) for folder in (previous, new)]
    if any(manifests[0].get(k) != manifests[1].get(k) for k in provenance):
        return False
    listed = {name: digest for digest, name in (line.split("  ", 1) for line in
              (previous / "SHA256SUMS").read_text(encoding="utf-8").splitlines() if "  " in line)}
    changes = f"tables/{person_ids.CHANGES}.parquet"
    before = {name: digest for name, digest in listed.items() if name.startswith("tables/") and name != changes}
    if before != {name: digest for name, digest in digests.items() if name != changes}:
        return False

    def comparable(path: Path) -> dict:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("generated_at", None)
        if path.name == "dictionary.json":
            data["tables"] = [t for t in data["tables"] if t["name"] != person_ids.CHANGES]
        return data

    documents = ["dictionary.json", "constraints.json", "research_queries.json",
                 *(f"quality/{p.name}" for p in sorted((new / "quality").glob("*.json")))]
    return sorted(p.name for p in (previous / "quality").glob("*.json")) == sorted(
        p.name for p in (new / "quality").glob("*.json")) and all(
        (previous / d).is_file() and comparable(previous / d) == comparable(new / d) for d in documents)


def _write_checksums(root: Path, known: dict[str, str]) -> None:
    """SHA256SUMS for every file; the tables' digests are computed once and passed in."""
    names = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
    lines = [f"{known.get(n) or file_sha256(root / n)}  {n}" for n in names]
    (root / SUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _make_read_only(root: Path) -> None:
    for p in [*root.rglob("*"), root]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))

