"""Promise 1: `kill -9` at any instant leaves every completed file loadable."""

import json
import pickle
import random
import signal
import subprocess
import time

from conftest import PYTHON
from runforge import read_metrics

WRITER = """
import pickle, sys, runforge
out = sys.argv[1]
resume = len(sys.argv) > 2
run = runforge.Run(trainer="kill", out=out, resume=resume, config={"x": 1}, checkpoint_options={"keep_last": 2})
step = run.start_step
print("ready", flush=True)
while True:
    step += 1
    run.log(step, {"loss": 1.0 / step, "nested": {"a": step, "b": [step] * 20}})
    if step % 3 == 0:
        run.snapshot(step, {"total_loss_value": 1.0 / step, "pad": "x" * 5000})
        run.save_json(f"maps/step_{step % 4}.json", {"step": step, "blocks": list(range(2000))})
    if step % 10 == 0:
        run.checkpoint(step, {"step": step, "blob": bytes(50000)}, pickle.dump)
    run.poll(step)
"""


def _check_loadable(run_dir):
    for path in run_dir.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())  # raises on half a file
    lines = (run_dir / "train.jsonl").read_bytes().split(b"\n")
    for line in lines[:-1]:
        json.loads(line)  # only the last, unterminated line may be incomplete
    steps = [line["step"] for line in read_metrics(run_dir)]
    assert steps == sorted(set(steps)), "resume left duplicate or out-of-order steps"
    index = json.loads((run_dir / "ckpts" / "index_rank0.json").read_text()) if (run_dir / "ckpts").exists() else None
    for entry in (index or {}).get("checkpoints", []):
        with open(run_dir / "ckpts" / entry["file"], "rb") as f:
            assert pickle.load(f)["step"] == entry["step"]
    return steps


def test_sigkill_while_writing_20_times_leaves_every_file_loadable(tmp_dir):
    rng = random.Random(1234)
    run_dir = tmp_dir / "r"
    total_steps = 0
    for attempt in range(20):
        args = [PYTHON, "-c", WRITER, str(run_dir)] + (["resume"] if attempt else [])
        proc = subprocess.Popen(args, cwd=tmp_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(rng.uniform(0.05, 0.35))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        steps = _check_loadable(run_dir)
        total_steps = max(total_steps, steps[-1] if steps else 0)
    assert total_steps > 20, "the writer never got going; the test checked nothing"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "running" and len(info["resumes"]) == 19
