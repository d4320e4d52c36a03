"""The linkage quality report: HTML with charts, and the same figures as JSON.

Per threshold: people, cluster size distribution; match rates between every pair of
sources; blocking rule comparison counts; the match weight histogram; the model's m and u
parameters; match rates by group (sex, age band) on any data, so that linkage bias shows;
where labels are given (the synthetic world's truth, a labelled benchmark), pairwise
precision, recall and F1 per threshold and per demographic group; changes since the last
run; and a sample of borderline pairs for clerical review. That sample shows identifiers,
so the whole report is marked INTERNAL: it never goes into a release.
"""

from __future__ import annotations

import html
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string
from ..reporting import PAGE_STYLE, axis_start, bar_chart, pct, significant
from ..workspace import Workspace, holding_lock
from .blocking import estimated_recall, measured_recall
from .evaluate import accuracy_by_source_pair, pairwise_accuracy
from .inputs import INPUT_TABLE, identifier_files, load_input
from .stage import RELIABILITY

REPORT_DIR = "linkage_quality"
THRESHOLDS = ("high", "medium", "low")
SIZE_BANDS = ((1, 1, "1"), (2, 2, "2"), (3, 5, "3-5"), (6, 10, "6-10"), (11, 20, "11-20"), (21, 10**12, "21+"))
BORDERLINE_SAMPLE = 40
GROUP_COLUMNS = ("sex", "ethnicity", "age_band", "name_origin")  # labels columns used when present


def _age_band(year: str) -> str:
    return (f"CASE WHEN {year} IS NULL THEN 'unknown' WHEN {year} >= 2000 THEN 'born 2000+' "
            f"WHEN {year} >= 1985 THEN 'born 1985-99' WHEN {year} >= 1970 THEN 'born 1970-84' "
            f"ELSE 'born before 1970' END")


def measure(ws: Workspace, engine: Engine, labels: Path | None = None) -> dict:
    links = ws.zone("links")
    meta = json.loads((links / "link.json").read_text(encoding="utf-8"))
    clusters = engine.parquet(links / "clusters.parquet")
    edges = engine.parquet(links / "edges.parquet")
    ids = f"read_parquet({sql_string(ws.zone('identifiers') / '*.parquet')})"
    report: dict = {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": meta["model"],
                    "thresholds": meta["thresholds"], "records": meta["records"], "edges": meta["edges"],
                    "blocking": meta["blocking"], "case_journeys": meta.get("case_journeys", 0),
                    "mode": meta.get("mode", "full"), "why_full": meta.get("why_full"),
                    "record_changes": meta.get("changes")}

    report["people"] = {}
    report["cluster_sizes"] = {}
    for t in THRESHOLDS:
        report["people"][t] = int(engine.scalar(f"SELECT count(DISTINCT person_id_{t}) FROM {clusters}"))
        bands = engine.execute(f"""SELECT n, count(*) FROM (SELECT person_id_{t}, count(*) AS n FROM {clusters} GROUP BY 1)
                                   GROUP BY n""")
        report["cluster_sizes"][t] = {label: sum(c for n, c in bands if lo <= n <= hi) for lo, hi, label in SIZE_BANDS}
        report["cluster_sizes"][t]["largest"] = max((n for n, _ in bands), default=0)

    # Of the records of source A, the share whose person (medium) has a record in source B.
    pairs = engine.execute(f"""
        WITH person_sources AS (SELECT DISTINCT person_id_medium AS p, source FROM {clusters}),
        totals AS (SELECT source, count(*) AS total FROM {clusters} GROUP BY 1)
        SELECT c.source, ps.source, count(*), any_value(t.total)
        FROM {clusters} c JOIN person_sources ps ON ps.p = c.person_id_medium AND ps.source <> c.source
        JOIN totals t ON t.source = c.source GROUP BY 1, 2
        UNION ALL
        SELECT source, source, count(*) FILTER (WHERE n > 1), count(*) FROM (
            SELECT source, count(*) OVER (PARTITION BY person_id_medium, source) AS n FROM {clusters}) GROUP BY 1
        ORDER BY 1, 2""")
    report["match_rates"] = [{"source": a, "found_in": b, "records": int(total), "found": int(found),
                              "share": round(found / total, 4)} for a, b, found, total in pairs]

    hist = engine.execute(f"SELECT floor(match_weight) AS w, count(*) FROM {edges} GROUP BY 1 ORDER BY 1")
    report["match_weight_histogram"] = [{"weight_from": int(w), "edges": int(n)} for w, n in hist]
    report["mean_match_weight"] = float(engine.scalar(f"SELECT avg(match_weight) FROM {edges}") or 0)

    model = json.loads((ws.root / "models" / meta["model"]).read_text(encoding="utf-8"))
    params = []
    for comparison in model["comparisons"]:
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            m, u = level.get("m_probability"), level.get("u_probability")
            weight = math.log2(m / u) if m and u else None
            params.append({"comparison": comparison["output_column_name"], "level": level.get("label_for_charts", ""),
                           "m": m, "u": u, "match_weight": None if weight is None else round(weight, 3)})
    report["parameters"] = params

    # Linkage by group on any data: the share of records linked to at least one other record.
    report["linked_share_by_group"] = [
        {"group_by": name, "group": g, "records": int(n), "linked": int(linked), "linked_share": round(linked / n, 4)}
        for name, expr in (("sex", "coalesce(i.sex, 'unknown')"), ("age_band", _age_band("i.year_of_birth")),
                           ("source", "c.source"))
        for g, n, linked in engine.execute(f"""SELECT {expr} AS g, count(*), count(*) FILTER (WHERE c.cluster_size_medium > 1)
                                               FROM {clusters} c JOIN {ids} i USING (record_key) GROUP BY 1 ORDER BY 1""")]

    lo, hi = meta["thresholds"]["low"], meta["thresholds"]["high"]
    cols = ("forename", "middle_names", "surname", "date_of_birth", "sex", "postcode", "pnc")
    sel = ", ".join(f"CAST(a.{c} AS VARCHAR), CAST(b.{c} AS VARCHAR)" for c in cols)
    sample = engine.execute(f"""
        SELECT e.match_probability, e.match_weight, a.source, b.source, {sel}
        FROM {edges} e JOIN {ids} a ON a.record_key = e.record_key_l JOIN {ids} b ON b.record_key = e.record_key_r
        WHERE e.match_probability >= {lo} AND e.match_probability < {hi}
        ORDER BY md5(e.record_key_l || '|' || e.record_key_r) LIMIT {BORDERLINE_SAMPLE}""")
    report["borderline_sample"] = [
        {"match_probability": round(r[0], 4), "match_weight": round(r[1], 2), "sources": [r[2], r[3]],
         "left": {c: r[4 + 2 * i] for i, c in enumerate(cols)}, "right": {c: r[5 + 2 * i] for i, c in enumerate(cols)}}
        for r in sample]

    report["accuracy"] = None
    if labels is not None:
        from .labels import load_labels

        labels_rel = load_labels(ws, engine, labels)  # CSV or Parquet, checked against the identifiers
        label_cols = set(engine.columns(labels_rel))
        acc = {"overall": pairwise_accuracy(engine, clusters, labels_rel)}
        for g in GROUP_COLUMNS:
            if g in label_cols:
                acc[g] = pairwise_accuracy(engine, clusters, labels_rel, group_column=g)
        acc["source_pairs"] = accuracy_by_source_pair(engine, clusters, labels_rel)
        report["accuracy"] = acc
    # Per source, how many records' links rest on what (link/stage.py, RELIABILITY), at each threshold.
    kinds = [(t, v) for t in THRESHOLDS for v in RELIABILITY]
    rows = engine.execute("SELECT source, count(*), " + ", ".join(
        f"count(*) FILTER (WHERE link_reliability_{t} = '{v}')" for t, v in kinds) + f" FROM {clusters} GROUP BY 1 ORDER BY 1")
    report["reliability"] = [{"source": r[0], "records": int(r[1]), **{f"{t}_{v}": int(k) for (t, v), k in zip(kinds, r[2:])}}
                             for r in rows]
    report["blocking_recall"] = _blocking_recall(ws, engine, model, meta, ids, labels_rel if labels is not None else None)
    return report


def _blocking_recall(ws: Workspace, engine: Engine, model: dict, meta: dict, ids: str, labels: str | None) -> dict:
    """The share of true pairs the prediction rules can reach: by the model always, counted
    against labels when there are any (link/blocking.py)."""
    rules = [r["blocking_rule"] if isinstance(r, dict) else r for r in meta["prediction_rules"]]
    columns = engine.columns(ids)
    n, *present = engine.execute(f"SELECT count(*), {', '.join(f'count({c})' for c in columns)} FROM {ids}")[0]
    presence = {c: k / n for c, k in zip(columns, present)} if n else {}
    presence.update({"forename_group": presence.get("forename", 0.0), "forename_groups": presence.get("forename", 0.0)})
    out = {"estimated": estimated_recall(model, presence, rules), "measured": None}
    if labels is not None:
        load_input(engine, identifier_files(ws))
        out["measured"] = measured_recall(engine, rules, INPUT_TABLE, labels)
    return out


def compare(current: dict, previous: dict | None) -> list[dict]:
    if not previous:
        return []
    changes = [{"measure": "scored edges", "before": previous["edges"], "now": current["edges"]},
               {"measure": "mean match weight", "before": round(previous["mean_match_weight"], 3),
                "now": round(current["mean_match_weight"], 3)}]
    for t in THRESHOLDS:
        changes.append({"measure": f"people ({t})", "before": previous["people"][t], "now": current["people"][t]})
        changes.append({"measure": f"largest cluster ({t})", "before": previous["cluster_sizes"][t]["largest"],
                        "now": current["cluster_sizes"][t]["largest"]})
    before = {b["rule"]: b["comparisons"] for b in previous["blocking"]}
    for b in current["blocking"]:
        if b["rule"] in before:
            changes.append({"measure": f"candidates: {b['rule']}", "before": before[b["rule"]], "now": b["comparisons"]})
    return changes


@holding_lock
def write_report(ws: Workspace, engine: Engine, labels: Path | None = None) -> tuple[Path, Path, dict]:
    folder = ws.reports / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    latest = folder / "latest.json"
    previous = json.loads(latest.read_text(encoding="utf-8")) if latest.is_file() else None
    report = measure(ws, engine, labels)
    report["changes"] = compare(report, previous)
    report["previous_run"] = previous["generated_at"] if previous else None
    text = json.dumps(report, indent=2, default=str)
    stamp = re.sub(r"[^0-9]", "", report["generated_at"])[:14]
    (folder / f"{stamp}.json").write_text(text, encoding="utf-8")
    latest.write_text(text, encoding="utf-8")
    page = folder / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    return latest, page, report


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(r: dict) -> str:
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Linkage quality report</title>"
           f"<style>{PAGE_STYLE}</style></head><body>",
           "<p class='internal'>INTERNAL: this report shows identifiers (borderline pairs for clerical review). "
           "It stays in the linkage zone and never goes into a release.</p>",
           "<h1>Linkage quality report</h1>",
           f"<p>Generated {html.escape(r['generated_at'])} with model {html.escape(r['model'])}: {r['records']:,} records, "
           f"{r['edges']:,} scored edges, {r['case_journeys']:,} case journeys. Thresholds (match probability): "
           + ", ".join(f"{k} {v}" for k, v in r["thresholds"].items()) + ".</p>"]
    out.append("<h2 id='people'>People and cluster sizes</h2>")
    out.append(_table(["threshold", "people"] + [b[2] for b in SIZE_BANDS] + ["largest"],
                      [[t, f"{r['people'][t]:,}"] + [f"{r['cluster_sizes'][t][b[2]]:,}" for b in SIZE_BANDS]
                       + [r["cluster_sizes"][t]["largest"]] for t in THRESHOLDS]))
    out.append(bar_chart([(f"medium: size {k}", v) for k, v in r["cluster_sizes"]["medium"].items() if k != "largest"],
                         "Cluster sizes at medium", percent=False))
    if r.get("accuracy"):
        out.append("<h2 id='accuracy'>Accuracy against labels</h2>")
        overall = r["accuracy"]["overall"]
        out.append(_table(["threshold", "precision", "recall", "F1", "true pairs"],
                          [[a["threshold"], a["precision"], a["recall"], a["f1"], f"{a['true_pairs']:,}"] for a in overall]))
        for group, rows in r["accuracy"].items():
            if group in ("overall", "source_pairs"):
                continue
            medium = [a for a in rows if a["threshold"] == "medium"]
            out.append(f"<h3>By {html.escape(group)} (medium)</h3>")
            out.append(bar_chart([(str(a["group"]), a["f1"]) for a in medium], f"F1 by {group}",
                                 start=axis_start([a["f1"] for a in medium])))
            out.append(_table([group, "precision", "recall", "F1", "true pairs"],
                              [[a["group"], a["precision"], a["recall"], a["f1"], a["true_pairs"]] for a in medium]))
    pairs = (r.get("accuracy") or {}).get("source_pairs")
    if pairs:
        out.append("<h3>By pair of sources (medium)</h3><p>Pairs of records counted by their two sources; a source "
                   "with itself is its own duplicates. Below 0.95 is marked.</p>")
        out.append(_table(["sources", "true pairs", "precision", "recall", "F1"],
                          [[" - ".join(a["sources"]), f"{a['true_pairs']:,}",
                            f"{a['precision']}{' *' if a['precision'] < 0.95 else ''}",
                            f"{a['recall']}{' *' if a['recall'] < 0.95 else ''}", a["f1"]]
                           for a in pairs if a["threshold"] == "medium"]))
    out.append("<h2 id='reliability'>How each source's links rest (any data)</h2><p>Per source, its records by "
               "<code>link_reliability_medium</code>: " + "; ".join(
                   f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in RELIABILITY.items()) + ".</p>")
    out.append(_table(["source", "records"] + list(RELIABILITY),
                      [[x["source"], f"{x['records']:,}"] + [pct(x[f"medium_{v}"] / x["records"]) if x["records"] else ""
                                                           for v in RELIABILITY] for x in r.get("reliability", [])]))
    recall = r.get("blocking_recall")
    if recall:
        est, meas = recall["estimated"], recall.get("measured")
        out.append("<h2 id='blocking-recall'>Blocking recall</h2><p>The share of true pairs at least one prediction "
                   "rule reaches (pairs no rule reaches are never scored). Estimated from the model: the share of "
                   "true pairs whose fields agree as some rule needs, with the fields' m probabilities and presence, "
                   "taken as independent: "
                   f"<b>{pct(est['recall'])}</b>."
                   + (f" Measured against the labels: <b>{pct(meas['recall'])}</b> of {meas['true_pairs']:,} true pairs."
                      if meas else "") + "</p>")
        measured = {x["rule"]: x["recall"] for x in (meas or {}).get("rules", [])}
        out.append(_table(["rule", "estimated share of true pairs", "measured"],
                          [[x["rule"], pct(x["recall"]), pct(measured[x["rule"]]) if x["rule"] in measured else ""]
                           for x in est["rules"]]))
    out.append("<h2 id='groups'>Linked share by group (any data)</h2><p>Share of records linked to at least one other "
               "record at medium. Large differences between groups are a sign of linkage bias.</p>")
    for name in ("sex", "age_band", "source"):
        rows = [g for g in r["linked_share_by_group"] if g["group_by"] == name]
        out.append(bar_chart([(g["group"], g["linked_share"]) for g in rows], f"Linked share by {name}"))
    out.append("<h2 id='sources'>Match rates between sources</h2><p>Of the records of a source, the share whose person "
               "(medium) also has a record in the other source (or another record in the same source).</p>")
    out.append(_table(["source", "found in", "share"], [[m["source"], m["found_in"], pct(m["share"])] for m in r["match_rates"]]))
    out.append("<h2 id='blocking'>Blocking rules</h2><p>Each rule's candidate pairs beyond the rules before it (Splink's "
               "sampled estimate), the pairs of one person's records among them by the model, the pairs projected to "
               "the comparison budget's growth (true pairs grow with the records, the others with their square), and "
               "the records in its largest blocks (sizes only; the costliest rules).</p>")
    out.append(_table(["rule", "comparisons added", "one person's (model)", "projected", "growth exponent",
                       "largest blocks"],
                      [[b["rule"], f"{b['comparisons']:,}",
                        "" if b.get("true_pairs") is None else f"{b['true_pairs']:,}",
                        "" if b.get("projected") is None else f"{b['projected']:,}",
                        "" if b.get("growth_exponent") is None else f"{b['growth_exponent']:.2f}",
                        ", ".join(str(x) for x in b.get("largest_blocks") or [])] for b in r["blocking"]]))
    out.append("<h2 id='weights'>Match weight histogram</h2>")
    out.append(bar_chart([(f"{h['weight_from']} to {h['weight_from'] + 1}", h["edges"]) for h in r["match_weight_histogram"]],
                         "Scored edges by match weight", percent=False))
    out.append("<h2 id='parameters'>Model parameters (m, u)</h2>")
    out.append("<p>A level's match weight is log2(m / u): positive where agreeing at that level is evidence of a "
               "match, negative (left of the zero line) where it is evidence against.</p>")
    out.append(bar_chart([(f"{p['comparison']}: {p['level']}", p["match_weight"]) for p in r["parameters"]],
                         "Match weight of each comparison level", percent=False))
    out.append(_table(["comparison", "level", "m", "u", "match weight"],
                      [[p["comparison"], p["level"], significant(p["m"]), significant(p["u"]), p["match_weight"]]
                       for p in r["parameters"]]))
    out.append("<h2 id='changes'>Changes since the previous run</h2>")
    c = r.get("record_changes")
    if r.get("mode") == "incremental" and c:
        out.append(f"<p>This link was incremental: {c['new']:,} new, {c['changed']:,} changed and {c['deleted']:,} "
                   f"deleted records were scored; {c['affected']:,} records were clustered again; the other "
                   f"{c['unchanged'] - c['affected'] + c['new'] + c['changed']:,} kept their clusters.</p>")
    elif r.get("why_full"):
        out.append(f"<p>This link scored every pair ({html.escape(r['why_full'])}).</p>")
    if r.get("changes"):
        out.append(_table(["measure", "before", "now"], [[c["measure"], c["before"], c["now"]] for c in r["changes"]]))
    else:
        out.append("<p>This is the first run; there is nothing to compare with.</p>")
    out.append("<h2 id='borderline'>Borderline pairs for clerical review</h2>")
    cols = ("forename", "middle_names", "surname", "date_of_birth", "sex", "postcode", "pnc")
    rows = []
    for b in r["borderline_sample"]:
        rows.append([b["match_probability"], b["sources"][0]] + [b["left"][c] or "" for c in cols])
        rows.append(["", b["sources"][1]] + [b["right"][c] or "" for c in cols])
    out.append(_table(["probability", "source", *cols], rows))
    out.append("</body></html>")
    return "\n".join(out)
