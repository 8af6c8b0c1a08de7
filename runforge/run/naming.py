"""Run names as wandb gives them: `{adjective}-{noun}-{N}_{id}`, created atomically."""

from __future__ import annotations

import os
import random
import secrets
import string
from pathlib import Path

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

ID_ALPHABET = string.ascii_lowercase + string.digits
RUN_FILE = "run.json"


def new_id(length: int = 8) -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def count_runs(root: Path) -> int:
    try:
        return sum(1 for entry in os.scandir(root) if entry.is_dir() and (Path(entry.path) / RUN_FILE).exists())
    except FileNotFoundError:
        return 0


def create_run_dir(root: str | os.PathLike[str], name: str | None = None) -> tuple[Path, str, str]:
    """Make `{root}/{name}_{id}` with an exclusive mkdir; retry with a new id on collision.

    Returns (directory, name, id).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.SystemRandom()
    for _ in range(100):
        run_id = new_id()
        run_name = name or f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}-{count_runs(root) + 1}"
        path = root / f"{run_name}_{run_id}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path, run_name, run_id
    raise RuntimeError(f"{root}: could not create a unique run directory after 100 tries")
