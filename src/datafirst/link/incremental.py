"""Incremental linkage: score only what changed since the last link, and re-cluster only the
people it touches.

Every link writes `records.parquet` (each record's key and a digest of its identifiers). The
next link compares the current identifiers with it: records are new, changed (same key,
other identifiers), deleted, or unchanged. When the model, thresholds and blocking rules are
those of the last link and the changes are a small share, then:

1. edges touching a deleted or changed record are dropped, every other edge is kept;
2. new and changed records are scored against every other record and against each other
   (Splink's `predict_between` and `predict_within`), with the saved model and its saved
   term frequencies, as a full link would;
3. the people (clusters at the lowest threshold, which hold those at the higher ones) that
   hold a changed or deleted record or a record a new edge reaches are clustered again from
   their edges; every other record keeps its cluster, which is what a full link would give,
   since none of its edges changed.

Scores depend only on the pair and the model (term frequencies are saved with the model),
so the edges and clusters equal those of a full re-run with the same model; the tests and
the benchmark check that record by record. A model saved without term frequencies would
score with today's data, so it always gets a full link (see `reusable`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from splink import Linker
from splink.internals.database_api import DatabaseAPI

from ..engine import Engine
from ..engine.sql import sql_string
from .clusters import cluster

RECORDS = "records.parquet"
DIGEST_SCHEME = "md5 of identifier columns, v2"
# Above this share of changed records a full link is as quick and simpler to trust.
MAX_CHANGED_SHARE = 0.25


@dataclass
class Changes:
    new: int
    changed: int
    deleted: int
    unchanged: int
    affected: int = 0  # records whose people were clustered again


def cluster_label(threshold: str) -> str:
    """SQL for a cluster's internal id: a digest of the threshold and the cluster's smallest
    record key, so the same cluster always gets the same id (released ids are assigned from
    these at release; see release.person_ids). Needs `cluster_id` and `record_key`."""
    return (f"'P' || substr(sha256({sql_string(threshold)} || min(record_key) OVER (PARTITION BY cluster_id)), "
            "1, 16)")


def strongest_links(edges: str, medium: float) -> str:
    """SQL for `(record_key, strongest)`: the best match probability among each record's edges
    at or above the medium threshold (records without one are left out)."""
    return f"""SELECT record_key, max(match_probability) AS strongest FROM (
            SELECT record_key_l AS record_key, match_probability FROM {edges}
            UNION ALL SELECT record_key_r, match_probability FROM {edges})
        WHERE match_probability >= {medium} GROUP BY record_key"""


def digest_input(engine: Engine, input_table: str, columns: list[str]) -> None:
    """`link_input_digests(record_key, digest)`: what the model sees of each record."""
    # Derived columns (address_tokens: a list in no set order) are left out; their sources count.
    parts = ", ".join(f"coalesce(CAST({c} AS VARCHAR), chr(0))" for c in columns
                      if c not in ("record_key", "address_tokens"))
    engine.execute(f"""CREATE OR REPLACE TABLE link_input_digests AS
        SELECT record_key, md5(concat_ws(chr(31), {parts})) AS digest FROM {input_table}""")


def reusable(links: Path, run: dict) -> str | None:
    """Why the last link cannot be built on (None when it can)."""
    meta_path = links / "link.json"
    if not meta_path.is_file() or not all((links / f).is_file() for f in (RECORDS, "edges.parquet",
                                                                            "clusters.parquet")):
        return "no previous link to build on"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    for key, what in (("model", "the model"), ("model_sha256", "the model file"), ("thresholds", "the thresholds"),
                      ("edge_floor", "the edge floor"), ("prediction_rules", "the blocking rules"),
                      ("comparison_budget", "the comparison budget"),
                      ("record_digest", "the record digest")):
        if meta.get(key) != run.get(key):
            return f"{what} changed since the last link"
    if not run.get("term_frequencies_saved"):
        return "the model was saved without its term frequencies (scores would drift); retrain to link incrementally"
    return None


def record_changes(engine: Engine, links: Path) -> Changes:
    engine.execute(f"""CREATE OR REPLACE TABLE link_changes AS
        SELECT coalesce(c.record_key, p.record_key) AS record_key,
               CASE WHEN p.record_key IS NULL THEN 'new' WHEN c.record_key IS NULL THEN 'deleted'
                    WHEN p.digest <> c.digest THEN 'changed' END AS kind
        FROM link_input_digests c FULL JOIN read_parquet({sql_string(links / RECORDS)}) p USING (record_key)
        WHERE p.record_key IS NULL OR c.record_key IS NULL OR p.digest <> c.digest""")
    (new, changed, deleted), = engine.execute("""SELECT count(*) FILTER (kind = 'new'),
        count(*) FILTER (kind = 'changed'), count(*) FILTER (kind = 'deleted') FROM link_changes""")
    total = int(engine.scalar("SELECT count(*) FROM link_input_digests"))
    return Changes(new=new, changed=changed, deleted=deleted, unchanged=total - new - changed)


def tf_columns(model: dict) -> list[str]:
    return sorted({level["tf_adjustment_column"] for comparison in model.get("comparisons", [])
                   for level in comparison.get("comparison_levels", []) if level.get("tf_adjustment_column")})


def link_changes(engine: Engine, db_api: DatabaseAPI, linker: Linker, links: Path, input_table: str,
                 thresholds: dict[str, float], edge_floor: float, changes: Changes) -> None:
    """Make `link_edges` and `clusters_<threshold>` as a full link would, from the last link
    and the changed records. The linker's term frequencies are already registered."""
    previous_edges = sql_string(links / "edges.parquet")
    previous_clusters = sql_string(links / "clusters.parquet")
    engine.execute(f"""CREATE OR REPLACE TABLE link_fresh AS SELECT * FROM {input_table}
                       WHERE record_key IN (SELECT record_key FROM link_changes WHERE kind <> 'deleted')""")
    engine.execute(f"""CREATE OR REPLACE VIEW link_existing AS SELECT * FROM {input_table}
                       WHERE record_key NOT IN (SELECT record_key FROM link_fresh)""")
    fresh = db_api.register("link_fresh", dataset_display_name="fresh")
    existing = db_api.register("link_existing", dataset_display_name="existing")
    scored = [linker.inference.predict_within(fresh, threshold_match_probability=edge_floor, warning_mode="never"),
              linker.inference.predict_between(fresh, existing, threshold_match_probability=edge_floor,
                                               warning_mode="never")]
    # Splink orders a pair's keys in a full dedupe (left < right); roles here are fresh/existing.
    new_edges = " UNION ALL ".join(f"""
        SELECT least(record_key_l, record_key_r) AS record_key_l, greatest(record_key_l, record_key_r) AS record_key_r,
               CASE WHEN record_key_l < record_key_r THEN source_l ELSE source_r END AS source_l,
               CASE WHEN record_key_l < record_key_r THEN source_r ELSE source_l END AS source_r,
               match_weight, match_probability FROM {p.physical_name}""" for p in scored)
    engine.execute(f"""CREATE OR REPLACE TABLE link_new_edges AS {new_edges}""")
    engine.execute(f"""CREATE OR REPLACE TABLE link_edges AS
        SELECT * FROM read_parquet({previous_edges}) e
        WHERE e.record_key_l NOT IN (SELECT record_key FROM link_changes WHERE kind <> 'new')
          AND e.record_key_r NOT IN (SELECT record_key FROM link_changes WHERE kind <> 'new')
        UNION ALL SELECT * FROM link_new_edges
        ORDER BY record_key_l, record_key_r""")
    for p in scored:
        p.drop_table_from_database_and_remove_from_cache()
    # People to cluster again: every previous low-threshold person holding a changed or
    # deleted record or reached by a new edge, and the fresh records.
    engine.execute(f"""CREATE OR REPLACE TABLE link_affected AS
        WITH previous AS (SELECT record_key, person_id_low FROM read_parquet({previous_clusters})),
             joining AS (SELECT * FROM link_new_edges WHERE match_probability >= {min(thresholds.values())}),
             touched AS (SELECT record_key FROM link_changes WHERE kind <> 'new'
                         UNION SELECT record_key_l FROM joining UNION SELECT record_key_r FROM joining)
        SELECT p.record_key FROM previous p
        WHERE p.person_id_low IN (SELECT person_id_low FROM previous JOIN touched USING (record_key))
          AND p.record_key IN (SELECT record_key FROM {input_table}) AND p.record_key NOT IN (SELECT record_key FROM link_fresh)
        UNION SELECT record_key FROM link_fresh""")
    changes.affected = int(engine.scalar("SELECT count(*) FROM link_affected"))
    engine.execute("""CREATE OR REPLACE TABLE link_affected_edges AS SELECT * FROM link_edges
        WHERE record_key_l IN (SELECT record_key FROM link_affected)
          AND record_key_r IN (SELECT record_key FROM link_affected)""")
    # A record outside the affected people keeps its person at every threshold (the higher
    # thresholds' people lie within the lowest's) and so its person's size, and its strongest
    # link: an edge at or above the medium threshold joins both its records into one affected
    # person whenever it was added or dropped.
    unaffected = f"""SELECT * FROM read_parquet({previous_clusters})
        WHERE record_key IN (SELECT record_key FROM {input_table})
          AND record_key NOT IN (SELECT record_key FROM link_affected)"""
    cluster(engine, db_api, "link_affected", "link_affected_edges", thresholds, cluster_label,
            into="link_affected_clusters_{name}")
    for name in thresholds:
        engine.execute(f"""CREATE OR REPLACE TABLE clusters_{name} AS
            SELECT * FROM link_affected_clusters_{name}
            UNION ALL
            SELECT record_key, person_id_{name}, cluster_size_{name} FROM ({unaffected})""")
        engine.execute(f"DROP TABLE link_affected_clusters_{name}")
    engine.execute(f"""CREATE OR REPLACE TABLE link_strongest AS
        {strongest_links("link_affected_edges", thresholds["medium"])}
        UNION ALL SELECT record_key, strongest_link_medium FROM ({unaffected}) WHERE strongest_link_medium IS NOT NULL""")
    engine.execute("DROP VIEW IF EXISTS link_existing")
    for table in ("link_fresh", "link_new_edges", "link_affected", "link_affected_edges"):
        engine.execute(f"DROP TABLE IF EXISTS {table}")
