"""Subcommands of the kolmogorov room (no torch at import time):

    runforge data kolmogorov OUT [--preset cpu|tiny|default] [--flags]   simulate train/valid/test.h5
    runforge assimilate RUN --obs coarse|sparse [--flags]                posterior sampling with a trained score
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...config import add_config_arguments, build_from_args
from .config import DATA_PRESETS, AssimilateConfig, DataConfig, data_preset


def register(commands, data) -> None:
    parser = data.add_parser("kolmogorov", help="simulate Kolmogorov-flow trajectories into OUT/{train,valid,test}.h5",
                             description=(DataConfig.__doc__ or "").strip())
    parser.add_argument("out", metavar="OUT", type=Path, help="dataset folder")
    parser.add_argument("--preset", choices=sorted(DATA_PRESETS), default="default",
                        help="starting values (default: SDA's 256² simulation, 1024 trajectories)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    add_config_arguments(parser, DataConfig)
    parser.set_defaults(handler=cmd_data)

    assimilate = commands.add_parser(
        "assimilate", help="posterior samples of held-out Kolmogorov trajectories given observations",
        description="Score-based data assimilation with a trained `kolmogorov` run: observe test trajectories "
                    "(coarsened or sparse, plus noise), sample the posterior with the run's score, and compare "
                    "the posterior mean with an interpolation of the observations.")
    assimilate.add_argument("run", metavar="RUN", type=Path, help="a finished kolmogorov run directory (with state.pth)")
    add_config_arguments(assimilate, AssimilateConfig)
    assimilate.set_defaults(handler=cmd_assimilate)


def cmd_data(args: argparse.Namespace) -> int:
    cfg = build_from_args(DataConfig, args, data_preset(args.preset))

    import torch

    from .data import generate

    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # as fast as 2 threads on small CPUs, and leaves a core free
    files = generate(cfg, args.out, overwrite=args.overwrite)
    print("kolmogorov data: wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def cmd_assimilate(args: argparse.Namespace) -> int:
    cfg = build_from_args(AssimilateConfig, args)

    from .assimilate import run_assimilation

    return run_assimilation(args.run, cfg)
