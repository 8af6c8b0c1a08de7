"""A differentiable voxel renderer in pure PyTorch: exact cell traversal + alpha compositing.

Each ray is cut where it crosses the grid's planes (x = k, y = k, z = k), so every
segment lies in exactly one voxel and has an exact length L. A voxel of occupancy
probability p passes (1 - p)^L of the light, i.e. density = softplus(occupancy
logit) per voxel length, and a block of p = 1 is an opaque unit cube: the hard
render of a map.json is blocky and exact, with no interpolation.

Why this and not a `grid_sample` ray march (bench/voxel_render.py times both): every sample is one
row gather from a (V, 4) table (density + RGB) whose backward is one index_add,
instead of a trilinear grid_sample whose backward dominates; segments behind an
opaque surface (transmittance < `EARLY_STOP`) are dropped before the graph is
built, so an opaque world costs what its visible surface costs. Segments in empty
space in front of a surface are kept: their occupancy must receive gradient.

Shading is per face, like a voxel editor: the face a ray enters a voxel through
(the plane it crossed) is lit by a fixed directional sun plus ambient light.

Shapes: R rays, N packed segments (ray-major), V = X*Y*Z voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .dataset import Camera
from .map_io import COLORS, PALETTE, VoxelMap

EARLY_STOP = 1e-4
"""Transmittance below which a ray's remaining segments are ignored."""
HARD_DENSITY = 1e3
"""Density of a block in a hard render: opaque for any sliver longer than ~0.01 voxel."""
SUN = (0.35, 1.0, 0.55)
AMBIENT = 0.55
BACKGROUND = (1.0, 1.0, 1.0)


def palette_tensor(device: torch.device | str = "cpu") -> torch.Tensor:
    """(M, 3) RGB of the materials in PALETTE order."""
    return torch.tensor([COLORS[name] for name in PALETTE], dtype=torch.float32, device=device)


def hard_volume(vmap: VoxelMap, device: torch.device | str = "cpu") -> torch.Tensor:
    """(V, 4) density + RGB of a map: blocks are opaque, Air is empty."""
    material = torch.from_numpy(vmap.material.astype(np.int64)).to(device).reshape(-1)
    occupied = torch.from_numpy(vmap.occupied).to(device).reshape(-1) & (material != 0)
    density = occupied.float() * HARD_DENSITY
    return torch.cat([density[:, None], palette_tensor(device)[material]], dim=1)


def camera_rays(camera: Camera, block_size: float = 1.0, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Origins (on the near plane) and unit directions (H*W, 3) in voxel units, pixel centres, row 0 at the top."""
    xs = (np.arange(camera.width) + 0.5) / camera.width * 2 - 1
    ys = 1 - (np.arange(camera.height) + 0.5) / camera.height * 2
    x, y = np.meshgrid(xs, ys)  # (H, W)
    near_z = 0.0 if camera.depth == "zero_to_one" else -1.0
    points = []
    # huge (finite) matrices may overflow and a pixel may unproject to infinity: their NaN rays are dropped by
    # `traverse`, and no numpy warning may reach the console
    with np.errstate(all="ignore"):
        unproject = np.linalg.inv(camera.proj @ camera.view)
        for z in (near_z, 1.0):
            clip = np.stack([x, y, np.full_like(x, z), np.ones_like(x)], axis=-1).reshape(-1, 4)
            world = clip @ unproject.T
            points.append(world[:, :3] / world[:, 3:4])
        directions = points[1] - points[0]
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        origins = points[0] / block_size  # on the near plane: right for perspective and orthographic projections
    return (torch.tensor(origins, dtype=torch.float32, device=device),
            torch.tensor(directions, dtype=torch.float32, device=device))


@dataclass
class Segments:
    """The packed pieces of a batch of rays inside the grid, ordered by ray then by distance."""

    ray: torch.Tensor  # (N,) int64, index into the batch of rays
    cell: torch.Tensor  # (N,) int64, flat voxel index x*Y*Z + y*Z + z
    length: torch.Tensor  # (N,) float32, in voxel units
    shade: torch.Tensor  # (N,) float32, light on the face the segment enters through
    num_rays: int


def _face_shades(directions: torch.Tensor) -> torch.Tensor:
    """(R, 3): the light on the face a ray enters through when it crosses an x, y or z plane."""
    sun = torch.tensor(SUN, dtype=directions.dtype, device=directions.device)
    sun = sun / sun.norm()
    facing = -torch.sign(directions) * sun  # the face's outward normal is -sign(d) along its axis
    return AMBIENT + (1 - AMBIENT) * facing.clamp(min=0)


def traverse(origins: torch.Tensor, directions: torch.Tensor, size: Sequence[int], shading: bool = True) -> Segments:
    """Cut rays (R, 3) into per-voxel segments of a grid of `size` voxels (voxel units, box [0, size])."""
    device = origins.device
    extent = torch.tensor(size, dtype=origins.dtype, device=device)
    d = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    inv = 1.0 / d
    t0, t1 = (0 - origins) * inv, (extent - origins) * inv
    t_low, t_high = torch.minimum(t0, t1), torch.maximum(t0, t1)
    t_near, near_axis = t_low.max(dim=1)
    t_near = t_near.clamp(min=0)
    t_far = t_high.min(dim=1).values
    hit = torch.nonzero(t_far > t_near + 1e-6).squeeze(1)
    o, d, inv, t_near, t_far, near_axis = origins[hit], d[hit], inv[hit], t_near[hit], t_far[hit], near_axis[hit]

    crossings, axes = [t_near[:, None]], [near_axis[:, None]]
    for axis, n in enumerate(size):
        planes = torch.arange(n + 1, dtype=o.dtype, device=device)
        crossings.append((planes[None, :] - o[:, axis : axis + 1]) * inv[:, axis : axis + 1])
        axes.append(torch.full((1, n + 1), axis, device=device).expand(len(hit), -1))
    t = torch.cat(crossings, dim=1)  # (R', K)
    t = torch.minimum(torch.maximum(t, t_near[:, None]), t_far[:, None])
    t, order = torch.sort(t, dim=1)
    axis_sorted = torch.gather(torch.cat(axes, dim=1), 1, order)
    length = (t[:, 1:] - t[:, :-1]).reshape(-1)
    flat = torch.nonzero(length > 1e-5).squeeze(1)  # (N,) into the (R', K-1) segments, ray-major
    row = torch.div(flat, t.shape[1] - 1, rounding_mode="floor")
    length = length.index_select(0, flat)
    mid = t[:, :-1].reshape(-1).index_select(0, flat) + 0.5 * length
    position = o.index_select(0, row) + mid[:, None] * d.index_select(0, row)
    ijk = position.floor_().long()
    cell = ijk[:, 0].clamp_(0, size[0] - 1)
    for axis in (1, 2):
        cell = cell * size[axis] + ijk[:, axis].clamp_(0, size[axis] - 1)
    if shading:
        face = axis_sorted[:, :-1].reshape(-1).index_select(0, flat)
        shade = _face_shades(d).reshape(-1).index_select(0, row * 3 + face)
    else:
        shade = torch.ones_like(mid)
    return Segments(hit.index_select(0, row), cell, length, shade, len(origins))


def traverse_in_chunks(origins: torch.Tensor, directions: torch.Tensor, size: Sequence[int], shading: bool = True,
                       chunk: int = 1 << 14) -> Segments:
    """`traverse` on `chunk` rays at a time, so the (R, K) crossing tables stay small; the same Segments."""
    parts = [traverse(origins[b : b + chunk], directions[b : b + chunk], size, shading) for b in range(0, len(origins), chunk)]
    if len(parts) == 1:
        return parts[0]
    offsets = [b for b in range(0, len(origins), chunk)]
    return Segments(torch.cat([p.ray + o for p, o in zip(parts, offsets)]), torch.cat([p.cell for p in parts]),
                    torch.cat([p.length for p in parts]), torch.cat([p.shade for p in parts]), len(origins))


def _segment_starts(ray: torch.Tensor, num_rays: int) -> torch.Tensor:
    counts = torch.bincount(ray, minlength=num_rays)
    return torch.cumsum(counts, 0) - counts


def _transmittance(tau: torch.Tensor, ray: torch.Tensor, num_rays: int) -> torch.Tensor:
    """Light reaching each segment: exp(-sum of tau before it on its ray). Float64: the sums run over all rays."""
    tau64 = tau.double()
    if len(tau64) == 0:  # no ray crosses the grid (a camera looking past it)
        return tau.float()
    before = torch.cumsum(tau64, 0) - tau64
    first = _segment_starts(ray, num_rays)
    offset = before[first.clamp(max=len(before) - 1)]
    # clamped: exp(-60) is still a normal float32; anything smaller is a denormal, and those are ~100x slower
    return torch.exp(-(before - offset.index_select(0, ray)).clamp(max=60.0)).float()


def composite(volume: torch.Tensor, seg: Segments) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied colour (R, 3) and coverage (R,) of the rays, differentiable w.r.t. `volume` (V, 4)."""
    with torch.no_grad():
        tau = volume[:, 0].index_select(0, seg.cell) * seg.length
        visible = _transmittance(tau, seg.ray, seg.num_rays) > EARLY_STOP
        index = torch.nonzero(visible).squeeze(1)
    ray, cell, length, shade = (x.index_select(0, index) for x in (seg.ray, seg.cell, seg.length, seg.shade))
    samples = volume.index_select(0, cell)  # (N', 4)
    tau = samples[:, 0] * length
    weight = _transmittance(tau, ray, seg.num_rays) * -torch.expm1(-tau)
    contribution = (weight * shade)[:, None] * samples[:, 1:]
    rgb = torch.zeros(seg.num_rays, 3, dtype=volume.dtype, device=volume.device).index_add(0, ray, contribution)
    alpha = torch.zeros(seg.num_rays, dtype=volume.dtype, device=volume.device).index_add(0, ray, weight)
    return rgb, alpha


def render_view(volume: torch.Tensor, camera: Camera, size: Sequence[int], block_size: float = 1.0,
                shading: bool = True, chunk: int = 1 << 14) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied image (H, W, 3) and coverage (H, W) of `volume` from `camera`."""
    origins, directions = camera_rays(camera, block_size, volume.device)
    rgb, alpha = composite(volume, traverse_in_chunks(origins, directions, size, shading, chunk))
    return rgb.reshape(camera.height, camera.width, 3), alpha.reshape(camera.height, camera.width)


def over(premultiplied: torch.Tensor, alpha: torch.Tensor, background: Sequence[float] = BACKGROUND) -> torch.Tensor:
    """Composite a premultiplied render over a solid background."""
    bg = torch.tensor(background, dtype=premultiplied.dtype, device=premultiplied.device)
    return premultiplied + (1 - alpha)[..., None] * bg


def render_map(vmap: VoxelMap, camera: Camera) -> np.ndarray:
    """A hard render of a map as straight-alpha RGBA uint8 (H, W, 4); alpha is coverage."""
    with torch.no_grad():
        rgb, alpha = render_view(hard_volume(vmap), camera, vmap.size, vmap.block_size)
        straight = rgb / alpha.clamp(min=1e-6)[..., None]
        rgba = torch.cat([straight, alpha[..., None]], dim=-1).clamp(0, 1)
    return (rgba.numpy() * 255 + 0.5).astype(np.uint8)
