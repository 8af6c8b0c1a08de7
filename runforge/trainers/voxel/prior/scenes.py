"""Small captioned voxel scenes on a one-layer grass floor: what the voxel prior learns to draw.

    vmap = make_scene("a stone tower", np.random.default_rng(0))     # a 32x24x32 VoxelMap
    CAPTIONS                                                          # every caption a scene can have

The world is the bundled sample's size (32x24x32) and its floor is `ground_plane`'s (Grass at y = 0),
so a scene is exactly what SDS from `--init_mode ground_plane` should grow into, seen from the bundled
dataset's orbit cameras. Sizes, positions and materials vary within each caption's meaning.
This module imports numpy, never torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..map_io import MATERIAL_INDEX, VoxelMap

WORLD_SIZE = (32, 24, 32)
"""The bundled sample map's size: SDS from --init_mode ground_plane grows a grid of this size."""

Blocks = tuple[np.ndarray, np.ndarray]  # occupied (X, Y, Z) bool, material (X, Y, Z) int8


def _floor() -> Blocks:
    occupied = np.zeros(WORLD_SIZE, bool)
    material = np.zeros(WORLD_SIZE, np.int8)
    occupied[:, 0, :] = True
    material[:, 0, :] = MATERIAL_INDEX["Grass"]
    return occupied, material


def _place(blocks: Blocks, where: tuple[slice | int, ...] | np.ndarray, name: str) -> None:
    occupied, material = blocks
    occupied[where] = True
    material[where] = MATERIAL_INDEX[name]


def _centre(rng: np.random.Generator, spread: int) -> tuple[int, int]:
    """A point near the middle of the floor, where every orbit camera sees it."""
    X, _, Z = WORLD_SIZE
    return X // 2 + int(rng.integers(-spread, spread + 1)), Z // 2 + int(rng.integers(-spread, spread + 1))


def _disc(radius_x: float, radius_z: float, cx: float, cz: float) -> np.ndarray:
    """(X, Z) mask of an ellipse on the floor."""
    x, z = np.meshgrid(np.arange(WORLD_SIZE[0]) + 0.5, np.arange(WORLD_SIZE[2]) + 0.5, indexing="ij")
    return ((x - cx) / radius_x) ** 2 + ((z - cz) / radius_z) ** 2 <= 1


def stone_tower(blocks: Blocks, rng: np.random.Generator) -> None:
    cx, cz = _centre(rng, 4)
    half, height = int(rng.integers(2, 4)), int(rng.integers(12, 21))
    if rng.random() < 0.5:  # square
        _place(blocks, (slice(cx - half, cx + half + 1), slice(1, height + 1), slice(cz - half, cz + half + 1)), "Stone")
    else:  # round
        column = _disc(half + 0.7, half + 0.7, cx + 0.5, cz + 0.5)
        for y in range(1, height + 1):
            _place(blocks, _column_index(column, y), "Stone")
    if rng.random() < 0.5:  # battlements: every other block of the top ring
        top = height + 1
        for i in range(cx - half, cx + half + 1, 2):
            for k in (cz - half, cz + half):
                _place(blocks, (i, top, k), "Stone")


def _column_index(mask: np.ndarray, y: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the voxels of layer `y` under an (X, Z) mask."""
    xs, zs = np.nonzero(mask)
    return xs, np.full_like(xs, y), zs


def wooden_house(blocks: Blocks, rng: np.random.Generator) -> None:
    cx, cz = _centre(rng, 3)
    w, d, wall = int(rng.integers(10, 16)), int(rng.integers(10, 16)), int(rng.integers(4, 7))
    x0, z0 = cx - w // 2, cz - d // 2
    _place(blocks, (slice(x0, x0 + w), slice(1, wall + 1), slice(z0, z0 + d)), "Plank")
    occupied, material = blocks
    occupied[x0 + 1 : x0 + w - 1, 1 : wall + 1, z0 + 1 : z0 + d - 1] = False  # hollow
    material[x0 + 1 : x0 + w - 1, 1 : wall + 1, z0 + 1 : z0 + d - 1] = 0
    door = x0 + w // 2
    occupied[door, 1:3, z0] = False
    material[door, 1:3, z0] = 0
    roof = "Stone" if rng.random() < 0.7 else "Plank"
    for layer in range(min(w, d) // 2 + 1):  # a stepped roof
        y = wall + 1 + layer
        _place(blocks, (slice(x0 + layer, x0 + w - layer), y, slice(z0 + layer, z0 + d - layer)), roof)


def pond(blocks: Blocks, rng: np.random.Generator) -> None:
    cx, cz = _centre(rng, 4)
    rx, rz = rng.uniform(6, 10), rng.uniform(6, 10)
    rim = rng.uniform(2, 3.5)
    sand = _disc(rx + rim, rz + rim, cx, cz)
    water = _disc(rx, rz, cx, cz)
    _place(blocks, _column_index(sand, 0), "Sand")
    _place(blocks, _column_index(water, 0), "Water")


def tree(blocks: Blocks, rng: np.random.Generator) -> None:
    cx, cz = _centre(rng, 4)
    trunk, radius = int(rng.integers(5, 10)), rng.uniform(3.5, 5.5)
    _place(blocks, (slice(cx, cx + 2), slice(1, trunk + 1), slice(cz, cz + 2)), "Plank")
    X, Y, Z = WORLD_SIZE
    x, y, z = np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z), indexing="ij")
    cy = trunk + radius * 0.6
    ball = (x - cx - 0.5) ** 2 + ((y - cy) / 1.1) ** 2 + (z - cz - 0.5) ** 2 <= radius**2
    _place(blocks, ball & ~blocks[0], "Leaves")


def stone_wall(blocks: Blocks, rng: np.random.Generator) -> None:
    cx, cz = _centre(rng, 4)
    length, height, thick = int(rng.integers(18, 29)), int(rng.integers(5, 9)), int(rng.integers(2, 4))
    start = max(1, min(WORLD_SIZE[0] - 1 - length, cx - length // 2))
    along, across = slice(start, start + length), slice(cz - thick // 2, cz - thick // 2 + thick)
    where = (along, slice(1, height + 1), across) if rng.random() < 0.5 else (across, slice(1, height + 1), along)
    _place(blocks, where, "Stone")


def pyramid(blocks: Blocks, rng: np.random.Generator) -> None:
    cx, cz = _centre(rng, 3)
    half = int(rng.integers(6, 11))
    name = "Stone" if rng.random() < 0.6 else "Sand"
    for layer in range(half + 1):
        _place(blocks, (slice(cx - half + layer, cx + half - layer + 1), layer + 1,
                        slice(cz - half + layer, cz + half - layer + 1)), name)


SCENES: dict[str, Callable[[Blocks, np.random.Generator], None]] = {
    "a stone tower": stone_tower,
    "a wooden house": wooden_house,
    "a pond with a sand rim": pond,
    "a tree": tree,
    "a stone wall": stone_wall,
    "a pyramid": pyramid,
}
CAPTIONS = tuple(SCENES)


def ground_plane_map() -> VoxelMap:
    """The floor alone: what `--init_mode ground_plane` starts from."""
    return VoxelMap(*_floor())


def make_scene(caption: str, rng: np.random.Generator) -> VoxelMap:
    """One random scene of `caption` (one of CAPTIONS) on the grass floor."""
    blocks = _floor()
    SCENES[caption](blocks, rng)
    return VoxelMap(*blocks)
