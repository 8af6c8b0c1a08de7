"""`runforge rerun RUN [--flag value ...] [--out DIR | --root R] [--name NAME]`.

A new run of RUN's trainer from RUN's config.json, the flags on top (parsed as `runforge train`
parses them), recorded in the new run.json as `rerun_of`. Everything that can be wrong with RUN or
the flags is found before the new run's directory exists. The new run lands beside RUN unless
--out or --root says otherwise, named `{RUN's name}-rerun`.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable

from ..cli import add_output_arguments
from ..config import add_config_arguments, build, load_file, to_dict
from ..errors import BadInputError, RunNotFoundError
from ..run.files import read_json_object
from ..run.layout import CONFIG_FILE, RUN_FILE
from ..run.opening import SAFE_NAME, git_state
from ..trainers import TRAINERS
from .cli import FlagParser, config_module


def rerun_parser(trainer: str, module: Any) -> FlagParser:
    parser = FlagParser(prog=f"runforge rerun RUN ({trainer})", add_help=False)
    run = parser.add_argument_group("run")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="DIR", help="use exactly this run directory")
    where.add_argument("--root", metavar="DIR", help="where the new run is created (default: beside RUN)")
    run.add_argument("--name", help="run name (default: RUN's name + '-rerun')")
    add_output_arguments(run)
    add_config_arguments(parser, module.Config)
    return parser


def read_source(run: Path) -> tuple[dict[str, Any], Any]:
    """RUN's run.json and trainer config module; one-line errors for anything that is not a rerunnable run."""
    if not run.is_dir():
        raise RunNotFoundError(f"{run}: not a run directory")
    if not (run / RUN_FILE).is_file():
        raise RunNotFoundError(f"{run}: not a run ({RUN_FILE} is missing)")
    info = read_json_object(run / RUN_FILE)
    trainer = info.get("trainer")
    if not isinstance(trainer, str) or trainer not in TRAINERS:
        raise BadInputError(run / RUN_FILE, f"trainer {trainer!r} is not a runforge trainer; a run of your own "
                                            "script is rerun by running the script with its config.json")
    if not (run / CONFIG_FILE).is_file():
        raise BadInputError(run / CONFIG_FILE, "is missing: nothing to rerun from")
    return info, config_module(trainer, str(run / RUN_FILE))


def git_warning(run: Path, source: dict[str, Any] | None, current: dict[str, Any] | None) -> str | None:
    """What differs between the code RUN was made with and the code here, in one line; None when nothing does."""
    problems = []
    made_at = (source or {}).get("commit")
    if made_at:
        if current is None or not current.get("commit"):
            problems.append(f"{run} was made at commit {made_at[:12]}, and the working directory is not in a "
                            "git repository: the code may differ")
        elif current["commit"] != made_at:
            problems.append(f"{run} was made at commit {made_at[:12]}, the working directory is at "
                            f"{current['commit'][:12]}: the code may differ")
    if (source or {}).get("dirty"):
        problems.append(f"{run} was made from a tree with uncommitted changes")
    if current is not None and current.get("dirty"):
        problems.append("the working tree has uncommitted changes")
    return "; ".join(problems) or None


def rerun(run: Path, argv: list[str]) -> int:
    info, module = read_source(run)
    trainer = info["trainer"]
    cls = module.Config
    base = load_file(cls, run / CONFIG_FILE)  # a damaged config.json is an error naming it
    options = vars(rerun_parser(trainer, module).parse_args(argv))
    names = {f for f in cls.__dataclass_fields__}
    overrides = {key: options.pop(key) for key in list(options) if key in names}
    cfg = build(cls, base, overrides)
    check_inputs: Callable[[Any], None] | None = getattr(module, "check_inputs", None)
    if check_inputs is not None:
        check_inputs(cfg)

    run_kwargs: dict[str, Any] = {}
    run_options = getattr(module, "run_options", None)
    if run_options is not None:
        run_kwargs.update(run_options(cfg))
    if options["out"] is not None:
        run_kwargs["out"] = options["out"]
    else:
        run_kwargs["root"] = options["root"] if options["root"] is not None else str(run.resolve().parent)
    name = options["name"]  # a bad --name is refused by Run before anything is made
    if name is None and options["out"] is None:
        default = f"{info.get('name') or run.name}-rerun"
        name = default if SAFE_NAME.match(default) and not default.startswith(".") else None
    run_kwargs["name"] = name
    if options["no_tensorboard"]:
        run_kwargs["tensorboard"] = False
    run_kwargs["progress"] = {"auto": None, "bar": True, "lines": False}[options["progress"]]

    source_git = info.get("git")
    if source_git is None and info.get("git_commit"):  # a run made before run.json recorded `git`
        source_git = {"commit": info["git_commit"], "dirty": None}
    warning = git_warning(run, source_git, git_state())
    if warning:
        print(f"runforge: warning: {warning}", file=sys.stderr)

    from ..run import Run

    train_module = importlib.import_module(TRAINERS[trainer] + ".train")
    launcher = getattr(module, "launcher", None)
    launch_module = launcher(cfg) if launcher is not None else None
    body = (importlib.import_module(f"{TRAINERS[trainer]}.{launch_module}").launch
            if launch_module else train_module.train)
    rerun_of = {"dir": str(run.resolve()), "id": info.get("id"), "name": info.get("name"),
                "overrides": {key: _text(value) for key, value in overrides.items()}, "git": source_git}
    with Run(trainer=trainer, config=to_dict(cfg), **run_kwargs) as new:
        # Run takes no extra run.json fields; recorded before the first step, so a crash still shows it
        new._update_info(rerun_of=rerun_of)
        new.event(f"rerun of {run.resolve()}" + (f" with {' '.join(f'--{k} {v}' for k, v in rerun_of['overrides'].items())}"
                                                   if overrides else ""))
        body(cfg, new)
    print(f"run {new.status}: {new.dir}")
    return new.exit_code


def _text(value: Any) -> Any:
    return value if isinstance(value, (bool, str)) else str(value)

