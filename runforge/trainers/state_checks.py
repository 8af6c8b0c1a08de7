"""Checks of a loaded checkpoint's pieces against what a trainer will restore from them.

A trainer's `load_checkpoint` runs before the run is touched, so it must find every problem the
restore would hit later (a wrong shape, a foreign optimizer, a broken RNG state) without building
the model. Each check raises ValueError with one line naming the piece (`grid.occupancy_logits`).
Shared by the trainers (voxel and splat use it).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .common import describe, load_optimizer_state


def tensor(value: Any, where: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
           finite: bool = False) -> torch.Tensor:
    """`value` as a tensor of exactly `dtype` and `shape` (and only finite values, with `finite`)."""
    if not isinstance(value, torch.Tensor) or value.dtype != dtype or tuple(value.shape) != shape:
        got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{where} must be {dtype} of shape {shape}, got {got}")
    if finite and not torch.isfinite(value).all():
        raise ValueError(f"{where} holds NaN or infinite values")
    return value


def integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where} must be an integer from {low} to {high}, got {value!r}")
    return value


def generator_state(value: Any, where: str) -> None:
    """A state `torch.Generator().set_state` takes (a CPU generator's ByteTensor)."""
    try:
        torch.Generator().set_state(value)
    except Exception as exc:  # TypeError for a non-tensor, RuntimeError for a wrong size
        raise ValueError(f"{where}: not a CPU generator state ({describe(exc)})") from None


def adam_state(state: Any, shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """`state` is what `torch.optim.Adam(params).state_dict()` gives for parameters of `shapes` (in order).

    The parameters are on the meta device: their shapes are checked, nothing is allocated.
    """
    params = [torch.nn.Parameter(torch.empty(shape, device="meta")) for shape in shapes.values()]
    try:
        load_optimizer_state(torch.optim.Adam(params), state)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except Exception as exc:  # load_state_dict meets a foreign dict with KeyError, TypeError, ...
        raise ValueError(f"{where}: {describe(exc)}") from None
