"""The helpers every torch trainer shares (runforge.trainers.common) and the run layer's peak-VRAM
reading, each checked against values worked out independently of its formula."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from runforge.run import system  # noqa: E402
from runforge.trainers.common import png_bytes, psnr, ssim, write_png  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_psnr_is_per_image_from_a_known_error() -> None:
    x = torch.zeros(2, 3, 8, 8)
    y = torch.empty(2, 3, 8, 8)
    y[0], y[1] = 0.1, 0.01  # squared errors 1e-2 and 1e-4: 20 and 40 dB for a peak of 1
    assert torch.allclose(psnr(y, x), torch.tensor([20.0, 40.0]), atol=1e-4)
    # a batch is scored image by image: its mean is 30 dB, where the PSNR of the mean error would be 22.97
    assert psnr(y, x).mean().item() == pytest.approx(30.0, abs=1e-4)


def test_psnr_ignores_the_border_and_caps_identical_images() -> None:
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    damaged = x.clone()
    damaged[..., :2, :] = 1 - damaged[..., :2, :]
    damaged[..., :, -2:] = 1 - damaged[..., :, -2:]
    assert psnr(damaged, x, border=2).item() == pytest.approx(100.0)  # error floored at 1e-10
    assert psnr(damaged, x).item() < 20
    # half the pixels off by 0.2 and half exact: mean squared error 0.02
    half = x.clone()
    half[..., :6, :] = x[..., :6, :] + 0.2
    assert psnr(half, x).item() == pytest.approx(-10 * math.log10(0.02), abs=1e-3)


def test_ssim_of_identical_and_of_flat_images() -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    # flat images have no variance: SSIM is the luminance term (2ab + c1) / (a² + b² + c1)
    a, b, c1 = 0.2, 0.6, 0.01**2
    flat = ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b))
    assert flat.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)


def test_ssim_agrees_with_pytorch_msssim() -> None:
    reference = pytest.importorskip("pytorch_msssim")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 24, 20, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    expected = reference.ssim(x, y, data_range=1.0, size_average=False, win_size=11)
    assert torch.allclose(ssim(x, y), expected, atol=1e-5)
    small_x, small_y = x[..., :7, :9], y[..., :7, :9]  # a 7-pixel side: the window shrinks to 7
    expected = reference.ssim(small_x, small_y, data_range=1.0, size_average=False, win_size=7)
    assert torch.allclose(ssim(small_x, small_y), expected, atol=1e-5)


def test_ssim_is_differentiable() -> None:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3), requires_grad=True)
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    (1 - ssim(x, target).mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4)])
def test_png_round_trip(tmp_path: Path, shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = write_png(tmp_path / "made" / "here.png", pixels)
    assert path == tmp_path / "made" / "here.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and data == png_bytes(pixels)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (7, 5)
        assert np.array_equal(np.asarray(image), pixels)
    assert [p.name for p in path.parent.iterdir()] == ["here.png"]  # no temporary file left


def test_png_of_a_pil_image_and_an_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "view.png"
    path.write_bytes(b"old")
    picture = Image.new("RGB", (3, 2), (10, 20, 30))
    write_png(path, picture, durable=False)
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.getpixel((2, 1)) == (10, 20, 30)


def test_peak_vram_is_unknown_without_cuda_started() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA is in use in this process")
    assert system.cuda_peak_gb() is None
    code = "import sys; from runforge.run import system; assert system.cuda_peak_gb() is None; " \
           "assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_vram_follows_the_largest_allocation() -> None:
    torch.cuda.reset_peak_memory_stats()
    block = torch.empty(2**28, dtype=torch.uint8, device="cuda")  # 0.25 GiB
    del block
    assert system.cuda_peak_gb() >= 0.25
