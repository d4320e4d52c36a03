"""Output checking: what a researcher takes out of the TRE, checked by ACRO and approved by someone else.

Inside the TRE a researcher makes tables and models with ACRO (the SACRO project's disclosure
control library) and ends the session with `acro.finalise(FOLDER, "json")`: FOLDER then holds the
outputs (CSV files, or the researcher's own files) and `results.json`, ACRO's verdict on each one
(`pass`, `fail` or `review`, with the checks behind it). datafirst never imports ACRO (it pins an
older pandas; it lives in its own environment, see scripts/acro-venv.sh); it reads what ACRO wrote.

Three steps, each recorded in the request's folder `<ws>/governance/outputs/<project>/<request>/`:
- `submit` (the researcher): the finalised folder is copied in, with the SHA-256 of every file,
  who submitted it and when (request.json). Only for a project that is approved and not expired.
- `review` (an output checker, never the submitter nor another researcher of the project): one decision per output, approve or reject,
  appended to decisions.jsonl. Approving an output ACRO marked `fail` or `review` needs a written
  reason (the exception). A request whose files changed since submission is refused.
- `export`: only the approved outputs' files are copied out, with decisions.json saying who
  approved each and why; the export is appended to exports.jsonl.
Records are only ever appended: a later decision on an output supersedes an earlier one, and both stay.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from datafirst.deliver.projects import (GOVERNANCE, PROJECT_ID, Project, ProjectError, get_project, require_approved,
                                        valid_id)
from datafirst.files import file_sha256

OUTPUTS = "outputs"
SUBMITTED = "submitted"          # the copy of the researcher's finalised ACRO folder
REQUEST_FILE = "request.json"
DECISIONS_FILE = "decisions.jsonl"
EXPORTS_FILE = "exports.jsonl"
EXPORT_RECORD = "decisions.json"  # beside the exported files
ACRO_RESULTS = "results.json"
ACRO_STATUSES = ("pass", "fail", "review")
# ACRO adds its session summary (the secondary-risk overview of all outputs) for the checker, as
# outputs named "...-DONT_RELEASE": they inform the review and are never exported.
CHECKER_ONLY = "DONT_RELEASE"
REQUEST_ID = re.compile(PROJECT_ID.rstrip("$") + r"-\d{4,}$")  # the project's id, then its request number

Verdict = Literal["approve", "reject"]


class OutputsError(Exception):
    """A submission, review or export that is refused; the message says why and what to do."""


@dataclass(frozen=True)
class Output:
    """One output as ACRO recorded it."""
    name: str
    acro_status: str          # pass | fail | review
    kind: str                 # ACRO's type: table, regression, custom, ...
    files: tuple[str, ...]    # relative to the submitted folder
    summary: str              # ACRO's summary of its checks
    exception: str            # the researcher's request for an exception, if any
    command: str

    @property
    def checker_only(self) -> bool:
        return self.name.endswith(CHECKER_ONLY)


@dataclass(frozen=True)
class Request:
    id: str
    project: str
    folder: Path
    submitted_by: str
    submitted_at: str
    acro_version: str
    files: dict[str, str]     # every submitted file (relative path) -> SHA-256
    outputs: dict[str, Output]


@dataclass(frozen=True)
class Decision:
    output: str
    decision: Verdict
    reason: str
    by: str
    at: str
    acro_status: str


@dataclass(frozen=True)
class Ruling:
    """What a checker asks for one output: `review` validates it before anything is written."""
    decision: Verdict
    reason: str = ""


def outputs_folder(workspace: Path) -> Path:
    return workspace / GOVERNANCE / OUTPUTS


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the project's approval -------------------------------------------------------------------

def approved_project(workspace: Path, project_id: str, today: date | None = None) -> Project:
    """The project, when outputs may be submitted for it: registered, approved for its file as it
    is now, and not expired (the registry's own check, as for a delivery)."""
    if not valid_id(project_id):
        raise OutputsError(f"{project_id!r} is not a project id (a letter, then letters, digits, - or _)")
    try:
        return require_approved(workspace, project_id, today).project
    except ProjectError as exc:
        raise OutputsError(str(exc)) from None


# --- reading ACRO's folder --------------------------------------------------------------------

def _acro_outputs(folder: Path) -> tuple[str, dict[str, Output]]:
    """ACRO's version and outputs, from the results.json of a finalised folder; every file an output
    names must be in the folder."""
    results_file = folder / ACRO_RESULTS
    if not results_file.is_file():
        found = "; it holds results.xlsx: finalise with ext=\"json\"" if (folder / "results.xlsx").is_file() else ""
        raise OutputsError(f"{folder} has no {ACRO_RESULTS}{found}. Give the folder that ACRO's "
                           "`acro.finalise(FOLDER, \"json\")` wrote")
    try:
        data = json.loads(results_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputsError(f"{results_file}: not readable JSON ({exc})") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not results:
        raise OutputsError(f"{results_file}: no outputs under `results`; is this ACRO's results file?")
    outputs: dict[str, Output] = {}
    for name, entry in results.items():
        where = f"{results_file}: output {name!r}"
        if not isinstance(entry, dict) or entry.get("status") not in ACRO_STATUSES:
            raise OutputsError(f"{where}: `status` should be one of {', '.join(ACRO_STATUSES)}")
        files = []
        for item in entry.get("files") or []:
            file = item.get("name") if isinstance(item, dict) else None
            if not isinstance(file, str) or not _inside(file):
                raise OutputsError(f"{where}: the file {file!r} is not a name inside the folder")
            if not (folder / file).is_file():
                raise OutputsError(f"{where}: its file {file} is not in {folder}")
            files.append(file)
        if not files:
            raise OutputsError(f"{where}: names no files")
        outputs[name] = Output(name, entry["status"], str(entry.get("type", "")), tuple(files),
                               str(entry.get("summary", "")), str(entry.get("exception", "")),
                               str(entry.get("command", "")))
    return str(data.get("version", "")), outputs


def _inside(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _folder_files(folder: Path) -> list[Path]:
    """Every file under `folder`, relative; a symbolic link is refused (it could bring in a file
    from outside the researcher's output folder)."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise OutputsError(f"{path} is a symbolic link; submit the folder ACRO wrote, with the files themselves")
        if path.is_file():
            found.append(path.relative_to(folder))
    return found


def _check_acro_checksums(folder: Path, files: list[Path]) -> None:
    """ACRO's finalise writes checksums/<file>.txt for each file it wrote; a file that no longer
    matches was edited after ACRO checked it (e.g. a failing table's cells changed by hand)."""
    for relative in files:
        recorded = folder / "checksums" / f"{relative.name}.txt"
        if (relative.parent == Path(".") and recorded.is_file()
                and recorded.read_text(encoding="utf-8").strip() != file_sha256(folder / relative)):
            raise OutputsError(f"{folder / relative} changed after ACRO's finalise (it no longer matches "
                               f"{recorded}); make the output with ACRO again and finalise a new folder")


# --- submit -----------------------------------------------------------------------------------

def submit(workspace: Path, project_id: str, acro_output_dir: Path, by: str) -> Request:
    """Record a researcher's finalised ACRO folder as an output request of the project."""
    project = approved_project(workspace, project_id)
    if by not in project.researchers:
        raise OutputsError(f"{by!r} is not a researcher of project {project_id} ({', '.join(project.researchers)}); "
                           "outputs are submitted by one of them (give --by NAME)")
    source = Path(acro_output_dir)
    if not source.is_dir():
        raise OutputsError(f"{source} is not a folder; give the folder that ACRO's finalise wrote")
    acro_version, outputs = _acro_outputs(source)
    files = _folder_files(source)
    _check_acro_checksums(source, files)

    folder, request_id = _new_request_folder(workspace, project_id)
    submitted = folder / SUBMITTED
    hashes: dict[str, str] = {}
    for relative in files:
        target = submitted / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target)
        hashes[relative.as_posix()] = file_sha256(target)
    record = {
        "request": request_id, "project": project_id, "submitted_by": by, "submitted_at": _now(),
        "source": str(source.resolve()), "acro_version": acro_version, "files": hashes,
        "outputs": {name: asdict(o) | {"files": list(o.files)} for name, o in outputs.items()},
    }
    # Written last: a folder without request.json is a submission that did not finish.
    _write_json(folder / REQUEST_FILE, record)
    return load_request(workspace, request_id)


def _new_request_folder(workspace: Path, project_id: str) -> tuple[Path, str]:
    """The next request id of the project (`P0001-0003`), its folder made atomically so that two
    submissions at once never share one."""
    parent = outputs_folder(workspace) / project_id
    parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(project_id) + r"-(\d{4,})$")
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := pattern.match(p.name))]
    number = max(taken, default=0) + 1
    while True:
        request_id = f"{project_id}-{number:04d}"
        try:
            (parent / request_id).mkdir()
            return parent / request_id, request_id
        except FileExistsError:
            number += 1


def _write_json(path: Path, record: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _append(path: Path, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in records)
        fh.flush()
        os.fsync(fh.fileno())


# --- reading requests -------------------------------------------------------------------------

def load_request(workspace: Path, request_id: str) -> Request:
    found = (sorted(outputs_folder(workspace).glob(f"*/{request_id}/{REQUEST_FILE}"))
             if REQUEST_ID.match(request_id) else [])
    if not found:
        known = [r.id for r in list_requests(workspace)]
        hint = f"; the requests are: {', '.join(known)}" if known else "; there are no output requests yet"
        raise OutputsError(f"unknown output request {request_id!r}{hint} (see `datafirst outputs list`)")
    return _read_request(found[0])


def _read_request(path: Path) -> Request:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        outputs = {name: Output(**(o | {"files": tuple(o["files"])})) for name, o in data["outputs"].items()}
        return Request(data["request"], data["project"], path.parent, data["submitted_by"], data["submitted_at"],
                       data["acro_version"], data["files"], outputs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputsError(f"{path}: cannot read the request ({exc!r})") from None


def list_requests(workspace: Path, project_id: str | None = None) -> list[Request]:
    if project_id is not None and not valid_id(project_id):
        raise OutputsError(f"{project_id!r} is not a project id (a letter, then letters, digits, - or _)")
    return [_read_request(p) for p in sorted(outputs_folder(workspace).glob(f"{project_id or '*'}/*/{REQUEST_FILE}"))]


def decisions(request: Request) -> list[Decision]:
    """Every decision on the request's outputs, oldest first."""
    path = request.folder / DECISIONS_FILE
    if not path.is_file():
        return []
    fields = Decision.__dataclass_fields__
    return [Decision(**{k: v for k, v in json.loads(line).items() if k in fields})
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def current_decisions(request: Request) -> dict[str, Decision]:
    """The decision in force per output: the latest one."""
    return {d.output: d for d in decisions(request)}


def changed_files(request: Request) -> list[str]:
    """The submitted files that are missing or no longer match their SHA-256 at submission, and any
    file added since."""
    submitted = request.folder / SUBMITTED
    now = {p.as_posix() for p in _folder_files(submitted)} if submitted.is_dir() else set()
    changed = [name for name, sha in request.files.items()
               if name not in now or file_sha256(submitted / name) != sha]
    return sorted(changed + sorted(now - set(request.files)))


def _unchanged(request: Request) -> None:
    changed = changed_files(request)
    if changed:
        raise OutputsError(f"request {request.id}: {len(changed)} files changed since submission "
                           f"({', '.join(changed)} in {request.folder / SUBMITTED}); the request cannot be reviewed or "
                           "exported. The researcher submits the outputs again")


# --- review -----------------------------------------------------------------------------------

def _registered_project(workspace: Path, project_id: str) -> Project | None:
    """The request's project as registered (expired or not: its outputs may still be checked)."""
    try:
        return get_project(workspace, project_id).project
    except ProjectError:
        return None


def review(workspace: Path, request_id: str, by: str, rulings: dict[str, Ruling]) -> list[Decision]:
    """Record the checker's decision on each named output. All are checked before any is written:
    the checker is neither the submitter nor another researcher of the project, the files are as submitted, each output exists, and approving
    one ACRO did not pass needs a reason."""
    request = load_request(workspace, request_id)
    if by.strip().casefold() == request.submitted_by.strip().casefold():
        raise OutputsError(f"{by} submitted request {request.id}, so cannot review it: an output is approved by "
                           "someone other than the researcher who asks for it (give the checker's --by NAME)")
    project = _registered_project(workspace, request.project)
    if project is not None and by.strip().casefold() in {r.strip().casefold() for r in project.researchers}:
        raise OutputsError(f"{by} is a researcher of project {request.project}, so cannot check its outputs: an "
                           "output checker is independent of the project (give the checker's --by NAME)")
    if not rulings:
        raise OutputsError("no decision given: name outputs with --approve NAME or --reject NAME")
    _unchanged(request)
    problems = []
    for name, ruling in rulings.items():
        output = request.outputs.get(name)
        if output is None:
            close = difflib.get_close_matches(name, list(request.outputs), n=1, cutoff=0.6)
            problems.append(f"request {request.id} has no output {name!r}" + (
                f"; did you mean `{close[0]}`?" if close else f"; its outputs are: {', '.join(request.outputs)}"))
        elif ruling.decision == "approve" and output.checker_only:
            problems.append(f"{name} is ACRO's summary for the checker (named {CHECKER_ONLY}); it is never released")
        elif ruling.decision == "approve" and output.acro_status != "pass" and not ruling.reason.strip():
            problems.append(f"{name}: ACRO marked it {output.acro_status!r}; approving it is an exception and needs a "
                            "written reason (--reason TEXT)")
    if problems:
        raise OutputsError("; ".join(problems))
    at = _now()
    made = [Decision(name, ruling.decision, ruling.reason.strip(), by, at, request.outputs[name].acro_status)
            for name, ruling in rulings.items()]
    _append(request.folder / DECISIONS_FILE,
            [asdict(d) | {"files": {f: request.files[f] for f in request.outputs[d.output].files}} for d in made])
    return made


# --- export -----------------------------------------------------------------------------------

def export(workspace: Path, request_id: str, out: Path, by: str) -> dict:
    """Copy the approved outputs' files to `out` (a new or empty folder) with decisions.json, the
    record of who approved each and why, and of what was withheld. Returns that record."""
    request = load_request(workspace, request_id)
    _unchanged(request)
    in_force = current_decisions(request)
    approved = [o for name, o in request.outputs.items()
                if name in in_force and in_force[name].decision == "approve"]
    if not approved:
        raise OutputsError(f"request {request.id} has no approved outputs; nothing to export "
                           f"(`datafirst outputs review {request.id}` shows them)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputsError(f"{out} exists and is not an empty folder; export into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    exported: dict[str, dict] = {}
    for output in approved:
        decision = in_force[output.name]
        for file in output.files:
            target = out / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(request.folder / SUBMITTED / file, target)
        exported[output.name] = {
            "files": {f: request.files[f] for f in output.files}, "acro_status": output.acro_status,
            "acro_summary": output.summary, "decision": decision.decision, "reason": decision.reason,
            "approved_by": decision.by, "approved_at": decision.at,
        }
    withheld = {name: in_force[name].decision if name in in_force else
                "for the checker" if output.checker_only else "undecided"
                for name, output in request.outputs.items() if name not in exported}
    record = {"request": request.id, "project": request.project, "submitted_by": request.submitted_by,
              "submitted_at": request.submitted_at, "acro_version": request.acro_version,
              "exported_by": by, "exported_at": _now(), "outputs": exported, "withheld": withheld}
    _write_json(out / EXPORT_RECORD, record)
    _append(request.folder / EXPORTS_FILE, [{"by": by, "at": record["exported_at"], "out": str(out.resolve()),
                                             "outputs": sorted(exported)}])
    return record
