"""Benchmark: how a world's names are spread, and the pairs that name blocks would give.

For each world folder: the shape of its people's surnames (distinct values; share of people with
the commonest 1, 10, 100 and 1,000; share with a surname held by fewer than 0.01% of people) and
of their forenames, then the pairs (sum of n(n-1)/2 per key; and of them, the pairs of two different people) of three blocking keys over its
records: exact forename + surname, surname soundex + forename soundex, surname + date of birth.
Records carry their person's true identifiers (truth/records.parquet joined to truth/people.parquet),
before recording errors: the errors touch a few percent of records and hardly move the sums.

`--people N` instead draws a people table of N people alone (the world's own chunks and seeds, no
extracts), for the name shape at sizes where a whole world takes too long (3.4M people is about
10M records).

    python bench/bench_names.py WORLD [WORLD ...]
    python bench/bench_names.py --people 3400000 --seed 2026
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from datafirst.standardise.cleaning import soundex


def name_shape(con: duckdb.DuckDBPyConnection, table: str, column: str) -> dict:
    """Distinct values and how concentrated they are, over the rows of `table`."""
    n, distinct, top1, top10, top100, top1000, rare = con.execute(f"""
        WITH c AS (SELECT {column} AS v, count(*) AS k FROM {table} GROUP BY 1),
             r AS (SELECT k, row_number() OVER (ORDER BY k DESC, v) AS rank FROM c)
        SELECT sum(k), count(*), sum(k) FILTER (WHERE rank <= 1), sum(k) FILTER (WHERE rank <= 10),
               sum(k) FILTER (WHERE rank <= 100), sum(k) FILTER (WHERE rank <= 1000),
               sum(k) FILTER (WHERE k < 0.0001 * (SELECT sum(k) FROM c))
        FROM r""").fetchone()
    share = lambda x: round((x or 0) / n, 4)  # noqa: E731
    return {"people": n, "distinct": distinct, "top1": share(top1), "top10": share(top10), "top100": share(top100),
            "top1000": share(top1000), "rare_lt_0.01pct": share(rare)}


def block_pairs(con: duckdb.DuckDBPyConnection) -> dict:
    """Pairs of records that share each blocking key (keys with a missing part make no pairs)."""
    keys = {
        "forename+surname": "lower(forename) || '|' || lower(surname)",
        "soundex(surname)+soundex(forename)": f"{soundex('lower(surname)')} || '|' || {soundex('lower(forename)')}",
        "surname+date_of_birth": "lower(surname) || '|' || CAST(date_of_birth AS VARCHAR)",
    }
    out = {"records": con.execute("SELECT count(*) FROM rec").fetchone()[0]}
    for name, key in keys.items():
        pairs, largest = con.execute(f"""SELECT sum(n * (n - 1) / 2)::BIGINT, max(n) FROM (
            SELECT count(*) AS n FROM rec WHERE {key} IS NOT NULL GROUP BY {key})""").fetchone()
        same = con.execute(f"""SELECT sum(n * (n - 1) / 2)::BIGINT FROM (
            SELECT count(*) AS n FROM rec WHERE {key} IS NOT NULL GROUP BY {key}, person_id)""").fetchone()[0]
        out[name] = {"pairs": pairs, "pairs_of_different_people": pairs - same, "largest_block": largest}
    return out


def world_figures(world: Path) -> dict:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE people AS SELECT * FROM read_parquet('{world}/truth/people.parquet')")
    con.execute(f"""CREATE TABLE rec AS SELECT r.person_id, p.forename, p.surname, p.date_of_birth
                    FROM read_parquet('{world}/truth/records.parquet') r JOIN people p USING (person_id)""")
    return {"world": str(world), "surnames": name_shape(con, "people", "surname"),
            "forenames": name_shape(con, "people", "forename"), "blocks": block_pairs(con)}


def drawn_figures(people: int, seed: int) -> dict:
    """The people table of a `people`-person world with this seed, drawn chunk by chunk as
    generate_world draws it, without the journeys and extracts."""
    from datafirst.world.generate import CHUNK_PEOPLE
    from datafirst.world.population import make_people
    from datafirst.world.reference import load_reference

    ref = load_reference()
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("CREATE TABLE people (forename VARCHAR, surname VARCHAR)")
    for chunk in range((people + CHUNK_PEOPLE - 1) // CHUNK_PEOPLE):
        n = min(CHUNK_PEOPLE, people - chunk * CHUNK_PEOPLE)
        p = make_people(np.random.default_rng(np.random.SeedSequence([seed, chunk])), ref, n, chunk * CHUNK_PEOPLE)
        part = pa.table({"forename": p.forename.astype(str), "surname": p.surname.astype(str)})  # noqa: F841
        con.execute("INSERT INTO people SELECT * FROM part")
    return {"people": people, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
            "surnames": name_shape(con, "people", "surname"), "forenames": name_shape(con, "people", "forename")}


def _print(r: dict) -> None:
    print(r["world"] if "world" in r else f"{r['people']:,} people drawn (seed {r['seed']})")
    for kind in ("surnames", "forenames"):
        s = r[kind]
        print(f"  {kind:9} {s['distinct']:>9,} distinct over {s['people']:,} people; top 1 {s['top1']:.2%}, "
              f"top 10 {s['top10']:.2%}, top 100 {s['top100']:.2%}, top 1000 {s['top1000']:.2%}; "
              f"held by < 0.01% of people: {s['rare_lt_0.01pct']:.2%}")
    if "blocks" in r:
        print(f"  blocks over {r['blocks']['records']:,} records:")
        for key, b in r["blocks"].items():
            if key != "records":
                print(f"    {key:36} {b['pairs']:>13,} pairs ({b['pairs_of_different_people']:,} of different people), "
                      f"largest block {b['largest_block']:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("worlds", nargs="*", type=Path, help="world folders (from datafirst world)")
    parser.add_argument("--people", type=int, metavar="N", help="draw a people table of N people instead")
    parser.add_argument("--seed", type=int, default=2026, metavar="S", help="seed of the drawn people table")
    args = parser.parse_args()
    results = [world_figures(w) for w in args.worlds]
    if args.people:
        results.append(drawn_figures(args.people, args.seed))
    for r in results:
        _print(r)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
