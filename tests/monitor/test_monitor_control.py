"""`runforge ctl` steering a real toy training process: pause, resume, validate, save, stop."""

from __future__ import annotations

import json
import re
import time

from runforge.cli import main

from monitor_helpers import make_run, read_status, start_toy, wait_for


def _step(run_dir):
    return read_status(run_dir).get("step_current", 0)


def _ctl(run_dir, command, capsys):
    """`runforge ctl RUN COMMAND`: the step it says the trainer took the command at, which must be
    the step of that command's receipt."""
    assert main(["ctl", str(run_dir), command]) == 0
    out = capsys.readouterr().out
    match = re.fullmatch(rf"{command}: taken by live at step (\d+)\n", out)
    assert match, out
    receipts = [json.loads(p.read_text()) for p in (run_dir / "control").glob(f"*-{command}.taken")]
    assert {"command": command, "step": int(match.group(1))} in receipts
    return int(match.group(1))


def test_pause_resume_validate_save_stop_on_a_live_run(tmp_path, capsys):
    run_dir = tmp_path / "live"
    trainer = start_toy(run_dir)
    try:
        wait_for(lambda: _step(run_dir) > 10, what="the trainer to start")

        sent = time.monotonic()
        held = _ctl(run_dir, "pause", capsys)
        wait_for(lambda: read_status(run_dir).get("training_paused") is True, timeout=1.0,
                 what="status.json to show the pause within a second")
        assert time.monotonic() - sent < 1.5
        time.sleep(1.2)  # status.json is rewritten every second while paused
        status = read_status(run_dir)
        assert status["step_current"] == held and status["training_active"] is False  # held where it took it

        assert _ctl(run_dir, "resume", capsys) == held
        wait_for(lambda: _step(run_dir) > held + 5, what="training to continue after resume")
        assert read_status(run_dir)["training_paused"] is False

        def snapshots():
            return {int(p.stem.split("_")[1]) for p in (run_dir / "stats").glob("stats_*.json")}

        before = snapshots()
        taken = _ctl(run_dir, "validate", capsys)
        made = wait_for(lambda: snapshots() - before, what="a snapshot after validate")
        assert taken in made and taken % 500  # validated at the step it took the command, not on schedule

        def checkpoints():
            return {int(p.name.split("_")[1]) for p in (run_dir / "ckpts").glob("ckpt_*_rank0.pkl")}

        before = checkpoints()
        taken = _ctl(run_dir, "save", capsys)
        saved = wait_for(lambda: checkpoints() - before, what="a checkpoint after save")
        assert taken in saved and taken % 500

        stopped = _ctl(run_dir, "stop", capsys)
        assert trainer.wait(timeout=20) == 0
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and info["step"] == stopped < 3000
    assert info["step"] in checkpoints()  # stopping saved a checkpoint at the last step
    assert "stop command" in (run_dir / "events.log").read_text()


def test_ctl_refuses_a_finished_run_and_an_unknown_command(tmp_path, capsys):
    run_dir = make_run(tmp_path, "done", steps=3)
    assert main(["ctl", str(run_dir), "pause"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finished, not running" in err[0] and str(run_dir) in err[0]
    assert main(["ctl", str(run_dir), "explode"]) == 2
    assert "unknown command 'explode'" in capsys.readouterr().err
    assert main(["ctl", str(tmp_path / "nope"), "pause"]) == 2
    assert not (run_dir / "control").exists() or not list((run_dir / "control").iterdir())
