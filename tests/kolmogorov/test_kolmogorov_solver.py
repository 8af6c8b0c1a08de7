"""The pseudo-spectral solver against what Kolmogorov flow must do."""

import math

import pytest
import torch

from runforge.trainers.kolmogorov.solver import KolmogorovFlow, coarsen, divergence, energy, energy_spectrum, vorticity

torch.set_num_threads(1)


def test_velocity_is_divergence_free_and_roundtrips_vorticity():
    flow = KolmogorovFlow(32, reynolds=1000, dtype=torch.float64)
    w = flow.random_vorticity(3, torch.Generator().manual_seed(0))
    w = flow.advance(w, 0.4)  # turbulent-ish state after nonlinear steps
    uv = flow.velocity(w)
    assert uv.shape == (3, 2, 32, 32)
    assert divergence(uv).abs().max() < 1e-10 * uv.abs().max()
    w_back = vorticity(uv)
    assert torch.allclose(w_back, w - w.mean(dim=(-2, -1), keepdim=True), atol=1e-9)


def test_random_initial_state_has_the_requested_max_speed():
    flow = KolmogorovFlow(32)
    uv = flow.velocity(flow.random_vorticity(4, torch.Generator().manual_seed(1), max_velocity=3.0))
    speed = uv.square().sum(dim=1).sqrt().amax(dim=(-2, -1))
    assert torch.allclose(speed, torch.full((4,), 3.0), rtol=1e-4)


def test_laminar_state_is_the_analytic_fixed_point_at_low_reynolds():
    re, alpha, k = 10.0, 0.1, 4
    flow = KolmogorovFlow(32, reynolds=re, drag=alpha, wavenumber=k, dtype=torch.float64)
    y = flow.coordinates()
    expected = -k * torch.cos(k * y) / (k**2 / re + alpha)  # ν Δω − α ω − k cos(ky) = 0
    laminar = flow.laminar()
    assert torch.allclose(laminar, expected[None, :].expand(32, 32), atol=1e-10)
    after = flow.advance(laminar[None], 5.0)
    assert (after[0] - laminar).abs().max() < 1e-10
    # and it is stable: a perturbation decays
    noise = 0.5 * flow.random_vorticity(1, torch.Generator().manual_seed(2), max_velocity=1.0)
    start = (noise[0]).abs().max()
    later = flow.advance(laminar[None] + noise, 10.0)[0] - laminar
    assert later.abs().max() < 0.05 * start


def test_nonlinear_term_conserves_energy_and_enstrophy_without_viscosity_drag_or_forcing():
    flow = KolmogorovFlow(32, reynolds=math.inf, drag=0.0, amplitude=0.0, dtype=torch.float64)
    w = flow.random_vorticity(2, torch.Generator().manual_seed(3), max_velocity=1.0)
    w = torch.fft.irfft2(torch.fft.rfft2(w) * flow.dealias, s=(32, 32))  # start inside the resolved band
    e0, z0 = energy(flow.velocity(w)), w.square().mean(dim=(-2, -1))
    w1 = flow.advance(w, 1.0)
    e1, z1 = energy(flow.velocity(w1)), w1.square().mean(dim=(-2, -1))
    assert (w1 - w).abs().max() > 0.1 * w.abs().max()  # the flow did evolve
    assert torch.allclose(e1, e0, rtol=1e-6)
    assert torch.allclose(z1, z0, rtol=1e-4)


def test_single_mode_decays_at_the_exact_rate():
    re, alpha, t = 50.0, 0.1, 2.0
    flow = KolmogorovFlow(32, reynolds=re, drag=alpha, amplitude=0.0, dtype=torch.float64)
    x = flow.coordinates()
    w = torch.cos(x[:, None] + 2 * x[None, :])[None]  # an eigenmode: u·∇ω = 0
    e0 = energy(flow.velocity(w))
    e1 = energy(flow.velocity(flow.advance(w, t)))
    rate = 5 / re + alpha  # ν |k|² + α with |k|² = 5
    assert torch.allclose(e1 / e0, torch.tensor(math.exp(-2 * rate * t), dtype=torch.float64), rtol=1e-9)


def test_forced_flow_leaves_the_laminar_state_at_high_reynolds_and_stays_bounded():
    flow = KolmogorovFlow(32, reynolds=1000)
    w = flow.random_vorticity(2, torch.Generator().manual_seed(4))
    traj = flow.trajectory(w, 10, 0.5)
    uv = flow.velocity(traj)
    assert torch.isfinite(uv).all()
    e = energy(uv)
    assert (e > 0.05).all() and (e < 20).all()
    # not the laminar shear flow: the velocity varies along x
    assert uv[:, -1].std(dim=-2).mean() > 0.05


def test_energy_spectrum_sums_to_the_energy_and_coarsen_keeps_the_mean():
    flow = KolmogorovFlow(32, dtype=torch.float64)
    uv = flow.velocity(flow.random_vorticity(2, torch.Generator().manual_seed(5)))
    spectrum = energy_spectrum(uv)
    assert spectrum.shape == (17,)
    assert spectrum[1:8].sum() > 0.9 * spectrum.sum()  # energy sits near the peak wavenumber 4
    assert torch.allclose(spectrum.sum(), energy(uv).mean(), rtol=1e-3)
    small = coarsen(uv, 4)
    assert small.shape == (2, 2, 8, 8)
    assert torch.allclose(small.mean(dim=(-2, -1)), uv.mean(dim=(-2, -1)), atol=1e-12)


@pytest.mark.parametrize("dt", [0.2, 1.0])
def test_substeps_respect_the_cfl_limit(dt):
    flow = KolmogorovFlow(64)
    steps = flow.substeps(dt)
    assert dt / steps <= flow.dt_max + 1e-12 and dt / (steps - 1 if steps > 1 else 0.5) > flow.dt_max - 1e-12


def _plain_if_rk4(flow: KolmogorovFlow, w: torch.Tensor, dt: float, steps: int) -> torch.Tensor:
    """The textbook scheme, unfused: advective form on the full rfft spectrum, dealiased, Lawson RK4."""
    n = flow.size

    def advection(d):
        w_hat = (d + flow.laminar_hat) * flow.dealias
        psi = w_hat * flow.inv_k2
        u, v = torch.fft.irfft2(1j * flow.ky * psi, s=(n, n)), torch.fft.irfft2(-1j * flow.kx * psi, s=(n, n))
        wx, wy = torch.fft.irfft2(1j * flow.kx * w_hat, s=(n, n)), torch.fft.irfft2(1j * flow.ky * w_hat, s=(n, n))
        return -torch.fft.rfft2(u * wx + v * wy) * flow.dealias

    half = torch.exp(flow.linear * dt / 2)
    d = torch.fft.rfft2(w) - flow.laminar_hat
    for _ in range(steps):
        k1 = advection(d)
        k2 = advection(half * (d + dt / 2 * k1))
        k3 = advection(half * d + dt / 2 * k2)
        k4 = advection(half**2 * d + dt * half * k3)
        d = half**2 * d + dt / 6 * (half**2 * k1 + 2 * half * (k2 + k3) + k4)
    return torch.fft.irfft2(d + flow.laminar_hat, s=(n, n))


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_fused_step_matches_the_plain_scheme_also_outside_the_dealiased_band(backend):
    # the fused step transforms z = u + iv and z², folds the coefficients and steps only the band modes;
    # out-of-band modes (here from added noise) must still decay exactly as the plain scheme's
    flow = KolmogorovFlow(32, reynolds=1000, dtype=torch.float64, backend=backend)
    assert flow.backend == backend
    w = flow.random_vorticity(2, torch.Generator().manual_seed(6))
    w = w + 0.05 * torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    steps = flow.substeps(0.5)
    expected = _plain_if_rk4(flow, w, 0.5 / steps, steps)
    assert (expected - w).abs().max() > 0.1 * w.abs().max()
    assert torch.allclose(flow.advance(w, 0.5), expected, rtol=0, atol=1e-11 * expected.abs().max())


def test_batches_split_into_cpu_chunks_give_the_same_trajectories(monkeypatch):
    from runforge.trainers.kolmogorov import solver

    flow = KolmogorovFlow(16, dtype=torch.float64)
    w = flow.random_vorticity(5, torch.Generator().manual_seed(8))
    whole = flow.advance(w, 0.4)
    monkeypatch.setattr(solver, "CPU_CHUNK_POINTS", 2 * 16 * 16)  # chunks of 2, 2 and 1 trajectories
    chunked = flow.advance(w, 0.4)
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-12)
    assert torch.allclose(flow.advance(w[:1], 0.4), whole[:1], rtol=0, atol=1e-12)


def test_data_generation_steps_with_the_numba_kernel_on_the_cpu(monkeypatch):
    from runforge.trainers.kolmogorov import data, kernels
    from runforge.trainers.kolmogorov.config import data_preset

    stages = []
    kernel = kernels.ifrk4_stage
    monkeypatch.setattr(kernels, "ifrk4_stage", lambda *args: stages.append(args[6]) or kernel(*args))
    cfg = data_preset("tiny")
    cfg.device = "cpu"
    uv = data.simulate(cfg, log=lambda _: None)
    assert uv.shape == (10, 12, 2, 16, 16) and torch.isfinite(uv).all()
    steps = KolmogorovFlow(32).substeps(cfg.dt) * (cfg.burn_in + cfg.length - 1)
    assert stages == [0, 1, 2, 3] * steps


def test_batch_shapes_give_the_same_trajectories():
    flow = KolmogorovFlow(16, dtype=torch.float64)
    w = flow.random_vorticity(6, torch.Generator().manual_seed(9)).reshape(2, 3, 16, 16)
    grouped = flow.advance(w, 0.3)
    assert grouped.shape == (2, 3, 16, 16)
    assert torch.allclose(grouped.reshape(6, 16, 16), flow.advance(w.reshape(6, 16, 16), 0.3), rtol=0, atol=1e-12)
    assert torch.allclose(flow.advance(w[1, 2], 0.3), grouped[1, 2], rtol=0, atol=1e-12)


def test_unknown_backend_is_refused_by_name():
    with pytest.raises(ValueError, match="backend 'jax': expected one of auto, numba, torch"):
        KolmogorovFlow(16, backend="jax")
