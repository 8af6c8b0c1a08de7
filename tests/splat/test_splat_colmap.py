"""COLMAP scenes: the synthetic writer, the pycolmap-based parser, and errors on broken models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from runforge.cli import main  # noqa: E402
from runforge.errors import BadInputError  # noqa: E402
from runforge.trainers.splat.colmap import Parser  # noqa: E402
from runforge.trainers.splat.scene import write_synthetic_scene  # noqa: E402

SMALL = dict(n_images=9, width=64, height=48, n_points=200)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scenes")
    out = {}
    for model in ("PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "OPENCV"):
        out[model] = write_synthetic_scene(root / model, camera_model=model, **SMALL)
    out["text"] = write_synthetic_scene(root / "text", text=True, **SMALL)
    return out


def test_cli_writes_a_colmap_model_pycolmap_reads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scene"
    assert main(["data", "synthetic-scene", str(out), "--images", "6", "--width", "32", "--height", "24",
                 "--points", "120"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"img_{i:03d}.png" for i in range(6)]
    assert sorted(p.name for p in (out / "sparse" / "0").iterdir()) == \
        ["cameras.bin", "frames.bin", "images.bin", "points3D.bin", "rigs.bin"]
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert rec.num_reg_images() == 6 and rec.num_cameras() == 1
    assert 50 <= rec.num_points3D() <= 120
    assert all(p.track.length() >= 2 for p in rec.points3D.values())
    # Keypoints were made by projecting the points: reprojection error is ~0.
    assert rec.compute_mean_reprojection_error() < 1e-6
    # A second write into the same folder refuses, leaving it untouched.
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["data", "synthetic-scene", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before


def test_binary_and_text_models_parse_to_the_same_scene(scenes: dict[str, Path]) -> None:
    binary, text = Parser(scenes["PINHOLE"]), Parser(scenes["text"])
    assert binary.image_names == text.image_names == [f"img_{i:03d}.png" for i in range(9)]
    np.testing.assert_allclose(binary.camtoworlds, text.camtoworlds, atol=1e-5)
    np.testing.assert_allclose(binary.Ks, text.Ks, atol=1e-4)
    assert binary.points.shape == text.points.shape
    np.testing.assert_allclose(np.sort(binary.points, 0), np.sort(text.points, 0), atol=1e-4)
    assert binary.images[0].shape == (48, 64, 3) and binary.images[0].dtype == np.uint8


@pytest.mark.parametrize("model", ["PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "OPENCV"])
def test_each_camera_model_loads_as_an_undistorted_pinhole(scenes: dict[str, Path], model: str) -> None:
    parser = Parser(scenes[model])
    pinhole = Parser(scenes["PINHOLE"])
    np.testing.assert_allclose(parser.Ks, pinhole.Ks, atol=1e-3)  # same focal and principal point
    np.testing.assert_allclose(parser.camtoworlds, pinhole.camtoworlds, atol=1e-5)
    from PIL import Image

    with Image.open(scenes[model] / "images" / "img_004.png") as im:
        raw = np.asarray(im).astype(float)
    undistorted = parser.images[4].astype(float)
    truth = pinhole.images[4].astype(float)
    err = np.abs(undistorted - truth)[3:-3, 3:-3].mean()  # borders sample outside the distorted image
    if model in ("SIMPLE_RADIAL", "OPENCV"):
        raw_err = np.abs(raw - truth)[3:-3, 3:-3].mean()
        assert err < 0.6 * raw_err, (err, raw_err)
    assert err < 4.0


def test_data_factor_downsamples_or_uses_images_factor(scenes: dict[str, Path], tmp_path: Path) -> None:
    full = Parser(scenes["PINHOLE"])
    half = Parser(scenes["PINHOLE"], factor=2)
    assert half.images[0].shape == (24, 32, 3)
    np.testing.assert_allclose(half.Ks[:, :2], full.Ks[:, :2] / 2, rtol=1e-5)
    scene = tmp_path / "scene"
    shutil.copytree(scenes["PINHOLE"], scene)
    (scene / "images_2").mkdir()
    from PIL import Image

    for name in full.image_names:
        Image.new("RGB", (32, 24), (255, 0, 0)).save(scene / "images_2" / name)
    assert (Parser(scene, factor=2).images[0] == [255, 0, 0]).all()


def test_split_and_normalization(scenes: dict[str, Path]) -> None:
    parser = Parser(scenes["PINHOLE"], normalize=True, test_every=8)
    assert parser.val_indices == [0, 8]
    assert parser.train_indices == [1, 2, 3, 4, 5, 6, 7]
    centres = parser.camtoworlds[:, :3, 3]
    assert np.median(np.linalg.norm(centres - centres.mean(0), axis=1)) == pytest.approx(1.0, rel=0.3)
    up = -parser.camtoworlds[:, :3, 1].mean(0)
    assert up[2] > 0.8  # cameras' up is +z
    assert parser.scene_scale == pytest.approx(np.linalg.norm(centres - centres.mean(0), axis=1).max())
    # Points stay in the same relation to the cameras: the sphere at the scene centre is in front of camera 0.
    w2c = np.linalg.inv(parser.camtoworlds[0])
    depth = parser.points @ w2c[:3, :3].T + w2c[:3, 3]
    assert (depth[:, 2] > 0).mean() > 0.9


def _train_error(data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    code = main(["train", "splat", "--preset", "tiny", "--data_dir", str(data_dir), "--out", str(tmp_path / "run"),
                 "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


@pytest.mark.parametrize("damage, named", [
    ("truncate cameras.bin", "cameras.bin"),
    ("garbage images.bin", "images.bin"),
    ("delete points3D.bin", "points3D.bin"),
    ("delete sparse", "sparse/0"),
    ("delete an image", "img_003.png"),
    ("bad text cameras", "cameras.txt"),
])
def test_broken_models_exit_2_naming_the_file(scenes: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str], damage: str, named: str) -> None:
    scene = tmp_path / "scene"
    shutil.copytree(scenes["text" if "text" in damage else "PINHOLE"], scene)
    sparse = scene / "sparse" / "0"
    if damage == "truncate cameras.bin":
        (sparse / "cameras.bin").write_bytes((sparse / "cameras.bin").read_bytes()[:20])
    elif damage == "garbage images.bin":
        (sparse / "images.bin").write_bytes(b"\x05" * 64)
    elif damage == "delete points3D.bin":
        (sparse / "points3D.bin").unlink()
    elif damage == "delete sparse":
        shutil.rmtree(scene / "sparse")
    elif damage == "delete an image":
        (scene / "images" / "img_003.png").unlink()
    else:
        (sparse / "cameras.txt").write_text("1 NOT_A_MODEL 64 48 1 2 3\n")
    err = _train_error(scene, capsys, tmp_path)
    assert named in err, err
    with pytest.raises(BadInputError):
        Parser(scene)
