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
