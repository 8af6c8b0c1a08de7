"""A pseudo-spectral solver of 2D Kolmogorov flow, batched over trajectories (torch).

The incompressible Navier–Stokes equations on the periodic square [0, 2π)² in
vorticity form, with the forcing and linear drag of SDA's experiment
(jax-cfd's `simple_turbulence_forcing(kolmogorov, k=4, linear_coefficient=-0.1)`):

    ∂ω/∂t + u·∇ω = ν Δω − α ω + curl f,      f = (sin(k y), 0),   ν = 1 / Re

Arrays follow jax-cfd and SDA: a velocity field is (..., 2, X, Y) with channel 0
the x-velocity u and channel 1 the y-velocity v, grid points at cell centres
((i + ½) h, (j + ½) h), so the forcing varies along the last axis.

Time stepping is integrating-factor RK4 (Lawson) on the deviation from the
laminar state ω* (the steady solution of the linear part with the forcing):
viscosity and drag are integrated exactly, the nonlinear term is dealiased with
the 2/3 rule, and ω* stays a fixed point to rounding because u*·∇ω* = 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class KolmogorovFlow:
    """Batched solver on an N×N grid.

    Args:
        size: grid points per side.
        reynolds: Re; the viscosity is 1 / Re.
        drag: linear drag coefficient α (jax-cfd's linear_coefficient is −α).
        wavenumber: forcing wavenumber k.
        amplitude: forcing amplitude.
        max_velocity, courant: the fixed inner time step is courant * h / max_velocity (as SDA does with jax-cfd).
        dtype: float32 for data generation, float64 for validation.
    """

    def __init__(self, size: int, reynolds: float = 1000.0, drag: float = 0.1, wavenumber: int = 4,
                 amplitude: float = 1.0, max_velocity: float = 5.0, courant: float = 1.0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        self.size = size
        self.viscosity = 1.0 / reynolds
        self.drag = drag
        self.h = 2 * math.pi / size
        self.dt_max = courant * self.h / max_velocity
        self.dtype = dtype
        self.device = torch.device(device)
        # rfft2 over (X, Y): kx runs along the first axis, ky along the halved last one.
        kx = torch.fft.fftfreq(size, 1.0 / size, dtype=dtype, device=self.device)[:, None]
        ky = torch.fft.rfftfreq(size, 1.0 / size, dtype=dtype, device=self.device)[None, :]
        self.kx, self.ky = kx, ky
        self.k2 = kx**2 + ky**2
        self.inv_k2 = torch.where(self.k2 > 0, 1.0 / self.k2.clamp_min(1e-12), torch.zeros_like(self.k2))
        cutoff = size // 3  # 2/3 rule on integer wavenumbers
        self.dealias = ((kx.abs() <= cutoff) & (ky.abs() <= cutoff)).to(dtype)
        self.linear = -self.viscosity * self.k2 - drag

        y = self.coordinates()
        force_x = amplitude * torch.sin(wavenumber * y)[None, :].expand(size, size)
        curl_f = -1j * self.ky * torch.fft.rfft2(force_x)
        self.laminar_hat = torch.where(self.linear != 0, -curl_f / self.linear, torch.zeros_like(curl_f))

    def coordinates(self) -> Tensor:
        """Cell-centre coordinates along one axis, (N,)."""
        return self.h * (torch.arange(self.size, dtype=self.dtype, device=self.device) + 0.5)

    # ------------------------------------------------------------------ fields

    def velocity_hat(self, w_hat: Tensor) -> tuple[Tensor, Tensor]:
        """(û, v̂) from ω̂ through the streamfunction ψ̂ = ω̂ / |k|² (u = ∂ψ/∂y, v = −∂ψ/∂x)."""
        psi = w_hat * self.inv_k2
        return 1j * self.ky * psi, -1j * self.kx * psi

    def velocity(self, w: Tensor) -> Tensor:
        """(..., X, Y) vorticity -> (..., 2, X, Y) divergence-free velocity with zero mean."""
        u_hat, v_hat = self.velocity_hat(torch.fft.rfft2(w))
        n = (self.size, self.size)
        return torch.stack((torch.fft.irfft2(u_hat, s=n), torch.fft.irfft2(v_hat, s=n)), dim=-3)

    def laminar(self) -> Tensor:
        """The steady laminar vorticity ω* (X, Y), stable at low Reynolds number."""
        return torch.fft.irfft2(self.laminar_hat, s=(self.size, self.size))

    def random_vorticity(self, batch: int, generator: torch.Generator | None = None, max_velocity: float = 3.0,
                         peak_wavenumber: float = 4.0) -> Tensor:
        """Random initial states like jax-cfd's `filtered_velocity_field`: noise filtered to a
        band around `peak_wavenumber`, scaled so that the largest speed is `max_velocity`. (B, X, Y)."""
        noise = torch.randn(batch, self.size, self.size, generator=generator, dtype=self.dtype).to(self.device)
        k = self.k2.sqrt()
        band = (k / peak_wavenumber) ** 4 * torch.exp(-2 * (k / peak_wavenumber) ** 2)  # energy peaks at k0
        w_hat = torch.fft.rfft2(noise) * band.sqrt() * self.dealias
        w = torch.fft.irfft2(w_hat, s=(self.size, self.size))
        speed = self.velocity(w).square().sum(dim=-3).sqrt().amax(dim=(-2, -1))
        return w * (max_velocity / speed)[:, None, None]

    # ------------------------------------------------------------------ time stepping

    def nonlinear(self, w_hat: Tensor) -> Tensor:
        """−(u·∇ω)^ with 2/3 dealiasing, for full-vorticity spectra (B, X, Y//2+1)."""
        w_hat = w_hat * self.dealias
        n = (self.size, self.size)
        u_hat, v_hat = self.velocity_hat(w_hat)
        u, v = torch.fft.irfft2(u_hat, s=n), torch.fft.irfft2(v_hat, s=n)
        wx, wy = torch.fft.irfft2(1j * self.kx * w_hat, s=n), torch.fft.irfft2(1j * self.ky * w_hat, s=n)
        return -torch.fft.rfft2(u * wx + v * wy) * self.dealias

    def step_hat(self, w_hat: Tensor, dt: float) -> Tensor:
        """One IF-RK4 step of ω̂ (B, X, Y//2+1)."""
        full = lambda d: self.nonlinear(d + self.laminar_hat)  # noqa: E731
        d = w_hat - self.laminar_hat
        e_half = torch.exp(self.linear * (dt / 2))
        e_full = e_half * e_half
        k1 = full(d)
        k2 = full(e_half * (d + dt / 2 * k1))
        k3 = full(e_half * d + dt / 2 * k2)
        k4 = full(e_full * d + dt * e_half * k3)
        d = e_full * d + dt / 6 * (e_full * k1 + 2 * e_half * (k2 + k3) + k4)
        return d + self.laminar_hat

    def substeps(self, dt: float) -> int:
        return max(1, math.ceil(dt / self.dt_max - 1e-9))

    def advance(self, w: Tensor, dt: float) -> Tensor:
        """Integrate vorticity (B, X, Y) over a time `dt`, in equal substeps no longer than dt_max."""
        steps = self.substeps(dt)
        w_hat = torch.fft.rfft2(w)
        for _ in range(steps):
            w_hat = self.step_hat(w_hat, dt / steps)
        return torch.fft.irfft2(w_hat, s=(self.size, self.size))

    def trajectory(self, w: Tensor, length: int, dt: float) -> Tensor:
        """`length` states spaced by `dt`, starting with `w`: vorticity (B, length, X, Y)."""
        states = [w]
        for _ in range(length - 1):
            w = self.advance(w, dt)
            states.append(w)
        return torch.stack(states, dim=1)


def _wavenumbers(n: int, like: Tensor) -> tuple[Tensor, Tensor]:
    real = like.real.dtype if like.is_complex() else like.dtype
    kx = torch.fft.fftfreq(n, 1.0 / n, dtype=real, device=like.device)[:, None]
    ky = torch.fft.rfftfreq(n, 1.0 / n, dtype=real, device=like.device)[None, :]
    return kx, ky


def vorticity(uv: Tensor) -> Tensor:
    """(..., 2, N, N) velocity on [0, 2π)² -> (..., N, N) vorticity ∂v/∂x − ∂u/∂y (spectral)."""
    n = uv.shape[-1]
    kx, ky = _wavenumbers(n, uv)
    u_hat, v_hat = torch.fft.rfft2(uv[..., 0, :, :]), torch.fft.rfft2(uv[..., 1, :, :])
    return torch.fft.irfft2(1j * kx * v_hat - 1j * ky * u_hat, s=(n, n))


def divergence(uv: Tensor) -> Tensor:
    """(..., 2, N, N) velocity -> (..., N, N) divergence ∂u/∂x + ∂v/∂y (spectral)."""
    n = uv.shape[-1]
    kx, ky = _wavenumbers(n, uv)
    u_hat, v_hat = torch.fft.rfft2(uv[..., 0, :, :]), torch.fft.rfft2(uv[..., 1, :, :])
    return torch.fft.irfft2(1j * kx * u_hat + 1j * ky * v_hat, s=(n, n))


def energy(uv: Tensor) -> Tensor:
    """Mean kinetic energy ½⟨u² + v²⟩ of (..., 2, X, Y) fields -> (...)."""
    return 0.5 * uv.square().sum(dim=-3).mean(dim=(-2, -1))


def coarsen(x: Tensor, factor: int) -> Tensor:
    """Block mean over factor×factor cells of (..., X, Y)."""
    if factor == 1:
        return x
    *lead, n, m = x.shape
    return x.reshape(*lead, n // factor, factor, m // factor, factor).mean(dim=(-3, -1))


def energy_spectrum(uv: Tensor) -> Tensor:
    """Shell-summed energy spectrum E(k), k = 0..N/2, of (..., 2, N, N) fields, averaged over leading dims."""
    n = uv.shape[-1]
    uv_hat = torch.fft.fft2(uv) / n**2
    density = 0.5 * uv_hat.abs().square().sum(dim=-3).reshape(-1, n, n).mean(dim=0)
    k = torch.fft.fftfreq(n, 1.0 / n)
    shell = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).round().long()
    spectrum = torch.zeros(shell.max() + 1, dtype=density.dtype).index_add_(0, shell.flatten(), density.flatten())
    return spectrum[: n // 2 + 1]
