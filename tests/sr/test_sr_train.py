"""The sr trainer end to end on the tiny preset: snapshots, control, failures, resume, bad input."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from runforge import Run
from runforge.cli import main
from runforge.run import send_command
from runforge.run.snapshot_fields import fields_of
from runforge.trainers.sr import config as sr_config
from runforge.trainers.sr.train import train

torch.set_num_threads(1)

# Every field of the sr trainer's Statistik_STEP.json and of docs/monitor.md's snapshot list.
SEED_FIELDS = [
    "step_current", "epoch_num", "step_max", "epoch_step_current", "epoch_step_total",
    "learning_rate_value", "lr_phase_name",
    "total_loss_value", "l1_loss_value", "ms_loss_value", "gradient_loss_value", "perceptual_loss_value",
    "l1_weight_current", "ms_weight_current", "gradient_weight_current", "perceptual_weight_current", "gradient_clip_val",
    "adaptive_mode", "adaptive_is_cooldown", "adaptive_cooldown_remaining", "adaptive_plateau_counter",
    "adaptive_lr_boost_available", "adaptive_perceptual_trend",
    "quality_lr_value", "quality_ki_value", "quality_improvement_value", "quality_ki_to_gt_value",
    "quality_lr_to_gt_value", "validation_loss_value", "best_quality_ever",
    "iteration_duration", "vram_usage_gb", "ram_usage_gb", "adam_momentum_avg", "eta_total_formatted",
    "eta_epoch_formatted", "layer_activity_map",
    "training_active", "validation_running", "training_paused", "last_update_time",
]
TINY = sr_config.PRESETS["tiny"]


def snapshots(run_dir: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted((run_dir / "Learn").glob("*.json"))}


def run_tiny(tmp_path: Path, cfg: sr_config.Config, name: str = "run", run_class: type[Run] = Run) -> Path:
    with run_class(trainer="sr", config={}, out=tmp_path / name, progress=False, handle_signals=False,
                   tensorboard=False, **sr_config.run_options(cfg)) as run:
        train(cfg, run)
    return run.dir


def test_tiny_run_writes_every_seed_field_in_each_snapshot(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "sr", "--preset", "tiny", "--out", str(out), "--progress", "lines", "--no_tensorboard"]) == 0
    stats = snapshots(out)
    assert list(stats) == ["Statistik_4.json", "Statistik_8.json"]
    declared = fields_of(sr_config.SNAPSHOT_GROUPS)
    assert json.loads((out / "run.json").read_text())["snapshot_groups"] == {
        group: list(fields) for group, fields in sr_config.SNAPSHOT_GROUPS.items()}  # what the dashboard groups by
    for name, data in stats.items():
        missing = [key for key in SEED_FIELDS if key not in data]
        assert not missing, f"{name} lacks {missing}"
        assert tuple(data) == declared  # every declared field, in order, and nothing the trainer did not declare
        # The run layer would fill a forgotten field with null: only the disabled perceptual term may be null.
        assert [key for key in SEED_FIELDS if data[key] is None] == ["perceptual_loss_value", "adaptive_perceptual_trend"]
        assert data["step_current"] == int(name[len("Statistik_"):-len(".json")])
        assert data["step_max"] == 8 and data["epoch_num"] == 1 and data["epoch_step_total"] >= 1
        assert data["lr_phase_name"] in ("warmup", "cosine", "boost")
        assert data["adaptive_mode"] in ("Warmup", "Stable", "Plateau", "Boost", "Cooldown")
        # No perceptual weights: the term is off, weight 0, loss null ("no such thing"), trend null.
        assert data["perceptual_weight_current"] == 0.0 and data["perceptual_loss_value"] is None
        assert data["l1_weight_current"] + data["ms_weight_current"] + data["gradient_weight_current"] == pytest.approx(1.0)
        assert data["quality_improvement_value"] == pytest.approx(data["quality_ki_value"] - data["quality_lr_value"])
        assert 0 < data["quality_lr_value"] <= 1 and 0 < data["quality_ki_value"] <= 1
        assert data["vram_usage_gb"] == 0.0 and data["ram_usage_gb"] > 0
        assert data["adam_momentum_avg"] > 0 and data["validation_loss_value"] > 0
        assert list(data["layer_activity_map"]) == ["Forward_Block_01", "Forward_Block_02", "Final_Fusion", "Upsampler"]
        assert max(data["layer_activity_map"].values()) == 100.0
        assert data["training_active"] is True and data["validation_running"] is False
        assert data["training_paused"] is False
    assert stats["Statistik_8.json"]["best_quality_ever"] == max(d["quality_ki_value"] for d in stats.values())
    # Pretty, 2-space JSON: the snapshots are read by hand.
    assert (out / "Learn" / "Statistik_8.json").read_text(encoding="utf-8").startswith('{\n  "step_current": 8,')

    console = capsys.readouterr().out
    assert console.count("📊 Statistics saved: Statistik_") == 2
    assert console.count("perceptual loss off") == 1
    assert "bundled procedural textures" in console
    events = (out / "events.log").read_text(encoding="utf-8")
    assert "📊 Statistics saved: Statistik_4.json" in events and "📊 Statistics saved: Statistik_8.json" in events

    last = torch.load(out / "ckpts" / "last.pt", weights_only=True)
    best = torch.load(out / "ckpts" / "best.pt", weights_only=True)
    assert last["step"] == 8 and best["quality"] == stats["Statistik_8.json"]["best_quality_ever"]
    assert sorted(p.name for p in (out / "ckpts").iterdir()) == ["best.pt", "index_rank0.json", "last.pt"]
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "step_0004_val_bicubic_model_hr.png", "step_0008_val_bicubic_model_hr.png"]
    val_lines = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines() if '"val"' in line]
    assert [line["step"] for line in val_lines] == [4, 8]


def test_seed_analysis_examples_run_on_the_snapshots(tmp_path, capsys):
    """Plain-Python analyses of the snapshot files (improvement over time, plateau warning, compare runs,
    CSV export), then the same through the CLI as docs/monitor.md shows."""
    cfg = replace(TINY, steps=8)
    runs = [run_tiny(tmp_path, cfg, name) for name in ("a", "b")]
    lines = []
    for filepath in sorted(glob.glob(str(runs[0] / "Learn" / "Statistik_*.json"))):
        with open(filepath) as f:
            data = json.load(f)
        lines.append(f"Step {data['step_current']:6d}: Improvement={data['quality_improvement_value'] * 100:5.1f}%, "
                     f"KI Quality={data['quality_ki_value'] * 100:5.1f}%")
    assert len(lines) == 2 and lines[0].startswith("Step      4: Improvement=")
    with open(runs[0] / "Learn" / "Statistik_8.json") as f:
        data = json.load(f)
    assert isinstance(data["adaptive_plateau_counter"], int) and isinstance(data["adaptive_lr_boost_available"], bool)
    with open(runs[0] / "Learn" / "Statistik_8.json") as f1, open(runs[1] / "Learn" / "Statistik_8.json") as f2:
        first, second = json.load(f1), json.load(f2)
    assert first["quality_improvement_value"] == second["quality_improvement_value"]  # same seed, same run
    stats = [json.loads(Path(p).read_text()) for p in sorted(glob.glob(str(runs[0] / "Learn" / "Statistik_*.json")))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=stats[0].keys())  # fails if a later file has another key
    writer.writeheader()
    writer.writerows(stats)
    assert len(buffer.getvalue().splitlines()) == 3

    # The same analyses through the runforge CLI, which finds Learn/ from run.json.
    table = tmp_path / "training_history.csv"
    assert main(["csv", str(runs[0]), "--source", "stats", "-o", str(table)]) == 0
    rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8"))))
    assert [int(row["step_current"]) for row in rows] == [4, 8]
    assert float(rows[1]["quality_improvement_value"]) == pytest.approx(first["quality_improvement_value"])
    assert main(["compare", str(runs[0]), str(runs[1]), "--step", "8", "--field", "quality_improvement_value",
                 "--json"]) == 0
    capsys.readouterr()
    # the plateau warning is the sr trainer's addition to `runforge show`
    assert main(["show", str(runs[0]), "--plateau", "1000"]) == 0
    assert f"Training is progressing (plateau: {data['adaptive_plateau_counter']} steps)" in capsys.readouterr().out
    picture = tmp_path / "training_progress.png"
    assert main(["plot", str(runs[0]), "--metric", "quality_improvement_value", "--metric", "quality_ki_value",
                 "-o", str(picture)]) == 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unwritable_learn_dir_gives_the_seed_warning_and_training_goes_on(tmp_path, capsys):
    class BlockedLearnDir(Run):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            learn = self.dir / "Learn"
            if os.geteuid() == 0:
                learn.write_text("a file where the folder should be")  # permission bits do not stop root
            else:
                learn.mkdir()
                learn.chmod(0o500)

    run_dir = run_tiny(tmp_path, TINY, run_class=BlockedLearnDir)
    warnings = capsys.readouterr().err
    assert warnings.count("⚠️  Failed to save statistics JSON: ") == 2
    events = (run_dir / "events.log").read_text(encoding="utf-8")
    assert events.count("⚠️  Failed to save statistics JSON: ") == 2
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["failed_writes"] == {"snapshot": 2}
    assert torch.load(run_dir / "ckpts" / "last.pt", weights_only=True)["step"] == 8  # trained to the end
    (run_dir / "Learn").chmod(0o700)


def test_validate_command_writes_a_snapshot_at_the_current_step(tmp_path):
    cfg = replace(TINY, steps=6, val_every=1000, ckpt_every=1000)

    class ValidateAtStep3(Run):
        def poll(self, step=None, **kwargs):
            if step == 3:
                send_command(self.dir, "validate")
                self._controller._next_control_check = 0.0  # look now, not up to 0.1 s later
            return super().poll(step, **kwargs)

    run_dir = run_tiny(tmp_path, cfg, run_class=ValidateAtStep3)
    stats = snapshots(run_dir)
    assert list(stats) == ["Statistik_3.json", "Statistik_6.json"]  # the command's step, then the last step
    assert stats["Statistik_3.json"]["step_current"] == 3
    assert "📊 Statistics saved: Statistik_3.json" in (run_dir / "events.log").read_text(encoding="utf-8")
    assert not list((run_dir / "control").glob("*.cmd"))  # the command was consumed
    assert json.loads(next((run_dir / "control").glob("*.taken")).read_text())["command"] == "validate"


def test_a_validate_command_while_paused_validates_at_the_held_step(tmp_path):
    cfg = replace(TINY, steps=6, val_every=1000, ckpt_every=1000)

    class PauseAndValidateAtStep3(Run):
        def poll(self, step=None, **kwargs):
            if step == 3:
                send_command(self.dir, "pause")
                send_command(self.dir, "validate")
                self._controller._next_control_check = 0.0
                validate = kwargs["on_validate"]  # the loop's own validation, which poll calls while held

                def validate_then_resume():
                    validate()
                    send_command(self.dir, "resume")

                kwargs["on_validate"] = validate_then_resume
            return super().poll(step, **kwargs)

    run_dir = run_tiny(tmp_path, cfg, run_class=PauseAndValidateAtStep3)
    stats = snapshots(run_dir)
    assert list(stats) == ["Statistik_3.json", "Statistik_6.json"]  # once while held, once at the end
    assert stats["Statistik_3.json"]["step_current"] == 3 and stats["Statistik_3.json"]["training_paused"] is True
    assert stats["Statistik_6.json"]["training_paused"] is False
    val_steps = [json.loads(line)["step"] for line in (run_dir / "train.jsonl").read_text().splitlines() if '"val"' in line]
    assert val_steps == [3, 6]


def test_resume_after_a_stop_matches_an_uninterrupted_run(tmp_path):
    cfg = replace(TINY, steps=12)
    straight = run_tiny(tmp_path, cfg, "straight")

    class StopAtStep5(Run):
        def poll(self, step=None, **kwargs):
            if step == 5:
                self._controller.request_stop(None)
            return super().poll(step, **kwargs)

    stopped = run_tiny(tmp_path, cfg, "resumed", run_class=StopAtStep5)
    assert json.loads((stopped / "run.json").read_text())["status"] == "interrupted"
    assert torch.load(stopped / "ckpts" / "last.pt", weights_only=True)["step"] == 5
    code = main(["train", "sr", "--preset", "tiny", "--steps", "12", "--out", str(stopped), "--resume",
                 "--progress", "lines", "--no_tensorboard"])
    assert code == 0

    a = torch.load(straight / "ckpts" / "last.pt", weights_only=True)
    b = torch.load(stopped / "ckpts" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for key, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][key], tensor, rtol=1e-5, atol=1e-6)
    assert b["adaptive"]["weights"] == pytest.approx(a["adaptive"]["weights"])
    steps = [json.loads(line)["step"] for line in (stopped / "train.jsonl").read_text().splitlines()
             if '"losses"' in line]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # no duplicated or orphaned lines
    assert list(snapshots(stopped)) == list(snapshots(straight))


def _write_png(path: Path, size: int, seed: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size, size, 3, generator=generator) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("problem", ["tiny_image", "unreadable", "missing", "empty", "no_val"])
def test_bad_data_root_is_one_line_naming_the_file(tmp_path, capsys, problem):
    root = tmp_path / "data"
    _write_png(root / "train" / "a.png", 64)
    _write_png(root / "val" / "b.png", 64)
    if problem == "tiny_image":
        _write_png(root / "train" / "small.png", 8)
        culprit, words = root / "train" / "small.png", "is 8x8 pixels"
    elif problem == "unreadable":
        (root / "val" / "broken.png").write_bytes(b"not a png at all")
        culprit, words = root / "val" / "broken.png", "cannot be read as an image"
    elif problem == "missing":
        root = tmp_path / "nowhere"
        culprit, words = root, "no such data directory"
    elif problem == "empty":
        (root / "val" / "b.png").unlink()
        culprit, words = root / "val", "holds no PNG or JPEG images"
    else:
        (root / "val" / "b.png").unlink()
        (root / "val").rmdir()
        culprit, words = root / "val", "missing"
    code = main(["train", "sr", "--preset", "tiny", "--data_root", str(root), "--out", str(tmp_path / "run"),
                 "--progress", "lines", "--no_tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[-1] == f"runforge: error: {culprit}: " + err[-1].split(f"{culprit}: ", 1)[1]
    assert words in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_own_data_root_split_in_one_folder_trains(tmp_path):
    root = tmp_path / "flat"
    for i in range(10):
        _write_png(root / f"img_{i:02d}.png", 40, seed=i)
    cfg = replace(TINY, data_root=root, steps=4)
    run_dir = run_tiny(tmp_path, cfg)
    assert "(9 train, 1 val images)" in (run_dir / "events.log").read_text(encoding="utf-8")
    assert list(snapshots(run_dir)) == ["Statistik_4.json"]


@pytest.mark.parametrize("flags, words", [
    (["--patch_size", "15"], "--patch_size: 15 is not a multiple of --scale 2"),
    (["--learn_dir", "../elsewhere"], "--learn_dir: '../elsewhere' must be a folder inside the run or an absolute path"),
    (["--scale", "3"], "--scale: '3' is not one of 2, 4"),
    (["--perceptual_weights", "/nonexistent/vgg19.pth"], "/nonexistent/vgg19.pth: no such file"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flags, words):
    code = main(["train", "sr", "--preset", "tiny", "--out", str(tmp_path / "run"), "--progress", "lines",
                 "--no_tensorboard", *flags])
    assert code == 2
    assert words in capsys.readouterr().err


def test_perceptual_weights_enable_the_fourth_term(tmp_path):
    # A VGG-shaped state dict (torchvision numbering: conv 0, 2, pool, conv 5): the loader's real path.
    state = {"features.0.weight": torch.randn(4, 3, 3, 3) * 0.3, "features.0.bias": torch.zeros(4),
             "features.2.weight": torch.randn(4, 4, 3, 3) * 0.3, "features.2.bias": torch.zeros(4),
             "features.5.weight": torch.randn(8, 4, 3, 3) * 0.3, "features.5.bias": torch.zeros(8)}
    weights = tmp_path / "vgg_tiny.pth"
    torch.save(state, weights)
    run_dir = run_tiny(tmp_path, replace(TINY, perceptual_weights=weights, steps=4))
    data = snapshots(run_dir)["Statistik_4.json"]
    assert data["perceptual_loss_value"] > 0 and data["perceptual_weight_current"] > 0
    assert sum(data[f"{k}_weight_current"] for k in ("l1", "ms", "gradient", "perceptual")) == pytest.approx(1.1)
    assert "perceptual loss off" not in (run_dir / "events.log").read_text(encoding="utf-8")


def test_absolute_learn_dir_receives_the_snapshots(tmp_path):
    learn = tmp_path / "data" / "Learn"  # beside the data, DATA_ROOT/Learn: outside the run
    run_dir = run_tiny(tmp_path, replace(TINY, learn_dir=str(learn), steps=4))
    assert [p.name for p in learn.iterdir()] == ["Statistik_4.json"]
    assert not (run_dir / "Learn").exists()
    assert json.loads((run_dir / "run.json").read_text())["snapshot_dir"] == str(learn)


def test_resume_from_a_damaged_checkpoint_is_a_named_error(tmp_path, capsys):
    run_dir = run_tiny(tmp_path, replace(TINY, steps=4))
    (run_dir / "ckpts" / "last.pt").write_bytes(b"truncated")
    code = main(["train", "sr", "--preset", "tiny", "--out", str(run_dir), "--resume", "--progress", "lines",
                 "--no_tensorboard"])
    assert code == 2
    assert f"{run_dir / 'ckpts' / 'last.pt'}: cannot be loaded as a checkpoint" in capsys.readouterr().err


def test_a_plateau_boosts_the_learning_rate_of_the_loop(tmp_path):
    from runforge.trainers.sr.train import learning_rate

    # No validation before the end: the counter only grows, so the boost fires right after warmup.
    cfg = replace(TINY, steps=10, val_every=100, log_every=1, warmup_steps=2, plateau_patience=1, boost_patience=2,
                  boost_steps=2, cooldown_steps=3, boost_factor=2.0)
    run_dir = run_tiny(tmp_path, cfg)
    lines = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines() if '"losses"' in line]
    factors = {line["step"]: line["lr"] / learning_rate(line["step"], cfg)[0] for line in lines}
    # Fires after step 3, runs steps 4-5, cools down 6-8, fires again after step 8 (counter 5 >= 2).
    assert [step for step, factor in factors.items() if factor == pytest.approx(2.0)] == [4, 5, 9, 10]
    assert all(factors[step] == pytest.approx(1.0) for step in (1, 2, 3, 6, 7, 8))
    final = snapshots(run_dir)["Statistik_10.json"]
    assert final["adaptive_boost_count"] == 2 and final["lr_phase_name"] in ("boost", "cosine")


def test_resume_given_the_checkpoint_file_continues_from_its_step(tmp_path, capsys):
    run_dir = run_tiny(tmp_path, replace(TINY, steps=8))  # last.pt written at steps 4 and 8
    code = main(["train", "sr", "--preset", "tiny", "--steps", "12", "--resume", str(run_dir / "ckpts" / "last.pt"),
                 "--progress", "lines", "--no_tensorboard"])
    steps = [json.loads(line)["step"] for line in (run_dir / "train.jsonl").read_text().splitlines()
             if '"losses"' in line]
    assert "holds step 8, but the run resumes at step" not in capsys.readouterr().err  # the trainer's guard
    assert code == 0 and steps == [2, 4, 6, 8, 10, 12]


def test_upscale_applies_the_best_model_of_a_run(tmp_path, capsys):
    from runforge.trainers.sr.data import load_image
    from runforge.trainers.sr.model import SRNet

    run_dir = run_tiny(tmp_path, replace(TINY, steps=4))
    _write_png(tmp_path / "in" / "photo.png", 20)
    assert main(["upscale", str(run_dir), str(tmp_path / "in" / "photo.png"), "-o", str(tmp_path / "out")]) == 0
    result = load_image(tmp_path / "out" / "photo_x2.png", 1)
    assert result.shape == (3, 40, 40)
    best = torch.load(run_dir / "ckpts" / "best.pt", weights_only=True)
    model = SRNet(2, TINY.channels, TINY.blocks)
    model.load_state_dict(best["model"])
    with torch.no_grad():
        expected = model(load_image(tmp_path / "in" / "photo.png", 1).float().div(255)[None]).clamp(0, 1)[0]
    assert (result.float() - expected * 255).abs().max() <= 0.51  # the same model, rounded to 8 bits
    assert main(["upscale", str(tmp_path / "in" / "photo.png"), str(tmp_path / "in" / "photo.png")]) == 2
    assert f"{tmp_path / 'in' / 'photo.png'}: is not an sr checkpoint" in capsys.readouterr().err
