"""Successive deliveries of a world's extracts, for incremental runs and persistent ids.

Data owners send a fresh extract every week or month: since the last one, some person
records are new, some were corrected, some were deleted. From one generated world this
writes two deliveries of the same extract files:

- the earlier one lacks the `new` rows, and holds the `corrected` rows with a recording
  error (the last letter of a name typed twice: the surname, or the last name of a full
  name) that the later one has fixed;
- the later one is the world's extracts without the `deleted` rows.

Only clean rows of person tables are chosen (the truth lists them with their file and row),
so every change is a real new, corrected or deleted record; other tables are copied as
they are. This is input generation beside the pipeline, like the world itself.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..sources.contract import load_contract

NAME_ROLES = ("surname", "full_name")


def _name_fields() -> dict[str, tuple]:
    """file -> (format, delimiter, column name or JSON path) of a surname-like column."""
    out = {}
    for item in resources.files("datafirst.sources").joinpath("contracts").iterdir():
        if not item.name.endswith(".yaml"):
            continue
        with resources.as_file(item) as path:
            contract = load_contract(path)
        for table in contract.tables.values():
            for name, col in table.columns.items():
                if col.role in NAME_ROLES and table.file not in out and not table.unnest:
                    out[table.file] = (table.format, table.delimiter, col.path or name)
    return out


def _typo(value: bytes) -> bytes | None:
    """The surname with its last letter typed twice; None when that letter is not plain ASCII."""
    stripped = value.rstrip(b'"')
    if not stripped or not (65 <= stripped[-1] <= 90 or 97 <= stripped[-1] <= 122):
        return None
    return stripped + stripped[-1:] + value[len(stripped):]


def _misrecord(line: bytes, fmt: str, delimiter: str, field: str, header: list[bytes] | None) -> bytes | None:
    end = len(line) - len(line.rstrip(b"\r\n"))
    body, eol = line[:len(line) - end], line[len(line) - end:]
    if fmt == "jsonl":
        record = json.loads(body)
        keys = field.removeprefix("$.").split(".")
        node = record
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get(keys[-1]), str):
            return None
        changed = _typo(node[keys[-1]].encode("utf-8"))
        if changed is None:
            return None
        node[keys[-1]] = changed.decode("utf-8")
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + eol
    parts = body.split(delimiter.encode())
    if header is None or len(parts) != len(header) or field.encode() not in header:
        return None
    i = header.index(field.encode())
    changed = _typo(parts[i])
    if changed is None:
        return None
    parts[i] = changed
    return delimiter.encode().join(parts) + eol


def write_deliveries(world: Path, earlier: Path, later: Path, *, new: float = 0.01, corrected: float = 0.002,
                     deleted: float = 0.002, seed: int = 0) -> dict[str, int]:
    """Write the earlier and later deliveries of `world`'s extracts; returns how many rows
    of each kind were made (corrections that could not be typed are left out of the count)."""
    world, earlier, later = Path(world), Path(earlier), Path(later)
    truth = pq.read_table(world / "truth" / "records.parquet", columns=["file", "record_id", "row_number", "defect"])
    # Clean rows only, and not a row that has an exact duplicate elsewhere in its file: the twin
    # would stay behind and the change would not happen.
    twinned = pc.is_in(truth["record_id"], value_set=pc.unique(
        pc.filter(truth["record_id"], pc.equal(truth["defect"], "duplicate_row"))))
    keep = pc.and_(pc.equal(truth["defect"], ""), pc.invert(twinned))
    files = pc.filter(truth["file"], keep).to_numpy(zero_copy_only=False)
    row_numbers = pc.filter(truth["row_number"], keep).to_numpy()
    draw = np.random.default_rng(seed).random(len(files))
    kinds = np.select([draw < new, draw < new + corrected, draw < new + corrected + deleted],
                      ["new", "corrected", "deleted"], "")
    chosen: dict[str, dict[int, str]] = {}
    for i in np.flatnonzero(kinds != ""):
        chosen.setdefault(str(files[i]), {})[int(row_numbers[i])] = str(kinds[i])
    fields = _name_fields()
    counts = {"new": 0, "corrected": 0, "deleted": 0}
    for root in (earlier, later):
        if root.exists():
            raise FileExistsError(f"{root} already exists; give a new folder")
    for src in sorted((world / "extracts").rglob("*")):
        if not src.is_file():
            continue
        rel = src.relative_to(world / "extracts").as_posix()
        for root in (earlier, later):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
        by_row = chosen.get(rel)
        if not by_row:
            shutil.copyfile(src, earlier / rel)
            shutil.copyfile(src, later / rel)
            continue
        fmt, delimiter, field = fields.get(rel, ("jsonl" if rel.endswith(".jsonl") else "csv", ",", None))
        lines = src.read_bytes().splitlines(keepends=True)
        has_header = fmt != "jsonl"
        header = lines[0].rstrip(b"\r\n").lstrip(b"\xef\xbb\xbf").split(delimiter.encode()) if has_header else None
        old, new_lines = [], []
        for i, line in enumerate(lines):
            what = by_row.get(i if has_header else i + 1, "")
            if what == "new":
                new_lines.append(line)
                counts["new"] += 1
            elif what == "deleted":
                old.append(line)
                counts["deleted"] += 1
            elif what == "corrected":
                typed = _misrecord(line, fmt, delimiter, field, header) if field else None
                old.append(typed if typed is not None else line)
                new_lines.append(line)
                counts["corrected"] += typed is not None
            else:
                old.append(line)
                new_lines.append(line)
        (earlier / rel).write_bytes(b"".join(old))
        (later / rel).write_bytes(b"".join(new_lines))
    return counts
