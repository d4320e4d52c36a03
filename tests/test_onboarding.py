"""A data owner onboards a source never seen before, from the documentation alone."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from datafirst.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _documented_contract() -> str:
    """The worked example in docs/contracts.md, verbatim: the docs must stay true."""
    text = (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    section = text.split("## A complete example", 1)[1]
    return re.search(r"```yaml\n(.+?)\n```", section, flags=re.S).group(1)


def test_new_source_onboarded_through_its_contract_alone(tmp_path):
    extracts = tmp_path / "extracts"
    (extracts / "hb").mkdir(parents=True)
    rows = [
        "claim_ref;claimant_surname;claimant_forenames;birth_dt;sex_code;post_code;ni_number;claim_start;weekly_amount;status",
        "HB-001;O'Brien;Siobhán Marie;03.11.1985;2;m1  1ae;QQ123456C;01.04.2023;98.50;open",
        "HB-002;MC DONALD;Seán;29.02.2001;1;SW1A1AA;;02.04.2023;110.00;closed",
        "HB-003;Nowak;Zoë;14.07.1990;2;NFA;QQ654321A;03.04.2023;75.25;open",
        "HB-004;Smith-Jones;Amy;1900-01-01;F;LS1 4AP;;04.04.2023;12;suspended",
        "HB-005;Ali;Mohammed;01.01.1979;1;B11 1AA;;05.04.2023;80.00;pending",
        "HB-001;O'Brien;Siobhán Marie;03.11.1985;2;m1  1ae;QQ123456C;01.04.2023;98.50;open",
    ]
    (extracts / "hb" / "claimants_2024.txt").write_bytes(("\r\n".join(rows) + "\r\n").encode("cp1252", "replace"))

    result = runner.invoke(app, ["init", str(tmp_path / "ws"), "--extracts", str(extracts), "--no-contracts"])
    assert result.exit_code == 0, result.output
    (tmp_path / "ws" / "contracts" / "housing_benefit.yaml").write_text(_documented_contract(), encoding="utf-8")

    result = runner.invoke(app, ["ingest", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["standardise", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output

    zones = tmp_path / "ws" / "zones"
    con = duckdb.connect()
    q = con.execute(f"SELECT row_number, \"column\", reason FROM '{zones}/landed/_quarantine.parquet' ORDER BY 1").fetchall()
    assert q == [
        (2, "birth_dt", "not a valid date in format %d.%m.%Y: 29.02.2001"),
        (4, "birth_dt", "not a valid date in format %d.%m.%Y: 1900-01-01"),
        (5, "status", "value not allowed (expected one of open, closed, suspended): pending"),
        (6, "claim_ref", "exact duplicate of row 1"),
    ]
    ids = con.execute(f"""SELECT record_key, forename, middle_names, surname, surname_soundex, date_of_birth, year_of_birth,
                                 sex, postcode, postcode_district, other_id, flags
                          FROM '{zones}/identifiers/housing_benefit__claimants.parquet' ORDER BY record_key""").fetchall()
    assert [r[0] for r in ids] == ["housing_benefit|claimants|HB-001", "housing_benefit|claimants|HB-003"]
    obrien, nowak = ids
    assert obrien[1:10] == ("siobhan", "marie", "obrien", "O165", __import__("datetime").date(1985, 11, 3), 1985, "F",
                            "M1 1AE", "M1")
    assert obrien[10] == "QQ123456C"
    assert nowak[1] == "zoe" and nowak[8] is None and "postcode:placeholder" in nowak[11]
    content_cols = {r[0] for r in con.execute(
        f"DESCRIBE SELECT * FROM '{zones}/content/housing_benefit__claimants.parquet'").fetchall()}
    assert {"claim_ref", "claim_start", "weekly_amount", "status"} <= content_cols
    assert not content_cols & {"claimant_surname", "claimant_forenames", "birth_dt", "sex_code", "post_code", "ni_number"}
