"""Benchmark (issue 27): mostlyai's engine against a datafirst twin on the same person + event sample.

    python bench/compare_mostlyai.py [WORKSPACE] [--people N] [--minutes M] [--python PY] [--keep DIR]

WORKSPACE (default: the 1M world's, /work/scratch/w1m27/ws) holds a release and is only read
(datafirst's engine spills to its `.scratch`; give a copy of it where that must not be written).
In one run:
1. a sample of people (by a hash of their id, so the same every run) is exported from the newest
   release: the person table and each sampled person's events (person_journey), about 70,000
   rows in all for the default 15,000 people;
2. mostlyai's engine (Apache-2.0, torch; in its own venv, see bench/mostlyai_driver.py for how
   to make it) trains a flat model of the people and a sequential model of their events, and
   generates a synthetic sample of the same size; timed, with its peak memory;
3. datafirst's twins of the same people, mid fidelity and low (`synth.stage.synthesise(...,
   train_people=...)`: every table of the release made for the sampled people, of which the
   person table and the person journey are compared), each timed in a child process of its own
   (so each peak RSS is its own, as mostlyai's is);
4. for each synthetic sample against the real one, the same figures: per-column distances
   (total variation for categories, Kolmogorov-Smirnov for numbers and dates), events per
   person, a CART pMSE ratio (synthpop's S_pMSE: pMSE over its mean under permuted labels) for
   the people and for the events with their person's sex and year of birth, a research query
   (share of people with a second event within a year of their first, by sex), the share of
   synthetic people whose every non-key value copies a real person, and violations of the
   logic of the data (events before the birth year, event order against dates, a person's
   summary against their events, source/table/event-type combinations that never occur).

Everything runs on a sample of 70,000 rows, so pandas and scikit-learn on the whole sample
are bounded; nothing here is the pipeline's data plane.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_WORKSPACE = Path("/work/scratch/w1m27/ws")
DEFAULT_PYTHON = Path("/work/venvs/mostlyai/bin/python")
PERSON_COLUMNS = ["sex", "year_of_birth", "records", "sources", "first_event", "last_event"]
EVENT_COLUMNS = ["event_date", "event_type", "source_dataset", "source_table", "event_sequence"]


def export_sample(release: Path, people: int, out: Path) -> dict[str, int]:
    """person.parquet and events.parquet of `people` people chosen by a hash of their id."""
    tables = release / "tables"
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"""CREATE TABLE chosen AS SELECT person_id_medium FROM read_parquet('{tables / "person.parquet"}')
                    ORDER BY md5(person_id_medium) LIMIT {int(people)}""")
    con.execute(f"""COPY (SELECT p.person_id_medium AS person_id, p.sex, p.year_of_birth, p.records,
                                 array_to_string(list_sort(p.sources), '+') AS sources, p.first_event, p.last_event
                          FROM read_parquet('{tables / "person.parquet"}') p JOIN chosen USING (person_id_medium)
                          ORDER BY person_id) TO '{out / "person.parquet"}' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT e.person_id_medium AS person_id, {", ".join("e." + c for c in EVENT_COLUMNS)}
                          FROM read_parquet('{tables / "person_journey.parquet"}') e JOIN chosen USING (person_id_medium)
                          ORDER BY person_id, event_sequence) TO '{out / "events.parquet"}' (FORMAT parquet)""")
    counts = {t: con.execute(f"SELECT count(*) FROM '{out / t}.parquet'").fetchone()[0] for t in ("person", "events")}
    con.close()
    return counts


def _in_child(command: list[str]) -> tuple[float, float]:
    """Run `command`; its wall time and its own peak RSS in GB (the kernel's accounting of that child)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed (exit {os.waitstatus_to_exitcode(status)})")
    return time.perf_counter() - started, usage.ru_maxrss / 1024 ** 2  # KiB on Linux


def run_mostlyai(python: Path, sample: Path, out: Path, minutes: float) -> dict:
    if not python.exists():
        raise SystemExit(f"{python} not found: make mostlyai's venv as bench/mostlyai_driver.py says")
    seconds, peak = _in_child([str(python), str(HERE / "mostlyai_driver.py"), str(sample), str(out),
                               "--minutes", str(minutes)])
    timing = json.loads((out / "timing.json").read_text())
    return {"seconds": seconds, "peak_rss_gb": peak, **timing}


def run_datafirst(workspace: Path, sample: Path, out: Path, fidelity: str, seed: int) -> dict:
    """datafirst's twin of the sampled people (`fidelity`), made in a child process of its own."""
    out.mkdir(parents=True, exist_ok=True)
    seconds, peak = _in_child([sys.executable, __file__, str(workspace), "--datafirst-child", fidelity,
                               "--sample", str(sample), "--child-out", str(out), "--seed", str(seed)])
    made = json.loads((out / "made.json").read_text())
    return {"seconds": seconds, "peak_rss_gb": peak, "synthesise_s": made["seconds"]}


def make_datafirst_twin(workspace: Path, sample: Path, out: Path, fidelity: str, seed: int) -> None:
    """In the child process: the twin of the sample's people from the workspace's newest release
    (its models fitted on those people's rows only, as many people), written in the sample's form."""
    from datafirst.engine import open_engine
    from datafirst.release.stage import published
    from datafirst.synth.stage import synthesise
    from datafirst.workspace import Workspace

    ws = Workspace(workspace)
    release = published(ws)[-1]
    ids = out / "train_people.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT person_id AS person_id_medium FROM '{sample / 'person.parquet'}') TO '{ids}' "
                "(FORMAT parquet)")
    started = time.perf_counter()
    with open_engine(ws) as engine:
        twin = synthesise(ws, release, fidelity, seed, engine, out=out / "twin", train_people=ids)
    seconds = time.perf_counter() - started
    tables = Path(twin.path) / "tables"
    con.execute(f"""COPY (SELECT person_id_medium AS person_id, sex, year_of_birth, records,
                                 array_to_string(list_sort(sources), '+') AS sources, first_event, last_event
                          FROM '{tables / "person.parquet"}' ORDER BY person_id) TO '{out / "person.parquet"}' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT person_id_medium AS person_id, {", ".join(EVENT_COLUMNS)}
                          FROM '{tables / "person_journey.parquet"}' ORDER BY person_id, event_sequence)
                    TO '{out / "events.parquet"}' (FORMAT parquet)""")
    (out / "made.json").write_text(json.dumps({"seconds": seconds}))


# --- the figures, the same for every synthetic sample ----------------------------------------

def _load(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    people = pd.read_parquet(folder / "person.parquet")
    events = pd.read_parquet(folder / "events.parquet")
    for frame, cols in ((people, ["first_event", "last_event"]), (events, ["event_date"])):
        for c in cols:
            frame[c] = pd.to_datetime(frame[c], errors="coerce")
    for frame, cols in ((people, ["year_of_birth", "records"]), (events, ["event_sequence"])):
        for c in cols:
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    people["person_id"] = people["person_id"].astype(str)
    events["person_id"] = events["person_id"].astype(str)
    return people, events


def _numeric(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        return (series - pd.Timestamp("1970-01-01")).dt.days.astype(float)
    return pd.to_numeric(series, errors="coerce").astype(float)


def tvd(real: pd.Series, synthetic: pd.Series) -> float:
    p = real.astype(str).where(real.notna(), "<NA>").value_counts(normalize=True)
    q = synthetic.astype(str).where(synthetic.notna(), "<NA>").value_counts(normalize=True)
    return float(0.5 * p.sub(q, fill_value=0).abs().sum())


def ks(real: pd.Series, synthetic: pd.Series) -> float:
    a, b = np.sort(_numeric(real).dropna().to_numpy()), np.sort(_numeric(synthetic).dropna().to_numpy())
    if not len(a) or not len(b):
        return 1.0
    grid = np.union1d(a, b)
    return float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))))


def column_distances(real: pd.DataFrame, synthetic: pd.DataFrame, columns: list[str]) -> dict[str, dict]:
    out = {}
    for c in columns:
        numeric = pd.api.types.is_numeric_dtype(real[c]) or pd.api.types.is_datetime64_any_dtype(real[c])
        out[c] = {"metric": "KS" if numeric else "TVD",
                  "value": ks(real[c], synthetic[c]) if numeric else tvd(real[c], synthetic[c]),
                  "missing_real": float(real[c].isna().mean()), "missing_synthetic": float(synthetic[c].isna().mean())}
    return out


def _features(frame: pd.DataFrame, categories: dict[str, list]) -> np.ndarray:
    cols = []
    for c in frame.columns:
        if c in categories:
            cols.append(pd.Categorical(frame[c].astype(str).where(frame[c].notna(), "<NA>"),
                                       categories=categories[c]).codes.astype(float))
        else:
            values = _numeric(frame[c])
            cols.append(values.fillna(-1e9).to_numpy())
            cols.append(values.isna().to_numpy(float))
    return np.column_stack(cols)


def pmse_ratio(real: pd.DataFrame, synthetic: pd.DataFrame, *, permutations: int = 10, seed: int = 1,
               max_rows: int = 50_000) -> dict[str, float]:
    """synthpop's S_pMSE with a CART propensity model: pMSE of a tree telling real from
    synthetic rows, over its mean when the labels are permuted (1 is as good as it gets;
    synthpop calls up to about 10 useful)."""
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(seed)
    real = real.sample(min(len(real), max_rows), random_state=seed)
    synthetic = synthetic.sample(min(len(synthetic), max_rows), random_state=seed)
    both = pd.concat([real, synthetic], ignore_index=True)
    categories = {c: sorted(both[c].astype(str).where(both[c].notna(), "<NA>").unique())
                  for c in both.columns if not (pd.api.types.is_numeric_dtype(both[c])
                                                or pd.api.types.is_datetime64_any_dtype(both[c]))}
    x = _features(both, categories)
    y = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
    share = y.mean()

    def pmse(labels: np.ndarray) -> float:
        # Grown to leaves of 5 rows, unpruned (rpart's minbucket in synthpop's utility): pruned,
        # a tree on permuted labels is often the bare root, whose pMSE is 0, and the ratio is void.
        tree = DecisionTreeClassifier(min_samples_leaf=5, random_state=seed).fit(x, labels)
        return float(np.mean((tree.predict_proba(x)[:, 1] - share) ** 2))

    observed = pmse(y)
    null = float(np.mean([pmse(rng.permutation(y)) for _ in range(permutations)]))
    return {"pmse": observed, "null_pmse": null, "ratio": observed / null if null else float("inf")}


def reoffending_by_sex(people: pd.DataFrame, events: pd.DataFrame) -> dict[str, float]:
    """Share of people with a second event within 365 days of their first, by sex."""
    ordered = events.dropna(subset=["event_date"]).sort_values(["person_id", "event_date"])
    first = ordered.groupby("person_id")["event_date"].transform("min")
    again = ordered[(ordered["event_date"] > first) & (ordered["event_date"] <= first + pd.Timedelta(days=365))]
    flagged = people.assign(again=people["person_id"].isin(set(again["person_id"])))
    return {str(k): float(v) for k, v in flagged.groupby(flagged["sex"].fillna("<NA>"))["again"].mean().items()}


def violations(people: pd.DataFrame, events: pd.DataFrame, allowed: set[tuple]) -> dict[str, dict]:
    joined = events.merge(people[["person_id", "year_of_birth"]], on="person_id", how="left")
    before_birth = (joined["event_date"].dt.year < joined["year_of_birth"])
    ordered = events.sort_values(["person_id", "event_sequence"])
    earlier = ordered.groupby("person_id")["event_date"].shift()
    out_of_order = ordered["event_date"] < earlier
    summary = events.groupby("person_id").agg(n=("event_date", "size"), first=("event_date", "min"),
                                              last=("event_date", "max"))
    p = people.set_index("person_id").join(summary, how="left")
    inconsistent = (p["n"].fillna(0) != p["records"]) | (p["first"] != p["first_event"]) | (p["last"] != p["last_event"])
    combos = list(zip(events["source_dataset"], events["source_table"], events["event_type"]))
    unseen = pd.Series([c not in allowed for c in combos], dtype=bool)
    reversed_span = people["first_event"] > people["last_event"]
    rows = {"event before birth year": (before_birth, len(joined)),
            "event order against dates": (out_of_order, len(ordered)),
            "person summary disagrees with events": (inconsistent, len(p)),
            "source/table/event type never seen": (unseen, len(events)),
            "first event after last event": (reversed_span, len(people))}
    return {name: {"violations": int(mask.sum()), "rows": int(n), "rate": float(mask.sum() / n) if n else 0.0}
            for name, (mask, n) in rows.items()}


def copied_people(real: pd.DataFrame, synthetic: pd.DataFrame) -> float:
    key = PERSON_COLUMNS
    seen = set(map(tuple, real[key].astype(str).to_numpy()))
    return float(np.mean([tuple(r) in seen for r in synthetic[key].astype(str).to_numpy()])) if len(synthetic) else 0.0


def figures(real_dir: Path, synthetic_dir: Path) -> dict:
    rp, re_ = _load(real_dir)
    sp, se = _load(synthetic_dir)
    allowed = set(zip(re_["source_dataset"], re_["source_table"], re_["event_type"]))
    per_person = lambda e, p: e.groupby("person_id").size().reindex(p["person_id"], fill_value=0)
    with_person = lambda e, p: e.merge(p[["person_id", "sex", "year_of_birth"]], on="person_id", how="left")
    real_q, syn_q = reoffending_by_sex(rp, re_), reoffending_by_sex(sp, se)
    return {
        "rows": {"people": len(sp), "events": len(se)},
        "person_columns": column_distances(rp, sp, PERSON_COLUMNS),
        "event_columns": column_distances(re_, se, EVENT_COLUMNS),
        "events_per_person_tvd": tvd(per_person(re_, rp), per_person(se, sp)),
        "pmse_person": pmse_ratio(rp[PERSON_COLUMNS], sp[PERSON_COLUMNS]),
        "pmse_events": pmse_ratio(with_person(re_, rp).drop(columns="person_id"),
                                  with_person(se, sp).drop(columns="person_id")),
        "reoffending_within_a_year_by_sex": {
            k: {"real": real_q[k], "synthetic": syn_q.get(k),
                "relative_difference": (abs(syn_q[k] - real_q[k]) / real_q[k]) if k in syn_q and real_q[k] else None}
            for k in real_q},
        "copied_people_share": copied_people(rp, sp),
        "violations": violations(sp, se, allowed),
    }


def _side_by_side(results: dict, names: list[str]) -> None:
    """Every figure as a row, one column per synthetic sample (and the real sample's where it has one)."""
    runs = {n: results[n] for n in names}
    rows: list[tuple[str, list[str]]] = [
        ("time (s)", [f"{r['run']['seconds']:.1f}" for r in runs.values()]),
        ("peak RSS (GB)", [f"{r['run']['peak_rss_gb']:.2f}" for r in runs.values()]),
        ("rows: people / events", [f"{r['figures']['rows']['people']:,} / {r['figures']['rows']['events']:,}"
                                   for r in runs.values()])]
    for part in ("pmse_person", "pmse_events"):
        rows.append((f"{part} ratio", [f"{r['figures'][part]['ratio']:.2f}" for r in runs.values()]))
    for table in ("person_columns", "event_columns"):
        for column, d in next(iter(runs.values()))["figures"][table].items():
            rows.append((f"{column} {d['metric']}", [f"{r['figures'][table][column]['value']:.3f}"
                                                     for r in runs.values()]))
    rows.append(("events per person TVD", [f"{r['figures']['events_per_person_tvd']:.3f}" for r in runs.values()]))
    for sex, q in next(iter(runs.values()))["figures"]["reoffending_within_a_year_by_sex"].items():
        cells = []
        for r in runs.values():
            got = r["figures"]["reoffending_within_a_year_by_sex"].get(sex) or {}
            diff = got.get("relative_difference")
            cells.append("n/a" if got.get("synthetic") is None else
                         f"{got['synthetic']:.3f} ({100 * diff:.1f}%)" if diff is not None else f"{got['synthetic']:.3f}")
        rows.append((f"second event within a year, sex {sex} (real {q['real']:.3f})", cells))
    rows.append(("people copying a real person (%)", [f"{100 * r['figures']['copied_people_share']:.2f}"
                                                        for r in runs.values()]))
    for rule, v in results["real_violations"].items():
        rows.append((f"violations: {rule} (real {v['violations']})",
                     [f"{r['figures']['violations'][rule]['violations']} ({100 * r['figures']['violations'][rule]['rate']:.2f}%)"
                      for r in runs.values()]))
    width = max(len(label) for label, _ in rows)
    cols = [max(len(n), *(len(c[k]) for _, c in rows)) for k, n in enumerate(names)]
    print("\n" + " " * width + "  " + "  ".join(n.rjust(w) for n, w in zip(names, cols)))
    for label, cells in rows:
        print(label.ljust(width) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, cols)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path, nargs="?", default=DEFAULT_WORKSPACE)
    parser.add_argument("--people", type=int, default=15_000, help="people in the sample (15,000: about 70k rows)")
    parser.add_argument("--minutes", type=float, default=5.0, help="mostlyai's training time cap per model")
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON, help="the Python of mostlyai's venv")
    parser.add_argument("--keep", type=Path, default=None, help="keep the samples and figures here")
    parser.add_argument("--skip-mostlyai", action="store_true", help="only datafirst's twins")
    parser.add_argument("--seed", type=int, default=1, help="datafirst's seed")
    parser.add_argument("--datafirst-child", choices=["low", "mid"], help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.datafirst_child:
        make_datafirst_twin(args.workspace, args.sample, args.child_out, args.datafirst_child, args.seed)
        return 0
    releases = sorted(p for p in (args.workspace / "releases").glob("v[0-9]*") if p.is_dir())
    if not releases:
        raise SystemExit(f"no release under {args.workspace / 'releases'}")
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bench-mostlyai-"))
    try:
        sample = scratch / "real"
        counts = export_sample(releases[-1], args.people, sample)
        print(f"sample of {releases[-1].name}: {counts['person']:,} people + {counts['events']:,} events "
              f"= {counts['person'] + counts['events']:,} rows")
        results: dict[str, dict] = {"sample": counts}
        real_p, real_e = _load(sample)
        allowed = set(zip(real_e["source_dataset"], real_e["source_table"], real_e["event_type"]))
        results["real_violations"] = violations(real_p, real_e, allowed)
        runs = {"datafirst mid": lambda out: run_datafirst(args.workspace, sample, out, "mid", args.seed),
                "datafirst low": lambda out: run_datafirst(args.workspace, sample, out, "low", args.seed)}
        if not args.skip_mostlyai:
            runs = {"mostlyai": lambda out: run_mostlyai(args.python, sample, out, args.minutes), **runs}
        for name, run in runs.items():
            out = scratch / name.replace(" ", "_")
            made = run(out)
            results[name] = {"run": made, "figures": figures(sample, out)}
            print(f"{name}: made in {made['seconds']:.1f} s, peak RSS {made['peak_rss_gb']:.2f} GB", flush=True)
        _side_by_side(results, list(runs))
        (scratch / "figures.json").write_text(json.dumps(results, indent=2, default=str))
        print(f"\nfigures: {scratch / 'figures.json'}")
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
