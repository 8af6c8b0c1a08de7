"""Promise 3: images and snapshots fail soft; a checkpoint that cannot be written fails the run."""

import pickle

import pytest

import runforge
from runforge.run import CheckpointWriteError

from conftest import make_unwritable, read_json, run_cli


def test_unwritable_images_and_stats_folders_warn_and_training_goes_on(tmp_dir, capsys):
    with runforge.Run(out="r", snapshot_pattern="Statistik_{step}.json") as run:
        make_unwritable(run.dir / "images")
        make_unwritable(run.dir / "stats")
        for step in range(1, 6):
            run.log(step, {"loss": 1.0})
            run.image(step, "cam0", [[[0, 0, 0]]])
            run.snapshot(step, {"total_loss_value": 1.0})
        run.checkpoint(5, {"w": 1}, pickle.dump)
    info = read_json(tmp_dir / "r" / "run.json")
    assert info["status"] == "finished" and info["step"] == 5
    assert info["failed_writes"] == {"image": 5, "snapshot": 5}
    assert len(runforge.read_metrics(tmp_dir / "r")) == 5
    assert (tmp_dir / "r" / "ckpts" / "ckpt_5_rank0.pt").exists()
    err = capsys.readouterr().err
    assert err.count("⚠️  Failed to save statistics JSON: ") == 5
    assert "Failed to save image images/step_0001_cam0.png" in err
    events = (tmp_dir / "r" / "events.log").read_text()
    assert events.count("WARNING ⚠️  Failed to save statistics JSON") == 5


def test_unwritable_checkpoint_folder_fails_the_run_after_a_clean_shutdown(tmp_dir):
    with pytest.raises(CheckpointWriteError) as raised:
        with runforge.Run(out="r") as run:
            make_unwritable(run.dir / "ckpts")
            run.log(1, {"loss": 1.0})
            run.checkpoint(1, {"w": 1}, pickle.dump)
            run.wait()
    assert "could not write an essential file" in str(raised.value)
    info = read_json(tmp_dir / "r" / "run.json")
    assert info["status"] == "failed" and "could not write an essential file" in info["error"]
    assert runforge.read_metrics(tmp_dir / "r")[0]["loss"] == 1.0  # what was logged before is kept


def test_cli_exits_non_zero_with_one_line_when_checkpoints_cannot_be_written(tmp_dir):
    (tmp_dir / "r").mkdir()
    make_unwritable(tmp_dir / "r" / "ckpts")
    result = run_cli("train", "toy", "--out", "r", "--overwrite", "--preset", "tiny", cwd=tmp_dir)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "runforge: error:" in result.stderr and "could not write an essential file" in result.stderr
    assert read_json(tmp_dir / "r" / "run.json")["status"] == "failed"
