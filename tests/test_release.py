"""Releases: privacy guard, keys, hashing salt, atomicity, documentation, and the one-command run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from datafirst.engine import Engine
from datafirst.release import stage as release_stage
from datafirst.release.hashing_key import SALT_ENV, SALT_FILE_ENV, SecretError, load_salt
from datafirst.release.stage import ReleaseError, published, release, verify
from datafirst.sources.contract import load_contract
from datafirst.workspace import Workspace

from .conftest import TEST_SALT, build_pipeline

SALT = TEST_SALT
OTHER_SALT = "8534026d12e72f8fa7e931134b5b1e3b022c46c306120b565f10c8c81d88ce71"


@pytest.fixture(scope="module")
def released_ws(world, tmp_path_factory) -> Workspace:
    return build_pipeline(world, tmp_path_factory.mktemp("rel"), "release")


def _first(ws: Workspace) -> Path:
    return published(ws)[0]


def _con():
    return duckdb.connect()


def test_release_holds_every_product_documented_and_intact(released_ws):
    rel = _first(released_ws)
    assert verify(rel) == []
    d = json.loads((rel / "dictionary.json").read_text())
    names = {t["name"] for t in d["tables"]}
    assert {"person_link_lookup", "case_journeys", "person", "person_journey", "magistrates__defendants",
            "magistrates__offences", "crown__defendants", "prison__bookings", "probation__events",
            "probation__requirements", "family__cases", "family__parties", "civil__claims", "civil__parties"} <= names
    con = _con()
    for t in d["tables"]:
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{rel / t['path']}')").fetchall()]
        documented = [c["name"] for c in t["columns"]]
        assert cols == documented, t["name"]
        assert all(c["description"] for c in t["columns"]), (t["name"], [c["name"] for c in t["columns"] if not c["description"]])
        assert t["unit"] and t["keys"]
        n, distinct = con.execute(f"""SELECT count(*), count(DISTINCT ({', '.join(t['keys'])}))
                                      FROM read_parquet('{rel / t['path']}')""").fetchall()[0]
        assert n == distinct == t["rows"], t["name"]  # keys documented unique are unique
    package = json.loads((rel / "datapackage.json").read_text())
    assert {r["name"] for r in package["resources"]} == names
    assert all(r["hash"].startswith("sha256:") and r["schema"]["primaryKey"] for r in package["resources"])
    # Every column has a Table Schema type (a decimal amount is a number, not 'any').
    typed = {(r["name"], f["name"]): f["type"] for r in package["resources"] for f in r["schema"]["fields"]}
    assert "any" not in typed.values(), [k for k, v in typed.items() if v == "any"]
    assert typed[("civil__claims", "arrears_amount")] == "number"
    # Each column's declaration is a Table Schema constraint: the code list, the range.
    constraints = {(r["name"], f["name"]): f.get("constraints", {}) for r in package["resources"]
                   for f in r["schema"]["fields"]}
    contract = load_contract(released_ws.contracts / "magistrates.yaml")
    assert constraints[("magistrates__defendants", "outcome")]["enum"] == \
        contract.tables["defendants"].columns["outcome"].allowed
    arrears = load_contract(released_ws.contracts / "civil.yaml").tables["claims"].columns["arrears_amount"]
    assert (constraints[("civil__claims", "arrears_amount")]["minimum"],
            constraints[("civil__claims", "arrears_amount")]["maximum"]) == (arrears.min, arrears.max)
    dates = [c for (t, name), c in constraints.items() if typed[(t, name)] == "date" and "minimum" in c]
    assert dates and all(len(c["minimum"]) == 10 for c in dates)  # ISO dates
    # ... and every released value keeps to them.
    for (t, name), c in constraints.items():
        if "enum" in c:
            path = rel / "tables" / f"{t}.parquet"
            outside = con.execute(f'SELECT count(*) FROM read_parquet(\'{path}\') WHERE "{name}" IS NOT NULL '
                                  f'AND CAST("{name}" AS VARCHAR) NOT IN (SELECT unnest(?))', [c["enum"]]).fetchall()[0][0]
            assert outside == 0, (t, name)
    assert "This is the first release." in (rel / "RELEASE_NOTES.md").read_text()
    # Read-only once published.
    assert not os.access(rel / "tables", os.W_OK) or os.geteuid() == 0
    assert not (rel / "tables").stat().st_mode & 0o222


def test_no_direct_identifier_or_native_id_in_any_product(released_ws):
    rel = _first(released_ws)
    con = _con()
    z = released_ws.zones
    ids = f"read_parquet('{z}/identifiers/*.parquet')"
    con.execute(f"""CREATE TABLE direct AS SELECT DISTINCT v FROM (
        SELECT pnc AS v FROM {ids} UNION ALL SELECT other_id FROM {ids} UNION ALL SELECT postcode FROM {ids}
        UNION ALL SELECT record_key FROM {ids}) WHERE v IS NOT NULL""")
    for path in (rel / "tables").glob("*.parquet"):
        cols = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()}
        assert not set(cols) & {"forename", "surname", "date_of_birth", "postcode", "pnc", "cro", "record_key",
                                "case_id", "defendant_id", "booking_id", "prisoner_number", "crn"}, path.name
        for col, ctype in cols.items():
            if ctype != "VARCHAR":
                continue
            hits = con.execute(f"""SELECT count(*) FROM read_parquet('{path}') p JOIN direct d
                ON p."{col}" = d.v""").fetchall()[0][0]
            assert hits == 0, (path.name, col)


def _tamper(monkeypatch, table: str, wrap) -> None:
    """The release makes `table` from `wrap(its SQL)`, as a careless transformation might."""
    real_plan = release_stage.plan_products

    def tampered(ws):
        products = real_plan(ws)
        target = next(p for p in products if p.name == table)
        target.sql = wrap(target.sql)
        return products

    monkeypatch.setattr(release_stage, "plan_products", tampered)


@pytest.mark.parametrize("plant", ["surname", "date_of_birth", "pnc", "native_id"])
def test_privacy_guard_fails_a_release_with_a_planted_identifier(released_ws, plant, monkeypatch):
    before = published(released_ws)
    con = _con()
    z = released_ws.zones
    value = {
        "surname": f"SELECT upper(surname) FROM read_parquet('{z}/identifiers/magistrates__defendants.parquet') WHERE length(surname) > 5 LIMIT 1",
        "date_of_birth": f"SELECT strftime(date_of_birth, '%Y-%m-%d') FROM read_parquet('{z}/identifiers/prison__bookings.parquet') WHERE date_of_birth IS NOT NULL LIMIT 1",
        "pnc": f"SELECT pnc FROM read_parquet('{z}/identifiers/probation__events.parquet') WHERE pnc IS NOT NULL LIMIT 1",
        "native_id": f"SELECT case_id FROM read_parquet('{z}/content/magistrates__defendants.parquet') LIMIT 1",
    }[plant]
    planted = con.execute(value).fetchall()[0][0]
    # Replace one row's outcome with the identifier, as a careless transformation might.
    _tamper(monkeypatch, "magistrates__defendants", lambda sql: f"SELECT * REPLACE (CASE WHEN row_number() OVER () = 7 "
                                                              f"THEN '{planted}' ELSE outcome END AS outcome) FROM ({sql})")
    with Engine() as engine, pytest.raises(ReleaseError, match="magistrates__defendants.outcome: 1 value") as exc:
        release(released_ws, engine, salt=SALT)
    assert planted not in str(exc.value)  # the guard names the column, never the value
    assert published(released_ws) == before
    assert not [p for p in (released_ws.root / "releases").iterdir() if p.name.startswith(".")]


def test_privacy_guard_catches_a_released_date_of_birth_column(released_ws, monkeypatch):
    ids = released_ws.zones / "identifiers" / "prison__bookings.parquet"
    _tamper(monkeypatch, "prison__bookings", lambda sql: (
        f"SELECT t.*, i.date_of_birth AS reception_note_date FROM ({sql}) t LEFT JOIN (SELECT keyed_hash(record_key) "
        f"AS h, date_of_birth FROM read_parquet('{ids}')) i ON i.h = t.row_id_hash"))
    with Engine() as engine, pytest.raises(ReleaseError, match="reception_note_date: equals the date of birth of the "
                                                               "person its row is about"):
        release(released_ws, engine, salt=SALT)


def test_same_salt_same_hashes_and_another_salt_joins_to_nothing(released_ws):
    first = _first(released_ws)
    with Engine() as engine:
        second = release(released_ws, engine, salt=SALT).path
        # Another key carries nothing over: refused unless a new series of ids is asked for.
        with pytest.raises(ReleaseError, match="hashing key differs.*--new-series"):
            release(released_ws, engine, salt=OTHER_SALT)
        third = release(released_ws, engine, salt=OTHER_SALT, new_series=True).path
    con = _con()
    q = "SELECT row_id_hash, person_id_medium FROM read_parquet('{}') ORDER BY 1"
    a = con.execute(q.format(first / "tables" / "person_link_lookup.parquet")).fetchall()
    b = con.execute(q.format(second / "tables" / "person_link_lookup.parquet")).fetchall()
    assert a == b
    joined = con.execute(f"""SELECT count(*) FROM read_parquet('{first}/tables/person_link_lookup.parquet') x
        JOIN read_parquet('{third}/tables/person_link_lookup.parquet') y USING (row_id_hash)""").fetchall()[0][0]
    assert joined == 0
    notes = (second / "RELEASE_NOTES.md").read_text()
    assert "Schema changes since v0001" in notes and "None: every table and column is as before." in notes
    # Hashes are consistent across the tables of a release: every content row joins the lookup.
    orphans = con.execute(f"""SELECT count(*) FROM read_parquet('{first}/tables/crown__defendants.parquet') c
        ANTI JOIN read_parquet('{first}/tables/person_link_lookup.parquet') l USING (row_id_hash)""").fetchall()[0][0]
    journeys = con.execute(f"""SELECT count(*) FROM read_parquet('{first}/tables/case_journeys.parquet') j
        JOIN read_parquet('{first}/tables/magistrates__defendants.parquet') m ON m.case_id_hash = j.magistrates_case_hash
        """).fetchall()[0][0]
    assert orphans == 0 and journeys > 1000
    # diff across keys: nothing joins, and it says so.
    from datafirst.release.diff import diff

    with Engine() as engine:
        d = diff(engine, first, third)
    assert not d["same_key"] and d["records"]["in_both"] == 0


def test_a_crash_mid_release_leaves_the_previous_release_and_no_partial_folder(released_ws, monkeypatch):
    before = published(released_ws)
    sums = {p.name: (p / "SHA256SUMS").read_text() for p in before}
    from datafirst.release import documentation

    def crash(*args, **kwargs):
        raise RuntimeError("disk pulled out mid-release")

    monkeypatch.setattr(documentation, "write_all", crash)
    with Engine() as engine, pytest.raises(RuntimeError, match="disk pulled out"):
        # new_series: an earlier test may have left a release made with another key as the latest.
        release(released_ws, engine, salt=SALT, new_series=True)
    after = published(released_ws)
    assert after == before and all(verify(p) == [] for p in after)
    assert {p.name: (p / "SHA256SUMS").read_text() for p in after} == sums
    assert not [p for p in (released_ws.root / "releases").iterdir() if p.name.startswith(".")]


def test_missing_salt_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.delenv(SALT_FILE_ENV, raising=False)
    with pytest.raises(SecretError, match="DATAFIRST_SALT_FILE"):
        load_salt()
    short = tmp_path / "short"
    short.write_text("abc")
    monkeypatch.setenv(SALT_FILE_ENV, str(short))
    with pytest.raises(SecretError, match="shorter than") as exc:
        load_salt()
    assert "abc" not in str(exc.value)
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(128, 256)))
    monkeypatch.setenv(SALT_FILE_ENV, str(binary))
    with pytest.raises(SecretError, match="not text"):
        load_salt()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv(SALT_FILE_ENV, str(empty))
    with pytest.raises(SecretError, match=f"the salt file {empty} .* is empty"):
        load_salt()
    # The salt itself put in the variable meant for its file's path: refused, and not shown.
    secret = "b3fcac7b0e6f4e7d9a1c2b3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d9519"
    monkeypatch.setenv(SALT_FILE_ENV, secret)
    with pytest.raises(SecretError, match="not the salt itself") as exc:
        load_salt()
    assert secret not in str(exc.value) and secret[:8] not in str(exc.value)


# Keys a person would choose: short, few characters, words, a word and a year, repeated patterns,
# sequences, a keyboard walk. None may be accepted, from the variable or from a key file.
WEAK_KEYS = ["a" * 16, "justice-data-2024", "a" * 64, "justice-data-2024" * 2, "justice-data-2024-justice-data-2024",
             "Manchester-Magistrates-Court-2024", "correcthorsebatterystaple2024extra", "abcdefghijklmnop" * 4,
             "0123456789" * 4, "qwertyuiopasdfghjklzxcvbnm123456", "P@ssw0rd!P@ssw0rd!2024-2025-2026xx",
             "Tr0ub4dor&3-Tr0ub4dor&3-Tr0ub4dor&3", "JUSTICE-DATA-SERVICE-LONDON-2024"]


@pytest.mark.parametrize("key", WEAK_KEYS)
def test_weak_keys_are_refused_without_being_shown(key, monkeypatch, tmp_path):
    monkeypatch.delenv(SALT_FILE_ENV, raising=False)
    monkeypatch.setenv(SALT_ENV, key)
    with pytest.raises(SecretError, match="too easy to guess.*datafirst key new") as exc:
        load_salt()
    assert key not in str(exc.value) and key[:6] not in str(exc.value)
    file = tmp_path / "key"
    file.write_text(key + "\n")
    file.chmod(0o600)
    monkeypatch.delenv(SALT_ENV)
    monkeypatch.setenv(SALT_FILE_ENV, str(file))
    with pytest.raises(SecretError, match=f"file {file} .*too easy to guess") as exc:
        load_salt()
    assert key[:6] not in str(exc.value).replace(str(file), "")
    # A release given the key directly (as tests and scripts do) refuses it too, before any work.
    (tmp_path / "extracts").mkdir()
    ws = Workspace.init(tmp_path / "ws", tmp_path / "extracts")
    with Engine() as engine, pytest.raises(SecretError, match="too easy to guess"):
        release(ws, engine, salt=key)
    assert not (ws.root / "releases").exists()


def test_random_keys_pass_the_strength_check(monkeypatch):
    """Keys from a random generator pass every time: `datafirst key new` and `openssl rand -hex
    32` (64 hex characters), and 32 random bytes in base64; the estimate keeps a wide margin."""
    import base64
    import random

    from datafirst.release.hashing_key import MIN_BITS, estimated_bits

    monkeypatch.delenv(SALT_FILE_ENV, raising=False)
    draw = random.Random(23)  # fixed draws: base64 keys fall short about once in 100,000
    hex_keys = [draw.randbytes(32).hex() for _ in range(3000)]
    assert min(estimated_bits(k) for k in hex_keys) > MIN_BITS + 40
    b64_keys = [base64.b64encode(draw.randbytes(32)).decode() for _ in range(3000)]
    assert min(estimated_bits(k) for k in b64_keys) > MIN_BITS
    for key in (hex_keys[0], b64_keys[0], SALT, OTHER_SALT):
        monkeypatch.setenv(SALT_ENV, key)
        assert load_salt() == key


def test_both_key_variables_set_is_refused(monkeypatch, tmp_path):
    """DATAFIRST_SALT used to win silently, even over a key file that was not there."""
    monkeypatch.setenv(SALT_ENV, SALT)
    for file in (tmp_path / "missing.key", _key_file(tmp_path / "real.key", OTHER_SALT, 0o600)):
        monkeypatch.setenv(SALT_FILE_ENV, str(file))
        with pytest.raises(SecretError, match="both DATAFIRST_SALT and DATAFIRST_SALT_FILE are set") as exc:
            load_salt()
        assert SALT not in str(exc.value) and OTHER_SALT not in str(exc.value)
    monkeypatch.delenv(SALT_ENV)
    assert load_salt() == OTHER_SALT


def _key_file(path: Path, key: str, mode: int) -> Path:
    path.write_text(key + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666, 0o700 | 0o004])
def test_a_key_file_open_to_group_or_others_is_refused(mode, monkeypatch, tmp_path):
    monkeypatch.delenv(SALT_ENV, raising=False)
    file = _key_file(tmp_path / "open.key", SALT, mode)
    monkeypatch.setenv(SALT_FILE_ENV, str(file))
    with pytest.raises(SecretError, match=f"group or others \\(mode 0{mode:o}\\): run `chmod 600 {file}`") as exc:
        load_salt()
    assert SALT not in str(exc.value)
    for private in (0o600, 0o400):
        file.chmod(private)
        assert load_salt() == SALT


def test_key_new_writes_a_private_random_key_and_never_overwrites(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from datafirst.cli import app
    from datafirst.release.hashing_key import make_demo_salt

    old_umask = os.umask(0)  # the file's mode must not depend on the umask
    try:
        done = CliRunner().invoke(app, ["key", "new", str(tmp_path / "datafirst.key")])
    finally:
        os.umask(old_umask)
    assert done.exit_code == 0, done.output
    path = tmp_path / "datafirst.key"
    key = path.read_text().strip()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert len(key) == 64 and int(key, 16) >= 0
    assert key not in done.output and f"export DATAFIRST_SALT_FILE={path}" in done.output
    assert [p.name for p in tmp_path.iterdir()] == ["datafirst.key"]  # no staged file left behind
    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.setenv(SALT_FILE_ENV, str(path))
    assert load_salt() == key
    again = CliRunner().invoke(app, ["key", "new", str(path)])
    assert again.exit_code == 2 and "already exists" in again.output and path.read_text().strip() == key
    (tmp_path / "link.key").symlink_to(tmp_path / "nowhere")  # not followed to create a file elsewhere
    dangling = CliRunner().invoke(app, ["key", "new", str(tmp_path / "link.key")])
    assert dangling.exit_code == 2 and not (tmp_path / "nowhere").exists()
    # The demo's key is made the same way, in a folder only its owner can enter.
    demo = make_demo_salt(tmp_path / "demo" / "secrets" / "demo.salt")
    assert (demo.stat().st_mode & 0o777) == 0o600 and (demo.parent.stat().st_mode & 0o777) == 0o700
    monkeypatch.setenv(SALT_FILE_ENV, str(demo))
    assert load_salt() == demo.read_text().strip() != key
    assert make_demo_salt(demo) == demo and load_salt() == demo.read_text().strip()  # kept, not replaced


def test_damaged_release_metadata_is_refused_with_a_message(tmp_path):
    folder = tmp_path / "releases" / "v0001"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "SHA256SUMS").write_text(
        "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb  a.txt\n\n")
    assert verify(folder) == ["SHA256SUMS line 2 (not '<sha256>  <file>')"]
    (tmp_path / "releases" / "ledger.json").write_text('{"releases": [')
    with pytest.raises(ReleaseError, match="ledger.json is unreadable"):
        release_stage.read_ledger(Workspace(tmp_path))


def test_salt_never_appears_in_outputs(released_ws):
    for path in released_ws.root.rglob("*"):
        if path.is_file():
            assert SALT.encode() not in path.read_bytes(), path


def test_quality_summaries_in_a_release_are_aggregates(released_ws):
    rel = _first(released_ws)
    dq = json.loads((rel / "quality" / "data_quality.json").read_text())
    lq = json.loads((rel / "quality" / "linkage_quality.json").read_text())
    assert "borderline_sample" not in lq and "quarantine_reasons" not in json.dumps(dq)
    # No small count, and none to be had back from what is released: bands merged (they sum to the
    # people), shares hidden when their count or its complement is small, rows read hidden with
    # a small quarantine.
    for t, sizes in lq["cluster_sizes"].items():
        assert all(isinstance(v, int) and (v == 0 or v >= 10) for v in sizes.values()), sizes
        assert sum(sizes.values()) == lq["people"][t]
    shares = [(m["share"], m["records"]) for m in lq["match_rates"]] + [
        (g["linked_share"], g["records"]) for g in lq["linked_share_by_group"]]
    assert any(share is not None for share, _ in shares)
    for share, records in shares:
        if share is not None:
            assert round(share * records) in (0, records) or 10 <= round(share * records) <= records - 10
    for kind in {g["group_by"] for g in lq["linked_share_by_group"]}:
        assert all(g["records"] >= 10 for g in lq["linked_share_by_group"] if g["group_by"] == kind)
    for t in dq["tables"]:
        assert t["rows_read"] is None or t["rows_read"] == t["rows_landed"] + (
            0 if t["rows_quarantined"] == "<10" else t["rows_quarantined"]) and t["rows_quarantined"] != "<10"


def test_readme_main_command_runs_the_whole_flow(tmp_path):
    """The console script installed by the README's command, run as a user would (small world)."""
    exe = Path(sys.executable).parent / "datafirst"
    env = {k: v for k, v in os.environ.items() if k not in (SALT_ENV, SALT_FILE_ENV)}
    out = tmp_path / "demo"
    done = subprocess.run([str(exe), "demo", "--out", str(out), "--people", "1500"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Demonstration key" in done.stdout and "Latest release" in done.stdout
    release_dir = out / "releases" / "v0001"
    assert verify(release_dir) == [] and (release_dir / "dictionary.md").is_file()
    assert not list((out / "releases").glob("*/*.salt"))
    again = subprocess.run([str(exe), "run", "-w", str(out)], capture_output=True, text=True, timeout=600,
                           env={**env, SALT_FILE_ENV: str(out / "secrets" / "demo.salt")})
    assert again.returncode == 0 and again.stdout.count("skipped") >= 4, again.stdout


def _sensitive_world(tmp_path: Path, other_id: str):
    """A minimal identifiers zone, content zone and clusters file holding one record."""
    from datafirst.release.privacy import build_sensitive_values

    con = _con()
    (tmp_path / "identifiers").mkdir()
    (tmp_path / "content").mkdir()
    con.execute(f"""COPY (SELECT 'src|t|1' AS record_key, 'smithson' AS surname, 'johnny' AS forename,
                                 NULL::VARCHAR AS pnc, NULL::VARCHAR AS cro, '{other_id}' AS other_id,
                                 'AB1 2CD' AS postcode, NULL::VARCHAR AS address, DATE '1980-05-06' AS date_of_birth)
                    TO '{tmp_path}/identifiers/src__t.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT 'P0123456789abcdef' AS person_id_high, 'P0123456789abcdef' AS person_id_medium,
                                 'P0123456789abcdef' AS person_id_low) TO '{tmp_path}/clusters.parquet' (FORMAT parquet)""")
    return lambda engine: build_sensitive_values(engine, tmp_path / "identifiers" / "*.parquet", tmp_path / "content",
                                                 [], tmp_path / "clusters.parquet")


@pytest.mark.parametrize("released", ["0a1b2c3d4e5f60718293", "P0a1b2c3d4e5f60718293", " 0A1B2C3D4E5F60718293"])
def test_privacy_guard_checks_hash_shaped_values_when_an_identifier_has_that_shape(tmp_path, released):
    """Hashes and person ids are left out of the lookup only while no identifier looks like one."""
    from datafirst.release.privacy import check_tables
    from datafirst.release.products import forget_keyed_hash, install_keyed_hash

    hex_id = released.strip().lower().removeprefix("p")
    shaped = "p" + hex_id if released.startswith("P") else hex_id  # the identifier equal to the released value
    product = tmp_path / "product.parquet"
    _con().execute(f"""COPY (SELECT * FROM (VALUES ('{released}', 'code'), ('ffffffffffffffffffff', 'code'))
                             t(row_id_hash, outcome)) TO '{product}' (FORMAT parquet)""")
    for other_id, caught in ((shaped, True), ("PRISONER-1", False)):
        root = tmp_path / other_id.replace("/", "_")
        root.mkdir()
        with Engine() as engine:
            install_keyed_hash(engine, SALT)
            try:
                sensitive = _sensitive_world(root, other_id)(engine)
                problems = check_tables(engine, {"product": product}, set(), sensitive)
            finally:
                forget_keyed_hash(engine)
        assert problems == (["product.row_id_hash: 1 value(s) equal to an other id from the identifiers zone"]
                            if caught else []), (other_id, problems)


def test_table_profile_counts_lists_few_values_and_leaves_hashes_out_of_the_checked_values(tmp_path):
    from datafirst.release.profile import table_profile

    path = tmp_path / "t.parquet"
    _con().execute(f"""COPY (SELECT * FROM (VALUES
            ('0a1b2c3d4e5f60718293', 'guilty', ['crown', 'prison'], true, 'ffffffffffffffffffff', 'Pabcdefabcdefabcdefab'),
            ('1a1b2c3d4e5f60718293', 'guilty', ['crown'], NULL, 'Smith', 'Pbbcdefabcdefabcdefab'),
            ('2a1b2c3d4e5f60718293', NULL, NULL, false, 'ffffffffffffffffffff', 'Pabcdefabcdefabcdefab'),
            ('3a1b2c3d4e5f60718293', 'dismissed', ['crown'], true, NULL, 'Pabcdefabcdefabcdefab'))
        t(row_id_hash, outcome, sources, flag, code, into_person_id)) TO '{path}' (FORMAT parquet)""")
    with Engine() as engine:
        p = table_profile(engine, path)
    assert {c: (f["rows"], f["missing"], f["distinct_values"]) for c, f in p.items()} == {
        "row_id_hash": (4, 0, 4), "outcome": (4, 1, 2), "sources": (4, 1, 2), "flag": (4, 1, 2), "code": (4, 1, 2),
        "into_person_id": (4, 0, 2)}
    assert p["outcome"]["allowed_values"] == ["dismissed", "guilty"]
    assert p["flag"]["allowed_values"] == ["False", "True"]
    # A hash-shaped value among a few codes is still listed (read again, not left out).
    assert p["code"]["allowed_values"] == ["Smith", "ffffffffffffffffffff"]
    assert "allowed_values" not in p["row_id_hash"] and "allowed_values" not in p["into_person_id"]  # ids, not codes
    # What the guard looks up: text that is not shaped like a hash, and every list element.
    assert p["row_id_hash"]["checked_values"] == [] and p["into_person_id"]["checked_values"] == []
    assert p["code"]["checked_values"] == ["Smith"]
    assert p["outcome"]["checked_values"] == ["dismissed", "guilty"]
    assert p["sources"]["checked_values"] == ["crown", "prison"]


def test_privacy_guard_counts_every_row_holding_an_identifier_in_any_case_or_spacing(tmp_path):
    from datafirst.release.privacy import check_tables
    from datafirst.release.products import forget_keyed_hash, install_keyed_hash

    product = tmp_path / "product.parquet"
    _con().execute(f"""COPY (SELECT * FROM (VALUES ('a', 'PRISONER-1'), ('b', ' prisoner-1 '), ('c', 'code'),
                             ('d', 'PRISONER-1')) t(row_id_hash, note)) TO '{product}' (FORMAT parquet)""")
    with Engine() as engine:
        install_keyed_hash(engine, SALT)
        try:
            problems = check_tables(engine, {"product": product}, set(), _sensitive_world(tmp_path, "PRISONER-1")(engine))
        finally:
            forget_keyed_hash(engine)
    assert problems == ["product.note: 3 value(s) equal to an other id from the identifiers zone"]


@pytest.mark.parametrize("entries, passes", [
    (["Smithson"] + [f"Offence {i}" for i in range(29)], True),  # one name in 30 entries: an offence title
    (["Smithson", "Custody", "Community order", "Discharge"], True),  # one in a short list: a sentence of a fine
    (["Smithson", "Johnny"] + [f"Offence {i}" for i in range(8)], False),  # two names in ten: a list of names
])
def test_privacy_guard_excuses_a_name_only_as_an_entry_of_a_declared_list_of_few_names(tmp_path, entries, passes):
    """At millions of records a typo of Carson is Arson, an offence title, and some surname is
    Fine, a sentence: a surname equal to an entry of a declared list of values (a code list, a
    contract's `allowed`) is public reference data wherever it is released. A list of names is no
    excuse (a contract declaring the zone's names is refused whole), a name outside any list is
    still refused, and so is a forename and a surname side by side."""
    from datafirst.release.privacy import check_tables
    from datafirst.release.products import forget_keyed_hash, install_keyed_hash

    code_list, product, other = (tmp_path / f"{n}.parquet" for n in ("code_list__offences", "offences", "other"))
    con = _con()
    con.execute(f"COPY (SELECT unnest({entries}) AS title) TO '{code_list}' (FORMAT parquet)")
    con.execute(f"""COPY (SELECT * FROM (VALUES ('a', 'Smithson'), ('b', 'Offence 1'), ('c', 'Smithson'))
                    t(row_id_hash, offence_title)) TO '{product}' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT * FROM (VALUES ('a', 'Johnny Smithson'))
                    t(row_id_hash, note)) TO '{other}' (FORMAT parquet)""")
    tables = {"code_list__offences": code_list, "offences": product}
    with Engine() as engine:
        install_keyed_hash(engine, SALT)
        try:
            sensitive = _sensitive_world(tmp_path, "ID-1")(engine)
            listed = {"code_list__offences.title": entries, "offences.offence_title": entries}
            problems = check_tables(engine, tables, set(), sensitive, declared_lists=listed)
            outside = check_tables(engine, {"offences": product}, set(), sensitive)
            paired = check_tables(engine, {**tables, "other": other}, set(), sensitive, declared_lists=listed)
        finally:
            forget_keyed_hash(engine)
    if passes:
        assert problems == []
    else:
        assert "code_list__offences.title: 1 value(s) equal to a surname from the identifiers zone" in problems
        assert "offences.offence_title: 2 value(s) equal to a surname from the identifiers zone" in problems
    assert outside == ["offences.offence_title: 2 value(s) equal to a surname from the identifiers zone"]
    assert any(p.startswith("other.note:") and "forename and a surname" in p for p in paired), paired


def test_privacy_guard_finds_identifiers_written_otherwise_or_inside_longer_text(released_ws, tmp_path):
    """A surname with an apostrophe the zone's cleaned form lacks, a postcode inside a JSON object,
    a PNC number with a two-digit year inside a note, an address as the zone holds it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datafirst.release.privacy import build_sensitive_values, check_table
    from datafirst.release.products import forget_keyed_hash, install_keyed_hash
    from datafirst.sources.contract import load_contracts

    z = released_ws.zones
    surname, postcode, address = _con().execute(f"""SELECT surname, postcode, address FROM
        read_parquet('{z}/identifiers/*.parquet', union_by_name = true)
        WHERE length(surname) >= 6 AND NOT contains(surname, ' ') AND postcode IS NOT NULL AND address IS NOT NULL
        LIMIT 1""").fetchall()[0]
    (pnc,) = _con().execute(f"""SELECT pnc FROM read_parquet('{z}/identifiers/*.parquet', union_by_name = true)
                                WHERE pnc LIKE '20%' LIMIT 1""").fetchall()[0]
    table = pq.read_table(_first(released_ws) / "tables" / "prison__bookings.parquet")
    plain = ["ok"] * table.num_rows
    planted = {"name_note": f"{surname[:2]}'{surname[2:]}".title(),
               "contact": '{"town": "Anytown", "postcode": "' + postcode.replace(" ", "-") + '"}',
               "police_note": f"seen with ref {pnc[2:4]}/{pnc[5:]} on arrival",
               "address_note": address.upper()}
    for column, value in planted.items():
        table = table.append_column(column, pa.array([value if i == 4 else x for i, x in enumerate(plain)]))
    path = tmp_path / "prison__bookings.parquet"
    pq.write_table(table.replace_schema_metadata(None), path)
    with Engine() as engine:
        install_keyed_hash(engine, SALT)
        try:
            sensitive = build_sensitive_values(engine, z / "identifiers" / "*.parquet", z / "content",
                                               load_contracts(released_ws.contracts), z / "links" / "clusters.parquet")
            problems = check_table(engine, "prison__bookings", path, set(), sensitive)
        finally:
            forget_keyed_hash(engine)
    for column, kind in (("name_note", "a surname"), ("contact", "a postcode"), ("police_note", "a pnc"),
                         ("address_note", "an address")):
        assert f"prison__bookings.{column}: 1 value(s) equal to {kind} from the identifiers zone" in problems, problems
    assert not any(v.lower() in " ".join(problems).lower() for v in (surname, postcode, pnc, address))


def test_privacy_guard_refuses_free_text(released_ws, monkeypatch):
    """A notes column: long, nearly every value its own. It may name or describe people however
    few of its values hold a name the guard knows."""
    before = published(released_ws)
    _tamper(monkeypatch, "magistrates__defendants", lambda sql: (
        f"SELECT *, 'seen at the address on ' || substr(md5(row_id_hash), 1, 12) AS officer_notes FROM ({sql})"))
    with Engine() as engine, pytest.raises(ReleaseError, match=r"magistrates__defendants\.officer_notes: looks like "
                                                               r"free text \([0-9,]+ distinct values in [0-9,]+, 35 "
                                                               r"characters and 6 words long on average\)"):
        release(released_ws, engine, salt=SALT, new_series=True)  # an earlier test released with another key
    assert published(released_ws) == before
