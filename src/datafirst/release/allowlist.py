"""Release by allow-list: what each released column may hold, declared before any value is seen.

Every column of every product is declared with a kind: a code from a declared code list, a
date, a number with a range, a hashed id, a flag, or (only when a contract says so) free text.
A source's columns are declared in its contract with the keys contracts already have (`allowed`,
`type` with `min`/`max`, `native_id`, `free_text`); the columns the release derives (person ids,
year of birth, event dates, counts, flags ...) are declared where the products are defined
(`products.py`). A content column its contract does not declare is withheld, and the release
notes say what to declare. Values outside a declaration are emptied as the product is written
(and counted), and a written table whose values still break a declaration is refused: a
declaration is what a column may hold, not a description of what it happened to hold.

The privacy guard (`privacy.py`) still reads every released value: it is the second line, for
the free text a contract allowed and for a code list that itself holds something personal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

from ..engine import Engine
from ..engine.sql import sql_string
from ..sources.contract import Column, Contract
from .profile import ranged_type

KINDS = ("code", "date", "number", "hashed_id", "flag", "free_text")


class UndeclaredColumn(Exception):
    """A product column with no declaration: a bug in the product's definition."""


@dataclass(frozen=True)
class Declared:
    """What a released column may hold."""

    kind: str
    values: tuple[str, ...] | None = None  # code: the code list
    # code: a shape, for a derived code whose list is open but coarse by construction (a postcode
    # district); the values are those of the shape only
    pattern: str | None = None
    min: float | date | None = None  # number, date: the smallest value allowed (None: no limit)
    max: float | date | None = None
    where: str = ""  # where it is declared: a contract ('magistrates.yaml') or 'products.py'
    listed_in: str | None = None  # code: the code list's file, when the contract names one
    # code: the release's reference table holding that code list, and its column the codes are from
    code_list: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; one of {KINDS}")
        if self.kind == "code" and (self.values is None) == (self.pattern is None):
            raise ValueError("a code is declared with its code list or (derived codes only) its shape")

    def describe(self) -> str:
        """The declaration in words, for the data dictionary."""
        if self.kind == "code":
            if self.values is None:
                return f"code of the shape {self.pattern}"
            listed = f" in {self.listed_in}" if self.listed_in else ""
            return f"code from a list of {len(self.values):,}{listed}"
        if self.kind in ("number", "date"):
            bounds = (f"{_shown(self.min)} to {_shown(self.max)}" if self.min is not None and self.max is not None
                      else f"at least {_shown(self.min)}" if self.min is not None
                      else f"at most {_shown(self.max)}" if self.max is not None else "any")
            return f"{self.kind}, {bounds}"
        return {"hashed_id": "keyed hash of an id", "flag": "true or false",
                "free_text": "free text (declared so in its contract; checked by the privacy guard)"}[self.kind]

    def as_json(self) -> dict:
        out: dict = {"kind": self.kind, "declared_in": self.where, "rule": self.describe()}
        if self.values is not None:
            out["values"] = list(self.values)  # the code list itself: researchers read the codes here
        if self.code_list is not None:
            out["code_list"] = {"table": self.code_list[0], "column": self.code_list[1]}
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.min is not None:
            out["min"] = _shown(self.min)
        if self.max is not None:
            out["max"] = _shown(self.max)
        return out


def _shown(bound: float | date | None) -> str | float | int | None:
    if isinstance(bound, float) and bound.is_integer():
        return int(bound)
    return bound.isoformat() if isinstance(bound, date) else bound


# Derived columns' declarations, shared by the products that hold them (products.py).
HASHED_ID = Declared("hashed_id", where="products.py")
FLAG = Declared("flag", where="products.py")


def code(values: list[str] | tuple[str, ...]) -> Declared:
    return Declared("code", values=tuple(sorted(set(values))), where="products.py")


def number(low: float | None, high: float | None) -> Declared:
    return Declared("number", min=low, max=high, where="products.py")


def dates(low: date | None, high: date | None) -> Declared:
    return Declared("date", min=low, max=high, where="products.py")


def contract_column(contract: Contract, col: Column) -> Declared | str:
    """A content column's declaration from its contract, or why it is withheld and what to
    declare (a native id is declared as the hashed id the release holds in its place)."""
    where = contract.path.name if contract.path is not None else f"the {contract.source} contract"
    if col.native_id:
        return Declared("hashed_id", where=where)
    if col.free_text:
        return Declared("free_text", where=where)
    if col.allowed:
        return Declared("code", values=tuple(col.allowed), where=where, listed_in=col.allowed_from,
                        code_list=(col.code_list[0].table, col.code_list[1]) if col.code_list else None)
    if col.type == "boolean":
        return Declared("flag", where=where)
    if col.type == "date":
        return Declared("date", min=col.min, max=col.max, where=where)
    if col.type in ("integer", "decimal"):
        if col.min is None or col.max is None:
            return (f"a number without a range: declare its plausible `min` and `max` in {where} (values outside "
                    "are quarantined at ingest)")
        return Declared("number", min=col.min, max=col.max, where=where)
    return (f"text with no code list: declare `allowed` in {where} (the codes, or a code list file beside the "
            "contract), or `free_text: true` once reviewed (free text is released only after the privacy guard)")


def _literal(bound: float | date) -> str:
    return f"DATE '{bound.isoformat()}'" if isinstance(bound, date) else repr(float(bound))


def within_sql(expr: str, declared: Declared) -> str | None:
    """A condition true for the values the declaration allows (None: nothing to enforce in SQL)."""
    if declared.kind == "code" and declared.values is not None:
        return f"{expr} IN ({', '.join(sql_string(v) for v in declared.values)})"
    if declared.kind in ("number", "date"):
        parts = ([f"{expr} >= {_literal(declared.min)}"] if declared.min is not None else []) + \
                ([f"{expr} <= {_literal(declared.max)}"] if declared.max is not None else [])
        return " AND ".join(parts) or None
    return None


def suppressed_sql(expr: str, declared: Declared) -> str:
    """`expr`, emptied where it is outside the declaration."""
    condition = within_sql(expr, declared)
    return expr if condition is None else f"CASE WHEN {condition} THEN {expr} END"


def missing_counts(engine: Engine, path: Path, columns: list[str]) -> dict[str, int]:
    """Empty values per column of a Parquet file: from its footer's statistics where every row
    group has them (no scan), else counted."""
    meta = pq.read_metadata(path)
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    out: dict[str, int] = {}
    for col in columns:
        if col not in names:
            continue
        i = names.index(col)
        stats = [meta.row_group(g).column(i).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_null_count for s in stats):
            out[col] = sum(s.null_count for s in stats)
    rest = [c for c in columns if c not in out and c in names]
    if rest:
        row = engine.execute("SELECT " + ", ".join(f'count(*) - count("{c}")' for c in rest)
                             + f" FROM read_parquet({sql_string(path)})")[0]
        out.update({c: int(n) for c, n in zip(rest, row)})
    return out


def violations(name: str, profile: dict[str, dict], declared: dict[str, Declared]) -> list[str]:
    """How a written table breaks its declarations (empty when it keeps them), from its profile
    (`profile.table_profile`): no column may go undeclared, and every value must fit."""
    problems = []
    for col, f in profile.items():
        d = declared.get(col)
        if d is None:
            problems.append(f"{name}.{col}: no declaration of what it may hold (code, date, number, hashed id, flag "
                            "or free text): a product column without one is a bug in release/products.py; the "
                            "release refuses it")
            continue
        broken = _broken(f, d)
        if broken:
            problems.append(f"{name}.{col}: declared as {d.describe()} ({d.where}) but {broken}")
    return problems


def _broken(f: dict, d: Declared) -> str | None:
    ctype = f["type"]
    if d.kind == "hashed_id":
        if ctype != "VARCHAR":
            return f"is of type {ctype}"
        return f"{len(f['checked_values']):,} distinct values are not keyed hashes" if f["checked_values"] else None
    if d.kind == "flag":
        return None if ctype == "BOOLEAN" else f"is of type {ctype}"
    if d.kind == "free_text":
        return None if ctype == "VARCHAR" else f"is of type {ctype}"
    if d.kind == "code":
        if ctype not in ("VARCHAR", "VARCHAR[]"):
            return f"is of type {ctype}"
        values = f["checked_values"]
        # A hash-shaped value is left out of `checked_values`; a code list holds none.
        hidden = f["distinct_values"] - len(values) if ctype == "VARCHAR" else 0
        if d.values is not None:
            outside = [v for v in values if v not in set(d.values)]
        else:
            outside = [v for v in values if not re.fullmatch(d.pattern, v)]
        if outside or hidden > 0:
            return f"holds {len(outside) + max(hidden, 0):,} distinct values outside it"
        return None
    if d.kind == "date" and ctype != "DATE":
        return f"is of type {ctype}"
    if d.kind == "number" and not (ranged_type(ctype) and ctype != "DATE"):
        return f"is of type {ctype}"
    low, high = f.get("min"), f.get("max")
    if d.min is not None and low is not None and low < d.min:
        return f"holds values below {_shown(d.min)}"
    if d.max is not None and high is not None and high > d.max:
        return f"holds values above {_shown(d.max)}"
    return None


def suppressed_counts(engine: Engine, content: Path, columns: list[str], profile: dict[str, dict],
                      harmonised: dict[str, str] | None = None) -> dict[str, int]:
    """Values emptied per column as a product was written (its empty values against those of its
    content file, which has the same rows); and for each column a contract's `harmonise` adds
    (`harmonised`: added column -> source column), the source values it left empty for having no
    row in the mapping (those emptied in the source column itself are counted there)."""
    harmonised = harmonised or {}
    before = missing_counts(engine, content, list(dict.fromkeys([*columns, *harmonised.values()])))
    out = {c: profile[c]["missing"] - before[c] for c in columns if c in before and c in profile}
    out.update({added: profile[added]["missing"] - before[source] - out.get(source, 0)
                for added, source in harmonised.items() if added in profile and source in before})
    return out
