"""The tamper-evident audit log (issue 26, item 7): every run, release, check and key use is
appended to a hash-chained log whose head is signed or anchored outside the workspace, and
`datafirst audit verify` detects an edited, deleted or reordered entry and a cut tail."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.deliver.audit import ANCHOR_FILE_ENV, GENESIS, AuditError, Head, head_bytes, canonical, check, \
    entry_hash, head_path, log_path, read_entries, record, verify
from datafirst.files import file_sha256
from datafirst.release.signing import SIGNING_KEY_FILE_ENV, fingerprint, load_signing_key, new_key_pair, \
    public_keys_in
from datafirst.run import key_check_of
from datafirst.world import generate_world

from .conftest import TEST_SALT, build_pipeline

cli = CliRunner()


def _workspace(root: Path) -> Path:
    """A workspace as `datafirst init` leaves one (the log needs nothing else)."""
    root.mkdir(parents=True)
    (root / "datafirst.yaml").write_text("extracts: extracts\n")
    return root


def _keys(signing_key: Path) -> list:
    return public_keys_in(Path(f"{signing_key}.pub"))


def _lines(ws: Path) -> list[bytes]:
    return log_path(ws).read_bytes().splitlines(keepends=True)


def _write(ws: Path, lines: list[bytes]) -> None:
    log_path(ws).write_bytes(b"".join(lines))


def _said(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture
def anchor(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "outside" / "audit-anchor.json"
    path.parent.mkdir()
    monkeypatch.setenv(ANCHOR_FILE_ENV, str(path))
    return path


@pytest.fixture
def ws(tmp_path, anchor) -> Path:
    """Five entries, the head signed with the session's key and anchored outside the workspace."""
    root = _workspace(tmp_path / "ws")
    for n in range(1, 6):
        record(root, "release", "a.checker", f"v{n:04d}", {"version": f"v{n:04d}", "tables": n, "rows": 100 * n})
    return root


def test_a_chain_of_entries_verifies_and_its_head_is_signed_and_anchored(ws, anchor, signing_key):
    entries = read_entries(ws)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev"] == "0" * 64 and all(b["prev"] == a["hash"] for a, b in zip(entries, entries[1:]))
    assert entries[2]["actor"] == "a.checker"
    assert entries[2]["details"] == {"version": "v0003", "tables": 3, "rows": 300}
    head = json.loads(head_path(ws).read_text())
    assert (head["seq"], head["hash"]) == (5, entries[-1]["hash"])
    assert json.loads(anchor.read_text()) == {"seq": 5, "hash": entries[-1]["hash"]}
    assert verify(ws, _keys(signing_key), anchor) == []
    checked = cli.invoke(app, ["audit", "verify", "-w", str(ws), "--public-key", f"{signing_key}.pub"])
    assert checked.exit_code == 0, checked.output
    assert "verifies: 5 entries" in _said(checked) and f"seq 5, sha256 {entries[-1]['hash']}" in _said(checked)
    assert f"agrees with the signed head {head_path(ws)}" in _said(checked) and f"the anchor {anchor}" in _said(checked)
    shown = cli.invoke(app, ["audit", "show", "-w", str(ws), "--last", "2"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0 and "last 2 of 5" in shown.output and "v0005" in shown.output
    assert "v0003" not in shown.output


def test_one_edited_byte_is_detected_and_a_recomputed_hash_breaks_the_chain(ws, anchor, signing_key):
    keys = _keys(signing_key)
    lines = _lines(ws)
    original = list(lines)
    lines[2] = lines[2].replace(b'"rows":300', b'"rows":301')  # one byte of entry 3
    _write(ws, lines)
    problems = verify(ws, keys, anchor)
    assert problems == ["entry seq 3 (line 3) has been edited: its content does not match its hash"]
    refused = cli.invoke(app, ["audit", "verify", "-w", str(ws)])
    assert refused.exit_code == 1 and "entry seq 3" in _said(refused) and "edited" in _said(refused)
    # A space added: the content parses the same, but the line is not as datafirst writes it.
    _write(ws, [*original[:1], original[1].replace(b'"seq":2', b'"seq": 2'), *original[2:]])
    assert verify(ws, keys, anchor) == ["entry seq 2 (line 2) has been edited: it is not written as "
                                        "datafirst writes it"]
    # The edited entry given a hash of its own: the next entry no longer follows it.
    entry = json.loads(original[2])
    entry["details"]["rows"] = 301
    entry["hash"] = entry_hash(entry)
    _write(ws, [*original[:2], canonical(entry) + b"\n", *original[3:]])
    assert any("entry seq 4 does not follow entry seq 3" in p for p in verify(ws, keys, anchor))


def _rechained(entries: list[dict]) -> list[bytes]:
    """The log rewritten from scratch, as someone without the signing key can: seq, prev and hash
    recomputed so that the chain itself is intact."""
    out, prev = [], GENESIS
    for seq, entry in enumerate(entries, 1):
        entry = {**entry, "seq": seq, "prev": prev}
        entry["hash"] = prev = entry_hash(entry)
        out.append(canonical(entry) + b"\n")
    return out


def test_a_deleted_entry_and_swapped_entries_are_detected(ws, anchor, signing_key):
    keys = _keys(signing_key)
    lines = _lines(ws)
    _write(ws, lines[:2] + lines[3:])
    assert verify(ws, keys, anchor) == ["entries seq 3 are missing from the log (it holds seq 1 to 5): they were "
                                        "deleted"]
    _write(ws, [lines[0], lines[1], lines[3], lines[2], lines[4]])
    assert verify(ws, keys, anchor) == ["entry seq 3 (line 4) comes after seq 4: the entries were reordered"]
    # Deleted, and the rest renumbered and chained again: the signed head and the anchor catch it.
    _write(ws, _rechained([json.loads(x) for x in lines[:2] + lines[3:]]))
    problems = verify(ws, keys, anchor)
    assert any("signed head" in p and "seq 5" in p and "cut off the end" in p for p in problems), problems
    assert any("anchor" in p and "cut off the end" in p for p in problems), problems


def test_a_cut_tail_is_detected_by_the_signed_head_and_by_the_anchor(ws, anchor, signing_key):
    keys = _keys(signing_key)
    lines = _lines(ws)
    _write(ws, lines[:3])  # the two newest entries cut off: what is left is an intact chain
    signed_only = verify(ws, keys, None)
    assert signed_only == [f"the log ends at seq 3 but the signed head {head_path(ws)} (by {fingerprint(keys[0])}) "
                           "records seq 5: entries 4 to 5 were cut off the end"]
    head_path(ws).unlink()  # removed too: the entries say a head was signed after them
    without_head = verify(ws, keys, None)
    assert without_head == [f"the signed head {head_path(ws)} is missing, though entry seq 3 says one was written "
                            "after it: it was removed (which would hide a cut tail)"]
    anchored = verify(ws, keys, anchor)
    assert f"the log ends at seq 3 but the anchor {anchor} records seq 5: entries 4 to 5 were cut off the end" \
        in anchored
    refused = cli.invoke(app, ["audit", "verify", "-w", str(ws)])
    assert refused.exit_code == 1 and "cut off the end" in _said(refused)


def test_with_the_anchor_alone_a_cut_tail_is_detected(tmp_path, anchor, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_FILE_ENV)
    ws = _workspace(tmp_path / "ws")
    for n in range(4):
        record(ws, "run", "an.operator", "pipeline", {"outcome": "completed", "n": n})
    assert not head_path(ws).exists() and json.loads(anchor.read_text())["seq"] == 4
    assert verify(ws, [], anchor) == []
    _write(ws, _lines(ws)[:2])
    assert verify(ws, [], anchor) == [f"the log ends at seq 2 but the anchor {anchor} records seq 4: entries 3 to 4 "
                                      "were cut off the end"]
    said = _said(cli.invoke(app, ["audit", "verify", "-w", str(ws)]))
    assert "cut off the end" in said


def test_without_a_head_or_anchor_the_cut_cannot_be_seen_and_the_head_is_printed(tmp_path, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_FILE_ENV)
    monkeypatch.delenv(ANCHOR_FILE_ENV, raising=False)
    ws = _workspace(tmp_path / "ws")
    entries = [record(ws, "verify", "an.auditor", "releases", {"problems": 0}) for _ in range(3)]
    result = check(ws, [], None)
    assert result.problems == [] and any("cannot be detected" in n for n in result.notes)
    said = _said(cli.invoke(app, ["audit", "verify", "-w", str(ws)]))
    assert "cut off the end of the log cannot be detected" in said
    assert f"Audit log head: seq 3, sha256 {entries[-1]['hash']}" in said


def test_a_forged_head_signature_is_detected(ws, anchor, signing_key, tmp_path):
    keys = _keys(signing_key)
    lines = _lines(ws)
    _write(ws, lines[:3])
    forger = tmp_path / "forger.key"
    new_key_pair(forger)
    key = serialization.load_pem_private_key(forger.read_bytes(), password=None)
    entry = json.loads(lines[2])
    forged = {"seq": 3, "hash": entry["hash"], "signing_key_fingerprint": "sha256:" + "0" * 64,
              "signature": base64.b64encode(key.sign(head_bytes(Head(3, entry["hash"])))).decode()}
    head_path(ws).write_text(json.dumps(forged))
    problems = verify(ws, keys, None)
    assert any("is not signed by the trusted public key" in p and "forged" in p for p in problems), problems
    # The genuine signature of another head put on this one is no better.
    genuine = json.loads(head_path(ws).read_text()) | {"seq": 3, "hash": entry["hash"]}
    genuine["signature"] = base64.b64encode(load_signing_key().sign(b"something else")).decode()
    head_path(ws).write_text(json.dumps(genuine))
    assert any("is not signed by the trusted public key" in p for p in verify(ws, keys, None))


def test_two_processes_appending_at_once_keep_the_chain_intact(tmp_path, anchor, signing_key):
    ws = _workspace(tmp_path / "ws")
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from datafirst.deliver.audit import record
        for n in range(40):
            record(Path({str(ws)!r}), "run", sys.argv[1], "pipeline", {{"n": n}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, who], env=os.environ.copy()) for who in ("one", "two")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    entries = read_entries(ws)
    assert [e["seq"] for e in entries] == list(range(1, 81))
    assert sorted(e["actor"] for e in entries) == ["one"] * 40 + ["two"] * 40
    assert verify(ws, _keys(signing_key), anchor) == []


def test_an_anchor_inside_the_workspace_is_refused(tmp_path, monkeypatch):
    ws = _workspace(tmp_path / "ws")
    monkeypatch.setenv(ANCHOR_FILE_ENV, str(ws / "anchor.json"))
    with pytest.raises(AuditError, match="inside the workspace"):
        record(ws, "run", "me", "pipeline", {})
    assert not log_path(ws).exists()
    refused = cli.invoke(app, ["ingest", "-w", str(ws)])
    assert refused.exit_code == 2 and "inside the workspace" in _said(refused)
    monkeypatch.delenv(ANCHOR_FILE_ENV)
    with pytest.raises(AuditError, match="not a JSON value"):
        record(ws, "run", "me", "pipeline", {"file": Path("x")})


def test_key_use_is_recorded_without_the_key(tmp_path, anchor, signing_key, monkeypatch):
    ws = _workspace(tmp_path / "ws")
    keys = tmp_path / "keys"
    keys.mkdir()
    made = cli.invoke(app, ["key", "new", str(keys / "hash.key"), "-w", str(ws)])
    assert made.exit_code == 0, made.output
    signed = cli.invoke(app, ["signing-key", "new", str(keys / "sign.key"), "-w", str(ws)])
    assert signed.exit_code == 0, signed.output
    monkeypatch.chdir(ws)  # the default: the current folder, when it is a workspace
    assert cli.invoke(app, ["key", "new", str(keys / "hash2.key")]).exit_code == 0
    entries = read_entries(ws)
    assert [(e["action"], e["subject"]) for e in entries] == [("key.new", "hash.key"), ("signing-key.new", "sign.key"),
                                                              ("key.new", "hash2.key")]
    hashing = (keys / "hash.key").read_text().strip()
    assert entries[0]["details"] == {"file": "hash.key", "hashing_key_check": key_check_of(hashing)}
    assert entries[1]["details"]["signing_key_fingerprint"] == fingerprint(public_keys_in(keys / "sign.key.pub")[0])
    private = serialization.load_pem_private_key((keys / "sign.key").read_bytes(), password=None)
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    session = load_signing_key().private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                               serialization.NoEncryption())
    written = log_path(ws).read_bytes() + head_path(ws).read_bytes() + anchor.read_bytes()
    for secret in (hashing, (keys / "hash2.key").read_text().strip(), raw, session):
        forms = [secret] if isinstance(secret, str) else [secret, secret.hex(), base64.b64encode(secret)]
        for form in forms:
            form = form.encode() if isinstance(form, str) else form
            assert form not in written and form[:16] not in written
    pem = (keys / "sign.key").read_text().splitlines()[1].encode()
    assert pem not in written


@pytest.fixture(scope="module")
def linked(tmp_path_factory) -> Path:
    """A small world (300 people) taken through link, ready to release."""
    root = tmp_path_factory.mktemp("audit-release")
    generate_world(root / "world", 300, seed=5)
    return build_pipeline(root / "world", root, "link").root


def test_a_run_its_release_and_the_checks_are_recorded(linked, anchor, signing_key, monkeypatch):
    monkeypatch.setenv("DATAFIRST_SALT", TEST_SALT)
    monkeypatch.delenv("DATAFIRST_SALT_FILE", raising=False)
    released = cli.invoke(app, ["run", "-w", str(linked)])  # publishes v0001
    assert released.exit_code == 0, released.output
    again = cli.invoke(app, ["release", "-w", str(linked)])  # nothing changed: recorded as such
    assert again.exit_code == 0, again.output
    assert cli.invoke(app, ["verify", str(linked)]).exit_code == 0
    v1 = linked / "releases" / "v0001"
    assert cli.invoke(app, ["diff", str(v1), str(v1)]).exit_code == 0
    entries = read_entries(linked)
    assert [(e["action"], e["subject"], e["details"]["outcome"]) for e in entries] == [
        ("run", "pipeline", "completed"), ("release", "v0001", "published"), ("release", "none", "unchanged"),
        ("verify", "releases", "verified"), ("diff", "v0001 -> v0001", "compared")]
    assert entries[0]["details"]["stages"] == {"ingest": "ran", "standardise": "ran", "train": "skipped", "link": "ran",
                                             "release": "ran"}
    published = entries[1]["details"]
    manifest = json.loads((v1 / "manifest.json").read_text())
    assert published["manifest_sha256"] == file_sha256(v1 / "manifest.json")
    assert published["signing_key_fingerprint"] == manifest["signing_key_fingerprint"]
    assert published["rows"] == sum(manifest["tables"].values())
    assert TEST_SALT.encode() not in log_path(linked).read_bytes()
    assert verify(linked, _keys(signing_key), anchor) == []


def test_a_torn_last_line_is_named_and_nothing_is_appended_after_it(ws, anchor, signing_key):
    lines = _lines(ws)
    _write(ws, [*lines[:4], lines[4][:40]])  # the last write cut off part-way
    with pytest.raises(AuditError, match="does not end with a whole entry"):
        record(ws, "run", "me", "pipeline", {})
    assert verify(ws, _keys(signing_key), anchor)[0] == (f"line 5 of {log_path(ws)} is not a whole entry (no line "
                                                          "end): a write was cut off, or the file was cut or edited")
