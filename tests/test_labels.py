"""Labels files (docs/labels.md): CSV or Parquet, keyed by record_key or by (source, table,
record_id), checked against the identifiers zone; the ready file `datafirst world` writes.
A small world made by the command itself, linked once with real DuckDB and Splink."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.engine import Engine
from datafirst.link.labels import LabelsError, load_labels
from datafirst.link.quality import measure
from datafirst.world.labels import write_labels

from .conftest import build_pipeline

runner = CliRunner()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(world, workspace linked on its extracts): the world written by `datafirst world`."""
    root = tmp_path_factory.mktemp("labels")
    world = root / "world"
    result = runner.invoke(app, ["world", "--people", "200", "--seed", "8", "--out", str(world)])
    assert result.exit_code == 0, result.output
    ws = build_pipeline(world, root, "link")
    return world, ws, result.output


def _copy(query: str, out: Path) -> Path:
    fmt = "(FORMAT parquet)" if out.suffix == ".parquet" else "(FORMAT csv, HEADER true)"
    duckdb.connect().execute(f"COPY ({query}) TO '{out}' {fmt}")
    return out


def _accuracy(ws, labels: Path) -> dict:
    with Engine() as engine:
        return measure(ws, engine, labels)["accuracy"]


def _refusal(ws, labels: Path) -> str:
    with Engine() as engine, pytest.raises(LabelsError) as caught:
        load_labels(ws, engine, labels)
    message = str(caught.value)
    assert str(labels) in message and "docs/labels.md" in message
    return message


def test_world_writes_a_ready_labels_file_and_says_how_to_use_it(made):
    world, _, output = made
    labels = world / "truth" / "labels.csv"
    with open(labels, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["record_key", "true_id", "sex", "ethnicity", "name_origin", "age_band"]
    assert len(rows) == len({r["record_key"] for r in rows}) > 200
    said = " ".join(output.split())
    assert "datafirst link -w WS --labels" in said and "labels.csv" in said


def test_csv_labels_give_the_same_accuracy_as_parquet(made, tmp_path):
    world, ws, _ = made
    from_csv = _accuracy(ws, world / "truth" / "labels.csv")
    from_parquet = _accuracy(ws, write_labels(world, tmp_path / "labels.parquet"))
    assert from_csv == from_parquet
    assert {"overall", "sex", "ethnicity", "age_band", "name_origin"} <= set(from_csv)
    assert all(a["true_pairs"] > 0 and a["f1"] > 0.5 for a in from_csv["overall"])


def test_labels_keyed_by_source_table_and_record_id_match_record_keys(made, tmp_path):
    world, ws, _ = made
    ready = world / "truth" / "labels.csv"
    native = _copy(f"""SELECT split_part(record_key, '|', 1) AS source, split_part(record_key, '|', 2) AS "table",
                              split_part(record_key, '|', 3) AS record_id, true_id, sex
                       FROM read_csv('{ready}', all_varchar = true)""", tmp_path / "native.csv")
    by_key, by_native = _accuracy(ws, ready), _accuracy(ws, native)
    assert by_native["overall"] == by_key["overall"] and by_native["sex"] == by_key["sex"]
    # Parquet too, with record ids as text and only some of the records labelled.
    some = _copy(f"SELECT * FROM read_csv('{native}', all_varchar = true) WHERE source = 'magistrates'",
                 tmp_path / "some.parquet")
    assert _accuracy(ws, some)["overall"][0]["true_pairs"] <= by_key["overall"][0]["true_pairs"]


def test_keys_that_match_no_record_are_refused_with_an_example(made, tmp_path):
    world, ws, _ = made
    ready = world / "truth" / "labels.csv"
    bad = _copy(f"""SELECT 'magistrates' AS source, 'defendants' AS "table", 'NOPE' || record_key AS record_id, true_id
                    FROM read_csv('{ready}', all_varchar = true) LIMIT 5""", tmp_path / "bad.csv")
    message = _refusal(ws, bad)
    assert "5 of 5 rows match no record" in message
    assert "'magistrates|defendants|NOPE" in message and "source || '|' || table || '|' || record_id" in message
    # A mix: refused as well, counting only the rows that match nothing.
    mixed = _copy(f"""(SELECT record_key || '-x' AS record_key, true_id FROM read_csv('{ready}', all_varchar = true)
                       ORDER BY record_key LIMIT 2)
                      UNION ALL SELECT record_key, true_id FROM read_csv('{ready}', all_varchar = true)""",
                  tmp_path / "mixed.parquet")
    rows = sum(1 for _ in open(ready, encoding="utf-8")) - 1
    message = _refusal(ws, mixed)
    assert f"2 of {rows + 2:,} rows match no record" in message and "-x'" in message and "keyed by record_key" in message


def test_wrong_extension_missing_true_id_and_duplicate_keys_are_refused(made, tmp_path):
    world, ws, _ = made
    ready = world / "truth" / "labels.csv"
    text = tmp_path / "labels.txt"
    text.write_text(ready.read_text(encoding="utf-8"), encoding="utf-8")
    assert "neither .csv nor .parquet" in _refusal(ws, text)
    no_true_id = _copy(f"SELECT record_key, sex FROM read_csv('{ready}', all_varchar = true)", tmp_path / "no_true.csv")
    assert "has no true_id column" in _refusal(ws, no_true_id)
    no_key = _copy(f"SELECT true_id, sex FROM read_csv('{ready}', all_varchar = true)", tmp_path / "no_key.parquet")
    assert "has no record_key column, nor all of source, table, record_id" in _refusal(ws, no_key)
    twice = _copy(f"""SELECT record_key, true_id FROM read_csv('{ready}', all_varchar = true)
                      UNION ALL (SELECT record_key, 'other' FROM read_csv('{ready}', all_varchar = true)
                                 ORDER BY record_key LIMIT 1)""", tmp_path / "twice.csv")
    assert "1 record key appears on more than one row" in _refusal(ws, twice)


def test_link_with_the_worlds_labels_prints_accuracy_and_bad_labels_stop_it_early(made, tmp_path):
    world, ws, _ = made
    labels = world / "truth" / "labels.csv"
    result = runner.invoke(app, ["link", "-w", str(ws.root), "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "Accuracy against labels: high P " in said and " medium P " in said and " low P " in said
    # Refused before any stage: another extension; keys of no record: before linking.
    result = runner.invoke(app, ["link", "-w", str(ws.root), "--labels", str(tmp_path / "labels.json")])
    assert result.exit_code == 2 and "not found" in result.output
    (tmp_path / "labels.json").write_text("{}")
    result = runner.invoke(app, ["link", "-w", str(ws.root), "--labels", str(tmp_path / "labels.json")])
    assert result.exit_code == 2 and "neither .csv nor .parquet" in " ".join(result.output.split())
    stray = _copy("SELECT 'nosuch|table|1' AS record_key, 'p1' AS true_id", tmp_path / "stray.csv")
    result = runner.invoke(app, ["link", "-w", str(ws.root), "--labels", str(stray)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "1 of 1 rows match no record" in said and "'nosuch|table|1'" in said
    assert "Linked " not in said and "Traceback" not in said
