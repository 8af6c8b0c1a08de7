"""The adaptive system: loss-weight rebalancing, plateau detection, LR boost with cooldown, adaptive clipping.

Pure Python (no torch), so it is tested on synthetic histories. The loop calls it explicitly:

    adaptive = AdaptiveSystem({"l1": 0.6, "ms": 0.2, "gradient": 0.2}, AdaptiveSettings(...))
    lr = schedule(step) * adaptive.lr_factor()
    clip_grad_norm_(params, adaptive.clip_value)            # returns the unclipped norm
    adaptive.after_step(step, {"l1": 0.05, ...}, grad_norm)   # weights, counters, modes
    adaptive.observe_quality(step, ssim)                      # after each validation

Design:
- Weights. Every `rebalance_every` steps after warmup, each term's trend is the relative drop of its
  loss between the older and the newer half of the last `trend_window` steps (positive = improving).
  Like Dynamic Weight Averaging (Liu et al. 2019), terms that improve slowly get more weight:
  target_k ∝ start_k · exp(-trend_k / temperature). The target is projected onto
  {start_k / bound <= w_k <= start_k · bound, Σ w_k = Σ start_k} and the weights move a fraction
  `rebalance_rate` towards it; both points lie in that convex set, so bounds and sum always hold.
- Plateau. `plateau_counter` counts steps since the validation quality last improved by more than
  `min_improvement`. From `plateau_patience` the mode is Plateau; at `boost_patience`, if no boost or
  cooldown is running, the LR is multiplied by `boost_factor` for `boost_steps` (mode Boost) and the
  counter restarts, then `cooldown_steps` follow (mode Cooldown) in which no boost can fire.
- Clipping (AutoClip, Seetharaman et al. 2020): the clip value is the `clip_percentile` of the last
  `clip_window` gradient norms, within [clip_min, clip_max]; `clip_start` until enough norms are seen.
- Modes, by priority: Warmup (step <= warmup_steps), Boost, Cooldown, Plateau, Stable; Off when disabled.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

MODES = ("Warmup", "Stable", "Plateau", "Boost", "Cooldown", "Off")


@dataclass
class AdaptiveSettings:
    warmup_steps: int = 1000
    rebalance_every: int = 100
    trend_window: int = 200
    weight_bound: float = 2.0
    rebalance_rate: float = 0.2
    temperature: float = 0.1
    plateau_patience: int = 2000
    boost_patience: int = 4000
    boost_factor: float = 2.0
    boost_steps: int = 500
    cooldown_steps: int = 2000
    min_improvement: float = 1e-4
    clip_start: float = 1.0
    clip_percentile: float = 90.0
    clip_window: int = 200
    clip_min_samples: int = 20
    clip_min: float = 1e-3
    clip_max: float = 100.0


def project_weights(raw: dict[str, float], low: dict[str, float], high: dict[str, float], total: float) -> dict[str, float]:
    """The weights `clip(c * raw_k, low_k, high_k)` whose sum is `total` (bisection on the scale c)."""
    if not raw:
        return {}

    def weights_at(c: float) -> dict[str, float]:
        return {k: min(high[k], max(low[k], c * raw[k])) for k in raw}

    lo_c, hi_c = 0.0, 1.0
    while sum(weights_at(hi_c).values()) < total and hi_c < 1e12:
        hi_c *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo_c + hi_c)
        if sum(weights_at(mid).values()) < total:
            lo_c = mid
        else:
            hi_c = mid
    weights = weights_at(hi_c)
    # Put the last rounding residue on a term that is free to move, so the sum holds exactly.
    residue = total - sum(weights.values())
    for k in sorted(weights, key=lambda k: high[k] - low[k], reverse=True):
        moved = min(high[k], max(low[k], weights[k] + residue))
        residue -= moved - weights[k]
        weights[k] = moved
        if abs(residue) < 1e-15:
            break
    return weights


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


class AdaptiveSystem:
    """Loss weights, LR factor, clip value and mode for one training run (see the module docstring)."""

    def __init__(self, start_weights: dict[str, float], settings: AdaptiveSettings, enabled: bool = True) -> None:
        self.settings = settings
        self.enabled = enabled
        self.start_weights = dict(start_weights)
        self.weights = dict(start_weights)
        self.total_weight = sum(start_weights.values())
        bound = settings.weight_bound
        self.low = {k: w / bound for k, w in start_weights.items()}
        self.high = {k: w * bound for k, w in start_weights.items()}
        self.histories: dict[str, deque[float]] = {k: deque(maxlen=settings.trend_window) for k in start_weights}
        self.trends: dict[str, float | None] = dict.fromkeys(start_weights)
        self.grad_norms: deque[float] = deque(maxlen=settings.clip_window)
        self.clip_value = settings.clip_start
        self.step = 0
        self.best_quality: float | None = None
        self.plateau_counter = 0
        self.boost_remaining = 0
        self.cooldown_remaining = 0
        self.boost_count = 0

    # ------------------------------------------------------------------ what the loop reads

    @property
    def mode(self) -> str:
        if not self.enabled:
            return "Off"
        if self.step <= self.settings.warmup_steps:
            return "Warmup"
        if self.boost_remaining > 0:
            return "Boost"
        if self.cooldown_remaining > 0:
            return "Cooldown"
        if self.plateau_counter >= self.settings.plateau_patience:
            return "Plateau"
        return "Stable"

    @property
    def boost_available(self) -> bool:
        """A boost could fire now: past warmup, no boost running, no cooldown."""
        return (self.enabled and self.step > self.settings.warmup_steps
                and self.boost_remaining == 0 and self.cooldown_remaining == 0)

    def lr_factor(self) -> float:
        return self.settings.boost_factor if self.boost_remaining > 0 else 1.0

    # ------------------------------------------------------------------ what the loop tells it

    def after_step(self, step: int, losses: dict[str, float], grad_norm: float | None = None) -> None:
        """Record one training step: loss terms (unweighted) and the unclipped gradient norm."""
        self.step = step
        for name, value in losses.items():
            if name in self.histories and math.isfinite(value):
                self.histories[name].append(value)
        if grad_norm is not None and math.isfinite(grad_norm):
            self.grad_norms.append(grad_norm)
        self.plateau_counter += 1
        if not self.enabled:
            return
        if len(self.grad_norms) >= self.settings.clip_min_samples:
            value = percentile(list(self.grad_norms), self.settings.clip_percentile)
            self.clip_value = min(self.settings.clip_max, max(self.settings.clip_min, value))

        # A boost or cooldown step is spent; the step that ends a boost starts the cooldown.
        if self.boost_remaining > 0:
            self.boost_remaining -= 1
            if self.boost_remaining == 0:
                self.cooldown_remaining = self.settings.cooldown_steps
        elif self.cooldown_remaining > 0:
            self.cooldown_remaining -= 1
        if self.boost_available and self.plateau_counter >= self.settings.boost_patience:
            self.boost_remaining = self.settings.boost_steps
            self.boost_count += 1
            self.plateau_counter = 0  # the boost gets a full patience window to show an effect

        if self.step > self.settings.warmup_steps and self.step % self.settings.rebalance_every == 0:
            self._rebalance()

    def observe_quality(self, step: int, quality: float) -> bool:
        """Record a validation quality (higher is better); True when it is a new best."""
        self.step = max(self.step, step)
        improved = self.best_quality is None or quality > self.best_quality + self.settings.min_improvement
        if improved:
            self.best_quality = quality
            self.plateau_counter = 0
        return improved

    # ------------------------------------------------------------------ weights

    def _trend(self, name: str) -> float | None:
        history = list(self.histories[name])
        if len(history) < 4:
            return None
        half = len(history) // 2
        older = sum(history[:half]) / half
        newer = sum(history[half:]) / (len(history) - half)
        if older <= 0:
            return 0.0
        return (older - newer) / older

    def _rebalance(self) -> None:
        for name in self.weights:
            self.trends[name] = self._trend(name)
        active = {k: w for k, w in self.start_weights.items() if w > 0 and self.trends[k] is not None}
        if len(active) < 2:
            return
        t = self.settings.temperature
        raw = {k: w * math.exp(-max(-50.0, min(50.0, self.trends[k] / t))) for k, w in active.items()}  # type: ignore[operator]
        kept = sum(self.weights[k] for k in active)  # terms without a trend keep their weight
        target = project_weights(raw, self.low, self.high, kept)
        rate = self.settings.rebalance_rate
        for k in active:
            self.weights[k] += rate * (target[k] - self.weights[k])

    # ------------------------------------------------------------------ reporting and resume

    def snapshot_fields(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The snapshot's weight and adaptive_* fields (`names`: every loss term the snapshot lists)."""
        fields: dict[str, Any] = {f"{k}_weight_current": self.weights.get(k, 0.0) for k in names}
        fields.update(
            gradient_clip_val=self.clip_value,
            adaptive_mode=self.mode,
            adaptive_is_cooldown=self.cooldown_remaining > 0,
            adaptive_cooldown_remaining=self.cooldown_remaining,
            adaptive_plateau_counter=self.plateau_counter,
            adaptive_lr_boost_available=self.boost_available,
            adaptive_boost_remaining=self.boost_remaining,
            adaptive_boost_count=self.boost_count,
        )
        fields.update({f"adaptive_{k}_trend": self.trends.get(k) for k in names})
        return fields

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "weights": dict(self.weights),
            "histories": {k: list(v) for k, v in self.histories.items()},
            "trends": dict(self.trends),
            "grad_norms": list(self.grad_norms),
            "clip_value": self.clip_value,
            "step": self.step,
            "best_quality": self.best_quality,
            "plateau_counter": self.plateau_counter,
            "boost_remaining": self.boost_remaining,
            "cooldown_remaining": self.cooldown_remaining,
            "boost_count": self.boost_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; one of other loss terms or with values of the wrong type is a
        ValueError, raised before anything changes."""
        check_state(state, tuple(self.weights))
        self.weights.update(state["weights"])
        for name, values in state["histories"].items():
            if name in self.histories:
                self.histories[name].clear()
                self.histories[name].extend(values)
        self.trends.update({k: v for k, v in state["trends"].items() if k in self.trends})
        self.grad_norms.clear()
        self.grad_norms.extend(state["grad_norms"])
        self.clip_value = state["clip_value"]
        self.step = state["step"]
        self.best_quality = state["best_quality"]
        self.plateau_counter = state["plateau_counter"]
        self.boost_remaining = state["boost_remaining"]
        self.cooldown_remaining = state["cooldown_remaining"]
        self.boost_count = state["boost_count"]


COUNTERS = ("step", "plateau_counter", "boost_remaining", "cooldown_remaining", "boost_count")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(values: Any) -> bool:
    return isinstance(values, list) and all(_number(v) for v in values)


def check_state(state: Any, terms: tuple[str, ...]) -> None:
    """A ValueError naming the first field of `state` that `AdaptiveSystem.load_state_dict` could not use."""
    if not isinstance(state, dict):
        raise ValueError(f"adaptive state is a {type(state).__name__}, not a dict")
    missing = [k for k in ("weights", "histories", "trends", "grad_norms", "clip_value", "best_quality", *COUNTERS)
               if k not in state]
    if missing:
        raise ValueError(f"adaptive state lacks {', '.join(missing)}")
    weights = state["weights"]
    if not isinstance(weights, dict) or set(weights) != set(terms) or not all(map(_number, weights.values())):
        raise ValueError(f"adaptive weights must be numbers for exactly the terms {', '.join(terms)}, got "
                         f"{sorted(weights) if isinstance(weights, dict) else type(weights).__name__} "
                         "(--perceptual_weights added or dropped?)")
    histories, trends = state["histories"], state["trends"]
    if not isinstance(histories, dict) or not all(_numbers(v) for v in histories.values()):
        raise ValueError("adaptive histories must map each term to a list of numbers")
    if not isinstance(trends, dict) or not all(v is None or _number(v) for v in trends.values()):
        raise ValueError("adaptive trends must map each term to a number or null")
    if not _numbers(state["grad_norms"]) or not _number(state["clip_value"]):
        raise ValueError("adaptive grad_norms must be a list of numbers and clip_value a number")
    if state["best_quality"] is not None and not _number(state["best_quality"]):
        raise ValueError("adaptive best_quality must be a number or null")
    for key in COUNTERS:
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"adaptive {key} must be an integer >= 0, got {value!r}")
