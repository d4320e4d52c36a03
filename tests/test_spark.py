"""The same pipeline on Spark (local mode) and on DuckDB, with the same answer.

A small world's earlier delivery goes through ingest, standardise, train, link and release on
Spark, then its later delivery (new, corrected and deleted rows) incrementally. DuckDB takes
the later delivery through ingest, standardise, link and release in full, with the model Spark
trained (so both score with the same parameters, and a model crosses engines). Every zone and
the release are then compared row by row. Real Spark, real Splink on both backends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")

from datafirst.engine import Engine  # noqa: E402
from datafirst.engine.spark_sql import (  # noqa: E402
    SparkTranslator, TranslationError, model_for_dialect, spark_date_format, translate_condition)
from datafirst.link.quality import write_report as link_report  # noqa: E402
from datafirst.link.stage import link  # noqa: E402
from datafirst.link.train import train  # noqa: E402
from datafirst.release.privacy import build_sensitive_values, check_table  # noqa: E402
from datafirst.release.products import forget_keyed_hash, install_keyed_hash  # noqa: E402
from datafirst.release.stage import release  # noqa: E402
from datafirst.sources.contract import load_contracts  # noqa: E402
from datafirst.sources.ingest import ingest  # noqa: E402
from datafirst.standardise.quality import write_report as dq_report  # noqa: E402
from datafirst.standardise.stage import standardise  # noqa: E402
from datafirst.workspace import Workspace  # noqa: E402
from datafirst.world import generate_world  # noqa: E402
from datafirst.world.deliveries import write_deliveries  # noqa: E402

from .conftest import TEST_SALT  # noqa: E402

THRESHOLDS = ("high", "medium", "low")


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    from datafirst.engine.spark_engine import SparkEngine

    engine = SparkEngine("local[2]", temp_directory=tmp_path_factory.mktemp("spark-scratch"))
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, spark):
    """Spark takes an earlier delivery through the whole pipeline (training included), then the
    later one incrementally; DuckDB takes the later one in full with Spark's model."""
    root = tmp_path_factory.mktemp("spark")
    world = root / "world"
    generate_world(world, 1_500, seed=23)
    counts = write_deliveries(world, root / "earlier", root / "later", new=0.02, corrected=0.005, deleted=0.005,
                              seed=3)
    shutil.copytree(root / "earlier", root / "extracts")
    on_spark = Workspace.init(root / "spark", root / "extracts")
    on_duckdb = Workspace.init(root / "duckdb", root / "later")
    ingest(on_spark, spark)
    standardise(on_spark, spark, as_of="2025-06-30")
    model = train(on_spark, spark)
    link(on_spark, spark)
    release(on_spark, spark, salt=TEST_SALT)
    shutil.rmtree(root / "extracts")
    shutil.copytree(root / "later", root / "extracts")
    ingest(on_spark, spark)
    standardise(on_spark, spark, as_of="2025-06-30")
    dq_report(on_spark, spark)
    spark_link = link(on_spark, spark)
    link_report(on_spark, spark)
    release(on_spark, spark, salt=TEST_SALT)
    shutil.copytree(on_spark.root / "models", on_duckdb.root / "models")
    with Engine() as engine:
        ingest(on_duckdb, engine)
        standardise(on_duckdb, engine, as_of="2025-06-30")
        dq_report(on_duckdb, engine)
        duckdb_link = link(on_duckdb, engine)
        release(on_duckdb, engine, salt=TEST_SALT)
    return {"spark": on_spark, "duckdb": on_duckdb, "model": model, "links": (spark_link, duckdb_link),
            "delivery": counts, "releases": ("v0002", "v0001")}


def _differences(a: Path, b: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Rows of one Parquet file missing from the other, both ways, over the shared columns."""
    con = duckdb.connect()
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM '{a}'").fetchall() if r[0] not in skip]
    sel = ", ".join(f'"{c}"' for c in cols)
    only = {}
    for name, x, y in (("only_in_spark", a, b), ("only_in_duckdb", b, a)):
        only[name] = con.execute(f"SELECT count(*) FROM (SELECT {sel} FROM '{x}' EXCEPT ALL "
                                 f"SELECT {sel} FROM '{y}')").fetchall()[0][0]
    return only


def _types(path: Path) -> list[tuple[str, str]]:
    return [(f.name, str(f.type).replace(" not null", "")) for f in pq.read_schema(path)]


def _same_zone(runs, zone: str, skip: tuple[str, ...] = ()) -> list[str]:
    spark_files = sorted(p.name for p in runs["spark"].zone(zone).glob("*.parquet"))
    duckdb_files = sorted(p.name for p in runs["duckdb"].zone(zone).glob("*.parquet"))
    assert spark_files == duckdb_files
    for name in spark_files:
        a, b = runs["spark"].zone(zone) / name, runs["duckdb"].zone(zone) / name
        assert _types(a) == _types(b), name
        assert _differences(a, b, skip) == {"only_in_spark": 0, "only_in_duckdb": 0}, name
    return spark_files


def test_same_landed_and_quarantined_rows(runs):
    # When and whether a table was read again depends on the workspace's history (Spark's ingested twice).
    files = _same_zone(runs, "landed", skip=("_loaded_at", "loaded_at", "reused"))
    assert "_quarantine.parquet" in files and "_accounting.parquet" in files
    quarantined = pq.read_table(runs["spark"].zone("landed") / "_quarantine.parquet").num_rows
    assert quarantined > 0  # the world plants bad rows: both engines must find the same ones


def test_same_standardised_identifiers_and_content(runs):
    assert len(_same_zone(runs, "identifiers")) >= 5
    # Content keeps its rows' load time, which depends on when each workspace read the table.
    assert len(_same_zone(runs, "content", skip=("_loaded_at",))) >= 10


def test_same_edges_and_clusters_at_every_threshold(runs):
    spark_zone, duckdb_zone = runs["spark"].zone("links"), runs["duckdb"].zone("links")
    con = duckdb.connect()
    pairs = con.execute(f"""
        SELECT count(*), count(d.record_key_l), count(s.record_key_l),
               max(abs(s.match_weight - d.match_weight))
        FROM '{spark_zone / "edges.parquet"}' s FULL JOIN '{duckdb_zone / "edges.parquet"}' d
          USING (record_key_l, record_key_r)""").fetchall()[0]
    n, in_duckdb, in_spark, worst = pairs
    assert n > 1000 and n == in_duckdb == in_spark  # the same scored pairs
    assert worst < 1e-9  # the same weights, to floating-point summation order
    # Cluster labels are digests of each cluster's smallest record key: equal labels mean
    # equal clusters, record by record.
    assert _differences(spark_zone / "clusters.parquet", duckdb_zone / "clusters.parquet",
                        skip=("strongest_link_medium",)) == {"only_in_spark": 0, "only_in_duckdb": 0}
    assert _differences(spark_zone / "case_journeys.parquet", duckdb_zone / "case_journeys.parquet") == {
        "only_in_spark": 0, "only_in_duckdb": 0}
    spark_link, duckdb_link = runs["links"]
    assert spark_link.clusters == duckdb_link.clusters
    # Spark linked only what changed since its earlier delivery; DuckDB linked everything.
    assert spark_link.mode == "incremental" and duckdb_link.mode == "full"
    changes, delivered = spark_link.changes, runs["delivery"]
    assert (changes.new, changes.changed, changes.deleted) == (delivered["new"], delivered["corrected"],
                                                               delivered["deleted"])


def test_model_trained_on_spark_is_spark_sql_and_links_on_duckdb(runs):
    model = json.loads(runs["model"].read_text(encoding="utf-8"))
    meta = json.loads(runs["model"].with_suffix(".meta.json").read_text(encoding="utf-8"))
    assert meta["code"]["engine"] == "spark"
    conditions = " ".join(level["sql_condition"] for c in model["comparisons"] for level in c["comparison_levels"])
    assert "jaro_winkler(" in conditions  # Spark's similarity jar; DuckDB linked with the same model
    assert '"forename_l"' not in conditions  # in Spark's SQL that would be a string, not a column
    duckdb_version = model_for_dialect(model, "duckdb")
    back = " ".join(level["sql_condition"] for c in duckdb_version["comparisons"]
                    for level in c["comparison_levels"]).lower()
    assert "jaro_winkler_similarity(" in back and "jaro_winkler(" not in back


def test_same_release_tables_schemas_and_people(runs):
    spark_version, duckdb_version = runs["releases"]
    a = sorted((runs["spark"].root / "releases" / spark_version / "tables").glob("*.parquet"))
    b_dir = runs["duckdb"].root / "releases" / duckdb_version / "tables"
    assert [p.name for p in a] == sorted(p.name for p in b_dir.glob("*.parquet"))
    con = duckdb.connect()
    for path in a:
        other = b_dir / path.name
        if path.name == "person_id_changes.parquet":  # Spark's is a second release: it has moves to log
            assert _types(path) == _types(other)
            continue
        # Names and types; not nullability, which each engine infers from its own plan.
        assert _types(path) == _types(other), path.name
        # Person ids are opaque and drawn from each release's own id series: compare everything
        # else row by row, and the people as partitions of the records.
        ids = tuple(c for c in pq.read_schema(path).names if c.startswith("person_id") or c == "into_person_id")
        assert _differences(path, other, skip=ids) == {"only_in_spark": 0, "only_in_duckdb": 0}, path.name
    lookup_s, lookup_d = (d / "person_link_lookup.parquet" for d in (a[0].parent, b_dir))
    for t in THRESHOLDS:
        col = f"person_id_{t}"
        pairs, left, right = con.execute(f"""
            SELECT count(DISTINCT (s.{col}, d.{col})), count(DISTINCT s.{col}), count(DISTINCT d.{col})
            FROM '{lookup_s}' s JOIN '{lookup_d}' d USING (source_dataset, row_id_hash)""").fetchall()[0]
        assert pairs == left == right, t  # a one-to-one map between the two engines' people


def test_privacy_guard_on_spark_finds_planted_identifiers(runs, spark, tmp_path):
    """The guard's SQL, translated for Spark, still finds what it must (and nothing in a clean table)."""
    ws = runs["spark"]
    spark_version = runs["releases"][0]
    install_keyed_hash(spark, TEST_SALT)
    try:
        sensitive = build_sensitive_values(spark, ws.zone("identifiers") / "*.parquet", ws.zone("content"),
                                           load_contracts(ws.contracts), ws.zone("links") / "clusters.parquet")
        clean = ws.root / "releases" / spark_version / "tables" / "prison__bookings.parquet"
        assert check_table(spark, "prison__bookings", clean, set(), sensitive) == []
        ids = pq.read_table(ws.zone("identifiers") / "prison__bookings.parquet").to_pylist()
        person = next(r for r in ids if r["surname"] and len(r["surname"]) >= 5 and r["pnc"] and r["date_of_birth"])
        table = pq.read_table(clean)
        notes = ["ok"] * table.num_rows
        notes[3] = person["surname"].title()
        notes[5] = person["pnc"]
        # A new file: without the Spark schema that the released file carries in its metadata.
        # A PNC number written otherwise inside longer text: found by its shape, looked up cleaned.
        pnc = person["pnc"]
        contact = ["-"] * table.num_rows
        contact[2] = '{"ref": "' + f"{pnc[2:4]}/{pnc[5:]}" + '"}'
        planted = table.append_column("reception_note", pa.array(notes)).append_column(
            "contact", pa.array(contact)).replace_schema_metadata(None)
        path = tmp_path / "prison__bookings.parquet"
        pq.write_table(planted, path)
        problems = check_table(spark, "prison__bookings", path, set(), sensitive)
    finally:
        forget_keyed_hash(spark)
    assert any("reception_note" in p and "surname" in p for p in problems), problems
    assert any("reception_note" in p and "pnc" in p for p in problems), problems
    assert any(p.startswith("prison__bookings.contact:") and "pnc" in p for p in problems), problems
    assert person["surname"].lower() not in " ".join(problems).lower()  # named by column, never by value


def test_an_unnested_value_that_is_not_an_array_of_objects_is_quarantined_on_spark_too(spark, tmp_path):
    from .test_ingest import NESTED, _tiny

    contract = NESTED
    body = ('{"crn": "X1", "reqs": [{"type": "unpaid_work"}, {"type": "curfew"}]}\n{"crn": "X2", "reqs": {"type": "curfew"}}\n'
            '{"crn": "X3", "reqs": ["curfew", 5]}\n{"crn": "X4", "reqs": "curfew"}\n{"crn": "X5", "reqs": 7}\n'
            '{"crn": "X6"}\n{"crn": "X7", "reqs": null}\n{"crn": "X8", "reqs": []}\n')
    counts = {}
    for name, engine in (("spark", spark), ("duckdb", None)):
        (tmp_path / name).mkdir()
        ws = _tiny(tmp_path / name, body, name="ev.jsonl", contract=contract)
        if engine is None:
            with Engine() as duck:
                loads = ingest(ws, duck)
        else:
            loads = ingest(ws, engine)
        counts[name] = {x.table: (x.read, x.landed, x.quarantined) for x in loads}
        counts[name + " quarantined"] = duckdb.connect().execute(
            f"""SELECT row_number, split_part(reason, ':', 1) FROM read_parquet('{ws.zone("landed")}/_quarantine.parquet')
                ORDER BY ALL""").fetchall()
    assert counts["spark"] == counts["duckdb"] == {"events": (8, 8, 0), "requirements": (7, 2, 5)}
    assert counts["spark quarantined"] == counts["duckdb quarantined"]


def test_the_hashing_key_is_in_no_spark_plan_or_error_and_hashes_as_on_duckdb(spark):
    """Spark writes a session variable's value into its plans, which its errors, logs and UI
    show: the key must be read from data, not from a variable."""
    install_keyed_hash(spark, TEST_SALT)
    try:
        query = spark._run("SELECT keyed_hash('x') AS h")
        plans = query._jdf.queryExecution().toString()
        on_spark = query.first()[0]
        with pytest.raises(Exception) as failed:
            spark.execute("SELECT keyed_hash(no_such_column) FROM (SELECT 1 AS a)")
    finally:
        forget_keyed_hash(spark)
    assert "keyed_hash" not in plans and "value" in plans  # the plans read the key's view
    assert TEST_SALT not in plans and TEST_SALT not in str(failed.value)
    with Engine() as engine:
        install_keyed_hash(engine, TEST_SALT)
        assert on_spark == engine.scalar("SELECT keyed_hash('x')")


# --- the translation itself (no Spark session needed) ---------------------------------------

def test_date_formats_keep_duckdb_leniency_and_widths():
    assert spark_date_format("%d/%m/%Y") == "d/M/yyyy"  # 1 or 2 digits, as DuckDB's %d and %m
    assert spark_date_format("%Y%m%d") == "yyyyMMdd"  # adjacent numbers need their widths
    assert spark_date_format("%Y-%m-%dT%H:%M") == "yyyy-M-d'T'H:m"
    with pytest.raises(TranslationError, match="%Q"):
        spark_date_format("%Q")
    # Two-digit years pivot differently (DuckDB: 85 is 1985; Spark: 2085): refused, not guessed.
    with pytest.raises(TranslationError, match="two-digit years"):
        spark_date_format("%d/%m/%y")


def test_a_duckdb_model_s_list_and_similarity_functions_take_spark_s_names():
    """Splink's array-intersect level on DuckDB is `array_length(list_intersect(..))`, which
    sqlglot would pass to Spark as it is (no such function there)."""
    condition = 'array_length(list_intersect("forename_groups_l", "forename_groups_r")) >= 1'
    spark_sql = translate_condition(condition, "duckdb", "spark")
    assert spark_sql == "SIZE(ARRAY_INTERSECT(`forename_groups_l`, `forename_groups_r`)) >= 1"
    assert translate_condition('jaro_winkler_similarity("a_l", "a_r") >= 0.9', "duckdb", "spark") == \
        "JARO_WINKLER(`a_l`, `a_r`) >= 0.9"
    back = translate_condition(spark_sql, "spark", "duckdb")
    con = duckdb.connect()
    assert con.execute(f"SELECT {back} FROM (SELECT ['a', 'b'] AS forename_groups_l, ['b'] AS forename_groups_r)"
                       ).fetchall() == [(True,)]


def test_translator_refuses_what_spark_would_answer_differently():
    translator = SparkTranslator(lambda paths, union: "v")
    # DuckDB replaces only the first match without 'g'; Spark would replace all.
    with pytest.raises(TranslationError, match="first match"):
        translator.query(translator.parse("SELECT regexp_replace(x, 'a', 'b') FROM t"))
    assert "REGEXP_REPLACE(x, '^a', 'b')" in translator.query(translator.parse("SELECT regexp_replace(x, '^a', 'b') FROM t"))
    # Only an alternation inside a group keeps an anchor; '\$' is a dollar sign, not an anchor.
    for pattern in ("^a|b", "\\$"):
        with pytest.raises(TranslationError, match="first match"):
            translator.query(translator.parse(f"SELECT regexp_replace(x, '{pattern}', '') FROM t"))
    assert "'(?i)^(mr|mrs) '" in translator.query(translator.parse("SELECT regexp_replace(x, '^(mr|mrs) ', '', 'i') FROM t"))
    # Indexes below 1, hash(), dayofweek() and ordered lists mean something else on Spark.
    for sql in ("SELECT f[-1] FROM t", "SELECT f[0] FROM t", "SELECT hash(x) FROM t", "SELECT dayofweek(d) FROM t",
                "SELECT list(x ORDER BY y) FROM t", "SELECT regexp_replace(x, 'a.b', '-', 'gl') FROM t"):
        with pytest.raises(TranslationError):
            translator.query(translator.parse(sql))
    # A computed list index stays 1-based; a literal one too.
    sql = translator.query(translator.parse("SELECT f[i], f[1] FROM t"))
    assert "element_at(f, i)" in sql.lower() and "element_at(f, 1)" in sql.lower()
    # Macros expand with their arguments.
    translator.define_macro(translator.parse("CREATE MACRO twice(x) AS x || x"))
    assert "(y || y)" in translator.query(translator.parse("SELECT twice(y) FROM t"))
