"""The adaptive system on synthetic histories: modes, one boost per plateau, cooldown, weights, clipping."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from runforge.trainers.sr.adaptive import AdaptiveSettings, AdaptiveSystem, percentile, project_weights

SETTINGS = AdaptiveSettings(warmup_steps=10, rebalance_every=5, trend_window=10, plateau_patience=30,
                            boost_patience=50, boost_factor=2.0, boost_steps=10, cooldown_steps=20)
START = {"l1": 0.6, "ms": 0.2, "gradient": 0.2}


def drive(system: AdaptiveSystem, steps: range, quality_at) -> list[tuple[int, str, float]]:
    """Run steps with falling losses; validate every 10 steps. Returns (step, mode, lr factor used)."""
    trace = []
    for step in steps:
        factor = system.lr_factor()  # what the loop multiplies this step's LR by
        system.after_step(step, {"l1": 1.0 / step, "ms": 0.5 / step, "gradient": 0.8 / step}, grad_norm=1.0)
        if step % 10 == 0:
            system.observe_quality(step, quality_at(step))
        trace.append((step, system.mode, factor))
    return trace


def collapse(modes: list[str]) -> list[str]:
    return [mode for mode, _ in itertools.groupby(modes)]


def test_plateau_boosts_once_cools_down_and_returns_to_stable():
    system = AdaptiveSystem(START, SETTINGS)
    assert system.mode == "Warmup"
    # Quality rises until step 40, stalls, and rises again once the boost (from step 91) has run.
    quality = lambda step: step / 100 if step <= 40 or step >= 100 else 0.4  # noqa: E731
    trace = drive(system, range(1, 161), quality)
    modes = {step: mode for step, mode, _ in trace}

    assert collapse([mode for _, mode, _ in trace]) == ["Warmup", "Stable", "Plateau", "Boost", "Cooldown", "Stable"]
    assert modes[10] == "Warmup" and modes[11] == "Stable"
    assert modes[69] == "Stable" and modes[70] == "Plateau"  # 30 steps since the last better quality (step 40)
    assert modes[89] == "Plateau" and modes[90] == "Boost"  # 50 steps: the boost fires
    assert system.boost_count == 1
    boosted = [step for step, _, factor in trace if factor == 2.0]
    assert boosted == list(range(91, 101))  # exactly boost_steps steps at twice the LR
    assert [step for step, mode, _ in trace if mode == "Cooldown"] == list(range(100, 120))
    assert modes[120] == "Stable"


def test_boost_is_unavailable_during_boost_and_cooldown_and_fires_again_only_after():
    system = AdaptiveSystem(START, SETTINGS)
    starts, availability = [], {}
    for step in range(1, 301):
        before = system.boost_count
        system.after_step(step, {"l1": 0.1, "ms": 0.1, "gradient": 0.1}, grad_norm=1.0)
        if step % 10 == 0:
            system.observe_quality(step, 0.5)  # never better than the first validation
        if system.boost_count > before:
            starts.append(step)
        availability[step] = (system.mode, system.boost_available, system.cooldown_remaining)
    # First validation at 10 sets the best; 50 steps later a boost; then one every
    # boost_patience steps at the earliest, and never inside a boost or cooldown.
    assert starts == [60, 110, 160, 210, 260]
    for step, (mode, available, cooldown) in availability.items():
        if mode in ("Boost", "Cooldown"):
            assert not available, step
        if mode == "Cooldown":
            assert cooldown > 0
    assert availability[65][0] == "Boost" and availability[75][0] == "Cooldown"


def test_rebalancing_moves_weight_to_the_stalled_term_within_bounds_and_keeps_the_sum():
    system = AdaptiveSystem(START, SETTINGS)
    seen = []
    for step in range(1, 400):
        # l1 is flat; ms and gradient keep falling fast: l1 should gain weight.
        system.after_step(step, {"l1": 0.3, "ms": math.exp(-step / 20), "gradient": math.exp(-step / 25)}, grad_norm=1.0)
        seen.append(dict(system.weights))
    for weights in seen:
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-12)
        for name, value in weights.items():
            assert START[name] / 2 - 1e-12 <= value <= START[name] * 2 + 1e-12
    assert seen[9] == START  # nothing moves during warmup
    assert seen[-1]["l1"] > 0.75 and seen[-1]["ms"] < 0.15 and seen[-1]["gradient"] < 0.15
    # The bound binds: ms and gradient cannot go under half their start weight.
    assert seen[-1]["ms"] == pytest.approx(0.1, abs=1e-3) and seen[-1]["gradient"] == pytest.approx(0.1, abs=1e-3)
    assert system.trends["l1"] == pytest.approx(0.0)
    assert system.trends["ms"] is not None and system.trends["ms"] > 0


def test_project_weights_holds_bounds_and_sum_for_extreme_targets():
    rng = random.Random(0)
    low, high = {"a": 0.1, "b": 0.05, "c": 0.2}, {"a": 0.8, "b": 0.6, "c": 0.9}
    for _ in range(200):
        raw = {k: rng.lognormvariate(0, 4) for k in low}
        total = rng.uniform(sum(low.values()), sum(high.values()))
        weights = project_weights(raw, low, high, total)
        assert sum(weights.values()) == pytest.approx(total, abs=1e-12)
        assert all(low[k] - 1e-12 <= weights[k] <= high[k] + 1e-12 for k in low)


def test_clip_value_is_a_bounded_percentile_of_recent_gradient_norms():
    settings = AdaptiveSettings(warmup_steps=0, clip_start=1.0, clip_percentile=90, clip_window=50,
                                clip_min_samples=20, clip_min=0.01, clip_max=5.0)
    system = AdaptiveSystem(START, settings)
    norms = [0.1 * (i % 10 + 1) for i in range(19)]
    for step, norm in enumerate(norms, 1):
        system.after_step(step, {}, grad_norm=norm)
    assert system.clip_value == 1.0  # too few norms yet
    system.after_step(20, {}, grad_norm=0.5)
    assert system.clip_value == pytest.approx(percentile(norms + [0.5], 90))
    for step in range(21, 100):
        system.after_step(step, {}, grad_norm=1000.0)
    assert system.clip_value == 5.0
    system.after_step(100, {}, grad_norm=float("nan"))  # ignored, never poisons the history
    assert system.clip_value == 5.0


def test_disabled_system_keeps_weights_clip_and_lr():
    system = AdaptiveSystem(START, SETTINGS, enabled=False)
    drive(system, range(1, 200), lambda step: 0.5)
    assert system.mode == "Off" and system.weights == START and system.clip_value == SETTINGS.clip_start
    assert system.lr_factor() == 1.0 and system.boost_count == 0 and not system.boost_available
    assert system.plateau_counter == 189  # still counted, for the dashboard


def test_state_dict_round_trip_continues_identically():
    quality = lambda step: min(step, 40) / 100  # noqa: E731
    straight = AdaptiveSystem(START, SETTINGS)
    trace_straight = drive(straight, range(1, 201), quality)

    first = AdaptiveSystem(START, SETTINGS)
    trace = drive(first, range(1, 96), quality)
    second = AdaptiveSystem(START, SETTINGS)
    second.load_state_dict(first.state_dict())
    trace += drive(second, range(96, 201), quality)
    assert trace == trace_straight
    assert second.state_dict() == straight.state_dict()


def test_snapshot_fields_use_the_seed_names():
    fields = AdaptiveSystem(START, SETTINGS).snapshot_fields(("l1", "ms", "gradient", "perceptual"))
    for key in ("l1_weight_current", "ms_weight_current", "gradient_weight_current", "perceptual_weight_current",
                "gradient_clip_val", "adaptive_mode", "adaptive_is_cooldown", "adaptive_cooldown_remaining",
                "adaptive_plateau_counter", "adaptive_lr_boost_available", "adaptive_perceptual_trend"):
        assert key in fields
    assert fields["perceptual_weight_current"] == 0.0 and fields["adaptive_perceptual_trend"] is None
    assert fields["adaptive_mode"] == "Warmup" and fields["adaptive_lr_boost_available"] is False
