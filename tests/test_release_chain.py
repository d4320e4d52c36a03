"""The verifiable chain of releases (issue 23, item 5): each manifest names its predecessor and
the predecessor's manifest hash, SHA256SUMS is signed with Ed25519, and `verify`, `release` and
`diff` check every release, the chain, the ledger and the anchor against a public key kept
outside the workspace. Also: `datafirst release` on unchanged inputs publishes nothing (item 8)
and `datafirst signing-key new`. A small world (300 people), real DuckDB and Splink."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import duckdb
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.engine import Engine
from datafirst.release.chain import ANCHOR_FILE_ENV, SIGNATURE
from datafirst.release.diff import diff
from datafirst.release.signing import SIGNING_KEY_FILE_ENV, VERIFY_KEY_FILE_ENV, SigningKeyError, fingerprint, \
    load_signing_key, new_key_pair, public_keys_in
from datafirst.release.stage import ReleaseError, published, release
from datafirst.workspace import Workspace
from datafirst.world import generate_world

from .conftest import TEST_SALT, build_pipeline

cli = CliRunner()


@pytest.fixture(scope="module")
def chain_base(tmp_path_factory) -> Path:
    """A workspace with three releases, v0001 to v0003, signed with the session's key."""
    root = tmp_path_factory.mktemp("chain")
    generate_world(root / "world", 300, seed=7)
    ws = build_pipeline(root / "world", root, "release")
    with Engine() as engine:
        release(ws, engine, salt=TEST_SALT)
        release(ws, engine, salt=TEST_SALT)
    assert [p.name for p in published(ws)] == ["v0001", "v0002", "v0003"]
    return ws.root


@pytest.fixture
def ws(chain_base, tmp_path) -> Workspace:
    """A writable copy of the three-release workspace (releases are read-only once published)."""
    shutil.copytree(chain_base, tmp_path / "ws", symlinks=True)
    root = tmp_path / "ws"
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return Workspace(root)


def _said(result) -> str:
    return " ".join(result.output.split())


def _verify(*args: str):
    return cli.invoke(app, ["verify", *args])


def _versions(ws: Workspace) -> list[str]:
    return [p.name for p in published(ws)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_table(release_dir: Path) -> None:
    """A real edit: one row of the person table removed."""
    table = release_dir / "tables" / "person.parquet"
    edited = table.with_name("edited.parquet")
    duckdb.connect().execute(f"COPY (SELECT * FROM read_parquet('{table}') OFFSET 1) TO '{edited}' (FORMAT parquet)")
    edited.replace(table)


def _resum(release_dir: Path) -> None:
    """SHA256SUMS rewritten to match the files, as anyone can without the key."""
    names = sorted(p.relative_to(release_dir).as_posix() for p in release_dir.rglob("*")
                   if p.is_file() and p.name not in ("SHA256SUMS", SIGNATURE))
    (release_dir / "SHA256SUMS").write_text("".join(f"{_sha256(release_dir / n)}  {n}\n" for n in names))


def _reledger(ws: Workspace) -> None:
    """The ledger rewritten to agree with the releases as they now are."""
    entries = [{"version": p.name, "sha256sums": _sha256(p / "SHA256SUMS"), "state": "published"}
               for p in published(ws)]
    (ws.root / "releases" / "ledger.json").write_text(json.dumps({"releases": entries}))


def _refused_everywhere(ws: Workspace, match: str) -> None:
    """`verify`, `release` and `diff` (of two releases that were not touched) all refuse."""
    checked = _verify(str(ws.root))
    assert checked.exit_code != 0 and "error:" in checked.output and match in _said(checked), checked.output
    before = _versions(ws)
    with Engine() as engine, pytest.raises(ReleaseError, match=match):
        release(ws, engine, salt=TEST_SALT)
    assert _versions(ws) == before
    assert not [p for p in (ws.root / "releases").iterdir() if p.name.startswith(".")]
    newest = published(ws)[-2:]
    with Engine() as engine, pytest.raises(ReleaseError, match=match):
        diff(engine, *newest)
    compared = cli.invoke(app, ["diff", *map(str, newest)])
    assert compared.exit_code != 0 and match in _said(compared), compared.output


def test_an_intact_chain_verifies_and_each_manifest_links_to_the_one_before(ws, signing_key):
    manifests = [json.loads((p / "manifest.json").read_text()) for p in published(ws)]
    assert manifests[0]["previous"] is None and manifests[0]["previous_manifest_sha256"] is None
    for before, after, m in zip(published(ws), published(ws)[1:], manifests[1:]):
        assert m["previous"] == before.name and m["previous_manifest_sha256"] == _sha256(before / "manifest.json")
    public = public_keys_in(Path(f"{signing_key}.pub"))[0]
    assert {m["signing_key_fingerprint"] for m in manifests} == {fingerprint(public)}
    for p in published(ws):  # the signature covers SHA256SUMS, which lists the manifest and every file
        public.verify((p / SIGNATURE).read_bytes(), (p / "SHA256SUMS").read_bytes())
        assert "  manifest.json" in (p / "SHA256SUMS").read_text()
    checked = _verify(str(ws.root), "--public-key", f"{signing_key}.pub")
    assert checked.exit_code == 0 and "3 releases" in _said(checked) and "v0001 to v0003" in _said(checked), \
        checked.output
    assert f"manifest sha256 {_sha256(published(ws)[-1] / 'manifest.json')}" in _said(checked)
    assert _verify(str(published(ws)[1])).exit_code == 0  # one release: its whole folder is checked
    alone = ws.root.parent / "handed-on"
    shutil.copytree(published(ws)[1], alone)
    copy = _verify(str(alone))
    assert copy.exit_code == 0 and "its chain was not checked" in _said(copy), copy.output
    with Engine() as engine:
        assert diff(engine, published(ws)[0], published(ws)[2])["same_key"]


@pytest.mark.parametrize("tamper", ["table", "table and SHA256SUMS and ledger", "signature removed"])
def test_a_tampered_older_release_fails_verify_release_and_diff(ws, tamper):
    oldest = published(ws)[0]
    if tamper == "signature removed":
        (oldest / SIGNATURE).unlink()
        match = "release v0001 is not signed"
    else:
        _edit_table(oldest)
        match = "release v0001 has been altered"
        if tamper != "table":
            _resum(oldest)
            _reledger(ws)
            match = "release v0001: SHA256SUMS.sig is not a signature of its SHA256SUMS"
    _refused_everywhere(ws, match)


@pytest.mark.parametrize("how", ["deleted", "renumbered"])
def test_a_removed_middle_release_fails(ws, how):
    v1, v2, v3 = published(ws)
    shutil.rmtree(v2)
    if how == "renumbered":  # the gap closed: v0003 moved into v0002's place
        v3.rename(v2)
    _reledger(ws)
    match = "do not run from v0001 without a gap" if how == "deleted" else "its manifest says it is v0003"
    checked = _verify(str(ws.root))
    assert checked.exit_code != 0 and match in _said(checked), checked.output
    assert "names v0002 as the one before it, but here that is v0001" in _said(checked) or how == "renumbered"
    with Engine() as engine, pytest.raises(ReleaseError, match=match):
        release(ws, engine, salt=TEST_SALT)
    with Engine() as engine, pytest.raises(ReleaseError, match=match):
        diff(engine, v1, published(ws)[-1])


def _forge(ws: Workspace, key: Ed25519PrivateKey) -> None:
    """What someone who can rewrite the workspace but lacks the signing key can do at best: edit
    v0001, then rebuild the whole chain, every checksum, signature and the ledger with their own key."""
    _edit_table(published(ws)[0])
    previous = None
    for p in published(ws):
        manifest = json.loads((p / "manifest.json").read_text())
        manifest["previous_manifest_sha256"] = _sha256(previous / "manifest.json") if previous else None
        manifest["signing_key_fingerprint"] = fingerprint(key.public_key())
        (p / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _resum(p)
        (p / SIGNATURE).write_bytes(key.sign((p / "SHA256SUMS").read_bytes()))
        previous = p
    _reledger(ws)


def test_a_forged_chain_fails_against_the_real_public_key(ws, signing_key, tmp_path, monkeypatch):
    forger = tmp_path / "forger.key"
    new_key_pair(forger)
    _forge(ws, serialization.load_pem_private_key(forger.read_bytes(), password=None))
    # Consistent in itself: against the forger's own key it verifies ...
    assert _verify(str(ws.root), "--public-key", f"{forger}.pub").exit_code == 0
    # ... against the real one, every release fails, and release and diff refuse.
    checked = _verify(str(ws.root), "--public-key", f"{signing_key}.pub")
    assert checked.exit_code != 0 and _said(checked).count("is not a signature of its SHA256SUMS") == 3, \
        checked.output
    _refused_everywhere(ws, "is not a signature of its SHA256SUMS by the trusted public key")
    # The forger's public key named as the trusted one does not help while the real signing key signs.
    monkeypatch.setenv(VERIFY_KEY_FILE_ENV, f"{forger}.pub")
    with Engine() as engine, pytest.raises(ReleaseError, match="is not in DATAFIRST_VERIFY_KEY_FILE"):
        release(ws, engine, salt=TEST_SALT)


def test_a_wrong_public_key_fails(ws, tmp_path):
    other = tmp_path / "other.key"
    new_key_pair(other)
    checked = _verify(str(ws.root), "--public-key", f"{other}.pub")
    assert checked.exit_code != 0 and _said(checked).count("is not a signature") == 3, checked.output
    compared = cli.invoke(app, ["diff", *map(str, published(ws)[:2]), "--public-key", f"{other}.pub"])
    assert compared.exit_code != 0 and "is not a signature" in _said(compared), compared.output
    # A public key kept in the workspace proves nothing: refused.
    inside = ws.root / "trusted.pub"
    shutil.copy(f"{other}.pub", inside)
    refused = _verify(str(ws.root), "--public-key", str(inside))
    assert refused.exit_code != 0 and "is inside the workspace" in _said(refused), refused.output


def test_dropping_the_newest_release_is_caught_by_the_anchor(ws, tmp_path, monkeypatch):
    anchor = tmp_path / "outside" / "anchor.json"
    anchor.parent.mkdir()
    monkeypatch.setenv(ANCHOR_FILE_ENV, str(anchor))
    with Engine() as engine:
        newest = release(ws, engine, salt=TEST_SALT).path
    assert json.loads(anchor.read_text()) == {"version": "v0004", "manifest_sha256": _sha256(newest / "manifest.json")}
    assert _verify(str(ws.root)).exit_code == 0
    shutil.rmtree(newest)
    _reledger(ws)
    # Without the anchor the shorter chain is intact: nothing inside the workspace can tell.
    assert _verify(str(ws.root), "--anchor", str(tmp_path / "nothing.json")).exit_code != 0
    monkeypatch.delenv(ANCHOR_FILE_ENV)
    assert _verify(str(ws.root)).exit_code == 0
    monkeypatch.setenv(ANCHOR_FILE_ENV, str(anchor))
    checked = _verify(str(ws.root))
    assert checked.exit_code != 0 and "records release v0004, which is not here" in _said(checked), checked.output
    with Engine() as engine, pytest.raises(ReleaseError, match="records release v0004, which is not here"):
        release(ws, engine, salt=TEST_SALT)
    # An anchor that could not be written once the release is published is refused before building.
    monkeypatch.setenv(ANCHOR_FILE_ENV, str(tmp_path / "no-such-folder" / "anchor.json"))
    with Engine() as engine, pytest.raises(ReleaseError, match="folder of the anchor file .* does not exist"):
        release(ws, engine, salt=TEST_SALT)
    # An anchor kept in the workspace would be rolled back with it: refused.
    monkeypatch.setenv(ANCHOR_FILE_ENV, str(ws.root / "anchor.json"))
    with Engine() as engine, pytest.raises(ReleaseError, match="anchor file .* is inside the workspace"):
        release(ws, engine, salt=TEST_SALT)


def test_a_missing_or_exposed_signing_key_is_refused_before_anything_is_built(ws, tmp_path, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_FILE_ENV)
    with Engine() as engine, pytest.raises(SigningKeyError, match="no release signing key.*signing-key new"):
        release(ws, engine, salt=TEST_SALT)
    monkeypatch.setenv("DATAFIRST_SALT", TEST_SALT)
    said = cli.invoke(app, ["release", "-w", str(ws.root)])
    assert said.exit_code == 2 and "error: no release signing key" in _said(said), said.output
    key = tmp_path / "exposed.key"
    new_key_pair(key)
    key.chmod(0o640)
    monkeypatch.setenv(SIGNING_KEY_FILE_ENV, str(key))
    with Engine() as engine, pytest.raises(SigningKeyError, match="can be read or written by others.*chmod 600"):
        release(ws, engine, salt=TEST_SALT)
    # The variable set to the key itself, not its path: refused without showing it.
    pem = key.read_text()
    monkeypatch.setenv(SIGNING_KEY_FILE_ENV, pem)
    with pytest.raises(SigningKeyError, match="not the key itself") as exc:
        load_signing_key()
    assert pem.splitlines()[1] not in str(exc.value)
    # A signing key kept in the releases folder is refused.
    key.chmod(0o600)
    kept = ws.root / "releases" / "release.key"
    shutil.copy(key, kept)
    kept.chmod(0o600)
    monkeypatch.setenv(SIGNING_KEY_FILE_ENV, str(kept))
    with Engine() as engine, pytest.raises(ReleaseError, match="names a file inside the releases folder"):
        release(ws, engine, salt=TEST_SALT)
    assert _versions(ws) == ["v0001", "v0002", "v0003"]
    assert not [p for p in (ws.root / "releases").iterdir() if p.name.startswith(".")]


def test_signing_key_new_writes_an_owner_only_pair_and_never_overwrites(tmp_path):
    key = tmp_path / "keys" / "release.key"
    made = cli.invoke(app, ["signing-key", "new", str(key)])
    assert made.exit_code == 0, made.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = public_keys_in(Path(f"{key}.pub"))[0]
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert fingerprint(private.public_key()) == fingerprint(public) and fingerprint(public) in _said(made)
    assert f"export {SIGNING_KEY_FILE_ENV}=" in made.output and "--public-key" in made.output
    assert key.read_text().splitlines()[1] not in made.output
    before = key.read_bytes()
    again = cli.invoke(app, ["signing-key", "new", str(key)])
    assert again.exit_code == 2 and "already exists" in _said(again) and key.read_bytes() == before


def test_the_signing_key_appears_in_no_release_file_or_output(ws, signing_key, monkeypatch):
    private = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    forms = [raw, raw.hex().encode(), base64.b64encode(raw), signing_key.read_text().splitlines()[1].encode()]
    monkeypatch.setenv("DATAFIRST_SALT", TEST_SALT)
    outputs = [cli.invoke(app, ["release", "-w", str(ws.root), "--new-series"]), _verify(str(ws.root)),
               cli.invoke(app, ["diff", *map(str, published(ws)[:2])])]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    files = [p for p in ws.root.rglob("*") if p.is_file()]
    assert any(p.name == SIGNATURE for p in files)
    for p in files:
        assert not any(f in p.read_bytes() for f in forms), p
    assert not any(f.decode("latin-1") in r.output for f in forms for r in outputs)


def test_release_with_unchanged_inputs_publishes_nothing(ws, monkeypatch):
    monkeypatch.setenv("DATAFIRST_SALT", TEST_SALT)
    same = cli.invoke(app, ["release", "-w", str(ws.root)])
    assert same.exit_code == 0 and "No change since v0003" in _said(same) and "none was published" in _said(same), \
        same.output
    assert _versions(ws) == ["v0001", "v0002", "v0003"]
    assert not [p for p in (ws.root / "releases").iterdir() if p.name.startswith(".")]
    fresh = cli.invoke(app, ["release", "-w", str(ws.root), "--new-series"])  # new ids: something did change
    assert fresh.exit_code == 0 and _versions(ws) == ["v0001", "v0002", "v0003", "v0004"], fresh.output
    assert _verify(str(ws.root)).exit_code == 0


def test_the_demo_makes_its_own_signing_key_when_none_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_FILE_ENV)
    monkeypatch.delenv("DATAFIRST_SALT", raising=False)
    monkeypatch.delenv("DATAFIRST_SALT_FILE", raising=False)
    out = tmp_path / "demo"
    made = cli.invoke(app, ["demo", "--out", str(out), "--people", "300", "--seed", "3"])
    assert made.exit_code == 0 and "Demonstration signing key" in made.output, made.output
    key = out / "secrets" / "demo-signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and Path(f"{key}.pub").is_file()
    assert os.environ[SIGNING_KEY_FILE_ENV] == str(key)  # for the rest of the demo's process
    assert _verify(str(out)).exit_code == 0
    before = key.read_bytes()
    monkeypatch.delenv(SIGNING_KEY_FILE_ENV)  # as a new process would start
    monkeypatch.delenv("DATAFIRST_SALT_FILE", raising=False)
    again = cli.invoke(app, ["demo", "--out", str(out), "--people", "300", "--seed", "3"])
    assert again.exit_code == 0 and key.read_bytes() == before, again.output
