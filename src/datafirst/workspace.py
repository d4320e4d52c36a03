"""A workspace: one folder holding a run's config, contracts, zones, reports and releases.

Everything in it is reproducible from the config, the contracts, the extracts and the
secrets (which never live here).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar

try:  # POSIX (Linux, macOS); elsewhere the workspace is not locked (see Workspace.lock)
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms datafirst is tested on
    fcntl = None

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .files import parse_yaml
from .standardise.cleaning import PLACEHOLDER_DATES, YEAR_ONLY_DATES
from .validation import describe

CONFIG_FILE = "datafirst.yaml"
LOCK_FILE = ".datafirst.lock"
# What a stage writes beside its final folder (zones and releases are written in full and then
# renamed into place): left behind only by a process that was killed part-way.
LEFTOVER = re.compile(r"^\.[^/]+\.(partial|old)-[0-9]+$|^\.ledger\.json\.[0-9]+$")


# A memory size both engines read alike: a whole number of MB or GB (Spark's JVM takes no
# fractions, percentages or GiB).
MEMORY_SIZE = r"^[1-9][0-9]*\s*(MB|GB)$"


def memory_mb(size: str) -> int:
    """A `memory_limit` (see MEMORY_SIZE) in MB."""
    number, unit = re.match(r"^([0-9]+)\s*(MB|GB)$", size).groups()
    return int(number) * (1000 if unit == "GB" else 1)


class WorkspaceError(Exception):
    """A workspace that cannot be used; the message says what to do."""


class WorkspaceBusy(WorkspaceError):
    """Another process is working on the workspace."""


# Locks held, by lock file and thread -> [open file, depth]. A stage called inside `datafirst run`
# takes the lock its thread already holds; another thread of the process opens the file again,
# and flock refuses that second descriptor as it would another process's.
_held: dict[tuple[str, int], list] = {}
_held_guard = threading.Lock()


class ThresholdConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    high: float = 0.999
    medium: float = 0.99
    low: float = 0.95

    @model_validator(mode="after")
    def _ordered(self) -> "ThresholdConfig":
        if not 0 < self.low <= self.medium <= self.high < 1:
            raise ValueError(f"thresholds are match probabilities with 0 < low <= medium <= high < 1; got low "
                             f"{self.low}, medium {self.medium}, high {self.high}")
        return self


class JourneySpec(BaseModel):
    """Where the two ends of a case journey are, in the content zone."""

    model_config = ConfigDict(extra="forbid")

    crown_table: str = "crown__defendants"
    crown_case: str = "case_number"
    crown_reference: str = "magistrates_case_ref"
    crown_date: str = "receipt_date"
    crown_offence: str = "main_offence_code"
    mags_table: str = "magistrates__defendants"
    mags_case: str = "case_id"
    mags_date: str = "first_hearing_date"
    mags_sent_flag: str = "sent_to_crown_court"
    offences_table: str = "magistrates__offences"
    offences_case: str = "case_id"
    offences_code: str = "offence_code"


class ComparisonBudget(BaseModel):
    """How many candidate pairs a link may score (link/blocking.py): checked before scoring, on
    Splink's sampled per-rule counts, at training (rules over it are narrowed or left out) and at
    linking (refused)."""

    model_config = ConfigDict(extra="forbid")

    pairs_per_record: float = Field(20.0, gt=0, description="candidate pairs per record, now and at `growth` times "
                                    "the records (pairs of a rule on keys that do not grow with the data grow with "
                                    "the square of the records)")
    max_pairs: int | None = Field(None, gt=0, description="candidate pairs a run may score at most, whatever the "
                                  "records (e.g. what the machine scores in the time you have); default: no cap")
    growth: float = Field(10.0, ge=1, description="how many times the records the rules must still fit the budget "
                          "at (projected from the model: true pairs grow with the records, the others with their "
                          "square)")


class LinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: ThresholdConfig = Field(default_factory=ThresholdConfig,
                                        description="match probabilities of the three named person ids")
    blocking_rules: list[list[str]] | None = Field(
        None, description="prediction blocking rules, each a list of identifier columns that must be equal; "
                          "default: rules chosen from the roles present")
    comparison_budget: ComparisonBudget = Field(default_factory=ComparisonBudget,
                                                description="candidate pairs a run may score (docs/linkage.md)")
    settings_file: Path | None = Field(
        None, description="a Splink settings JSON (comparisons, blocking_rules_to_generate_predictions) to train "
                          "instead of the default model built from the roles; relative to the workspace")
    training_rules: list[list[str]] | None = Field(
        None, description="EM training sessions, each a list of columns held equal; default: chosen from the roles")
    journey: JourneySpec = Field(default_factory=JourneySpec, description="where the case journey's two ends are")
    predict_chunk_pairs: int = Field(50_000_000, gt=1000, description="score candidate pairs in slices of records "
                                     "holding about this many pairs each (bounds the engine's memory and spill on "
                                     "large data)")
    training_records: int = Field(1_000_000, gt=1000, description="train on a fixed random sample of at most this "
                                  "many records (EM work grows with their square; the estimates do not need more)")
    training_pairs: int = Field(5_000_000, gt=1000, description="an EM session scores at most about this many pairs "
                                "of its block (Splink's hash sample of the block's records past it)")


class DateOfBirthConfig(BaseModel):
    """The domain choices behind cleaning dates of birth (standardise/cleaning.py, DobRules); a
    contract's date_of_birth column can set its own."""

    model_config = ConfigDict(extra="forbid")

    earliest: date | None = Field(None, description="the earliest plausible date of birth; earlier dates are "
                                                    "emptied (default: no limit)")
    placeholder_dates: list[date] = Field(default_factory=lambda: [date.fromisoformat(d) for d in PLACEHOLDER_DATES],
                                          description="dates that mean 'not known'")
    year_only_dates: list[str] = Field(default_factory=lambda: list(YEAR_ONLY_DATES),
                                       description="month-day pairs written when only the year is known")

    @field_validator("year_only_dates")
    @classmethod
    def _month_days(cls, value: list[str]) -> list[str]:
        for day in value:
            if not re.match(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$", day):
                raise ValueError(f"year_only_dates takes month-day pairs such as '01-01', got {day!r}")
        return value


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    volume_change_limit: float = Field(
        0.2, gt=0, description="a table whose rows landed fall or rise by more than this share against the load "
                               "the latest release was made from holds the release back until accepted "
                               "(--accept-volume-change); the data quality report alerts on the same rule")


class StandardiseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date_of_birth: DateOfBirthConfig = Field(default_factory=DateOfBirthConfig)


class ReleaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    privacy_allow: dict[str, str] = Field(
        default_factory=dict, description="columns the privacy guard may skip, each a reviewed decision: "
                                          "'table.column: the reason' (the release notes list every one)")
    small_count: int = Field(10, ge=1, description="counts below this are suppressed in released quality summaries")

    @field_validator("privacy_allow", mode="before")
    @classmethod
    def _exemptions_with_reasons(cls, value: object) -> object:
        if isinstance(value, list):
            shown = "".join(f"\n    {v}: <why this column is safe to release unchecked>" for v in value[:3]) or \
                "\n    magistrates__offences.offence_title: <why this column is safe to release unchecked>"
            raise ValueError("release.privacy_allow is a mapping of 'table.column' to the reason the column may skip "
                             "the privacy guard (every exemption needs a reason, and the release notes list it), not "
                             f"a list. Write it as:\n  privacy_allow:{shown}")
        if isinstance(value, dict):
            for key, reason in value.items():
                if not isinstance(key, str) or not re.match(r"^[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_ ]*$", key):
                    raise ValueError(f"release.privacy_allow: {key!r} is not 'table.column' (a release table's name, "
                                     "such as magistrates__offences, a dot and one of its columns)")
                if not isinstance(reason, str) or not reason.strip():
                    raise ValueError(f"release.privacy_allow: {key} has no reason; write why it is safe to release "
                                     f"unchecked ({key}: <the reason>)")
        return value


class SparkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    master: str | None = Field(None, description="Spark master URL, e.g. 'spark://host:7077' or 'yarn' "
                               "(default: $DATAFIRST_SPARK_MASTER, else local mode on every core)")
    conf: dict[str, str] = Field(default_factory=dict, description="Spark settings passed to the session, e.g. "
                                 "spark.executor.memory; see docs/spark.md")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extracts: Path = Field(description="folder holding the raw extracts (relative paths are to the workspace)")
    contracts: Path = Field(Path("contracts"), description="folder of source contracts (*.yaml)")
    engine: Literal["duckdb", "spark"] = Field("duckdb", description="the engine that runs the SQL: duckdb "
                                               "(one machine) or spark (see docs/spark.md)")
    threads: int | None = Field(None, ge=1, description="engine threads (default: all cores)")
    memory_limit: str | None = Field(None, pattern=MEMORY_SIZE, description="engine memory limit, e.g. '8GB' or '512MB'")
    database: Literal["auto", "memory", "disk"] = Field(
        "auto", description="where DuckDB keeps its working tables: memory, or a file in the workspace's scratch "
                            "folder that pages out to disk under memory_limit; auto: a file past 2M identifier records")
    spark: SparkConfig = Field(default_factory=SparkConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    standardise: StandardiseConfig = Field(default_factory=StandardiseConfig)
    link: LinkConfig = Field(default_factory=LinkConfig)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)


class Workspace:
    def __init__(self, root: Path, engine: str | None = None):
        self.root = Path(root)
        # The engine chosen on the command line for this session, over the config's.
        self.engine_override = engine

    # --- layout ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def zones(self) -> Path:
        return self.root / "zones"

    def zone(self, name: str) -> Path:
        return self.zones / name

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def scratch(self) -> Path:
        return self.root / ".scratch"

    # --- lock -------------------------------------------------------------------------------
    @contextmanager
    def lock(self, *, made: bool = True) -> Iterator[None]:
        """Hold the workspace for one command, so that two processes (or threads) never write
        its zones, models or releases at once (a scheduled run and a manual one, say): the
        second is refused with who holds it. The operating system releases the lock when its
        process ends, however it ends, so a killed run leaves no stale lock; the next holder
        then removes the partial folders it left (nothing else can be writing them). Re-entrant
        within a thread. `made=False` locks a folder that is to become a workspace (the demo's).
        The lock is taken on the workspace folder itself, not on a file in it: a file can be
        deleted or replaced while a run holds it, and a second run would then lock the new one.
        The holder is written to LOCK_FILE, for the message that refuses another.
        POSIX only: where `fcntl` is missing, nothing is locked."""
        if made:
            self.config()  # a folder that is not a workspace is refused before anything is written
        else:
            self.root.mkdir(parents=True, exist_ok=True)
        key = (os.path.realpath(self.root), threading.get_ident())
        with _held_guard:
            entry = _held.get(key)
            if entry is not None:
                entry[1] += 1
        if entry is None:  # acquired outside the guard: a refusal must not hold up other workspaces
            entry = [self._acquire(key[0]), 1]
            with _held_guard:
                _held[key] = entry
        try:
            yield
        finally:
            with _held_guard:
                entry[1] -= 1
                done = entry[1] == 0
                if done:
                    del _held[key]
            if done and entry[0] is not None:
                os.close(entry[0])  # releases the lock

    def _acquire(self, folder: str) -> int | None:
        """The workspace folder, open and locked (its descriptor); refused when another holds it."""
        if fcntl is None:  # pragma: no cover
            return None
        while True:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # The folder at the path may have been moved aside and another made there since it
                # was opened: then that one is locked instead.
                here, locked = os.stat(folder), os.fstat(fd)
                if (here.st_dev, here.st_ino) != (locked.st_dev, locked.st_ino):
                    os.close(fd)
                    continue
                self._write_holder()
                self._remove_leftovers()
                return fd
            except BlockingIOError:
                os.close(fd)
                raise WorkspaceBusy(f"{self.root} is in use by {self._holder()}; wait for it to finish and run "
                                    "again. The lock is released when that process ends, even if it is killed.") from None
            except BaseException:
                os.close(fd)
                raise

    def _write_holder(self) -> None:
        path = self.root / LOCK_FILE
        try:
            path.write_text(json.dumps({"pid": os.getpid(), "command": " ".join(["datafirst", *sys.argv[1:]]),
                                        "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}),
                            encoding="utf-8")
        except PermissionError as exc:
            raise WorkspaceError(f"cannot write {path}: the workspace {self.root} is not writable by this user. "
                                 "Make it writable (e.g. chmod -R u+w on it, or run as its owner), or work on a "
                                 "copy of it") from exc

    def _holder(self) -> str:
        """Who holds the workspace, as its lock file says (written by the holder when it took it)."""
        try:
            holder = json.loads((self.root / LOCK_FILE).read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            holder = {}
        if not isinstance(holder, dict) or not holder.get("pid"):
            return "another process"
        return f"process {holder['pid']} (`{holder.get('command', '?')}`, since {holder.get('since', '?')})"

    def _remove_leftovers(self) -> None:
        """Partial zones and releases of a process killed part-way (see LEFTOVER)."""
        for folder in (self.zones, self.root / "releases"):
            for p in sorted(folder.iterdir()) if folder.is_dir() else []:
                if LEFTOVER.match(p.name):
                    remove_tree(p)

    # --- config -----------------------------------------------------------------------------
    def config(self) -> Config:
        if not self.config_path.is_file():
            raise WorkspaceError(f"{self.root} is not a datafirst workspace (no {CONFIG_FILE}); "
                                 f"make one with `datafirst init {shlex.quote(str(self.root))} --extracts PATH`")
        try:
            raw = parse_yaml(self.config_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise WorkspaceError(f"{self.config_path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise WorkspaceError(f"{self.config_path} must hold `key: value` settings such as `extracts: PATH`; "
                                 "see docs/config.md")
        try:
            return Config.model_validate(raw)
        except ValidationError as exc:
            raise WorkspaceError(f"{self.config_path} is not valid (see docs/config.md):\n"
                                 + "\n".join(f"  {line}" for line in describe(exc, Config))) from exc

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.root / path)

    @property
    def extracts(self) -> Path:
        return self.resolve(self.config().extracts)

    @property
    def contracts(self) -> Path:
        return self.resolve(self.config().contracts)

    @classmethod
    def init(cls, root: Path, extracts: Path, *, with_world_contracts: bool = True) -> "Workspace":
        """Make a workspace; ship the contracts of the synthetic world's sources if asked."""
        ws = cls(root)
        if ws.config_path.exists():
            raise WorkspaceError(f"{ws.root} is already a workspace ({CONFIG_FILE} exists)")
        ws.root.mkdir(parents=True, exist_ok=True)
        contracts = ws.root / "contracts"
        contracts.mkdir(exist_ok=True)
        if with_world_contracts:
            shipped = resources.files("datafirst.sources").joinpath("contracts")
            for item in shipped.iterdir():
                if item.name.endswith((".yaml", ".csv")):  # the contracts and the code lists they name
                    with resources.as_file(item) as src:
                        shutil.copyfile(src, contracts / item.name)
        extracts = Path(extracts)
        try:
            shown = extracts.resolve().relative_to(ws.root.resolve())
        except ValueError:
            shown = extracts.resolve()
        config = {"extracts": str(shown), "contracts": "contracts", "engine": "duckdb"}
        ws.config_path.write_text(
            "# datafirst workspace configuration (see docs/config.md). Secrets never go here.\n"
            + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return ws


F = TypeVar("F", bound=Callable)


def holding_lock(stage: F) -> F:
    """A stage function (its first argument the workspace) run while holding the workspace's lock."""
    @functools.wraps(stage)
    def locked(ws: "Workspace", *args, **kwargs):
        with ws.lock():
            return stage(ws, *args, **kwargs)
    return locked  # type: ignore[return-value]


def remove_tree(path: Path) -> None:
    """Remove a file or folder, read-only ones (releases) included; links are not followed."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    for folder, dirs, _ in os.walk(path):
        for name in [folder, *(os.path.join(folder, d) for d in dirs)]:
            if not os.path.islink(name):
                os.chmod(name, os.stat(name).st_mode | stat.S_IWUSR)
    shutil.rmtree(path)


def replace_folder(new: Path, final: Path) -> None:
    """Put a complete new folder where an old one was: the old one is moved aside first and
    removed only after the new one is in place, so readers never see a half-written zone."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
