"""The pieces `Run` is built from, each on its own: opening a directory, the controller, the event log."""

import json
import os
import pickle
import signal
import threading
import time

import pytest

import runforge
from runforge.errors import BadInputError, CheckpointWriteError, RunforgeError
from runforge.run import control
from runforge.run.controller import Control, Controller
from runforge.run.events import EventLog
from runforge.run.checkpoints import CheckpointManager
from runforge.run.opening import Opening, OpenRequest, open_run, plan_resume

from conftest import read_json


def _tree(folder):
    """Every file and folder below `folder` with its bytes and modification time: what 'untouched' means."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), folder)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = (f.read(), os.stat(path).st_mtime_ns)
    return found


def _wait(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _run_with_checkpoint(tmp_dir, checkpoint_step=10, logged=(5, 10, 15, 20)):
    """A finished run in tmp_dir/r: one checkpoint, train.jsonl lines for `logged` (time = step / 10)."""
    opening = open_run(OpenRequest(config={"lr": 0.1}, out=tmp_dir / "r"))
    opening.checkpoints.write(checkpoint_step, {"weights": [1, 2, 3]}, pickle.dump)
    lines = "".join(json.dumps({"step": s, "time": s / 10, "loss": 1.0 / s}) + "\n" for s in logged)
    (opening.dir / "train.jsonl").write_text(lines)
    return opening.dir


# ------------------------------------------------------------------ opening


def test_opening_a_new_run_records_it_and_starts_at_step_zero(tmp_dir):
    opening = open_run(OpenRequest(trainer="toy", config={"lr": 0.1}, out=tmp_dir / "fresh", step_max=50))
    assert opening.dir == tmp_dir / "fresh" and opening.dir.is_absolute()
    assert not opening.resumed and opening.start_step == 0 and opening.resume_state is None
    info = read_json(opening.dir / "run.json")
    assert info == json.loads(json.dumps(opening.info))
    assert info["trainer"] == "toy" and info["step_max"] == 50 and info["resumes"] == []
    assert info["name"] == "fresh" and info["id"] == opening.id
    assert read_json(opening.dir / "config.json") == {"lr": 0.1}
    assert (opening.dir / "control").is_dir()
    assert "started (toy)" in (opening.dir / "events.log").read_text()


def test_opening_refuses_a_bad_name_before_creating_anything(tmp_dir):
    with pytest.raises(BadInputError, match="--name"):
        open_run(OpenRequest(name="../escape", root=tmp_dir / "runs"))
    assert not (tmp_dir / "runs").exists()


def test_resuming_cuts_train_jsonl_at_the_checkpoint_and_records_the_resume(tmp_dir):
    run_dir = _run_with_checkpoint(tmp_dir)
    opening = open_run(OpenRequest(config={"lr": 0.2}, out=run_dir, resume=True, step_max=40, load_checkpoint=_load))
    assert opening.resumed and opening.start_step == 10
    assert opening.resume_state == {"weights": [1, 2, 3]}
    assert opening.resume_checkpoint.path.name == "ckpt_10_rank0.pt"
    assert opening.dropped_lines == 2 and opening.elapsed == 1.0  # the clock goes on from step 10's time
    assert [line["step"] for line in runforge.read_metrics(run_dir)] == [5, 10]
    resume = read_json(run_dir / "run.json")["resumes"][-1]
    assert resume["step"] == 10 and resume["dropped_lines"] == 2
    assert resume["config"] == "config.resume-1.json"  # lr changed: the old config.json stays as it was
    assert read_json(run_dir / "config.json") == {"lr": 0.1}
    assert read_json(run_dir / "config.resume-1.json") == {"lr": 0.2}
    assert read_json(run_dir / "run.json")["step_max"] == 40


def test_a_checkpoint_that_cannot_be_loaded_is_refused_and_the_run_is_untouched(tmp_dir):
    run_dir = _run_with_checkpoint(tmp_dir)
    before = _tree(run_dir)

    def damaged(path):
        raise EOFError("Ran out of input\nsecond line")

    with pytest.raises(BadInputError) as raised:
        open_run(OpenRequest(config={"lr": 0.2}, out=run_dir, resume=True, load_checkpoint=damaged))
    assert raised.value.path.endswith("ckpt_10_rank0.pt")
    assert "EOFError: Ran out of input" in str(raised.value) and "second line" not in str(raised.value)
    assert _tree(run_dir) == before


def test_a_damaged_checkpoint_index_is_refused_and_the_run_is_untouched(tmp_dir):
    run_dir = _run_with_checkpoint(tmp_dir)
    (run_dir / "ckpts" / "index_rank0.json").write_text('{"checkpoints": [{"step": "ten"}]')
    before = _tree(run_dir)
    with pytest.raises(BadInputError, match="index_rank0.json"):
        open_run(OpenRequest(out=run_dir, resume=True, load_checkpoint=_load))
    assert _tree(run_dir) == before


def test_resuming_from_a_file_the_index_does_not_list_is_refused_and_the_run_is_untouched(tmp_dir):
    run_dir = _run_with_checkpoint(tmp_dir)
    stray = run_dir / "ckpts" / "ckpt_99_rank0.pt"
    stray.write_bytes(pickle.dumps({"weights": []}))
    before = _tree(run_dir)
    with pytest.raises(BadInputError, match="not a checkpoint listed"):
        open_run(OpenRequest(resume=stray, load_checkpoint=_load))
    assert _tree(run_dir) == before


def test_planning_a_resume_only_reads(tmp_dir):
    run_dir = _run_with_checkpoint(tmp_dir, checkpoint_step=15)
    before = _tree(run_dir)
    opening = Opening(dir=run_dir, name="r", id="x", resumed=True, checkpoints=CheckpointManager(run_dir),
                      events=EventLog(run_dir))
    plan = plan_resume(opening, True, _load)
    assert plan.start_step == 15 and plan.state == {"weights": [1, 2, 3]}
    assert plan.truncation.dropped == 1 and plan.info["name"] == "r"
    assert _tree(run_dir) == before


# ------------------------------------------------------------------ controller


def _controller(tmp_dir, **kwargs):
    (tmp_dir / "control").mkdir(exist_ok=True)
    events = []
    controller = Controller(tmp_dir, event=lambda message, level="info", console=False: events.append(message),
                            **kwargs)
    return controller, events


def test_a_pause_command_holds_poll_until_a_resume_command(tmp_dir):
    controller, events = _controller(tmp_dir, step_max=10)
    pause = control.send(tmp_dir, "pause")
    result = {}
    poller = threading.Thread(target=lambda: result.update(ctl=controller.poll(3)), daemon=True)
    poller.start()
    _wait(lambda: controller.paused, "the pause")
    time.sleep(0.2)
    assert poller.is_alive(), "poll returned while the run was paused"
    fields = controller.status_fields()
    assert fields["training_paused"] and not fields["training_active"] and fields["step_current"] == 3
    assert control.taken_step(pause) == 3

    control.send(tmp_dir, "resume")
    poller.join(timeout=10)
    assert not poller.is_alive()
    assert result["ctl"] == Control() and not controller.paused
    assert events == ["training paused", "training resumed"]
    assert not list((tmp_dir / "control").glob("*.cmd"))


def test_validate_while_paused_runs_at_the_held_step_and_save_comes_back_after_resume(tmp_dir):
    controller, _ = _controller(tmp_dir)
    validated = []
    control.send(tmp_dir, "pause")
    control.send(tmp_dir, "validate")
    result = {}
    poller = threading.Thread(
        target=lambda: result.update(ctl=controller.poll(5, on_validate=lambda: validated.append(controller.step))),
        daemon=True)
    poller.start()
    _wait(lambda: validated, "the validation")
    control.send(tmp_dir, "save")
    control.send(tmp_dir, "resume")
    poller.join(timeout=10)
    assert validated == [5]
    assert result["ctl"] == Control(save=True)


def test_the_stop_command_comes_back_as_stop(tmp_dir):
    controller, events = _controller(tmp_dir)
    control.send(tmp_dir, "stop")
    assert controller.poll(1) == Control(stop=True)
    assert controller.stop_requested and controller.stop_signal is None
    assert events == ["stopping after this step (stop command)"]


def test_sigterm_after_the_first_poll_asks_for_a_graceful_stop_and_a_second_signal_stops_at_once(tmp_dir):
    controller, events = _controller(tmp_dir)
    previous = signal.getsignal(signal.SIGTERM)
    controller.start(handle_signals=True)
    try:
        assert signal.getsignal(signal.SIGTERM) != previous
        controller.poll(1)
        signal.raise_signal(signal.SIGTERM)
        assert controller.stop_requested and controller.stop_signal == signal.SIGTERM
        assert controller.poll(2) == Control(stop=True)
        assert events == ["stopping after this step (signal SIGTERM)"]
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert controller.stop_signal == signal.SIGINT
    finally:
        controller.close()
    assert signal.getsignal(signal.SIGTERM) == previous


def test_a_signal_before_any_poll_exits_like_python_would(tmp_dir):
    controller, _ = _controller(tmp_dir)
    controller.start(handle_signals=True)
    try:
        with pytest.raises(SystemExit) as raised:
            signal.raise_signal(signal.SIGTERM)
        assert raised.value.code == 128 + signal.SIGTERM
        assert controller.stop_signal == signal.SIGTERM
    finally:
        controller.close()


def test_iteration_duration_and_eta_follow_the_polls_and_a_pause_is_not_an_iteration(tmp_dir):
    now = [0.0]
    controller, _ = _controller(tmp_dir, step_max=100, clock=lambda: now[0])
    controller.poll(0)
    now[0] = 5.0
    controller.poll(10)
    assert controller.iteration_duration == pytest.approx(0.5)
    assert controller.status_fields()["eta_total_seconds"] == pytest.approx(45.0)
    now[0] = 6.0
    controller.poll(20)
    assert controller.iteration_duration == pytest.approx(0.9 * 0.5 + 0.1 * 0.1)
    controller.step_max = 20
    assert controller.eta() == 0


def test_status_json_is_rewritten_only_when_something_changed_or_when_forced(tmp_dir):
    controller, _ = _controller(tmp_dir, step_max=10)
    controller.write_status("running")
    assert read_json(tmp_dir / "status.json")["step_current"] == 0
    controller.step = 7
    controller.write_status("running")  # within the second and nothing marked as changed
    assert read_json(tmp_dir / "status.json")["step_current"] == 0
    with controller.validating():
        controller.write_status("running")
        assert read_json(tmp_dir / "status.json")["validation_running"] is True
    controller.close()
    controller.write_status("finished", force=True)
    status = read_json(tmp_dir / "status.json")
    assert status["step_current"] == 7 and status["status"] == "finished" and status["training_active"] is False


def test_ranks_other_than_0_read_no_commands(tmp_dir):
    controller, _ = _controller(tmp_dir, is_main=False)
    command = control.send(tmp_dir, "pause")
    assert controller.poll(1) == Control() and not controller.paused
    assert command.exists()


# ------------------------------------------------------------------ the rest


def test_the_event_log_of_another_rank_writes_nothing(tmp_dir, capsys):
    EventLog(tmp_dir, enabled=False).write("hello", "warning")
    assert not (tmp_dir / "events.log").exists() and capsys.readouterr().err == ""
    EventLog(tmp_dir).write("disk full", "warning")
    assert (tmp_dir / "events.log").read_text().endswith(" WARNING disk full\n")
    assert capsys.readouterr().err == "disk full\n"


def test_checkpoint_write_error_is_a_runforge_error_ending_with_exit_code_1():
    assert issubclass(CheckpointWriteError, RunforgeError) and CheckpointWriteError.exit_code == 1
    assert runforge.run.CheckpointWriteError is CheckpointWriteError


def test_run_puts_the_pieces_together(tmp_dir):
    run_dir = _run_with_checkpoint(tmp_dir)
    with runforge.Run(out=run_dir, resume=True, load_checkpoint=_load, config={"lr": 0.1}, tensorboard=False,
                      handle_signals=False, steps=20) as run:
        assert run.start_step == 10 and run.resume_state == {"weights": [1, 2, 3]}
        assert run.resume_checkpoint.step == 10 and run.dir == run_dir
        run.step_max = 30
        assert run.status_fields()["step_max"] == 30
        run.log(11, {"loss": 0.5})
    assert read_json(run_dir / "run.json")["step"] == 11
    assert read_json(run_dir / "status.json")["status"] == "finished"
    assert [line["step"] for line in runforge.read_metrics(run_dir)] == [5, 10, 11]


def test_staged_files_get_fresh_private_names_beside_the_target(tmp_path):
    import stat

    from runforge.run.files import _create_beside, stage_with

    fds = [_create_beside(tmp_path, ".x.", ".tmp") for _ in range(50)]
    names = {name for _, name in fds}
    for fd, name in fds:
        os.close(fd)
        assert os.path.dirname(name) == str(tmp_path) and os.path.basename(name).startswith(".x.")
        assert name.endswith(".tmp") and stat.S_IMODE(os.stat(name).st_mode) == 0o600
    assert len(names) == 50
    staged = stage_with(tmp_path / "a.json", lambda f: f.write(b"{}"))
    assert staged.parent == tmp_path and staged.read_bytes() == b"{}" and stat.S_IMODE(staged.stat().st_mode) == 0o644


def test_run_ids_and_the_host_name_keep_their_form():
    import re
    import socket

    from runforge.run import system
    from runforge.run.naming import new_id

    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200 and all(re.fullmatch(r"[a-z0-9]{8}", i) for i in ids)
    assert system.host() == socket.gethostname()
