"""Evaluation pieces: metrics, LPIPS from a local weights file, trajectories, backend choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runforge.errors import BadInputError, ConfigError  # noqa: E402
from runforge.trainers.splat.backend import choose_backend  # noqa: E402
from runforge.trainers.splat.evaluation import LPIPS, psnr, ssim, trajectory  # noqa: E402
from runforge.trainers.splat.scene import camera_poses  # noqa: E402


def test_psnr_and_ssim() -> None:
    a = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert psnr(a, (a + 0.1).clamp(0, 1)) < psnr(a, (a + 0.01).clamp(0, 1))
    assert psnr(a * 0 + 0.5, a * 0 + 0.6) == pytest.approx(20.0, abs=1e-3)
    # its own generator: the global one may have been seeded 0 by another test, which would give `a` again
    other = torch.rand(a.shape, generator=torch.Generator().manual_seed(1))
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-6) and ssim(a, other) < 0.2


def test_lpips_from_a_local_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # torchvision AlexNet `features.*` weights + lpips heads `lin{i}.model.1.weight`, random here.
    shapes = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
              "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3)}
    state = {}
    for name, shape in shapes.items():
        state[f"{name}.weight"] = torch.randn(shape) * 0.05
        state[f"{name}.bias"] = torch.zeros(shape[0])
    for i, c in enumerate(LPIPS.CHANNELS):
        state[f"lin{i}.model.1.weight"] = torch.rand(1, c, 1, 1)
    path = tmp_path / "lpips_alex.pt"
    torch.save(state, path)
    lpips = LPIPS(path)
    x = torch.rand(1, 3, 64, 64)
    assert lpips(x, x) == 0.0
    assert lpips(x, torch.rand(1, 3, 64, 64)) > lpips(x, (x + 0.02).clamp(0, 1)) > 0
    broken = tmp_path / "broken.pt"
    torch.save({"features.0.weight": torch.zeros(1)}, broken)
    with pytest.raises(BadInputError, match="broken.pt"):
        LPIPS(broken)


@pytest.mark.parametrize("kind", ["interp", "spiral", "ellipse_z"])
def test_trajectories_are_valid_camera_paths(kind: str) -> None:
    c2ws = np.stack(camera_poses(12, np.random.default_rng(0)))
    path = trajectory(kind, c2ws, 20)
    assert path.shape == (20, 4, 4)
    rotations = path[:, :3, :3]
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (20, 3, 3)),
                               atol=1e-6)
    # Every frame looks towards the scene (the origin region the cameras circle).
    to_centre = -path[:, :3, 3] / np.linalg.norm(path[:, :3, 3], axis=1, keepdims=True)
    assert (np.einsum("ni,ni->n", path[:, :3, 2], to_centre) > 0.5).all()


def test_backend_choice_on_a_cpu() -> None:
    cpu = torch.device("cpu")
    assert choose_backend("auto", cpu) == "torch"
    assert choose_backend("torch", cpu) == "torch"
    with pytest.raises(ConfigError, match="CUDA"):
        choose_backend("gsplat", cpu)
