"""`datafirst run`: the whole flow, skipping stages whose inputs and config have not changed.

Each stage's inputs (files it reads, contracts, config, model) are fingerprinted; a stage
runs when its fingerprint differs from the one recorded after its last successful run, or
when its outputs are missing. Fingerprints use file sizes and modification times (zones
are rewritten whole, so a rewritten zone always has new times), never file contents, so
checking costs nothing at any scale. Files are named relative to the workspace (extracts
relative to the extracts folder), so the same workspace reached by another path, or moved,
is the same. The release's fingerprint also holds the hashing key's check value (the one
each release manifest holds, never the key), so a change of key releases again; the key is
checked before any stage runs, so a missing or weak one stops the run at once. Training is
not fingerprinted: it runs when there is no saved model, or when asked (`--retrain`), since a
new model changes every person's links.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .engine import Engine, open_engine
from .workspace import Workspace

STATE_DIR = ".state"


@dataclass
class StageResult:
    stage: str
    ran: bool
    seconds: float
    detail: str


def _name(p: Path, base: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:  # outside `base` (a model or extract file given by absolute path)
        return str(p)


def _files_fingerprint(paths: list[Path], base: Path) -> list:
    """Size and modification time of each file, named relative to `base`."""
    out = []
    for p in sorted(paths):
        if p.is_file():
            st = p.stat()
            out.append([_name(p, base), st.st_size, st.st_mtime_ns])
        else:
            out.append([_name(p, base), None, None])
    return out


def key_check() -> str | None:
    """The hashing key's check value, as each release manifest holds it (`keyed_hash` of
    `KEY_CHECK`): tells keys apart without revealing them. None when no usable key is set."""
    from .release.hashing_key import SecretError, load_salt

    try:
        salt = load_salt()
    except SecretError:
        return None
    return key_check_of(salt)


def key_check_of(salt: str) -> str:
    """The check value of a hashing key (`keyed_hash` of `KEY_CHECK` under it)."""
    from .release.products import HASH_CHARS
    from .release.stage import KEY_CHECK

    return hashlib.sha256(f"{salt}|{KEY_CHECK}".encode("utf-8")).hexdigest()[:HASH_CHARS]


def _zone_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) + sorted(folder.glob("*.json")) if folder.is_dir() else [folder]


def _fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Runner:
    def __init__(self, ws: Workspace, *, retrain: bool = False, labels: Path | None = None, full_link: bool = False,
                 new_series: bool = False, report: Callable[[StageResult], None] | None = None,
                 accept_volume_change: Sequence[str] = ()):
        self.ws, self.retrain, self.labels, self.report = ws, retrain, labels, report
        self.full_link, self.new_series = full_link, new_series
        self.accept_volume_change = tuple(accept_volume_change)
        self.state = ws.root / STATE_DIR
        self.results: list[StageResult] = []

    def _common(self) -> dict:
        # The code lists a contract names (CSV files beside it, and their declarations) are part of it.
        contracts = sorted({*self.ws.contracts.glob("*.y*ml"), *self.ws.contracts.rglob("*.csv"),
                            *self.ws.contracts.rglob("*.codelist.yaml")})
        return {"config": self.ws.config_path.read_text(encoding="utf-8"),
                "contracts": {p.relative_to(self.ws.contracts).as_posix():
                              p.read_text(encoding="utf-8", errors="replace") for p in contracts}}

    def _inputs(self, stage: str) -> dict:
        """What the stage's fingerprint is made of."""
        from .sources.contract import load_contracts

        ws = self.ws
        root, extracts = ws.root, ws.extracts

        def files(paths: list[Path]) -> list:
            return _files_fingerprint(paths, root)

        parts = self._common()
        if stage == "ingest":
            paths = [ws.extracts / t.file for c in load_contracts(ws.contracts) for t in c.tables.values()]
            parts["files"] = _files_fingerprint(paths, extracts)
        elif stage == "standardise":
            parts["landed"] = files(_zone_files(ws.zone("landed")))
        elif stage == "link":
            from .link.inputs import LinkError, current_model

            parts["identifiers"] = files(_zone_files(ws.zone("identifiers")))
            parts["content"] = files(_zone_files(ws.zone("content")))
            try:
                parts["model"] = files([current_model(ws)])
            except LinkError:
                parts["model"] = None
        elif stage == "release":
            parts["links"] = files(_zone_files(ws.zone("links")))
            parts["content"] = files(_zone_files(ws.zone("content")))
            parts["identifiers"] = files(_zone_files(ws.zone("identifiers")))
            # A key gone since the run checked it gives None here: the release then runs and says
            # how to provide one.
            parts["key_check"] = key_check()
        return parts

    def _outputs_exist(self, stage: str, *, reports: bool = True) -> bool:
        """Whether the stage's outputs are there, its reports too unless `reports` is False (the
        summary names them: a stage whose report is gone runs again)."""
        from .link.quality import REPORT_DIR as LINKAGE_REPORTS
        from .standardise.quality import REPORT_DIR as DATA_QUALITY_REPORTS

        ws = self.ws
        if reports and stage in ("standardise", "link"):
            folder = ws.reports / (DATA_QUALITY_REPORTS if stage == "standardise" else LINKAGE_REPORTS)
            if not ((folder / "latest.json").is_file() and (folder / "report.html").is_file()):
                return False
        if stage == "release":
            from .release.stage import trusted_previous

            # Checked, not only there: a run that skips the release names the latest as its
            # result, so one missing, altered or unrecorded is refused as `datafirst release` would.
            return trusted_previous(ws) is not None
        return {
            "ingest": (ws.zone("landed") / "_accounting.parquet").is_file(),
            "standardise": ws.zone("content").is_dir() and ws.zone("identifiers").is_dir(),
            "link": (ws.zone("links") / "clusters.parquet").is_file(),
        }[stage]

    def _unchanged(self, stage: str, fingerprint: str, *, reports: bool = True) -> bool:
        path = self.state / f"{stage}.json"
        return path.is_file() and json.loads(path.read_text())["fingerprint"] == fingerprint and \
            self._outputs_exist(stage, reports=reports)

    def _record(self, stage: str, fingerprint: str) -> None:
        # The inputs as the stage found them when it started: an input replaced while it ran
        # (a delivery landing mid-ingest) then differs on the next run, which takes it in.
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / f"{stage}.json").write_text(json.dumps({"fingerprint": fingerprint}))

    def stage(self, name: str, work: Callable[[Engine], str], *, force: bool = False) -> None:
        fingerprint = _fingerprint(self._inputs(name))
        if not force and self._unchanged(name, fingerprint):
            result = StageResult(name, False, 0.0, "inputs and config unchanged")
        else:
            started = time.perf_counter()
            with open_engine(self.ws) as engine:
                detail = work(engine)
            self._record(name, fingerprint)
            result = StageResult(name, True, round(time.perf_counter() - started, 1), detail)
        self.results.append(result)
        if self.report:
            self.report(result)

    def run(self) -> list[StageResult]:
        """Every stage in turn, holding the workspace throughout (see Workspace.lock). The
        hashing and signing keys are checked first: the release at the end needs them, and a missing
        or weak one should stop the run in seconds, not after ingest, standardise, train and link."""
        from .release.hashing_key import load_salt
        from .release.signing import load_signing_key

        load_salt()
        load_signing_key()
        with self.ws.lock():
            return self._run()

    def _run(self) -> list[StageResult]:
        from .link.quality import write_report as link_report
        from .link.stage import link
        from .link.train import train
        from .release.stage import published, release
        from .sources.control_totals import pending_messages
        from .sources.ingest import ingest
        from .standardise.quality import alert_messages, write_report as dq_report
        from .standardise.stage import reuse_summary, standardise

        ws = self.ws

        def do_ingest(engine: Engine) -> str:
            loads = ingest(ws, engine)
            latest = published(ws)
            return (f"{sum(x.read for x in loads):,} rows read, {sum(x.landed for x in loads):,} landed, "
                    f"{sum(x.quarantined for x in loads):,} quarantined" + "".join(
                        f"; CONTROL TOTALS {m}" for m in pending_messages(ws, latest[-1] if latest else None)))

        def do_standardise(engine: Engine) -> str:
            if zones_unchanged:
                # Only the report is gone: remade, the zones (and so the links) left as they are.
                _, _, report = dq_report(ws, engine)
                return "zones unchanged, not standardised again; data quality report remade" + "".join(
                    f"; ALERT {m}" for m in alert_messages(report))
            splits = standardise(ws, engine)
            _, _, report = dq_report(ws, engine)
            alerts = alert_messages(report)
            cleaned = sum(r["records"] for t in report["tables"] for r in t.get("cleaning_rules", []))
            return (f"{sum(s.identifiers for s in splits):,} identifier rows, {sum(s.content for s in splits):,} content "
                    f"rows{reuse_summary(splits)}; {cleaned:,} values emptied or cut by declared cleaning rules "
                    "(each counted in the data quality report)" + "".join(f"; ALERT {m}" for m in alerts))

        def do_train(engine: Engine) -> str:
            return f"model {train(ws, engine).name}"

        def do_link(engine: Engine) -> str:
            if links_unchanged and not self.full_link:
                # Only --labels forced the stage, or its report is gone: remake the report, leave
                # the links (and so the release) as they are.
                _, _, report = link_report(ws, engine, self.labels)
                detail = "links unchanged, not linked again (--full links everything again); linkage report remade"
            else:
                summary = link(ws, engine, full=self.full_link)
                _, _, report = link_report(ws, engine, self.labels)
                detail = (f"{summary.how()}; {summary.edges:,} edges; people "
                          + ", ".join(f"{k} {v:,}" for k, v in summary.clusters.items()))
            if report.get("accuracy"):
                detail += "; against labels: " + ", ".join(
                    f"{a['threshold']} P {a['precision']:.3f} R {a['recall']:.3f} F1 {a['f1']:.3f}"
                    for a in report["accuracy"]["overall"])
            return detail

        def do_release(engine: Engine) -> str:
            summary = release(ws, engine, new_series=self.new_series, only_if_changed=not self.new_series,
                              accept_volume_change=self.accept_volume_change)
            if summary.unchanged:
                return f"no change since {summary.version} (inputs touched, not changed): no new release"
            kept = summary.person_ids.get("medium", {}).get("previous_ids_kept_share")
            return f"{summary.version} at {summary.path}" + (
                f"; {kept:.2%} of medium person ids carried over" if kept is not None else "")

        self.stage("ingest", do_ingest)
        zones_unchanged = self._unchanged("standardise", _fingerprint(self._inputs("standardise")), reports=False)
        self.stage("standardise", do_standardise)
        has_model = (ws.root / "models" / "current.json").is_file()
        if self.retrain or not has_model:
            self.stage("train", do_train, force=True)
        else:
            self.results.append(StageResult("train", False, 0.0, "saved model reused (--retrain to train again)"))
            if self.report:
                self.report(self.results[-1])
        links_unchanged = self._unchanged("link", _fingerprint(self._inputs("link")), reports=False)
        self.stage("link", do_link, force=self.full_link or self.labels is not None)
        self.stage("release", do_release, force=self.new_series)
        return self.results


def peak_memory_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
