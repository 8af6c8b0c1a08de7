"""The sr trainer's quality figure: `runforge train sr --preset cpu` (x2) against bicubic on the bundled val set.

    .venv/bin/python bench/sr_quality.py [--keep DIR]

Bar: final validation PSNR of the model >= bicubic's + 1.0 dB, quality_improvement_value (SSIM gain) > 0,
and the whole run (data generation on a cold cache included) within 10 minutes. Exits 1 below the bar.
Run it on a quiet machine: it prints the load average it started and ended with.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PSNR_BAR_DB = 1.0
MINUTES_BAR = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="keep the run in DIR (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "sr_cpu"
        load_before = os.getloadavg()
        start = time.perf_counter()
        command = [sys.executable, "-m", "runforge", "train", "sr", "--preset", "cpu", "--out", str(out),
                   "--overwrite", "--progress", "lines"]
        done = subprocess.run(command, check=False)
        minutes = (time.perf_counter() - start) / 60
        load_after = os.getloadavg()
        if done.returncode != 0:
            print(f"sr_quality: training failed with exit code {done.returncode}")
            return 1
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        final = json.loads((out / "Learn" / f"Statistik_{config['steps']}.json").read_text(encoding="utf-8"))

    gain = final["psnr_ki_value"] - final["psnr_lr_value"]
    print(f"sr_quality: preset cpu, x{config['scale']}, {config['steps']} steps, {config['val_crops']} val crops "
          f"of {config['val_crop']} px (bundled textures)")
    print(f"  PSNR model   {final['psnr_ki_value']:.2f} dB")
    print(f"  PSNR bicubic {final['psnr_lr_value']:.2f} dB")
    print(f"  gain         {gain:+.2f} dB (bar +{PSNR_BAR_DB:.1f})")
    print(f"  SSIM model {final['quality_ki_value']:.4f}, bicubic {final['quality_lr_value']:.4f}, "
          f"quality_improvement_value {final['quality_improvement_value']:+.4f} (bar > 0)")
    print(f"  minutes      {minutes:.2f} (bar {MINUTES_BAR:.0f}); load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f} (1 min)")
    ok = gain >= PSNR_BAR_DB and final["quality_improvement_value"] > 0 and minutes <= MINUTES_BAR
    print("sr_quality: PASS" if ok else "sr_quality: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
