"""A twin with its report: the evaluation twin fitted on half the people, the release's declared
constraints and research queries on both sides, and `report.write_report`, guarded.

Distance to closest record needs real people the twin never saw. So before the twin itself, a
second twin is made from a training half of the release's people (a seeded hash of each person
id: the same seed, the same halves); each release table with a `person_id_medium` column is split
by those halves, and the report compares how close the twin is to the training half with how
close the held-out half is (metrics.distance_to_closest). The twin that is delivered is fitted on
every person, as before. The report passes the release's own privacy guard (release/privacy.py,
reading the workspace's identifiers zone, as the catalogue site does) before it is written.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

from ..engine import Engine
from ..engine.sql import sql_string
from ..release.chain import MANIFEST
from ..release.privacy import sensitive_value_sources
from ..release.site import small_count_of, text_guard
from ..sources.contract import load_contracts
from ..standardise.stage import IDENTIFIERS
from ..workspace import Workspace, remove_tree
from .constraints import check, load_constraints
from .models import SynthError
from .queries import load_queries, run_queries
from .report import write_report
from .stage import Twin, synthesise

PERSON_ID = "person_id_medium"
REPORT = "report"


def _release_tables(release_dir: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted((release_dir / "tables").glob("*.parquet"))}


def _halves(engine: Engine, release_dir: Path, seed: int, work: Path) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    """The training half's person ids (a Parquet file), and every release table holding person
    ids split into its training and held-out rows."""
    tables = _release_tables(release_dir)
    if "person" not in tables:
        raise SynthError(f"{release_dir} has no person table: the holdout evaluation splits the release by person")
    in_train = f"substr(md5({sql_string(str(seed))} || '|' || {PERSON_ID}), 1, 1) < '8'"
    people = work / "train_people.parquet"
    engine.to_parquet(f"SELECT {PERSON_ID} FROM read_parquet({sql_string(tables['person'])}) WHERE {in_train} "
                      f"ORDER BY {PERSON_ID}", people)
    train, holdout = {}, {}
    for name, path in tables.items():
        if PERSON_ID not in engine.columns(f"read_parquet({sql_string(path)})"):
            continue
        for side, keep, into in (("train", in_train, train), ("holdout", f"NOT ({in_train})", holdout)):
            into[name] = work / side / f"{name}.parquet"
            into[name].parent.mkdir(exist_ok=True)
            engine.to_parquet(f"SELECT * FROM read_parquet({sql_string(path)}) WHERE {PERSON_ID} IS NOT NULL AND "
                              f"{keep}", into[name])
    return people, train, holdout


def guard_of(ws: Workspace, engine: Engine) -> Callable:
    """The release's privacy guard over text, reading the workspace's identifiers zone."""
    if not ws.zone(IDENTIFIERS).is_dir() or not (ws.zone("links") / "clusters.parquet").is_file():
        raise SynthError(f"the workspace {ws.root} has no identifiers or links zone to guard the twin's report with: "
                         "give the workspace the release was made in (-w)")
    sensitive = sensitive_value_sources(ws.zone(IDENTIFIERS) / "*.parquet", ws.zone("content"),
                                        load_contracts(ws.contracts), ws.zone("links") / "clusters.parquet")
    return text_guard(engine, sensitive)


def twin_with_report(ws: Workspace, release_dir: Path, fidelity: str, seed: int, engine: Engine, *,
                     epsilon: float | None = None, out: Path | None = None, public_keys: list[Path] | None = None,
                     progress: Callable[[str], None] | None = None) -> Twin:
    """`synthesise`, with the report (report/report.json and report.html) written into the twin
    before its checksums: see the module's docstring."""
    release_dir = Path(release_dir).resolve()
    say = progress or (lambda _: None)
    guard = guard_of(ws, engine)
    work = Path(tempfile.mkdtemp(prefix=".synth-evaluation-", dir=ws.scratch if ws.scratch.is_dir() else None))
    try:
        people, train, holdout = _halves(engine, release_dir, seed, work)
        say("evaluation twin (half the people)")
        evaluation = synthesise(ws, release_dir, fidelity, seed, engine, epsilon=epsilon, out=work / "twin",
                                train_people=people, public_keys=public_keys)
        real = _release_tables(release_dir)
        small_count = small_count_of(release_dir, json.loads((release_dir / MANIFEST).read_text(encoding="utf-8")))
        constraints, queries = load_constraints(release_dir), load_queries(release_dir)

        def report(folder: Path, tables: dict[str, Path]) -> None:
            say("report")
            write_report(engine, real, tables, folder / REPORT, holdout=holdout, train=train,
                         holdout_twin=evaluation.tables,
                         constraints={"real": check(engine, real, constraints), "twin": check(engine, tables, constraints)},
                         queries={"real": run_queries(engine, real, queries), "twin": run_queries(engine, tables, queries),
                                  "descriptions": {q["name"]: q.get("description", "") for q in queries}},
                         small_count=small_count, guard=guard)

        return synthesise(ws, release_dir, fidelity, seed, engine, epsilon=epsilon, out=out, public_keys=public_keys,
                          report=report, progress=progress)
    finally:
        remove_tree(work)
