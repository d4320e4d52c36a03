"""What travels with a release: the data dictionary, a frictionless data package description,
release notes (schema changes first), quality summaries fit for researchers (aggregates
only, small counts suppressed) and a manifest."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..workspace import Workspace
from .joins import foreign_keys
from .meanings import NO_VALUE_DELIVERED, fully_empty, meaning_notes
from .products import Product

FRICTIONLESS_TYPES = {"VARCHAR": "string", "BIGINT": "integer", "INTEGER": "integer", "SMALLINT": "integer",
                      "TINYINT": "integer", "HUGEINT": "integer", "UBIGINT": "integer", "UINTEGER": "integer",
                      "DATE": "date", "BOOLEAN": "boolean", "DOUBLE": "number", "FLOAT": "number",
                      "VARCHAR[]": "array", "TIMESTAMP": "datetime", "TIMESTAMP WITH TIME ZONE": "datetime"}


def frictionless_type(engine_type: str) -> str:
    """The Frictionless Table Schema type of a column's engine type ('any' for none that fits)."""
    if engine_type.startswith("DECIMAL"):
        return "number"
    return FRICTIONLESS_TYPES.get(engine_type, "array" if engine_type.endswith("[]") else "any")


def dictionary(products: list[Product], rows: dict[str, int], facts: dict[str, dict[str, dict]],
               suppressed: dict[str, dict[str, int]] | None = None, exemptions: dict[str, str] | None = None,
               joins: dict[str, list[dict]] | None = None) -> dict:
    """`facts`: `profile.table_profile` of each product's table, by product name; `suppressed`:
    values emptied for being outside their declaration, by product and column; `exemptions`:
    `release.privacy_allow` (column -> reason); `joins`: each table's joins (`joins.check`)."""
    suppressed, exemptions, joins = suppressed or {}, exemptions or {}, joins or {}
    tables = []
    for p in products:
        columns = []
        for name, f in facts[p.name].items():
            column = {"name": name, "type": f["type"], "description": p.columns.get(name, ""),
                      "missing_share": round(f["missing"] / f["rows"], 4) if f["rows"] else 0.0,
                      "distinct_values": f["distinct_values"], **_meaning(p, name, f)}
            if name in p.declared:
                column["declared"] = p.declared[name].as_json()
            if name in suppressed.get(p.name, {}):
                column["suppressed_values"] = suppressed[p.name][name]
            if name in p.harmonised:  # its values are the source column's, mapped (`harmonise`)
                column["harmonised_from"] = p.harmonised[name]
            if f"{p.name}.{name}" in exemptions:
                column["privacy_guard_exemption"] = exemptions[f"{p.name}.{name}"]
            if "allowed_values" in f:
                column["allowed_values"] = f["allowed_values"]
            columns.append(column)
        table = {"name": p.name, "path": f"tables/{p.name}.parquet", "unit": p.unit, "description": p.description,
                 "keys": p.keys, "rows": rows[p.name], "columns": columns, "joins": joins.get(p.name, [])}
        if p.code_list is not None:
            table["code_list"] = p.code_list.metadata()
        if p.withheld:
            table["withheld_columns"] = [{"name": c, "reason": why} for c, why in p.withheld.items()]
        tables.append(table)
    return {"tables": tables}


def _meaning(p: Product, name: str, f: dict) -> dict:
    """What the dictionary adds to a column's meaning: that its contract gives none (and where
    to write one), and why it is empty: the contract's reason, what the contract implies, or, for
    a column empty in every row with neither, a flagged fallback naming where to write one."""
    out = {}
    if name in p.meaning_missing or not p.columns.get(name):
        out["meaning_missing"] = p.meaning_missing.get(name) or f"no meaning declared for {p.name}.{name}"
    if name in p.empty_because:
        out["empty_because"] = p.empty_because[name]
    elif fully_empty(f["missing"], f["rows"]):
        out["empty_because"] = NO_VALUE_DELIVERED
        out["empty_unexplained"] = f"no reason given: write one as {p.empty_reason_at[name]}" \
            if name in p.empty_reason_at else f"no reason given for the derived column {p.name}.{name}"
    return out


def dictionary_markdown(version: str, d: dict) -> str:
    out = [f"# Data dictionary, release {version}", "",
           "Every table of the release, its unit (what one row is), its key (unique in every row), and every "
           "column with its type, meaning, share missing and, where few, its values. Ids are keyed hashes: they "
           "join within a release and across releases made with the same key, and reveal nothing.", ""]
    out += [line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in meaning_notes(d)]
    for t in d["tables"]:
        out += [f"## {t['name']}", "", t["description"], "", f"- unit: {t['unit']}", f"- key: {', '.join(t['keys'])}",
                f"- rows: {t['rows']:,}", "", "| column | type | meaning | declared | missing | values |",
                "|---|---|---|---|---|---|"]
        for c in t["columns"]:
            values = ", ".join(c.get("allowed_values", [])) or f"{c['distinct_values']:,} distinct"
            declared = c["declared"]["rule"] if "declared" in c else ""
            if "harmonised_from" in c:
                declared += f", mapped from {c['harmonised_from']}"
            if c.get("suppressed_values"):
                declared += f"; {c['suppressed_values']:,} values " + (
                    "with no row in the mapping emptied" if "harmonised_from" in c else "outside it emptied")
            out.append(f"| {c['name']} | {c['type']} | {_meaning_cell(c)} | {declared} | {c['missing_share']:.1%} "
                       f"| {values} |")
        out += [f"- withheld: `{w['name']}`: {w['reason']}" for w in t.get("withheld_columns", [])]
        out += _code_list_markdown(t.get("code_list"))
        out += [f"- join: `{', '.join(j['columns'])}` to `{j['references']['table']}."
                f"{', '.join(j['references']['columns'])}` ({j['cardinality']}; "
                + ("a foreign key" if j["foreign_key"] else j["note"]) + ")" for j in t.get("joins", [])]
        out.append("")
    return "\n".join(out)


def _meaning_cell(c: dict) -> str:
    cell = " ".join(filter(None, [c["description"], f"(**{c['meaning_missing']}**)" if "meaning_missing" in c else ""]))
    if "empty_because" in c:
        unexplained = f"; {c['empty_unexplained']}" if "empty_unexplained" in c else ""
        cell += f" (empty: {c['empty_because']}{unexplained})"
    return cell


def _code_list_markdown(code_list: dict | None) -> list[str]:
    if code_list is None:
        return []
    source, licence = code_list["source"], code_list["licence"]
    return [f"- code list `{code_list['name']}` from `{code_list['file']}`, keyed by `{code_list['key']}`"
            + (f", version {code_list['version']}" if code_list["version"] else ""),
            f"- source: {_reference(source)}" if source else
            f"- source and licence: not declared (no `{code_list['file'].rsplit('.', 1)[0]}.codelist.yaml`)",
            *([f"- licence: {_reference(licence)}"] if licence else [])]


def _reference(ref: dict) -> str:
    title = f"{ref['title']} ({ref['name']})" if ref.get("name") else ref["title"]
    return f"{title} <{ref['path']}>" if ref.get("path") else title


def _constraints(column: dict) -> dict:
    """A column's declaration as Table Schema constraints (code list as `enum`, shape as `pattern`,
    range as `minimum`/`maximum`), so that a data package validator checks what the release
    promises; nothing for a column without a declaration (none is released)."""
    declared = column.get("declared") or {}
    if column["type"].endswith("[]"):
        return {}  # a list's elements are declared, and a Table Schema constraint holds for a whole value
    constraints = {k: declared[src] for src, k in (("values", "enum"), ("pattern", "pattern"), ("min", "minimum"),
                                                   ("max", "maximum")) if src in declared}
    return {"constraints": constraints} if constraints else {}


def datapackage(version: str, root: Path, d: dict, digests: dict[str, str]) -> dict:
    resources = []
    for t in d["tables"]:
        path = root / t["path"]
        resource = {
            "name": t["name"], "path": t["path"], "format": "parquet", "mediatype": "application/vnd.apache.parquet",
            "description": t["description"], "bytes": path.stat().st_size, "hash": f"sha256:{digests[t['path']]}",
            "schema": {"fields": [{"name": c["name"], "type": frictionless_type(c["type"]),
                                   "description": c["description"], **_constraints(c)} for c in t["columns"]],
                       "primaryKey": t["keys"]},
        }
        if t.get("joins") and foreign_keys(t["joins"]):
            resource["schema"]["foreignKeys"] = foreign_keys(t["joins"])
        code_list = t.get("code_list")
        if code_list is not None:  # the Data Package spec's resource `sources` and `licenses`
            resource.update({k: [code_list[src]] for src, k in (("source", "sources"), ("licence", "licenses"))
                             if code_list[src]})
            if code_list["version"]:
                resource["version"] = code_list["version"]
        resources.append(resource)
    return {"profile": "data-package", "name": "datafirst-linked-justice-data", "version": version,
            "title": "Linked, de-identified justice data", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "resources": resources}


def release_notes(version: str, d: dict, previous: Path | None, meta: dict) -> str:
    out = [f"# Release {version}", "", f"Created {meta['created_at']} by datafirst {__version__}. Linkage model "
           f"{meta['model']}; person id thresholds (match probability): "
           + ", ".join(f"{k} {v}" for k, v in meta["thresholds"].items()) + ".", ""]
    if previous is None:
        out += ["This is the first release.", ""]
    else:
        before = json.loads((previous / "dictionary.json").read_text(encoding="utf-8"))
        old = {t["name"]: t for t in before["tables"]}
        new = {t["name"]: t for t in d["tables"]}
        schema = []
        for name in sorted(new.keys() - old.keys()):
            schema.append(f"- table added: `{name}`")
        for name in sorted(old.keys() - new.keys()):
            schema.append(f"- table removed: `{name}` (breaking)")
        for name in sorted(new.keys() & old.keys()):
            oc = {c["name"]: c["type"] for c in old[name]["columns"]}
            nc = {c["name"]: c["type"] for c in new[name]["columns"]}
            schema += [f"- `{name}.{c}` added" for c in sorted(nc.keys() - oc.keys())]
            schema += [f"- `{name}.{c}` removed (breaking)" for c in sorted(oc.keys() - nc.keys())]
            schema += [f"- `{name}.{c}` type changed from {oc[c]} to {nc[c]} (breaking)"
                       for c in sorted(nc.keys() & oc.keys()) if oc[c] != nc[c]]
        out += [f"## Schema changes since {previous.name}", ""] + (schema or ["None: every table and column is as before."])
        counts = [f"| {n} | {old[n]['rows']:,} | {new[n]['rows']:,} |" for n in sorted(new.keys() & old.keys())
                  if old[n]["rows"] != new[n]["rows"]]
        out += ["", f"## Row counts since {previous.name}", ""]
        out += ["| table | before | now |", "|---|---|---|", *counts] if counts else ["None changed."]
        out.append("")
    out += allow_list_notes(d)
    out += meaning_notes(d)
    out += person_id_notes(meta["person_ids"], previous, meta.get("key_check"))
    out += volume_change_notes(meta.get("control_totals"))
    return "\n".join(out)


def volume_change_notes(totals: dict | None) -> list[str]:
    """The deliveries released although beyond their control totals, as accepted
    (`sources.control_totals`): the notes say so, so that a researcher sees why rows changed."""
    accepted = (totals or {}).get("accepted") or []
    if not accepted:
        return []
    return ["## Volume changes accepted", "",
            "These deliveries were beyond the control totals and were released because they were accepted "
            "(`--accept-volume-change`):", "", *(f"- {a['finding']}" for a in accepted), ""]


def allow_list_notes(d: dict) -> list[str]:
    """What the allow-list kept out of the release: columns withheld for want of a declaration
    (and what to declare), values emptied for being outside their declaration, and every
    column exempted from the privacy guard with its reason."""
    withheld = [(t["name"], w["name"], w["reason"]) for t in d["tables"] for w in t.get("withheld_columns", [])]
    emptied = [(t["name"], c["name"], c["suppressed_values"], c["declared"]["rule"] + (
                   f", mapped from `{c['harmonised_from']}` (the value has no row in the mapping)"
                   if "harmonised_from" in c else "")) for t in d["tables"] for c in t["columns"]
               if c.get("suppressed_values")]
    exempt = [(t["name"], c["name"], c["privacy_guard_exemption"]) for t in d["tables"] for c in t["columns"]
              if "privacy_guard_exemption" in c]
    out = ["## Columns and values kept out", "",
           "Every released column is declared with what it may hold (a code from a code list, a date or number "
           "in a range, a hashed id, a flag, or free text its contract allows); see the dictionary's `declared`.", ""]
    out += ["Withheld (no declaration):", ""] + [f"- `{t}.{c}`: {why}" for t, c, why in withheld] + [""] \
        if withheld else ["Withheld (no declaration): none.", ""]
    out += ["Values emptied for being outside their declaration:", "", "| column | values emptied | declared |",
            "|---|---|---|", *[f"| `{t}.{c}` | {n:,} | {rule} |" for t, c, n, rule in emptied], ""] \
        if emptied else ["Values emptied for being outside their declaration: none.", ""]
    out += ["Exempt from the privacy guard (`release.privacy_allow`):", ""] + \
        [f"- `{t}.{c}`: {why}" for t, c, why in exempt] + [""] if exempt else \
        ["Exempt from the privacy guard (`release.privacy_allow`): none.", ""]
    return out


def person_id_notes(ids: dict, previous: Path | None, key_check: str | None = None) -> list[str]:
    """`key_check`: this release's (see `stage.KEY_CHECK`), compared with the previous manifest's
    to say why no id carried over."""
    if previous is None:
        return []
    out = [f"## Person ids since {previous.name}", ""]
    if ids["carried_from"] is None:
        manifest = previous / "manifest.json"
        before = json.loads(manifest.read_text(encoding="utf-8")).get("key_check") if manifest.is_file() else None
        if before is not None and key_check is not None and before != key_check:
            why = "the hashing key changed, so a new series was started with --new-series"
        elif before is not None and before == key_check:
            why = "a new series was requested with --new-series; the hashing key is the same"
        else:
            why = "a new series was requested with --new-series"
        return out + [f"A new series of ids: no id carries over from {previous.name} ({why}).", ""]
    out += ["Each person keeps their id while they continue; the table `person_id_changes` lists, for every merge "
            "and split, which previous id's records now sit under which id, and how many. A previous id is kept, "
            "retired (its records live on under other ids) or removed (all its records were deleted).", "",
            "| threshold | people | previous ids kept | new people | new ids after a merge or split | merges | "
            "previous ids split | previous ids retired | previous ids removed |",
            "|---|---|---|---|---|---|---|---|---|"]
    for t, s in ids["thresholds"].items():
        kept = f"{s['continued']:,} of {s['previous_people']:,}" + (
            f" ({s['previous_ids_kept_share']:.2%})" if s["previous_ids_kept_share"] is not None else "")
        out.append(f"| {t} | {s['people']:,} | {kept} | {s['new_people']:,} | {s['new_ids_after_merge_or_split']:,} "
                   f"| {s['merges']:,} | {s['previous_ids_split']:,} | {s['previous_ids_retired']:,} "
                   f"| {s['previous_ids_removed']:,} |")
    return out + [""]


def _suppress(n: int, small: int) -> int | str:
    return n if n == 0 or n >= small else f"<{small}"


def _is_small(n: int, small: int) -> bool:
    return 0 < n < small


# Counts below `small` are shown as "<small" in released summaries, and whatever would give one
# back by a difference or a product with what else is released (a total minus the other bands,
# a share times its records) is null or merged: that secondary suppression is below.


def _released_tables(tables: list[dict], small: int) -> list[dict]:
    """Row accounting and field figures. Rows read = landed + quarantined, so it is suppressed too
    when either of those is. Completeness times the rows landed is a count of records with (and
    without) a value, and validity times that a count of valid (and invalid) values: each is
    suppressed as `_released_share` says (the figures are rounded to 4 places, which leaves a
    count exact in all but the largest tables)."""
    out = []
    for t in tables:
        hidden = _is_small(t["landed"], small) or _is_small(t["quarantined"], small)
        fields = []
        for f in t["fields"]:
            field = {"field": f["field"], "role": f["role"], "completeness": f["completeness"], "validity": f["validity"]}
            present = round((f["completeness"] or 0) * t["landed"])
            field = _released_share(field, present, t["landed"], "completeness", small)
            if f["validity"] is not None:
                field = _released_share(field, round(f["validity"] * present), present, "validity", small)
            fields.append(field)
        out.append({"source": t["source"], "table": t["table"],
                    "rows_read": None if hidden else t["read"],
                    "rows_landed": _suppress(t["landed"], small), "rows_quarantined": _suppress(t["quarantined"], small),
                    "fields": fields})
    return out


def _joined_bands(lower: str, upper: str) -> str:
    """The label of two adjacent size bands merged: '3-5' and '6-10' give '3-10', '11-20' and '21+' '11+'."""
    first, last = lower.split("-")[0].rstrip("+"), upper.split("-")[-1]
    return f"{first}+" if last.endswith("+") else f"{first}-{last}"


def _released_bands(bands: dict[str, int], small: int) -> dict[str, int]:
    """Cluster size bands (in order of size) with every band below `small` merged into the next
    larger one (the largest into the next smaller), so that none need suppressing and they
    still sum to the people: a suppressed band would be the total minus the others."""
    items = [(k, v) for k, v in bands.items() if k != "largest"]
    merged: list[tuple[str, int]] = []
    for label, n in items:
        if merged and _is_small(merged[-1][1], small):
            merged[-1] = (_joined_bands(merged[-1][0], label), merged[-1][1] + n)
        else:
            merged.append((label, n))
    while len(merged) > 1 and _is_small(merged[-1][1], small):  # past an empty band too
        (label_a, a), (label_b, b) = merged[-2], merged[-1]
        merged[-2:] = [(_joined_bands(label_a, label_b), a + b)]
    return {label: _suppress(n, small) for label, n in merged}


def _released_share(row: dict, count: int, total: int, share_key: str, small: int) -> dict:
    """A share whose count, or whose complement, is below `small` is suppressed (with the
    records shown it would give the count back)."""
    hidden = _is_small(count, small) or _is_small(total - count, small)
    return {**row, share_key: None if hidden else row[share_key]}


def _released_groups(groups: list[dict], small: int) -> list[dict]:
    """Linked share by group: groups of fewer than `small` records are merged with the next
    smallest of their kind into one `other` group until it holds `small` (dropping one would
    give its size back as the total minus the others; a kind whose records are fewer than
    `small` in all is left out), then each share is suppressed as `_released_share` says."""
    out: list[dict] = []
    for kind in dict.fromkeys(g["group_by"] for g in groups):
        rows = sorted((g for g in groups if g["group_by"] == kind), key=lambda g: (g["records"], str(g["group"])))
        if sum(g["records"] for g in rows) < small:
            continue
        # The small groups, then the next smallest until the merged group holds `small` (there is
        # always one more: all the kind's records are at least `small`).
        merged: list[dict] = []
        while rows and (_is_small(rows[0]["records"], small) or
                        (merged and sum(g["records"] for g in merged) < small)):
            merged.append(rows.pop(0))
        if merged:
            rows.append({"group_by": kind, "group": "other: " + ", ".join(str(g["group"]) for g in merged),
                         "records": sum(g["records"] for g in merged), "linked": sum(g["linked"] for g in merged)})
        for g in sorted(rows, key=lambda g: str(g["group"])):
            row = {"group_by": kind, "group": g["group"], "records": g["records"],
                   "linked_share": round(g["linked"] / g["records"], 4)}
            out.append(_released_share(row, g["linked"], g["records"], "linked_share", small))
    return out


def quality_summaries(ws: Workspace, small: int) -> dict[str, dict]:
    """Aggregates only, from the internal reports, with counts below `small` suppressed and
    whatever would give one back (see the functions above); no borderline pairs or quarantined
    values are carried."""
    out: dict[str, dict] = {}
    dq = ws.reports / "data_quality" / "latest.json"
    if dq.is_file():
        data = json.loads(dq.read_text(encoding="utf-8"))
        out["data_quality.json"] = {"generated_at": data["generated_at"],
                                    "tables": _released_tables(data["tables"], small)}
    lq = ws.reports / "linkage_quality" / "latest.json"
    if lq.is_file():
        data = json.loads(lq.read_text(encoding="utf-8"))
        out["linkage_quality.json"] = {
            "generated_at": data["generated_at"], "thresholds": data["thresholds"],
            "people": data["people"],
            "cluster_sizes": {t: _released_bands(sizes, small) for t, sizes in data["cluster_sizes"].items()},
            "match_rates": [_released_share({"source": m["source"], "found_in": m["found_in"],
                                             "records": _suppress(m["records"], small), "share": m["share"]},
                                            m["found"], m["records"], "share", small)
                            for m in data["match_rates"]],
            "linked_share_by_group": _released_groups(data["linked_share_by_group"], small),
            "accuracy": _released_accuracy(data.get("accuracy"), small),
        }
    return out


ACCURACY_RATES = ("precision", "recall", "f1")


def _released_accuracy(accuracy: dict[str, list[dict]] | None, small: int) -> dict[str, list[dict]] | None:
    """Accuracy rows (overall and per group) as released: a row whose `true_pairs` is below
    `small` is left out, like a small group in `linked_share_by_group`. True positives are
    suppressed, with the row's rates, when they are below `small` or when the false positives
    (predicted - true positives) or the missed pairs (true - true positives) are; predicted
    pairs below `small` are suppressed with precision and F1, which would give them back."""
    if accuracy is None:
        return None
    out: dict[str, list[dict]] = {}
    for group_by, rows in accuracy.items():
        kept = []
        for row in rows:
            if row["true_pairs"] < small:
                continue
            row = dict(row)
            tp, pred, true = row["true_positives"], row["predicted_pairs"], row["true_pairs"]
            if _is_small(tp, small) or _is_small(pred - tp, small) or _is_small(true - tp, small):
                row.update({"true_positives": f"<{small}" if _is_small(tp, small) else None,
                            **{r: None for r in ACCURACY_RATES}})
            if _is_small(pred, small):
                row.update({"predicted_pairs": f"<{small}", "precision": None, "f1": None})
            kept.append(row)
        out[group_by] = kept
    return out


def write_all(ws: Workspace, root: Path, version: str, products: list[Product], rows: dict[str, int],
              facts: dict[str, dict[str, dict]], previous: Path | None, digests: dict[str, str], extra: dict, *,
              suppressed: dict[str, dict[str, int]] | None = None, exemptions: dict[str, str] | None = None,
              joins: dict[str, list[dict]] | None = None) -> None:
    """`facts`: `profile.table_profile` by product; `extra` goes into the manifest as it is (the key check and
    the person id summary); `suppressed`, `exemptions` and `joins` as `dictionary` takes them."""
    links_meta = json.loads((ws.zone("links") / "link.json").read_text(encoding="utf-8"))
    meta = {"version": version, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "previous": previous.name if previous else None, "model": links_meta["model"],
            "thresholds": links_meta["thresholds"], "tables": rows, "datafirst": __version__, **extra}
    d = dictionary(products, rows, facts, suppressed, exemptions, joins)
    (root / "dictionary.json").write_text(json.dumps(d, indent=2), encoding="utf-8")
    (root / "dictionary.md").write_text(dictionary_markdown(version, d), encoding="utf-8")
    (root / "datapackage.json").write_text(json.dumps(datapackage(version, root, d, digests), indent=2), encoding="utf-8")
    (root / "RELEASE_NOTES.md").write_text(release_notes(version, d, previous, meta), encoding="utf-8")
    (root / "quality").mkdir()
    for name, data in quality_summaries(ws, ws.config().release.small_count).items():
        (root / "quality" / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
