"""The CPU rasterizer: same image as a dense per-pixel reference, gradients equal to finite differences."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from runforge.trainers.splat import raster as R  # noqa: E402

W, H = 24, 18


def scene(n: int = 24, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 0.5
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.2 + 0.05
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    sh = torch.randn(n, 4, 3, generator=g, dtype=dtype) * 0.5
    return means, quats, scales, opacities, sh


def camera(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    view = torch.eye(4, dtype=dtype)
    view[2, 3] = 3.0
    K = torch.tensor([[24.0, 0, W / 2], [0, 24.0, H / 2], [0, 0, 1]], dtype=dtype)
    return view[None], K[None]


def dense_reference(means, quats, scales, opacities, sh, view, K, background):
    """Every Gaussian at every pixel, sorted by depth: what the tiles must reproduce."""
    p = R.project(means, R.covariances(quats, scales), opacities, view[0], K[0], W, H)
    campos = -view[0, :3, :3].T @ view[0, :3, 3]
    dirs = torch.nn.functional.normalize(means - campos, dim=-1)
    colors = ((R.sh_basis(1, dirs)[:, :, None] * sh).sum(1) + 0.5).clamp_min(0)
    order = torch.argsort(p.depths.detach())
    order = order[(p.radii > 0)[order]]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=means.dtype) + 0.5, torch.arange(W, dtype=means.dtype) + 0.5,
                            indexing="ij")
    m, c = p.means2d[order], p.conics[order]
    dx, dy = xs[..., None] - m[:, 0], ys[..., None] - m[:, 1]
    sigma = 0.5 * (c[:, 0] * dx * dx + c[:, 2] * dy * dy) + c[:, 1] * dx * dy
    raw = p.opacities[order] * torch.exp(-sigma)
    alpha = torch.where((raw >= R.ALPHA_MIN) & (sigma >= 0), raw.clamp_max(R.ALPHA_MAX), torch.zeros_like(raw))
    used = alpha * (torch.cumprod(1 - alpha, -1) > R.T_STOP)
    kept = torch.cumprod(1 - used, -1)
    before = torch.cat([torch.ones_like(kept[..., :1]), kept[..., :-1]], -1)
    return (used * before) @ colors[order] + kept[..., -1:] * background, 1 - kept[..., -1:]


@pytest.mark.parametrize("tile_size, chunk", [(8, 5), (16, 32), (4, 1)])
def test_tiles_reproduce_the_dense_reference(tile_size: int, chunk: int) -> None:
    params = scene()
    view, K = camera()
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    image, alpha, info = R.rasterize(*params, view, K, W, H, sh_degree=1, backgrounds=bg[None], tile_size=tile_size,
                                     chunk=chunk)
    ref_image, ref_alpha = dense_reference(*params, view, K, bg)
    assert image.shape == (1, H, W, 3) and alpha.shape == (1, H, W, 1)
    assert (info["radii"] > 0).sum() > 10  # the scene is really on screen
    torch.testing.assert_close(image[0], ref_image, atol=1e-10, rtol=0)
    torch.testing.assert_close(alpha[0], ref_alpha, atol=1e-10, rtol=0)


def test_gradients_match_finite_differences() -> None:
    params = [p.clone().requires_grad_() for p in scene(n=8, seed=3)]
    view, K = camera()
    weights = torch.randn(H, W, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss(*ps: torch.Tensor) -> torch.Tensor:
        image, alpha, _ = R.rasterize(*ps, view, K, W, H, sh_degree=1, tile_size=8, chunk=3)
        return (image[0] * weights).sum() + alpha.sum()

    grads = torch.autograd.grad(loss(*params), params)
    eps = 1e-6
    checked = 0
    for which, (param, grad) in enumerate(zip(params, grads)):
        assert grad.abs().sum() > 0, f"parameter {which} got no gradient"
        flat = param.detach().reshape(-1)
        for index in torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(which))[:4].tolist():
            def shifted(delta: float) -> float:
                values = [p.detach().clone() for p in params]
                values[which].reshape(-1)[index] += delta
                return float(loss(*values))

            numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
            assert grad.reshape(-1)[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-6), (which, index)
            checked += 1
    assert checked == 20


def test_culling_and_means2d_gradient_for_densification() -> None:
    means, quats, scales, opacities, sh = scene(n=6, dtype=torch.float32)
    means = means.clone()
    means[0] = torch.tensor([0.0, 0.0, -5.0])  # behind the camera
    opacities = opacities.clone()
    opacities[1] = 1e-3  # can never reach alpha 1/255
    means.requires_grad_()
    view, K = camera(torch.float32)
    image, _, info = R.rasterize(means, quats, scales, opacities, sh, view, K, W, H, sh_degree=1)
    assert info["radii"][0, 0] == 0 and info["radii"][0, 1] == 0
    image.sum().backward()
    assert means.grad[0].abs().sum() == 0 and means.grad[1].abs().sum() == 0
    assert info["means2d"].grad is not None and info["means2d"].grad.shape == (1, 6, 2)
    assert info["means2d"].grad[0, 2:].abs().sum() > 0


def test_early_termination_stops_a_pixel_before_its_transmittance_falls_below_1e4() -> None:
    # Two near-opaque red splats bring T to ~3e-4; the green one behind would bring it below 1e-4: it is skipped.
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5], [0.0, 0.0, 1.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]] * 3)
    scales = torch.full((3, 3), 0.5)
    opacities = torch.full((3,), 0.999)
    colors = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    view, K = camera(torch.float32)
    image, alpha, _ = R.rasterize(means, quats, scales, opacities, colors, view, K, W, H, sh_degree=None)
    centre = image[0, H // 2, W // 2]
    assert centre[1] == 0.0
    assert 1e-4 < 1 - alpha[0, H // 2, W // 2, 0] < 1e-3
    # Without the green splat the centre pixel is the same: it never reached it.
    two, _, _ = R.rasterize(means[:2], quats[:2], scales[:2], opacities[:2], colors[:2], view, K, W, H, sh_degree=None)
    assert torch.equal(two[0, H // 2, W // 2], centre)


def _kernels_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba") is not None


@pytest.mark.skipif(not _kernels_available(), reason="numba is not installed")
@pytest.mark.parametrize("tile_size", [8, 16, 4])
def test_numba_kernels_reproduce_the_dense_reference(tile_size: int) -> None:
    params = scene()
    view, K = camera()
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    ref_image, ref_alpha = dense_reference(*params, view, K, bg)
    p32 = [p.float() for p in params]
    image, alpha, _ = R.rasterize(*p32, view.float(), K.float(), W, H, sh_degree=1, backgrounds=bg[None].float(),
                                  tile_size=tile_size)
    torch.testing.assert_close(image[0].double(), ref_image, atol=2e-5, rtol=0)
    torch.testing.assert_close(alpha[0].double(), ref_alpha, atol=2e-5, rtol=0)


@pytest.mark.skipif(not _kernels_available(), reason="numba is not installed")
@pytest.mark.parametrize("seed", [3, 5])
def test_numba_gradients_match_the_checked_torch_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float64 torch path is checked against finite differences above; the float32 kernels must give the
    same gradients for every parameter (a gradcheck by proxy: float32 is too coarse for finite differences)."""
    params = scene(n=16, seed=seed)
    view, K = camera()
    bg = torch.tensor([[0.3, 0.1, 0.2]], dtype=torch.float64)
    weights = torch.randn(H, W, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def grads(dtype: torch.dtype) -> list[torch.Tensor]:
        ps = [p.to(dtype).clone().requires_grad_() for p in params]
        image, alpha, info = R.rasterize(*ps, view.to(dtype), K.to(dtype), W, H, sh_degree=1, backgrounds=bg.to(dtype),
                                         tile_size=8)
        ((image[0] * weights.to(dtype)).sum() + (alpha * 0.7).sum()).backward()
        return [p.grad.double() for p in ps] + [info["means2d"].grad.double()]

    reference = grads(torch.float64)  # float64 never takes the kernels
    ours = grads(torch.float32)
    for which, (got, want) in enumerate(zip(ours, reference)):
        assert want.abs().sum() > 0
        scale = want.abs().max()
        torch.testing.assert_close(got, want, atol=2e-4 * float(scale), rtol=1e-3, msg=f"parameter {which}")


@pytest.mark.skipif(not _kernels_available(), reason="numba is not installed")
def test_numba_and_torch_paths_agree_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    params = [p.float() for p in scene(n=24, seed=7)]
    view, K = camera(torch.float32)
    fast, fast_alpha, _ = R.rasterize(*params, view, K, W, H, sh_degree=1, tile_size=8)
    monkeypatch.setenv("RUNFORGE_SPLAT_KERNEL", "torch")
    slow, slow_alpha, _ = R.rasterize(*params, view, K, W, H, sh_degree=1, tile_size=8)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_alpha, slow_alpha, atol=1e-5, rtol=0)


@pytest.mark.skipif(not _kernels_available(), reason="numba is not installed")
@pytest.mark.parametrize("tile_size", [4, 8, 16])
def test_counting_sort_bins_equal_the_torch_bins(tile_size: int) -> None:
    params = [p.float() for p in scene(n=40, seed=2)]
    params[0][:3, 2] = -5.0  # behind the camera: culled
    view, K = camera(torch.float32)
    p = R.project(params[0], R.covariances(params[1], params[2]), params[3], view[0], K[0], W, H)
    vis = torch.nonzero(p.radii > 0).squeeze(1)
    args = (p.means2d.detach()[vis], p.radii[vis], p.depths.detach()[vis], W, H, tile_size)
    want, got = R.bin_tiles(*args), R._bin_tiles_numba(*args)
    assert torch.equal(want.counts, got.counts) and torch.equal(want.offsets, got.offsets)
    # within a tile, equal depths may come in either order; the torch sort is stable on argsort's order
    assert torch.equal(want.ids, got.ids)
    # given every Gaussian, the kernel leaves the culled ones out: the same lists, in the unfiltered numbering
    unfiltered = R._bin_tiles_numba(p.means2d.detach(), p.radii, p.depths.detach(), W, H, tile_size)
    assert (p.radii == 0).sum() > 0 and torch.equal(unfiltered.counts, want.counts)
    assert torch.equal(unfiltered.ids, vis[want.ids])


@pytest.mark.skipif(not _kernels_available(), reason="numba is not installed")
def test_numba_projection_matches_the_torch_projection() -> None:
    """The fused projection kernel against `project` in float64: same means2d, conics, depths and radii, and the
    gradients of means2d and conics to means, quaternions and scales, culled Gaussians getting none."""
    means, quats, scales, opacities, _ = scene(n=30, seed=11)
    means = means.clone()
    means[0] = torch.tensor([0.0, 0.0, -5.0], dtype=torch.float64)  # behind the camera
    means[1] = torch.tensor([2.2, 0.3, 0.5], dtype=torch.float64)  # beyond the frustum's side: tangent point clamped
    view, K = camera()
    w2 = torch.randn(30, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w3 = torch.randn(30, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def run(dtype: torch.dtype, fused: bool) -> tuple[Any, list[torch.Tensor]]:
        ps = [p.to(dtype).clone().requires_grad_() for p in (means, quats, scales)]
        o = opacities.to(dtype)
        if fused:
            p = R._project_numba(*ps, o, view[0].to(dtype), K[0].to(dtype), W, H, 0.01, 1e10, 0.3)
        else:
            p = R.project(ps[0], R.covariances(ps[1], ps[2]), o, view[0].to(dtype), K[0].to(dtype), W, H)
        vis = (p.radii > 0).to(dtype)[:, None]  # the compositing only ever sends gradients to visible ones
        ((p.means2d * w2.to(dtype) * vis).sum() + (p.conics * w3.to(dtype) * vis).sum()).backward()
        return p, [x.grad.double() for x in ps]

    want, want_grads = run(torch.float64, fused=False)
    got, got_grads = run(torch.float32, fused=True)
    assert want.radii[0] == 0 and want.radii[1] > 0 and (want.radii > 0).sum() > 20
    assert torch.equal(got.radii.double(), want.radii)
    torch.testing.assert_close(got.means2d.double(), want.means2d.detach(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got.conics.double(), want.conics.detach(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(got.depths.double(), want.depths.detach(), atol=1e-6, rtol=1e-6)
    for which, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert g[0].abs().sum() == 0, f"parameter {which}: a culled Gaussian got a gradient"
        torch.testing.assert_close(g, w, atol=1e-4 * float(w.abs().max()), rtol=1e-3, msg=f"parameter {which}")


@pytest.mark.skipif(not _kernels_available(), reason="numba is not installed")
@pytest.mark.parametrize("shape", [(1, 3, 40, 56), (2, 3, 17, 12), (1, 1, 7, 30)])
def test_numba_ssim_matches_the_shared_ssim_and_its_gradient(shape: tuple[int, ...]) -> None:
    """The training loss's SSIM kernels against runforge.trainers.common.ssim (value and gradient), also for
    images under the 11-pixel window and batches of two."""
    from runforge.trainers.common import ssim as reference
    from runforge.trainers.splat.losses import ssim

    g = torch.Generator().manual_seed(sum(shape))
    target = torch.rand(shape, generator=g)
    render = (target + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)
    weights = torch.rand(shape[0], generator=g) + 0.5

    def value_and_grad(fn: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = render.clone().requires_grad_()
        value = fn(x, target)
        (value * weights).sum().backward()
        return value.detach(), x.grad

    assert type(ssim(render.clone().requires_grad_(), target).grad_fn).__name__ == "_SSIMNumbaBackward"
    got, got_grad = value_and_grad(ssim)
    want, want_grad = value_and_grad(reference)
    assert got.shape == (shape[0],)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-6 * float(want_grad.abs().max()) + 1e-9, rtol=1e-3)
