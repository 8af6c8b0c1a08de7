"""Sweeps and reruns: many runs of one trainer, and a run started again from another's config.

    runforge sweep TRAINER --grid lr=1e-3,1e-2 steps=500,1500 [--random N] [--executor local|slurm] [-j 2]
    runforge rerun RUN [--flag value ...] [--out DIR | --root R]

    points.py   --grid items parsed against the trainer's Config, expanded or sampled, each point checked
    launch.py   the sweep folder, sweep.json, the submitit executors and the wait for the points
    rerun.py    `runforge rerun`
    cli.py      the two subcommands (registered through runforge.cli.COMMAND_MODULES)

Nothing here is imported by `import runforge`; submitit is imported only once a sweep starts.
"""
