"""File helpers shared by the pipeline and the world generator."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

# libyaml's loader where PyYAML was built with it (its wheels are): the same documents, about
# eight times faster than the pure-Python one. A run reads the contracts and the config dozens
# of times (each stage, each fingerprint).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load`, with libyaml where available (raises yaml.YAMLError as it does)."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks so any size fits in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
