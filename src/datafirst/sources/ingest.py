"""Ingest: load every source's extracts under its contract into the landed zone.

Each file is read as raw lines (Arrow, in C++), then parsed, typed and checked in the engine
with SQL, so row numbers are exact and no row is ever lost: a row that breaks the contract
goes to quarantine with its file, row, column and reason, and for every table
read = landed + quarantined. A file that cannot be read at all stops the run with a message
naming the file and what to do, and the landed zone is replaced only when every table has
loaded (all or nothing). A table whose file, contract and loader are unchanged since the last
ingest keeps its landed rows and quarantine as they were, unread (sources deliver on their
own schedules).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..engine import Engine
from ..engine.sql import sql_string
from ..workspace import Workspace, holding_lock, replace_folder
from .contract import Column, Contract, Table, load_contracts

LANDED = "landed"
QUARANTINE_FILE = "_quarantine.parquet"
ACCOUNTING_FILE = "_accounting.parquet"


class IngestError(Exception):
    """A file that cannot be read at all; the message names it and says what to do."""


@dataclass
class TableLoad:
    source: str
    table: str
    file: str
    sha256: str
    read: int
    landed: int
    quarantined: int
    spec_sha256: str = ""
    loaded_at: str = ""
    reused: bool = False  # unchanged since the last ingest: its landed rows and quarantine were kept
    last_line_cut: bool = False  # the file ends in a line with no line break that could not be loaded

    @property
    def balanced(self) -> bool:
        return self.read == self.landed + self.quarantined


# Windows-1252 leaves five bytes undefined; decode them to U+FFFD so the row can be
# quarantined with a reason instead of failing the whole file.
def _lenient_cp1252(name: str) -> codecs.CodecInfo | None:
    if name != "datafirst_cp1252":
        return None
    base = codecs.lookup("cp1252")

    class Decoder(codecs.IncrementalDecoder):
        def decode(self, data: bytes, final: bool = False) -> str:  # noqa: ARG002
            return bytes(data).decode("cp1252", errors="replace")

    return codecs.CodecInfo(base.encode, lambda b, errors="replace": (b.decode("cp1252", "replace"), len(b)),
                            incrementaldecoder=Decoder, name="datafirst_cp1252")


codecs.register(_lenient_cp1252)
ARROW_ENCODING = {"utf-8": "utf8", "cp1252": "datafirst_cp1252", "latin-1": "latin-1"}


@dataclass
class Extract:
    """A file's bytes, read once: its SHA-256 and the lines loaded are both taken from these bytes,
    so the fingerprint recorded for a landed row describes exactly what was loaded, even when the
    file is replaced while it is read (a delivery landing mid-ingest)."""

    sha256: str
    text: bytes  # the content, decompressed when the file is .gz

    def may_hold_control_characters(self, encoding: str) -> bool:
        """Whether any line may hold a control character (see CONTROL_CHARACTERS): a byte of one,
        the first byte of a C1 control's UTF-8 (0xC2, which also starts '£' or a non-breaking
        space), a C1 byte in Latin-1, or a backslash (a JSON escape). Tested on the whole file at
        once, which costs a tenth of testing each line in the engine; most files hold none, and
        their lines are then not tested at all."""
        return bool(self.text.translate(None, _NOT_CONTROL_SIGNS[encoding]))

    @property
    def last_line_open(self) -> bool:
        """Whether the last line has no line break after it: the file may have been cut there."""
        return bool(self.text) and not self.text.endswith((b"\n", b"\r"))


_CONTROL_SIGNS = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, ord("\\")])
_NOT_CONTROL_SIGNS = {
    encoding: bytes(b for b in range(256) if b not in _CONTROL_SIGNS + extra)
    for encoding, extra in (("utf-8", b"\xc2"), ("latin-1", bytes(range(0x80, 0xA0))), ("cp1252", b""))
}


def read_extract(path: Path) -> Extract:
    """An extract's bytes and their SHA-256 (of the file as stored, compressed or not)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        text = gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError, zlib.error) as exc:
        raise _unreadable(path, exc) from exc
    return Extract(hashlib.sha256(data).hexdigest(), text)


# Arrow's CSV reader splits lines into "fields" at a byte; one that occurs nowhere in the file
# leaves each line whole. Control bytes almost never occur in text; when one does, the next is tried.
_LINE_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c", "\x01")
# Arrow reads a file in blocks of this size, several at once; a line longer than a block (a
# 17 MiB line) cannot be split into lines that way, and the file is read again in larger blocks.
BLOCK_SIZE = 1 << 24
MAX_LISTED_CODES = 12  # a quarantine reason lists the allowed values of a code list up to this long
LARGEST_BLOCK = (1 << 31) - 1  # Arrow's limit


def read_lines(extract: Extract, path: Path, encoding: str) -> pa.Table:
    """Every line of an extract, as bytes, with its 1-based number (`path` names it in errors)."""
    block_size = BLOCK_SIZE
    separators = iter(_LINE_SEPARATORS)
    separator = next(separators)
    while True:
        try:
            table = pacsv.read_csv(
                pa.BufferReader(extract.text),
                read_options=pacsv.ReadOptions(column_names=["line"], encoding=ARROW_ENCODING[encoding],
                                               block_size=block_size),
                parse_options=pacsv.ParseOptions(delimiter=separator, quote_char=False, escape_char=False,
                                                 newlines_in_values=False, ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(column_types={"line": pa.binary()}, null_values=[],
                                                     strings_can_be_null=False, quoted_strings_can_be_null=False),
            )
            break
        except pa.ArrowInvalid as exc:
            if "Expected 1 columns" in str(exc) and separator != _LINE_SEPARATORS[-1]:
                separator = next(separators)  # the separator occurs in the file
                continue
            if "straddl" in str(exc) and block_size < LARGEST_BLOCK:
                # Transcoding can make the text up to three times its bytes: four times is always a whole block.
                block_size = min(max(block_size * 4, 4 * len(extract.text) + 1), LARGEST_BLOCK)
                continue
            if "straddl" in str(exc):
                raise IngestError(f"cannot read {path}: it has a line longer than 2 GiB, which no record is; "
                                  "check the file is line-delimited text, and export it again") from exc
            raise _unreadable(path, exc) from exc
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise _unreadable(path, exc) from exc
    n = table.num_rows
    return pa.table({"line_no": pa.array(range(1, n + 1), type=pa.int64()), "line": table.column("line")})


def _unreadable(path: Path, exc: Exception) -> IngestError:
    hint = ("the compressed file is truncated or corrupt; export it again" if path.suffix == ".gz"
            else "check the file is text in the contract's encoding")
    return IngestError(f"cannot read {path}: {exc}; {hint}")


def _split_header(first_line: bytes, spec: Table) -> list[str]:
    text = first_line.decode("utf-8", errors="replace")  # read_lines has transcoded it already
    text = text.lstrip("\ufeff").rstrip("\r\n")
    # Spaces around header names are common in exports and carry no meaning.
    return [name.strip() for name in next(csv.reader(io.StringIO(text), delimiter=spec.delimiter, quotechar=spec.quote), [])]


def _check_header(path: Path, name: str, spec: Table, contract: Contract, lines: pa.Table) -> None:
    if lines.num_rows == 0:
        raise IngestError(f"{path} is empty; a {contract.source} extract needs at least a header line. "
                          "Check the export, or remove the table from the contract")
    found = _split_header(lines.column("line")[0].as_py(), spec)
    expected = list(spec.columns)
    if found == expected:
        return
    msg = [f"the header of {path} does not match contract {contract.path or contract.source} "
           f"(table {name!r}, file {spec.file!r}).",
           f"  expected: {spec.delimiter.join(expected)!r}", f"  found:    {spec.delimiter.join(found)!r}"]
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing:
        msg.append(f"  missing columns: {missing}")
    if extra:
        msg.append(f"  unexpected columns: {extra}")
    twice = sorted({c for c in found if found.count(c) > 1})
    if twice:
        msg.append(f"  named more than once: {twice}")
    elif not missing and not extra:
        msg.append("  the columns are all there but in another order")
    first = lines.column("line")[0].as_py()
    if b"\x00" in first or first.startswith((b"\xff\xfe", b"\xfe\xff", "\ufffd\ufffd".encode())):
        msg.append("  the file looks like UTF-16 (zero bytes between the letters): export it as UTF-8, or as the "
                   f"contract's encoding ({spec.encoding})")
    elif len(found) == 1:
        for d in (",", ";", "|", "\t"):
            if d != spec.delimiter and d in found[0]:
                msg.append(f"  the file looks delimited by {d!r}, the contract says {spec.delimiter!r}: fix the "
                           "contract's `delimiter`")
                break
    msg.append("Fix the contract (columns, delimiter) or ask for the extract in its agreed shape.")
    raise IngestError("\n".join(msg))


# --- SQL builders -------------------------------------------------------------------------

def _csv_field_pattern(delim: str, quote: str) -> str:
    """One match per field of a line that has been given a leading delimiter: every match
    then consumes its delimiter, so empty fields (even the first) are never skipped."""
    d, q = re.escape(delim), re.escape(quote)
    return f"{d}({q}(?:[^{q}]|{q}{q})*{q}|[^{d}]*)"


def _unquote(expr: str, quote: str) -> str:
    q = quote.replace("'", "''")
    return (f"CASE WHEN length({expr}) >= 2 AND starts_with({expr}, '{q}') AND ends_with({expr}, '{q}') "
            f"THEN replace(substr({expr}, 2, length({expr}) - 2), '{q}{q}', '{q}') ELSE {expr} END")


def _json_value(path: str, index: int) -> str:
    """A JSON value as text, from the line's values parsed once (`_json_values`, see
    `_json_parsed`); arrays of strings are joined with spaces (middle names). An array's text
    starts with '[', so only such values (rare otherwise) have the line parsed again for the type;
    an array's elements are then read from its own text (the value), not from the line."""
    value = f"_json_values[{index}]"
    return (f"CASE WHEN starts_with({value}, '[') THEN "
            f"CASE WHEN json_type(_text, {sql_string(path)}) = 'ARRAY' "
            f"THEN nullif(array_to_string(json_extract_string({value}, '$[*]'), ' '), '') ELSE {value} END "
            f"ELSE {value} END")


def _json_kind(json_type: str) -> str:
    """What a JSON value is, in words, from its json_type (DuckDB's or Spark's names)."""
    return (f"CASE {json_type} WHEN 'OBJECT' THEN 'an object' WHEN 'ARRAY' THEN 'an array' "
            "WHEN 'BOOLEAN' THEN 'true or false' WHEN 'VARCHAR' THEN 'a string' WHEN 'STRING' THEN 'a string' "
            "WHEN 'NULL' THEN 'null' WHEN 'VOID' THEN 'null' ELSE 'a number' END")


# json_type of an array, and of a JSON null (DuckDB NULL, Spark VOID: no value, as an absent key):
ARRAY_OR_NOTHING = "'ARRAY', 'NULL', 'VOID'"


def _json_parsed(source: str, paths: list[str]) -> str:
    """`source` with the line's validity and the values at every path, each line parsed once for
    all paths (a function call per path parses the line again every time). Guarded by
    json_valid: DuckDB's JSON functions raise on malformed input, and a malformed line must
    reach quarantine, not stop the run."""
    listed = "[" + ", ".join(sql_string(p) for p in paths) + "]"
    return (f"SELECT *, CASE WHEN _json_ok THEN json_extract_string(_text, {listed}) END AS _json_values "
            f"FROM (SELECT *, coalesce(json_valid(_text), false) AS _json_ok FROM ({source}))")


# What a number cell may hold. A cast alone accepts too much, and differently per engine:
# DuckDB casts '1.5' to the integer 2, '1e3' to 1000 and '1_000' to 1000, where Spark gives NULL.
# A value that is not plainly written is quarantined, never silently rounded or reinterpreted.
# A whole number may carry a zero fraction ('12.0', as spreadsheets write it); a decimal may
# have at most the four places it is stored with (and any zeros after them).
WHOLE_NUMBER = r"^\s*[+-]?[0-9]+(?:[.]0*)?\s*$"
DECIMAL_NUMBER = r"^\s*[+-]?(?:[0-9]+(?:[.][0-9]{0,4}0*)?|[.][0-9]{1,4}0*)\s*$"
# What is removed before the cast: whitespace that trim() leaves (tabs), and a zero fraction.
AROUND_WHOLE_NUMBER = r"^\s+|[.]0*\s*$|\s+$"
AROUND_NUMBER = r"^\s+|\s+$"


def _typed(raw: str, col: Column) -> str:
    if col.type == "string":
        return raw
    text = f"CAST({raw} AS VARCHAR)"  # a JSON element's #index is a number already
    if col.type == "integer":
        return (f"TRY_CAST(CASE WHEN regexp_matches({text}, {sql_string(WHOLE_NUMBER)}) "
                f"THEN regexp_replace({text}, {sql_string(AROUND_WHOLE_NUMBER)}, '', 'g') END AS BIGINT)")
    if col.type == "decimal":
        return (f"TRY_CAST(CASE WHEN regexp_matches({text}, {sql_string(DECIMAL_NUMBER)}) "
                f"THEN regexp_replace({text}, {sql_string(AROUND_NUMBER)}, '', 'g') END AS DECIMAL(18, 4))")
    if col.type == "date":
        # Each format in turn. DuckDB's strptime reads '%Y' from any number of digits, so '1/2/85'
        # in a '%d/%m/%Y' column would land as the year 85 (Spark rejects it): under '%Y' a year
        # before 1000 does not fit, and the next format (a '%y' one, say) is tried.
        tries = []
        for fmt in col.formats:
            parsed = f"try_strptime({raw}, {sql_string(fmt)})"
            tries.append(f"CASE WHEN year({parsed}) >= 1000 THEN {parsed} END" if "%Y" in fmt else parsed)
        return f"CAST({tries[0] if len(tries) == 1 else 'coalesce(' + ', '.join(tries) + ')'} AS DATE)"
    trues = ", ".join(sql_string(v.lower()) for v in col.true_values)
    falses = ", ".join(sql_string(v.lower()) for v in col.false_values)
    return f"CASE WHEN lower({raw}) IN ({trues}) THEN true WHEN lower({raw}) IN ({falses}) THEN false END"


def _type_reason(col: Column) -> str:
    if col.type == "date":
        return f"not a valid date in format {' or '.join(col.formats)}"
    return {"integer": "not a whole number", "decimal": "not a number with at most 4 decimal places",
            "boolean": f"not one of {col.true_values + col.false_values}"}.get(col.type, "invalid")


def _bound(value: float | date, col: Column) -> tuple[str, str]:
    """A contract's `min` or `max` as SQL, and as a person would write it."""
    if col.type == "date":
        return f"DATE '{value.isoformat()}'", value.isoformat()
    text = str(int(value)) if float(value).is_integer() else repr(float(value))
    return text, text


def _in_range(typed: str, col: Column) -> str | None:
    """SQL true when a typed value lies within the column's `min` and `max` (None: no range)."""
    tests = []
    if col.min is not None:
        tests.append(f"{typed} >= {_bound(col.min, col)[0]}")
    if col.max is not None:
        tests.append(f"{typed} <= {_bound(col.max, col)[0]}")
    return " AND ".join(tests) or None


def _range_reason(col: Column) -> str:
    low = _bound(col.min, col)[1] if col.min is not None else None
    high = _bound(col.max, col)[1] if col.max is not None else None
    if low is not None and high is not None:
        return f"outside the range {low} to {high}"
    return f"below the minimum {low}" if low is not None else f"above the maximum {high}"


# Control characters, which no text value should hold: C0 controls but tab, line feed and
# carriage return (a JSON value may hold those), DEL and the C1 controls. A NUL makes text
# files of a release binary; C1 controls are usually Windows-1252 text read as Latin-1.
CONTROL_CHARACTERS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]"
# A line that can hold one: the character itself, or a JSON escape of one (\u0000, \b, \f). Tested
# once per line, so a value is searched only in the rare lines that match.
CONTROL_IN_LINE = CONTROL_CHARACTERS + r"|\\u00(?:[01]|7[fF]|[89])|\\[bf]"


def _problem(cond: str, column: str | None, reason_sql: str) -> str:
    col = sql_string(column) if column else "NULL::VARCHAR"
    return f"CASE WHEN {cond} THEN {{'column': {col}, 'reason': {reason_sql}}} END"


# A line of nothing but spaces (what trim() removes: the Unicode space separators). A pattern
# tests it without the copy of every line that trim() makes, a fifth of a large table's parsing.
BLANK = "regexp_matches(_text, '^\\p{Zs}*$')"
# Valid JSON that is an object: it starts with a brace (after any white space), which an anchored
# pattern tests without parsing the line again.
JSON_OBJECT = "regexp_matches(_text, '^\\s*[{]')"


def _stage_sql(spec: Table, lines_view: str, header_lines: int, parent_problems: str | None = None,
               open_line: int | None = None, controls: bool = True) -> str:
    """SQL that parses, types and checks every data row. `parent_problems` (row_number, reason)
    holds the quarantined rows of an unnested table's parent: their elements are quarantined too.
    `open_line`: the file's last line when no line break follows it (the file may be cut there).
    `controls`: whether a line may hold a control character (`Extract.may_hold_control_characters`)."""
    cols = list(spec.columns.items())
    enc_problem = ("bytes that are not valid UTF-8" if spec.encoding == "utf-8"
                   else f"bytes not defined in {spec.encoding}")
    base_checks = [
        _problem("_text IS NULL OR contains(_text, '\ufffd')", None, sql_string(enc_problem)),
        _problem(f"_text IS NOT NULL AND {BLANK}", None, "'blank line'"),
    ]
    if spec.format == "csv":
        pattern = sql_string(_csv_field_pattern(spec.delimiter, spec.quote))
        n = len(cols)
        # Lines without a quote character split exactly as a plain split does, several times faster
        # than the quote-aware pattern, which is kept for the lines that need it.
        parsed = (f"CASE WHEN contains(_text, {sql_string(spec.quote)}) "
                  f"THEN regexp_extract_all({sql_string(spec.delimiter)} || _text, {pattern}, 1) "
                  f"ELSE string_split(_text, {sql_string(spec.delimiter)}) END")
        raw = {name: f"nullif(trim(CASE WHEN _quoted THEN {_unquote(f'_fields[{i + 1}]', spec.quote)} ELSE _fields[{i + 1}] END), '')" for i, (name, _) in enumerate(cols)}
        q = sql_string(spec.quote)
        odd_quotes = f"(length(_text) - length(replace(_text, {q}, ''))) % 2 = 1"
        # The pattern skips text between its matches, so a quote followed by more text
        # ('"O"Brien"') would cut a value short: the fields, joined again, must be the line. A
        # quote left open ('"unclosed,...') is read as plain text by the pattern, so the line
        # must also hold its quotes in pairs.
        malformed = f"_quoted AND (array_to_string(_fields, {sql_string(spec.delimiter)}) <> _text OR {odd_quotes})"
        shape_ok = f"array_length(_fields) = {n} AND NOT ({malformed})"
        unclosed = (f"CASE WHEN {odd_quotes} THEN "
                    f"{sql_string(f': a value opened with {spec.quote} is not closed on this line (a line break inside a value? export values without line breaks)')} "
                    "ELSE '' END")
        base_checks.append(_problem(f"array_length(_fields) <> {n} AND NOT {BLANK}", None,
                                    f"'expected {n} fields, found ' || array_length(_fields) || {unclosed}"))
        if open_line is not None:
            # A file cut just after a delimiter leaves a row whose last field looks empty.
            base_checks.append(_problem(
                f"_row_number = {open_line - header_lines} AND ends_with(_text, {sql_string(spec.delimiter)})", None,
                sql_string(f"cut short: the file ends on this row, just after a {spec.delimiter!r} and without a "
                           f"line break, so its last field is missing (expected {n} fields); export the file again")))
        base_checks.append(_problem(f"array_length(_fields) = {n} AND {malformed}", None,
                                    sql_string(f"malformed quoting: a field that starts with {spec.quote} must end "
                                               f"with {spec.quote} before the next {spec.delimiter!r} (write a quote "
                                               f"inside a field as {spec.quote * 2})")))
        source = (f"SELECT line_no - {header_lines} AS _row_number, NULL::BIGINT AS _element_index, _line, _text, "
                  f"CASE WHEN _text IS NOT NULL THEN {parsed} END AS _fields, contains(_text, {sql_string(spec.quote)}) AS _quoted FROM ("
                  f"SELECT line_no, line AS _line, TRY(decode(line)) AS _text FROM {lines_view} WHERE line_no > {header_lines})")
    else:
        shape_ok = "_json_ok"
        base_checks.append(_problem(f"NOT _json_ok AND _text IS NOT NULL AND NOT {BLANK}", None,
                                    "'not valid JSON (a record cut short or malformed)'"))
        if not spec.unnest:
            # Valid JSON that is an array, a string, a number or null has no fields to read: it is
            # said to be what it is, not taken for a record without an id.
            shape_ok = f"_json_ok AND {JSON_OBJECT}"
            kind = _json_kind("json_type(_text, '$')")  # with its path: Spark's translation needs one
            base_checks.append(_problem(f"_json_ok AND NOT {JSON_OBJECT}", None,
                                        f"'not a JSON object: ' || {kind} || "
                                        "' (each line must be one JSON object)'"))
        decoded = (f"SELECT line_no AS _row_number, line AS _line, TRY(decode(line)) AS _text, NULL::BIGINT AS _element_index "
                   f"FROM {lines_view}")
        if spec.unnest:
            # One row per element of the array, in valid JSON lines only (a broken line is
            # quarantined once, as its parent table's row). The parent's id and the line's digest
            # are worked out once per line, not once per element from the whole line again; an
            # element is text, so the line's bytes are not carried with it (see the end).
            parent_value = (f"json_extract_string(_text, {sql_string(spec.columns[spec.parent_id].path)})"
                            if spec.parent_id else "NULL::VARCHAR")
            # A line without the array has no elements; one whose value there is not an array (an
            # object, a string) is one row (index 0 below, then none), quarantined, rather than no
            # row and no trace. The line is parsed once: the type and the elements are read from
            # the value at the path.
            # (Spark reads a string there as its text, not as JSON: its type is then none.)
            holders = (f"SELECT _row_number, _line_md5, _parent_value, _holder, "
                       f"CASE WHEN _holder IS NOT NULL THEN coalesce(json_type(_holder, '$'), 'VARCHAR') END AS _holder_type, "
                       f"json_extract(_holder, '$[*]') AS _items FROM ("
                       f"SELECT line_no AS _row_number, md5(_line) AS _line_md5, {parent_value} AS _parent_value, "
                       f"json_extract(_text, {sql_string(spec.unnest)}) AS _holder FROM ("
                       f"SELECT line_no, line AS _line, TRY(decode(line)) AS _text FROM {lines_view}) "
                       f"WHERE _text IS NOT NULL AND json_valid(_text))")
            decoded = (
                f"SELECT _row_number, CAST(NULL AS BLOB) AS _line, _line_md5, "
                f"CAST(CASE WHEN _element_index = 0 THEN _holder ELSE _items[_element_index] END AS VARCHAR) AS _text, "
                f"_parent_value, CAST(nullif(_element_index, 0) AS BIGINT) AS _element_index, _holder_type FROM ("
                f"SELECT _row_number, _line_md5, _parent_value, _holder, _holder_type, _items, "
                f"unnest(CASE WHEN _holder_type = 'ARRAY' THEN generate_series(1, array_length(_items)) "
                f"ELSE [0] END) AS _element_index FROM ({holders}) "
                f"WHERE (_holder_type = 'ARRAY' AND array_length(_items) > 0) "
                f"OR _holder_type NOT IN ({ARRAY_OR_NOTHING}))")
            if parent_problems:
                # An element of a quarantined row must not land on its own: it would hang from a
                # parent that is not there, or from another row's parent with the same id.
                decoded = (f"SELECT d.*, p.reason AS _parent_problem FROM ({decoded}) d "
                           f"LEFT JOIN {parent_problems} p ON p.row_number = d._row_number")
                base_checks.insert(0, _problem("_parent_problem IS NOT NULL", None,
                                               "'its parent row was quarantined: ' || _parent_problem"))
            where = sql_string(spec.unnest)
            found = _json_kind("_holder_type")
            base_checks.insert(0, _problem("_holder_type <> 'ARRAY'", None,
                                           f"{where} || ' holds ' || {found} || ', not an array (one row per "
                                           "element needs an array)'"))
            base_checks.insert(1, _problem("_holder_type = 'ARRAY' AND coalesce(json_type(_text, '$'), '') <> 'OBJECT'",
                                           None, f"'an element of ' || {where} || ' is not a JSON object: ' || _text"))
        paths = [c.path for name, c in cols if c.path != "#index" and not (spec.unnest and name == spec.parent_id)]
        raw = {}
        for name, c in cols:
            if c.path == "#index":
                raw[name] = "_element_index"
            elif spec.unnest and name == spec.parent_id:
                raw[name] = "nullif(trim(_parent_value), '')"
            else:
                raw[name] = f"nullif(trim({_json_value(c.path, paths.index(c.path) + 1)}), '')"
        source = _json_parsed(decoded, paths) if paths else f"SELECT *, coalesce(json_valid(_text), false) AS _json_ok FROM ({decoded})"
    checks = list(base_checks)
    typed_exprs = []
    for name, col in cols:
        r = f"_raw_{_ident(name)}"
        if controls and col.type == "string" and col.control_characters == "remove":
            raw[name] = (f"CASE WHEN _controls THEN nullif(trim(regexp_replace({raw[name]}, "
                         f"{sql_string(CONTROL_CHARACTERS)}, '', 'g')), '') ELSE {raw[name]} END")
        elif controls and col.type == "string":
            checks.append(_problem(f"_controls AND regexp_matches({r}, {sql_string(CONTROL_CHARACTERS)})", name,
                                   f"'control character in text: ' || printf('U+%04X', unicode(regexp_extract({r}, "
                                   f"{sql_string(CONTROL_CHARACTERS)}, 0))) || ' (remove it at the source, or "
                                   "declare control_characters: remove in the contract)'"))
        t = _typed(r, col)
        in_range = _in_range(t, col)
        if in_range is not None and col.on_invalid == "null":
            t = f"CASE WHEN {in_range} THEN {t} END"  # a value out of range is emptied like one not of its type
        typed_exprs.append(f"{t} AS {_quoted(name)}")
        if col.type != "string" and col.on_invalid == "quarantine":
            checks.append(_problem(f"_shape_ok AND {r} IS NOT NULL AND {t} IS NULL", name,
                                   f"{sql_string(_type_reason(col) + ': ')} || {r}"))
            if in_range is not None:
                checks.append(_problem(f"_shape_ok AND {t} IS NOT NULL AND NOT ({in_range})", name,
                                       f"{sql_string(_range_reason(col) + ': ')} || {r}"))
        if col.required or name in spec.record_id_columns:
            what = "record id missing" if name in spec.record_id_columns else "required value missing"
            checks.append(_problem(f"_shape_ok AND {r} IS NULL", name, sql_string(what)))
        if col.allowed:
            allowed = ", ".join(sql_string(v) for v in col.allowed)
            # A long code list (offences, courts) is named, not spelt out in every quarantined row.
            expected = (f"expected one of {', '.join(col.allowed)}" if len(col.allowed) <= MAX_LISTED_CODES
                        else f"not in the column's code list of {len(col.allowed):,} values in its contract")
            checks.append(_problem(f"_shape_ok AND {r} IS NOT NULL AND {r} NOT IN ({allowed})", name,
                                   f"{sql_string(f'value not allowed ({expected}): ')} || {r}"))
    raw_select = ", ".join(f"{expr} AS _raw_{_ident(name)}" for name, expr in raw.items())
    # The row's shape is checked once, as a column: written into every column's check, it was
    # worked out again per check (a quarter of a large table's parsing time).
    # Whether the line holds a control character, tested once per line (see CONTROL_IN_LINE).
    if controls:
        source = f"SELECT *, regexp_matches(_text, {sql_string(CONTROL_IN_LINE)}) AS _controls FROM ({source})"
    inner = f"SELECT *, {shape_ok} AS _shape_ok, {raw_select} FROM ({source})"
    # The line's bytes are kept only where they are not text (the quarantine shows them in hex):
    # kept for every row, they were about a quarter of the stage table's size.
    sql = (f"SELECT _row_number, _element_index, CASE WHEN _text IS NULL THEN _line END AS _line, _text, "
           f"{', '.join(typed_exprs)}, {'_line_md5' if spec.unnest else 'md5(_line) AS _line_md5'}, "
           f"list_filter([{', '.join(checks)}], lambda x: x IS NOT NULL) AS _problems "
           f"FROM ({inner})")
    return sql


def _ident(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- the stage ------------------------------------------------------------------------------

# This loader's code, part of what a table's landed rows depend on.
LOADER_SHA256 = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _parent_tables(contract: Contract, spec: Table) -> list[str]:
    """An unnested table's parents: the tables read from the same file, not unnested."""
    return [n for n, t in contract.tables.items() if spec.unnest and t.file == spec.file and not t.unnest]


def spec_sha256(contract: Contract, name: str, spec: Table) -> str:
    """What a table's landed rows depend on besides the file: its contract (and, for an unnested
    table, its parent tables': an element of a quarantined row is quarantined too) and this loader."""
    parents = {n: contract.tables[n].model_dump(mode="json") for n in _parent_tables(contract, spec)}
    text = json.dumps({"source": contract.source, "table": name, "spec": spec.model_dump(mode="json"),
                       "parents": parents, "loader": LOADER_SHA256}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _previous_loads(landed: Path) -> dict[tuple[str, str], dict]:
    """The last ingest's accounting, by (source, table); empty when there is none to trust."""
    accounting, quarantine = landed / ACCOUNTING_FILE, landed / QUARANTINE_FILE
    if not (accounting.is_file() and quarantine.is_file()):
        return {}
    rows = pq.read_table(accounting).to_pylist()
    return {(r["source"], r["table"]): r for r in rows if r.get("spec_sha256")}


def _reuse_table(engine: Engine, contract: Contract, name: str, previous: dict, landed: Path, out: Path,
                 sha: str, spec_sha: str) -> TableLoad | None:
    """The table as the last ingest loaded it, when neither its file nor its contract (nor the
    loader) has changed since: the landed file is linked into the new zone and its quarantined
    rows copied, so a source that has sent nothing new is not parsed again."""
    before = previous.get((contract.source, name))
    target = f"{contract.table_key(name)}.parquet"
    if not before or before["file_sha256"] != sha or before["spec_sha256"] != spec_sha \
            or not (landed / target).is_file():
        return None
    try:
        os.link(landed / target, out / target)  # zones are replaced whole, never written in place
    except OSError:
        shutil.copy2(landed / target, out / target)
    engine.execute(f"""INSERT INTO quarantine
        SELECT source, "table", file, row_number, "column", reason, reasons, raw_line
        FROM {engine.parquet(landed / QUARANTINE_FILE)} WHERE source = ? AND "table" = ?""", [contract.source, name])
    return TableLoad(contract.source, name, before["file"], sha, before["read"], before["landed"],
                     before["quarantined"], spec_sha, str(before["loaded_at"]), reused=True,
                     last_line_cut=bool(before.get("last_line_cut")))


def _known_lines(contract: Contract, name: str, spec: Table, previous: dict, landed: Path, spec_sha: str) -> Path | None:
    """The table's last landed file, when its rows stand for the lines they came from (each
    with the digest of its line, `_line_md5`): loaded under the same contract and loader, so
    the same line gives the same row. Not for an unnested table (a line gives several rows,
    and whether they land depends on the parent table's row)."""
    before = previous.get((contract.source, name))
    path = landed / f"{contract.table_key(name)}.parquet"
    if spec.unnest or not before or before["spec_sha256"] != spec_sha or not path.is_file():
        return None
    return path


def _stage_with_known_lines(engine: Engine, spec: Table, view: str, stage: str, header_lines: int, known: Path,
                            open_line: int | None, controls: bool) -> str:
    """SQL for the stage table of a new delivery of a file loaded before: the lines seen in the
    last load take their row from it, and only the others are parsed and checked. A weekly
    extract repeats most of last week's lines, so most of the parsing is saved. Needs the
    temp tables `<stage>_known` and `<stage>_unknown`, made here."""
    previous = engine.parquet(known)
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE {stage}_lines AS
        SELECT line_no, line, md5(line) AS _line_md5 FROM {view}""")
    cols = ", ".join(f"p.{_quoted(c)}" for c in spec.columns)

    def known(rows: str) -> None:
        engine.execute(f"""CREATE OR REPLACE TEMP TABLE {stage}_known AS
            SELECT m.line_no, m.line, m._line_md5, {cols} FROM {stage}_lines m JOIN {rows} p ON p._line_md5 = m._line_md5
            WHERE m.line_no > {header_lines} AND m.line_no <> {open_line or 0}""")

    # A digest has one landed row (an exact copy of a line is quarantined); were there two, a
    # line would become two rows: then the first row of each digest is taken.
    known(previous)
    if engine.scalar(f"SELECT count(*) - count(DISTINCT line_no) FROM {stage}_known"):
        known(f"(SELECT * FROM {previous} WHERE _row_number IN (SELECT min(_row_number) FROM {previous} "
              "GROUP BY _line_md5))")
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE {stage}_unknown AS
        SELECT line_no, line FROM {stage}_lines WHERE line_no NOT IN (SELECT line_no FROM {stage}_known)""")
    engine.execute(f"DROP TABLE {stage}_lines")
    no_problems = f"list_filter([{_problem('false', None, sql_string(''))}], lambda x: x IS NOT NULL)"
    typed = ", ".join(_quoted(c) for c in spec.columns)
    return (f"SELECT _row_number, _element_index, _line, _text, {typed}, _line_md5, _problems "
            f"FROM ({_stage_sql(spec, f'{stage}_unknown', header_lines, open_line=open_line, controls=controls)}) "
            # A known line landed before, so it is text: its bytes are not kept (see _stage_sql).
            f"UNION ALL SELECT line_no - {header_lines} AS _row_number, NULL::BIGINT AS _element_index, "
            f"CAST(NULL AS BLOB) AS _line, "
            f"TRY(decode(line)) AS _text, {typed}, _line_md5, {no_problems} AS _problems FROM {stage}_known")


def _load_table(engine: Engine, contract: Contract, name: str, spec: Table, extracts: Path, out: Path,
                loaded_at: str, extracts_read: dict, lines_cache: dict, previous: dict, landed_before: Path) -> TableLoad:
    path = extracts / spec.file
    if not path.is_file():
        raise IngestError(f"{path} not found (contract {contract.path or contract.source}, table {name!r}); "
                          "put the extract there or fix the contract's `file`")
    if path.stat().st_size == 0:
        raise IngestError(f"{path} is empty (0 bytes); export the {contract.source} extract again")
    spec_sha = spec_sha256(contract, name, spec)
    # Several tables can come from one file (a JSON array unnested): it is read and hashed once,
    # and every table of it is loaded from those bytes.
    if path not in extracts_read:
        extracts_read[path] = read_extract(path)
    extract = extracts_read[path]
    sha = extract.sha256
    reused = _reuse_table(engine, contract, name, previous, landed_before, out, sha, spec_sha)
    if reused is not None:
        return reused
    key = (path, spec.encoding)
    if key not in lines_cache:
        lines_cache[key] = read_lines(extract, path, spec.encoding)
    lines = lines_cache[key]
    header_lines = 1 if (spec.format == "csv" and spec.header) else 0
    # The line a file cut short would end on: its last, with no line break after it.
    open_line = lines.num_rows if extract.last_line_open and lines.num_rows > header_lines else None
    controls = extract.may_hold_control_characters(spec.encoding)
    if header_lines:
        _check_header(path, name, spec, contract, lines)
    view = f"lines_{_ident(contract.source)}_{_ident(name)}"
    engine.register(view, lines)
    stage = f"stage_{_ident(contract.source)}_{_ident(name)}"
    parent_problems = None
    if spec.unnest:
        # The parent tables (the same file, not unnested) are loaded first, in the same job.
        parents = _parent_tables(contract, spec)
        if parents:
            parent_problems = f"{stage}_parent_problems"
            engine.execute(f"""CREATE OR REPLACE TEMP TABLE {parent_problems} AS
                SELECT row_number, min(reason) AS reason FROM quarantine
                WHERE source = {sql_string(contract.source)} AND "table" IN ({', '.join(sql_string(n) for n in parents)})
                GROUP BY row_number""")
    known = _known_lines(contract, name, spec, previous, landed_before, spec_sha)
    if known is not None:
        engine.execute(f"CREATE OR REPLACE TEMP TABLE {stage} AS "
                       f"{_stage_with_known_lines(engine, spec, view, stage, header_lines, known, open_line, controls)}")
        engine.execute(f"DROP TABLE {stage}_known")
        engine.execute(f"DROP TABLE {stage}_unknown")
    else:
        engine.execute(f"CREATE OR REPLACE TEMP TABLE {stage} AS "
                       f"{_stage_sql(spec, view, header_lines, parent_problems, open_line, controls)}")
    engine.unregister(view)
    if parent_problems:
        engine.execute(f"DROP TABLE {parent_problems}")
    # A last line without a line break that could not be loaded as it is: the file was most likely
    # cut there (an export or a copy stopped part-way), so the control totals hold the release back.
    # An unnested table's line is its parent's, which says so.
    cut = open_line is not None and not spec.unnest and bool(engine.scalar(
        f"SELECT count(*) FROM {stage} WHERE _row_number = {open_line - header_lines} AND array_length(_problems) > 0"))

    # Duplicates: a record id seen again (first occurrence kept); exact copies said so. The ids
    # that recur are few, so they are found by grouping and joined back, rather than by a window
    # over every row (a sort of the whole table). An occurrence is ordered by its row, then by
    # its element within the row (elements of one JSON array share the row).
    # A composite id's parts are joined with '|', a backslash doubled and a bar escaped by one in them, so
    # that ('A|1', '2') and ('A', '1|2') stay two ids; ids without either character are unchanged.
    parts = [f"CAST(s.{_quoted(c)} AS VARCHAR)" for c in spec.record_id_columns]
    if len(parts) > 1:
        parts = [f"replace(replace({p}, '\\', '\\\\'), '|', '\\|')" for p in parts]
    rid = "concat_ws('|', " + ", ".join(parts) + ")"
    occurrence = "s._row_number * 4294967296 + coalesce(s._element_index, 0)"
    rel_file = spec.file
    # The ids that recur are found first by counting alone; the first occurrence (row and text) is
    # then picked for those few ids only, not carried for every id of the table.
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE {stage}_repeated AS
        WITH repeated AS (SELECT {rid} AS _record_id FROM {stage} s WHERE array_length(s._problems) = 0
                          GROUP BY 1 HAVING count(*) > 1)
        SELECT {rid} AS _record_id, min({occurrence}) AS _first_occurrence,
               arg_min(s._row_number, {occurrence}) AS _first_row, arg_min(s._text, {occurrence}) AS _first_text
        FROM {stage} s WHERE array_length(s._problems) = 0 AND {rid} IN (SELECT _record_id FROM repeated)
        GROUP BY 1""")
    final = f"""(
        SELECT s.* EXCLUDE (_problems), {rid} AS _record_id,
            CASE WHEN array_length(s._problems) = 0 AND d._first_occurrence IS NOT NULL
                      AND d._first_occurrence <> {occurrence} THEN
                [{{'column': {sql_string(spec.record_id_columns[0])},
                  'reason': CASE WHEN s._text = d._first_text THEN 'exact duplicate of row ' || d._first_row
                                 ELSE 'duplicate record id ' || d._record_id || ' (first on row ' || d._first_row || ')' END}}]
            ELSE s._problems END AS _problems
        FROM {stage} s LEFT JOIN {stage}_repeated d ON d._record_id = {rid})"""
    columns = ", ".join(_quoted(c) for c in spec.columns)
    # The values the same for every row (and the record key built from the id) are added after
    # the sort: sorted along with each row they cost the sort most of its time.
    landed = engine.to_parquet(f"""
        SELECT {sql_string(contract.source)} || '|' || {sql_string(name)} || '|' || _record_id AS record_key,
               {sql_string(contract.source)} AS _source, {sql_string(name)} AS _table,
               {sql_string(rel_file)} AS _file, _row_number, {sql_string(sha)} AS _file_sha256,
               CAST({sql_string(loaded_at)} AS TIMESTAMP) AS _loaded_at, _line_md5, {columns}
        FROM (SELECT _record_id, _row_number, _line_md5, {columns} FROM {final}
              WHERE array_length(_problems) = 0 ORDER BY _row_number, _element_index)""",
                               out / f"{contract.table_key(name)}.parquet")
    engine.execute(f"""
        INSERT INTO quarantine
        SELECT {sql_string(contract.source)}, {sql_string(name)}, {sql_string(rel_file)}, _row_number,
               _problems[1].column, _problems[1].reason, list_transform(_problems, lambda p: coalesce(p.column || ': ', '') || p.reason),
               coalesce(_text, hex(_line))
        FROM {final} WHERE array_length(_problems) > 0""")
    read = int(engine.scalar(f"SELECT count(*) FROM {stage}"))
    # Counted in the quarantine itself, so that the balance below checks what was written.
    quarantined = int(engine.scalar(f"""SELECT count(*) FROM quarantine
        WHERE source = {sql_string(contract.source)} AND "table" = {sql_string(name)}"""))
    engine.execute(f"DROP TABLE {stage}")
    engine.execute(f"DROP TABLE {stage}_repeated")
    load = TableLoad(contract.source, name, rel_file, sha, read, landed, quarantined, spec_sha, loaded_at,
                     last_line_cut=cut)
    if not load.balanced:  # pragma: no cover - an internal error, never a data problem
        raise RuntimeError(f"row accounting does not balance for {rel_file}: {load}")
    return load


@holding_lock
def ingest(ws: Workspace, engine: Engine, progress: Callable[[str, int, int], None] | None = None) -> list[TableLoad]:
    """Load every contract's tables into the landed zone (replacing it only on success)."""
    contracts = load_contracts(ws.contracts)
    extracts = ws.extracts
    if not extracts.is_dir():
        raise IngestError(f"the extracts folder {extracts} does not exist; fix `extracts` in {ws.config_path}")
    tmp = ws.zones / f".{LANDED}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    loaded_at = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None).isoformat(sep=" ")
    tables = [(c, n, t) for c in contracts for n, t in c.tables.items()]
    # One job per extract file (a file can feed several tables: it is hashed and read once), the
    # largest first; files are independent, so several are loaded at once (Engine.concurrently).
    by_file: dict[Path, list[int]] = {}
    for i, (_, _, spec) in enumerate(tables):
        by_file.setdefault(extracts / spec.file, []).append(i)
    files = list(by_file)
    started = iter(range(len(tables)))  # next() on it is atomic: jobs report progress from their threads
    landed_before = ws.zone(LANDED)
    previous = _previous_loads(landed_before)

    def load_file(number: int, indexes: list[int], e: Engine) -> list[TableLoad]:
        # Each job keeps its own quarantine (a temp table is its connection's), written to a
        # part file that the stage merges.
        e.execute("""CREATE OR REPLACE TEMP TABLE quarantine (source VARCHAR, "table" VARCHAR, file VARCHAR,
            row_number BIGINT, "column" VARCHAR, reason VARCHAR, reasons VARCHAR[], raw_line VARCHAR)""")
        try:
            extracts_read: dict = {}
            lines_cache: dict = {}
            out = []
            # A file's unnested tables after its other tables: an element's checks need to know
            # whether its parent row was quarantined.
            for i in sorted(indexes, key=lambda i: tables[i][2].unnest is not None):
                contract, name, spec = tables[i]
                if progress:
                    progress(f"{contract.source}/{name}", next(started), len(tables))
                out.append(_load_table(e, contract, name, spec, extracts, tmp, loaded_at, extracts_read, lines_cache,
                                       previous, landed_before))
            e.to_parquet("SELECT * FROM quarantine", tmp / f".quarantine-part-{number}.parquet")
            return out
        finally:
            e.execute("DROP TABLE IF EXISTS quarantine")

    try:
        done = engine.concurrently([lambda e, n=n, f=f: load_file(n, by_file[f], e) for n, f in enumerate(files)],
                                   sizes=[f.stat().st_size if f.is_file() else 0 for f in files])
        by_index = {i: load for f, loads_ in zip(files, done) for i, load in zip(by_file[f], loads_)}
        loads = [by_index[i] for i in range(len(tables))]
        if progress:
            progress("done", len(tables), len(tables))
        parts = [tmp / f".quarantine-part-{n}.parquet" for n in range(len(files))]
        # Fully ordered (elements of one JSON line share its row number), so the file is the same
        # however the jobs ran.
        engine.to_parquet(f"""SELECT * FROM read_parquet([{', '.join(sql_string(p) for p in parts)}])
                              ORDER BY source, "table", row_number, raw_line, reason""", tmp / QUARANTINE_FILE)
        for part in parts:
            part.unlink()
        acc = pa.table({
            "source": [x.source for x in loads], "table": [x.table for x in loads], "file": [x.file for x in loads],
            "file_sha256": [x.sha256 for x in loads], "read": [x.read for x in loads],
            "landed": [x.landed for x in loads], "quarantined": [x.quarantined for x in loads],
            "loaded_at": [x.loaded_at for x in loads], "spec_sha256": [x.spec_sha256 for x in loads],
            "reused": [x.reused for x in loads], "last_line_cut": [x.last_line_cut for x in loads],
        })
        pq.write_table(acc, tmp / ACCOUNTING_FILE)
        replace_folder(tmp, ws.zone(LANDED))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return loads
