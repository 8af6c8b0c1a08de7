"""A run whose run.json says running but whose process is gone is shown as crashed, with how to resume it."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from runforge.cli import main
from runforge.monitor.app import create_app
from monitor_helpers import LAST_ETA, edit_info, make_crashed, make_run, running_info


@pytest.fixture
def crashed(tmp_path):
    return make_crashed(tmp_path / "runs")


def test_the_run_page_api_shows_crashed_without_eta_and_how_to_resume(crashed):
    with TestClient(create_app([crashed.parent], warm_runs=0)) as client:
        detail = client.get("/api/run/crashed").json()
        summary, status = detail["summary"], detail["status"]
        assert summary["status"] == "crashed" and summary["eta"] is None
        assert summary["resume"] == f"runforge train toy --resume {crashed}"
        assert status["status"] == "crashed" and status["training_active"] is False
        assert status["eta_total_formatted"] is None and status["eta_epoch_formatted"] is None
        assert status["step_current"] == 12  # where it stopped is still shown
        [row] = client.get("/api/runs").json()["runs"]
        assert (row["status"], row["eta"], row["resume"]) == ("crashed", None, summary["resume"])
        response = client.post("/api/run/crashed/control/pause", headers={"Content-Type": "application/json"},
                               content=b"{}")
        assert response.status_code == 409 and "crashed" in response.json()["error"]
    assert not list((crashed / "control").glob("*.cmd"))


def test_a_running_run_is_shown_as_running(tmp_path):
    run_dir = make_run(tmp_path / "runs", "live", steps=20)
    edit_info(run_dir, **running_info())
    with TestClient(create_app([run_dir.parent], warm_runs=0)) as client:
        detail = client.get("/api/run/live").json()
    assert detail["summary"]["status"] == "running" and detail["summary"]["resume"] is None
    assert detail["status"] == json.loads((run_dir / "status.json").read_text())  # shown as written


def test_runs_lists_it_as_crashed_with_no_eta(crashed, capsys):
    assert main(["runs", str(crashed.parent), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["status"], row["eta"]) == ("crashed", None)
    assert row["resume"] == f"runforge train toy --resume {crashed}"
    assert main(["runs", str(crashed.parent)]) == 0
    table = capsys.readouterr().out
    assert "crashed" in table and "running" not in table and LAST_ETA not in table


def test_ctl_refuses_it_and_says_how_to_resume(crashed, capsys):
    before = sorted(p.name for p in crashed.rglob("*"))
    assert main(["ctl", str(crashed), "pause"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "crashed" in err[0] and f"resume with: runforge train toy --resume {crashed}" in err[0]
    assert sorted(p.name for p in crashed.rglob("*")) == before


def test_a_run_of_your_own_script_is_resumed_in_the_script(tmp_path):
    run_dir = make_crashed(tmp_path / "runs")
    edit_info(run_dir, trainer="mine")
    with TestClient(create_app([run_dir.parent], warm_runs=0)) as client:
        resume = client.get("/api/run/crashed").json()["summary"]["resume"]
    assert resume == f"runforge.Run(out={str(run_dir)!r}, resume=True) in your script"
