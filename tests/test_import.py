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


def _fresh(code):
    return subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_import_runforge_leaves_the_run_layer_until_a_name_of_it_is_used():
    code = ("import sys, runforge; print('runforge.run' in sys.modules); runforge.Run; "
            "print('runforge.run.run' in sys.modules, 'runforge.run.read' in sys.modules)")
    assert _fresh(code) == ["False", "True", "False"]


def test_every_public_name_resolves_and_is_listed():
    import runforge
    import runforge.run

    for module in (runforge, runforge.run):
        for name in module.__all__:
            assert getattr(module, name) is not None, name
        assert set(module.__all__) <= set(dir(module))
    from runforge import Control, Run, export, list_runs, read_metrics  # noqa: F401
    from runforge.run import CheckpointManager, send_command, snapshot_at  # noqa: F401

    assert runforge.Run is runforge.run.Run and runforge.read_metrics is runforge.run.read_metrics
    assert runforge.run.metrics.read_metrics is runforge.read_metrics  # submodules stay reachable as attributes
    try:
        runforge.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_export_is_the_function_even_after_its_submodule_is_imported_first():
    code = ("import runforge.run.export, runforge, runforge.run; from runforge.run import export as a; "
            "from runforge import export as b; print(callable(a), a is b, a.__module__)")
    assert _fresh(code) == ["True", "True", "runforge.run.export"]


def test_from_runforge_import_run_leaves_subprocess_socket_and_secrets_out():
    code = ("import sys; from runforge import Run; "
            "print(sorted(m for m in ('subprocess', 'socket', 'secrets', 'tempfile', 'shutil') if m in sys.modules))")
    assert _fresh(code) == ["[]"]
