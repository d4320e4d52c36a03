"""Generate a synthetic justice world: raw extracts per source system, and the hidden truth.

The world streams through fixed-size chunks of people (each with its own seed derived
from the world seed), so memory stays flat whatever the size, and the same seed always
gives byte-identical files. The world is written to a temporary folder beside the target
and moved into place only when complete: a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..files import file_sha256
from .error_model import ErrorModel, default_error_model
from .events import civil_claims, criminal_journeys, family_cases
from .extracts import EXTRACTS, IdIssuer, SourceRenderer
from .population import People, make_people
from .reference import load_reference

GENERATOR_VERSION = "1"
CHUNK_PEOPLE = 25_000
MIN_PEOPLE = 50
MAX_PEOPLE = 50_000_000  # about 200 million source records: far past any real extract

TRUTH_RECORD_SCHEMA = pa.schema([
    ("source", pa.string()), ("table", pa.string()), ("record_id", pa.string()), ("file", pa.string()),
    ("row_number", pa.int64()), ("person_id", pa.int64()), ("defect", pa.string()), ("errors", pa.string()),
])
TRUTH_PEOPLE_SCHEMA = pa.schema([
    ("person_id", pa.int64()), ("forename", pa.string()), ("middle_names", pa.string()), ("surname", pa.string()),
    ("previous_surname", pa.string()), ("sex", pa.string()), ("date_of_birth", pa.date32()),
    ("ethnicity", pa.string()), ("name_origin", pa.string()), ("is_offender", pa.bool_()),
    ("pnc", pa.string()), ("household", pa.int64()),
])
TRUTH_JOURNEY_SCHEMA = pa.schema([("crown_case_number", pa.string()), ("magistrates_case_id", pa.string())])


class WorldError(Exception):
    """A request the generator cannot honour; the message says what to do."""


@dataclass
class WorldSummary:
    out: Path
    people: int
    seed: int
    files: dict[str, int]  # extract path -> data rows
    records: int  # rows across all extract files
    seconds: float


def check_request(out: Path, people: int, seed: int) -> None:
    """Refuse bad arguments before anything is written."""
    if not isinstance(people, int) or people < MIN_PEOPLE:
        raise WorldError(f"--people must be a whole number of at least {MIN_PEOPLE}, got {people}")
    if people > MAX_PEOPLE:
        raise WorldError(f"--people {people:,} is beyond what this generator supports ({MAX_PEOPLE:,}); "
                         "ask for fewer people")
    if not isinstance(seed, int) or seed < 0 or seed >= 2**32:
        raise WorldError(f"--seed must be a whole number from 0 to {2**32 - 1}, got {seed}")
    if out.exists():
        if not out.is_dir():
            raise WorldError(f"output path {out} exists and is not a folder; choose another --out")
        if any(out.iterdir()):
            raise WorldError(f"output folder {out} exists and is not empty; choose a new folder or empty it first")
    parent = out.parent if not out.exists() else out
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise WorldError(f"cannot write to {out}: {probe} is not writable; choose another --out")


class _Sinks:
    """Open extract files and truth writers of a world being written."""

    def __init__(self, root: Path):
        self.root = root
        self.handles = {}
        self.rows: dict[str, int] = {}
        for spec in EXTRACTS:
            path = root / "extracts" / spec.path
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "wb")
            if spec.bom:
                fh.write(b"\xef\xbb\xbf")
            if spec.columns:
                newline = "\r\n" if spec.encoding == "cp1252" else "\n"
                fh.write((spec.delimiter.join(spec.columns) + newline).encode(spec.encoding))
            self.handles[spec.path] = fh
            self.rows[spec.path] = 0
        (root / "truth").mkdir()
        self.truth_records = pq.ParquetWriter(root / "truth" / "records.parquet", TRUTH_RECORD_SCHEMA)
        self.truth_people = pq.ParquetWriter(root / "truth" / "people.parquet", TRUTH_PEOPLE_SCHEMA)
        self.truth_journeys = pq.ParquetWriter(root / "truth" / "case_journeys.parquet", TRUTH_JOURNEY_SCHEMA)

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()
        self.truth_records.close()
        self.truth_people.close()
        self.truth_journeys.close()


def _people_table(people: People) -> pa.Table:
    return pa.table({
        "person_id": people.person_id, "forename": people.forename.astype(str), "middle_names": people.middle_names.astype(str),
        "surname": people.surname.astype(str), "previous_surname": people.previous_surname.astype(str),
        "sex": people.sex.astype(str), "date_of_birth": people.dob.astype("datetime64[D]"),
        "ethnicity": people.ethnicity.astype(str), "name_origin": people.origin.astype(str),
        "is_offender": people.is_offender, "pnc": people.pnc.astype(str), "household": people.household,
    }, schema=TRUTH_PEOPLE_SCHEMA)


def _write_chunk(sinks: _Sinks, chunk: int, seed: int, n_people: int, first_id: int, ids: IdIssuer,
                 model: ErrorModel) -> None:
    ref = load_reference()
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk]))
    people = make_people(rng, ref, n_people, first_id)
    crim = criminal_journeys(rng, ref, people)
    fam = family_cases(rng, people)
    civ = civil_claims(rng, people)
    render = SourceRenderer(rng, ref, model, ids)

    rendered, mags_case_ids = render.magistrates(people, crim)
    crown, crown_case_no = render.crown(people, crim["crown"], mags_case_ids)
    rendered["crown/defendants"] = crown
    rendered.update(render.prison(people, crim["custody"]))
    rendered["probation/events"] = render.probation(people, crim["probation"], crim["requirements"])
    rendered.update(render.family(people, fam))
    rendered.update(render.civil(people, civ))

    for spec in EXTRACTS:
        key = spec.path.rsplit(".", 1)[0]
        part = rendered[key]
        base = sinks.rows[spec.path]
        sinks.handles[spec.path].write(b"".join(part.lines))
        sinks.rows[spec.path] = base + len(part.lines)
        if part.truth is not None:
            t = part.truth
            n = len(t["record_id"])
            sinks.truth_records.write_table(pa.table({
                "source": t["source"], "table": t["table"], "record_id": t["record_id"], "file": [spec.path] * n,
                "row_number": (np.asarray(t["row_offset"], dtype=np.int64) + base) if n else np.empty(0, np.int64),
                "person_id": np.asarray(t["person_id"], dtype=np.int64), "defect": t["defect"], "errors": t["errors"],
            }, schema=TRUTH_RECORD_SCHEMA))
    people_table = _people_table(people)
    people_table = people_table.set_column(
        people_table.schema.get_field_index("household"), "household",
        pa.array(people.household + first_id, type=pa.int64()))  # household ids unique across chunks
    sinks.truth_people.write_table(people_table)
    sinks.truth_journeys.write_table(pa.table({
        "crown_case_number": crown_case_no.astype(str),
        "magistrates_case_id": mags_case_ids[crim["crown"]["mags_case"]].astype(str),
    }, schema=TRUTH_JOURNEY_SCHEMA))


def partial_folder(out: Path, pid: int | None = None) -> Path:
    """Where a world for `out` is written before it is moved into place (by process `pid`)."""
    return out.parent / f".{out.name}.partial-{os.getpid() if pid is None else pid}"


def is_partial_folder(path: Path, out: Path) -> bool:
    """Whether `path` is a world for `out` that some process was writing (a stopped one's stays)."""
    prefix = partial_folder(out, 0).name[:-1]
    return path.parent == out.parent and path.name.startswith(prefix) and path.name[len(prefix):].isdigit()


def generate_world(out: Path, people: int, seed: int = 0, *, chunk_people: int = CHUNK_PEOPLE,
                   error_model: ErrorModel | None = None,
                   progress: Callable[[int, int], None] | None = None) -> WorldSummary:
    """Write a world of `people` people to `out` (which must not exist or be empty)."""
    out = Path(out)
    check_request(out, people, seed)
    model = error_model or default_error_model()
    started = time.perf_counter()
    tmp = partial_folder(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise WorldError(f"cannot write to {out}: {exc.strerror or exc}; choose another --out") from exc
    try:
        sinks = _Sinks(tmp)
        ids = IdIssuer(seed)
        try:
            n_chunks = (people + chunk_people - 1) // chunk_people
            for chunk in range(n_chunks):
                first = chunk * chunk_people
                _write_chunk(sinks, chunk, seed, min(chunk_people, people - first), first, ids, model)
                if progress:
                    progress(chunk + 1, n_chunks)
        finally:
            sinks.close()
        files = {
            spec.path: {"source": spec.source, "table": spec.table, "rows": sinks.rows[spec.path],
                        "format": "jsonl" if spec.is_jsonl else "delimited", "delimiter": spec.delimiter,
                        "encoding": spec.encoding, "bom": spec.bom, "record_id": spec.record_id or None,
                        "error_profile": spec.errors_from,
                        "sha256": file_sha256(tmp / "extracts" / spec.path)}
            for spec in EXTRACTS
        }
        manifest = {
            "generator": "datafirst.world", "generator_version": GENERATOR_VERSION, "seed": seed, "people": people,
            "chunk_people": chunk_people, "records": sum(f["rows"] for f in files.values()), "extracts": files,
            "truth": ["truth/records.parquet", "truth/people.parquet", "truth/case_journeys.parquet"],
            "error_model": model.rows(),
        }
        (tmp / "world.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # checked empty above
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WorldError(f"writing the world to {out} failed: {exc.strerror or exc}; nothing was kept") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WorldSummary(out=out, people=people, seed=seed, files={k: v["rows"] for k, v in files.items()},
                        records=manifest["records"], seconds=time.perf_counter() - started)


