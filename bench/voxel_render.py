"""Forward+backward time of the voxel renderer, against a plain dense `grid_sample` ray march.

    .venv/bin/python bench/voxel_render.py [--repeats 5]

A 64x48x64 world (terrain, towers, floating slabs; logits from the map, as after a
fit), one 128x128 view. Both renderers get the same volume (density + RGB) and
must give the same image (mean |difference| < 0.02 over white, no shading since
the baseline has no faces); the time is forward + backward into the volume.

- ours, cached: the camera's segments precomputed, as in training (cameras repeat)
- ours, cold: segments computed in the timed region too
- baseline: rays sampled every half voxel from the box entry to the exit,
  `grid_sample(mode="nearest")` (nearest = the same blocky world), dense (R, S) compositing
Exits 1 when ours (cached) is not at least 2x faster than the baseline.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from runforge.trainers.voxel.dataset import orbit_cameras
from runforge.trainers.voxel.grid import DifferentiableVoxelGrid
from runforge.trainers.voxel.map_io import MATERIAL_INDEX, VoxelMap
from runforge.trainers.voxel.render import camera_rays, composite, over, traverse

SIZE = (64, 48, 64)
RESOLUTION = 128
STEP = 0.5


def bench_world() -> VoxelMap:
    rng = np.random.default_rng(0)
    vmap = VoxelMap.empty(SIZE)
    X, _, Z = SIZE
    xs, zs = np.meshgrid(np.arange(X), np.arange(Z), indexing="ij")
    height = (4 + 3 * np.sin(xs / 7) * np.cos(zs / 9) + 2 * np.sin((xs + zs) / 11)).astype(int)
    for x in range(X):
        for z in range(Z):
            vmap.occupied[x, : height[x, z], z] = True
            vmap.material[x, : height[x, z], z] = MATERIAL_INDEX["Dirt"]
            vmap.material[x, height[x, z] - 1, z] = MATERIAL_INDEX["Grass"]
    for _ in range(12):
        x, z, h = rng.integers(2, X - 6), rng.integers(2, Z - 6), rng.integers(8, 40)
        vmap.occupied[x : x + 4, :h, z : z + 4] = True
        vmap.material[x : x + 4, :h, z : z + 4] = MATERIAL_INDEX["Stone"]
    for _ in range(8):
        x, y, z = rng.integers(0, X - 10), rng.integers(20, 44), rng.integers(0, Z - 10)
        vmap.occupied[x : x + 10, y, z : z + 10] = True
        vmap.material[x : x + 10, y, z : z + 10] = MATERIAL_INDEX["Plank"]
    return vmap


def baseline(volume: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense march: S samples per ray every STEP voxels from the box entry; nearest lookups; (R, 3), (R,)."""
    extent = torch.tensor(SIZE, dtype=torch.float32)
    d = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = -origins / d, (extent - origins) / d
    t_near = torch.minimum(t0, t1).max(dim=1).values.clamp(min=0)
    t_far = torch.maximum(t0, t1).min(dim=1).values
    samples = math.ceil(float(extent.norm()) / STEP)
    t = t_near[:, None] + (torch.arange(samples) + 0.5) * STEP  # (R, S)
    inside = t < t_far[:, None]
    points = origins[:, None] + t[..., None] * directions[:, None]  # (R, S, 3) in voxels
    grid = (points / extent * 2 - 1).flip(-1)  # grid_sample wants (z, y, x) for a (X, Y, Z) volume
    field = volume.T.reshape(1, 4, *SIZE)
    values = F.grid_sample(field, grid[None, None], mode="nearest", padding_mode="zeros", align_corners=False)
    values = values[0, :, 0].permute(1, 2, 0)  # (R, S, 4)
    alpha = (1 - torch.exp(-values[..., 0] * STEP)) * inside
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], dim=1), dim=1)
    weight = transmittance * alpha
    return (weight[..., None] * values[..., 1:]).sum(1), weight.sum(1)


def timed(fn, volume_leaf: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    times = []
    image = None
    for _ in range(repeats + 1):
        volume_leaf.grad = None
        start = time.perf_counter()
        rgb, alpha = fn()
        loss = over(rgb, alpha).square().mean()
        loss.backward()
        times.append(time.perf_counter() - start)
        image = over(rgb, alpha).detach()
    return statistics.median(times[1:]) * 1000, image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    vmap = bench_world()
    grid = DifferentiableVoxelGrid.initialise("from_map", vmap)
    volume = grid.volume(1.0).detach().requires_grad_(True)
    camera = orbit_cameras(SIZE, 8, RESOLUTION)[1]
    origins, directions = camera_rays(camera)
    cached = traverse(origins, directions, SIZE, shading=False)

    results = {
        "ours, cached segments": timed(lambda: composite(volume, cached), volume, args.repeats),
        "ours, cold (traversal timed)": timed(
            lambda: composite(volume, traverse(origins, directions, SIZE, shading=False)), volume, args.repeats),
        "baseline grid_sample march": timed(lambda: baseline(volume, origins, directions), volume, args.repeats),
    }
    reference = results["baseline grid_sample march"][1]
    base_ms = results["baseline grid_sample march"][0]
    load = os.getloadavg()
    print(f"{SIZE[0]}x{SIZE[1]}x{SIZE[2]} grid ({vmap.num_blocks} blocks), {RESOLUTION}x{RESOLUTION} rays, "
          f"forward+backward, 1 thread, median of {args.repeats}; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ok = True
    for name, (ms, image) in results.items():
        difference = float((image - reference).abs().mean())
        print(f"  {name:<30} {ms:8.1f} ms   x{base_ms / ms:5.2f} vs baseline   mean |diff| {difference:.4f}")
        ok &= difference < 0.02
    speedup = base_ms / results["ours, cached segments"][0]
    ok &= speedup >= 2.0
    print(("PASS" if ok else "FAIL") + " (bar: same image within 0.02, cached >= 2x faster than the baseline)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
