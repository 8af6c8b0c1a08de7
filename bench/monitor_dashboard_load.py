"""Dashboard under load (issue 4): big runs, many runs, many pollers.

    .venv/bin/python bench/monitor_dashboard_load.py [--points 1000000] [--runs 1000] [--pollers 50] [--seconds 30]

1. A run with 1,000,000 logged points and a root with 1,000 runs, served by `runforge serve`:
   the cold start, the first chart of the big run asked for as soon as a freshly started server
   answers (bar 0.3 s: it reads the columns of train.index, the sidecar the run's writer kept,
   instead of parsing train.jsonl; the same from a fresh `Catalog` in a new process, and the old
   way, parsing the whole train.jsonl, are printed too); the chart once the run is in memory
   (bar 0.3 s) and the runs table (bar 0.5 s).
2. 50 pollers, each doing what an open run page does every second, for 30 s against a
   training toy run: zero errors, and the trainer's step time within 5 % of a run with no
   dashboard.
Exits 1 when a bar is missed. Run it on a quiet machine (`uptime`) and report the load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import runforge

PYTHON = sys.executable
ENV = {**os.environ, "RUNFORGE_NO_KEYS": "1", "PYTHONUNBUFFERED": "1"}


def start_server(root: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([PYTHON, "-m", "runforge", "serve", str(root), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)
    port = int(re.search(r":(\d+)/", proc.stdout.readline()).group(1))
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def timed_get(port: int, path: str) -> tuple[float, int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed, response.status, body


def build_root(base: Path, points: int, runs: int) -> Path:
    root = base / "runs"
    t = time.perf_counter()
    with runforge.Run(trainer="bench", config={}, out=root / "big", steps=points, tensorboard=False,
                      progress=False, handle_signals=False) as run:
        for step in range(1, points + 1):
            run.log(step, {"loss": 1.0 / step ** 0.5 + (5.0 if step == points // 3 else 0.0)})
    print(f"wrote a run with {points:,} logged points in {time.perf_counter() - t:.1f} s "
          f"({(root / 'big' / 'train.jsonl').stat().st_size / 1e6:.0f} MB)")
    with runforge.Run(trainer="bench", config={"lr": 0.1}, out=base / "template", steps=100, tensorboard=False,
                      progress=False, handle_signals=False) as run:
        for step in range(1, 101):
            run.log(step, {"loss": 1.0 / step, "val": {"loss": 1.1 / step}})
        run.snapshot(100, {"best_quality_ever": 0.5})
    template = base / "template"
    info = json.loads((template / "run.json").read_text())
    for index in range(runs - 1):
        target = root / f"run-{index:04d}"
        shutil.copytree(template, target)
        created = f"2026-01-01T{index // 3600:02d}:{index // 60 % 60:02d}:{index % 60:02d}Z"
        info.update(name=f"run-{index}", id=f"{index:08d}", created_at=created)
        (target / "run.json").write_text(json.dumps(info))
    return root


FRESH_CATALOG = """
import sys, time
t = time.perf_counter()
from runforge.monitor.catalog import Catalog
catalog = Catalog([sys.argv[1]])
store = catalog.store(catalog.get("big"))
chart = store.chart("loss", 1500)
elapsed = time.perf_counter() - t
assert chart["points"] == int(sys.argv[2]), chart["points"]
print(elapsed)
"""


def fresh_catalog_chart(root: Path, points: int, index: bool) -> float:
    """Seconds from a new process's first import of the dashboard to the first chart of the big run,
    with or without its train.index (moved aside and back)."""
    aside = root.parent / "train.index.aside"
    if not index:
        os.replace(root / "big" / "train.index", aside)
    try:
        out = subprocess.run([PYTHON, "-c", FRESH_CATALOG, str(root), str(points)], capture_output=True, text=True,
                             env=ENV, check=True).stdout
    finally:
        if not index:
            os.replace(aside, root / "big" / "train.index")
    return float(out)


def bench_big(base: Path, points: int, runs: int) -> bool:
    root = build_root(base, points, runs)
    index_size = (root / "big" / "train.index").stat().st_size
    fresh = statistics.median(fresh_catalog_chart(root, points, True) for _ in range(3))
    parse = statistics.median(fresh_catalog_chart(root, points, False) for _ in range(3))
    print(f"first chart from a fresh Catalog in a new process (imports included): {fresh:.2f} s with train.index "
          f"({index_size / 1e6:.0f} MB), {parse:.2f} s parsing train.jsonl (a run without one)")
    colds = []
    for attempt in range(3):
        server, port = start_server(root)
        try:
            cold, status, body = timed_get(port, "/api/run/big/metrics?names=loss&points=1500")
            series = json.loads(body)["series"]["loss"]
            assert status == 200 and series["points"] == points and 5.0 < max(series["y"]), "the spike was lost"
            colds.append(cold)
        finally:
            stop(server)
    cold_chart = statistics.median(colds)
    os.replace(root / "big" / "train.index", base / "train.index.aside")
    server, port = start_server(root)
    try:
        unindexed = timed_get(port, "/api/run/big/metrics?names=loss&points=1500")[0]
    finally:
        stop(server)
        os.replace(base / "train.index.aside", root / "big" / "train.index")
    print(f"cold start of the same run without its train.index (parsing train.jsonl, as before it existed): "
          f"{unindexed:.3f} s")
    print(f"cold start: first chart of {points:,} points as soon as a fresh server answers: median {cold_chart:.3f} s "
          f"of {', '.join(f'{c:.3f}' for c in colds)} (bar 0.3 s)")
    server, port = start_server(root)
    ok = cold_chart <= 0.3
    try:
        timed_get(port, "/api/run/big/metrics?names=loss&points=1500")
        # distinct point counts: each request is downsampled afresh, not answered from the server's cache
        chart = statistics.median(timed_get(port, f"/api/run/big/metrics?names=loss&points={1500 + i}")[0]
                                  for i in range(1, 6))
        cold_table, status, body = timed_get(port, "/api/runs")
        assert status == 200 and len(json.loads(body)["runs"]) == runs, status
        table = statistics.median(timed_get(port, "/api/runs")[0] for _ in range(5))
        detail = statistics.median(timed_get(port, "/api/run/big")[0] for _ in range(5))
    finally:
        stop(server)
    print(f"chart of {points:,} points once in memory: median {chart:.3f} s, {len(series['x'])} points sent, "
          f"spike kept (bar 0.3 s)")
    print(f"runs table, {runs} runs: first {cold_table:.3f} s, then median {table:.3f} s (bar 0.5 s)")
    print(f"run page data (/api/run/big): median {detail:.3f} s")
    if table > 0.5 or chart > 0.3:
        ok = False
    return ok


def toy_step_time(out: Path, steps: int, toy_flags: list[str], during=None) -> float:
    proc = subprocess.Popen([PYTHON, "-m", "runforge", "train", "toy", "--out", str(out), "--steps", str(steps),
                             "--val_every", "500", "--ckpt_every", "500", "--log_every", "10",
                             "--no_tensorboard", "--progress", "lines", *toy_flags], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    if during is not None:
        during(out)
    assert proc.wait() == 0
    lines = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines() if '"loss"' in line]
    first, last = lines[2], lines[-1]  # skip the start-up
    return (last["time"] - first["time"]) / (last["step"] - first["step"])


def bench_pollers(base: Path, pollers: int, seconds: float, toy_flags: list[str]) -> bool:
    probe = toy_step_time(base / "probe" / "toy", 50, toy_flags)
    steps = int(seconds / probe)
    baseline = toy_step_time(base / "quiet" / "toy", steps, toy_flags)
    root = base / "busy"
    root.mkdir()
    server, port = start_server(root)
    errors: list[str] = []
    requests = [0]
    stop_flag = threading.Event()
    lock = threading.Lock()

    def poller() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        paths = ["/api/run/toy", "/api/run/toy/metrics?points=1500", "/api/run/toy/events?tail=200", "/api/runs"]
        while not stop_flag.is_set():
            started = time.monotonic()
            for path in paths:
                try:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        with lock:
                            errors.append(f"{path}: {response.status}")
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        errors.append(f"{path}: {exc!r}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                with lock:
                    requests[0] += 1
            stop_flag.wait(max(0.0, 1.0 - (time.monotonic() - started)))  # once a second, like the page
        conn.close()

    def during(out: Path) -> None:
        deadline = time.monotonic() + 30
        while not (out / "train.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for thread in threads:
            thread.start()

    threads = [threading.Thread(target=poller, daemon=True) for _ in range(pollers)]
    try:
        loaded = toy_step_time(root / "toy", steps, toy_flags, during)
    finally:
        stop_flag.set()
        for thread in threads:
            thread.join(timeout=30)
        stop(server)
    ratio = loaded / baseline
    print(f"{pollers} pollers for ~{seconds:.0f} s: {requests[0]} requests, {len(errors)} errors"
          + (f" (first: {errors[0]})" if errors else ""))
    print(f"toy step time ({' '.join(toy_flags)}): {baseline * 1000:.2f} ms without dashboard, {loaded * 1000:.2f} ms with it "
          f"(ratio {ratio:.3f}, bar 1.05)")
    return not errors and ratio <= 1.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--toy", default="--step_sleep 0.02",
                        help="flags of the watched toy run (e.g. '--step_sleep 0 --batch_size 256': CPU-bound steps)")
    parser.add_argument("--big_only", action="store_true", help="part 1 only (no pollers)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        ok = bench_big(Path(tmp), args.points, args.runs)
        if not args.big_only:
            ok = bench_pollers(Path(tmp), args.pollers, args.seconds, args.toy.split()) and ok
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
