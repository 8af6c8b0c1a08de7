"""Fit unseen worlds from a ground plane with photometric guidance; score them on views they never saw.

    .venv/bin/python bench/voxel_fit.py [--world big|small|both] [--steps N] [--keep DIR] [-- extra train flags]

Worlds: `big`, a 64x48x64 relief world (`worlds.relief_world`: hills, a lake, trees, a house; 1500 steps),
and `small`, the bundled 32x24x32 sample (the trainer's default 500 steps). For each:
1. renders 24 orbit views at 128 px (`runforge data render-views`), the training set;
2. trains `runforge train voxel` on them from a ground plane with RECIPE (the demo preset's flags; flags
   after `--` are appended and override it);
3. renders truth and fit at 16 held-out cameras (other azimuths and elevations) and prints held-out
   PSNR (RGB over white), occupancy IoU, surface IoU (the top block of every column: position and
   presence), the share of columns whose top is within one block of the truth and of the right material,
   material accuracy on shared blocks, and training CPU and wall minutes.
Bars: big >= 28 dB and surface IoU >= 0.5 in <= 5 CPU minutes; small >= 30 dB in <= 5 CPU minutes. Exit 1 below.
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
from runforge.trainers.voxel.dataset import SAMPLE_MAP, orbit_cameras, read_image, write_cameras
from runforge.trainers.voxel.map_io import VoxelMap, read_map, write_map
from runforge.trainers.voxel.worlds import relief_world

WORLDS = {  # name: (dataset/map id, steps, PSNR bar, surface IoU bar)
    "big": (2, 1500, 28.0, 0.5),
    "small": (3, 500, 30.0, 0.0),
}
BAR_CPU_MINUTES = 5.0
RECIPE = ["--init_mode", "ground_plane", "--lr", "0.1", "--lambda_support", "0.01", "--temp_start", "1.0",
          "--temp_end", "0.3", "--rays_per_step", "8192", "--views_per_step", "8"]
"""The flags of `--preset demo` (init_fog is 0.05 by default from a ground plane)."""


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


def top_surface(vmap: VoxelMap) -> np.ndarray:
    """(X, Y, Z) bool: the highest block of each column."""
    occ = vmap.occupied
    Y = occ.shape[1]
    highest = Y - 1 - np.argmax(occ[:, ::-1, :], axis=1)
    surface = np.zeros_like(occ)
    xs, zs = np.nonzero(occ.any(axis=1))
    surface[xs, highest[xs, zs], zs] = True
    return surface


def column_tops(vmap: VoxelMap) -> tuple[np.ndarray, np.ndarray]:
    """(X, Z) height of each column's top block (-1: none) and its material."""
    occ = vmap.occupied
    has = occ.any(axis=1)
    top = np.where(has, occ.shape[1] - 1 - np.argmax(occ[:, ::-1, :], axis=1), -1)
    xs, zs = np.indices(top.shape)
    return top, np.where(has, vmap.material[xs, np.maximum(top, 0), zs], 0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def fit_world(name: str, truth: VoxelMap, steps: int, extra: list[str], views: int) -> dict[str, float] | None:
    ident = WORLDS[name][0]
    write_map(Path("maps") / str(ident) / "map.json", truth)
    if runforge(["data", "render-views", "--map", f"maps/{ident}/map.json", "--out", f"datasets/{ident}",
                 "--views", "24", "--resolution", "128"]) != 0:
        return None
    out = f"fit_{name}"
    cpu0, wall0 = time.process_time(), time.perf_counter()
    code = runforge(["train", "voxel", "--dataset_id", str(ident), *RECIPE, "--steps", str(steps),
                     "--image_every", "250", "--save_map_every", "500", "--log_every", "50", "--out", out,
                     "--overwrite", "--no_export", "--progress", "lines", "--no_tensorboard", *extra])
    cpu, wall = (time.process_time() - cpu0) / 60, (time.perf_counter() - wall0) / 60
    if code != 0:
        print(f"training failed with exit code {code}")
        return None
    held_out = orbit_cameras(truth.size, views, 128, elevations=(18.0, 33.0, 52.0), azimuth_offset=360 / 48)
    write_cameras(Path(f"held_out_{name}.json"), held_out)
    for kind, source in (("truth", f"maps/{ident}/map.json"), ("fit", f"{out}/final_map.json")):
        if runforge(["data", "render-views", "--map", source, "--out", f"{kind}_{name}", "--cameras",
                     f"held_out_{name}.json"]) != 0:
            return None
    fit = read_map(Path(out) / "final_map.json")
    both = truth.occupied & fit.occupied
    return {"psnr": psnr_over_white(Path(f"truth_{name}"), Path(f"fit_{name}"), views, 128),
            "iou": iou(truth.occupied, fit.occupied), "surface_iou": iou(top_surface(truth), top_surface(fit)),
            "height_ok": float((np.abs(column_tops(truth)[0] - column_tops(fit)[0]) <= 1).mean()),
            "top_material": float((column_tops(truth)[1] == column_tops(fit)[1]).mean()),
            "material": float((truth.material[both] == fit.material[both]).mean()) if both.any() else 0.0,
            "blocks": fit.num_blocks, "truth_blocks": truth.num_blocks, "cpu": cpu, "wall": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", choices=("big", "small", "both"), default="both")
    parser.add_argument("--steps", type=int, help="override the world's step count")
    parser.add_argument("--views", type=int, default=16, help="held-out views")
    parser.add_argument("--keep", type=Path, help="keep the workspace here instead of a temporary folder")
    parser.add_argument("extra", nargs="*", help="more `runforge train voxel` flags (after --)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = (args.keep or Path(tempfile.mkdtemp(prefix="voxel_fit_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    names = ["big", "small"] if args.world == "both" else [args.world]
    ok = True
    for name in names:
        _, steps, bar_psnr, bar_surface = WORLDS[name]
        truth = relief_world((64, 48, 64), seed=7) if name == "big" else read_map(SAMPLE_MAP)
        steps = args.steps or steps
        r = fit_world(name, truth, steps, args.extra, args.views)
        if r is None:
            return 1
        load = os.getloadavg()
        print(f"[{name} {'x'.join(map(str, truth.size))}, {steps} steps] held-out PSNR {r['psnr']:.2f} dB | "
              f"occupancy IoU {r['iou']:.3f} | surface IoU {r['surface_iou']:.3f} | columns: top within 1 block "
              f"{r['height_ok']:.3f}, top material {r['top_material']:.3f} | material accuracy "
              f"{r['material']:.3f} | blocks {r['blocks']}/{r['truth_blocks']} | train CPU {r['cpu']:.2f} min, "
              f"wall {r['wall']:.2f} min | load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        passed = r["psnr"] >= bar_psnr and r["surface_iou"] >= bar_surface and r["cpu"] <= BAR_CPU_MINUTES
        surface_bar = f", surface IoU >= {bar_surface}" if bar_surface else ""
        print(("PASS" if passed else "FAIL") + f" {name} (bar: PSNR >= {bar_psnr} dB{surface_bar}, "
              f"<= {BAR_CPU_MINUTES} CPU minutes)")
        ok &= passed
    print(f"workspace {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
