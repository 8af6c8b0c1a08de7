"""The sr trainer's parts: textures, degradation, model, losses and quality measures, docs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from runforge.config import build
from runforge.errors import ConfigError
from runforge.trainers.sr.config import PRESETS, Config
from runforge.trainers.sr.data import PatchSampler, bundled_dataset, degrade, texture, upscale_bicubic, val_crops
from runforge.trainers.common import psnr, ssim
from runforge.trainers.sr.losses import LossTerms, VGGFeatures, gradient_loss, load_vgg_features, sobel
from runforge.trainers.sr.model import SRNet, layer_activity
from runforge.trainers.sr.train import learning_rate

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def test_textures_are_deterministic_and_full_of_edges():
    import numpy as np

    first, again, other = (np.asarray(texture(128, seed)) for seed in (3, 3, 4))
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    assert (first == again).all() and (first != other).any()
    image = torch.from_numpy(first.copy()).permute(2, 0, 1)[None].float() / 255
    edges = sobel(image).abs()
    # Real structure: strong edges somewhere, but most of the image is not noise.
    assert edges.amax() > 0.3 and (edges > 0.1).float().mean() < 0.5
    assert len({tuple(p) for p in first.reshape(-1, 3)[::7]}) > 100  # gradients, not a few flat colours


def test_bundled_set_is_generated_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setattr("runforge.trainers.sr.data.BUNDLED_TRAIN", 3)
    monkeypatch.setattr("runforge.trainers.sr.data.BUNDLED_VAL", 2)
    monkeypatch.setattr("runforge.trainers.sr.data.BUNDLED_SIZE", 64)
    root = bundled_dataset(tmp_path)
    assert sorted(p.name for p in (root / "train").iterdir()) == ["texture_000.png", "texture_001.png", "texture_002.png"]
    assert sorted(p.name for p in (root / "val").iterdir()) == ["texture_000.png", "texture_001.png"]
    stamp = (root / "train" / "texture_000.png").stat().st_mtime_ns
    assert bundled_dataset(tmp_path) == root
    assert (root / "train" / "texture_000.png").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no build folder left behind


def test_degrade_is_bicubic_by_default_and_draws_blur_and_noise():
    hr = torch.rand(4, 3, 32, 32)
    lr = degrade(hr, 2, 0.0, 0.0)
    expected = F.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    assert lr.shape == (4, 3, 16, 16)
    assert torch.allclose(lr, (expected.clamp(0, 1) * 255).round() / 255)
    blurred = degrade(hr, 2, 2.0, 0.0, torch.Generator().manual_seed(0))
    noisy = degrade(hr, 2, 0.0, 0.1, torch.Generator().manual_seed(0))
    assert not torch.equal(blurred, lr) and not torch.equal(noisy, lr)
    assert torch.equal(degrade(hr, 4, 1.0, 0.05, torch.Generator().manual_seed(1), fixed=True),
                       degrade(hr, 4, 1.0, 0.05, torch.Generator().manual_seed(1), fixed=True))
    assert upscale_bicubic(lr, 2).shape == hr.shape


def test_patches_and_val_crops_have_the_asked_sizes():
    images = [torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8), torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)]
    batch = PatchSampler(images, 24).batch(5, torch.Generator().manual_seed(0))
    assert batch.shape == (5, 3, 24, 24) and 0 <= batch.min() and batch.max() <= 1
    crops = val_crops(images, 32, 5)
    assert crops.shape == (5, 3, 32, 32)
    assert torch.equal(crops, val_crops(images, 32, 5))  # fixed: the same crops every validation


@pytest.mark.parametrize("scale", [2, 4])
def test_model_starts_at_bicubic_and_every_block_learns(scale):
    torch.manual_seed(0)
    model = SRNet(scale, channels=8, blocks=2)
    lr = torch.rand(2, 3, 12, 12)
    sr = model(lr)
    assert sr.shape == (2, 3, 12 * scale, 12 * scale)
    assert torch.allclose(sr, F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False))
    hr = torch.rand_like(sr)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):  # the zero-initialised last layer opens the path on the first step
        optimizer.zero_grad()
        sum(LossTerms()(model(lr), hr).values()).backward()
        optimizer.step()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    activity = layer_activity(model, lr)
    assert list(activity) == ["Forward_Block_01", "Forward_Block_02", "Final_Fusion", "Upsampler"]
    assert max(activity.values()) == 100.0 and min(activity.values()) > 0


def test_quality_measures_match_their_definitions():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert (ssim(x, torch.rand_like(x)) < 0.2).all()
    grey = torch.full((2, 3, 8, 8), 0.5)
    off = grey + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # MSE 0.01 and 0.0001 on [0, 1]
    assert torch.allclose(psnr(off, grey), torch.tensor([20.0, 40.0]), atol=1e-4)
    inner = x.clone()
    inner[..., :2, :] = 0  # damage only the border psnr ignores
    assert psnr(inner, x, border=2).min() > 90


def test_loss_terms_are_zero_on_a_match_and_pull_towards_the_target():
    hr = torch.rand(1, 3, 16, 16)
    values = LossTerms()(hr.clone(), hr)
    assert set(values) == {"l1", "ms", "gradient"} and all(v.item() == 0 for v in values.values())
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 1.0
    assert gradient_loss(edge, torch.zeros_like(edge)) > 0  # an edge the target lacks costs
    sr = torch.rand(1, 3, 16, 16, requires_grad=True)
    sum(LossTerms()(sr, hr).values()).backward()
    assert sr.grad.abs().sum() > 0


def test_vgg_features_follow_torchvision_numbering(tmp_path):
    state = {f"features.{i}.weight": torch.randn(c_out, c_in, 3, 3) for i, c_in, c_out in
             [(0, 3, 4), (2, 4, 4), (5, 4, 6), (7, 6, 6), (10, 6, 8), (12, 8, 8), (14, 8, 8), (17, 8, 8)]}
    state.update({k.replace("weight", "bias"): torch.zeros(v.shape[0]) for k, v in list(state.items())})
    path = tmp_path / "vgg.pth"
    torch.save({"state_dict": state}, path)
    features = load_vgg_features(path)
    assert isinstance(features, VGGFeatures) and len(features.stages) == 3
    outputs = features(torch.rand(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(1, 4, 32, 32), (1, 6, 16, 16), (1, 8, 8, 8)]
    sr = torch.rand(1, 3, 32, 32, requires_grad=True)
    value = LossTerms(features)(sr, torch.rand(1, 3, 32, 32))["perceptual"]
    value.backward()
    assert value > 0 and sr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in features.parameters())  # the network is frozen


@pytest.mark.parametrize("content, words", [
    (b"garbage", "cannot be loaded as a torch state dict"),
    ({"conv.weight": torch.zeros(1)}, "holds no 'features.N.weight' tensors"),
])
def test_foreign_perceptual_weights_are_named_errors(tmp_path, content, words):
    from runforge.errors import BadInputError

    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(BadInputError, match=words) as info:
        load_vgg_features(path)
    assert info.value.path == str(path)


def test_learning_rate_warms_up_then_follows_a_cosine():
    cfg = Config(steps=1000, lr=1e-3, min_lr=1e-5, warmup_steps=100)
    assert learning_rate(50, cfg) == (pytest.approx(5e-4), "warmup")
    assert learning_rate(100, cfg) == (pytest.approx(1e-3), "warmup")
    assert learning_rate(550, cfg) == (pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5)), "cosine")
    assert learning_rate(1000, cfg) == (pytest.approx(1e-5), "cosine")
    assert all(learning_rate(s, cfg)[0] >= learning_rate(s + 1, cfg)[0] for s in range(100, 1000))


def test_presets_pass_their_own_checks():
    for name, preset in PRESETS.items():
        preset.check()
        assert build(Config, preset) == preset, name  # every field within its flag's bounds, as if typed
    with pytest.raises(ConfigError, match="--min_lr"):  # the check the loop relies on does refuse
        replace(PRESETS["cpu"], min_lr=2 * PRESETS["cpu"].lr).check()
