"""Case journeys: each Crown Court case linked to the magistrates' case it came from.

Where a Crown row carries the magistrates' case reference, that is the link (score 1; with
co-defendants, to the record of the same person).
Otherwise the candidates are the magistrates' cases of the same person (at the medium
threshold) heard before the Crown Court received the case, scored on whether the case was
marked as sent up, whether the Crown main offence is among the case's offences, and how
close the dates are; the best candidate is kept if it scores at least MIN_SCORE.
Which tables and columns play these parts is declared in the workspace config
(`link.journey`, see workspace.JourneySpec), with defaults that fit the shipped contracts.
"""

from __future__ import annotations

from ..engine import Engine
from ..engine.sql import sql_string
from ..workspace import JourneySpec, Workspace

MIN_SCORE = 0.5
MAX_DAYS = 180  # magistrates' hearing to Crown receipt


def _q(name: str) -> str:
    return '"' + name + '"'


def journeys_sql(ws: Workspace, spec: JourneySpec, clusters: str) -> str | None:
    content = ws.zone("content")
    paths = {t: content / f"{t}.parquet" for t in (spec.crown_table, spec.mags_table, spec.offences_table)}
    if not all(p.is_file() for p in paths.values()):
        return None
    crown = f"read_parquet({sql_string(paths[spec.crown_table])})"
    mags = f"read_parquet({sql_string(paths[spec.mags_table])})"
    offences = f"read_parquet({sql_string(paths[spec.offences_table])})"
    s = spec
    return f"""
        WITH crown AS (
            SELECT c.record_key, c.{_q(s.crown_case)} AS crown_case, c.{_q(s.crown_reference)} AS reference,
                   c.{_q(s.crown_date)} AS received, c.{_q(s.crown_offence)} AS offence, k.person_id_medium AS person
            FROM {crown} c LEFT JOIN {clusters} k USING (record_key)),
        mags AS (
            SELECT m.record_key, m.{_q(s.mags_case)} AS mags_case, m.{_q(s.mags_date)} AS heard,
                   coalesce(m.{_q(s.mags_sent_flag)}, false) AS sent, k.person_id_medium AS person
            FROM {mags} m LEFT JOIN {clusters} k USING (record_key)),
        -- A magistrates' case with several defendants has a record for each: the Crown record
        -- takes its own person's (at the medium threshold), else the first, so it has one row.
        by_reference AS (
            SELECT * EXCLUDE (rank) FROM (
                SELECT c.record_key AS crown_record_key, c.crown_case, m.record_key AS magistrates_record_key,
                       m.mags_case, 'reference' AS method, CAST(1.0 AS DOUBLE) AS estimated_match_score,
                       date_diff('day', m.heard, c.received) AS days_between,
                       row_number() OVER (PARTITION BY c.record_key
                                          ORDER BY coalesce(m.person = c.person, false) DESC, m.record_key) AS rank
                FROM crown c JOIN mags m ON m.mags_case = c.reference)
            WHERE rank = 1),
        candidates AS (
            SELECT c.record_key AS crown_record_key, c.crown_case, m.record_key AS magistrates_record_key, m.mags_case,
                   'person_dates_offences' AS method,
                   CAST(0.4 + 0.25 * CAST(m.sent AS INTEGER) + 0.25 * CAST(o.mags_case IS NOT NULL AS INTEGER)
                        + 0.1 * (1 - date_diff('day', m.heard, c.received) / {MAX_DAYS}) AS DOUBLE)
                       AS estimated_match_score,
                   date_diff('day', m.heard, c.received) AS days_between
            FROM crown c JOIN mags m ON m.person = c.person
            LEFT JOIN (SELECT DISTINCT {_q(s.offences_case)} AS mags_case, {_q(s.offences_code)} AS offence
                       FROM {offences}) o ON o.mags_case = m.mags_case AND o.offence = c.offence
            WHERE c.record_key NOT IN (SELECT crown_record_key FROM by_reference)
              AND date_diff('day', m.heard, c.received) BETWEEN 0 AND {MAX_DAYS}),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY crown_record_key
                                         ORDER BY estimated_match_score DESC, days_between, magistrates_record_key) AS rank
            FROM candidates),
        best AS (SELECT * EXCLUDE (rank) FROM ranked WHERE rank = 1)
        SELECT * FROM by_reference
        UNION ALL SELECT * FROM best WHERE estimated_match_score >= {MIN_SCORE}
        ORDER BY crown_record_key"""


def link_journeys(ws: Workspace, engine: Engine, out_path, clusters: str, spec: JourneySpec | None = None) -> int:
    """Write the case journey table; returns its rows (0 when the sources are not present)."""
    sql = journeys_sql(ws, spec or JourneySpec(), clusters)
    if sql is None:
        return 0
    return engine.to_parquet(sql, out_path)
