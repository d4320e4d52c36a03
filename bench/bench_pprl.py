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


def world_split(ws: Workspace, world: Path, tmp: Path, schema: Path, secret: str) -> dict:
    """Cross-party F1 at medium, encoded against datafirst's plaintext linkage of the same records."""
    from datafirst.world.labels import write_labels

    labels = write_labels(world, tmp / "labels.parquet")
    out: dict = {}
    with Engine(temp_directory=ws.scratch) as engine:
        started = time.perf_counter()
        train(ws, engine)
        link(ws, engine)
        out["plaintext_s"] = round(time.perf_counter() - started, 1)
        clusters = engine.parquet(ws.zone("links") / "clusters.parquet")
        engine.execute(f"""CREATE OR REPLACE TABLE plain AS SELECT c.record_key,
            CASE WHEN c.source IN ({', '.join(sql_string(s) for s in COURTS)}) THEN 'courts' ELSE 'custody' END AS party,
            c.person_id_high, c.person_id_medium, c.person_id_low, t.true_id
            FROM {clusters} c JOIN {engine.parquet(labels)} t USING (record_key)""")
        out["plaintext"] = [cross_party_accuracy(engine, "plain", lv) for lv in ("high", "medium", "low")]
    with Engine(temp_directory=ws.scratch) as engine:
        info, out["encode_s"] = encode_and_link(engine, ws, {"courts": COURTS, "custody": CUSTODY}, secret, schema,
                                                tmp / "world-pprl")
        engine.execute(f"""CREATE OR REPLACE TABLE enc AS SELECT m.*, t.true_id FROM mapped m
                           JOIN {engine.parquet(labels)} t USING (record_key)""")
        out["encoded"] = [cross_party_accuracy(engine, "enc", lv) for lv in ("high", "medium", "low")]
        out["link"] = {k: info[k] for k in ("candidate_pairs", "seconds", "persons", "parties")}
    return out


def schema_variant(tmp: Path, base: Path, hardening: str) -> Path:
    """The schema with the names hardened (what the attack is on): `salt` salts them by the year of
    birth and encodes the year on its own (the linker then counts names salted apart as no
    evidence); `balance`, `xor_fold` as named; `none` is the schema as it is."""
    import yaml

    raw = yaml.safe_load(base.read_text())
    if hardening == "salt":
        raw["fields"]["year_of_birth"] = {"tokens": "whole", "bits": 64, "hashes": 8, "dice_levels": [1.0],
                                          "compare": False}
        for name in ("forename", "surname"):
            raw["fields"][name]["hardening"] = {"kind": "salt", "salt": "year_of_birth"}
    elif hardening != "none":
        for name in ("forename", "surname"):
            raw["fields"][name]["hardening"] = {"kind": hardening}
    path = tmp / f"schema-{hardening}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def public_names(engine: Engine) -> dict:
    """The public name lists: the world's name frequencies, standardised as datafirst would (the
    attacker knows the standardisation; it is public code)."""
    from datafirst.pprl.attack import public_names as make
    from datafirst.standardise import cleaning

    reference = Path(__import__("datafirst.world", fromlist=["x"]).__file__).parent / "reference"
    out = {}
    for field, name, clean in (("forename", "forenames.csv", cleaning.forename_clean),
                               ("surname", "surnames.csv", cleaning.name_clean)):
        out[field] = make(engine.execute(f"SELECT {clean('name')}, sum(weight) FROM "
                                         f"read_csv({sql_string(reference / name)}) GROUP BY 1"))
    return out


def attack(ws: Workspace, tmp: Path, schema: Path, secret: str, hardenings: list[str]) -> dict:
    """The attack on every world record encoded by one party, per hardening."""
    from datafirst.pprl.attack import attack_file, reidentification
    from datafirst.pprl.encode import SECRET_VARIABLE, record_token_sql

    out = {}
    with Engine(temp_directory=ws.scratch) as engine:
        public = public_names(engine)
        engine.execute(f"SET VARIABLE {SECRET_VARIABLE} = ?", [secret])
        truth = engine.execute(f"""SELECT forename, surname FROM (
            SELECT {record_token_sql('all', 'record_key')} AS token, forename, surname
            FROM read_parquet({sql_string(ws.zone('identifiers'))} || '/*.parquet')) ORDER BY token""")
        engine.execute(f"RESET VARIABLE {SECRET_VARIABLE}")
        import numpy as np
        truth = {"forename": np.array([t[0] for t in truth], dtype=object),
                 "surname": np.array([t[1] for t in truth], dtype=object)}
        for hardening in hardenings:
            path = schema_variant(tmp, schema, hardening)
            loaded = load_schema(path)
            encoded = tmp / f"attack-{hardening}.parquet"
            encode(engine, loaded, secret, identifier_inputs(ws.root), encoded, "all")
            started = time.perf_counter()
            guesses = attack_file(engine, encoded, loaded.schema, public)
            out[hardening] = reidentification(guesses, truth)
            out[hardening]["attack_s"] = round(time.perf_counter() - started, 1)
    return out


CLKHASH_SCRIPT = r"""
import csv, json, sys, time
from clkhash import clk
from clkhash.schema import from_json_dict
with open(sys.argv[1], newline="") as f:
    records = [tuple(r) for r in list(csv.reader(f))[1:]]
schema = from_json_dict(json.loads(open(sys.argv[2]).read()))
started = time.perf_counter()
clks = clk.generate_clks(records, schema, "secret")
print(json.dumps({"records": len(clks), "seconds": time.perf_counter() - started}))
"""


def clkhash_schema(columns: list[str]) -> dict:
    """A clkhash v3 schema over the same identifiers: bigrams, 1024-bit record CLK (its docs' FEBRL set-up)."""
    features = [{"identifier": "record_key", "ignored": True}]
    for c in columns[1:]:
        features.append({"identifier": c, "format": {"type": "string", "encoding": "utf-8"},
                         "hashing": {"comparison": {"type": "ngram", "n": 2},
                                     "strategy": {"bitsPerFeature": 100}, "hash": {"type": "doubleHash"}}})
    return {"version": 3, "clkConfig": {"l": 1024, "kdf": {"type": "HKDF", "hash": "SHA256",
                                                           "salt": "SCbL2zHNnmsckfzchsNkZY9XoHk96P/G5nUBrM7ybymlEFsMV6PAeDZCNp3rfNUPCtLDMOGQHG4pCQpfhiHCyA==",
                                                           "info": "c2NoZW1hX2V4YW1wbGU=", "keySize": 64}},
            "features": features}


def speed(ws: Workspace, tmp: Path, schema: Path, secret: str) -> dict:
    """Encoding records/s (datafirst against clkhash on the same records) and scoring pairs/s."""
    out: dict = {}
    loaded = load_schema(schema)
    columns = ["record_key", "forename", "surname", "date_of_birth", "sex", "postcode", "address"]
    with Engine(temp_directory=ws.scratch) as engine:
        records = int(engine.scalar(f"SELECT count(*) FROM read_parquet({sql_string(ws.zone('identifiers'))} || '/*.parquet')"))
        started = time.perf_counter()
        encode(engine, loaded, secret, identifier_inputs(ws.root), tmp / "speed.parquet", "all")
        seconds = time.perf_counter() - started
        out["datafirst_encode"] = {"records": records, "seconds": round(seconds, 2),
                                   "records_per_s": round(records / seconds)}
        csv = tmp / "speed.csv"
        engine.execute(f"""COPY (SELECT {', '.join(f"coalesce(CAST({c} AS VARCHAR), '') AS {c}" for c in columns)}
                           FROM read_parquet({sql_string(ws.zone('identifiers'))} || '/*.parquet'))
                           TO {sql_string(csv)} (FORMAT csv, HEADER true)""")
        # Scoring: the trained model over ~1/256 of all cross-party pairs, drawn by token prefix
        # (random pairs: every comparison runs to its last level), timed in Splink's predict.
        files = []
        for party, sources in (("courts", COURTS), ("custody", CUSTODY)):
            encode(engine, loaded, secret, identifier_inputs(ws.root), tmp / f"speed-{party}.parquet", party, sources)
            files.append(tmp / f"speed-{party}.parquet")
        info = pprl_link(engine, loaded, files, tmp / "speed-link")
        # pprl-link's own scoring: its candidate pairs (those sharing a match key) in Splink's predict.
        out["link_scoring"] = {"candidate_pairs": info["candidate_pairs"], "seconds": info["seconds"]["score"],
                               "cpu_seconds": info["seconds"]["score_cpu"],
                               "pairs_per_s": round(info["candidate_pairs"] / max(info["seconds"]["score"], 1e-9)),
                               "pairs_per_s_of_2_cores": round(info["candidate_pairs"]
                                                               / max(info["seconds"]["score_cpu"] / 2, 1e-9))}
        model = json.loads((tmp / "speed-link" / "model.json").read_text())
        model["blocking_rules_to_generate_predictions"] = [
            {"blocking_rule": "l.party <> r.party AND substr(l.token, 1, 2) = substr(r.token, 1, 2)", "sql_dialect": "duckdb"}]
        import logging

        from splink import Linker
        linker = Linker(engine.splink_api().register("pprl_input"), model, log_level=logging.ERROR)
        started, cpu = time.perf_counter(), time.process_time()
        scored = linker.inference.predict()
        pairs = int(engine.scalar(f"SELECT count(*) FROM {scored.physical_name}"))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        # The machine is shared: wall time counts other jobs' use of the two cores; the process's
        # CPU time over two cores is what the scoring costs on the machine to itself.
        out["scoring"] = {"pairs": pairs, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                          "pairs_per_s": round(pairs / seconds), "pairs_per_s_of_2_cores": round(pairs / (cpu / 2)),
                          "load_average": os.getloadavg()[0]}
    if CLKHASH_PYTHON.is_file():
        (tmp / "clkhash_schema.json").write_text(json.dumps(clkhash_schema(columns)))
        (tmp / "clkhash_run.py").write_text(CLKHASH_SCRIPT)
        run = subprocess.run([str(CLKHASH_PYTHON), str(tmp / "clkhash_run.py"), str(csv),
                              str(tmp / "clkhash_schema.json")], capture_output=True, text=True, timeout=3600,
                             check=False)
        if run.returncode == 0:
            got = json.loads(run.stdout.strip().splitlines()[-1])
            out["clkhash_encode"] = {**got, "records_per_s": round(got["records"] / got["seconds"])}
        else:
            out["clkhash_encode"] = {"error": run.stderr.strip().splitlines()[-1:]}
    else:
        out["clkhash_encode"] = {"error": f"no {CLKHASH_PYTHON}: python3 -m venv /work/venvs/clkhash && "
                                          "/work/venvs/clkhash/bin/pip install clkhash anonlink"}
    return out


def world_workspace(args: argparse.Namespace, tmp: Path) -> tuple[Workspace, Path]:
    """A standardised workspace over the world (--world DIR, or --people generated)."""
    from worlds import world_for

    world = world_for(args, tmp)
    ws = Workspace.init(tmp / "ws", world / "extracts")
    with Engine(temp_directory=ws.scratch) as engine:
        ingest(ws, engine)
        standardise(ws, engine)
    return ws, world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA)
    parser.add_argument("--only", default="febrl4,world,attack,speed")
    parser.add_argument("--people", type=int, default=20_000, help="people in the generated world")
    parser.add_argument("--world", type=Path, help="an existing world folder (`datafirst world`)")
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
        if parts & {"world", "attack", "speed"}:
            ws, world = world_workspace(args, tmp)
        if "world" in parts:
            r = results["world"] = world_split(ws, world, tmp, args.schema, secret)
            for kind in ("plaintext", "encoded"):
                a = next(x for x in r[kind] if x["threshold"] == "medium")
                print(f"world courts x custody {kind:9} medium precision {a['precision']:.4f} recall {a['recall']:.4f} "
                      f"F1 {a['f1']:.4f} ({a['true_pairs']:,} true cross-party pairs)")
        if "attack" in parts:
            r = results["attack"] = attack(ws, tmp, args.schema, secret, ["none", "salt", "balance", "xor_fold"])
            for hardening, a in r.items():
                print(f"attack on {hardening:8}: surname {a['surname_recovered']:.2%}, forename "
                      f"{a['forename_recovered']:.2%}, full name {a['full_name_recovered']:.2%} of "
                      f"{a['records']:,} records")
        if "speed" in parts:
            r = results["speed"] = speed(ws, tmp, args.schema, secret)
            print(f"encode: datafirst {r['datafirst_encode']['records_per_s']:,} records/s; clkhash "
                  f"{r['clkhash_encode'].get('records_per_s', r['clkhash_encode'].get('error'))} records/s; scoring "
                  f"{r['scoring']['pairs_per_s']:,} random pairs/s ({r['scoring']['pairs']:,} pairs; "
                  f"{r['scoring']['pairs_per_s_of_2_cores']:,} per second of 2 cores' CPU time), "
                  f"{r['link_scoring']['pairs_per_s']:,} candidate pairs/s in pprl-link "
                  f"({r['link_scoring']['pairs_per_s_of_2_cores']:,} per second of 2 cores' CPU time) "
                  f"({r['link_scoring']['candidate_pairs']:,})")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
