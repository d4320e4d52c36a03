"""`datafirst site`: a release's catalogue as a static site a researcher can browse.

Built only from the release's own documents (dictionary.json, datapackage.json, quality/*.json,
RELEASE_NOTES.md, manifest.json; never its tables, so that a 1M-record release takes as long as a
small one), from Jinja2 templates shipped with the package (`site_templates/`). Plain HTML and
one inline SVG, so it works opened from a file share (`file://`) with no server: the search
index is a script literal in the search page, since a browser will not fetch JSON from a
`file://` page. Every value is escaped (autoescape, and the index is escaped for a `<script>`).

No count below the release's small-count limit is shown (`count` below), whatever the
documents hold. Before anything is written, the pages' text is given to `guard` (the privacy
guard's `check_text` over the workspace's identifiers zone, when the workspace is known):
any hit refuses the site, named by page and kind.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from .. import __version__
from ..engine import Engine
from ..files import file_sha256
from ..sources.contract import load_contracts
from ..standardise.stage import IDENTIFIERS
from ..workspace import ReleaseConfig, Workspace, remove_tree, replace_folder
from .chain import MANIFEST, ReleaseError, in_series
from .diff import schema_changes
from .privacy import SensitiveValues, check_text, declared_lists, sensitive_value_sources

SITE = "site"  # the site's folder inside a release
SYNTHETIC = "synthetic"  # beside `releases/`: a release's synthetic twins, `synthetic/<version>-*`
MARKER = ".datafirst-site"  # marks a folder as a site this module wrote (it may be replaced)
PERSON_LOOKUP, PERSON = "person_link_lookup", "person"  # the tables the inferred joins point at

# (page, text) pairs -> problems (page and kind, never a value); `ignore`: values the release
# itself declares (see `privacy.check_text`).
Guard = Callable[[list[tuple[str, str]], set[str]], list[str]]


class SiteError(ReleaseError):
    pass


@dataclass
class SiteSummary:
    path: Path
    pages: int
    guarded: bool  # whether the privacy guard read the pages (False: no workspace was known)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def small_count_of(release: Path, manifest: dict) -> int:
    """The release's small-count limit: the manifest's (releases record it), else the largest
    `<N` its quality summaries show, else the workspace default."""
    if manifest.get("small_count"):
        return int(manifest["small_count"])
    shown = [int(n) for f in sorted((release / "quality").glob("*.json"))
             for n in re.findall(r'"<([0-9]+)"', f.read_text(encoding="utf-8"))]
    return max(shown, default=ReleaseConfig.model_fields["small_count"].default)


def page_name(table: str) -> str:
    """A table's page (the names are a contract's; anything else is replaced)."""
    return "tables/" + re.sub(r"[^A-Za-z0-9_.-]", "_", table) + ".html"


def _fields(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def declared_joins(datapackage: dict) -> list[dict]:
    """The foreign keys of datapackage.json (Frictionless Table Schema), one per key:
    table, columns, references (the table) and columns there."""
    joins = []
    for r in datapackage.get("resources", []):
        for fk in (r.get("schema") or {}).get("foreignKeys") or []:
            ref = fk.get("reference") or {}
            joins.append({"table": r["name"], "fields": _fields(fk.get("fields", [])),
                          "to": ref.get("resource") or r["name"], "to_fields": _fields(ref.get("fields", [])),
                          "declared": True})
    return joins


def inferred_joins(tables: list[dict]) -> list[dict]:
    """The joins every datafirst release has, read from column names, for a release whose
    datapackage.json declares no foreign keys: a person record's `row_id_hash` (and a case
    journey's `*_row_id_hash`) to the person link lookup, and a person id at medium to the
    person table."""
    names = {t["name"]: {c["name"] for c in t["columns"]} for t in tables}
    joins = []
    for t in tables:
        cols, name = names[t["name"]], t["name"]
        if PERSON_LOOKUP in names and name != PERSON_LOOKUP:
            if "row_id_hash" in cols and "person_id_medium" in cols:
                joins.append({"table": name, "fields": ["row_id_hash"], "to": PERSON_LOOKUP,
                              "to_fields": ["row_id_hash"], "declared": False})
            joins += [{"table": name, "fields": [c], "to": PERSON_LOOKUP, "to_fields": ["row_id_hash"],
                       "declared": False} for c in sorted(cols) if c.endswith("_row_id_hash")]
        if PERSON in names and name != PERSON and "person_id_medium" in cols and name != PERSON_LOOKUP:
            joins.append({"table": name, "fields": ["person_id_medium"], "to": PERSON,
                          "to_fields": ["person_id_medium"], "declared": False})
    return joins


NODE_W, NODE_H, GAP, COL_GAP, PAD = 250, 30, 14, 90, 10
CHAR_W = 8.6  # the width of one character of the boxes' monospace label, in pixels


def join_diagram(tables: list[str], joins: list[dict]) -> dict:
    """Boxes and lines for the join diagram: the tables joined to (the hubs) in the middle,
    the others on either side, each line from a table to the one it joins to."""
    linked = [j for j in joins if j["to"] in tables and j["table"] in tables and j["to"] != j["table"]]
    hubs = [t for t in tables if any(j["to"] == t for j in linked)]
    others = [t for t in tables if t not in hubs]
    left, right = others[0::2], others[1::2]
    # Boxes as wide as the longest name needs (code_list__possession_claimants), at least NODE_W.
    node_w = max([NODE_W, *(round(len(t) * CHAR_W) + 24 for t in tables)])
    xs = [PAD, PAD + node_w + COL_GAP, PAD + 2 * (node_w + COL_GAP)]
    rows = max(len(left), len(right), len(hubs), 1)
    height = PAD * 2 + rows * (NODE_H + GAP)
    nodes = {}
    for column, names in enumerate((left, hubs, right)):
        top = PAD + (rows - len(names)) * (NODE_H + GAP) / 2  # each column centred
        for i, name in enumerate(names):
            nodes[name] = {"name": name, "x": xs[column], "y": top + i * (NODE_H + GAP), "href": page_name(name)}
    lines = []
    for j in linked:
        a, b = nodes[j["table"]], nodes[j["to"]]
        leftward = a["x"] > b["x"]
        x1 = a["x"] if leftward else a["x"] + node_w
        x2 = b["x"] + node_w if leftward else b["x"]
        if a["x"] == b["x"]:  # two hubs: from the right side of one to the right side of the other
            x1 = x2 = a["x"] + node_w
        y1, y2 = a["y"] + NODE_H / 2, b["y"] + NODE_H / 2
        # A curve leaving each box sideways; between two hubs, a loop out to the right.
        c1, c2 = (x1 + 60, x2 + 60) if a["x"] == b["x"] else (x1 + (x2 - x1) / 2, x2 - (x2 - x1) / 2)
        lines.append({"d": f"M{x1:.0f},{y1:.0f} C{c1:.0f},{y1:.0f} {c2:.0f},{y2:.0f} {x2:.0f},{y2:.0f}",
                      "label": f"{j['table']}.{', '.join(j['fields'])} joins {j['to']}.{', '.join(j['to_fields'])}",
                      "declared": j["declared"]})
    return {"width": xs[2] + node_w + PAD, "height": height, "nodes": list(nodes.values()), "lines": lines,
            "node_w": node_w, "node_h": NODE_H}


def markdown_html(text: str) -> list[dict]:
    """The release notes' Markdown (as `documentation.release_notes` writes it: headings,
    paragraphs, bullet lists, pipe tables, `code`) as blocks for the template, which escapes
    them; the top heading is left out (the page has its own)."""
    blocks: list[dict] = []
    for line in text.splitlines():
        if line.startswith("# "):
            continue
        if line.startswith("#"):
            blocks.append({"kind": "heading", "text": line.lstrip("#").strip()})
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            if blocks and blocks[-1]["kind"] == "table":
                blocks[-1]["rows"].append(cells)
            else:
                blocks.append({"kind": "table", "head": cells, "rows": []})
        elif line.startswith("- "):
            if blocks and blocks[-1]["kind"] == "list":
                blocks[-1]["items"].append(line[2:])
            else:
                blocks.append({"kind": "list", "items": [line[2:]]})
        elif line.strip():
            blocks.append({"kind": "paragraph", "text": line})
    return blocks


def _inline(text: str) -> list[tuple[bool, str]]:
    """Text split at `code` spans: (is_code, part)."""
    return [(i % 2 == 1, part) for i, part in enumerate(text.split("`")) if part]


def twin_of(release: Path, version: str) -> Path | None:
    """The release's synthetic twin: `synthetic/<version>-*` beside the releases folder."""
    found = sorted((release.resolve().parent.parent / SYNTHETIC).glob(f"{version}-*"))
    return found[-1] if found else None


def changes_since(release: Path, manifest: dict, dictionary: dict) -> dict | None:
    """Schema and row count changes since the previous release, when it sits beside this one."""
    previous = manifest.get("previous")
    if not previous:
        return None
    before = _read_json(release.parent / previous / "dictionary.json")
    if before is None:
        return {"previous": previous, "found": False}
    old = {t["name"]: t["rows"] for t in before["tables"]}
    new = {t["name"]: t["rows"] for t in dictionary["tables"]}
    return {"previous": previous, "found": True, "schema": schema_changes(before, dictionary),
            "rows": [{"table": n, "before": old[n], "now": new[n]} for n in sorted(old.keys() & new.keys())
                     if old[n] != new[n]]}


_KNOWN_COLUMN_KEYS = {"name", "type", "description", "missing_share", "distinct_values", "declared", "allowed_values",
                      "suppressed_values", "privacy_guard_exemption"}
_KNOWN_TABLE_KEYS = {"name", "path", "unit", "description", "keys", "rows", "columns", "withheld_columns", "joins"}


def _other_facts(item: dict, known: set[str]) -> list[tuple[str, str]]:
    """What else the dictionary says of a table or column (an empty column's explanation, a
    source, ...), shown as it is written: the site renders any dictionary."""
    out = []
    for key, value in item.items():
        if key in known or value in (None, "", [], {}):
            continue
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(json.dumps(v) if isinstance(v, dict) else str(v) for v in value)
        out.append((key.replace("_", " "), str(value)))
    return out


def _join_text(join: object) -> str:
    """One entry of a table's `joins` in the dictionary, as text."""
    if isinstance(join, dict):
        return "; ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in join.items())
    return str(join)


def search_index(tables: list[dict]) -> list[dict]:
    index = []
    for t in tables:
        index.append({"kind": "table", "name": t["name"], "table": t["name"], "text": f"{t['description']} {t['unit']}",
                      "href": page_name(t["name"])})
        index += [{"kind": "column", "name": c["name"], "table": t["name"], "text": c.get("description", ""),
                   "href": f"{page_name(t['name'])}#col-{c['name']}"} for c in t["columns"]]
    return index


def script_json(value: object) -> str:
    """JSON safe inside a <script> element: no `</script>`, `<!--` or line separators survive."""
    return (json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _environment(small: int) -> Environment:
    env = Environment(loader=PackageLoader("datafirst.release", "site_templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                      lstrip_blocks=True)

    def count(n: object) -> str:
        """A count as shown: below the small-count limit (and not 0), `<limit`; one already
        suppressed as released; none (suppressed with a share that would give it back) a dash."""
        if n is None:
            return "suppressed"
        if isinstance(n, bool) or not isinstance(n, int):
            return str(n)
        return f"<{small}" if 0 < n < small else f"{n:,}"

    def share(x: object, places: int = 1) -> str:
        return "suppressed" if x is None else f"{x:.{places}%}" if isinstance(x, (int, float)) else str(x)

    env.filters.update(count=count, share=share, inline=_inline, table_page=page_name)
    return env


class _Text(HTMLParser):
    """A page's text as the guard reads it: each text node, and each attribute a reader sees
    (title, alt, aria-label, placeholder, value); not scripts or styles."""

    SEEN = ("title", "alt", "aria-label", "placeholder", "value")

    def __init__(self) -> None:
        super().__init__()
        self.passages: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._skip += tag in ("script", "style")
        self.passages += [v for k, v in attrs if k in self.SEEN and v]

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.passages.append(" ".join(data.split()))


def render(release: Path, out: Path, small: int | None = None) -> dict[str, str]:
    """Every page of the release's site, by its path in the site (to be written to `out`, which
    links to a synthetic twin are relative to); `small`: the small-count limit (by default the
    release's, `small_count_of`)."""
    manifest = _read_json(release / MANIFEST)
    dictionary = _read_json(release / "dictionary.json")
    if manifest is None or dictionary is None:
        raise SiteError(f"{release} is not a release (it has no {MANIFEST} or dictionary.json): give a release "
                        "folder, for example releases/v0001")
    datapackage = _read_json(release / "datapackage.json") or {}
    small = small or small_count_of(release, manifest)
    env = _environment(small)
    tables = dictionary["tables"]
    joins = declared_joins(datapackage)
    joins_declared = bool(joins)
    joins = joins or inferred_joins(tables)
    notes = release / "RELEASE_NOTES.md"
    twin = twin_of(release, manifest["version"])
    title = datapackage.get("title") or "datafirst release"
    created = str(manifest.get("created_at", ""))[:10]
    common = {
        "version": manifest["version"], "title": title, "created": manifest.get("created_at", ""),
        "generator": __version__, "small": small, "tables": tables,
        "citation": f"{title}, release {manifest['version']} ({created}). Made with datafirst "
                    f"{manifest.get('datafirst', '')}; manifest SHA-256 {file_sha256(release / MANIFEST)}.",
        "twin": twin, "manifest": manifest,
        "twin_href": Path(os.path.relpath(twin, Path(out).resolve())).as_posix() + "/" if twin else None,
    }
    pages = {
        "index.html": ("index.html", {"previous": manifest.get("previous")}),
        "joins.html": ("joins.html", {"diagram": join_diagram([t["name"] for t in tables], joins), "joins": joins,
                                      "joins_declared": joins_declared}),
        "linkage.html": ("linkage.html", {"lq": _read_json(release / "quality" / "linkage_quality.json")}),
        "quality.html": ("quality.html", {"dq": _read_json(release / "quality" / "data_quality.json")}),
        "notes.html": ("notes.html", {"notes": markdown_html(notes.read_text(encoding="utf-8")) if notes.is_file()
                                      else None, "changes": changes_since(release, manifest, dictionary)}),
        "search.html": ("search.html", {"index_json": script_json(search_index(tables))}),
    }
    rendered = {}
    for path, (template, context) in pages.items():
        rendered[path] = env.get_template(template).render(root="", page=path, **common, **context)
    table_page = env.get_template("table.html")
    for t in tables:
        path = page_name(t["name"])
        rendered[path] = table_page.render(
            root="../", page=path, **common, table=t, other_facts=_other_facts(t, _KNOWN_TABLE_KEYS),
            column_facts={c["name"]: _other_facts(c, _KNOWN_COLUMN_KEYS) for c in t["columns"]},
            joins_out=[j for j in joins if j["table"] == t["name"]], joins_in=[j for j in joins if j["to"] == t["name"]],
            dictionary_joins=[_join_text(j) for j in t.get("joins") or []], joins_declared=joins_declared)
    rendered["site.css"] = env.get_template("site.css").render()
    rendered["search.js"] = env.get_template("search.js").render()
    return rendered


def _template_text() -> set[str]:
    """The templates' own words (headings, labels: 'field', 'rows'): the package's, the same in
    every release's site, so not checked by the guard (a column header 'field' is a surname)."""
    env = _environment(1)
    words = set()
    for name in env.list_templates(extensions=["html"]):
        parser = _Text()
        parser.feed(env.loader.get_source(env, name)[0])
        words |= set(parser.passages)
    return words


def guard_passages(pages: dict[str, str], release: Path) -> tuple[list[tuple[str, str]], set[str]]:
    """The pages' text as (page, passage) for the privacy guard (but for the templates' own
    words), the search index's entries among them, and the values to ignore: the bounds of the
    dictionary's declared ranges, its table and column names, the source fields named by the
    data quality summary, and the entries of its declared lists of values."""
    passages = []
    own = _template_text()
    for path, html in pages.items():
        if path.endswith(".html"):
            parser = _Text()
            parser.feed(html)
            passages += [(path, p) for p in parser.passages if p not in own]
    dictionary = _read_json(release / "dictionary.json") or {"tables": []}
    for entry in search_index(dictionary["tables"]):
        passages += [("search.html", entry["name"]), ("search.html", entry["text"])]
    ignore = {str(c["declared"][k]) for t in dictionary["tables"] for c in t["columns"]
              for k in ("min", "max") if k in (c.get("declared") or {})}
    # The release's own names (a table named `person` is no Mr Person), already public in its
    # datapackage.json.
    ignore |= {t["name"] for t in dictionary["tables"]} | {c["name"] for t in dictionary["tables"] for c in t["columns"]}
    # So are the source fields its data quality summary names: a field `town` is no Mr Town.
    quality = _read_json(release / "quality" / "data_quality.json") or {}
    ignore |= {f["field"] for t in quality.get("tables") or [] for f in t.get("fields") or [] if f.get("field")}
    # And the entries of its declared lists of values (code lists, contracts' `allowed`): public
    # reference data, which the release's own guard has looked up already (a sentence of a fine is
    # no Mr Fine, though some are named so).
    ignore |= {v for entries in declared_lists(dictionary).values() for v in entries}
    return passages, ignore


def build_site(release: Path, out: Path, guard: Guard | None, small: int | None = None) -> SiteSummary:
    """Render the release's site, check it with `guard` (None: no workspace is known, so the
    guard cannot run), and write it to `out` whole (a folder made beside it, then put in place).
    `out` must be new or a site this module wrote."""
    release = Path(release)
    pages = render(release, out, small)
    if guard is not None:
        problems = guard(*guard_passages(pages, release))
        if problems:
            raise SiteError("the site failed the privacy guard and was not written (each line names a page and "
                            "what it holds, never the value):\n  " + "\n  ".join(problems))
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise SiteError(f"{out} exists and is not a site datafirst wrote: give a new folder with --out (an earlier "
                        "site is replaced)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    remove_tree(tmp)
    try:
        for path, text in pages.items():
            (tmp / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp / path).write_text(text, encoding="utf-8")
        (tmp / MARKER).write_text(f"written by datafirst {__version__} from release "
                                  f"{_read_json(release / MANIFEST)['version']}\n", encoding="utf-8")
        replace_folder(tmp, out)
    finally:
        remove_tree(tmp)
    return SiteSummary(path=out, pages=sum(p.endswith(".html") for p in pages), guarded=guard is not None)


def text_guard(engine: Engine, sensitive: SensitiveValues) -> Guard:
    """The privacy guard over a site's pages (`privacy.check_text`)."""
    return lambda passages, ignore: check_text(engine, passages, sensitive, ignore)


def workspace_of(release: Path) -> Workspace | None:
    """The workspace a release sits in (its `releases` folder's parent, with a config), if any."""
    root = Path(release).resolve().parent.parent
    ws = Workspace(root)
    return ws if in_series(release) and ws.config_path.is_file() else None


def site_for_release(release: Path, out: Path, ws: Workspace | None) -> SiteSummary:
    """`datafirst site`: the site of a release, guarded against the identifiers zone of `ws`
    (the workspace it was made in) when given; without one the guard cannot run, and the
    summary says so."""
    if ws is None:
        return build_site(release, out, None)
    small = ws.config().release.small_count
    if not ws.zone(IDENTIFIERS).is_dir() or not (ws.zone("links") / "clusters.parquet").is_file():
        raise SiteError(f"the workspace {ws.root} has no identifiers or links zone to guard the site with: give "
                        "the workspace the release was made in (-w), or build the site outside any workspace")
    with Engine() as engine:  # DuckDB reads the zones whatever engine made them: the pages are small
        sensitive = sensitive_value_sources(ws.zone(IDENTIFIERS) / "*.parquet", ws.zone("content"),
                                            load_contracts(ws.contracts), ws.zone("links") / "clusters.parquet")
        return build_site(release, out, text_guard(engine, sensitive), small)
