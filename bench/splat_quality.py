"""Held-out quality of the splat trainer's `cpu` preset on the synthetic scene, and how long it takes.

    python bench/splat_quality.py [--preset cpu] [--out DIR] [extra `runforge train splat` flags ...]

Writes the synthetic scene (`runforge data synthetic-scene`, 40 views at 128x96, every 8th
held out) to a temp dir, trains the preset on it, and reads the last
`stats/val_step{step}.json`. Prints PSNR, SSIM, Gaussians, minutes and the load average
(other processes share this machine: read the minutes with it). Exits 1 below 28 dB or
over 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

BAR_PSNR = 28.0
BAR_MINUTES = 10.0


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--out", type=Path, help="run directory (default: a temp dir)")
    args, extra = ap.parse_known_args()
    import torch

    from runforge.cli import main as runforge
    from runforge.trainers.splat.scene import write_synthetic_scene

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_synthetic_scene(Path(tmp) / "scene")
        out = args.out or Path(tmp) / "run"
        print(f"load average before: {load()}", flush=True)
        t0 = time.perf_counter()
        code = runforge(["train", "splat", "--preset", args.preset, "--data_dir", str(scene), "--out", str(out),
                         "--overwrite", "--progress", "lines", "--traj_frames", "0", *extra])
        minutes = (time.perf_counter() - t0) / 60
        if code != 0:
            print(f"training failed with exit code {code}")
            return 1
        stats = sorted(out.glob("stats/val_step*.json"), key=lambda p: int(p.stem.removeprefix("val_step")))
        val = json.loads(stats[-1].read_text())
    print(f"preset {args.preset} {' '.join(extra)}: held-out PSNR {val['psnr']:.2f} dB, SSIM {val['ssim']:.4f}, "
          f"{val['num_GS']} Gaussians, {minutes:.1f} min (step {val['step_current']}); load average after: {load()}")
    ok = val["psnr"] >= BAR_PSNR and minutes <= BAR_MINUTES
    print(f"{'PASS' if ok else 'FAIL'} (bar: >= {BAR_PSNR} dB within {BAR_MINUTES} min)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
