"""The chain of releases: how the releases of a workspace are checked before they are trusted.

Each release holds `SHA256SUMS` (a checksum of every other file, the manifest included) and
`SHA256SUMS.sig`, the Ed25519 signature of those bytes (`signing.py`); its manifest names its
predecessor and the SHA-256 of the predecessor's `manifest.json`, so each signature covers the
whole chain before it. `releases/ledger.json` lists every published release with the digest of
its SHA256SUMS. `check_series` checks all of it against public keys kept outside the workspace:
each release's files, its signature, that the versions run from v0001 without a gap, that each
manifest links to the release before it, and that the ledger agrees.

What a signature cannot show is that the newest releases are all there (removing the last ones
leaves an intact, shorter chain). That takes an anchor kept outside the workspace: a file
recording the newest release's version and manifest hash, which `release` updates and
`verify`, `release` and `diff` check (the chain must still hold that release, unchanged).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..files import file_sha256
from .signing import SIGNING_KEY_FILE_ENV, fingerprint, signed_by

RELEASES = "releases"
LEDGER = "ledger.json"
VERSION = re.compile(r"^v(\d{4})$")
SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
MANIFEST = "manifest.json"
ANCHOR_FILE_ENV = "DATAFIRST_RELEASE_ANCHOR_FILE"
SHOWN = 10  # problems named per release before "and N more"


class ReleaseError(Exception):
    """A release that must not be published, or releases that cannot be trusted; nothing was written."""


class AnchorNotUpdated(ReleaseError):
    """The release was published, but the anchor file could not be updated to it."""


@dataclass(frozen=True)
class Head:
    """A release as an anchor records it: its version and the SHA-256 of its manifest.json."""
    version: str
    manifest_sha256: str


@dataclass
class SeriesCheck:
    releases: list[str]  # the versions found, in order
    head: Head | None  # the newest, when there is one
    problems: list[str]


def published(folder: Path) -> list[Path]:
    """The release folders (vNNNN) in a releases folder, in order."""
    return sorted(p for p in folder.iterdir() if VERSION.match(p.name)) if folder.is_dir() else []


def read_ledger(folder: Path) -> list[dict]:
    path = folder / LEDGER
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["releases"]
        for number, entry in enumerate(entries, 1):
            if not (isinstance(entry.get("version"), str) and VERSION.match(entry["version"])
                    and isinstance(entry.get("sha256sums"), str)):
                raise ValueError(f"entry {number} is not a release's version and SHA256SUMS digest: {entry}")
        return entries
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ReleaseError(f"{path} is unreadable ({exc}); it lists the published releases and is written only by "
                           "datafirst: restore it from a backup, or move the releases folder aside to start a "
                           "new series") from exc


def write_ledger(folder: Path, entries: list[dict]) -> None:
    path = folder / LEDGER
    tmp = path.with_name(f".{LEDGER}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"releases": entries}, indent=2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def settle_pending(folder: Path) -> list[dict]:
    """A release is entered in the ledger as pending just before its folder is renamed into
    place, and marked published just after. A crash between the two leaves a pending entry:
    kept when the folder made it (it is checked like any other), dropped when not."""
    ledger = read_ledger(folder)
    if ledger and ledger[-1].get("state") == "pending":
        if (folder / ledger[-1]["version"]).is_dir():
            ledger[-1]["state"] = "published"
        else:
            ledger.pop()
        write_ledger(folder, ledger)
    return ledger


def verify(path: Path) -> list[str]:
    """Files of a release whose checksum does not match (empty when the release is intact)."""
    sums = path / SUMS
    if not sums.is_file():
        return [f"{SUMS} is missing"]
    bad = []
    listed = set()
    for number, line in enumerate(sums.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if "  " not in line:
            bad.append(f"{SUMS} line {number} (not '<sha256>  <file>')")
            continue
        digest, name = line.split("  ", 1)
        listed.add(name)
        f = path / name
        if not f.is_file() or file_sha256(f) != digest:
            bad.append(name)
    extra = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()
             and p.relative_to(path).as_posix() not in listed | {SUMS, SIGNATURE}]
    return bad + [f"{e} (not listed)" for e in extra]


def _listed(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def check_release(path: Path, keys: list[Ed25519PublicKey]) -> tuple[list[str], dict | None]:
    """One release on its own: its files against SHA256SUMS, and SHA256SUMS against its
    signature under one of `keys`. Returns the problems and the manifest (None if unreadable)."""
    name = path.name
    problems = []
    bad = verify(path)
    if bad:
        problems.append(f"release {name} has been altered or is incomplete: {_listed(bad)} do not match {SUMS}")
    signer = None
    if not (path / SIGNATURE).is_file():
        problems.append(f"release {name} is not signed ({SIGNATURE} is missing): it was not published by "
                        "datafirst with a signing key, or its signature was removed")
    elif (path / SUMS).is_file():
        signer = signed_by(keys, (path / SUMS).read_bytes(), (path / SIGNATURE).read_bytes())
        if signer is None:
            problems.append(f"release {name}: {SIGNATURE} is not a signature of its {SUMS} by the trusted public key "
                            f"({', '.join(fingerprint(k) for k in keys)}): {SUMS} was rewritten, or the release was "
                            "signed with another key (a forgery, or a key this verification was not given)")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        problems.append(f"release {name}: {MANIFEST} is missing or unreadable ({exc.__class__.__name__})")
        return problems, None
    if signer is not None and manifest.get("signing_key_fingerprint") != fingerprint(signer):
        problems.append(f"release {name}: its manifest names the signing key {manifest.get('signing_key_fingerprint')} "
                        f"but it is signed by {fingerprint(signer)}")
    return problems, manifest


def check_series(folder: Path, keys: list[Ed25519PublicKey], anchor: Path | None = None) -> SeriesCheck:
    """Every release in a releases folder, their chain and the ledger; and, when `anchor` names
    a file that is there, that the release it records is still here, unchanged."""
    problems: list[str] = []
    on_disk = published(folder)
    names = [p.name for p in on_disk]
    try:
        ledger = read_ledger(folder)
    except ReleaseError as exc:
        problems.append(str(exc))
        ledger = None
    digests: dict[str, str] = {}
    if ledger is not None:
        if names and not (folder / LEDGER).is_file():
            problems.append(f"{folder} holds releases but no {LEDGER} recording them")
        # A pending entry whose folder is not there: a release interrupted before its rename
        # (the next `datafirst release` drops it).
        entries = [e for e in ledger if e.get("state") != "pending" or e["version"] in names]
        recorded = [e["version"] for e in entries]
        digests = {e["version"]: e["sha256sums"] for e in entries}
        problems += [f"release {v} is recorded in {folder / LEDGER} but {folder / v} is missing"
                     for v in recorded if v not in names]
        problems += [f"{folder / v} is not recorded in {folder / LEDGER}: it was not published by `datafirst release` "
                     "here (or that release was interrupted before it was recorded)" for v in names if v not in recorded]
        if recorded != sorted(set(recorded)):
            problems.append(f"{folder / LEDGER} lists the releases out of order or twice: {', '.join(recorded)}")
    if names:
        last = int(VERSION.match(names[-1]).group(1))
        gaps = [f"v{n:04d}" for n in range(1, last + 1) if f"v{n:04d}" not in names]
        if gaps:
            problems.append(f"the releases do not run from v0001 without a gap: {_listed(gaps)} missing "
                            f"(here: {_listed(names)})")
    previous: Path | None = None
    for path in on_disk:
        own, manifest = check_release(path, keys)
        problems += own
        if path.name in digests and (path / SUMS).is_file() and file_sha256(path / SUMS) != digests[path.name]:
            problems.append(f"release {path.name}: {SUMS} differs from the digest recorded in {LEDGER} when it was "
                            "published, so the release has been altered")
        if manifest is not None:
            problems += _link_problems(path, manifest, previous)
        previous = path
    head = None
    if on_disk and (on_disk[-1] / MANIFEST).is_file():
        head = Head(on_disk[-1].name, file_sha256(on_disk[-1] / MANIFEST))
    if anchor is not None and anchor.is_file():
        problems += _anchor_problems(folder, anchor, names)
    return SeriesCheck(names, head, problems)


def in_series(release: Path) -> bool:
    """Whether a release folder sits in a workspace's releases folder (rather than being a copy
    handed on alone): its parent is named `releases` or holds the ledger."""
    parent = Path(release).resolve().parent
    return parent.name == RELEASES or (parent / LEDGER).is_file()


def release_problems(release: Path, keys: list[Ed25519PublicKey], anchor: Path | None = None,
                     checked: dict[Path, SeriesCheck] | None = None) -> list[str]:
    """A release checked as `verify` and `diff` check it: in a releases folder, with every
    release there and their chain (`check_series`; `checked` keeps each folder's check, for a
    second release of the same folder); a copy on its own, by its files and signature."""
    release = Path(release).resolve()
    if not in_series(release):
        return check_release(release, keys)[0]
    checked = {} if checked is None else checked
    if release.parent not in checked:
        checked[release.parent] = check_series(release.parent, keys, anchor)
    check = checked[release.parent]
    if release.name not in check.releases:
        return [f"{release} is not a published release (not a vNNNN folder of {release.parent})", *check.problems]
    return check.problems


def _link_problems(path: Path, manifest: dict, previous: Path | None) -> list[str]:
    """The manifest's own version and its link to the release before it here."""
    out = []
    name = path.name
    if manifest.get("version") != name:
        out.append(f"release {name}: its manifest says it is {manifest.get('version')}: a release was renamed")
    before = previous.name if previous else None
    if manifest.get("previous") != before:
        out.append(f"release {name}: its manifest names {manifest.get('previous') or 'no release'} as the one before "
                   f"it, but here that is {before or 'none'}: a release between them was removed or replaced")
    elif previous is not None and (previous / MANIFEST).is_file() \
            and manifest.get("previous_manifest_sha256") != file_sha256(previous / MANIFEST):
        out.append(f"release {name}: the manifest hash it records for {before} differs from {before}'s "
                   f"{MANIFEST}: {before} was replaced after {name} was published")
    return out


def read_anchor(path: Path) -> Head:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        head = Head(data["version"], data["manifest_sha256"])
        if not (VERSION.match(head.version) and re.fullmatch(r"[0-9a-f]{64}", head.manifest_sha256)):
            raise ValueError("not a version and a SHA-256")
        return head
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseError(f"the anchor file {path} is unreadable ({exc.__class__.__name__}: {exc}); it must hold "
                           '{"version": "vNNNN", "manifest_sha256": "<64 hex digits>"}, as `datafirst release` '
                           "writes it and `datafirst verify` prints it") from exc


def _anchor_problems(folder: Path, anchor: Path, names: list[str]) -> list[str]:
    try:
        head = read_anchor(anchor)
    except ReleaseError as exc:
        return [str(exc)]
    if head.version not in names:
        return [f"the anchor {anchor} records release {head.version}, which is not here (the releases end at "
                f"{names[-1] if names else 'none'}): the newest releases were removed or rolled back to an older "
                "copy, or the anchor belongs to another workspace"]
    manifest = folder / head.version / MANIFEST
    if not manifest.is_file() or file_sha256(manifest) != head.manifest_sha256:
        return [f"release {head.version} is not the one the anchor {anchor} records (its {MANIFEST} differs): it "
                "was replaced, or the anchor belongs to another workspace"]
    return []


def anchor_file() -> Path | None:
    """The anchor file named by DATAFIRST_RELEASE_ANCHOR_FILE, if set."""
    named = os.environ.get(ANCHOR_FILE_ENV)
    return Path(named) if named else None


def write_anchor(path: Path, head: Head) -> None:
    """Record `head` in the anchor file (atomically: a crash leaves the old anchor or the new)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"version": head.version, "manifest_sha256": head.manifest_sha256}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AnchorNotUpdated(f"release {head.version} was published, but the anchor file {path} could not be "
                               f"updated ({exc.strerror or type(exc).__name__}): write "
                               f'{{"version": "{head.version}", "manifest_sha256": "{head.manifest_sha256}"}} '
                               "into it (until then, removing this release would not be detected)") from exc


def inside(path: Path, folder: Path) -> bool:
    """Whether `path` is in `folder` (both resolved: links and `..` do not hide it)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def misplaced(workspace: Path, public_key_files: list[Path], anchor: Path | None) -> list[str]:
    """What is kept where whoever can rewrite the releases could rewrite it too, so it would
    prove nothing: a public key file or the anchor in the workspace, the signing key in its
    releases folder (whose path is not shown: a variable set by mistake to the key itself
    would print the secret)."""
    out = [f"the public key file {f} is inside the workspace {workspace}" for f in public_key_files
           if inside(f, workspace)]
    if anchor is not None and inside(anchor, workspace):
        out.append(f"the anchor file {anchor} is inside the workspace {workspace}")
    signing = os.environ.get(SIGNING_KEY_FILE_ENV)
    if signing and inside(Path(signing), Path(workspace) / RELEASES):
        out.append(f"{SIGNING_KEY_FILE_ENV} names a file inside the releases folder {Path(workspace) / RELEASES}")
    return [f"{m}: whoever can rewrite the releases can rewrite it too; keep it outside the workspace" for m in out]
