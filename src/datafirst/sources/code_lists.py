"""Code lists: the CSV files contracts name in `allowed: {file, column}`, with their declarations.

A code list is a CSV file beside the contracts (courts, offences, ethnic groups ...). What it is
is declared in a YAML file beside it with the same stem, `<stem>.codelist.yaml` (docs/contracts.md,
"Code lists in a file"): its name, key column, label columns, what each column means, where the
list comes from, under which licence, and which version. A release publishes every code list a
released column uses as a reference table (`code_list__<name>`) with that metadata. A list
without a declaration still works: it is named after its file, keyed by its first column, and
the release says that its source and licence are not declared.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..files import parse_yaml
from ..validation import describe

DECLARATION_SUFFIX = ".codelist.yaml"  # not a contract: load_contracts leaves these files out
RELEASED_PREFIX = "code_list__"  # a code list's table in a release: code_list__<name>


class CodeListError(Exception):
    """A code list file or its declaration that cannot be used; the message names the file."""


class Reference(BaseModel):
    """Where a list comes from, or its licence: the Data Package spec's `sources` and `licenses` items."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(description="what it is, in words")
    path: str | None = Field(None, description="a URL where it is published or described")
    name: str | None = Field(None, description="licences: the licence's identifier (SPDX or Open Definition id)")

    def as_json(self) -> dict:
        return {k: v for k, v in (("name", self.name), ("title", self.title), ("path", self.path)) if v}


class Declaration(BaseModel):
    """`<stem>.codelist.yaml`: what a code list file is."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="the list's name (default: the file's stem); released as "
                                               "code_list__<name>")
    description: str = Field(description="what the list holds, and how far it can be relied on")
    key: str = Field(description="the column whose values are the codes (unique, never empty)")
    labels: list[str] = Field(default_factory=list, description="columns that describe each code (a name, a title)")
    columns: dict[str, str] = Field(default_factory=dict, description="what each column means")
    source: Reference = Field(description="where the list comes from: {title, path}")
    licence: Reference = Field(description="the licence it is published under: {name, title, path}")
    version: str | None = Field(None, description="the list's version or date, as its publisher gives it")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _usable_name(value):
            raise ValueError(f"a code list's name is lower case letters, digits and single underscores, starting "
                             f"with a letter (it names a release table); got {value!r}")
        return value


def _usable_name(name: str) -> bool:
    return bool(name) and name[0].isascii() and name[0].islower() and "__" not in name and all(
        c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in name)


@dataclass
class CodeList:
    """A code list as read: its rows and what its declaration says (or the defaults)."""

    name: str
    file: str  # relative to the contracts folder, as contracts name it
    path: Path
    header: list[str]
    rows: list[tuple[str, ...]]  # every row, each value trimmed ('' when empty)
    key: str
    labels: list[str] = field(default_factory=list)
    meanings: dict[str, str] = field(default_factory=dict)
    description: str = ""
    source: Reference | None = None
    licence: Reference | None = None
    version: str | None = None
    declared_in: str | None = None  # the declaration file, when there is one

    @property
    def table(self) -> str:
        """The name of its reference table in a release."""
        return RELEASED_PREFIX + self.name

    def values(self, column: str) -> list[str]:
        """The non-empty values of a column, each once, in file order."""
        i = self.header.index(column)
        return list(dict.fromkeys(r[i] for r in self.rows if r[i]))

    def metadata(self) -> dict:
        """What the dictionary and the data package say of the list."""
        return {"name": self.name, "file": self.file, "declared_in": self.declared_in, "key": self.key,
                "labels": self.labels, "description": self.description,
                "source": self.source.as_json() if self.source else None,
                "licence": self.licence.as_json() if self.licence else None, "version": self.version}


def declaration_path(path: Path) -> Path:
    """Where the declaration of the code list file `path` is: beside it, `<stem>.codelist.yaml`."""
    return path.with_name(path.stem + DECLARATION_SUFFIX)


def read_code_list(folder: Path, file: str) -> CodeList:
    """The code list file `file` (relative to `folder`, the contracts folder) and its declaration."""
    path = folder / file
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = list(csv.reader(f))
    except FileNotFoundError as exc:
        raise CodeListError(f"code list file {path} not found; keep it beside the contract") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CodeListError(f"code list file {path} is not a UTF-8 CSV file ({exc})") from exc
    lines = [line for line in lines if any(v.strip() for v in line)]
    header = [h.strip() for h in lines[0]] if lines else []
    rows = [tuple(v.strip() for v in (line + [""] * len(header))[:len(header)]) for line in lines[1:]]
    declared = _read_declaration(declaration_path(path))
    if declared is None:
        if not _usable_name(path.stem.lower()):
            raise CodeListError(f"code list file {path}: its name {path.stem!r} cannot name a release table; declare "
                                f"`name` in {declaration_path(path).name} beside it (docs/contracts.md)")
        code_list = CodeList(path.stem.lower(), file, path, header, rows, key=header[0] if header else "")
    else:
        code_list = CodeList(declared.name or path.stem.lower(), file, path, header, rows, declared.key,
                             declared.labels, declared.columns, declared.description, declared.source,
                             declared.licence, declared.version, declaration_path(path).name)
        if not _usable_name(code_list.name):
            raise CodeListError(f"{declaration_path(path)}: the list's name defaults to the file's stem "
                                f"{path.stem!r}, which cannot name a release table; declare `name`")
        unknown = [c for c in [declared.key, *declared.labels, *declared.columns] if c not in header]
        if unknown:
            raise CodeListError(f"{declaration_path(path)}: {', '.join(repr(c) for c in dict.fromkeys(unknown))} "
                                f"not a column of {path.name} (its columns: {', '.join(header)})")
    _check_key(code_list, declared is not None)
    return code_list


def _read_declaration(path: Path) -> Declaration | None:
    if not path.is_file():
        return None
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CodeListError(f"code list declaration {path} is not valid YAML text: {exc}") from exc
    if not isinstance(raw, dict):
        raise CodeListError(f"code list declaration {path} must be a YAML mapping (description, key, source, "
                            "licence ...; docs/contracts.md)")
    try:
        return Declaration(**raw)
    except ValidationError as exc:
        problems = "\n".join(f"  {line}" for line in describe(exc, Declaration))
        raise CodeListError(f"code list declaration {path} is not valid:\n{problems}\nSee docs/contracts.md.") \
            from exc


def _check_key(code_list: CodeList, declared: bool) -> None:
    """The key column's values are the codes: each row has one, and no two rows the same."""
    if not code_list.rows:
        return  # the contract's reader says the list is empty, naming the column
    i = code_list.header.index(code_list.key)
    counts = Counter(r[i] for r in code_list.rows)
    repeated = next((v for v, n in counts.items() if n > 1), None)
    if "" in counts or repeated is not None:
        where = (f"the key `{code_list.key}` declared in {code_list.declared_in}" if declared else
                 f"its first column `{code_list.key}` (the key of a list without a declaration)")
        what = "is empty in a row" if "" in counts else f"repeats {repeated!r}"
        raise CodeListError(f"code list file {code_list.path}: {where} {what}; the key must be unique in every row"
                            + ("" if declared else f"; declare `key` in {declaration_path(code_list.path).name}"))
