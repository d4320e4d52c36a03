"""Pairwise linkage accuracy against known truth (the world's, or a labelled benchmark's).

Truth is a table of (record_key, true_id). A pair of records is a true match when they
share a true id; a predicted match when they share a person id at a threshold. Counts are
computed from cluster sizes, never by listing pairs, so they stay cheap at any scale.
"""

from __future__ import annotations

from ..engine import Engine


def pairwise_accuracy(engine: Engine, clusters: str, truth: str, thresholds: tuple[str, ...] = ("high", "medium", "low"),
                      group_column: str | None = None) -> list[dict]:
    """Precision, recall and F1 of each threshold's clusters, overall or per group of the
    truth table (a group is given to a pair when both records belong to it)."""
    group = group_column or "'all'"
    out = []
    for name in thresholds:
        rows = engine.execute(f"""
            WITH j AS (SELECT c.person_id_{name} AS pid, t.true_id, {group} AS grp
                       FROM {clusters} c JOIN {truth} t USING (record_key)),
            true_pairs AS (SELECT grp, sum(n * (n - 1) / 2) AS s FROM (
                SELECT grp, true_id, count(*) AS n FROM j GROUP BY ALL) GROUP BY grp),
            pred_pairs AS (SELECT grp, sum(n * (n - 1) / 2) AS s FROM (
                SELECT grp, pid, count(*) AS n FROM j GROUP BY ALL) GROUP BY grp),
            both_pairs AS (SELECT grp, sum(n * (n - 1) / 2) AS s FROM (
                SELECT grp, pid, true_id, count(*) AS n FROM j GROUP BY ALL) GROUP BY grp)
            SELECT t.grp, coalesce(b.s, 0), coalesce(p.s, 0), coalesce(t.s, 0)
            FROM true_pairs t LEFT JOIN pred_pairs p ON p.grp IS NOT DISTINCT FROM t.grp
            LEFT JOIN both_pairs b ON b.grp IS NOT DISTINCT FROM t.grp  -- records with no group are a group too
            ORDER BY t.grp""")
        for grp, tp, pred, true in rows:
            precision = tp / pred if pred else 1.0
            recall = tp / true if true else 1.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.append({"threshold": name, "group": grp, "true_pairs": int(true), "predicted_pairs": int(pred),
                        "true_positives": int(tp), "precision": round(precision, 5), "recall": round(recall, 5),
                        "f1": round(f1, 5)})
    return out


def accuracy_by_source_pair(engine: Engine, clusters: str, truth: str,
                            thresholds: tuple[str, ...] = ("high", "medium", "low")) -> list[dict]:
    """Pairwise precision, recall and F1 per pair of sources (a pair of records belongs to the
    sources of its two records, in name order; a source with itself is its own duplicates).

    Counts come from how many records of each source share a person id, a true id, or both:
    n_a * n_b pairs between two sources, n_a * (n_a - 1) / 2 within one."""
    out = []
    for name in thresholds:
        rows = engine.execute(f"""
            WITH j AS (SELECT c.person_id_{name} AS pid, t.true_id, c.source
                       FROM {clusters} c JOIN {truth} t USING (record_key)),
            counted AS (
                SELECT 'true' AS kind, true_id AS k, source, count(*) AS n FROM j GROUP BY ALL
                UNION ALL SELECT 'pred', pid, source, count(*) FROM j GROUP BY ALL
                UNION ALL SELECT 'both', pid || '|' || true_id, source, count(*) FROM j GROUP BY ALL),
            pairs AS (
                SELECT a.kind, a.source AS source_a, b.source AS source_b,
                       sum(CASE WHEN a.source = b.source THEN a.n * (a.n - 1) / 2 ELSE a.n * b.n END) AS s
                FROM counted a JOIN counted b ON a.kind = b.kind AND a.k = b.k AND a.source <= b.source
                GROUP BY ALL)
            SELECT source_a, source_b, coalesce(sum(s) FILTER (WHERE kind = 'both'), 0),
                   coalesce(sum(s) FILTER (WHERE kind = 'pred'), 0), coalesce(sum(s) FILTER (WHERE kind = 'true'), 0)
            FROM pairs GROUP BY ALL ORDER BY ALL""")
        for a, b, tp, pred, true in rows:
            if not (pred or true):
                continue
            precision = tp / pred if pred else 1.0
            recall = tp / true if true else 1.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.append({"threshold": name, "sources": [a, b], "true_pairs": int(true), "predicted_pairs": int(pred),
                        "true_positives": int(tp), "precision": round(precision, 5), "recall": round(recall, 5),
                        "f1": round(f1, 5)})
    return out
