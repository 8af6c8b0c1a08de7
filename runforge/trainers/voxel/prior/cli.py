"""`runforge data voxel-prior OUT`: generate captioned voxel scenes, train the prior, write a diffusers folder.

    runforge data voxel-prior runs/voxel-prior                    # ~10 CPU minutes
    runforge data voxel-prior /tmp/prior --preset tiny            # seconds, for tests
    runforge train voxel --preset prior_sds --prompt "a pond with a sand rim" --model_path runs/voxel-prior

OUT becomes the model folder (model_index.json, unet/, scheduler/, text_encoder/, tokenizer/) and holds
the training run in OUT/run/ (train.jsonl, images/step_*_samples.png, prior.json). No torch at import time.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ....errors import BadInputError, ConfigError

RUN_SUBDIR = "run"
MAX_STEPS = 10**6


def register(commands: Any, data: Any) -> None:
    prior = data.add_parser("voxel-prior", help="train a small text-conditioned diffusion prior of voxel scenes "
                                                "(a diffusers folder for `train voxel --model_path`)")
    prior.add_argument("out", type=Path, metavar="OUT", help="model folder to create (must not exist, or be empty)")
    prior.add_argument("--preset", choices=("default", "tiny"), default="default",
                       help="default: ~10 CPU minutes; tiny: seconds, for tests")
    prior.add_argument("--steps", type=int, help=f"training steps (1..{MAX_STEPS}; default: the preset's)")
    prior.add_argument("--seed", type=int, default=0, help="scenes, initial weights and noise (0..10**9)")
    prior.add_argument("--threads", type=int, help="torch CPU threads (1..1024; default: the preset's)")
    prior.set_defaults(handler=cmd_voxel_prior)


def _in_range(flag: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise ConfigError(None, f"{flag}: must be from {low} to {high}, got {value}")


def cmd_voxel_prior(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    from ...common import check_output

    _in_range("--steps", args.steps, 1, MAX_STEPS)
    _in_range("--seed", args.seed, 0, 10**9)
    _in_range("--threads", args.threads, 1, 1024)
    out: Path = args.out
    if out.is_dir() and any(out.iterdir()):
        raise BadInputError(out, "already exists and is not empty (OUT must be a new or empty folder)")
    check_output(out, flag="OUT")

    from ....run import Run
    from .model import PRESETS, train_prior

    cfg = PRESETS[args.preset]
    changes = {k: v for k, v in (("steps", args.steps), ("seed", args.seed), ("threads", args.threads)) if v is not None}
    cfg = replace(cfg, **changes)
    with Run(trainer="voxel-prior", config=asdict(cfg), out=out / RUN_SUBDIR, steps=cfg.steps,
             tensorboard=False) as run:
        train_prior(cfg, out, run)
    print(f"voxel prior written to {out} (run: {run.dir}); use it with "
          f"`runforge train voxel --preset prior_sds --prompt \"a pond with a sand rim\" --model_path {out}`")
    return run.exit_code
