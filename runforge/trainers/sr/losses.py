"""Loss terms and quality measures. Images are (B, 3, H, W) floats in [0, 1].

    terms = LossTerms(perceptual=load_vgg_features(path) or None)
    values = terms(sr, hr)                      # {"l1": t, "ms": t, "gradient": t[, "perceptual": t]}
    total = sum(weights[k] * v for k, v in values.items())

The perceptual term needs pretrained VGG weights from a local file (nothing is downloaded): a
torchvision-style VGG16/VGG19 state dict (`features.0.weight`, ...), e.g. `vgg19-dcbb9e9d.pth`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import BadInputError
from ..common import load_torch_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return (sr - hr).abs().mean()


def multiscale_loss(sr: torch.Tensor, hr: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """L1 over an image pyramid (halved `levels` times); full resolution is the l1 term's job."""
    losses = []
    for _ in range(levels):
        if min(sr.shape[-2:]) < 2:
            break
        sr, hr = F.avg_pool2d(sr, 2), F.avg_pool2d(hr, 2)
        losses.append(l1_loss(sr, hr))
    return torch.stack(losses).mean() if losses else l1_loss(sr, hr)


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0


def sobel(images: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel responses of each channel: (B, 2*C, H, W), replicate-padded."""
    c = images.shape[1]
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.T]).to(images).unsqueeze(1).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernels, groups=c)


def gradient_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return l1_loss(sobel(sr), sobel(hr))


class VGGFeatures(nn.Module):
    """The conv/ReLU/max-pool stack of a torchvision VGG (no batch norm), rebuilt from its state dict.

    Features are taken after the last ReLU before each of the first `stages` pooling layers
    (relu1_2, relu2_2, relu3_x ...), the layers SRGAN/ESRGAN-style perceptual losses compare.
    """

    def __init__(self, state: dict[str, torch.Tensor], stages: int = 3) -> None:
        super().__init__()
        indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.") and k.endswith(".weight")})
        self.stages = nn.ModuleList()
        layers: list[nn.Module] = []
        for position, index in enumerate(indices):
            weight = state[f"features.{index}.weight"]
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], padding=weight.shape[2] // 2)
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(state[f"features.{index}.bias"])
            layers += [conv, nn.ReLU(inplace=False)]
            following = indices[position + 1] if position + 1 < len(indices) else None
            # torchvision numbers conv, relu[, pool]: a gap of 3 to the next conv means a pool sits between.
            if following is None or following - index == 3:
                self.stages.append(nn.Sequential(*layers))
                layers = [nn.MaxPool2d(2)]
                if len(self.stages) == stages:
                    break
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean) / self.std
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def load_vgg_features(path: Path) -> VGGFeatures:
    """VGG features from a local state dict; a missing or foreign file is a BadInputError naming it."""
    path = Path(path)
    state = load_torch_file(path, "a torch state dict (--perceptual_weights: a local VGG16/19 file)")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state) or not any(
            k.startswith("features.") and k.endswith(".weight") for k in state):
        raise BadInputError(path, "holds no 'features.N.weight' tensors; expected a torchvision-style VGG16/19 state dict")
    if any("running_mean" in k for k in state):
        raise BadInputError(path, "is a VGG with batch norm; use the plain VGG16/19 weights")
    problem = _vgg_problem(state)
    if problem:
        raise BadInputError(path, f"its 'features' are not a stack of 2D convolutions over RGB: {problem}")
    return VGGFeatures(state)


def _vgg_problem(state: dict[str, Any]) -> str | None:
    """What VGGFeatures could not build or run from `state`, or None."""
    pattern = re.compile(r"features\.(\d+)\.weight")
    indices = sorted(int(m.group(1)) for k in state if (m := pattern.fullmatch(k)))
    channels = 3
    for index in indices:
        weight, bias = state[f"features.{index}.weight"], state.get(f"features.{index}.bias")
        if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or not weight.is_floating_point():
            return f"features.{index}.weight is not a 4-d float tensor"
        out, inputs, height, width = weight.shape
        if inputs != channels or height != width or height % 2 == 0:
            return (f"features.{index}.weight has shape {tuple(weight.shape)}; expected ({out}, {channels}, k, k) "
                    "with an odd k")
        if not isinstance(bias, torch.Tensor) or bias.shape != (out,):
            return f"features.{index}.bias is missing or not of shape ({out},)"
        channels = out
    return None


def perceptual_loss(features: VGGFeatures, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        target = features(hr)
    return torch.stack([l1_loss(a, b) for a, b in zip(features(sr), target)]).mean()


class LossTerms(nn.Module):
    """Every enabled loss term, unweighted: the adaptive system owns the weights."""

    def __init__(self, perceptual: VGGFeatures | None = None) -> None:
        super().__init__()
        self.perceptual = perceptual

    @property
    def names(self) -> tuple[str, ...]:
        return ("l1", "ms", "gradient") + (("perceptual",) if self.perceptual is not None else ())

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        values = {"l1": l1_loss(sr, hr), "ms": multiscale_loss(sr, hr), "gradient": gradient_loss(sr, hr)}
        if self.perceptual is not None:
            values["perceptual"] = perceptual_loss(self.perceptual, sr, hr)
        return values
