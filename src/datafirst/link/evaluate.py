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
