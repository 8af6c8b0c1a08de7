"""docs/voxel.md carries the flags table generated from the Config, so the docs cannot drift from the flags."""

from __future__ import annotations

from pathlib import Path

from runforge.config import markdown_table
from runforge.trainers.voxel.config import PRESETS, Config


def test_docs_hold_the_generated_flags_table() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "voxel.md").read_text(encoding="utf-8")
    assert markdown_table(Config) in docs


def test_presets_are_valid_configs() -> None:
    for preset in PRESETS.values():
        preset.check()


def test_config_and_cli_modules_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, runforge.trainers.voxel.config, runforge.trainers.voxel.cli, runforge.trainers.voxel.export; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
