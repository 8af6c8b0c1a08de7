"""`runforge sweep` and `runforge rerun` (registered through runforge.cli.COMMAND_MODULES; no torch or
submitit at import time).

    runforge sweep TRAINER --grid lr=1e-3,1e-2 steps=500,1500 [--random N] [--executor local|slurm] [-j 2]
                           [--root runs] [--name NAME] [--preset P] [--config FILE.json] [--trainer flags]
    runforge rerun RUN [--flag value ...] [--out DIR | --root R] [--name NAME]
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from ..config import OneLineParser, add_config_arguments, load_file
from ..errors import ConfigError
from ..trainers import TRAINERS

SLURM_TOOLS = ("sbatch", "srun", "sacct")


class FlagParser(OneLineParser):
    """A parser whose errors are `runforge: error: <flag>: <problem>` lines (exit 2), not argparse's usage."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(None, message)


def register(commands: Any, data: Any) -> None:
    sweep = commands.add_parser("sweep", add_help=False,
                                help="one run per point of a grid or of random samples, through submitit")
    sweep.add_argument("trainer", nargs="?", help="the trainer to sweep")
    sweep.add_argument("rest", nargs=argparse.REMAINDER)
    sweep.set_defaults(handler=cmd_sweep)

    rerun = commands.add_parser("rerun", add_help=False,
                                help="a new run of RUN's trainer with RUN's config.json, flags on top")
    rerun.add_argument("run", nargs="?", metavar="RUN")
    rerun.add_argument("rest", nargs=argparse.REMAINDER)
    rerun.set_defaults(handler=cmd_rerun)


def available_trainers() -> list[str]:
    import importlib.util

    return [name for name, module in TRAINERS.items() if importlib.util.find_spec(module + ".config") is not None]


def config_module(trainer: str, where: str | None = None) -> Any:
    available = available_trainers()
    if trainer not in available:
        raise ConfigError(where, f"unknown trainer {trainer!r}; choose from {', '.join(available)}")
    return importlib.import_module(TRAINERS[trainer] + ".config")


def sweep_parser(trainer: str, module: Any) -> argparse.ArgumentParser:
    parser = FlagParser(prog=f"runforge sweep {trainer}", add_help=False,
                        description=f"One `runforge train {trainer}` run per point, in one sweep folder.")
    group = parser.add_argument_group("sweep")
    group.add_argument("--grid", nargs="+", metavar="KEY=VALUES", required=True,
                       help="flags to vary: lr=1e-3,1e-2 (a list), seed=0..3 (integers), lr=1e-4:1e-1 (a range, "
                            "with --random); the grid is their cartesian product")
    group.add_argument("--random", type=_count("--random", 10_000), metavar="N",
                       help="N random points instead of the whole grid (ranges: log-uniform when both ends are "
                            "positive and span >10x, else uniform; lists: N distinct points of the product)")
    group.add_argument("--random_seed", type=_count("--random_seed", 2**32, low=0), default=0, metavar="INT",
                       help="seed of the random points (default 0: the same command gives the same points)")
    group.add_argument("--executor", choices=["local", "slurm"], default="local",
                       help="submitit executor: local processes, or one Slurm job array")
    group.add_argument("-j", "--jobs", type=_count("-j", 4096), metavar="N",
                       help="points running at once (default: 1 locally, all on Slurm)")
    group.add_argument("--root", default="runs", metavar="DIR", help="where the sweep folder is made (default runs)")
    group.add_argument("--name", help="the sweep folder's name (default {trainer}-sweep-{date}-{time})")
    group.add_argument("--time_min", type=_count("--time_min", 10**7), metavar="MIN",
                       help="time limit per point (default: none locally, 24 h on Slurm)")
    group.add_argument("--slurm_partition", metavar="NAME", help="Slurm partition")
    group.add_argument("--slurm_cpus", type=_count("--slurm_cpus", 4096), default=2, metavar="N",
                       help="CPUs per point on Slurm (default 2)")
    group.add_argument("--slurm_gpus", type=_count("--slurm_gpus", 64, low=0), default=0, metavar="N",
                       help="GPUs per point on Slurm (default 0)")
    group.add_argument("--slurm_mem_gb", type=_count("--slurm_mem_gb", 10**6), metavar="GB", help="memory per point on Slurm")
    run = parser.add_argument_group("every point")
    presets = getattr(module, "PRESETS", {})
    run.add_argument("--preset", choices=sorted(presets) or None, help="start every point from a named config")
    run.add_argument("--config", metavar="FILE.json", help="start every point from a config file")
    run.add_argument("--no_tensorboard", action="store_true", help="do not mirror metrics into tb/")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    run.add_argument("-h", "--help", action="help", help="show this help and exit")
    add_config_arguments(parser, module.Config)
    return parser


def _count(flag: str, high: int, low: int = 1) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be >= {low} and <= {high}, got {value}")
        return value

    parse.__name__ = flag
    return parse


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..config import build
    from ..run.files import write_json
    from ..run.naming import make_dir
    from ..run.opening import SAFE_NAME
    from .launch import SUBMITIT_DIR, SWEEP_FILE, Executor, Sweep
    from .points import check_points, field_types, flag_args, grid_points, parse_grid

    if args.trainer is None or args.trainer in ("-h", "--help"):
        print("usage: runforge sweep TRAINER --grid KEY=VALUES ... [--flags]\n\n"
              "`runforge sweep TRAINER --help` lists the flags.")
        return 0 if args.trainer else 2
    trainer = args.trainer
    module = config_module(trainer)
    options = vars(sweep_parser(trainer, module).parse_args(args.rest))
    cls = module.Config
    types = field_types(cls)
    flags = {key: options.pop(key) for key in list(options) if key in types}  # only flags given (SUPPRESS)

    axes = parse_grid(options["grid"], cls, trainer)
    for axis in axes:
        if axis.key in flags:
            raise ConfigError(None, f"--{axis.key}: given both as a flag and in --grid")
    if options["random"] is None and any(a.is_range for a in axes):
        raise ConfigError(None, f"--grid {next(a.key for a in axes if a.is_range)}: a range lo:hi needs --random N")
    points = grid_points(axes, options["random"], options["random_seed"])

    base = module.PRESETS[options["preset"]] if options.get("preset") else None
    config_file = None
    if options.get("config"):
        config_file = str(Path(options["config"]).resolve())
        base = load_file(cls, options["config"], base)
    build(cls, base, flags)  # the flags every point shares, named before any point is
    check_points(points, cls, base, flags, types, getattr(module, "check_inputs", None))

    name = options["name"] or f"{trainer}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    if not SAFE_NAME.match(name) or name.startswith("."):
        raise ConfigError(None, f"--name {name!r}: must be a plain name of letters, digits, '_', '.' and '-'")
    kind = options["executor"]
    if kind == "slurm":
        missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
        if missing:
            raise ConfigError(None, f"--executor slurm: {', '.join(missing)} not on PATH; run from a Slurm login "
                                    "node or use --executor local")
    jobs = options["jobs"] or (1 if kind == "local" else len(points))
    root = Path(options["root"])
    folder = root / name
    if folder.exists() or folder.is_symlink():
        raise ConfigError(None, f"{folder}: exists; choose another --name or --root")
    make_dir(root)
    try:
        folder.mkdir()  # exclusive: two sweeps never share a folder
    except FileExistsError:
        raise ConfigError(None, f"{folder}: exists; choose another --name or --root") from None
    except OSError as exc:
        raise ConfigError(None, f"{folder}: cannot be created ({exc.strerror or exc})") from None
    folder = folder.resolve()

    shared = ["--progress", "lines"]
    if options.get("preset"):
        shared += ["--preset", options["preset"]]
    if config_file:
        shared += ["--config", config_file]
    if options.get("no_tensorboard"):
        shared.append("--no_tensorboard")
    for key, value in flags.items():
        shared += flag_args(key, value, types[key]) if isinstance(value, bool) else [f"--{key}", value]
    argvs = [["train", trainer, "--out", str(folder / p.name), *shared, *p.flags(types)] for p in points]
    executor = Executor(kind, jobs, options["time_min"],
                        {"partition": options["slurm_partition"], "cpus": options["slurm_cpus"],
                         "gpus": options["slurm_gpus"], "mem_gb": options["slurm_mem_gb"]} if kind == "slurm" else {})
    record: dict[str, Any] = {
        "sweep": name,
        "trainer": trainer,
        "folder": str(folder),
        "command": ["runforge", "sweep", trainer, *args.rest],
        "mode": "grid" if options["random"] is None else "random",
        "grid": {a.key: a.describe() for a in axes},
        "random": options["random"],
        "random_seed": options["random_seed"] if options["random"] is not None else None,
        "varied": [a.key for a in axes],
        "preset": options.get("preset"),
        "config_file": config_file,
        "flags": flags,
        "executor": executor.describe(),
        "status": "pending",
        "started_at": None,
        "ended_at": None,
        "points": [{"index": p.index, "name": p.name, "dir": p.name, "values": {k: _json(v) for k, v in p.values.items()},
                    "config": p.config, "argv": argvs[p.index], "status": "pending", "exit_code": None,
                    "job_id": None, "started_at": None, "ended_at": None, "log": None, "error": None,
                    "final_step": None, "final_metrics": {}} for p in points],
    }
    write_json(folder / SWEEP_FILE, record)
    print(f"sweep {name}: {len(points)} runs of {trainer} in {folder} ({kind}, {jobs} at a time); "
          f"logs in {SUBMITIT_DIR}/", flush=True)
    sweep = Sweep(folder, record, points, argvs, executor)
    code = sweep.run()
    print_summary(record)
    return code


def _json(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def print_summary(record: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .launch import final_loss
    from .points import cli_text

    table = Table(title=f"sweep {record['sweep']} ({record['trainer']}): {record['folder']}")
    for column in ("point", "run dir", "status", "final loss"):
        table.add_column(column, justify="right" if column == "final loss" else "left", overflow="fold")
    for entry in record["points"]:
        loss = final_loss(entry["final_metrics"])
        point = " ".join(f"{k}={cli_text(v)}" for k, v in entry["values"].items())
        status = entry["status"] + (f" (exit {entry['exit_code']})" if entry.get("exit_code") else "")
        table.add_row(escape(point), escape(entry["dir"]), status, "" if loss is None else f"{loss[0]} {loss[1]:.4g}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    done = sum(e["status"] == "finished" for e in record["points"])
    print(f"{done} of {len(record['points'])} finished; sweep.json in {record['folder']}")
    for entry in record["points"]:
        if entry["status"] != "finished" and entry.get("error"):
            print(f"{entry['dir']}: {entry['error']}")


def cmd_rerun(args: argparse.Namespace) -> int:
    from .rerun import rerun

    if args.run is None or args.run in ("-h", "--help"):
        print("usage: runforge rerun RUN [--flag value ...] [--out DIR | --root R] [--name NAME]\n\n"
              "A new run of RUN's trainer with RUN's config.json and the flags on top.")
        return 0 if args.run else 2
    return rerun(Path(args.run), args.rest)
