"""`runforge data render-views` and `runforge export` (voxel worlds). No torch at import time.

    runforge data render-views --map maps/1/map.json --out datasets/1 [--views 24] [--resolution 128]
    runforge data render-views --map out_local/sds_training/final_map.json --out eval --cameras datasets/9/cameras.json
    runforge export --training_dir out_local/sds_training --source_map_id 1 [--registry maps]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...errors import ConfigError

MAX_ORBIT_VIEWS = 1000
MAX_RESOLUTION = 4096


def register(commands: Any, data: Any) -> None:
    render = data.add_parser("render-views", help="render a map.json into a dataset (cameras.json + images/)")
    render.add_argument("--map", required=True, type=Path, metavar="MAP_JSON", help="the map to render")
    render.add_argument("--out", required=True, type=Path, metavar="DATASET_DIR", help="dataset folder to write")
    render.add_argument("--views", type=int, default=24,
                        help=f"orbit cameras around the world (default: 24; 1..{MAX_ORBIT_VIEWS})")
    render.add_argument("--resolution", type=int, default=128,
                        help=f"image size of orbit cameras (default: 128; 8..{MAX_RESOLUTION})")
    render.add_argument("--cameras", type=Path, metavar="CAMERAS_JSON",
                        help="render at these cameras instead of an orbit (e.g. another dataset's cameras.json)")
    render.set_defaults(handler=cmd_render_views)

    export = commands.add_parser("export", help="export a voxel training run's final map to maps/trained_map_{SOURCE}_{X}/")
    export.add_argument("--training_dir", required=True, type=Path, metavar="DIR", help="the run folder")
    export.add_argument("--source_map_id", required=True, type=int, metavar="N", help="the map the run started from")
    export.add_argument("--registry", type=Path, default=Path("maps"), help="registry folder (default: maps)")
    export.set_defaults(handler=cmd_export)


def _in_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(None, f"{flag}: must be from {low} to {high}, got {value}")


def cmd_render_views(args: argparse.Namespace) -> int:
    from ...run.naming import make_dir
    from ..common import check_output, write_png
    from .dataset import MAX_DATASET_PIXELS, image_path, orbit_cameras, read_cameras, write_cameras
    from .map_io import read_map

    _in_range("--views", args.views, 1, MAX_ORBIT_VIEWS)
    _in_range("--resolution", args.resolution, 8, MAX_RESOLUTION)
    if args.views * args.resolution**2 > MAX_DATASET_PIXELS:  # what reading the dataset back would refuse
        raise ConfigError(None, f"--views {args.views} at --resolution {args.resolution}: "
                                f"{args.views * args.resolution**2:,} pixels, more than the limit of "
                                f"{MAX_DATASET_PIXELS:,} for a dataset")
    vmap = read_map(args.map)
    if args.cameras is not None:
        cameras = read_cameras(args.cameras)
    else:
        world = [s * vmap.block_size for s in vmap.size]
        cameras = orbit_cameras(world, args.views, args.resolution)
    check_output(args.out, ["cameras.json"], "--out")
    check_output(args.out / "images", [image_path(args.out, c.index).name for c in cameras], "--out")

    from .render import render_map

    make_dir(args.out / "images")  # the first write: an --out that cannot be made fails here, leaving nothing
    for camera in cameras:
        write_png(image_path(args.out, camera.index), render_map(vmap, camera), durable=False)
    write_cameras(args.out / "cameras.json", cameras)
    print(f"rendered {len(cameras)} views of {args.map} ({vmap.num_blocks} blocks) into {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_training

    _in_range("--source_map_id", args.source_map_id, 0, 10**9)
    folder = export_training(args.training_dir, args.source_map_id, args.registry)
    print(f"✅ Exported to: {folder}")
    return 0
