"""Control totals: a delivery far from the one last released is held back until accepted.

Per table, the rows landed now are compared with the rows of the load the latest release was
made from (its manifest keeps them: `check` returns the entry). A table whose rows fall or rise
by more than `ingest.volume_change_limit` (datafirst.yaml, default 20%), or whose file ends in a
line cut short (`TableLoad.last_line_cut`), is a finding: the release is refused, naming the
table, the rows before and now, and how to accept it (`--accept-volume-change TABLE`). An
acceptance holds for that delivery only: the release records it in its manifest and notes, and
the delivery's rows become what the next one is compared with. A table loaded from the very file
the latest release was made from is never a finding: it was released as it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from ..workspace import Workspace
from .ingest import ACCOUNTING_FILE, LANDED

ACCEPT_OPTION = "--accept-volume-change"


class VolumeChangeError(Exception):
    """A delivery beyond the control totals that was not accepted; the message says what and how."""


def beyond_limit(before: int, now: int, limit: float) -> bool:
    """Whether `now` rows differ from `before` by more than the share `limit`, either way (a
    table that had no rows and now has some always does)."""
    return now > 0 if before == 0 else abs(now - before) > limit * before


@dataclass(frozen=True)
class Finding:
    table: str  # source__table, as in every zone and release
    rows_before: int | None  # landed in the load the latest release was made from; None: not known
    rows_now: int
    last_line_cut: bool
    limit: float

    def describe(self) -> str:
        parts = []
        if self.rows_before is not None and beyond_limit(self.rows_before, self.rows_now, self.limit):
            change = (f"{(self.rows_now - self.rows_before) / self.rows_before:+.1%}" if self.rows_before
                      else "from none")
            verb = "fell" if self.rows_now < self.rows_before else "rose"
            parts.append(f"rows landed {verb} from {self.rows_before:,} (the latest release's load) to "
                         f"{self.rows_now:,} ({change}; the limit is ±{self.limit:.0%})")
        if self.last_line_cut:
            parts.append("its file ends in a line cut short (no line break after it, and it could not be loaded "
                         "as it is): the file may have been cut part-way")
        return f"{self.table}: " + "; ".join(parts)


def table_name(text: str) -> str:
    """A table as a user may write it (source__table, source.table or source/table) in the
    form every zone and release uses: source__table."""
    for separator in ("__", ".", "/"):
        if separator in text:
            source, table = text.split(separator, 1)
            return f"{source.strip()}__{table.strip()}"
    return text.strip()


def current_totals(ws: Workspace) -> dict[str, dict]:
    """Each landed table's file digest and rows, by source__table (empty before any ingest)."""
    path = ws.zone(LANDED) / ACCOUNTING_FILE
    if not path.is_file():
        return {}
    return {f"{r['source']}__{r['table']}": {"file_sha256": r["file_sha256"], "read": r["read"],
                                             "landed": r["landed"], "last_line_cut": bool(r.get("last_line_cut"))}
            for r in pq.read_table(path).to_pylist()}


def released_totals(release: Path | None) -> dict[str, dict]:
    """The totals of the load a release was made from (empty for none, or a release made before
    datafirst kept them: its tables are then compared with nothing)."""
    if release is None or not (release / "manifest.json").is_file():
        return {}
    entry = json.loads((release / "manifest.json").read_text(encoding="utf-8")).get("control_totals") or {}
    return entry.get("tables") or {}


def findings(ws: Workspace, latest_release: Path | None, totals: dict[str, dict] | None = None) -> list[Finding]:
    """The landed tables beyond the control totals against `latest_release`'s load (`totals`:
    the current ones, when the caller has read them already)."""
    limit = ws.config().ingest.volume_change_limit
    before = released_totals(latest_release)
    out = []
    for table, now in sorted((current_totals(ws) if totals is None else totals).items()):
        then = before.get(table)
        if then is not None and then["file_sha256"] == now["file_sha256"]:
            continue  # the delivery the latest release was made from
        rows_before = then["landed"] if then is not None else None
        if now["last_line_cut"] or (rows_before is not None and beyond_limit(rows_before, now["landed"], limit)):
            out.append(Finding(table, rows_before, now["landed"], now["last_line_cut"], limit))
    return out


def pending_messages(ws: Workspace, latest_release: Path | None) -> list[str]:
    """One line per finding, saying that the release will wait for it to be accepted (for
    `datafirst ingest` and `run` to say so as soon as the delivery lands)."""
    return [f"{f.describe()}. The release is held back until this delivery is checked and accepted with "
            f"{ACCEPT_OPTION} {f.table}" for f in findings(ws, latest_release)]


def check(ws: Workspace, latest_release: Path | None, accept: Sequence[str] = ()) -> dict:
    """Refuse (VolumeChangeError) a release of a delivery with findings not in `accept`; return
    the manifest's entry: the limit, every table's totals and the findings accepted."""
    totals = current_totals(ws)
    wanted = {table_name(a) for a in accept}
    unknown = sorted(wanted - totals.keys())
    if unknown:
        raise VolumeChangeError(f"{ACCEPT_OPTION} names tables that were not landed: {', '.join(unknown)}; the tables "
                                f"are {', '.join(sorted(totals))}")
    found = findings(ws, latest_release, totals)
    blocking = [f for f in found if f.table not in wanted]
    if blocking:
        raise VolumeChangeError(
            "the delivery is beyond its control totals, so it was not released:\n  "
            + "\n  ".join(f.describe() for f in blocking)
            + "\nCheck the delivery (an extract cut short, sent twice or in part?) and ask the source for a complete "
              "one. If the change is real, accept it for this delivery only: "
            + " ".join(f"{ACCEPT_OPTION} {f.table}" for f in blocking)
            + " (the limit is `ingest.volume_change_limit` in datafirst.yaml; the release notes record what "
              "was accepted).")
    limit = ws.config().ingest.volume_change_limit
    return {"volume_change_limit": limit, "tables": totals,
            "accepted": [{"table": f.table, "rows_before": f.rows_before, "rows_now": f.rows_now,
                          "last_line_cut": f.last_line_cut, "finding": f.describe()} for f in found]}
