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


def test_a_kill_between_the_two_phases_of_a_fixed_name_checkpoint_adopts_the_staged_file(tmp_dir, monkeypatch):
    import runforge.run.checkpoints as checkpoints

    manager = CheckpointManager(tmp_dir / "r", pattern="last.pt")
    manager.write(10, {"step": 10}, pickle.dump)

    def killed(staged, path):
        raise KeyboardInterrupt  # the process dies after the index names the staged file, before the rename

    monkeypatch.setattr(checkpoints, "commit", killed)
    try:
        manager.write(20, {"step": 20}, pickle.dump)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    with open(tmp_dir / "r" / "ckpts" / "last.pt", "rb") as f:
        assert pickle.load(f) == {"step": 10}  # the old file is still in place
    again = CheckpointManager(tmp_dir / "r", pattern="last.pt")
    latest = again.latest()
    assert latest.step == 20 and latest.path.name.startswith(".last.pt.")  # read from the staged file
    assert again.recover() == [f"adopted {latest.path.name} as last.pt (step 20)"]
    assert again.entries() == [{"step": 20, "file": "last.pt", "metric": None}]
    with open(again.latest().path, "rb") as f:
        assert pickle.load(f) == {"step": 20}
    assert sorted(p.name for p in (tmp_dir / "r" / "ckpts").iterdir()) == ["index_rank0.json", "last.pt"]


def test_recover_removes_orphans_and_unfinished_files_of_this_rank_only(tmp_dir):
    import os
    import time

    manager = CheckpointManager(tmp_dir / "r", rank=0)
    folder = tmp_dir / "r" / "ckpts"
    folder.mkdir(parents=True)
    (folder / "ckpt_1_rank0.pt").write_bytes(b"a user's file, older than the index")
    old = time.time() - 100
    os.utime(folder / "ckpt_1_rank0.pt", (old, old))
    manager.write(5, {"step": 5}, pickle.dump)
    for name in ("ckpt_10_rank0.pt", ".ckpt_15_rank0.pt.abc123.tmp", "ckpt_10_rank1.pt", "notes.txt"):
        (folder / name).write_bytes(b"x")
    assert sorted(manager.recover()) == ["removed orphan checkpoint ckpt_10_rank0.pt",
                                         "removed unfinished file .ckpt_15_rank0.pt.abc123.tmp"]
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt_10_rank1.pt", "ckpt_1_rank0.pt", "ckpt_5_rank0.pt",
                                                        "index_rank0.json", "notes.txt"]


def test_a_checkpoint_is_listed_only_after_the_log_lines_before_it_are_on_disk(tmp_dir, monkeypatch):
    seen = []
    original = CheckpointManager.write

    def write(self, step, state, save_fn, metric=None):
        seen.append([line["step"] for line in runforge.read_metrics(self.dir.parent)])
        return original(self, step, state, save_fn, metric)

    monkeypatch.setattr(CheckpointManager, "write", write)
    with runforge.Run(out="r", tensorboard=False) as run:
        for step in range(1, 31):
            run.log(step, {"loss": 1.0 / step})
            if step % 10 == 0:
                run.checkpoint(step, {"step": step}, pickle.dump)
    assert len(seen) == 3
    for steps, checkpoint_step in zip(seen, (10, 20, 30)):
        assert steps[:checkpoint_step] == list(range(1, checkpoint_step + 1))


def test_a_kill_between_the_index_and_the_deletions_leaves_files_recover_deletes(tmp_dir, monkeypatch):
    manager = CheckpointManager(tmp_dir, keep_last=1)
    manager.write(1, {"x": 1}, pickle.dump)
    monkeypatch.setattr(CheckpointManager, "_delete", lambda self, names: [])  # killed right after the index
    manager.write(2, {"x": 2}, pickle.dump)
    monkeypatch.undo()
    assert sorted(p.name for p in manager.dir.iterdir()) == ["ckpt_1_rank0.pt", "ckpt_2_rank0.pt", "index_rank0.json"]
    assert CheckpointManager(tmp_dir, keep_last=1).recover() == ["removed retired checkpoint ckpt_1_rank0.pt"]
    assert sorted(p.name for p in manager.dir.iterdir()) == ["ckpt_2_rank0.pt", "index_rank0.json"]
    assert read_json(manager.index_path) == {"checkpoints": [{"step": 2, "file": "ckpt_2_rank0.pt",
                                                                           "metric": None}]}
