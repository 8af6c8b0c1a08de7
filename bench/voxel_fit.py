"""Fit the bundled world from a ground plane with photometric guidance; score it on views it never saw.

    .venv/bin/python bench/voxel_fit.py [--steps 3000] [--lr 0.1] [--rays 4096] [--lambda_support 0.01]

1. trains `runforge train voxel --init_mode ground_plane` on dataset 1 (24 orbit views, 128 px);
2. renders the sample map and the trained final_map.json at 16 held-out cameras
   (other azimuths and elevations) with `runforge data render-views --cameras`;
3. prints held-out PSNR (RGB over white), occupancy IoU, material accuracy on the
   blocks both maps share, and the CPU and wall minutes of training.
Bar: PSNR >= 30 dB and IoU >= 0.8 within 5 minutes; exits 1 below it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from runforge.cli import main as runforge
from runforge.trainers.voxel.dataset import (
    SAMPLE_MAP,
    orbit_cameras,
    read_image,
    write_cameras,
)
from runforge.trainers.voxel.map_io import read_map

BAR_PSNR, BAR_IOU, BAR_MINUTES = 30.0, 0.8, 5.0


def psnr_over_white(truth_dir: Path, fit_dir: Path, views: int, size: int) -> float:
    """PSNR of the mean squared error over all held-out views."""
    errors = []
    for index in range(views):
        a = read_image(truth_dir / "images" / f"{index:04d}.png", size, size)
        b = read_image(fit_dir / "images" / f"{index:04d}.png", size, size)
        rgb_a = a[..., :3] * a[..., 3:] + (1 - a[..., 3:])
        rgb_b = b[..., :3] * b[..., 3:] + (1 - b[..., 3:])
        errors.append(float(np.mean((rgb_a - rgb_b) ** 2)))
    return 10 * math.log10(1 / max(np.mean(errors), 1e-12))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--lambda_support", type=float, default=0.01)
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--keep", type=Path, help="keep the workspace here instead of a temporary folder")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = args.keep or Path(tempfile.mkdtemp(prefix="voxel_fit_"))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    truth = read_map(SAMPLE_MAP)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    code = runforge(["train", "voxel", "--init_mode", "ground_plane", "--steps", str(args.steps), "--lr", str(args.lr),
                     "--rays_per_step", str(args.rays), "--lambda_support", str(args.lambda_support),
                     "--image_every", "100", "--save_map_every", "200", "--log_every", "25",
                     "--out", "fit", "--overwrite", "--no_export", "--progress", "lines", "--no_tensorboard"])
    cpu_minutes, wall_minutes = (time.process_time() - cpu0) / 60, (time.perf_counter() - wall0) / 60
    if code != 0:
        print(f"training failed with exit code {code}")
        return 1

    held_out = orbit_cameras(truth.size, args.views, 128, elevations=(18.0, 33.0, 52.0), azimuth_offset=360 / 48)
    write_cameras(work / "held_out.json", held_out)
    for name, source in (("truth", SAMPLE_MAP), ("fit", work / "fit" / "final_map.json")):
        if runforge(["data", "render-views", "--map", str(source), "--out", name, "--cameras", "held_out.json"]) != 0:
            return 1
    fit = read_map(work / "fit" / "final_map.json")
    psnr = psnr_over_white(work / "truth", work / "fit", args.views, 128)
    union = (truth.occupied | fit.occupied).sum()
    both = truth.occupied & fit.occupied
    iou = both.sum() / max(union, 1)
    material_accuracy = (truth.material[both] == fit.material[both]).mean() if both.any() else 0.0
    load = os.getloadavg()
    print(f"held-out PSNR {psnr:.2f} dB | occupancy IoU {iou:.3f} | material accuracy {material_accuracy:.3f} | "
          f"blocks {fit.num_blocks}/{truth.num_blocks} | train CPU {cpu_minutes:.2f} min, wall {wall_minutes:.2f} min | "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} | workspace {work}")
    ok = psnr >= BAR_PSNR and iou >= BAR_IOU and cpu_minutes <= BAR_MINUTES
    print(("PASS" if ok else "FAIL") + f" (bar: PSNR >= {BAR_PSNR} dB, IoU >= {BAR_IOU}, <= {BAR_MINUTES} CPU minutes)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
