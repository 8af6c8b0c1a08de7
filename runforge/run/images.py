"""Sample images: whatever a trainer has (array, tensor, nested lists, PIL image) to a PIL image, copied.

numpy is not a core dependency: without it, nested lists (and tensors, through
`tolist`) take a pure-Python path that gives the same pixels.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

_SHAPES = "image must be HxW, HxWx3 or HxWx4"


def to_pil(rgb: Any) -> Any:
    from PIL import Image

    if isinstance(rgb, Image.Image):
        return rgb.copy()
    try:
        import numpy as np
    except ImportError:
        return _to_pil_without_numpy(rgb)
    if hasattr(rgb, "detach"):  # a torch tensor
        rgb = rgb.detach().cpu().numpy()

    array = np.asarray(rgb)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"{_SHAPES}, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(np.array(array, copy=True, order="C"))  # a copy: the caller may reuse its buffer


def _to_pil_without_numpy(rgb: Any) -> Any:
    from PIL import Image

    raw = False  # uint8 values go through unscaled, as np.uint8 arrays do
    if hasattr(rgb, "detach"):  # a torch tensor: .numpy() needs numpy, .tolist() does not
        raw = str(getattr(rgb, "dtype", "")) == "torch.uint8"
        rgb = rgb.detach().cpu().tolist()
    shape = _shape(rgb)
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        channels, height, width = shape
        planes = _flatten(rgb, shape)
        flat = [planes[c * height * width + i] for i in range(height * width) for c in range(channels)]
        shape = (height, width, channels)  # CHW -> HWC
    elif len(shape) in (2, 3):
        flat = _flatten(rgb, shape)
    else:
        raise ValueError(f"{_SHAPES}, got shape {shape}")
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) == 3 and shape[2] not in (3, 4):
        raise ValueError(f"{_SHAPES}, got shape {shape}")
    mode = "L" if len(shape) == 2 else ("RGB", "RGBA")[shape[2] - 3]
    data = bytes(int(v) & 0xFF for v in flat) if raw else bytes(_to_byte(v) for v in flat)
    return Image.frombytes(mode, (shape[1], shape[0]), data)


def _shape(value: Any) -> tuple[int, ...]:
    """The shape a rectangular nested list would have, read down its first elements."""
    shape = []
    while isinstance(value, (list, tuple)):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _flatten(value: Any, shape: tuple[int, ...]) -> list[Any]:
    """The numbers of `value` in row-major order; a ragged list or a non-number is a ValueError."""
    if not shape:
        if isinstance(value, (list, tuple)) or not isinstance(value, Real):
            raise ValueError(f"image values must be numbers, got {type(value).__name__}")
        return [value]
    if not isinstance(value, (list, tuple)) or len(value) != shape[0]:
        raise ValueError(f"{_SHAPES}: the nested lists are ragged")
    flat: list[Any] = []
    for item in value:
        flat.extend(_flatten(item, shape[1:]))
    return flat


def _to_byte(value: Any) -> int:
    """0..1 to 0..255 as the numpy path does: NaN is 0, everything is clipped first."""
    v = float(value)
    if math.isnan(v):
        return 0
    return int(min(max(v, 0.0), 1.0) * 255.0 + 0.5)
