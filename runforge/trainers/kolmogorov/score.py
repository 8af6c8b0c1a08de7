"""The score network, the variance-preserving SDE and posterior sampling (SDA, Rozet & Louppe 2023).

    kernel = LocalScoreUNet(window)          ε(x_window, t): a U-Net over a window of states (circular padding,
                                             plus a channel holding the Kolmogorov forcing sin(4y))
    score = MarkovScore(kernel, order)       ε over a whole trajectory, assembled by sliding the window
    sde = VPSDE(kernel, shape)               cosine schedule; sde.loss(x) is the ε-prediction MSE at t ~ U(0, 1)
    posterior = GaussianPosterior(y, A, std, sde_of_trajectories)   ε of p(x | y) for y = A(x) + noise
    sde.sample(...)                          predictor-corrector (exponential-integrator predictor, Langevin corrector)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

ACTIVATIONS = {"SiLU": nn.SiLU, "ReLU": nn.ReLU, "ELU": nn.ELU, "GELU": nn.GELU}
EpsFn = Callable[[Tensor, Tensor], Tensor]
ETA = 1e-3


def cosine_mu(t: Tensor, eta: float = ETA) -> Tensor:
    """μ(t) = cos(acos(√η) t)²: 1 at t = 0, η at t = 1."""
    return torch.cos(math.acos(math.sqrt(eta)) * t) ** 2


def cosine_sigma(t: Tensor, eta: float = ETA) -> Tensor:
    """σ(t) = √(1 − μ(t)² + η²)."""
    return (1 - cosine_mu(t, eta) ** 2 + eta**2).sqrt()


class TimeEmbedding(nn.Module):
    """Fourier features of t ∈ [0, 1] followed by an MLP."""

    def __init__(self, features: int, frequencies: int = 16) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, frequencies + 1, dtype=torch.float32))
        self.mlp = nn.Sequential(nn.Linear(2 * frequencies, 256), nn.SiLU(), nn.Linear(256, features))

    def forward(self, t: Tensor) -> Tensor:
        angles = self.freqs * t.unsqueeze(-1)
        return self.mlp(torch.cat((angles.cos(), angles.sin()), dim=-1))


class ChannelNorm(nn.Module):
    """Normalise each pixel over its channels (a LayerNorm that is independent of the grid size)."""

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return (x - mean) / (var + 1e-5).sqrt()


class ModulatedBlock(nn.Module):
    """x + F(x + P(embedding)): a residual block whose input is shifted by the time embedding."""

    def __init__(self, channels: int, embedding: int, kernel_size: int, activation: type[nn.Module]) -> None:
        super().__init__()
        conv = dict(kernel_size=kernel_size, padding=kernel_size // 2, padding_mode="circular")
        self.project = nn.Linear(embedding, channels)
        self.residue = nn.Sequential(ChannelNorm(), nn.Conv2d(channels, channels, **conv), activation(),
                                     nn.Conv2d(channels, channels, **conv))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return x + self.residue(x + self.project(emb)[:, :, None, None])


class UNet(nn.Module):
    """A U-Net on periodic fields: strided convolutions down, nearest upsampling up, skip concatenations."""

    def __init__(self, in_channels: int, out_channels: int, embedding: int, hidden_channels: Sequence[int],
                 hidden_blocks: Sequence[int], kernel_size: int = 3, activation: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        conv = dict(kernel_size=kernel_size, padding=kernel_size // 2, padding_mode="circular")
        self.enter = nn.ModuleList()
        self.down = nn.ModuleList()
        self.merge = nn.ModuleList()
        self.up = nn.ModuleList()
        for i, (channels, blocks) in enumerate(zip(hidden_channels, hidden_blocks)):
            if i == 0:
                self.enter.append(nn.Conv2d(in_channels, channels, **conv))
            else:
                self.enter.append(nn.Sequential(nn.Conv2d(hidden_channels[i - 1], channels, stride=2, **conv),
                                                activation()))
            self.down.append(nn.ModuleList(ModulatedBlock(channels, embedding, kernel_size, activation)
                                           for _ in range(blocks)))
            deeper = hidden_channels[i + 1] if i + 1 < len(hidden_channels) else 0
            self.merge.append(nn.Conv2d(channels + deeper, channels, **conv) if deeper else nn.Identity())
            self.up.append(nn.ModuleList(ModulatedBlock(channels, embedding, kernel_size, activation)
                                         for _ in range(blocks)))
        self.exit = nn.Conv2d(hidden_channels[0], out_channels, kernel_size=1)
        self.levels = len(hidden_channels)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        skips = []
        for enter, blocks in zip(self.enter, self.down):
            x = enter(x)
            for block in blocks:
                x = block(x, emb)
            skips.append(x)
        x = None
        for i in reversed(range(self.levels)):
            skip = skips[i]
            if x is not None:  # from the level below: normalise, upsample, concatenate
                x = nn.functional.interpolate(ChannelNorm()(x), size=skip.shape[-2:], mode="nearest")
                x = self.merge[i](torch.cat((skip, x), dim=1))
            else:
                x = skip
            for block in self.up[i]:
                x = block(x, emb)
        return self.exit(x)


def forcing_channel(size: int, wavenumber: int = 4, device: Any = None, dtype: Any = None) -> Tensor:
    """sin(k y) at the cell centres of an N×N grid on [0, 2π)², varying along the last axis: (1, N, N)."""
    y = 2 * math.pi / size * (torch.arange(size, device=device, dtype=dtype) + 0.5)
    return torch.sin(wavenumber * y).expand(1, size, size)


class LocalScoreUNet(nn.Module):
    """ε(x, t) for a window of `window` velocity states flattened to (B, window * 2, H, W).

    The U-Net predicts a residual over σ(t) x, the ε of unit-variance Gaussian data, scaled by μ(t):
    near t = 1 (μ = η) the prediction is then x/σ to rounding, where a plain U-Net's small errors
    are amplified ~1/μ by the first reverse steps and make short CPU trainings diverge when sampling.
    """

    def __init__(self, window: int = 5, embedding: int = 64, hidden_channels: Sequence[int] = (96, 192, 384),
                 hidden_blocks: Sequence[int] = (3, 3, 3), kernel_size: int = 3, activation: str = "SiLU") -> None:
        super().__init__()
        self.channels = window * 2
        self.embedding = TimeEmbedding(embedding)
        self.network = UNet(self.channels + 1, self.channels, embedding, hidden_channels, hidden_blocks,
                            kernel_size, ACTIVATIONS[activation])

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        f = forcing_channel(x.shape[-1], device=x.device, dtype=x.dtype).expand(x.shape[0], 1, *x.shape[-2:])
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t.reshape(-1)
        residual = self.network(torch.cat((x, f), dim=1), self.embedding(t))
        scale = t[:, None, None, None]
        return cosine_sigma(scale) * x + cosine_mu(scale) * residual


class MarkovScore(nn.Module):
    """ε over a trajectory (B, L, 2, H, W) from a local kernel over windows of 2k+1 states (SDA's MCScoreNet):
    the first and last windows give the first and last k states, every window gives its centre state."""

    def __init__(self, kernel: LocalScoreUNet, order: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.order = order

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        b, length = x.shape[:2]
        k = self.order
        windows = x.unfold(1, 2 * k + 1, 1).movedim(-1, 2)  # (B, L-2k, 2k+1, C, H, W)
        count = windows.shape[1]
        flat = windows.flatten(2, 3).flatten(0, 1)  # (B * (L-2k), (2k+1) * C, H, W)
        t = t if t.numel() == 1 else t.reshape(-1).repeat_interleave(count)
        eps = self.kernel(flat, t)
        eps = eps.unflatten(0, (b, count)).unflatten(2, (2 * k + 1, -1))  # (B, L-2k, 2k+1, C, H, W)
        return torch.cat((eps[:, 0, :k], eps[:, :, k], eps[:, -1, k + 1:]), dim=1)


def make_score(config: dict[str, Any]) -> MarkovScore:
    """The score network described by a config (a run's config.json)."""
    kernel = LocalScoreUNet(window=config["window"], embedding=config["embedding"],
                            hidden_channels=config["hidden_channels"], hidden_blocks=config["hidden_blocks"],
                            kernel_size=config["kernel_size"], activation=config["activation"])
    return MarkovScore(kernel, order=config["window"] // 2)


class VPSDE:
    """x(t) = μ(t) x + σ(t) ε with μ(t) = cos(acos(√η) t)², σ(t)² = 1 − μ(t)² + η² (SDA's cosine schedule)."""

    def __init__(self, eps: EpsFn, shape: Sequence[int], eta: float = ETA) -> None:
        self.eps = eps
        self.shape = tuple(shape)
        self.dims = tuple(range(-len(self.shape), 0))
        self.eta = eta

    def mu(self, t: Tensor) -> Tensor:
        return cosine_mu(t, self.eta)

    def sigma(self, t: Tensor) -> Tensor:
        return cosine_sigma(t, self.eta)

    def perturb(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = t.reshape(t.shape + (1,) * len(self.shape))
        noise = torch.randn_like(x)
        return self.mu(t) * x + self.sigma(t) * noise, noise

    def loss(self, x: Tensor) -> Tensor:
        """ε-prediction MSE at t ~ U(0, 1) (denoising score matching)."""
        t = torch.rand(x.shape[0], dtype=x.dtype, device=x.device)
        x_t, noise = self.perturb(x, t)
        return (self.eps(x_t, t) - noise).square().mean()

    def sample(self, batch: int, steps: int = 64, corrections: int = 0, tau: float = 1.0,
               device: Any = "cpu", progress: Callable[[int], None] | None = None) -> Tensor:
        """Reverse diffusion from N(0, I): exponential-integrator predictor + `corrections` Langevin steps."""
        x = torch.randn((batch,) + self.shape, device=device)
        time = torch.linspace(1, 0, steps + 1, device=device)
        dt = 1.0 / steps
        with torch.no_grad():
            for i, t in enumerate(time[:-1]):
                ratio = self.mu(t - dt) / self.mu(t)
                x = ratio * x + (self.sigma(t - dt) - ratio * self.sigma(t)) * self.eps(x, t)
                for _ in range(corrections):
                    score = -self.eps(x, t - dt) / self.sigma(t - dt)
                    delta = tau / score.square().mean(dim=self.dims, keepdim=True)
                    x = x + delta * score + torch.sqrt(2 * delta) * torch.randn_like(x)
                if progress is not None:
                    progress(i + 1)
        return x


class GaussianPosterior(nn.Module):
    """ε of the posterior p(x(t) | y) for y ~ N(A(x), std²): the prior ε minus σ(t) ∇ log p(y | x̂(x(t))),
    with x̂ the Tweedie estimate (x − σ ε) / μ and the likelihood variance widened by γ (σ/μ)² (SDA)."""

    def __init__(self, prior: VPSDE, y: Tensor, observe: Callable[[Tensor], Tensor], std: float,
                 gamma: float = 1e-2) -> None:
        super().__init__()
        self.prior = prior
        self.y = y
        self.observe = observe
        self.std = std
        self.gamma = gamma

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        mu, sigma = self.prior.mu(t), self.prior.sigma(t)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            eps = self.prior.eps(x, t)
            x0 = (x - sigma * eps) / mu
            err = self.y - self.observe(x0)
            var = self.std**2 + self.gamma * (sigma / mu) ** 2
            log_p = -(err.square() / var).sum() / 2
        (grad,) = torch.autograd.grad(log_p, x)
        return eps.detach() - sigma * grad
