"""Densification: counts after clone/split/prune/relocate/add, Adam state that follows, an opacity reset that fires."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from runforge.trainers.splat import strategy as S  # noqa: E402
from runforge.trainers.splat.splats import create_splats_with_optimizers  # noqa: E402


def make(n: int = 10, init_opa: float = 0.5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 3, generator=g)
    splats, optimizers = create_splats_with_optimizers(
        points, torch.rand(n, 3, generator=g), 1.0, sh_degree=1, init_opa=init_opa, init_scale=1.0, means_lr=1e-3,
        scales_lr=1e-3, quats_lr=1e-3, opacities_lr=1e-3, sh0_lr=1e-3, shN_lr=1e-3, generator=g)
    # One Adam step so every parameter has moments to carry.
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in splats.values())
    loss.backward()
    for opt in optimizers.values():
        opt.step()
        opt.zero_grad()
    return splats, optimizers


def moments(optimizers, name):
    opt = optimizers[name]
    param = opt.param_groups[0]["params"][0]
    return opt.state[param]["exp_avg"], opt.state[param]["exp_avg_sq"], param


def assert_consistent(splats, optimizers, n):
    for name, param in splats.items():
        assert param.shape[0] == n, name
        exp_avg, exp_avg_sq, in_optimizer = moments(optimizers, name)
        assert in_optimizer is param, f"{name}: the optimizer must hold the new parameter"
        assert exp_avg.shape == param.shape and exp_avg_sq.shape == param.shape, name
        assert len(optimizers[name].state) == 1, f"{name}: stale state of the old parameter"


def test_duplicate_split_remove_carry_parameters_and_adam_state() -> None:
    splats, optimizers = make(10)
    old_means = splats["means"].detach().clone()
    old_avg = moments(optimizers, "means")[0].clone()
    state = {"grad2d": torch.arange(10.0), "count": torch.ones(10), "radii": None}

    S.duplicate(splats, optimizers, state, torch.tensor([True, False, True] + [False] * 7))
    assert_consistent(splats, optimizers, 12)
    assert torch.equal(splats["means"][10:], old_means[[0, 2]])
    assert torch.equal(moments(optimizers, "means")[0][:10], old_avg)  # survivors keep their moments
    assert moments(optimizers, "means")[0][10:].abs().sum() == 0  # clones start fresh
    assert state["grad2d"].tolist()[10:] == [0.0, 2.0]

    split_mask = torch.zeros(12, dtype=torch.bool)
    split_mask[[1, 3, 4]] = True
    old_scales = splats["scales"].detach().clone()
    S.split(splats, optimizers, state, split_mask, generator=torch.Generator().manual_seed(0))
    assert_consistent(splats, optimizers, 12 - 3 + 6)
    torch.testing.assert_close(splats["scales"][-6:], (old_scales[[1, 3, 4]] - math.log(1.6)).repeat(2, 1))
    # Survivors: original rows 0, 2, 5..9 and the two clones (still zero); the 6 halves start fresh.
    expected = torch.cat([old_avg[[0, 2, 5, 6, 7, 8, 9]], torch.zeros(2 + 6, 3)])
    assert torch.equal(moments(optimizers, "means")[0], expected)

    S.remove(splats, optimizers, state, splats["means"][:, 0] > 0)
    n = int(splats["means"].shape[0])
    assert_consistent(splats, optimizers, n)
    assert (splats["means"][:, 0] <= 0).all()
    assert state["grad2d"].shape == (n,)


def _fake_info(n: int, grads: torch.Tensor) -> dict:
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = grads[None]
    return {"means2d": means2d, "radii": torch.ones(1, n), "width": 2, "height": 2, "n_cameras": 1}


def test_default_strategy_clones_small_splits_large_prunes_transparent() -> None:
    splats, optimizers = make(6)
    with torch.no_grad():
        splats["scales"][:] = math.log(0.005)
        splats["scales"][[2, 3]] = math.log(0.05)  # large (> grow_scale3d * scene_scale)
        splats["opacities"][:] = 0.0
        splats["opacities"][5] = -10.0  # transparent
    strategy = S.DefaultStrategy(refine_start_iter=0, refine_every=10, reset_every=1000)
    state = strategy.initialize_state(scene_scale=1.0)
    grads = torch.zeros(6, 2)
    grads[[0, 2]] = 1.0  # high gradient: 0 is small (clone), 2 is large (split)
    done = strategy.step_post_backward(splats, optimizers, state, 10, _fake_info(6, grads))
    assert done == {"cloned": 1, "split": 1, "pruned": 1}
    assert_consistent(splats, optimizers, 6 + 1 + 1 - 1)
    assert state["grad2d"].abs().sum() == 0 and state["count"].shape == (7,)


def test_opacity_reset_fires_at_reset_every_and_only_then() -> None:
    strategy = S.DefaultStrategy(refine_start_iter=10_000, reset_every=30, refine_stop_iter=100)
    splats, optimizers = make(5, init_opa=0.9)
    state = strategy.initialize_state()
    cap = strategy.prune_opa * 2
    for step in range(0, 31):
        done = strategy.step_post_backward(splats, optimizers, state, step, _fake_info(5, torch.zeros(5, 2)))
        opacity = torch.sigmoid(splats["opacities"]).max().item()
        if step < 30:
            assert "opacity_reset" not in done and opacity > 0.85, step
    assert done["opacity_reset"] == 1
    assert opacity == pytest.approx(cap, rel=1e-4)
    exp_avg, _, _ = moments(optimizers, "opacities")
    assert exp_avg.abs().sum() == 0  # the reset restarts the opacities' moments


def test_relocation_keeps_count_and_revives_dead_gaussians() -> None:
    splats, optimizers = make(20)
    with torch.no_grad():
        splats["opacities"][:5] = -10.0
    strategy = S.MCMCStrategy(refine_start_iter=0, refine_every=10, cap_max=22)
    state = strategy.initialize_state()
    done = strategy.step_post_backward(splats, optimizers, state, 10, {}, lr=0.0)
    assert done == {"relocated": 5, "added": 1}  # 5% growth of 20 would be 21, under the cap of 22
    assert_consistent(splats, optimizers, 21)
    assert (torch.sigmoid(splats["opacities"]) > strategy.min_opacity).all()
    done = strategy.step_post_backward(splats, optimizers, state, 20, {}, lr=0.0)
    assert done["added"] == 1  # capped at 22
    assert_consistent(splats, optimizers, 22)


def test_relocation_formula() -> None:
    binoms = S.binomial_table()
    opacities = torch.tensor([0.5, 0.5, 0.9])
    scales = torch.ones(3, 3)
    new_opa, new_scales = S.compute_relocation(opacities, scales, torch.tensor([1, 2, 3]), binoms)
    torch.testing.assert_close(new_opa, torch.tensor([0.5, 1 - 0.5 ** 0.5, 1 - 0.1 ** (1 / 3)]))
    torch.testing.assert_close(new_scales[0], torch.ones(3))  # one copy: unchanged
    # N=2: o / (o' + o' - o'^2 / sqrt 2) by the paper's sum
    o2 = 1 - 0.5 ** 0.5
    assert new_scales[1, 0].item() == pytest.approx(0.5 / (2 * o2 - o2 ** 2 / math.sqrt(2)), rel=1e-5)
