"""`runforge data kolmogorov OUT`: the HDF5 layout of docs/kolmogorov.md, the split, and errors on bad input."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from runforge.cli import main
from runforge.trainers.kolmogorov.data import load_split, random_windows, split_sizes
from runforge.trainers.kolmogorov.solver import divergence, vorticity

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("kdata") / "tiny"
    assert main(["data", "kolmogorov", str(out), "--preset", "tiny", "--trajectories", "10", "--length", "6"]) == 0
    return out


def test_writes_three_splits_of_x_with_shape_n_t_2_h_w(dataset):
    assert sorted(p.name for p in dataset.iterdir()) == ["meta.json", "test.h5", "train.h5", "valid.h5"]
    shapes = {}
    for split in ("train", "valid", "test"):
        with h5py.File(dataset / f"{split}.h5", "r") as h5:
            assert list(h5.keys()) == ["x"]
            assert h5["x"].dtype == np.float32
            shapes[split] = h5["x"].shape
            assert h5.attrs["reynolds"] == 1000.0 and h5.attrs["coarsen"] == 2
    assert shapes == {"train": (8, 6, 2, 16, 16), "valid": (1, 6, 2, 16, 16), "test": (1, 6, 2, 16, 16)}
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["shape"]["train"] == [8, 6, 2, 16, 16]


def test_stored_fields_are_finite_moving_and_nearly_divergence_free(dataset):
    x = load_split(dataset / "train.h5")
    assert torch.isfinite(x).all()
    assert (x[:, 1:] - x[:, :-1]).abs().mean() > 1e-3  # states change in time
    # block means of a divergence-free field keep a small divergence (a random field has div ~ curl)
    assert divergence(x).square().mean().sqrt() < 0.2 * vorticity(x).square().mean().sqrt()


def test_split_is_80_10_10():
    assert split_sizes(1024) == (819, 102, 103)
    assert split_sizes(10) == (8, 1, 1)
    assert split_sizes(3) == (1, 1, 1)


def test_refuses_to_overwrite_without_the_flag(dataset, capsys):
    before = (dataset / "train.h5").read_bytes()
    assert main(["data", "kolmogorov", str(dataset), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "train.h5" in err and "--overwrite" in err and err.count("\n") == 1
    assert (dataset / "train.h5").read_bytes() == before


def test_bad_flags_get_one_line_errors(tmp_path, capsys):
    assert main(["data", "kolmogorov", str(tmp_path / "d"), "--preset", "tiny", "--coarsen", "3"]) == 2
    assert "--coarsen" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    (tmp_path / "bad.h5").write_text("not hdf5")
    with pytest.raises(Exception, match="bad.h5"):
        load_split(tmp_path / "bad.h5")


def test_random_windows_are_consecutive_states(dataset):
    x = load_split(dataset / "train.h5")
    w = random_windows(x, 3, torch.Generator().manual_seed(0))
    assert w.shape == (8, 6, 16, 16)
    for i in range(8):
        states = w[i].unflatten(0, (3, 2))
        starts = [s for s in range(4) if torch.equal(x[i, s:s + 3], states)]
        assert len(starts) == 1


def test_check_inputs_reads_the_dataset_without_importing_torch(dataset):
    # the checks run before the run directory exists, on every `runforge train kolmogorov`: torch costs seconds
    check = ("import sys; from dataclasses import replace; from pathlib import Path; "
             "from runforge.trainers.kolmogorov.config import PRESETS, check_inputs; "
             "check_inputs(replace(PRESETS['tiny'], data=Path(sys.argv[1]), window=int(sys.argv[2]))); "
             "assert 'torch' not in sys.modules, 'check_inputs imported torch'")
    done = subprocess.run([sys.executable, "-c", check, str(dataset), "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-c", check, str(dataset), "7"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "shorter than --window 7" in done.stderr
