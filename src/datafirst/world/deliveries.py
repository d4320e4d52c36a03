"""Successive deliveries of a world's extracts, for incremental runs and persistent ids.

Data owners send a fresh extract every week or month: since the last one, some person
records are new, some were corrected, some were deleted. From one generated world this
writes two deliveries of the same extract files:

- the earlier one lacks the `new` rows, and holds the `corrected` rows with a recording
  error (the last letter of a name typed twice: the surname, or the last name of a full
  name) that the later one has fixed;
- the later one is the world's extracts without the `deleted` rows.

Only clean rows of person tables are chosen (the truth lists them with their file and row),
so every change is a real new, corrected or deleted record. A row of another table of the
same source that hangs from a chosen row (it holds the row's record id: a magistrates'
offence of its defendant) comes and goes with it: absent from the earlier delivery when its
parent is new, from the later one when its parent is deleted. Other rows are copied as they
are. This is input generation beside the pipeline, like the world itself.
"""

from __future__ import annotations

import csv
import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..sources.contract import Contract, Table, load_contracts

NAME_ROLES = ("surname", "full_name")


def _shipped_contracts() -> list[Contract]:
    """The contracts of the world's sources, as shipped with the package."""
    with resources.as_file(resources.files("datafirst.sources").joinpath("contracts")) as folder:
        return load_contracts(folder)


def _child_tables(contracts: list[Contract]) -> dict[str, tuple[str, list[Table]]]:
    """Person table file -> its (one-column) record id and the CSV tables of its source that
    hold that column: their rows hang from its rows (a magistrates' offence from its defendant)."""
    out: dict[str, tuple[str, list[Table]]] = {}
    for contract in contracts:
        for parent in contract.tables.values():
            if not parent.is_person_table or len(parent.record_id_columns) != 1:
                continue
            column = parent.record_id_columns[0]
            children = [t for t in contract.tables.values() if t.file != parent.file and not t.is_person_table
                        and t.format == "csv" and t.header and column in t.columns]
            if children:
                out[parent.file] = (column, children)
    return out


def _rows_following(path: Path, table: Table, column: str, parents: dict[str, str]) -> dict[int, str]:
    """Row number -> 'new child' or 'deleted child' for each data row of a child table whose
    `column` names a new or deleted parent (rows that do not parse are left alone)."""
    if not parents:
        return {}
    # Split as the bytes are below (at line ends only), then decoded line by line.
    lines = [line.decode(table.encoding, errors="replace") for line in path.read_bytes().splitlines()]
    header = next(csv.reader(lines[:1], delimiter=table.delimiter, quotechar=table.quote), [])
    at = [name.strip().lstrip("\ufeff") for name in header].index(column)
    out = {}
    for row_number, fields in enumerate(csv.reader(lines[1:], delimiter=table.delimiter, quotechar=table.quote), 1):
        kind = parents.get(fields[at].strip()) if len(fields) == len(header) else None
        if kind:
            out[row_number] = f"{kind} child"
    return out


def _name_fields(contracts: list[Contract]) -> dict[str, tuple]:
    """file -> (format, delimiter, column name or JSON path) of a surname-like column."""
    out = {}
    for contract in contracts:
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
    of each kind were made (corrections that could not be typed are left out of the count;
    `new_child_rows` and `deleted_child_rows` are the rows that followed their parent)."""
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
    record_ids = pc.filter(truth["record_id"], keep).to_numpy(zero_copy_only=False)
    chosen: dict[str, dict[int, str]] = {}
    comes_and_goes: dict[str, dict[str, str]] = {}  # person table file -> record id -> new or deleted
    for i in np.flatnonzero(kinds != ""):
        chosen.setdefault(str(files[i]), {})[int(row_numbers[i])] = str(kinds[i])
        if kinds[i] != "corrected":
            comes_and_goes.setdefault(str(files[i]), {})[str(record_ids[i])] = str(kinds[i])
    # The rows of child tables that follow a new or deleted parent, by child file and row.
    contracts = _shipped_contracts()
    for parent_file, (column, children) in _child_tables(contracts).items():
        for child in children:
            follows = _rows_following(world / "extracts" / child.file, child, column,
                                      comes_and_goes.get(parent_file, {}))
            if follows:
                chosen.setdefault(child.file, {}).update(follows)
    fields = _name_fields(contracts)
    counts = {"new": 0, "corrected": 0, "deleted": 0, "new_child_rows": 0, "deleted_child_rows": 0}
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
            if what in ("new", "new child"):
                new_lines.append(line)
                counts["new" if what == "new" else "new_child_rows"] += 1
            elif what in ("deleted", "deleted child"):
                old.append(line)
                counts["deleted" if what == "deleted" else "deleted_child_rows"] += 1
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
