"""Numba kernels for the CPU path: projection, binning, compositing (each forward and backward) and the loss's SSIM.

The torch path composites each tile's list in chunks of `chunk` Gaussians as [tiles, pixels, chunk] tensors:
dozens of small kernels and a Python loop per chunk, plus the padding and the pixels that already stopped.
Here a tile takes its Gaussians one by one in depth order and visits only the pixels of the Gaussian's
footprint (where alpha can reach 1/255: a row range and, per row, a column range from the conic), keeping
each pixel's transmittance; every pixel still sees its Gaussians in the same order as a per-pixel walk, so the
image is the same to the bit, and pixels stop where gsplat's do. The backward walks the list back to front
from the last contributor of any pixel of the tile, each pixel undoing its transmittance by division (gsplat's
scheme), so only the final transmittance and the last index are kept per pixel. Tiles run in parallel and
write one gradient row per (tile, Gaussian) intersection, so threads never write the same row (no atomics);
the rows are summed per Gaussian afterwards.

The projection (`project_forward` / `project_backward`) is the EWA projection of raster.project with its
analytic derivative, one Gaussian per iteration instead of some fifty tensor operations and their backward.

Imported lazily: without numba the torch path is used.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

ALPHA_MIN = np.float32(1.0 / 255.0)
ALPHA_MAX = np.float32(0.999)
T_STOP = np.float32(1e-4)


@njit(inline="always")
def _footprint_rows(my, ca, cb, cc, s, y0, y1):
    """Rows [lo, hi) of [y0, y1) whose pixel centres can have sigma <= s (a 1-pixel margin); all of them when
    the conic is not positive definite (then sigma's sign decides, as in the reference)."""
    det = ca * cc - cb * cb
    if ca <= 0.0 or det <= 0.0:
        return y0, y1
    half = np.sqrt(2.0 * ca * s / det)
    lo = max(int(np.floor(my - half - 0.5)) - 1, y0)
    hi = min(int(np.ceil(my + half - 0.5)) + 2, y1)
    return lo, hi


@njit(inline="always")
def _footprint_cols(mx, my, ca, cb, cc, s, py, x0, x1):
    """Columns [lo, hi) of [x0, x1) in row py whose pixel centres can have sigma <= s (a 1-pixel margin)."""
    det = ca * cc - cb * cb
    if ca <= 0.0 or det <= 0.0:
        return x0, x1
    v = py + 0.5 - my
    rest = s - 0.5 * v * v * det / ca  # s minus the row's smallest sigma
    if rest < 0.0:
        return x0, x0
    centre = mx - cb * v / ca
    half = np.sqrt(2.0 * rest / ca)
    lo = max(int(np.floor(centre - half - 0.5)) - 1, x0)
    hi = min(int(np.ceil(centre + half - 0.5)) + 2, x1)
    return lo, hi


@njit(inline="always")
def _sigma_bound(o):
    """alpha = o exp(-sigma) >= 1/255 only where sigma <= ln(255 o); a small margin keeps the bound conservative
    against float32 rounding (the exact test is still made per pixel). Negative: the Gaussian reaches no pixel."""
    return np.log(max(np.float64(o) * 255.0, 1e-30)) + 1e-3


@njit(inline="always")
def _splat(means2d, conics, opac, g):
    """Gaussian g's screen mean, conic, opacity and sigma bound (`_sigma_bound`)."""
    return (means2d[g, 0], means2d[g, 1], conics[g, 0], conics[g, 1], conics[g, 2], opac[g],
            _sigma_bound(opac[g]))


@njit(inline="always")
def _sigma_at(mx, my, ca, cb, cc, px, py):
    """Offsets of the Gaussian's mean from pixel (px, py)'s centre and the exponent sigma there."""
    dx = mx - np.float32(px + 0.5)
    dy = my - np.float32(py + 0.5)
    return dx, dy, np.float32(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy


@njit(inline="always")
def _tile_box(t, tiles_x, tile_size, width, height):
    """Tile t's pixel box: x0, y0 inclusive, x1, y1 exclusive (the last row and column of tiles may be cut)."""
    x0, y0 = (t % tiles_x) * tile_size, (t // tiles_x) * tile_size
    return x0, y0, min(x0 + tile_size, width), min(y0 + tile_size, height)


@njit(parallel=True, cache=True)
def composite_forward(means2d, conics, opac, colors, background, offsets, counts, ids, tile_size, tiles_x, tiles_y,
                      width, height, out_color, out_T, out_last):
    """out_color [H, W, C] (zeros on entry), out_T [H, W] (final transmittance), out_last [H, W] (1 + position in
    the tile's list of the last Gaussian that contributed, 0 if none).

    Gaussian by Gaussian in depth order, each over only the pixels of its tile inside its 1/255 footprint; every
    pixel sees its Gaussians in the same order as a per-pixel walk, so the sums are the same to the bit."""
    n_tiles = tiles_x * tiles_y
    channels = colors.shape[1]
    for t in prange(n_tiles):
        x0, y0, x1, y1 = _tile_box(t, tiles_x, tile_size, width, height)
        pixels = (x1 - x0) * (y1 - y0)
        done = np.zeros((tile_size, tile_size), dtype=np.bool_)
        n_done = 0
        for py in range(y0, y1):
            for px in range(x0, x1):
                out_T[py, px] = 1.0
                out_last[py, px] = 0
        start = offsets[t]
        for k in range(counts[t]):
            if n_done == pixels:
                break
            g = ids[start + k]
            mx, my, ca, cb, cc, o, s = _splat(means2d, conics, opac, g)
            if s < 0.0:
                continue
            row_lo, row_hi = _footprint_rows(my, ca, cb, cc, s, y0, y1)
            for py in range(row_lo, row_hi):
                col_lo, col_hi = _footprint_cols(mx, my, ca, cb, cc, s, py, x0, x1)
                for px in range(col_lo, col_hi):
                    if done[py - y0, px - x0]:
                        continue
                    dx, dy, sigma = _sigma_at(mx, my, ca, cb, cc, px, py)
                    if sigma < 0:  # not positive definite here (gsplat skips these too)
                        continue
                    alpha = o * np.exp(-sigma)
                    if alpha < ALPHA_MIN:
                        continue
                    if alpha > ALPHA_MAX:
                        alpha = ALPHA_MAX
                    T = out_T[py, px]
                    t_next = T * (np.float32(1.0) - alpha)
                    if t_next <= T_STOP:  # the pixel stops before this Gaussian
                        done[py - y0, px - x0] = True
                        n_done += 1
                        continue
                    w = alpha * T
                    for ch in range(channels):
                        out_color[py, px, ch] += w * colors[g, ch]
                    out_T[py, px] = t_next
                    out_last[py, px] = k + 1
        for py in range(y0, y1):
            for px in range(x0, x1):
                for ch in range(channels):
                    out_color[py, px, ch] += out_T[py, px] * background[ch]


@njit(parallel=True, cache=True)
def composite_backward(means2d, conics, opac, colors, background, offsets, counts, ids, tile_size, tiles_x, tiles_y,
                       width, height, final_T, last, grad_color, grad_alpha, g_isect):
    """g_isect [n_isects, 6 + C] (zeros on entry): per intersection d/d (mean x, mean y, conic a, b, c, opacity,
    colour...).

    Gaussian by Gaussian back to front over the pixels of its footprint, each pixel undoing its transmittance
    by division from where it stopped (gsplat's scheme), so only the final transmittance and the last index are
    kept per pixel. One tile writes only its own intersections' rows: no two threads share memory."""
    n_tiles = tiles_x * tiles_y
    channels = colors.shape[1]
    for t in prange(n_tiles):
        x0, y0, x1, y1 = _tile_box(t, tiles_x, tile_size, width, height)
        T_now = np.empty((tile_size, tile_size), dtype=np.float32)
        acc = np.zeros((tile_size, tile_size, channels), dtype=np.float32)  # colour of what lies behind
        # the background term and the alpha output are the same for every Gaussian of a pixel
        g_rest = np.empty((tile_size, tile_size), dtype=np.float32)
        n_last = 0
        for py in range(y0, y1):
            for px in range(x0, x1):
                T_now[py - y0, px - x0] = final_T[py, px]
                g_bg = np.float32(0.0)
                for ch in range(channels):
                    g_bg += background[ch] * grad_color[py, px, ch]
                g_rest[py - y0, px - x0] = final_T[py, px] * (grad_alpha[py, px] - g_bg)
                n_last = max(n_last, last[py, px])
        start = offsets[t]
        for k in range(n_last - 1, -1, -1):
            row = start + k
            g = ids[row]
            mx, my, ca, cb, cc, o, s = _splat(means2d, conics, opac, g)
            if s < 0.0:
                continue
            # sums over the pixels of d/d opacity and of d/d sigma times dx, dy, dx^2, dx dy, dy^2: the mean's and
            # conic's gradients follow from them once per Gaussian
            s_op = s_x = s_y = s_xx = s_xy = s_yy = np.float32(0.0)
            row_lo, row_hi = _footprint_rows(my, ca, cb, cc, s, y0, y1)
            for py in range(row_lo, row_hi):
                col_lo, col_hi = _footprint_cols(mx, my, ca, cb, cc, s, py, x0, x1)
                for px in range(col_lo, col_hi):
                    if k >= last[py, px]:
                        continue
                    dx, dy, sigma = _sigma_at(mx, my, ca, cb, cc, px, py)
                    if sigma < 0:
                        continue
                    vis = np.exp(-sigma)
                    raw = o * vis
                    if raw < ALPHA_MIN:
                        continue
                    alpha = raw if raw <= ALPHA_MAX else ALPHA_MAX
                    ra = np.float32(1.0) / (np.float32(1.0) - alpha)
                    T = T_now[py - y0, px - x0] * ra
                    T_now[py - y0, px - x0] = T
                    w = alpha * T
                    v_alpha = np.float32(0.0)
                    for ch in range(channels):
                        gc = grad_color[py, px, ch]
                        g_isect[row, 6 + ch] += w * gc
                        v_alpha += (colors[g, ch] * T - acc[py - y0, px - x0, ch] * ra) * gc
                        acc[py - y0, px - x0, ch] += colors[g, ch] * w
                    # background and the alpha output both scale with the final transmittance, prod (1 - alpha)
                    v_alpha += ra * g_rest[py - y0, px - x0]
                    if raw > ALPHA_MAX:
                        continue  # clamped: no gradient to opacity or shape
                    s_op += vis * v_alpha
                    v_sigma = -raw * v_alpha
                    s_x += v_sigma * dx
                    s_y += v_sigma * dy
                    s_xx += v_sigma * dx * dx
                    s_xy += v_sigma * dx * dy
                    s_yy += v_sigma * dy * dy
            g_isect[row, 0] = ca * s_x + cb * s_y
            g_isect[row, 1] = cb * s_x + cc * s_y
            g_isect[row, 2] = np.float32(0.5) * s_xx
            g_isect[row, 3] = s_xy
            g_isect[row, 4] = np.float32(0.5) * s_yy
            g_isect[row, 5] = s_op


@njit(cache=True)
def sum_rows(ids, rows, n):
    """[n, K]: the intersection rows summed per Gaussian (an index_add in one pass)."""
    out = np.zeros((n, rows.shape[1]), dtype=rows.dtype)
    for r in range(rows.shape[0]):
        g = ids[r]
        for j in range(rows.shape[1]):
            out[g, j] += rows[r, j]
    return out


def set_threads(n: int) -> None:
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


@njit(cache=True)
def bin_tiles(order, means2d, radii, tile_size, tiles_x, tiles_y):
    """Per-tile lists of the Gaussians in `order` (depth order) with a radius above 0, as (offsets, counts, ids).

    A counting sort by tile: two passes over the tile rectangles, O(intersections), stable, so each
    list keeps the depth order (what torch does with a full stable sort of the intersection keys)."""
    n_tiles = tiles_x * tiles_y
    n = order.shape[0]
    rect = np.empty((n, 4), dtype=np.int64)
    counts = np.zeros(n_tiles, dtype=np.int64)
    for j in range(n):
        g = order[j]
        r = radii[g]
        if r <= 0:
            rect[j, 0], rect[j, 1], rect[j, 2], rect[j, 3] = 0, -1, 0, -1  # covers no tile
            continue
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


@njit(inline="always")
def _rotation(w, x, y, z):
    """Rotation matrix of the quaternion (w, x, y, z) already normalised, as a flat 9-tuple (row major)."""
    return (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y))


@njit(cache=True)
def _ewa(means, quats, scales, viewmat, K, width, height, eps2d, i):
    """What the forward and the backward of one Gaussian's projection share: the normalised quaternion and its
    norm, R, M = R diag(s), the world covariance (6 entries), camera-space mean, depth z (clamped), the clamped
    tangent point (ux, uy) and whether each was inside its clamp, T = J Rv (2 x 3, flat), and the blurred 2D
    covariance T cov T^T + eps2d I as (a, b, c)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    qw, qx, qy, qz = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
    norm = max(np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12)
    q = (qw / norm, qx / norm, qy / norm, qz / norm)
    R = _rotation(q[0], q[1], q[2], q[3])
    s0, s1, s2 = scales[i, 0], scales[i, 1], scales[i, 2]
    m = (R[0] * s0, R[1] * s1, R[2] * s2, R[3] * s0, R[4] * s1, R[5] * s2, R[6] * s0, R[7] * s1, R[8] * s2)
    cov = (m[0] * m[0] + m[1] * m[1] + m[2] * m[2], m[0] * m[3] + m[1] * m[4] + m[2] * m[5],
           m[0] * m[6] + m[1] * m[7] + m[2] * m[8], m[3] * m[3] + m[4] * m[4] + m[5] * m[5],
           m[3] * m[6] + m[4] * m[7] + m[5] * m[8], m[6] * m[6] + m[7] * m[7] + m[8] * m[8])
    px, py, pz = means[i, 0], means[i, 1], means[i, 2]
    mc0 = viewmat[0, 0] * px + viewmat[0, 1] * py + viewmat[0, 2] * pz + viewmat[0, 3]
    mc1 = viewmat[1, 0] * px + viewmat[1, 1] * py + viewmat[1, 2] * pz + viewmat[1, 3]
    tz = viewmat[2, 0] * px + viewmat[2, 1] * py + viewmat[2, 2] * pz + viewmat[2, 3]
    z = max(tz, 1e-6)
    # the Jacobian's tangent point is clamped to 1.3x the frustum (as gsplat) so off-screen splats stay stable
    lim_x, lim_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    ux, uy = mc0 / z, mc1 / z
    lo_x, hi_x = -(cx / fx + lim_x), (width - cx) / fx + lim_x
    lo_y, hi_y = -(cy / fy + lim_y), (height - cy) / fy + lim_y
    free_x, free_y = lo_x <= ux <= hi_x, lo_y <= uy <= hi_y
    ux, uy = min(max(ux, lo_x), hi_x), min(max(uy, lo_y), hi_y)
    j00, j02, j11, j12 = fx / z, -fx * ux / z, fy / z, -fy * uy / z
    t = (j00 * viewmat[0, 0] + j02 * viewmat[2, 0], j00 * viewmat[0, 1] + j02 * viewmat[2, 1],
         j00 * viewmat[0, 2] + j02 * viewmat[2, 2], j11 * viewmat[1, 0] + j12 * viewmat[2, 0],
         j11 * viewmat[1, 1] + j12 * viewmat[2, 1], j11 * viewmat[1, 2] + j12 * viewmat[2, 2])
    a = _sym_quad(t[0], t[1], t[2], cov, t[0], t[1], t[2]) + eps2d
    b = _sym_quad(t[0], t[1], t[2], cov, t[3], t[4], t[5])
    c = _sym_quad(t[3], t[4], t[5], cov, t[3], t[4], t[5]) + eps2d
    return q, norm, R, m, cov, mc0, mc1, tz, z, ux, uy, free_x, free_y, t, a, b, c


@njit(inline="always")
def _sym_quad(u0, u1, u2, cov, v0, v1, v2):
    """u^T S v for the symmetric 3x3 S given by its 6 upper entries (xx, xy, xz, yy, yz, zz)."""
    return (u0 * (cov[0] * v0 + cov[1] * v1 + cov[2] * v2) + u1 * (cov[1] * v0 + cov[3] * v1 + cov[4] * v2)
            + u2 * (cov[2] * v0 + cov[4] * v1 + cov[5] * v2))


@njit(parallel=True, cache=True)
def project_forward(means, quats, scales, opac, viewmat, K, width, height, near, far, eps2d,
                    out_means2d, out_conics, out_depths, out_radii):
    """The EWA projection of raster.project (not anti-aliased) for every Gaussian, fused: means2d, conics,
    depths and radii (0 when culled) in one pass instead of some fifty tensor operations."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    for i in prange(means.shape[0]):
        q, norm, R, m, cov, mc0, mc1, tz, z, ux, uy, free_x, free_y, t, a, b, c = _ewa(
            means, quats, scales, viewmat, K, width, height, eps2d, i)
        det_blur = a * c - b * b
        det = max(det_blur, 1e-10)
        out_conics[i, 0], out_conics[i, 1], out_conics[i, 2] = c / det, -b / det, a / det
        mx, my = fx * mc0 / z + cx, fy * mc1 / z + cy
        out_means2d[i, 0], out_means2d[i, 1] = mx, my
        out_depths[i] = tz
        # opacity-aware extent: beyond sqrt(2 ln(255 o)) sigmas the alpha is below 1/255 (= 3.33 at o = 1)
        extent = min(np.sqrt(2.0 * np.log(max(opac[i] * 255.0, 1.0))), 3.33)
        mid = 0.5 * (a + c)
        lam = mid + np.sqrt(max(mid * mid - det, 0.1))
        r = np.ceil(extent * np.sqrt(lam))
        visible = (near < tz < far and det_blur > 0 and r > 0 and mx + r > 0 and mx - r < width and my + r > 0
                   and my - r < height)
        out_radii[i] = r if visible else 0.0


@njit(parallel=True, cache=True)
def project_backward(means, quats, scales, viewmat, K, width, height, eps2d, radii, v_means2d, v_conics,
                     v_means, v_quats, v_scales):
    """Gradients of project_forward's means2d and conics to means, quaternions and (linear) scales; culled
    Gaussians (radius 0) got none (the compositing never saw them)."""
    fx, fy = K[0, 0], K[1, 1]
    for i in prange(means.shape[0]):
        if radii[i] == 0:
            continue
        q, norm, R, m, cov, mc0, mc1, tz, z, ux, uy, free_x, free_y, t, a, b, c = _ewa(
            means, quats, scales, viewmat, K, width, height, eps2d, i)
        det_blur = a * c - b * b
        vA, vB, vC = v_conics[i, 0], v_conics[i, 1], v_conics[i, 2]
        if det_blur >= 1e-10:  # conic = (c, -b, a) / det
            inv2 = 1.0 / (det_blur * det_blur)
            v_a = inv2 * (-c * c * vA + b * c * vB - b * b * vC)
            v_b = inv2 * (2 * b * c * vA - (det_blur + 2 * b * b) * vB + 2 * a * b * vC)
            v_c = inv2 * (-b * b * vA + a * b * vB - a * a * vC)
        else:  # det clamped: a constant
            v_a, v_b, v_c = vC / 1e-10, -vB / 1e-10, vA / 1e-10
        g00, g01, g11 = v_a, 0.5 * v_b, v_c  # d/d cov2d as a symmetric matrix G
        # cov2d = T cov T^T: d cov = T^T G T, d T = 2 G T cov
        gt = (g00 * t[0] + g01 * t[3], g00 * t[1] + g01 * t[4], g00 * t[2] + g01 * t[5],
              g01 * t[0] + g11 * t[3], g01 * t[1] + g11 * t[4], g01 * t[2] + g11 * t[5])  # G T
        vcov = (t[0] * gt[0] + t[3] * gt[3], t[0] * gt[1] + t[3] * gt[4], t[0] * gt[2] + t[3] * gt[5],
                t[1] * gt[1] + t[4] * gt[4], t[1] * gt[2] + t[4] * gt[5], t[2] * gt[2] + t[5] * gt[5])
        vt = (2 * _sym_quad(gt[0], gt[1], gt[2], cov, 1.0, 0.0, 0.0), 2 * _sym_quad(gt[0], gt[1], gt[2], cov, 0.0, 1.0, 0.0),
              2 * _sym_quad(gt[0], gt[1], gt[2], cov, 0.0, 0.0, 1.0), 2 * _sym_quad(gt[3], gt[4], gt[5], cov, 1.0, 0.0, 0.0),
              2 * _sym_quad(gt[3], gt[4], gt[5], cov, 0.0, 1.0, 0.0), 2 * _sym_quad(gt[3], gt[4], gt[5], cov, 0.0, 0.0, 1.0))
        # T = J Rv: d J = d T Rv^T (J01 = J10 = 0)
        vj00 = vt[0] * viewmat[0, 0] + vt[1] * viewmat[0, 1] + vt[2] * viewmat[0, 2]
        vj02 = vt[0] * viewmat[2, 0] + vt[1] * viewmat[2, 1] + vt[2] * viewmat[2, 2]
        vj11 = vt[3] * viewmat[1, 0] + vt[4] * viewmat[1, 1] + vt[5] * viewmat[1, 2]
        vj12 = vt[3] * viewmat[2, 0] + vt[4] * viewmat[2, 1] + vt[5] * viewmat[2, 2]
        vmx, vmy = v_means2d[i, 0], v_means2d[i, 1]
        v_mc0 = fx / z * vmx
        v_mc1 = fy / z * vmy
        v_z = -(fx * mc0 * vmx + fy * mc1 * vmy) / (z * z)
        v_z += -fx / (z * z) * vj00 - fy / (z * z) * vj11 + fx * ux / (z * z) * vj02 + fy * uy / (z * z) * vj12
        v_ux, v_uy = -fx / z * vj02, -fy / z * vj12
        if free_x:
            v_mc0 += v_ux / z
            v_z -= v_ux * mc0 / (z * z)
        if free_y:
            v_mc1 += v_uy / z
            v_z -= v_uy * mc1 / (z * z)
        v_mc2 = v_z if tz >= 1e-6 else 0.0
        for k in range(3):
            v_means[i, k] = viewmat[0, k] * v_mc0 + viewmat[1, k] * v_mc1 + viewmat[2, k] * v_mc2
        # cov = M M^T with M = R diag(s): d M = 2 d cov M (d cov symmetric)
        v00, v01, v02, v11, v12, v22 = vcov
        vm = (2 * (v00 * m[0] + v01 * m[3] + v02 * m[6]), 2 * (v00 * m[1] + v01 * m[4] + v02 * m[7]),
              2 * (v00 * m[2] + v01 * m[5] + v02 * m[8]), 2 * (v01 * m[0] + v11 * m[3] + v12 * m[6]),
              2 * (v01 * m[1] + v11 * m[4] + v12 * m[7]), 2 * (v01 * m[2] + v11 * m[5] + v12 * m[8]),
              2 * (v02 * m[0] + v12 * m[3] + v22 * m[6]), 2 * (v02 * m[1] + v12 * m[4] + v22 * m[7]),
              2 * (v02 * m[2] + v12 * m[5] + v22 * m[8]))
        for col in range(3):
            v_scales[i, col] = vm[col] * R[col] + vm[3 + col] * R[3 + col] + vm[6 + col] * R[6 + col]
        vr = (vm[0] * scales[i, 0], vm[1] * scales[i, 1], vm[2] * scales[i, 2], vm[3] * scales[i, 0],
              vm[4] * scales[i, 1], vm[5] * scales[i, 2], vm[6] * scales[i, 0], vm[7] * scales[i, 1],
              vm[8] * scales[i, 2])
        w, x, y, zq = q
        vw = 2 * (-zq * vr[1] + y * vr[2] + zq * vr[3] - x * vr[5] - y * vr[6] + x * vr[7])
        vx = 2 * (y * vr[1] + zq * vr[2] + y * vr[3] - 2 * x * vr[4] - w * vr[5] + zq * vr[6] + w * vr[7] - 2 * x * vr[8])
        vy = 2 * (-2 * y * vr[0] + x * vr[1] + w * vr[2] + x * vr[3] + zq * vr[5] - w * vr[6] + zq * vr[7] - 2 * y * vr[8])
        vz = 2 * (-2 * zq * vr[0] - w * vr[1] + x * vr[2] + w * vr[3] - 2 * zq * vr[4] + y * vr[5] + x * vr[6] + y * vr[7])
        # through the normalisation q / |q|
        dot = w * vw + x * vx + y * vy + zq * vz
        v_quats[i, 0] = (vw - w * dot) / norm
        v_quats[i, 1] = (vx - x * dot) / norm
        v_quats[i, 2] = (vy - y * dot) / norm
        v_quats[i, 3] = (vz - zq * dot) / norm


SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


@njit(inline="always")
def _ssim_shape(x, g):
    """Planes, height, width, window size, and the height and width of the unpadded SSIM map."""
    P, H, W = x.shape
    size = g.shape[0]
    return P, H, W, size, H - size + 1, W - size + 1


@njit(inline="always")
def _ssim_terms(moments, p, h, w):
    """mu_x, mu_y and the SSIM map's two numerator and two denominator factors at (h, w) of plane p."""
    mx, my = moments[p, 0, h, w], moments[p, 1, h, w]
    vx, vy = moments[p, 2, h, w] - mx * mx, moments[p, 3, h, w] - my * my
    cov = moments[p, 4, h, w] - mx * my
    return mx, my, 2 * mx * my + SSIM_C1, 2 * cov + SSIM_C2, mx * mx + my * my + SSIM_C1, vx + vy + SSIM_C2


@njit(parallel=True, cache=True)
def ssim_forward(x, y, g, moments):
    """SSIM of planes x, y [P, H, W] with the separable window g, without padding (runforge.trainers.common.ssim).

    Writes the five local moments (mu_x, mu_y, E[x^2], E[y^2], E[xy]) into moments [P, 5, Ho, Wo], which the
    backward reuses, and returns the sum of the SSIM map over each plane [P] (float64)."""
    P, H, W, size, Ho, Wo = _ssim_shape(x, g)
    rows = np.zeros((P, 5, H, Wo), dtype=np.float32)
    for job in prange(P * H):
        p, h = job // H, job % H
        for k in range(size):
            gk = g[k]
            for w in range(Wo):
                a, b = x[p, h, w + k], y[p, h, w + k]
                rows[p, 0, h, w] += gk * a
                rows[p, 1, h, w] += gk * b
                rows[p, 2, h, w] += gk * a * a
                rows[p, 3, h, w] += gk * b * b
                rows[p, 4, h, w] += gk * a * b
    sums = np.zeros((P, Ho))
    for job in prange(P * Ho):
        p, h = job // Ho, job % Ho
        for m in range(5):
            for w in range(Wo):
                moments[p, m, h, w] = 0.0
            for k in range(size):
                gk = g[k]
                for w in range(Wo):
                    moments[p, m, h, w] += gk * rows[p, m, h + k, w]
        total = 0.0
        for w in range(Wo):
            _, _, n1, n2, d1, d2 = _ssim_terms(moments, p, h, w)
            total += n1 * n2 / (d1 * d2)
        sums[p, h] = total
    return sums.sum(axis=1)


@njit(parallel=True, cache=True)
def ssim_backward(x, y, g, moments, g_plane, grad_x):
    """d/dx [P, H, W] of sum_p g_plane[p] x (SSIM map sum of plane p): the map's derivatives by mu_x, E[x^2] and
    E[xy], blurred back through the transposed window."""
    P, H, W, size, Ho, Wo = _ssim_shape(x, g)
    maps = np.empty((P, 3, Ho, Wo), dtype=np.float32)
    for job in prange(P * Ho):
        p, h = job // Ho, job % Ho
        scale = g_plane[p]
        for w in range(Wo):
            mx, my, n1, n2, d1, d2 = _ssim_terms(moments, p, h, w)
            s = n1 * n2 / (d1 * d2)
            a1, a2 = n2 / (d1 * d2), n1 / (d1 * d2)  # dS/dn1, dS/dn2
            b1, b2 = -s / d1, -s / d2  # dS/dd1, dS/dd2
            maps[p, 0, h, w] = scale * (2 * my * (a1 - a2) + 2 * mx * (b1 - b2))  # by mu_x
            maps[p, 1, h, w] = scale * b2  # by E[x^2]
            maps[p, 2, h, w] = scale * 2 * a2  # by E[xy]
    cols = np.zeros((P, 3, H, Wo), dtype=np.float32)
    for job in prange(P * H):
        p, h = job // H, job % H
        for k in range(max(0, h - Ho + 1), min(size, h + 1)):
            gk = g[k]
            for m in range(3):
                for w in range(Wo):
                    cols[p, m, h, w] += gk * maps[p, m, h - k, w]
        back = np.zeros((3, W), dtype=np.float32)
        for k in range(size):
            gk = g[k]
            for m in range(3):
                for w in range(Wo):
                    back[m, w + k] += gk * cols[p, m, h, w]
        for w in range(W):
            grad_x[p, h, w] = back[0, w] + 2 * x[p, h, w] * back[1, w] + y[p, h, w] * back[2, w]
