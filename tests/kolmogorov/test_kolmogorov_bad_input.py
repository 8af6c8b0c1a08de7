"""Every bad input to `runforge train kolmogorov`, `runforge data kolmogorov` and `runforge assimilate`: one
stderr line naming the file or flag, exit 2, nothing on disk created or changed (a resumed run stays
byte-for-byte as it was); and property tests of the dataset reader on generated HDF5 files."""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli, tree_digest, write_file
from runforge.errors import RunforgeError
from runforge.trainers.kolmogorov.config import Config
from runforge.trainers.kolmogorov.data import load_split
from runforge.trainers.kolmogorov.dataset_check import check_dataset

TRAIN = ["train", "kolmogorov", "--preset", "tiny", "--window", "3", "--no_tensorboard", "--progress", "lines"]
ASSIMILATE = ["assimilate", "run", "--obs", "coarse", "--factor", "2", "--length", "6", "--samples", "1", "--steps", "1"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def h5(path: Path, x=None, **dataset) -> None:
    """`path` with dataset 'x' (an array, or create_dataset keyword arguments); a group 'x' when both are None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if x is None and not dataset:
            f.create_group("x")
        else:
            f.create_dataset("x", data=x, **dataset)


def dataset(w: Path, train=None, valid=None) -> None:
    """w/d/train.h5 and w/d/valid.h5: 4 trajectories of 6 states at 16², or the arrays given."""
    fine = np.random.default_rng(0).standard_normal((4, 6, 2, 16, 16)).astype(np.float32)
    h5(w / "d" / "train.h5", fine if train is None else train)
    h5(w / "d" / "valid.h5", fine if valid is None else valid)


def with_nan() -> np.ndarray:
    x = np.zeros((4, 6, 2, 16, 16), np.float32)
    x[2, 3, 1, 5, 7] = np.nan
    return x


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def ckpt(w: Path) -> Path:
    return w / "run" / "ckpts" / "ckpt_4_rank0.pt"


def edit_checkpoint(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    path.write_bytes(saved(state))


class Exploit:
    """A pickle that runs a command when loaded without weights_only: loading it must refuse, not run it."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


# (id, how to prepare the case in `w` (a copy of a finished tiny run in w/run, trained on the session's
#  tiny dataset), the arguments, the words the one stderr line must hold)
TRAIN_CASES = [
    ("lr-huge", None, ["--learning_rate", "1e308"], ["--learning_rate", "<= 1"]),
    ("lr-inf", None, ["--learning_rate", "inf"], ["--learning_rate", "finite"]),
    ("keep-last-negative", None, ["--keep_last", "-1"], ["--keep_last", ">= 0"]),
    ("epochs-zero", None, ["--epochs", "0"], ["--epochs", ">= 1"]),
    ("batch-huge", None, ["--batch_size", "10000000"], ["--batch_size", "<= 65536"]),
    ("channels-huge", None, ["--hidden_channels", "8,100000"], ["--hidden_channels", "<= 4096"]),
    ("too-many-levels", None, ["--hidden_channels", ",".join(["4"] * 9), "--hidden_blocks", ",".join(["1"] * 9)],
     ["--hidden_channels", "1 to 8"]),
    ("window-even", None, ["--window", "4"], ["--window", "odd"]),
    ("weight-decay-negative", None, ["--weight_decay", "-0.1"], ["--weight_decay", ">= 0"]),
    ("array-zero", None, ["--array", "0"], ["--array", ">= 1"]),
    ("array-negative", None, ["--array", "-3"], ["--array", ">= 1"]),
    ("array-huge", None, ["--array", "100000"], ["--array", "<= 1024"]),
    ("array-text", None, ["--array", "three"], ["--array", "integer"]),
    ("array-fraction", None, ["--array", "2.5"], ["--array", "integer"]),
    ("workers-zero", None, ["--array", "2", "--workers", "0"], ["--workers", ">= 1"]),
    ("array-slurm-without-sbatch", None, ["--array", "2", "--backend", "slurm"], ["--backend slurm", "sbatch"]),
    ("device-cuda", None, ["--device", "cuda"], ["--device cuda", "no CUDA device"]),
    ("data-missing", None, ["--data", "nowhere"], ["nowhere/train.h5", "no such dataset file"]),
    ("data-random-bytes", lambda w: (dataset(w), write_file(w / "d" / "train.h5", os.urandom(4000))), ["--data", "d"],
     ["d/train.h5", "not a readable HDF5 file"]),
    ("data-truncated", lambda w: (dataset(w), write_file(w / "d" / "train.h5", (w / "d" / "train.h5").read_bytes()[:3000])),
     ["--data", "d"], ["d/train.h5", "HDF5"]),
    ("data-integers", lambda w: dataset(w, train=np.zeros((4, 6, 2, 16, 16), np.int32)), ["--data", "d"],
     ["d/train.h5", "holds int32, not floating-point numbers"]),
    ("data-nan", lambda w: dataset(w, train=with_nan()), ["--data", "d"], ["d/train.h5", "1 NaN or infinite values"]),
    ("data-beyond-float32", lambda w: dataset(w, valid=np.full((4, 6, 2, 16, 16), 1e300)), ["--data", "d"],
     ["d/valid.h5", "NaN or infinite values (as float32)"]),
    ("data-x-is-a-group", lambda w: (dataset(w), h5(w / "d" / "train.h5")), ["--data", "d"],
     ["d/train.h5", "has no dataset 'x'"]),
    ("data-wrong-layout", lambda w: dataset(w, train=np.zeros((4, 6, 3, 16, 16), np.float32)), ["--data", "d"],
     ["d/train.h5", "(trajectories, time, 2, N, N)", "(4, 6, 3, 16, 16)"]),
    ("data-grids-differ", lambda w: dataset(w, valid=np.zeros((2, 6, 2, 8, 8), np.float32)), ["--data", "d"],
     ["d/valid.h5", "differ from train.h5's"]),
    ("data-declared-huge", lambda w: (dataset(w), h5(w / "d" / "train.h5", shape=(10**7, 64, 2, 256, 256),
                                                     dtype="f4", chunks=(1, 1, 2, 16, 16))),
     ["--data", "d"], ["d/train.h5", "GiB as float32, more than this machine's"]),
    ("data-shorter-than-window", None, ["--window", "9"], ["train.h5", "shorter than --window 9"]),
    ("grid-too-small-for-the-unet", None,
     ["--kernel_size", "9", "--hidden_channels", "4,4,4,4", "--hidden_blocks", "1,1,1,1"],
     ["train.h5", "16x16 grid is 2x2 at the U-Net's level 4", "--kernel_size 9"]),
    ("resume-truncated", lambda w: write_file(ckpt(w), ckpt(w).read_bytes()[:300]), ["--resume", "run"],
     ["ckpt_4_rank0.pt", "cannot be loaded", "PytorchStreamReader"]),
    ("resume-random-bytes", lambda w: write_file(ckpt(w), os.urandom(3000)), ["--resume", "run"],
     ["ckpt_4_rank0.pt", "cannot be loaded"]),
    ("resume-empty", lambda w: write_file(ckpt(w), b""), ["--resume", "run"], ["ckpt_4_rank0.pt", "cannot be loaded"]),
    ("resume-wrong-keys", lambda w: write_file(ckpt(w), saved({"weights": torch.zeros(3)})), ["--resume", "run"],
     ["ckpt_4_rank0.pt", "not a kolmogorov checkpoint"]),
    ("resume-sr-checkpoint", lambda w: write_file(ckpt(w), saved({"step": 4, "model": {}, "adaptive": {}, "rng": {}})),
     ["--resume", "run"], ["ckpt_4_rank0.pt", "not a kolmogorov checkpoint"]),
    ("resume-pickle-that-runs-code", lambda w: write_file(ckpt(w), saved({"score": Exploit()})), ["--resume", "run"],
     ["ckpt_4_rank0.pt", "cannot be loaded", "GLOBAL posix.system"]),
    ("resume-another-architecture", None, ["--resume", "run", "--hidden_channels", "8,32"],
     ["ckpt_4_rank0.pt", "size mismatch"]),
    ("resume-scheduler-foreign-key",
     lambda w: edit_checkpoint(ckpt(w), lambda s: s["scheduler"].update(optimizer="x")), ["--resume", "run"],
     ["ckpt_4_rank0.pt", "scheduler"]),
    ("resume-moment-of-another-shape",
     lambda w: edit_checkpoint(ckpt(w), lambda s: s["optimizer"]["state"][0].update(exp_avg_sq=torch.zeros(5))),
     ["--resume", "run"], ["ckpt_4_rank0.pt", "optimizer state 'exp_avg_sq' of parameter 0 has shape (5,)"]),
]

DATA_CASES = [
    ("out-is-a-file", lambda w: write_file(w / "afile", "x"), ["afile"], ["afile", "is not a folder"]),
    ("out-parent-is-a-file", lambda w: write_file(w / "afile", "x"), ["afile/sub"], ["afile/sub", "cannot be made: afile"]),
    ("out-split-is-a-folder", lambda w: (w / "out" / "train.h5").mkdir(parents=True), ["out", "--overwrite"],
     ["out/train.h5", "is in the way"]),
    ("out-holds-a-dataset", lambda w: write_file(w / "out" / "valid.h5", "x"), ["out"], ["out/valid.h5", "--overwrite"]),
    ("dt-huge", None, ["out", "--dt", "1e308"], ["--dt", "<= 10"]),
    ("dt-zero", None, ["out", "--dt", "0"], ["--dt", "> 0"]),
    ("size-zero", None, ["out", "--size", "0"], ["--size", ">= 8"]),
    ("trajectories-two", None, ["out", "--trajectories", "2"], ["--trajectories", ">= 3"]),
    ("coarsen-not-dividing", None, ["out", "--coarsen", "3"], ["--coarsen", "does not divide"]),
    ("wavenumber-dealiased", None, ["out", "--wavenumber", "20"], ["--wavenumber", "dealiasing"]),
    ("batch-too-big", None, ["out", "--size", "4096", "--coarsen", "4", "--batch", "64"], ["--batch", "lower --batch"]),
    ("dataset-too-big", None, ["out", "--trajectories", "1000000", "--length", "10000"], ["--trajectories", "values"]),
    ("preset-unknown", None, ["out", "--preset", "huge"], ["--preset", "invalid choice"]),
    ("device-cuda", None, ["out", "--device", "cuda"], ["--device cuda", "no CUDA device"]),
]

ASSIMILATE_CASES = [
    ("run-missing", None, ["--run", "nowhere"], ["nowhere/config.json", "RUN must be a kolmogorov run directory"]),
    ("run-is-a-file", lambda w: write_file(w / "afile", "x"), ["--run", "afile"], ["afile/config.json", "not found"]),
    ("config-damaged", lambda w: write_file(w / "run" / "config.json", "{"), [], ["run/config.json", "not valid JSON"]),
    ("config-of-another-trainer", lambda w: write_file(w / "run" / "config.json", json.dumps({"data_root": None})), [],
     ["run/config.json", "data_root", "unknown"]),
    ("run-of-another-trainer", lambda w: write_file(w / "run" / "run.json", json.dumps(
        {**json.loads((w / "run" / "run.json").read_text()), "trainer": "toy"})), [],
     ["run: is a toy run", "needs a kolmogorov run"]),
    ("config-value-out-of-range",
     lambda w: write_file(w / "run" / "config.json", json.dumps({**json.loads((w / "run" / "config.json").read_text()),
                                                            "window": -1})),
     [], ["run/config.json", "window", ">= 1"]),
    ("state-missing", lambda w: (w / "run" / "state.pth").unlink(), [], ["run/state.pth", "not found"]),
    ("state-truncated", lambda w: write_file(w / "run" / "state.pth", (w / "run" / "state.pth").read_bytes()[:200]), [],
     ["run/state.pth", "cannot be loaded", "PytorchStreamReader"]),
    ("state-wrong-keys", lambda w: write_file(w / "run" / "state.pth", saved({"w": torch.zeros(2)})), [],
     ["run/state.pth", "does not load into the network of config.json"]),
    ("state-runs-code", lambda w: write_file(w / "run" / "state.pth", saved({"w": Exploit()})), [],
     ["run/state.pth", "GLOBAL posix.system"]),
    ("data-missing", None, ["--data", "nowhere"], ["nowhere/test.h5", "no such dataset file"]),
    ("data-random-bytes", lambda w: write_file(w / "d" / "test.h5", os.urandom(3000)), ["--data", "d"],
     ["d/test.h5", "not a readable HDF5 file"]),
    ("data-nan", lambda w: h5(w / "d" / "test.h5", with_nan()), ["--data", "d"], ["d/test.h5", "NaN"]),
    ("factor-not-dividing", None, ["--factor", "3"], ["--factor", "does not divide the grid size 16"]),
    ("length-too-long", None, ["--length", "9"], ["test.h5", "has 8 states per trajectory"]),
    ("trajectory-past-the-end", None, ["--trajectory", "1"], ["test.h5", "has 1 test trajectories"]),
    ("out-is-a-file", lambda w: write_file(w / "afile", "x"), ["--out", "afile"], ["afile", "is not a folder", "--out"]),
    ("out-parent-is-a-file", lambda w: write_file(w / "afile", "x"), ["--out", "afile/a"], ["afile/a", "cannot be made"]),
    ("out-figures-is-a-folder", lambda w: (w / "o" / "figures.json").mkdir(parents=True), ["--out", "o"],
     ["o/figures.json", "is in the way"]),
    ("noise-huge", None, ["--noise", "1e308"], ["--noise", "<= 100"]),
    ("samples-huge", None, ["--samples", "1000000"], ["--samples", "<= 4096"]),
    ("steps-zero", None, ["--steps", "0"], ["--steps", ">= 1"]),
    ("corrections-negative", None, ["--corrections", "-1"], ["--corrections", ">= 0"]),
    ("obs-unknown", None, ["--obs", "dense"], ["--obs", "'dense' is not one of coarse, sparse"]),
    ("device-cuda", None, ["--device", "cuda"], ["--device cuda", "no CUDA device"]),
]


@pytest.fixture(scope="module")
def finished_run(kolmogorov_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("base")
    result = run_cli(*TRAIN, "--data", kolmogorov_data, "--out", base / "run", cwd=base)
    assert result.returncode == 0, result.stderr
    assert ckpt(base).is_file() and (base / "run" / "state.pth").is_file()
    return base


def _cases(cases):
    marks = lambda case: [NO_CUDA] if "cuda" in case[0] else []  # noqa: E731
    return [pytest.param(*case[1:], id=case[0], marks=marks(case)) for case in cases]


@pytest.mark.parametrize("prepare, args, needles", _cases(TRAIN_CASES))
def test_train_refuses_bad_input_in_one_line_and_changes_nothing(tmp_path, finished_run, kolmogorov_data, prepare,
                                                                  args, needles):
    data = [] if "--data" in args or "--resume" in args else ["--data", str(kolmogorov_data)]
    _refuses(tmp_path, finished_run, prepare, [*TRAIN, *data, *args], needles)


@pytest.mark.parametrize("prepare, args, needles", _cases(DATA_CASES))
def test_data_refuses_bad_input_in_one_line_and_changes_nothing(tmp_path, finished_run, prepare, args, needles):
    preset = [] if "--preset" in args else ["--preset", "tiny"]
    _refuses(tmp_path, finished_run, prepare, ["data", "kolmogorov", *args, *preset], needles)


@pytest.mark.parametrize("prepare, args, needles", _cases(ASSIMILATE_CASES))
def test_assimilate_refuses_bad_input_in_one_line_and_changes_nothing(tmp_path, finished_run, prepare, args, needles):
    command = list(ASSIMILATE)
    if args[:1] == ["--run"]:
        command[1], args = args[1], args[2:]
    _refuses(tmp_path, finished_run, prepare, [*command, *args], needles)


def _refuses(work: Path, finished: Path, prepare, args: list[str], needles: list[str]) -> None:
    shutil.copytree(finished, work, dirs_exist_ok=True, symlinks=True)
    if prepare is not None:
        prepare(work)
    before = tree_digest(work)
    empty = work.parent / f"{work.name}-path"  # no sbatch (or anything else) on PATH
    empty.mkdir()
    result = run_cli(*args, cwd=work, env={"PATH": str(empty)})
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree_digest(work) == before  # no run directory, no dataset, no results, the resumed run untouched


# ---------------------------------------------------------------------- property tests of the dataset reader

_counter = itertools.count()
DTYPES = ("f2", "f4", "f8", "f4", "f8", "i4", "u1", "?", "c8", "S3")


def _fresh(root: Path, name: str) -> Path:
    # a new folder per example: the reader's cache is keyed by path, mtime and size
    folder = root / f"case{next(_counter)}"
    folder.mkdir()
    return folder / name


@st.composite
def h5_files(draw) -> bytes | None:
    """An HDF5 file (as bytes, written through a scratch file) with a dataset of random shape, dtype and
    values, maybe named otherwise, maybe damaged; None for 'no file at all'."""
    kind = draw(st.sampled_from(("dataset", "dataset", "dataset", "group", "other-name", "none", "garbage")))
    if kind == "none":
        return None
    if kind == "garbage":
        return draw(st.binary(max_size=2000))
    if draw(st.booleans()):  # the expected layout (trajectories, time, 2, N, N)
        grid = draw(st.integers(1, 6))
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 6)), 2, grid, grid)
    else:
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=6)))
    dtype = draw(st.sampled_from(DTYPES))
    values = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape) * draw(
        st.sampled_from((1.0, 1e6, 1e300)))
    if values.size and dtype.startswith("f") and draw(st.booleans()):
        values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from((np.nan, np.inf, -np.inf)))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        if kind == "group":
            f.create_group("x")
        else:
            with np.errstate(all="ignore"):
                f.create_dataset("x" if kind == "dataset" else "y", data=values.astype(dtype))
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(("none", "none", "none", "truncate", "flip")))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip":
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=6)):
            data[position] ^= draw(st.integers(1, 255))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=h5_files())
def test_a_split_file_either_loads_as_finite_float32_or_is_a_named_error(tmp_path, content):
    path = _fresh(tmp_path, "train.h5")
    if content is not None:
        path.write_bytes(content)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = load_split(path)
    except RunforgeError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    finally:
        assert not caught, [str(w.message) for w in caught]  # a warning would be a second line on stderr
    assert x.dtype == torch.float32 and x.ndim == 5 and x.shape[2] == 2 and x.shape[3] == x.shape[4]
    assert 0 not in x.shape and torch.isfinite(x).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=h5_files(), valid=h5_files(), window=st.sampled_from((1, 3, 5)), levels=st.integers(1, 4),
       kernel=st.sampled_from((1, 3, 5)))
def test_a_dataset_folder_either_fits_the_config_or_is_a_named_error(tmp_path, train, valid, window, levels, kernel):
    folder = _fresh(tmp_path, "data")
    folder.mkdir()
    for name, content in (("train.h5", train), ("valid.h5", valid)):
        if content is not None:
            (folder / name).write_bytes(content)
    cfg = Config(data=folder, window=window, hidden_channels=[4] * levels, hidden_blocks=[1] * levels,
                 kernel_size=kernel)
    try:
        check_dataset(cfg)
    except RunforgeError as exc:
        assert str(folder) in str(exc) and "\n" not in str(exc)
        return
    shapes = [load_split(folder / name).shape for name in ("train.h5", "valid.h5")]
    assert shapes[0][2:] == shapes[1][2:] and min(s[1] for s in shapes) >= window
