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

The inner step is courant · h / max_velocity with courant 1 at speed 5: twice jax-cfd's
step as SDA sets it (CFL 0.5). It is not larger because stability, not accuracy, bounds it:
at 256² courant 1.5 blew up within 9 time units while 1.25 held for 10, and the
time-stepping error is far below the grid's (see docs/kolmogorov.md, The solver).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


# On the CPU a batch is stepped in chunks of at most this many grid points (trajectories × N²): the
# workspace then stays in cache. Measured in simulated time per second per trajectory, chunks of
# 2^14 / 2^16 / 2^18 points: 64² batch 64: 123 / 131 / 76; 128² batch 16: 16.0 / 15.9 / 7.7;
# 256² batch 8: 1.64 / 1.81 / 1.68.
CPU_CHUNK_POINTS = 64 * 64 * 16


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
        self._band_setup()

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
    # The state is stepped as the deviation d = ω̂ − ω̂* restricted to the rfft columns ky ≤ N/3: every
    # other column lies outside the 2/3 band, where the nonlinear term is zero, so it only decays by
    # exp(L t) and is advanced once per `advance` instead of at every stage, and the transforms along x
    # skip those columns. Each RK stage then costs inverse transforms of u and v and forward transforms
    # of uv and u² − v² (the plain advective form needs four fields back and one forward).

    def _band_setup(self) -> None:
        band = self.size // 3 + 1
        complex_dtype = self.laminar_hat.dtype
        mask = self.dealias[:, :band]
        kx, ky, inv_k2 = self.kx, self.ky[:, :band], self.inv_k2[:, :band]
        # multipliers from ω̂ to (û, v̂), dealiased, stacked along a field axis
        fields = torch.stack(torch.broadcast_tensors(1j * ky * inv_k2, -1j * kx * inv_k2))
        self._band = band
        self._to_fields = (fields * mask).mT.to(complex_dtype).contiguous()
        self._laminar_band = self.laminar_hat[:, :band].mT.contiguous()
        self._laminar_fields = self._laminar_band * self._to_fields
        # u·∇ω = ∂x∂y(u² − v²) + (∂x² − ∂y²)(uv) for a divergence-free u: two products of two fields
        # instead of the advective form's four fields, the same values to rounding under the 2/3 rule
        self._from_uv = (ky**2 - kx**2).mT.to(complex_dtype).contiguous()
        self._from_squares = (kx * ky).mT.to(complex_dtype).contiguous()
        self._coefficients: dict[float, tuple[Tensor, ...]] = {}
        self._buffers: dict[tuple, dict[str, Tensor]] = {}

    def _coefficients_for(self, dt: float) -> tuple[Tensor, ...]:
        """Integrating factors and RK4 weights for step dt, with the dealiasing and the sign of −u·∇ω
        folded in so that a stage is one fused multiply-add."""
        cached = self._coefficients.get(dt)
        if cached is None:
            band = self._band
            linear = self.linear[:, :band]
            half = torch.exp(linear * (dt / 2))
            full = half * half
            minus = -self.dealias[:, :band]
            weights = (half, full, dt / 2 * half * minus, dt / 2 * minus, dt * half * minus,
                       dt / 6 * full * minus, dt / 3 * half * minus, dt / 6 * minus)
            cached = tuple(w.mT.to(self._laminar_band.dtype).contiguous() for w in weights)
            if len(self._coefficients) > 8:
                self._coefficients.clear()
            self._coefficients[dt] = cached
        return cached

    def _workspace(self, d: Tensor) -> dict[str, Tensor]:
        """Buffers for one batch shape, reused by every stage: fresh allocations of this size cost page
        faults on each call, which at 256² took about as long as the transforms."""
        key = (tuple(d.shape[:-2]), d.dtype, d.device)
        space = self._buffers.get(key)
        if space is None:
            n, band, lead = self.size, self._band, d.shape[:-2]
            real = self.dealias.dtype
            new = lambda *shape, dtype=d.dtype: torch.empty(*lead, *shape, dtype=dtype, device=d.device)  # noqa: E731
            space = {"spectra": new(2, band, n), "products": new(2, n, n, dtype=real),
                     "stage": new(band, n), "decayed": new(band, n),
                     "n1": new(band, n), "n2": new(band, n), "n3": new(band, n), "n4": new(band, n),
                     "even": new(band, n), "odd": new(band, n),
                     # columns beyond the band stay zero, so the c2r transform needs no padding per call
                     "fields": torch.zeros(*lead, 2, n, n // 2 + 1, dtype=d.dtype, device=d.device)}
            self._buffers.clear()  # one batch shape at a time: a data run uses one or two
            self._buffers[key] = space
        return space

    def _advection(self, d: Tensor, space: dict[str, Tensor], out: Tensor) -> Tensor:
        """(u·∇ω)^ of ω̂ = d + ω̂*, band columns only, ky-major: d (..., band, N) -> out (..., band, N)."""
        n, band = self.size, self._band
        spectra, fields, products = space["spectra"], space["fields"], space["products"]
        torch.addcmul(self._laminar_fields, d.unsqueeze(-3), self._to_fields, out=spectra)
        fields[..., :band] = torch.fft.ifft(spectra, dim=-1).mT
        # no out= on the transforms: torch computes them into a temporary and copies it over
        u, v = torch.fft.irfft(fields, n=n, dim=-1).unbind(-3)
        uv, squares = products.unbind(-3)
        torch.mul(u, v, out=uv)
        torch.mul(u, u, out=squares).addcmul_(v, v, value=-1)
        uv_hat, squares_hat = torch.fft.fft(torch.fft.rfft(products, dim=-1)[..., :band].mT, dim=-1).unbind(-3)
        return torch.mul(uv_hat, self._from_uv, out=out).addcmul_(squares_hat, self._from_squares)

    def _step_band(self, d: Tensor, dt: float) -> Tensor:
        """One IF-RK4 (Lawson) step of the band deviation d; the result lives in the workspace."""
        half, full, c_half, c_mid, c_full, b1, b23, b4 = self._coefficients_for(dt)
        space = self._workspace(d)
        stage, decayed = space["stage"], space["decayed"]
        n1 = self._advection(d, space, space["n1"])
        torch.mul(half, d, out=decayed)
        n2 = self._advection(torch.addcmul(decayed, c_half, n1, out=stage), space, space["n2"])
        n3 = self._advection(torch.addcmul(decayed, c_mid, n2, out=stage), space, space["n3"])
        decayed.mul_(half)
        n4 = self._advection(torch.addcmul(decayed, c_full, n3, out=stage), space, space["n4"])
        out = space["odd"] if d is space["even"] else space["even"]
        return torch.addcmul(decayed, b1, n1, out=out).addcmul_(b23, n2.add_(n3)).addcmul_(b4, n4)

    def advance_hat(self, w_hat: Tensor, dt: float, steps: int) -> Tensor:
        """`steps` IF-RK4 steps of length dt of ω̂ (B, X, Y//2+1)."""
        band = self._band
        d = (w_hat[..., :band].mT - self._laminar_band).contiguous()
        for _ in range(steps):
            d = self._step_band(d, dt)
        rest = w_hat[..., band:] * torch.exp(self.linear[:, band:] * (dt * steps))
        return torch.cat(((d + self._laminar_band).mT, rest), dim=-1)

    def step_hat(self, w_hat: Tensor, dt: float) -> Tensor:
        """One IF-RK4 step of ω̂ (B, X, Y//2+1)."""
        return self.advance_hat(w_hat, dt, 1)

    def substeps(self, dt: float) -> int:
        return max(1, math.ceil(dt / self.dt_max - 1e-9))

    def advance(self, w: Tensor, dt: float) -> Tensor:
        """Integrate vorticity (B, X, Y) over a time `dt`, in equal substeps no longer than dt_max."""
        steps = self.substeps(dt)
        n = self.size
        chunk = w.shape[0] if w.device.type != "cpu" or w.dim() < 3 else max(1, CPU_CHUNK_POINTS // w[0].numel())
        parts = [torch.fft.irfft2(self.advance_hat(torch.fft.rfft2(part), dt / steps, steps), s=(n, n))
                 for part in (w.split(chunk) if w.dim() >= 3 else [w])]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

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
