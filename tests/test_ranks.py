"""Promise 5: under torchrun only rank 0 writes logs, images, snapshots; checkpoints carry rank{r}."""

import os
import pickle
import subprocess

from conftest import PYTHON, read_json

RANK = """
import pickle, runforge
with runforge.Run(trainer="ddp", root="runs", config={"world": 2}, steps=3) as run:
    for step in range(1, 4):
        run.log(step, {"loss": 1.0})
        run.image(step, "cam0", [[[0, 0, 0]]])
        run.snapshot(step, {})
        run.poll(step)
    run.checkpoint(3, {"rank": run.rank}, pickle.dump)
print(run.dir)
"""


def test_two_ranks_share_one_run_dir_and_only_rank0_logs(tmp_dir):
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "job42"}
        procs.append(subprocess.Popen([PYTHON, "-c", RANK], cwd=tmp_dir, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    dirs = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(dirs) == 1
    run_dir = tmp_dir / "runs" / os.path.basename(dirs.pop())
    assert len([d for d in (tmp_dir / "runs").iterdir() if d.is_dir()]) == 1
    assert len((run_dir / "train.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in (run_dir / "images").iterdir()) == [f"step_000{s}_cam0.png" for s in (1, 2, 3)]
    assert len(list((run_dir / "stats").iterdir())) == 3
    for rank in (0, 1):
        with open(run_dir / "ckpts" / f"ckpt_3_rank{rank}.pt", "rb") as f:
            assert pickle.load(f) == {"rank": rank}
    assert read_json(run_dir / "run.json")["world_size"] == 2
