"""Densification strategies with gsplat's explicit hooks, in plain torch (CPU or GPU).

    strategy = DefaultStrategy(...)            # or MCMCStrategy(...)
    state = strategy.initialize_state(scene_scale)
    for step in ...:
        colors, alphas, info = render(...)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss.backward()
        optimizer steps ...
        strategy.step_post_backward(params, optimizers, state, step, info)   # (+ lr=... for mcmc)

Every change of the Gaussian set (clone, split, prune, relocate, add) goes through
`_update_params`, which rebuilds each parameter *and* its Adam state (exp_avg,
exp_avg_sq): rows that survive keep their moments, new rows start at zero (as
gsplat), so training continues seamlessly. Randomness comes from `state["rng"]`,
a generator seeded identically on every rank, and the statistics are summed over
ranks before a decision, so all ranks of a torchrun job change their Gaussians
the same way. Unlike gsplat 1.5.3, the opacity reset fires (every `reset_every`
steps) and MCMC relocation runs without CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .raster import covariances, quat_to_rotmat

Params = torch.nn.ParameterDict
Optimizers = dict[str, torch.optim.Optimizer]


def _update_params(params: Params, optimizers: Optimizers, param_fn: Callable[[str, Tensor], Tensor],
                   optimizer_fn: Callable[[str, Tensor], Tensor], names: list[str] | None = None) -> None:
    """Replace each parameter by `param_fn(name, old)` and each of its Adam moments by `optimizer_fn(key, old)`."""
    for name in names if names is not None else list(params.keys()):
        old = params[name]
        new = torch.nn.Parameter(param_fn(name, old.data), requires_grad=old.requires_grad)
        params[name] = new
        optimizer = optimizers[name]
        for group in optimizer.param_groups:
            if group["params"][0] is not old:
                continue
            state = optimizer.state.pop(old, None)
            group["params"] = [new]
            if state is not None:
                optimizer.state[new] = {k: (v if k == "step" or v.dim() == 0 else optimizer_fn(k, v))
                                        for k, v in state.items()}


def _update_state(state: dict[str, Any], fn: Callable[[Tensor], Tensor]) -> None:
    for key, value in state.items():
        if isinstance(value, Tensor) and value.dim() > 0 and key != "binoms":
            state[key] = fn(value)


@torch.no_grad()
def duplicate(params: Params, optimizers: Optimizers, state: dict[str, Any], mask: Tensor) -> None:
    """Clone the Gaussians in `mask` (appended at the end)."""
    sel = torch.nonzero(mask).squeeze(1)
    _update_params(params, optimizers, lambda _, p: torch.cat([p, p[sel]]),
                   lambda _, v: torch.cat([v, torch.zeros((len(sel), *v.shape[1:]), dtype=v.dtype, device=v.device)]))
    _update_state(state, lambda v: torch.cat([v, v[sel]]))


@torch.no_grad()
def split(params: Params, optimizers: Optimizers, state: dict[str, Any], mask: Tensor, revised_opacity: bool = False,
          generator: torch.Generator | None = None) -> None:
    """Replace each Gaussian in `mask` by two, sampled from it, 1.6x smaller (appended at the end)."""
    sel = torch.nonzero(mask).squeeze(1)
    rest = torch.nonzero(~mask).squeeze(1)
    scales = torch.exp(params["scales"][sel])
    rotmats = quat_to_rotmat(params["quats"][sel])
    noise = torch.randn((2, len(sel), 3), generator=generator, dtype=scales.dtype).to(scales.device)
    samples = torch.einsum("nij,nj,bnj->bni", rotmats, scales, noise)  # [2, S, 3]

    def param_fn(name: str, p: Tensor) -> Tensor:
        repeats = [2] + [1] * (p.dim() - 1)
        if name == "means":
            new = (p[sel] + samples).reshape(-1, 3)
        elif name == "scales":
            new = torch.log(scales / 1.6).repeat(2, 1)
        elif name == "opacities" and revised_opacity:
            new = torch.logit(1.0 - torch.sqrt(1.0 - torch.sigmoid(p[sel]))).repeat(2)
        else:
            new = p[sel].repeat(repeats)
        return torch.cat([p[rest], new])

    _update_params(params, optimizers, param_fn,
                   lambda _, v: torch.cat([v[rest], torch.zeros((2 * len(sel), *v.shape[1:]), dtype=v.dtype,
                                                                device=v.device)]))
    _update_state(state, lambda v: torch.cat([v[rest], v[sel].repeat([2] + [1] * (v.dim() - 1))]))


@torch.no_grad()
def remove(params: Params, optimizers: Optimizers, state: dict[str, Any], mask: Tensor) -> None:
    keep = torch.nonzero(~mask).squeeze(1)
    _update_params(params, optimizers, lambda _, p: p[keep], lambda _, v: v[keep])
    _update_state(state, lambda v: v[keep])


@torch.no_grad()
def reset_opa(params: Params, optimizers: Optimizers, state: dict[str, Any], value: float) -> None:
    """Clamp every opacity to at most `value`; the opacities' Adam moments restart."""
    cap = torch.logit(torch.tensor(value)).item()
    _update_params(params, optimizers, lambda _, p: p.clamp_max(cap), lambda _, v: torch.zeros_like(v), ["opacities"])


def binomial_table(n_max: int = 51) -> Tensor:
    table = torch.zeros(n_max, n_max)
    for n in range(n_max):
        for k in range(n + 1):
            table[n, k] = math.comb(n, k)
    return table


def compute_relocation(opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor) -> tuple[Tensor, Tensor]:
    """MCMC (Kheradmand et al. 2024, eq. 9): N copies of a Gaussian that together render like the original.

    opacity' = 1 - (1 - o)^(1/N);  scale' = o / (sum_{i=1..N} sum_{k<i} C(i-1,k) (-1)^k o'^(k+1) / sqrt(k+1)) * scale
    """
    n_max = binoms.shape[0]
    ratios = ratios.clamp(1, n_max).to(opacities.dtype)
    new_opacities = 1.0 - torch.pow(1.0 - opacities, 1.0 / ratios)
    k = torch.arange(n_max, dtype=opacities.dtype, device=opacities.device)
    i = torch.arange(1, n_max + 1, dtype=opacities.dtype, device=opacities.device)
    # terms[g, i-1, k] = C(i-1, k) (-1)^k o'^(k+1) / sqrt(k+1), for k < i <= N_g
    powers = new_opacities[:, None] ** (k + 1)[None]  # [G, K]
    terms = binoms.to(opacities)[None] * ((-1.0) ** k / torch.sqrt(k + 1))[None, None] * powers[:, None, :]
    valid = (k[None, None, :] < i[None, :, None]) & (i[None, :, None] <= ratios[:, None, None])
    denominator = (terms * valid).sum((1, 2))
    return new_opacities, (opacities / denominator)[:, None] * scales


def _sample(weights: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    return torch.multinomial(weights.float().cpu(), n, replacement=True, generator=generator).to(weights.device)


def _shared_by_donors(params: Params, opacities: Tensor, sampled: Tensor, binoms: Tensor,
                      min_opacity: float) -> Callable[[str, Tensor], Tensor]:
    """A copy of a parameter where each donor in `sampled` has the opacity and size it now shares (eq. 9)."""
    ratios = torch.bincount(sampled, minlength=len(opacities))[sampled] + 1
    new_opa, new_scales = compute_relocation(opacities[sampled], torch.exp(params["scales"][sampled]), ratios, binoms)
    new_opa = new_opa.clamp(min_opacity, 1.0 - torch.finfo(new_opa.dtype).eps)

    def share(name: str, p: Tensor) -> Tensor:
        p = p.clone()
        if name == "opacities":
            p[sampled] = torch.logit(new_opa)
        elif name == "scales":
            p[sampled] = torch.log(new_scales)
        return p

    return share


@torch.no_grad()
def relocate(params: Params, optimizers: Optimizers, state: dict[str, Any], mask: Tensor, binoms: Tensor,
             min_opacity: float = 0.005, generator: torch.Generator | None = None) -> None:
    """Move the dead Gaussians (`mask`) onto live ones drawn by opacity, sharing the donors' opacity and size."""
    opacities = torch.sigmoid(params["opacities"])
    dead = torch.nonzero(mask).squeeze(1)
    alive = torch.nonzero(~mask).squeeze(1)
    if len(dead) == 0 or len(alive) == 0:
        return
    sampled = alive[_sample(opacities[alive], len(dead), generator)]
    share = _shared_by_donors(params, opacities, sampled, binoms, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        p = share(name, p)
        p[dead] = p[sampled]
        return p

    def zero_rows(v: Tensor) -> Tensor:
        v = v.clone()
        v[sampled] = 0
        return v

    _update_params(params, optimizers, param_fn, lambda _, v: zero_rows(v))
    _update_state(state, zero_rows)


@torch.no_grad()
def sample_add(params: Params, optimizers: Optimizers, state: dict[str, Any], n: int, binoms: Tensor,
               min_opacity: float = 0.005, generator: torch.Generator | None = None) -> None:
    """Add `n` Gaussians as copies of live ones drawn by opacity (the donors' opacity and size are shared)."""
    opacities = torch.sigmoid(params["opacities"])
    sampled = _sample(opacities, n, generator)
    share = _shared_by_donors(params, opacities, sampled, binoms, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        p = share(name, p)
        return torch.cat([p, p[sampled]])

    _update_params(params, optimizers, param_fn,
                   lambda _, v: torch.cat([v, torch.zeros((n, *v.shape[1:]), dtype=v.dtype, device=v.device)]))
    _update_state(state, lambda v: torch.cat([v, torch.zeros((n, *v.shape[1:]), dtype=v.dtype, device=v.device)]))


@torch.no_grad()
def inject_noise_to_position(params: Params, state: dict[str, Any], scaler: float,
                             generator: torch.Generator | None = None) -> None:
    """MCMC's exploration noise: large for nearly transparent Gaussians, shaped by each covariance."""
    opacities = torch.sigmoid(params["opacities"])
    covars = covariances(params["quats"], torch.exp(params["scales"]))
    gate = torch.sigmoid(100.0 * ((1.0 - opacities) - 0.995))  # ~1 only when opacity < 0.005
    noise = torch.randn(params["means"].shape, generator=generator).to(params["means"]) * gate[:, None] * scaler
    params["means"].add_(torch.einsum("nij,nj->ni", covars, noise))


def _all_reduce(tensor: Tensor, op: str = "sum") -> Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


@dataclass
class Strategy:
    def check_sanity(self, params: Params, optimizers: Optimizers) -> None:
        assert set(params.keys()) == set(optimizers.keys()), "one optimizer per parameter"
        for name, param in params.items():
            assert param.shape[0] == params["means"].shape[0], f"{name} must have one row per Gaussian"
            assert len(optimizers[name].param_groups) == 1, f"{name}: one param group"

    def make_state(self, seed: int, **extra: Any) -> dict[str, Any]:
        rng = torch.Generator()
        rng.manual_seed(seed)
        return {"rng": rng, **extra}

    def step_pre_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                          info: dict[str, Any]) -> None:
        pass


@dataclass
class DefaultStrategy(Strategy):
    """The 3DGS paper's adaptive density control (gsplat's defaults)."""

    prune_opa: float = 0.005
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    grow_scale2d: float = 0.05
    prune_scale3d: float = 0.1
    prune_scale2d: float = 0.15
    refine_scale2d_stop_iter: int = 0
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    reset_every: int = 3000
    refine_every: int = 100
    pause_refine_after_reset: int = 0
    absgrad: bool = False
    revised_opacity: bool = False

    def initialize_state(self, scene_scale: float = 1.0, seed: int = 0) -> dict[str, Any]:
        # grad2d/count (and radii) are created lazily at the first step, with the Gaussian count then.
        return self.make_state(seed, grad2d=None, count=None, radii=None, scene_scale=scene_scale)

    def step_pre_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                          info: dict[str, Any]) -> None:
        info["means2d"].retain_grad()

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                           info: dict[str, Any]) -> dict[str, int]:
        """Accumulate statistics; every `refine_every` steps clone/split/prune; reset opacity every `reset_every`."""
        done: dict[str, int] = {}
        if step >= self.refine_stop_iter:
            return done
        self._accumulate(params, state, info)
        if step > self.refine_start_iter and step % self.refine_every == 0 \
                and step % self.reset_every >= self.pause_refine_after_reset:
            _all_reduce(state["grad2d"])
            _all_reduce(state["count"])
            if state["radii"] is not None:
                _all_reduce(state["radii"], "max")
            done["cloned"], done["split"] = self._grow(params, optimizers, state, step)
            done["pruned"] = self._prune(params, optimizers, state, step)
            for key in ("grad2d", "count", "radii"):
                if state[key] is not None:
                    state[key].zero_()
        if step % self.reset_every == 0 and step > 0:  # gsplat 1.5.3 writes `== 0 & step > 0`, which never holds
            reset_opa(params, optimizers, state, self.prune_opa * 2.0)
            done["opacity_reset"] = 1
        return done

    @torch.no_grad()
    def _accumulate(self, params: Params, state: dict[str, Any], info: dict[str, Any]) -> None:
        means2d = info["means2d"]
        grads = (means2d.absgrad if self.absgrad else means2d.grad)
        if grads is None:
            return
        grads = grads.clone()  # [C, N, 2], in pixels: to NDC units as gsplat
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        n = params["means"].shape[0]
        if state["grad2d"] is None:
            state["grad2d"] = torch.zeros(n, device=grads.device)
            state["count"] = torch.zeros(n, device=grads.device)
            if self.refine_scale2d_stop_iter > 0:
                state["radii"] = torch.zeros(n, device=grads.device)
        visible = info["radii"] > 0  # [C, N]
        ids = torch.nonzero(visible)[:, 1]
        state["grad2d"].index_add_(0, ids, grads[visible].norm(dim=-1))
        state["count"].index_add_(0, ids, torch.ones_like(ids, dtype=torch.float32))
        if state["radii"] is not None:
            sizes = info["radii"][visible].float() / float(max(info["width"], info["height"]))
            state["radii"][ids] = torch.maximum(state["radii"][ids], sizes)

    @torch.no_grad()
    def _grow(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int) -> tuple[int, int]:
        grads = state["grad2d"] / state["count"].clamp_min(1)
        high = grads > self.grow_grad2d
        small = torch.exp(params["scales"]).max(-1).values <= self.grow_scale3d * state["scene_scale"]
        is_dupli = high & small
        is_split = high & ~small
        if step < self.refine_scale2d_stop_iter and state["radii"] is not None:
            is_split |= state["radii"] > self.grow_scale2d
        n_dupli, n_split = int(is_dupli.sum()), int(is_split.sum())
        if n_dupli:
            duplicate(params, optimizers, state, is_dupli)
        # Clones are appended at the end and are not split again.
        is_split = torch.cat([is_split, torch.zeros(n_dupli, dtype=torch.bool, device=is_split.device)])
        if n_split:
            split(params, optimizers, state, is_split, self.revised_opacity, state["rng"])
        return n_dupli, n_split

    @torch.no_grad()
    def _prune(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int) -> int:
        is_prune = torch.sigmoid(params["opacities"]) < self.prune_opa
        if step > self.reset_every:
            too_big = torch.exp(params["scales"]).max(-1).values > self.prune_scale3d * state["scene_scale"]
            if step < self.refine_scale2d_stop_iter and state["radii"] is not None:
                too_big |= state["radii"] > self.prune_scale2d
            is_prune |= too_big
        n = int(is_prune.sum())
        if n:
            remove(params, optimizers, state, is_prune)
        return n


@dataclass
class MCMCStrategy(Strategy):
    """3DGS as MCMC (Kheradmand et al. 2024): relocate dead Gaussians, grow 5% per refine up to cap_max, noise."""

    cap_max: int = 1_000_000
    noise_lr: float = 5e5
    refine_start_iter: int = 500
    refine_stop_iter: int = 25_000
    refine_every: int = 100
    min_opacity: float = 0.005

    def initialize_state(self, scene_scale: float = 1.0, seed: int = 0) -> dict[str, Any]:
        return self.make_state(seed, binoms=binomial_table())

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                           info: dict[str, Any], lr: float = 0.0) -> dict[str, int]:
        """Relocate and add every `refine_every` steps inside the refine window; noise on means every step."""
        done: dict[str, int] = {}
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            dead = torch.sigmoid(params["opacities"]) <= self.min_opacity
            done["relocated"] = int(dead.sum())
            if done["relocated"]:
                relocate(params, optimizers, state, dead, state["binoms"], self.min_opacity, state["rng"])
            current = params["means"].shape[0]
            n_new = max(0, min(self.cap_max, int(1.05 * current)) - current)
            done["added"] = n_new
            if n_new:
                sample_add(params, optimizers, state, n_new, state["binoms"], self.min_opacity, state["rng"])
        inject_noise_to_position(params, state, lr * self.noise_lr, state["rng"])
        return done
