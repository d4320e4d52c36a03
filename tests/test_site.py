"""The researcher's catalogue site of a release (`datafirst site`, docs/site.md): built with every
release and signed with it, and checked in a real browser (Playwright driving Debian's Chromium)
for console errors, links, search, identifying values and basic accessibility."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import duckdb
import pytest

from datafirst.engine import Engine
from datafirst.release.chain import release_problems
from datafirst.release.signing import trusted_public_keys
from datafirst.release.site import MARKER, SITE, SiteError, build_site, render, text_guard
from datafirst.release.privacy import sensitive_value_sources
from datafirst.release.stage import published, release
from datafirst.sources.contract import load_contracts

from .conftest import TEST_SALT, build_pipeline


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(_chromium() is None,
                                    reason="Debian's chromium is not installed (.ci/run installs it for CI)")


@pytest.fixture(scope="module")
def released(world, tmp_path_factory):
    """A real release of the session's world; its site is the one `datafirst release` wrote."""
    ws = build_pipeline(world, tmp_path_factory.mktemp("site"), "release")
    return ws, published(ws)[-1]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it for CI)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield b
        b.close()


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def _copy_release(rel: Path, to: Path) -> Path:
    """A writable copy of a release (releases are read-only)."""
    shutil.copytree(rel, to, ignore=shutil.ignore_patterns(SITE, "tables"))
    for p in [to, *to.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    return to


class _Visit:
    """A page opened in the browser, with what went wrong while it loaded."""

    def __init__(self, browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.errors.append(f"failed to load {r.url}"))
        self.page.goto(url)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.page.close()


# --- built with the release ----------------------------------------------------------------------

def test_every_release_carries_its_site_signed_and_an_unchanged_release_is_still_found_unchanged(released):
    ws, rel = released
    site = rel / SITE
    assert (site / "index.html").is_file() and (site / MARKER).is_file()
    tables = [t["name"] for t in json.loads((rel / "dictionary.json").read_text())["tables"]]
    assert {p.stem for p in (site / "tables").glob("*.html")} == set(tables)
    sums = (rel / "SHA256SUMS").read_text()
    assert "  site/index.html\n" in sums and "  site/search.html\n" in sums
    assert release_problems(rel, trusted_public_keys()) == []
    assert json.loads((rel / "manifest.json").read_text())["small_count"] == ws.config().release.small_count
    with Engine() as engine:  # nothing changed: the site (not compared) does not make it a new release
        again = release(ws, engine, salt=TEST_SALT, only_if_changed=True)
    assert again.unchanged and again.version == rel.name and len(published(ws)) == 1


def test_the_site_is_built_from_the_documents_in_a_few_seconds_and_never_reads_a_table(released, tmp_path):
    _, rel = released
    copy = _copy_release(rel, tmp_path / "releases" / rel.name)  # without its tables folder
    started = time.perf_counter()
    summary = build_site(copy, tmp_path / "site", None)
    assert time.perf_counter() - started < 10
    assert summary.pages == len(_pages(tmp_path / "site")) and not summary.guarded


# --- the privacy guard ---------------------------------------------------------------------------

def _identifiers(ws) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"""CREATE TABLE people AS SELECT lower(forename) AS forename, lower(surname) AS surname,
                    date_of_birth, upper(replace(postcode, ' ', '')) AS postcode
                    FROM read_parquet('{ws.zones}/identifiers/*.parquet', union_by_name = true)""")
    return con


def test_a_page_holding_an_identifying_value_is_refused_naming_page_and_kind_never_the_value(released, tmp_path):
    ws, rel = released
    con = _identifiers(ws)
    forename, surname, dob, postcode = con.execute(
        """SELECT forename, surname, strftime(date_of_birth, '%d/%m/%Y'), postcode FROM people
           WHERE length(forename) >= 4 AND length(surname) >= 5 AND date_of_birth IS NOT NULL
           AND postcode IS NOT NULL ORDER BY surname, forename LIMIT 1""").fetchone()
    copy = _copy_release(rel, tmp_path / "releases" / rel.name)
    d = json.loads((copy / "dictionary.json").read_text())
    d["tables"][-1]["columns"][0]["description"] = f"seen with {forename.title()} {surname.upper()} born {dob}"
    d["tables"][-2]["description"] += f" (the office at {postcode[:-3]} {postcode[-3:]})"
    (copy / "dictionary.json").write_text(json.dumps(d))
    contracts = load_contracts(ws.contracts)
    with Engine() as engine:
        sensitive = sensitive_value_sources(ws.zone("identifiers") / "*.parquet", ws.zone("content"), contracts,
                                            ws.zone("links") / "clusters.parquet")
        with pytest.raises(SiteError) as caught:
            build_site(copy, tmp_path / "site", text_guard(engine, sensitive))
        # The release's own site passed the same guard.
        assert build_site(rel, tmp_path / "clean", text_guard(engine, sensitive)).guarded
    message = str(caught.value)
    last, second = d["tables"][-1]["name"], d["tables"][-2]["name"]
    assert f"tables/{last}.html: 1 pair(s) of words are a forename and a surname" in message
    assert re.search(rf"tables/{last}\.html: \d+ passage\(s\) hold a date of birth from the identifiers zone", message)
    assert re.search(rf"tables/{second}\.html: \d+ passage\(s\) hold a postcode from the identifiers zone", message)
    assert "search.html" in message  # the search index holds the meanings too
    for value in (forename, surname, dob, postcode, postcode[:-3]):
        assert value.lower() not in message.lower()
    assert not (tmp_path / "site").exists()


def test_the_cli_runs_the_guard_in_a_workspace_and_says_when_it_cannot(released, tmp_path):
    ws, rel = released
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-m", "datafirst", "site", str(rel), "--out", str(tmp_path / "a")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "privacy guard read every page" in run.stdout and (tmp_path / "a" / "index.html").is_file()
    outside = _copy_release(rel, tmp_path / "handed-on" / rel.name)
    run = subprocess.run([sys.executable, "-m", "datafirst", "site", str(outside), "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "privacy guard was not run" in " ".join(run.stdout.split())
    # Again over the same folder: a site is replaced; any other folder is refused.
    run = subprocess.run([sys.executable, "-m", "datafirst", "site", str(outside), "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    run = subprocess.run([sys.executable, "-m", "datafirst", "site", str(outside), "--out", str(tmp_path / "c")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode != 0 and "is not a site datafirst wrote" in " ".join(run.stderr.split())
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"


# --- what the pages say ---------------------------------------------------------------------------

def test_no_count_below_the_small_count_limit_is_shown(released, tmp_path):
    _, rel = released
    copy = _copy_release(rel, tmp_path / "releases" / rel.name)
    lq = json.loads((copy / "quality" / "linkage_quality.json").read_text())
    lq["people"]["high"] = 3
    lq["cluster_sizes"]["high"] = {"1": 7, "2": 12}
    (copy / "quality" / "linkage_quality.json").write_text(json.dumps(lq))
    page = render(copy, tmp_path / "site")["linkage.html"]
    assert re.search(r'<tr><td>high</td><td class="num">[0-9.]+</td><td class="num">&lt;10</td></tr>', page)
    assert '<tr><td>high</td><td>1</td><td class="num">&lt;10</td></tr>' in page
    assert '<tr><td>high</td><td>2</td><td class="num">12</td></tr>' in page


def test_joins_come_from_the_declared_foreign_keys_and_else_from_the_column_names(released, tmp_path):
    _, rel = released
    copy = _copy_release(rel, tmp_path / "releases" / rel.name)
    dp = json.loads((copy / "datapackage.json").read_text())
    declared = [(r["name"], fk) for r in dp["resources"] for fk in r["schema"].get("foreignKeys", [])]
    assert declared  # the release declares its joins (release/joins.py)
    joins = render(copy, tmp_path / "site")["joins.html"]
    assert "declares no foreign keys" not in joins and 'class="join inferred"' not in joins
    assert joins.count('class="join"') == len(declared)
    assert "<title>crown__defendants.row_id_hash joins person_link_lookup.row_id_hash</title>" in joins
    # A package that declares none (an older release): the joins are read from the column names.
    for r in dp["resources"]:
        r["schema"].pop("foreignKeys", None)
    (copy / "datapackage.json").write_text(json.dumps(dp))
    pages = render(copy, tmp_path / "site-inferred")
    assert "declares no foreign keys" in pages["joins.html"]
    assert re.search(r"<title>crown__defendants\.row_id_hash joins person_link_lookup\.row_id_hash</title>",
                     pages["joins.html"])
    assert "<title>probation__events.person_id_medium joins person.person_id_medium</title>" in pages["joins.html"]
    assert "joins this table" in pages["tables/person_link_lookup.html"]


def test_changes_since_the_previous_release_and_the_synthetic_twin(released, tmp_path):
    _, rel = released
    first = _copy_release(rel, tmp_path / "releases" / "v0001")
    second = _copy_release(rel, tmp_path / "releases" / "v0002")
    manifest = json.loads((second / "manifest.json").read_text())
    manifest.update(version="v0002", previous="v0001")
    (second / "manifest.json").write_text(json.dumps(manifest))
    d = json.loads((second / "dictionary.json").read_text())
    table = d["tables"][0]
    dropped = table["columns"].pop()
    table["rows"] += 100
    (second / "dictionary.json").write_text(json.dumps(d))
    notes = render(second, tmp_path / "site")["notes.html"]
    assert f"column removed: <code>{table['name']}.{dropped['name']}</code>" in notes
    assert f"<tr><td>{table['name']}</td>" in notes and "No synthetic twin yet." in notes
    assert "This is the first release" in render(first, tmp_path / "site")["notes.html"]
    (tmp_path / "synthetic" / "v0002-twin").mkdir(parents=True)
    build_site(second, tmp_path / "site", None)
    notes = (tmp_path / "site" / "notes.html").read_text()
    assert 'href="../synthetic/v0002-twin/"' in notes
    assert (tmp_path / "site" / "../synthetic/v0002-twin/").resolve().is_dir()


# --- in the browser -------------------------------------------------------------------------------

def _ids(page: Path) -> set[str]:
    return {html.unescape(i) for i in re.findall(r'\sid="([^"]*)"', page.read_text(encoding="utf-8"))}


@needs_chromium
def test_every_page_renders_with_no_console_error_and_every_link_resolves(released, browser):
    _, rel = released
    site = rel / SITE
    checked = 0
    for path in _pages(site):
        with _Visit(browser, path.as_uri()) as v:
            assert v.page.locator("h1").count() == 1
            links = v.page.evaluate("""() => [...document.querySelectorAll('a[href]')].map(
                a => new URL(a.getAttribute('href'), document.baseURI).href)""")
            assert v.errors == [], (path, v.errors)
        for link in links:
            url = urlparse(link)
            assert url.scheme == "file", (path, link)  # nothing reaches outside the site: it works offline
            target = Path(unquote(url.path))
            assert target.exists(), (path, link)
            if url.fragment:
                assert unquote(url.fragment) in _ids(target), (path, link)
            checked += 1
    assert checked > 100


@needs_chromium
def test_search_finds_a_column_by_its_name_and_by_a_word_of_its_meaning(released, browser):
    _, rel = released
    tables = json.loads((rel / "dictionary.json").read_text())["tables"]
    # A column whose meaning has a word its name does not (any release has one).
    table, column, word = next(
        (t["name"], c["name"], w) for t in tables for c in t["columns"]
        for w in re.findall(r"[a-z]{6,}", c["description"].lower()) if w not in c["name"])
    search = (rel / SITE / "search.html").as_uri()
    with _Visit(browser, f"{search}?q={column}") as v:
        results = v.page.locator("#search-results li > a").all_inner_texts()
        assert f"{table}.{column}" in results
        assert v.errors == []
        v.page.fill("#search-query", word)  # typing searches as it goes
        results = v.page.locator("#search-results li > a").all_inner_texts()
        assert f"{table}.{column}" in results
        v.page.get_by_role("link", name=f"{table}.{column}", exact=True).first.click()
        v.page.wait_for_load_state()
        assert v.page.url.endswith(f"tables/{table}.html#col-{column}")
        assert v.page.locator(f"#col-{column} h3").inner_text().startswith(column)
    index = (rel / SITE / "index.html").as_uri()
    with _Visit(browser, index) as v:  # the box on every page
        v.page.fill("#site-search", table)
        v.page.press("#site-search", "Enter")
        v.page.wait_for_load_state()
        assert table in v.page.locator("#search-results li > a").all_inner_texts()
        assert v.errors == []


@needs_chromium
def test_a_value_that_would_break_out_of_its_page_stays_text(released, browser, tmp_path):
    _, rel = released
    copy = _copy_release(rel, tmp_path / "releases" / rel.name)
    d = json.loads((copy / "dictionary.json").read_text())
    planted = '</script><script>window.broken = 1</script><img src=x onerror="window.broken = 2"> \u2028 & "quoted"'
    d["tables"][0]["columns"][0]["description"] = planted
    (copy / "dictionary.json").write_text(json.dumps(d))
    build_site(copy, tmp_path / "site", None)
    name = d["tables"][0]["columns"][0]["name"]
    for page in (f"search.html?q={name}", f"tables/{d['tables'][0]['name']}.html"):
        with _Visit(browser, (tmp_path / "site").as_uri() + "/" + page) as v:
            assert v.page.evaluate("() => window.broken") is None
            assert v.page.locator("img").count() == 0
            assert "window.broken = 1" in v.page.locator("main").inner_text()
            assert v.errors == []


@needs_chromium
def test_no_identifying_value_appears_in_any_page(released, browser):
    """Every page's text as the browser shows it (and the search index's entries) against the
    world's identifiers: no forename and surname of one person side by side, date of birth,
    postcode or native id."""
    ws, rel = released
    con = _identifiers(ws)
    texts = []
    for path in _pages(rel / SITE):
        with _Visit(browser, path.as_uri()) as v:
            texts.append(v.page.evaluate("() => document.body.innerText"))
            if path.name == "search.html":
                texts += [f"{e['name']} {e['text']}" for e in v.page.evaluate("() => window.DATAFIRST_SEARCH")]
    text = "\n".join(texts)
    words = re.findall(r"[a-z0-9]+", text.lower())
    con.execute("CREATE TABLE pairs AS SELECT * FROM (VALUES " + ", ".join(
        f"('{a}', '{b}')" for a, b in set(zip(words, words[1:])) if "'" not in a + b) + ") t(a, b)")
    names = con.execute("""SELECT count(*) FROM pairs JOIN (SELECT DISTINCT split_part(forename, ' ', 1) AS f,
                           split_part(surname, ' ', 1) AS s FROM people WHERE length(forename) >= 3
                           AND length(surname) >= 3) n ON (a = f AND b = s) OR (a = s AND b = f)""").fetchone()[0]
    assert names == 0
    declared = {str(c["declared"][k]) for t in json.loads((rel / "dictionary.json").read_text())["tables"]
                for c in t["columns"] for k in ("min", "max") if k in (c.get("declared") or {})}
    dates = set(re.findall(r"\b\d{4}-\d{2}-\d{2}\b", text)) - declared
    dates |= {f"{y}-{m}-{d}" for d, m, y in re.findall(r"\b(\d{2})/(\d{2})/(\d{4})\b", text)}
    born = {r[0] for r in con.execute("SELECT DISTINCT strftime(date_of_birth, '%Y-%m-%d') FROM people").fetchall()}
    assert dates and not dates & born
    postcodes = {p.replace(" ", "") for p in re.findall(r"\b[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}\b", text)}
    assert not postcodes & {r[0] for r in con.execute("SELECT DISTINCT postcode FROM people").fetchall()}
    native = set()
    for c in load_contracts(ws.contracts):
        for t, spec in c.tables.items():
            for n, col in spec.columns.items():
                if col.native_id:
                    native |= {str(r[0]).lower() for r in con.execute(
                        f"SELECT DISTINCT \"{n}\" FROM read_parquet('{ws.zone('content')}/{c.table_key(t)}.parquet')"
                    ).fetchall() if r[0] is not None}
    assert native and not {w for w in words if len(w) >= 5} & native


# The page's headings, images, form fields and the contrast of every piece of text, from the
# browser's computed styles (WCAG's relative luminance; text in the SVG against its box).
AUDIT = """() => {
  const rgb = c => { const m = c && c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map(parseFloat); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const background = el => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0) return c; } return {r: 255, g: 255, b: 255, a: 1}; };
  const headings = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].map(h => +h.tagName[1]);
  const unnamed = [...document.querySelectorAll('img, svg')].filter(e => !(e.getAttribute('alt') ||
    e.getAttribute('aria-label') || e.getAttribute('aria-labelledby') || e.querySelector(':scope > title') ||
    e.getAttribute('aria-hidden') === 'true')).map(e => e.outerHTML.slice(0, 80));
  const unlabelled = [...document.querySelectorAll('input, select, textarea')].filter(e => !(e.labels.length ||
    e.getAttribute('aria-label'))).map(e => e.outerHTML);
  const low = []; const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT); const seen = new Set();
  let n, checked = 0;
  while ((n = walker.nextNode())) {
    const el = n.parentElement;
    if (!n.textContent.trim() || seen.has(el) || el.closest('script, style, title, desc')) continue;
    seen.add(el);
    const box = el.getBoundingClientRect(), cs = getComputedStyle(el);
    if (box.width === 0 || box.right < 0 || cs.visibility === 'hidden') continue;
    let fg = rgb(cs.color), bg = background(el);
    if (el.closest('svg')) { fg = rgb(cs.fill); const r = el.parentElement.querySelector('rect');
      bg = r ? rgb(getComputedStyle(r).fill) : {r: 255, g: 255, b: 255, a: 1}; }
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a), ratio = (hi + 0.05) / (lo + 0.05);
    checked++;
    if (ratio < 4.5) low.push(`${el.tagName} "${n.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return {headings, unnamed, unlabelled, low, checked};
}"""


@needs_chromium
def test_pages_have_ordered_headings_named_images_labelled_fields_and_readable_contrast(released, browser):
    _, rel = released
    for path in _pages(rel / SITE):
        with _Visit(browser, path.as_uri()) as v:
            audit = v.page.evaluate(AUDIT)
        headings = audit["headings"]
        assert headings[0] == 1 and headings.count(1) == 1, path
        assert all(b <= a + 1 for a, b in zip(headings, headings[1:])), (path, headings)
        assert audit["unnamed"] == [] and audit["unlabelled"] == [], path
        assert audit["low"] == [] and audit["checked"] > 10, (path, audit["low"])


def test_the_docs_show_the_site():
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "site.md").read_text(encoding="utf-8")
    for shot in ("site-overview.png", "site-table.png", "site-quality.png"):
        assert f"images/{shot}" in doc
        size = (root / "docs" / "images" / shot).stat().st_size
        assert 10_000 < size < 400_000
    assert "datafirst site" in (root / "README.md").read_text(encoding="utf-8")


def test_the_guard_ignores_source_fields_named_by_the_data_quality_summary(tmp_path):
    """A source field `town` on the quality page is no person surnamed Town (a real surname, and
    one the world's long name tail holds): the field names of quality/data_quality.json are the
    release's own schema, like its column names, and the guard ignores them; other passages are
    still checked."""
    from datafirst.release.site import guard_passages

    (tmp_path / "quality").mkdir()
    (tmp_path / "dictionary.json").write_text(json.dumps({"tables": []}))
    (tmp_path / "quality" / "data_quality.json").write_text(json.dumps(
        {"tables": [{"source": "court", "table": "people", "fields": [{"field": "town", "role": "address"}]}]}))
    pages = {"quality.html": "<table><tr><td><code>town</code></td><td>address</td></tr></table>"}
    passages, ignore = guard_passages(pages, tmp_path)
    assert ("quality.html", "town") in passages and "town" in ignore
    assert "address" not in ignore


def test_the_guard_ignores_the_entries_of_the_release_s_declared_lists(tmp_path):
    """An offence title or a sentence that is also somebody's surname (at millions of records a
    typo of Carson is Arson, and some are named Fine) is public reference data on the site: the
    entries of the release's declared lists (code lists, contracts' `allowed`) are ignored, and
    its other passages are still checked."""
    from datafirst.release.site import guard_passages

    (tmp_path / "dictionary.json").write_text(json.dumps({"tables": [
        {"name": "code_list__offences", "description": "offences", "unit": "one row per code",
         "code_list": {"name": "offences"},
         "columns": [{"name": "title", "declared": {"kind": "code", "values": ["Arson", "Theft"]}}]},
        {"name": "cases", "description": "seen by Walker", "unit": "one row per case",
         "columns": [{"name": "sentence", "declared": {"kind": "code", "values": ["fine", "custody"]}}]}]}))
    pages = {"tables/code_list__offences.html": "<td>Arson</td>", "tables/cases.html": "<p>seen by Walker</p>"}
    passages, ignore = guard_passages(pages, tmp_path)
    assert ("tables/code_list__offences.html", "Arson") in passages
    assert ("tables/cases.html", "seen by Walker") in passages
    assert {"Arson", "Theft", "fine", "custody"} <= ignore and not any("Walker" in v for v in ignore)
