"""`runforge`: one entry point, subcommands.

    runforge train TRAINER [--flags]     train (flags generated from the trainer's Config)
    runforge runs [ROOT]                 the runs table
    runforge show RUN                    config, status, last metrics, files of one run
    runforge sweep TRAINER --grid ...    one run per point, through submitit (runforge/sweep/)
    runforge rerun RUN [--flags]         a new run from RUN's config.json, flags on top

Other rooms add their own subcommands through a `register(commands, data)`
function in the modules listed in COMMAND_MODULES (imported only if present,
and never importing torch at module level). A trainer's `cli` module may also
add to `runforge show` (`show_arguments`, `show_lines`: see runforge.trainers).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .config import OneLineParser, add_config_arguments, build, load_file, to_dict
from .errors import ConfigError, RunforgeError
from .run.layout import CONFIG_FILE, RUN_FILE
from .trainers import TRAINERS

COMMAND_MODULES = (
    "runforge.monitor.cli",
    "runforge.trainers.voxel.cli",
    "runforge.trainers.voxel.prior.cli",
    "runforge.trainers.sr.cli",
    "runforge.trainers.splat.cli",
    "runforge.trainers.kolmogorov.cli",
    "runforge.sweep.cli",
    "runforge.tb_import",
    "runforge.view.cli",
)
RUN_FLAGS = ("out", "root", "name", "resume", "overwrite", "preset", "config", "no_tensorboard", "progress")


def _available_trainers() -> list[str]:
    return [name for name, module in TRAINERS.items() if _module_exists(module + ".config")]


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = OneLineParser(prog="runforge", description="A local-first training workbench.")
    parser.add_argument("--version", action="version", version=f"runforge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    train = commands.add_parser("train", help="train a model: " + ", ".join(_available_trainers()), add_help=False)
    train.add_argument("trainer", nargs="?", help="one of: " + ", ".join(_available_trainers()))
    train.add_argument("rest", nargs=argparse.REMAINDER)

    runs = commands.add_parser("runs", help="list runs under ROOT (default runs/)")
    runs.add_argument("roots", nargs="*", default=["runs"], metavar="ROOT")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    runs.set_defaults(handler=cmd_runs)

    show = commands.add_parser("show", help="config, status, last metrics and files of a run")
    show.add_argument("run", metavar="RUN")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.add_argument("--step", type=int, help="show the statistics snapshot of this step (default: the latest)")
    for trainer in TRAINERS:
        show_arguments = _trainer_hook(trainer, "show_arguments")
        if show_arguments is not None:
            show_arguments(show)
    show.set_defaults(handler=cmd_show)

    data = commands.add_parser("data", help="make or render datasets")
    data_commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=OneLineParser)
    for module_name in COMMAND_MODULES:
        if _module_exists(module_name):
            importlib.import_module(module_name).register(commands, data_commands)
    return parser, data


def _trainer_hook(trainer: str, name: str) -> Callable[..., Any] | None:
    """The function `name` of a trainer's `cli` module; None for an unknown trainer, one without a
    cli module, or a module without that function."""
    package = TRAINERS.get(trainer)
    if package is None or not _module_exists(package + ".cli"):
        return None
    return getattr(importlib.import_module(package + ".cli"), name, None)


def trainer_parser(name: str, config_module: Any) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=f"runforge train {name}", add_help=False,
                           description=(config_module.__doc__ or "").strip().split("\n")[0])
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="DIR", help="use exactly this run directory (default: ROOT/{name}_{id})")
    run.add_argument("--root", metavar="DIR", help="where new runs are created (default: runs)")
    run.add_argument("--name", help="run name instead of {adjective}-{noun}-{N}")
    run.add_argument("--resume", nargs="?", const=True, metavar="RUN_OR_CKPT",
                     help="continue from the latest checkpoint of --out, or of the given run dir / checkpoint file")
    run.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    presets = getattr(config_module, "PRESETS", {})
    run.add_argument("--preset", choices=sorted(presets) or None, help="start from a named config")
    run.add_argument("--config", metavar="FILE.json", help="start from a config file (e.g. a run's config.json)")
    add_output_arguments(run)
    add_config_arguments(parser, config_module.Config)
    return parser


def add_output_arguments(run: Any) -> None:
    """The flags of how a training shows itself (tb/, progress, tracebacks) and -h: `train` and `rerun` share them."""
    run.add_argument("--no_tensorboard", action="store_true", help="do not mirror metrics into tb/")
    run.add_argument("--progress", choices=["auto", "bar", "lines", "off"], default="auto",
                     help="progress display: auto is a bar on a terminal and a line every 10%% elsewhere")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    run.add_argument("-h", "--help", action="help", help="show this help and exit")


def cmd_train(name: str | None, argv: list[str]) -> int:
    available = _available_trainers()
    if name is None or name in ("-h", "--help"):
        print("usage: runforge train TRAINER [--flags]\n\ntrainers:\n" + "\n".join(f"  {t}" for t in available))
        print("\n`runforge train TRAINER --help` lists a trainer's flags.")
        return 0 if name else 2
    if name not in available:
        raise ConfigError(None, f"unknown trainer {name!r}; choose from {', '.join(available)}")
    config_module = importlib.import_module(TRAINERS[name] + ".config")
    args = vars(trainer_parser(name, config_module).parse_args(argv))
    run_args = {key: args.pop(key) for key in RUN_FLAGS + ("debug",) if key in args}
    cls = config_module.Config

    base = None
    if run_args.get("preset"):
        base = config_module.PRESETS[run_args["preset"]]
    if run_args.get("config"):
        base = load_file(cls, run_args["config"], base)
    resume = run_args.get("resume")
    run_options: Callable[[Any], dict[str, Any]] | None = getattr(config_module, "run_options", None)
    out = run_args.get("out")
    if resume is True and out is None:
        out = getattr(config_module, "DEFAULT_OUT", None)  # the trainer's own default folder (voxel's)
        if out is None:
            from .run.run import RESUME_NEEDS_A_RUN

            raise ConfigError(None, RESUME_NEEDS_A_RUN)
    resume_dir = _resume_dir(resume, out)
    if resume_dir is not None and (resume_dir / CONFIG_FILE).exists():
        base = load_file(cls, resume_dir / CONFIG_FILE, base)
    cfg = build(cls, base, args)
    check_inputs: Callable[[Any], None] | None = getattr(config_module, "check_inputs", None)
    if check_inputs is not None:
        check_inputs(cfg)  # a missing or broken dataset fails here, leaving nothing on disk

    options: dict[str, Any] = {}
    if run_options is not None:
        options.update(run_options(cfg))
    for key in ("out", "root", "name"):
        if run_args.get(key) is not None:
            options[key] = run_args[key]
    if resume is not None:
        options["resume"] = resume
    options["overwrite"] = run_args.get("overwrite", False)
    if run_args.get("no_tensorboard"):
        options["tensorboard"] = False
    options["progress"] = {"auto": None, "bar": True, "lines": "lines", "off": False}[run_args.get("progress") or "auto"]

    from .run import Run

    train_module = importlib.import_module(TRAINERS[name] + ".train")
    load_checkpoint = getattr(train_module, "load_checkpoint", None)
    if load_checkpoint is not None:
        options["load_checkpoint"] = lambda path: load_checkpoint(path, cfg)  # checked before the run is touched
    with Run(trainer=name, config=to_dict(cfg), **options) as run:
        train_module.train(cfg, run)
    print(f"run {run.status}: {run.dir}")
    return run.exit_code


def _resume_dir(resume: Any, out: str | None) -> Path | None:
    if resume is None:
        return None
    if resume is True:
        return Path(out) if out else None
    path = Path(resume)
    if path.is_dir():
        return path
    for parent in path.resolve().parents:
        if (parent / RUN_FILE).exists():
            return parent
    return None


def cmd_runs(args: argparse.Namespace) -> int:
    from .monitor.catalog import run_rows

    rows = run_rows(args.roots)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=", ".join(args.roots))
    table.add_column("name", overflow="fold")
    for column in ("trainer", "status", "step/max", "ETA", "best metric", "tags", "started"):
        table.add_column(column, justify="right" if column in ("step/max", "ETA", "best metric") else "left")
    for r in rows:
        step = "" if r["step"] is None else f"{r['step']}/{r['step_max']}" if r["step_max"] else str(r["step"])
        best = "" if r["best"] is None else f"{r['best']:.4g}"
        started = (r["created_at"] or "").replace("T", " ")[:16]
        table.add_row(escape(f"{r['name']}_{r['id']}"), escape(r["trainer"]), r["status"], step,
                      r["eta"] or "", best, escape(" ".join(r["tags"])), started)
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # piped: whole rows, not a squeezed table
    for r in rows:
        if r.get("resume"):
            print(f"{r['name']}_{r['id']}: crashed; resume with: {r['resume']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .run.snapshots import list_snapshots, load_snapshot, snapshot_at
    from .run import list_images, read_config, read_metrics, read_status
    from .run.read import summarize
    from .run.snapshot_fields import SNAPSHOT_FIELDS

    summary = summarize(args.run)
    metrics = read_metrics(args.run)
    snapshots = list_snapshots(args.run)
    if args.step is not None:
        snapshot_step, snapshot = args.step, snapshot_at(args.run, args.step)
    elif snapshots:
        snapshot_step, snapshot = snapshots[-1][0], load_snapshot(snapshots[-1][1])  # a damaged one is named, not skipped
    else:
        snapshot_step, snapshot = None, None
    report = {
        "run": summary.to_dict(),
        "config": read_config(args.run),
        "status": read_status(args.run),
        "last_metrics": metrics[-1] if metrics else None,
        "logged_lines": len(metrics),
        "images": len(list_images(args.run)),
        "snapshots": [p.name for _, p in snapshots],
        "snapshot_step": snapshot_step,
        "snapshot": snapshot,
        "files": sorted(str(p.relative_to(args.run)) for p in Path(args.run).rglob("*") if p.is_file()),
    }
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.pretty import Pretty

    console = Console()
    console.print(f"[bold]{escape(summary.name)}_{escape(summary.id)}[/bold]  {escape(summary.trainer)}  "
                  f"{summary.status}  step {summary.step}/{summary.step_max}  {escape(summary.dir)}")
    for key in ("config", "status", "last_metrics"):
        console.print(f"[bold]{key}[/bold]")
        console.print(Pretty(report[key]))
    if snapshot is not None:
        console.print(f"[bold]snapshot at step {snapshot_step}[/bold] ({len(report['snapshots'])} snapshots)")
        # the trainer's own figures: the live state (SNAPSHOT_FIELDS) is in status above
        console.print(Pretty({k: v for k, v in snapshot.items() if k not in SNAPSHOT_FIELDS
                              and v is not None and not isinstance(v, (dict, list))}))
        show_lines = _trainer_hook(summary.trainer, "show_lines")
        for line in show_lines(snapshot, args) if show_lines is not None else ():
            console.print(escape(line))
    console.print(f"[bold]files[/bold] ({len(report['files'])}, {report['images']} images, "
                  f"{len(report['snapshots'])} snapshots, {report['logged_lines']} logged lines)")
    for name in report["files"][:40]:
        console.print(f"  {escape(name)}")
    if len(report["files"]) > 40:
        console.print(f"  ... and {len(report['files']) - 40} more")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    with warnings.catch_warnings():
        _damaged_logs_on_stderr()
        return _main(argv)


def _damaged_logs_on_stderr() -> None:
    """Each `DamagedLogWarning` once, as one `runforge: warning:` line on stderr: Python's own format
    takes two lines that point into runforge's source, which tells the user nothing."""
    from .run.metrics import DamagedLogWarning

    shown: set[str] = set()
    default = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if not issubclass(category, DamagedLogWarning):
            default(message, category, filename, lineno, file, line)
        elif str(message) not in shown:  # plot and compare read a log once per metric or per run
            shown.add(str(message))
            print(f"runforge: warning: {message}", file=sys.stderr)

    warnings.simplefilter("always", DamagedLogWarning)
    warnings.showwarning = show


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv and argv[0] == "train":
            rest = argv[1:]
            return cmd_train(rest[0] if rest else None, rest[1:])
        parser, data = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command == "data" and getattr(args, "data_command", None) is None:
            data.print_help()
            return 2
        return int(args.handler(args) or 0)
    except RunforgeError as exc:
        if debug:
            raise
        print(f"runforge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
