"""Speed of the splat CPU rasterizer against a dense reference, on the same scene and in the same run.

    python bench/splat_raster.py [--data_dir DIR] [--gaussians N] [--repeat 5]

The scene is the synthetic one (`runforge data synthetic-scene`, written to a temp dir
unless --data_dir is given): its sparse points as Gaussians (kNN scales, opacity 0.5,
SH degree 1) seen from a training camera at 128x96. The reference projects with gsplat's
pure-PyTorch `_torch_impl` functions and composites every Gaussian at every pixel (sorted
by depth, gsplat's alpha rules), with autograd; ours is `runforge.trainers.splat.raster`.
Both run forward + backward of the same loss. Prints milliseconds, the speed-up, the
largest pixel difference and the gradient agreement; exits 1 below a 3x speed-up or
when the images differ by more than 2e-3.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from runforge.trainers.splat import raster
from runforge.trainers.splat.colmap import Parser
from runforge.trainers.splat.scene import write_synthetic_scene
from runforge.trainers.splat.splats import knn_mean_distance

BAR_SPEEDUP = 3.0
BAR_MAX_DIFF = 2e-3


def dense_reference(means, quats, scales, opacities, sh, viewmat, K, width, height):
    """gsplat's _torch_impl projection + SH, then every Gaussian composited at every pixel."""
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False, triu=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmat[None], K[None], width, height)
    radii, means2d, depths, conics = radii[0], means2d[0], depths[0], conics[0]
    campos = torch.linalg.inv(viewmat)[:3, 3]
    dirs = means - campos
    colors = (_spherical_harmonics(1, dirs, sh) + 0.5).clamp_min(0)
    visible = (radii > 0).all(-1) if radii.dim() == 2 else radii > 0
    order = torch.argsort(depths.detach())
    order = order[visible[order]]
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    m, c = means2d[order], conics[order]
    dx, dy = xs[..., None] - m[:, 0], ys[..., None] - m[:, 1]  # [H, W, N]
    sigma = 0.5 * (c[:, 0] * dx * dx + c[:, 2] * dy * dy) + c[:, 1] * dx * dy
    raw = opacities[order] * torch.exp(-sigma)
    alpha = torch.where((raw >= raster.ALPHA_MIN) & (sigma >= 0), raw.clamp_max(raster.ALPHA_MAX), torch.zeros(()))
    used = alpha * (torch.cumprod(1 - alpha, -1) > raster.T_STOP)
    kept = torch.cumprod(1 - used, -1)
    before = torch.cat([torch.ones_like(kept[..., :1]), kept[..., :-1]], -1)
    return (used * before) @ colors[order]  # [H, W, 3]


def timed(fn, repeat: int) -> tuple[float, torch.Tensor, list[torch.Tensor]]:
    times, image, grads = [], None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        image, grads = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, image, grads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", type=Path)
    ap.add_argument("--gaussians", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tile_size", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory()
        args.data_dir = write_synthetic_scene(Path(tmp.name) / "scene", n_points=args.gaussians)
    parser = Parser(args.data_dir)
    g = torch.Generator().manual_seed(0)
    means = torch.from_numpy(parser.points[: args.gaussians]).float()
    n = means.shape[0]
    scales = knn_mean_distance(means)[:, None] * (0.5 + torch.rand(n, 3, generator=g))  # anisotropic
    quats = torch.rand(n, 4, generator=g)
    opacities = torch.full((n,), 0.5)
    sh = torch.zeros(n, 4, 3)
    sh[:, 0] = raster.rgb_to_sh(torch.from_numpy(parser.points_rgb[:n] / 255.0).float())
    sh[:, 1:] = torch.randn(n, 3, 3, generator=g) * 0.1
    params = [t.requires_grad_() for t in (means, quats, scales, opacities, sh)]
    idx = parser.train_indices[0]
    viewmat = torch.linalg.inv(torch.from_numpy(parser.camtoworlds[idx]))
    K = torch.from_numpy(parser.Ks[idx])
    H, W = parser.images[idx].shape[:2]
    weights = torch.rand(H, W, 3, generator=g)

    def ours():
        image, _, _ = raster.rasterize(*params, viewmat[None], K[None], W, H, sh_degree=1, tile_size=args.tile_size,
                                       chunk=args.chunk)
        return image[0].detach(), torch.autograd.grad((image[0] * weights).sum(), params)

    def dense():
        image = dense_reference(*params, viewmat, K, W, H)
        return image.detach(), torch.autograd.grad((image * weights).sum(), params)

    ours()  # warm-up
    ms_ours, img_ours, grads_ours = timed(ours, args.repeat)
    ms_dense, img_dense, grads_dense = timed(dense, max(1, args.repeat // 2))
    diff = (img_ours - img_dense).abs().max().item()
    cosines = [torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
               for a, b in zip(grads_ours, grads_dense)]
    speedup = ms_dense / ms_ours
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"scene: {n} Gaussians, {W}x{H}, tile {args.tile_size}, chunk {args.chunk}; load average {' '.join(load)}")
    print(f"ours  (tiles, custom backward): {ms_ours:8.1f} ms forward+backward")
    print(f"dense (gsplat _torch_impl + all-pairs compositing): {ms_dense:8.1f} ms forward+backward")
    print(f"speed-up {speedup:.1f}x (bar {BAR_SPEEDUP}x); max pixel difference {diff:.2e} (bar {BAR_MAX_DIFF:.0e})")
    print("gradient cosine vs dense (means, quats, scales, opacities, sh): " + ", ".join(f"{c:.5f}" for c in cosines))
    ok = speedup >= BAR_SPEEDUP and diff <= BAR_MAX_DIFF
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
