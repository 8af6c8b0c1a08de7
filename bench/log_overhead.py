"""What logging costs a training loop: `python bench/log_overhead.py [--steps 100000]`.

In one process, N steps of 4 scalars each:
  - `run.log` call latency (p50, p99), as the training thread sees it;
  - total CPU per step (caller + writer thread, process CPU time until `close()` has drained),
    with the TensorBoard mirror off and on;
  - the same for a naive synchronous `json.dumps + write` per step, and for torch's
    `SummaryWriter.add_scalar` x4 (fewer steps: it is slow; the figure is per step);
  - a 256x256 PNG sample every step on a simulated 20 ms step (numpy work that releases the GIL,
    like a torch step): wall-time overhead in %.

Bars (exit 1 when missed): p50 <= 2 us; mirror off: CPU/step <= naive; mirror on: CPU/step at least 10x
below SummaryWriter; PNG every step adds <= 5 % to a 20 ms step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import runforge  # noqa: E402


def metrics_for(step: int) -> dict[str, float]:
    return {"loss": 1.0 / step, "lr": 1e-3 * (1 + step % 7), "grad_norm": 0.5 + step * 1e-6, "psnr": 20.0 + step * 1e-5}


def bench_run_log(workdir: Path, steps: int, tensorboard: bool) -> tuple[float, float, float]:
    """Returns (p50 us, p99 us, total CPU us per step).

    Latency and CPU come from two runs: timing each call costs CPU itself (two clock reads
    and a store per step), which the naive writer it is compared with does not pay.
    """
    inputs = [metrics_for(step) for step in range(1, steps + 1)]
    latencies = [0.0] * steps
    clock = time.perf_counter
    run = runforge.Run(trainer="bench", out=workdir / f"latency-tb{int(tensorboard)}", tensorboard=tensorboard, overwrite=True,
                       handle_signals=False, progress=False)
    log = run.log
    for step in range(1, steps + 1):
        t0 = clock()
        log(step, inputs[step - 1])
        latencies[step - 1] = clock() - t0
    run.close()
    latencies.sort()

    cpu0 = time.process_time()
    run = runforge.Run(trainer="bench", out=workdir / f"cpu-tb{int(tensorboard)}", tensorboard=tensorboard, overwrite=True,
                       handle_signals=False, progress=False)
    log = run.log
    for step in range(1, steps + 1):
        log(step, inputs[step - 1])
    run.close()
    cpu = time.process_time() - cpu0
    lines = len(runforge.read_metrics(run.dir))
    assert lines == steps, f"{lines} lines written for {steps} steps"
    return latencies[steps // 2] * 1e6, latencies[int(steps * 0.99)] * 1e6, cpu / steps * 1e6


def bench_naive(workdir: Path, steps: int) -> float:
    inputs = [metrics_for(step) for step in range(1, steps + 1)]
    start = time.perf_counter()
    cpu0 = time.process_time()
    with open(workdir / "naive.jsonl", "w") as f:
        for step in range(1, steps + 1):
            record = {"step": step, "time": time.perf_counter() - start}
            record.update(inputs[step - 1])
            f.write(json.dumps(record) + "\n")
    return (time.process_time() - cpu0) / steps * 1e6


def bench_summary_writer(workdir: Path, steps: int) -> float:
    from torch.utils.tensorboard import SummaryWriter

    inputs = [metrics_for(step) for step in range(1, steps + 1)]
    cpu0 = time.process_time()
    writer = SummaryWriter(str(workdir / "sw"))
    for step in range(1, steps + 1):
        for key, value in inputs[step - 1].items():
            writer.add_scalar(key, value, step)
    writer.close()
    return (time.process_time() - cpu0) / steps * 1e6


def bench_png(workdir: Path, steps: int) -> tuple[float, float]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    for _ in range(20):  # warm up
        a @ a
    t0 = time.perf_counter()
    for _ in range(200):
        a @ a
    repeats = max(1, round(0.020 / ((time.perf_counter() - t0) / 200)))

    def step_work() -> None:
        for _ in range(repeats):
            a @ a

    yy, xx = np.mgrid[0:256, 0:256]
    base = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.float32)
    # made before the loop: drawing the sample is the trainer's work, not the logger's
    samples = [(base + rng.integers(0, 24, size=(256, 256, 3))).clip(0, 255).astype(np.uint8) for _ in range(8)]

    def one(with_image: bool, name: str) -> float:
        run = runforge.Run(trainer="bench", out=workdir / name, handle_signals=False, progress=False)
        start = time.perf_counter()
        for step in range(1, steps + 1):
            step_work()
            run.log(step, metrics_for(step))
            if with_image:
                run.image(step, "sample", samples[step % len(samples)])
        run.close()
        elapsed = time.perf_counter() - start
        if with_image:
            assert len(list((run.dir / "images").iterdir())) == steps
        return elapsed / steps * 1e3

    plain = statistics.median(one(False, f"plain{i}") for i in range(3))
    images = statistics.median(one(True, f"img{i}") for i in range(3))
    return plain, images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--sw_steps", type=int, default=10_000, help="steps for SummaryWriter (slow)")
    parser.add_argument("--png_steps", type=int, default=100)
    args = parser.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # medians of 3 rounds, interleaved so that a busy moment of the machine hits every contender
        rounds = [(bench_naive(workdir, args.steps), bench_run_log(workdir, args.steps, tensorboard=False),
                   bench_run_log(workdir, args.steps, tensorboard=True)) for _ in range(3)]
        naive = statistics.median(r[0] for r in rounds)
        p50_off, p99_off, cpu_off = (statistics.median(r[1][i] for r in rounds) for i in range(3))
        p50_on, p99_on, cpu_on = (statistics.median(r[2][i] for r in rounds) for i in range(3))
        summary_writer = bench_summary_writer(workdir, args.sw_steps)
        plain_ms, image_ms = bench_png(workdir, args.png_steps)

    print(f"load average: {os.getloadavg()[0]:.2f}")
    print(f"run.log call latency, mirror on : p50 {p50_on:.2f} us, p99 {p99_on:.2f} us")
    print(f"run.log call latency, mirror off: p50 {p50_off:.2f} us, p99 {p99_off:.2f} us")
    print(f"CPU per step: naive json.dumps+write {naive:.2f} us | run.log mirror off {cpu_off:.2f} us "
          f"({cpu_off / naive:.2f}x naive)")
    print(f"CPU per step: SummaryWriter.add_scalar x4 {summary_writer:.1f} us | run.log mirror on {cpu_on:.2f} us "
          f"({summary_writer / cpu_on:.1f}x cheaper)")
    overhead = (image_ms / plain_ms - 1) * 100
    print(f"20 ms step: {plain_ms:.2f} ms plain, {image_ms:.2f} ms with a 256x256 PNG every step (+{overhead:.1f} %)")

    if p50_on > 2.0:
        failures.append(f"p50 {p50_on:.2f} us > 2 us")
    if cpu_off > naive:
        failures.append(f"mirror off costs {cpu_off:.2f} us/step > naive {naive:.2f} us")
    if summary_writer / cpu_on < 10:
        failures.append(f"mirror on only {summary_writer / cpu_on:.1f}x cheaper than SummaryWriter (< 10x)")
    if overhead > 5.0:
        failures.append(f"PNG per step adds {overhead:.1f} % (> 5 %)")
    for failure in failures:
        print(f"BELOW THE BAR: {failure}")
    print("log_overhead: " + ("FAIL" if failures else "all bars met"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
