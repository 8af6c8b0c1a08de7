"""Procedural worlds with relief, for benchmarks: hills from a height field, a lake, trees and a house.

    vmap = relief_world((64, 48, 64), seed=7)

Deterministic in (size, seed). The bundled sample is small and mostly flat; a fit that only repaints
a floor scores well on it, so a bench needs a world where most of the surface is off the ground.
This module imports numpy, never torch.
"""

from __future__ import annotations

import numpy as np

from .map_io import MATERIAL_INDEX, VoxelMap


def _height_field(X: int, Z: int, top: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of a few broad Gaussian hills over a low base, integer heights in 1..top."""
    x, z = np.meshgrid(np.arange(X) + 0.5, np.arange(Z) + 0.5, indexing="ij")
    height = np.full((X, Z), 2.0)
    for _ in range(max(3, (X * Z) // 600)):
        cx, cz = rng.uniform(0, X), rng.uniform(0, Z)
        radius = rng.uniform(0.12, 0.25) * min(X, Z)
        peak = rng.uniform(0.25, 0.6) * top
        height += peak * np.exp(-((x - cx) ** 2 + (z - cz) ** 2) / (2 * radius**2))
    return np.clip(np.round(height), 1, top).astype(int)


def relief_world(size: tuple[int, int, int] = (64, 48, 64), seed: int = 7) -> VoxelMap:
    X, Y, Z = size
    rng = np.random.default_rng(seed)
    occupied = np.zeros(size, bool)
    material = np.zeros(size, np.int8)
    top = max(4, Y // 2)
    height = _height_field(X, Z, top, rng)

    # the lake: a bowl dug into one quadrant, filled with water up to a level, sand on its shore
    lx, lz, lr = int(X * 0.72), int(Z * 0.28), max(3, min(X, Z) // 7)
    x, z = np.meshgrid(np.arange(X), np.arange(Z), indexing="ij")
    dist = np.sqrt((x - lx) ** 2 + (z - lz) ** 2)
    level = int(height[lx, lz])
    bowl = dist < lr
    height = np.where(bowl, np.minimum(height, np.maximum(1, level - 2 + np.round(2 * dist / lr).astype(int))), height)
    shore = (dist >= lr) & (dist < lr + 2)

    stone_line = int(top * 0.8)
    for i in range(X):
        for k in range(Z):
            h = int(height[i, k])
            occupied[i, :h, k] = True
            material[i, :h, k] = MATERIAL_INDEX["Stone"]
            material[i, max(0, h - 3) : h, k] = MATERIAL_INDEX["Dirt"]
            surface = "Sand" if (bowl[i, k] or shore[i, k]) else ("Stone" if h >= stone_line else "Grass")
            material[i, h - 1, k] = MATERIAL_INDEX[surface]
            if bowl[i, k] and h < level:
                occupied[i, h:level, k] = True
                material[i, h:level, k] = MATERIAL_INDEX["Water"]

    def free_ground(i: int, k: int, r: int) -> bool:
        area = (slice(max(0, i - r), i + r + 1), slice(max(0, k - r), k + r + 1))
        return bool((dist[area] > lr + 2).all())

    # the house, on the flattest free spot near the centre: stone floor, plank walls with a door, stone roof
    w, d, wall = max(5, X // 8), max(5, Z // 9), max(3, Y // 10)
    best = None
    for i in range(2, X - w - 2):
        for k in range(2, Z - d - 2):
            patch = height[i : i + w, k : k + d]
            if free_ground(i + w // 2, k + d // 2, max(w, d) // 2 + 1):
                score = patch.max() - patch.min() + 0.05 * (abs(i - X / 3) + abs(k - Z / 2))
                if best is None or score < best[0]:
                    best = (score, i, k)
    if best is not None:
        _, hx, hz = best
        base = int(height[hx : hx + w, hz : hz + d].max())
        if base + wall + 3 < Y:
            occupied[hx : hx + w, base - 1, hz : hz + d] = True
            material[hx : hx + w, base - 1, hz : hz + d] = MATERIAL_INDEX["Stone"]
            for i in range(hx, hx + w):
                for k in range(hz, hz + d):
                    below = int(height[i, k])
                    occupied[i, below : base - 1, k] = True
                    material[i, below : base - 1, k] = MATERIAL_INDEX["Dirt"]
                    edge = i in (hx, hx + w - 1) or k in (hz, hz + d - 1)
                    if edge:
                        occupied[i, base : base + wall, k] = True
                        material[i, base : base + wall, k] = MATERIAL_INDEX["Plank"]
            door = hx + w // 2
            occupied[door, base : base + 2, hz] = False
            material[door, base : base + 2, hz] = 0
            for layer in range(0, min(w, d) // 2 + 1):  # a stepped roof
                y = base + wall + layer
                if y >= Y:
                    break
                occupied[hx + layer : hx + w - layer, y, hz + layer : hz + d - layer] = True
                material[hx + layer : hx + w - layer, y, hz + layer : hz + d - layer] = MATERIAL_INDEX["Stone"]

    # trees: a plank trunk and a leaf ball, on grass away from the lake and the house
    trees = max(3, (X * Z) // 400)
    placed = 0
    for _ in range(trees * 20):
        if placed >= trees:
            break
        i, k = int(rng.integers(3, X - 3)), int(rng.integers(3, Z - 3))
        h = int(height[i, k])
        trunk = int(rng.integers(3, 6))
        if not free_ground(i, k, 2) or material[i, h - 1, k] != MATERIAL_INDEX["Grass"] or h + trunk + 3 >= Y:
            continue
        if occupied[i - 2 : i + 3, h : h + trunk + 3, k - 2 : k + 3].any():
            continue
        occupied[i, h : h + trunk, k] = True
        material[i, h : h + trunk, k] = MATERIAL_INDEX["Plank"]
        cy = h + trunk
        for a in range(-2, 3):
            for b in range(-1, 3):
                for c in range(-2, 3):
                    if a * a + (b - 0.5) ** 2 + c * c <= 5.5 and not occupied[i + a, cy + b, k + c]:
                        occupied[i + a, cy + b, k + c] = True
                        material[i + a, cy + b, k + c] = MATERIAL_INDEX["Leaves"]
        placed += 1
    return VoxelMap(occupied, material)
