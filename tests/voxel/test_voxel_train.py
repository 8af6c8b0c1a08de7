"""`runforge train voxel`: exact outputs of a 20-step run, export numbering, resume continuity, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from runforge.cli import main
from runforge.run import Run, read_metrics

torch.set_num_threads(1)
FAST = ["--resolution", "24", "--rays_per_step", "256", "--no_tensorboard", "--progress", "lines"]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def blocks_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["blocks"]


def test_twenty_steps_write_exactly_the_seed_outputs(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "voxel", "--steps", "20", "--image_every", "5", "--save_map_every", "10", "--log_every", "10",
                 "--lr", "0.05", *FAST])
    out = capsys.readouterr().out
    assert code == 0
    run = workspace / "out_local" / "sds_training"
    images = sorted(p.name for p in (run / "images").iterdir())
    assert [name[:9] for name in images] == ["step_0001", "step_0005", "step_0010", "step_0015", "step_0020"]
    assert all(name.startswith("step_") and "_cam" in name and name.endswith(".png") for name in images)
    assert sorted(p.name for p in (run / "maps").iterdir()) == ["step_0010.json", "step_0020.json"]

    final = run / "final_map.json"
    assert (run / "map_optimized.json").read_bytes() == final.read_bytes()
    assert blocks_of(final) == blocks_of(run / "maps" / "step_0020.json")
    metadata = json.loads(final.read_text())["metadata"]
    assert metadata["step"] == 20 and metadata["total_steps"] == 20 and metadata["source_map_id"] == 1
    assert metadata["guidance"] == "photometric" and metadata["cfg_scale"] == 7.5 and metadata["prompt"] == ""
    assert metadata["run_id"] == json.loads((run / "run.json").read_text())["id"]

    lines = read_metrics(run)
    assert [line["step"] for line in lines] == [1, 10, 20]
    line = lines[-1]
    assert set(line["losses"]) >= {"total", "photometric", "sparsity", "entropy", "smooth"}
    stats = line["grid_stats"]
    assert stats["total_voxels"] == 32 * 24 * 32
    assert stats["num_active_voxels"] == len(blocks_of(final))
    assert abs(sum(stats["material_distribution"].values()) - 100) < 0.1
    assert line["temperature"] == pytest.approx(0.5) and lines[0]["temperature"] == pytest.approx(2.0)
    assert 0 <= line["camera_index"] < 24

    assert "using the bundled sample" in out and "Training complete!" in out
    assert f"({len(blocks_of(final))} blocks)" in out and "(5 images)" in out and "(2 checkpoints)" in out
    exported = workspace / "maps" / "trained_map_1_1"
    assert "Exported to: maps/trained_map_1_1" in out
    assert (exported / "map.json").read_bytes() == final.read_bytes()
    assert sorted(p.name for p in (exported / "images").iterdir()) == [images[0], images[2], images[4]]
    assert (exported / "train.jsonl").read_text() == (run / "train.jsonl").read_text()
    meta = json.loads((exported / "training_metadata.json").read_text())
    assert meta["source_map_id"] == 1 and meta["trainer"] == "voxel" and meta["steps"] == 20

    # by hand: the next free number, and the registry lists both
    assert main(["export", "--training_dir", str(run), "--source_map_id", "1"]) == 0
    assert (workspace / "maps" / "trained_map_1_2" / "map.json").read_bytes() == final.read_bytes()
    registry = json.loads((workspace / "maps" / "registry.json").read_text())
    assert [entry["export"] for entry in registry] == ["trained_map_1_1", "trained_map_1_2"]


def test_no_export_and_other_init_modes(workspace: Path) -> None:
    for mode in ("ground_plane", "cube", "empty"):
        assert main(["train", "voxel", "--steps", "2", "--init_mode", mode, "--no_export", "--out", mode, *FAST]) == 0
        assert (workspace / mode / "final_map.json").is_file()
    assert not (workspace / "maps").exists()
    plane = blocks_of(workspace / "ground_plane" / "maps" / "step_0002.json")
    assert len(plane) > 0.9 * 32 * 32 and all(b["position"][1] == 0 for b in plane)
    assert blocks_of(workspace / "empty" / "final_map.json") == []


def test_resume_reaches_the_same_state_as_an_uninterrupted_run(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["train", "voxel", "--steps", "8", "--save_map_every", "4", "--image_every", "4", "--no_export",
            "--init_mode", "ground_plane", "--lr", "0.1", *FAST]
    assert main([*args, "--out", "whole"]) == 0

    poll = Run.poll

    def stop_at_step_5(self: Run, step: int | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
        if step == 5:
            self._controller.request_stop(None)  # what SIGINT or `runforge ctl stop` does
        return poll(self, step, **kwargs)

    monkeypatch.setattr(Run, "poll", stop_at_step_5)
    assert main([*args, "--out", "parts"]) == 0
    monkeypatch.setattr(Run, "poll", poll)
    parts = workspace / "parts"
    assert json.loads((parts / "run.json").read_text())["status"] == "interrupted"
    assert not (parts / "final_map.json").exists()
    assert sorted(p.name for p in (parts / "maps").iterdir()) == ["step_0004.json", "step_0005.json"]

    assert main([*args, "--out", "parts", "--resume"]) == 0
    whole_state = torch.load(workspace / "whole" / "ckpts" / "ckpt_8_rank0.pt", weights_only=True)["grid"]
    parts_state = torch.load(parts / "ckpts" / "ckpt_8_rank0.pt", weights_only=True)["grid"]
    for key in ("occupancy_logits", "material_logits"):
        assert torch.allclose(whole_state[key], parts_state[key], atol=1e-5), key
    assert [line["step"] for line in read_metrics(parts)] == [1, 8]
    assert blocks_of(parts / "final_map.json") == blocks_of(workspace / "whole" / "final_map.json")


def test_bad_input_fails_before_any_run_exists(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "voxel", "--prompt", "a castle"]) == 2
    err = capsys.readouterr().err
    assert "--model_path is missing" in err and "huggingface-cli download" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "voxel", "--guidance", "sds", "--prompt", "x", "--model_path", "nowhere"]) == 2
    assert "nowhere: is not a diffusers model folder" in capsys.readouterr().err
    assert main(["train", "voxel", "--dataset_id", "7"]) == 2
    assert "datasets/7: no such dataset" in capsys.readouterr().err
    (workspace / "maps" / "2").mkdir(parents=True)
    (workspace / "maps" / "2" / "map.json").write_text('{"blocks": [{"position": [0, 0, 0], "blockType": "Gold"}]}')
    assert main(["train", "voxel", "--map_id", "2"]) == 2
    assert "maps/2/map.json: blocks[0]: unknown blockType 'Gold'" in capsys.readouterr().err
    (workspace / "datasets" / "3").mkdir(parents=True)
    (workspace / "datasets" / "3" / "cameras.json").write_text(
        (Path(__file__).parents[2] / "runforge/trainers/voxel/sample/dataset1/cameras.json").read_text())
    assert main(["train", "voxel", "--dataset_id", "3", "--map_id", "1"]) == 2
    assert "photometric guidance needs a reference image" in capsys.readouterr().err
    assert not (workspace / "out_local").exists()


def test_validate_command_logs_psnr_over_all_views(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runforge.run import Control

    poll = Run.poll

    def validate_at_step_2(self: Run, step: int | None = None, **kwargs: object) -> Control:
        answer = poll(self, step, **kwargs)
        return Control(validate=True) if step == 2 else answer  # what `runforge ctl RUN validate` asks for

    monkeypatch.setattr(Run, "poll", validate_at_step_2)
    assert main(["train", "voxel", "--steps", "3", "--no_export", *FAST]) == 0
    run = workspace / "out_local" / "sds_training"
    validations = [line for line in read_metrics(run) if "val" in line]
    assert [line["step"] for line in validations] == [2]
    assert validations[0]["val"]["psnr"] > 15  # from_map starts close to the views it was rendered into
    assert "validation at step 2: PSNR" in (run / "events.log").read_text()


def test_a_paused_run_validates_at_the_step_it_is_held(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    poll = Run.poll

    def validate_while_paused_at_step_2(self: Run, step: int | None = None, **kwargs: Any) -> Any:
        if step == 2:
            kwargs["on_validate"]()  # what poll does with a `validate` command while the run is paused
        return poll(self, step, **kwargs)

    monkeypatch.setattr(Run, "poll", validate_while_paused_at_step_2)
    assert main(["train", "voxel", "--steps", "3", "--no_export", *FAST]) == 0
    run = workspace / "out_local" / "sds_training"
    assert [line["step"] for line in read_metrics(run) if "val" in line] == [2]
    assert "validation at step 2: PSNR" in (run / "events.log").read_text()
