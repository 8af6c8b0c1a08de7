"""Every bad input to `runforge train splat` and `runforge data synthetic-scene`: one stderr line naming the
flag or file, exit 2, no traceback, and nothing on disk created or changed (no run directory, no scene
folder, a run given to --resume byte-for-byte as it was)."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import png_header, run_cli, tree_digest, write_file

torch = pytest.importorskip("torch")
pytest.importorskip("pycolmap")

TRAIN = ["train", "splat", "--preset", "tiny", "--data_dir", "scene", "--no_tensorboard", "--progress", "lines"]
RESUME = ["train", "splat", "--out", "run", "--resume", "--no_tensorboard", "--progress", "lines"]
SCENE = ["data", "synthetic-scene"]
CHECKPOINT = Path("run") / "ckpts" / "ckpt_7_rank0.pt"  # the last of the tiny preset's 8 steps
SPARSE = Path("scene") / "sparse" / "0"
IMAGE = Path("scene") / "images" / "img_003.png"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny scene (9 images of 32x24) and a finished tiny run on it."""
    from runforge.trainers.splat.scene import write_synthetic_scene

    base = tmp_path_factory.mktemp("splat_base")
    write_synthetic_scene(base / "scene", n_images=9, width=32, height=24, n_points=150)
    result = run_cli(*TRAIN, "--data_dir", base / "scene", "--out", "run", "--traj_frames", "0", cwd=base)
    assert result.returncode == 0, result.stderr
    assert (base / CHECKPOINT).is_file()
    return base


def _append(path: Path, data: bytes) -> None:
    path.write_bytes(path.read_bytes() + data)


def _cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _patch(path: Path, offset: int, fmt: str, value: Any) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


def _small_image(w: Path) -> None:
    from PIL import Image

    Image.new("RGB", (4, 4)).save(w / IMAGE)


def _edit_checkpoint(w: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    state = torch.load(w / CHECKPOINT, weights_only=True)
    edit(state)
    torch.save(state, w / CHECKPOINT)


def _set(container: dict[str, Any], key: str, value: Any) -> None:
    container[key] = value


def _without_cuda(w: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


def _nothing(w: Path) -> None:
    pass


# (id, how to prepare the case in `w` (holding a copy of the scene in w/scene and of a finished tiny run on it
#  in w/run), the arguments, the words the one stderr line must hold)
CASES: list[tuple[str, Callable[[Path], Any], list[Any], list[str]]] = [
    # flags: every number has a range, and cross-field rules
    ("max-steps-zero", _nothing, [*TRAIN, "--max_steps", "0"], ["--max_steps", ">= 1"]),
    ("means-lr-huge", _nothing, [*TRAIN, "--means_lr", "1e308"], ["--means_lr", "<= 10"]),
    ("batch-size-huge", _nothing, [*TRAIN, "--batch_size", "11"], ["--batch_size", "<= 10"]),
    ("sh-degree-4", _nothing, [*TRAIN, "--sh_degree", "4"], ["--sh_degree", "<= 3"]),
    ("data-factor-3", _nothing, [*TRAIN, "--data_factor", "3"], ["--data_factor", "1, 2, 4 or 8"]),
    ("init-opa-one", _nothing, [*TRAIN, "--init_opa", "1"], ["--init_opa", "< 1"]),
    ("init-num-pts-huge", _nothing, [*TRAIN, "--init_num_pts", "1000000000"], ["--init_num_pts", "<="]),
    ("near-beyond-far", _nothing, [*TRAIN, "--near_plane", "10", "--far_plane", "1"], ["--near_plane", "below"]),
    ("eval-step-zero", _nothing, [*TRAIN, "--eval_steps", "0"], ["--eval_steps", ">= 1"]),
    ("ssim-lambda-two", _nothing, [*TRAIN, "--ssim_lambda", "2"], ["--ssim_lambda", "<= 1"]),
    ("prune-opa-two", _nothing, [*TRAIN, "--prune_opa", "2"], ["--prune_opa", "<= 1"]),
    ("tile-size-zero", _nothing, [*TRAIN, "--tile_size", "0"], ["--tile_size", ">= 1"]),
    ("traj-frames-huge", _nothing, [*TRAIN, "--traj_frames", "100000000"], ["--traj_frames", "<="]),
    ("seed-negative", _nothing, [*TRAIN, "--seed", "-1"], ["--seed", ">= 0"]),
    ("result-dir-and-out", _nothing, [*TRAIN, "--out", "new", "--result_dir", "new"],
     ["--result_dir is another name for --out", "give one of them"]),
    ("out-after-result-dir", _nothing, [*TRAIN, "--result_dir", "new", "--out", "other"],
     ["--result_dir is another name for --out"]),
    ("config-noise-lr-nan", lambda w: write_file(w / "c.json", '{"noise_lr": NaN}'), [*TRAIN, "--config", "c.json"],
     ["c.json", "noise_lr", "finite"]),
    # the machine
    ("backend-gsplat-without-cuda", _without_cuda, [*TRAIN, "--backend", "gsplat"], ["--backend gsplat", "CUDA"]),
    ("absgrad-on-the-cpu", _without_cuda, [*TRAIN, "--absgrad"], ["--absgrad", "gsplat backend"]),
    # the COLMAP scene
    ("test-every-holds-out-all", _nothing, [*TRAIN, "--test_every", "1"], ["--test_every", "nothing is left"]),
    ("data-dir-missing", _nothing, [*TRAIN, "--data_dir", "nowhere"], ["nowhere", "no such scene directory"]),
    ("sparse-missing", lambda w: shutil.rmtree(w / "scene" / "sparse"), TRAIN, ["scene/sparse/0", "no COLMAP model"]),
    ("cameras-bin-truncated", lambda w: _cut(w / SPARSE / "cameras.bin", 30), TRAIN, ["cameras.bin", "truncated"]),
    ("images-bin-garbage", lambda w: write_file(w / SPARSE / "images.bin", b"\x05" * 64), TRAIN, ["images.bin"]),
    ("frames-bin-random-bytes", lambda w: write_file(w / SPARSE / "frames.bin", os.urandom(764)), TRAIN, ["frames.bin"]),
    ("rigs-bin-trailing-bytes", lambda w: _append(w / SPARSE / "rigs.bin", b"x"), TRAIN, ["rigs.bin", "trailing bytes"]),
    ("points3D-missing", lambda w: (w / SPARSE / "points3D.bin").unlink(), TRAIN, ["points3D.bin", "missing"]),
    ("no-3d-points", lambda w: write_file(w / SPARSE / "points3D.bin", struct.pack("<Q", 0)), TRAIN,
     ["scene/sparse/0", "no 3D points"]),
    ("camera-focal-nan", lambda w: _patch(w / SPARSE / "cameras.bin", 32, "<d", float("nan")), TRAIN,
     ["cameras.bin", "camera 1", "finite"]),
    ("camera-focal-negative", lambda w: _patch(w / SPARSE / "cameras.bin", 32, "<d", -100.0), TRAIN,
     ["cameras.bin", "camera 1", "focal"]),
    ("pose-infinite", lambda w: _patch(w / SPARSE / "frames.bin", 8 + 4 + 4 + 4 * 8, "<d", float("inf")), TRAIN,
     ["frames.bin", "pose is not finite"]),
    ("point-nan", lambda w: _patch(w / SPARSE / "points3D.bin", 8 + 8, "<d", float("nan")), TRAIN,
     ["points3D.bin", "not finite"]),
    ("images-folder-missing", lambda w: shutil.rmtree(w / "scene" / "images"), TRAIN, ["scene/images", "missing"]),
    ("image-missing", lambda w: (w / IMAGE).unlink(), TRAIN, ["img_003.png", "missing"]),
    ("image-truncated", lambda w: _cut(w / IMAGE, 200), TRAIN,
     ["img_003.png", "cannot be decoded"]),
    ("image-random-bytes", lambda w: write_file(w / IMAGE, os.urandom(2000)), TRAIN,
     ["img_003.png", "cannot be read as an image"]),
    ("image-bomb", lambda w: write_file(w / IMAGE, png_header(20_000, 20_000)), TRAIN,
     ["img_003.png", "400,000,000 pixels"]),
    ("image-oversized", lambda w: write_file(w / IMAGE, png_header(12_000, 9_000)), TRAIN,
     ["img_003.png", "100,000,000 allowed"]),
    ("image-too-small-for-data-factor", _small_image, [*TRAIN, "--data_factor", "8"],
     ["img_003.png", "too small for --data_factor 8"]),
    # --ckpt and --lpips_weights
    ("ckpt-missing", _nothing, [*TRAIN, "--ckpt", "nope.pt"], ["nope.pt", "no such file"]),
    ("ckpt-random-bytes", lambda w: write_file(w / "bad.pt", os.urandom(3000)), [*TRAIN, "--ckpt", "bad.pt"],
     ["bad.pt", "not a readable checkpoint"]),
    ("ckpt-of-another-sh-degree", _nothing, [*TRAIN, "--ckpt", CHECKPOINT, "--sh_degree", "3"],
     ["ckpt_7_rank0.pt", "--sh_degree 3"]),
    ("lpips-missing", _nothing, [*TRAIN, "--lpips_weights", "nope.pt"], ["nope.pt", "no such file"]),
    ("lpips-not-lpips", _nothing, [*TRAIN, "--lpips_weights", CHECKPOINT], ["ckpt_7_rank0.pt", "LPIPS weights"]),
    # --resume: the checkpoint is checked before the run is touched
    ("resume-checkpoint-truncated", lambda w: _cut(w / CHECKPOINT, 300), RESUME,
     ["ckpt_7_rank0.pt", "cannot be loaded"]),
    ("resume-checkpoint-random-bytes", lambda w: write_file(w / CHECKPOINT, os.urandom(3000)), RESUME,
     ["ckpt_7_rank0.pt", "cannot be loaded"]),
    ("resume-checkpoint-pickle", lambda w: write_file(w / CHECKPOINT, pickle.dumps({"weights": [1]})), RESUME,
     ["ckpt_7_rank0.pt", "cannot be loaded"]),
    ("resume-checkpoint-of-another-trainer",
     lambda w: torch.save({"step": 3, "grid": {}, "optimizer": {}, "generator": torch.zeros(3)}, w / CHECKPOINT),
     RESUME, ["ckpt_7_rank0.pt", "not a splat checkpoint"]),
    ("resume-checkpoint-nan-means", lambda w: _edit_checkpoint(w, lambda s: s["splats"]["means"].fill_(float("nan"))),
     RESUME, ["ckpt_7_rank0.pt", "splats.means", "NaN"]),
    ("resume-checkpoint-wrong-optimizer",
     lambda w: _edit_checkpoint(w, lambda s: _set(s["optimizers"]["quats"], "state", {0: {"exp_avg": torch.zeros(2)}})),
     RESUME, ["ckpt_7_rank0.pt", "optimizers.quats"]),
    ("resume-checkpoint-of-another-strategy", _nothing, [*RESUME, "--strategy", "mcmc"],
     ["ckpt_7_rank0.pt", "strategy", "mcmc"]),
    ("resume-checkpoint-wrong-data-order",
     lambda w: _edit_checkpoint(w, lambda s: _set(s["batches"], "order", torch.arange(3))), RESUME,
     ["ckpt_7_rank0.pt", "batches.order"]),
    ("resume-checkpoint-wrong-scheduler", lambda w: _edit_checkpoint(w, lambda s: _set(s, "scheduler", {"x": 1})),
     RESUME, ["ckpt_7_rank0.pt", "scheduler"]),
    ("resume-checkpoint-bad-generator",
     lambda w: _edit_checkpoint(w, lambda s: _set(s["strategy"], "rng", torch.zeros(3))), RESUME,
     ["ckpt_7_rank0.pt", "strategy.rng"]),
    # runforge data synthetic-scene
    ("scene-out-is-a-file", lambda w: write_file(w / "afile", "x"), [*SCENE, "afile"], ["afile", "not a folder"]),
    ("scene-overwrite-a-file", lambda w: write_file(w / "afile", "x"), [*SCENE, "afile", "--overwrite"],
     ["afile", "not a folder"]),
    ("scene-out-under-a-file", lambda w: write_file(w / "afile", "x"), [*SCENE, "afile/scene"], ["afile", "not a folder"]),
    ("scene-out-not-empty", _nothing, [*SCENE, "run"], ["run", "not empty"]),
    ("scene-overwrite-a-run", _nothing, [*SCENE, "run", "--overwrite"], ["run", "only a scene folder"]),
    ("scene-one-image", _nothing, [*SCENE, "new", "--images", "1"], ["--images", "from 2"]),
    ("scene-width-huge", _nothing, [*SCENE, "new", "--width", "100000"], ["--width", "4096"]),
    ("scene-pixels-huge", _nothing, [*SCENE, "new", "--width", "2000", "--height", "2000"],
     ["--width 2000 --height 2000", "1,048,576"]),
    ("scene-no-points", _nothing, [*SCENE, "new", "--points", "0"], ["--points", "from 1"]),
    ("scene-seed-negative", _nothing, [*SCENE, "new", "--seed", "-1"], ["--seed", "from 0"]),
    ("scene-images-not-a-number", _nothing, [*SCENE, "new", "--images", "many"], ["--images", "invalid int"]),
]


@pytest.mark.parametrize("prepare, args, needles", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path: Path, base: Path, prepare: Any, args: list[Any],
                                                          needles: list[str]) -> None:
    shutil.copytree(base / "scene", tmp_path / "scene")
    shutil.copytree(base / "run", tmp_path / "run", symlinks=True)
    prepare(tmp_path)
    before = tree_digest(tmp_path)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree_digest(tmp_path) == before  # no run or scene folder; the resumed run untouched
