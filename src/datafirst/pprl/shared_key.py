"""The secret the two data holders share: from a file or an environment variable, never from the
repository, the schema, a log or an output; refused unless strong (release/hashing_key.check_key).

Whoever holds it can encode any name and compare it with the encodings (a dictionary attack on
every field, ids and dates of birth included, which come from small spaces), so it must be too
strong to guess and must never reach the linker. docs/pprl.md, "Why the secret must be strong".
"""

from __future__ import annotations

import os
from pathlib import Path

from ..release.hashing_key import SecretError, check_key, read_key_file

SECRET_ENV = "DATAFIRST_PPRL_SECRET"
MAKE_ONE = ("agree one between the two data holders, e.g. `(umask 077; openssl rand -hex 32 > pprl.secret)` "
            "on one side sent over an encrypted channel, or a key exchange; never send it to the linker")


def load_secret(path: Path | None) -> str:
    """The secret from `path`, else from DATAFIRST_PPRL_SECRET; refused when weak, missing, or a
    file others can read."""
    if path is None:
        value = os.environ.get(SECRET_ENV)
        if not value:
            raise SecretError(f"no shared secret: give --secret-file FILE or set {SECRET_ENV} ({MAKE_ONE})")
        return check_key(value.strip(), f"environment variable {SECRET_ENV}")
    return read_key_file(path, "secret", f"file {path}", MAKE_ONE)
