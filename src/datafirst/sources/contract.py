"""Source contracts: one declarative YAML file per source system.

A contract says where a source's files are and how they are written (format, delimiter,
encoding), which columns they have and of what type, which column is the native record id,
which columns play which identifier role, and which are content. A new source needs a new
contract and no new code. Contracts are validated on load; every error names the contract
file and the place in it.
"""

from __future__ import annotations

import csv
import difflib
import re
import threading
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..files import parse_yaml
from .code_lists import DECLARATION_SUFFIX, CodeList, CodeListError, read_code_list
from .declared_sql import DeclaredSqlError, check_columns, parse_check
from .research_queries import QUERIES_FILE
from ..validation import describe

# Identifier roles: columns with one of these roles go to the identifiers table (the linkage
# zone), and to content only when also marked `native_id` (an `other_id` such as a prisoner
# number that joins tables; releases hash it). `full_name` needs `name_order`.
IDENTIFIER_ROLES = (
    "forename", "middle_names", "forenames", "surname", "full_name", "date_of_birth", "sex",
    "postcode", "address", "pnc", "cro", "other_id",
)
# Roles cleaned as text (names, addresses, postcodes, police numbers); sex may also be a code.
TEXT_ROLES = ("forename", "middle_names", "forenames", "surname", "full_name", "postcode", "address", "pnc", "cro")
NAME_ORDERS = ("surname_comma_forenames", "forenames_surname")
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
# How a column that is not an identifier role can still be compared in linkage (`compare`):
# category (exact, with term frequencies: birth place, ethnicity), text (exact or close in
# spelling: occupation, employer), number (exact or close: height), date (exact or close: a
# date of death, of marriage).
COMPARE_KINDS = ("category", "text", "number", "date")
# Column names a release derives itself (besides `<native id>_hash` and `person_id_<threshold>`):
# a column `harmonise` adds may not take one.
RELEASE_DERIVED = ("record_key", "year_of_birth", "sex", "postcode_district")
# A JSON path both engines read alike: keys (bare or quoted) and array positions, no wildcards.
JSON_PATH = re.compile(r'^\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\."[^"]+"|\[[0-9]+\])+$')


class ContractError(Exception):
    """A contract that cannot be used; the message names the file and what to fix."""


_FORMAT_CHECK = threading.Lock()


@lru_cache(maxsize=None)
def _date_format_problem(fmt: str) -> str | None:
    """Why DuckDB cannot read dates in `fmt` (None when it can). Dates are parsed with its
    strptime, so its parser is the judge; asked once per format (contracts are read often)."""
    with _FORMAT_CHECK, duckdb.connect() as con:
        try:
            con.execute("SELECT try_strptime('', ?)", [fmt]).fetchall()
        except duckdb.Error as exc:
            return str(exc).split("Error: ", 1)[-1]
    return None


def _beside_the_contract(value: str, what: str) -> str:
    path = Path(value)
    if path.is_absolute() or ".." in path.parts or path.suffix.lower() != ".csv":
        raise ValueError(f"a {what} file is a .csv path relative to the contract's folder, inside it (it "
                         f"travels with the contracts); got {value!r}")
    return value


class CodeListFile(BaseModel):
    """A code list kept in a CSV file beside the contract (offence codes run to thousands)."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="a CSV file with a header, in the contract's folder (or below it)")
    column: str = Field(description="the file's column holding the codes")

    @field_validator("file")
    @classmethod
    def _beside(cls, value: str) -> str:
        return _beside_the_contract(value, "code list")


class HarmonisedColumn(BaseModel):
    """A column a release adds beside a harmonised source column."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(description="the mapping file's column holding this column's values")
    description: str = Field("", description="what the column means, for the data dictionary")


class Harmonise(BaseModel):
    """A source's values mapped to a shared scheme (the 2021 census ethnic groups, say) through a
    CSV file beside the contract. Releases keep the source value and add one column per entry of
    `columns`, its value looked up in the file's row whose `match` column equals the source value
    (empty, and counted, when no row does)."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="the mapping: a CSV file with a header, in the contract's folder (or below it)")
    match: str = Field(description="the file's column holding the source's values")
    columns: dict[str, HarmonisedColumn] = Field(description="the columns the release adds: name -> the file's "
                                                             "column giving its values, and its meaning")
    # Read from the file at load: source value -> {added column: its value} (empty values left out).
    _mapping: dict[str, dict[str, str]] = PrivateAttr(default_factory=dict)

    @field_validator("file")
    @classmethod
    def _beside(cls, value: str) -> str:
        return _beside_the_contract(value, "harmonise")

    @field_validator("columns")
    @classmethod
    def _some(cls, value: dict[str, HarmonisedColumn]) -> dict[str, HarmonisedColumn]:
        if not value:
            raise ValueError("`columns` names at least one column to add, e.g. {ethnic_group: {column: group}}")
        bad = [n for n in value if not IDENTIFIER.match(n)]
        if bad:
            raise ValueError(f"added column names must be lower case letters, digits and underscores: {bad}")
        return value

    @property
    def mapping(self) -> dict[str, dict[str, str]]:
        return self._mapping

    def codes(self, added: str) -> list[str]:
        """The values an added column can hold (its code list), in the file's order."""
        return list(dict.fromkeys(row[added] for row in self._mapping.values() if added in row))

    def listed_in(self, added: str) -> str:
        return f"{self.file} ({self.columns[added].column})"


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["string", "integer", "decimal", "date", "boolean"] = "string"
    formats: list[str] = Field(default_factory=list, description="strptime formats, for dates")
    true_values: list[str] = Field(default_factory=lambda: ["y", "yes", "true", "1"])
    false_values: list[str] = Field(default_factory=lambda: ["n", "no", "false", "0"])
    required: bool = False
    on_invalid: Literal["quarantine", "null"] = Field(
        "quarantine", description="a value that does not fit the type: quarantine the row (default) or keep the "
                                  "row with this value empty")
    allowed: list[str] | CodeListFile | None = Field(
        None, description="the code list: a row with any other value is quarantined; releases keep the column as a "
                          "code. A list, or {file, column} naming a CSV file beside the contract")
    min: float | date | None = Field(None, description="integer, decimal or date columns: the smallest plausible "
                                                       "value; smaller values are invalid (see on_invalid)")
    max: float | date | None = Field(None, description="integer, decimal or date columns: the largest plausible "
                                                       "value; larger values are invalid (see on_invalid)")
    control_characters: Literal["quarantine", "remove"] = Field(
        "quarantine", description="string columns: a value holding a control character (NUL, another C0 control "
                                  "but tab, line feed and carriage return, DEL, or a C1 control) quarantines its "
                                  "row (default), or the characters are removed from it")
    free_text: bool = Field(False, description="a string column of free text (notes, titles written by hand): "
                                               "released only when declared so, and then only after the guard")
    role: Literal[IDENTIFIER_ROLES] | None = None  # type: ignore[valid-type]
    name_order: Literal["surname_comma_forenames", "forenames_surname"] | None = None
    native_id: bool = Field(False, description="a source system's own id: kept in content, hashed in releases")
    person_key: bool = Field(False, description="other_id only: the source issues this id per person, so its "
                                                "records with the same value are the same person")
    compare: Literal[COMPARE_KINDS] | None = Field(  # type: ignore[valid-type]
        None, description="compare this column in linkage as a category, text, number or date; it goes to the "
                          "identifiers zone (and to content only with `content: true`)")
    compare_as: str | None = Field(None, description="the attribute's name in linkage, shared by the sources that "
                                                     "hold it (default: the column's name)")
    content: bool = Field(False, description="a `compare` column: also keep it in content, where releases can use it")
    earliest: date | None = Field(None, description="date_of_birth: the earliest plausible date; earlier dates are "
                                                    "emptied (default: datafirst.yaml's standardise.date_of_birth)")
    placeholder_dates: list[date] | None = Field(
        None, description="date_of_birth: dates that mean 'not known' (default: datafirst.yaml's)")
    year_only_dates: list[str] | None = Field(
        None, description="date_of_birth: days of the year ('01-01') written when only the year is known: such a "
                          "date counts as its year alone (default: datafirst.yaml's)")
    path: str | None = Field(None, description="JSON path of the value, for jsonl tables ($.a.b)")
    harmonise: Harmonise | None = Field(
        None, description="map the column's values to a shared scheme through a CSV file beside the contract: "
                          "releases keep the value and add the scheme's columns")
    description: str = Field("", description="what the value is, its unit or format, and when it is empty; the "
                                            "data dictionary's meaning of the column")
    empty_because: str = Field("", description="why the column is empty (always, or where it is): the data "
                                               "dictionary's explanation of its missing values")
    # Where `allowed` was read from when the contract named a file (for the data dictionary).
    _allowed_from: str | None = PrivateAttr(None)
    # The code list file `allowed` was read from, and the column of it that holds the codes.
    _code_list: tuple[CodeList, str] | None = PrivateAttr(None)

    @property
    def allowed_from(self) -> str | None:
        return self._allowed_from

    @property
    def is_released(self) -> bool:
        """Whether a release holds the column, or the reduced column its role gives."""
        return (self.role is None and self.compare is None) or self.native_id or self.content \
            or self.role in ("date_of_birth", "sex", "postcode")

    @property
    def code_list(self) -> tuple[CodeList, str] | None:
        """The code list file `allowed` came from and its column holding the codes (None for a list
        written in the contract)."""
        return self._code_list

    @field_validator("on_invalid", mode="before")
    @classmethod
    def _null_spelled_as_yaml(cls, value: object) -> object:
        return "null" if value is None else value  # `on_invalid: null` is YAML's None

    @model_validator(mode="after")
    def _consistent(self) -> "Column":
        if self.type == "date" and not self.formats:
            raise ValueError("a date column needs `formats` (strptime formats such as '%d/%m/%Y')")
        if self.formats and self.type != "date":
            raise ValueError("`formats` is only for date columns")
        for fmt in self.formats:
            problem = _date_format_problem(fmt)
            if problem:
                raise ValueError(f"date format {fmt!r} cannot be read ({problem}); use strptime directives such "
                                 "as %d, %m, %Y, %b (see docs/contracts.md)")
        for bound in ("min", "max"):
            value = getattr(self, bound)
            if value is None:
                continue
            if self.type in ("integer", "decimal") and isinstance(value, date):
                raise ValueError(f"`{bound}` of a {self.type} column must be a number, got the date {value}")
            if self.type == "date" and not isinstance(value, date):
                raise ValueError(f"`{bound}` of a date column must be a date (YYYY-MM-DD), got {value!r}")
            if self.type not in ("integer", "decimal", "date"):
                raise ValueError(f"`{bound}` is for integer, decimal and date columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"`min` ({self.min}) is larger than `max` ({self.max})")
        if self.control_characters != "quarantine" and self.type != "string":
            raise ValueError(f"`control_characters` is for string columns; a {self.type} column holding one is not "
                             "of its type already (see on_invalid)")
        if self.free_text and (self.type != "string" or self.role is not None or self.allowed):
            raise ValueError("`free_text` is for string columns without a role or an `allowed` list")
        if self.harmonise is not None and (self.type != "string" or self.role is not None or self.native_id
                                           or self.compare is not None or self.free_text):
            raise ValueError("`harmonise` is for string content columns (codes or labels), without a role, "
                             "`native_id`, `compare` or `free_text`: only content reaches a release")
        if self.role == "full_name" and self.name_order is None:
            raise ValueError(f"a full_name column needs `name_order`: one of {NAME_ORDERS}")
        if self.role == "date_of_birth" and self.type != "date":
            raise ValueError("a date_of_birth column must have type date")
        if self.native_id and self.role not in (None, "pnc", "cro", "other_id"):
            raise ValueError(f"a column with role {self.role} cannot be a native_id: native ids go to content, "
                             "and a name, date of birth, sex, postcode or address never may")
        if self.person_key and self.role != "other_id":
            raise ValueError("`person_key` is for an other_id column: a system id issued once per person")
        if self.compare is not None:
            if self.role is not None or self.native_id:
                raise ValueError("a column with `compare` is an attribute for linkage, not an identifier role or a "
                                 "native_id: give it one of the two")
            if self.compare in ("category", "text") and self.type != "string":
                raise ValueError(f"`compare: {self.compare}` needs a string column")
            if self.compare == "number" and self.type not in ("integer", "decimal"):
                raise ValueError("`compare: number` needs an integer or decimal column")
            if self.compare == "date" and self.type != "date":
                raise ValueError("`compare: date` needs a date column")
        elif self.compare_as is not None or self.content:
            raise ValueError("`compare_as` and `content` are only for columns with `compare`")
        if self.compare_as is not None and not IDENTIFIER.match(self.compare_as):
            raise ValueError(f"compare_as {self.compare_as!r} must be lower case letters, digits and underscores")
        dob_rules = {"earliest": self.earliest, "placeholder_dates": self.placeholder_dates,
                     "year_only_dates": self.year_only_dates}
        if self.role != "date_of_birth" and any(v is not None for v in dob_rules.values()):
            raise ValueError(f"{[k for k, v in dob_rules.items() if v is not None]} are only for date_of_birth columns")
        for day in self.year_only_dates or []:
            if not re.match(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$", day):
                raise ValueError(f"year_only_dates takes month-day pairs such as '01-01', got {day!r}")
        if self.empty_because and not self.is_released:
            raise ValueError("`empty_because` explains a released column's empty values, and this column is not "
                             "released (an identifier goes to the linkage zone only); put it on a content column, a "
                             "native_id, or the date_of_birth, sex or postcode column (which give year_of_birth, sex "
                             "and postcode_district)")
        if self.role in TEXT_ROLES and self.type != "string":
            raise ValueError(f"a column with role {self.role} must have type string (the default): it is cleaned as text")
        return self


class ConstraintJoin(BaseModel):
    """The one row of another table of the same contract that a constraint's check also reads."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(description="a table of the same contract; the check names its columns `table.column`")
    # Not `on`: YAML reads a bare `on` as true.
    keys: dict[str, str] = Field(description="this table's column -> the joined table's column, for each column of "
                                             "the joined table's record_id (so a row joins at most one row)")

    @model_validator(mode="before")
    @classmethod
    def _not_on(cls, value: object) -> object:
        if isinstance(value, dict) and True in value:
            raise ValueError("write the join's columns under `keys:` ({this column: joined column}); YAML reads a "
                             "bare `on:` as true")
        return value


class Constraint(BaseModel):
    """A rule the table's rows always keep (dates in order, a sentence only with a conviction),
    declared once and checked on a release and on its synthetic twin alike. A row breaks it when
    `check` is false; true or unknown (NULL) keeps it, as SQL's CHECK does."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the constraint's name: lower case letters, digits and underscores")
    description: str = Field(description="the rule in words, for researchers")
    check: str = Field(description="a SQL condition over the table's released columns (and the joined table's, "
                                   "as `table.column`); see docs/contracts.md for what it may use")
    join: ConstraintJoin | None = Field(None, description="another table of the same contract the check reads")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"a constraint's name must be lower case letters, digits and underscores, got {value!r}")
        return value

    @field_validator("description")
    @classmethod
    def _described(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("write what the rule means in words: researchers read it beside the check")
        return value

    @model_validator(mode="after")
    def _safe(self) -> "Constraint":
        try:
            parse_check(self.check)
        except DeclaredSqlError as exc:
            raise ValueError(f"constraint {self.name!r}: {exc}") from exc
        return self

    def columns(self) -> list[tuple[str | None, str]]:
        """Each column the check names, as (table qualifier or None, column)."""
        return check_columns(parse_check(self.check))


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="path relative to the extracts folder; .gz is read compressed")
    format: Literal["csv", "jsonl"] = "csv"
    delimiter: str = ","
    quote: str = '"'
    encoding: Literal["utf-8", "cp1252", "latin-1"] = "utf-8"
    header: bool = True
    record_id: str | list[str] = Field(description="the column(s) that identify a row within the table")
    unit: str = Field("", description="what one row is, e.g. 'one row per defendant per case'")
    event_date: str | None = Field(None, description="the date column that places a row in a person's journey")
    event_type: str | None = Field(None, description="what the event is, for the person journey (default: the table)")
    unnest: str | None = Field(None, description="jsonl only: JSON path of an array; one row per element")
    parent_id: str | None = Field(None, description="jsonl with unnest: the parent's id column, kept on each element")
    columns: dict[str, Column]
    description: str = ""
    constraints: list[Constraint] = Field(default_factory=list, description="rules every row keeps, checked on "
                                                                            "releases and their synthetic twins")

    @field_validator("columns")
    @classmethod
    def _column_names(cls, value: dict[str, Column]) -> dict[str, Column]:
        if not value:
            raise ValueError("a table needs at least one column")
        for name in value:
            # Not starting with '_': the loader's own columns do (_row_number, _line_md5, ...).
            if name == "record_key":
                raise ValueError("column name 'record_key' is datafirst's own (the key it gives every record); "
                                 "rename the column in the contract")
            if not IDENTIFIER.match(name) and not re.match(r"^[A-Za-z][A-Za-z0-9_ ]*$", name):
                raise ValueError(f"column name {name!r} is not usable; start with a letter, then use letters, "
                                 "digits, underscores and spaces")
        # SQL names ignore case, and the loader writes a space as '_': two such names would be
        # one column, and one of the two values would be lost.
        seen: dict[str, str] = {}
        for name in value:
            same = name.lower().replace(" ", "_")
            if same in seen:
                raise ValueError(f"columns {seen[same]!r} and {name!r} differ only in case or in spaces against "
                                 "underscores, which makes them one column: rename one of them in the contract "
                                 "(a CSV header is matched by position and name, so rename it in the file's "
                                 "agreed header too)")
            seen[same] = name
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Table":
        ids = [self.record_id] if isinstance(self.record_id, str) else self.record_id
        missing = [c for c in ids if c not in self.columns]
        if missing:
            raise ValueError(f"record_id names columns that are not declared: {missing}")
        if self.event_date and (self.event_date not in self.columns or self.columns[self.event_date].type != "date"):
            raise ValueError(f"event_date must name a declared date column, got {self.event_date!r}")
        if len(self.delimiter) != 1:
            raise ValueError("delimiter must be one character (write a tab as \"\\t\")")
        if len(self.quote) != 1:
            raise ValueError(f"quote must be one character, got {self.quote!r}")
        if self.format == "jsonl":
            no_path = [n for n, c in self.columns.items() if not c.path]
            if no_path:
                raise ValueError(f"jsonl columns need a `path` ($.field.subfield): {no_path}")
            bad = [f"{n}: {c.path}" for n, c in self.columns.items() if c.path != "#index" and not JSON_PATH.match(c.path)]
            if self.unnest and not JSON_PATH.match(self.unnest):
                bad.append(f"unnest: {self.unnest}")
            if bad:
                raise ValueError(f"not a JSON path of the form $.a.b, $.\"a b\" or $.a[0] (or #index): {bad}")
        elif self.unnest:
            raise ValueError("`unnest` is only for jsonl tables")
        if self.parent_id is not None and (self.parent_id not in self.columns or not self.unnest):
            raise ValueError(f"parent_id must name a declared column of a table with `unnest`, got {self.parent_id!r}")
        self._check_harmonised_names()
        return self

    def _check_harmonised_names(self) -> None:
        """The columns `harmonise` adds are released beside the table's own: each name must be
        free there, and not one a release derives."""
        taken = {n.lower().replace(" ", "_"): f"column {n!r}" for n in self.columns}
        for name, col in self.columns.items():
            for added in (col.harmonise.columns if col.harmonise else {}):
                where = f"columns.{name}.harmonise.columns.{added}"
                if added in taken:
                    raise ValueError(f"{where}: the name is taken by {taken[added]}; choose another name for the "
                                     "added column")
                if added in RELEASE_DERIVED or added.endswith("_hash") or added.startswith("person_id_"):
                    raise ValueError(f"{where}: {added!r} is a name releases derive themselves (row ids, person "
                                     f"ids, `<native id>_hash`, {', '.join(RELEASE_DERIVED[1:])}); choose another")
                taken[added] = f"the harmonised column of {name!r}"

    @property
    def record_id_columns(self) -> list[str]:
        return [self.record_id] if isinstance(self.record_id, str) else list(self.record_id)

    def role_columns(self, role: str) -> list[str]:
        return [n for n, c in self.columns.items() if c.role == role]

    @property
    def identifier_columns(self) -> list[str]:
        return [n for n, c in self.columns.items() if c.role is not None]

    @property
    def compared_columns(self) -> list[str]:
        """Columns compared in linkage as attributes (`compare`), not as identifier roles."""
        return [n for n, c in self.columns.items() if c.compare is not None]

    @property
    def content_columns(self) -> list[str]:
        return [n for n, c in self.columns.items()
                if (c.role is None and c.compare is None) or c.native_id or (c.compare is not None and c.content)]

    @property
    def is_person_table(self) -> bool:
        return bool(self.identifier_columns)

    def attribute_name(self, column: str) -> str:
        """The name a `compare` column has in the identifiers zone and the model."""
        return self.columns[column].compare_as or column

    def release_columns(self) -> dict[str, str]:
        """The columns a constraint may name (content columns and the columns `harmonise` adds),
        each with its name in a release: a native id is released as its keyed hash, `<name>_hash`."""
        names: dict[str, str] = {}
        for name in self.content_columns:
            released = name.lower().replace(" ", "_")
            names[name] = released + "_hash" if self.columns[name].native_id else released
            for added in (self.columns[name].harmonise.columns if self.columns[name].harmonise else {}):
                names[added] = added
        return names


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="the source system's short name: lower case, digits, underscores")
    description: str = ""
    tables: dict[str, Table]
    path: Path | None = Field(None, exclude=True)

    @field_validator("source")
    @classmethod
    def _source_name(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"source {value!r} must be lower case letters, digits and underscores, starting with a letter")
        return value

    @field_validator("tables")
    @classmethod
    def _table_names(cls, value: dict[str, Table]) -> dict[str, Table]:
        if not value:
            raise ValueError("a contract needs at least one table")
        for name in value:
            if not IDENTIFIER.match(name):
                raise ValueError(f"table name {name!r} must be lower case letters, digits and underscores")
        return value

    def table_key(self, table: str) -> str:
        """The name of a table in every zone: source__table."""
        return f"{self.source}__{table}"


def load_contract(path: Path) -> Contract:
    path = Path(path)
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ContractError(f"contract {path} not found") from exc
    except UnicodeDecodeError as exc:
        raise ContractError(f"contract {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                            f"{exc.start}); save it as UTF-8") from exc
    except yaml.YAMLError as exc:
        raise ContractError(f"contract {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError(f"contract {path} must be a YAML mapping with `source` and `tables`")
    try:
        contract = Contract(**raw)
    except ValidationError as exc:
        problems = "\n".join(f"  {line}" for line in describe(exc, Contract))
        raise ContractError(f"contract {path} is not valid:\n{problems}\nSee docs/contracts.md.") from exc
    contract.path = path
    _read_code_lists(contract, path)
    _check_constraints(contract, path)
    return contract


def _check_constraints(contract: Contract, path: Path) -> None:
    """Each constraint names columns its tables release, and joins another table of the contract
    by all of that table's record id (so each row is checked once, against one row)."""
    for table, spec in contract.tables.items():
        seen: set[str] = set()
        for constraint in spec.constraints:
            where = f"contract {path}, tables.{table}.constraints.{constraint.name}"
            if constraint.name in seen:
                raise ContractError(f"{where}: the name is used twice in this table; give each constraint its own")
            seen.add(constraint.name)
            tables = {None: (table, spec), table: (table, spec)}
            join = constraint.join
            if join is not None:
                other = contract.tables.get(join.table)
                if other is None or join.table == table:
                    raise ContractError(f"{where}.join.table: {join.table!r} is not another table of this contract"
                                        + _close(join.table, [t for t in contract.tables if t != table], "tables"))
                tables[join.table] = (join.table, other)
                if sorted(join.keys.values()) != sorted(other.record_id_columns):
                    raise ContractError(f"{where}.join.keys: the joined columns must be {join.table}'s record_id "
                                        f"({', '.join(other.record_id_columns)}), so a row joins at most one row; "
                                        f"got {', '.join(join.keys.values()) or 'none'}")
                for mine, theirs in join.keys.items():
                    for name, (tname, tspec) in ((mine, (table, spec)), (theirs, (join.table, other))):
                        problem = _column_problem(tname, tspec, name)
                        if problem:
                            raise ContractError(f"{where}.join.keys: {problem}")
            for qualifier, column in constraint.columns():
                if qualifier not in tables:
                    raise ContractError(f"{where}.check: `{qualifier}.{column}` names table {qualifier!r}; a check "
                                        f"reads {table}" + (f" and the joined {join.table}" if join else "")
                                        + " (another table of the contract needs `join:`)")
                tname, tspec = tables[qualifier]
                problem = _column_problem(tname, tspec, column)
                if problem:
                    raise ContractError(f"{where}.check: {problem}")


def _column_problem(table: str, spec: Table, column: str) -> str | None:
    """Why a constraint cannot use `column` of `table` (None when it can)."""
    usable = spec.release_columns()
    if column in usable:
        return None
    col = spec.columns.get(column)
    if col is not None and (col.role is not None or col.compare is not None):
        return (f"column {column!r} of {table} is an identifier ({col.role or 'compared in linkage'}) that no "
                "release holds as it is, so a constraint cannot use it")
    return f"{column!r} is not a column of {table}" + _close(column, list(usable), "columns it can use")


def _close(word: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{close[0]}`?"
    return f"; the {what}: {', '.join(known)}" if known else ""


def _read_code_lists(contract: Contract, path: Path) -> None:
    """Replace each `allowed: {file, column}` by the codes the file lists, read once here (so
    ingest, the fingerprints of what was loaded and the release all see the list itself), and
    keep the list (`Column.code_list`) for the release, which publishes it; and read each
    `harmonise` mapping."""
    read: dict[str, CodeList] = {}
    mappings: dict[str, list[dict[str, str]]] = {}
    for table, spec in contract.tables.items():
        for name, col in spec.columns.items():
            if col.harmonise is not None:
                where = f"contract {path}, tables.{table}.columns.{name}.harmonise"
                _read_mapping(col.harmonise, _csv_rows(mappings, path, col.harmonise.file, where), where, path.parent)
            if not isinstance(col.allowed, CodeListFile):
                continue
            ref = col.allowed
            where = f"contract {path}, tables.{table}.columns.{name}.allowed"
            if ref.file not in read:
                try:
                    read[ref.file] = read_code_list(path.parent, ref.file)
                except CodeListError as exc:
                    raise ContractError(f"{where}: {exc}") from exc
            code_list = read[ref.file]
            listed = code_list.path
            if ref.column not in code_list.header:
                raise ContractError(f"{where}: code list file {listed} has no column {ref.column!r}"
                                    + (f" (its columns: {', '.join(code_list.header)})" if code_list.header
                                       else " (it has no rows)"))
            codes = code_list.values(ref.column)
            if not codes:
                raise ContractError(f"{where}: column {ref.column!r} of {listed} lists no codes")
            col.allowed = codes
            col._allowed_from = f"{ref.file} ({ref.column})"
            col._code_list = (code_list, ref.column)


def _csv_rows(read: dict[str, list[dict[str, str]]], path: Path, file: str, where: str) -> list[dict[str, str]]:
    """The rows of a mapping's CSV file beside the contract at `path`, read once per contract."""
    if file not in read:
        listed = path.parent / file
        try:
            with open(listed, encoding="utf-8-sig", newline="") as f:
                read[file] = list(csv.DictReader(f))
        except FileNotFoundError as exc:
            raise ContractError(f"{where}: mapping file {listed} not found; keep it beside the contract") from exc
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ContractError(f"{where}: mapping file {listed} is not a UTF-8 CSV file ({exc})") from exc
    return read[file]


def _read_mapping(harmonise: Harmonise, rows: list[dict[str, str]], where: str, folder: Path) -> None:
    """A `harmonise` mapping from its file's rows: each source value (the `match` column) to the
    added columns' values. A value listed twice, or a column the file lacks, is an error."""
    listed = folder / harmonise.file
    needed = [harmonise.match, *(c.column for c in harmonise.columns.values())]
    missing = [c for c in dict.fromkeys(needed) if not rows or c not in rows[0]]
    if missing:
        raise ContractError(f"{where}: mapping file {listed} has no column {', '.join(map(repr, missing))}"
                            + (f" (its columns: {', '.join(rows[0])})" if rows else " (it has no rows)"))
    mapping: dict[str, dict[str, str]] = {}
    for row in rows:
        value = (row.get(harmonise.match) or "").strip()
        if not value:
            continue
        if value in mapping:
            raise ContractError(f"{where}: {value!r} is listed twice in column {harmonise.match!r} of {listed}; "
                                "each source value maps to one row")
        mapping[value] = {added: v.strip() for added, spec in harmonise.columns.items()
                          if (v := row.get(spec.column)) and v.strip()}
    if not mapping:
        raise ContractError(f"{where}: column {harmonise.match!r} of {listed} lists no values to map")
    harmonise._mapping = mapping


def load_contracts(folder: Path) -> list[Contract]:
    folder = Path(folder)
    # A code list's declaration (`<stem>.codelist.yaml`) sits beside its CSV file, and the research
    # queries (research_queries.yaml) beside the contracts: neither is a contract.
    files = [f for f in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
             if not f.name.endswith(DECLARATION_SUFFIX) and f.name != QUERIES_FILE]
    if not files:
        raise ContractError(f"no contracts (*.yaml) in {folder}; write one per source (see docs/contracts.md)")
    contracts = [load_contract(f) for f in files]
    seen: dict[str, Path] = {}
    for c in contracts:
        if c.source in seen:
            raise ContractError(f"source {c.source!r} is declared twice: {seen[c.source]} and {c.path}")
        seen[c.source] = c.path  # type: ignore[assignment]
    # A table is named source__table in every zone: 'a' with table 'b__c' and 'a__b' with table
    # 'c' would write one file, and one table would be lost.
    named: dict[str, str] = {}
    for c in contracts:
        for table in c.tables:
            key, where = c.table_key(table), f"table {table!r} of {c.path}"
            if key in named:
                raise ContractError(f"{named[key]} and {where} would both be stored as {key!r}; rename one "
                                    "of the tables (or sources), for example without a double underscore")
            named[key] = where
    return contracts
