"""Subcommands of the kolmogorov room (no torch at import time):

    runforge data kolmogorov OUT [--preset cpu|tiny|default] [--flags]   simulate train/valid/test.h5
    runforge assimilate RUN --obs coarse|sparse [--flags]                posterior sampling with a trained score
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...config import add_config_arguments, build
from .config import DATA_PRESETS, DataConfig, data_preset


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
    a = assimilate.add_argument
    a("run", metavar="RUN", type=Path, help="a finished kolmogorov run directory (with state.pth)")
    a("--obs", choices=("coarse", "sparse"), required=True,
      help="coarse: block means of FACTOR×FACTOR cells of every state; sparse: every FACTOR-th grid point "
           "of every EVERY-th state")
    a("--factor", type=int, default=4, help="coarsening factor, or spacing of the sparse grid points (default 4)")
    a("--every", type=int, default=1, help="sparse: observe every N-th state (default 1)")
    a("--noise", type=float, default=0.1, help="standard deviation of the observation noise (default 0.1)")
    a("--data", type=Path, help="dataset folder with test.h5 (default: the run's --data)")
    a("--trajectory", type=int, default=0, help="first test trajectory (default 0)")
    a("--trajectories", type=int, default=1, help="how many test trajectories, from --trajectory (default 1)")
    a("--start", type=int, default=0, help="first state of each trajectory (default 0)")
    a("--length", type=int, default=16, help="states per assimilated trajectory (default 16)")
    a("--samples", type=int, default=4, help="posterior samples per trajectory (default 4)")
    a("--steps", type=int, default=256, help="reverse-diffusion steps (default 256)")
    a("--corrections", type=int, default=1, help="Langevin corrections per step (default 1)")
    a("--tau", type=float, default=0.5, help="Langevin step amplitude (default 0.5)")
    a("--gamma", type=float, default=1e-2, help="likelihood widening γ of SDA's Gaussian posterior score (default 0.01)")
    a("--seed", type=int, default=0, help="random seed of the noise and the sampler (default 0)")
    a("--device", choices=("auto", "cpu", "cuda"), default="auto", help="cuda when available with auto")
    a("--out", type=Path, help="output folder (default RUN/assimilation/{obs}_x{factor}_t{trajectory})")
    assimilate.set_defaults(handler=cmd_assimilate)


def cmd_data(args: argparse.Namespace) -> int:
    fields = set(DataConfig.__dataclass_fields__)
    overrides = {k: v for k, v in vars(args).items() if k in fields}
    cfg = build(DataConfig, data_preset(args.preset), overrides)

    import torch

    from .data import generate

    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # as fast as 2 threads on small CPUs, and leaves a core free
    files = generate(cfg, args.out, overwrite=args.overwrite)
    print("kolmogorov data: wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def cmd_assimilate(args: argparse.Namespace) -> int:
    from .assimilate import run_assimilation

    return run_assimilation(args)
