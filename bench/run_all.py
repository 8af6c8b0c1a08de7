"""Run every benchmark, all of them even when some miss their bar: `make bench`.

    .venv/bin/python bench/run_all.py [NAME ...] [--list]

Each bench runs in its own process, its output shown as it comes. At the end one table gives each
bench's exit code and seconds; the exit code is 1 when any bench failed (0 when all passed).
NAME picks benches by file name, with or without `.py` (`import_and_read`, `log_overhead.py`).
A bench/*.py that is neither listed below nor a helper runs after the listed ones, so a new bench
is never left out by forgetting this file.
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Cheapest first: a failure in a quick bench shows up before the long trainings start.
BENCHES = (
    "import_and_read.py",
    "log_overhead.py",
    "integrations_overhead.py",
    "monitor_dashboard_load.py",
    "voxel_render.py",
    "splat_raster.py",
    "voxel_fit.py",
    "splat_quality.py",
    "sr_quality.py",
    "kolmogorov_solver.py",
    "kolmogorov_assim.py",
)

# Not benches: modules and scripts the benches above run themselves.
HELPERS = (
    "run_all.py",
    "overhead_*.py",  # integrations_overhead.py imports them
    "jax_cfd_reference.py",  # kolmogorov_solver.py runs it in a venv of its own
)


@dataclass
class Result:
    name: str
    code: int
    seconds: float


def discover(directory: Path = HERE) -> list[Path]:
    """The listed benches in their order, then any other bench file in `directory`."""
    listed = [directory / name for name in BENCHES if (directory / name).is_file()]
    others = sorted(p for p in directory.glob("*.py")
                    if p.name not in BENCHES and not any(fnmatch.fnmatch(p.name, h) for h in HELPERS))
    return listed + others


def run_benches(paths: list[Path], python: str = sys.executable) -> list[Result]:
    results = []
    for path in paths:
        print(f"\n=== {path.name}", flush=True)
        started = time.perf_counter()
        try:
            code = subprocess.run([python, str(path)], cwd=path.parent.parent).returncode
        except KeyboardInterrupt:
            results.append(Result(path.name, 130, time.perf_counter() - started))
            break
        results.append(Result(path.name, code, time.perf_counter() - started))
    return results


def table(results: list[Result], planned: int) -> str:
    width = max([len(r.name) for r in results] + [5])
    rows = [f"{'bench':<{width}}  {'exit':>4}  {'seconds':>8}  result"]
    for r in results:
        rows.append(f"{r.name:<{width}}  {r.code:>4}  {r.seconds:>8.1f}  {'ok' if r.code == 0 else 'FAILED'}")
    failed = sum(r.code != 0 for r in results)
    total = sum(r.seconds for r in results)
    line = f"{len(results) - failed} of {len(results)} passed, {failed} failed, {total / 60:.1f} minutes"
    if len(results) < planned:
        line += f"; interrupted, {planned - len(results)} not run"
    return "\n".join(rows + [line])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="run only these benches")
    parser.add_argument("--list", action="store_true", help="print the benches in the order they run, and exit")
    args = parser.parse_args(argv)
    paths = discover()
    if args.names:
        wanted = {n if n.endswith(".py") else n + ".py" for n in args.names}
        unknown = wanted - {p.name for p in paths}
        if unknown:
            parser.error(f"no such bench: {', '.join(sorted(unknown))} (see --list)")
        paths = [p for p in paths if p.name in wanted]
    if args.list:
        print("\n".join(p.name for p in paths))
        return 0
    results = run_benches(paths)
    print("\n" + table(results, len(paths)), flush=True)
    if len(results) < len(paths):
        return 130
    return 1 if any(r.code != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
