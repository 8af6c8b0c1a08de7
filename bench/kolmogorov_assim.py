"""Score-based data assimilation end to end on the CPU preset: data, training, assimilation.

    .venv/bin/python bench/kolmogorov_assim.py [--out DIR] [--trajectories 4]

Runs the three commands a user runs (`runforge data kolmogorov --preset cpu`,
`runforge train kolmogorov --preset cpu`, `runforge assimilate`), then checks two bars:
the whole pipeline within 20 minutes, and the posterior-mean RMSE at most 0.5× the
RMSE of the interpolation baseline, averaged over held-out test trajectories observed
as noisy ×4 block means (SDA's coarse observation). Assimilation runs as two
single-thread processes side by side, one per core. Exits 1 below either bar.
Run on a quiet machine (`uptime`): the time bar counts wall-clock seconds.
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

BAR_SECONDS = 20 * 60
BAR_RATIO = 0.5
# The sampler on the CPU: 32 predictor steps lose little against 128 here (measured), so the same
# time buys 16 samples for the posterior mean instead of 4.
ASSIMILATE = ["--obs", "coarse", "--factor", "4", "--noise", "0.1", "--length", "16",
              "--steps", "32", "--corrections", "1", "--samples", "16"]


def runforge(*args: str) -> list[str]:
    return [sys.executable, "-m", "runforge", *args]


def timed(stage: str, commands: list[list[str]], log: Path) -> float:
    """Run the commands side by side, their output into `log`; fail loudly when one fails."""
    started = time.perf_counter()
    with log.open("a") as out:
        procs = [subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT) for cmd in commands]
        codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - started
    if any(codes):
        sys.exit(f"{stage} failed (exit codes {codes}); see {log}")
    print(f"{stage}: {seconds:.0f} s", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="work folder (default: a new temporary folder)")
    parser.add_argument("--trajectories", type=int, default=4, help="held-out test trajectories assimilated")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="kolmogorov_assim_"))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "bench.log"
    print(f"load average {os.getloadavg()[0]:.2f}; work folder {out}; output in {log}", flush=True)

    data, root = out / "data", out / "runs"
    seconds = {"data": timed("data", [runforge("data", "kolmogorov", str(data), "--preset", "cpu",
                                               "--overwrite")], log)}
    seconds["train"] = timed("train", [runforge("train", "kolmogorov", "--preset", "cpu", "--data", str(data),
                                                "--root", str(root), "--progress", "lines")], log)
    (run,) = [p for p in root.iterdir() if (p / "state.pth").is_file()]
    first_half = (args.trajectories + 1) // 2
    parts = [(0, first_half), (first_half, args.trajectories - first_half)]
    outs = [out / "assimilation" / f"from_t{first}" for first, _ in parts]
    seconds["assimilate"] = timed("assimilate", [
        runforge("assimilate", str(run), *ASSIMILATE, "--trajectory", str(first), "--trajectories", str(count),
                 "--out", str(folder))
        for (first, count), folder in zip(parts, outs) if count], log)
    total = sum(seconds.values())

    results = [r for (_, count), folder in zip(parts, outs) if count
               for r in json.loads((folder / "figures.json").read_text())["trajectories"]]
    for r in results:
        print(f"test trajectory {r['trajectory']}: posterior mean {r['rmse_posterior_mean']:.4f}, samples "
              f"{r['rmse_posterior_samples']:.4f}, interpolation {r['rmse_baseline']:.4f} "
              f"(ratio {r['ratio_to_baseline']:.3f})")
    mean_rmse = sum(r["rmse_posterior_mean"] for r in results) / len(results)
    baseline_rmse = sum(r["rmse_baseline"] for r in results) / len(results)
    ratio = mean_rmse / baseline_rmse
    loss_valid = [json.loads(line).get("loss_valid") for line in (run / "train.jsonl").read_text().splitlines()]
    print(f"final loss_valid {[v for v in loss_valid if v is not None][-1]:.4f}; figures in {out / 'assimilation'}")
    print(f"posterior-mean RMSE {mean_rmse:.4f} vs interpolation {baseline_rmse:.4f}: ratio {ratio:.3f} "
          f"(bar {BAR_RATIO}); total {total:.0f} s (bar {BAR_SECONDS} s)")
    failed = []
    if ratio > BAR_RATIO:
        failed.append(f"ratio {ratio:.3f} above {BAR_RATIO}")
    if total > BAR_SECONDS:
        failed.append(f"{total:.0f} s above {BAR_SECONDS} s")
    print(("FAIL: " + "; ".join(failed)) if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
