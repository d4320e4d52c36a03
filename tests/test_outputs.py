"""Output checking: ACRO, in its own environment, flags planted disclosive cells in a researcher's
outputs; datafirst records the submission, a second person's decision per output, and exports only
what was approved."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datafirst.cli import app
from datafirst.deliver import outputs
from datafirst.deliver.outputs import OutputsError, Ruling
from datafirst.deliver.projects import add_project, approve_project, expire_project, projects_folder
from datafirst.files import file_sha256

REPO = Path(__file__).resolve().parents[1]
RESEARCHER = "r.searcher@uni.example"
CHECKER = "o.checker@tre.example"
COLLEAGUE = "c.olleague@uni.example"  # another researcher of the project: not independent
runner = CliRunner()

# Run by the ACRO venv's python: a synthetic table (not real data) with a planted small cell, a
# planted dominant contributor, and a safe crosstab, finalised as ACRO's results.json.
ACRO_SESSION = r"""
import sys
import numpy as np
import pandas as pd
from acro import ACRO

rng = np.random.default_rng(26)
people = 900
data = pd.DataFrame({
    "court": rng.choice(["Leeds", "Cardiff", "Bristol"], people),
    "outcome": rng.choice(["custody", "community", "fine"], people),
    "costs": rng.integers(100, 400, people).astype(float),
})
acro = ACRO(suppress=False)

# 1. a small cell: 3 defendants at a fourth court (below ACRO's threshold of 10)
planted = pd.DataFrame({"court": ["Truro"] * 3, "outcome": ["fine"] * 3, "costs": [200.0] * 3})
small = pd.concat([data, planted], ignore_index=True)
acro.crosstab(small.court, small.outcome)
acro.rename_output("output_0", "small_cell")

# 2. dominance: one defendant's costs are over 90% of their cell's total
dominated = data.copy()
dominated.loc[dominated.index[(dominated.court == "Leeds") & (dominated.outcome == "fine")][0], "costs"] = 5_000_000.0
acro.pivot_table(dominated, index="court", columns="outcome", values="costs", aggfunc="sum")
acro.rename_output("output_1", "dominance")
acro.add_exception("dominance", "costs are public court fees")  # the researcher asks for an exception

# 3. safe: every cell well above the threshold
acro.crosstab(data.court, data.outcome)
acro.rename_output("output_2", "safe")

acro.finalise(sys.argv[1], "json")
"""


@pytest.fixture(scope="module")
def acro_python() -> Path:
    """ACRO's python: $DATAFIRST_ACRO_PYTHON, else .venv-acro, made here by scripts/acro-venv.sh
    when missing (so the README's test command needs nothing more; CI makes it beforehand). When
    it cannot be made (no package registry), the tests skip, and fail in CI."""
    python = Path(os.environ.get("DATAFIRST_ACRO_PYTHON") or REPO / ".venv-acro" / "bin" / "python")
    if not python.is_file() and "DATAFIRST_ACRO_PYTHON" not in os.environ:
        made = subprocess.run(["bash", str(REPO / "scripts" / "acro-venv.sh")], capture_output=True, text=True,
                              timeout=900, check=False)
        if made.returncode != 0:
            message = f"scripts/acro-venv.sh could not make ACRO's environment:\n{made.stderr[-2000:]}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
    if not python.is_file():
        message = f"no ACRO environment at {python}: run scripts/acro-venv.sh (or set DATAFIRST_ACRO_PYTHON)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.fixture(scope="module")
def acro_folder(acro_python, tmp_path_factory) -> Path:
    """A researcher's finalised ACRO folder, made once for the module."""
    work = tmp_path_factory.mktemp("acro")
    script = work / "session.py"
    script.write_text(ACRO_SESSION, encoding="utf-8")
    folder = work / "finalised"
    result = subprocess.run([str(acro_python), str(script), str(folder)], cwd=work, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def _project(ws: Path, project_id: str, state: str = "approved") -> None:
    """A project registered (requested by one person) and, unless `state` says otherwise, approved
    by another; registered already, it is approved again (as after an edit)."""
    if not (projects_folder(ws) / f"{project_id}.status.json").exists():
        source = ws.parent / f"{project_id}.yaml"
        source.write_text(
            f"id: {project_id}\ntitle: Courts and costs\nlegal_basis: DEA 2017 s.64\napproval_reference: RAP-1\n"
            f"tre: SRS\nexpires: {date.today() + timedelta(days=365)}\nresearchers: [{RESEARCHER}, {COLLEAGUE}]\n"
            "tables:\n  courts__cases:\n    court: keep\n", encoding="utf-8")
        add_project(ws, source, by="requester")
    if state == "approved":
        approve_project(ws, project_id, by="panel")


@pytest.fixture
def ws(tmp_path) -> Path:
    workspace = tmp_path / "ws"
    result = runner.invoke(app, ["init", str(workspace), "--extracts", str(tmp_path / "extracts"), "--no-contracts"])
    assert result.exit_code == 0, result.output
    _project(workspace, "P0001")
    return workspace


def test_acro_flags_the_planted_small_cell_and_dominance_and_passes_the_safe_table(acro_folder):
    results = json.loads((acro_folder / "results.json").read_text())["results"]
    assert results["small_cell"]["status"] == "fail"
    assert results["small_cell"]["fair"]["check_status"]["MinimumThresholdCheck"] == "fail"
    # the three Truro cells (3 fines, 0 and 0) are the ones below the threshold
    assert results["small_cell"]["files"][0]["sdc"]["summary"]["MinimumThresholdCheck"] == 3
    assert results["small_cell"]["outcome"]["fine"]["Truro"].startswith("MinimumThresholdCheck")
    assert results["dominance"]["status"] == "fail"
    assert results["dominance"]["fair"]["check_status"]["NKCheck"] == "fail"
    assert results["dominance"]["outcome"]["fine"]["Leeds"] == "NKCheck; PPercentCheck; "
    assert results["dominance"]["files"][0]["sdc"]["summary"]["NKCheck"] == 1  # only the planted cell
    assert results["safe"]["status"] == "pass"


def test_submit_review_export_keeps_duties_apart_and_releases_only_approved_outputs(ws, acro_folder, tmp_path):
    request = outputs.submit(ws, "P0001", acro_folder, by=RESEARCHER)
    assert request.id == "P0001-0001" and request.submitted_by == RESEARCHER
    assert {n: o.acro_status for n, o in request.outputs.items() if not o.checker_only} == {
        "small_cell": "fail", "dominance": "fail", "safe": "pass"}
    assert request.outputs["dominance"].exception == "costs are public court fees"
    # every file is copied with its SHA-256
    assert request.files["safe_0.csv"] == file_sha256(acro_folder / "safe_0.csv")
    assert request.files == {p.relative_to(acro_folder).as_posix(): file_sha256(p)
                             for p in acro_folder.rglob("*") if p.is_file()}

    with pytest.raises(OutputsError, match="submitted request P0001-0001, so cannot review it"):
        outputs.review(ws, request.id, RESEARCHER, {"safe": Ruling("approve")})
    with pytest.raises(OutputsError, match="is a researcher of project P0001, so cannot check its outputs"):
        outputs.review(ws, "P0001-0001", COLLEAGUE, {"safe": Ruling("approve")})
    with pytest.raises(OutputsError, match="small_cell: ACRO marked it 'fail'; approving it is an exception and "
                                           "needs a written reason"):
        outputs.review(ws, request.id, CHECKER, {"safe": Ruling("approve"), "small_cell": Ruling("approve")})
    with pytest.raises(OutputsError, match="never released"):
        outputs.review(ws, request.id, CHECKER, {"2ndary_risk_summary_csv-DONT_RELEASE": Ruling("approve", "ok")})
    with pytest.raises(OutputsError, match="has no output .smal_cell.; did you mean `small_cell`"):
        outputs.review(ws, request.id, CHECKER, {"smal_cell": Ruling("reject")})
    assert outputs.decisions(request) == []  # a refused review writes nothing, not even its valid part

    outputs.review(ws, request.id, CHECKER, {"safe": Ruling("approve"), "small_cell": Ruling("reject", "Truro < 10")})
    export = outputs.export(ws, request.id, tmp_path / "out", by=CHECKER)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["decisions.json", "safe_0.csv"]
    assert (tmp_path / "out" / "safe_0.csv").read_bytes() == (acro_folder / "safe_0.csv").read_bytes()
    assert export["outputs"]["safe"]["approved_by"] == CHECKER
    assert export["withheld"]["small_cell"] == "reject" and export["withheld"]["dominance"] == "undecided"
    assert json.loads((tmp_path / "out" / "decisions.json").read_text()) == export

    # An exception: the checker approves the dominance table with a written reason. Decisions are
    # appended; the earlier ones stay.
    outputs.review(ws, request.id, CHECKER, {"dominance": Ruling("approve", "costs are public court fees")})
    lines = (request.folder / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(line)["output"] for line in lines] == ["safe", "small_cell", "dominance"]
    assert json.loads(lines[2])["files"] == {"dominance_0.csv": request.files["dominance_0.csv"]}
    export = outputs.export(ws, request.id, tmp_path / "out2", by=CHECKER)
    assert sorted(export["outputs"]) == ["dominance", "safe"]
    assert export["outputs"]["dominance"]["reason"] == "costs are public court fees"
    assert len((request.folder / "exports.jsonl").read_text().splitlines()) == 2
    with pytest.raises(OutputsError, match="not an empty folder"):
        outputs.export(ws, request.id, tmp_path / "out2", by=CHECKER)


def test_a_file_changed_after_submission_is_refused(ws, acro_folder, tmp_path):
    request = outputs.submit(ws, "P0001", acro_folder, by=RESEARCHER)
    outputs.review(ws, request.id, CHECKER, {"safe": Ruling("approve")})
    submitted = request.folder / "submitted" / "small_cell_0.csv"
    submitted.write_text(submitted.read_text().replace(",3", ",30"))  # the small cell "fixed" by hand
    for step in (lambda: outputs.review(ws, request.id, CHECKER, {"safe": Ruling("reject")}),
                 lambda: outputs.export(ws, request.id, tmp_path / "out", by=CHECKER)):
        with pytest.raises(OutputsError, match=r"1 files changed since submission \(small_cell_0.csv"):
            step()
    assert not (tmp_path / "out").exists()
    # a request id is a name, never a pattern that could pick another project's request
    with pytest.raises(OutputsError, match="unknown output request '\\*'; the requests are: P0001-0001"):
        outputs.load_request(ws, "*")


def test_submission_is_refused_for_a_project_not_approved_or_expired_or_an_edited_acro_output(
        ws, acro_folder, tmp_path):
    _project(ws, "P0002", state="requested")
    _project(ws, "P0003")
    expire_project(ws, "P0003", by="panel")
    cases = {
        "P0002": "project P0002 is requested, not approved",
        "P0003": "project P0003 has expired",
        "P0009": "no project 'P0009' in .*; did you mean `P000[123]`",
    }
    for project, message in cases.items():
        with pytest.raises(OutputsError, match=message):
            outputs.submit(ws, project, acro_folder, by=RESEARCHER)
    # the approval covers the YAML as approved: an edit afterwards needs a new approval
    declaration = ws / "governance" / "projects" / "P0001.yaml"
    declaration.write_text(declaration.read_text().replace("court: keep", "court: keep\n    outcome: keep"))
    with pytest.raises(OutputsError, match="edited after its approval"):
        outputs.submit(ws, "P0001", acro_folder, by=RESEARCHER)
    _project(ws, "P0001")
    with pytest.raises(OutputsError, match="'someone' is not a researcher of project P0001"):
        outputs.submit(ws, "P0001", acro_folder, by="someone")

    # ACRO's finalise wrote checksums; an output edited afterwards is not what ACRO checked
    edited = tmp_path / "edited"
    shutil.copytree(acro_folder, edited)
    (edited / "small_cell_0.csv").write_text((edited / "small_cell_0.csv").read_text().replace(",3", ",30"))
    with pytest.raises(OutputsError, match="small_cell_0.csv changed after ACRO's finalise"):
        outputs.submit(ws, "P0001", edited, by=RESEARCHER)
    with pytest.raises(OutputsError, match="has no results.json"):
        outputs.submit(ws, "P0001", tmp_path, by=RESEARCHER)
    assert outputs.list_requests(ws) == []


def test_cli_submit_list_review_export(ws, acro_folder, tmp_path):
    env = {"COLUMNS": "400", "NO_COLOR": "1"}
    base = ["--workspace", str(ws)]
    result = runner.invoke(app, ["outputs", "submit", str(acro_folder), "--project", "P0001", "--by", RESEARCHER,
                                 *base], env=env)
    assert result.exit_code == 0, result.output
    assert "Submitted 5 outputs as request P0001-0001 (ACRO: 1 pass, 2 fail, 2 review)" in result.output

    # no decision given: ACRO's checks per output, as the checker sees them (a process of its own, so
    # that the table is as wide as COLUMNS says)
    shown = subprocess.run([sys.executable, "-m", "datafirst", "outputs", "review", "P0001-0001", *base],
                           capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "MinimumThresholdCheck: fail - 3 cells may need suppressing." in shown.stdout
    assert "NKCheck: fail - 1 cells may need suppressing." in shown.stdout
    assert "costs are public court fees" in shown.stdout  # the researcher's exception request
    assert "never released" in shown.stdout and "undecided" in shown.stdout

    result = runner.invoke(app, ["outputs", "review", "P0001-0001", "--approve", "safe", "--by", RESEARCHER, *base],
                           env=env)
    assert result.exit_code == 2 and "so cannot review it" in result.output
    result = runner.invoke(app, ["outputs", "review", "P0001-0001", "--approve", "dominance", "--by", CHECKER, *base],
                           env=env)
    assert result.exit_code == 2 and "needs a written reason (--reason TEXT)" in result.output
    result = runner.invoke(app, ["outputs", "review", "P0001-0001", "--approve", "safe", "--reject", "small_cell",
                                 "--reject", "dominance", "--by", CHECKER, *base], env=env)
    assert result.exit_code == 0, result.output
    assert "small_cell: rejected by o.checker@tre.example (ACRO: fail)" in result.output

    listed = subprocess.run([sys.executable, "-m", "datafirst", "outputs", "list", "--project", "P0001", *base],
                            capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "P0001-0001" in line)
    assert [cell.strip() for cell in row.split("│")[5:9]] == ["1/2/2", "1", "2", "0"]  # ACRO; approved, rejected, undecided

    result = runner.invoke(app, ["outputs", "export", "P0001-0001", "--out", str(tmp_path / "out"), "--by", CHECKER,
                                 *base], env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["decisions.json", "safe_0.csv"]
    assert ("withheld: small_cell (reject), dominance (reject), 2ndary_risk_summary_json-DONT_RELEASE (for the "
            "checker)") in result.output
