"""The trainer end to end on a tiny synthetic scene: output tree, checkpoints, resume, --ckpt, torchrun, PLY, docs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from runforge.cli import main  # noqa: E402
from runforge.trainers.splat.scene import write_synthetic_scene  # noqa: E402
from runforge.trainers.splat.splats import ply_property_names, read_ply, write_ply  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return write_synthetic_scene(tmp_path_factory.mktemp("data") / "scene", n_images=9, width=32, height=24,
                                 n_points=150)


@pytest.fixture(scope="module")
def trained(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "splat", "--preset", "tiny", "--data_dir", str(scene), "--out", str(out),
                 "--progress", "lines"]) == 0
    return out


def files(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_output_tree_matches_the_spec(trained: Path) -> None:
    names = {n for n in files(trained) if not n.startswith("tb/")}
    assert names == {
        "run.json", "config.json", "train.jsonl", "train.index", "status.json", "events.log",
        "ckpts/ckpt_3_rank0.pt", "ckpts/ckpt_7_rank0.pt", "ckpts/index_rank0.json",
        "stats/train_step3_rank0.json", "stats/train_step7_rank0.json", "stats/val_step7.json",
        "renders/val_step7/000.png", "renders/val_step7/001.png",  # images 0 and 8 of 9 are held out
        "renders/val_metrics_step7.json",
        "renders/traj_interp_step7.mp4", "ply/point_cloud_7.ply",
    }
    assert any(n.startswith("tb/events.out.tfevents") for n in files(trained))
    val = json.loads((trained / "stats" / "val_step7.json").read_text())
    # gsplat's fields, declared by the trainer, after the two every snapshot has: no other trainer's vocabulary
    assert list(val) == ["step_current", "last_update_time", "psnr", "ssim", "lpips", "ellipse_time", "num_GS"]
    assert json.loads((trained / "run.json").read_text())["snapshot_groups"]["validation"] == [
        "psnr", "ssim", "lpips", "ellipse_time", "num_GS"]
    assert val["lpips"] is None and 5 < val["psnr"] < 60 and 0 < val["ssim"] <= 1
    # the seed's metrics file: gsplat's figures, lpips left out when there are no weights to compute it
    metrics = json.loads((trained / "renders" / "val_metrics_step7.json").read_text())
    assert metrics == {k: val[k] for k in ("psnr", "ssim", "ellipse_time", "num_GS")}
    train_stats = json.loads((trained / "stats" / "train_step7_rank0.json").read_text())
    assert train_stats["num_GS"] == val["num_GS"] > 0
    from PIL import Image

    with Image.open(trained / "renders" / "val_step7" / "000.png") as im:
        assert im.size == (64, 24)  # truth | render
    import imageio_ffmpeg

    decoded = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i",
                              str(trained / "renders" / "traj_interp_step7.mp4"), "-f", "rawvideo", "-pix_fmt", "rgb24",
                              "-"], capture_output=True, check=True).stdout
    assert len(decoded) == 3 * 24 * 32 * 3  # 3 frames of 32x24
    steps = [line["step"] for line in map(json.loads, (trained / "train.jsonl").read_text().splitlines())
             if "loss" in line]
    assert steps == [0, 2, 4, 6, 7]


def test_checkpoint_holds_optimizer_and_strategy_state(trained: Path) -> None:
    ckpt = torch.load(trained / "ckpts" / "ckpt_7_rank0.pt", weights_only=False)
    assert ckpt["step"] == 7
    n = ckpt["splats"]["means"].shape[0]
    assert set(ckpt["splats"]) == {"means", "scales", "quats", "opacities", "sh0", "shN"}
    for name, saved in ckpt["optimizers"].items():
        (state,) = saved["state"].values()
        assert state["exp_avg"].shape == ckpt["splats"][name].shape
    assert ckpt["strategy"]["grad2d"] is None or ckpt["strategy"]["grad2d"].shape == (n,)
    assert "rng" in ckpt["strategy"] and "scheduler" in ckpt and "batches" in ckpt


def test_ply_round_trip(trained: Path, tmp_path: Path) -> None:
    from plyfile import PlyData

    ply = PlyData.read(str(trained / "ply" / "point_cloud_7.ply"))
    assert [p.name for p in ply["vertex"].properties] == ply_property_names(9)  # sh degree 1: 3 x 3 f_rest
    assert ply_property_names(45)[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    g = torch.Generator().manual_seed(0)
    splats = {"means": torch.randn(7, 3, generator=g), "scales": torch.randn(7, 3, generator=g),
              "quats": torch.randn(7, 4, generator=g), "opacities": torch.randn(7, generator=g),
              "sh0": torch.randn(7, 1, 3, generator=g), "shN": torch.randn(7, 15, 3, generator=g)}
    back = read_ply(write_ply(tmp_path / "x.ply", splats))
    for name, value in splats.items():
        assert torch.equal(back[name], value), name
    raw = PlyData.read(str(tmp_path / "x.ply"))["vertex"]
    # f_rest is channel-major as in the INRIA layout: f_rest_0..14 are red, 15..29 green.
    assert raw["f_rest_15"][3] == splats["shN"][3, 0, 1].item()


def test_resume_continues_to_the_same_state(trained: Path, tmp_path: Path) -> None:
    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed)
    index = resumed / "ckpts" / "index_rank0.json"
    entries = json.loads(index.read_text())
    entries["checkpoints"] = [e for e in entries["checkpoints"] if e["step"] == 3]
    index.write_text(json.dumps(entries))
    (resumed / "ckpts" / "ckpt_7_rank0.pt").unlink()
    assert main(["train", "splat", "--out", str(resumed), "--resume", "--progress", "lines"]) == 0
    a = torch.load(trained / "ckpts" / "ckpt_7_rank0.pt", weights_only=False)
    b = torch.load(resumed / "ckpts" / "ckpt_7_rank0.pt", weights_only=False)
    for name in a["splats"]:
        torch.testing.assert_close(b["splats"][name], a["splats"][name], atol=1e-6, rtol=1e-5)
    steps = [json.loads(line)["step"] for line in (resumed / "train.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len([s for s in steps if s == 4]) == 1  # no duplicate lines after resume


def test_ckpt_evaluates_without_training(trained: Path, scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert main(["train", "splat", "--preset", "tiny", "--data_dir", str(scene), "--out", str(out),
                 "--ckpt", str(trained / "ckpts" / "ckpt_7_rank0.pt"), "--progress", "lines"]) == 0
    assert not (out / "ckpts").exists()
    assert {"renders/val_step7/000.png", "stats/val_step7.json", "renders/traj_interp_step7.mp4"} <= files(out)
    again = json.loads((out / "stats" / "val_step7.json").read_text())
    first = json.loads((trained / "stats" / "val_step7.json").read_text())
    assert again["psnr"] == pytest.approx(first["psnr"], abs=1e-4)


def test_bad_checkpoint_exits_2(scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["train", "splat", "--preset", "tiny", "--data_dir", str(scene), "--out", str(tmp_path / "e"),
                 "--ckpt", str(bad)]) == 2
    assert "bad.pt: not a readable checkpoint" in capsys.readouterr().err


def test_torchrun_two_ranks_on_gloo(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "runforge",
           "train", "splat", "--preset", "tiny", "--data_dir", str(scene), "--out", str(out), "--max_steps", "4",
           "--save_steps", "4", "--eval_steps", "4", "--ply_steps", "4", "--traj_frames", "0", "--progress", "lines"]
    result = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    names = files(out)
    assert {"ckpts/ckpt_3_rank0.pt", "ckpts/ckpt_3_rank1.pt", "stats/train_step3_rank0.json",
            "stats/train_step3_rank1.json", "stats/val_step3.json", "ply/point_cloud_3.ply"} <= names
    a = torch.load(out / "ckpts" / "ckpt_3_rank0.pt", weights_only=False)
    b = torch.load(out / "ckpts" / "ckpt_3_rank1.pt", weights_only=False)
    for name in a["splats"]:  # all-reduced gradients and shared densification keep the ranks identical
        assert torch.equal(a["splats"][name], b["splats"][name]), name
    steps = [json.loads(line)["step"] for line in (out / "train.jsonl").read_text().splitlines() if "loss" in line]
    assert steps == [0, 2, 3]  # one writer: rank 0


def test_mcmc_strategy_trains_and_grows(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "mcmc"
    assert main(["train", "splat", "--preset", "tiny", "--data_dir", str(scene), "--out", str(out), "--strategy",
                 "mcmc", "--init_opa", "0.5", "--max_steps", "6", "--save_steps", "6", "--eval_steps", "6",
                 "--ply_steps", "6", "--traj_frames", "0", "--progress", "lines"]) == 0
    events = (out / "events.log").read_text()
    assert "step 4: relocated" in events and "added 7" in events
    ckpt = torch.load(out / "ckpts" / "ckpt_5_rank0.pt", weights_only=False)
    n = ckpt["splats"]["means"].shape[0]
    assert n > 140  # grew 5 % per refine from the SfM points
    (state,) = ckpt["optimizers"]["means"]["state"].values()
    assert state["exp_avg"].shape == (n, 3)


def test_result_dir_is_out(scene: Path, tmp_path: Path) -> None:
    """gsplat's --result_dir names the run folder as --out does (giving both: test_splat_bad_input)."""
    from runforge.cli import trainer_parser
    from runforge.trainers.splat import config

    parser = trainer_parser("splat", config)
    assert parser.parse_args(["--result_dir", "X"]) == parser.parse_args(["--out", "X"])
    out = tmp_path / "gsplat_style"
    assert main(["train", "splat", "--preset", "tiny", "--data_dir", str(scene), "--result_dir", str(out),
                 "--max_steps", "2", "--traj_frames", "0", "--progress", "off"]) == 0
    assert json.loads((out / "run.json").read_text())["trainer"] == "splat"
    assert (out / "ckpts" / "ckpt_1_rank0.pt").is_file()


def test_rerun_refuses_result_dir_with_root_as_it_refuses_out_with_root() -> None:
    from runforge.config import ConfigError
    from runforge.sweep.rerun import rerun_parser
    from runforge.trainers.splat import config

    parser = rerun_parser("splat", config)
    assert parser.parse_args(["--result_dir", "X"]).out == "X"
    for flags in (["--out", "X", "--root", "R"], ["--result_dir", "X", "--root", "R"], ["--root", "R", "--result_dir", "X"]):
        with pytest.raises(ConfigError, match="not allowed with argument") as refused:
            parser.parse_args(flags)
        assert {flags[0], flags[2]} <= set(str(refused.value).replace(":", " ").split())


def test_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "splat", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--strategy {default,mcmc}" in out and "--backend {auto,torch,gsplat}" in out


def test_a_paused_run_validates_at_the_step_it_is_held(scene: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from runforge.run import Run

    poll = Run.poll

    def validate_while_paused_at_step_1(self: Run, step: int | None = None, **kwargs: Any) -> Any:
        if step == 1:
            kwargs["on_validate"]()  # what poll does with a `validate` command while the run is paused
        return poll(self, step, **kwargs)

    monkeypatch.setattr(Run, "poll", validate_while_paused_at_step_1)
    out = tmp_path / "paused"
    assert main(["train", "splat", "--preset", "tiny", "--data_dir", str(scene), "--out", str(out), "--max_steps", "3",
                 "--eval_steps", "3", "--save_steps", "3", "--ply_steps", "3", "--traj_frames", "0",
                 "--no_tensorboard", "--progress", "lines"]) == 0
    assert {"stats/val_step1.json", "stats/val_step2.json", "renders/val_step1/000.png"} <= files(out)
