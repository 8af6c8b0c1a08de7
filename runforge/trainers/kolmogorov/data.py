"""Kolmogorov-flow datasets: simulate, coarsen, split, store as HDF5; read windows back.

Layout (as SDA): OUT/{train,valid,test}.h5, each with one float32 dataset `x` of
shape (trajectories, time, 2, H, W) and the simulation parameters as attributes.
"""

from __future__ import annotations

import functools
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ...errors import BadInputError
from ...run.files import write_json
from ...run.naming import make_dir
from ..common import check_output, describe, pick_device
from .config import Config, DataConfig
from .solver import KolmogorovFlow, coarsen

SPLITS = ("train", "valid", "test")
META_FILE = "meta.json"


def split_sizes(n: int) -> tuple[int, int, int]:
    """80/10/10 (as SDA: int(0.8 n), int(0.9 n) boundaries), each split non-empty."""
    train, valid = int(0.8 * n), int(0.9 * n)
    train = min(max(train, 1), n - 2)
    valid = min(max(valid, train + 1), n - 1)
    return train, valid - train, n - valid


def simulate(cfg: DataConfig, log=print) -> Tensor:
    """All trajectories as coarse velocity fields (N, length, 2, H, W), float32 on the CPU."""
    device = pick_device(cfg.device)
    flow = KolmogorovFlow(cfg.size, reynolds=cfg.reynolds, drag=cfg.drag, wavenumber=cfg.wavenumber, device=device)
    generator = torch.Generator().manual_seed(cfg.seed)
    out = []
    started = time.perf_counter()
    for first in range(0, cfg.trajectories, cfg.batch):
        count = min(cfg.batch, cfg.trajectories - first)
        w = flow.random_vorticity(count, generator, max_velocity=cfg.max_velocity, peak_wavenumber=cfg.wavenumber)
        for _ in range(cfg.burn_in):
            w = flow.advance(w, cfg.dt)
        states = flow.trajectory(w, cfg.length, cfg.dt)  # (B, T, X, Y) vorticity
        uv = coarsen(flow.velocity(states), cfg.coarsen)  # (B, T, 2, H, W)
        if not torch.isfinite(uv).all():
            raise BadInputError(None, f"--dt {cfg.dt:g}, --size {cfg.size}, --reynolds {cfg.reynolds:g}: the simulation "
                                      "blew up (non-finite values); lower --dt or --max_velocity, or raise --size")
        out.append(uv.float().cpu())
        done = first + count
        log(f"kolmogorov data: {done}/{cfg.trajectories} trajectories simulated ({time.perf_counter() - started:.0f} s)")
    return torch.cat(out)


def write_split(path: Path, x: np.ndarray, attrs: dict) -> None:
    """Write to a temporary name beside `path`, then rename: a reader never sees half a file."""
    import h5py

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("x", data=x, dtype=np.float32)
            for key, value in attrs.items():
                h5.attrs[key] = value
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def generate(cfg: DataConfig, out: Path, overwrite: bool = False, log=print) -> dict[str, Path]:
    """Simulate and write OUT/{train,valid,test}.h5 and OUT/meta.json; returns the split files.

    OUT is checked before the simulation and made only when it has finished."""
    out = Path(out)
    files = {split: out / f"{split}.h5" for split in SPLITS}
    taken = [p for p in files.values() if p.exists()]
    if taken and not overwrite:
        raise BadInputError(taken[0], "already exists; pass --overwrite to replace the dataset")
    check_output(out, [p.name for p in files.values()] + [META_FILE])
    x = simulate(cfg, log).numpy()
    n_train, n_valid, _ = split_sizes(len(x))
    parts = {"train": x[:n_train], "valid": x[n_train:n_train + n_valid], "test": x[n_train + n_valid:]}
    attrs = {k: v for k, v in asdict(cfg).items() if k not in ("device", "batch")}
    make_dir(out)
    for split, path in files.items():
        write_split(path, parts[split], attrs)
    write_json(out / META_FILE, {**attrs, "shape": {s: list(p.shape) for s, p in parts.items()},
                                 "layout": "x[trajectory, time, (u, v), X, Y] on the periodic square [0, 2π)²"})
    return files


def memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@contextmanager
def open_split(path: Path) -> Iterator[Any]:
    """The h5py dataset `x` of one split file, checked to be floats of shape (trajectories, time, 2, N, N)
    that fit in memory; anything else is a BadInputError naming the file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such dataset file (make one with `runforge data kolmogorov DIR`)")
    try:
        h5 = h5py.File(path, "r")
    except Exception as exc:  # OSError mostly; h5py raises others on some damaged files
        raise BadInputError(path, f"is not a readable HDF5 file ({describe(exc)})") from None
    with h5:
        try:
            x = h5.get("x")
        except Exception as exc:
            raise BadInputError(path, f"is a damaged HDF5 file ({describe(exc)})") from None
        if not isinstance(x, h5py.Dataset):
            raise BadInputError(path, "has no dataset 'x'")
        if x.dtype.kind != "f":
            raise BadInputError(path, f"dataset 'x' holds {x.dtype}, not floating-point numbers")
        if x.ndim != 5 or x.shape[2] != 2 or x.shape[3] != x.shape[4] or 0 in x.shape:
            raise BadInputError(path, f"dataset 'x' must be (trajectories, time, 2, N, N), got {tuple(x.shape)}")
        needed = 4 * int(np.prod(x.shape, dtype=np.float64))
        if needed > memory_bytes():
            raise BadInputError(path, f"dataset 'x' {tuple(x.shape)} needs {needed / 2**30:.1f} GiB as float32, more "
                                      f"than this machine's {memory_bytes() / 2**30:.1f} GiB of memory")
        yield x


def load_split(path: Path) -> Tensor:
    """The dataset `x` of one split file as a float32 tensor (N, T, 2, H, W), every value finite."""
    path = Path(path)
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None  # open_split names the problem
    return _read_split(str(path), stamp)


@functools.lru_cache(maxsize=2)
def _read_split(name: str, stamp: tuple[int, int] | None) -> Tensor:
    # check_inputs reads train.h5 and valid.h5 in full before the run directory exists; train() asks
    # again in the same process and gets these tensors instead of reading the files twice.
    path = Path(name)
    with open_split(path) as x:
        try:
            values = x[...]
        except Exception as exc:
            raise BadInputError(path, f"is not a readable HDF5 file ({describe(exc)})") from None
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    if not torch.isfinite(tensor).all():
        raise BadInputError(path, f"dataset 'x' holds {int((~torch.isfinite(tensor)).sum())} NaN or infinite values "
                                  "(as float32)")
    return tensor


def check_dataset(cfg: Config) -> None:
    """Fail before a run directory exists when train.h5/valid.h5 are missing or damaged, or do not
    fit --window or the U-Net."""
    shapes = {}
    for split in ("train", "valid"):
        path = Path(cfg.data) / f"{split}.h5"
        shapes[split] = load_split(path).shape
        if shapes[split][1] < cfg.window:
            raise BadInputError(path, f"trajectories of {shapes[split][1]} states are shorter than --window {cfg.window}")
    if shapes["train"][2:] != shapes["valid"][2:]:
        raise BadInputError(Path(cfg.data) / "valid.h5", f"states of shape {tuple(shapes['valid'][2:])} differ from "
                                                         f"train.h5's {tuple(shapes['train'][2:])}")
    check_grid(Path(cfg.data) / "train.h5", shapes["train"][-1], cfg)


def check_grid(path: Path, size: int, cfg: Config) -> None:
    """The U-Net halves the grid at each level below the first (rounding up); its circular padding
    needs at least kernel_size // 2 cells on the deepest level."""
    deepest = size
    for _ in cfg.hidden_channels[1:]:
        deepest = (deepest + 1) // 2
    if cfg.kernel_size // 2 > deepest:
        raise BadInputError(path, f"its {size}x{size} grid is {deepest}x{deepest} at the U-Net's level "
                                  f"{len(cfg.hidden_channels)}, too small for --kernel_size {cfg.kernel_size}; "
                                  "use fewer --hidden_channels levels or a smaller kernel")


def read_meta(folder: Path) -> dict:
    path = Path(folder) / "meta.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def random_windows(x: Tensor, window: int, generator: torch.Generator) -> Tensor:
    """One random window per trajectory, flattened as SDA's TrajectoryDataset: (N, window * 2, H, W)."""
    n, t = x.shape[:2]
    if t < window:
        raise BadInputError(None, f"trajectories of {t} states are shorter than --window {window}")
    start = torch.randint(0, t - window + 1, (n,), generator=generator)
    index = start[:, None] + torch.arange(window)
    windows = x[torch.arange(n)[:, None], index]  # (N, window, 2, H, W)
    return windows.flatten(1, 2)
