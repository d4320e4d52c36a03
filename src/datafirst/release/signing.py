"""The release signing key: Ed25519, kept outside the workspace, never printed.

Each release's SHA256SUMS (which lists its manifest and every file) is signed with the private
key; whoever holds the public key can check that a release, and the chain its manifests form,
is the one datafirst published. The private key comes from the file named by
DATAFIRST_SIGNING_KEY_FILE (PEM, PKCS #8 unencrypted, or the 32 raw bytes), which must be the
user's own and readable by nobody else. The public key that verification trusts comes from
outside the workspace too (a file given by the caller or named by DATAFIRST_VERIFY_KEY_FILE),
or is derived from the private key where that is at hand: a public key kept in the workspace
would be rewritten by whoever rewrites the releases.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNING_KEY_FILE_ENV = "DATAFIRST_SIGNING_KEY_FILE"
VERIFY_KEY_FILE_ENV = "DATAFIRST_VERIFY_KEY_FILE"
PUBLIC_SUFFIX = ".pub"
RAW_KEY_BYTES = 32
PEM_PUBLIC_BEGIN = b"-----BEGIN PUBLIC KEY-----"
HOW_TO_MAKE = (f"make one with `datafirst signing-key new PATH` (PATH outside the workspace), then "
               f"`export {SIGNING_KEY_FILE_ENV}=PATH`")


class SigningKeyError(Exception):
    """No usable signing or verification key; the message says what to do (and never shows a key)."""


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key: names a key in manifests and messages, reveals nothing."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _private_from_bytes(data: bytes, source: str) -> Ed25519PrivateKey:
    if len(data) == RAW_KEY_BYTES and not data.startswith(b"-----"):
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # Not shown: the error could quote the file's bytes.
        raise SigningKeyError(f"the signing key {source} is not an unencrypted Ed25519 private key (PEM, PKCS #8) "
                              f"or its {RAW_KEY_BYTES} raw bytes; {HOW_TO_MAKE}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"the signing key {source} is not an Ed25519 key; {HOW_TO_MAKE}")
    return key


def load_signing_key() -> Ed25519PrivateKey:
    """The private key named by DATAFIRST_SIGNING_KEY_FILE. Refused: no variable, a file that is
    not there, not a regular file, not the user's own, readable or writable by group or others,
    or not an Ed25519 key."""
    named = os.environ.get(SIGNING_KEY_FILE_ENV)
    if not named:
        raise SigningKeyError(f"no release signing key: releases are signed so that a tampered or forged one "
                              f"is detected; {HOW_TO_MAKE}")
    path = Path(named)
    try:
        st = path.stat()
    except (OSError, ValueError) as exc:
        # The value is not shown: set by mistake to the key itself, it would print the secret.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SigningKeyError(f"cannot read the signing key file named by {SIGNING_KEY_FILE_ENV} ({reason}): it must "
                              f"hold the path of the private key file (not the key itself); {HOW_TO_MAKE}") from exc
    source = f"file {path} (from {SIGNING_KEY_FILE_ENV})"
    if not stat.S_ISREG(st.st_mode):
        raise SigningKeyError(f"the signing key {source} is not a regular file")
    if st.st_uid != os.geteuid():
        raise SigningKeyError(f"the signing key {source} belongs to another user (uid {st.st_uid}); it must be "
                              "your own, readable by you only")
    if st.st_mode & 0o077:
        raise SigningKeyError(f"the signing key {source} can be read or written by others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}): make it owner-only with `chmod 600 {path}` and "
                              "consider it exposed if others could have read it (make a new one)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signing key {source} ({exc.strerror or type(exc).__name__})") from exc
    return _private_from_bytes(data, source)


def public_keys_in(path: Path) -> list[Ed25519PublicKey]:
    """The Ed25519 public keys in a file: one or more PEM blocks (several after a change of
    signing key: the old releases stay signed with the old one), or the 32 raw bytes."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the public key file {path} ({exc.strerror or type(exc).__name__})") from exc
    if len(data) == RAW_KEY_BYTES and not data.startswith(b"-----"):
        return [Ed25519PublicKey.from_public_bytes(data)]
    keys = []
    for block in data.split(PEM_PUBLIC_BEGIN)[1:]:
        try:
            key = serialization.load_pem_public_key(PEM_PUBLIC_BEGIN + block)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"the public key file {path} holds a PEM block that is not a public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"the public key file {path} holds a key that is not Ed25519")
        keys.append(key)
    if not keys:
        raise SigningKeyError(f"{path} holds no public key (PEM 'BEGIN PUBLIC KEY' blocks, or {RAW_KEY_BYTES} raw "
                              "bytes); `datafirst signing-key new` writes one beside the private key, as KEY.pub")
    return keys


def trusted_public_keys(files: list[Path] | None = None) -> list[Ed25519PublicKey]:
    """The public keys releases are verified against: from `files` when given, else from the file
    named by DATAFIRST_VERIFY_KEY_FILE, else the signing key's own."""
    if files:
        return [key for f in files for key in public_keys_in(f)]
    if os.environ.get(VERIFY_KEY_FILE_ENV):
        return public_keys_in(Path(os.environ[VERIFY_KEY_FILE_ENV]))
    if os.environ.get(SIGNING_KEY_FILE_ENV):
        return [load_signing_key().public_key()]
    raise SigningKeyError(f"no public key to verify the releases against: give --public-key FILE, or set "
                          f"{VERIFY_KEY_FILE_ENV} (or {SIGNING_KEY_FILE_ENV}, whose public key is derived). Keep it "
                          "outside the workspace: whoever can rewrite the releases can rewrite a key kept with them")


def public_key_files(files: list[Path] | None = None) -> list[Path]:
    """The files `trusted_public_keys` reads public keys from (none when it derives the key)."""
    if files:
        return list(files)
    return [Path(os.environ[VERIFY_KEY_FILE_ENV])] if os.environ.get(VERIFY_KEY_FILE_ENV) else []


def signed_by(keys: list[Ed25519PublicKey], data: bytes, signature: bytes) -> Ed25519PublicKey | None:
    """The key among `keys` whose signature of `data` `signature` is, or None."""
    for key in keys:
        try:
            key.verify(signature, data)
            return key
        except InvalidSignature:
            continue
    return None


def new_key_pair(private_path: Path) -> Path:
    """Write a new Ed25519 private key (PEM, mode 0600) and its public key beside it (KEY.pub);
    refuse to overwrite either. Returns the public key's path."""
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + PUBLIC_SUFFIX)
    for p in (private_path, public_path):
        if p.exists() or p.is_symlink():
            raise SigningKeyError(f"{p} already exists; a signing key is never overwritten (releases signed with it "
                                  "would no longer verify against a new one): choose another path")
    private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Created owner-only (O_EXCL: never through a file someone put there in the meantime).
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(private_path, 0o600)  # whatever the umask
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return public_path


def make_demo_signing_key(path: Path) -> Path:
    """A signing key for the demo (never for real data) unless one is already there."""
    path = Path(path)
    if not path.is_file():
        new_key_pair(path)
    return path
