"""Kolmogorov-flow datasets: simulate, coarsen, split, store as HDF5; read windows back.

Layout (as SDA): OUT/{train,valid,test}.h5, each with one float32 dataset `x` of
shape (trajectories, time, 2, H, W) and the simulation parameters as attributes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ...errors import BadInputError
from ...run.files import write_json
from ...run.naming import make_dir
from ..common import check_output, pick_device
from .config import DataConfig
from .dataset_check import read_split
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


def load_split(path: Path) -> Tensor:
    """The dataset `x` of one split file as a float32 tensor (N, T, 2, H, W), every value finite."""
    return torch.from_numpy(read_split(path))


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
