"""`runforge view`: the voxel maps and splat PLYs of runs in 3D, served by viser (docs/monitor.md).

    load.py     what a path holds (a run, an export folder, one map or PLY) and the arrays each frame draws
    scene.py    the viser server: one node per run, side by side, a step slider each
    cli.py      the subcommand

The dashboard imports `view_command` from here, so this module imports neither viser nor numpy.
"""

from __future__ import annotations

import shlex

VIEWABLE_TRAINERS = ("voxel", "splat")


def view_command(trainer: str | None, run_dir: str) -> str | None:
    """The command that shows a run in 3D, or None when its trainer writes nothing 3D."""
    if trainer not in VIEWABLE_TRAINERS:
        return None
    return f"runforge view {shlex.quote(run_dir)}"
