"""Every trainer for a short while on CUDA, through the real CLI: `make gpu-check`.

    .venv/bin/python scripts/gpu_check.py [--keep DIR] [--dry-run]

In a new temporary folder (kept when a check fails, or with --keep), one after the other:
  voxel       photometric fit of the bundled world from a flat floor (`--preset demo`, 300 steps)
  sr          x2 super-resolution (`--preset cpu`, 1000 steps): validation PSNR above bicubic's
  splat       the synthetic COLMAP scene, trained (`--preset cpu`, 1500 steps) with `--backend gsplat`
              and with `--backend torch`: validation PSNR within 0.5 dB of each other; the training-time
              ratio is printed (torch seconds / gsplat seconds)
  kolmogorov  data (`--preset cpu`), training (`--preset cpu`, 400 epochs), assimilation of 2 held-out
              trajectories: posterior-mean RMSE below the interpolation baseline's
then one table: trainer, what, seconds, key metric, pass/fail. Each command's output goes to
logs/ in that folder; a failing one's last lines are printed.

Time: the checks share an 8-minute budget (the commands' timeouts are cut to what is left of it).
gsplat compiles its CUDA kernels on its first use on a machine (minutes, then cached under
~/.cache/torch_extensions): that is the `gsplat build` row, timed on its own, outside the budget.

Exit codes: 0 every check passed; 1 a check failed or ran out of time; 2 --dry-run found a command
that does not parse; 3 no CUDA GPU here (one line says so and nothing runs).

--dry-run prints the commands and checks each against the real parsers, building each trainer's
config from its flags as `runforge train` would (no data, no GPU, no training): a renamed flag or a
removed preset is caught on any machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

EXIT_FAILED = 1
EXIT_BAD_COMMAND = 2
EXIT_NO_GPU = 3
BUDGET_S = 8 * 60 - 30  # the table, the interpreter and torch's start in this process need the rest
SPLAT_PSNR_GAP_DB = 0.5

GSPLAT_BUILD = ("import torch\n"
                "from gsplat.cuda._backend import _C\n"
                "assert _C is not None, 'gsplat: its CUDA kernels did not build'\n"
                "print('gsplat kernels ready')")

Metric = Callable[[Path, dict[str, Any]], tuple[str, bool]]
"""(work folder, what earlier checks left in `notes`) -> (the key figure as text, passed)."""


@dataclass
class Check:
    trainer: str
    what: str
    argv: list[str]
    """After `python -m runforge`; for a `python -c` check, [code]."""
    timeout_s: int
    metric: Metric
    needs: tuple[str, ...] = ()
    """`what` of the checks whose output this one reads: skipped when one of them failed."""
    python_code: bool = False
    in_budget: bool = True

    def command(self) -> list[str]:
        return [sys.executable, "-c", *self.argv] if self.python_code else [sys.executable, "-m", "runforge", *self.argv]


@dataclass
class Outcome:
    check: Check
    seconds: float | None
    metric: str
    passed: bool
    log: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)


# -- reading what a check left behind ---------------------------------------------------------------

def _records(run_dir: Path) -> list[dict[str, Any]]:
    from runforge import read_metrics

    return read_metrics(run_dir)


def _last(records: list[dict[str, Any]], *path: str) -> Any:
    for record in reversed(records):
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def _first(records: list[dict[str, Any]], *path: str) -> Any:
    return _last(list(reversed(records)), *path)


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def voxel_metric(work: Path, notes: dict[str, Any]) -> tuple[str, bool]:
    records = _records(work / "voxel")
    first, last = _first(records, "losses", "photometric"), _last(records, "losses", "photometric")
    if not _finite(first, last):
        return "no photometric loss logged", False
    return f"photometric loss {first:.4g} -> {last:.4g}", last < first


def sr_metric(work: Path, notes: dict[str, Any]) -> tuple[str, bool]:
    records = _records(work / "sr")
    psnr, bicubic = _last(records, "val", "psnr"), _last(records, "val", "psnr_bicubic")
    if not _finite(psnr, bicubic):
        return "no validation logged", False
    return f"val PSNR {psnr:.2f} dB (bicubic {bicubic:.2f})", psnr > bicubic


def scene_metric(work: Path, notes: dict[str, Any]) -> tuple[str, bool]:
    images = list((work / "scene" / "images").glob("*.png"))
    return f"{len(images)} views", bool(images) and (work / "scene" / "sparse" / "0").is_dir()


def ran_metric(work: Path, notes: dict[str, Any]) -> tuple[str, bool]:
    return "ready", True


def _splat(work: Path, out: str) -> tuple[float | None, float | None]:
    """(validation PSNR, training seconds: the `time` of the last train.jsonl line)."""
    records = _records(work / out)
    psnr, seconds = _last(records, "val", "psnr"), _last(records, "time")
    return (psnr if _finite(psnr) else None), (seconds if _finite(seconds) else None)


def splat_gsplat_metric(work: Path, notes: dict[str, Any]) -> tuple[str, bool]:
    psnr, seconds = _splat(work, "splat_gsplat")
    notes["splat_gsplat"] = (psnr, seconds)
    if psnr is None:
        return "no validation logged", False
    return f"val PSNR {psnr:.2f} dB, trained in {seconds:.0f} s", True


def splat_torch_metric(work: Path, notes: dict[str, Any]) -> tuple[str, bool]:
    psnr, seconds = _splat(work, "splat_torch")
    theirs, their_seconds = notes.get("splat_gsplat", (None, None))
    if psnr is None:
        return "no validation logged", False
    if theirs is None:
        return f"val PSNR {psnr:.2f} dB (no gsplat figure to compare)", False
    gap = psnr - theirs
    speed = f"; torch/gsplat time {seconds / their_seconds:.1f}x" if seconds and their_seconds else ""
    return f"val PSNR {psnr:.2f} dB, {gap:+.2f} dB vs gsplat (bar {SPLAT_PSNR_GAP_DB}){speed}", \
        abs(gap) <= SPLAT_PSNR_GAP_DB


def kolmogorov_data_metric(work: Path, notes: dict[str, Any]) -> tuple[str, bool]:
    files = [work / "kdata" / f"{split}.h5" for split in ("train", "valid", "test")]
    return f"{sum(f.is_file() for f in files)}/3 splits", all(f.is_file() for f in files)


def kolmogorov_train_metric(work: Path, notes: dict[str, Any]) -> tuple[str, bool]:
    records = _records(work / "kolmogorov")
    first, last = _first(records, "loss_valid"), _last(records, "loss_valid")
    if not _finite(first, last):
        return "no loss_valid logged", False
    return f"loss_valid {first:.4f} -> {last:.4f}", last < first and (work / "kolmogorov" / "state.pth").is_file()


def kolmogorov_assim_metric(work: Path, notes: dict[str, Any]) -> tuple[str, bool]:
    try:
        mean = json.loads((work / "kassim" / "figures.json").read_text())["mean"]
    except (OSError, ValueError, KeyError):
        return "no figures.json", False
    ratio = mean.get("ratio_to_baseline")
    if not _finite(ratio):
        return "no ratio", False
    return f"RMSE ratio to interpolation {ratio:.3f} (bar < 1)", ratio < 1.0


# -- the checks -------------------------------------------------------------------------------------

RUN = ["--overwrite", "--no_tensorboard", "--progress", "lines"]


def checks() -> list[Check]:
    return [
        Check("voxel", "photometric fit", ["train", "voxel", "--preset", "demo", "--steps", "300", "--device", "cuda",
                                           "--no_export", "--out", "voxel", *RUN], 120, voxel_metric),
        Check("sr", "x2, 1000 steps", ["train", "sr", "--preset", "cpu", "--steps", "1000", "--device", "cuda",
                                       "--out", "sr", *RUN], 150, sr_metric),
        Check("splat", "synthetic scene", ["data", "synthetic-scene", "scene", "--overwrite"], 120, scene_metric),
        Check("splat", "gsplat build", [GSPLAT_BUILD], 900, ran_metric, python_code=True, in_budget=False),
        Check("splat", "gsplat backend", ["train", "splat", "--preset", "cpu", "--data_dir", "scene", "--backend",
                                          "gsplat", "--traj_frames", "0", "--out", "splat_gsplat", *RUN], 120,
              splat_gsplat_metric, needs=("synthetic scene", "gsplat build")),
        Check("splat", "torch backend", ["train", "splat", "--preset", "cpu", "--data_dir", "scene", "--backend",
                                         "torch", "--traj_frames", "0", "--out", "splat_torch", *RUN], 180,
              splat_torch_metric, needs=("synthetic scene",)),
        Check("kolmogorov", "data", ["data", "kolmogorov", "kdata", "--preset", "cpu", "--device", "cuda",
                                     "--overwrite"], 90, kolmogorov_data_metric),
        Check("kolmogorov", "train 400 epochs", ["train", "kolmogorov", "--preset", "cpu", "--data", "kdata",
                                                 "--epochs", "400", "--device", "cuda", "--out", "kolmogorov", *RUN],
              180, kolmogorov_train_metric, needs=("data",)),
        Check("kolmogorov", "assimilate", ["assimilate", "kolmogorov", "--obs", "coarse", "--factor", "4", "--noise",
                                           "0.1", "--length", "16", "--steps", "32", "--samples", "16",
                                           "--trajectories", "2", "--device", "cuda", "--out", "kassim"], 120,
              kolmogorov_assim_metric, needs=("train 400 epochs",)),
    ]


# -- --dry-run: each command against the real parsers ----------------------------------------------

def validate(check: Check) -> str | None:
    """None when the command parses and its config builds; else why not."""
    from runforge.errors import RunforgeError

    if check.python_code:
        try:
            compile(check.argv[0], check.what, "exec")
        except SyntaxError as exc:
            return f"python code: {exc}"
        return None
    try:
        if check.argv[0] == "train":
            _build_train_config(check.argv[1], check.argv[2:])
        else:
            _parse_command(check.argv)
    except SystemExit as exc:  # argparse said why on stderr
        return f"does not parse (exit {exc.code})"
    except RunforgeError as exc:
        return str(exc)
    return None


def _build_train_config(name: str, rest: list[str]) -> Any:
    """What `runforge train` does before check_inputs: parse the flags, start from the preset, build."""
    from runforge.cli import RUN_FLAGS, trainer_parser
    from runforge.config import build
    from runforge.trainers import TRAINERS

    config_module = importlib.import_module(TRAINERS[name] + ".config")
    args = vars(trainer_parser(name, config_module).parse_args(rest))
    run_args = {key: args.pop(key) for key in RUN_FLAGS + ("debug",) if key in args}
    base = config_module.PRESETS[run_args["preset"]] if run_args.get("preset") else None
    return build(config_module.Config, base, args)


def _parse_command(argv: list[str]) -> None:
    from runforge.cli import build_parser
    from runforge.config import build_from_args

    namespace = build_parser()[0].parse_args(argv)
    if argv[:2] == ["data", "kolmogorov"]:
        from runforge.trainers.kolmogorov.config import DataConfig, data_preset

        build_from_args(DataConfig, namespace, data_preset(namespace.preset))
    elif argv[0] == "assimilate":
        from runforge.trainers.kolmogorov.config import AssimilateConfig

        build_from_args(AssimilateConfig, namespace)


def dry_run(work: str) -> int:
    bad = 0
    for check in checks():
        shown = "python -c <gsplat build>" if check.python_code else "runforge " + shlex.join(check.argv)
        problem = validate(check)
        bad += problem is not None
        print(f"[{check.trainer}/{check.what}] (cd {work} && {shown})" + (f"\n    BAD: {problem}" if problem else ""))
    print(f"{len(checks()) - bad} of {len(checks())} commands parse")
    return EXIT_BAD_COMMAND if bad else 0


# -- running ---------------------------------------------------------------------------------------

def gpu_name() -> str | None:
    """The CUDA device's name; None without one (torch's answer, as every trainer's --device cuda asks)."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def run_checks(work: Path, plan: list[Check] | None = None, budget_s: float = BUDGET_S) -> list[Outcome]:
    plan = checks() if plan is None else plan
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    notes: dict[str, Any] = {}
    failed: set[str] = set()
    spent = 0.0
    for number, check in enumerate(plan, 1):
        missing = [need for need in check.needs if need in failed]
        left = budget_s - spent
        if missing:
            outcomes.append(Outcome(check, None, f"skipped: needs {', '.join(missing)}", False))
            failed.add(check.what)
            continue
        timeout = check.timeout_s if not check.in_budget else min(check.timeout_s, int(left))
        if timeout <= 0:
            outcomes.append(Outcome(check, None, "skipped: the 8-minute budget is spent", False))
            failed.add(check.what)
            continue
        log = logs / f"{number:02d}_{check.trainer}_{check.what.replace(' ', '_')}.log"
        print(f"[{number}/{len(plan)}] {check.trainer}: {check.what} (up to {timeout} s) ...", flush=True)
        started = time.perf_counter()
        with log.open("w") as out:
            out.write("$ " + shlex.join(check.command()) + "\n")
            out.flush()
            try:
                code: int | None = subprocess.run(check.command(), cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                                  timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                code = None
        seconds = time.perf_counter() - started
        if check.in_budget:
            spent += seconds
        if code is None:
            metric, passed = f"timed out after {timeout} s", False
        elif code != 0:
            metric, passed = f"exit {code}", False
        else:
            try:
                metric, passed = check.metric(work, notes)
            except Exception as exc:  # a check's reader must not hide the other rows
                metric, passed = f"could not read the result ({type(exc).__name__}: {exc})", False
        if not passed:
            failed.add(check.what)
            print("    failed; the log ends:\n" + "".join("    | " + line for line in _tail(log)), flush=True)
        outcomes.append(Outcome(check, seconds, metric, passed, log))
    return outcomes


def _tail(path: Path, lines: int = 15) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines(keepends=True)[-lines:]
    except OSError:
        return []


def table(outcomes: list[Outcome]) -> str:
    rows = [("trainer", "what", "seconds", "key metric", "result")]
    for o in outcomes:
        rows.append((o.check.trainer, o.check.what, "-" if o.seconds is None else f"{o.seconds:.0f}", o.metric,
                     "pass" if o.passed else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}"
                     for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and check that each parses; run none")
    args = parser.parse_args(argv)
    if args.dry_run:
        return dry_run(str(args.keep or "<temporary folder>"))

    name = gpu_name()
    if name is None:
        print(f"gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was run "
              f"(exit {EXIT_NO_GPU})", flush=True)
        return EXIT_NO_GPU
    work = args.keep or Path(tempfile.mkdtemp(prefix="runforge-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check on {name}; work folder {work}", flush=True)
    started = time.perf_counter()
    outcomes = run_checks(work.resolve())
    total = time.perf_counter() - started
    build = sum(o.seconds or 0 for o in outcomes if not o.check.in_budget)
    print("\n" + table(outcomes))
    passed = all(o.passed for o in outcomes)
    print(f"\n{sum(o.passed for o in outcomes)} of {len(outcomes)} passed in {total / 60:.1f} minutes "
          f"({build:.0f} s of it the gsplat build) on {name}")
    if passed and args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"outputs and logs kept in {work}")
    return 0 if passed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
