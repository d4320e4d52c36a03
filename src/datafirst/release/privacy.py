"""The privacy guard and the key check that every release must pass.

The guard is the second line behind the allow-list (`allowlist.py`): it reads every released
text value whatever its declaration. It fails a release when any value present in the
identifiers zone (names, addresses, postcodes, PNC and CRO numbers, other ids, dates of birth)
or any raw native id appears in any text column of any product: as it is, in the zone's
cleaned form, spelt out letter by letter (`W A L K E R`), as a word among others (`case
MC8797402668`, a date of birth in any common format inside a note), as a code decorated with a
name (`fine - WALKER`), or as a forename and surname of one person side by side (`defendant
Michelle MACDONALD`). It fails it for an address written in a value (a house number and a
street), for free text, and for a date or number column that equals the date of birth of the
person its row is about (directly, or through the person table its row belongs to) far more
often than chance. The key check fails it when a key documented as unique is not.
docs/release.md says what it cannot see.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ..engine import Engine
from ..engine.sql import sql_string
from ..sources.contract import Contract
from ..standardise.cleaning import address_clean, cro_clean, fold_accents, forename_clean, name_clean, pnc_clean, \
    postcode_clean
from .profile import HASH_SHAPED, table_profile

MIN_NAME_LENGTH = 4  # shorter names (Al, Li, Ng) collide with codes and words; the other checks still hold
MIN_PAIRED_LENGTH = 3  # a forename and surname of one person side by side: rare enough by chance from 3 letters
DOB_LIKE_SHARE = 0.05  # a date column equal to the record's own birth date this often is a birth date
# A text column whose distinct values hold a forename and a surname this often is names. On the
# 1M-record world the released columns score at most 0.05 (one ethnicity of 19 has two words
# that are names); a full name column scores about 0.85.
NAME_LIKE_SHARE, NAME_LIKE_MIN = 0.25, 3
# A text column whose values are nearly all different and run to a sentence is free text (notes,
# descriptions). Codes and names of things repeat in a large table, but a small one can hold each
# only once (claimant names: 34% distinct in a 20,000-person world, 3% at 1M), so the test asks
# for sentences too: offence titles (35 characters, 6 words) and claimant names (25, 3) repeat.
FREE_TEXT_SHARE, FREE_TEXT_LENGTH, FREE_TEXT_WORDS, FREE_TEXT_MIN = 0.9, 30, 5, 50
# A declared list of values (a code list, a contract's `allowed`) is public reference data: an
# entry that is also somebody's name (at millions of records some surname is Fine, a sentence, or
# Arson, an offence title) discloses nothing, wherever it is released. A list more than one of
# whose entries, and more than this share, are names is a list of names: none of it is excused.
NAME_KINDS = ("surname", "forename")
LIST_NAME_SHARE = 0.05
_HASH_SHAPED_LOWER = HASH_SHAPED.replace("P", "p")  # sensitive values are lower case


@dataclass
class SensitiveValues:
    """Where the values that must never be released are: one `SELECT v, kind` per source of them
    (identifier columns, native ids, record keys, internal cluster ids), each value lower case."""

    parts: list[str]
    names: list[str]  # the parts that are forenames and surnames (also in `parts`)
    full_names: str  # `SELECT f, s`: the first words of each identity's forename and surname, one row each

    def union(self) -> str:
        return " UNION ALL ".join(self.parts)


def build_sensitive_values(engine: Engine, identifiers_glob: Path, content_dir: Path, contracts: list[Contract],
                           clusters: Path, hashed_rows: str | None = None) -> SensitiveValues:
    """The sensitive values' sources, and `birth_dates` (each record's date of birth by hashed row
    id, for the date check; needs `keyed_hash`). `hashed_rows`: a relation of record_key and its
    row_id_hash already computed (the release's links), so that those rows are not hashed again.
    The values are not gathered into a table: the guard looks them up for the few distinct
    values a release holds (see `check_tables`)."""
    sensitive = sensitive_value_sources(identifiers_glob, content_dir, contracts, clusters)
    ids = f"read_parquet({sql_string(identifiers_glob)}, union_by_name = true)"
    # Not a temp table: it may be built by a job on another connection (Engine.concurrently)
    # while the products are written.
    row_id_hash = "keyed_hash(i.record_key)" if hashed_rows is None else "coalesce(h.row_id_hash, keyed_hash(i.record_key))"
    join = "" if hashed_rows is None else f"LEFT JOIN {hashed_rows} h USING (record_key)"
    engine.execute(f"""CREATE OR REPLACE TABLE birth_dates AS
        SELECT {row_id_hash} AS row_id_hash, i.date_of_birth FROM {ids} i {join} WHERE i.date_of_birth IS NOT NULL""")
    return sensitive


def sensitive_value_sources(identifiers_glob: Path, content_dir: Path, contracts: list[Contract],
                            clusters: Path) -> SensitiveValues:
    """Where the sensitive values are, as SQL over the identifiers, content and links zones
    (nothing is read, and no hashing key is needed: `check_text` uses it for a site's pages)."""
    ids = f"read_parquet({sql_string(identifiers_glob)}, union_by_name = true)"
    # The links zone's internal cluster ids are unkeyed digests of record keys: never released.
    internal = [f"SELECT lower(person_id_{t}) AS v, 'internal cluster id' AS kind FROM read_parquet({sql_string(clusters)})"
                for t in ("high", "medium", "low")]
    names = [
        f"SELECT lower(surname) AS v, 'surname' AS kind FROM {ids} WHERE length(surname) >= {MIN_NAME_LENGTH}",
        f"SELECT lower(forename) AS v, 'forename' AS kind FROM {ids} WHERE length(forename) >= {MIN_NAME_LENGTH}",
    ]
    parts = [
        *names,
        f"SELECT lower(pnc) AS v, 'pnc' AS kind FROM {ids} WHERE pnc IS NOT NULL",
        f"SELECT lower(cro) AS v, 'cro' AS kind FROM {ids} WHERE cro IS NOT NULL",
        f"SELECT lower(other_id) AS v, 'other id' AS kind FROM {ids} WHERE other_id IS NOT NULL",
        f"SELECT lower(address) AS v, 'address' AS kind FROM {ids} WHERE address IS NOT NULL",
        f"SELECT lower(postcode) AS v, 'postcode' AS kind FROM {ids} WHERE postcode IS NOT NULL",
        f"SELECT lower(replace(postcode, ' ', '')) AS v, 'postcode' AS kind FROM {ids} WHERE postcode IS NOT NULL",
        f"SELECT strftime(date_of_birth, '%Y-%m-%d') AS v, 'date of birth' AS kind FROM {ids} WHERE date_of_birth IS NOT NULL",
        f"SELECT strftime(date_of_birth, '%d/%m/%Y') AS v, 'date of birth' AS kind FROM {ids} WHERE date_of_birth IS NOT NULL",
        *internal,
    ]
    for contract in contracts:
        for name, spec in contract.tables.items():
            path = content_dir / f"{contract.table_key(name)}.parquet"
            if not path.is_file():
                continue
            for col, cspec in spec.columns.items():
                if cspec.native_id:
                    parts.append(f"SELECT lower(CAST(\"{col}\" AS VARCHAR)) AS v, 'native id' AS kind "
                                 f"FROM read_parquet({sql_string(path)}) WHERE \"{col}\" IS NOT NULL")
            parts.append(f"SELECT lower(record_key) AS v, 'record key' AS kind FROM read_parquet({sql_string(path)})")
    full_names = (f"SELECT split_part(forename, ' ', 1) AS f, split_part(surname, ' ', 1) AS s FROM {ids} "
                  f"WHERE length(forename) >= {MIN_PAIRED_LENGTH} AND length(surname) >= {MIN_PAIRED_LENGTH}")
    return SensitiveValues(parts, names, full_names)


# Identifiers written inside longer text (a JSON object, a note), found by their shape and then
# looked up in their cleaned form: a shape alone proves nothing, a value of the zone does.
_WITHIN = {
    "postcode": (r"\b[A-Z]{1,2}[0-9][A-Z0-9]?[ -]*[0-9][A-Z]{2}\b", postcode_clean),
    "pnc": (r"\b[0-9]{2,4}[ /-]*[0-9]{1,7}[ /-]?[A-Z]\b", pnc_clean),
    "cro": (r"\b[0-9]{1,6}[ /-]*[0-9]{2}[ /-]?[A-Z]\b", cro_clean),
}


# A date written inside text, in the forms people and systems write dates of birth (21/12/1965,
# 21.12.1965, 1965-12-21, 19651221, 21 December 1965, 09-NOV-1966): separators become '/' and
# each form is read; a value that reads as a date of the zone's is one.
_DATE_SHAPE = (r"\b[0-9]{1,2}[./ -][0-9]{1,2}[./ -][0-9]{4}\b|\b[0-9]{4}[./-][0-9]{1,2}[./-][0-9]{1,2}\b"
               r"|\b[0-9]{8}\b|\b[0-9]{1,2}[./ -]+[a-z]{3,9}[./ -]+[0-9]{4}\b")
_DATE_FORMATS = ["%d/%m/%Y", "%Y/%m/%d", "%Y%m%d", "%d/%b/%Y", "%d/%B/%Y"]
# Words that can be an id (`case MC8797402668`, `ref A1234BC`): letters and digits with a digit.
_ID_WORD = r"[a-z0-9/]*[0-9][a-z0-9/]*"
MIN_ID_WORD = 5
# A name spelt out a letter at a time (W A L K E R, W.A.L.K.E.R).
_SPELT_OUT = r"\b(?:[a-z][ .]+){2,}[a-z]\b"
# An address inside text: a house number, up to three words and a street word (at 202 Moor Close).
# A shape alone: a third party's address (a victim's, a witness's) is in no zone to look up.
_ADDRESS_SHAPE = (r"\b[0-9]{1,4}[a-z]?,? +(?:[a-z'-]+ +){0,3}(?:street|road|lane|close|avenue|drive|way|court|"
                  r"gardens|place|crescent|grove|terrace|walk|hill|rise|view|row|square|mews|parade|vale|green|"
                  r"park|cottages|fields|meadows)\b")


def _variants_sql(released: str) -> str:
    """The other forms in which each released text value may hold an identifier, as the
    identifiers zone writes them (tbl, col, is_list, original, v): the value cleaned as a name,
    a forename or an address (O'Brien, Kamiński and Fowler-Sutton as obrien, kaminski and fowler
    sutton), each postcode, PNC or CRO number written inside it (IG10-9AF, 01/5046808A), each
    word that could be an id, each name spelt out letter by letter, and each date inside it in
    the zone's form (YYYY-MM-DD)."""
    # Worked out once per distinct value (a code recurs in many columns), then given to its columns.
    values = f"SELECT DISTINCT v FROM {released}"
    parts = [f"SELECT v AS original, {clean('v')} AS v FROM ({values})"
             for clean in (name_clean, forename_clean, address_clean)]
    for pattern, clean in _WITHIN.values():
        found = f"SELECT v AS original, unnest(regexp_extract_all(upper(v), {sql_string(pattern)}, 0)) AS x FROM ({values})"
        parts.append(f"SELECT original, lower({clean('x')}) AS v FROM ({found})")

    def inside(pattern: str) -> str:
        return f"SELECT v AS original, unnest(regexp_extract_all(lower(v), {sql_string(pattern)}, 0)) AS x FROM ({values})"

    parts.append(f"SELECT original, x AS v FROM ({inside(_ID_WORD)}) WHERE length(x) >= {MIN_ID_WORD}")
    parts.append(f"SELECT original, regexp_replace(x, '[^a-z]', '', 'g') AS v FROM ({inside(_SPELT_OUT)})")
    found = inside(_DATE_SHAPE)
    formats = "[" + ", ".join(sql_string(f) for f in _DATE_FORMATS) + "]"
    parts.append(f"""SELECT original, strftime(try_strptime(regexp_replace(trim(x), '[./ -]+', '/', 'g'), {formats}),
                            '%Y-%m-%d') AS v FROM ({found})""")
    # A date of eight digits reads two ways (19651221 and 21121965): the second is not in the list.
    parts.append(f"SELECT original, strftime(try_strptime(x, '%d%m%Y'), '%Y-%m-%d') AS v FROM ({found}) "
                 "WHERE regexp_matches(x, '^[0-9]{8}$')")
    # No filter on the variants (NULL, or the value as it is): pushed below the DISTINCT, it would
    # work every cleaning out again per released value, and such rows only repeat the plain lookup.
    return (f"SELECT DISTINCT r.tbl, r.col, r.is_list, x.original, x.v FROM ({' UNION ALL '.join(parts)}) x "
            f"JOIN (SELECT DISTINCT tbl, col, is_list, v FROM {released}) r ON r.v = x.original")


def check_table(engine: Engine, name: str, path: Path, allow: set[str], sensitive: SensitiveValues) -> list[str]:
    """Problems found in one product table (empty when it is clean)."""
    return check_tables(engine, {name: path}, allow, sensitive)


def _hash_shaped_values(tables: dict[str, tuple[str, list[tuple[str, str]]]], allow: set[str]) -> str:
    """Each text column's distinct values shaped like a hash, as (tbl, col, v, is_list)."""
    parts = [f"""SELECT DISTINCT {sql_string(name)} AS tbl, {sql_string(c)} AS col, "{c}" AS v, false AS is_list
                 FROM {rel} WHERE regexp_matches("{c}", {sql_string(HASH_SHAPED)})"""
             for name, (rel, schema) in tables.items() for c, t in schema
             if t == "VARCHAR" and f"{name}.{c}" not in allow]
    return " UNION ALL ".join(parts) if parts else \
        "SELECT NULL::VARCHAR AS tbl, NULL::VARCHAR AS col, NULL::VARCHAR AS v, false AS is_list WHERE false"


def check_tables(engine: Engine, tables: dict[str, Path], allow: set[str], sensitive: SensitiveValues,
                 profiles: dict[str, dict[str, dict]] | None = None, code_lists: frozenset[str] = frozenset(),
                 declared_lists: Mapping[str, Collection[str]] | None = None) \
        -> list[str]:
    """Problems found in product tables (name -> Parquet file); empty when they are clean.
    `profiles`: `profile.table_profile` of each table, when already made. `code_lists`: the tables
    that are code lists (one row per code): every value of theirs is its own by construction, so
    the free-text test (values nearly all different, and long) does not apply there; every lookup
    does. `declared_lists`: each list of values the release declares (`declared_lists`), by name:
    a surname or forename equal to an entry of one (LIST_NAME_SHARE) is public reference data, not
    a name taken from the identifiers zone, in any column.

    A release holds few distinct values besides its hashes (codes, dates, flags): the profiles
    gather them, and they are looked up in the sensitive values' sources in one scan, rather than
    the millions of sensitive values being gathered and joined. The scan also finds any sensitive
    value shaped like a hash; only then are the release's hashes and person ids checked too."""
    profiles = profiles if profiles is not None else {name: table_profile(engine, path) for name, path in tables.items()}
    read = {name: (f"read_parquet({sql_string(path)})", [(c, f["type"]) for c, f in profiles[name].items()])
            for name, path in tables.items()}
    checked = [(name, c, v, f["type"] == "VARCHAR[]") for name, profile in profiles.items()
               for c, f in profile.items() if f"{name}.{c}" not in allow for v in f.get("checked_values") or []]

    def lookup(e: Engine) -> tuple[list, list, list]:
        """The release's values looked up in the sensitive values: (text columns' figures, hits,
        name-like columns)."""
        lists = [(name, v) for name, entries in (declared_lists or {}).items() for v in entries]
        e.register("guard_listed_values", pa.table({"list": pa.array([x[0] for x in lists], pa.string()),
                                                    "v": pa.array([x[1] for x in lists], pa.string())}))
        e.register("guard_checked_values", pa.table({
            "tbl": pa.array([x[0] for x in checked], pa.string()), "col": pa.array([x[1] for x in checked], pa.string()),
            "v": pa.array([x[2] for x in checked], pa.string()), "is_list": pa.array([x[3] for x in checked], pa.bool_())}))
        try:
            e.execute("CREATE OR REPLACE TABLE guard_release_values AS SELECT * FROM guard_checked_values")
            # Before any hash-shaped values join them (below): those are all distinct and 20 long.
            texts = e.execute("""SELECT tbl, col, count(DISTINCT v), avg(length(v)),
                                        avg(array_length(string_split(trim(v), ' ')))
                                 FROM guard_release_values WHERE NOT is_list GROUP BY ALL ORDER BY ALL""")
            e.execute(f"CREATE OR REPLACE TABLE guard_release_variants AS {_variants_sql('guard_release_values')}")
            e.execute("CREATE OR REPLACE TABLE guard_declared_lists AS "
                      "SELECT DISTINCT list, lower(trim(v)) AS v FROM guard_listed_values")
            # The declared lists' entries are looked up in the same scan, to tell a list of names.
            e.execute(f"""CREATE OR REPLACE TABLE guard_sensitive_found AS
                SELECT DISTINCT s.v, s.kind FROM ({sensitive.union()}) s
                LEFT JOIN (SELECT lower(trim(v)) AS v FROM guard_release_values
                           UNION SELECT v FROM guard_release_variants
                           UNION SELECT v FROM guard_declared_lists) r ON r.v = s.v
                WHERE r.v IS NOT NULL OR (length(s.v) IN (20, 21) AND regexp_matches(s.v, {sql_string(_HASH_SHAPED_LOWER)}))""")
            e.execute(f"CREATE OR REPLACE TABLE guard_public_words AS {_PUBLIC_WORDS}")
            if e.scalar(f"SELECT count(*) FROM guard_sensitive_found "
                        f"WHERE regexp_matches(v, {sql_string(_HASH_SHAPED_LOWER)})"):
                e.execute(f"INSERT INTO guard_release_values {_hash_shaped_values(read, allow)}")
            # A value found in another form is named as released (its count is of that value).
            excused = f"s.kind IN {NAME_KINDS} AND s.v IN (SELECT v FROM guard_public_words)"
            hits = e.execute(f"""SELECT DISTINCT p.tbl, p.col, p.is_list, s.kind, s.v
                                 FROM guard_release_values p JOIN guard_sensitive_found s ON lower(trim(p.v)) = s.v
                                 WHERE NOT ({excused})
                                 UNION
                                 SELECT DISTINCT p.tbl, p.col, p.is_list, s.kind, lower(trim(p.original))
                                 FROM guard_release_variants p JOIN guard_sensitive_found s ON p.v = s.v
                                 WHERE NOT ({excused})
                                 ORDER BY ALL""")
            named = _name_like_columns(e, sensitive)
            written = _names_written_in(e, sensitive) + e.execute(
                f"""SELECT tbl, col, count(DISTINCT v), 'an address (a house number and a street)'
                    FROM guard_release_values WHERE regexp_matches(lower(v), {sql_string(_ADDRESS_SHAPE)})
                    GROUP BY ALL ORDER BY ALL""")
            return texts, hits, named, written
        finally:
            e.unregister("guard_checked_values")
            e.unregister("guard_listed_values")
            e.execute("DROP TABLE IF EXISTS guard_declared_lists")
            e.execute("DROP TABLE IF EXISTS guard_release_values")
            e.execute("DROP TABLE IF EXISTS guard_release_variants")
            e.execute("DROP TABLE IF EXISTS guard_sensitive_found")
            e.execute("DROP TABLE IF EXISTS guard_public_words")

    # The lookup and each table's date check are independent: run at once (Engine.concurrently),
    # the lookup first. One after the other, the date checks were a tail that kept one core busy.
    names = list(read)
    done = engine.concurrently([lookup] + [lambda e, n=n: _date_problems(e, n, read, profiles, allow) for n in names],
                               [float("inf")] + [next(iter(profiles[n].values()), {}).get("rows", 0) for n in names])
    (texts, hits, named, written), dates = done[0], done[1:]
    problems = _hit_problems(engine, read, hits)
    problems += [f"{name}.{col}: {n:,} distinct value(s) hold {what}: such text must not be released. Give the "
                 "column a code list in its contract, or leave it out of the source's content"
                 for name, col, n, what in written]
    problems += [f"{name}.{col}: {n:,} of its {total:,} distinct values look like personal names (a forename and a "
                 "surname of the identifiers zone in one value): free text holding names must not be released. "
                 "Give the column its role in the contract, or leave it out of the source's content"
                 for name, col, n, total in named]
    for name, col, distinct, length, words in texts:
        if name in code_lists:
            continue
        present = profiles[name][col]["rows"] - profiles[name][col]["missing"]
        if distinct >= FREE_TEXT_MIN and distinct >= FREE_TEXT_SHARE * present and length >= FREE_TEXT_LENGTH \
                and words >= FREE_TEXT_WORDS:
            problems.append(f"{name}.{col}: looks like free text ({distinct:,} distinct values in {present:,}, "
                            f"{length:.0f} characters and {words:.0f} words long on average); free text can name or "
                            "describe people and is "
                            "not released: leave the column out of the source's content, or list it in "
                            "release.privacy_allow in datafirst.yaml once reviewed")
    for found in dates:
        problems += found
    return problems


# The entries of the declared lists that are not lists of names (LIST_NAME_SHARE), lower case.
_PUBLIC_WORDS = f"""
    WITH named AS (SELECT l.list, count(DISTINCT l.v) AS entries, count(DISTINCT l.v) FILTER (WHERE s.v IS NOT NULL) AS names
                   FROM guard_declared_lists l
                   LEFT JOIN (SELECT DISTINCT v FROM guard_sensitive_found WHERE kind IN {NAME_KINDS}) s USING (v)
                   GROUP BY ALL)
    SELECT DISTINCT l.v FROM guard_declared_lists l JOIN named n USING (list)
    WHERE n.names <= greatest(1, {LIST_NAME_SHARE} * n.entries)"""


def declared_lists(dictionary: dict) -> dict[str, list[str]]:
    """Each list of values a release's dictionary declares (a code list's column, a contract's
    `allowed`), as `table.column` -> its entries, for `check_tables` and a site's guard."""
    return {f"{t['name']}.{c['name']}": [str(v) for v in c["declared"]["values"]]
            for t in dictionary.get("tables") or [] for c in t.get("columns") or []
            if (c.get("declared") or {}).get("values")}


def check_text(engine: Engine, passages: list[tuple[str, str]], sensitive: SensitiveValues,
               ignore: Collection[str] = ()) -> list[str]:
    """Problems with text published beside a release (a site's pages): `passages` are (page,
    text) pairs, each a piece of a page's text (a heading, a paragraph, a table cell). A passage
    equal to a sensitive value, or holding one in another form (an id-like word, a postcode, PNC
    or CRO number, a date of birth in a common format, a name spelt out: as `check_tables` reads a
    released value), a forename and a surname of one person side by side, or an address, is a
    problem, named by page and kind and never by value. `ignore`: values the release itself
    declares (the dates bounding a declared range, its table and column names), which are
    nobody's even when one equals a date of birth or a surname."""
    engine.register("guard_text_passages", pa.table({
        "tbl": pa.array([page for page, _ in passages], pa.string()),
        "col": pa.array(["text"] * len(passages), pa.string()),
        "v": pa.array([text for _, text in passages], pa.string()),
        "is_list": pa.array([False] * len(passages), pa.bool_())}))
    ignored = ", ".join(sql_string(v.lower()) for v in ignore) or "NULL"
    try:
        engine.execute("CREATE OR REPLACE TABLE guard_release_values AS SELECT * FROM guard_text_passages")
        engine.execute(f"CREATE OR REPLACE TABLE guard_release_variants AS {_variants_sql('guard_release_values')}")
        engine.execute(f"""CREATE OR REPLACE TABLE guard_text_candidates AS
            SELECT DISTINCT tbl, v FROM (SELECT tbl, lower(trim(v)) AS v FROM guard_release_values
                                         UNION ALL SELECT tbl, v FROM guard_release_variants)
            WHERE v IS NOT NULL AND v NOT IN ({ignored})""")
        found = engine.execute(f"""
            SELECT c.tbl, s.kind, count(DISTINCT c.v) FROM guard_text_candidates c
            JOIN (SELECT DISTINCT s.v, s.kind FROM ({sensitive.union()}) s
                  SEMI JOIN guard_text_candidates c ON c.v = s.v) s ON s.v = c.v
            GROUP BY ALL ORDER BY ALL""")
        pairs = engine.execute(f"""
            WITH words AS (SELECT tbl, string_split(trim(n), ' ') AS ws
                           FROM (SELECT DISTINCT tbl, {_normalised('v')} AS n FROM guard_release_values)),
            pairs AS (SELECT DISTINCT tbl, ws[i] AS a, ws[i + 1] AS b
                      FROM (SELECT *, unnest(range(1, array_length(ws))) AS i FROM words)),
            people AS (SELECT DISTINCT f, s FROM ({sensitive.full_names})),
            paired AS (SELECT p.tbl, p.a, p.b FROM pairs p JOIN people x ON x.f = p.a AND x.s = p.b
                       UNION SELECT p.tbl, p.a, p.b FROM pairs p JOIN people x ON x.s = p.a AND x.f = p.b)
            SELECT tbl, count(*) FROM paired GROUP BY ALL ORDER BY ALL""")
        addresses = engine.execute(f"""SELECT tbl, count(DISTINCT v) FROM guard_release_values
                                       WHERE regexp_matches(lower(v), {sql_string(_ADDRESS_SHAPE)})
                                       GROUP BY ALL ORDER BY ALL""")
    finally:
        engine.unregister("guard_text_passages")
        for table in ("guard_release_values", "guard_release_variants", "guard_text_candidates"):
            engine.execute(f"DROP TABLE IF EXISTS {table}")
    return ([f"{page}: {n:,} passage(s) hold {_described(kind)}" for page, kind, n in found]
            + [f"{page}: {n:,} pair(s) of words are a forename and a surname of one person of the identifiers zone"
               for page, n in pairs]
            + [f"{page}: {n:,} passage(s) hold an address (a house number and a street)" for page, n in addresses])


def _normalised(expr: str) -> str:
    """Lower-case ASCII words between single spaces, with a space at each end (for whole-word
    replacement): 'fine - WALKER' -> ' fine walker '."""
    no_apostrophes = f"regexp_replace({expr}, '[''\u2019]', '', 'g')"  # O'Brien as the zone writes it: obrien
    return f"' ' || trim(regexp_replace({fold_accents(no_apostrophes)}, '[^a-z0-9]+', ' ', 'g')) || ' '"


def _names_written_in(engine: Engine, sensitive: SensitiveValues) -> list[tuple]:
    """(table, column, values, what) of each text column with values holding a person's name
    however many other values it has: a forename and a surname of one person of the identifiers
    zone side by side, either way round ('defendant Michelle MACDONALD', 'MACDONALD Michelle'),
    or a name added to one of the column's own values ('fine - WALKER' beside 'fine': the value
    less the name is another of its values, so the name was put there; a word that merely is
    someone's name, as in 'White: Irish', leaves nothing the column holds). Needs
    `guard_release_values`."""
    return engine.execute(f"""
        WITH released AS (SELECT DISTINCT tbl, col, v, {_normalised('v')} AS n FROM guard_release_values),
        words AS (SELECT tbl, col, v, n, string_split(trim(n), ' ') AS ws FROM released),
        pairs AS (SELECT DISTINCT tbl, col, v, ws[i] AS a, ws[i + 1] AS b
                  FROM (SELECT *, unnest(range(1, array_length(ws))) AS i FROM words)),
        people AS (SELECT DISTINCT f, s FROM ({sensitive.full_names})),
        paired AS (SELECT p.tbl, p.col, p.v FROM pairs p JOIN people x ON x.f = p.a AND x.s = p.b
                   UNION SELECT p.tbl, p.col, p.v FROM pairs p JOIN people x ON x.s = p.a AND x.f = p.b),
        names AS (SELECT DISTINCT v FROM ({' UNION ALL '.join(sensitive.names)})),
        named AS (SELECT DISTINCT w.tbl, w.col, w.v, w.n, w.word
                  FROM (SELECT tbl, col, v, n, unnest(ws) AS word FROM words) w JOIN names x ON x.v = w.word),
        decorated AS (SELECT DISTINCT a.tbl, a.col, a.v FROM named a JOIN released b
                      ON b.tbl = a.tbl AND b.col = a.col AND b.v <> a.v
                      AND b.n = ' ' || trim(regexp_replace(replace(a.n, ' ' || a.word || ' ', ' '), ' +', ' ',
                                                           'g')) || ' ')
        SELECT tbl, col, count(*), 'a forename and a surname of one person of the identifiers zone' FROM paired
        GROUP BY ALL
        UNION ALL
        SELECT tbl, col, count(*), 'a name of the identifiers zone added to another of the column''s values'
        FROM decorated GROUP BY ALL
        ORDER BY ALL""")


def _name_like_columns(engine: Engine, sensitive: SensitiveValues) -> list[tuple]:
    """(table, column, name-like values, distinct values) of each text column of which at least
    NAME_LIKE_SHARE of the distinct values (and NAME_LIKE_MIN) each hold two words that are a
    forename and a surname of the identifiers zone: names inside longer text ('SMITH, John',
    'seen with John Smith'), which the exact lookup above cannot see. Needs `guard_release_values`."""
    return engine.execute(f"""
        WITH names AS (SELECT DISTINCT v, kind FROM ({' UNION ALL '.join(sensitive.names)})),
        released AS (SELECT DISTINCT tbl, col, v FROM guard_release_values),
        words AS (SELECT tbl, col, v, unnest(string_split(trim(regexp_replace({fold_accents('v')}, '[^a-z]+', ' ',
                                                                               'g')), ' ')) AS word
                  FROM released),
        scored AS (SELECT w.tbl, w.col, w.v, count(DISTINCT n.v) AS name_words,
                          count(*) FILTER (WHERE n.kind = 'forename') > 0 AS has_forename,
                          count(*) FILTER (WHERE n.kind = 'surname') > 0 AS has_surname
                   FROM words w LEFT JOIN names n ON n.v = w.word GROUP BY ALL),
        columns AS (SELECT tbl, col, count(*) AS total,
                           count(*) FILTER (WHERE name_words >= 2 AND has_forename AND has_surname) AS name_like
                    FROM scored GROUP BY ALL)
        SELECT tbl, col, name_like, total FROM columns
        WHERE name_like >= {NAME_LIKE_MIN} AND name_like >= {NAME_LIKE_SHARE} * total ORDER BY ALL""")


def _hit_problems(engine: Engine, read: dict[str, tuple[str, list]], hits: list[tuple]) -> list[str]:
    """One problem per column and kind of sensitive value found in it, with how many of the
    column's values (or list elements) are such values (counted only when a release fails)."""
    found: dict[tuple, dict[str, list[str]]] = {}
    for name, col, is_list, kind, v in hits:
        found.setdefault((name, col, is_list), {}).setdefault(kind, []).append(v)
    problems = []
    for (name, col, is_list), kinds in found.items():
        values = f"""SELECT lower(trim({'x' if is_list else f'"{col}"'})) AS v
                     FROM {f'(SELECT unnest("{col}") AS x FROM {read[name][0]})' if is_list else read[name][0]}"""
        counts = []
        for kind, vs in kinds.items():
            n = engine.scalar(f"SELECT count(*) FROM ({values}) WHERE v IN ({', '.join(sql_string(v) for v in vs)})")
            counts.append((int(n), kind))
        problems += [f"{name}.{col}: {n:,} {'list value(s)' if is_list else 'value(s)'} equal to {_described(kind)}"
                     for n, kind in sorted(counts, key=lambda x: (-x[0], x[1]))]
    return problems


def _described(kind: str) -> str:
    """A kind of sensitive value and the zone it comes from, for a failure message."""
    zone = {"native id": "the content zone", "record key": "the content zone",
            "internal cluster id": "the links zone"}.get(kind, "the identifiers zone")
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} from {zone}"


def _people_of_rows(name: str, read: dict[str, tuple[str, list]],
                    profiles: dict[str, dict[str, dict]]) -> tuple[str, bool] | None:
    """SQL joining each row of a table (numbered `_row`) to the row_id_hash of each person
    record it is about (`_person`), and whether that is one record per row; None when it is
    about no person. The row itself in a
    person table; the records named by its `*_row_id_hash` columns; a person's records through
    the person link lookup; and for a table of no person (offences, claims, requirements) the
    records of the person table that shares its most specific native-id hash (an offence's
    defendant). An offence table holds no date of birth of its own: checked only on its own
    rows, a date column replaced by its defendant's date of birth passed."""
    cols = {c for c, _ in read[name][1]}
    rel = f"(SELECT row_number() OVER () AS _row, * FROM {read[name][0]})"
    person_tables = {n: {c for c, _ in schema} for n, (_, schema) in read.items()
                     if {"row_id_hash", "person_id_medium"} <= {c for c, _ in schema}}
    if "row_id_hash" in cols and "person_id_medium" in cols:
        return f"SELECT *, row_id_hash AS _person FROM {read[name][0]}", True
    rows = sorted(c for c in cols if c.endswith("_row_id_hash"))
    if rows:
        return " UNION ALL ".join(f'SELECT p.*, p."{c}" AS _person FROM {rel} p' for c in rows), False
    person = next((c for c in ("person_id_medium", "person_id_high", "person_id_low") if c in cols), None)
    if person is not None and "person_link_lookup" in read:  # a person's records (a person table at any threshold)
        return (f"SELECT p.*, l.row_id_hash AS _person FROM {rel} p JOIN (SELECT {person}, row_id_hash "
                f"FROM {read['person_link_lookup'][0]}) l USING ({person})"), False
    shared = [(profiles[t][c]["distinct_values"], t, c) for t, tcols in person_tables.items() if t != name
              for c in cols & tcols if c.endswith("_hash") and c != "row_id_hash"]
    if not shared:
        return None
    _, table, col = max(shared)
    return (f'SELECT p.*, m.row_id_hash AS _person FROM {rel} p JOIN (SELECT DISTINCT "{col}", row_id_hash '
            f'FROM {read[table][0]}) m USING ("{col}")'), False


_WHOLE_NUMBER = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UINTEGER", "UBIGINT")


def _date_problems(engine: Engine, name: str, read: dict[str, tuple[str, list]], profiles: dict[str, dict[str, dict]],
                   allow: set[str]) -> list[str]:
    """Date columns (and dates written as whole numbers, 19651221 or 21121965) of a table that
    equal the date of birth of the person their row is about in more than DOB_LIKE_SHARE of
    rows (text is looked up against every date of birth by `check_tables`)."""
    schema = read[name][1]
    dates = [(c, t) for c, t in schema if (t == "DATE" or t.startswith("TIMESTAMP") or t in _WHOLE_NUMBER)
             and f"{name}.{c}" not in allow]
    people = _people_of_rows(name, read, profiles) if dates else None
    if people is None:
        return []

    def equal(c: str, t: str) -> str:
        if t in _WHOLE_NUMBER:
            return (f"p.\"{c}\" IN (CAST(strftime(b.date_of_birth, '%Y%m%d') AS BIGINT), "
                    f"CAST(strftime(b.date_of_birth, '%d%m%Y') AS BIGINT))")
        return f"CAST(p.\"{c}\" AS DATE) = b.date_of_birth"

    sql, one_per_row = people
    joined = f"FROM ({sql}) p JOIN birth_dates b ON b.row_id_hash = p._person"
    # Every such column of the table in one join; a row about several people (a claim and its
    # defendants) counts when it equals any of theirs.
    if one_per_row:
        shares = engine.execute("SELECT " + ", ".join(
            f'avg(CASE WHEN {equal(c, t)} THEN 1.0 ELSE 0 END) FILTER (WHERE p."{c}" IS NOT NULL)' for c, t in dates)
            + f" {joined}")[0]
    else:
        per_row = ", ".join(f'bool_or({equal(c, t)}) AS hit{i}, bool_or(p."{c}" IS NOT NULL) AS has{i}'
                            for i, (c, t) in enumerate(dates))
        shares = engine.execute("SELECT " + ", ".join(
            f"avg(CASE WHEN hit{i} THEN 1.0 ELSE 0 END) FILTER (WHERE has{i})" for i in range(len(dates)))
            + f" FROM (SELECT p._row, {per_row} {joined} GROUP BY p._row)")[0]
    return [f"{name}.{c}: equals the date of birth of the person its row is about in {share:.0%} of rows; "
            "full dates of birth must not be released (use year_of_birth)"
            for (c, _), share in zip(dates, shares) if share is not None and share > DOB_LIKE_SHARE]


def check_keys(engine: Engine, name: str, path: Path, keys: list[str], facts: dict[str, dict] | None = None) -> list[str]:
    """Problems with a table's documented key. `facts` (the dictionary's, by column) answer for a
    one-column key without another scan: unique and never empty when its distinct values
    (which leave out NULL) are as many as the rows."""
    if facts is not None and len(keys) == 1:
        rows, distinct = facts[keys[0]]["rows"], facts[keys[0]]["distinct_values"]
        null_rows = facts[keys[0]]["missing"]
        distinct += 1 if null_rows else 0  # count(DISTINCT) leaves NULL out; a scan would count it
    else:
        rel = f"read_parquet({sql_string(path)})"
        cols = ", ".join('"' + k + '"' for k in keys)
        nulls = " OR ".join(f'"{k}" IS NULL' for k in keys)
        rows, distinct, null_rows = engine.execute(
            f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {rel})), "
            f"count(*) FILTER (WHERE {nulls}) FROM {rel}")[0]
    problems = []
    if distinct != rows:
        problems.append(f"{name}: key ({', '.join(keys)}) is documented unique but {rows - distinct:,} rows repeat it")
    if null_rows:
        problems.append(f"{name}: key ({', '.join(keys)}) is empty in {null_rows:,} rows")
    return problems
