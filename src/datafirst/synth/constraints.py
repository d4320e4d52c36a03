"""A release's declared constraints (`constraints.json`), counted in the engine on the release
itself or on a synthetic twin of it: the same rules, the same SQL, any tables of those names.

Each constraint is one table's rule over its columns (and, with `join`, the one row of another
table of its source that each row joins by that table's key). A row breaks the rule when its
`check` is false; true or unknown (NULL) keeps it, as SQL's CHECK does.

`hold` makes a twin keep them: each row that breaks one has the columns the rule names drawn
again, together, from the combinations a relation of rows holds (the release's, or the twin's own)
that keep every rule of its table, in the engine (docs/synth.md, "Constraints").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp, parse_one

from ..engine import Engine
from ..engine.sql import sql_string
from ..sources.declared_sql import DIALECT

CONSTRAINTS_FILE = "constraints.json"
CANDIDATES = 1000  # the commonest combinations a broken row's columns may be drawn from


class ConstraintError(Exception):
    """A constraint that cannot be checked on the tables given; the message names it."""


def load_constraints(release_dir: Path) -> list[dict]:
    """The constraints a release declares (none for a release made before releases held them)."""
    path = Path(release_dir) / CONSTRAINTS_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["constraints"]


def _relation(engine: Engine, tables: dict[str, Path], name: str, constraint: dict) -> str:
    if name not in tables:
        raise ConstraintError(f"constraint {constraint['name']!r} reads table {name}: not among the tables given "
                              f"({', '.join(sorted(tables)) or 'none'})")
    return engine.parquet(Path(tables[name]))


def _name(identifier: str) -> str:
    """An alias or column as the check writes it (quoted where SQL needs it)."""
    return exp.to_identifier(identifier).sql(dialect=DIALECT)


def count_sql(engine: Engine, tables: dict[str, Path], constraint: dict) -> str:
    """One row: the rows the constraint checked and the rows that break it."""
    alias = _name(constraint["alias"])
    source = f"{_relation(engine, tables, constraint['table'], constraint)} AS {alias}"
    join = constraint.get("join")
    if join:
        other = _name(join["alias"])
        on = " AND ".join(f"{alias}.{_name(mine)} = {other}.{_name(theirs)}" for mine, theirs in join["keys"].items())
        source += f" LEFT JOIN {_relation(engine, tables, join['table'], constraint)} AS {other} ON {on}"
    return (f"SELECT count(*) AS rows_checked, coalesce(sum(CASE WHEN NOT ({constraint['check']}) THEN 1 ELSE 0 END), "
            f"0) AS violations FROM {source}")


def check(engine: Engine, tables: dict[str, Path], constraints: list[dict]) -> list[dict]:
    """Each constraint's name, table, rows checked and violations, in the order given. `tables`
    maps release table names to Parquet files (a release's tables, or a twin's)."""
    results = []
    for constraint in constraints:
        rows_checked, violations = engine.execute(count_sql(engine, tables, constraint))[0]
        results.append({"name": constraint["name"], "table": constraint["table"],
                        "rows_checked": int(rows_checked), "violations": int(violations)})
    return results


def _aliases(constraint: dict) -> tuple[str, str | None]:
    return constraint["alias"], (constraint["join"]["alias"] if constraint.get("join") else None)


def named_columns(constraint: dict) -> tuple[list[str], list[str]]:
    """The columns a constraint's check names: its own table's, and the joined table's."""
    _, joined_alias = _aliases(constraint)
    own: dict[str, None] = {}
    joined: dict[str, None] = {}
    for col in parse_one(constraint["check"], read=DIALECT).find_all(exp.Column):
        (joined if joined_alias is not None and col.table == joined_alias else own)[col.name] = None
    return list(own), list(joined)


def columns_by_table(constraints: list[dict]) -> dict[str, set[str]]:
    """Each table's columns named by a declared constraint (its own check, or one joining it)."""
    out: dict[str, set[str]] = {}
    for c in constraints:
        own, joined = named_columns(c)
        out.setdefault(c["table"], set()).update(own)
        if joined:
            out.setdefault(c["join"]["table"], set()).update(joined)
    return out


def _bound(constraint: dict, own: Callable[[str], str], joined: Callable[[str], str]) -> str:
    """The check with each column written as `own(name)` or `joined(name)` gives it."""
    _, joined_alias = _aliases(constraint)

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            text = joined(node.name) if joined_alias is not None and node.table == joined_alias else own(node.name)
            return exp.paren(parse_one(text, read=DIALECT), copy=False)
        return node

    return parse_one(constraint["check"], read=DIALECT).transform(rewrite).sql(dialect=DIALECT)


def holds_sql(rules: list[dict], row: str, tables: dict[str, str]) -> tuple[str, str]:
    """(joins, condition) over the row aliased `row` of the rules' table: the LEFT JOINs of each
    rule's joined row (from `tables`, table name -> relation) and the SQL that every rule holds."""
    joins, holds = [], []
    for i, rule in enumerate(rules):
        alias = f"synth_rule_{i}"
        if rule.get("join"):
            joins.append(f"LEFT JOIN {tables[rule['join']['table']]} {alias} ON " + " AND ".join(
                f"{row}.{_q(a)} = {alias}.{_q(b)}" for a, b in rule["join"]["keys"].items()))
        holds.append(f"coalesce(({_bound(rule, lambda n: f'{row}.{_q(n)}', lambda n, a=alias: f'{a}.{_q(n)}')}), true)")
    return " ".join(joins), " AND ".join(holds) or "true"


@dataclass
class Drawn:
    """How `hold` may change one table's columns. `together`: sets of columns changed only
    together (a column and those looked up from it, so they still agree). `filled`: columns of
    many values (a date, an amount) that a combination gives only as present or missing, each
    with the SQL of a new value over the twin's row `v` where one is needed (a date as its anchor
    date plus an offset): their exact values are the row's, not another row's."""
    together: list[set[str]] = field(default_factory=list)
    filled: dict[str, str] = field(default_factory=dict)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _in_order(constraints: list[dict]) -> list[str]:
    """The constrained tables, each after the tables its constraints join (a parent before its
    children, whose rules read the parent's columns as they are)."""
    tables = list(dict.fromkeys(c["table"] for c in constraints))
    after = {t: {c["join"]["table"] for c in constraints if c["table"] == t and c.get("join")} - {t} for t in tables}
    out: list[str] = []
    while tables:
        ready = [t for t in tables if not after[t] & set(tables)] or tables[:1]  # a circle: as declared
        out += ready
        tables = [t for t in tables if t not in ready]
    return out


def hold(engine: Engine, constraints: list[dict], twin: dict[str, str], rows: dict[str, str], small_count: int, *,
         drawn: dict[str, Drawn] | None = None, key: str = "_n", stream: str = "constraints") -> list[dict]:
    """Make the twin's tables keep every constraint, in place. `twin`: table name -> the twin's
    working table (updated; `key` tells its rows apart); `rows`: table name -> the relation whose
    combinations a broken row's columns are drawn from (the release's rows, or the twin's own).

    Table by table (a joined table first), rule by rule: each twin row whose check is false has
    the columns the rule names in its own table (with those `drawn` binds to them) drawn again as
    one combination of `rows` (among its CANDIDATES commonest) under which every rule of the
    table holds, given the row's other columns and the joined row: a combination at least
    `small_count` rows hold first, then the one changing fewest columns, then by a draw weighted
    by how many rows hold it (`synth_u`, so the same seed gives the same twin). A row no such
    combination fixes has every column the table's rules name drawn again so. Returns each
    constraint's name, table and the rows drawn again."""
    drawn = drawn or {}
    done = []
    for table in _in_order(constraints):
        rules = [c for c in constraints if c["table"] == table]
        if table not in twin or table not in rows or any(c.get("join") and c["join"]["table"] not in twin
                                                          for c in rules):
            done += [{"name": c["name"], "table": table, "rows_redrawn": 0} for c in rules]
            continue
        how = drawn.get(table, Drawn())
        own = {c["name"]: named_columns(c)[0] for c in rules}
        everything = list(dict.fromkeys(x for c in rules for x in own[c["name"]]))
        joins = " ".join(
            f"LEFT JOIN {twin[c['join']['table']]} j{i} ON "
            + " AND ".join(f"s.{_q(a)} = j{i}.{_q(b)}" for a, b in c["join"]["keys"].items())
            for i, c in enumerate(rules) if c.get("join"))
        joined = ", ".join(f"j{i}.{_q(x)} AS {_q(f'_j{i}_{x}')}" for i, c in enumerate(rules) if c.get("join")
                           for x in named_columns(c)[1])
        base = f"SELECT s.*{', ' + joined if joined else ''} FROM {twin[table]} s {joins}"
        for i, rule in enumerate(rules):
            redrawn = 0
            narrow = _closure(own[rule["name"]], how.together)
            for columns in (narrow, *([_closure(everything, how.together)] if set(everything) - set(narrow) else [])):
                redrawn += _redraw(engine, table, rules, i, columns, base, twin[table], rows[table], how, key,
                                   small_count, f"{stream}|{table}|{rule['name']}|{len(columns)}")
            done.append({"name": rule["name"], "table": table, "rows_redrawn": redrawn})
    return done


def _closure(columns: list[str], together: list[set[str]]) -> list[str]:
    out = list(columns)
    for group in together:
        if group & set(out):
            out += sorted(group - set(out))
    return out


def _redraw(engine: Engine, table: str, rules: list[dict], index: int, columns: list[str], base: str, target: str,
            rows: str, how: Drawn, key: str, small_count: int, stream: str) -> int:
    """Draw `columns` again in the twin rows breaking rules[index] (see `hold`); how many were."""
    def own_of(alias: str) -> Callable[[str], str]:
        return lambda name: f"{alias}.{_q(name)}"

    def joined_of(i: int) -> Callable[[str], str]:
        return lambda name: f"v.{_q(f'_j{i}_{name}')}"

    broken = f"NOT coalesce(({_bound(rules[index], own_of('v'), joined_of(index))}), true)"
    valued = [x for x in columns if x not in how.filled]
    present = [x for x in columns if x in how.filled]
    fills = "".join(f", {how.filled[x]} AS {_q('_f_' + x)}" for x in present)
    engine.execute(f"CREATE OR REPLACE TEMP TABLE synth_hold_broken AS SELECT v.*, synth_u({sql_string(stream)}, v.{_q(key)}) "
                   f"AS _u{fills} FROM ({base}) v WHERE {broken}")
    if not engine.scalar("SELECT count(*) FROM synth_hold_broken"):
        return 0
    picked = [*(f"{_q(x)}" for x in valued), *(f"{_q(x)} IS NOT NULL AS {_q(x)}" for x in present)]
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE synth_hold_candidates AS
        SELECT *, row_number() OVER (ORDER BY _cn DESC, {', '.join(_q(x) for x in columns)}) AS _ci FROM (
          SELECT {', '.join(picked)}, count(*) AS _cn FROM {rows} GROUP BY ALL)
        QUALIFY _ci <= {CANDIDATES}""")
    refill = "(VALUES (false), (true)) r(_refill)" if present else "(VALUES (false)) r(_refill)"

    def value(name: str) -> str:
        if name in valued:
            return f"c.{_q(name)}"
        if name in present:
            fill = f"v.{_q('_f_' + name)}"
            return f"CASE WHEN c.{_q(name)} THEN CASE WHEN r._refill THEN {fill} ELSE coalesce(v.{_q(name)}, {fill}) END END"
        return f"v.{_q(name)}"

    keeps = " AND ".join(f"coalesce(({_bound(rule, value, joined_of(i))}), true)" for i, rule in enumerate(rules))
    changed = " + ".join([*(f"CAST(c.{_q(x)} IS DISTINCT FROM v.{_q(x)} AS INTEGER)" for x in valued),
                          *(f"CAST(c.{_q(x)} <> (v.{_q(x)} IS NOT NULL) AS INTEGER)" for x in present),
                          "CAST(r._refill AS INTEGER)"])
    # Per broken row: the best tier (common combinations, then fewest changes), and in it one
    # combination drawn with weight its count (the row's _u against the running sum).
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE synth_hold_drawn AS
        WITH fit AS (
          SELECT v.{_q(key)} AS _row, v._u, c._ci, r._refill, c._cn,
                 CASE WHEN c._cn >= {int(small_count)} THEN 1000 ELSE 0 END - ({changed}) AS _tier,
                 {', '.join(f'{value(x)} AS {_q(x)}' for x in columns)}
          FROM synth_hold_broken v CROSS JOIN {refill} JOIN synth_hold_candidates c ON {keeps}),
        best AS (SELECT * FROM fit QUALIFY _tier = max(_tier) OVER (PARTITION BY _row)),
        summed AS (SELECT *, sum(_cn) OVER (PARTITION BY _row ORDER BY _ci, _refill ROWS UNBOUNDED PRECEDING) AS _hi,
                          sum(_cn) OVER (PARTITION BY _row) AS _total FROM best)
        SELECT * FROM summed WHERE _u * _total >= _hi - _cn AND _u * _total < _hi""")
    sets = ", ".join(f"{_q(x)} = d.{_q(x)}" for x in columns)
    engine.execute(f"UPDATE {target} SET {sets} FROM synth_hold_drawn d WHERE {target}.{_q(key)} = d._row")
    return int(engine.scalar("SELECT count(*) FROM synth_hold_drawn"))

