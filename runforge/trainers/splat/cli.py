"""`runforge data synthetic-scene OUT`: write a small ray-traced scene as a COLMAP model + images."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any, data: Any) -> None:
    parser = data.add_parser("synthetic-scene", help="write a small synthetic COLMAP scene (images + sparse/0)")
    parser.add_argument("out", metavar="OUT", help="scene directory to create")
    parser.add_argument("--images", type=int, default=40, help="number of views (default 40)")
    parser.add_argument("--width", type=int, default=128, help="image width in pixels (default 128)")
    parser.add_argument("--height", type=int, default=96, help="image height in pixels (default 96)")
    parser.add_argument("--points", type=int, default=3000, help="sparse points to sample (default 3000)")
    parser.add_argument("--camera_model", default="PINHOLE",
                        choices=["PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "OPENCV"],
                        help="COLMAP camera model; distorted models are rendered with distortion (default PINHOLE)")
    parser.add_argument("--text", action="store_true", help="write the model as .txt instead of .bin")
    parser.add_argument("--seed", type=int, default=0, help="random seed of poses and points (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.set_defaults(handler=synthetic_scene)


def synthetic_scene(args: argparse.Namespace) -> int:
    from .scene import write_synthetic_scene

    out = write_synthetic_scene(args.out, n_images=args.images, width=args.width, height=args.height,
                                n_points=args.points, camera_model=args.camera_model, text=args.text,
                                seed=args.seed, overwrite=args.overwrite)
    kind = "text" if args.text else "binary"
    print(f"synthetic scene: {args.images} images {args.width}x{args.height} ({args.camera_model}), "
          f"{kind} COLMAP model in {out}/sparse/0")
    return 0
