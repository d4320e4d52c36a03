"""The hashing salt: from an environment variable or a file, never from the repo or config.

The salt keys every hash in a release (native ids, record keys, person ids). The same salt
gives the same hashes across releases (so researchers can join them); another salt gives
hashes that join to nothing. It is never logged, printed or written into a release.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SALT_ENV = "DATAFIRST_SALT"
SALT_FILE_ENV = "DATAFIRST_SALT_FILE"
MIN_LENGTH = 16


class SecretError(Exception):
    """No usable salt; the message says how to provide one (and never shows a salt)."""


def load_salt() -> str:
    value = os.environ.get(SALT_ENV)
    source = f"environment variable {SALT_ENV}"
    if not value and os.environ.get(SALT_FILE_ENV):
        path = Path(os.environ[SALT_FILE_ENV])
        source = f"file {path} (from {SALT_FILE_ENV})"
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            # The value is not shown: set by mistake to the salt itself, it would print the secret.
            raise SecretError(f"cannot read the salt file named by {SALT_FILE_ENV} ({exc.strerror or type(exc).__name__}): "
                              "it must hold the path of a readable file holding the salt (not the salt itself; "
                              f"a salt goes in {SALT_ENV})") from exc
        except UnicodeDecodeError as exc:
            raise SecretError(f"the salt {source} is not text: write it as text, for example the output of "
                              "`openssl rand -hex 32`") from exc
        if not value:
            raise SecretError(f"the salt {source} is empty: write a secret of at least {MIN_LENGTH} characters in "
                              "it, for example the output of `openssl rand -hex 32`")
    if not value:
        raise SecretError(
            f"no hashing salt: set {SALT_FILE_ENV} to a file holding a secret of at least {MIN_LENGTH} characters "
            f"(or {SALT_ENV} to the secret itself). Keep it outside the workspace and the repository; the same salt "
            "must be used for every release that researchers will join.")
    if len(value) < MIN_LENGTH:
        raise SecretError(f"the salt from {source} is shorter than {MIN_LENGTH} characters; use a longer random secret")
    return value


def make_demo_salt(path: Path) -> Path:
    """Write a random salt for the demo (never for real data) unless one is already there."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
        path.chmod(0o600)
    return path
