"""De-identified linkage (docs/pprl.md): accuracy, attacks and speed of datafirst's encodings.

- FEBRL4, onboarded through its contracts (bench/contracts), each file encoded by its own party
  and linked by `pprl_link`: pairwise precision / recall / F1 at each threshold.
- The world split into two parties by source (courts: magistrates, crown, civil, family; against
  prisons and probation): F1 over cross-party pairs, encoded against datafirst's plaintext
  train + link on the same records.
- The frequency and pattern-mining attack (pprl/attack.py) on the world's encodings, per
  hardening, with the world's name frequency list as the public list.
- Speed: encoding records/s against clkhash on the same records (run in its own venv,
  /work/venvs/clkhash, as a subprocess), and scoring candidate pairs/s.

    python bench/bench_pprl.py [--data ../shared/data] [--people 20000] [--only febrl4,world,attack,speed]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from datafirst.engine import Engine, sql_string
from datafirst.link.stage import link
from datafirst.link.train import train
from datafirst.pprl.encode import encode, identifier_inputs
from datafirst.pprl.link import pprl_link
from datafirst.pprl.mapping import map_links
from datafirst.pprl.schema import DEFAULT_SCHEMA, load_schema
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace

HERE = Path(__file__).resolve().parent
COURTS = ["magistrates", "crown", "civil", "family"]
CUSTODY = ["prison", "probation"]
CLKHASH_PYTHON = Path("/work/venvs/clkhash/bin/python")


def cross_party_accuracy(engine: Engine, table: str, level: str = "medium") -> dict:
    """Pairwise precision / recall / F1 over pairs of records from different parties; `table`
    has record_key, party, person_id_<level>, true_id. Counted from group sizes: a group with
    n records, n_p of them from party p, holds (n^2 - sum n_p^2) / 2 cross-party pairs."""
    def pairs(group: str) -> int:
        return int(engine.scalar(f"""SELECT coalesce(sum((n * n - sq) / 2), 0) FROM (
            SELECT sum(np) AS n, sum(np * np) AS sq FROM (
                SELECT {group} AS g, party, count(*) AS np FROM {table} GROUP BY ALL) GROUP BY g)"""))
    tp, pred, true = pairs(f"person_id_{level} || '|' || true_id"), pairs(f"person_id_{level}"), pairs("true_id")
    p, r = (tp / pred if pred else 1.0), (tp / true if true else 1.0)
    return {"threshold": level, "true_pairs": true, "predicted_pairs": pred, "true_positives": tp,
            "precision": round(p, 5), "recall": round(r, 5), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 5)}


def new_secret(folder: Path) -> Path:
    path = folder / "pprl.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, secrets.token_hex(32).encode())
    os.close(fd)
    return path


def encode_and_link(engine: Engine, ws: Workspace, parties: dict[str, list[str]], secret: str, schema_path: Path,
                    out: Path) -> tuple[dict, dict]:
    """Encode each party's sources, link them, map back: a table `mapped` (record_key, party,
    person_id_*); returns the link summary and the encoding seconds."""
    loaded = load_schema(schema_path)
    files, seconds = [], {}
    for party, sources in parties.items():
        started = time.perf_counter()
        encode(engine, loaded, secret, identifier_inputs(ws.root), out / f"{party}.parquet", party, sources)
        seconds[party] = round(time.perf_counter() - started, 2)
        files.append(out / f"{party}.parquet")
    info = pprl_link(engine, loaded, files, out / "link")
    engine.execute("CREATE OR REPLACE TABLE mapped (record_key VARCHAR, party VARCHAR, person_id_high VARCHAR, "
                   "person_id_medium VARCHAR, person_id_low VARCHAR)")
    for party, sources in parties.items():
        map_links(engine, secret, identifier_inputs(ws.root), out / "link" / "links.parquet", party,
                  out / f"{party}.mapped.parquet", sources)
        engine.execute(f"""INSERT INTO mapped SELECT record_key, {sql_string(party)}, person_id_high, person_id_medium,
                           person_id_low FROM read_parquet({sql_string(out / f'{party}.mapped.parquet')})""")
    return info, seconds


def febrl4(data: Path, tmp: Path, schema: Path, secret: str) -> dict:
    ws = Workspace.init(tmp / "febrl4", data, with_world_contracts=False)
    for contract in ("febrl4a.yaml", "febrl4b.yaml"):
        shutil.copyfile(HERE / "contracts" / contract, ws.root / "contracts" / contract)
    with Engine() as engine:
        ingest(ws, engine)
        standardise(ws, engine)
        info, enc_s = encode_and_link(engine, ws, {"febrl4a": ["febrl4a"], "febrl4b": ["febrl4b"]}, secret, schema,
                                      tmp / "febrl4-pprl")
        engine.execute("""CREATE OR REPLACE TABLE truth AS SELECT record_key, party,
            person_id_high, person_id_medium, person_id_low, regexp_extract(record_key, 'rec-([0-9]+)', 1) AS true_id
            FROM mapped""")
        acc = [cross_party_accuracy(engine, "truth", lv) for lv in ("high", "medium", "low")]
    return {"accuracy": acc, "link": {k: info[k] for k in ("candidate_pairs", "seconds", "persons")},
            "encode_s": enc_s, "training": {k: info["training"][k] for k in ("prior", "deterministic_recall")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA)
    parser.add_argument("--only", default="febrl4,world,attack,speed")
    parser.add_argument("--people", type=int, default=20_000)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    results: dict = {"schema": str(args.schema)}
    with tempfile.TemporaryDirectory(prefix="bench-pprl-") as tmp_name:
        tmp = Path(tmp_name)
        secret = new_secret(tmp).read_text()
        if "febrl4" in parts:
            r = results["febrl4"] = febrl4(args.data, tmp, args.schema, secret)
            for a in r["accuracy"]:
                print(f"FEBRL4 encoded {a['threshold']:6} precision {a['precision']:.4f} recall {a['recall']:.4f} "
                      f"F1 {a['f1']:.4f} ({a['true_pairs']:,} true pairs)")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
