"""The Gaussians: parameters, their Adam optimizers, and the standard 3DGS PLY file.

    splats, optimizers = create_splats_with_optimizers(points, rgbs, scene_scale, cfg_like...)
    write_ply(path, splats)    # x y z nx ny nz f_dc_0..2 f_rest_0.. opacity scale_0..2 rot_0..3 (INRIA layout)
    read_ply(path) -> dict of tensors in the same (activated-parameter) space as splats

Parameters are stored as in gsplat: means, log-scales, quaternions (wxyz,
unnormalised), opacity logits, sh0 [N, 1, 3] and shN [N, K-1, 3].
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ...errors import BadInputError
from .raster import rgb_to_sh

PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")


def knn_mean_distance(points: Tensor, k: int = 3, block: int = 2048) -> Tensor:
    """Root mean squared distance to the k nearest other points, [N]."""
    out = []
    for start in range(0, points.shape[0], block):
        d2 = torch.cdist(points[start:start + block], points).square()
        nearest = d2.topk(min(k + 1, points.shape[0]), largest=False).values[:, 1:]
        out.append(nearest.mean(-1).sqrt())
    return torch.cat(out)


def create_splats_with_optimizers(points: Tensor, rgbs: Tensor, scene_scale: float, *, sh_degree: int, init_opa: float,
                                  init_scale: float, means_lr: float, scales_lr: float, quats_lr: float,
                                  opacities_lr: float, sh0_lr: float, shN_lr: float, batch_size: int = 1,
                                  world_size: int = 1, device: str | torch.device = "cpu",
                                  generator: torch.Generator | None = None
                                  ) -> tuple[torch.nn.ParameterDict, dict[str, torch.optim.Adam]]:
    """Gaussians at `points` [N, 3] with colours `rgbs` [N, 3] in 0..1, and one Adam per parameter (as gsplat)."""
    n = points.shape[0]
    dist = knn_mean_distance(points).clamp_min(1e-7)
    scales = torch.log(dist * init_scale)[:, None].repeat(1, 3)
    quats = torch.rand(n, 4, generator=generator)
    opacities = torch.logit(torch.full((n,), init_opa))
    colors = torch.zeros(n, (sh_degree + 1) ** 2, 3)
    colors[:, 0] = rgb_to_sh(rgbs)
    params = [
        ("means", points, means_lr * scene_scale),
        ("scales", scales, scales_lr),
        ("quats", quats, quats_lr),
        ("opacities", opacities, opacities_lr),
        ("sh0", colors[:, :1], sh0_lr),
        ("shN", colors[:, 1:], shN_lr),
    ]
    splats = torch.nn.ParameterDict({name: torch.nn.Parameter(v.float().contiguous()) for name, v, _ in params}).to(device)
    # Larger batches: scale lr by sqrt(batch), and Adam's betas so the averaging horizon stays in images seen.
    bs = batch_size * world_size
    # On the CPU the fused Adam is one kernel per parameter instead of a dozen (the same arithmetic); the GPU
    # keeps gsplat's optimizer as it is.
    fused = torch.device(device).type == "cpu"
    optimizers = {
        name: torch.optim.Adam([{"params": splats[name], "lr": lr * math.sqrt(bs), "name": name}],
                               eps=1e-15 / math.sqrt(bs), betas=(1 - bs * (1 - 0.9), 1 - bs * (1 - 0.999)),
                               fused=fused or None)
        for name, _, lr in params
    }
    return splats, optimizers


def ply_property_names(n_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: str | Path, splats: torch.nn.ParameterDict | dict[str, Tensor]) -> Path:
    """The INRIA 3DGS layout (opens in SuperSplat, antimatter15/splat, ...): raw logits and log-scales,
    f_rest channel-major (all R coefficients, then G, then B). Written atomically."""
    from plyfile import PlyData, PlyElement

    path = Path(path)
    s = {k: v.detach().float().cpu() for k, v in splats.items()}
    n = s["means"].shape[0]
    rest = s["shN"].transpose(1, 2).reshape(n, -1)  # [N, 3 * (K-1)], channel-major
    columns = [s["means"], torch.zeros(n, 3), s["sh0"].reshape(n, 3), rest, s["opacities"].reshape(n, 1),
               s["scales"], s["quats"]]
    attrs = torch.cat(columns, 1).numpy()
    names = ply_property_names(rest.shape[1])
    vertex = np.empty(n, dtype=[(name, "f4") for name in names])
    for i, name in enumerate(names):
        vertex[name] = attrs[:, i]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_ply(path: str | Path) -> dict[str, Tensor]:
    """Read a 3DGS PLY back into parameter tensors (means, scales, quats, opacities, sh0, shN)."""
    from plyfile import PlyData

    try:
        v = PlyData.read(str(path))["vertex"]
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        raise BadInputError(path, f"not a 3DGS PLY file ({exc})") from None
    names = [p.name for p in v.properties]
    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    if n_rest % 3 or any(name not in names for name in ply_property_names(n_rest)):
        raise BadInputError(path, "missing 3DGS properties (x, f_dc_*, opacity, scale_*, rot_*)")
    col = lambda *keys: torch.from_numpy(np.stack([np.asarray(v[k], dtype=np.float32) for k in keys], 1))  # noqa: E731
    n = len(v["x"])
    return {
        "means": col("x", "y", "z"),
        "scales": col("scale_0", "scale_1", "scale_2"),
        "quats": col("rot_0", "rot_1", "rot_2", "rot_3"),
        "opacities": col("opacity")[:, 0],
        "sh0": col("f_dc_0", "f_dc_1", "f_dc_2").reshape(n, 1, 3),
        "shN": col(*[f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, n_rest // 3).transpose(1, 2).contiguous(),
    }
