"""Research queries: the questions researchers ask of a release, declared once as data in the
workspace's `contracts/research_queries.yaml` and published with each release (as
`research_queries.json`), so that a synthetic twin can be measured by the same figures as the
real release (reoffending by sex and age band, custody rates by court, ...).

Each query is one SELECT over release tables, by their release names, returning a row per cell:
its group columns, then `n` (the people or records the cell's figure is computed from, so that
small cells can be held back) and `value` (the figure).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..files import parse_yaml
from ..validation import describe
from .declared_sql import DeclaredSqlError, parse_query, query_tables

QUERIES_FILE = "research_queries.yaml"  # beside the contracts, and not a contract
RESULT_COLUMNS = ("n", "value")  # the last two columns of every query's rows, after its groups


class ResearchQueryError(Exception):
    """A research queries file that cannot be used; the message names the file and what to fix."""


class ResearchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the query's name: lower case letters, digits and underscores")
    description: str = Field(description="the question in words, and what `n` and `value` are")
    sql: str = Field(description="one SELECT over release tables returning group columns, then `n` and `value`")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not (value[0].isalpha() and value.islower() and value.replace("_", "").isalnum()):
            raise ValueError(f"a query's name must be lower case letters, digits and underscores, got {value!r}")
        return value

    @field_validator("description")
    @classmethod
    def _described(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("write the question in words, with what `n` and `value` are")
        return value

    @model_validator(mode="after")
    def _reads_only(self) -> "ResearchQuery":
        try:
            parse_query(self.sql)
        except DeclaredSqlError as exc:
            raise ValueError(f"query {self.name!r}: {exc}") from exc
        return self

    @property
    def tables(self) -> list[str]:
        """The release tables the query reads."""
        return query_tables(parse_query(self.sql))


class ResearchQueries(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[ResearchQuery] = Field(description="the research queries, each a name, description and sql")

    @field_validator("queries")
    @classmethod
    def _unique(cls, value: list[ResearchQuery]) -> list[ResearchQuery]:
        names = [q.name for q in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"query names are used twice: {', '.join(twice)}; give each query its own")
        return value


def load_research_queries(folder: Path) -> list[ResearchQuery]:
    """The queries of `folder/research_queries.yaml` (none when there is no such file)."""
    path = Path(folder) / QUERIES_FILE
    if not path.is_file():
        return []
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ResearchQueryError(f"research queries {path} are not UTF-8 text; save the file as UTF-8") from exc
    except yaml.YAMLError as exc:
        raise ResearchQueryError(f"research queries {path} are not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ResearchQueryError(f"research queries {path} must be a YAML mapping with `queries:` (a list of name, "
                                 "description, sql)")
    try:
        return ResearchQueries(**raw).queries
    except ValidationError as exc:
        problems = "\n".join(f"  {line}" for line in describe(exc, ResearchQueries))
        raise ResearchQueryError(f"research queries {path} are not valid:\n{problems}\n"
                                 "See docs/synth.md, \"Constraints and research queries\".") from exc
