"""Benchmark (issue 26): a research project's package of every table of a release, against the
release stage's own build, with its disclosure risk and the attack, before and after.

    python bench/bench_deliver.py WORKSPACE --salt SALT_FILE --signing-key KEY_FILE [--out DIR]

WORKSPACE holds a release and is only read: it is copied to a scratch folder. There, in one
process and one engine:
1. the release stage runs once more (a full build: products, guard, dictionary, site, checksums,
   signature), timed;
2. the default research template is drafted from the newest release and fitted to it
   (`datafirst project template`), registered, approved by another person, given its key, and
   delivered with `deliver` (Parquet, CSV and .dta; coarsening, re-keying, the person tables made
   again, the disclosure step with local suppression), timed. Target: at most 2x the release.
3. k-anonymity over the template's quasi-identifiers, on the release's own values (before) and
   in the package (after, from its manifest). Target: k >= 5 with at most 2% suppressed.
4. EVALUATION TOOL: the attack reads the workspace's raw extracts (identifiable records) and the
   release salt: each delimited extract's rows matched to exactly one row of the release table
   (before) and of the package's table (after; re-keyed ids compared through the project key),
   and how many of those matches are right. Target: under 5% after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

from datafirst.deliver.attack import attack
from datafirst.deliver.package import deliver
from datafirst.deliver.project_keys import KEYS_DIR_ENV, load_project_key, new_project_key
from datafirst.deliver.projects import add_project, approve_project
from datafirst.deliver.risk import _q, measure
from datafirst.deliver.templates import fit_template, project_yaml, research_template
from datafirst.engine import open_engine
from datafirst.release.hashing_key import SALT_FILE_ENV, load_salt
from datafirst.release.signing import SIGNING_KEY_FILE_ENV
from datafirst.release.stage import published, release
from datafirst.sources.contract import load_contracts
from datafirst.workspace import Workspace

TIME_TARGET = 2.0
ATTACK_TARGET = 0.05


def _writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--salt", type=Path, required=True, help="the hashing key file the release was made with")
    parser.add_argument("--signing-key", type=Path, required=True, help="the release signing key file")
    parser.add_argument("--out", type=Path, default=None, help="where the package goes (default: scratch)")
    args = parser.parse_args()
    os.environ[SALT_FILE_ENV] = str(args.salt.resolve())
    os.environ[SIGNING_KEY_FILE_ENV] = str(args.signing_key.resolve())
    scratch = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    try:
        root = scratch / "ws"
        shutil.copytree(args.workspace, root, symlinks=True,
                        ignore=shutil.ignore_patterns(".datafirst.lock", "governance", "deliveries"))
        _writable(root)
        ws = Workspace(root)
        newest = published(ws)[-1]
        keys = scratch / "keys"
        keys.mkdir(mode=0o700)
        os.environ[KEYS_DIR_ENV] = str(keys)
        with open_engine(ws) as engine:
            started = time.perf_counter()
            made = release(ws, engine, new_series=False, only_if_changed=False)
            release_seconds = time.perf_counter() - started

            started = time.perf_counter()
            template, changes = fit_template(engine, newest, research_template(newest, "RESEARCH"))
            fit_seconds = time.perf_counter() - started
            project_file = scratch / "RESEARCH.yaml"
            project_file.write_text(project_yaml(template, changes), encoding="utf-8")
            add_project(ws.root, project_file, "requester")
            approve_project(ws.root, "RESEARCH", "approver")
            new_project_key(ws.root, "RESEARCH")

            started = time.perf_counter()
            package = deliver(ws, "RESEARCH", engine, by="bench", release=newest.name,
                              out=args.out or scratch / "out")
            deliver_seconds = time.perf_counter() - started
            manifest = json.loads((package.path / "manifest.json").read_text(encoding="utf-8"))
            report = manifest["disclosure"]

            rows = sum(package.tables.values())
            size = sum(f.stat().st_size for f in package.path.rglob("*") if f.is_file())
            ratio = deliver_seconds / release_seconds
            print(f"workspace {args.workspace} (copied to {root}); engine {ws.config().engine}")
            print(f"release stage (full build of {made.version}): {release_seconds:8.1f} s, "
                  f"{sum(made.tables.values()):,} rows in {len(made.tables)} tables")
            print(f"research template fitted to {newest.name}:  {fit_seconds:8.1f} s, {len(changes)} steps coarser "
                  "than the template")
            print(f"delivery of every table of {newest.name}:      {deliver_seconds:8.1f} s, {rows:,} rows in "
                  f"{len(package.tables)} tables, formats {', '.join(package.formats)}, {size / 1e6:,.0f} MB")
            print(f"ratio delivery / release: {ratio:.2f} (target at most {TIME_TARGET:.0f}): "
                  + ("PASS" if ratio <= TIME_TARGET else "FAIL"))

            k = report["k"]
            print(f"\nk-anonymity over the template's quasi-identifiers (k={k}, at most "
                  f"{report['max_suppressed_share']:.0%} suppressed); before = the release's own values")
            head = (f"{'table':26} {'before: min k':>13} {'unique':>7} {'<5':>7} | {'after: min k':>12} {'unique':>7} "
                    f"{'<5':>6} {'suppr.':>7} pass  quasi-identifiers (as delivered)")
            print(head)
            print("-" * len(head))
            for name, entry in report["tables"].items():
                before = measure(engine, engine.parquet(newest / "tables" / f"{name}.parquet"),
                                 [_q(c) for c in entry["quasi_identifiers"]], [], k)
                after = entry.get("after", entry["before"])
                print(f"{name:26} {before.min_k:>13} {before.unique_share:>7.2%} {before.under_5_share:>7.2%} | "
                      f"{after['min_k']:>12} {after['unique_share']:>7.2%} {after['under_5_share']:>6.2%} "
                      f"{entry['suppressed_share']:>7.2%} {'yes' if entry['passes'] else 'NO':4}  "
                      f"{', '.join(entry['quasi_identifiers'])}")
            worst = max((e["suppressed_share"] for e in report["tables"].values()), default=0.0)
            print(f"package passes: {report['passed']}; largest share suppressed in a table: {worst:.2%}")

            salt = load_salt()
            key = load_project_key(ws.root, "RESEARCH")
            print(f"\nEVALUATION TOOL: the attack reads the raw extracts in {ws.extracts}")
            print(f"{'table':26} {'rows':>8} | {'release: unique':>15} {'correct':>8} | {'package: unique':>15} "
                  f"{'correct':>8}  matched on (package)")
            attack_seconds, worst_after = 0.0, 0.0
            for contract in load_contracts(ws.contracts):
                for table, spec in contract.tables.items():
                    name = contract.table_key(table)
                    if spec.format != "csv" or name not in package.tables:
                        continue
                    if not set(spec.columns) & set(template.delivered_columns(name)):
                        continue  # the package holds none of the extract's content columns
                    started = time.perf_counter()
                    before = attack(engine, contract, table, ws.extracts, newest / "tables" / f"{name}.parquet", salt)
                    after = attack(engine, contract, table, ws.extracts, package.path / "tables" / f"{name}.parquet",
                                   salt, treatments=template.tables[name], project_key=key)
                    attack_seconds += time.perf_counter() - started
                    worst_after = max(worst_after, after["unique_and_correct_share"] or 0.0)
                    print(f"{name:26} {before['raw_rows']:>8} | {before['unique_share']:>15.2%} "
                          f"{before['unique_and_correct_share']:>8.2%} | {after['unique_share']:>15.2%} "
                          f"{after['unique_and_correct_share'] or 0:>8.2%}  {', '.join(after['matched_on'])}")
            print(f"attacks: {attack_seconds:.1f} s; largest unique-and-correct share after: {worst_after:.2%} "
                  f"(target under {ATTACK_TARGET:.0%}): " + ("PASS" if worst_after < ATTACK_TARGET else "FAIL"))
        passed = ratio <= TIME_TARGET and report["passed"] and worst <= report["max_suppressed_share"] \
            and worst_after < ATTACK_TARGET
        return 0 if passed else 1
    finally:
        if args.out is None:
            _writable(scratch)
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
