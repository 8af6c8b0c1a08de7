"""What `import runforge` and reading a run back cost: `python bench/import_and_read.py [--repeat 7]`.

Import: each statement in a fresh interpreter, timed inside it around the statement alone (the
interpreter's own start-up is the same for every library and is left out), median of `--repeat`
processes. Bytecode caches are written by one untimed warm-up first: what every use after the first
sees (pip writes them at install). Peers beside it: `import wandb`, and `import dvclive` where it is
installed (it is not a runforge dependency: it pulls in dvc, celery, hydra and ~50 other packages).
`from runforge import Run` is printed too: the realistic first use, which loads the run layer.

Read: a run of 20,000 `run.log` lines x 4 logged values (`loss`, `lr` and a nested
`{"losses": {"l1", "ssim"}}`) = 80,000 values, 3 MB of train.jsonl, written by `runforge.Run`;
`runforge.read_metrics` against the naive `[json.loads(line) for line in f]`, median of `--repeat`
reads in one process (modules already imported).

Bars (exit 1 when missed): `import runforge` median <= 50 ms; `read_metrics` of the 80k values
median <= 0.05 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORT_BAR_S = 0.050
READ_BAR_S = 0.050
LINES = 20_000
VALUES_PER_LINE = 4

TIMED = "import time; _t = time.perf_counter(); {stmt}; print(time.perf_counter() - _t)"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the warm-up must leave bytecode caches behind
    return env


def import_seconds(statement: str, repeat: int) -> float | None:
    """Median seconds of `statement` in fresh interpreters; None when it fails (not installed)."""
    command = [sys.executable, "-c", TIMED.format(stmt=statement)]
    warm = subprocess.run(command, capture_output=True, text=True, env=_env())
    if warm.returncode != 0:
        return None
    times = []
    for _ in range(repeat):
        done = subprocess.run(command, capture_output=True, text=True, env=_env(), check=True)
        times.append(float(done.stdout.split()[-1]))
    return statistics.median(times)


def write_run(out: Path) -> Path:
    from runforge import Run

    with Run(trainer="bench", out=out, overwrite=True, tensorboard=False, progress=False,
             handle_signals=False, terminal_keys=False) as run:
        for step in range(1, LINES + 1):
            run.log(step, {"loss": 1.0 / step + 0.001 * math.sin(step), "lr": 1e-3 * 0.999 ** (step / 100),
                           "losses": {"l1": 0.5 / step, "ssim": 1.0 - 0.3 / math.sqrt(step)}})
    return out


def read_seconds(read, repeat: int) -> float:
    read()  # untimed: first touch of the file and of the parser
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _row(what: str, seconds: float | None, ours: dict[str, float | None] | None = None,
         bar: float | None = None) -> str:
    """`ours`: the runforge figures this peer is compared with, by what they time."""
    if seconds is None:
        return f"{what:<44} {'not installed':>10}"
    text = f"{what:<44} {seconds * 1e3:>8.1f} ms"
    for label, base in (ours or {}).items():
        if base:
            text += f"   {seconds / base:>6.1f}x {label}"
    if bar is not None:
        text += f"   bar {bar * 1e3:.0f} ms: " + ("ok" if seconds <= bar else "MISSED")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="processes / reads per figure (median; >= 5)")
    args = parser.parse_args(argv)
    repeat = max(5, args.repeat)

    ours = import_seconds("import runforge", repeat)
    if ours is None:
        print("`import runforge` failed", file=sys.stderr)
        return 2
    run_import = import_seconds("from runforge import Run", repeat)
    reader_import = import_seconds("from runforge import read_metrics", repeat)
    wandb = import_seconds("import wandb", repeat) if importlib.util.find_spec("wandb") else None
    dvclive = import_seconds("import dvclive", repeat) if importlib.util.find_spec("dvclive") else None

    with tempfile.TemporaryDirectory(prefix="runforge-bench-") as tmp:
        run_dir = write_run(Path(tmp) / "run")
        from runforge import read_metrics

        records = read_metrics(run_dir)
        assert len(records) == LINES and records[-1]["losses"]["ssim"] > 0, "the run did not read back whole"
        assert records == naive_read(run_dir / "train.jsonl"), "read_metrics and json disagree"
        read = read_seconds(lambda: read_metrics(run_dir), repeat)
        naive = read_seconds(lambda: naive_read(run_dir / "train.jsonl"), repeat)
        size_mb = (run_dir / "train.jsonl").stat().st_size / 1e6

    print(f"import, median of {repeat} fresh interpreters ({sys.executable}); Nx = peer time / runforge time")
    print(_row("import runforge", ours, bar=IMPORT_BAR_S))
    print(_row("from runforge import Run", run_import))
    print(_row("from runforge import read_metrics", reader_import))
    against = {"`import runforge`": ours, "`from runforge import Run`": run_import}
    print(_row("import wandb", wandb, against))
    print(_row("import dvclive", dvclive, against)
          + ("" if dvclive is not None else "  (not a dependency: it pulls in dvc, celery, hydra, ...)"))
    print()
    print(f"read back {LINES:,} lines x {VALUES_PER_LINE} values = {LINES * VALUES_PER_LINE:,} values "
          f"({size_mb:.1f} MB train.jsonl, nested 'losses' dict), median of {repeat} reads")
    print(_row("runforge.read_metrics", read, bar=READ_BAR_S))
    print(_row("[json.loads(line) for line in f]", naive, {"read_metrics": read}))

    failed = ours > IMPORT_BAR_S or read > READ_BAR_S
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
