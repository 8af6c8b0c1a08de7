"""Readers: crash detection from heartbeat + pid, list_runs, and the live status while a run waits."""

import json
import signal
import subprocess
import time

import runforge
from runforge.run.read import effective_status, summarize

from conftest import PYTHON, read_json, wait_for

SLEEPER = """
import time, runforge
with runforge.Run(out="r", steps=100) as run:
    run.poll(1)
    print("ready", flush=True)
    time.sleep(60)
"""


def test_killed_run_shows_crashed_once_its_heartbeat_is_stale_and_a_live_one_running(tmp_dir):
    proc = subprocess.Popen([PYTHON, "-c", SLEEPER], cwd=tmp_dir, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        run_dir = tmp_dir / "r"
        def heartbeat():
            try:
                return read_json(run_dir / "status.json")["last_update_time"]
            except FileNotFoundError:
                return None

        first = wait_for(heartbeat, what="status.json")
        # the writer thread keeps the heartbeat going while the training thread is busy elsewhere
        wait_for(lambda: heartbeat() > first, timeout=3, what="a second heartbeat")
        info, status = read_json(run_dir / "run.json"), read_json(run_dir / "status.json")
        later = time.time() + 120
        assert effective_status(info, status, now=later) == "running"  # stale, but the pid is alive
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert effective_status(info, status) == "running"  # heartbeat still fresh
        assert effective_status(info, status, now=later) == "crashed"
        # what `runforge runs` shows once the heartbeat is stale: nothing is left to refresh it
        (run_dir / "status.json").write_text(json.dumps({**status, "last_update_time": time.time() - 120}))
        assert summarize(run_dir).status == "crashed"
    finally:
        proc.kill()
        proc.communicate()


def test_list_runs_newest_first_with_status_and_step(tmp_dir):
    for index in range(3):
        with runforge.Run(trainer=f"t{index}", root="runs", steps=10) as run:
            run.poll(index + 1)
        time.sleep(1.1)  # created_at has one-second resolution
    runs = runforge.list_runs("runs")
    assert [r.trainer for r in runs] == ["t2", "t1", "t0"]
    assert [r.step for r in runs] == [3, 2, 1] and {r.status for r in runs} == {"finished"}
    assert runforge.list_runs(runs[0].dir)[0].id == runs[0].id  # a run dir is its own root
    assert runforge.list_runs("nothing-here") == []


def test_snapshot_carries_the_live_progress_fields(tmp_dir):
    with runforge.Run(out="r", steps=50) as run:
        for step in range(1, 11):
            time.sleep(0.002)
            run.poll(step, epoch=2, epoch_step=step, epoch_step_total=25)
        with run.validating():
            path = run.snapshot(10, {"validation_loss_value": 0.5})
    data = read_json(path)
    assert data["step_current"] == 10 and data["step_max"] == 50 and data["epoch_num"] == 2
    assert data["epoch_step_total"] == 25 and data["validation_running"] is True
    assert data["iteration_duration"] > 0.001 and data["eta_total_formatted"].count(":") == 2
    assert data["validation_loss_value"] == 0.5 and isinstance(data["ram_usage_gb"], float)
