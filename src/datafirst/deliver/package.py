"""A project's package: what one approved project receives of one verified release.

`deliver` builds `<deliveries>/<project>/<release>-<n>/` (deliveries: `<workspace>/deliveries`
unless told otherwise) in a temporary folder beside it and renames it into place once complete,
so a failure leaves no partial package. Nothing is built for a project that is not registered,
not approved, expired, or whose file was edited after its approval, nor from a release that
does not verify against the trusted public key (its files, signature and chain, as `datafirst
verify` checks them).

In the engine, per approved table: only the approved columns, each under its treatment
(`treatments`); every id (a `hashed_id` column) hashed again with the project's own key
(`project_keys`), so two projects' packages share no id; the derived tables (person tables,
journey, lookup) made again from the approved sources' records (`derived`). The staged tables
then pass the disclosure step before the formats are written: Parquet, CSV, and Stata .dta.
With them: the dictionary of the delivered columns (treatments described), a manifest (the
project, its approval, the release and its manifest hash, the treatments, the row counts),
SHA256SUMS, and a README for the researchers.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable

from .. import __version__
from ..engine import Engine
from ..engine.sql import sql_string
from ..files import file_sha256, make_read_only, write_checksums
from ..release.chain import MANIFEST, RELEASES, anchor_file, misplaced, published, release_problems
from ..release.signing import public_key_files, trusted_public_keys
from ..sources.contract import load_contracts
from ..workspace import JourneySpec, Workspace, remove_tree
from . import derived
from .project_keys import PROJECT_HASH_CHARS, forget_project_hash, install_project_hash, load_project_key
from .risk import RiskError, assess
from .stata import write_all
from .projects import Project, ProjectError, ProjectRecord, require_approved
from .treatments import Treated, TreatmentError, q, treat

DELIVERIES = "deliveries"
SUMS = "SHA256SUMS"
KEY_CHECK = "datafirst project key check"
FORMATS = ("parquet", "csv", "dta")
CASE_JOURNEYS = "case_journeys"  # spans two sources (the journey config's Crown Court and magistrates' tables)
REKEYED = "re-keyed with the project's key (joins within this project's packages only)"


class DeliveryError(Exception):
    """A package that must not be built; nothing was written. The message says why and what to do."""


@dataclass
class TablePlan:
    name: str
    source_sql: str  # the query the columns are selected from (alias t)
    columns: dict[str, Treated]
    rekeyed: list[str]  # hashed ids, re-keyed with the project's key
    derived: bool = False
    size: float = 0.0  # how much work it is (its release file's bytes), to start the largest first


@dataclass
class Delivery:
    project: str
    release: str
    path: Path
    tables: dict[str, int]  # table -> rows delivered
    formats: list[str]
    sources: list[str]
    stata_names: dict[str, dict[str, str]] = field(default_factory=dict)


def deliveries_dir(ws: Workspace) -> Path:
    return ws.root / DELIVERIES


# --- what may be delivered ------------------------------------------------------------------

def approved_record(ws: Workspace, project_id: str, today: date | None = None) -> ProjectRecord:
    """The project, if it may receive a package now; else DeliveryError saying why."""
    try:
        return require_approved(ws.root, project_id, today)
    except ProjectError as exc:
        raise DeliveryError(str(exc)) from None


def verified_release(ws: Workspace, version: str | None, public_keys: list[Path] | None = None) -> Path:
    """The release to deliver from (the newest when `version` is None), once every release of the
    workspace verifies against the trusted public key, kept outside the workspace."""
    folder = ws.root / RELEASES
    names = [p.name for p in published(folder)]
    if not names:
        raise DeliveryError(f"no release in {folder}: run `datafirst release` first")
    if version is not None and version not in names:
        close = difflib.get_close_matches(version, names, n=1, cutoff=0.6)
        raise DeliveryError(f"no release {version} in {folder}" + (f"; did you mean {close[0]}?" if close else
                                                                   f"; the releases are {', '.join(names)}"))
    release_dir = folder / (version or names[-1])
    anchor = anchor_file()
    problems = misplaced(ws.root, public_key_files(public_keys), anchor)
    if problems:
        raise DeliveryError("\n".join(problems))
    problems = release_problems(release_dir, trusted_public_keys(public_keys), anchor)
    if problems:
        raise DeliveryError(f"release {release_dir.name} does not verify, so nothing is delivered from it:\n  "
                            + "\n  ".join(problems) + "\n`datafirst verify` lists every problem.")
    return release_dir


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def plan(project: Project, release_dir: Path, dictionary: dict,
         journey: JourneySpec | None = None) -> tuple[list[TablePlan], list[str]]:
    """Each approved table's columns and their SQL, and the approved sources; DeliveryError listing
    every problem (a table or column the release does not have, a treatment its column cannot take)."""
    tables = {t["name"]: t for t in dictionary["tables"]}
    lookup = tables.get(derived.LOOKUP)
    release_sources = (lookup or {}).get("columns", [])
    source_values = next((c.get("declared", {}).get("values", []) for c in release_sources
                          if c["name"] == "source_dataset"), [])
    sources = derived.approved_sources(list(project.tables), source_values)
    journey = journey or JourneySpec()
    journey_sources = sorted({t.split("__")[0] for t in (journey.crown_table, journey.mags_table)})
    problems, plans = [], []
    where = f"project {project.id}"
    for name in project.tables:
        if name not in tables:
            problems.append(f"{where}: release {release_dir.name} has no table {name!r}"
                            + (_suggest(name, list(tables)) or f" (its tables: {', '.join(tables)})"))
            continue
        table = tables[name]
        released = {c["name"]: c for c in table["columns"]}
        is_derived = name in derived.DERIVED
        if name == CASE_JOURNEYS and not set(journey_sources) <= set(sources):
            problems.append(f"{where}: {name} links each Crown Court case to its magistrates' case, so it tells of "
                            f"both sources ({', '.join(journey_sources)}); approve a table of each, or leave it out "
                            f"(approved sources: {', '.join(sources) or 'none'})")
            continue
        if is_derived and not sources:
            problems.append(f"{where}: {name} is made again from the records of the approved sources, and no source "
                            f"table (source__table) is approved: approve one (its records are what {name} summarises)")
            continue
        columns, rekeyed = {}, []
        for col, treatment in project.delivered_columns(name).items():
            if col not in released:
                problems.append(f"{where}: {name} has no column {col!r}" + (
                    _suggest(col, list(released)) or f" (its columns: {', '.join(released)})"))
                continue
            try:
                columns[col] = treat(table, released[col], treatment, release_dir, tables)
            except TreatmentError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if released[col].get("declared", {}).get("kind") == "hashed_id":
                rekeyed.append(col)
        path = release_dir / "tables" / f"{name}.parquet"
        # A derived table is made from several tables' records: started first.
        size = float("inf") if is_derived else float(path.stat().st_size if path.is_file() else 0)
        plans.append(TablePlan(name, f"SELECT * FROM read_parquet({sql_string(path)})", columns, rekeyed, is_derived, size))
    if problems:
        raise DeliveryError("the project cannot be delivered from release " + release_dir.name + ":\n  "
                            + "\n  ".join(problems))
    return plans, sources


def check_against_release(project: Project, release_dir: Path, journey: JourneySpec | None = None) -> list[str]:
    """What would stop `project` being delivered from `release_dir` (empty: nothing); for
    `datafirst project add`, which checks a project against the newest release."""
    dictionary = json.loads((release_dir / "dictionary.json").read_text(encoding="utf-8"))
    try:
        plan(project, release_dir, dictionary, journey)
    except DeliveryError as exc:
        return str(exc).splitlines()[1:]
    return []


# --- the disclosure step --------------------------------------------------------------------

def _disclosure_step(engine: Engine, staged: dict[str, Path], project: Project,
                     work: Path) -> tuple[dict[str, Path], dict]:
    """The staged (treated, re-keyed) tables' disclosure control, before any format is written:
    measured against the project's limits, locally suppressed where that is within its budget
    (the suppressed tables are written into `work`). Returns the tables to deliver and the report
    for the manifest; a package that still fails is refused, naming what to coarsen."""
    work.mkdir(parents=True, exist_ok=True)
    try:
        assessment = assess(engine, staged, project.disclosure, work)
    except RiskError as exc:
        raise DeliveryError(f"project {project.id}: {exc}") from None
    if assessment.problems:
        raise DeliveryError(f"project {project.id}'s package fails its disclosure limits (k {project.disclosure.k}, "
                            f"at most {project.disclosure.max_unique_share:.1%} unique, at most "
                            f"{project.disclosure.max_suppressed_share:.1%} suppressed); nothing was delivered:\n"
                            + "\n".join(f"  {p}" for p in assessment.problems)
                            + "\nCoarsen as suggested in the project file, and have it approved again.")
    return assessment.tables, assessment.report


# --- building -------------------------------------------------------------------------------

def _select(p: TablePlan) -> str:
    parts = []
    for col, treated in p.columns.items():
        sql = f"project_hash({treated.sql})" if col in p.rekeyed else treated.sql
        parts.append(f"{sql} AS {q(col)}")
    return f"SELECT {', '.join(parts)} FROM ({p.source_sql}) t"


def _next_package(folder: Path, version: str) -> str:
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(rf"{version}-(\d+)", p.name))] \
        if folder.is_dir() else []
    return f"{version}-{max(taken, default=0) + 1}"


def deliver(ws: Workspace, project_id: str, engine: Engine, *, by: str, release: str | None = None,
            out: Path | None = None, public_keys: list[Path] | None = None, today: date | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> Delivery:
    """Build the project's package from a verified release (the newest unless `release` names
    one) under `out` (default `<workspace>/deliveries`): see the module's docstring."""
    record = approved_record(ws, project_id, today)
    project = record.project
    release_dir = verified_release(ws, release, public_keys)
    dictionary = json.loads((release_dir / "dictionary.json").read_text(encoding="utf-8"))
    plans, sources = plan(project, release_dir, dictionary, ws.config().link.journey)
    key = load_project_key(ws.root, project_id)
    folder = Path(out or deliveries_dir(ws)) / project_id
    folder.mkdir(parents=True, exist_ok=True)
    name = _next_package(folder, release_dir.name)
    tmp = folder / f".{name}.partial-{os.getpid()}"
    remove_tree(tmp)
    staging = tmp / ".staging"
    staging.mkdir(parents=True)
    try:
        if any(p.derived for p in plans):
            columns = {t["name"]: [c["name"] for c in t["columns"]] for t in dictionary["tables"]}
            contracts = load_contracts(ws.contracts)
            made = derived.derived_sql(contracts, release_dir, sources, columns[derived.LOOKUP])
            try:
                derived.build_inputs(engine, release_dir, {t: set(c) for t, c in columns.items()}, contracts, sources)
            except derived.DerivedError as exc:
                raise DeliveryError(str(exc)) from None
            for p in plans:
                if p.derived:
                    p.source_sql = made[p.name]
        rows = _stage(engine, plans, staging, key, progress)
        staged = {p.name: staging / f"{p.name}.parquet" for p in plans}
        staged, disclosure = _disclosure_step(engine, staged, project, staging / "suppressed")
        tables_dict = _dictionary_subset(dictionary, plans, sources)
        stata_names = _write_formats(staged, tmp, tables_dict, rows)
        remove_tree(staging)
        (tmp / "dictionary.json").write_text(json.dumps(tables_dict, indent=2), encoding="utf-8")
        (tmp / "dictionary.md").write_text(_dictionary_markdown(project_id, name, tables_dict), encoding="utf-8")
        formats = [f for f in FORMATS if any(tmp.glob(f"*/*.{f}"))]
        manifest = _manifest(record, release_dir, name, by, plans, rows, sources, formats, stata_names,
                             disclosure, engine, key)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(_readme(record, release_dir.name, name, plans, rows, sources, formats,
                                               stata_names), encoding="utf-8")
        write_checksums(tmp, SUMS)
        make_read_only(tmp)
        os.rename(tmp, folder / name)
    except BaseException:
        remove_tree(tmp)
        raise
    finally:
        derived.drop_inputs(engine)
    return Delivery(project_id, release_dir.name, folder / name, rows, formats, sources, stata_names)


def _stage(engine: Engine, plans: list[TablePlan], staging: Path, key: str,
           progress: Callable[[str, int, int], None] | None) -> dict[str, int]:
    """Write each table's treated, re-keyed rows to the staging folder, tables at once (each job on
    its own connection, with the project's hash installed there)."""
    started = iter(range(len(plans)))

    def job(p: TablePlan) -> Callable[[Engine], int]:
        def run(e: Engine) -> int:
            if progress:
                progress(p.name, next(started), len(plans))
            install_project_hash(e, key)
            try:
                return e.to_parquet(_select(p), staging / f"{p.name}.parquet")
            finally:
                if e is not engine:
                    forget_project_hash(e)
        return run

    try:
        counts = engine.concurrently([job(p) for p in plans], [p.size for p in plans])
    finally:
        forget_project_hash(engine)
    return {p.name: n for p, n in zip(plans, counts)}


def _dictionary_subset(dictionary: dict, plans: list[TablePlan], sources: list[str]) -> dict:
    """The release's dictionary entries of the delivered tables and columns: each column with its
    treatment (and what it may hold after it), ids marked re-keyed, joins between delivered
    columns only. Counts are the package's, filled in as the formats are written."""
    released = {t["name"]: t for t in dictionary["tables"]}
    delivered = {p.name: set(p.columns) for p in plans}
    out = []
    for p in plans:
        table = released[p.name]
        by_name = {c["name"]: c for c in table["columns"]}
        columns = []
        for col, treated in p.columns.items():
            c = {k: v for k, v in by_name[col].items() if k not in ("distinct_values", "suppressed_values",
                                                                    "missing_share")}
            c["type"] = treated.type
            c["treatment"] = treated.treatment
            if col in p.rekeyed:
                c["treatment"] = REKEYED
                c["description"] = (c.get("description") or "") + "; re-keyed for this project"
            if treated.declared is not None:
                c["declared"] = treated.declared
                c.pop("allowed_values", None)
                if treated.declared.get("values"):
                    c["allowed_values"] = sorted(treated.declared["values"])
            columns.append(c)
        joins = [j for j in table.get("joins", []) if set(j["columns"]) <= delivered[p.name]
                 and set(j["references"]["columns"]) <= delivered.get(j["references"]["table"], set())]
        entry = {k: v for k, v in table.items() if k not in ("columns", "joins", "keys", "withheld_columns")}
        entry.update(keys=table["keys"] if set(table["keys"]) <= delivered[p.name] else [],
                     columns=columns, joins=joins)
        if p.derived:
            entry["description"] = (table["description"] + f" In this package: made again from the records of the "
                                    f"approved sources only ({', '.join(sources)}).")
        out.append(entry)
    return {"tables": out}


def _dictionary_markdown(project_id: str, name: str, d: dict) -> str:
    out = [f"# Data dictionary, project {project_id}, package {name}", "",
           "Every delivered table and column, its meaning, and its treatment for this project. Ids are keyed "
           "hashes re-keyed with the project's key: they join within this project's packages only.", ""]
    for t in d["tables"]:
        out += [f"## {t['name']}", "", t["description"], "", f"- unit: {t['unit']}",
                f"- key: {', '.join(t['keys']) or '(not delivered)'}", f"- rows: {t['rows']:,}", "",
                "| column | type | meaning | treatment | declared | missing | values |", "|---|---|---|---|---|---|---|"]
        for c in t["columns"]:
            declared = c["declared"]["rule"] if "declared" in c else ""
            out.append(f"| {c['name']} | {c['type']} | {c.get('description', '')} | {c['treatment']} | {declared} | "
                       f"{c['missing_share']:.1%} | {', '.join(c.get('allowed_values', []))} |")
        out += [f"- join: `{', '.join(j['columns'])}` to `{j['references']['table']}."
                f"{', '.join(j['references']['columns'])}` ({j['cardinality']})" for j in t.get("joins", [])]
        out.append("")
    return "\n".join(out)


def _write_formats(staged: dict[str, Path], root: Path, tables_dict: dict, rows: dict[str, int]) -> dict[str, dict]:
    """Parquet, CSV and Stata files of the delivered tables, and the dictionary's counts. The files
    are converted by DuckDB on this machine whatever the engine (as the release's site is built):
    the staged Parquet files are the package's own. Returns each table's Stata names."""
    for sub in ("tables", "csv"):
        (root / sub).mkdir()
    entries = {t["name"]: t for t in tables_dict["tables"]}
    with Engine() as local:
        def convert(name: str, path: Path) -> Callable[[Engine], None]:
            def run(e: Engine) -> None:
                final = root / "tables" / f"{name}.parquet"
                os.replace(path, final)
                rel = f"read_parquet({sql_string(final)})"
                schema = e.schema(rel)
                # A list (person.sources) as text in CSV: `civil;prison`.
                select = ", ".join(f"array_to_string({q(c)}, ';') AS {q(c)}" if t.endswith("[]") else q(c)
                                   for c, t in schema)
                e.execute(f"COPY (SELECT {select} FROM {rel}) TO {sql_string(root / 'csv' / f'{name}.csv')} "
                          "(FORMAT csv, HEADER true)")
                counts = e.execute("SELECT count(*), " + ", ".join(f"count({q(c)})" for c, _ in schema)
                                   + f" FROM {rel}")[0]
                entry = entries[name]
                entry["rows"] = int(counts[0])
                entry["path"] = f"tables/{name}.parquet"
                entry["files"] = {"parquet": f"tables/{name}.parquet", "csv": f"csv/{name}.csv"}
                for c, n in zip(entry["columns"], counts[1:]):
                    c["missing_share"] = round(1 - n / counts[0], 4) if counts[0] else 0.0
            return run

        local.concurrently([convert(n, p) for n, p in staged.items()],
                           [float(p.stat().st_size) for p in staged.values()])
    return _write_stata(root, entries)


def _write_stata(root: Path, entries: dict[str, dict]) -> dict[str, dict]:
    """.dta files, with variable and value labels, through `stata.write_dta`, and
    `stata/variable_names.csv`: each column's Stata name (at most 32 characters; docs/deliver.md)."""
    (root / "stata").mkdir()
    written = write_all([(root / "tables" / f"{name}.parquet", root / "stata" / f"{name}.dta", entry)
                         for name, entry in entries.items()])
    names = dict(zip(entries, written))
    for name, entry in entries.items():
        entry["files"]["dta"] = f"stata/{name}.dta"
        entry["stata_names"] = names[name]
    with open(root / "stata" / "variable_names.csv", "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["table", "column", "stata_name"])
        out.writerows((table, column, short) for table, mapping in names.items() for column, short in mapping.items())
    return names


def _manifest(record: ProjectRecord, release_dir: Path, name: str, by: str, plans: list[TablePlan],
              rows: dict[str, int], sources: list[str], formats: list[str], stata_names: dict, disclosure: dict | None,
              engine: Engine, key: str) -> dict:
    project, approval = record.project, record.approval
    release_manifest = json.loads((release_dir / MANIFEST).read_text(encoding="utf-8"))
    return {
        "package": name, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "delivered_by": by, "datafirst": __version__,
        "project": {"id": project.id, "title": project.title, "legal_basis": project.legal_basis,
                    "approval_reference": project.approval_reference, "tre": project.tre,
                    "expires": project.expires.isoformat(), "researchers": project.researchers,
                    "person_id": project.person_id, "requested_by": record.requested_by,
                    "approved_by": approval["by"], "approved_at": approval["at"],
                    "project_file_sha256": record.yaml_sha256},
        "release": {"version": release_dir.name, "manifest_sha256": file_sha256(release_dir / MANIFEST),
                    "signing_key_fingerprint": release_manifest.get("signing_key_fingerprint"),
                    "id_series": release_manifest.get("id_series")},
        # Tells whether two packages were re-keyed with the same project key, without revealing it.
        "project_key_check": engine.scalar(f"SELECT substr(sha256(? || '|' || ?), 1, {PROJECT_HASH_CHARS})",
                                           [key, KEY_CHECK]),
        "approved_sources": sources,
        "tables": {p.name: {"rows": rows[p.name], "derived_from_approved_sources": p.derived,
                            "columns": {c: REKEYED if c in p.rekeyed else t.treatment for c, t in p.columns.items()},
                            "rekeyed": p.rekeyed} for p in plans},
        "formats": formats,
        "stata_names": stata_names,
        "disclosure": disclosure,
    }


def _readme(record: ProjectRecord, release: str, name: str, plans: list[TablePlan], rows: dict[str, int],
            sources: list[str], formats: list[str], stata_names: dict) -> str:
    project, approval = record.project, record.approval
    files = {"parquet": "tables/<table>.parquet (Apache Parquet, with column types)",
             "csv": "csv/<table>.csv (comma-separated, a header row; a list such as `sources` as `a;b`)",
             "dta": "stata/<table>.dta (Stata, with variable and value labels; names of at most 32 characters, "
                    "mapped in dictionary.json under `stata_names`)"}
    lines = [f"# {project.title}: package {name}", "",
             f"Project **{project.id}** ({project.approval_reference}; {project.legal_basis}), for "
             f"{', '.join(project.researchers)} in the {project.tre} trusted research environment, until "
             f"{project.expires}. Approved by {approval['by']} on {approval['at'][:10]}.", "",
             f"Made from the verified release **{release}** of the linked justice data. It holds only the tables "
             "and columns this project was approved for, coarsened as approved. Every id (row ids, person ids, "
             "case numbers: the columns ending `_hash` and `person_id_*`) is re-keyed with this project's own "
             "key: the ids join between this project's tables and packages, and to nothing of any other project "
             "or release.", "",
             f"The person tables, the person journey and the link lookup are made again from the records of the "
             f"approved sources only ({', '.join(sources) or 'none'}): they say nothing of any other source.", "",
             "## Files", ""]
    lines += [f"- {files[f]}" for f in formats]
    lines += ["- dictionary.json and dictionary.md: every delivered column, its meaning, its treatment and what "
              "it may hold", "- manifest.json: the project, its approval, the release (and its manifest's SHA-256), "
              "the treatments and the row counts",
              f"- {SUMS}: the SHA-256 of every file; check them with `sha256sum -c {SUMS}`", "",
              "## Tables", "", "| table | rows | columns and treatments |", "|---|---:|---|"]
    for p in plans:
        treated = "; ".join(f"`{c}`: {t.treatment}" if c not in p.rekeyed else f"`{c}`: re-keyed"
                            for c, t in p.columns.items())
        lines.append(f"| {p.name} | {rows[p.name]:,} | {treated} |")
    lines += ["", "Outputs leave the environment only after output checking (docs/deliver.md).", ""]
    return "\n".join(lines)


def verify_package(path: Path) -> list[str]:
    """Files of a package that do not match its SHA256SUMS, or are not listed (empty: intact)."""
    from ..release.chain import verify

    return verify(path)
