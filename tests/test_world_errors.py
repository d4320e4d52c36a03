"""The declared error model is met, measured from the files (not from the generator's intent)."""

from __future__ import annotations

import math

import duckdb

from datafirst.world.error_model import default_error_model, parse_error_model
from datafirst.world.realism import realism


def _within(measured: float, declared: float, n: int) -> bool:
    # Five binomial standard deviations, plus a small allowance for duplicated rows, which
    # repeat their original's errors.
    sd = math.sqrt(max(declared * (1 - declared), 1e-9) / n)
    return abs(measured - declared) <= 5 * sd + 0.003 + 0.02 * declared


def test_declared_error_rates_are_met(world):
    checked = 0
    for r in realism(world):
        for key, declared in r.declared.items():
            measured = r.errors.get(key, 0.0)
            assert _within(measured, declared, r.rows), (r.source, key, measured, declared, r.rows)
            checked += 1
    assert checked > 150


def test_dates_of_birth_in_extracts_differ_from_truth_as_declared(world):
    """Independent of the generator's error log: compare the magistrates' file with the truth."""
    con = duckdb.connect()
    wrong, total = con.execute(f"""
        WITH ext AS (
            SELECT defendant_id, try_strptime(date_of_birth, '%d/%m/%Y')::DATE AS dob
            FROM read_csv('{world}/extracts/magistrates/defendants.csv', all_varchar=true, ignore_errors=true,
                          strict_mode=false)),
        t AS (SELECT record_id, person_id, errors FROM read_parquet('{world}/truth/records.parquet')
              WHERE source = 'magistrates' AND defect = '' AND errors NOT LIKE '%name:alias%')
        SELECT count(*) FILTER (WHERE ext.dob IS NOT NULL AND ext.dob <> p.date_of_birth), count(*)
        FROM ext JOIN t ON t.record_id = ext.defendant_id
        JOIN read_parquet('{world}/truth/people.parquet') p USING (person_id)""").fetchall()[0]
    rates = default_error_model().for_source("magistrates")
    expected = sum(rates.rate("date_of_birth", k) for k in ("day_month_swap", "digit_typo", "placeholder_jan1", "placeholder_1900"))
    assert total > 10_000
    assert _within(wrong / total, expected, total), (wrong / total, expected)


def test_every_source_with_declared_malformed_rows_has_them(world):
    con = duckdb.connect()
    planted = dict(con.execute(f"""SELECT source || ':' || defect, count(*) FROM read_parquet('{world}/truth/records.parquet')
                                   WHERE defect <> '' GROUP BY 1""").fetchall())
    rows = dict(con.execute(f"""SELECT source, count(*) FROM read_parquet('{world}/truth/records.parquet') GROUP BY 1""").fetchall())
    model = default_error_model()
    for source, n in rows.items():
        for kind, rate in model.for_source(source).kinds("rows"):
            if rate * n >= 8:  # expected at least 8: absence would be a bug, not chance
                assert planted.get(f"{source}:{kind}", 0) > 0, (source, kind, rate, n)


def test_error_model_rejects_unknown_fields_kinds_and_rates():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown field"):
        parse_error_model("sources: {x: {shoe_size: {typo: 0.1}}}")
    with pytest.raises(ValidationError, match="unknown error kind"):
        parse_error_model("sources: {x: {surname: {sneeze: 0.1}}}")
    with pytest.raises(ValidationError, match="between 0 and 1"):
        parse_error_model("sources: {x: {surname: {typo: 1.5}}}")
