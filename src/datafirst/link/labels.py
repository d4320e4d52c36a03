"""A labels file (known truth: which records are the same person) loaded into the engine for the
linkage quality report's accuracy figures (docs/labels.md).

One job: read a CSV or Parquet file keyed by datafirst's record key, or by the source's own id
(source, table, record_id), check it against the identifiers zone, and hand back a table of
(record_key, true_id, and the optional group columns sex, ethnicity, age_band, name_origin).
Every refusal is a LabelsError naming the file and what to do.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string
from ..workspace import Workspace

GROUP_COLUMNS = ("sex", "ethnicity", "age_band", "name_origin")
KEY_COLUMN = "record_key"
NATIVE_KEY_COLUMNS = ("source", "table", "record_id")
TABLE = "labels_truth"  # the loaded labels, a table of the engine's session
EXAMPLES = 3
SHAPE = ("a labels file is CSV (.csv: comma-separated, with a header) or Parquet (.parquet) with columns "
         "record_key, true_id (or source, table, record_id, true_id) and optionally sex, ethnicity, age_band, "
         "name_origin; see docs/labels.md")
HOW_KEYED = {
    "record_key": "keyed by record_key (datafirst's key: source|table|native id)",
    "native": "keyed by source, table and record_id: each row's record key is "
              "source || '|' || table || '|' || record_id (the record id trimmed of spaces, as ingest lands it)",
}


class LabelsError(ValueError):
    """A labels file that cannot be used; the message names the file and what to do."""


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _relation(engine: Engine, path: Path) -> str:
    """The labels file as a relation for SQL, chosen by its extension."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return engine.parquet(path)
    if suffix != ".csv":
        raise LabelsError(f"labels file {path} is neither .csv nor .parquet; {SHAPE}")
    # Every column as text, so that ids keep their leading zeros and a true id is never a number.
    csv = f"read_csv({sql_string(path)}, all_varchar = true, header = true, delim = ',')"
    if isinstance(engine, Engine):
        return csv
    # read_csv is DuckDB's (spark_sql.py does not translate it): another engine is given the rows
    # DuckDB reads, the same rows and text either way.
    import duckdb

    with duckdb.connect() as con:
        rows = con.sql(f"SELECT * FROM {csv}").fetch_arrow_table()
    engine.register(f"{TABLE}_csv", rows)
    return f"{TABLE}_csv"


def _unreadable(path: Path, exc: Exception) -> LabelsError:
    kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return LabelsError(f"labels file {path} is not readable {kind} ({detail}); {SHAPE}")


def check_file(engine: Engine, path: Path) -> tuple[str, dict[str, str]]:
    """Refuse a labels file that is not there, has another extension, cannot be read or lacks the
    columns it needs. Returns its relation for SQL and its columns (lower-cased name -> name)."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"labels file {path} not found; {SHAPE}")
    try:
        relation = _relation(engine, path)
        names = engine.columns(relation)
    except LabelsError:
        raise
    except Exception as exc:  # the engine's own error types (DuckDB's, Spark's): said in the message
        raise _unreadable(path, exc) from exc
    columns = {n.lower(): n for n in names}
    keying(path, columns)
    return relation, columns


def keying(path: Path, columns: dict[str, str]) -> str:
    """'record_key' or 'native' (source, table, record_id): how the labels name their records."""
    found = ", ".join(columns.values()) or "none"
    if "true_id" not in columns:
        raise LabelsError(f"labels file {path} has no true_id column (its columns: {found}); {SHAPE}")
    if KEY_COLUMN in columns:
        return "record_key"
    if all(c in columns for c in NATIVE_KEY_COLUMNS):
        return "native"
    missing = [c for c in NATIVE_KEY_COLUMNS if c not in columns]
    raise LabelsError(f"labels file {path} has no record_key column, nor all of source, table, record_id (it lacks "
                      f"{', '.join(missing)}; its columns: {found}); {SHAPE}")


def _composite_tables(ws: Workspace) -> dict[tuple[str, str], list[str]]:
    """(source, table) -> its record id columns, for the person tables whose record id is more
    than one column (their record key joins the parts: one record_id value cannot name it)."""
    from ..sources.contract import ContractError, load_contracts

    try:
        contracts = load_contracts(ws.contracts)
    except ContractError:  # the stages say what is wrong with the contracts; unmatched keys are still caught
        return {}
    return {(c.source, name): t.record_id_columns for c in contracts for name, t in c.tables.items()
            if t.is_person_table and len(t.record_id_columns) > 1}


def load_labels(ws: Workspace, engine: Engine, path: Path, table: str = TABLE) -> str:
    """Load the labels file into `table` (record_key, true_id, and the group columns it has, all
    text), checked against the identifiers zone; returns the table's name."""
    path = Path(path)
    relation, columns = check_file(engine, path)
    how = keying(path, columns)
    c = {name: _quoted(actual) for name, actual in columns.items()}
    if how == "record_key":
        key = f"CAST({c['record_key']} AS VARCHAR)"
    else:
        # A record id is trimmed when it lands (ingest.py); a number in a Parquet file is its text.
        key = (f"CAST({c['source']} AS VARCHAR) || '|' || CAST({c['table']} AS VARCHAR) || '|' || "
               f"trim(CAST({c['record_id']} AS VARCHAR))")
    groups = "".join(f", CAST({c[g]} AS VARCHAR) AS {g}" for g in GROUP_COLUMNS if g in c)
    try:
        engine.execute(f"""CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT {key} AS record_key, CAST({c['true_id']} AS VARCHAR) AS true_id{groups} FROM {relation}""")
    except Exception as exc:  # a row the reader cannot parse (a CSV row with more fields than its header)
        raise _unreadable(path, exc) from exc

    understood = f"The file was read as {HOW_KEYED[how]}."
    rows, no_key, no_true_id = engine.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE record_key IS NULL),
               count(*) FILTER (WHERE true_id IS NULL OR trim(true_id) = '')
        FROM {table}""")[0]
    if rows == 0:
        raise LabelsError(f"labels file {path} holds no rows; write one row per labelled record ({SHAPE})")
    if no_key:
        what = "record_key" if how == "record_key" else "source, table or record_id"
        raise LabelsError(f"labels file {path}: {no_key:,} of {rows:,} rows have an empty {what}, so they name no "
                          f"record. {understood} Fill in or remove those rows (docs/labels.md).")
    if no_true_id:
        raise LabelsError(f"labels file {path}: {no_true_id:,} of {rows:,} rows have an empty true_id; give every "
                          "labelled record its true person (or leave the record out of the labels; docs/labels.md).")

    repeated = engine.execute(f"""SELECT record_key, count(*) FROM {table} GROUP BY record_key
                                  HAVING count(*) > 1 ORDER BY count(*) DESC, record_key LIMIT {EXAMPLES}""")
    if repeated:
        n = engine.scalar(f"SELECT count(*) FROM (SELECT record_key FROM {table} GROUP BY record_key "
                          "HAVING count(*) > 1) d")
        shown = ", ".join(f"{k!r} ({m:,} rows)" for k, m in repeated)
        keys = "1 record key appears" if n == 1 else f"{n:,} record keys appear"
        raise LabelsError(f"labels file {path}: {keys} on more than one row, for example {shown}. "
                          f"{understood} Give each record one row, with its one true_id (docs/labels.md).")

    if how == "native":
        composite = _composite_tables(ws)
        present = engine.execute(f"SELECT DISTINCT CAST({c['source']} AS VARCHAR), CAST({c['table']} AS VARCHAR) "
                                 f"FROM {relation}") if composite else []
        hit = [(s, t) for s, t in present if (s, t) in composite]
        if hit:
            s, t = sorted(hit)[0]
            parts = composite[(s, t)]
            raise LabelsError(
                f"labels file {path} labels records of {s}/{t}, whose record id is composite ({', '.join(parts)}): "
                "one record_id column cannot name them. Key those rows by record_key instead: "
                f"{s}|{t}|{'|'.join('<' + p + '>' for p in parts)} (the parts in the contract's order, joined by '|'; "
                "a '|' or '\\' within a part written with a '\\' before it); see docs/labels.md.")

    folder = ws.zone("identifiers")
    if not any(folder.glob("*.parquet")):
        raise LabelsError(f"labels file {path} cannot be checked: the identifiers zone ({folder}) is empty; run "
                          "`datafirst standardise` (or `datafirst run`) first.")
    ids = engine.parquet(folder / "*.parquet")
    unmatched = f"""SELECT l.record_key FROM {table} l
                    LEFT JOIN (SELECT DISTINCT record_key FROM {ids}) i ON i.record_key = l.record_key
                    WHERE i.record_key IS NULL"""
    missing = int(engine.scalar(f"SELECT count(*) FROM ({unmatched}) u"))
    if missing:
        examples = ", ".join(repr(r[0]) for r in engine.execute(
            f"SELECT record_key FROM ({unmatched}) u ORDER BY record_key LIMIT {EXAMPLES}"))
        real = engine.scalar(f"SELECT min(record_key) FROM {ids}")
        raise LabelsError(
            f"labels file {path}: {missing:,} of {rows:,} rows match no record in the identifiers zone ({folder}), "
            f"for example {examples}. {understood} This workspace's record keys look like {real!r}. Correct those "
            "keys, or remove their rows: labels may cover only some records, but every row must name one that "
            "landed (a quarantined row is not a record). See docs/labels.md.")
    return table
