"""Every trainer's page in docs/ holds the flags table generated from its Config: docs cannot drift from flags."""

import importlib
import importlib.util
from pathlib import Path

import pytest

from runforge.cli import _available_trainers
from runforge.config import markdown_table
from runforge.trainers import TRAINERS

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("trainer", _available_trainers())
def test_docs_hold_the_generated_flags_table_and_presets_are_valid(trainer):
    config = importlib.import_module(TRAINERS[trainer] + ".config")
    page = DOCS / f"{trainer}.md"
    assert page.exists(), f"docs/{trainer}.md is missing"
    assert markdown_table(config.Config) in page.read_text(encoding="utf-8"), \
        f"docs/{trainer}.md: paste the output of runforge.config.markdown_table({trainer} Config)"
    for preset in getattr(config, "PRESETS", {}).values():
        check = getattr(preset, "check", None)
        if check is not None:
            check()


def test_every_registered_trainer_has_its_modules():
    # the docs test above runs only for trainers whose config module is found: none may be left out
    assert _available_trainers() == list(TRAINERS) and "toy" in TRAINERS
    for package in TRAINERS.values():
        assert importlib.util.find_spec(package + ".train") is not None, f"{package}.train is missing"
