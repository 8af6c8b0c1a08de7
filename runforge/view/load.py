"""What `runforge view` draws: the frames of a path, and each frame as arrays for viser.

A path is a voxel run (`maps/step_*.json` and `final_map.json`), a splat run
(`ply/point_cloud_*.ply`), an exported map folder (`maps/trained_map_*/map.json`),
or one map `.json` or `.ply` file. Every problem is a one-line BadInputError naming the file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError

SH_C0 = 0.28209479177387814
"""The degree-0 spherical harmonic, Y_0^0 = 1 / (2 sqrt(pi)): 3DGS stores colour as (rgb - 0.5) / SH_C0."""

SPLAT_PROPERTIES = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")

_STEP_MAP = re.compile(r"step_(\d+)\.json")
_STEP_PLY = re.compile(r"point_cloud_(\d+)\.ply")


@dataclass(frozen=True)
class Frame:
    label: str
    step: int | None
    path: Path


@dataclass(frozen=True)
class Source:
    """One path given on the command line: its kind ("voxel" or "splat") and its frames, oldest first."""

    path: Path
    kind: str
    frames: tuple[Frame, ...]

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)


@dataclass
class Boxes:
    """A voxel map as instances of a unit cube: centres in world units (map axes, Y up), colours as uint8."""

    centers: np.ndarray    # float32 [N, 3]
    colors: np.ndarray     # uint8 [N, 3]
    materials: np.ndarray  # int8 [N], PALETTE indices
    exposed: np.ndarray    # bool [N]: a face touches air or the world's edge (the others cannot be seen)
    block_size: float
    size: tuple[int, int, int]


@dataclass
class Splats:
    """3DGS parameters after their activations, as `add_gaussian_splats` takes them."""

    centers: np.ndarray      # float32 [N, 3]
    covariances: np.ndarray  # float32 [N, 3, 3]
    rgbs: np.ndarray         # float32 [N, 3] in [0, 1]
    opacities: np.ndarray    # float32 [N, 1] in (0, 1)


def find_source(path: str | Path) -> Source:
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".ply":
            return Source(path, "splat", (Frame(path.stem, _number(_STEP_PLY, path.name), path),))
        if path.suffix.lower() == ".json":
            return Source(path, "voxel", (Frame(path.stem, _number(_STEP_MAP, path.name), path),))
        raise BadInputError(path, "is neither a voxel map (.json) nor a splat PLY (.ply)")
    if not path.is_dir():
        raise BadInputError(path, "no such run, folder or file")
    maps = _numbered(path / "maps", _STEP_MAP)
    final = path / "final_map.json"
    if maps or final.is_file():
        frames = [Frame(f"step {step}", step, p) for step, p in maps]
        if final.is_file():
            frames.append(Frame("final", None, final))
        return Source(path, "voxel", tuple(frames))
    plys = _numbered(path / "ply", _STEP_PLY)
    if plys:
        return Source(path, "splat", tuple(Frame(f"step {step}", step, p) for step, p in plys))
    if (path / "map.json").is_file():
        return Source(path, "voxel", (Frame("export", None, path / "map.json"),))
    raise BadInputError(path, "holds nothing to view: no maps/step_*.json, final_map.json, "
                              "ply/point_cloud_*.ply or map.json")


def _numbered(folder: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    try:
        names = [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []
    found = [(int(m.group(1)), p) for p in names if (m := pattern.fullmatch(p.name))]
    return sorted(found)  # by number: step_10000 must come after step_9999


def _number(pattern: re.Pattern[str], name: str) -> int | None:
    match = pattern.fullmatch(name)
    return int(match.group(1)) if match else None


def load_boxes(path: str | Path) -> Boxes:
    from ..trainers.voxel.map_io import AIR, COLORS, PALETTE, read_map

    vmap = read_map(path)
    solid = vmap.occupied & (vmap.material != AIR)
    index = np.argwhere(solid)  # (x, y, z)-sorted, like the file's blocks
    materials = vmap.material[solid].astype(np.int8)
    table = np.round(np.array([COLORS[name] for name in PALETTE]) * 255).astype(np.uint8)
    padded = np.pad(solid, 1)  # the world's edge counts as air: a wall on the border is seen from outside
    x, y, z = (index + 1).T
    hidden = np.ones(len(index), bool)
    for axis in range(3):
        for delta in (-1, 1):
            at = [x, y, z]
            at[axis] = at[axis] + delta
            hidden &= padded[at[0], at[1], at[2]]
    centers = ((index + 0.5) * vmap.block_size).astype(np.float32)
    return Boxes(centers, table[materials], materials, ~hidden, vmap.block_size, vmap.size)


def load_splats(path: str | Path) -> Splats:
    from plyfile import PlyData

    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except FileNotFoundError:
        raise BadInputError(path, "no such PLY file") from None
    except Exception as exc:  # plyfile reports a damaged file with whatever numpy or its parser raise
        raise BadInputError(path, f"is not a readable PLY file ({_one_line(exc)})") from None
    try:
        vertex = ply["vertex"]
    except KeyError:
        raise BadInputError(path, "has no 'vertex' element: not a 3DGS PLY") from None
    names = {p.name for p in vertex.properties}
    missing = [name for name in SPLAT_PROPERTIES if name not in names]
    if missing:
        raise BadInputError(path, f"is not a 3DGS PLY: missing {', '.join(missing)}")
    data = {name: np.asarray(vertex[name], dtype=np.float64) for name in SPLAT_PROPERTIES}
    n = len(data["x"])
    if n == 0:
        raise BadInputError(path, "holds no Gaussians")
    for name, values in data.items():
        if not np.isfinite(values).all():
            raise BadInputError(path, f"property {name} holds a NaN or an infinity "
                                      f"(vertex {int(np.argmin(np.isfinite(values)))})")
    log_scales = np.stack([data[f"scale_{i}"] for i in range(3)], 1)
    if log_scales.max() > math.log(np.finfo(np.float32).max) / 2:  # the covariance (scale^2) would overflow
        raise BadInputError(path, f"a log-scale of {log_scales.max():g} is too large to draw")
    scales = np.exp(log_scales)
    quats = np.stack([data[f"rot_{i}"] for i in range(4)], 1)  # w, x, y, z, unnormalised as trained
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    quats = np.where(norms > 0, quats / np.where(norms > 0, norms, 1), [1.0, 0.0, 0.0, 0.0])
    rotations = _rotation_matrices(quats)
    scaled = rotations * scales[:, None, :]  # R @ diag(s)
    covariances = scaled @ scaled.transpose(0, 2, 1)
    rgbs = np.clip(0.5 + SH_C0 * np.stack([data[f"f_dc_{i}"] for i in range(3)], 1), 0.0, 1.0)
    opacities = 1.0 / (1.0 + np.exp(-data["opacity"]))
    centers = np.stack([data["x"], data["y"], data["z"]], 1)
    return Splats(centers.astype(np.float32), covariances.astype(np.float32), rgbs.astype(np.float32),
                  opacities.astype(np.float32)[:, None])


def _rotation_matrices(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], 1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], 1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1),
    ], 1)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_frame(kind: str, path: Path) -> Any:
    return load_boxes(path) if kind == "voxel" else load_splats(path)
