"""The joins between a release's tables: the data package's foreign keys and the dictionary's joins.

None is written by hand for a table. They come from what the products and contracts declare:
- a column a product definition says holds another table's key (`Product.references`: a person
  table's `row_id_hash` is `person_link_lookup`'s key, as are the journeys' row ids);
- a person id column and the table keyed by that person id alone (`person` for `person_id_medium`);
- a column whose code list the release publishes, when it holds the list's key column (a column
  holding a label, such as an offence title, is described by the list but is not its key);
- a source's native id that is another table's whole record id in the same contract (an offence's
  `defendant_id` and the defendants' table keyed by it; an unnested table's `parent_id`). A native
  id two tables of a source share without being either's record id (a case id on defendants and
  on offences) joins them many to many, and is documented, never declared a key.

Each is then checked on the written tables: it is declared a foreign key only when the referenced
columns are unique and every non-empty value of the referencing columns is found there (an
anti-join). One with orphans (a parent row quarantined at ingest or missing from the extract) is
documented with their number and not declared, so that a validator of the data package finds
every declared key true.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string
from ..sources.contract import Contract
from .products import Product

MANY_TO_MANY = "many-to-many"


@dataclass(frozen=True)
class Join:
    table: str
    column: str
    references: str  # the referenced table
    referenced: str  # its column
    why: str  # what makes it a join, in words, for the dictionary
    many_to_many: bool = False  # known not to be a key on either side: documented, never checked


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def candidates(products: list[Product], contracts: list[Contract]) -> list[Join]:
    """Every join the product definitions and contracts imply (see the module's docstring)."""
    names = {p.name for p in products}
    out: list[Join] = []
    for p in products:
        for column, (table, referenced) in p.references.items():
            if table in names and table != p.name:
                out.append(Join(p.name, column, table, referenced,
                                f"holds the {referenced} of {table} (declared in release/products.py)"))
    # A table keyed by a person id alone is the table of those people.
    people = {p.keys[0]: p.name for p in products if len(p.keys) == 1 and p.keys[0].startswith("person_id_")}
    for p in products:
        for column in p.declared:
            if column in people and people[column] != p.name:
                out.append(Join(p.name, column, people[column], column, f"the person each row belongs to ({column})"))
    lists = {p.name: p.code_list for p in products if p.code_list is not None}
    for p in products:
        for column, d in p.declared.items():
            if d.code_list and d.code_list[0] in lists and lists[d.code_list[0]].key == d.code_list[1]:
                out.append(Join(p.name, column, d.code_list[0], d.code_list[1], "a code of the code list"))
    out += _native_id_joins(products, contracts)
    return list(dict.fromkeys(out))


def _native_id_joins(products: list[Product], contracts: list[Contract]) -> list[Join]:
    released = {(p.source, p.table): p for p in products if p.source}
    out = []
    for contract in contracts:
        for name, spec in contract.tables.items():
            product = released.get((contract.source, name))
            if product is None:
                continue
            for column, cspec in spec.columns.items():
                hashed = column + "_hash"
                if not cspec.native_id or hashed not in product.declared:
                    continue
                for other, ospec in contract.tables.items():
                    target = released.get((contract.source, other))
                    if other == name or target is None or hashed not in target.declared:
                        continue
                    if ospec.record_id_columns == [column]:
                        out.append(Join(product.name, hashed, target.name, hashed,
                                        f"{column} is the record id of {contract.source} {other}"))
                    elif spec.record_id_columns != [column] and name < other:
                        out.append(Join(product.name, hashed, target.name, hashed,
                                        f"both hold the {column} of {contract.source}, the record id of neither",
                                        many_to_many=True))
    return out


def check(engine: Engine, joins: list[Join], paths: dict[str, Path], facts: dict[str, dict[str, dict]]) \
        -> dict[str, list[dict]]:
    """Each join as the dictionary documents it, by referencing table: `columns`, `references`
    ({table, columns}), `cardinality`, `foreign_key` (whether datapackage.json declares it) and,
    for one that is not, `orphans` (rows whose value the referenced table lacks) and a `note`."""
    tested = [j for j in joins if not j.many_to_many and _unique(facts[j.references][j.referenced])]
    counts = dict.fromkeys(tested, 0)
    if tested:
        # One statement, one anti-join per referenced column: the values of every join to it,
        # tagged by join, that it lacks (its hash table is built once, not once per join: the
        # person link lookup is referenced by every person table).
        groups: dict[tuple[str, str], list[int]] = {}
        for i, j in enumerate(tested):
            groups.setdefault((j.references, j.referenced), []).append(i)
        parts = []
        for (table, column), members in groups.items():
            values = " UNION ALL ".join(
                f"SELECT {i} AS tag, {_q(tested[i].column)} AS v FROM read_parquet({sql_string(paths[tested[i].table])}) "
                f"WHERE {_q(tested[i].column)} IS NOT NULL" for i in members)
            parts.append(f"""SELECT a.tag, count(*) AS orphans FROM ({values}) a
                LEFT JOIN (SELECT {_q(column)} AS k FROM read_parquet({sql_string(paths[table])})) b ON a.v = b.k
                WHERE b.k IS NULL GROUP BY a.tag""")
        for tag, orphans in engine.execute(" UNION ALL ".join(parts)):
            counts[tested[tag]] = int(orphans)
    out: dict[str, list[dict]] = {}
    for j in joins:
        f = facts[j.table][j.column]
        row = {"columns": [j.column], "references": {"table": j.references, "columns": [j.referenced]}, "why": j.why}
        if j not in counts:
            row.update(cardinality=MANY_TO_MANY, foreign_key=False,
                       note=f"{j.referenced} is not unique in {j.references}: a row may match several there")
        else:
            row["cardinality"] = "one-to-one" if _unique(f, allow_missing=True) else "many-to-one"
            row["foreign_key"] = counts[j] == 0
            if counts[j]:
                row.update(orphans=int(counts[j]), note=(
                    f"{counts[j]:,} rows hold a {j.column} that {j.references} lacks (its row was quarantined at "
                    "ingest, or is missing from the extract): join with an outer join; not declared a foreign key"))
        out.setdefault(j.table, []).append(row)
    return out


def _unique(f: dict, allow_missing: bool = False) -> bool:
    """Whether a column's non-empty values are all different (and, unless `allow_missing`, none is empty)."""
    return f["distinct_values"] == f["rows"] - f["missing"] and (allow_missing or f["missing"] == 0)


def foreign_keys(joins: list[dict]) -> list[dict]:
    """A table's joins that hold, as Table Schema foreign keys."""
    return [{"fields": j["columns"], "reference": {"resource": j["references"]["table"],
                                                  "fields": j["references"]["columns"]}}
            for j in joins if j["foreign_key"]]
