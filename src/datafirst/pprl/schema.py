"""The linkage schema: what each party encodes and how, as a versioned YAML file both hold.

A schema names, per standardised identifier column, how it is cut into tokens, the size of its
Bloom filter, how many positions each token sets, the hardening, and the Dice levels the linker's
model compares it at; and the match keys (compound keys, hashed with the shared secret) the linker
blocks on. Its SHA-256 over the file's bytes, with the standardisation code's version, goes into
every encoded file, and the linker refuses files made under another schema or standardisation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..standardise.stage import CODE_SHA256, IDENTIFIER_COLUMNS
from ..validation import describe

SCHEMA_FORMAT = "datafirst-pprl/1"
DEFAULT_SCHEMA = Path(__file__).with_name("default_schema.yaml")
# The standardisation code's version written beside the schema's hash: both parties' identifiers
# must be cleaned by the same rules, or equal names would encode apart.
STANDARDISATION_VERSION = CODE_SHA256[:16]
# Columns a field or match key may read: the identifiers zone's, less those that are not identifiers.
ENCODABLE = tuple(c for c in IDENTIFIER_COLUMNS if c not in ("record_key", "source", "source_table", "flags"))
# Positions come from slices of a keyed SHA-256 digest, 16 bits each (see encode.py), so a filter
# holds at most 2^16 bits and its size is a power of two (no modulo bias).
MAX_BITS = 1 << 16


class SchemaError(Exception):
    """A schema file that cannot be used; the message names the file and the key."""


class Hardening(BaseModel):
    """How a field's filter is hardened against frequency and pattern-mining attacks.

    none: plain keyed filter. balance: the filter followed by its complement (every filter then
    has the same popcount, so its length leaks nothing). xor_fold: the two halves XORed (half the
    bits, each the parity of two). salt: every position also keyed by another column's value of
    the record (`salt`, e.g. year_of_birth), so one name encodes differently in each salt group."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["none", "balance", "xor_fold", "salt"] = "none"
    salt: str | None = None

    @model_validator(mode="after")
    def _salt_named(self) -> Hardening:
        if self.kind == "salt" and not self.salt:
            raise ValueError("kind salt needs `salt`: the column whose value keys the positions (e.g. year_of_birth)")
        if self.kind != "salt" and self.salt:
            raise ValueError(f"`salt` is only used with kind salt, not {self.kind}")
        if self.salt and self.salt not in ENCODABLE:
            raise ValueError(f"salt {self.salt!r} is not a standardised identifier column ({', '.join(ENCODABLE)})")
        return self


class EncodedField(BaseModel):
    """One encoded field: a standardised identifier column and its Bloom filter."""

    model_config = ConfigDict(extra="forbid")
    tokens: Literal["qgrams", "whole", "date_parts", "columns"] = "qgrams"
    q: int = Field(2, ge=1, le=5)
    pad: bool = True  # q-grams of "_name_": the first and last letters count as much as the others
    columns: list[str] | None = None  # tokens: columns: each column's value is one token (postcode parts)
    bits: int = 256
    hashes: int = Field(10, ge=1, le=64)  # positions each token sets
    hardening: Hardening | None = None  # the schema's default when not given
    dice_levels: list[float] = Field(default_factory=lambda: [1.0, 0.9, 0.8, 0.7])  # the model's levels
    tf: bool = False  # the model's exact level adjusted for how common the encoding is (names)
    # False: encoded but not a comparison of its own (a salt's filter, which says whether two
    # records' salted fields can be compared at all; comparing it too would count it twice).
    compare: bool = True

    @field_validator("bits")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 64 or v > MAX_BITS or v & (v - 1):
            raise ValueError(f"bits must be a power of two from 64 to {MAX_BITS} (got {v})")
        return v

    @field_validator("dice_levels")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < x <= 1 for x in v) or sorted(v, reverse=True) != v or len(set(v)) != len(v):
            raise ValueError("dice_levels: distinct Dice similarities in (0, 1], highest first")
        return v

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, v: list[str] | None) -> list[str] | None:
        for c in v or []:
            if c not in ENCODABLE:
                raise ValueError(f"{c!r} is not a standardised identifier column ({', '.join(ENCODABLE)})")
        return v


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["datafirst-pprl/1"]
    version: int = Field(ge=1)  # the schema's own version, raised by whoever changes it
    description: str = ""
    hardening: Hardening = Hardening()
    fields: dict[str, EncodedField]
    match_keys: dict[str, list[str]]
    # Match probabilities of the three person ids (as link.settings.Thresholds).
    thresholds: dict[Literal["high", "medium", "low"], float] = Field(
        default_factory=lambda: {"high": 0.999, "medium": 0.99, "low": 0.95})
    # Match keys whose pairs the prior counts as matches (each with all its fields' filters equal).
    deterministic: list[list[str]] = Field(default_factory=list)

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, EncodedField]) -> dict[str, EncodedField]:
        if not v:
            raise ValueError("at least one field")
        for name, f in v.items():
            if name not in ENCODABLE:
                raise ValueError(f"{name!r} is not a standardised identifier column ({', '.join(ENCODABLE)})")
            if f.tokens == "columns" and not f.columns:
                raise ValueError(f"{name}: tokens: columns needs `columns` (the columns whose values are its tokens)")
            if f.tokens == "date_parts" and name != "date_of_birth":
                raise ValueError(f"{name}: tokens: date_parts is for date_of_birth only")
        return v

    @field_validator("match_keys")
    @classmethod
    def _keys(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        if not v:
            raise ValueError("at least one match key (the linker blocks on them)")
        for name, cols in v.items():
            if not name.isidentifier():
                raise ValueError(f"match key name {name!r}: letters, digits and underscores only")
            if not cols:
                raise ValueError(f"{name}: name the columns whose values make the key")
            for c in cols:
                if c not in ENCODABLE:
                    raise ValueError(f"{name}: {c!r} is not a standardised identifier column ({', '.join(ENCODABLE)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Schema:
        t = self.thresholds
        if not (0 < t.get("low", 0) <= t.get("medium", 0) <= t.get("high", 0) < 1):
            raise ValueError("thresholds: 0 < low <= medium <= high < 1")
        for rule in self.deterministic:
            for f in rule:
                if f not in self.fields:
                    raise ValueError(f"deterministic: {f!r} is not an encoded field")
        for name, f in self.fields.items():
            h = self.hardening_of(name)
            if h.kind == "xor_fold" and f.bits < 128:
                raise ValueError(f"{name}: xor_fold halves the filter; give at least 128 bits")
        return self

    def hardening_of(self, field: str) -> Hardening:
        return self.fields[field].hardening or self.hardening

    def encoded_bits(self, field: str) -> int:
        """The bits of a field's filter as stored, after hardening."""
        bits, kind = self.fields[field].bits, self.hardening_of(field).kind
        return bits * 2 if kind == "balance" else bits // 2 if kind == "xor_fold" else bits

    def words(self, field: str) -> int:
        return self.encoded_bits(field) // 64

    def source_columns(self) -> set[str]:
        """The identifier columns encoding reads."""
        cols = set()
        for name, f in self.fields.items():
            cols |= set(f.columns or []) if f.tokens == "columns" else {name}
            if self.hardening_of(name).salt:
                cols.add(self.hardening_of(name).salt)
        for key in self.match_keys.values():
            cols |= set(key)
        return cols


class LoadedSchema:
    """A validated schema and the SHA-256 of its file's bytes (what both parties must share)."""

    def __init__(self, schema: Schema, sha256: str, path: Path):
        self.schema, self.sha256, self.path = schema, sha256, path


def load_schema(path: Path) -> LoadedSchema:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read the linkage schema ({exc.strerror or type(exc).__name__}); "
                          f"start from {DEFAULT_SCHEMA.name} (`datafirst encode --help`, docs/pprl.md)") from None
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SchemaError(f"{path}: a linkage schema holds keys (format, version, fields, match_keys); docs/pprl.md")
    try:
        schema = Schema.model_validate(raw)
    except ValidationError as exc:
        raise SchemaError(f"{path}: " + "; ".join(describe(exc, Schema))) from None
    return LoadedSchema(schema, hashlib.sha256(data).hexdigest(), path)
