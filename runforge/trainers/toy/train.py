"""The toy training loop: `runforge train toy [--preset tiny]`.

Written like every trainer: build, resume, loop, and call the run layer at
its save points (log, image, validate + snapshot, checkpoint, stop).
"""

from __future__ import annotations

import math
import pickle
import random
import time
from pathlib import Path
from typing import Any

from ...run import Run
from .config import Config

TRUE = {"a": 1.5, "w": 2.0, "b": 0.3, "c": -0.2}


def target(x: float, noise: float, rng: random.Random) -> float:
    return TRUE["a"] * math.sin(TRUE["w"] * x) + TRUE["b"] * x + TRUE["c"] + rng.gauss(0.0, noise)


def predict(p: dict[str, float], x: float) -> float:
    return p["a"] * math.sin(p["w"] * x) + p["b"] * x + p["c"]


def sgd_step(p: dict[str, float], xs: list[float], ys: list[float], lr: float) -> float:
    grads = dict.fromkeys(p, 0.0)
    loss = 0.0
    for x, y in zip(xs, ys):
        err = predict(p, x) - y
        loss += err * err
        grads["a"] += 2 * err * math.sin(p["w"] * x)
        grads["w"] += 2 * err * p["a"] * math.cos(p["w"] * x) * x
        grads["b"] += 2 * err * x
        grads["c"] += 2 * err
    for k in p:
        p[k] -= lr * grads[k] / len(xs)
    return loss / len(xs)


def validate(p: dict[str, float], val: list[tuple[float, float]]) -> float:
    return sum((predict(p, x) - y) ** 2 for x, y in val) / len(val)


def plot(p: dict[str, float], size: int = 128) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    to_px = lambda x, y: ((x + 2) / 4 * (size - 1), (1 - (y + 2.5) / 5) * (size - 1))  # noqa: E731
    xs = [-2 + 4 * i / (size - 1) for i in range(size)]
    draw.line([to_px(x, predict(TRUE, x)) for x in xs], fill=(0, 120, 255), width=2)
    draw.line([to_px(x, predict(p, x)) for x in xs], fill=(230, 60, 30), width=2)
    return image


def load_checkpoint(path: Path, cfg: Config) -> dict[str, Any]:
    """A toy checkpoint, checked field by field (the run layer calls this before it touches the run)."""
    with open(path, "rb") as f:
        state = pickle.load(f)
    if not isinstance(state, dict) or not {"params", "best", "rng"} <= state.keys():
        raise ValueError("not a toy checkpoint (expected params, best and rng)")
    params = state["params"]
    if not isinstance(params, dict) or set(params) != set(TRUE) or not all(isinstance(v, float) for v in params.values()):
        raise ValueError(f"params must hold floats {', '.join(TRUE)}")
    random.Random().setstate(state["rng"])  # raises on a state that is not one
    return state


def train(cfg: Config, run: Run) -> None:
    rng = random.Random(cfg.seed)
    val_rng = random.Random(cfg.seed + 1)
    val = [(x, target(x, cfg.noise, val_rng)) for x in (val_rng.uniform(-2, 2) for _ in range(256))]
    params = {"a": 1.0, "w": 1.8, "b": 0.0, "c": 0.0}
    best = math.inf
    start = run.start_step
    if run.resume_state is not None:
        params, best = run.resume_state["params"], run.resume_state["best"]
        rng.setstate(run.resume_state["rng"])

    def state() -> dict[str, Any]:
        return {"params": dict(params), "best": best, "rng": rng.getstate(), "config": cfg}

    def validate_now() -> None:
        nonlocal best
        with run.validating():
            val_loss = validate(params, val)
        best = min(best, val_loss)
        run.log(step, {"val": {"loss": val_loss}})
        run.snapshot(step, {"learning_rate_value": cfg.lr, "lr_phase_name": "constant", "total_loss_value": loss,
                            "validation_loss_value": val_loss, "best_quality_ever": -best})

    step = start
    for step in range(start + 1, cfg.steps + 1):
        xs = [rng.uniform(-2, 2) for _ in range(cfg.batch_size)]
        ys = [target(x, cfg.noise, rng) for x in xs]
        loss = sgd_step(params, xs, ys, cfg.lr)
        if cfg.step_sleep:
            time.sleep(cfg.step_sleep)

        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, {"loss": loss, "lr": cfg.lr, "params": dict(params)})
        if step == 1 or step % cfg.image_every == 0 or step == cfg.steps:
            run.image(step, "fit", plot(params))
        ctl = run.poll(step, on_validate=validate_now)  # a paused run validates where it is held
        if ctl.validate or step % cfg.val_every == 0 or step == cfg.steps:
            validate_now()
        if ctl.save or ctl.stop or step % cfg.ckpt_every == 0 or step == cfg.steps:
            run.checkpoint(step, state(), pickle.dump, metric=best)
        if ctl.stop:
            break
    print(f"toy: finished at step {step}, params " + ", ".join(f"{k}={v:.3f}" for k, v in params.items())
          + " (true: " + ", ".join(f"{k}={v}" for k, v in TRUE.items()) + f"); run in {run.dir}")
