"""Held-out metrics, trajectory camera paths and the MP4 writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import BadInputError
from ..common import describe as describe_error
from ..common import load_torch_file
from ..common import psnr as psnr_batch
from ..common import ssim as ssim_batch


def psnr(pred: Tensor, target: Tensor) -> float:
    """PSNR (dB) of one view, pred and target [1, 3, H, W] in 0..1; views are averaged by the caller."""
    return float(psnr_batch(pred, target).mean())


def ssim(pred: Tensor, target: Tensor) -> float:
    """SSIM of one view, pred and target [1, 3, H, W] in 0..1 (the training loss takes the tensor)."""
    return float(ssim_batch(pred, target).mean())


class LPIPS(torch.nn.Module):
    """LPIPS with an AlexNet backbone, built here (no torchvision) from one local file.

    The file is a torch dict with the torchvision AlexNet `features.*` weights and the
    lpips package's `lin{0..4}.model.1.weight` heads (`alex.pth`), e.g. made with
    `torch.save({**alexnet_state_dict, **lpips_alex_state_dict}, "lpips_alex.pt")`.
    """

    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self, weights: Path) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS)
        state = load_torch_file(weights, "LPIPS weights")
        try:
            self.features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
            for i, head in enumerate(self.heads):
                head.weight.data.copy_(state[f"lin{i}.model.1.weight"])
        except Exception as exc:  # a file of another shape: KeyError, RuntimeError, AttributeError, ...
            raise BadInputError(weights, f"not usable LPIPS weights ({describe_error(exc)})") from None
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.taps = (1, 4, 7, 9, 11)  # outputs of the five ReLUs

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor) -> float:
        def feats(x: Tensor) -> list[Tensor]:
            x = ((x * 2 - 1) - self.shift) / self.scale
            out = []
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in self.taps:
                    out.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))
            return out

        total = 0.0
        for head, a, b in zip(self.heads, feats(pred), feats(target)):
            total += float(head((a - b) ** 2).mean())
        return total


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _look_at(position: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    forward = _normalize(target - position)
    right = _normalize(np.cross(forward, up))
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], 1)
    c2w[:3, 3] = position
    return c2w


def trajectory(kind: str, camtoworlds: np.ndarray, n_frames: int) -> np.ndarray:
    """Camera-to-worlds [n_frames, 4, 4] (COLMAP axes) along `interp`, `spiral` or `ellipse_z`."""
    positions = camtoworlds[:, :3, 3]
    up = _normalize(-camtoworlds[:, :3, 1].mean(0))
    # Where the cameras look: the point nearest to all optical axes.
    dirs = camtoworlds[:, :3, 2]
    A = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    focus = np.linalg.lstsq(A.sum(0), (A @ positions[:, :, None]).sum(0), rcond=None)[0][:, 0]
    if kind == "interp":
        keys = np.linspace(0, len(positions) - 1, n_frames)
        lo = np.floor(keys).astype(int)
        hi = np.minimum(lo + 1, len(positions) - 1)
        t = (keys - lo)[:, None]
        path = (1 - t) * positions[lo] + t * positions[hi]
        return np.stack([_look_at(p, focus, up) for p in path])
    centre = positions.mean(0)
    offsets = positions - centre
    radius = np.percentile(np.abs(offsets), 90, axis=0)
    theta = np.linspace(0, 2 * np.pi, n_frames, endpoint=False)
    if kind == "spiral":
        path = centre + np.stack([radius[0] * np.cos(theta), radius[1] * np.sin(theta),
                                  radius[2] * np.sin(2 * theta)], -1) * 0.5
        forward = _normalize(focus - centre)
        return np.stack([_look_at(p, p + forward, up) for p in path])
    if kind == "ellipse_z":
        # An ellipse around the focus at the cameras' height (in the plane orthogonal to `up`).
        axis_a = _normalize(np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0]))
        axis_b = np.cross(up, axis_a)
        rel = positions - focus
        ra, rb = np.abs(rel @ axis_a).max(), np.abs(rel @ axis_b).max()
        height = float(np.mean(rel @ up))
        path = focus + height * up + ra * np.cos(theta)[:, None] * axis_a + rb * np.sin(theta)[:, None] * axis_b
        return np.stack([_look_at(p, focus, up) for p in path])
    raise ValueError(f"unknown trajectory {kind!r}")


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """H.264 MP4 through imageio-ffmpeg's bundled ffmpeg, written to a temp name then renamed."""
    import imageio.v2 as imageio

    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=2,
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    os.replace(tmp, path)
    return path


def to_uint8(x: Tensor) -> np.ndarray:
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def describe(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
