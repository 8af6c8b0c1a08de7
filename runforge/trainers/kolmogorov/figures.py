"""Vorticity pictures: a grid of fields in a blue-white-red map, rows labelled."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# Diverging map (negative blue, zero white, positive red), interpolated linearly in RGB.
_STOPS = np.array([[0.02, 0.19, 0.38], [0.26, 0.58, 0.76], [0.97, 0.97, 0.97], [0.84, 0.38, 0.30], [0.40, 0.0, 0.12]])


def colorize(w: np.ndarray, limit: float) -> np.ndarray:
    """Values in [-limit, limit] -> uint8 RGB (..., 3)."""
    pos = np.clip((np.asarray(w, dtype=np.float64) / limit + 1) / 2, 0, 1) * (len(_STOPS) - 1)
    low = np.minimum(pos.astype(int), len(_STOPS) - 2)
    frac = (pos - low)[..., None]
    rgb = _STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac
    return (rgb * 255 + 0.5).astype(np.uint8)


def grid(rows: Sequence[np.ndarray], labels: Sequence[str] | None = None, limit: float | None = None,
         zoom: int = 2, pad: int = 2, label_width: int = 70) -> Image.Image:
    """One row per (columns, H, W) array of vorticity fields; a shared colour range (default: 99th percentile)."""
    if limit is None:
        limit = float(np.percentile(np.abs(np.concatenate([r.ravel() for r in rows])), 99)) or 1.0
    height, width = rows[0].shape[-2:]
    columns = max(r.shape[0] for r in rows)
    left = label_width if labels else pad
    image = Image.new("RGB", (left + columns * (width * zoom + pad), pad + len(rows) * (height * zoom + pad)), "white")
    draw = ImageDraw.Draw(image)
    for i, row in enumerate(rows):
        top = pad + i * (height * zoom + pad)
        if labels:
            draw.text((4, top + height * zoom // 2 - 6), labels[i], fill=(0, 0, 0))
        for j, field in enumerate(row):
            # Axis 0 of a field is x: transpose so that x runs to the right and y up the picture.
            tile = Image.fromarray(colorize(field.T[::-1], limit)).resize((width * zoom, height * zoom), Image.NEAREST)
            image.paste(tile, (left + j * (width * zoom + pad), top))
    return image
