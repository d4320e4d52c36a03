"""The hashing key (salt): from a key file or an environment variable, never from the repo or
config, and refused unless it is too strong to guess.

The key keys every hash in a release (native ids, record keys, person ids). The same key gives
the same hashes across releases (so researchers can join them); another key gives hashes that
join to nothing. It is never logged, printed or written into a release.

Why strength matters (docs/release.md, "Hashes and the key"): native ids come from small spaces
(a CRN, a case number), so whoever holds the key can hash every possible id and reverse the
released hashes; and the manifest's key check, or any released hash of an id an insider knows,
lets a guessed key be confirmed offline. The only defence is a key nobody can guess, so a key is
refused unless it has at least MIN_LENGTH characters and carries at least MIN_BITS by
`estimated_bits`, a deliberately pessimistic estimate: `datafirst key new` (or
`openssl rand -hex 32`) gives a key far above both.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import stat
from pathlib import Path

SALT_ENV = "DATAFIRST_SALT"
SALT_FILE_ENV = "DATAFIRST_SALT_FILE"
MIN_LENGTH = 32
MIN_BITS = 128
KEY_BYTES = 32  # what `datafirst key new` writes: 256 random bits, as 64 hex characters
# The characters judged: a key whose first JUDGED characters carry MIN_BITS carries them.
# (Bounds the estimate's cost, which grows with the cube of the length in the worst case.)
JUDGED = 256
# A word counts as one choice from a passphrase word list (diceware's 7,776 words: 12.9 bits),
# whatever its length: passphrases are made of such words, and a name or a place is no rarer.
WORD_BITS = 13.0
# The shape of a word: letters in one case (or capitalised), with vowels and no more than three
# consonants in a row. (Random keys hold many runs of letters; few of them are pronounceable.)
WORD_CASE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+")
PRONOUNCEABLE = re.compile(r"(?:[^aeiouy]{0,3}[aeiouy]+)+[^aeiouy]{0,3}", re.IGNORECASE)
MAKE_ONE = f"make one with `datafirst key new FILE` (or `(umask 077; openssl rand -hex {KEY_BYTES} > FILE)`)"


class SecretError(Exception):
    """No usable key; the message says how to provide one (and never shows a key)."""


def estimated_bits(key: str) -> float:
    """How many bits of entropy `key` carries, estimated pessimistically: the fewest bits that
    describe it as a sequence of pieces, each of which is

    - one character: log2 of the number of distinct characters in the key (log2 10 for a digit,
      if that is fewer), so `aaaa...` and `abab...` are worth next to nothing;
    - a copy of earlier text (3+ characters): log2 of where it starts plus log2 of its length,
      so repeated patterns (`justice-data-2024justice-data-2024`) count once;
    - a run with a constant step (3+ characters, step -2 to 2: `aaa`, `abcd`, `9876`): its
      first character and the step;
    - a word (3+ letters in one case or capitalised, pronounceable: vowels, and no more than
      three consonants in a row): at most WORD_BITS, as if chosen from a passphrase word list,
      so a few words, or a word plus a year, are weak.

    A random key loses little to this: 64 random hex characters are judged to carry about 220
    bits of their 256 (none fewer than 165 in 100,000 tries)."""
    text = key[:JUDGED]
    n = len(text)
    distinct = len(set(text))
    per_char = math.log2(distinct) if distinct > 1 else 0.0
    digit = min(per_char, math.log2(10))

    def char_bits(c: str) -> float:
        return digit if c.isdigit() else per_char

    best = [0.0] + [math.inf] * n  # best[i]: fewest bits describing text[:i]

    def reach(end: int, bits: float) -> None:
        best[end] = min(best[end], bits)

    for i in range(n):
        here = best[i]
        reach(i + 1, here + char_bits(text[i]))
        if i > 0:  # copies of text starting before i (they may overlap i, as in `abababab`)
            length = 3
            while i + length <= n and text.find(text[i:i + length], 0, i + length - 1) != -1:
                reach(i + length, here + math.log2(i) + math.log2(length))
                length += 1
        if i + 2 < n:
            step = ord(text[i + 1]) - ord(text[i])
            if abs(step) <= 2:
                end = i + 2
                while end < n and ord(text[end]) - ord(text[end - 1]) == step:
                    end += 1
                    if end - i >= 3:
                        reach(end, here + char_bits(text[i]) + math.log2(5))
        shaped = WORD_CASE.match(text, i)
        word = shaped and PRONOUNCEABLE.match(text, i, shaped.end())
        if word:
            spelt = char_bits(text[i]) + char_bits(text[i + 1]) if i + 1 < n else 0.0
            for end in range(i + 3, word.end() + 1):
                spelt += char_bits(text[end - 1])
                reach(end, here + min(WORD_BITS, spelt))
    return best[n]


def check_key(key: str, source: str) -> str:
    """`key` if it is strong enough (see the module's docstring); else SecretError naming
    `source` (never the key, nor its length)."""
    if len(key) < MIN_LENGTH:
        raise SecretError(f"the key from {source} is shorter than {MIN_LENGTH} characters, too easy to guess: {MAKE_ONE}")
    if estimated_bits(key) < MIN_BITS:
        raise SecretError(f"the key from {source} is too easy to guess: it carries less than {MIN_BITS} bits of "
                          "entropy by a pessimistic estimate (repeats, sequences, words and a small set of "
                          f"characters count for little). A key must be random: {MAKE_ONE}")
    return key


def read_key_file(path: Path, what: str, source: str, advice: str, missing: str | None = None,
                  unreadable: str | None = None) -> str:
    """The key held in the file at `path`: refused (SecretError, never showing the key) when the
    file cannot be read (`missing` when it is not there, if given), is not text, is empty, holds a
    weak key (`check_key`), or can be read or written by group or others. `what` names the key
    ("salt", "key", "secret"), `source` the file in messages (`unreadable` when it cannot be read),
    `advice` how to make a good one."""
    unreadable = unreadable or f"the {what} {source}"
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except FileNotFoundError:
        if missing:
            raise SecretError(missing) from None
        raise SecretError(f"cannot read {unreadable} (no such file): {advice}") from None
    except OSError as exc:
        raise SecretError(f"cannot read {unreadable} ({exc.strerror or type(exc).__name__}): {advice}") from None
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretError(f"the {what} {source} is not text: write it as text; {advice}") from None
    if not value:
        raise SecretError(f"the {what} {source} is empty: {advice}")
    check_key(value, source)  # first: a weak key needs replacing, not its permissions fixing
    if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        # Others who can read it can reverse every hash; others who can write it can swap the key.
        raise SecretError(f"the {what} {source} can be read or written by group or others (mode "
                          f"{stat.S_IMODE(mode):04o}): run `chmod 600 {path}` so only its owner can")
    return value


def load_salt() -> str:
    """The release's hashing key: from the file named by DATAFIRST_SALT_FILE, or from
    DATAFIRST_SALT (one of them, not both), checked by `check_key`."""
    value, path = os.environ.get(SALT_ENV), os.environ.get(SALT_FILE_ENV)
    if value and path:
        raise SecretError(f"both {SALT_ENV} and {SALT_FILE_ENV} are set: set only one, so which key is used is never "
                          f"in doubt ({SALT_FILE_ENV}, naming a key file, is the safer)")
    if path:
        # Not shown when unreadable: set by mistake to the key itself, the path would print the secret.
        return read_key_file(Path(path), "salt", f"file {path} (from {SALT_FILE_ENV})",
                             f"{SALT_FILE_ENV} must hold the path of a readable file holding the salt (not the salt "
                             f"itself); {MAKE_ONE}", unreadable=f"the salt file named by {SALT_FILE_ENV}")
    if not value:
        raise SecretError(
            f"no hashing salt: set {SALT_FILE_ENV} to a file holding a random key ({MAKE_ONE}), or {SALT_ENV} to "
            "the key itself. Keep it outside the workspace and the repository; the same key must be used for every "
            "release that researchers will join.")
    return check_key(value, f"environment variable {SALT_ENV}")


def write_new_key(path: Path) -> Path:
    """Write a new random key (KEY_BYTES bytes, as hex) to `path`, readable and writable by its
    owner only from the moment it exists, and only if nothing is at `path` yet: the key is
    written to a private file beside it, then linked into place (a link refuses an existing
    name, so a key in use is never overwritten and a reader never sees half a key)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise SecretError(f"{path} already exists: a key in use is never overwritten (ids made with it would no longer "
                          "carry over); choose another file name")
    if not path.parent.is_dir():
        raise SecretError(f"the folder {path.parent} does not exist: make it first (keep it outside the workspace "
                          "and the repository)")
    staged = path.parent / f".{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise SecretError(f"cannot write a key in {path.parent} ({exc.strerror or type(exc).__name__})") from exc
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(staged, path)
        except FileExistsError:
            raise SecretError(f"{path} already exists: a key in use is never overwritten; choose another file "
                              "name") from None
        except OSError as exc:  # a file system without hard links, say
            raise SecretError(f"cannot write a key at {path} ({exc.strerror or type(exc).__name__})") from exc
    finally:
        staged.unlink()
    return path


def make_demo_salt(path: Path) -> Path:
    """A random key for the demo (never for real data) unless one is already there, made as
    `datafirst key new` makes one, in a folder only its owner can enter."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_new_key(path)
    return path
