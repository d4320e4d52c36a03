"""Persistent person ids: each release carries the previous release's ids to the same people.

Splink's cluster ids are stable only by accident, so the ids researchers see are assigned
here, at each threshold, by record overlap with the previous (trusted) release:

- overlap(cluster, previous id) = records the cluster shares with the previous id, joined
  on the hashed row id (the same key gives the same hash, so no identifier is needed);
- a cluster keeps a previous id when each is the other's best match (most shared records;
  ties go to the smaller id), in rounds over what is left unmatched until a round matches
  no more, so one id continues one person and never two;
- every other cluster gets a new id, a keyed hash of the id series (random, drawn when a
  series starts), the threshold, the release version and the cluster's smallest record key:
  opaque (it reveals neither order, source nor native id), the same for the same inputs
  within a series, and never equal to an id issued before.

Where records of a previous id now sit under another id, a change log row says how many:
`merged` when that id also holds records of other previous ids, `split` otherwise. Previous
ids are continued, retired (their records live on under other ids) or removed (all their
records were deleted).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from ..engine import Engine
from ..engine.sql import sql_string

THRESHOLDS = ("high", "medium", "low")
ASSIGNED = "release_links"  # clusters with the released person ids in place of the internal ones
CHANGES = "person_id_changes"


class IdClash(Exception):
    """A new person id equal to another id (never expected with 80-bit hashes)."""


def new_series() -> str:
    """A random id series: new ids are drawn within it, so a series started afresh (new key,
    releases moved aside) never gives out an id an earlier series gave to someone else."""
    return secrets.token_hex(8)


def assign(engine: Engine, clusters: Path, previous_lookup: Path | None, version: str,
           series: str) -> dict[str, dict]:
    """Create `release_links` and `person_id_changes`; return a summary per threshold.

    Needs `keyed_hash` installed on the engine. `previous_lookup` is the previous release's
    person_link_lookup table, already checked against its checksums (None for a new series).
    """
    # Not temp, as the tables below: the thresholds are matched at once, by jobs on their own
    # connections (Engine.concurrently); each query is small and keeps one core busy at most.
    engine.execute(f"""CREATE OR REPLACE TABLE {_RECORDS} AS
        SELECT *, keyed_hash(record_key) AS row_id_hash FROM read_parquet({sql_string(clusters)})""")
    if previous_lookup is not None:
        engine.execute(f"""CREATE OR REPLACE TABLE {_PREVIOUS} AS
            SELECT row_id_hash, {', '.join(f'person_id_{t}' for t in THRESHOLDS)}
            FROM read_parquet({sql_string(previous_lookup)})""")
    else:
        engine.execute(f"CREATE OR REPLACE TABLE {_PREVIOUS} (row_id_hash VARCHAR, "
                       + ", ".join(f"person_id_{t} VARCHAR" for t in THRESHOLDS) + ")")
    # The records both releases hold, with their cluster and previous id at every threshold:
    # one join for the three.
    pairs = ", ".join(f"r.person_id_{t} AS cluster_{t}, p.person_id_{t} AS old_id_{t}" for t in THRESHOLDS)
    engine.execute(f"""CREATE OR REPLACE TABLE {_SHARED} AS
        SELECT {pairs} FROM {_RECORDS} r JOIN {_PREVIOUS} p USING (row_id_hash)""")
    try:
        matched = engine.concurrently([lambda e, t=t: _match_threshold(e, t) for t in THRESHOLDS])
        # New ids need keyed_hash, installed on this engine's connection only.
        summary = {t: _assign_threshold(engine, t, version, series, m) for t, m in zip(THRESHOLDS, matched)}
        # Not temp: the products are written by jobs on other connections (Engine.concurrently).
        engine.execute(f"CREATE OR REPLACE TABLE {CHANGES} AS "
                       + " UNION ALL ".join(f"SELECT * FROM {_table('changes', t)}" for t in THRESHOLDS))
        replaced = ", ".join(f"{_table('ids', t)}.person_id AS person_id_{t}" for t in THRESHOLDS)
        joins = " ".join(f"JOIN {_table('ids', t)} ON {_table('ids', t)}.cluster = r.person_id_{t}" for t in THRESHOLDS)
        engine.execute(f"""CREATE OR REPLACE TABLE {ASSIGNED} AS
            SELECT r.* EXCLUDE ({', '.join(f'person_id_{t}' for t in THRESHOLDS)}), {replaced}
            FROM {_RECORDS} r {joins}""")
    finally:
        for table in (_RECORDS, _PREVIOUS, _SHARED, *(_table(kind, t) for t in THRESHOLDS
                                                      for kind in ("overlap", "kept", "clusters", "ids", "changes"))):
            engine.execute(f"DROP TABLE IF EXISTS {table}")
    return summary


_RECORDS, _PREVIOUS, _SHARED = "release_records", "previous_ids", "release_shared_records"


def _table(kind: str, t: str) -> str:
    return f"release_{kind}_{t}"


def _match_threshold(engine: Engine, t: str) -> dict:
    """At one threshold: `overlap` (records each cluster shares with each previous id), `kept`
    (the previous id each cluster continues) and `clusters` (every cluster, its smallest
    record key and the id it continues); returns the counts of previous ids, merges and
    splits. Needs no keyed hash."""
    overlap, kept = _table("overlap", t), _table("kept", t)
    engine.execute(f"""CREATE OR REPLACE TABLE {overlap} AS
        SELECT cluster_{t} AS cluster, old_id_{t} AS old_id, count(*) AS n FROM {_SHARED} GROUP BY ALL""")
    # Mutual best matches, in rounds: a cluster and a previous id left unmatched by a round
    # (their best partner went elsewhere) may still be each other's best among what is left.
    # While any pair is open a round matches at least one (the open pair with the most shared
    # records, ties to the smaller ids, is best for both), so the rounds run until one matches
    # nothing (at most one round per id kept), with no cap that would end continuity early.
    engine.execute(f"CREATE OR REPLACE TABLE {kept} (cluster VARCHAR, old_id VARCHAR)")
    most = engine.scalar(f"SELECT least(count(DISTINCT cluster), count(DISTINCT old_id)) FROM {overlap}")
    done = 0
    while done < most:
        engine.execute(f"""INSERT INTO {kept}
            WITH open AS (
                SELECT cluster, old_id,
                       row_number() OVER (PARTITION BY cluster ORDER BY n DESC, old_id) AS rank_for_cluster,
                       row_number() OVER (PARTITION BY old_id ORDER BY n DESC, cluster) AS rank_for_old
                FROM {overlap}
                WHERE cluster NOT IN (SELECT cluster FROM {kept}) AND old_id NOT IN (SELECT old_id FROM {kept}))
            SELECT cluster, old_id FROM open WHERE rank_for_cluster = 1 AND rank_for_old = 1""")
        now = engine.scalar(f"SELECT count(*) FROM {kept}")
        if now == done:  # nothing left open
            break
        done = now
    engine.execute(f"""CREATE OR REPLACE TABLE {_table('clusters', t)} AS
        SELECT c.cluster, c.first_key, k.old_id, c.cluster IN (SELECT cluster FROM {overlap}) AS has_previous_records
        FROM (SELECT person_id_{t} AS cluster, min(record_key) AS first_key FROM {_RECORDS} GROUP BY 1) c
        LEFT JOIN {kept} k USING (cluster)""")
    (previous, removed), = engine.execute(f"""SELECT count(DISTINCT person_id_{t}),
        count(DISTINCT person_id_{t}) FILTER (person_id_{t} NOT IN (SELECT old_id FROM {overlap}))
        FROM {_PREVIOUS}""")
    (merges, splits), = engine.execute(f"""SELECT
        (SELECT count(*) FROM (SELECT cluster FROM {overlap} GROUP BY 1 HAVING count(*) > 1)),
        (SELECT count(*) FROM (SELECT old_id FROM {overlap} GROUP BY 1 HAVING count(*) > 1))""")
    return {"previous_people": previous, "previous_ids_removed": removed, "merges": merges, "previous_ids_split": splits}


def _assign_threshold(engine: Engine, t: str, version: str, series: str, matched: dict) -> dict:
    overlap, ids = _table("overlap", t), _table("ids", t)
    engine.execute(f"""CREATE OR REPLACE TABLE {ids} AS
        SELECT cluster,
               coalesce(old_id, 'P' || keyed_hash({sql_string(f"{series}|{t}|{version}|")} || first_key)) AS person_id,
               old_id IS NOT NULL AS continued, has_previous_records
        FROM {_table('clusters', t)}""")
    # Each id that clashes counts once: a new id equal to a previous id (continued by another
    # cluster, or retired), or an id given to two clusters.
    clash = engine.scalar(f"""SELECT count(DISTINCT person_id) FROM {ids}
        WHERE (NOT continued AND person_id IN (SELECT person_id_{t} FROM {_PREVIOUS}))
           OR person_id IN (SELECT person_id FROM {ids} GROUP BY 1 HAVING count(*) > 1)""")
    if clash:  # 80-bit hashes: never expected; refuse rather than give two people one id
        raise IdClash(
            f"{clash} new person id(s) at {t} equal another id (a previous release's or another new one), so the "
            "release was refused. Releasing again gives the same clash: new ids are drawn within the id series "
            "carried over from the previous release, from the same inputs. To release, start a new series with "
            "`datafirst release --new-series` (or `datafirst run --new-series`): every person then gets a new id "
            "and none carries over from the previous release.")
    # One row per (previous id, current id) that records moved between, where ids merged or split.
    engine.execute(f"""CREATE OR REPLACE TABLE {_table('changes', t)} AS
        WITH o AS (
            SELECT o.*, i.person_id AS new_id,
                   count(*) OVER (PARTITION BY o.cluster) AS old_ids_in_cluster,
                   count(*) OVER (PARTITION BY o.old_id) AS clusters_of_old_id
            FROM {overlap} o JOIN {ids} i USING (cluster))
        SELECT {sql_string(t)} AS threshold, CASE WHEN old_ids_in_cluster > 1 THEN 'merged' ELSE 'split' END AS change,
               old_id AS person_id, new_id AS into_person_id, n AS records
        FROM o WHERE old_id <> new_id AND (old_ids_in_cluster > 1 OR clusters_of_old_id > 1)""")
    (people, continued, new_people, reassigned), = engine.execute(f"""
        SELECT count(*), count(*) FILTER (continued), count(*) FILTER (NOT has_previous_records),
               count(*) FILTER (has_previous_records AND NOT continued) FROM {ids}""")
    previous, removed = matched["previous_people"], matched["previous_ids_removed"]
    return {"people": people, "previous_people": previous, "continued": continued, "new_people": new_people,
            "new_ids_after_merge_or_split": reassigned, "merges": matched["merges"],
            "previous_ids_split": matched["previous_ids_split"], "previous_ids_retired": previous - continued - removed,
            "previous_ids_removed": removed, "previous_ids_kept_share": round(continued / previous, 6) if previous else None}
