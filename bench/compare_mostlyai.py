"""Benchmark (issue 27): mostlyai's engine against a datafirst twin on the same person + event sample.

    python bench/compare_mostlyai.py [WORKSPACE] [--people N] [--minutes M] [--python PY] [--keep DIR]

WORKSPACE (default: the 1M world's, /work/scratch/w1m25/ws) holds a release and is only read.
In one run:
1. a sample of people (by a hash of their id, so the same every run) is exported from the newest
   release: the person table and each sampled person's events (person_journey), about 70,000
   rows in all for the default 15,000 people;
2. mostlyai's engine (Apache-2.0, torch; in its own venv, see bench/mostlyai_driver.py for how
   to make it) trains a flat model of the people and a sequential model of their events, and
   generates a synthetic sample of the same size; timed, with its peak memory;
3. a datafirst low-fidelity twin of the same people (`synthesise(..., train_people=...)`),
   timed, when datafirst.synth.generate is installed;
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
import resource
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
DEFAULT_WORKSPACE = Path("/work/scratch/w1m25/ws")
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


def run_mostlyai(python: Path, sample: Path, out: Path, minutes: float) -> dict:
    if not python.exists():
        raise SystemExit(f"{python} not found: make mostlyai's venv as bench/mostlyai_driver.py says")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([str(python), str(HERE / "mostlyai_driver.py"), str(sample), str(out), "--minutes", str(minutes)],
                   check=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    timing = json.loads((out / "timing.json").read_text())
    return {"seconds": seconds, "peak_rss_gb": max(peak, before) / 1024 ** 2, **timing}


def run_datafirst_low(workspace: Path, sample: Path, out: Path, seed: int = 1) -> dict | None:
    """A datafirst low twin fitted on the sampled people only (None when the generator is absent)."""
    try:
        from datafirst.synth.generate import synthesise

        from datafirst.engine import open_engine
        from datafirst.release.stage import published
        from datafirst.workspace import Workspace
    except ImportError:
        return None
    ws = Workspace(workspace)
    release = published(ws)[-1]
    people = pd.read_parquet(sample / "person.parquet", columns=["person_id"])
    ids = out / "train_people.parquet"
    out.mkdir(parents=True, exist_ok=True)
    people.rename(columns={"person_id": "person_id_medium"}).to_parquet(ids, index=False)
    total = duckdb.connect().execute(f"SELECT count(*) FROM '{release / 'tables' / 'person.parquet'}'").fetchone()[0]
    started = time.perf_counter()
    with open_engine(ws) as engine:
        twin = synthesise(ws, release, "low", seed, engine, out=out / "twin", train_people=ids,
                          people_fraction=len(people) / total)
    seconds = time.perf_counter() - started
    tables = Path(twin.path) / "tables"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT person_id_medium AS person_id, sex, year_of_birth, records,
                                 array_to_string(list_sort(sources), '+') AS sources, first_event, last_event
                          FROM '{tables / "person.parquet"}') TO '{out / "person.parquet"}' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT person_id_medium AS person_id, {", ".join(EVENT_COLUMNS)}
                          FROM '{tables / "person_journey.parquet"}') TO '{out / "events.parquet"}' (FORMAT parquet)""")
    return {"seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}


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


def _print(name: str, run: dict | None, figs: dict | None) -> None:
    print(f"\n== {name}")
    if run is None:
        print("  not run (datafirst.synth.generate is not installed in this checkout)")
        return
    print(f"  time {run['seconds']:.1f} s, peak RSS {run['peak_rss_gb']:.2f} GB"
          + "".join(f", {k} {v:.1f}" for k, v in run.items() if k.endswith("_s") and k != "total_s"))
    if figs is None:
        return
    print(f"  rows: {figs['rows']}")
    for table in ("person_columns", "event_columns"):
        print(f"  {table}: " + ", ".join(f"{c} {d['metric']} {d['value']:.3f}" for c, d in figs[table].items()))
    print(f"  events per person TVD {figs['events_per_person_tvd']:.3f}")
    for t in ("pmse_person", "pmse_events"):
        print(f"  {t}: ratio {figs[t]['ratio']:.2f} (pMSE {figs[t]['pmse']:.5f}, null {figs[t]['null_pmse']:.5f})")
    for sex, q in figs["reoffending_within_a_year_by_sex"].items():
        diff = "n/a" if q["relative_difference"] is None else f"{100 * q['relative_difference']:.1f}%"
        syn = "n/a" if q["synthetic"] is None else f"{q['synthetic']:.3f}"
        print(f"  second event within a year, sex {sex}: real {q['real']:.3f}, synthetic {syn} (diff {diff})")
    print(f"  synthetic people copying a real person's every value: {100 * figs['copied_people_share']:.1f}%")
    for rule, v in figs["violations"].items():
        print(f"  violations, {rule}: {v['violations']} of {v['rows']} ({100 * v['rate']:.2f}%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path, nargs="?", default=DEFAULT_WORKSPACE)
    parser.add_argument("--people", type=int, default=15_000, help="people in the sample (15,000: about 70k rows)")
    parser.add_argument("--minutes", type=float, default=5.0, help="mostlyai's training time cap per model")
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON, help="the Python of mostlyai's venv")
    parser.add_argument("--keep", type=Path, default=None, help="keep the samples and figures here")
    parser.add_argument("--skip-mostlyai", action="store_true", help="only the datafirst twin")
    args = parser.parse_args()
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
        print("\n== real sample: violations of the same rules")
        for rule, v in results["real_violations"].items():
            print(f"  {rule}: {v['violations']} of {v['rows']} ({100 * v['rate']:.2f}%)")
        for name, run in (("mostlyai", None if args.skip_mostlyai else
                           lambda out: run_mostlyai(args.python, sample, out, args.minutes)),
                          ("datafirst low", lambda out: run_datafirst_low(args.workspace, sample, out))):
            if run is None:
                continue
            out = scratch / name.replace(" ", "_")
            made = run(out)
            figs = figures(sample, out) if made is not None else None
            results[name] = {"run": made, "figures": figs}
            _print(name, made, figs)
        (scratch / "figures.json").write_text(json.dumps(results, indent=2, default=str))
        print(f"\nfigures: {scratch / 'figures.json'}")
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
