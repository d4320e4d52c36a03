"""The data quality report of a run: HTML with charts, and the same figures as JSON.

Per source and field: completeness, validity, distinct values, placeholder rate; per table:
row accounting, duplicate rate, quarantine reasons with counts; and the change against the
previous run, because a drop in completeness of a key identifier is what breaks linkage
silently. All figures are computed in the engine from the zones.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from ..engine import Engine
from ..sources.contract import Contract, Table, load_contracts
from ..sources.control_totals import beyond_limit
from ..sources.ingest import ACCOUNTING_FILE, LANDED, QUARANTINE_FILE
from ..reporting import PAGE_STYLE, bar_chart, pct
from ..workspace import Workspace, holding_lock
from .cleaning import CLEANING_RULES, is_placeholder
from .stage import IDENTIFIERS, standardised_state

REPORT_DIR = "data_quality"
CODE_SHA256 = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
# A fall in completeness of an identifier by more than this (absolute share) is an alert.
ALERT_DROP = 0.05
# Which standardised column says whether a role's value survived cleaning.
VALIDITY_COLUMN = {"forename": "forename", "forenames": "forename", "surname": "surname", "full_name": "surname",
                   "date_of_birth": "date_of_birth", "sex": "sex", "postcode": "postcode", "pnc": "pnc", "cro": "cro",
                   "middle_names": "middle_names", "address": "address", "other_id": "other_id"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def measure(ws: Workspace, engine: Engine, previous: dict | None = None) -> dict:
    """All figures of the report, as plain data. A table that the previous report (`previous`)
    measured from the same standardised outputs keeps its figures: they would come out the same."""
    landed_dir, ids_dir = ws.zone(LANDED), ws.zone(IDENTIFIERS)
    made_from = {key: {**entry, "report_code": CODE_SHA256} for key, entry in standardised_state(ws).items()}
    measured_before = {(t["source"], t["table"]): t for t in (previous or {}).get("tables", [])
                       if t.get("measured_from")}
    accounting = engine.execute(f"SELECT source, \"table\", file, read, landed, quarantined FROM "
                                f"{engine.parquet(landed_dir / ACCOUNTING_FILE)} ORDER BY source, \"table\"")
    quarantine = engine.parquet(landed_dir / QUARANTINE_FILE)
    reasons = engine.execute(f"""
        SELECT source, "table", coalesce("column", '(row)') AS col,
               CASE WHEN reason LIKE 'duplicate record id%' THEN 'duplicate record id'
                    WHEN reason LIKE 'exact duplicate%' THEN 'exact duplicate row'
                    ELSE regexp_replace(reason, ': .*$', '') END AS reason_kind,
               count(*) FROM {quarantine} GROUP BY ALL ORDER BY source, "table", count(*) DESC, col, reason_kind""")
    def measure_table(contract: Contract, name: str, spec: Table, e: Engine) -> dict:
        key = contract.table_key(name)
        before = measured_before.get((contract.source, name))
        if before is not None and key in made_from and before["measured_from"] == made_from[key]:
            return before
        landed = e.parquet(landed_dir / f"{key}.parquet")
        n = int(e.scalar(f"SELECT count(*) FROM {landed}"))
        acc = next((a for a in accounting if a[0] == contract.source and a[1] == name), None)
        dups = int(e.scalar(f"""SELECT count(*) FROM {quarantine} WHERE source = ? AND "table" = ?
                                AND (reason LIKE 'exact duplicate%' OR reason LIKE 'duplicate record id%')""",
                            [contract.source, name]))
        ids_path = ids_dir / f"{key}.parquet"
        cols = list(spec.columns.items())
        roles = [(col, cspec) for col, cspec in cols if cspec.role]
        checks = {}
        if roles and ids_path.is_file() and n:
            # One join with the identifiers for every role: a query per field made the join once per field.
            row = e.execute("SELECT " + ", ".join(_validity_sql(col, cspec.role) for col, cspec in roles) +
                            f" FROM {landed} l JOIN {e.parquet(ids_path)} i ON i.record_key = l.record_key")[0]
            checks = {col: row[i] for i, (col, _) in enumerate(roles)}
        # Per field, its distinct values once (with how many rows hold each): the distinct count,
        # the rows with a value, and the rows holding a placeholder, tested once per value rather
        # than once per row (a forename recurs in thousands of records).
        counts = e.execute("SELECT * FROM " + ", ".join(
            f"({_value_counts_sql(col, landed, bool(cspec.role))}) f{i}" for i, (col, cspec) in enumerate(cols))
        )[0] if n else (0, 0, None) * len(cols)
        # Each declared cleaning rule (cleaning.CLEANING_RULES) that emptied or cut values here.
        cleaning = []
        if roles and ids_path.is_file() and n:
            cleaning = [{"rule": flag, "records": int(k), "effect": CLEANING_RULES.get(flag, ("", None))[0],
                         "change": CLEANING_RULES.get(flag, ("", None))[1]}
                        for flag, k in e.execute(f"""SELECT flag, count(*) FROM (
                            SELECT unnest(flags) AS flag FROM {e.parquet(ids_path)}) GROUP BY 1 ORDER BY 2 DESC, 1""")]
        fields = []
        for i, (col, cspec) in enumerate(cols):
            distinct, present, placeholders = counts[3 * i:3 * i + 3]
            fields.append({"field": col, "role": cspec.role, "type": cspec.type,
                           "completeness": _r(present / n) if n else None, "distinct": int(distinct),
                           "validity": _r(checks[col]) if col in checks else None,
                           "placeholder_rate": _r(placeholders / n) if col in checks else None})
        return {
            "source": contract.source, "table": name, "unit": spec.unit, "file": spec.file,
            "read": acc[3] if acc else n, "landed": n, "quarantined": acc[5] if acc else 0,
            "duplicate_rate": _r(dups / acc[3]) if acc and acc[3] else 0.0,
            "quarantine_reasons": [{"column": r[2], "reason": r[3], "rows": r[4]} for r in reasons
                                   if r[0] == contract.source and r[1] == name],
            "fields": fields,
            "cleaning_rules": cleaning,
            "measured_from": made_from.get(key),
        }

    # Tables are measured independently, several at once (see Engine.concurrently).
    tables = engine.concurrently([lambda e, c=contract, n=name, t=spec: measure_table(c, n, t, e)
                                  for contract in load_contracts(ws.contracts) for name, spec in contract.tables.items()])
    return {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tables": tables}


def _validity_sql(col: str, role: str) -> str:
    """For a role column: among records with a value in it, the share whose role value survived
    cleaning (a role is cleaned from its columns combined, so this is the role's figure)."""
    std = VALIDITY_COLUMN[role]
    return f"avg(CASE WHEN i.{std} IS NOT NULL THEN 1.0 ELSE 0 END) FILTER (WHERE l.{_q(col)} IS NOT NULL)"


def _value_counts_sql(col: str, landed: str, placeholders: bool) -> str:
    """One row: a column's distinct values (NULL left out), the rows with a value, and (for a role
    column) the rows whose value is a placeholder; 0 for a table with no value in the column."""
    ph = (f"coalesce(sum(n) FILTER (WHERE coalesce({is_placeholder('CAST(v AS VARCHAR)')}, false)), 0)"
          if placeholders else "NULL::BIGINT")
    return (f"SELECT count(*), coalesce(sum(n), 0), {ph} FROM "
            f"(SELECT {_q(col)} AS v, count(*) AS n FROM {landed} WHERE {_q(col)} IS NOT NULL GROUP BY 1)")


def _r(x) -> float | None:
    return None if x is None else round(float(x), 4)


def compare(current: dict, previous: dict | None, volume_change_limit: float) -> list[dict]:
    """Changes in completeness and row counts against the previous run. A table whose rows landed
    fell or rose by more than `volume_change_limit` (the control totals' rule and setting,
    `sources.control_totals`) is an alert: deliveries add and delete a few rows, not a fifth (an
    extract cut short, a source sending an empty file or the same rows twice)."""
    if not previous:
        return []
    old = {(t["source"], t["table"], f["field"]): (f, t) for t in previous["tables"] for f in t["fields"]}
    changes = []
    for t in current["tables"]:
        for f in t["fields"]:
            prev = old.get((t["source"], t["table"], f["field"]))
            if not prev or f["completeness"] is None or prev[0]["completeness"] is None:
                continue
            delta = round(f["completeness"] - prev[0]["completeness"], 4)
            alert = bool(f["role"]) and delta < -ALERT_DROP
            if abs(delta) >= 0.005 or alert:
                changes.append({"source": t["source"], "table": t["table"], "field": f["field"], "role": f["role"],
                                "completeness_before": prev[0]["completeness"], "completeness_now": f["completeness"],
                                "change": delta, "alert": alert})
    for t in current["tables"]:
        before = next((p for p in previous["tables"] if (p["source"], p["table"]) == (t["source"], t["table"])), None)
        if before and before["landed"] != t["landed"]:
            changes.append({"source": t["source"], "table": t["table"], "field": "(rows landed)", "role": None,
                            "completeness_before": before["landed"], "completeness_now": t["landed"],
                            "change": t["landed"] - before["landed"], "limit": volume_change_limit,
                            "alert": beyond_limit(before["landed"], t["landed"], volume_change_limit)})
    return changes


def alert_messages(report: dict) -> list[str]:
    """One line per alert of a report's changes: what fell, from what to what."""
    out = []
    for c in report.get("changes") or []:
        if not c["alert"]:
            continue
        if c["field"] == "(rows landed)":
            verb = "fell" if c["completeness_now"] < c["completeness_before"] else "rose"
            out.append(f"{c['source']}/{c['table']}: rows landed {verb} from {c['completeness_before']:,} to "
                       f"{c['completeness_now']:,} (more than {c['limit']:.0%}): check the delivery")
        else:
            out.append(f"{c['source']}/{c['table']} {c['field']}: completeness fell from "
                       f"{c['completeness_before']:.1%} to {c['completeness_now']:.1%}")
    return out


def cleaning_messages(report: dict) -> list[str]:
    """One line per cleaning rule that emptied or cut values in a table: how many records, what
    it did, and where to change it when it is a domain choice (nothing is lost without a word)."""
    out = []
    for t in report["tables"]:
        for r in t.get("cleaning_rules", []):
            change = f"; change it with {r['change']}" if r["change"] else ""
            out.append(f"{t['source']}/{t['table']} {r['rule']}: {r['records']:,} of {t['landed']:,} records, "
                       f"{r['effect']}{change}")
    return out


@holding_lock
def write_report(ws: Workspace, engine: Engine) -> tuple[Path, Path, dict]:
    """Measure, compare with the previous run, and write JSON + HTML. Returns their paths."""
    folder = ws.reports / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    latest = folder / "latest.json"
    previous = json.loads(latest.read_text(encoding="utf-8")) if latest.is_file() else None
    report = measure(ws, engine, previous)
    report["changes"] = compare(report, previous, ws.config().ingest.volume_change_limit)
    report["previous_run"] = previous["generated_at"] if previous else None
    stamp = re.sub(r"[^0-9]", "", report["generated_at"])[:14]
    text = json.dumps(report, indent=2)
    (folder / f"{stamp}.json").write_text(text, encoding="utf-8")
    latest.write_text(text, encoding="utf-8")
    html_path = folder / "report.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    return latest, html_path, report


# --- HTML --------------------------------------------------------------------------------------

def render_html(report: dict) -> str:
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Data quality report</title>",
           f"<style>{PAGE_STYLE}</style></head><body>",
           "<h1>Data quality report</h1>",
           f"<p>Generated {html.escape(report['generated_at'])}. Previous run: "
           f"{html.escape(report.get('previous_run') or 'none')}. Figures only: no values from any record appear here; "
           "quarantined rows themselves are in the landed zone's quarantine table.</p>"]
    changes = report.get("changes") or []
    alerts = [c for c in changes if c["alert"]]
    out.append("<h2 id='changes'>Changes since the previous run</h2>")
    if not report.get("previous_run"):
        out.append("<p>This is the first run; there is nothing to compare with.</p>")
    elif not changes:
        out.append("<p>No field's completeness changed by half a point or more.</p>")
    else:
        if alerts:
            out.append("<p class='alert'>Alerts: identifier fields that lost more than "
                       f"{ALERT_DROP:.0%} completeness (linkage on them will weaken), and tables whose rows landed "
                       "fell or rose beyond the control totals' limit (`ingest.volume_change_limit`):</p><ul>"
                       + "".join(f"<li class='alert'>{html.escape(m)}</li>" for m in alert_messages(report)) + "</ul>")
        out.append("<table><tr><th>source</th><th>table</th><th>field</th><th>before</th><th>now</th><th>change</th></tr>")
        for ch in changes:
            cls = " class='alert'" if ch["alert"] else ""
            fmt = (lambda v: f"{v:,}") if ch["field"] == "(rows landed)" else pct
            out.append(f"<tr{cls}><td>{ch['source']}</td><td>{ch['table']}</td><td>{html.escape(ch['field'])}</td>"
                       f"<td class='num'>{fmt(ch['completeness_before'])}</td><td class='num'>{fmt(ch['completeness_now'])}</td>"
                       f"<td class='num'>{ch['change']:+,.3f}</td></tr>")
        out.append("</table>")
    out.append("<h2 id='accounting'>Row accounting</h2><table><tr><th>source</th><th>table</th><th>file</th>"
               "<th>read</th><th>landed</th><th>quarantined</th><th>duplicate rate</th><th>balanced</th></tr>")
    for t in report["tables"]:
        ok = t["read"] == t["landed"] + t["quarantined"]
        out.append(f"<tr><td>{t['source']}</td><td>{t['table']}</td><td>{html.escape(t['file'])}</td>"
                   f"<td class='num'>{t['read']:,}</td><td class='num'>{t['landed']:,}</td>"
                   f"<td class='num'>{t['quarantined']:,}</td><td class='num'>{pct(t['duplicate_rate'])}</td>"
                   f"<td>{'yes' if ok else '<span class=alert>NO</span>'}</td></tr>")
    out.append("</table>")
    for t in report["tables"]:
        anchor = f"{t['source']}-{t['table']}"
        out.append(f"<h2 id='{anchor}'>{t['source']} / {t['table']}</h2><p>{html.escape(t['unit'])}; "
                   f"{t['landed']:,} rows landed.</p>")
        out.append(bar_chart([(f["field"], f["completeness"]) for f in t["fields"]], f"Completeness of {anchor}"))
        out.append("<table><tr><th>field</th><th>role</th><th>type</th><th>completeness</th><th>validity</th>"
                   "<th>placeholders</th><th>distinct values</th></tr>")
        for f in t["fields"]:
            out.append(f"<tr><td>{html.escape(f['field'])}</td><td>{f['role'] or ''}</td><td>{f['type']}</td>"
                       f"<td class='num'>{pct(f['completeness'])}</td><td class='num'>{pct(f['validity'])}</td>"
                       f"<td class='num'>{pct(f['placeholder_rate'])}</td><td class='num'>{f['distinct']:,}</td></tr>")
        out.append("</table>")
        if t.get("cleaning_rules"):
            out.append("<h3>Cleaning rules applied</h3><table><tr><th>rule</th><th>records</th><th>what it did</th>"
                       "<th>where to change it</th></tr>")
            for r in t["cleaning_rules"]:
                out.append(f"<tr><td>{html.escape(r['rule'])}</td><td class='num'>{r['records']:,}</td>"
                           f"<td>{html.escape(r['effect'])}</td><td>{html.escape(r['change'] or 'not a choice')}</td></tr>")
            out.append("</table>")
        if t["quarantine_reasons"]:
            out.append(bar_chart([(f"{r['column']}: {r['reason']}", r["rows"]) for r in t["quarantine_reasons"]],
                                  f"Quarantine reasons of {anchor}", percent=False))
            out.append("<table><tr><th>column</th><th>reason</th><th>rows</th></tr>")
            for r in t["quarantine_reasons"]:
                out.append(f"<tr><td>{html.escape(r['column'])}</td><td>{html.escape(r['reason'])}</td>"
                           f"<td class='num'>{r['rows']:,}</td></tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
