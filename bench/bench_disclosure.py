"""Benchmark: disclosure risk of a release as it is, and under the default research template
(issue 26: k >= 5 on the declared quasi-identifiers with at most 2% of records suppressed, and the
attack's unique-and-correct share under 5%). Prints the before-and-after table and the times.

    DATAFIRST_SALT_FILE=KEY python bench/bench_disclosure.py WORKSPACE [--release vNNNN]

EVALUATION TOOL: the attack reads the workspace's raw extracts (identifiable records; the folder
its datafirst.yaml `extracts` names) and the release salt; run it on the data owner's side only.

The package is staged here, as H1's `datafirst deliver` will: the template fitted to the release
(`templates.fit_template`), its treatments applied (`risk.treated_select`), every hashed id
re-keyed with a throwaway project key (`attack.project_rekey`), then `risk.assess` (local
suppression). The attack then runs on every table of a source whose extract is delimited.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path

from datafirst.deliver.attack import attack, forget_rekey, install_rekey
from datafirst.deliver.risk import _q, assess, measure, treated_select
from datafirst.deliver.templates import fit_template, research_template
from datafirst.engine import Engine
from datafirst.release.hashing_key import load_salt
from datafirst.sources.contract import load_contracts
from datafirst.workspace import Workspace


def _stage(engine: Engine, release: Path, project, key: str, out: Path) -> dict[str, Path]:
    """Each table of the project from the release: treated, its hashed ids re-keyed."""
    dictionary = {t["name"]: t for t in json.loads((release / "dictionary.json").read_text())["tables"]}
    install_rekey(engine, key)
    staged = {}
    for name, treatments in project.tables.items():
        columns = [c["name"] for c in dictionary[name]["columns"]]
        hashed = {c["name"] for c in dictionary[name]["columns"] if c.get("declared", {}).get("kind") == "hashed_id"}
        select = treated_select(columns, treatments)
        kept = [c for c in columns if treatments.get(c, "keep") != "drop"]
        rekeyed = ", ".join(f"project_rekey({_q(c)}) AS {_q(c)}" if c in hashed else _q(c) for c in kept)
        staged[name] = out / f"{name}.parquet"
        engine.to_parquet(f"SELECT {rekeyed} FROM (SELECT {select} FROM {engine.parquet(release / 'tables' / f'{name}.parquet')})",
                          staged[name])
    forget_rekey(engine)
    return staged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--release", help="the release folder's name (default: the latest)")
    args = parser.parse_args()
    ws = Workspace(args.workspace)
    releases = sorted(p for p in (args.workspace / "releases").glob("v*") if p.is_dir())
    release = args.workspace / "releases" / args.release if args.release else releases[-1]
    salt = load_salt()
    engine = Engine(memory_limit="4GB")
    print(f"release {release}; EVALUATION TOOL: the attack reads the raw extracts in {ws.extracts}")

    t0 = time.perf_counter()
    template, changes = fit_template(engine, release, research_template(release, "research"))
    t_fit = time.perf_counter() - t0
    print(f"\nresearch template fitted in {t_fit:.1f} s; beyond its first cut:")
    for change in changes:
        print("  " + change)

    d = template.disclosure
    work = Path(tempfile.mkdtemp(prefix="bench-disclosure-"))
    t0 = time.perf_counter()
    project_key = secrets.token_hex(32)  # throwaway: the package's ids join to nothing else
    staged = _stage(engine, release, template, project_key, work / "staged")
    t_stage = time.perf_counter() - t0
    (work / "suppressed").mkdir()
    t0 = time.perf_counter()
    assessment = assess(engine, staged, d, work / "suppressed")
    t_assess = time.perf_counter() - t0

    print(f"\nk-anonymity over the template's quasi-identifiers (k={d.k}, at most "
          f"{d.max_suppressed_share:.0%} suppressed); before = the release's own values")
    head = f"{'table':26} {'QIs':44} {'before: min k':>13} {'unique':>7} {'<5':>7} {'<10':>7} | " \
           f"{'after: min k':>12} {'unique':>7} {'<5':>6} {'suppr.':>7} pass"
    print(head)
    print("-" * len(head))
    for name, entry in assessment.report["tables"].items():
        original = template.disclosure.quasi_identifiers.get(name, entry["quasi_identifiers"])
        b = measure(engine, engine.parquet(release / "tables" / f"{name}.parquet"), [_q(c) for c in original], [], d.k)
        a = entry.get("after", entry["before"])
        print(f"{name:26} {', '.join(original)[:44]:44} {b.min_k:>13} {b.unique_share:>7.2%} {b.under_5_share:>7.2%} "
              f"{b.under_10_share:>7.2%} | {a['min_k']:>12} {a['unique_share']:>7.2%} {a['under_5_share']:>6.2%} "
              f"{entry['suppressed_share']:>7.2%} {'yes' if entry['passes'] else 'NO'}")
    print(f"package: {'PASSES' if assessment.passed else 'FAILS'}" + "".join("\n  " + p for p in assessment.problems))

    print("\nattack: raw extract rows matched to exactly one row, and to the right one")
    print(f"{'table':26} {'rows':>8} | {'release: unique':>15} {'correct':>8} | {'package: unique':>15} {'correct':>8}"
          f"  matched on (package)")
    t_attack = 0.0
    for contract in load_contracts(ws.contracts):
        for table, spec in contract.tables.items():
            name = contract.table_key(table)
            if spec.format != "csv" or name not in assessment.tables:
                continue
            if not set(spec.columns) & set(template.tables[name]):
                continue  # the table delivers none of the extract's content columns: nothing to match on
            t0 = time.perf_counter()
            before = attack(engine, contract, table, ws.extracts, release / "tables" / f"{name}.parquet", salt)
            after = attack(engine, contract, table, ws.extracts, assessment.tables[name], salt,
                           treatments=template.tables[name], project_key=project_key)
            t_attack += time.perf_counter() - t0
            print(f"{name:26} {before['raw_rows']:>8} | {before['unique_share']:>15.2%} "
                  f"{before['unique_and_correct_share']:>8.2%} | {after['unique_share']:>15.2%} "
                  f"{after['unique_and_correct_share'] or 0:>8.2%}  {', '.join(after['matched_on'])}")
    print(f"\ntimes: template fit {t_fit:.1f} s, staging {t_stage:.1f} s, risk assessment {t_assess:.1f} s, "
          f"attacks {t_attack:.1f} s")


if __name__ == "__main__":
    main()
