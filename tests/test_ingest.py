"""Ingest on real generated worlds and on deliberately bad files: nothing is ever lost."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pytest

from datafirst.engine import Engine
from datafirst.sources.contract import ContractError, load_contract
from datafirst.sources.ingest import IngestError, ingest
from datafirst.workspace import Workspace


@pytest.fixture(scope="module")
def landed_ws(world, tmp_path_factory) -> Workspace:
    ws = Workspace.init(tmp_path_factory.mktemp("ws") / "ws", world / "extracts")
    with Engine() as engine:
        ingest(ws, engine)
    return ws


def _q(ws: Workspace, sql: str):
    return duckdb.connect().execute(sql.replace("{landed}", str(ws.zone("landed")))).fetchall()


def test_accounting_balances_for_every_file(landed_ws, world):
    rows = _q(landed_ws, "SELECT source, \"table\", file, read, landed, quarantined FROM '{landed}/_accounting.parquet'")
    assert len(rows) == 11
    for source, table, file, read, landed, quarantined in rows:
        assert read == landed + quarantined, (source, table)
        n_landed = _q(landed_ws, f"SELECT count(*) FROM '{{landed}}/{source}__{table}.parquet'")[0][0]
        n_quar = _q(landed_ws, f"""SELECT count(*) FROM '{{landed}}/_quarantine.parquet'
                                   WHERE source = '{source}' AND "table" = '{table}'""")[0][0]
        assert (n_landed, n_quar) == (landed, quarantined)
    # Read counts equal the data lines of each file (header excluded).
    for source, table, file, read, *_ in rows:
        if table == "requirements":
            continue  # elements of a nested array, not lines
        data = (world / "extracts" / file).read_bytes()
        lines = data.count(b"\n") - (0 if file.endswith(".jsonl") else 1)
        assert read == lines, file


def test_every_planted_malformed_row_is_quarantined_and_no_valid_row_is(landed_ws, world):
    con = duckdb.connect()
    con.execute(f"CREATE TABLE truth AS SELECT * FROM read_parquet('{world}/truth/records.parquet')")
    con.execute(f"CREATE TABLE q AS SELECT * FROM read_parquet('{landed_ws.zone('landed')}/_quarantine.parquet')")
    # Planted row defects, by the reason a loader should give.
    expected_reason = {
        "wrong_column_count": "expected % fields, found %",
        "broken_bytes": "bytes that are not valid UTF-8",
        "impossible_date": "not a valid date%",
        "invalid_json": "not valid JSON%",
        "duplicate_row": "exact duplicate of row %",
    }
    for defect, pattern in expected_reason.items():
        missing = con.execute(f"""
            SELECT t.file, t.row_number, q.reason FROM truth t
            LEFT JOIN q ON q.file = t.file AND q.row_number = t.row_number AND q."table" = t."table"
            WHERE t.defect = '{defect}' AND (q.reason IS NULL OR q.reason NOT LIKE '{pattern}')""").fetchall()
        planted = con.execute(f"SELECT count(*) FROM truth WHERE defect = '{defect}'").fetchall()[0][0]
        assert planted > 0 and missing == [], (defect, missing[:5])
    # Nothing else in a person-bearing table is quarantined.
    wrongly = con.execute("""
        SELECT q.file, q.row_number, q.reason FROM q JOIN truth t
        ON q.file = t.file AND q.row_number = t.row_number AND q."table" = t."table"
        WHERE t.defect = ''""").fetchall()
    assert wrongly == []


def test_landed_rows_are_typed_and_carry_provenance(landed_ws):
    cols = dict(_q(landed_ws, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{landed}/prison__bookings.parquet')"))
    assert cols["birth_date"] == "DATE" and cols["sentence_length_days"] == "BIGINT"
    for c in ("record_key", "_source", "_table", "_file", "_row_number", "_file_sha256", "_loaded_at", "_line_md5"):
        assert c in cols
    dupes = _q(landed_ws, "SELECT count(*) - count(DISTINCT record_key) FROM '{landed}/magistrates__defendants.parquet'")
    assert dupes == [(0,)]
    # Windows-1252 text arrives as proper Unicode.
    n = _q(landed_ws, "SELECT count(*) FROM '{landed}/prison__bookings.parquet' WHERE last_name LIKE '%\ufffd%'")
    assert n == [(0,)]


# --- bad input ------------------------------------------------------------------------------------

CONTRACT = """
source: tiny
tables:
  people:
    file: people.csv
    delimiter: ","
    record_id: id
    columns:
      id: {required: true, native_id: true}
      name: {role: full_name, name_order: forenames_surname}
      born: {type: date, formats: ["%d/%m/%Y"], role: date_of_birth}
      visits: {type: integer}
"""
GOOD = "id,name,born,visits\n1,Ann Lee,01/02/1980,3\n2,Bob Cox,29/02/2000,1\n"


# Events in JSON lines, each with an array of requirements: a table and its unnested table.
NESTED = """
source: nested
tables:
  events:
    file: ev.jsonl
    format: jsonl
    record_id: crn
    columns:
      crn: {path: $.crn, required: true, native_id: true}
  requirements:
    file: ev.jsonl
    format: jsonl
    unnest: $.reqs
    parent_id: crn
    record_id: [crn, seq]
    columns:
      crn: {path: $.crn, required: true}
      seq: {path: "#index", type: integer}
      type: {path: $.type}
"""


def _tiny(tmp_path: Path, body: bytes | str, *, name: str = "people.csv", contract: str = CONTRACT) -> Workspace:
    ext = tmp_path / "extracts"
    ext.mkdir(exist_ok=True)
    (ext / name).write_bytes(body.encode() if isinstance(body, str) else body)
    ws = Workspace.init(tmp_path / "ws", ext, with_world_contracts=False)
    (ws.root / "contracts" / "tiny.yaml").write_text(contract.replace("people.csv", name))
    return ws


def _run(ws: Workspace):
    with Engine() as engine:
        return ingest(ws, engine)


def _quarantine(ws: Workspace):
    return duckdb.connect().execute(f"""SELECT row_number, "column", reason FROM
        read_parquet('{ws.zone("landed")}/_quarantine.parquet') ORDER BY row_number""").fetchall()


def test_good_file_lands(tmp_path):
    ws = _tiny(tmp_path, GOOD)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (2, 2, 0)


@pytest.mark.parametrize("body, match", [
    (b"", "is empty"),
    ("id;name;born;visits\n1;Ann Lee;01/02/1980;3\n", "looks delimited by ';'"),
    ("id,name,born,visits\n1,Ann Lee,01/02/1980,3\n".encode("utf-16"), "looks like UTF-16"),
    ("id,fullname,born,visits\n1,Ann Lee,01/02/1980,3\n", "missing columns: \\['name'\\]"),
    ("name,id,born,visits\nAnn Lee,1,01/02/1980,3\n", "in another order"),
])
def test_unreadable_files_fail_clearly_and_load_nothing(tmp_path, body, match):
    ws = _tiny(tmp_path, body)
    with pytest.raises(IngestError, match=match) as exc:
        _run(ws)
    assert "people.csv" in str(exc.value)
    assert not ws.zone("landed").exists()
    assert [p.name for p in ws.zones.iterdir()] == [] if ws.zones.exists() else True


def test_missing_file_fails_and_keeps_the_previous_landed_zone(tmp_path):
    ws = _tiny(tmp_path, GOOD)
    _run(ws)
    before = sorted(p.name for p in ws.zone("landed").iterdir())
    (tmp_path / "extracts" / "people.csv").unlink()
    with pytest.raises(IngestError, match="not found"):
        _run(ws)
    assert sorted(p.name for p in ws.zone("landed").iterdir()) == before
    assert [p.name for p in ws.zones.iterdir() if p.name.startswith(".")] == []


def test_truncated_compressed_file_fails(tmp_path):
    data = gzip.compress((GOOD + "3,Cy Dee,01/01/1990,2\n" * 20000).encode())
    ws = _tiny(tmp_path, data[: len(data) // 2], name="people.csv.gz")
    with pytest.raises(IngestError, match="truncated or corrupt"):
        _run(ws)


def test_compressed_file_loads(tmp_path):
    ws = _tiny(tmp_path, gzip.compress(GOOD.encode()), name="people.csv.gz")
    (load,) = _run(ws)
    assert load.landed == 2


def test_non_utf8_bytes_are_quarantined_not_lost(tmp_path):
    body = GOOD.encode() + b"3,Zo\xeb Hart,01/01/1990,2\n4,Di Ray,02/02/1991,5\n"
    ws = _tiny(tmp_path, body)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (4, 3, 1)
    assert _quarantine(ws) == [(3, None, "bytes that are not valid UTF-8")]
    # The line is kept as its bytes in hex (it has no text), so nothing of it is lost.
    (raw,) = duckdb.connect().execute(
        f"SELECT raw_line FROM read_parquet('{ws.zone('landed')}/_quarantine.parquet')").fetchone()
    assert bytes.fromhex(raw) == b"3,Zo\xeb Hart,01/01/1990,2"


def test_a_file_where_every_row_is_bad_is_quarantined_whole(tmp_path):
    body = "id,name,born,visits\n1,Ann,31/02/1980,3\n,Bob,01/01/1980,1\n3,Cy,01/01/1980,many\n4,Di\n\n1,Ann,01/02/1980,3\n1,Ann,01/02/1980,3\n"
    ws = _tiny(tmp_path, body)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (7, 1, 6)
    q = _quarantine(ws)
    assert q == [
        (1, "born", "not a valid date in format %d/%m/%Y: 31/02/1980"),
        (2, "id", "record id missing"),
        (3, "visits", "not a whole number: many"),
        (4, None, "expected 4 fields, found 2"),
        (5, None, "blank line"),
        (7, "id", "exact duplicate of row 6"),
    ]


def test_lines_of_spaces_are_blank_lines_and_other_whitespace_is_not(tmp_path):
    # Blank: nothing but space separators (what trim() removes), ASCII or not. A tab is not one.
    body = "id,name,born,visits\n1,Ann,01/02/1980,3\n   \n\u00a0 \u2003\n\t\n2,Bob,01/01/1980,1\n"
    ws = _tiny(tmp_path, body)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (5, 2, 3)
    assert _quarantine(ws) == [(2, None, "blank line"), (3, None, "blank line"), (4, None, "expected 4 fields, found 1")]


def test_numbers_are_never_rounded_or_reinterpreted(tmp_path):
    # A cast alone would land '1.5' as 2 and '1e3' as 1000; such cells are quarantined instead.
    contract = CONTRACT.replace("visits: {type: integer}", "visits: {type: integer}\n      fee: {type: decimal}")
    body = ("id,name,born,visits,fee\n1,Ann Lee,01/02/1980,3,10.50\n2,Bob Cox,29/02/2000,12.0,-0.1234\n"
            "3,Cy Day,01/01/1980,1.5,1\n4,Di Ray,01/01/1980,1e3,1\n5,Ed Fox,01/01/1980,2,1.23456\n"
            "6,Flo Gee,01/01/1980,+4,.5\n7,Gus Hay,01/01/1980,1_000,1\n8,Hal Ivy,01/01/1980,5,1e2\n"
            # Whitespace trim() leaves (a tab) is removed as a cast would; zeros past 4 places are fine.
            "9,Ian Joy,01/01/1980,\t8\t,12.50000\n")
    ws = _tiny(tmp_path, body, contract=contract)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (9, 4, 5)
    assert _quarantine(ws) == [
        (3, "visits", "not a whole number: 1.5"),
        (4, "visits", "not a whole number: 1e3"),
        (5, "fee", "not a number with at most 4 decimal places: 1.23456"),
        (7, "visits", "not a whole number: 1_000"),
        (8, "fee", "not a number with at most 4 decimal places: 1e2"),
    ]
    landed = duckdb.connect().execute(f"""SELECT id, visits, CAST(fee AS VARCHAR)
        FROM read_parquet('{ws.zone("landed")}/tiny__people.parquet') ORDER BY id""").fetchall()
    assert landed == [("1", 3, "10.5000"), ("2", 12, "-0.1234"), ("6", 4, "0.5000"), ("9", 8, "12.5000")]


def test_a_record_id_repeated_within_one_json_array_is_a_duplicate(tmp_path):
    contract = """
source: nested
tables:
  parents:
    file: items.jsonl
    format: jsonl
    record_id: id
    columns:
      id: {path: $.id, required: true}
  items:
    file: items.jsonl
    format: jsonl
    unnest: $.items
    parent_id: id
    record_id: item_id
    columns:
      id: {path: $.id}
      item_id: {path: $.item_id}
      n: {path: "#index", type: integer}
"""
    body = ('{"id":"1","items":[{"item_id":"a"},{"item_id":"b"},{"item_id":"a"}]}\n'
            '{"id":"2","items":[{"item_id":"b","note":"again"}]}\n')
    ws = _tiny(tmp_path, body, name="items.jsonl", contract=contract)
    loads = {x.table: x for x in _run(ws)}
    assert (loads["items"].read, loads["items"].landed, loads["items"].quarantined) == (4, 2, 2)
    q = duckdb.connect().execute(f"""SELECT row_number, reason FROM read_parquet('{ws.zone("landed")}/_quarantine.parquet')
                                     WHERE "table" = 'items' ORDER BY row_number""").fetchall()
    assert q == [(1, "exact duplicate of row 1"), (2, "duplicate record id b (first on row 1)")]
    kept = duckdb.connect().execute(f"""SELECT record_key, n FROM
        read_parquet('{ws.zone("landed")}/nested__items.parquet') ORDER BY ALL""").fetchall()
    assert kept == [("nested|items|a", 1), ("nested|items|b", 2)]


def test_json_arrays_are_joined_and_text_that_looks_like_one_is_kept(tmp_path):
    contract = """
source: js
tables:
  people:
    file: people.jsonl
    format: jsonl
    record_id: id
    columns:
      id: {path: $.id, required: true}
      middle: {path: $.middle}
      note: {path: $.note}
"""
    body = ('{"id":"1","middle":["Ann","Marie"],"note":"[not given]"}\n'
            '{"id":"2","middle":"Jo","note":["a"]}\n'
            '{"id":"3","middle":[],"note":null}\n'
            '{"id":"4","middle":["[x]"],"note":"[]"}\n'
            '{"id":"5","middle":["Ann"],"note": [ "b" ,\n')
    ws = _tiny(tmp_path, body, name="people.jsonl", contract=contract)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (5, 4, 1)
    landed = duckdb.connect().execute(f"""SELECT id, middle, note
        FROM read_parquet('{ws.zone("landed")}/js__people.parquet') ORDER BY id""").fetchall()
    assert landed == [("1", "Ann Marie", "[not given]"), ("2", "Jo", "a"), ("3", None, None), ("4", "[x]", "[]")]


def test_a_two_digit_year_never_lands_as_a_year_before_1000(tmp_path):
    # DuckDB's strptime reads '%Y' from any number of digits: '1/2/85' would be the year 85.
    ws = _tiny(tmp_path, GOOD + "3,Cy Day,1/2/85,1\n4,Di Ray,1/2/0985,1\n")
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (4, 2, 2)
    assert _quarantine(ws) == [(3, "born", "not a valid date in format %d/%m/%Y: 1/2/85"),
                               (4, "born", "not a valid date in format %d/%m/%Y: 1/2/0985")]
    # With a two-digit format after it, such a value is read by that format instead.
    contract = CONTRACT.replace('formats: ["%d/%m/%Y"]', 'formats: ["%d/%m/%Y", "%d/%m/%y"]')
    (tmp_path / "both").mkdir()
    ws = _tiny(tmp_path / "both", GOOD + "3,Cy Day,1/2/85,1\n", contract=contract)
    (load,) = _run(ws)
    assert load.landed == 3
    born = duckdb.connect().execute(f"""SELECT CAST(born AS VARCHAR) FROM
        read_parquet('{ws.zone("landed")}/tiny__people.parquet') ORDER BY id""").fetchall()
    assert born == [("1980-02-01",), ("2000-02-29",), ("1985-02-01",)]


def test_columns_may_be_named_like_the_loaders_own(tmp_path):
    # The loader's working columns all start with '_', which a contract's column names cannot.
    contract = """
source: tiny
tables:
  people:
    file: people.csv
    record_id: line
    columns:
      line: {required: true, native_id: true}
      text: {}
      f: {type: integer}
      items: {}
"""
    ws = _tiny(tmp_path, "line,text,f,items\n1,free text,3,a\n1,free text,3,a\n2,more,x,b\n", contract=contract)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 1, 2)
    assert _quarantine(ws) == [(2, "line", "exact duplicate of row 1"), (3, "f", "not a whole number: x")]
    landed = duckdb.connect().execute(f"""SELECT record_key, line, text, f, items
        FROM read_parquet('{ws.zone("landed")}/tiny__people.parquet')""").fetchall()
    assert landed == [("tiny|people|1", "1", "free text", 3, "a")]


def test_a_table_unchanged_since_the_last_ingest_is_kept_not_read_again(tmp_path):
    other = CONTRACT.replace("source: tiny", "source: other").replace("people.csv", "other.csv")
    ws = _tiny(tmp_path, GOOD + "3,Cy Day,31/02/1980,1\n")
    (ws.extracts / "other.csv").write_text(GOOD)
    (ws.root / "contracts" / "other.yaml").write_text(other)
    first = {x.source: x for x in _run(ws)}
    assert not any(x.reused for x in first.values())
    # A new delivery from `tiny` only: `other` is kept as it was.
    (ws.extracts / "people.csv").write_text(GOOD + "3,Cy Day,31/02/1980,1\n4,Di Ray,02/02/1991,5\n")
    second = {x.source: x for x in _run(ws)}
    assert (second["other"].reused, second["tiny"].reused) == (True, False)
    accounting = duckdb.connect().execute(f"""SELECT source, reused FROM
        read_parquet('{ws.zone("landed")}/_accounting.parquet') ORDER BY 1""").fetchall()
    assert accounting == [("other", True), ("tiny", False)]
    assert second["other"].loaded_at == first["other"].loaded_at
    # The landed zone and the quarantine are what a first ingest of these files gives.
    fresh = Workspace.init(tmp_path / "fresh", ws.extracts, with_world_contracts=False)
    for name in ("tiny.yaml", "other.yaml"):
        (fresh.root / "contracts" / name).write_text((ws.root / "contracts" / name).read_text())
    _run(fresh)
    con = duckdb.connect()
    for f in ("tiny__people", "other__people", "_quarantine"):
        sql = "SELECT * EXCLUDE (_loaded_at) FROM read_parquet('{}')" if f != "_quarantine" else "SELECT * FROM read_parquet('{}')"
        a = con.execute(sql.format(ws.zone("landed") / f"{f}.parquet") + " ORDER BY ALL").fetchall()
        b = con.execute(sql.format(fresh.zone("landed") / f"{f}.parquet") + " ORDER BY ALL").fetchall()
        assert a == b, f
    assert _quarantine(ws) == [(3, "born", "not a valid date in format %d/%m/%Y: 31/02/1980")]
    # A changed contract means the table is read again, even though its file is the same.
    (ws.root / "contracts" / "other.yaml").write_text(other.replace("visits: {type: integer}",
                                                                    "visits: {type: integer, required: true}"))
    third = {x.source: x for x in _run(ws)}
    assert not third["other"].reused and third["tiny"].reused


def test_a_new_delivery_parses_only_the_lines_not_seen_before_and_lands_what_a_first_ingest_would(
        tmp_path, monkeypatch):
    import datafirst.sources.ingest as ingest_module

    ws = _tiny(tmp_path, GOOD + "3,Cy Day,01/03/1981,2\n4,Di Ray,02/02/1991,5\n5,Ed Fox,01/01/1990,x\n")
    _run(ws)
    # Next week's extract: a new row first (every row moves down), a changed row, a row
    # deleted, a row quarantined last time sent again, and an exact copy of a known row.
    (ws.extracts / "people.csv").write_text("id,name,born,visits\n6,Fay Ng,03/03/1993,1\n3,Cy Day,01/03/1981,2\n"
                                            "1,Ann Lee,01/02/1980,3\n2,Bob Cox,29/02/2000,2\n"
                                            "5,Ed Fox,01/01/1990,x\n1,Ann Lee,01/02/1980,3\n")
    seen = {}
    original = ingest_module._stage_with_known_lines

    def counting(engine, spec, view, stage, header_lines, known, *rest):
        sql = original(engine, spec, view, stage, header_lines, known, *rest)
        seen["known"] = engine.scalar(f"SELECT count(*) FROM {stage}_known")
        seen["parsed"] = engine.scalar(f"SELECT count(*) FROM {stage}_unknown WHERE line_no > {header_lines}")
        return sql

    monkeypatch.setattr(ingest_module, "_stage_with_known_lines", counting)
    (load,) = _run(ws)
    assert seen == {"known": 3, "parsed": 3}  # Cy Day and Ann Lee twice; Fay Ng, Bob Cox and Ed Fox parsed
    assert (load.read, load.landed, load.quarantined) == (6, 4, 2)
    assert _quarantine(ws) == [(5, "visits", "not a whole number: x"), (6, "id", "exact duplicate of row 3")]
    fresh = Workspace.init(tmp_path / "fresh", ws.extracts, with_world_contracts=False)
    (fresh.root / "contracts" / "tiny.yaml").write_text((ws.root / "contracts" / "tiny.yaml").read_text())
    _run(fresh)
    con = duckdb.connect()
    for f, sql in (("tiny__people", "SELECT * EXCLUDE (_loaded_at) FROM read_parquet('{}')"),
                   ("_quarantine", "SELECT * FROM read_parquet('{}') ORDER BY ALL")):
        assert con.execute(sql.format(ws.zone("landed") / f"{f}.parquet")).fetchall() == \
            con.execute(sql.format(fresh.zone("landed") / f"{f}.parquet")).fetchall(), f


def test_a_line_digest_held_by_two_landed_rows_still_gives_one_row_per_line(tmp_path):
    """Never written by ingest (a copy of a line is quarantined), but a landed zone altered so
    must not turn one line of the next delivery into two rows."""
    ws = _tiny(tmp_path, GOOD)
    _run(ws)
    landed = ws.zone("landed") / "tiny__people.parquet"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT * FROM read_parquet('{landed}')
                         UNION ALL SELECT * REPLACE (_row_number + 100 AS _row_number) FROM read_parquet('{landed}')
                         WHERE _row_number = 1) TO '{landed}.new' (FORMAT parquet)""")
    Path(f"{landed}.new").replace(landed)
    (ws.extracts / "people.csv").write_text(GOOD + "3,Cy Day,01/03/1981,2\n")
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 3, 0)
    assert con.execute(f"SELECT _row_number FROM read_parquet('{landed}')").fetchall() == [(1,), (2,), (3,)]


def test_duplicate_record_id_with_different_content_is_named(tmp_path):
    body = GOOD + "1,Ann Leigh,01/02/1980,4\n"
    ws = _tiny(tmp_path, body)
    _run(ws)
    assert _quarantine(ws) == [(3, "id", "duplicate record id 1 (first on row 1)")]


def test_a_unit_separator_byte_in_a_row_does_not_stop_the_file(tmp_path):
    # The byte that splits lines in the reader: the file is read, and the row (a control
    # character in a name) quarantined on its own (tests/test_ingest_hygiene.py).
    ws = _tiny(tmp_path, GOOD + "3,Cy\x1fLee,01/02/1980,2\n")
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 2, 1)
    assert _quarantine(ws) == [(3, "name", "control character in text: U+001F (remove it at the source, or declare "
                                           "control_characters: remove in the contract)")]


def test_on_invalid_null_keeps_the_row_with_the_value_empty(tmp_path):
    ws = _tiny(tmp_path, GOOD + "3,Cy Lee,01/02/1980,many\n",
               contract=CONTRACT.replace("visits: {type: integer}", "visits: {type: integer, on_invalid: null}"))
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 3, 0)


def test_composite_ids_whose_parts_hold_the_separator_stay_apart(tmp_path):
    contract = """
source: tiny
tables:
  people:
    file: people.csv
    record_id: [case_ref, seq]
    columns:
      case_ref: {required: true}
      seq: {required: true}
"""
    ws = _tiny(tmp_path, 'case_ref,seq\nA|1,2\nA,1|2\nB,1\n', contract=contract)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 3, 0)
    keys = duckdb.connect().execute(f"SELECT record_key FROM '{ws.zone('landed')}/tiny__people.parquet'").fetchall()
    assert keys == [("tiny|people|A\\|1|2",), ("tiny|people|A|1\\|2",), ("tiny|people|B|1",)]


def test_quoted_fields_with_delimiters_parse(tmp_path):
    body = 'id,name,born,visits\n1,"Lee, Ann ""Annie""",01/02/1980,3\n'
    ws = _tiny(tmp_path, body)
    (load,) = _run(ws)
    assert load.landed == 1
    name = duckdb.connect().execute(f"SELECT name FROM '{ws.zone('landed')}/tiny__people.parquet'").fetchall()
    assert name == [('Lee, Ann "Annie"',)]


def test_a_quote_left_open_or_followed_by_more_text_quarantines_the_row(tmp_path):
    # Parsed by a pattern alone, these would land cut short ('O', 'Smith') with the right field count.
    body = 'id,name,born,visits\n1,"O"Brien",01/02/1980,3\n2,"Smith" Jr,01/02/1980,1\n3,"Lee, Ann",01/02/1980,2\n'
    ws = _tiny(tmp_path, body)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 1, 2)
    assert [(r, c) for r, c, _ in _quarantine(ws)] == [(1, None), (2, None)]
    assert all(reason.startswith("malformed quoting") for _, _, reason in _quarantine(ws))
    name = duckdb.connect().execute(f"SELECT name FROM '{ws.zone('landed')}/tiny__people.parquet'").fetchall()
    assert name == [("Lee, Ann",)]


def test_a_quote_never_closed_quarantines_the_row_even_when_the_fields_add_up(tmp_path):
    # '"unclosed' then three more fields: four fields, as the header has, but the quote is open.
    body = 'id,name,born,visits\n1,"unclosed,01/02/1980,3\n2,"Lee, Ann",01/02/1980,2\n3,Ann Lee,01/02/1980,1\n'
    ws = _tiny(tmp_path, body)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 2, 1)
    ((row, column, reason),) = _quarantine(ws)
    assert (row, column) == (1, None) and reason.startswith("malformed quoting")


def test_a_header_naming_a_column_twice_says_so(tmp_path):
    ws = _tiny(tmp_path, "id,name,born,born\n1,Ann Lee,01/02/1980,3\n")
    with pytest.raises(IngestError, match=r"named more than once: \['born'\]"):
        _run(ws)


def test_elements_of_a_quarantined_row_are_quarantined_with_it(tmp_path):
    contract = NESTED.replace("native_id: true}\n", 'native_id: true}\n      d: {path: $.d, type: date, formats: ["%Y-%m-%d"], '
                                                     "required: true}\n", 1)
    body = ('{"crn": "X1", "d": "2020-01-01", "reqs": [{"type": "unpaid_work"}]}\n'
            '{"crn": "X1", "d": "2021-05-05", "reqs": [{"type": "curfew"}, {"type": "drug_rehab"}]}\n'
            '{"crn": "X2", "d": "not a date", "reqs": [{"type": "curfew"}]}\n')
    ws = _tiny(tmp_path, body, name="ev.jsonl", contract=contract)
    loads = {x.table: x for x in _run(ws)}
    assert (loads["events"].read, loads["events"].landed, loads["events"].quarantined) == (3, 1, 2)
    assert (loads["requirements"].read, loads["requirements"].landed, loads["requirements"].quarantined) == (4, 1, 3)
    kept = duckdb.connect().execute(f"""SELECT crn, seq, type FROM
        read_parquet('{ws.zone("landed")}/nested__requirements.parquet')""").fetchall()
    assert kept == [("X1", 1, "unpaid_work")]  # not line 2's drug_rehab under line 1's event, nor X2's orphan
    q = duckdb.connect().execute(f"""SELECT row_number, reason FROM read_parquet('{ws.zone("landed")}/_quarantine.parquet')
                                     WHERE "table" = 'requirements' ORDER BY ALL""").fetchall()
    assert q == [(2, "its parent row was quarantined: duplicate record id X1 (first on row 1)")] * 2 + [
        (3, "its parent row was quarantined: not a valid date in format %Y-%m-%d: not a date")]


def test_an_unnested_value_that_is_not_an_array_of_objects_is_quarantined_not_lost(tmp_path):
    contract = NESTED
    body = ('{"crn": "X1", "reqs": [{"type": "unpaid_work"}]}\n'
            '{"crn": "X2", "reqs": {"type": "curfew"}}\n'  # an object: one row, quarantined
            '{"crn": "X3", "reqs": ["curfew", 5]}\n'  # elements that no column can read
            '{"crn": "X4", "reqs": "curfew"}\n'
            '{"crn": "X5"}\n{"crn": "X6", "reqs": null}\n{"crn": "X7", "reqs": []}\n')  # no requirements
    ws = _tiny(tmp_path, body, name="ev.jsonl", contract=contract)
    loads = {x.table: x for x in _run(ws)}
    assert (loads["requirements"].read, loads["requirements"].landed, loads["requirements"].quarantined) == (5, 1, 4)
    q = duckdb.connect().execute(f"""SELECT row_number, reason FROM read_parquet('{ws.zone("landed")}/_quarantine.parquet')
                                     WHERE "table" = 'requirements' ORDER BY ALL""").fetchall()
    assert q == [(2, "$.reqs holds an object, not an array (one row per element needs an array)"),
                 (3, 'an element of $.reqs is not a JSON object: "curfew"'),
                 (3, "an element of $.reqs is not a JSON object: 5"),
                 (4, "$.reqs holds a string, not an array (one row per element needs an array)")]


def test_a_change_to_a_parents_contract_loads_its_unnested_table_again(tmp_path):
    contract = NESTED.replace("native_id: true}\n", "native_id: true}\n      kind: {path: $.kind}\n", 1)
    body = ('{"crn": "X1", "kind": "order", "reqs": [{"type": "unpaid_work"}]}\n'
            '{"crn": "X2", "kind": "licence", "reqs": [{"type": "curfew"}]}\n')
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ws = _tiny(tmp_path / "a", body, name="ev.jsonl", contract=contract)
    _run(ws)
    # Only the parent's column changes: X2's event is now refused, and so must its requirement be.
    stricter = contract.replace("kind: {path: $.kind}", "kind: {path: $.kind, allowed: [order]}")
    (ws.root / "contracts" / "tiny.yaml").write_text(stricter)
    again = {x.table: x for x in _run(ws)}
    fresh_ws = _tiny(tmp_path / "b", body, name="ev.jsonl", contract=stricter)
    fresh = {x.table: x for x in _run(fresh_ws)}
    assert not again["requirements"].reused
    for table in ("events", "requirements"):
        assert (again[table].landed, again[table].quarantined) == (fresh[table].landed, fresh[table].quarantined) == (1, 1)


def test_standardise_refuses_a_landed_zone_loaded_under_another_contract(tmp_path):
    from datafirst.standardise.stage import standardise
    ws = _tiny(tmp_path, GOOD)
    _run(ws)
    path = ws.root / "contracts" / "tiny.yaml"
    path.write_text(path.read_text().replace("visits: {type: integer}", "visits: {type: decimal}"))
    with Engine() as engine, pytest.raises(ContractError, match="changed since the last ingest.*ingest` again"):
        standardise(ws, engine)


def test_a_sex_code_column_is_standardised_and_placeholders_are_measured_per_column(tmp_path):
    from datafirst.standardise.quality import measure
    from datafirst.standardise.stage import standardise
    contract = """
source: tiny
tables:
  people:
    file: people.csv
    record_id: id
    columns:
      id: {required: true}
      given: {role: forenames}
      sex: {type: integer, role: sex}
      line1: {role: address}
      town: {role: address}
"""
    ws = _tiny(tmp_path, "id,given,sex,line1,town\n1,UNKNOWN,1,NFA,Leeds\n2,N/A,2,NFA,York\n", contract=contract)
    _run(ws)
    with Engine() as engine:
        standardise(ws, engine, as_of="2024-01-01")
        fields = {f["field"]: f for f in measure(ws, engine)["tables"][0]["fields"]}
    sexes = duckdb.connect().execute(f"SELECT sex FROM '{ws.zone('identifiers')}/tiny__people.parquet' ORDER BY ALL").fetchall()
    assert sexes == [("F",), ("M",)]
    assert {k: fields[k]["placeholder_rate"] for k in ("given", "line1", "town")} == {"given": 1.0, "line1": 1.0, "town": 0.0}


@pytest.mark.parametrize("text, match", [
    ("source: Tiny!\ntables: {}", "source"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: nope\n    columns: {id: {}}", "record_id names columns"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {type: date}}", "needs `formats`"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {role: shoe}}", "role"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {n: {role: full_name}, id: {}}", "name_order"),
    ("source: [unclosed", "not valid YAML"),
    ("source: t\ntables:\n  p:\n    file: a.jsonl\n    format: jsonl\n    record_id: id\n    columns: {id: {path: '$.id['}}",
     "not a JSON path"),
    ("source: t\ntables:\n  p:\n    file: a.jsonl\n    format: jsonl\n    unnest: $.items\n    parent_id: crn_id\n"
     "    record_id: id\n    columns: {id: {path: $.id}, crn: {path: $.crn}}", "parent_id must name a declared column"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {}, n: {type: integer, role: address}}", "must have type string"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {role: surname, native_id: true}}", "cannot be a native_id"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {}, _text: {}}", "start with a letter"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {}, record_key: {}}", "datafirst's own"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {type: date, formats: ['%Q-%d']}}",
     "date format '%Q-%d' cannot be read"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {}, ID: {}}", "differ only in case"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {}, n: {}, n: {type: integer}}",
     "found the key 'n' a second time"),
    ("source: t\ntables:\n  p:\n    file: a.csv\n    record_id: id\n    columns: {id: {}, a b: {}, a_b: {}}",
     "differ only in case or in spaces"),
])
def test_contract_errors_say_what_and_where(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ContractError, match=match) as exc:
        load_contract(path)
    assert str(path) in str(exc.value)


def test_a_contract_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes("source: t\ndescription: caf\u00e9\ntables: {}\n".encode("latin-1"))
    with pytest.raises(ContractError, match="is not UTF-8 text .*0xe9.*save it as UTF-8") as exc:
        load_contract(path)
    assert str(path) in str(exc.value)


def test_two_tables_stored_under_one_name_are_refused(tmp_path):
    from datafirst.sources.contract import load_contracts
    table = "    file: {f}\n    record_id: id\n    columns: {{id: {{}}}}\n"
    (tmp_path / "one.yaml").write_text("source: a\ntables:\n  b__c:\n" + table.format(f="one.csv"))
    (tmp_path / "two.yaml").write_text("source: a__b\ntables:\n  c:\n" + table.format(f="two.csv"))
    with pytest.raises(ContractError, match="would both be stored as 'a__b__c'"):
        load_contracts(tmp_path)


def test_world_contracts_ship_with_init(tmp_path, world):
    ws = Workspace.init(tmp_path / "ws", world / "extracts")
    names = sorted(p.stem for p in (ws.root / "contracts").glob("*.yaml") if not p.name.endswith(".codelist.yaml"))
    # The world's research queries (docs/synth.md) ship beside its contracts.
    assert names == ["civil", "crown", "family", "magistrates", "prison", "probation", "research_queries"]
    shutil.rmtree(ws.root)


def test_standardise_keeps_the_tables_whose_landed_rows_are_unchanged_and_equals_a_fresh_run(tmp_path):
    from datafirst.standardise.quality import measure, write_report
    from datafirst.standardise.stage import standardise

    def std(ws: Workspace, as_of: str) -> dict:
        """Per table: kept whole, and how many identifier rows were cleaned again (None: all)."""
        with Engine() as engine:
            ingest(ws, engine)
            return {s.table: (s.reused, s.cleaned) for s in standardise(ws, engine, as_of=as_of)}

    def zones(ws: Workspace) -> dict:
        con = duckdb.connect()
        # Content keeps the time its rows were loaded, which differs between the two workspaces.
        return {f"{zone}/{p.name}": con.execute(f"SELECT * {'EXCLUDE (_loaded_at)' if zone == 'content' else ''} "
                                                f"FROM read_parquet('{p}') ORDER BY ALL").fetchall()
                for zone in ("identifiers", "content") for p in sorted(ws.zone(zone).glob("*.parquet"))}

    two = CONTRACT + CONTRACT[CONTRACT.index("  people:"):].replace("people", "others")
    ws = _tiny(tmp_path, GOOD, contract=two)
    # others.csv: one date of birth in 2024, after the first run's date and before the third's.
    (ws.extracts / "others.csv").write_text(GOOD + "3,Cy Day,15/03/2024,2\n")
    assert std(ws, "2024-01-01") == {"people": (False, None), "others": (False, None)}
    flags = duckdb.connect().execute(f"SELECT flags FROM '{ws.zone('identifiers')}/tiny__others.parquet' "
                                     "WHERE record_key LIKE '%|3'").fetchall()
    assert flags == [(["date_of_birth:in_future"],)]
    # A new delivery of people only: others is kept as it was; of people, only the new row is cleaned.
    (ws.extracts / "people.csv").write_text(GOOD + "4,Di Eve,03/04/1990,5\n")
    assert std(ws, "2024-01-01") == {"people": (False, 1), "others": (True, None)}
    # A later date: people has no birth date between the two dates, others has one (no longer in
    # the future): that row is cleaned again, the others' identifiers are kept.
    assert std(ws, "2024-06-01") == {"people": (True, None), "others": (False, 1)}
    fresh = Workspace.init(tmp_path / "fresh", ws.extracts, with_world_contracts=False)
    shutil.copy(ws.root / "contracts" / "tiny.yaml", fresh.root / "contracts" / "tiny.yaml")
    std(fresh, "2024-06-01")
    assert zones(ws) == zones(fresh)
    assert len(zones(ws)) == 4
    # The data quality report keeps the figures of a table measured from the same outputs.
    with Engine() as engine:
        _, _, report = write_report(ws, engine)
        (ws.extracts / "people.csv").write_text(GOOD)
        ingest(ws, engine)
        assert {s.table: s.reused for s in standardise(ws, engine, as_of="2024-06-01")} == {
            "people": False, "others": True}
        kept = measure(ws, engine, report)
        assert kept["tables"][1] is next(t for t in report["tables"] if t["table"] == "others")  # not measured again
        assert kept["tables"] == measure(ws, engine)["tables"]  # what measuring every table again gives


def test_a_line_break_inside_a_quoted_value_is_quarantined_with_a_hint(tmp_path):
    body = 'id,name,born,visits\n1,"Ann\nLee",01/02/1980,3\n2,Bob Cox,29/02/2000,1\n'
    ws = _tiny(tmp_path, body)
    (load,) = _run(ws)
    assert (load.read, load.landed, load.quarantined) == (3, 1, 2)
    hint = ': a value opened with " is not closed on this line (a line break inside a value? export values without line breaks)'
    assert _quarantine(ws) == [(1, None, "expected 4 fields, found 2" + hint),
                               (2, None, "expected 4 fields, found 3" + hint)]
