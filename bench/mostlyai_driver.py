"""Train mostlyai's engine on a person + event sample and write its synthetic sample.

    /work/venvs/mostlyai/bin/python bench/mostlyai_driver.py SAMPLE_DIR OUT_DIR [--minutes M] [--seed S]

Run by bench/compare_mostlyai.py with the Python of mostlyai's own venv (mostlyai-engine brings
torch and its own pins of pandas and numpy, which must not enter datafirst's environment):

    python3 -m venv /work/venvs/mostlyai
    /work/venvs/mostlyai/bin/pip install mostlyai-engine==2.7.3
    # PyPI's torchvision and torchaudio are built against CUDA torch and break the import of
    # transformers under the CPU torch wheel; mostlyai's tabular models use neither.
    /work/venvs/mostlyai/bin/pip uninstall -y torchvision torchaudio

SAMPLE_DIR holds person.parquet (one row per person, key person_id) and events.parquet (the
person's events, context key person_id). The engine's usual two-table recipe: a flat model of
the people, then a sequential model of each person's events given the person; the synthetic
people are generated first and their events generated from them. OUT_DIR gets person.parquet,
events.parquet and timing.json (seconds to train and to generate, each model).
This file imports only pyarrow and mostlyai, never datafirst.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
from mostlyai.engine import TabularARGN


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=5.0, help="training time cap per model (minutes)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # Dates as datetime64, not Python date objects: mostlyai takes an object column for a category,
    # and would learn each date as a label (rare ones replaced by `_RARE_`).
    people = pq.read_table(args.sample / "person.parquet").to_pandas(date_as_object=False)
    events = pq.read_table(args.sample / "events.parquet").to_pandas(date_as_object=False)
    args.out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}

    started = time.perf_counter()
    person_model = TabularARGN(tgt_primary_key="person_id", max_training_time=args.minutes, device="cpu",
                               random_state=args.seed, workspace_dir=args.out / "person_model")
    person_model.fit(people)
    timing["person_train_s"] = time.perf_counter() - started
    started = time.perf_counter()
    synthetic_people = person_model.sample(n_samples=len(people))
    timing["person_generate_s"] = time.perf_counter() - started

    started = time.perf_counter()
    event_model = TabularARGN(tgt_context_key="person_id", ctx_data=people, ctx_primary_key="person_id",
                              max_training_time=args.minutes, device="cpu", random_state=args.seed,
                              workspace_dir=args.out / "event_model")
    event_model.fit(events)
    timing["events_train_s"] = time.perf_counter() - started
    started = time.perf_counter()
    synthetic_events = event_model.sample(ctx_data=synthetic_people)
    timing["events_generate_s"] = time.perf_counter() - started

    synthetic_people.to_parquet(args.out / "person.parquet", index=False)
    synthetic_events.to_parquet(args.out / "events.parquet", index=False)
    timing["total_s"] = sum(timing.values())
    (args.out / "timing.json").write_text(json.dumps(timing, indent=2))
    print(json.dumps(timing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
