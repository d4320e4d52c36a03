"""The declared recording-error model (error_rates.yaml), typed.

The YAML file is the single place where per-source, per-field error rates live; this
module only reads and validates it so that the generator, the realism table and the
tests all see the same numbers.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Every field's error kinds, in the order the generator draws them. The order matters for
# reproducibility only; kinds of one field are mutually exclusive on a record.
FIELD_KINDS: dict[str, tuple[str, ...]] = {
    "name": ("swap", "alias"),
    "forename": ("typo", "phonetic", "nickname", "variant", "initial_only", "missing"),
    "middle_names": ("dropped", "added"),
    "surname": ("typo", "phonetic", "variant", "double_barrel", "stale_surname"),
    "date_of_birth": ("day_month_swap", "digit_typo", "placeholder_jan1", "placeholder_1900", "missing"),
    "sex": ("wrong", "missing"),
    "postcode": ("stale", "typo", "placeholder", "missing"),
    "pnc": ("mistyped", "missing"),
    "rows": ("duplicate_row", "impossible_date", "wrong_column_count", "broken_bytes", "invalid_json"),
}

# Whole-row defects that make a row unloadable (a loader must quarantine these).
MALFORMED_KINDS = ("impossible_date", "wrong_column_count", "broken_bytes", "invalid_json")


class SourceErrorRates(BaseModel):
    """Rates for one source: field -> kind -> share of the source's records."""

    model_config = ConfigDict(extra="forbid")
    fields: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _known_fields_and_kinds(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for field, kinds in value.items():
            if field not in FIELD_KINDS:
                raise ValueError(f"unknown field {field!r}; known fields: {sorted(FIELD_KINDS)}")
            for kind, rate in kinds.items():
                if kind not in FIELD_KINDS[field]:
                    raise ValueError(f"unknown error kind {kind!r} for field {field!r}; known: {FIELD_KINDS[field]}")
                if not 0.0 <= rate <= 1.0:
                    raise ValueError(f"rate for {field}.{kind} must be between 0 and 1, got {rate}")
            if sum(kinds.values()) > 1.0:
                raise ValueError(f"rates of {field!r} add up to more than 1")
        return value

    def rate(self, field: str, kind: str) -> float:
        return self.fields.get(field, {}).get(kind, 0.0)

    def kinds(self, field: str) -> list[tuple[str, float]]:
        """(kind, rate) for the field, in the generator's drawing order, zero rates left out."""
        declared = self.fields.get(field, {})
        return [(k, declared[k]) for k in FIELD_KINDS[field] if declared.get(k, 0.0) > 0.0]


class ErrorModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: dict[str, SourceErrorRates]

    def for_source(self, source: str) -> SourceErrorRates:
        return self.sources.get(source, SourceErrorRates())

    def rows(self) -> list[dict[str, object]]:
        """Flat (source, field, kind, rate) rows, for reports and docs."""
        return [
            {"source": s, "field": f, "kind": k, "rate": r}
            for s, rates in self.sources.items()
            for f, kinds in rates.fields.items()
            for k, r in kinds.items()
        ]


def parse_error_model(text: str) -> ErrorModel:
    raw = yaml.safe_load(text)
    return ErrorModel(sources={name: SourceErrorRates(fields=fields) for name, fields in raw["sources"].items()})


@lru_cache(maxsize=1)
def default_error_model() -> ErrorModel:
    text = resources.files("datafirst.world").joinpath("error_rates.yaml").read_text(encoding="utf-8")
    return parse_error_model(text)
