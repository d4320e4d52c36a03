"""A release's synthetic twin, written to its own folder beside the releases.

`synthesise` reads a verified release (and the workspace's contracts, for the derived tables'
SQL, as a project's package does) and writes `<ws>/synthetic/<version>-<fidelity>[-e<epsilon>]/`
in a temporary folder renamed into place once complete, read-only: `tables/<table>.parquet`
(every table of the release, same names, columns and types, each file's metadata
`synthetic=true`), `dictionary.json` (the release's, every description prefixed `SYNTHETIC: `,
the counts the twin's), `manifest.json`, `README.md`, the report (written by the caller's
`report` before the checksums) and `SHA256SUMS`. Nothing in it depends on the clock: the same
release, fidelity and seed give byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import __version__
from ..deliver import derived
from ..engine import Engine
from ..engine.sql import sql_string
from ..files import file_sha256, make_read_only, write_checksums
from ..release.chain import MANIFEST, anchor_file, misplaced, release_problems
from ..release.products import LOOKUP
from ..release.signing import SigningKeyError, public_key_files, trusted_public_keys
from ..release.site import small_count_of
from ..sources.contract import load_contracts
from ..workspace import Workspace, remove_tree
from .constraints import check, load_constraints
from .copies import remove_copies
from .generate import Generator, real_view, syn
from .dp import BudgetError
from .models import Fitter, SynthError, install_random, q
from .private import PrivateCounts
from .report import shown_count
from .structure import CASE_JOURNEYS, PERSON_ID_CHANGES, Structure, StructureError, read_structure

FIDELITIES = ("low", "mid")
SYNTHETIC = "synthetic"
SUMS = "SHA256SUMS"
PREFIX = "SYNTHETIC: "
FIT_ROWS = 50_000  # the most rows of a table a mid-fidelity tree is fitted on
DECLARATIONS = ("constraints.json", "research_queries.json")  # copied: they describe the schema, not people


@dataclass
class Twin:
    path: Path
    tables: dict[str, Path]
    rows: dict[str, int]


def twin_name(version: str, fidelity: str, epsilon: float | None) -> str:
    return f"{version}-{fidelity}" + (f"-e{epsilon:g}" if epsilon is not None else "")


def verified(ws: Workspace, release_dir: Path, public_keys: list[Path] | None) -> None:
    """Refuse a release that does not verify (its files, signature and chain), as `deliver` does."""
    anchor = anchor_file()
    try:
        problems = misplaced(ws.root, public_key_files(public_keys), anchor)
        problems = problems or release_problems(release_dir, trusted_public_keys(public_keys), anchor)
    except SigningKeyError as exc:
        raise SynthError(str(exc)) from None
    if problems:
        raise SynthError(f"release {release_dir.name} does not verify, so no twin is made of it:\n  "
                         + "\n  ".join(problems) + "\n`datafirst verify` lists every problem.")


def synthesise(ws: Workspace, release_dir: Path, fidelity: str, seed: int, engine: Engine, *,
               epsilon: float | None = None, out: Path | None = None, fit_rows: int | None = None,
               train_people: Path | None = None, public_keys: list[Path] | None = None,
               report: Callable[[Path, dict[str, Path]], None] | None = None,
               progress: Callable[[str], None] | None = None) -> Twin:
    """Make the twin of `release_dir` (see the module's docstring). `train_people`: a Parquet file
    of `person_id_medium` values; the models are then fitted on those people's rows only, and the
    twin has as many people (a holdout evaluation's twin of its training half). `out`: the folder
    the twin's folder goes in (default `<ws>/synthetic`). `report(folder, tables)` writes the
    utility and privacy report into the twin before its checksums."""
    if fidelity not in FIDELITIES:
        raise SynthError(f"fidelity {fidelity!r}: choose one of {', '.join(FIDELITIES)}")
    if epsilon is not None and fidelity != "low":
        raise SynthError(f"--epsilon applies to the low fidelity only (the {fidelity} fidelity's models are fitted on "
                         "real rows and have no differential privacy): use --fidelity low --epsilon E, or "
                         f"--fidelity {fidelity} without --epsilon (docs/synth.md, Differential privacy)")
    release_dir = Path(release_dir).resolve()
    if not (release_dir / MANIFEST).is_file():
        raise SynthError(f"{release_dir} is not a release (no {MANIFEST}); give a release folder such as "
                         f"{ws.root / 'releases' / 'v0001'}")
    if train_people is not None and not Path(train_people).is_file():
        raise SynthError(f"train_people: no file {train_people} (a Parquet file with a person_id_medium column)")
    verified(ws, release_dir, public_keys)
    try:
        structure = read_structure(release_dir)
    except StructureError as exc:
        raise SynthError(str(exc)) from None
    manifest = json.loads((release_dir / MANIFEST).read_text(encoding="utf-8"))
    folder = Path(out or ws.root / SYNTHETIC)
    name = twin_name(release_dir.name, fidelity, epsilon)
    private = None
    if epsilon is not None:
        private = _private(ws, engine, structure, epsilon, seed, name, train_people)
        structure = private.structure()
    final = folder / name
    if final.exists():
        raise SynthError(f"{final} exists already (twins are read-only once made): give another --out, or remove it "
                         f"first (chmod -R u+w {final} && rm -r {final})")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.partial-{os.getpid()}"
    remove_tree(tmp)
    (tmp / "tables").mkdir(parents=True)
    say = progress or (lambda _: None)
    fitter = Fitter(engine, fidelity, seed, small_count_of(release_dir, manifest), fit_rows or FIT_ROWS, epsilon,
                    private)
    try:
        install_random(engine, seed)
        if private is not None:
            private.people()
        gen = Generator(engine, structure, fitter, ws.config().link.journey, train_people)
        gen.real_views()
        say("people")
        gen.people()
        say("records")
        gen.tables()
        constraints = load_constraints(release_dir)
        kept = gen.keep_constraints(constraints)
        journeys = gen.case_journeys()
        gen.lookup()
        say("writing")
        rows = _write(engine, structure, gen, tmp, ws, journeys)
        dictionary = _dictionary(engine, release_dir, tmp, rows)
        (tmp / "dictionary.json").write_text(json.dumps(dictionary, indent=2), encoding="utf-8")
        for declared in DECLARATIONS:
            if (release_dir / declared).is_file():
                shutil.copyfile(release_dir / declared, tmp / declared)
        held = check(engine, {t: tmp / "tables" / f"{t}.parquet" for t in rows}, constraints)
        made = _manifest(release_dir, fidelity, seed, epsilon, fitter, train_people, rows, gen.repaired, kept, held)
        if private is not None:
            made["differential_privacy"] = private.manifest()
        (tmp / MANIFEST).write_text(json.dumps(made, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(_readme(release_dir.name, name, fidelity, seed, epsilon, rows), encoding="utf-8")
        tables = {t: final / "tables" / f"{t}.parquet" for t in rows}
        if report is not None:
            report(tmp, {t: tmp / "tables" / f"{t}.parquet" for t in rows})
        write_checksums(tmp, SUMS)
        make_read_only(tmp)
        os.rename(tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise
    finally:
        _drop(engine)
        derived.drop_inputs(engine)
    return Twin(final, tables, rows)


def _private(ws: Workspace, engine: Engine, structure: Structure, epsilon: float, seed: int, name: str,
             train_people: Path | None) -> PrivateCounts:
    """The noisy counts of a low twin with --epsilon, kept under `<ws>/synthetic/.dp/<twin>/` (an
    evaluation twin's, fitted on some people, under a name of those people) so a rerun spends nothing."""
    kept = name if train_people is None else f"{name}-people-{file_sha256(Path(train_people))[:16]}"
    try:
        return PrivateCounts(engine, structure, epsilon, seed, ws.root / SYNTHETIC / ".dp" / kept)
    except BudgetError as exc:
        raise SynthError(f"--epsilon: {exc}") from None


def _drop(engine: Engine) -> None:
    """The twin's working tables and views (a session's engine may go on to other work)."""
    for name, kind in engine.execute("SELECT table_name, table_type FROM information_schema.tables "
                                     "WHERE table_name LIKE 'synth\\_%' ESCAPE '\\'"):
        engine.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} IF EXISTS {q(name)}")


def _copy(engine: Engine, relation: str, types: list[tuple[str, str]], keys: list[str], path: Path) -> int:
    """Write a twin table: the release's columns and types, in key order, marked synthetic."""
    select = ", ".join(f"CAST({q(c)} AS {t}) AS {q(c)}" for c, t in types)
    order = [q(k) for k in keys] + [q(c) for c, t in types if c not in keys and not t.endswith("[]")]
    engine.execute(f"COPY (SELECT {select} FROM {relation} ORDER BY {', '.join(order) or 'ALL'}) TO {sql_string(path)} "
                   "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, KV_METADATA {synthetic: 'true'})")
    return int(engine.scalar(f"SELECT count(*) FROM read_parquet({sql_string(path)})"))


def _write(engine: Engine, s: Structure, gen: Generator, tmp: Path, ws: Workspace, journeys: bool) -> dict[str, int]:
    """Every table of the twin into `tmp/tables`: code lists as released, the generated tables,
    then the derived ones made again from them with the release's own SQL (`deliver.derived`);
    then no row of a table of people or records left copying a record the release holds once
    (`copies`)."""
    rows: dict[str, int] = {}
    tables = tmp / "tables"

    def types(name: str) -> list[tuple[str, str]]:
        return [(c.name, c.type) for c in s.tables[name].columns]

    for t in s.tables.values():
        path = tables / f"{t.name}.parquet"
        if t.role == "code_list":
            rows[t.name] = _copy(engine, f"read_parquet({sql_string(t.path)})", types(t.name), t.keys, path)
        elif t.role != "derived" or t.name == LOOKUP or (t.name == CASE_JOURNEYS and journeys):
            rows[t.name] = _copy(engine, syn(t.name), types(t.name), t.keys, path)
        elif t.name in (PERSON_ID_CHANGES, CASE_JOURNEYS):  # one series of ids; no journeys to link
            rows[t.name] = _copy(engine, f"(SELECT * FROM {real_view(t.name)} WHERE false)", types(t.name), t.keys,
                                 path)
    contracts = load_contracts(ws.contracts)
    columns = {n: set(t.names) for n, t in s.tables.items()}
    sources = sorted({c.source for c in contracts})
    made = derived.derived_sql(contracts, tmp, sources, s.tables[LOOKUP].names)
    try:
        derived.build_inputs(engine, tmp, columns, contracts, sources)
    except derived.DerivedError as exc:
        raise SynthError(str(exc)) from None
    staged = tmp / ".derived"
    staged.mkdir()
    for name, sql in made.items():
        if name in s.tables:
            engine.to_parquet(sql, staged / f"{name}.parquet")
    for name in made:
        if name in s.tables:
            rows[name] = _copy(engine, f"read_parquet({sql_string(staged / f'{name}.parquet')})", types(name),
                               s.tables[name].keys, tables / f"{name}.parquet")
    remove_tree(staged)
    # Under --epsilon nothing but the noisy counts is read: the repair compares with the release's
    # rows, so it would spend what the budget does not cover; it is left out (docs/synth.md).
    gen.repaired = None if gen.fitter.private is not None else remove_copies(
        engine, s, {n: tables / f"{n}.parquet" for n in rows}, gen.free,
        lambda name, relation: _copy(engine, relation, types(name), s.tables[name].keys, tables / f"{name}.parquet"),
        gen.fitter.small_count)
    return {n: rows[n] for n in s.tables if n in rows}


def _dictionary(engine: Engine, release_dir: Path, tmp: Path, rows: dict[str, int]) -> dict:
    """The release's dictionary, marked synthetic, with the twin's counts and its joins checked
    on the twin's tables."""
    d = json.loads((release_dir / "dictionary.json").read_text(encoding="utf-8"))
    d = {"synthetic": True, **d}
    paths = {t["name"]: tmp / "tables" / f"{t['name']}.parquet" for t in d["tables"]}
    for t in d["tables"]:
        t["description"] = PREFIX + t.get("description", "")
        t["rows"] = rows[t["name"]]
        rel = f"read_parquet({sql_string(paths[t['name']])})"
        plain = [c["name"] for c in t["columns"]]
        if plain:
            figures = engine.execute("SELECT " + ", ".join(
                f"count({q(c)}), count(DISTINCT {q(c)})" for c in plain) + f" FROM {rel}")[0]
        for i, c in enumerate(t["columns"]):
            c["description"] = PREFIX + c.get("description", "")
            present, distinct = figures[2 * i], figures[2 * i + 1]
            c["missing_share"] = round(1 - present / t["rows"], 4) if t["rows"] else 0.0
            c["distinct_values"] = int(distinct)
            c.pop("suppressed_values", None)
        for j in t.get("joins", []):
            j.pop("orphans", None)
            j.pop("note", None)
            if j["cardinality"] == "many-to-many":
                j["note"] = f"{j['references']['columns'][0]} is not unique in {j['references']['table']}"
                continue
            col, ref, refcol = j["columns"][0], j["references"]["table"], j["references"]["columns"][0]
            orphans = int(engine.scalar(
                f"SELECT count(*) FROM {rel} a WHERE a.{q(col)} IS NOT NULL AND a.{q(col)} NOT IN "
                f"(SELECT {q(refcol)} FROM read_parquet({sql_string(paths[ref])}) WHERE {q(refcol)} IS NOT NULL)"))
            j["foreign_key"] = orphans == 0
            if orphans:
                j.update(orphans=orphans, note=f"{orphans:,} rows hold a {col} that {ref} lacks")
    return d


def _manifest(release_dir: Path, fidelity: str, seed: int, epsilon: float | None, fitter: Fitter,
              train_people: Path | None, rows: dict[str, int], repaired: dict | None, kept: list[dict],
              held: list[dict]) -> dict:
    small = fitter.small_count
    # The declared constraints: the rows each drew again (`constraints.hold`), and the twin's
    # violations of each as written (none expected).
    constraints = {"rows_redrawn": {c["name"]: shown_count(c["rows_redrawn"], small) for c in kept},
                   "violations": {c["name"]: c["violations"] for c in held}}
    # What the repair of copies took (`copies`), counts below the small-count limit shown as `<N`.
    copies = "not run: under --epsilon the twin reads nothing but its noisy counts" if repaired is None else {
        "units_shifted": shown_count(repaired["units_shifted"], small), "shift_rounds": repaired["shift_rounds"],
        "cells_redrawn": shown_count(repaired["cells_redrawn"], small),
        "cells_suppressed": shown_count(repaired["cells_suppressed"], small),
        "replicated_uniques_left": {t: shown_count(n, small) for t, n in repaired["replicated_uniques_left"].items()}}
    return {"synthetic": True, "fidelity": fidelity, "seed": seed, "epsilon": epsilon, "copies_repaired": copies,
            "constraints": constraints,
            "source_release": {"version": release_dir.name, "manifest_sha256": file_sha256(release_dir / MANIFEST)},
            "fitted_on": ({"people_file_sha256": file_sha256(Path(train_people))} if train_people else "every person"),
            "fit_rows": fitter.fit_rows if fidelity == "mid" else None, "small_count": fitter.small_count,
            "datafirst": __version__, "tables": rows}


def _readme(version: str, name: str, fidelity: str, seed: int, epsilon: float | None, rows: dict[str, int]) -> str:
    how = {"low": "each column drawn from its own distribution in the release (its values and how often each is "
                  "missing), independently of the others, on the release's key structure",
           "mid": "each person's records drawn in turn, each column given the person and the columns drawn before it "
                  "(decision-tree models fitted on the release), so patterns across columns and tables are roughly "
                  "those of the release"}[fidelity]
    lines = [f"SYNTHETIC DATA: twin {name} of release {version}", "",
             ("Every row of every table here is SYNTHETIC. No row is a real person's, no id is a real id or hash, "
              "and nothing here may be used as evidence about anyone. It is for writing and testing code before "
              "access to the real release: the same tables, columns, types, code lists and joins."), "",
             f"Fidelity **{fidelity}**: {how}. Seed {seed}"
             + (f"; epsilon {epsilon:g}" if epsilon is not None else "") + ". See docs/synth.md.", "",
             "| table | rows |", "|---|---:|"]
    lines += [f"| {t} | {n:,} |" for t, n in rows.items()]
    lines += ["", "- tables/<table>.parquet: the tables (each file's metadata says synthetic=true)",
              "- dictionary.json: every table and column, each description starting SYNTHETIC",
              "- manifest.json: the release it is a twin of, the fidelity, the seed and the row counts",
              f"- {SUMS}: the SHA-256 of every file (`sha256sum -c {SUMS}`)", ""]
    return "\n".join(lines)


