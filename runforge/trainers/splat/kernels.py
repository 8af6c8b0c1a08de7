"""Numba kernels for the CPU compositing step: one pass per pixel, in the order gsplat's CUDA kernels use.

The torch path composites each tile's list in chunks of `chunk` Gaussians as [tiles, pixels, chunk] tensors:
dozens of small kernels and a Python loop per chunk, plus the padding and the pixels that already stopped.
Here each pixel walks its tile's list once (forward: front to back until its transmittance would fall to
1e-4; backward: back to front from its last contributor, undoing the transmittance by division, as gsplat
does), and tiles run in parallel. The backward writes one gradient row per (tile, Gaussian) intersection, so
threads never write the same row (no atomics); the rows are summed per Gaussian afterwards.

Imported lazily: without numba the torch path is used.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

ALPHA_MIN = np.float32(1.0 / 255.0)
ALPHA_MAX = np.float32(0.999)
T_STOP = np.float32(1e-4)


@njit(parallel=True, cache=True, fastmath=False)
def composite_forward(means2d, conics, opac, colors, background, offsets, counts, ids, tile_size, tiles_x, tiles_y,
                      width, height, out_color, out_T, out_last):
    """out_color [H, W, C], out_T [H, W] (final transmittance), out_last [H, W] (1 + position in the tile's
    list of the last Gaussian that contributed, 0 if none)."""
    n_tiles = tiles_x * tiles_y
    channels = colors.shape[1]
    for t in prange(n_tiles):
        ty, tx = t // tiles_x, t % tiles_x
        start, n = offsets[t], counts[t]
        for py in range(ty * tile_size, min((ty + 1) * tile_size, height)):
            for px in range(tx * tile_size, min((tx + 1) * tile_size, width)):
                x = np.float32(px + 0.5)
                y = np.float32(py + 0.5)
                T = np.float32(1.0)
                last = 0
                c0 = np.float32(0.0)
                c1 = np.float32(0.0)
                c2 = np.float32(0.0)
                for k in range(n):
                    g = ids[start + k]
                    dx = means2d[g, 0] - x
                    dy = means2d[g, 1] - y
                    sigma = np.float32(0.5) * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
                    if sigma < 0:  # not positive definite here (gsplat skips these too)
                        continue
                    alpha = opac[g] * np.exp(-sigma)
                    if alpha < ALPHA_MIN:
                        continue
                    if alpha > ALPHA_MAX:
                        alpha = ALPHA_MAX
                    t_next = T * (np.float32(1.0) - alpha)
                    if t_next <= T_STOP:
                        break
                    w = alpha * T
                    if channels == 3:
                        c0 += w * colors[g, 0]
                        c1 += w * colors[g, 1]
                        c2 += w * colors[g, 2]
                    else:
                        for ch in range(channels):
                            out_color[py, px, ch] += w * colors[g, ch]
                    T = t_next
                    last = k + 1
                if channels == 3:
                    out_color[py, px, 0] = c0 + T * background[0]
                    out_color[py, px, 1] = c1 + T * background[1]
                    out_color[py, px, 2] = c2 + T * background[2]
                else:
                    for ch in range(channels):
                        out_color[py, px, ch] += T * background[ch]
                out_T[py, px] = T
                out_last[py, px] = last


@njit(parallel=True, cache=True, fastmath=False)
def composite_backward(means2d, conics, opac, colors, background, offsets, counts, ids, tile_size, tiles_x, tiles_y,
                       width, height, final_T, last, grad_color, grad_alpha, g_isect):
    """g_isect [n_isects, 6 + C]: per intersection d/d (mean x, mean y, conic a, b, c, opacity, colour...)."""
    n_tiles = tiles_x * tiles_y
    channels = colors.shape[1]
    buf = np.zeros((n_tiles, channels), dtype=np.float32)  # one scratch row per tile: no sharing between threads
    for t in prange(n_tiles):
        ty, tx = t // tiles_x, t % tiles_x
        start = offsets[t]
        acc = buf[t]
        for py in range(ty * tile_size, min((ty + 1) * tile_size, height)):
            for px in range(tx * tile_size, min((tx + 1) * tile_size, width)):
                n_last = last[py, px]
                if n_last == 0:
                    continue
                x = np.float32(px + 0.5)
                y = np.float32(py + 0.5)
                T_fin = final_T[py, px]
                T = T_fin
                for ch in range(channels):
                    acc[ch] = 0.0
                # the background term and the alpha output are the same for every Gaussian of the pixel
                g_bg = np.float32(0.0)
                for ch in range(channels):
                    g_bg += background[ch] * grad_color[py, px, ch]
                g_a = grad_alpha[py, px]
                for k in range(n_last - 1, -1, -1):
                    g = ids[start + k]
                    dx = means2d[g, 0] - x
                    dy = means2d[g, 1] - y
                    ca, cb, cc = conics[g, 0], conics[g, 1], conics[g, 2]
                    sigma = np.float32(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if sigma < 0:
                        continue
                    vis = np.exp(-sigma)
                    raw = opac[g] * vis
                    if raw < ALPHA_MIN:
                        continue
                    alpha = raw if raw <= ALPHA_MAX else ALPHA_MAX
                    ra = np.float32(1.0) / (np.float32(1.0) - alpha)
                    T = T * ra
                    w = alpha * T
                    row = start + k
                    v_alpha = np.float32(0.0)
                    for ch in range(channels):
                        gc = grad_color[py, px, ch]
                        g_isect[row, 6 + ch] += w * gc
                        v_alpha += (colors[g, ch] * T - acc[ch] * ra) * gc
                        acc[ch] += colors[g, ch] * w
                    # background and the alpha output both scale with the final transmittance, prod (1 - alpha)
                    v_alpha += T_fin * ra * (g_a - g_bg)
                    if raw > ALPHA_MAX:
                        continue  # clamped: no gradient to opacity or shape
                    g_isect[row, 5] += vis * v_alpha
                    v_sigma = -raw * v_alpha
                    g_isect[row, 0] += v_sigma * (ca * dx + cb * dy)
                    g_isect[row, 1] += v_sigma * (cb * dx + cc * dy)
                    g_isect[row, 2] += np.float32(0.5) * v_sigma * dx * dx
                    g_isect[row, 3] += v_sigma * dx * dy
                    g_isect[row, 4] += np.float32(0.5) * v_sigma * dy * dy


def set_threads(n: int) -> None:
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


@njit(cache=True)
def bin_tiles(order, means2d, radii, tile_size, tiles_x, tiles_y):
    """Per-tile lists of the Gaussians in `order` (depth order), as (offsets, counts, ids).

    A counting sort by tile: two passes over the tile rectangles, O(intersections), stable, so each
    list keeps the depth order (what torch does with a full stable sort of the intersection keys)."""
    n_tiles = tiles_x * tiles_y
    n = order.shape[0]
    rect = np.empty((n, 4), dtype=np.int64)
    counts = np.zeros(n_tiles, dtype=np.int64)
    for j in range(n):
        g = order[j]
        r = radii[g]
        x0 = min(max(int(np.floor((means2d[g, 0] - r) / tile_size)), 0), tiles_x - 1)
        x1 = min(max(int(np.floor((means2d[g, 0] + r) / tile_size)), 0), tiles_x - 1)
        y0 = min(max(int(np.floor((means2d[g, 1] - r) / tile_size)), 0), tiles_y - 1)
        y1 = min(max(int(np.floor((means2d[g, 1] + r) / tile_size)), 0), tiles_y - 1)
        rect[j, 0], rect[j, 1], rect[j, 2], rect[j, 3] = x0, x1, y0, y1
        for ty in range(y0, y1 + 1):
            for tx in range(x0, x1 + 1):
                counts[ty * tiles_x + tx] += 1
    offsets = np.empty(n_tiles, dtype=np.int64)
    total = 0
    for t in range(n_tiles):
        offsets[t] = total
        total += counts[t]
    cursor = offsets.copy()
    ids = np.empty(total, dtype=np.int64)
    for j in range(n):
        g = order[j]
        for ty in range(rect[j, 2], rect[j, 3] + 1):
            for tx in range(rect[j, 0], rect[j, 1] + 1):
                t = ty * tiles_x + tx
                ids[cursor[t]] = g
                cursor[t] += 1
    return offsets, counts, ids
