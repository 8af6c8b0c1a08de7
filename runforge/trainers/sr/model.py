"""A compact residual CNN with PixelShuffle upsampling (EDSR-like, without batch norm).

    lr (B, 3, h, w) -> Head -> Forward_Block_01 ... Forward_Block_N -> Final_Fusion (+ head skip)
                    -> Upsampler (conv + PixelShuffle, x2 stages) -> Reconstruction -> + bicubic(lr)
                    -> (B, 3, h*s, w*s)

The network predicts the residual over bicubic upscaling, so a fresh model starts at bicubic quality
and every step of training is a gain over the baseline. The named blocks are what the layer activity
map (`layer_activity`) reports.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ...config import build
from ...errors import ConfigError
from ..common import load_model_state
from .config import Config


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class Upsampler(nn.Sequential):
    def __init__(self, channels: int, scale: int) -> None:
        stages: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            stages += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        super().__init__(*stages)


class SRNet(nn.Module):
    def __init__(self, scale: int, channels: int = 64, blocks: int = 16) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {scale}")
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.ModuleDict({f"Forward_Block_{i + 1:02d}": ResidualBlock(channels) for i in range(blocks)})
        self.fusion = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsampler = Upsampler(channels, scale)
        self.reconstruction = nn.Conv2d(channels, 3, 3, padding=1)
        # Start as exact bicubic: the residual branch's last layer is zero.
        nn.init.zeros_(self.reconstruction.weight)
        nn.init.zeros_(self.reconstruction.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        head = self.head(lr)
        x = head
        for block in self.body.values():
            x = block(x)
        x = self.fusion(x) + head
        residual = self.reconstruction(self.upsampler(x))
        return residual + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)

    def named_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """The blocks of the layer activity map, in forward order."""
        yield from self.body.items()
        yield "Final_Fusion", self.fusion
        yield "Upsampler", self.upsampler


def model_from_checkpoint(state: Any) -> SRNet:
    """The SRNet of an sr checkpoint (best.pt or last.pt), rebuilt from the config it holds; ValueError when
    the state is no such checkpoint."""
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or "model" not in state:
        raise ValueError("expected the config and model of an sr checkpoint")
    try:
        cfg = build(Config, None, state["config"], source="its config key ")
    except ConfigError as exc:
        raise ValueError(exc.problem) from None
    model = SRNet(cfg.scale, cfg.channels, cfg.blocks)
    load_model_state(model, state["model"])
    return model


@torch.no_grad()
def layer_activity(model: SRNet, lr: torch.Tensor) -> dict[str, float]:
    """Mean |activation| of each named block on `lr`, in % of the most active block (forward hooks)."""
    means: dict[str, float] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: means.__setitem__(name, out.abs().mean().item()))
             for name, module in model.named_blocks()]
    try:
        model(lr)
    finally:
        for hook in hooks:
            hook.remove()
    top = max(means.values(), default=0.0)
    return {name: round(100.0 * value / top, 2) if top > 0 else 0.0 for name, value in means.items()}
