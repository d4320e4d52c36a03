"""Stata .dta files from package tables: short names, variable and value labels, types; read back
with pyreadstat."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pyreadstat
import pytest

from datafirst.deliver.stata import LABEL_LIMIT, NAME_LIMIT, RESERVED, cut_label, stata_names, write_dta
from datafirst.release.stage import published

from .conftest import build_pipeline

STATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")


@pytest.fixture(scope="module")
def release(world, tmp_path_factory):
    ws = build_pipeline(world, tmp_path_factory.mktemp("stata"), "release")
    rel = published(ws)[0]
    return rel, {t["name"]: t for t in json.loads((rel / "dictionary.json").read_text())["tables"]}


@pytest.mark.parametrize("name", ["magistrates__defendants", "person_link_lookup", "person", "civil__claims"])
def test_release_tables_round_trip_with_labels(release, tmp_path, name):
    rel, tables = release
    table = tables[name]
    out = tmp_path / f"{name}.dta"
    names = write_dta(rel / table["path"], out, table)
    frame, meta = pyreadstat.read_dta(str(out))
    columns = [c["name"] for c in table["columns"]]
    assert list(names) == columns and meta.column_names == [names[c] for c in columns]
    assert all(STATA_NAME.match(n) for n in names.values())
    assert meta.file_label == cut_label(f"{name}: {table['unit']}")
    source = pq.read_table(rel / table["path"])
    assert len(frame) == source.num_rows == table["rows"]
    for column in table["columns"]:
        short = names[column["name"]]
        assert meta.column_names_to_labels[short] == cut_label(column["description"])
        got, want = frame[short].tolist(), source.column(column["name"]).to_pylist()
        declared = column["declared"]
        if declared["kind"] == "code" and declared.get("values") and column["type"] != "VARCHAR[]":
            labels = meta.variable_value_labels[short]
            assert list(labels) == list(range(1, len(labels) + 1))
            assert [labels[v] for v in labels] == sorted(map(str, declared["values"]))  # stable: sorted, 1..n
            assert [None if v != v else labels[int(v)] for v in got] == [None if w is None else str(w) for w in want]
        elif column["type"] == "BOOLEAN":
            assert meta.variable_value_labels[short] == {0: "false", 1: "true"}
            assert [None if v != v else bool(v) for v in got] == [None if w is None else bool(w) for w in want]
        elif column["type"] == "DATE":
            assert meta.original_variable_types[short] == "%td"
            assert [None if v is None or v != v else v for v in got] == want
        elif column["type"] == "VARCHAR[]":
            assert got == ["; ".join(w) if w is not None else "" for w in want]
        elif column["type"] == "VARCHAR":
            assert got == [w if w is not None else "" for w in want]  # Stata's missing text is ""
        else:
            assert [None if v != v else float(v) for v in got] == [None if w is None else float(w) for w in want]


def test_the_short_name_rule():
    columns = ["person_changes_between_thresholds", "person_changes_between_thresholds_x", "2021 census group",
               "in", "ok_name", "a-b", "a_b", "x" * 40]
    names = stata_names(columns)
    assert names == stata_names(list(reversed(columns))) == stata_names(columns)  # stable, whatever the order
    assert len(set(names.values())) == len(columns)  # unique
    assert all(STATA_NAME.match(n) and len(n) <= NAME_LIMIT and n not in RESERVED for n in names.values())
    assert names["ok_name"] == "ok_name" and names["a_b"] == "a_b"  # Stata names are kept
    assert names["person_changes_between_thresholds"].startswith("person_changes_between_th")
    assert names["person_changes_between_thresholds"] != names["person_changes_between_thresholds_x"]
    assert names["2021 census group"].startswith("v2021_census_group_") and names["in"].startswith("in_")
    assert names["a-b"].startswith("a_b_")
    # A labelled column leaves room for pyreadstat's value-label name (its name plus a counter).
    labelled = stata_names(["y" * 32, "z"], labelled=[f"c{i}" for i in range(11)] + ["y" * 32])
    assert len(labelled["y" * 32]) <= NAME_LIMIT - 2


def test_a_table_of_ones_own_with_long_names_text_codes_and_times(tmp_path):
    """A table of the user's own contract: every rule without the demo world's columns."""
    long_text = "é" * 1500 + "x" * 1500  # beyond Stata's 2,045 bytes: a strL, not cut
    data = pa.table({
        "case reference (internal, hashed)": pa.array(["h1", "h2", "h3", "h4"]),
        "2nd_outcome": pa.array(["withdrawn", None, "guilty", "appeal"]),  # "appeal" is not declared
        "amount": pa.array([Decimal("12.5"), None, Decimal("0"), Decimal("100000.25")], pa.decimal128(18, 4)),
        "count": pa.array([1, 2, None, 2**40], pa.int64()),
        "flagged": pa.array([True, False, None, True]),
        "seen_at": pa.array([datetime(2024, 1, 2, 3, 4, 5), None, datetime(1999, 12, 31), datetime(2000, 1, 1)]),
        "decided_on": pa.array([date(2024, 1, 2), None, date(1970, 1, 1), date(1900, 2, 28)]),
        "notes": pa.array([long_text, None, "short", ""]),
        "tags": pa.array([["a", "b"], None, [], ["c"]]),
    })
    parquet = tmp_path / "own.parquet"
    pq.write_table(data, parquet)
    described = "an outcome " + "described at length " * 10
    table = {"name": "own__cases", "unit": "one row per case", "columns": [
        {"name": "case reference (internal, hashed)", "description": "the case", "declared": {"kind": "hashed_id"}},
        {"name": "2nd_outcome", "description": described, "declared": {"kind": "code",
                                                                       "values": ["withdrawn", "guilty", "dismissed"]}},
        {"name": "amount", "description": "amount in pounds", "declared": {"kind": "number"}},
        {"name": "count", "description": "a count", "declared": {"kind": "number"}},
        {"name": "flagged", "description": "flag", "declared": {"kind": "flag"}},
        {"name": "seen_at", "description": "when", "declared": {"kind": "date"}},
        {"name": "decided_on", "description": "decided", "declared": {"kind": "date"}},
        {"name": "notes", "description": "notes", "declared": {"kind": "text"}},
        {"name": "tags", "description": "tags", "declared": {"kind": "code", "values": ["a", "b", "c"]}},
    ]}
    names = write_dta(parquet, tmp_path / "own.dta", table)
    frame, meta = pyreadstat.read_dta(str(tmp_path / "own.dta"))
    assert names["case reference (internal, hashed)"].startswith("case_reference__internal__")
    assert names["2nd_outcome"].startswith("v2nd_outcome_")
    out = names["2nd_outcome"]
    label = meta.column_names_to_labels[out]
    assert len(label) == LABEL_LIMIT and label.endswith("…") and described.startswith(label[:-1])
    # Declared values sorted are 1..3; the undeclared value present comes after them.
    assert meta.variable_value_labels[out] == {1: "dismissed", 2: "guilty", 3: "withdrawn", 4: "appeal"}
    assert [None if v != v else int(v) for v in frame[out]] == [3, None, 2, 4]
    assert [None if v != v else v for v in frame["amount"]] == [12.5, None, 0.0, 100000.25]
    assert [None if v != v else v for v in frame["count"]] == [1, 2, None, 2**40]
    assert meta.original_variable_types["seen_at"] == "%tc" and meta.original_variable_types["decided_on"] == "%td"
    assert frame["decided_on"].tolist()[0] == date(2024, 1, 2) and frame["decided_on"].tolist()[3] == date(1900, 2, 28)
    assert frame["seen_at"].tolist()[0] == datetime(2024, 1, 2, 3, 4, 5)
    assert frame["notes"].tolist() == [long_text, "", "short", ""]
    assert frame["tags"].tolist() == ["a; b", "", "", "c"]
    assert meta.variable_value_labels["flagged"] == {0: "false", 1: "true"}
