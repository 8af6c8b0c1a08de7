"""map.json: the voxel world format of the editor, read strictly and written back faithfully.

    {"sequence": 1, "worldConfig": {"size": [X, Y, Z], "blockSize": 1.0},
     "blocks": [{"position": [x, y, z], "blockType": "Stone"}, ...], "metadata": {}}

Y is up. A block at [x, y, z] fills [x, x+1] x [y, y+1] x [z, z+1] (times blockSize).
Reading rejects a bad file with a one-line `BadInputError` naming the file and the
block index; keys this module does not know are kept and written back unchanged.
A world is at most MAX_SIDE voxels along each axis and MAX_VOXELS in all: the trainer
holds about 100 bytes per voxel (logits, gradients, Adam moments).
This module imports numpy, never torch.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BadInputError

PALETTE = ("Air", "Stone", "Grass", "Dirt", "Sand", "Water", "Plank", "Leaves")
"""Material classes in logit order; `Air` is a class of the logits but is never written as a block."""

COLORS = {
    "Air": (0.86, 0.92, 0.98),
    "Stone": (0.50, 0.50, 0.53),
    "Grass": (0.35, 0.65, 0.24),
    "Dirt": (0.53, 0.36, 0.22),
    "Sand": (0.89, 0.82, 0.56),
    "Water": (0.20, 0.40, 0.82),
    "Plank": (0.74, 0.57, 0.33),
    "Leaves": (0.16, 0.42, 0.13),
}
"""The one place a material's RGB (0..1) is defined; the renderer and the docs read it from here."""

AIR = 0
MATERIAL_INDEX = {name: i for i, name in enumerate(PALETTE)}
DEFAULT_SIZE = (64, 48, 64)
MAX_SIDE = 1024
MAX_VOXELS = 256**3
BLOCK_SIZE_RANGE = (1e-3, 1e3)
"""blockSize in world units: outside it, camera rays in voxel units lose all precision."""


@dataclass
class VoxelMap:
    """A dense view of a map: which voxels hold a block and of which material.

    `occupied` is a bool array [X, Y, Z]; `material` an int8 array [X, Y, Z] of
    PALETTE indices (AIR where empty). `document` is the file's JSON object
    without its blocks, and `block_extras` the unknown keys of each block by
    position: both are written back by `to_document`.
    """

    occupied: np.ndarray
    material: np.ndarray
    block_size: float = 1.0
    document: dict[str, Any] = field(default_factory=dict)
    block_extras: dict[tuple[int, int, int], dict[str, Any]] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int, int]:
        x, y, z = self.occupied.shape
        return int(x), int(y), int(z)

    @property
    def num_blocks(self) -> int:
        return int(self.occupied.sum())

    @classmethod
    def empty(cls, size: tuple[int, int, int] = DEFAULT_SIZE, block_size: float = 1.0) -> VoxelMap:
        return cls(np.zeros(size, bool), np.zeros(size, np.int8), block_size)

    def to_document(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """The map.json object: blocks sorted by (x, y, z); `metadata` entries are merged over the old ones."""
        blocks = []
        for x, y, z in np.argwhere(self.occupied & (self.material != AIR)).tolist():  # argwhere is (x, y, z)-sorted
            block: dict[str, Any] = {"position": [x, y, z], "blockType": PALETTE[self.material[x, y, z]]}
            block.update(self.block_extras.get((x, y, z), {}))
            blocks.append(block)
        # the file's key order, unknown keys included
        doc = dict(self.document) or {"sequence": 1, "worldConfig": {}, "blocks": None, "metadata": {}}
        world = dict(doc.get("worldConfig") or {})
        world.update(size=list(self.size), blockSize=self.block_size)
        doc["worldConfig"] = world
        doc["blocks"] = blocks
        doc["metadata"] = {**(doc.get("metadata") or {}), **(metadata or {})}
        return doc


def _int3(value: Any) -> tuple[int, int, int] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    out = []
    for v in value:
        if isinstance(v, float) and v.is_integer():  # 3.0 is an integer; NaN and infinities are not
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            return None
        out.append(v)
    return out[0], out[1], out[2]


def shown(value: Any) -> str:
    """A user's value in a one-line message: shortened, and safe for any depth of nesting."""
    return reprlib.repr(value)


def parse_map(doc: Any, path: str | os.PathLike[str]) -> VoxelMap:
    """Check a map.json object and turn it into a VoxelMap; every problem is a BadInputError on `path`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("blocks"), list):
        raise BadInputError(path, "is not a map: expected a JSON object with a 'blocks' list")
    world = doc.get("worldConfig", {})
    if not isinstance(world, dict):
        raise BadInputError(path, "worldConfig must be an object")
    if not isinstance(doc.get("metadata", {}), (dict, type(None))):  # saving merges the run's metadata into it
        raise BadInputError(path, f"metadata must be an object, got {shown(doc['metadata'])}")
    size = _int3(world.get("size", list(DEFAULT_SIZE)))
    if size is None or min(size) < 1:
        raise BadInputError(path, f"worldConfig.size must be three positive integers, got {shown(world.get('size'))}")
    if max(size) > MAX_SIDE or size[0] * size[1] * size[2] > MAX_VOXELS:
        raise BadInputError(path, f"worldConfig.size {list(size)} is too large: at most {MAX_SIDE} voxels per side "
                                  f"and {MAX_VOXELS:,} (256^3) in all")
    block_size = world.get("blockSize", 1.0)
    low, high = BLOCK_SIZE_RANGE
    if isinstance(block_size, bool) or not isinstance(block_size, (int, float)) or not low <= block_size <= high:
        raise BadInputError(path, f"worldConfig.blockSize must be a number from {low:g} to {high:g}, "
                                  f"got {shown(block_size)}")
    occupied = np.zeros(size, bool)
    material = np.zeros(size, np.int8)
    extras: dict[tuple[int, int, int], dict[str, Any]] = {}
    for index, block in enumerate(doc["blocks"]):
        where = f"blocks[{index}]"
        if not isinstance(block, dict):
            raise BadInputError(path, f"{where} is not an object")
        position = _int3(block.get("position"))
        if position is None:
            raise BadInputError(path, f"{where}: position must be three integers, got {shown(block.get('position'))}")
        if not all(0 <= p < s for p, s in zip(position, size)):
            raise BadInputError(path, f"{where}: position {list(position)} is outside worldConfig.size {list(size)}")
        kind = block.get("blockType")
        if not isinstance(kind, str) or kind not in MATERIAL_INDEX or kind == "Air":
            raise BadInputError(path, f"{where}: unknown blockType {shown(kind)} (one of {', '.join(PALETTE[1:])})")
        if occupied[position]:
            raise BadInputError(path, f"{where}: duplicate position {list(position)}")
        occupied[position] = True
        material[position] = MATERIAL_INDEX[kind]
        extra = {k: v for k, v in block.items() if k not in ("position", "blockType")}
        if extra:
            extras[position] = extra
    document = {k: (None if k == "blocks" else v) for k, v in doc.items()}  # blocks are rebuilt on writing
    return VoxelMap(occupied, material, float(block_size), document, extras)


def read_map(path: str | os.PathLike[str]) -> VoxelMap:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(path, "no such map file") from None
    except IsADirectoryError:
        raise BadInputError(path, "is a directory, not a map file") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise BadInputError(path, f"is not valid JSON ({exc})") from None
    try:
        doc = json.loads(text, parse_constant=_not_json, parse_float=_finite_float)
    except ValueError as exc:
        raise BadInputError(path, f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise BadInputError(path, "nests too deeply to be a map") from None
    return parse_map(doc, path)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    # Python reads 1e400 as inf; a map holds no infinities, not even in keys it only carries along
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a number")
    return value


def write_map(path: str | os.PathLike[str], vmap: VoxelMap, metadata: dict[str, Any] | None = None) -> Path:
    """Write a map.json atomically, in the run layer's JSON style (2-space indent, UTF-8)."""
    from ...run.files import write_json

    return write_json(path, vmap.to_document(metadata))
