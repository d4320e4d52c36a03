"""Benchmark: an incremental run against a full run, on the same new delivery, in one process.

From a world (about 1M source records by default) two deliveries are made: the earlier
lacks 1% of person records, holds 0.2% with a typo and 0.2% that the later one deletes.
A workspace runs the earlier delivery in full (after training, as production would have a
saved model), then `datafirst run` on the later delivery: incremental (only changed records
linked, ids carried over). A second workspace runs the later delivery in full with the same
model. Prints per-stage times, incremental over full (target, issue 6: at most 15%), peak
memory, the share of person ids kept, and whether the two give the same clusters.

Then the same for a delivery from one source only (magistrates' courts; the others sent
nothing new), as sources deliver on their own schedules: incremental against full again.

    python bench/bench_incremental.py [--world DIR | --people N] [--new 0.01] [--one-source | --no-one-source]

At 10M records (issue 24: incremental at most 25% of a full run, its link stage at most 10% of
the full link) `--no-one-source` leaves out the second comparison, which takes as long again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from datafirst.engine import Engine
from datafirst.link.train import train
from datafirst.release.hashing_key import SALT_FILE_ENV, make_demo_salt
from datafirst.release.signing import SIGNING_KEY_FILE_ENV, make_demo_signing_key
from datafirst.run import Runner, peak_memory_mb
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace
from datafirst.world.deliveries import write_deliveries
from worlds import add_world_arguments, world_for


def timed_run(ws: Workspace, **kwargs) -> dict:
    started = time.perf_counter()
    results = Runner(ws, **kwargs).run()
    return {"total_s": round(time.perf_counter() - started, 1), "stages_s": {r.stage: r.seconds for r in results},
            "detail": {r.stage: r.detail for r in results}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(parser)
    parser.add_argument("--new", type=float, default=0.01)
    parser.add_argument("--one-source", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare a delivery from one source only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
        root = Path(tmp)
        world = world_for(args, root)
        os.environ[SALT_FILE_ENV] = str(make_demo_salt(root / "bench.salt"))
        os.environ[SIGNING_KEY_FILE_ENV] = str(make_demo_signing_key(root / "bench-signing.key"))
        counts = write_deliveries(world, root / "earlier", root / "later", new=args.new, corrected=args.new / 5,
                                  deleted=args.new / 5, seed=1)
        shutil.copytree(root / "earlier", root / "extracts")
        ws = Workspace.init(root / "inc", root / "extracts")
        with Engine() as engine:
            ingest(ws, engine)
            standardise(ws, engine)
            started = time.perf_counter()  # training alone: a full run from scratch would add it
            train(ws, engine)
            train_s = time.perf_counter() - started
        first = timed_run(ws)
        if args.one_source:  # the earlier state, for the one-source delivery (its own extracts folder)
            shutil.copytree(ws.root, root / "one")
            shutil.copytree(root / "earlier", root / "extracts_one")
        shutil.rmtree(root / "extracts")
        shutil.copytree(root / "later", root / "extracts")
        inc = timed_run(ws)
        full_ws = Workspace.init(root / "full", root / "extracts")
        shutil.copytree(ws.root / "models", full_ws.root / "models")
        full = timed_run(full_ws, full_link=True)
        differ = {t: duckdb.connect().execute(f"""SELECT count(*) FROM read_parquet('{ws.zone("links")}/clusters.parquet') a
                 FULL JOIN read_parquet('{full_ws.zone("links")}/clusters.parquet') b USING (record_key)
                 WHERE a.person_id_{t} IS DISTINCT FROM b.person_id_{t}""").fetchall()[0][0]
                  for t in ("high", "medium", "low")}
        manifest = json.loads((ws.root / "releases" / "v0002" / "manifest.json").read_text())
        out = {
            "source_records": json.loads((world / "world.json").read_text())["records"], "delivery_changes": counts,
            "train_s": round(train_s, 1), "first_run": first, "incremental_run": inc, "full_run": full,
            "incremental_over_full": round(inc["total_s"] / full["total_s"], 3),
            "incremental_over_full_with_training": round(inc["total_s"] / (full["total_s"] + train_s), 3),
            "link_incremental_over_full": round(inc["stages_s"]["link"] / full["stages_s"]["link"], 3),
            "records_clustered_differently_from_full": differ,
            "person_ids_kept_share": {t: s["previous_ids_kept_share"]
                                      for t, s in manifest["person_ids"]["thresholds"].items()},
        }
        for name in ("incremental_run", "full_run"):
            r = out[name]
            print(f"{name:16} " + " ".join(f"{k} {v} s" for k, v in r["stages_s"].items()) + f"; total {r['total_s']} s")
        print(f"incremental / full run: {out['incremental_over_full']} (with training in the full run: "
              f"{out['incremental_over_full_with_training']}); link stage: {out['link_incremental_over_full']}; "
              f"clusters differing from full: {differ}; ids kept: {out['person_ids_kept_share']}", flush=True)
        if args.one_source:
            out["one_source"] = one_source(root, ws)
        out["peak_rss_mb"] = peak_memory_mb()
        print(f"peak {out['peak_rss_mb']:,} MB")
        print(json.dumps(out, indent=2))


def one_source(root: Path, ws: Workspace) -> dict:
    """The earlier state given magistrates' files from the later delivery (the other sources
    unchanged), run incrementally and in full."""
    # One source delivers: magistrates' files from the later delivery, the rest unchanged.
    shutil.rmtree(root / "extracts_one" / "magistrates")
    shutil.copytree(root / "later" / "magistrates", root / "extracts_one" / "magistrates")
    one = Workspace(root / "one")
    config = one.config_path.read_text(encoding="utf-8")
    one.config_path.write_text(config.replace(str((root / "extracts").resolve()),
                                              str((root / "extracts_one").resolve())), encoding="utf-8")
    assert one.extracts.resolve() == (root / "extracts_one").resolve()
    one_inc = timed_run(one)
    one_full_ws = Workspace.init(root / "one_full", root / "extracts_one")
    shutil.copytree(ws.root / "models", one_full_ws.root / "models")
    one_full = timed_run(one_full_ws, full_link=True)
    out = {"incremental_run": one_inc, "full_run": one_full,
           "incremental_over_full": round(one_inc["total_s"] / one_full["total_s"], 3)}
    for name in ("incremental_run", "full_run"):
        r = out[name]
        print(f"one source: {name:16} " + " ".join(f"{k} {v} s" for k, v in r["stages_s"].items())
              + f"; total {r['total_s']} s")
    print(f"one source delivering: incremental / full run: {out['incremental_over_full']}", flush=True)
    return out


if __name__ == "__main__":
    main()
