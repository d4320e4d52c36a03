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

import difflib
import getpass
import json
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from datafirst.files import file_sha256
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
    """Who is acting: `--by`, else $DATAFIRST_USER, else the login name, else the user id (a
    container with no passwd entry). Separation of duties compares these names; on a shared
    machine they are only as trustworthy as the accounts behind them (docs/deliver.md says so),
    and the audit log records each one."""
    name = (by or os.environ.get(ACTOR_ENV) or "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


# --- the registry -------------------------------------------------------------------------------
# Each project's YAML is kept as requested (byte for byte), beside a status file recording every
# decision: who requested it and when, who approved it (never the requester) and the SHA-256 of
# the YAML the approval covers, who expired it. A YAML edited after approval no longer matches
# that digest, so nothing is delivered for it until someone approves the edit.

REQUESTED, APPROVED, EXPIRED = "requested", "approved", "expired"
STATUS_SUFFIX = ".status.json"


@dataclass
class ProjectRecord:
    """A registered project and its decisions (`history`: every action, oldest first)."""

    project: Project
    path: Path  # the registered YAML
    status: str  # requested, approved or expired, as recorded
    history: list[dict]
    yaml_sha256: str  # of the YAML as it is now

    @property
    def requested_by(self) -> str:
        return self.history[0]["by"]

    @property
    def approval(self) -> dict | None:
        """The latest approval, when the project is approved."""
        if self.status != APPROVED:
            return None
        return next(e for e in reversed(self.history) if e["action"] == "approved")

    @property
    def edited_since_approval(self) -> bool:
        approval = self.approval
        return approval is not None and approval["sha256"] != self.yaml_sha256

    def effective_status(self, today: date | None = None) -> str:
        """What the project may receive now: `expired` once recorded so or past its expiry date;
        `approved` only while the YAML is the one approved (else `edited since approval`)."""
        if self.status == EXPIRED or self.project.expired(today):
            return EXPIRED
        if self.edited_since_approval:
            return "edited since approval"
        return self.status


def _status_path(workspace: Path, project_id: str) -> Path:
    return projects_folder(workspace) / f"{project_id}{STATUS_SUFFIX}"


def _yaml_path(workspace: Path, project_id: str) -> Path:
    return projects_folder(workspace) / f"{project_id}.yaml"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_atomically(path: Path, data: bytes) -> None:
    """A crash leaves the old file or the new, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def registered_ids(workspace: Path) -> list[str]:
    folder = projects_folder(workspace)
    return sorted(p.name[:-len(STATUS_SUFFIX)] for p in folder.glob(f"*{STATUS_SUFFIX}")) if folder.is_dir() else []


def get_project(workspace: Path, project_id: str) -> ProjectRecord:
    """A registered project, or ProjectError naming the ones there are (and the closest)."""
    status = _status_path(workspace, project_id)
    if not status.is_file():
        known = registered_ids(workspace)
        close = difflib.get_close_matches(project_id, known, n=1, cutoff=0.6)
        hint = (f"; did you mean `{close[0]}`?" if close else
                f"; the projects here are: {', '.join(known)}" if known else
                "; none is registered yet: `datafirst project add FILE`")
        raise ProjectError(f"no project {project_id!r} in {projects_folder(workspace)}{hint}")
    path = _yaml_path(workspace, project_id)
    try:
        recorded = json.loads(status.read_text(encoding="utf-8"))
        history = recorded["history"]
        state = recorded["status"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProjectError(f"{status} is unreadable ({exc.__class__.__name__}); it is written only by datafirst: "
                           "restore it from a backup") from None
    project = load_project(path)
    if project.id != project_id:
        raise ProjectError(f"{path}: its id is {project.id!r}, not {project_id!r} as registered: put the id back "
                           "(a project's id never changes; register a new project for a new id)")
    return ProjectRecord(project, path, state, history, file_sha256(path))


def _record(workspace: Path, record: ProjectRecord, status: str, entry: dict) -> ProjectRecord:
    history = [*record.history, entry]
    _write_atomically(_status_path(workspace, record.project.id),
                      json.dumps({"id": record.project.id, "status": status, "history": history}, indent=2).encode())
    return ProjectRecord(record.project, record.path, status, history, record.yaml_sha256)


def add_project(workspace: Path, source: Path, by: str) -> ProjectRecord:
    """Register the project in `source` as requested by `by`: its YAML is copied as it is into
    the registry. Refused when it does not validate or its id is registered already."""
    project = load_project(source)
    folder = projects_folder(workspace)
    if _status_path(workspace, project.id).exists() or _yaml_path(workspace, project.id).exists():
        raise ProjectError(f"{source}: a project {project.id!r} is registered already ({_yaml_path(workspace, project.id)}"
                           f"); a project's id is its own for good: give this one another id, or see "
                           f"`datafirst project show {project.id}`")
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    _write_atomically(_yaml_path(workspace, project.id), data)
    record = ProjectRecord(project, _yaml_path(workspace, project.id), REQUESTED, [], file_sha256(_yaml_path(
        workspace, project.id)))
    return _record(workspace, record, REQUESTED, {"action": "requested", "by": by, "at": _now(),
                                                  "sha256": record.yaml_sha256})


def approve_project(workspace: Path, project_id: str, by: str) -> ProjectRecord:
    """Approve a requested project (or an approved one whose YAML was edited since), binding the
    approval to the YAML's SHA-256. Refused for the person who requested it (separation of
    duties), and for an expired project."""
    record = get_project(workspace, project_id)
    if by == record.requested_by:
        raise ProjectError(f"{by} requested project {project_id}, so cannot approve it: another person must "
                           "(separation of duties; give --by NAME or set DATAFIRST_USER as the approver)")
    if record.effective_status() == EXPIRED:
        raise ProjectError(f"project {project_id} has expired ({record.project.expires}); an expired project is not "
                           "approved again: register a new project (a new id) for further work")
    if record.status == APPROVED and not record.edited_since_approval:
        approval = record.approval
        raise ProjectError(f"project {project_id} is approved already (by {approval['by']} at {approval['at']}), "
                           "and its file has not changed since")
    return _record(workspace, record, APPROVED, {"action": "approved", "by": by, "at": _now(),
                                                 "sha256": record.yaml_sha256})


def expire_project(workspace: Path, project_id: str, by: str) -> ProjectRecord:
    """End a project: nothing more is delivered to it."""
    record = get_project(workspace, project_id)
    if record.status == EXPIRED:
        raise ProjectError(f"project {project_id} was expired already")
    return _record(workspace, record, EXPIRED, {"action": "expired", "by": by, "at": _now(),
                                                "sha256": record.yaml_sha256})


def list_projects(workspace: Path) -> list[ProjectRecord]:
    return [get_project(workspace, p) for p in registered_ids(workspace)]


def require_approved(workspace: Path, project_id: str, today: date | None = None) -> ProjectRecord:
    """The project, if it may receive data or have outputs checked now: registered, approved for its
    file as it is now, and not expired; else ProjectError saying why and what to do."""
    record = get_project(workspace, project_id)
    status = record.effective_status(today)
    if status == EXPIRED:
        when = "recorded so" if record.status == EXPIRED else f"on {record.project.expires}"
        raise ProjectError(f"project {project_id} has expired ({when}): nothing more is delivered to it, and no "
                           "more outputs are checked for it")
    if record.edited_since_approval:
        approval = record.approval
        raise ProjectError(f"project {project_id}'s file {record.path} was edited after its approval (by "
                           f"{approval['by']} at {approval['at']}): its SHA-256 is no longer the one approved. "
                           f"Someone other than its requester must approve it again: datafirst project approve "
                           f"{project_id}")
    if record.status != APPROVED:
        raise ProjectError(f"project {project_id} is {record.status}, not approved: someone other than its requester "
                           f"({record.requested_by}) must approve it first (datafirst project approve {project_id})")
    return record
