"""Errors a user can act on.

    RunforgeError                 base; the CLI prints `runforge: <message>` and exits 2
    ├── BadInputError             a file or value given by the user is missing or malformed
    │   └── ConfigError           an unknown key or a value of the wrong type in a config
    ├── RunExistsError            --out names a run and neither --resume nor --overwrite was given
    ├── RunNotFoundError          a run directory or checkpoint that should exist does not
    └── CheckpointWriteError      a checkpoint or another essential file of a run could not be
                                  written (a full disk, a folder turned read-only); exit code 1

Every message names the file or value and the problem, on one line.
"""

from __future__ import annotations

import os


class RunforgeError(Exception):
    """An error caused by input, reported as one line with exit code 2."""

    exit_code = 2


class BadInputError(RunforgeError):
    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(BadInputError):
    pass


class RunExistsError(RunforgeError):
    pass


class RunNotFoundError(RunforgeError):
    pass


class CheckpointWriteError(RunforgeError):
    """A checkpoint (or another essential file) could not be written; the run ends failed.

    Not the user's input but the machine: exit code 1, like any other failed run, so a
    caller tells it from a refused command line (2).
    """

    exit_code = 1
