"""Promises 4 and 6 through the real CLI: resume after a crash, graceful stop on SIGTERM and on `stop`."""

import json
import pickle
import signal
import subprocess

from conftest import read_json, runforge_cmd, run_cli, wait_for
from runforge import read_metrics
from runforge.run import control

LIVE = ["--steps", "400", "--step_sleep", "0.01", "--log_every", "5", "--ckpt_every", "50", "--val_every", "100"]


def _start(tmp_dir, out, *extra):
    return subprocess.Popen(runforge_cmd("train", "toy", "--out", out, *LIVE, *extra), cwd=tmp_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _status_step(run_dir):
    try:
        return read_json(run_dir / "status.json").get("step_current") or 0
    except (FileNotFoundError, ValueError):
        return 0


def _logged_step(run_dir):
    return max((line["step"] for line in read_metrics(run_dir)), default=0)  # [] before the run exists


def _final_params(run_dir):
    index = read_json(run_dir / "ckpts" / "index_rank0.json")["checkpoints"]
    with open(run_dir / "ckpts" / index[-1]["file"], "rb") as f:
        return index[-1]["step"], pickle.load(f)["params"]


def test_resume_after_kill_drops_later_lines_and_reaches_the_uninterrupted_state(tmp_dir):
    assert run_cli("train", "toy", "--out", "straight", *LIVE, "--step_sleep", "0", cwd=tmp_dir).returncode == 0

    run_dir = tmp_dir / "crashed"
    proc = _start(tmp_dir, "crashed")
    # Killed as soon as lines past the checkpoint at 100 are on disk: 45 steps before the next checkpoint,
    # so a loaded machine cannot let the run reach it between the look and the kill.
    wait_for(lambda: _logged_step(run_dir) >= 105, what="step 105 in train.jsonl")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    logged = [line["step"] for line in read_metrics(run_dir)]
    latest = read_json(run_dir / "ckpts" / "index_rank0.json")["checkpoints"][-1]["step"]
    assert max(logged) > latest, "the kill came right after a checkpoint; nothing to truncate"

    result = run_cli("train", "toy", "--out", "crashed", "--resume", *LIVE, "--step_sleep", "0", cwd=tmp_dir)
    assert result.returncode == 0, result.stderr
    lines = read_metrics(run_dir)
    train_steps = [line["step"] for line in lines if "loss" in line]
    assert train_steps == list(range(5, 401, 5)), "duplicate or missing steps after resume"
    times = [line["time"] for line in lines]
    assert times == sorted(times)
    assert _final_params(run_dir) == _final_params(tmp_dir / "straight")

    info = read_json(run_dir / "run.json")
    assert info["status"] == "finished" and info["resumes"][0]["step"] == latest
    assert info["resumes"][0]["dropped_lines"] > 0
    assert info["resumes"][0]["config"] == "config.resume-1.json"  # --step_sleep changed
    assert read_json(run_dir / "config.resume-1.json")["step_sleep"] == 0.0
    assert read_json(run_dir / "config.json")["step_sleep"] == 0.01


def test_resume_with_a_changed_config_keeps_config_json_and_writes_the_change_beside_it(tmp_dir):
    assert run_cli("train", "toy", "--out", "r", "--preset", "tiny", cwd=tmp_dir).returncode == 0
    original = (tmp_dir / "r" / "config.json").read_text()
    result = run_cli("train", "toy", "--out", "r", "--resume", "--steps", "60", cwd=tmp_dir)
    assert result.returncode == 0, result.stderr
    assert (tmp_dir / "r" / "config.json").read_text() == original
    changed = read_json(tmp_dir / "r" / "config.resume-1.json")
    assert changed["steps"] == 60 and changed["log_every"] == 5  # the rest came from the run's own config
    assert read_metrics(tmp_dir / "r")[-1]["step"] == 60


def test_sigterm_checkpoints_marks_interrupted_and_exits_143(tmp_dir):
    run_dir = tmp_dir / "r"
    proc = _start(tmp_dir, "r")
    wait_for(lambda: _status_step(run_dir) >= 20, what="step 20")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    info = read_json(run_dir / "run.json")
    assert info["status"] == "interrupted"
    step, _ = _final_params(run_dir)
    assert step == info["step"] and 20 <= step < 400
    assert read_json(run_dir / "status.json")["training_active"] is False
    assert "stopping after this step (signal SIGTERM)" in (run_dir / "events.log").read_text()


def test_stop_command_ends_gracefully_with_exit_0(tmp_dir):
    run_dir = tmp_dir / "r"
    proc = _start(tmp_dir, "r")
    wait_for(lambda: _status_step(run_dir) >= 10, what="step 10")
    control.send(run_dir, "stop")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    info = read_json(run_dir / "run.json")
    assert info["status"] == "interrupted" and _final_params(run_dir)[0] == info["step"] < 400


def test_pause_holds_the_step_and_resume_continues(tmp_dir):
    run_dir = tmp_dir / "r"
    proc = _start(tmp_dir, "r")
    try:
        wait_for(lambda: _status_step(run_dir) >= 10, what="step 10")
        control.send(run_dir, "pause")
        status = wait_for(lambda: (s := read_json(run_dir / "status.json"))["training_paused"] and s, timeout=2,
                          what="training_paused in status.json within 1 s (+ one poll)")
        held = status["step_current"]
        validate = control.send(run_dir, "validate")
        snapshot = wait_for(lambda: (run_dir / "stats" / f"stats_{held}.json").exists() and
                            json.loads((run_dir / "stats" / f"stats_{held}.json").read_text()),
                            what="a validation while paused")
        assert snapshot["step_current"] == held and snapshot["training_paused"] is True
        assert control.taken_step(validate) == held
        wait_for(lambda: read_json(run_dir / "status.json")["last_update_time"] > status["last_update_time"] + 1,
                 what="the heartbeat while paused")
        assert _status_step(run_dir) == held and read_json(run_dir / "status.json")["training_paused"]
        control.send(run_dir, "resume")
        wait_for(lambda: _status_step(run_dir) > held + 5, what="training to continue")
    finally:
        control.send(run_dir, "stop")
        proc.communicate(timeout=30)
