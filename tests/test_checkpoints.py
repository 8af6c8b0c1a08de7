"""Retention keeps last K + every M + best, and never touches files it did not write."""

import pickle

import runforge
from runforge.run import CheckpointManager

from conftest import read_json


def test_retention_keeps_last_every_and_best_only(tmp_dir):
    other = tmp_dir / "runs" / "other"
    (other / "ckpts").mkdir(parents=True)
    (other / "ckpts" / "ckpt_5_rank0.pt").write_bytes(b"other run")
    metrics = {5: 0.9, 10: 0.8, 15: 0.1, 20: 0.7, 25: 0.6, 30: 0.5, 35: 0.4, 40: 0.3}
    with runforge.Run(out=tmp_dir / "runs" / "mine",
                      checkpoint_options={"keep_last": 2, "keep_every": 20}) as run:
        (run.dir / "ckpts").mkdir()
        (run.dir / "ckpts" / "ckpt_25_rank0.pt.bak").write_bytes(b"user's copy")
        (run.dir / "ckpts" / "ckpt_999_rank0.pt").write_bytes(b"not in the index")
        for step, metric in metrics.items():
            run.checkpoint(step, {"step": step}, pickle.dump, metric=metric)
    folder = run.dir / "ckpts"
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(["ckpt_15_rank0.pt", "ckpt_20_rank0.pt", "ckpt_35_rank0.pt", "ckpt_40_rank0.pt",
                           "ckpt_25_rank0.pt.bak", "ckpt_999_rank0.pt", "index_rank0.json"])
    assert [e["step"] for e in read_json(folder / "index_rank0.json")["checkpoints"]] == [15, 20, 35, 40]
    assert (other / "ckpts" / "ckpt_5_rank0.pt").read_bytes() == b"other run"
    manager = CheckpointManager(run.dir, keep_last=2)
    assert manager.latest().step == 40 and manager.best().step == 15 and manager.best().metric == 0.1
    with open(manager.latest().path, "rb") as f:
        assert pickle.load(f) == {"step": 40}


def test_keep_last_none_keeps_everything_and_max_mode_picks_the_highest(tmp_dir):
    with runforge.Run(out="r", checkpoint_options={"keep_last": None, "mode": "max",
                                                   "pattern": "step_{step:04d}.pkl"}) as run:
        for step in (1, 2, 3):
            run.checkpoint(step, step, pickle.dump, metric=float(step % 3))
    assert sorted(p.name for p in (run.dir / "ckpts").glob("*.pkl")) == ["step_0001.pkl", "step_0002.pkl",
                                                                          "step_0003.pkl"]
    assert run.checkpoints.best().step == 2


def test_a_fixed_checkpoint_name_keeps_one_entry_and_resumes_from_its_step(tmp_dir):
    with runforge.Run(out="r", checkpoint_options={"pattern": "last.pt", "keep_last": 3}) as run:
        for step in (10, 20, 30):
            run.log(step, {"loss": 1.0})
            run.checkpoint(step, {"step": step}, pickle.dump)
    index = read_json(run.dir / "ckpts" / "index_rank0.json")["checkpoints"]
    assert index == [{"step": 30, "file": "last.pt", "metric": None}]
    with runforge.Run(resume=run.dir / "ckpts" / "last.pt", checkpoint_options={"pattern": "last.pt"}) as again:
        assert again.start_step == 30
    assert [line["step"] for line in runforge.read_metrics(run.dir)] == [10, 20, 30]
