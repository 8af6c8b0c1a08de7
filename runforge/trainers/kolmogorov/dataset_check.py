"""Reading and checking the HDF5 split files with h5py and numpy alone (no torch), so
`check_inputs` can refuse a broken dataset before the run directory exists without paying
for torch's import; `data.load_split` hands the same arrays to the training as tensors.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from ...errors import BadInputError
from ..common import describe


class DatasetNeeds(Protocol):
    """What the checks read of a training's config (`config.Config`, which imports this module)."""

    data: Path
    window: int
    hidden_channels: list[int]
    kernel_size: int


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


def read_split(path: Path) -> np.ndarray:
    """The dataset `x` of one split file as a C-contiguous float32 array (N, T, 2, H, W), every value finite."""
    path = Path(path)
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None  # open_split names the problem
    return _read_split(str(path), stamp)


@functools.lru_cache(maxsize=2)
def _read_split(name: str, stamp: tuple[int, int] | None) -> np.ndarray:
    # check_inputs reads train.h5 and valid.h5 in full before the run directory exists; train() asks
    # again in the same process and gets these arrays instead of reading the files twice.
    path = Path(name)
    with open_split(path) as x:
        try:
            values = x[...]
        except Exception as exc:
            raise BadInputError(path, f"is not a readable HDF5 file ({describe(exc)})") from None
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        array = np.ascontiguousarray(values, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise BadInputError(path, f"dataset 'x' holds {bad} NaN or infinite values (as float32)")
    return array


def check_dataset(cfg: DatasetNeeds) -> None:
    """Fail before a run directory exists when train.h5/valid.h5 are missing or damaged, or do not
    fit --window or the U-Net."""
    shapes = {}
    for split in ("train", "valid"):
        path = Path(cfg.data) / f"{split}.h5"
        shapes[split] = read_split(path).shape
        if shapes[split][1] < cfg.window:
            raise BadInputError(path, f"trajectories of {shapes[split][1]} states are shorter than --window {cfg.window}")
    if shapes["train"][2:] != shapes["valid"][2:]:
        raise BadInputError(Path(cfg.data) / "valid.h5", f"states of shape {tuple(shapes['valid'][2:])} differ from "
                                                         f"train.h5's {tuple(shapes['train'][2:])}")
    check_grid(Path(cfg.data) / "train.h5", shapes["train"][-1], cfg)


def check_grid(path: Path, size: int, cfg: DatasetNeeds) -> None:
    """The U-Net halves the grid at each level below the first (rounding up); its circular padding
    needs at least kernel_size // 2 cells on the deepest level."""
    deepest = size
    for _ in cfg.hidden_channels[1:]:
        deepest = (deepest + 1) // 2
    if cfg.kernel_size // 2 > deepest:
        raise BadInputError(path, f"its {size}x{size} grid is {deepest}x{deepest} at the U-Net's level "
                                  f"{len(cfg.hidden_channels)}, too small for --kernel_size {cfg.kernel_size}; "
                                  "use fewer --hidden_channels levels or a smaller kernel")
