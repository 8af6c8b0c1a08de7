"""Where a run lives: names as wandb gives them (`{adjective}-{noun}-{N}_{id}`), created atomically,
found again from a checkpoint inside it, and shared between the ranks of one torchrun job."""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from ..errors import BadInputError, RunNotFoundError
from .files import write_bytes
from .layout import RUN_FILE

ADJECTIVES = (
    "amber autumn bold brisk calm crimson dainty dashing eager earthy fancy fiery fluent frosty gentle "
    "glowing golden hardy hazy icy jolly lively lucid lunar misty noble olive polar proud quiet radiant "
    "rosy royal rustic sandy scarlet silent silver snowy solar sparkling spring stellar stoic summer "
    "sunny swift tender twilight vivid wandering warm wild winter wise"
).split()
NOUNS = (
    "aurora bird breeze brook butterfly canyon cedar cloud comet dawn deluge dew dream dune eclipse "
    "ember field firefly flower fog forest frost galaxy glade grass haze hill lake leaf meadow moon "
    "morning mountain night oasis ocean orbit paper pine planet pond rain resonance river sea shadow "
    "sky smoke snow sound star sun sunset surf thunder tree valley water wave wind wood"
).split()

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

# The generator `secrets` uses (os.urandom), without importing secrets: that pulls in hmac and
# hashlib, ~5 ms of every `from runforge import Run`.
_SYSTEM_RANDOM = random.SystemRandom()


def new_id(length: int = 8) -> str:
    return "".join(_SYSTEM_RANDOM.choice(ID_ALPHABET) for _ in range(length))


def count_runs(root: Path) -> int:
    try:
        return sum(1 for entry in os.scandir(root) if entry.is_dir() and (Path(entry.path) / RUN_FILE).exists())
    except FileNotFoundError:
        return 0


def make_dir(path: Path) -> None:
    """`mkdir -p`, with a one-line error naming the folder when it cannot be one."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BadInputError(path, "is not a directory (a file is in the way)") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot be created ({exc.strerror or exc})") from None


def create_run_dir(root: str | os.PathLike[str], name: str | None = None) -> tuple[Path, str, str]:
    """Make `{root}/{name}_{id}` with an exclusive mkdir; retry with a new id on collision.

    Returns (directory, name, id).
    """
    root = Path(root)
    make_dir(root)
    rng = random.SystemRandom()
    for _ in range(100):
        run_id = new_id()
        run_name = name or f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}-{count_runs(root) + 1}"
        path = root / f"{run_name}_{run_id}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise BadInputError(root, f"cannot hold a new run ({exc.strerror or exc})") from None
        return path, run_name, run_id
    raise RuntimeError(f"{root}: could not create a unique run directory after 100 tries")


def find_run_dir(path: Path) -> Path:
    if not path.exists():
        raise RunNotFoundError(f"{path}: no such run directory or checkpoint")
    for parent in path.resolve().parents:
        if (parent / RUN_FILE).exists():
            return parent
    raise RunNotFoundError(f"{path}: is not inside a run directory (no {RUN_FILE} above it)")


def rendezvous(root: Path, run_dir: Path | None, timeout: float = 120.0) -> Path:
    """Rank 0 announces its run directory; the other ranks of the same torchrun job wait for it."""
    job = "-".join(os.environ.get(key, "") for key in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"))
    note = root / f".rendezvous-{re.sub(r'[^A-Za-z0-9_.-]', '_', job)}"
    if run_dir is not None:
        write_bytes(note, str(run_dir.resolve()).encode("utf-8"), durable=False)
        return run_dir
    started = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # a note left by an earlier job with the same id is older than this process
            if note.stat().st_mtime > started - 60:
                return Path(note.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise RunNotFoundError(f"{note}: rank 0 did not announce its run directory within {timeout:.0f} s")


def wait_for_run(run_dir: Path, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info: dict[str, Any] = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
            return info
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
    raise RunNotFoundError(f"{run_dir}: rank 0 did not create {RUN_FILE} within {timeout:.0f} s")
