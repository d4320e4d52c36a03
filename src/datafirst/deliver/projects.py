"""A research project's declaration: who it is for, under which approval, and what it may receive.

One YAML file per project (the governance staff's record of the decision). The registry keeps it
under `<workspace>/governance/projects/<id>.yaml`; its approval is bound to the file's SHA-256, so
an edit after approval needs a new approval. Each approved column carries its disclosure
treatment; a column not listed is not delivered.

    id: P0001
    title: Reoffending after a possession claim
    legal_basis: Digital Economy Act 2017, s.64 (research)
    approval_reference: RAP-2026-117
    tre: SRS                    # SRS | SAIL | other
    expires: 2027-12-31
    researchers: [a.researcher@uni.example]
    person_id: medium           # the person id threshold the project receives
    tables:
      magistrates__defendants:
        row_id_hash: keep
        person_id_medium: keep
        first_hearing_date: {coarsen: month}
        year_of_birth: {coarsen: age_band, reference_date: 2026-01-01, width: 10}
        postcode_district: {coarsen: area}
        ethnicity_2021_code: {coarsen: group}
        sex: keep
      civil__claims:
        arrears_amount: {top_code: 20000}
    disclosure:
      quasi_identifiers:
        magistrates__defendants: [sex, year_of_birth, first_hearing_date, postcode_district]
      sensitive:
        magistrates__defendants: [outcome]
      k: 5
      max_unique_share: 0.01
      max_suppressed_share: 0.02
"""

from __future__ import annotations

import getpass
import os
import re
from datetime import date
from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from datafirst.validation import describe

GOVERNANCE = "governance"
PROJECTS = "projects"
PROJECT_ID = r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"
TRES = ("SRS", "SAIL", "other")


class ProjectError(Exception):
    """A project file that cannot be read or does not validate; the message names the file and the key."""


class Coarsen(BaseModel):
    """Replace a value by a coarser one, in the engine:
    - `week`, `month`, `year`: a date to the first day of its week (Monday), month or year;
    - `age_band`: a year of birth to an age band at `reference_date`, `width` years wide ("30-39");
    - `area`: a postcode district to its area, the leading letters ("LS12" to "LS");
    - `group`: a code to its group, from the release's harmonised columns or code lists (e.g. an
      ethnicity 2021 code to its 5-group letter)."""
    model_config = ConfigDict(extra="forbid")

    coarsen: Literal["week", "month", "year", "age_band", "area", "group"]
    reference_date: date | None = Field(None, description="age_band: the date ages are counted at")
    width: int = Field(10, ge=1, le=50, description="age_band: years per band")

    @model_validator(mode="after")
    def _age_band_needs_a_date(self) -> "Coarsen":
        if self.coarsen == "age_band" and self.reference_date is None:
            raise ValueError("coarsen: age_band needs reference_date (the date ages are counted at, e.g. 2026-01-01)")
        return self


class TopCode(BaseModel):
    """A number above `top_code` becomes `top_code` (and below `bottom_code`, `bottom_code`)."""
    model_config = ConfigDict(extra="forbid")

    top_code: float
    bottom_code: float | None = None


class Band(BaseModel):
    """A number to the band it falls in, from increasing edges: [0, 1000, 5000] gives
    "<0", "0-999", "1000-4999", "5000+" (as text labels, ordered)."""
    model_config = ConfigDict(extra="forbid")

    band: list[float] = Field(min_length=1)

    @field_validator("band")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"band edges must increase; got {edges}")
        return edges


Treatment = Union[Literal["keep", "drop"], Coarsen, TopCode, Band]


class Disclosure(BaseModel):
    """What the project's package is measured on, and the limits it must meet to be delivered."""
    model_config = ConfigDict(extra="forbid")

    quasi_identifiers: dict[str, list[str]] = Field(
        default_factory=dict, description="per table, the columns an attacker could know (k-anonymity is over these)")
    sensitive: dict[str, list[str]] = Field(
        default_factory=dict, description="per table, the columns whose values must vary within a class (l-diversity)")
    k: int = Field(5, ge=1, description="smallest equivalence class allowed over the quasi-identifiers")
    l_diversity: int = Field(1, ge=1, description="fewest distinct sensitive values allowed in a class (1: not checked)")
    max_unique_share: float = Field(0.01, ge=0, le=1, description="largest share of rows unique on the quasi-identifiers")
    max_suppressed_share: float = Field(0.02, ge=0, le=1, description="largest share of rows whose quasi-identifiers "
                                        "may be suppressed to reach k")


class Project(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=PROJECT_ID, description="the project's id: a letter, then letters, digits, - or _")
    title: str = Field(min_length=1)
    legal_basis: str = Field(min_length=1, description="the legal gateway for the data sharing")
    approval_reference: str = Field(min_length=1, description="the approving panel's reference")
    tre: Literal["SRS", "SAIL", "other"]
    expires: date
    researchers: list[str] = Field(min_length=1, description="the approved researchers")
    person_id: Literal["high", "medium", "low"] = Field("medium", description="the person id threshold delivered")
    tables: dict[str, dict[str, Treatment]] = Field(
        min_length=1, description="per approved table, each approved column and its treatment")
    disclosure: Disclosure = Field(default_factory=Disclosure)

    def expired(self, today: date | None = None) -> bool:
        return (today or date.today()) > self.expires

    def delivered_columns(self, table: str) -> dict[str, Treatment]:
        """The columns of `table` that go into the package (every treatment but drop), in declared order."""
        return {c: t for c, t in self.tables.get(table, {}).items() if t != "drop"}


def parse_project(text: str, source: str) -> Project:
    """A project from YAML text; `source` (a path) names the file in every error."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProjectError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProjectError(f"{source}: a project file holds keys (id, title, tables, ...); see docs/deliver.md")
    try:
        return Project.model_validate(raw)
    except ValidationError as exc:
        raise ProjectError(f"{source}: " + "; ".join(describe(exc, Project))) from None


def load_project(path: Path) -> Project:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read the project file ({exc.strerror})") from None
    return parse_project(text, str(path))


def projects_folder(workspace: Path) -> Path:
    return workspace / GOVERNANCE / PROJECTS


def valid_id(project_id: str) -> bool:
    return re.match(PROJECT_ID, project_id) is not None


ACTOR_ENV = "DATAFIRST_USER"


def acting_as(by: str | None) -> str:
    """Who is acting: `--by`, else $DATAFIRST_USER, else the login name. Separation of duties compares
    these names; on a shared machine they are only as trustworthy as the accounts behind them
    (docs/deliver.md says so), and the audit log records each one."""
    name = (by or os.environ.get(ACTOR_ENV) or getpass.getuser() or "").strip()
    if not name:
        raise ProjectError(f"who is acting is unknown: give --by NAME or set {ACTOR_ENV}")
    return name
