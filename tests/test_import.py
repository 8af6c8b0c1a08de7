"""The run layer is cheap to import: no torch, no numpy."""

import subprocess

from conftest import PYTHON


def test_import_runforge_leaves_torch_and_numpy_out():
    code = ("import sys, runforge, runforge.run, runforge.cli, runforge.config; "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'rich', 'tensorboard') if m in sys.modules))")
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_toy_trainer_help_does_not_import_torch():
    code = ("import sys, runforge.cli\n"
            "try:\n    runforge.cli.main(['train', 'toy', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("False")
