"""Persistent person ids: each release carries the previous release's ids to the same people.

Splink's cluster ids are stable only by accident, so the ids researchers see are assigned
here, at each threshold, by record overlap with the previous (trusted) release:

- overlap(cluster, previous id) = records the cluster shares with the previous id, joined
  on the hashed row id (the same key gives the same hash, so no identifier is needed);
- a cluster keeps a previous id when each is the other's best match (most shared records;
  ties go to the smaller id), so one id continues one person and never two;
- every other cluster gets a new id, a keyed hash of the threshold, the release version and
  the cluster's smallest record key: opaque (it reveals neither order, source nor native
  id), the same for the same inputs, and never equal to an id issued by an earlier release.

Merges (a cluster holding records of two or more previous ids) and splits (a previous id
whose records went to two or more clusters) are written to a change log table with the
records involved; people whose records were all deleted are counted as removed.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine
from ..engine.duckdb_engine import sql_string

THRESHOLDS = ("high", "medium", "low")
ASSIGNED = "release_links"  # clusters with the released person ids in place of the internal ones
CHANGES = "person_id_changes"


def assign(engine: Engine, clusters: Path, previous_lookup: Path | None, version: str) -> dict[str, dict]:
    """Create `release_links` and `person_id_changes`; return a summary per threshold.

    Needs `keyed_hash` installed on the engine. `previous_lookup` is the previous release's
    person_link_lookup table, already checked against its checksums (None for a new series).
    """
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE release_records AS
        SELECT *, keyed_hash(record_key) AS row_id_hash FROM read_parquet({sql_string(clusters)})""")
    if previous_lookup is not None:
        engine.execute(f"""CREATE OR REPLACE TEMP TABLE previous_ids AS
            SELECT row_id_hash, {', '.join(f'person_id_{t}' for t in THRESHOLDS)}
            FROM read_parquet({sql_string(previous_lookup)})""")
    else:
        engine.execute("CREATE OR REPLACE TEMP TABLE previous_ids (row_id_hash VARCHAR, "
                       + ", ".join(f"person_id_{t} VARCHAR" for t in THRESHOLDS) + ")")
    changes, summary = [], {}
    for t in THRESHOLDS:
        summary[t] = _assign_threshold(engine, t, version)
        changes.append(f"SELECT * FROM changes_{t}")
    engine.execute(f"CREATE OR REPLACE TEMP TABLE {CHANGES} AS {' UNION ALL '.join(changes)}")
    replaced = ", ".join(f"ids_{t}.person_id AS person_id_{t}" for t in THRESHOLDS)
    joins = " ".join(f"JOIN ids_{t} ON ids_{t}.cluster = r.person_id_{t}" for t in THRESHOLDS)
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE {ASSIGNED} AS
        SELECT r.* EXCLUDE ({', '.join(f'person_id_{t}' for t in THRESHOLDS)}), {replaced}
        FROM release_records r {joins}""")
    for t in THRESHOLDS:
        engine.execute(f"DROP TABLE IF EXISTS overlap_{t}")
        engine.execute(f"DROP TABLE IF EXISTS changes_{t}")
        engine.execute(f"DROP TABLE IF EXISTS ids_{t}")
    return summary


def _assign_threshold(engine: Engine, t: str, version: str) -> dict:
    # overlap: (cluster, previous id, shared records); rank each side's candidates.
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE overlap_{t} AS
        SELECT cluster, old_id, n,
               row_number() OVER (PARTITION BY cluster ORDER BY n DESC, old_id) AS rank_for_cluster,
               row_number() OVER (PARTITION BY old_id ORDER BY n DESC, cluster) AS rank_for_old
        FROM (SELECT r.person_id_{t} AS cluster, p.person_id_{t} AS old_id, count(*) AS n
              FROM release_records r JOIN previous_ids p USING (row_id_hash) GROUP BY ALL)""")
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE ids_{t} AS
        SELECT c.cluster,
               coalesce(o.old_id, 'P' || keyed_hash({sql_string(t + '|' + version + '|')} || c.first_key)) AS person_id,
               o.old_id IS NOT NULL AS continued,
               EXISTS (SELECT 1 FROM overlap_{t} x WHERE x.cluster = c.cluster) AS has_previous_records
        FROM (SELECT person_id_{t} AS cluster, min(record_key) AS first_key FROM release_records GROUP BY 1) c
        LEFT JOIN overlap_{t} o ON o.cluster = c.cluster AND o.rank_for_cluster = 1 AND o.rank_for_old = 1""")
    clash = engine.scalar(f"""SELECT count(*) FROM ids_{t} i JOIN previous_ids p ON p.person_id_{t} = i.person_id
                              WHERE NOT i.continued""")
    if clash:  # 80-bit hashes: never expected; refuse rather than give two people one id
        raise RuntimeError(f"{clash} new person id(s) at {t} equal an id of the previous release")
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE changes_{t} AS
        WITH o AS (
            SELECT o.*, i.person_id AS new_id,
                   count(*) OVER (PARTITION BY o.cluster) AS old_ids_in_cluster,
                   count(*) OVER (PARTITION BY o.old_id) AS clusters_of_old_id
            FROM overlap_{t} o JOIN ids_{t} i USING (cluster))
        SELECT {sql_string(t)} AS threshold, 'merged' AS change, old_id AS person_id, new_id AS into_person_id,
               n AS records
        FROM o WHERE old_ids_in_cluster > 1 AND old_id <> new_id
        UNION ALL
        SELECT {sql_string(t)}, 'split', old_id, new_id, n
        FROM o WHERE clusters_of_old_id > 1 AND old_id <> new_id""")
    (people, continued, new_people, reassigned), = engine.execute(f"""
        SELECT count(*), count(*) FILTER (continued), count(*) FILTER (NOT has_previous_records),
               count(*) FILTER (has_previous_records AND NOT continued) FROM ids_{t}""")
    (previous,), = engine.execute(f"SELECT count(DISTINCT person_id_{t}) FROM previous_ids")
    (removed,), = engine.execute(f"""SELECT count(DISTINCT person_id_{t}) FROM previous_ids p
        WHERE NOT EXISTS (SELECT 1 FROM overlap_{t} o WHERE o.old_id = p.person_id_{t})""")
    (merged, split), = engine.execute(f"""SELECT count(DISTINCT person_id) FILTER (change = 'merged'),
        count(DISTINCT person_id) FILTER (change = 'split') FROM changes_{t}""")
    return {"people": people, "previous_people": previous, "continued": continued, "new_people": new_people,
            "new_ids_after_merge_or_split": reassigned, "previous_ids_merged_away": merged,
            "previous_ids_split": split, "previous_ids_removed": removed,
            "previous_ids_kept_share": round(continued / previous, 6) if previous else None}
