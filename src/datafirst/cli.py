"""The `datafirst` command-line tool."""

from __future__ import annotations

import errno
import json
import shlex
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from . import __version__


class _BareFlags:
    """Help that shows a flag (an option taking no value, such as --full or --help) bare: Typer's
    help panel otherwise labels each one `<bool>`, as if it wanted a value. A text argument is
    shown by its name alone (REQUEST), not followed by `<str>`."""

    def get_params(self, ctx):  # noqa: ANN001, ANN201 - Typer's signature
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            elif isinstance(param, typer.core.TyperArgument) and (
                    param.metavar is not None or param.type_descriptor.annotation is str):
                # Its name or metavar (PROJECT, REQUEST) says what to write; Typer would add `<str>` beside it.
                param.display_type_rich = lambda ctx: None  # noqa: ARG005 - Typer's signature
        return params


class _Command(_BareFlags, typer.core.TyperCommand):
    pass


class _Group(_BareFlags, typer.core.TyperGroup):
    pass


class _App(typer.Typer):
    """The CLI's Typer, whose commands show flags bare in help (_BareFlags); a group of commands
    (`app.add_typer`) is an `_App` too."""

    def __init__(self, **kwargs) -> None:  # noqa: ANN003 - Typer's settings
        kwargs.setdefault("cls", _Group)
        super().__init__(**kwargs)

    def command(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - Typer's signature
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _App(
    name="datafirst",
    help="Turn raw justice extracts into linked, de-identified, documented, research-ready data products.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # error lines stay whole for grep and logs


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("left"), TimeRemainingColumn(), console=console, transient=False)


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        console.print(f"datafirst {__version__}")
        raise typer.Exit()


def _generate(out: Path, people: int, seed: int):
    from .world import WorldError, generate_world
    from .world.generate import check_request

    try:
        check_request(out, people, seed)
        with _progress() as progress:
            task = progress.add_task("Generating world (chunks of people)", total=None)

            def report(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return generate_world(out, people, seed, progress=report)
    except WorldError as exc:
        _fail(str(exc))


@app.command()
def world(
    people: int = typer.Option(..., "--people", help="How many people live in the world (at least 50). "
                               "About 2.9 source records are written per person."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical extracts."),
    out: Path = typer.Option(..., "--out", help="Folder to write the world to; must not exist or be empty."),
) -> None:
    """Generate a synthetic justice world: one raw extract per source system, and the truth."""
    summary = _generate(out, people, seed)
    table = Table(title=f"World written to {summary.out}")
    table.add_column("extract")
    table.add_column("rows", justify="right")
    for path, rows in summary.files.items():
        table.add_row(path, f"{rows:,}")
    table.add_row("[bold]all extracts", f"[bold]{summary.records:,}")
    console.print(table)
    from .world.labels import write_labels

    labels = write_labels(summary.out, summary.out / "truth" / "labels.csv")
    console.print(f"{summary.people:,} people, seed {summary.seed}, {summary.seconds:.1f} s. "
                  f"The truth is in {summary.out / 'truth'}; pipelines must never read it.")
    console.print(f"Labels for measuring linkage (record_key, true_id and groups): {labels}. In a workspace on this "
                  f"world's extracts: datafirst link -w WS --labels {shlex.quote(str(labels))}", soft_wrap=True)


def _print_realism(world_dir: Path, with_errors: bool = True) -> None:
    from .world.error_model import MALFORMED_KINDS
    from .world.realism import overall, realism

    rows = realism(world_dir)
    totals = overall(world_dir)
    t = Table(title=f"Realism of {world_dir}")
    for col in ("source", "table", "rows", "true people", "in 2+ sources", "duplicate rate", "malformed rows"):
        t.add_column(col, justify="left" if col in ("source", "table") else "right")
    for r in rows:
        malformed = sum(r.defects.get(k, 0) for k in MALFORMED_KINDS)
        t.add_row(r.source, r.table, f"{r.rows:,}", f"{r.people:,}", f"{r.share_in_other_sources:.1%}",
                  f"{r.duplicate_rate:.1%}", f"{malformed:,}")
    console.print(t)
    console.print(f"People seen in any source: {totals['people_seen']:,}; "
                  f"in two or more source systems: {totals['share_in_2plus_sources']:.1%}")
    if not with_errors:
        return
    e = Table(title="Recording errors per field: measured share of rows (declared rate)")
    e.add_column("source")
    e.add_column("field")
    e.add_column("kind: measured (declared)")
    for r in rows:
        by_field: dict[str, list[str]] = {}
        for key in sorted(set(r.errors) | set(r.declared)):
            field, kind = key.split(":")
            by_field.setdefault(field, []).append(f"{kind} {r.errors.get(key, 0.0):.2%} ({r.declared.get(key, 0.0):.2%})")
        for field, parts in by_field.items():
            e.add_row(r.source, field, ", ".join(parts))
        e.add_row(r.source, "[dim]empty in extract", ", ".join(f"{c} {v:.1%}" for c, v in r.missing.items() if v > 0),
                  end_section=True)
    console.print(e)


@app.command("realism")
def realism_command(
    world_dir: Path = typer.Argument(..., help="A folder written by `datafirst world`."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
) -> None:
    """Print the realism table of a generated world: rows, people, overlap, duplicates, errors, missingness."""
    if not (world_dir / "world.json").is_file():
        _fail(f"{world_dir} is not a generated world (no world.json); make one with `datafirst world`")
    if as_json:
        from .world.realism import overall, realism

        print(json.dumps({"overall": overall(world_dir), "sources": [asdict(r) for r in realism(world_dir)]}, indent=2))
    else:
        _print_realism(world_dir)


def _workspace(path: Path, engine: str | None = None):
    from .workspace import Workspace, WorkspaceError

    from .engine import ENGINES

    if engine is not None and engine not in ENGINES:
        _fail(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    ws = Workspace(path, engine)
    try:
        ws.config()
    except WorkspaceError as exc:
        _fail(str(exc))
    from .deliver.audit import anchor_file, misplaced_anchor

    misplaced = misplaced_anchor(ws.root, anchor_file())
    if misplaced:  # refused before the command acts: its audit entry could not be recorded
        _fail(misplaced)
    return ws


def _actor(by: str | None = None) -> str:
    """Who is acting (deliver/projects.acting_as), for the audit log and separation of duties."""
    from .deliver.projects import acting_as


    return acting_as(by)


def _audit(workspace: Path, action: str, subject: str, details: dict, *, by: str | None = None,
           required: bool = True) -> None:
    """Append the command's entry to the workspace's audit log (docs/deliver.md, "Audit log").
    Details are counts, versions, hashes, fingerprints and file names only, never a key or an
    identifying value. A command that changed the workspace fails when its entry cannot be
    written (`required`); a check (verify, diff), run by someone who may not write there, warns."""
    from .deliver.audit import AuditError, record

    try:
        record(workspace, action, _actor(by), subject, details)
    except AuditError as exc:
        if required:
            _fail(f"`{action}` was done, but it could not be recorded in the audit log: {exc}")
        err_console.print(f"[yellow]warning:[/] `{action}` was not recorded in the audit log: {exc}", soft_wrap=True)


@contextmanager
def _holding(ws, made: bool = True):
    """The workspace held for the command (see Workspace.lock); refused when another process holds
    it, or when it cannot be written."""
    from .workspace import WorkspaceError

    held = ws.lock(made=made)
    try:
        held.__enter__()
    except WorkspaceError as exc:
        _fail(str(exc))
    try:
        yield ws
    finally:
        held.__exit__(None, None, None)


def _engine(ws):
    from .engine import open_engine

    return open_engine(ws)


def _stage_progress(progress: Progress, label: str):
    task = progress.add_task(label, total=None)

    def report(item: str, done: int, total: int) -> None:
        progress.update(task, completed=done, total=total, description=f"{label}: {item}")

    return report


ACCEPT_VOLUME_CHANGE_HELP = ("Release this table's delivery although it is beyond its control totals (rows landed "
                             "far from the latest release's load, or a file cut short), after checking it: "
                             "source__table, e.g. magistrates__defendants; give it once per table. Holds for this "
                             "delivery only, and the release notes record it. See docs/release.md.")
WORKSPACE_OPTION = typer.Option(Path("."), "--workspace", "-w", help="The workspace folder (made by `datafirst init`).")
ENGINE_OPTION = typer.Option(None, "--engine", metavar="duckdb|spark", help="Run on this engine instead of the one "
                             "the workspace config names; see docs/spark.md.")
PUBLIC_KEY_OPTION = typer.Option(
    None, "--public-key", metavar="FILE", help="A file holding the trusted public key (PEM, as `datafirst signing-key new` writes "
    "KEY.pub; repeat, or put several in one file, after a change of signing key). Default: the file named by "
    "DATAFIRST_VERIFY_KEY_FILE, else the public key of DATAFIRST_SIGNING_KEY_FILE. Kept outside the workspace.")


@app.command()
def init(
    path: Path = typer.Argument(..., help="Folder to make the workspace in."),
    extracts: Path = typer.Option(..., "--extracts", help="Folder holding the raw extracts."),
    no_contracts: bool = typer.Option(False, "--no-contracts", help="Do not copy the synthetic world's contracts; "
                                      "write your own in PATH/contracts (see docs/contracts.md)."),
) -> None:
    """Make a workspace: config, and a contracts folder (with the world's contracts unless told not to)."""
    from .workspace import Workspace, WorkspaceError

    try:
        ws = Workspace.init(path, extracts, with_world_contracts=not no_contracts)
    except WorkspaceError as exc:
        _fail(str(exc))
    console.print(f"Workspace ready in {ws.root}: config {ws.config_path}, contracts in {ws.root / 'contracts'}")
    if not ws.extracts.is_dir():
        console.print(f"[yellow]note:[/] the extracts folder {ws.extracts} does not exist yet; put the extracts "
                      f"there (or fix `extracts` in {ws.config_path}) before `datafirst ingest`.")


def _run_ingest(ws) -> dict:
    from .sources.contract import ContractError
    from .sources.ingest import IngestError, ingest

    try:
        with _engine(ws) as engine, _progress() as progress:
            loads = ingest(ws, engine, progress=_stage_progress(progress, "Ingest"))
    except (IngestError, ContractError) as exc:
        _fail(f"{exc}\nNothing was loaded; the landed zone is as it was.")
    t = Table(title="Row accounting (read = landed + quarantined)")
    for col in ("source", "table", "file", "read", "landed", "quarantined", "balanced"):
        t.add_column(col, justify="right" if col in ("read", "landed", "quarantined") else "left")
    for x in loads:
        t.add_row(x.source, x.table, x.file, f"{x.read:,}", f"{x.landed:,}", f"{x.quarantined:,}",
                  "yes" if x.balanced else "[red]NO")
    console.print(t)
    if any(x.quarantined for x in loads):
        console.print(f"Quarantined rows, each with its file, row, column and reason: "
                      f"{ws.zone('landed') / '_quarantine.parquet'} (counts by reason in the data quality report "
                      "after `datafirst standardise`).")
    from .release.stage import published
    from .sources.control_totals import pending_messages

    latest = published(ws)
    for message in pending_messages(ws, latest[-1] if latest else None):
        console.print(f"[bold red]control totals:[/] {message}", soft_wrap=True)
    return {"tables": len(loads), "rows_read": sum(x.read for x in loads), "rows_landed": sum(x.landed for x in loads),
            "rows_quarantined": sum(x.quarantined for x in loads)}


def _run_standardise(ws) -> dict:
    from .sources.contract import ContractError
    from .standardise.quality import alert_messages, cleaning_messages, write_report
    from .standardise.stage import reuse_summary, standardise

    try:
        with _engine(ws) as engine:
            with _progress() as progress:
                splits = standardise(ws, engine, progress=_stage_progress(progress, "Standardise"))
            json_path, html_path, report = write_report(ws, engine)
    except (FileNotFoundError, ContractError) as exc:
        _fail(str(exc))
    ids = sum(s.identifiers for s in splits)
    console.print(f"Identifiers zone: {ids:,} records in {sum(1 for s in splits if s.identifiers)} tables; "
                  f"content zone: {sum(s.content for s in splits):,} rows in {len(splits)} tables"
                  f"{reuse_summary(splits)}.")
    messages = cleaning_messages(report)
    if messages:
        console.print("Cleaning rules that emptied or cut values (records flagged in the identifiers zone):")
        for message in messages:
            console.print(f"  {message}", markup=False, highlight=False)
    for message in alert_messages(report):
        console.print(f"[bold red]alert:[/] {message}")
    console.print(f"Data quality report: {html_path} (data: {json_path})")
    return {"tables": len(splits), "identifier_records": ids, "content_rows": sum(s.content for s in splits)}


def _run_train(ws) -> dict:
    from .link.inputs import LinkError
    from .link.train import train

    try:
        with _engine(ws) as engine, console.status("Training the linkage model (Splink: u sampling, EM)"):
            path = train(ws, engine)
    except LinkError as exc:
        _fail(str(exc))
    console.print(f"Model saved: {path} (metadata: {path.with_suffix('.meta.json').name}); "
                  "`datafirst link` uses it without retraining.")
    from .link.train import training_notes

    notes = training_notes(json.loads(path.with_suffix(".meta.json").read_text(encoding="utf-8")))
    if notes:
        console.print("Left out of the model, or learned differently, and why:")
        for note in notes:
            console.print(f"  {note}", markup=False, highlight=False)
    return {"model": path.name}


FULL_LINK_OPTION = typer.Option(False, "--full", help="Score every pair again, even when only some records "
                                 "changed since the last link (by default only those are scored).")


LABELS_HELP = ("Known truth for accuracy figures in the linkage report. CSV or Parquet: record_key, true_id (or "
               "source, table, record_id, true_id) and optional groups sex, ethnicity, age_band, name_origin; "
               "see docs/labels.md. `datafirst world` writes one: WORLD/truth/labels.csv.")


def _check_labels(labels: Path | None) -> None:
    """Refuse a --labels file that is not there or not labels (its extension, that it reads, its
    columns), before any stage runs; its keys are checked against the records when the report is made."""
    if labels is None:
        return
    from .engine import Engine
    from .link.labels import LabelsError, check_file

    try:
        with Engine() as engine:
            check_file(engine, labels)
    except LabelsError as exc:
        _fail(str(exc))


def _run_link(ws, labels: Path | None = None, full: bool = False) -> dict:
    from .link.quality import write_report
    from .link.inputs import LinkError
    from .link.labels import LabelsError, load_labels
    from .link.stage import link

    _check_labels(labels)
    linked = False
    try:
        with _engine(ws) as engine:
            if labels is not None and any(ws.zone("identifiers").glob("*.parquet")):
                load_labels(ws, engine, labels)  # its keys checked against the records before linking
            with _progress() as progress:
                task = progress.add_task("Linking: blocking check", total=None)
                summary = link(ws, engine, full=full, progress=lambda step, done, total: progress.update(
                    task, description=f"Linking: {step}", completed=done, total=total))
            linked = True
            _, html_path, report = write_report(ws, engine, labels)
    except LabelsError as exc:
        _fail(f"{exc}\n" + ("The links zone was written; the linkage quality report was not." if linked
                            else "Nothing was linked; the links zone is as it was."))
    except LinkError as exc:
        _fail(f"{exc}\nThe links zone is as it was.")
    people = ", ".join(f"{name} {n:,}" for name, n in summary.clusters.items())
    console.print(f"Linked {summary.records:,} records with model {summary.model.name}: {summary.edges:,} scored "
                  f"edges ({summary.how()}); people at each threshold: {people}. Links zone: {ws.zone('links')}")
    if report.get("accuracy"):
        acc = ", ".join(f"{a['threshold']} P {a['precision']:.4f} R {a['recall']:.4f} F1 {a['f1']:.4f}"
                        for a in report["accuracy"]["overall"])
        console.print(f"Accuracy against labels: {acc}")
    console.print(f"Linkage quality report (INTERNAL, shows identifiers): {html_path}")
    return {"model": summary.model.name, "records": summary.records, "edges": summary.edges,
            "people": dict(summary.clusters), "mode": summary.mode, "labels": labels is not None}


@app.command()
def train(workspace: Path = WORKSPACE_OPTION, engine: str | None = ENGINE_OPTION) -> None:
    """Train a Splink model on the identifiers zone and save it as a versioned JSON with metadata."""
    with _holding(_workspace(workspace, engine)) as ws:
        _audit(ws.root, "train", "model", _run_train(ws))


@app.command()
def link(
    workspace: Path = WORKSPACE_OPTION,
    labels: Path | None = typer.Option(None, "--labels", help=LABELS_HELP),
    full: bool = FULL_LINK_OPTION,
    engine: str | None = ENGINE_OPTION,
) -> None:
    """Link with the saved model: score pairs once, cluster at high/medium/low, link case journeys,
    write the links zone and the linkage quality report. Only records that changed since the last
    link are scored, unless --full."""
    with _holding(_workspace(workspace, engine)) as ws:
        _audit(ws.root, "link", "links zone", _run_link(ws, labels, full))


@app.command()
def release(
    workspace: Path = WORKSPACE_OPTION,
    new_series: bool = typer.Option(False, "--new-series", help="Give every person a new id instead of carrying "
                                    "ids over from the previous release (needed after a change of hashing key)."),
    accept_volume_change: list[str] | None = typer.Option(None, "--accept-volume-change", metavar="TABLE",
                                                          help=ACCEPT_VOLUME_CHANGE_HELP),
    engine: str | None = ENGINE_OPTION,
) -> None:
    """Build the de-identified products and publish them as a new versioned, immutable, signed
    release (after every earlier release verifies and the privacy guard and key check pass).
    Person ids carry over from the previous release; nothing is published when nothing changed.
    The hashing salt comes from DATAFIRST_SALT_FILE or DATAFIRST_SALT, the signing key from
    DATAFIRST_SIGNING_KEY_FILE, never from the config."""
    from .release.chain import AnchorNotUpdated
    from .release.hashing_key import SecretError
    from .release.signing import SigningKeyError
    from .release.stage import ReleaseError
    from .release.stage import release as make_release

    ws = _workspace(workspace, engine)
    try:
        with _holding(ws), _engine(ws) as db, _progress() as progress:
            # Without --new-series an identical release would add a version that says nothing new.
            summary = make_release(ws, db, new_series=new_series, only_if_changed=not new_series,
                                   accept_volume_change=accept_volume_change or (),
                                   progress=_stage_progress(progress, "Release"))
    except AnchorNotUpdated as exc:
        _audit_release(ws)
        _fail(str(exc))
    except (ReleaseError, SecretError, SigningKeyError) as exc:
        _audit(ws.root, "release", "none", {"outcome": "refused", "error": type(exc).__name__}, required=False)
        _fail(f"{exc}\nNo release was written; earlier releases are untouched.")
    if summary.unchanged:
        _audit(ws.root, "release", "none", {"outcome": "unchanged", "latest": summary.version})
        console.print(f"No change since {summary.version}: the release would equal it (the same tables, dictionary "
                      f"and quality summaries, no person id changed), so none was published. Latest: {summary.path}")
        return
    _audit_release(ws)
    _print_release(summary)


def _audit_release(ws) -> None:
    """The newest release as the audit log records it: its version, manifest hash, keys'
    fingerprints (never the keys) and row counts."""
    from .files import file_sha256
    from .release.stage import published

    path = published(ws)[-1]
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    _audit(ws.root, "release", path.name, {
        "outcome": "published", "version": path.name, "manifest_sha256": file_sha256(path / "manifest.json"),
        "previous": manifest.get("previous"), "signing_key_fingerprint": manifest.get("signing_key_fingerprint"),
        "hashing_key_check": manifest.get("key_check"), "tables": len(manifest.get("tables") or {}),
        "rows": sum((manifest.get("tables") or {}).values())})


def _rows_table(title: str, tables: dict[str, int]) -> Table:
    """Each table of a release or package with its rows."""
    t = Table(title=title)
    t.add_column("table")
    t.add_column("rows", justify="right")
    for name, rows in tables.items():
        t.add_row(name, f"{rows:,}")
    return t


def _print_release(summary) -> None:
    console.print(_rows_table(f"Release {summary.version}", summary.tables))
    console.print(f"Release: {summary.path} (data dictionary: {summary.path / 'dictionary.md'}; "
                  f"release notes: {summary.path / 'RELEASE_NOTES.md'}; catalogue site: "
                  f"{summary.path / 'site' / 'index.html'}; checksums: {summary.path / 'SHA256SUMS'}, "
                  f"signed in {summary.path / 'SHA256SUMS.sig'})")
    _warn_meanings(summary.path)
    _print_head(summary.path)


def _warn_meanings(release: Path) -> None:
    """One warning line when a release has columns without a meaning, or empty in every row with
    no reason: its release notes list them, with the contract key to write."""
    from .release.meanings import check_release

    check = check_release(release)
    if check.missing or check.empty_unexplained:
        console.print(f"[yellow]Warning:[/] {len(check.missing)} columns have no meaning in their contract and "
                      f"{len(check.empty_unexplained)} empty columns have no reason; see \"Column meanings\" in "
                      f"{release / 'RELEASE_NOTES.md'} for the contract keys to write.", soft_wrap=True,
                      highlight=False)


def _print_head(release: Path) -> None:
    """The newest release's version and manifest hash, and what keeping them outside the
    workspace buys (see docs/release.md, "The chain of releases")."""
    from .files import file_sha256
    from .release.chain import ANCHOR_FILE_ENV, anchor_file

    digest = file_sha256(release / "manifest.json")
    console.print(f"Newest release {release.name}, manifest sha256 {digest}.", soft_wrap=True, highlight=False)
    anchor = anchor_file()
    if anchor is not None:
        console.print(f"The anchor {anchor} ({ANCHOR_FILE_ENV}) records it.", soft_wrap=True)
    else:
        console.print(f"No anchor: removing the newest releases would go undetected. Keep the line above outside the "
                      f"workspace, or set {ANCHOR_FILE_ENV} to a file outside it that `datafirst release` keeps up to "
                      "date and `datafirst verify` checks.", soft_wrap=True)


@app.command("diff")
def diff_command(
    release_a: Path = typer.Argument(..., help="The earlier release folder (for example releases/v0001)."),
    release_b: Path = typer.Argument(..., help="The later release folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    public_key: list[Path] | None = PUBLIC_KEY_OPTION,
) -> None:
    """What changed between two releases: rows per table, schema changes, people, and which
    person ids continued, merged or split. Both are verified first, as `datafirst verify` does."""
    from .engine import Engine
    from .release.diff import diff
    from .release.stage import ReleaseError

    for p in (release_a, release_b):
        if not p.is_dir():
            _fail(f"{p} is not a folder; give two release folders, for example releases/v0001 releases/v0002")
    keys = _trusted_keys(public_key, [_workspace_of(p) for p in (release_a, release_b)], None)
    workspaces = dict.fromkeys(w for w in map(_workspace_of, (release_a, release_b))
                               if (w / "datafirst.yaml").is_file())
    subject = f"{release_a.resolve().name} -> {release_b.resolve().name}"
    try:
        with Engine() as engine:
            d = diff(engine, release_a, release_b, keys)
    except ReleaseError as exc:
        for w in workspaces:
            _audit(w, "diff", subject, {"outcome": "refused", "error": type(exc).__name__}, required=False)
        _fail(str(exc))
    for w in workspaces:
        _audit(w, "diff", subject, {"outcome": "compared", "same_key": d["same_key"],
                                    "schema_changes": len(d["schema_changes"])}, required=False)
    if as_json:
        print(json.dumps(d, indent=2))
        return
    a, b = d["a"], d["b"]
    if not d["same_key"]:
        console.print(f"[yellow]{a} and {b} were made with different hashing keys: no record or person id joins "
                      "between them, so every record shows as removed and added.[/]")
    t = Table(title=f"Rows: {a} -> {b}")
    for col in ("table", a, b, "change"):
        t.add_column(col, justify="left" if col == "table" else "right")
    for r in d["tables"]:
        ra, rb = r["rows_a"], r["rows_b"]
        change = "added" if ra is None else "removed" if rb is None else f"{rb - ra:+,}"
        t.add_row(r["table"], "" if ra is None else f"{ra:,}", "" if rb is None else f"{rb:,}", change)
    console.print(t)
    s = Table(title="Schema changes")
    for col in ("change", "table", "column", "detail"):
        s.add_column(col)
    for c in d["schema_changes"]:
        detail = c.get("type") or (f"{c['from']} -> {c['to']}" if "from" in c else "")
        s.add_row(c["change"], c["table"], c.get("column", ""), detail)
    console.print(s if d["schema_changes"] else "Schema changes: none.")
    r = d["records"]
    console.print(f"Records: {r['in_both']:,} in both, {r['only_in_a']:,} only in {a} (removed), "
                  f"{r['only_in_b']:,} only in {b} (added).")
    p = Table(title="People and their ids")
    p.add_column("")
    for th in d["people"]:
        p.add_column(th, justify="right")
    for key, label in (("people_a", f"people in {a}"), ("people_b", f"people in {b}"), ("ids_in_both", "ids kept"),
                       ("ids_only_in_a", f"ids only in {a}"), ("ids_only_in_b", f"ids only in {b} (new)"),
                       ("merges", f"merges (an id of {b} holding records of 2+ ids of {a})"),
                       ("splits", f"splits (an id of {a} whose records are under 2+ ids of {b})")):
        p.add_row(label, *(f"{x[key]:,}" for x in d["people"].values()))
    console.print(p)


@app.command("site")
def site_command(
    release_dir: Path = typer.Argument(..., metavar="RELEASE", help="The release folder, for example releases/v0001."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="The folder to write the site to (new, or a site "
                             "written before, which is replaced). Open DIR/index.html in a browser; no server needed."),
    workspace: Path | None = typer.Option(None, "--workspace", "-w", metavar="DIR", help="The workspace the release "
                                          "was made in, whose identifiers zone the privacy guard checks the pages "
                                          "against. Default: the workspace the release sits in, if any."),
) -> None:
    """Write a release's catalogue as a static site: an overview and how to cite, every table and
    column, a join diagram, linkage and data quality, release notes and changes, and a search that
    works from file://. Built from the release's own files; refused if a page holds a value of the
    identifiers zone (the guard runs when the workspace is known). See docs/site.md."""
    from .release.site import SiteError, site_for_release, workspace_of

    if not release_dir.is_dir():
        _fail(f"{release_dir} is not a folder; give a release folder, for example releases/v0001")
    ws = _workspace(workspace) if workspace is not None else workspace_of(release_dir)
    try:
        summary = site_for_release(release_dir, out, ws)
    except SiteError as exc:
        _fail(str(exc))
    if ws is not None:
        _audit(ws.root, "site", release_dir.resolve().name, {"pages": summary.pages, "guarded": summary.guarded,
                                                             "out": summary.path.name}, required=False)
    console.print(f"Site of {release_dir.name}: {summary.pages} pages in {summary.path}; open "
                  f"{summary.path / 'index.html'}.", soft_wrap=True, highlight=False)
    if summary.guarded:
        console.print(f"The privacy guard read every page against the identifiers zone of {ws.root}: nothing found.",
                      soft_wrap=True, highlight=False)
    else:
        console.print("[yellow]The privacy guard was not run: the release is not in a workspace, so there is no "
                      "identifiers zone to check the pages against (give -w WORKSPACE to run it).[/]", soft_wrap=True)


def _workspace_of(release: Path) -> Path:
    """What a release can be rewritten with: its workspace when it sits in one's releases
    folder, else the release folder itself."""
    from .release.chain import in_series

    return release.resolve().parent.parent if in_series(release) else release.resolve()


def _trusted_keys(files: list[Path] | None, workspaces: list[Path], anchor: Path | None) -> list:
    """The public keys to verify against, refused when kept (or the anchor is) in a workspace
    being verified: whoever rewrites the releases could rewrite them too."""
    from .release.chain import misplaced
    from .release.signing import SigningKeyError, public_key_files, trusted_public_keys

    problems = [m for w in workspaces for m in misplaced(w, public_key_files(files), anchor)]
    if problems:
        _fail("\n".join(dict.fromkeys(problems)))
    try:
        return trusted_public_keys(files)
    except SigningKeyError as exc:
        _fail(str(exc))


@app.command()
def verify(
    path: Path = typer.Argument(..., help="A workspace, its releases folder, or one release folder."),
    public_key: list[Path] | None = PUBLIC_KEY_OPTION,
    anchor: Path | None = typer.Option(None, "--anchor", metavar="FILE", help="A file outside the workspace recording the newest "
                                       "release known (as `datafirst release` keeps it with "
                                       "DATAFIRST_RELEASE_ANCHOR_FILE, the default): the releases must still hold "
                                       "it, unchanged, which shows that none of the newest was removed."),
) -> None:
    """Check every release of a workspace (or one release): its files against SHA256SUMS, the
    signature of SHA256SUMS against the trusted public key, the chain of manifests from v0001
    (each names the one before and its manifest hash), the ledger and the anchor. Lists every
    problem and exits non-zero if there is one."""
    from .release.chain import LEDGER, RELEASES, anchor_file, check_release, check_series, in_series
    from .release.signing import fingerprint

    if (path / "manifest.json").is_file():
        folder = path.resolve().parent if in_series(path) else None
    elif path.is_dir() and ((path / LEDGER).is_file() or path.name == RELEASES):
        folder = path
    elif (path / "datafirst.yaml").is_file() or (path / RELEASES).is_dir():
        folder = path / RELEASES
    else:
        _fail(f"{path} is neither a workspace (no datafirst.yaml or releases folder) nor a release (no manifest.json)")
    if anchor is not None and not anchor.is_file():
        _fail(f"the anchor file {anchor} is not there; it is written by `datafirst release` when "
              "DATAFIRST_RELEASE_ANCHOR_FILE names it")
    anchor = anchor or anchor_file()
    keys = _trusted_keys(public_key, [folder.resolve().parent if folder else path.resolve()], anchor)
    signers = ", ".join(fingerprint(k) for k in keys)
    if folder is None:
        problems = check_release(path, keys)[0]
        if problems:
            _fail(f"release {path} does not verify:\n  " + "\n  ".join(problems))
        console.print(f"Release {path} verifies on its own: every file matches SHA256SUMS, signed by {signers}. It "
                      "is not in a releases folder, so its chain was not checked.", soft_wrap=True, highlight=False)
        return
    check = check_series(folder, keys, anchor)
    problems = check.problems
    if (path / "manifest.json").is_file() and path.resolve().name not in check.releases:
        problems = [f"{path} is not a published release (not a vNNNN folder of {folder})", *problems]
    if (folder.resolve().parent / "datafirst.yaml").is_file():
        subject = path.resolve().name if (path / "manifest.json").is_file() else "releases"
        _audit(folder.resolve().parent, "verify", subject, {
            "outcome": "failed" if problems else "verified", "problems": len(problems),
            "releases": len(check.releases), "newest": check.head.version if check.head else None,
            "public_keys": [fingerprint(k) for k in keys]}, required=False)
    if problems:
        _fail(f"the releases in {folder} do not verify ({len(problems)} problems):\n  " + "\n  ".join(problems))
    if not check.releases:
        console.print(f"No releases in {folder} yet.")
        return
    console.print(f"{len(check.releases)} releases in {folder} verify ({check.releases[0]} to {check.releases[-1]}): "
                  f"every file matches SHA256SUMS, every signature is by {signers}, each manifest links to the one "
                  "before it, and the ledger agrees.", soft_wrap=True, highlight=False)
    if anchor is not None and anchor.is_file():
        console.print(f"The anchor {anchor} names a release that is here, unchanged.", soft_wrap=True)
    elif anchor is not None:
        console.print(f"The anchor file {anchor} does not exist yet: the next `datafirst release` writes it.",
                      soft_wrap=True)
    _print_head(folder / check.releases[-1])


KEY_AUDIT_OPTION = typer.Option(None, "--workspace", "-w", metavar="DIR", help="The workspace whose audit log "
                                "records the new key (its file name and fingerprint, never the key). Default: the "
                                "current folder, when it is a workspace.")


def _key_audit(workspace: Path | None, action: str, subject: str, details: dict) -> None:
    """A new key recorded in the audit log of `workspace` (or of the current folder, if it is one)."""
    root = workspace if workspace is not None else Path(".")
    if workspace is None and not (root / "datafirst.yaml").is_file():
        console.print("Not recorded in an audit log: the current folder is not a workspace (give -w WORKSPACE).")
        return
    _audit(_workspace(root).root, action, subject, details)


signing_key_app = _App(help="The Ed25519 key that signs releases (see docs/release.md).", no_args_is_help=True)
app.add_typer(signing_key_app, name="signing-key")


@signing_key_app.command("new")
def signing_key_new(private_path: Path = typer.Argument(..., help="The private key file to write (refused if it, or "
                                                         "PRIVATE_PATH.pub, exists). Keep it outside the workspace."),
                    workspace: Path | None = KEY_AUDIT_OPTION) -> None:
    """Write a new Ed25519 signing key pair: the private key, readable by you only, and the
    public key beside it (PRIVATE_PATH.pub). Neither key is shown."""
    from .release.signing import SIGNING_KEY_FILE_ENV, VERIFY_KEY_FILE_ENV, SigningKeyError, fingerprint, \
        new_key_pair, public_keys_in

    if workspace is not None:
        _workspace(workspace)  # checked before the key is made
    try:
        public = new_key_pair(private_path)
    except (SigningKeyError, OSError) as exc:
        _fail(str(exc) if isinstance(exc, SigningKeyError) else f"cannot write {private_path}: {exc.strerror}")
    _key_audit(workspace, "signing-key.new", private_path.name, {
        "file": private_path.name, "public_key_file": public.name,
        "signing_key_fingerprint": fingerprint(public_keys_in(public)[0])})
    console.print(f"Wrote a new Ed25519 signing key to {private_path} (owner-only; not shown) and its public key to "
                  f"{public} ({fingerprint(public_keys_in(public)[0])}).\n"
                  f"Sign releases with it: export {SIGNING_KEY_FILE_ENV}={shlex.quote(str(private_path.resolve()))}\n"
                  f"Verify them against the public key: datafirst verify WORKSPACE --public-key "
                  f"{shlex.quote(str(public.resolve()))} (or export {VERIFY_KEY_FILE_ENV}=...).\n"
                  "Keep both outside the workspace, back up the private key where the data owner keeps secrets, and "
                  "give the public key to whoever checks the releases.", soft_wrap=True, markup=False, highlight=False)


def _run_all(ws, retrain: bool = False, labels: Path | None = None, full: bool = False,
             new_series: bool = False, accept_volume_change: list[str] | None = None) -> None:
    from .link.inputs import LinkError
    from .link.labels import LabelsError
    from .release.hashing_key import SecretError
    from .release.signing import SigningKeyError
    from .release.stage import ReleaseError, read_ledger, releases_dir
    from .run import Runner, peak_memory_mb
    from .sources.contract import ContractError
    from .sources.ingest import IngestError

    def report(result) -> None:
        mark = "[green]ran[/]" if result.ran else "[dim]skipped[/]"
        console.print(f"  {result.stage:<12} {mark} {result.seconds:>7.1f} s  {result.detail}")

    _check_labels(labels)
    console.print("Running ingest -> standardise -> train -> link -> release")
    started = time.perf_counter()
    before = [entry["version"] for entry in read_ledger(ws)]
    runner = Runner(ws, retrain=retrain, labels=labels, full_link=full, new_series=new_series,
                    report=report, accept_volume_change=accept_volume_change or ())

    def audited(outcome: str, error: Exception | None = None) -> None:
        details = {"outcome": outcome, "stages": {r.stage: "ran" if r.ran else "skipped" for r in runner.results}}
        _audit(ws.root, "run", "pipeline", details | ({"error": type(error).__name__} if error else {}),
               required=error is None)

    try:
        results = runner.run()
    except LabelsError as exc:
        audited("failed", exc)
        _fail(f"{exc}\nThe run stopped at the linkage quality report (the stages before it finished; no release "
              "was made): correct the labels and run again.")
    except (IngestError, ContractError, LinkError, ReleaseError, SecretError, SigningKeyError) as exc:
        audited("failed", exc)
        _fail(str(exc))
    audited("completed")
    total = time.perf_counter() - started
    latest = [releases_dir(ws) / entry["version"] for entry in read_ledger(ws)]
    if latest and latest[-1].name not in before:
        _audit_release(ws)
    on_spark = (ws.engine_override or ws.config().engine) == "spark"
    console.print(f"Done in {total:.1f} s ({sum(1 for r in results if r.ran)} stages ran), peak memory "
                  f"{peak_memory_mb():,} MB" + (" (this process; Spark's JVM not included)." if on_spark else "."))
    if latest:
        console.print(f"Latest release: {latest[-1]} (dictionary: {latest[-1] / 'dictionary.md'})")
        _warn_meanings(latest[-1])
        _print_head(latest[-1])
    console.print(f"Reports: {ws.reports / 'data_quality' / 'report.html'}, "
                  f"{ws.reports / 'linkage_quality' / 'report.html'} (internal)")


@app.command()
def run(
    workspace: Path = WORKSPACE_OPTION,
    retrain: bool = typer.Option(False, "--retrain", help="Train a new model even if one is saved."),
    labels: Path | None = typer.Option(None, "--labels", help=LABELS_HELP),
    full: bool = FULL_LINK_OPTION,
    new_series: bool = typer.Option(False, "--new-series", help="Release with new person ids instead of carrying "
                                    "them over (needed after a change of hashing key)."),
    accept_volume_change: list[str] | None = typer.Option(None, "--accept-volume-change", metavar="TABLE",
                                                          help=ACCEPT_VOLUME_CHANGE_HELP),
    engine: str | None = ENGINE_OPTION,
) -> None:
    """The whole flow (ingest, standardise, train if no model, link, release), skipping stages whose
    inputs and config have not changed. With a previous link and release, only changed records
    are linked and person ids carry over."""
    with _holding(_workspace(workspace, engine)) as ws:
        _run_all(ws, retrain, labels, full, new_series, accept_volume_change)


@app.command()
def ingest(workspace: Path = WORKSPACE_OPTION, engine: str | None = ENGINE_OPTION) -> None:
    """Load every source's extracts under its contract into the landed zone; bad rows go to quarantine."""
    with _holding(_workspace(workspace, engine)) as ws:
        _audit(ws.root, "ingest", "landed zone", _run_ingest(ws))


@app.command()
def standardise(workspace: Path = WORKSPACE_OPTION, engine: str | None = ENGINE_OPTION) -> None:
    """Clean identifiers per role, split identifiers from content, and write the data quality report."""
    with _holding(_workspace(workspace, engine)) as ws:
        _audit(ws.root, "standardise", "content and identifiers zones", _run_standardise(ws))


audit_app = _App(help="The workspace's hash-chained audit log of runs, releases, key use and checks (see "
                 "docs/deliver.md).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    workspace: Path = WORKSPACE_OPTION,
    public_key: list[Path] | None = PUBLIC_KEY_OPTION,
    anchor: Path | None = typer.Option(None, "--anchor", metavar="FILE", help="A file outside the workspace "
                                       "recording the log's head (as datafirst keeps it with "
                                       "DATAFIRST_AUDIT_ANCHOR_FILE, the default): the log must still hold that "
                                       "entry, unchanged, which shows no entry after it was cut off."),
) -> None:
    """Check the audit log: every entry against its hash, the chain (each names the hash of the
    one before; seq from 1 without a gap, in order), and the signed head and the anchor, which show
    the tail was not cut. Names each problem's seq and exits 1 on any."""
    from .deliver.audit import ANCHOR_FILE_ENV, anchor_file, check, log_path
    from .release.chain import misplaced
    from .release.signing import SigningKeyError, public_key_files, trusted_public_keys

    ws = _workspace(workspace)
    if anchor is not None and not anchor.is_file():
        _fail(f"the anchor file {anchor} is not there; datafirst writes it after each audit entry when "
              f"{ANCHOR_FILE_ENV} names it")
    anchor = anchor or anchor_file()
    placed = misplaced(ws.root, public_key_files(public_key), None)
    if placed:
        _fail("\n".join(placed))
    try:
        keys = trusted_public_keys(public_key)
    except SigningKeyError as exc:
        if public_key:
            _fail(str(exc))
        keys = []  # the signed head cannot be checked; the check says so
    result = check(ws.root, keys, anchor)
    path = log_path(ws.root)
    if result.problems:
        err_console.print(f"[bold red]error:[/] the audit log {path} does not verify ({len(result.problems)} "
                          "problems):\n  " + "\n  ".join(result.problems), soft_wrap=True, highlight=False)
        raise typer.Exit(code=1)
    if not result.entries:
        console.print(f"The audit log {path} holds no entries yet.", soft_wrap=True)
    else:
        console.print(f"The audit log {path} verifies: {result.entries} entries, each matching its hash and naming "
                      f"the hash of the one before, seq 1 to {result.head.seq} in order."
                      + "".join(f" It agrees with {c}." for c in result.confirmed_by), soft_wrap=True, highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True, highlight=False)
    if result.head is not None:
        console.print(f"Audit log head: seq {result.head.seq}, sha256 {result.head.hash}.", soft_wrap=True,
                      highlight=False)


@audit_app.command("show")
def audit_show(
    workspace: Path = WORKSPACE_OPTION,
    last: int = typer.Option(20, "--last", metavar="N", min=1, help="How many of the newest entries to show."),
) -> None:
    """Print the newest entries of the audit log: seq, time (UTC), who, what, on what, and the
    details. `datafirst audit verify` checks that none was edited, removed or reordered."""
    from .deliver.audit import log_path, read_entries

    ws = _workspace(workspace)
    entries = read_entries(ws.root)
    if not entries:
        console.print(f"The audit log {log_path(ws.root)} holds no entries yet.", soft_wrap=True)
        return
    t = Table(title=f"Audit log {log_path(ws.root)} (last {min(last, len(entries))} of {len(entries)})")
    for col in ("seq", "time (UTC)", "actor", "action", "subject", "details"):
        t.add_column(col, justify="right" if col == "seq" else "left", overflow="fold")
    for e in entries[-last:]:
        t.add_row(str(e["seq"]), e["time"], e["actor"], e["action"], e["subject"],
                  json.dumps(e["details"], separators=(", ", ": ")))
    console.print(t, markup=False, highlight=False)


key_app = _App(help="The hashing key that keys every id in a release.", no_args_is_help=True)
app.add_typer(key_app, name="key")


@key_app.command("new")
def key_new(path: Path = typer.Argument(..., help="The key file to write (refused if it exists). Keep it outside "
                                        "the workspace and the repository."),
            workspace: Path | None = KEY_AUDIT_OPTION) -> None:
    """Write a new random 256-bit hashing key to PATH, readable by you only. The key is not shown."""
    from .release.hashing_key import SALT_FILE_ENV, SecretError, write_new_key
    from .run import key_check_of

    if workspace is not None:
        _workspace(workspace)  # checked before the key is made
    try:
        write_new_key(path)
    except SecretError as exc:
        _fail(str(exc))
    _key_audit(workspace, "key.new", path.name, {"file": path.name,
                                                 "hashing_key_check": key_check_of(path.read_text().strip())})
    console.print(f"Wrote a new random 256-bit hashing key to {path} (owner-only permissions; the key is not shown).\n"
                  f"Use it: export {SALT_FILE_ENV}={shlex.quote(str(path.resolve()))}\n"
                  "Back it up where the data owner keeps secrets: every release that researchers will join needs "
                  "the same key, and ids made with it cannot be continued without it.",
                  soft_wrap=True, markup=False, highlight=False)  # the export line stays whole to copy


project_app = _App(help="The project registry: which research project receives which tables and columns, and "
                   "how coarsened (see docs/deliver.md).", no_args_is_help=True)
app.add_typer(project_app, name="project")
project_key_app = _App(help="Each project's own key, which re-keys every id of its packages.", no_args_is_help=True)
project_app.add_typer(project_key_app, name="key")
BY_OPTION = typer.Option(None, "--by", metavar="NAME", help="Who is acting (recorded with the action). Default: "
                         "DATAFIRST_USER, else your login name.")


def _project_table(records) -> Table:  # noqa: ANN001 - ProjectRecords
    t = Table(title="Projects")
    for col in ("project", "title", "TRE", "status", "requested by", "approved by", "expires", "tables"):
        t.add_column(col)
    for r in records:
        status = r.effective_status()
        colour = {"approved": "green", "expired": "dim", "requested": "yellow"}.get(status, "red")
        approval = r.approval
        t.add_row(r.project.id, r.project.title, r.project.tre, f"[{colour}]{status}[/]", r.requested_by,
                  approval["by"] if approval else "", str(r.project.expires), str(len(r.project.tables)))
    return t


@project_app.command("add")
def project_add(file: Path = typer.Argument(..., metavar="FILE", help="The project's YAML file (docs/deliver.md)."),
                workspace: Path = WORKSPACE_OPTION, by: str | None = BY_OPTION) -> None:
    """Register a project as requested: its file is copied into governance/projects and checked
    against the newest release (tables, columns, treatments). Another person approves it."""
    from .deliver.package import check_against_release
    from .deliver.projects import ProjectError, add_project, load_project
    from .release.stage import published

    ws = _workspace(workspace)
    actor = _actor(by)
    try:
        project = load_project(file)
        releases = published(ws)
        problems = check_against_release(project, releases[-1], ws.config().link.journey) if releases else []
        if problems:
            _fail(f"{file} does not fit release {releases[-1].name}:\n  " + "\n  ".join(problems))
        with _holding(ws):
            record = add_project(ws.root, file, actor)
    except ProjectError as exc:
        _fail(str(exc))
    _audit(ws.root, "project add", record.project.id, {"file_sha256": record.yaml_sha256, "tre": record.project.tre,
                                                       "tables": len(record.project.tables)}, by=actor)
    console.print(f"Project {record.project.id} registered as requested by {actor} ({record.path}). Another person "
                  f"approves it: datafirst project approve {record.project.id} --by NAME", soft_wrap=True)


@project_app.command("approve")
def project_approve(project: str = typer.Argument(..., metavar="PROJECT", help="The project's id."), workspace: Path = WORKSPACE_OPTION,
                    by: str | None = BY_OPTION) -> None:
    """Approve a requested project (never by its requester). The approval covers the project
    file as it is now (its SHA-256): an edit afterwards needs a new approval."""
    from .deliver.projects import ProjectError, approve_project

    ws = _workspace(workspace)
    actor = _actor(by)
    try:
        with _holding(ws):
            record = approve_project(ws.root, project, actor)
    except ProjectError as exc:
        _fail(str(exc))
    _audit(ws.root, "project approve", project, {"file_sha256": record.yaml_sha256,
                                                 "requested_by": record.requested_by}, by=actor)
    console.print(f"Project {project} approved by {actor} (requested by {record.requested_by}); the approval covers "
                  f"{record.path.name} with SHA-256 {record.yaml_sha256}.", soft_wrap=True, highlight=False)


@project_app.command("expire")
def project_expire(project: str = typer.Argument(..., metavar="PROJECT", help="The project's id."), workspace: Path = WORKSPACE_OPTION,
                   by: str | None = BY_OPTION) -> None:
    """End a project: nothing more is delivered to it (a project past its `expires` date is
    expired already)."""
    from .deliver.projects import ProjectError, expire_project

    ws = _workspace(workspace)
    actor = _actor(by)
    try:
        with _holding(ws):
            expire_project(ws.root, project, actor)
    except ProjectError as exc:
        _fail(str(exc))
    _audit(ws.root, "project expire", project, {}, by=actor)
    console.print(f"Project {project} expired by {actor}: nothing more is delivered to it.")


@project_app.command("list")
def project_list(workspace: Path = WORKSPACE_OPTION) -> None:
    """Every registered project and its status."""
    from .deliver.projects import ProjectError, list_projects

    ws = _workspace(workspace)
    try:
        records = list_projects(ws.root)
    except ProjectError as exc:
        _fail(str(exc))
    if not records:
        console.print("No project is registered yet: datafirst project add FILE")
        return
    console.print(_project_table(records))


@project_app.command("show")
def project_show(project: str = typer.Argument(..., metavar="PROJECT", help="The project's id."), workspace: Path = WORKSPACE_OPTION) -> None:
    """A project: its approval, history, and each approved column with its treatment."""
    from .deliver.projects import ProjectError, get_project
    from .deliver.treatments import describe

    ws = _workspace(workspace)
    try:
        r = get_project(ws.root, project)
    except ProjectError as exc:
        _fail(str(exc))
    p = r.project
    console.print(f"[bold]{p.id}[/]: {p.title}\n  legal basis: {p.legal_basis}\n  approval reference: "
                  f"{p.approval_reference}\n  TRE: {p.tre}; expires {p.expires}; person ids at {p.person_id}\n"
                  f"  researchers: {', '.join(p.researchers)}\n  status: {r.effective_status()}", highlight=False)
    for e in r.history:
        console.print(f"  {e['at']}  {e['action']} by {e['by']} (file SHA-256 {e['sha256'][:16]}...)", highlight=False)
    t = Table(title=f"Approved columns of {p.id}")
    for col in ("table", "column", "treatment"):
        t.add_column(col)
    for table, columns in p.tables.items():
        for column, treatment in columns.items():
            t.add_row(table, column, "dropped" if treatment == "drop" else describe(treatment))
    console.print(t)


@project_app.command("template")
def project_template(
    project: str = typer.Argument(..., metavar="PROJECT", help="The new project's id."),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="The project file to write (not overwritten)."),
    release_version: str | None = typer.Option(None, "--release", metavar="vNNNN", help="The release to draft from "
                                               "(default: the newest)."),
    fit: bool = typer.Option(True, "--fit/--no-fit", help="Measure the draft on the release's tables and coarsen "
                             "further where a table would stay below k (default: fit)."),
    workspace: Path = WORKSPACE_OPTION,
    engine: str | None = ENGINE_OPTION,
) -> None:
    """Draft a project file from a release: the default research template (every table; dates to
    month, years of birth to age bands, postcode districts to areas, ethnicity to its groups, fine
    codes dropped, amounts banded; quasi-identifiers declared; k 5), fitted to the release so that
    each table reaches k within 2% suppression. Governance staff complete and trim it, then add it."""
    from .deliver.templates import TemplateError, fit_template, project_yaml, research_template
    from .deliver.projects import valid_id
    from .release.stage import published

    ws = _workspace(workspace, engine)
    if not valid_id(project):
        _fail(f"{project!r} is not a project id (a letter, then letters, digits, - or _)")
    if out.exists():
        _fail(f"{out} exists; give a new file with --out")
    releases = {r.name: r for r in published(ws)}
    if not releases or (release_version is not None and release_version not in releases):
        _fail(f"no release {release_version or ''} in {ws.root} (releases: {', '.join(releases) or 'none'})")
    chosen = releases[release_version or list(releases)[-1]]
    try:
        drafted, changes = research_template(chosen, project), []
        if fit:
            with _engine(ws) as db:
                drafted, changes = fit_template(db, chosen, drafted)
    except TemplateError as exc:
        _fail(str(exc))
    out.write_text(project_yaml(drafted, changes), encoding="utf-8")
    console.print(f"Drafted project {project} from {chosen.name} in {out}: {len(drafted.tables)} tables"
                  + (f"; {len(changes)} steps coarser than the template to reach k (listed at its top)" if changes else "")
                  + ". Complete it, then: datafirst project "
                  f"add {out}", soft_wrap=True, highlight=False)


@project_key_app.command("new")
def project_key_new(project: str = typer.Argument(..., metavar="PROJECT", help="The project's id."), workspace: Path = WORKSPACE_OPTION) -> None:
    """Write a new random key for a registered project, in DATAFIRST_PROJECT_KEYS_DIR (outside the
    workspace, owner-only). Refused when the project has one. The key is not shown."""
    from .deliver.project_keys import new_project_key
    from .deliver.projects import ProjectError, get_project
    from .release.hashing_key import SecretError

    ws = _workspace(workspace)
    try:
        get_project(ws.root, project)
        path = new_project_key(ws.root, project)
    except (ProjectError, SecretError) as exc:
        _fail(str(exc))
    _audit(ws.root, "project key new", project, {"key_file": path.name})
    console.print(f"Wrote a new random 256-bit key for project {project} to {path} (owner-only; not shown). Back it "
                  "up with the data owner's secrets: the project's packages join to each other only through it.",
                  soft_wrap=True, highlight=False)


@app.command("synth")
def synth_command(
    release_dir: Path = typer.Argument(..., metavar="RELEASE", help="The release folder, for example releases/v0001."),
    fidelity: str = typer.Option(..., "--fidelity", metavar="low|mid", help="low: each column by its own "
                                 "distribution on the release's key structure; mid: each person's records drawn in "
                                 "turn, each column given the person and the columns before it (docs/synth.md)."),
    seed: int = typer.Option(0, "--seed", metavar="S", help="The same release, fidelity and seed give byte-identical "
                             "twins."),
    epsilon: float | None = typer.Option(None, "--epsilon", metavar="E", help="Differential privacy budget: the "
                                         "low twin is drawn from noisy counts over declared domains, E split across "
                                         "them (low fidelity only; docs/synth.md)."),
    out: Path | None = typer.Option(None, "--out", metavar="DIR", help="Where the twin's folder (vNNNN-FIDELITY) goes; "
                                    "default: the workspace's synthetic folder."),
    workspace: Path | None = typer.Option(None, "--workspace", "-w", metavar="DIR", help="The workspace the release was "
                                          "made in (its contracts give the derived tables' SQL). Default: the "
                                          "workspace the release sits in."),
    public_key: list[Path] | None = PUBLIC_KEY_OPTION,
) -> None:
    """Write a synthetic twin of a verified release: every table with the same columns, types, code
    lists and joins, new ids, generated rows, everything marked SYNTHETIC (docs/synth.md)."""
    from .engine import Engine
    from .synth.evaluate import twin_with_report
    from .synth.report import ReportError
    from .synth.models import SynthError

    if not release_dir.is_dir():
        _fail(f"{release_dir} is not a folder; give a release folder, for example releases/v0001")
    ws = _workspace(workspace if workspace is not None else _workspace_of(release_dir))
    config = ws.config()
    try:
        # The generator's SQL is DuckDB's (ASOF joins, hash functions): it runs in DuckDB whatever
        # the workspace's engine, with the workspace's threads and memory limit.
        with _holding(ws), Engine(threads=config.threads, memory_limit=config.memory_limit,
                                  temp_directory=ws.scratch) as db, _progress() as progress:
            task = progress.add_task("Synthesise", total=None)
            twin = twin_with_report(ws, release_dir, fidelity, seed, db, epsilon=epsilon, out=out, public_keys=public_key,
                                    progress=lambda step: progress.update(task, description=f"Synthesise: {step}"))
    except (SynthError, ReportError) as exc:
        _fail(f"{exc}\nNo twin was written.")
    _audit(ws.root, "synth", release_dir.resolve().name, {"fidelity": fidelity, "seed": seed, "twin": twin.path.name,
                                                          "rows": sum(twin.rows.values())}, required=False)
    console.print(_rows_table(f"SYNTHETIC twin {twin.path.name} of release {release_dir.resolve().name}", twin.rows))
    console.print(f"Twin: {twin.path} (SYNTHETIC data; dictionary.json, manifest.json, README.md, the utility and "
                  f"privacy report in report/report.html and report.json, SHA256SUMS).",
                  soft_wrap=True, highlight=False)


# De-identified linkage with an outside partner (docs/pprl.md): encode, pprl-link, pprl-map, pprl-schema.
PPRL_SOURCE_OPTION = typer.Option(None, "--source", metavar="SOURCE", help="Encode only these sources of the "
                                  "identifiers (repeat for several); default: all.")
PPRL_SECRET_OPTION = typer.Option(None, "--secret-file", metavar="FILE", help="The secret the two data holders share "
                                  "(default: the DATAFIRST_PPRL_SECRET environment variable). Never give it to the "
                                  "linker.")


def _pprl_errors():
    from .pprl.encode import EncodeError
    from .pprl.link import PprlLinkError
    from .pprl.schema import SchemaError
    from .release.hashing_key import SecretError

    return (EncodeError, PprlLinkError, SchemaError, SecretError)


@app.command("pprl-schema")
def pprl_schema_command(out: Path = typer.Argument(..., metavar="FILE", help="Where to write the schema (refused if "
                                                   "it exists).")) -> None:
    """Write datafirst's default linkage schema, to share with the partner and the linker (docs/pprl.md)."""
    from .pprl.schema import DEFAULT_SCHEMA

    if out.exists():
        _fail(f"{out} already exists; choose another file name")
    out.write_bytes(DEFAULT_SCHEMA.read_bytes())
    console.print(f"Linkage schema: {out}. Give this very file to the partner and the linker; a changed copy is "
                  "refused by pprl-link.", soft_wrap=True, highlight=False)


@app.command("encode")
def encode_command(
    schema: Path = typer.Option(..., "--schema", metavar="FILE", help="The linkage schema both parties hold."),
    identifiers: Path = typer.Option(..., "--in", metavar="IDENTIFIERS", help="A datafirst workspace (its "
                                     "standardised identifiers), its zones/identifiers folder, or a Parquet file."),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="The encoded file (Parquet) to send to the linker."),
    party: str = typer.Option(..., "--party", metavar="NAME", help="This data holder's name, e.g. courts, education."),
    secret_file: Path | None = PPRL_SECRET_OPTION,
    source: list[str] | None = PPRL_SOURCE_OPTION,
) -> None:
    """Encode standardised identifiers as keyed Bloom filters and match keys, for de-identified linkage."""
    from .engine import Engine
    from .pprl.encode import encode, identifier_inputs
    from .pprl.schema import load_schema
    from .pprl.shared_key import load_secret

    try:
        loaded = load_schema(schema)
        secret = load_secret(secret_file)
        with Engine() as engine:
            meta = encode(engine, loaded, secret, identifier_inputs(identifiers), out, party, source)
    except _pprl_errors() as exc:
        _fail(str(exc))
    console.print(f"Encoded {meta['records']:,} records of {party} into {out} (schema version {meta['schema_version']},"
                  f" {loaded.sha256[:12]}…). Send it to the linker; keep the secret.", soft_wrap=True, highlight=False)


@app.command("pprl-link")
def pprl_link_command(
    files: list[Path] = typer.Argument(..., metavar="ENCODED...", help="The parties' encoded files."),
    schema: Path = typer.Option(..., "--schema", metavar="FILE", help="The linkage schema the parties encoded with."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Where links.parquet, model.json and link.json go."),
) -> None:
    """Link encoded files without identifiers or the secret: a link table of opaque tokens and person ids."""
    from .engine import Engine
    from .pprl.link import pprl_link
    from .pprl.schema import load_schema

    try:
        loaded = load_schema(schema)
        with Engine() as engine:
            info = pprl_link(engine, loaded, files, out)
    except _pprl_errors() as exc:
        _fail(str(exc))
    console.print(f"Linked {sum(p['records'] for p in info['parties'].values()):,} records of "
                  f"{', '.join(info['parties'])}: {info['candidate_pairs']:,} candidate pairs, "
                  f"{info['cross_party_pairs_at_medium']:,} cross-party pairs at medium, {info['persons']['medium']:,} "
                  f"people at medium. Link table: {out / 'links.parquet'}", soft_wrap=True, highlight=False)


@app.command("pprl-map")
def pprl_map_command(
    links: Path = typer.Option(..., "--links", metavar="FILE", help="The linker's links.parquet."),
    identifiers: Path = typer.Option(..., "--in", metavar="IDENTIFIERS", help="The identifiers this party encoded."),
    party: str = typer.Option(..., "--party", metavar="NAME", help="This party's name, as given to encode."),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="The party's records with their person ids (Parquet)."),
    secret_file: Path | None = PPRL_SECRET_OPTION,
    source: list[str] | None = PPRL_SOURCE_OPTION,
) -> None:
    """Map the linker's tokens back to this party's records: record key, source and person ids."""
    from .engine import Engine
    from .pprl.encode import identifier_inputs
    from .pprl.mapping import map_links
    from .pprl.shared_key import load_secret

    try:
        secret = load_secret(secret_file)
        with Engine() as engine:
            done = map_links(engine, secret, identifier_inputs(identifiers), links, party, out, source)
    except _pprl_errors() as exc:
        _fail(str(exc))
    console.print(f"Mapped {done['records']:,} records of {party} to their person ids: {out}", soft_wrap=True,
                  highlight=False)


@app.command("deliver")
def deliver_command(
    project: str = typer.Option(..., "--project", metavar="PROJECT", help="The approved project to deliver to."),
    release_version: str | None = typer.Option(None, "--release", metavar="vNNNN", help="The release to deliver "
                                               "from (default: the newest)."),
    out: Path | None = typer.Option(None, "--out", metavar="DIR", help="Where packages go (DIR/PROJECT/vNNNN-N); "
                                    "default: the workspace's deliveries folder."),
    workspace: Path = WORKSPACE_OPTION,
    by: str | None = BY_OPTION,
    public_key: list[Path] | None = PUBLIC_KEY_OPTION,
    engine: str | None = ENGINE_OPTION,
) -> None:
    """Build an approved project's package from a verified release: only its approved columns,
    coarsened as approved, every id re-keyed with the project's key, the person tables made again
    from its approved sources only; Parquet, CSV and Stata files, dictionary, manifest, checksums
    and a README. Refused for an unknown, unapproved, expired or edited project, and for a release
    that does not verify."""
    from .deliver.package import DeliveryError, deliver
    from .deliver.projects import ProjectError
    from .files import file_sha256
    from .release.hashing_key import SecretError
    from .release.signing import SigningKeyError

    ws = _workspace(workspace, engine)
    actor = _actor(by)
    try:
        with _holding(ws), _engine(ws) as db, _progress() as progress:
            d = deliver(ws, project, db, by=actor, release=release_version, out=out, public_keys=public_key,
                        progress=_stage_progress(progress, "Deliver"))
    except (DeliveryError, ProjectError, SecretError, SigningKeyError) as exc:
        _audit(ws.root, "deliver", project, {"outcome": "refused", "error": exc.__class__.__name__,
                                             "release": release_version}, by=actor)
        _fail(f"{exc}\nNo package was written.")
    _audit(ws.root, "deliver", project, {
        "outcome": "delivered", "release": d.release, "package": d.path.name, "formats": d.formats,
        "sources": d.sources, "tables": len(d.tables), "rows": sum(d.tables.values()),
        "manifest_sha256": file_sha256(d.path / "manifest.json"),
        "project_key_check": json.loads((d.path / "manifest.json").read_text(encoding="utf-8")).get("project_key_check")},
        by=actor)
    console.print(_rows_table(f"Package {d.path.name} for project {d.project} (release {d.release})", d.tables))
    console.print(f"Package: {d.path} ({', '.join(d.formats)}; README.md, dictionary, manifest.json, SHA256SUMS). "
                  f"Approved sources: {', '.join(d.sources) or 'none'}.", soft_wrap=True, highlight=False)


# What `datafirst demo` makes in its folder; an earlier demo's are removed before a new one.
# `secrets/` (the demonstration keys) is kept: a new demo starts a new release series anyway.
DEMO_SIGNING_KEY = "demo-signing.key"
DEMO_ENTRIES = ("world", "datafirst.yaml", "contracts", "zones", "models", "releases", "reports", "governance",
                ".state", ".scratch")


def _earlier_demo(out: Path) -> bool:
    """A workspace made by `datafirst demo`: its config reads the extracts of its own
    generated world (world/world.json is there)."""
    from .workspace import Workspace, WorkspaceError

    if not (out / "datafirst.yaml").is_file() or not (out / "world" / "world.json").is_file():
        return False
    try:
        return Path(Workspace(out).config().extracts) == Path("world") / "extracts"
    except WorkspaceError:
        return False


def _demo_leftover(path: Path) -> bool:
    """The lock file, or the world a stopped demo was writing: no sign of another kind of folder."""
    from .workspace import LOCK_FILE
    from .world.generate import is_partial_folder

    return path.name == LOCK_FILE or is_partial_folder(path, path.parent / "world")


def _only_demo_key(out: Path) -> bool:
    """Nothing but an earlier demo's key (kept when clearing it), e.g. after a demo was stopped."""
    keys = out / "secrets"
    return (out.is_dir() and [p.name for p in out.iterdir() if not _demo_leftover(p)] == ["secrets"]
            and keys.is_dir() and not keys.is_symlink()
            and {p.name for p in keys.iterdir()} <= {"demo.salt", DEMO_SIGNING_KEY, DEMO_SIGNING_KEY + ".pub"})


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-workspace"), "--out", help="Workspace folder for the demo. If it holds an "
                             "earlier demo, that demo (world, zones, models, reports, releases, governance records and "
                             "audit log, run state) is removed first and the new one starts afresh from release "
                             "v0001; its demonstration key in secrets/ is kept. Any other non-empty folder is "
                             "refused."),
    people: int = typer.Option(20_000, "--people", help="People in the demo world."),
    seed: int = typer.Option(42, "--seed", help="Random seed of the demo world."),
) -> None:
    """The main job on the embedded default: a synthetic justice world through the pipeline on DuckDB
    (generate, ingest, standardise, train, link, release)."""
    import os

    from .release.hashing_key import SALT_ENV, SALT_FILE_ENV, SecretError, load_salt
    from .workspace import LOCK_FILE, Workspace, remove_tree

    if os.environ.get(SALT_ENV) or os.environ.get(SALT_FILE_ENV):
        try:  # checked now, not after generating and linking the world
            load_salt()
        except SecretError as exc:
            _fail(str(exc))
    world_dir = out / "world"
    if out.exists() and (not out.is_dir() or any(not _demo_leftover(p) for p in out.iterdir())) \
            and not _earlier_demo(out) and not _only_demo_key(out):  # the key: a demo stopped after clearing
        _fail(f"{out} exists and is not a datafirst demo workspace; choose another --out")
    # Held before an earlier demo is cleared: a run still working on it is not pulled from under.
    with _holding(Workspace(out), made=False):
        for p in out.iterdir() if out.is_dir() else []:
            if p.name != LOCK_FILE and _demo_leftover(p):  # a stopped demo's world (a live one holds the lock)
                remove_tree(p)
        if _earlier_demo(out):
            for name in DEMO_ENTRIES:  # only ever an earlier demo's: checked just above
                if (out / name).exists() or (out / name).is_symlink():
                    remove_tree(out / name)
        summary = _generate(world_dir, people, seed)
        console.print(f"World: {summary.records:,} source records for {summary.people:,} people in "
                      f"{summary.seconds:.1f} s")
        _print_realism(world_dir, with_errors=False)
        ws = Workspace.init(out, world_dir / "extracts")
        from .release.hashing_key import make_demo_salt
        from .world.labels import write_labels

        if not (os.environ.get(SALT_ENV) or os.environ.get(SALT_FILE_ENV)):
            try:
                salt = make_demo_salt(out / "secrets" / "demo.salt")
            except SecretError as exc:
                _fail(str(exc))
            os.environ[SALT_FILE_ENV] = str(salt)
            console.print(f"[yellow]Demonstration key:[/] {salt} (random, made for this demo only, outside the "
                          f"releases). For real data make a key with `datafirst key new FILE`, kept outside the "
                          f"workspace, and set {SALT_FILE_ENV} to it.")
        from .release.signing import SIGNING_KEY_FILE_ENV, make_demo_signing_key

        if not os.environ.get(SIGNING_KEY_FILE_ENV):
            signing = make_demo_signing_key(out / "secrets" / DEMO_SIGNING_KEY)
            os.environ[SIGNING_KEY_FILE_ENV] = str(signing)
            console.print(f"[yellow]Demonstration signing key:[/] {signing} (made for this demo only; its public key "
                          f"is {signing.name}.pub). For real data make one outside the workspace with `datafirst "
                          f"signing-key new` and set {SIGNING_KEY_FILE_ENV}.")
        _run_all(ws, retrain=True, labels=write_labels(world_dir, world_dir / "truth" / "labels.csv"))
    console.print(f"[bold green]Done.[/] Workspace: {ws.root}; zones: {ws.zones}; raw extracts: {world_dir / 'extracts'}; "
                  f"world realism: datafirst realism {shlex.quote(str(world_dir))}")
    signing_key = os.environ.get(SIGNING_KEY_FILE_ENV)
    if signing_key:
        # The demo's keys sit in its own folder (a demonstration protects nothing); `verify` takes
        # the public key from outside the workspace, here derived from the signing key.
        console.print(f"Check the releases: {SIGNING_KEY_FILE_ENV}={shlex.quote(signing_key)} datafirst verify "
                      f"{shlex.quote(str(ws.root))}")


outputs_app = _App(help="Output checking: researchers' ACRO outputs, approved by a checker before they leave the TRE "
                   "(see docs/deliver.md).", no_args_is_help=True)
app.add_typer(outputs_app, name="outputs")
BY_OPTION_HELP = "Who is acting (recorded). Default: $DATAFIRST_USER, else the login name."


def _outputs_call(call):  # noqa: ANN001, ANN202 - any of outputs.py's steps
    from .deliver.outputs import OutputsError
    from .deliver.projects import ProjectError

    try:
        return call()
    except (OutputsError, ProjectError) as exc:
        _fail(str(exc))


@outputs_app.command("submit")
def outputs_submit(
    folder: Path = typer.Argument(..., metavar="DIR", help="The folder ACRO's finalise wrote (results.json and "
                                  "the outputs)."),
    project: str = typer.Option(..., "--project", metavar="P", help="The approved project the outputs belong to."),
    by: str | None = typer.Option(None, "--by", metavar="NAME",
                                  help=BY_OPTION_HELP + " One of the project's researchers."),
    workspace: Path = WORKSPACE_OPTION,
) -> None:
    """Submit a researcher's finalised ACRO outputs for checking: copied into the workspace with the
    SHA-256 of every file, who submitted them and when."""
    from .deliver.outputs import submit

    ws = _workspace(workspace)
    request = _outputs_call(lambda: submit(ws.root, project, folder, _actor(by)))
    _audit(ws.root, "outputs submit", request.id, {"project": project, "outputs": len(request.outputs),
                                                   "files_sha256": request.files}, by=request.submitted_by)
    statuses = [o.acro_status for o in request.outputs.values()]
    console.print(f"Submitted {len(request.outputs)} outputs as request {request.id} (ACRO: "
                  + ", ".join(f"{statuses.count(s)} {s}" for s in ("pass", "fail", "review")) + "). "
                  f"A checker other than {request.submitted_by} reviews it: datafirst outputs review {request.id}",
                  soft_wrap=True, highlight=False)


@outputs_app.command("list")
def outputs_list(
    project: str | None = typer.Option(None, "--project", metavar="P", help="Only this project's requests."),
    workspace: Path = WORKSPACE_OPTION,
) -> None:
    """List the output requests, with ACRO's verdicts and the checker's decisions."""
    from .deliver.outputs import EXPORTS_FILE, current_decisions, list_requests

    ws = _workspace(workspace)
    requests = _outputs_call(lambda: list_requests(ws.root, project))
    if not requests:
        console.print("No output requests yet." if project is None else f"No output requests for {project}.")
        return
    table = Table(title="Output requests")
    for col in ("request", "project", "submitted by", "submitted at", "ACRO pass/fail/review",
                "approved", "rejected", "undecided", "exported"):
        table.add_column(col)
    for request in requests:
        statuses = [o.acro_status for o in request.outputs.values()]
        in_force = current_decisions(request)
        decided = [d.decision for d in in_force.values()]
        exports = request.folder / EXPORTS_FILE
        exported = f"{len(exports.read_text(encoding='utf-8').splitlines())} times" if exports.is_file() else "no"
        table.add_row(request.id, request.project, request.submitted_by, request.submitted_at,
                      "/".join(str(statuses.count(s)) for s in ("pass", "fail", "review")),
                      str(decided.count("approve")), str(decided.count("reject")),
                      str(sum(not o.checker_only and o.name not in in_force for o in request.outputs.values())),
                      exported)
    console.print(table)


def _show_request(request) -> None:  # noqa: ANN001 - outputs.Request
    from .deliver.outputs import changed_files, current_decisions

    in_force = current_decisions(request)
    table = Table(title=f"Request {request.id} of {request.project}, submitted by {request.submitted_by} at "
                  f"{request.submitted_at} (ACRO {request.acro_version})", show_lines=True)
    for col in ("output", "ACRO", "type", "files", "ACRO's checks", "researcher's exception request", "decision"):
        table.add_column(col, overflow="fold")
    colours = {"pass": "green", "fail": "bold red", "review": "yellow"}
    for output in request.outputs.values():
        decision = in_force.get(output.name)
        shown = "undecided" if decision is None else (
            f"{decision.decision} by {decision.by}" + (f": {decision.reason}" if decision.reason else ""))
        if output.checker_only:
            shown = "for the checker; never released"
        checks = "\n".join(line.strip() for line in output.summary.splitlines() if line.strip())
        table.add_row(output.name, f"[{colours[output.acro_status]}]{output.acro_status}[/]", output.kind,
                      "\n".join(output.files), checks, output.exception, shown)
    console.print(table)
    changed = changed_files(request)
    if changed:
        err_console.print(f"[bold red]warning:[/] files changed since submission: {', '.join(changed)}; "
                          "the request cannot be approved or exported")
    console.print(f"Decide with: datafirst outputs review {request.id} --approve NAME --reject NAME [--reason TEXT] "
                  "(an output ACRO did not pass is approved only with a reason).", soft_wrap=True, highlight=False)


@outputs_app.command("review")
def outputs_review(
    request: str = typer.Argument(..., metavar="REQUEST", help="The request id (see `datafirst outputs list`)."),
    approve: list[str] | None = typer.Option(None, "--approve", metavar="NAME", help="Approve this output (repeat "
                                             "for several)."),
    reject: list[str] | None = typer.Option(None, "--reject", metavar="NAME", help="Reject this output (repeat for "
                                            "several)."),
    reason: str = typer.Option("", "--reason", metavar="TEXT", help="Why: required to approve an output ACRO marked "
                               "fail or review (the exception); recorded with every decision given here."),
    by: str | None = typer.Option(None, "--by", metavar="NAME", help=BY_OPTION_HELP + " Not the submitter."),
    workspace: Path = WORKSPACE_OPTION,
) -> None:
    """Show a request's outputs with ACRO's checks, or record the checker's decision on them."""
    from .deliver.outputs import Ruling, load_request, review

    ws = _workspace(workspace)
    request = _outputs_call(lambda: load_request(ws.root, request))
    approve, reject = approve or [], reject or []
    if not approve and not reject:
        _show_request(request)
        return
    both = sorted(set(approve) & set(reject))
    if both:
        _fail(f"{', '.join(both)} given both to --approve and --reject; decide each output once")
    rulings = {name: Ruling("approve", reason) for name in approve}
    rulings |= {name: Ruling("reject", reason) for name in reject}
    made = _outputs_call(lambda: review(ws.root, request.id, _actor(by), rulings))
    _audit(ws.root, "outputs review", request.id, {"project": request.project, "decisions": {
        d.output: {"decision": d.decision, "acro": d.acro_status, "exception_reason_given": bool(d.reason)}
        for d in made}}, by=made[0].by if made else by)
    for decision in made:
        done = {"approve": "approved", "reject": "rejected"}[decision.decision]
        console.print(f"{decision.output}: {done} by {decision.by} (ACRO: {decision.acro_status})"
                      + (f"; reason: {decision.reason}" if decision.reason else ""), highlight=False)


@outputs_app.command("export")
def outputs_export(
    request: str = typer.Argument(..., metavar="REQUEST", help="The request id (see `datafirst outputs list`)."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="A new or empty folder for the approved outputs."),
    by: str | None = typer.Option(None, "--by", metavar="NAME", help=BY_OPTION_HELP),
    workspace: Path = WORKSPACE_OPTION,
) -> None:
    """Copy only the approved outputs out, with decisions.json: who approved each, why, and what was withheld."""
    from .deliver.outputs import EXPORT_RECORD, export

    ws = _workspace(workspace)
    record = _outputs_call(lambda: export(ws.root, request, out, _actor(by)))
    _audit(ws.root, "outputs export", record["request"], {"outputs": sorted(record["outputs"]),
                                                          "withheld": sorted(record["withheld"])}, by=by)
    console.print(f"Exported {len(record['outputs'])} approved outputs of {record['request']} to {out} "
                  f"({', '.join(record['outputs'])}); withheld: "
                  + (", ".join(f"{n} ({why})" for n, why in record["withheld"].items()) or "none")
                  + f". The record is {out / EXPORT_RECORD}.", soft_wrap=True, highlight=False)


@app.command("deliver-split")
def deliver_split(
    project: str = typer.Option(..., "--project", metavar="ID", help="The project (its file is "
                                "governance/projects/ID.yaml in the workspace); its TRE must be SAIL."),
    release: str | None = typer.Option(None, "--release", metavar="vNNNN", help="The release to deliver from "
                                       "(default: the latest)."),
    out: Path | None = typer.Option(None, "--out", metavar="DIR", help="A new folder to write to (default: "
                                    "deliveries/ID/vNNNN-split-N in the workspace)."),
    public_key: list[Path] | None = PUBLIC_KEY_OPTION,
    workspace: Path = WORKSPACE_OPTION,
) -> None:
    """SAIL split files for a project: File 1 (identifiers and a system id, for the trusted third
    party), File 2 (the approved tables with the same system id, for SAIL) and the mapping the
    data owner keeps. The one delivery that reads the identifiers zone (docs/deliver.md). The
    release must verify; the hashing key (DATAFIRST_SALT_FILE or DATAFIRST_SALT) must be its own."""
    from .deliver.package import DeliveryError, verified_release
    from .deliver.projects import ProjectError, projects_folder, require_approved
    from .deliver.split_file import SplitFileError, split_folder, write_split_files
    from .release.hashing_key import SecretError, load_salt
    from .release.signing import SigningKeyError

    ws = _workspace(workspace)
    try:
        declared = require_approved(ws.root, project).project
        chosen = verified_release(ws, release, public_key)
        salt = load_salt()
        with _holding(ws), _engine(ws) as db:
            written = write_split_files(db, ws, chosen, declared, out or split_folder(ws, declared.id, chosen.name),
                                        salt, source=str(projects_folder(ws.root) / f"{project}.yaml"),
                                        public_keys=public_key)
    except (DeliveryError, ProjectError, SplitFileError, SecretError, SigningKeyError) as exc:
        _audit(ws.root, "deliver-split", project, {"outcome": "refused", "error": exc.__class__.__name__,
                                                   "release": release})
        _fail(str(exc))
    _audit(ws.root, "deliver-split", project, {"outcome": "delivered", "release": chosen.name,
                                               "folder": written.path.name, "file1_records": written.records,
                                               "file2_tables": written.tables})
    console.print(f"Split files for {declared.id} from {chosen.name} in {written.path}:\n"
                  f"  File 1 (to the trusted third party only): {written.records:,} person records\n"
                  f"  File 2 (to SAIL only): " + ", ".join(f"{t} ({n:,} rows)" for t, n in written.tables.items())
                  + "\n  owner_keeps/ stays with the data owner. See README.md there.", soft_wrap=True,
                  highlight=False, markup=False)


def entry() -> None:
    """The `datafirst` command: `app`, with an engine that stops (a setting naming a column that is
    not there, memory running out, an interrupted query) reported on one error line, not as a
    traceback. A stage replaces its zone whole when it has finished, so the workspace stays usable."""
    import duckdb

    try:
        app(prog_name="datafirst")
    except KeyboardInterrupt:
        err_console.print("[bold red]error:[/] interrupted; the stage that was running did not finish (the "
                          "stages before it did): run again to carry on")
        raise SystemExit(130) from None
    except PermissionError as exc:
        # A workspace (or a folder in it) that this user may not write: read-only, or another owner's.
        where = exc.filename or "a file of the workspace"
        err_console.print(f"[bold red]error:[/] cannot write {where}: permission denied. Make the workspace writable "
                          "for this user (e.g. chmod -R u+w on it, or run as its owner), then run again. The stage "
                          "that was running did not finish (the stages before it did).", soft_wrap=True)
        raise SystemExit(1) from None
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        where = exc.filename or "the workspace"
        err_console.print(f"[bold red]error:[/] cannot write {where}: {exc.strerror}. Free space or use a writable "
                          "workspace, then run again. The stage that was running did not finish (the stages before "
                          "it did).", soft_wrap=True)
        raise SystemExit(1) from None
    except duckdb.Error as exc:
        detail = str(exc).strip().splitlines()[0]
        hint = ("raise `memory_limit` in datafirst.yaml (docs/config.md), or free memory"
                if isinstance(exc, duckdb.OutOfMemoryException) else
                "check the settings and files it names (datafirst.yaml, contracts, --labels)")
        err_console.print(f"[bold red]error:[/] the engine stopped: {detail}. The stage that was running did not "
                          f"finish (the stages before it did); {hint}, then run again.")
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    entry()
