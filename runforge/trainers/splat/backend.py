"""One render call for the trainer: gsplat's CUDA rasterization on a GPU, this project's rasterizer on the CPU."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import torch
from torch import Tensor

from ...errors import ConfigError
from . import raster


def choose_backend(requested: Literal["auto", "torch", "gsplat"], device: torch.device) -> str:
    has_gsplat = importlib.util.find_spec("gsplat") is not None
    if requested == "gsplat":
        if device.type != "cuda":
            raise ConfigError(None, "--backend gsplat: needs a CUDA device (torch.cuda.is_available() is false); "
                                    "use --backend torch")
        if not has_gsplat:
            raise ConfigError(None, "--backend gsplat: gsplat is not installed (`pip install gsplat`); "
                                    "use --backend torch")
        return "gsplat"
    if requested == "auto":
        return "gsplat" if device.type == "cuda" and has_gsplat else "torch"
    return "torch"


def render(backend: str, splats: torch.nn.ParameterDict, viewmats: Tensor, Ks: Tensor, width: int, height: int,
           sh_degree: int, near_plane: float, far_plane: float, tile_size: int = 16, chunk: int = 32,
           antialiased: bool = False, backgrounds: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """colors [C, H, W, 3], alphas [C, H, W, 1], info (means2d with its gradient, radii, width, height, n_cameras)."""
    means = splats["means"]
    quats = splats["quats"]
    scales = torch.exp(splats["scales"])
    opacities = torch.sigmoid(splats["opacities"])
    sh = torch.cat([splats["sh0"], splats["shN"]], 1)
    if backend == "gsplat":
        from gsplat.rendering import rasterization

        colors, alphas, info = rasterization(
            means=means, quats=quats, scales=scales, opacities=opacities, colors=sh, viewmats=viewmats, Ks=Ks,
            width=width, height=height, sh_degree=sh_degree, near_plane=near_plane, far_plane=far_plane,
            backgrounds=backgrounds, packed=False, absgrad=True, rasterize_mode="antialiased" if antialiased else "classic")
        if info["radii"].dim() == 3:  # gsplat >= 1.5 gives per-axis radii [C, N, 2]
            info["radii"] = info["radii"].max(-1).values
        return colors, alphas, info
    return raster.rasterize(means, quats, scales, opacities, sh, viewmats, Ks, width, height, sh_degree=sh_degree,
                            near_plane=near_plane, far_plane=far_plane, backgrounds=backgrounds, tile_size=tile_size,
                            chunk=chunk, antialiased=antialiased)
