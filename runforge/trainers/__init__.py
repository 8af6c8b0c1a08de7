"""The reference trainers, one folder each. Nothing here is imported until a trainer is asked for.

A trainer `NAME` is two modules, and a third when it adds to the command line:

    runforge.trainers.NAME.config   Config (a dataclass of `runforge.config.option` fields),
                                    PRESETS: dict[str, Config] (optional),
                                    run_options(cfg) -> dict of `Run` keyword arguments (optional),
                                    DEFAULT_OUT: the run folder when the trainer has a fixed one (optional),
                                    check_inputs(cfg) -> None: raise BadInputError on a missing or broken
                                    dataset, before the run directory exists (optional)
    runforge.trainers.NAME.train    train(cfg, run) -> None: the training loop, top to bottom
                                    load_checkpoint(path, cfg) -> state: load and check a checkpoint
                                    against cfg, raising ValueError with one line; `--resume` calls it
                                    before the run is touched (optional)
    runforge.trainers.NAME.cli      (optional) register(commands, data): its own subcommands,
                                    show_arguments(parser): its options of `runforge show`,
                                    show_lines(snapshot, args) -> list[str]: what `runforge show`
                                    prints under a snapshot of one of its runs (sr: the plateau warning)

`config` must not import torch, so `runforge train NAME --help` stays instant; nor may `cli` at
module level, as every `runforge` command imports it. A trainer names its snapshot fields by
heading in run_options' `snapshot_groups` (see `Run`); without them its snapshots carry the
run layer's generic fields (`runforge.run.snapshot_fields`).
"""

TRAINERS: dict[str, str] = {
    "toy": "runforge.trainers.toy",
    "voxel": "runforge.trainers.voxel",
    "sr": "runforge.trainers.sr",
    "splat": "runforge.trainers.splat",
    "kolmogorov": "runforge.trainers.kolmogorov",
}
