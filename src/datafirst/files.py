"""File helpers shared by the pipeline and the world generator."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

import yaml

# libyaml's loader where PyYAML was built with it (its wheels are): the same documents, about
# eight times faster than the pure-Python one. A run reads the contracts and the config dozens
# of times (each stage, each fingerprint).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SAFE_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader, refusing a mapping that gives a key twice: YAML keeps the last copy, so
    a second `link:` block would silently replace the first one's settings."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201 - PyYAML's signature
        if isinstance(node, yaml.MappingNode):
            seen = set()
            # The keys as written: a merge (`<<: *base`) may be overridden, and is not a key.
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"found the key {key!r} a second time (remove or merge one of the two)", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load`, with libyaml where available, and a key given twice in one mapping
    refused (raises yaml.YAMLError as it does)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks so any size fits in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(root: Path, name: str = "SHA256SUMS") -> None:
    """`name` in `root`: the SHA-256 of every file under it (`sha256sum -c` reads it), sorted by path."""
    names = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
    (root / name).write_text("".join(f"{file_sha256(root / n)}  {n}\n" for n in names), encoding="utf-8")


def make_read_only(root: Path) -> None:
    """Take write permission away from `root` and everything under it (a finished package or twin)."""
    for p in [*root.rglob("*"), root]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
