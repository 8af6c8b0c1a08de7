"""Sample images: whatever a trainer has (array, tensor, PIL image) to a PIL image, copied."""

from __future__ import annotations

from typing import Any


def to_pil(rgb: Any) -> Any:
    from PIL import Image

    if isinstance(rgb, Image.Image):
        return rgb.copy()
    if hasattr(rgb, "detach"):  # a torch tensor
        rgb = rgb.detach().cpu().numpy()
    import numpy as np

    array = np.asarray(rgb)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"image must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(np.array(array, copy=True, order="C"))  # a copy: the caller may reuse its buffer
