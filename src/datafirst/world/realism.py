"""The realism table of a generated world: what each source holds and how dirty it is.

Measured from the files on disk (the extracts and the truth), not from the generator's
intentions, so that a reader can judge the world and the tests can hold it to the
declared error model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from ..engine.sql import sql_string
from .error_model import default_error_model


@dataclass
class SourceRealism:
    source: str
    table: str
    rows: int
    people: int
    share_in_other_sources: float  # of this table's people, share also found in another source
    duplicate_rate: float  # share of rows that are a further record of a person already in the table
    defects: dict[str, int]  # planted whole-row defect -> rows
    errors: dict[str, float]  # "field:kind" -> share of rows (measured)
    declared: dict[str, float]  # "field:kind" -> declared rate
    missing: dict[str, float]  # extract column -> share empty


def _missingness(con: duckdb.DuckDBPyConnection, path: Path, spec: dict) -> dict[str, float]:
    """Share of empty values per column, read leniently (malformed rows are skipped here;
    catching them is the loader's job)."""
    if spec["format"] == "jsonl":
        rel = (f"SELECT crn, offender.name.forename AS forename, offender.name.surname AS surname, "
               f"offender.dateOfBirth AS date_of_birth, offender.gender AS gender, offender.ethnicity AS ethnicity, "
               f"offender.identifiers.pnc AS pnc, offender.identifiers.cro AS cro, offender.address.postcode AS postcode "
               f"FROM read_json({sql_string(path)}, format='newline_delimited', ignore_errors=true, "
               f"columns={{crn: 'VARCHAR', offender: 'STRUCT(name STRUCT(forename VARCHAR, surname VARCHAR), "
               f"dateOfBirth VARCHAR, gender VARCHAR, ethnicity VARCHAR, identifiers STRUCT(pnc VARCHAR, cro VARCHAR), "
               f"address STRUCT(postcode VARCHAR))'}})")
    elif spec["encoding"] != "utf-8":
        # DuckDB reads UTF-8, UTF-16 and Latin-1 only; Windows-1252 goes through Arrow.
        with path.open("rb") as f:
            header = f.readline().decode(spec["encoding"]).strip().split(spec["delimiter"])
        table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(encoding=spec["encoding"]),
            parse_options=pacsv.ParseOptions(delimiter=spec["delimiter"], invalid_row_handler=lambda _row: "skip"),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header}))
        con.register("extract_view", table)
        rel = "SELECT * FROM extract_view"
    else:
        delim = spec["delimiter"].replace("\t", "\\t")
        rel = (f"SELECT * FROM read_csv({sql_string(path)}, delim=E'{delim}', header=true, all_varchar=true, "
               f"ignore_errors=true, quote='\"', escape='\"', strict_mode=false)")
    cols = [r[0] for r in con.execute(f"DESCRIBE {rel}").fetchall()]
    exprs = ", ".join(f"avg(CASE WHEN \"{c}\" IS NULL OR trim(\"{c}\") = '' THEN 1.0 ELSE 0.0 END)" for c in cols)
    values = con.execute(f"SELECT {exprs} FROM ({rel})").fetchall()[0]
    return {c.lstrip("\ufeff"): round(float(v or 0.0), 4) for c, v in zip(cols, values)}


def realism(world: Path) -> list[SourceRealism]:
    world = Path(world)
    manifest = json.loads((world / "world.json").read_text(encoding="utf-8"))
    model = default_error_model()
    out = []
    with duckdb.connect() as con:
        records = sql_string(world / "truth" / "records.parquet")
        con.execute(f"""
            CREATE TEMP TABLE rec AS
            SELECT *, source AS system FROM read_parquet({records})""")
        con.execute("""
            CREATE TEMP TABLE person_systems AS
            SELECT person_id, count(DISTINCT system) AS n_systems FROM rec GROUP BY person_id""")
        for path, spec in manifest["extracts"].items():
            if not spec.get("record_id"):
                continue
            src, table = spec["source"], spec["table"]
            rows, people, multi = con.execute("""
                SELECT count(*), count(DISTINCT r.person_id),
                       count(DISTINCT CASE WHEN p.n_systems > 1 THEN r.person_id END)
                FROM rec r JOIN person_systems p USING (person_id) WHERE source = ? AND "table" = ?""",
                [src, table]).fetchall()[0]
            defects = dict(con.execute("""
                SELECT defect, count(*) FROM rec WHERE source = ? AND "table" = ? AND defect <> '' GROUP BY defect
                ORDER BY defect""", [src, table]).fetchall())
            errors = dict(con.execute("""
                SELECT e, count(*) FROM (SELECT unnest(string_split(errors, ';')) AS e FROM rec
                                         WHERE source = ? AND "table" = ? AND errors <> '') GROUP BY e ORDER BY e""",
                [src, table]).fetchall())
            rates = model.for_source(spec["error_profile"])
            declared = {f"{f}:{k}": r for f, kinds in rates.fields.items() if f != "rows" for k, r in kinds.items() if r > 0}
            declared.update({f"rows:{k}": r for k, r in rates.fields.get("rows", {}).items() if r > 0})
            measured = {k: round(v / rows, 5) for k, v in errors.items()} if rows else {}
            measured.update({f"rows:{k}": round(v / rows, 5) for k, v in defects.items()} if rows else {})
            out.append(SourceRealism(
                source=src, table=table, rows=rows, people=people,
                share_in_other_sources=round(multi / people, 4) if people else 0.0,
                duplicate_rate=round(1 - people / rows, 4) if rows else 0.0,
                defects=defects, errors=measured, declared=declared,
                missing=_missingness(con, world / "extracts" / path, spec),
            ))
    return out


def overall(world: Path) -> dict[str, float]:
    """World-wide figures: people seen, and the share seen in two or more source systems."""
    with duckdb.connect() as con:
        records = sql_string(Path(world) / "truth" / "records.parquet")
        seen, multi = con.execute(f"""
            SELECT count(*), count(*) FILTER (WHERE n > 1) FROM (
                SELECT person_id, count(DISTINCT source) AS n
                FROM read_parquet({records}) GROUP BY person_id)""").fetchall()[0]
    return {"people_seen": seen, "share_in_2plus_sources": round(multi / seen, 4) if seen else 0.0}
