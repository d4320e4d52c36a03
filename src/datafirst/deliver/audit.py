"""The audit log: who did what to a workspace, in a hash-chained file that shows any edit.

`<workspace>/governance/audit.jsonl` holds one JSON object a line, appended by `record`:

    {"action": "release", "actor": "j.smith", "details": {"manifest_sha256": "...", "version": "v0003"},
     "head_signed_by": "sha256:...", "hash": "<64 hex>", "prev": "<64 hex>", "seq": 3,
     "subject": "v0003", "time": "2026-03-02T10:15:00.123Z"}

`hash` is the SHA-256 of the canonical JSON (keys sorted, no spaces, UTF-8) of the entry without
`hash`; `prev` is the previous entry's `hash` (64 zeros for the first); `seq` counts from 1; each
line is exactly the canonical JSON of its entry. So an edited entry no longer matches its hash,
and one whose hash was recomputed no longer matches the next entry's `prev`; a deleted entry
leaves a gap in `seq`, and reordered entries run out of order.

What the chain cannot show is that the newest entries are all there: a log cut short is an
intact, shorter chain. So after each append the head (the last seq and hash) is written

- beside the log, signed with the release signing key when DATAFIRST_SIGNING_KEY_FILE names it
  (`audit.head.json`; each entry's `head_signed_by` records the key that signed the head after
  it, so removing the head file is seen too); and
- into the anchor file named by DATAFIRST_AUDIT_ANCHOR_FILE, which must be outside the workspace
  (whoever can rewrite the log could rewrite a file kept beside it).

`check` compares the log with both. Without either, the head is printed for the operator to keep
outside the workspace, as `datafirst verify` does for releases (release/chain.py). A signed head
beside the log does not stop someone who kept an older signed head from cutting the log back to
it; only the anchor, outside their reach, does.

The details of an entry are counts, versions, hashes, key fingerprints and file names: never a
secret (a key, a salt) nor an identifying value (a name, an id, a value of the data). The log is
read by whoever audits the workspace, and is not de-identified. `record` accepts only JSON
values in `details` and callers pass only such facts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

try:  # POSIX; elsewhere appends are not locked (as Workspace.lock)
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms datafirst is tested on
    fcntl = None

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..release.chain import inside
from ..release.signing import SIGNING_KEY_FILE_ENV, SigningKeyError, fingerprint, load_signing_key, signed_by

GOVERNANCE = "governance"
LOG = "audit.jsonl"
HEAD = "audit.head.json"
LOCK = ".audit.lock"
ANCHOR_FILE_ENV = "DATAFIRST_AUDIT_ANCHOR_FILE"
GENESIS = "0" * 64
# Signed with the head, so a signature made for anything else (a release's SHA256SUMS) is no head.
HEAD_PURPOSE = "datafirst audit log head"
FIELDS = {"seq": int, "time": str, "actor": str, "action": str, "subject": str, "details": dict,
          "head_signed_by": (str, type(None)), "prev": str, "hash": str}
SHOWN = 10  # problems named before "and N more"


class AuditError(Exception):
    """The audit log cannot be written or read; the message says what to do."""


@dataclass(frozen=True)
class Head:
    """The newest entry as a head records it."""
    seq: int
    hash: str


@dataclass
class AuditCheck:
    entries: int  # lines read
    head: Head | None  # the log's own last entry
    problems: list[str] = field(default_factory=list)  # empty: intact
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why
    confirmed_by: list[str] = field(default_factory=list)  # the heads the log agrees with


def log_path(workspace: Path) -> Path:
    return Path(workspace) / GOVERNANCE / LOG


def head_path(workspace: Path) -> Path:
    return Path(workspace) / GOVERNANCE / HEAD


def canonical(value: dict) -> bytes:
    """The one way an entry is written and hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def anchor_file() -> Path | None:
    """The anchor file named by DATAFIRST_AUDIT_ANCHOR_FILE, if set."""
    named = os.environ.get(ANCHOR_FILE_ENV)
    return Path(named) if named else None


def misplaced_anchor(workspace: Path, anchor: Path | None) -> str | None:
    """Why `anchor` cannot be used for this workspace's log (None when it can)."""
    if anchor is not None and inside(anchor, workspace):
        return (f"the audit anchor file {anchor} ({ANCHOR_FILE_ENV}) is inside the workspace {workspace}: whoever "
                "can rewrite the audit log can rewrite it too; name a file outside the workspace")
    return None


def _json_only(value: object, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise AuditError(f"audit details: {where} has a key that is not text ({k!r})")
            _json_only(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _json_only(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise AuditError(f"audit details: {where} is a {type(value).__name__}, not a JSON value")


def record(workspace: Path, action: str, actor: str, subject: str, details: dict) -> dict:
    """Append one entry to the workspace's audit log and return it; then update the signed head
    (when DATAFIRST_SIGNING_KEY_FILE is set) and the anchor (when DATAFIRST_AUDIT_ANCHOR_FILE is).

    `details` must hold only counts, versions, hashes, key fingerprints and file names: never a
    key, a salt or any identifying value (the log is not de-identified; see the module's doc).

    Safe for two processes at once (an exclusive lock on governance/.audit.lock while the last
    entry is read and the new one written) and durable (the line is written in one call and
    fsynced before the head). Refused, with nothing written, when the anchor is inside the
    workspace, the signing key is set but unusable, or the log's last line is not a whole entry."""
    _json_only(details, "details")
    workspace = Path(workspace)
    anchor = anchor_file()
    misplaced = misplaced_anchor(workspace, anchor)
    if misplaced:
        raise AuditError(misplaced)
    key: Ed25519PrivateKey | None = None
    if os.environ.get(SIGNING_KEY_FILE_ENV):
        try:
            key = load_signing_key()
        except SigningKeyError as exc:
            raise AuditError(f"the audit log's head is signed with the release signing key, which is unusable: {exc}") \
                from exc
    folder = workspace / GOVERNANCE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise AuditError(f"cannot write the audit log in {folder} ({exc.strerror or type(exc).__name__})") from exc
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held while one short entry is written: wait for it
        return _append(workspace, action, actor, subject, details, key, anchor)
    finally:
        os.close(lock)  # releases the lock


def _append(workspace: Path, action: str, actor: str, subject: str, details: dict,
            key: Ed25519PrivateKey | None, anchor: Path | None) -> dict:
    path = log_path(workspace)
    last = _last_entry(path)
    entry = {"seq": last["seq"] + 1 if last else 1,
             "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
             "actor": actor, "action": action, "subject": subject, "details": details,
             "head_signed_by": fingerprint(key.public_key()) if key else None,
             "prev": last["hash"] if last else GENESIS}
    entry["hash"] = entry_hash(entry)
    line = canonical(entry) + b"\n"
    created = not path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):  # a full disk: what was written is a torn line
                raise OSError(28, "the file system took only part of the entry")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_folder(path.parent)
    except OSError as exc:
        raise AuditError(f"cannot append to the audit log {path} ({exc.strerror or type(exc).__name__})") from exc
    head = Head(entry["seq"], entry["hash"])
    try:
        if key is not None:
            _write_atomically(head_path(workspace), _signed_head(key, head))
        if anchor is not None:
            _write_atomically(anchor, {"seq": head.seq, "hash": head.hash})
    except OSError as exc:
        raise AuditError(f"entry {head.seq} was appended to {path}, but its head could not be written "
                         f"({exc.strerror or type(exc).__name__}): until the next entry, a cut tail from seq "
                         f"{head.seq} would not be seen. Keep this head outside the workspace: seq {head.seq}, "
                         f"sha256 {head.hash}") from exc
    return entry


def _last_entry(path: Path) -> dict | None:
    """The last entry of the log (None when it is empty), read from the end. Refused when the
    file does not end with a whole line: a write was cut off, or the file edited."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return None
            chunk, start = b"", size
            while start > 0 and chunk.count(b"\n") < 2:
                start = max(0, start - 4096)
                f.seek(start)
                chunk = f.read(size - start)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"cannot read the audit log {path} ({exc.strerror or type(exc).__name__})") from exc
    if not chunk.endswith(b"\n"):
        raise AuditError(f"the audit log {path} does not end with a whole entry (a write was cut off, or the file "
                         "was edited): run `datafirst audit verify`, and move the broken last line into a file "
                         "beside the log before recording anything more")
    try:
        entry = json.loads(chunk[:-1].rsplit(b"\n", 1)[-1])
        return {"seq": int(entry["seq"]), "hash": str(entry["hash"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"the last line of the audit log {path} is not an entry: run `datafirst audit verify`") \
            from exc


def _signed_head(key: Ed25519PrivateKey, head: Head) -> dict:
    signature = key.sign(head_bytes(head))
    return {"seq": head.seq, "hash": head.hash, "signing_key_fingerprint": fingerprint(key.public_key()),
            "signature": base64.b64encode(signature).decode("ascii")}


def head_bytes(head: Head) -> bytes:
    return canonical({"purpose": HEAD_PURPOSE, "seq": head.seq, "hash": head.hash})


def _write_atomically(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(value) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- checking ----------------------------------------------------------------------------------

def verify(workspace: Path, public_keys: list[Ed25519PublicKey], anchor: Path | None) -> list[str]:
    """What is wrong with the workspace's audit log (empty: intact), each naming the seq: see `check`."""
    return check(workspace, public_keys, anchor).problems


def check(workspace: Path, public_keys: list[Ed25519PublicKey], anchor: Path | None) -> AuditCheck:
    """The log's lines, their hashes and chain; the signed head against `public_keys`; and the
    anchor file, when `anchor` names one that is there. Detects an edited entry, a deleted one,
    reordered ones and (with a signed head or an anchor) a cut tail."""
    path = log_path(workspace)
    problems: list[str] = []
    entries: list[tuple[int, dict]] = []  # (line number, entry)
    raw = b""
    if path.is_file():
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return AuditCheck(0, None, [f"cannot read the audit log {path} ({exc.strerror or type(exc).__name__})"])
    lines = raw.split(b"\n")
    if lines[-1]:
        problems.append(f"line {len(lines)} of {path} is not a whole entry (no line end): a write was cut off, or "
                        "the file was cut or edited")
    for number, line in enumerate(lines[:-1], 1):  # the last piece: empty, or the torn line named above
        entry, wrong = _parsed(line)
        if entry is None:
            after = f" (after seq {entries[-1][1]['seq']})" if entries else ""
            problems.append(f"line {number}{after} of {path} is not an audit entry ({wrong}): it was edited")
            continue
        if entry["hash"] != entry_hash(entry):
            problems.append(f"entry seq {entry['seq']} (line {number}) has been edited: its content does not match "
                            "its hash")
        elif canonical(entry) != line:
            problems.append(f"entry seq {entry['seq']} (line {number}) has been edited: it is not written as "
                            "datafirst writes it")
        entries.append((number, entry))
    problems += _order_problems(entries)
    by_seq: dict[int, dict] = {}
    for _, entry in entries:
        by_seq.setdefault(entry["seq"], entry)
    last = Head(max(by_seq), by_seq[max(by_seq)]["hash"]) if by_seq else None
    out = AuditCheck(len(entries), last, problems)
    covered = _check_signed_head(workspace, public_keys, by_seq, out)
    if anchor is not None:
        covered = _check_anchor(workspace, anchor, by_seq, out) or covered
    if not covered:
        out.notes.append("neither a signed head nor an anchor was checked, so entries cut off the end of the log "
                         f"cannot be detected: set {SIGNING_KEY_FILE_ENV} (the head is signed) or {ANCHOR_FILE_ENV} "
                         "(a file outside the workspace), and keep the head below outside the workspace")
    return out


def _parsed(line: bytes) -> tuple[dict | None, str]:
    try:
        entry = json.loads(line)
    except ValueError:
        return None, "not JSON"
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    if set(entry) != set(FIELDS):
        return None, f"its fields are not {', '.join(FIELDS)}"
    for name, kind in FIELDS.items():
        if not isinstance(entry[name], kind) or (name == "seq" and isinstance(entry[name], bool)):
            return None, f"its {name} is not a {kind.__name__ if isinstance(kind, type) else kind[0].__name__}"
    return entry, ""


def _ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    shown = [f"{a}" if a == b else f"{a} to {b}" for a, b in spans]
    return ", ".join(shown[:SHOWN]) + (f" and {len(shown) - SHOWN} more" if len(shown) > SHOWN else "")


def _order_problems(entries: list[tuple[int, dict]]) -> list[str]:
    """Entries out of order or twice, missing seqs, and entries whose prev is not the hash of
    the entry whose seq comes before theirs."""
    out = []
    seen: set[int] = set()
    previous: dict | None = None
    for number, entry in entries:
        seq = entry["seq"]
        if seq in seen:
            out.append(f"entry seq {seq} (line {number}) appears twice: an entry was copied")
        elif previous is not None and seq < previous["seq"]:
            out.append(f"entry seq {seq} (line {number}) comes after seq {previous['seq']}: the entries were reordered")
        seen.add(seq)
        previous = entry
    if seen:
        missing = [s for s in range(1, max(seen) + 1) if s not in seen]
        if missing:
            out.append(f"entries seq {_ranges(missing)} are missing from the log (it holds seq 1 to {max(seen)}): "
                       "they were deleted")
    by_seq: dict[int, dict] = {}
    for _, entry in entries:
        by_seq.setdefault(entry["seq"], entry)
    for seq in sorted(by_seq):
        if seq == 1 and by_seq[1]["prev"] != GENESIS:
            out.append("entry seq 1 names an entry before it: the log's first entries were removed, or it was "
                       "rewritten")
        elif seq - 1 in by_seq and by_seq[seq]["prev"] != by_seq[seq - 1]["hash"]:
            out.append(f"entry seq {seq} does not follow entry seq {seq - 1} (its prev is not that entry's hash): one "
                       "of them was replaced, or the log rewritten from there")
    return out


def _against(head: Head, by_seq: dict[int, dict], what: str, out: AuditCheck) -> None:
    """The log against a head recorded by `what` (the signed head, an anchor)."""
    last = max(by_seq) if by_seq else 0
    if head.seq > last:
        out.problems.append(f"the log ends at seq {last} but {what} records seq {head.seq}: entries "
                            f"{_ranges(list(range(last + 1, head.seq + 1)))} were cut off the end")
    elif head.seq in by_seq and by_seq[head.seq]["hash"] != head.hash:
        out.problems.append(f"entry seq {head.seq} is not the one {what} records (its hash differs): the log was "
                            "rewritten, or the head belongs to another workspace")
    elif head.seq < last:
        out.notes.append(f"{what} records seq {head.seq}; entries {_ranges(list(range(head.seq + 1, last + 1)))} "
                         "were recorded without updating it, so it does not cover them")
        out.confirmed_by.append(f"{what} (seq {head.seq})")
    else:
        out.confirmed_by.append(f"{what} (seq {head.seq})")


def _check_signed_head(workspace: Path, keys: list[Ed25519PublicKey], by_seq: dict[int, dict],
                       out: AuditCheck) -> bool:
    """Whether a signed head was checked (problems and notes go to `out`)."""
    path = head_path(workspace)
    signed_after = [s for s, e in by_seq.items() if e["head_signed_by"]]
    if not path.is_file():
        if signed_after:
            out.problems.append(f"the signed head {path} is missing, though entry seq {max(signed_after)} says one was "
                                "written after it: it was removed (which would hide a cut tail)")
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        head = Head(int(data["seq"]), str(data["hash"]))
        signature = base64.b64decode(data["signature"], validate=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        out.problems.append(f"the signed head {path} is unreadable ({type(exc).__name__}): it was edited")
        return False
    if not keys:
        out.notes.append(f"the signed head {path} was not checked: no public key (give --public-key FILE, or set "
                         "DATAFIRST_VERIFY_KEY_FILE or DATAFIRST_SIGNING_KEY_FILE)")
        return False
    signer = signed_by(keys, head_bytes(head), signature)
    if signer is None:
        out.problems.append(f"the signed head {path} (seq {head.seq}) is not signed by the trusted public key "
                            f"({', '.join(fingerprint(k) for k in keys)}): it was forged or rewritten, or signed with "
                            "a key this check was not given")
        return False
    if signed_after and head.seq < max(signed_after):
        out.problems.append(f"the signed head {path} records seq {head.seq}, but entry seq {max(signed_after)} says a "
                            "head was signed after it: an older head was put back")
    _against(head, by_seq, f"the signed head {path} (by {fingerprint(signer)})", out)
    return True


def _check_anchor(workspace: Path, anchor: Path, by_seq: dict[int, dict], out: AuditCheck) -> bool:
    """Whether the anchor was checked (problems and notes go to `out`)."""
    misplaced = misplaced_anchor(workspace, anchor)
    if misplaced:
        out.problems.append(misplaced)
        return False
    if not anchor.is_file():
        out.notes.append(f"the anchor file {anchor} does not exist yet: the next entry recorded with "
                         f"{ANCHOR_FILE_ENV} naming it writes it")
        return False
    try:
        data = json.loads(anchor.read_text(encoding="utf-8"))
        head = Head(int(data["seq"]), str(data["hash"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        out.problems.append(f"the anchor file {anchor} is unreadable ({type(exc).__name__}); it must hold "
                            '{"seq": N, "hash": "<64 hex digits>"}, as datafirst writes it')
        return False
    _against(head, by_seq, f"the anchor {anchor}", out)
    return True


def read_entries(workspace: Path) -> list[dict]:
    """The log's entries as written (lines that are not entries are skipped: `check` names them)."""
    path = log_path(workspace)
    if not path.is_file():
        return []
    out = []
    for line in path.read_bytes().split(b"\n"):
        entry, _ = _parsed(line) if line else (None, "")
        if entry is not None:
            out.append(entry)
    return out
