"""kill -9 at random instants, resume each time: the log ends with every step exactly once.

The toy trainer logs every step, validates every 7th and checkpoints every 5th; a
checkpoint is listed only once the lines up to its step are on disk, so a resume
never starts past the end of the log (no gap) and drops what came after the
checkpoint (no duplicate).
"""

import collections
import json
import random
import signal
import subprocess
import time

from conftest import PYTHON

STEPS = 800
VAL_EVERY = 7
TRAIN = ["-m", "runforge", "train", "toy", "--steps", str(STEPS), "--log_every", "1", "--ckpt_every", "5",
         "--val_every", str(VAL_EVERY), "--image_every", "1000", "--keep_last", "2", "--step_sleep", "0.01",
         "--no_tensorboard", "--progress", "lines"]


def _lines(run_dir, killed=False):
    """The lines of train.jsonl; right after a kill (`killed`) a last line without its newline is skipped, as
    every reader skips a line a writer has not finished (resume cuts it)."""
    text = (run_dir / "train.jsonl").read_text()
    if killed and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _wait_until_logged_past(run_dir, step, proc, timeout=120):
    """Block until train.jsonl holds a training line past `step` (the loop is running) or `proc` ends.

    The random kill is armed only then, so a slow start (a loaded CI machine importing the package)
    cannot turn every attempt into a kill before the first step. A line still being appended is skipped.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            text = (run_dir / "train.jsonl").read_text()
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            try:
                if "loss" in (entry := json.loads(line)) and entry["step"] > step:
                    return
            except json.JSONDecodeError:
                continue
        time.sleep(0.02)
    assert proc.poll() is not None, f"no step past {step} logged within {timeout} s"


def test_random_sigkills_then_resume_keep_every_step_exactly_once(tmp_dir):
    rng = random.Random(20261202)
    run_dir = tmp_dir / "toy"
    kills = 0
    last_logged = 0
    for attempt in range(40):
        args = [PYTHON, *TRAIN, "--out", str(run_dir)] + (["--resume"] if attempt else [])
        proc = subprocess.Popen(args, cwd=tmp_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_until_logged_past(run_dir, last_logged, proc)
        time.sleep(rng.uniform(0.0, 0.8))  # somewhere in the loop, checkpoint writes included
        if proc.poll() is not None:
            _, stderr = proc.communicate()
            assert proc.returncode == 0, stderr
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
        index = json.loads((run_dir / "ckpts" / "index_rank0.json").read_text()) if (run_dir / "ckpts" / "index_rank0.json").exists() else {"checkpoints": []}
        listed = [entry["step"] for entry in index["checkpoints"]]
        logged = [line["step"] for line in _lines(run_dir, killed=True) if "loss" in line]
        last_logged = logged[-1] if logged else 0
        if listed:  # the invariant the fix is about, checked after every kill
            assert logged and logged[-1] >= max(listed), f"checkpoint {max(listed)} is ahead of the log ({logged[-1:]})"
    else:
        result = subprocess.run([PYTHON, *TRAIN, "--out", str(run_dir), "--resume"], cwd=tmp_dir,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert kills >= 5, "the run finished before it was killed often enough to test anything"

    lines = _lines(run_dir)
    train_steps = [line["step"] for line in lines if "loss" in line]
    assert train_steps == list(range(1, STEPS + 1))
    val_steps = collections.Counter(line["step"] for line in lines if "val" in line)
    expected_val = set(range(VAL_EVERY, STEPS + 1, VAL_EVERY)) | {STEPS}
    assert set(val_steps) == expected_val and set(val_steps.values()) == {1}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and len(info["resumes"]) == kills
    # nothing a kill left behind survives the resumes: only the listed checkpoints and the index
    index = json.loads((run_dir / "ckpts" / "index_rank0.json").read_text())
    on_disk = sorted(p.name for p in (run_dir / "ckpts").iterdir())
    assert on_disk == sorted([e["file"] for e in index["checkpoints"]] + ["index_rank0.json"])
