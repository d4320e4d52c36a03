"""A package table as a Stata `.dta` file, labelled from the release's data dictionary.

What Stata users get (docs/deliver.md, "Stata files"):
- names: a column whose name is already a Stata name (at most 32 letters, digits or `_`, not
  starting with a digit, not a reserved word) keeps it; any other gets a made name (`stata_name`),
  and `write_dta` returns every column's name so the package can write the mapping beside the files;
- a variable label per column (its dictionary description, cut to Stata's 80 characters with an
  ellipsis) and a dataset label (the table's name and unit);
- a coded column (declared kind `code` with a finite list of values) as whole numbers 1..n, the
  declared values in sorted order, with the values themselves as value labels: the same code
  gets the same number in every table and delivery with the same declaration; a value the
  declaration does not list (a treatment may make one) gets the next numbers, in sorted order;
- flags (booleans) as 0/1 labelled false/true; dates as Stata dates (%td), timestamps as %tc;
  other numbers as doubles (Stata has no 64-bit integer: whole numbers are exact to 2^53);
- text as Stata strings, strL when longer than Stata's 2,045 bytes (nothing is cut); a list
  (a person's sources) as its items joined with "; ". Stata's missing text is the empty string,
  so an empty value is written as "".

The table is read with pyarrow, converted a column at a time (each converted column replaces its
original, so a table is held about once), then written by pandas' Stata writer (format 118,
Unicode), which packs whole columns with numpy: about twice as fast as pyreadstat's writer, which
walks the rows in Python (the tests read every file back with pyreadstat). `write_all` writes a
package's tables in parallel threads.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

NAME_LIMIT = 32
LABEL_LIMIT = 80
ELLIPSIS = "…"
VALUE_LABEL_LIMIT = 65_536  # the most mappings one Stata value label holds
LIST_SEPARATOR = "; "
STR_BYTES = 2_045  # the longest fixed-width Stata string; longer text is written as strL
FLAG_LABELS = {0: "false", 1: "true"}
_STATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
# Stata's reserved words (help reswords): none may name a variable.
RESERVED = frozenset("""_all _b byte _coef _cons double float if in int long _n _N _pi _pred _rc _skip strL using
    with""".split()) | {f"str{n}" for n in range(1, 2046)}


def stata_name(column: str, limit: int = NAME_LIMIT, hash_chars: int = 4) -> str:
    """The made name of a column whose own name is not a Stata name (or is longer than `limit`):
    every character other than a letter, digit or `_` becomes `_`, a `v` goes in front of a
    leading digit, and the result is cut to leave room for `_` and the first `hash_chars` hex
    digits of the SHA-256 of the column's full name, which are added. The same column always
    gets the same name; two long names sharing their first characters differ by the digest."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", column)
    if not clean or clean[0].isdigit():
        clean = "v" + clean
    digest = hashlib.sha256(column.encode("utf-8")).hexdigest()[:hash_chars]
    return f"{clean[:limit - hash_chars - 1]}_{digest}"


def stata_names(columns: list[str], labelled: Collection[str] = ()) -> dict[str, str]:
    """Each column's Stata name (see the module docstring), unique in the table: a column whose
    name is a Stata name keeps it; the others get `stata_name`, with a longer digest in the
    (rare) case that one would equal another column's name. A `labelled` column (one with value
    labels) has a shorter limit, room for its value label's name, which some writers (pyreadstat)
    make from the column's name and a counter (`outcome3`), within Stata's limit too."""
    room = len(str(max(len(labelled) - 1, 0)))
    limit = {c: NAME_LIMIT - room if c in labelled else NAME_LIMIT for c in columns}
    kept = {c: c for c in columns if _STATA_NAME.match(c) and len(c) <= limit[c] and c not in RESERVED}
    made = [c for c in columns if c not in kept]
    for chars in range(4, 25):
        names = {c: stata_name(c, limit[c], chars) for c in made}
        taken = [*kept.values(), *names.values()]
        if len(set(taken)) == len(taken):
            return {c: kept.get(c) or names[c] for c in columns}
    raise ValueError(f"no unique Stata names for the columns {made}")  # two columns of one name


def cut_label(text: str) -> str:
    """A label within Stata's 80 characters: a longer text is cut and ends with an ellipsis."""
    text = " ".join((text or "").split())
    return text if len(text) <= LABEL_LIMIT else text[:LABEL_LIMIT - 1].rstrip() + ELLIPSIS


def _code_values(column: dict) -> list[str] | None:
    """The declared values of a coded column, or None when it is not coded (not a code, or its
    values are a pattern rather than a list, or too many for one value label)."""
    declared = column.get("declared") or {}
    if declared.get("kind") != "code":
        return None
    values = declared.get("values") or column.get("allowed_values")
    if not values or len(values) > VALUE_LABEL_LIMIT:
        return None
    return sorted({str(v) for v in values})


def _coded(values: pa.ChunkedArray, declared: list[str]) -> tuple[pa.ChunkedArray, dict[float, str]]:
    """A text column as the numbers of its values: declared values 1..n in sorted order, values
    present but not declared after them, in sorted order; empty stays empty (a Stata missing)."""
    text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    present = pc.unique(text).drop_null().to_pylist()
    order = declared + sorted(set(present) - set(declared))
    codes = pc.add(pc.index_in(text, value_set=pa.array(order, pa.string())), 1)
    return pc.cast(codes, pa.float64()), {float(i): v for i, v in enumerate(order, 1)}


def _converted(values: pa.ChunkedArray, column: dict) -> tuple[pa.ChunkedArray, dict[float, str] | None]:
    """One column as Stata holds it, with its value labels (None when it has none)."""
    kind = values.type
    declared = _code_values(column)
    if declared is not None and not pa.types.is_list(kind) and not pa.types.is_large_list(kind):
        return _coded(values, declared)
    if pa.types.is_boolean(kind):
        return pc.cast(values, pa.float64()), {float(k): v for k, v in FLAG_LABELS.items()}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        text = pc.binary_join(pc.cast(values, pa.list_(pa.string())), LIST_SEPARATOR)
        return pc.fill_null(text, ""), None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.fill_null(pc.cast(values, pa.string()), ""), None
    if pa.types.is_date(kind):
        return pc.cast(values, pa.date32()), None
    if pa.types.is_timestamp(kind):
        return pc.cast(values, pa.timestamp("us")), None  # with a time zone: the UTC time
    if pa.types.is_decimal(kind):  # through its text: Arrow's direct cast is off in the last digit (592.42)
        return pc.cast(pc.cast(values, pa.string()), pa.float64()), None
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return pc.cast(values, pa.float64()), None
    # Anything else (a time of day, a struct): its text.
    return pc.fill_null(pc.cast(values, pa.string()), ""), None


def _labelled(kind: pa.DataType, column: dict) -> bool:
    """Whether a column gets value labels: a flag, or a coded column (not a list)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return False
    return pa.types.is_boolean(kind) or _code_values(column) is not None


def write_dta(parquet: Path, out: Path, table: dict) -> dict[str, str]:
    """Write `parquet` as the Stata file `out`, labelled from `table` (its entry of a release's
    dictionary.json: name, unit, columns with name, description and declaration). Returns each
    column's Stata name, in the file's column order."""
    data = pq.read_table(parquet)
    described = {c["name"]: c for c in table.get("columns", [])}
    names = stata_names(data.column_names, [f.name for f in data.schema
                                            if _labelled(f.type, described.get(f.name, {}))])
    value_labels: dict[str, dict[float, str]] = {}
    for i, column in enumerate(data.column_names):
        converted, labels = _converted(data.column(i), described.get(column, {}))
        data = data.set_column(i, names[column], converted)  # the original column is let go here
        if labels is not None:
            value_labels[names[column]] = labels
    dates = {f.name: "td" for f in data.schema if pa.types.is_date(f.type)}
    dates |= {f.name: "tc" for f in data.schema if pa.types.is_timestamp(f.type)}
    long_text = [f.name for f in data.schema if pa.types.is_string(f.type)
                 and (pc.max(pc.binary_length(data.column(f.name))).as_py() or 0) > STR_BYTES]
    # numpy columns (text as Python strings): pandas' writer packs each column with numpy. Dates
    # as datetime64, which it writes as Stata dates.
    frame = data.to_pandas(types_mapper={}.get, date_as_object=False, self_destruct=True, split_blocks=True)
    del data
    labels = {names[c]: cut_label(described[c].get("description", "")) for c in names if c in described}
    title = cut_label(f"{table.get('name', parquet.stem)}: {table.get('unit', '')}".rstrip(": "))
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_stata(out, write_index=False, version=118, convert_dates=dates, convert_strl=long_text,
                   variable_labels={c: t for c, t in labels.items() if t}, value_labels=value_labels,
                   data_label=title)
    return names


def write_all(jobs: list[tuple[Path, Path, dict]], workers: int | None = None) -> list[dict[str, str]]:
    """`write_dta` for each (parquet, out, table), in threads: numpy and file writes let go of the
    GIL, so on the 1M world's package two threads took 9.5 s where one took about 11 s. Threads,
    not processes: a process pool would start by importing the caller's main module, which breaks
    (or re-runs) a script that has no `if __name__ == "__main__"` guard."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        return [write_dta(*job) for job in jobs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(write_dta, *zip(*jobs)))
