"""A differentiable Gaussian-splat rasterizer in plain PyTorch, for the CPU.

    colors, alphas, info = rasterize(means, quats, scales, opacities, sh, viewmats, Ks, width, height, sh_degree=3)

The same contract as gsplat's `rasterization()` (what the trainer calls on a GPU):

1. project: world -> camera -> pixels with the EWA Jacobian (autograd), 2D
   covariance + `eps2d`, conic, screen radius from the opacity-aware 3-sigma
   extent, colours from spherical harmonics;
2. cull: behind the near plane, beyond the far plane, off screen, or too faint
   to ever reach alpha 1/255;
3. bin: every visible Gaussian is listed in each `tile_size`^2 tile its
   radius box touches, in depth order (one stable sort by tile);
4. composite front to back, tile lists in chunks of `chunk` Gaussians, with
   gsplat's rules (alpha <= 0.999, alphas below 1/255 skipped, a pixel stops
   before its transmittance would fall to 1e-4); tiles whose every pixel has
   stopped are dropped from later chunks (early termination).

Step 4 is `_Composite`, a custom autograd Function: its backward recomputes
each chunk and accumulates the analytic gradients for means2d, conics,
opacities and colours, so memory stays at one chunk instead of the whole
per-pixel history autograd would keep. Steps 1-3 are ordinary autograd.

With numba and float32 CPU tensors, steps 1 (not anti-aliased, cameras without gradients; the SH colours
stay in torch) and 3-4 run as the kernels of `kernels.py` instead (a fused projection with its analytic
backward, `_ProjectNumba`; a counting sort for the bins; compositing over each Gaussian's footprint,
`_CompositeNumba`); this torch path stays the reference and the fallback (float64, other devices,
`RUNFORGE_SPLAT_KERNEL=torch`).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_STOP = 1e-4
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def rgb_to_sh(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh: Tensor) -> Tensor:
    return sh * SH_C0 + 0.5


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis in the 3DGS order and signs (what PLY viewers expect). dirs: [..., 3] unit -> [..., (d+1)^2]."""
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
        if degree >= 2:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            out += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
            if degree >= 3:
                out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
                        SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                        SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[..., 4] (w, x, y, z), any norm -> [..., 3, 3]."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(quats.shape[:-1] + (3, 3))


def covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space 3D covariances [N, 3, 3] from quaternions and (linear) scales."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


@dataclass
class Projection:
    means2d: Tensor  # [N, 2] pixels
    conics: Tensor  # [N, 3] upper triangle of the inverse 2D covariance
    depths: Tensor  # [N]
    radii: Tensor  # [N] pixels, 0 when culled
    opacities: Tensor  # [N] (times the anti-aliasing compensation when asked)


def project(means: Tensor, covars: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
            near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3, antialiased: bool = False) -> Projection:
    """EWA projection of N Gaussians into one pinhole camera (differentiable)."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ R.T + t  # [N, 3]
    cc = R @ covars @ R.T  # [N, 3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tz = mc[:, 2]
    z = tz.clamp_min(1e-6)  # culled below anyway; keeps the Jacobian finite
    # Clamp the Jacobian's tangent point to 1.3x the frustum (as gsplat) so off-screen splats stay stable.
    lim_x, lim_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    tx = z * torch.clamp(mc[:, 0] / z, min=-(cx / fx + lim_x), max=(width - cx) / fx + lim_x)
    ty = z * torch.clamp(mc[:, 1] / z, min=-(cy / fy + lim_y), max=(height - cy) / fy + lim_y)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).reshape(-1, 2, 3)
    cov2d = J @ cc @ J.transpose(-1, -2)  # [N, 2, 2]
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det_raw = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det_blur = a * c - b * b
    det = det_blur.clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    if antialiased:
        opacities = opacities * torch.sqrt((det_raw / det).clamp_min(0.0))
    means2d = torch.stack([fx * mc[:, 0] / z + cx, fy * mc[:, 1] / z + cy], -1)

    with torch.no_grad():
        # Opacity-aware extent: beyond sqrt(2 ln(255 o)) sigmas the alpha is below 1/255 (= 3.33 at o = 1).
        extent = torch.sqrt(2.0 * torch.log((opacities.detach() / ALPHA_MIN).clamp_min(1.0))).clamp_max(3.33)
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt((mid * mid - det).clamp_min(0.1))
        radii = torch.ceil(extent * torch.sqrt(lam))
        m = means2d.detach()
        visible = ((tz > near_plane) & (tz < far_plane) & (det_blur > 0) & (radii > 0)
                   & (m[:, 0] + radii > 0) & (m[:, 0] - radii < width) & (m[:, 1] + radii > 0) & (m[:, 1] - radii < height))
        radii = torch.where(visible, radii, torch.zeros_like(radii))
    return Projection(means2d, conics, tz, radii, opacities)


@dataclass
class TileBins:
    """Per-tile depth-ordered lists of visible Gaussians (indices into the visible subset)."""

    tile_size: int
    tiles_x: int
    tiles_y: int
    offsets: Tensor  # [n_tiles] start of each tile's list in `ids`
    counts: Tensor  # [n_tiles]
    ids: Tensor  # [n_isects]


def bin_tiles(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile_size: int) -> TileBins:
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n = means2d.shape[0]
    device = means2d.device
    order = torch.argsort(depths)
    m, r = means2d[order], radii[order]
    x0 = ((m[:, 0] - r) / tile_size).floor().clamp(0, tiles_x - 1).long()
    x1 = ((m[:, 0] + r) / tile_size).floor().clamp(0, tiles_x - 1).long()
    y0 = ((m[:, 1] - r) / tile_size).floor().clamp(0, tiles_y - 1).long()
    y1 = ((m[:, 1] + r) / tile_size).floor().clamp(0, tiles_y - 1).long()
    nx, ny = x1 - x0 + 1, y1 - y0 + 1
    per = nx * ny
    total = int(per.sum())
    owner = torch.repeat_interleave(torch.arange(n, device=device), per)  # [n_isects] position in depth order
    start = torch.cumsum(per, 0) - per
    local = torch.arange(total, device=device) - start[owner]
    tx = x0[owner] + local % nx[owner]
    ty = y0[owner] + local // nx[owner]
    tile = ty * tiles_x + tx
    tile_sorted, perm = torch.sort(tile, stable=True)  # stable: depth order survives inside a tile
    ids = order[owner[perm]]
    counts = torch.bincount(tile_sorted, minlength=tiles_x * tiles_y)
    offsets = torch.cumsum(counts, 0) - counts
    return TileBins(tile_size, tiles_x, tiles_y, offsets, counts, ids)


def _bin_tiles_numba(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int,
                     tile_size: int) -> TileBins:
    """`bin_tiles` by a counting sort in `kernels.py`: the same lists, without sorting every intersection.
    Gaussians of radius 0 are left out (so callers need not gather the visible ones first)."""
    from . import kernels

    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    order = torch.argsort(depths, stable=True)
    offsets, counts, ids = kernels.bin_tiles(order.numpy(), means2d.contiguous().numpy(), radii.contiguous().numpy(),
                                             tile_size, tiles_x, tiles_y)
    return TileBins(tile_size, tiles_x, tiles_y, torch.from_numpy(offsets), torch.from_numpy(counts),
                    torch.from_numpy(ids))


def _tile_basis(bins: TileBins, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Quadratic monomials [P, 6] (1, x, y, x^2, xy, y^2) of the pixel centres in tile-local coordinates, and
    each tile's origin [n_tiles, 2]. With them a Gaussian's exponent over a whole tile is one matmul."""
    ts = bins.tile_size
    local = torch.arange(ts, dtype=dtype, device=device) + 0.5
    ly, lx = torch.meshgrid(local, local, indexing="ij")
    x, y = lx.reshape(-1), ly.reshape(-1)
    basis = torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], -1)
    t = torch.arange(bins.tiles_x * bins.tiles_y, device=device)
    origin = torch.stack([(t % bins.tiles_x) * ts, (t // bins.tiles_x) * ts], -1).to(dtype)
    return basis, origin


def _gather(bins: TileBins, active: Tensor, k0: int, chunk: int, means2d: Tensor, conics: Tensor,
            opacities: Tensor, origin: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The chunk's Gaussian ids [A, K], validity, tile-local means [A, K, 2], conics [A, K, 3], opacities [A, K]
    (0 for padding past the end of a tile's list)."""
    pos = k0 + torch.arange(chunk, device=means2d.device)
    valid = pos[None, :] < bins.counts[active, None]
    gid = bins.ids[(bins.offsets[active, None] + pos).clamp_max(bins.ids.numel() - 1)]
    opac = torch.where(valid, opacities[gid], torch.zeros((), dtype=opacities.dtype, device=opacities.device))
    return gid, valid, means2d[gid] - origin[active, None, :], conics[gid], opac


def _chunk_alpha(basis: Tensor, m: Tensor, con: Tensor, opac: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Alphas [A, P, K] of K Gaussians per tile at the tile's P pixels, the raw alphas and exp(-sigma).

    sigma = 0.5 a dx^2 + b dx dy + 0.5 c dy^2 with dx = x - mx is a quadratic in (x, y): its six
    coefficients per Gaussian times the monomials of the pixels give all of them in one matmul.
    """
    a, b, c = con.unbind(-1)
    mx, my = m.unbind(-1)
    bx, by = a * mx + b * my, b * mx + c * my
    coef = torch.stack([0.5 * (mx * bx + my * by), -bx, -by, 0.5 * a, b, 0.5 * c], 1)  # [A, 6, K]
    gauss = torch.exp(-torch.matmul(basis, coef))  # [A, P, K]
    raw = opac[:, None, :] * gauss
    alpha = torch.where(raw >= ALPHA_MIN, raw.clamp_max(ALPHA_MAX), torch.zeros((), dtype=raw.dtype))
    return alpha, raw, gauss


def _composite_weights(alpha: Tensor, t_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back weights [A, P, K], the alphas actually used and the transmittance before each Gaussian."""
    t_after = t_in[:, :, None] * torch.cumprod(1.0 - alpha, -1)
    stopped = t_after <= T_STOP
    if bool(stopped.any()):  # a pixel stops before it would fall to T_STOP (gsplat's rule)
        alpha = alpha * ~stopped
        t_after = t_in[:, :, None] * torch.cumprod(1.0 - alpha, -1)
    t_before = t_after / (1.0 - alpha)
    return alpha * t_before, alpha, t_before


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, background: Tensor,
                bins: TileBins, chunk: int) -> tuple[Tensor, Tensor]:
        n_tiles = bins.tiles_x * bins.tiles_y
        P = bins.tile_size ** 2
        dtype, device = means2d.dtype, means2d.device
        basis, origin = _tile_basis(bins, dtype, device)
        T = torch.ones(n_tiles, P, dtype=dtype, device=device)
        C = torch.zeros(n_tiles, P, colors.shape[-1], dtype=dtype, device=device)
        steps: list[Tensor] = []  # the active tiles of each chunk, replayed by backward
        max_count = int(bins.counts.max()) if n_tiles and bins.ids.numel() else 0
        active = torch.nonzero(bins.counts > 0).squeeze(1)
        for k0 in range(0, max_count, chunk):
            active = active[(bins.counts[active] > k0) & (T[active].amax(1) > T_STOP)]
            if active.numel() == 0:
                break
            steps.append(active)
            gid, _, m, con, opac = _gather(bins, active, k0, chunk, means2d, conics, opacities, origin)
            alpha, _, _ = _chunk_alpha(basis, m, con, opac)
            weights, used, _ = _composite_weights(alpha, T[active])
            C[active] += torch.bmm(weights, colors[gid])
            T[active] = T[active] * torch.prod(1.0 - used, -1)
        out_color = C + T[..., None] * background
        ctx.save_for_backward(means2d, conics, opacities, colors, background, out_color, T)
        ctx.bins, ctx.chunk, ctx.steps = bins, chunk, steps
        return _untile(out_color, bins), _untile((1.0 - T)[..., None], bins)

    @staticmethod
    def backward(ctx: Any, grad_color: Tensor, grad_alpha: Tensor) -> tuple[Any, ...]:
        means2d, conics, opacities, colors, background, out_color, T_final = ctx.saved_tensors
        bins: TileBins = ctx.bins
        chunk = ctx.chunk
        basis, origin = _tile_basis(bins, means2d.dtype, means2d.device)
        g = _tile(grad_color.contiguous(), bins)  # [n_tiles, P, 3]
        g_alpha = _tile(grad_alpha.contiguous(), bins)[..., 0]  # [n_tiles, P]
        g_means = torch.zeros_like(means2d)
        g_conics = torch.zeros_like(conics)
        g_opac = torch.zeros_like(opacities)
        g_colors = torch.zeros_like(colors)
        # d loss / d alpha_i needs what lies behind i: g.(C_out - C_upto_i), with C_out holding the background.
        g_total = (g * out_color).sum(-1)
        T = torch.ones_like(T_final)
        g_acc = torch.zeros_like(T_final)
        for k, active in enumerate(ctx.steps):
            gid, valid, m, con, opac = _gather(bins, active, k * chunk, chunk, means2d, conics, opacities, origin)
            alpha, raw, gauss = _chunk_alpha(basis, m, con, opac)
            weights, used, t_before = _composite_weights(alpha, T[active])
            ga = g[active]
            gc = torch.bmm(ga, colors[gid].transpose(1, 2))  # [A, P, K]: g . colour
            contrib = weights * gc
            behind = g_total[active][:, :, None] - g_acc[active][:, :, None] - torch.cumsum(contrib, -1)
            inv = 1.0 / (1.0 - used)
            d_alpha = t_before * gc + ((g_alpha[active] * T_final[active])[:, :, None] - behind) * inv
            d_alpha = d_alpha * ((used > 0) & (raw < ALPHA_MAX))  # no gradient through the clamp
            # alpha = o exp(-sigma): d/do = exp(-sigma), d/dsigma = -alpha; sigma's six coefficients by one matmul.
            d_opac = (d_alpha * gauss).sum(1)  # [A, K]
            d_coef = torch.matmul(basis.T, -d_alpha * raw)  # [A, 6, K]: sums of d_sigma x monomials
            s0, sx, sy, sxx, sxy, syy = d_coef.unbind(1)
            mx, my = m.unbind(-1)
            a, b, c = con.unbind(-1)
            dx, dy = sx - mx * s0, sy - my * s0  # sum d_sigma (x - mx), sum d_sigma (y - my)
            dxx = sxx - 2 * mx * sx + mx * mx * s0
            dxy = sxy - mx * sy - my * sx + mx * my * s0
            dyy = syy - 2 * my * sy + my * my * s0
            keep = valid.reshape(-1)
            flat = gid.reshape(-1)[keep]
            g_opac.index_add_(0, flat, d_opac.reshape(-1)[keep])
            g_conics.index_add_(0, flat, torch.stack([0.5 * dxx, dxy, 0.5 * dyy], -1).reshape(-1, 3)[keep])
            g_means.index_add_(0, flat, torch.stack([-(a * dx + b * dy), -(b * dx + c * dy)], -1).reshape(-1, 2)[keep])
            g_colors.index_add_(0, flat, torch.bmm(weights.transpose(1, 2), ga).reshape(-1, colors.shape[-1])[keep])
            g_acc[active] += contrib.sum(-1)
            T[active] = T[active] * torch.prod(1.0 - used, -1)
        return g_means, g_conics, g_opac, g_colors, None, None, None


def _untile(x: Tensor, bins: TileBins) -> Tensor:
    """[n_tiles, P, C] -> [tiles_y * ts, tiles_x * ts, C] (callers crop to the image)."""
    ts = bins.tile_size
    c = x.shape[-1]
    return x.reshape(bins.tiles_y, bins.tiles_x, ts, ts, c).permute(0, 2, 1, 3, 4).reshape(bins.tiles_y * ts, bins.tiles_x * ts, c)


def _tile(x: Tensor, bins: TileBins) -> Tensor:
    ts = bins.tile_size
    H, W, c = bins.tiles_y * ts, bins.tiles_x * ts, x.shape[-1]
    padded = x.new_zeros(H, W, c)
    padded[: x.shape[0], : x.shape[1]] = x
    return padded.reshape(bins.tiles_y, ts, bins.tiles_x, ts, c).permute(0, 2, 1, 3, 4).reshape(-1, ts * ts, c)


class _CompositeNumba(torch.autograd.Function):
    """The same compositing as `_Composite`, by the per-pixel kernels of `kernels.py` (float32, CPU)."""

    @staticmethod
    def forward(ctx: Any, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, background: Tensor,
                bins: TileBins, width: int, height: int) -> tuple[Tensor, Tensor]:
        from . import kernels

        kernels.set_threads(torch.get_num_threads())
        args = [x.detach().contiguous().numpy() for x in (means2d, conics, opacities, colors, background)]
        bin_args = [bins.offsets.numpy(), bins.counts.numpy(), bins.ids.numpy()]
        color = torch.zeros(height, width, colors.shape[-1], dtype=torch.float32)
        T = torch.empty(height, width, dtype=torch.float32)
        last = torch.empty(height, width, dtype=torch.int64)
        kernels.composite_forward(*args, *bin_args, bins.tile_size, bins.tiles_x, bins.tiles_y, width, height,
                                  color.numpy(), T.numpy(), last.numpy())
        ctx.args, ctx.bin_args, ctx.bins, ctx.size = args, bin_args, bins, (width, height)
        ctx.save_for_backward(T, last)
        return color, (1.0 - T)[..., None]

    @staticmethod
    def backward(ctx: Any, grad_color: Tensor, grad_alpha: Tensor) -> tuple[Any, ...]:
        from . import kernels

        T, last = ctx.saved_tensors
        bins: TileBins = ctx.bins
        width, height = ctx.size
        channels = ctx.args[3].shape[1]
        g_isect = torch.zeros(bins.ids.numel(), 6 + channels, dtype=torch.float32)
        kernels.set_threads(torch.get_num_threads())
        kernels.composite_backward(*ctx.args, *ctx.bin_args, bins.tile_size, bins.tiles_x, bins.tiles_y, width,
                                   height, T.numpy(), last.numpy(), grad_color.float().contiguous().numpy(),
                                   grad_alpha[..., 0].float().contiguous().numpy(), g_isect.numpy())
        n = ctx.args[0].shape[0]
        g = torch.from_numpy(kernels.sum_rows(ctx.bin_args[2], g_isect.numpy(), n))
        return g[:, 0:2], g[:, 2:5], g[:, 5], g[:, 6:], None, None, None, None


class _ProjectNumba(torch.autograd.Function):
    """`project` (not anti-aliased) by the fused kernels of `kernels.py`, from quaternions and scales directly:
    means2d and conics carry gradients to means, quats and scales; depths and radii carry none."""

    @staticmethod
    def forward(ctx: Any, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor,
                width: int, height: int, near_plane: float, far_plane: float,
                eps2d: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from . import kernels

        kernels.set_threads(torch.get_num_threads())
        n = means.shape[0]
        means2d, conics = torch.empty(n, 2), torch.empty(n, 3)
        depths, radii = torch.empty(n), torch.empty(n)
        arrays = [x.detach().contiguous().numpy() for x in (means, quats, scales, opacities, viewmat, K)]
        kernels.project_forward(*arrays, width, height, near_plane, far_plane, eps2d, means2d.numpy(), conics.numpy(),
                                depths.numpy(), radii.numpy())
        ctx.arrays, ctx.size, ctx.eps2d = arrays, (width, height), eps2d
        ctx.save_for_backward(radii)
        ctx.mark_non_differentiable(depths, radii)
        return means2d, conics, depths, radii

    @staticmethod
    def backward(ctx: Any, v_means2d: Tensor, v_conics: Tensor, _depths: Any, _radii: Any) -> tuple[Any, ...]:
        from . import kernels

        (radii,) = ctx.saved_tensors
        means, quats, scales, _, viewmat, K = ctx.arrays
        n = means.shape[0]
        v_means, v_quats, v_scales = torch.zeros(n, 3), torch.zeros(n, 4), torch.zeros(n, 3)
        kernels.set_threads(torch.get_num_threads())
        kernels.project_backward(means, quats, scales, viewmat, K, *ctx.size, ctx.eps2d, radii.numpy(),
                                 v_means2d.contiguous().numpy(), v_conics.contiguous().numpy(), v_means.numpy(),
                                 v_quats.numpy(), v_scales.numpy())
        return v_means, v_quats, v_scales, None, None, None, None, None, None, None, None


def _project_numba(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor,
                   width: int, height: int, near_plane: float, far_plane: float, eps2d: float) -> Projection:
    means2d, conics, depths, radii = _ProjectNumba.apply(means, quats, scales, opacities, viewmat, K, width, height,
                                                         near_plane, far_plane, eps2d)
    return Projection(means2d, conics, depths, radii, opacities)


def numba_ok(*tensors: Tensor) -> bool:
    """The kernels take float32 CPU tensors; RUNFORGE_SPLAT_KERNEL=torch forces the torch path."""
    import os

    if os.environ.get("RUNFORGE_SPLAT_KERNEL", "auto") == "torch":
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    return importlib.util.find_spec("numba") is not None


def composite(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, radii: Tensor, depths: Tensor,
              width: int, height: int, background: Tensor | None = None, tile_size: int = 16,
              chunk: int = 32) -> tuple[Tensor, Tensor]:
    """Alpha-composite the Gaussians with radius > 0 into an [H, W, C] image and [H, W, 1] alpha."""
    channels = colors.shape[-1]
    if background is None:
        background = torch.zeros(channels, dtype=colors.dtype, device=colors.device)
    if numba_ok(means2d, conics, opacities, colors, background):
        # the kernels take every Gaussian and skip the culled ones: no gathers, no scatters of the gradients
        bins = _bin_tiles_numba(means2d.detach(), radii, depths.detach(), width, height, tile_size)
        return _CompositeNumba.apply(means2d, conics, opacities, colors, background.detach(), bins, width, height)
    vis = torch.nonzero(radii > 0).squeeze(1)
    bins = bin_tiles(means2d.detach()[vis], radii[vis], depths.detach()[vis], width, height, tile_size)
    color, alpha = _Composite.apply(means2d[vis], conics[vis], opacities[vis], colors[vis], background.detach(),
                                    bins, chunk)
    return color[:height, :width], alpha[:height, :width]


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, sh: Tensor, viewmats: Tensor,
              Ks: Tensor, width: int, height: int, sh_degree: int | None = None, near_plane: float = 0.01,
              far_plane: float = 1e10, backgrounds: Tensor | None = None, tile_size: int = 16, chunk: int = 32,
              eps2d: float = 0.3, antialiased: bool = False) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render C cameras. Shapes follow gsplat's `rasterization`.

    Args:
        means [N, 3], quats [N, 4] (wxyz, any norm), scales [N, 3] (linear), opacities [N] (0..1),
        sh [N, K, 3] SH coefficients (or [N, 3] plain colours when sh_degree is None),
        viewmats [C, 4, 4] world-to-camera, Ks [C, 3, 3], backgrounds [C, 3] or None (black).

    Returns:
        colors [C, H, W, 3], alphas [C, H, W, 1], and info with `means2d` [C, N, 2] (retains its
        gradient for densification), `radii` [C, N], `depths` [C, N], `width`, `height`, `n_cameras`.
    """
    if not antialiased and not viewmats.requires_grad and numba_ok(means, quats, scales, opacities, viewmats, Ks):
        projections = [_project_numba(means, quats, scales, opacities, viewmats[i], Ks[i], width, height,
                                      near_plane, far_plane, eps2d) for i in range(viewmats.shape[0])]
    else:
        covars = covariances(quats, scales)
        projections = [project(means, covars, opacities, viewmats[i], Ks[i], width, height, near_plane, far_plane,
                               eps2d, antialiased) for i in range(viewmats.shape[0])]
    means2d = torch.stack([p.means2d for p in projections])  # [C, N, 2]
    if means2d.requires_grad:
        means2d.retain_grad()  # the default strategy reads its gradient after backward
    images, alphas = [], []
    for i, proj in enumerate(projections):
        if sh_degree is None:
            colors = sh
        else:
            campos = -viewmats[i, :3, :3].T @ viewmats[i, :3, 3]
            dirs = torch.nn.functional.normalize(means - campos, dim=-1)
            k = (sh_degree + 1) ** 2
            colors = ((sh_basis(sh_degree, dirs)[:, :, None] * sh[:, :k]).sum(1) + 0.5).clamp_min(0.0)
        bg = None if backgrounds is None else backgrounds[i]
        color, alpha = composite(means2d[i], proj.conics, proj.opacities, colors, proj.radii, proj.depths,
                                 width, height, bg, tile_size, chunk)
        images.append(color)
        alphas.append(alpha)
    info = {"means2d": means2d, "radii": torch.stack([p.radii for p in projections]),
            "depths": torch.stack([p.depths for p in projections]), "width": width, "height": height,
            "n_cameras": viewmats.shape[0]}
    return torch.stack(images), torch.stack(alphas), info
