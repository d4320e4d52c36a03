"""The attacks of issue 23 ("Why", item 1), planted in a copy of the world's raw extracts and run
through the real pipeline (ingest, standardise, train, link, release): none of them may be
published. With the world's contracts the allow-list keeps them out (quarantined at ingest or
emptied at release, and counted); with the columns declared free text, the privacy guard (the
second line) refuses the release, naming the table, the column and the kind of problem.

And an independent scan of the release (written here, not with the guard's code) for anything
of a person: the same record's surname, full name, date of birth in common formats, postcode,
PNC, CRO and native ids, and anyone's full name.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml

from datafirst.engine import Engine
from datafirst.release.products import forget_keyed_hash, install_keyed_hash
from datafirst.release.stage import ReleaseError, published, release
from datafirst.sources.contract import load_contracts
from datafirst.sources.research_queries import QUERIES_FILE
from datafirst.workspace import Workspace

from .conftest import TEST_SALT, run_pipeline

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


# --- the raw extracts, edited line by line -------------------------------------------------------

class Extract:
    """A delimited extract file of the world, read and written back byte for byte but for the
    fields planted (only in well-formed lines whose id is not repeated)."""

    def __init__(self, path: Path, delimiter: str, encoding: str = "utf-8", key: tuple[int, ...] = (0,)):
        self.path, self.delimiter, self.encoding = path, delimiter, encoding
        text = path.read_bytes().decode(encoding, "surrogateescape")
        self.bom = text.startswith("\ufeff")
        text = text.removeprefix("\ufeff")
        self.newline = "\r\n" if "\r\n" in text else "\n"
        lines = text.split(self.newline)
        self.header = lines[0].split(delimiter)
        self.rows = [line.split(delimiter) for line in lines[1:]]
        ids = Counter(tuple(r[k] for k in key if k < len(r)) for r in self.rows)
        self.clean = [n for n, r in enumerate(self.rows) if len(r) == len(self.header) and '"' not in
                      self.delimiter.join(r) and not any("\udc80" <= ch <= "\udcff" for ch in "".join(r))
                      and ids[tuple(r[k] for k in key)] == 1]

    def get(self, row: int, column: str) -> str:
        return self.rows[row][self.header.index(column)]

    def set(self, row: int, column: str, value: str) -> None:
        assert self.delimiter not in value and '"' not in value
        self.rows[row][self.header.index(column)] = value

    def save(self) -> None:
        text = self.newline.join([self.delimiter.join(self.header)] + [self.delimiter.join(r) for r in self.rows])
        self.path.write_bytes(("\ufeff" if self.bom else "").encode("utf-8") + text.encode(self.encoding, "surrogateescape"))


@dataclass
class Planted:
    table: str  # release table
    column: str
    values: list[str] = field(default_factory=list)


def _dob_formats(iso: str) -> dict[str, str]:
    y, m, d = iso.split("-")
    return {"dotted": f"{d}.{m}.{y}", "compact": f"{y}{m}{d}", "sentence": f"born {d}/{m}/{y}"}


def _plant_attacks(extracts: Path, *, plain_only: bool = False) -> list[Planted]:
    """Every attack of "Why" item 1, each in its own column of the copy's raw files. The values
    are the real people's: a defendant's own surname, name and date of birth, a case id."""
    planted: list[Planted] = []
    mags = Extract(extracts / "magistrates" / "defendants.csv", ",", key=(1,))  # defendant_id
    rows = [r for r in mags.clean if len(mags.get(r, "surname")) >= 5 and mags.get(r, "surname").isalpha()
            and mags.get(r, "forename_1").isalpha() and mags.get(r, "date_of_birth")]
    a, b, c, d, e = rows[:5]
    # Spaced and decorated surnames in a code column (the record's own surname).
    sentence = Planted("magistrates__defendants", "sentence_type")
    for row, value in ((a, f"fine - {mags.get(a, 'surname').upper()}"), (b, " ".join(mags.get(b, "surname").upper()))):
        mags.set(row, "sentence_type", value)
        sentence.values.append(value)
    planted.append(sentence)
    mags.save()

    # Names inside one of 93 offence titles; two full names in a column; a third party's name
    # and address; an offence date replaced by the defendant's date of birth in every row.
    offences = Extract(extracts / "magistrates" / "offences.csv", ",", key=(1, 2))  # defendant_id, offence_seq
    by_defendant = {offences.get(r, "defendant_id"): r for r in offences.clean}
    title = Planted("magistrates__offences", "offence_title")
    named = [by_defendant[mags.get(r, "defendant_id")] for r in (c, d, e)]
    third_party = next(r for r in offences.clean if r not in named)
    for row, value in ((named[0], f"defendant {mags.get(c, 'forename_1')} {mags.get(c, 'surname').upper()}"),
                       (named[1], f"{mags.get(d, 'forename_1')} {mags.get(d, 'surname')}"),
                       (named[2], f"{mags.get(e, 'forename_1')} {mags.get(e, 'surname')}"),
                       (third_party, "victim Ava Aldridge of 12 Mill Lane")):
        offences.set(row, "offence_title", value)
        title.values.append(value)
    planted.append(title)
    if not plain_only:
        dob_by_defendant = {mags.get(r, "defendant_id"): mags.get(r, "date_of_birth") for r in mags.clean}
        dated = Planted("magistrates__offences", "offence_date")
        for row in offences.clean:
            dob = dob_by_defendant.get(offences.get(row, "defendant_id"))
            if dob:
                offences.set(row, "offence_date", dob)
                dated.values.append(dob)
        planted.append(dated)
    offences.save()

    # Dates of birth in other formats (the record's own), and the prison extract's own format.
    crown = Extract(extracts / "crown" / "defendants.psv", "|")
    # Dates the identifiers zone keeps (not a placeholder, nor a year alone written as 1 January).
    rows = [r for r in crown.clean if crown.get(r, "date_of_birth")[:4] > "1930"
            and not crown.get(r, "date_of_birth").endswith("-01-01")][:3]
    disposal = Planted("crown__defendants", "disposal")
    for row, form in zip(rows, ("dotted", "compact", "sentence")):
        value = _dob_formats(crown.get(row, "date_of_birth"))[form]
        crown.set(row, "disposal", value)
        disposal.values.append(value)
    planted.append(disposal)
    months = Planted("crown__defendants", "custodial_months")
    for row, value in zip(crown.clean[3:5], ("-36", "99999999")):
        crown.set(row, "custodial_months", value)
        months.values.append(value)
    planted.append(months)
    crown.save()

    prison = Extract(extracts / "prison" / "bookings.csv", ";", "cp1252")
    row = next(r for r in prison.clean if prison.get(r, "birth_date")[-4:] > "1930"
               and not prison.get(r, "birth_date").startswith("01-JAN"))
    ethnicity = Planted("prison__bookings", "ethnicity_code", [prison.get(row, "birth_date")])
    prison.set(row, "ethnicity_code", ethnicity.values[0])
    planted.append(ethnicity)
    prison.save()

    # An address fragment and a prefixed native id (a real magistrates' case id).
    civil = Extract(extracts / "civil" / "claims.csv", ",")
    claimant = Planted("civil__claims", "claimant_name", ["at 202 Moor Close", f"case {mags.get(a, 'case_id')}"])
    for row, value in zip(civil.clean[:2], claimant.values):
        civil.set(row, "claimant_name", value)
    arrears = Planted("civil__claims", "arrears_amount", ["-250.00"])
    civil.set(civil.clean[2], "arrears_amount", "-250.00")
    planted += [claimant, arrears]
    civil.save()
    return planted


def _pipeline(extracts: Path, root: Path, edit_contracts=None) -> Workspace:
    """Ingest to link on a copy of the world's extracts, with the workspace's contracts edited
    first when asked."""
    ws = Workspace.init(root / "ws", extracts)
    if edit_contracts is not None:
        edit_contracts(ws.contracts)
    run_pipeline(ws, "link")
    return ws


def _copy_world(world: Path, to: Path) -> Path:
    shutil.copytree(world / "extracts", to)
    return to


# --- with the world's contracts: the allow-list keeps every attack out ---------------------------

@pytest.fixture(scope="module")
def attacked(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("attacked")
    extracts = _copy_world(world, root / "extracts")
    planted = _plant_attacks(extracts, plain_only=True)
    ws = _pipeline(extracts, root)
    with Engine() as engine:
        release(ws, engine, salt=TEST_SALT)
    return ws, planted


def _released_text(rel: Path) -> set[str]:
    con = duckdb.connect()
    values: set[str] = set()
    for path in (rel / "tables").glob("*.parquet"):
        for col, ctype, *_ in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall():
            if ctype == "VARCHAR":
                values |= {r[0].lower() for r in con.execute(
                    f"SELECT DISTINCT \"{col}\" FROM read_parquet('{path}') WHERE \"{col}\" IS NOT NULL").fetchall()}
    return values


def test_every_attack_is_kept_out_by_the_allow_list_and_counted(attacked):
    ws, planted = attacked
    rel = published(ws)[-1]
    text = _released_text(rel)
    con = duckdb.connect()
    quarantine = ws.zone("landed") / "_quarantine.parquet"
    dictionary = json.loads((rel / "dictionary.json").read_text())
    suppressed = {(t["name"], c["name"]): c.get("suppressed_values", 0) for t in dictionary["tables"] for c in t["columns"]}
    for p in planted:
        for value in p.values:
            assert not any(value.lower() in v for v in text), (p.table, p.column, value)
        source, table = p.table.split("__")
        quarantined = con.execute(f"""SELECT count(*) FROM read_parquet('{quarantine}')
            WHERE source = ? AND "table" = ? AND "column" = ?""",
                                  [source, table, p.column]).fetchall()[0][0]
        # Quarantined at ingest (not in the code list, out of range) or emptied at release.
        assert quarantined + suppressed.get((p.table, p.column), 0) >= len(p.values), (p.table, p.column)
    # The numbers outside their declared range: none below the minimum or above the maximum.
    months = con.execute(f"SELECT min(custodial_months), max(custodial_months) FROM "
                         f"read_parquet('{rel}/tables/crown__defendants.parquet')").fetchall()[0]
    assert months[0] >= 1 and months[1] <= 600
    assert con.execute(f"SELECT min(arrears_amount) FROM read_parquet('{rel}/tables/civil__claims.parquet')"
                       ).fetchall()[0][0] >= 0


def test_the_independent_scan_finds_nothing_in_the_attacked_release(attacked):
    ws, _ = attacked
    assert independent_scan(ws, published(ws)[-1]) == []


# --- with the columns declared free text: the guard refuses, naming each -------------------------

FREE_TEXT = {("magistrates", "defendants", "sentence_type"), ("magistrates", "offences", "offence_title"),
             ("crown", "defendants", "disposal"), ("prison", "bookings", "ethnicity_code"),
             ("civil", "claims", "claimant_name")}


def _declare_free_text(folder: Path) -> None:
    for path in folder.glob("*.yaml"):
        if path.name.endswith(".codelist.yaml") or path.name == QUERIES_FILE:  # not contracts
            continue
        doc = yaml.safe_load(path.read_text())
        for table, spec in doc["tables"].items():
            for name, col in spec["columns"].items():
                if (doc["source"], table, name) in FREE_TEXT:
                    col.pop("allowed", None)
                    col.pop("harmonise", None)  # a mapping is for codes, not free text
                    col["free_text"] = True
                # The guard is tested as the second line: without the dates' ranges, the offence
                # dates replaced by dates of birth (mostly before the range) land, and so do the
                # offences whose titles were planted in those rows.
                if col.get("type") == "date" and not col.get("role"):
                    col.pop("min", None)
                    col.pop("max", None)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_the_guard_refuses_each_attack_in_a_column_declared_free_text(world, tmp_path):
    extracts = _copy_world(world, tmp_path / "extracts")
    planted = _plant_attacks(extracts)
    ws = _pipeline(extracts, tmp_path, _declare_free_text)
    with Engine() as engine, pytest.raises(ReleaseError) as exc:
        release(ws, engine, salt=TEST_SALT)
    message = str(exc.value)
    expected = [
        # `fine - WALKER` and `W A L K E R`
        "magistrates__defendants.sentence_type: 1 distinct value(s) hold a name of the identifiers zone added to "
        "another of the column's values",
        "magistrates__defendants.sentence_type: 1 value(s) equal to a surname from the identifiers zone",
        # `defendant Michelle MACDONALD` among 92 titles, and two more full names
        # `victim Ava Aldridge of 12 Mill Lane`
        "magistrates__offences.offence_title: 1 distinct value(s) hold an address",
        "magistrates__offences.offence_date: equals the date of birth of the person its row is about",
        "crown__defendants.disposal: 3 value(s) equal to a date of birth from the identifiers zone",
        "prison__bookings.ethnicity_code: 1 value(s) equal to a date of birth from the identifiers zone",
        "civil__claims.claimant_name: 1 distinct value(s) hold an address",
        "civil__claims.claimant_name: 1 value(s) equal to a native id from the content zone",
    ]
    for line in expected:
        assert line in message, (line, message)
    # The planted full names (two may be one person's: the count is of distinct values).
    assert re.search(r"magistrates__offences\.offence_title: [1-9] distinct value\(s\) hold a forename and a "
                     r"surname of one person", message), message
    for p in planted:  # the guard names columns, never values
        for value in p.values:
            assert value not in message, (p.column, value)
    assert published(ws) == []


# --- the independent scan -------------------------------------------------------------------------

def independent_scan(ws: Workspace, rel: Path) -> list[tuple]:
    """Released text values holding something of a person, as (table, column, what, value).

    Each released row is traced to the records it is about: its own record (row_id_hash, or the
    Crown Court and magistrates' records of a case journey, or a person's records through the
    person link lookup), and for a record of a table without identifiers, the records of the
    same source's person table that share a native id with it (an offence's defendant). Each
    text value is checked for those records' surname, forename and surname, date of birth in
    common formats, postcode, PNC, CRO and native ids; and every value for the forename and
    surname of anyone in the identifiers zone. A surname counts only where it is the row's own
    in at least half the rows holding the value: a label that is someone's surname by chance
    ('White: Irish' for a Mr White) is held by many others too."""
    con = duckdb.connect()
    zones = ws.zones
    contracts = load_contracts(ws.contracts)
    with Engine() as engine:
        install_keyed_hash(engine, TEST_SALT)
        try:
            # Every content record's hashed row id, and the person records it is about.
            parts, native = [], []
            for c in contracts:
                person_tables = [t for t, s in c.tables.items() if s.is_person_table]
                for t, spec in c.tables.items():
                    path = zones / "content" / f"{c.table_key(t)}.parquet"
                    ids = [n for n, col in spec.columns.items() if col.native_id]
                    native += [f"SELECT record_key, lower(CAST(\"{n}\" AS VARCHAR)) AS id FROM read_parquet('{path}')"
                               for n in ids]
                    if spec.is_person_table:
                        parts.append(f"SELECT record_key, record_key AS person_key FROM read_parquet('{path}')")
                        continue
                    for pt in person_tables:
                        ppath = zones / "content" / f"{c.table_key(pt)}.parquet"
                        for n in set(ids) & {m for m, col in c.tables[pt].columns.items() if col.native_id}:
                            parts.append(f"""SELECT t.record_key, p.record_key AS person_key FROM read_parquet('{path}') t
                                             JOIN read_parquet('{ppath}') p USING ("{n}")""")
            records = engine.execute(f"SELECT keyed_hash(record_key) AS rid, person_key FROM ({' UNION '.join(parts)})")
            native_ids = engine.execute(" UNION ".join(native))
        finally:
            forget_keyed_hash(engine)
    # Handed over as Arrow tables (an INSERT per row took most of the scan's time).
    records_arrow = pa.table({"rid": pa.array([r[0] for r in records], pa.string()),
                              "person_key": pa.array([r[1] for r in records], pa.string())})
    native_arrow = pa.table({"record_key": pa.array([r[0] for r in native_ids], pa.string()),
                             "id": pa.array([r[1] for r in native_ids], pa.string())})
    con.execute("CREATE TABLE records AS SELECT * FROM records_arrow")
    con.execute("CREATE TABLE native AS SELECT * FROM native_arrow")
    ids = f"read_parquet('{zones}/identifiers/*.parquet', union_by_name = true)"
    con.execute(f"""CREATE TABLE people AS SELECT record_key, lower(surname) AS surname, lower(forename) AS forename,
                    date_of_birth, upper(replace(postcode, ' ', '')) AS postcode,
                    lower(regexp_replace(pnc, '[^A-Za-z0-9]', '', 'g')) AS pnc,
                    lower(regexp_replace(cro, '[^A-Za-z0-9]', '', 'g')) AS cro FROM {ids}""")
    lookup = rel / "tables" / "person_link_lookup.parquet"
    found = []
    for path in sorted((rel / "tables").glob("*.parquet")):
        cols = dict((r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall())
        texts = [c for c, t in cols.items() if t in ("VARCHAR", "VARCHAR[]") and not c.endswith("_hash")
                 and not c.startswith("person_id") and c not in ("into_person_id",)]
        if not texts:
            continue
        if "row_id_hash" in cols:
            rows = "SELECT *, row_id_hash AS _rid FROM t"
        elif "crown_row_id_hash" in cols:
            rows = "SELECT *, crown_row_id_hash AS _rid FROM t UNION ALL SELECT *, magistrates_row_id_hash FROM t"
        elif "person_id_medium" in cols:
            rows = f"SELECT t.*, l.row_id_hash AS _rid FROM t JOIN read_parquet('{lookup}') l USING (person_id_medium)"
        else:
            rows = "SELECT *, NULL::VARCHAR AS _rid FROM t"
        for col in texts:
            value = f'unnest("{col}")' if cols[col] == "VARCHAR[]" else f'"{col}"'
            con.execute(f"""CREATE OR REPLACE TEMP TABLE cells AS
                WITH t AS (SELECT * FROM read_parquet('{path}')),
                r AS (SELECT row_number() OVER () AS _row, _rid, {value} AS v FROM ({rows}))
                SELECT r._row, r.v, lower(r.v) AS lv,
                       ' ' || trim(regexp_replace(lower(r.v), '[^a-z0-9]+', ' ', 'g')) || ' ' AS words,
                       regexp_replace(lower(r.v), '[^a-z]', '', 'g') AS letters,
                       upper(regexp_replace(r.v, '[^A-Za-z0-9]', '', 'g')) AS squashed, p.*
                FROM r LEFT JOIN records x ON x.rid = r._rid LEFT JOIN people p ON p.record_key = x.person_key
                WHERE r.v IS NOT NULL""")
            dobs = " OR ".join(f"contains(lv, lower(strftime(date_of_birth, '{f}')))" for f in (
                "%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%Y%m%d", "%d%m%Y", "%d-%b-%Y", "%d %B %Y", "%-d/%-m/%Y"))
            checks = {
                "surname": "length(surname) >= 3 AND (contains(words, ' ' || surname || ' ') OR letters = surname)",
                "full name": "length(forename) >= 2 AND length(surname) >= 2 AND (contains(words, ' ' || forename || ' ' "
                             "|| surname || ' ') OR contains(words, ' ' || surname || ' ' || forename || ' '))",
                "date of birth": dobs,
                "postcode": "length(postcode) >= 5 AND contains(squashed, postcode)",
                "pnc": "length(pnc) >= 6 AND contains(lower(squashed), pnc)",
                "cro": "length(cro) >= 6 AND contains(lower(squashed), cro)",
            }
            for what, check in checks.items():
                hits = con.execute(f"""
                    WITH hit AS (SELECT v, bool_or({check}) AS own FROM cells GROUP BY _row, v)
                    SELECT v FROM hit GROUP BY v HAVING avg(CASE WHEN own THEN 1.0 ELSE 0 END) >= 0.5
                    """ if what == "surname" else f"SELECT DISTINCT v FROM cells WHERE {check}").fetchall()
                found += [(path.stem, col, what, h[0]) for h in hits]
            hits = con.execute("""SELECT DISTINCT c.v FROM cells c JOIN native n ON n.record_key = c.record_key
                                  WHERE length(n.id) >= 5 AND contains(c.lv, n.id)""").fetchall()
            found += [(path.stem, col, "native id", h[0]) for h in hits]
            # Anyone's full name, side by side either way round: each two neighbouring words.
            hits = con.execute("""
                WITH names AS (SELECT DISTINCT split_part(forename, ' ', 1) AS f, split_part(surname, ' ', 1) AS s
                               FROM people WHERE length(forename) >= 3 AND length(surname) >= 3),
                words AS (SELECT v, string_split(trim(words), ' ') AS ws FROM (SELECT DISTINCT v, words FROM cells)),
                pairs AS (SELECT v, ws[i] AS a, ws[i + 1] AS b FROM (SELECT *, unnest(range(1, len(ws))) AS i FROM words))
                SELECT DISTINCT v FROM pairs JOIN names ON (a = f AND b = s) OR (a = s AND b = f)""").fetchall()
            found += [(path.stem, col, "anyone's full name", h[0]) for h in hits]
    return found
