"""scripts/gpu_check.py on a machine without a GPU: the one-line refusal, and every command it would run
checked against the real parsers (`--dry-run`)."""

import importlib.util
import json
import os
import subprocess
import sys

from conftest import PYTHON, REPO

SCRIPT = REPO / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_in_one_line_and_exits_3():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, also on a machine that has one
    result = subprocess.run([PYTHON, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 3
    assert result.stdout.strip().splitlines() == [
        "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was run (exit 3)"]


def test_dry_run_prints_every_command_and_each_parses():
    result = subprocess.run([PYTHON, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for command in ("runforge train voxel --preset demo", "--device cuda", "runforge train sr --preset cpu",
                    "runforge data synthetic-scene scene", "--backend gsplat", "--backend torch",
                    "runforge data kolmogorov kdata", "runforge train kolmogorov", "runforge assimilate kolmogorov"):
        assert command in out, command
    gpu_check = _module()
    assert f"{len(gpu_check.checks())} of {len(gpu_check.checks())} commands parse" in out
    assert "BAD" not in out


def test_validation_catches_a_wrong_flag_value_or_preset():
    gpu_check = _module()
    check = gpu_check.checks()[0]

    def with_argv(argv):
        return gpu_check.validate(type(check)("x", "y", argv, 1, gpu_check.ran_metric))

    assert with_argv(["train", "voxel", "--preset", "demo", "--steps", "5"]) is None
    assert with_argv(["train", "voxel", "--no_such_flag", "1"]) is not None
    assert with_argv(["train", "sr", "--preset", "no_such_preset"]) is not None
    assert with_argv(["train", "splat", "--preset", "cpu", "--backend", "jax"]) is not None
    assert with_argv(["train", "kolmogorov", "--epochs", "0"]) is not None  # out of bounds: the config says so
    assert with_argv(["data", "kolmogorov", "d", "--preset", "cpu", "--size", "7"]) is not None
    assert with_argv(["assimilate", "run", "--obs", "blurred"]) is not None
    assert with_argv(["data", "synthetic-scene", "s", "--no_such_flag"]) is not None


def test_the_splat_rows_compare_the_two_backends(tmp_path):
    gpu_check = _module()
    for out, psnr, seconds in (("splat_gsplat", 25.0, 20.0), ("splat_torch", 24.7, 60.0)):
        (tmp_path / out).mkdir()
        lines = [{"step": 1, "time": 1.0, "loss": 0.5}, {"step": 1500, "time": seconds, "val": {"psnr": psnr}}]
        (tmp_path / out / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    notes = {}
    assert gpu_check.splat_gsplat_metric(tmp_path, notes)[1]
    text, passed = gpu_check.splat_torch_metric(tmp_path, notes)
    assert passed and "-0.30 dB vs gsplat" in text and "3.0x" in text
    notes["splat_gsplat"] = (25.6, 20.0)
    assert not gpu_check.splat_torch_metric(tmp_path, notes)[1]
