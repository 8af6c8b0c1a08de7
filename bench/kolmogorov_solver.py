"""Speed of the Kolmogorov pseudo-spectral solver: IF-RK4 steps per second at 64² and 256².

    .venv/bin/python bench/kolmogorov_solver.py [--threads 1] [--jax-python /tmp/jaxcfd/bin/python]

Prints steps/s (one step = one IF-RK4 step of every trajectory in the batch) and
trajectory-steps/s, and exits 1 when 64² with batch 1 runs below the bar. Run on a
quiet machine (`uptime`): other processes on the 2 cores halve these figures.
With --jax-python (a throwaway venv with jax 0.5.3 and jax-cfd, see bench/jax_cfd_reference.py)
it also times jax-cfd's finite-volume solver as SDA runs it and prints the ratios, per step and
per unit of simulated time (the two solvers take different time steps).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from runforge.trainers.kolmogorov.solver import KolmogorovFlow

BAR_STEPS_PER_SECOND_64 = 1000.0  # batch 1, float32, one thread; about half of a quiet machine's figure


def measure(size: int, batch: int, steps: int) -> float:
    flow = KolmogorovFlow(size)
    w_hat = torch.fft.rfft2(flow.random_vorticity(batch, torch.Generator().manual_seed(0)))
    dt = flow.dt_max
    for _ in range(3):  # warm-up
        w_hat = flow.step_hat(w_hat, dt)
    started = time.perf_counter()
    for _ in range(steps):
        w_hat = flow.step_hat(w_hat, dt)
    elapsed = time.perf_counter() - started
    assert torch.isfinite(w_hat).all()
    return steps / elapsed


def compare_with_jax_cfd(python: str, results: dict[tuple[int, int], float]) -> None:
    script = Path(__file__).with_name("jax_cfd_reference.py")
    done = subprocess.run([python, str(script), "64", "256"], capture_output=True, text=True)
    if done.returncode:
        print(f"jax-cfd: failed to run with {python}: {done.stderr.strip().splitlines()[-1:]}")
        return
    for line in done.stdout.splitlines():
        ref = json.loads(line)
        size = ref["size"]
        ours = results[(size, 1)]
        dt = KolmogorovFlow(size).dt_max
        print(f"jax-cfd {ref['jax']} FVM at {size}²: {ref['steps_per_second']:8.1f} steps/s of dt {ref['dt']:.4f} "
              f"(runforge dt {dt:.4f}); jax-cfd / runforge: {ref['steps_per_second'] / ours:.2f}x per step, "
              f"{ref['steps_per_second'] * ref['dt'] / (ours * dt):.2f}x per simulated time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jax-python", help="a Python with jax-cfd installed, to time it beside this solver")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {args.threads}")
    results = {}
    for size, batch, steps in ((64, 1, 400), (64, 16, 100), (256, 1, 20), (256, 8, 5)):
        rate = measure(size, batch, steps)
        results[(size, batch)] = rate
        print(f"{size:>3}² batch {batch:>2}: {rate:8.1f} steps/s  ({rate * batch:8.1f} trajectory-steps/s)")
    flow = KolmogorovFlow(256)
    print(f"256² at dt 0.2 needs {flow.substeps(0.2)} steps per stored state: "
          f"{results[(256, 1)] / flow.substeps(0.2):.2f} states/s per trajectory")
    if args.jax_python:
        compare_with_jax_cfd(args.jax_python, results)
    rate = results[(64, 1)]
    if rate < BAR_STEPS_PER_SECOND_64:
        print(f"FAIL: 64² batch 1 runs {rate:.1f} steps/s, below the bar of {BAR_STEPS_PER_SECOND_64}")
        return 1
    print(f"OK: 64² batch 1 runs {rate:.1f} steps/s (bar {BAR_STEPS_PER_SECOND_64})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
