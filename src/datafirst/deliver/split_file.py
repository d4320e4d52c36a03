"""SAIL split-file mode: a project's data in two files that only a trusted third party's answer joins.

SAIL Databank never receives identifiers with content. The data owner writes
- File 1, for the trusted third party (TTP): one row per person record of the project's approved
  person tables, with the identifiers the TTP matches people on (forename, surname, date of
  birth, sex, postcode) and a system id; nothing else (no table, no date of an event, no code);
- File 2, for SAIL: the approved tables' content, with the same system id in place of each person
  record's hash, and no identifier.
The TTP matches File 1's people to its population index and returns each system id's anonymous
linking field (ALF); SAIL replaces the system id in File 2 by the ALF (`join_alf`).

This is the one part of delivery that reads the identifiers zone: it runs on the data owner's
side, by design, and File 1 is the only output that holds identifiers. File 2 passes the privacy
guard (release/privacy.py) before anything is written where it can be sent.

The system id of a record is a keyed hash of its release hash under a fresh random secret made
for this delivery and never written anywhere: it cannot be derived from the release's hashes, and
two deliveries give a record different ids. Every other hashed id of File 2 (person ids, native
ids, other tables' row hashes) is re-keyed with the same secret, so File 2's tables still join to
one another but to nothing outside the delivery. The data owner keeps the one mapping back,
system id to release record hash (`owner_keeps/system_ids.parquet`), to withdraw a record or
answer a query later; it goes to neither the TTP nor SAIL.

The records are matched to the release by the hash the release gives their record key
(`keyed_hash(record_key)`, products.py; the identifiers zone holds each person record's key),
so writing the files needs the release's hashing key, and checks it against the release's
manifest (`key_check`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..engine import Engine
from ..engine.sql import sql_string
from ..files import file_sha256
from ..release.chain import release_problems
from ..release.privacy import build_sensitive_values, check_tables, declared_lists
from ..release.products import HASH_CHARS, LOOKUP, forget_keyed_hash, install_keyed_hash
from ..release.signing import trusted_public_keys
from ..release.stage import KEY_CHECK
from ..sources.contract import load_contracts
from ..standardise.stage import IDENTIFIERS
from ..workspace import Workspace, remove_tree
from .projects import Project

FILE1 = "file1_trusted_third_party"
FILE2 = "file2_sail"
OWNER = "owner_keeps"
SYSTEM_ID = "system_id"
ALF = "alf"
# What the TTP matches on: the identifiers zone's cleaned columns (standardise/stage.py).
FILE1_IDENTIFIERS = ("forename", "surname", "date_of_birth", "sex", "postcode")
# As long as the release's hashes (80 bits; File 1's are checked distinct): the privacy guard
# knows that shape as a hash, not text that could hold a name.
SYSTEM_ID_CHARS = HASH_CHARS
HASHED_ID = "hashed_id"
RECORD_HASH = "row_id_hash"


class SplitFileError(Exception):
    """Split files that must not be written; the message says why and what to do."""


@dataclass
class SplitFiles:
    """What a split-file delivery wrote: its folder, File 1's rows and File 2's tables' rows."""

    path: Path
    records: int
    tables: dict[str, int] = field(default_factory=dict)


DELIVERIES = "deliveries"


def split_folder(ws: Workspace, project_id: str, release: str) -> Path:
    """Where a new split-file delivery goes: `deliveries/<project>/<release>-split-<n>/`, beside
    the project's packages, `n` one more than the last."""
    folder = ws.root / DELIVERIES / project_id
    taken = [int(m.group(1)) for p in folder.glob(f"{release}-split-*")
             if (m := re.fullmatch(rf"{re.escape(release)}-split-([0-9]+)", p.name))]
    return folder / f"{release}-split-{max(taken, default=0) + 1}"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _approved(release: Path, project: Project, source: str) -> dict[str, tuple[dict, list[str]]]:
    """Each approved table's dictionary entry and delivered columns, refused when the release
    lacks one or a column, or a column needs a treatment this mode does not apply."""
    tables = {t["name"]: t for t in json.loads((release / "dictionary.json").read_text(encoding="utf-8"))["tables"]}
    out = {}
    for name in project.tables:
        if name not in tables:
            raise SplitFileError(f"{source}: tables.{name} is not a table of release {release.name}; its tables are "
                                 f"{', '.join(sorted(tables))}")
        delivered = project.delivered_columns(name)
        present = [c["name"] for c in tables[name]["columns"]]
        unknown = [c for c in delivered if c not in present]
        if unknown:
            raise SplitFileError(f"{source}: tables.{name} names {', '.join(unknown)}, which release {release.name}'s "
                                 f"{name} does not have; its columns are {', '.join(present)}")
        treated = [c for c, t in delivered.items() if t != "keep"]
        if treated:
            raise SplitFileError(f"{source}: tables.{name}.{treated[0]} has a treatment ({delivered[treated[0]]}); "
                                 "split files on their own deliver columns as kept: run them from `datafirst deliver`, "
                                 "which applies the treatments, or declare the column keep or drop")
        out[name] = (tables[name], [c for c in present if c in delivered])
    return out


def _check_release(release: Path, salt_check: str, public_keys: list[Path] | None) -> None:
    """Refuse a release that does not verify (as `datafirst verify` checks it, against
    `public_keys` or the default trusted key), or a hashing key other than the one it was made
    with (its record hashes would then match no identifiers)."""
    problems = release_problems(release, trusted_public_keys(public_keys))
    if problems:
        raise SplitFileError(f"release {release} does not verify, so nothing is delivered from it:\n  "
                             + "\n  ".join(problems))
    manifest = json.loads((release / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("key_check") != salt_check:
        raise SplitFileError(f"the hashing key differs from the one {release.name} was made with, so its record "
                             "hashes match no identifiers: set DATAFIRST_SALT_FILE (or DATAFIRST_SALT) to that key")


def write_split_files(engine: Engine, ws: Workspace, release: Path, project: Project, out: Path, salt: str,
                      source: str = "the project", public_keys: list[Path] | None = None) -> SplitFiles:
    """Write File 1, File 2 and the owner's mapping for `project` from `release` into `out` (a new
    folder). `salt`: the release's hashing key; `source` names the project file in errors;
    `public_keys`: files of the keys the release is verified against (default: as `verify`)."""
    if project.tre != "SAIL":
        raise SplitFileError(f"{source}: split files are SAIL's intake (tre: SAIL); this project's TRE is "
                             f"{project.tre}: deliver it with `datafirst deliver`")
    if project.expired():
        raise SplitFileError(f"{source}: the project expired on {project.expires}; nothing is delivered to it")
    if out.exists():
        raise SplitFileError(f"{out} exists; split files are written to a new folder")
    approved = _approved(release, project, source)
    identifiers = ws.zone(IDENTIFIERS)
    person_tables = [n for n in approved if (identifiers / f"{n}.parquet").is_file()]
    if not person_tables:
        raise SplitFileError(f"{source}: no approved table holds person records (tables with identifiers: "
                             f"{', '.join(sorted(p.stem for p in identifiers.glob('*.parquet')))}); File 1 would be "
                             "empty and the trusted third party could assign no ALF")
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    install_keyed_hash(engine, salt)
    # The delivery's secret: in a session variable (never in SQL text), dropped at the end.
    engine.execute("SET VARIABLE datafirst_split_secret = ?", [secrets.token_hex(32)])
    engine.execute(f"""CREATE OR REPLACE TEMP MACRO split_key(x) AS CASE WHEN x IS NULL THEN NULL
        ELSE substr(sha256(getvariable('datafirst_split_secret') || '|' || CAST(x AS VARCHAR)), 1, {SYSTEM_ID_CHARS})
        END""")
    try:
        _check_release(release, engine.scalar("SELECT keyed_hash(?)", [KEY_CHECK]), public_keys)
        remove_tree(staging)
        for folder in (FILE1, FILE2, OWNER):
            (staging / folder).mkdir(parents=True, exist_ok=False)
        records = _write_file1(engine, release, identifiers, person_tables, staging)
        checked = staging / ".file2_checked"
        rows = {name: _write_file2_table(engine, release, name, entry, columns, person_tables, checked)
                for name, (entry, columns) in approved.items()}
        _guard(engine, ws, {n: checked / f"{n}.parquet" for n in approved}, release)
        _publish_file2(engine, checked, person_tables, staging / FILE2)
        checked.rmdir()
        _write_readme(staging, project, release, records, rows)
        for folder in (FILE1, FILE2, OWNER):
            _write_sums(staging / folder)
        staging.rename(out)
    except BaseException:
        remove_tree(staging)  # nothing half-written is left to be sent
        raise
    finally:
        engine.execute("DROP TABLE IF EXISTS split_records")
        engine.execute("DROP MACRO IF EXISTS split_key")
        engine.execute("RESET VARIABLE datafirst_split_secret")
        forget_keyed_hash(engine)
    return SplitFiles(out, records, rows)


def _write_file1(engine: Engine, release: Path, identifiers: Path, person_tables: list[str], out: Path) -> int:
    """File 1 (identifiers and system id, in system-id order: the order tells nothing of the
    tables) and the owner's mapping; returns File 1's rows. Only records the release holds are in it."""
    parts = []
    for name in person_tables:
        ids = f"read_parquet({sql_string(identifiers / f'{name}.parquet')})"
        released = f"read_parquet({sql_string(release / 'tables' / f'{name}.parquet')})"
        cols = ", ".join(f"i.{c}" for c in FILE1_IDENTIFIERS)
        parts.append(f"""SELECT split_key(r.{RECORD_HASH}) AS {SYSTEM_ID}, {sql_string(name)} AS release_table,
                                r.{RECORD_HASH}, {cols}
                         FROM {ids} i JOIN {released} r ON r.{RECORD_HASH} = keyed_hash(i.record_key)""")
    engine.execute(f"CREATE OR REPLACE TEMP TABLE split_records AS {' UNION ALL '.join(parts)}")
    n, distinct = engine.execute(f"SELECT count(*), count(DISTINCT {SYSTEM_ID}) FROM split_records")[0]
    if n != distinct:  # 80-bit ids: never in practice; a repeated record key would do it
        raise SplitFileError(f"{n - distinct} system ids repeat among {n:,} person records; each record must appear "
                             "once in the identifiers zone: standardise again")
    file1 = out / FILE1 / "identifiers.parquet"
    engine.to_parquet(f"SELECT {SYSTEM_ID}, {', '.join(FILE1_IDENTIFIERS)} FROM split_records ORDER BY {SYSTEM_ID}",
                      file1)
    _csv_beside(file1)
    engine.to_parquet(f"SELECT {SYSTEM_ID}, release_table, {RECORD_HASH} FROM split_records ORDER BY {SYSTEM_ID}",
                      out / OWNER / "system_ids.parquet")
    return n


def _write_file2_table(engine: Engine, release: Path, name: str, entry: dict, columns: list[str],
                       person_tables: list[str], out: Path) -> int:
    """One approved table as File 2 holds it, every hashed id re-keyed with the delivery's secret,
    the system id still under the name of the record hash it stands for (so that the privacy
    guard finds each row's person; `_publish_file2` renames it). A person table's rows start
    with it, approved or not (its record hash is not delivered: the ALF stands for it); the
    person link lookup keeps the rows of approved person tables only: the rest would name
    records (and sources) the project was not approved for."""
    kinds = {c["name"]: (c.get("declared") or {}).get("kind") for c in entry["columns"]}
    person = name in person_tables
    select = [f"split_key({RECORD_HASH}) AS {RECORD_HASH}"] if person else []
    select += [f"split_key({_q(c)}) AS {_q(c)}" if kinds.get(c) == HASHED_ID else _q(c)
               for c in columns if not (person and c == RECORD_HASH)]
    where = ""
    if name == LOOKUP:  # its tables are named source_dataset__source_table
        where = f"WHERE source_dataset || '__' || source_table IN ({', '.join(map(sql_string, person_tables))})"
    order = f"ORDER BY {RECORD_HASH}" if person or (name == LOOKUP and RECORD_HASH in columns) else ""
    return engine.to_parquet(f"SELECT {', '.join(select)} FROM read_parquet({sql_string(release / entry['path'])}) "
                             f"{where} {order}", out / f"{name}.parquet")


def _publish_file2(engine: Engine, checked: Path, person_tables: list[str], out: Path) -> None:
    """File 2's checked tables as delivered, Parquet and CSV: a person table's (and the lookup's)
    record hash column, which holds the system id, named `system_id`."""
    for path in sorted(checked.glob("*.parquet")):
        final = out / path.name
        columns = engine.columns(engine.parquet(path))
        if (path.stem in person_tables or path.stem == LOOKUP) and RECORD_HASH in columns:
            select = ", ".join(f"{RECORD_HASH} AS {SYSTEM_ID}" if c == RECORD_HASH else _q(c) for c in columns)
            engine.to_parquet(f"SELECT {select} FROM {engine.parquet(path)}", final)
            path.unlink()
        else:
            path.rename(final)
        _csv_beside(final)


def _csv_beside(parquet: Path) -> None:
    """A CSV copy of a Parquet file beside it (for intakes that load CSV), a batch at a time."""
    source = pq.ParquetFile(parquet)
    with pacsv.CSVWriter(parquet.with_suffix(".csv"), source.schema_arrow) as writer:
        for batch in source.iter_batches():
            writer.write_batch(batch)


def _guard(engine: Engine, ws: Workspace, tables: dict[str, Path], release: Path) -> None:
    """File 2 through the release's privacy guard, against the identifiers zone, with the lists of
    values `release` declares; each person record's date of birth is found by its system id (as
    File 2 holds it)."""
    ids = f"read_parquet({sql_string(ws.zone(IDENTIFIERS) / '*.parquet')}, union_by_name = true)"
    system_ids = f"(SELECT record_key, split_key(keyed_hash(record_key)) AS {RECORD_HASH} FROM {ids})"
    sensitive = build_sensitive_values(engine, ws.zone(IDENTIFIERS) / "*.parquet", ws.zone("content"),
                                       load_contracts(ws.contracts), ws.zone("links") / "clusters.parquet", system_ids)
    problems = check_tables(engine, tables, set(ws.config().release.privacy_allow), sensitive,
                            code_lists=frozenset(n for n in tables if n.startswith("code_list__")),
                            declared_lists=declared_lists(json.loads((release / "dictionary.json").read_text(
                                encoding="utf-8"))))
    if problems:
        raise SplitFileError("File 2 failed the privacy guard and was not written:\n  " + "\n  ".join(problems))


def _write_readme(out: Path, project: Project, release: Path, records: int, rows: dict[str, int]) -> None:
    tables = "\n".join(f"- `{n}`: {r:,} rows" for n, r in rows.items())
    (out / "README.md").write_text(f"""# Split files for project {project.id} ({project.title})

From release {release.name}, for SAIL Databank (approval {project.approval_reference}).

- `{FILE1}/identifiers.csv`: send to the trusted third party only. {records:,} person records: a
  `{SYSTEM_ID}` and the identifiers it matches people on ({', '.join(FILE1_IDENTIFIERS)}); no content.
- `{FILE2}/`: send to SAIL only. The approved tables (Parquet and CSV), with `{SYSTEM_ID}` in place of
  each person record's hash and no identifiers:
{tables}
- `{OWNER}/system_ids.parquet`: the data owner keeps it; it goes to neither. Each `{SYSTEM_ID}` and
  the release table and record hash it stands for.

The trusted third party returns `{SYSTEM_ID}` -> `{ALF}`; SAIL replaces each `{SYSTEM_ID}` of File 2 by its
`{ALF}` (`datafirst.deliver.split_file.join_alf`). Each folder's SHA256SUMS lists its files' checksums.
""", encoding="utf-8")


def _write_sums(folder: Path) -> None:
    lines = [f"{file_sha256(p)}  {p.name}" for p in sorted(folder.iterdir()) if p.is_file()]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n", encoding="utf-8")


def join_alf(engine: Engine, file2: Path, returned: Path, out: Path) -> dict[str, int]:
    """File 2's tables with each `system_id` replaced by the ALF the trusted third party returned
    for it (`returned`: a CSV or Parquet file of system_id and alf), written to `out` as Parquet;
    returns each table's rows. Refused when a system id of File 2 has no ALF, or one has two."""
    try:
        mapping = pq.read_table(returned) if returned.suffix == ".parquet" else pacsv.read_csv(
            returned, convert_options=pacsv.ConvertOptions(column_types={SYSTEM_ID: pa.string()}))
    except (OSError, pa.ArrowInvalid) as exc:
        raise SplitFileError(f"{returned}: cannot read the returned mapping ({exc})") from None
    if not {SYSTEM_ID, ALF} <= set(mapping.column_names):
        raise SplitFileError(f"{returned}: the returned mapping needs columns {SYSTEM_ID} and {ALF}; it has "
                             f"{', '.join(mapping.column_names)}")
    engine.register("split_returned", mapping.select([SYSTEM_ID, ALF]))
    try:
        engine.execute(f"CREATE OR REPLACE TEMP TABLE split_alf AS SELECT CAST({SYSTEM_ID} AS VARCHAR) AS {SYSTEM_ID}, "
                       f"{ALF} FROM split_returned")
    finally:
        engine.unregister("split_returned")
    repeated = engine.scalar(f"SELECT count(*) FROM (SELECT {SYSTEM_ID} FROM split_alf GROUP BY 1 HAVING count(*) > 1)")
    if repeated:
        raise SplitFileError(f"{returned}: {repeated:,} system ids have more than one ALF; ask the trusted third "
                             "party for one ALF per system id")
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for path in sorted(file2.glob("*.parquet")):
        table = f"read_parquet({sql_string(path)})"
        columns = engine.columns(table)
        if SYSTEM_ID not in columns:
            rows[path.stem] = engine.to_parquet(f"SELECT * FROM {table}", out / path.name)
            continue
        missing = engine.scalar(f"""SELECT count(*) FROM {table} t LEFT JOIN split_alf a USING ({SYSTEM_ID})
                                    WHERE t.{SYSTEM_ID} IS NOT NULL AND a.{SYSTEM_ID} IS NULL""")
        if missing:
            raise SplitFileError(f"{returned}: {missing:,} system ids of {path.name} have no ALF; the trusted third "
                                 "party's answer must cover every record of File 1")
        select = ", ".join(f"a.{ALF}" if c == SYSTEM_ID else f"t.{_q(c)}" for c in columns)
        rows[path.stem] = engine.to_parquet(f"SELECT {select} FROM {table} t LEFT JOIN split_alf a USING ({SYSTEM_ID})",
                                            out / path.name)
    engine.execute("DROP TABLE IF EXISTS split_alf")
    return rows
