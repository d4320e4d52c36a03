"""De-identified linkage (docs/pprl.md): two data holders, each with a contract of its own, encode
their standardised identifiers with a shared secret; a linker holding neither links the encodings
with real DuckDB and Splink; each party maps the link back. Checked: the link is right, nothing
the linker receives or writes holds a party's identifiers or the secret, and bad input is refused."""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import secrets
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

from datafirst import pprl
from datafirst.engine import Engine
from datafirst.pprl.encode import encode, identifier_inputs, read_metadata
from datafirst.pprl.link import PprlLinkError, pprl_link
from datafirst.pprl.mapping import map_links
from datafirst.pprl.schema import DEFAULT_SCHEMA, SchemaError, load_schema
from datafirst.pprl.shared_key import load_secret
from datafirst.release.hashing_key import SecretError
from datafirst.sources.ingest import ingest
from datafirst.standardise.stage import standardise
from datafirst.workspace import Workspace

REFERENCE = Path(__file__).resolve().parents[1] / "src" / "datafirst" / "world" / "reference"
PEOPLE, SHARED = 360, 240  # the education party's pupils; how many of them the courts also hold

EDUCATION_CONTRACT = """source: education
description: A partner's pupil register, onboarded with its own contract.
tables:
  pupils:
    file: pupils.csv
    record_id: pupil_ref
    columns:
      pupil_ref: {required: true, native_id: true}
      First Name: {role: forename}
      Last Name: {role: surname}
      DOB: {type: date, formats: ["%d/%m/%Y"], role: date_of_birth, on_invalid: "null"}
      Gender: {role: sex}
      Post Code: {role: postcode}
"""
COURTS_CONTRACT = """source: courts
description: Defendants.
tables:
  defendants:
    file: defendants.csv
    record_id: case_person
    columns:
      case_person: {required: true, native_id: true}
      full_name: {role: full_name, name_order: forenames_surname}
      birth_date: {type: date, formats: ["%Y-%m-%d"], role: date_of_birth, on_invalid: "null"}
      sex: {role: sex}
      postcode: {role: postcode}
"""


def _people(rng: random.Random) -> list[dict]:
    with open(REFERENCE / "forenames.csv", encoding="utf-8") as f:
        forenames = [r for r in csv.DictReader(f) if r["name"].isascii()]
    with open(REFERENCE / "surnames.csv", encoding="utf-8") as f:
        surnames = [r["name"] for r in csv.DictReader(f) if r["name"].isascii() and r["name"].isalpha()]
    people, seen = [], set()
    while len(people) < PEOPLE:
        fore = rng.choice(forenames)
        person = {"forename": fore["name"], "sex": fore["sex"], "surname": rng.choice(surnames),
                  "dob": (rng.randint(1960, 2004), rng.randint(1, 12), rng.randint(1, 28)),
                  "postcode": f"{rng.choice(['LS', 'M', 'B', 'CF', 'NE'])}{rng.randint(1, 20)} "
                              f"{rng.randint(1, 9)}{rng.choice('ABDEFGHJ')}{rng.choice('LNPQRSTU')}"}
        key = (person["forename"], person["surname"], person["dob"])
        if key not in seen:
            seen.add(key)
            people.append(person)
    return people


@pytest.fixture(scope="module")
def parties(tmp_path_factory):
    """Two standardised workspaces (education: pupils; courts: defendants, the shared people's
    names decorated with odd case and spaces), the encoded files, the link, and the secret."""
    rng = random.Random(28)
    root = tmp_path_factory.mktemp("pprl")
    people = _people(rng)
    extracts = {"education": root / "education-extracts", "courts": root / "courts-extracts"}
    for folder in extracts.values():
        folder.mkdir()
    with open(extracts["education"] / "pupils.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["pupil_ref", "First Name", "Last Name", "DOB", "Gender", "Post Code"])
        for i, p in enumerate(people):
            y, m, d = p["dob"]
            w.writerow([f"PU{i:05d}", p["forename"], p["surname"], f"{d:02d}/{m:02d}/{y}", p["sex"], p["postcode"]])
    others = _people(random.Random(2028))[: PEOPLE - SHARED]
    with open(extracts["courts"] / "defendants.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case_person", "full_name", "birth_date", "sex", "postcode"])
        for i, p in enumerate(people[:SHARED] + others):
            y, m, d = p["dob"]
            # Decorated as clerks type them: upper case, doubled and trailing spaces, the postcode
            # without its space; standardisation must undo it for the encodings to match.
            name = f"  {p['forename'].upper()}   {p['surname'].upper()} " if i % 2 else f"{p['forename']} {p['surname']}"
            postcode = p["postcode"].replace(" ", "").lower() if i % 3 == 0 else p["postcode"]
            w.writerow([f"CP-{i:05d}", name, f"{y}-{m:02d}-{d:02d}", p["sex"], postcode])
    workspaces = {}
    for name, contract in (("education", EDUCATION_CONTRACT), ("courts", COURTS_CONTRACT)):
        ws = Workspace.init(root / f"{name}-ws", extracts[name], with_world_contracts=False)
        (ws.root / "contracts" / f"{name}.yaml").write_text(contract, encoding="utf-8")
        with Engine() as engine:
            ingest(ws, engine)
            standardise(ws, engine)
        workspaces[name] = ws
    secret_file = root / "holders" / "pprl.secret"
    secret_file.parent.mkdir(mode=0o700)
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, secrets.token_hex(32).encode())
    os.close(fd)
    secret = load_secret(secret_file)
    schema = load_schema(DEFAULT_SCHEMA)
    linker_in, linker_out = root / "linker" / "in", root / "linker" / "out"
    files = []
    with Engine() as engine:
        for name, ws in workspaces.items():
            encode(engine, schema, secret, identifier_inputs(ws.root), linker_in / f"{name}.parquet", name)
            files.append(linker_in / f"{name}.parquet")
    with Engine() as engine:
        info = pprl_link(engine, schema, files, linker_out)
    mapped = {}
    with Engine() as engine:
        for name, ws in workspaces.items():
            mapped[name] = root / f"{name}-mapped.parquet"
            map_links(engine, secret, identifier_inputs(ws.root), linker_out / "links.parquet", name, mapped[name])
    return {"root": root, "workspaces": workspaces, "people": people, "others": others, "secret": secret,
            "secret_file": secret_file, "files": files, "linker_out": linker_out, "linker_in": linker_in,
            "info": info, "mapped": mapped, "schema": schema}


def test_the_link_finds_the_shared_people_and_no_others(parties):
    """Each shared person's pupil record and defendant record get one person id at medium (names
    decorated with case and spaces among them); no pupil is linked to anyone else."""
    pupils, defendants = (str(parties["mapped"][n]) for n in ("education", "courts"))
    pairs = duckdb.sql(f"""SELECT p.record_key AS pupil, d.record_key AS defendant FROM read_parquet('{pupils}') p
                           JOIN read_parquet('{defendants}') d USING (person_id_medium)""").fetchall()
    expected = {(f"education|pupils|PU{i:05d}", f"courts|defendants|CP-{i:05d}") for i in range(SHARED)}
    found = set(pairs)
    assert len(found & expected) >= 0.97 * SHARED, len(found & expected)
    assert len(found - expected) <= 2, sorted(found - expected)[:5]
    decorated = {(f"education|pupils|PU{i:05d}", f"courts|defendants|CP-{i:05d}") for i in range(1, SHARED, 2)}
    assert len(found & decorated) >= 0.97 * len(decorated)
    # The link table holds the parties' tokens and person ids only.
    links = duckdb.sql(f"SELECT * FROM read_parquet('{parties['linker_out'] / 'links.parquet'}')")
    assert links.columns == ["party", "token", "person_id_high", "person_id_medium", "person_id_low"]
    assert parties["info"]["cross_party_pairs_at_medium"] >= 0.97 * SHARED
    # Keys whose pairs another key already gives are not blocked on again (they still train).
    assert parties["info"]["training"]["prediction_keys_left_out"]["surname_dob"].endswith("those of dob")


def test_mapping_with_another_secret_is_refused(parties, tmp_path):
    ws = parties["workspaces"]["courts"]
    with Engine() as engine, pytest.raises(Exception, match="tokens of party 'courts' match these records"):
        map_links(engine, secrets.token_hex(32), identifier_inputs(ws.root), parties["linker_out"] / "links.parquet",
                  "courts", tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def _plaintext_strings(parties) -> set[bytes]:
    """Every identifier value the parties hold, as written and as standardised, and the secret."""
    values = set()
    for ws in parties["workspaces"].values():
        rows = duckdb.sql(f"""SELECT record_key, forename, surname, CAST(date_of_birth AS VARCHAR), postcode
                              FROM read_parquet('{ws.zone('identifiers')}/*.parquet')""").fetchall()
        for row in rows:
            values |= {v for v in row if v and len(v) >= 4}
            values.add(row[0].split("|")[-1])  # the native id alone
    for p in parties["people"] + parties["others"]:
        values |= {p["forename"], p["surname"], p["postcode"], p["postcode"].replace(" ", "")}
    values = {v for v in values if len(v) >= 4}
    encoded = {v.encode() for v in values} | {v.lower().encode() for v in values} | {v.upper().encode() for v in values}
    return encoded | {parties["secret"].encode(), parties["secret"][:16].encode()}


def test_nothing_the_linker_receives_or_writes_holds_identifiers_or_the_secret(parties):
    """The bytes of the encoded files and of everything pprl-link wrote are searched for every
    name, date of birth, postcode and record id of both parties, and for the secret."""
    files = list(parties["linker_in"].iterdir()) + list(parties["linker_out"].iterdir())
    assert {f.name for f in parties["linker_out"].iterdir()} == {"links.parquet", "model.json", "link.json"}
    # A short name that is part of the program's own words ('stan' of 'standardisation', 'field'
    # of 'fields', in the files' metadata and the model's labels) is not a leak.
    program = b" ".join(p.read_bytes().lower() for p in (*Path(pprl.__file__).parent.glob("*.py"), DEFAULT_SCHEMA))
    program += json.dumps(_keys(json.loads((parties["linker_out"] / "model.json").read_text()))).encode().lower()
    needles = {n for n in _plaintext_strings(parties) if n.lower() not in program}
    assert len(needles) > 1000
    for path in files:
        # The bytes as written, and the Parquet files' values and metadata decoded (pages are compressed).
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data += str(duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()).encode()
            data += str(duckdb.sql(f"SELECT * FROM parquet_kv_metadata('{path}')").fetchall()).encode()
        found = [n for n in needles if n in data]
        assert not found, f"{path.name} holds {found[:5]}"


def _keys(obj) -> list:
    """Every key, and every string at a key that Splink fills from the program (labels, SQL), of a model."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(k)
            out += _keys(v) if isinstance(v, (dict, list)) else [v] if isinstance(v, str) else []
    elif isinstance(obj, list):
        for v in obj:
            out += _keys(v)
    return out


def test_encoded_files_carry_the_schema_and_standardisation(parties):
    with Engine() as engine:
        meta = read_metadata(engine, parties["files"][0])
    assert meta["schema_sha256"] == parties["schema"].sha256 and meta["party"] == "education"
    assert set(meta) >= {"standardisation", "key_check", "records", "fields"}
    assert "secret" not in str(meta).lower()


def test_a_schema_mismatch_is_refused(parties, tmp_path):
    """A party that encoded under a changed schema (another version) is refused, naming both."""
    changed = tmp_path / "schema-v2.yaml"
    changed.write_text(DEFAULT_SCHEMA.read_text().replace("version: 1", "version: 2"), encoding="utf-8")
    other = load_schema(changed)
    ws = parties["workspaces"]["courts"]
    with Engine() as engine:
        encode(engine, other, parties["secret"], identifier_inputs(ws.root), tmp_path / "courts-v2.parquet", "courts")
    with Engine() as engine, pytest.raises(PprlLinkError, match="another linkage schema"):
        pprl_link(engine, parties["schema"], [parties["files"][0], tmp_path / "courts-v2.parquet"], tmp_path / "out")
    # The linker holding another schema than both parties' is refused too.
    with Engine() as engine, pytest.raises(PprlLinkError, match="schema-v2.yaml"):
        pprl_link(engine, other, parties["files"], tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_different_secrets_and_one_party_twice_are_refused(parties, tmp_path):
    ws = parties["workspaces"]["courts"]
    with Engine() as engine:
        encode(engine, parties["schema"], secrets.token_hex(32), identifier_inputs(ws.root), tmp_path / "c.parquet",
               "courts")
        with pytest.raises(PprlLinkError, match="different secrets"):
            pprl_link(engine, parties["schema"], [parties["files"][0], tmp_path / "c.parquet"], tmp_path / "out")
        with pytest.raises(PprlLinkError, match="party 'education' again"):
            pprl_link(engine, parties["schema"], [parties["files"][0], parties["files"][0]], tmp_path / "out")


def test_a_weak_or_readable_secret_is_refused_by_the_command(parties, tmp_path):
    """`datafirst encode` refuses a guessable secret and one others can read, without printing it,
    and writes nothing."""
    weak = tmp_path / "weak.secret"
    weak.write_text("justice-data-2024justice-data-2024")
    weak.chmod(0o600)
    out = tmp_path / "x.parquet"
    args = [sys.executable, "-m", "datafirst", "encode", "--schema", str(DEFAULT_SCHEMA), "--in",
            str(parties["workspaces"]["courts"].root), "--out", str(out), "--party", "courts", "--secret-file"]
    run = subprocess.run([*args, str(weak)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2 and "too easy to guess" in run.stderr and "justice-data" not in run.stderr
    readable = tmp_path / "readable.secret"
    readable.write_text(secrets.token_hex(32))
    readable.chmod(0o644)
    run = subprocess.run([*args, str(readable)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2 and "chmod 600" in run.stderr
    assert not out.exists()
    with pytest.raises(SecretError, match="no shared secret"):
        os.environ.pop("DATAFIRST_PPRL_SECRET", None)
        load_secret(None)


def test_a_bad_schema_names_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_SCHEMA.read_text().replace("bits: 256", "bits: 300", 1), encoding="utf-8")
    with pytest.raises(SchemaError, match=r"bad\.yaml: fields\.forename\.bits: .*power of two"):
        load_schema(bad)
    bad.write_text(DEFAULT_SCHEMA.read_text().replace("surname_dob: [surname, date_of_birth]",
                                                      "surname_dob: [surname, birthday]"), encoding="utf-8")
    with pytest.raises(SchemaError, match="birthday.*not a standardised identifier column"):
        load_schema(bad)


def test_positions_are_independent_keyed_hashes_not_double_hashing(parties):
    """clkhash#33: with h1 + i*h2 a token's positions form an arithmetic progression modulo the
    filter size. A one-token field (sex) shows its positions alone: they must not."""
    ws = parties["workspaces"]["education"]
    with Engine() as engine:
        encode(engine, parties["schema"], parties["secret"], identifier_inputs(ws.root),
               parties["root"] / "sex-check.parquet", "education")
        word = engine.scalar(f"SELECT sex__w0 FROM read_parquet('{parties['root'] / 'sex-check.parquet'}') "
                             "WHERE sex__w0 IS NOT NULL LIMIT 1")
    positions = [i for i in range(64) if word >> i & 1]
    assert 4 <= len(positions) <= 8
    steps = {(b - a) % 64 for a, b in itertools.pairwise(positions)}
    assert len(steps) > 1  # not one common difference (sorted positions of a progression would show few)


def test_the_frequency_attack_recovers_common_names_unless_salted_apart(parties, tmp_path):
    """The attack of docs/pprl.md on a file whose surnames follow a public list's frequencies:
    unhardened, the commonest filters are the commonest names; salted by a year the attacker
    cannot partition on (no year filter), one name's records scatter over the years' encodings."""
    from datafirst.pprl.attack import attack_file, public_names, reidentification
    from datafirst.pprl.encode import SECRET_VARIABLE, record_token_sql

    public = public_names([("smith", 50), ("jones", 30), ("taylor", 20), ("brown", 12), ("evans", 6)])
    rows = [(f"r{i}", name, 1970 + i % 25) for i, name in enumerate(
        ["smith"] * 100 + ["jones"] * 60 + ["taylor"] * 40 + ["brown"] * 24 + ["evans"] * 12)]
    ids = tmp_path / "ids.parquet"
    duckdb.sql(f"COPY (SELECT * FROM (VALUES {', '.join(str(r) for r in rows)}) t(record_key, surname, year_of_birth)) "
               f"TO '{ids}' (FORMAT parquet)")
    plain = tmp_path / "plain.yaml"
    plain.write_text("format: datafirst-pprl/1\nversion: 1\nfields:\n  surname: {bits: 256}\n"
                     "match_keys:\n  s: [surname]\n", encoding="utf-8")
    salted = tmp_path / "salted.yaml"
    salted.write_text(plain.read_text() + "hardening: {kind: salt, salt: year_of_birth}\n", encoding="utf-8")
    recovered = {}
    with Engine() as engine:
        for name, path in (("plain", plain), ("salted", salted)):
            loaded = load_schema(path)
            encode(engine, loaded, parties["secret"], [ids], tmp_path / f"{name}.parquet", "x")
            guesses = attack_file(engine, tmp_path / f"{name}.parquet", loaded.schema, {"surname": public},
                                  ("frequency",))
            # The truth in the file's (token) order, which only a holder of the secret can recompute.
            engine.execute(f"SET VARIABLE {SECRET_VARIABLE} = ?", [parties["secret"]])
            truth = [t[0] for t in engine.execute(f"SELECT surname FROM read_parquet('{ids}') "
                                                  f"ORDER BY {record_token_sql('x', 'record_key')}")]
            engine.execute(f"RESET VARIABLE {SECRET_VARIABLE}")
            recovered[name] = reidentification(guesses, {"surname": np.array(truth, dtype=object)})["surname_recovered"]
    assert recovered["plain"] == 1.0
    assert recovered["salted"] < 0.5
