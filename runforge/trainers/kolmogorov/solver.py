"""A pseudo-spectral solver of 2D Kolmogorov flow, batched over trajectories (torch; on the CPU, numba).

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
the 2/3 rule, and ω* stays a fixed point to rounding because u*·∇ω* = 0. The transforms are torch's
(MKL on the CPU); the elementwise work of a stage between them is one numba kernel on the CPU
(kernels.py), where a dozen small torch ops would each pay torch's per-call cost.

The inner step is courant · h / max_velocity with courant 1 at speed 5: twice jax-cfd's
step as SDA sets it (CFL 0.5). It is not larger because stability, not accuracy, bounds it:
at 256² courant 1.5 blew up within 9 time units while 1.25 held for 10, and the
time-stepping error is far below the grid's (see docs/kolmogorov.md, The solver).
"""

from __future__ import annotations

import importlib
import importlib.util
import math

import torch
from torch import Tensor


# On the CPU a batch is stepped in chunks of at most this many grid points (trajectories × N²): the
# workspace then stays in cache. Measured in simulated time per second per trajectory, chunks of
# 2^14 / 2^16 / 2^18 points: 64² batch 64: 123 / 131 / 76; 128² batch 16: 16.0 / 15.9 / 7.7;
# 256² batch 8: 1.64 / 1.81 / 1.68.
CPU_CHUNK_POINTS = 64 * 64 * 16

BACKENDS = ("auto", "numba", "torch")


class KolmogorovFlow:
    """Batched solver on an N×N grid.

    Args:
        size: grid points per side.
        reynolds: Re; the viscosity is 1 / Re.
        drag: linear drag coefficient α (jax-cfd's linear_coefficient is −α).
        wavenumber: forcing wavenumber k.
        amplitude: forcing amplitude.
        max_velocity, courant: the fixed inner time step is courant * h / max_velocity (as SDA does with jax-cfd,
            which takes courant 0.5).
        dtype: float32 for data generation (as jax-cfd's default), float64 for validation.
        backend: what does the elementwise work of a time step between its FFTs: "numba" (one kernel per
            RK stage, CPU only), "torch" (torch ops, any device), "auto" (numba on the CPU when installed);
            `flow.backend` names the one in use. Both give the same trajectories to rounding.
    """

    def __init__(self, size: int, reynolds: float = 1000.0, drag: float = 0.1, wavenumber: int = 4,
                 amplitude: float = 1.0, max_velocity: float = 5.0, courant: float = 1.0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 backend: str = "auto") -> None:
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
        self._setup_stepping(backend)

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
    #
    # The state is the deviation d = ω̂ − ω̂* on the band: the rfft modes with |kx|, ky ≤ N/3, the only ones
    # the dealiased nonlinear term reaches (every other mode only decays by exp(L t), once per
    # `advance_hat`). An evaluation of the nonlinear term transforms one complex field back,
    # z = u + iv (its spectrum is K ω̂, K = (kx + i ky) / |k|²), and one forward, z² = u² − v² + 2i uv:
    # u·∇ω = ∂x∂y(u² − v²) + (∂x² − ∂y²)(uv) for a divergence-free u, and with y the transform of z²,
    # −(u·∇ω)^(k) = α y(k) + conj(α y(−k)) separates the two real products (docs/kolmogorov.md, The
    # solver). Two c2c transforms per stage; the elementwise rest of a stage is one numba kernel on the CPU
    # (kernels.py), a dozen torch ops elsewhere.

    def _setup_stepping(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if backend == "numba" and self.device.type != "cpu":
            raise ValueError(f"backend 'numba' runs on the CPU, not on {self.device}")
        n, cutoff = self.size, self.size // 3
        band = cutoff + 1
        rows = torch.cat((torch.arange(band), torch.arange(n - cutoff, n)))  # kx = 0..N/3, then −N/3..−1
        kx, ky = self.kx[rows.to(self.device)], self.ky[:, :band]
        k2 = kx**2 + ky**2
        k_per_w = (kx + 1j * ky) * torch.where(k2 > 0, 1.0 / k2.clamp_min(1e-12), torch.zeros_like(k2))
        alpha = -(kx * ky / 2 - 0.25j * (ky**2 - kx**2))
        self._band = band
        self._rows = rows.to(self.device)
        self._mirror_rows = ((n - rows) % n).to(self.device)
        self._cols = torch.arange(band, device=self.device)
        self._mirror_cols = (n - self._cols) % n
        self._laminar_band = self.laminar_hat[self._rows, :band]
        self._linear_band = self.linear[self._rows, :band]
        # per band mode: z's spectrum per unit ω̂, the laminar ω̂*, the nonlinear weight α
        self._band_coef = torch.stack((k_per_w.to(self._laminar_band.dtype), self._laminar_band,
                                       alpha.to(self._laminar_band.dtype)))
        self._coefficients: dict[float, Tensor] = {}
        use_numba = backend == "numba" or (backend == "auto" and self.device.type == "cpu"
                                           and importlib.util.find_spec("numba") is not None)
        self._kernels = importlib.import_module("runforge.trainers.kolmogorov.kernels") if use_numba else None
        self.backend = "numba" if use_numba else "torch"

    def _coefficients_for(self, dt: float) -> Tensor:
        """The integrating factor E = exp(L dt/2) and the RK4 weights of step dt (7, R, band), real."""
        cached = self._coefficients.get(dt)
        if cached is None:
            half = torch.exp(self._linear_band * (dt / 2))
            ones = torch.ones_like(half)
            cached = torch.stack((half, dt / 2 * half, dt / 2 * ones, dt * half, dt / 6 * half * half,
                                  dt / 3 * half, dt / 6 * ones))
            if len(self._coefficients) > 8:
                self._coefficients.clear()
            self._coefficients[dt] = cached
        return cached

    def _write_z_hat(self, z_hat: Tensor, w: Tensor) -> None:
        """z's spectrum from the band vorticity w (B, R, band): K ω̂ at the band modes, K(−k) conj(ω̂(k))
        = −K(k) conj(ω̂(k)) at their mirror images (column 0 holds both signs of kx itself)."""
        k_per_w = self._band_coef[0]
        z_hat[..., self._rows[:, None], self._cols] = w * k_per_w
        z_hat[..., self._mirror_rows[:, None], self._mirror_cols[1:]] = -(w[..., 1:].conj() * k_per_w[:, 1:])

    def _stage_torch(self, y: Tensor, stage: int, real: Tensor, state: Tensor, nl: Tensor, z_hat: Tensor) -> None:
        """kernels.ifrk4_stage with torch ops (the GPU path, and the CPU's without numba)."""
        d, decayed = state
        _, laminar, alpha = self._band_coef
        mirrored = torch.mul(alpha, y[..., self._mirror_rows[:, None], self._mirror_cols]).conj_physical_()
        v = torch.mul(alpha, y[..., self._rows[:, None], self._cols], out=nl[stage]).add_(mirrored)
        if stage == 0:
            s = torch.addcmul(torch.mul(real[0], d, out=decayed), real[1], v)
        elif stage == 1:
            s = torch.addcmul(decayed, real[2], v)
        elif stage == 2:
            s = torch.addcmul(decayed.mul_(real[0]), real[3], v)
        else:
            s = d.copy_(decayed.addcmul(real[4], nl[0]).addcmul_(real[5], nl[1] + nl[2]).addcmul_(real[6], v))
        self._write_z_hat(z_hat, s + laminar)

    def advance_hat(self, w_hat: Tensor, dt: float, steps: int) -> Tensor:
        """`steps` IF-RK4 steps of length dt of ω̂ (B, X, Y//2+1)."""
        rows, band = self._rows, self._band
        real = self._coefficients_for(dt)
        state = w_hat.new_empty((2, w_hat.shape[0], len(rows), band))  # d and its decayed copy
        torch.sub(w_hat[:, rows, :band], self._laminar_band, out=state[0])
        nl = w_hat.new_empty((4, *state.shape[1:]))  # the four stages' nonlinear terms
        z_hat = w_hat.new_zeros((w_hat.shape[0], self.size, self.size))
        self._write_z_hat(z_hat, state[0] + self._laminar_band)
        if self._kernels is None:
            def finish_stage(y: Tensor, stage: int) -> None:
                self._stage_torch(y, stage, real, state, nl, z_hat)
        else:
            floats = [torch.view_as_real(t).numpy() for t in (self._band_coef, state, nl, z_hat)]
            rows_numpy, real_numpy, kernel = self._rows.numpy(), real.numpy(), self._kernels.ifrk4_stage

            def finish_stage(y: Tensor, stage: int) -> None:
                kernel(torch.view_as_real(y).numpy(), rows_numpy, floats[0], real_numpy, floats[1], floats[2],
                       stage, floats[3])
        for _ in range(steps):
            for stage in range(4):
                z = torch.fft.ifft2(z_hat)
                finish_stage(torch.fft.fft2(z.mul_(z)), stage)
        out = w_hat * torch.exp(self.linear * (dt * steps))
        out[:, rows, :band] = state[0] + self._laminar_band
        return out

    def substeps(self, dt: float) -> int:
        return max(1, math.ceil(dt / self.dt_max - 1e-9))

    def advance(self, w: Tensor, dt: float) -> Tensor:
        """Integrate vorticity (..., X, Y) over a time `dt`, in equal substeps no longer than dt_max."""
        steps = self.substeps(dt)
        n = self.size
        flat = w.reshape(-1, n, n)
        chunk = flat.shape[0] if w.device.type != "cpu" else max(1, CPU_CHUNK_POINTS // (n * n))
        parts = [torch.fft.irfft2(self.advance_hat(torch.fft.rfft2(part), dt / steps, steps), s=(n, n))
                 for part in flat.split(chunk)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).reshape(w.shape)

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
