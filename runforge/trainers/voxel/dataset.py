"""Datasets of views (`datasets/{id}/cameras.json` + optional `images/{index:04d}.png`) and the workspace.

    {"views": [{"index": 0, "width": 128, "height": 128, "view": [[4x4]], "proj": [[4x4]]}, ...],
     "depth": "negative_one_to_one" | "zero_to_one"}

`view` is world-to-camera (the camera looks down -Z, +Y up), `proj` the perspective
projection to clip space; both row-major, acting on column vectors. OpenGL depth
(-1..1) is the default; a WebGPU editor's 0..1 depth is declared with `"depth": "zero_to_one"`.

The workspace is the current directory: `maps/{id}/map.json` and `datasets/{id}/`.
When id 1 is absent the bundled sample inside the package is used.
This module imports numpy and Pillow, never torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BadInputError
from ...run.files import read_json_object
from .map_io import shown

MAX_VIEWS = 10_000
MAX_VIEW_PIXELS = 4096 * 4096
"""Per camera, and per reference image: the renderer keeps a float32 RGBA target of every pixel."""
MAX_DATASET_PIXELS = 2**27
"""All cameras together: about 2 GB of float32 targets."""

SAMPLE_DIR = Path(__file__).parent / "sample"
SAMPLE_MAP = SAMPLE_DIR / "map1" / "map.json"
SAMPLE_DATASET = SAMPLE_DIR / "dataset1"
DEPTH_CONVENTIONS = ("negative_one_to_one", "zero_to_one")


@dataclass
class Camera:
    index: int
    width: int
    height: int
    view: np.ndarray  # (4, 4) world -> camera
    proj: np.ndarray  # (4, 4) camera -> clip
    depth: str = "negative_one_to_one"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "width": self.width, "height": self.height,
                "view": np.round(self.view, 6).tolist(), "proj": np.round(self.proj, 6).tolist()}

    def resized(self, width: int, height: int) -> Camera:
        """The same camera at another image size (clip space does not depend on pixels)."""
        return Camera(self.index, width, height, self.view, self.proj, self.depth)


def _matrix(value: Any, path: Path, where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
        m = np.zeros(0)
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise BadInputError(path, f"{where} must be a 4x4 matrix of finite numbers")
    return m


def read_cameras(path: str | os.PathLike[str]) -> list[Camera]:
    path = Path(path)
    doc = read_json_object(path, "cameras file", BadInputError)
    if not isinstance(doc.get("views"), list) or not doc["views"]:
        raise BadInputError(path, "expected a JSON object with a non-empty 'views' list")
    if len(doc["views"]) > MAX_VIEWS:
        raise BadInputError(path, f"has {len(doc['views']):,} views, more than the limit of {MAX_VIEWS:,}")
    depth = doc.get("depth", "negative_one_to_one")
    if not isinstance(depth, str) or depth not in DEPTH_CONVENTIONS:
        raise BadInputError(path, f"depth must be one of {', '.join(DEPTH_CONVENTIONS)}, got {shown(depth)}")
    cameras = []
    seen: set[int] = set()
    total = 0
    for i, view in enumerate(doc["views"]):
        where = f"views[{i}]"
        if not isinstance(view, dict):
            raise BadInputError(path, f"{where} is not an object")
        index, width, height = view.get("index", i), view.get("width"), view.get("height")
        for name, value in (("index", index), ("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "index" else 1):
                kind = "non-negative" if name == "index" else "positive"
                raise BadInputError(path, f"{where}.{name} must be a {kind} integer, got {shown(value)}")
        if width * height > MAX_VIEW_PIXELS:
            raise BadInputError(path, f"{where}: {width}x{height} = {width * height:,} pixels, more than the limit of "
                                      f"{MAX_VIEW_PIXELS:,} (4096x4096) per view")
        total += width * height
        if total > MAX_DATASET_PIXELS:
            raise BadInputError(path, f"{where}: the views up to here hold {total:,} pixels, more than the limit of "
                                      f"{MAX_DATASET_PIXELS:,} for a dataset")
        if index in seen:
            raise BadInputError(path, f"{where}: duplicate index {index}")
        seen.add(index)
        camera = Camera(index, width, height, _matrix(view.get("view"), path, f"{where}.view"),
                        _matrix(view.get("proj"), path, f"{where}.proj"), depth)
        try:  # what camera_rays inverts; errstate: huge entries overflow, which must not print a warning
            with np.errstate(all="ignore"):
                invertible = bool(np.isfinite(np.linalg.inv(camera.proj @ camera.view)).all())
        except np.linalg.LinAlgError:
            invertible = False
        if not invertible:
            raise BadInputError(path, f"{where}: proj @ view is singular, so no ray can be cast through a pixel")
        cameras.append(camera)
    return cameras


def write_cameras(path: str | os.PathLike[str], cameras: Sequence[Camera]) -> None:
    from ...run.files import write_json

    depth = cameras[0].depth if cameras else "negative_one_to_one"
    write_json(path, {"depth": depth, "views": [c.to_json() for c in cameras]})


def look_at(eye: np.ndarray, target: np.ndarray, up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """World-to-camera matrix of a camera at `eye` looking at `target` (camera -Z forward, +Y up)."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    true_up = np.cross(right, forward)
    view = np.eye(4)
    view[0, :3], view[1, :3], view[2, :3] = right, true_up, -forward
    view[:3, 3] = -view[:3, :3] @ eye
    return view


def perspective(fov_y_degrees: float, aspect: float, near: float, far: float) -> np.ndarray:
    """OpenGL projection (depth -1..1)."""
    f = 1.0 / math.tan(math.radians(fov_y_degrees) / 2)
    proj = np.zeros((4, 4))
    proj[0, 0], proj[1, 1] = f / aspect, f
    proj[2, 2], proj[2, 3] = (far + near) / (near - far), 2 * far * near / (near - far)
    proj[3, 2] = -1.0
    return proj


def orbit_cameras(world_size: Sequence[float], views: int, resolution: int, *, fov: float = 45.0,
                  elevations: Sequence[float] = (25.0, 40.0), azimuth_offset: float = 0.0) -> list[Camera]:
    """`views` cameras on a circle around the world, alternating elevations, all looking at its centre."""
    size = np.asarray(world_size, dtype=np.float64)
    center = size / 2
    center[1] = size[1] * 0.25  # worlds are bottom-heavy: aim below the middle of the box
    radius = 0.5 * float(np.linalg.norm(size)) / math.sin(math.radians(fov) / 2) * 0.78
    cameras = []
    for i in range(views):
        azimuth = math.radians(azimuth_offset + 360.0 * i / views)
        elevation = math.radians(elevations[i % len(elevations)])
        eye = center + radius * np.array([math.cos(elevation) * math.cos(azimuth), math.sin(elevation),
                                          math.cos(elevation) * math.sin(azimuth)])
        cameras.append(Camera(i, resolution, resolution, look_at(eye, center),
                              perspective(fov, 1.0, radius * 0.05, radius * 3)))
    return cameras


def image_path(dataset_dir: Path, index: int) -> Path:
    return dataset_dir / "images" / f"{index:04d}.png"


def read_image(path: Path, width: int, height: int) -> np.ndarray:
    """A reference view as float32 RGBA (H, W, 4) in 0..1, resized to (width, height) when needed."""
    from PIL import Image

    from ..common import open_image

    rgba = open_image(path, MAX_VIEW_PIXELS, "voxel reference views, 4096x4096", "RGBA")
    if rgba.size != (width, height):
        rgba = rgba.resize((width, height), Image.Resampling.BOX)
    return np.asarray(rgba, dtype=np.float32) / 255.0


@dataclass
class Dataset:
    dir: Path
    cameras: list[Camera]


def read_dataset(dataset_dir: str | os.PathLike[str]) -> Dataset:
    dataset_dir = Path(dataset_dir)
    return Dataset(dataset_dir, read_cameras(dataset_dir / "cameras.json"))


def _existing_ids(folder: Path, marker: str) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if (p / marker).is_file()), key=lambda n: (len(n), n))


def resolve_map(map_id: int, workspace: Path = Path(".")) -> tuple[Path, bool]:
    """`maps/{id}/map.json`, or the bundled sample for id 1; (path, is_bundled)."""
    path = workspace / "maps" / str(map_id) / "map.json"
    if path.is_file():
        return path, False
    if map_id == 1:
        return SAMPLE_MAP, True
    ids = _existing_ids(workspace / "maps", "map.json")
    raise BadInputError(path, f"no such map; map ids here: {', '.join(ids) or 'none'} (id 1 falls back to the bundled sample)")


def resolve_dataset(dataset_id: int, workspace: Path = Path(".")) -> tuple[Path, bool]:
    """`datasets/{id}/`, or the bundled sample for id 1; (dir, is_bundled)."""
    path = workspace / "datasets" / str(dataset_id)
    if (path / "cameras.json").is_file():
        return path, False
    if dataset_id == 1:
        return SAMPLE_DATASET, True
    ids = _existing_ids(workspace / "datasets", "cameras.json")
    raise BadInputError(path, f"no such dataset (cameras.json missing); dataset ids here: {', '.join(ids) or 'none'} "
                              "(id 1 falls back to the bundled sample)")
