"""The reference trainers, one folder each. Nothing here is imported until a trainer is asked for.

A trainer `NAME` is two modules:

    runforge.trainers.NAME.config   Config (a dataclass of `runforge.config.option` fields),
                                    PRESETS: dict[str, Config] (optional),
                                    run_options(cfg) -> dict of `Run` keyword arguments (optional),
                                    DEFAULT_OUT: the run folder when the trainer has a fixed one (optional),
                                    check_inputs(cfg) -> None: raise BadInputError on a missing or broken
                                    dataset, before the run directory exists (optional)
    runforge.trainers.NAME.train    train(cfg, run) -> None: the training loop, top to bottom

`config` must not import torch, so `runforge train NAME --help` stays instant.
"""

TRAINERS: dict[str, str] = {
    "toy": "runforge.trainers.toy",
    "voxel": "runforge.trainers.voxel",
    "sr": "runforge.trainers.sr",
    "splat": "runforge.trainers.splat",
    "kolmogorov": "runforge.trainers.kolmogorov",
}
