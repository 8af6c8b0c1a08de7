"""The training loop: `runforge train kolmogorov [--preset cpu]` (SDA's experiments/kolmogorov/train.py).

Each epoch draws one random window of `window` states from every training
trajectory, takes AdamW steps on the ε-prediction loss of the VPSDE, validates,
and logs `loss_train`, `loss_valid`, `lr` (train.jsonl, TensorBoard, wandb).
The run directory gets config.json at the start and state.pth (the score
network's state_dict) at the end, plus checkpoints, sample figures and snapshots.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch

from ...config import to_dict
from ...run import Run
from ...run._atomic import write_with
from .config import Config
from .data import load_split, pick_device, random_windows
from .figures import grid
from .score import VPSDE, MarkovScore, make_score
from .solver import vorticity
from .tracking import Tracker

STATE_FILE = "state.pth"


def lr_factor(schedule: str, epochs: int):
    if schedule == "linear":
        return lambda e: 1 - e / epochs
    if schedule == "cosine":
        return lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs))
    return lambda e: 1.0


def build_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if cfg.optimizer == "AdamW" else torch.optim.Adam
    return kind(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def validate(sde: VPSDE, windows: torch.Tensor, cfg: Config, device: torch.device) -> float:
    """Mean loss over fixed windows with fixed noise, so epochs compare."""
    total = 0.0
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + 1)
        for i in range(0, len(windows), cfg.batch_size):
            batch = windows[i:i + cfg.batch_size].to(device)
            total += sde.loss(batch).item() * len(batch)
    return total / len(windows)


def sample_figure(sde: VPSDE, cfg: Config, device: torch.device):
    """Two unconditional windows, drawn as vorticity (rows: samples, columns: time)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + 2)
        x = sde.sample(2, steps=cfg.sample_steps, device=device).cpu()
    w = vorticity(x.unflatten(1, (cfg.window, 2)))  # (2, window, H, W)
    return grid([row.numpy() for row in w], labels=["sample 1", "sample 2"])


def save_state(score: MarkovScore, path) -> None:
    state = {k: v.detach().cpu() for k, v in score.state_dict().items()}
    write_with(path, lambda f: torch.save(state, f))


def train(cfg: Config, run: Run) -> None:
    if cfg.array > 1:
        from .array import launch

        return launch(cfg, run)

    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # on small shared CPUs one thread is faster than two (FEASIBILITY.md)
    torch.manual_seed(cfg.seed)
    config = to_dict(cfg)

    trainset = load_split(cfg.data / "train.h5")
    validset = load_split(cfg.data / "valid.h5")
    size = trainset.shape[-1]
    score = make_score(config).to(device)
    sde = VPSDE(score.kernel, shape=(cfg.window * 2, size, size))
    optimizer = build_optimizer(cfg, score.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.scheduler, cfg.epochs))
    windows_rng = torch.Generator().manual_seed(cfg.seed)
    valid_windows = random_windows(validset, cfg.window, torch.Generator().manual_seed(cfg.seed + 1))
    best = math.inf
    run.event(f"kolmogorov: {len(trainset)} train / {len(validset)} valid trajectories of "
              f"{trainset.shape[1]} states at {size}x{size}; score network "
              f"{sum(p.numel() for p in score.parameters()):,} parameters on {device}")

    if run.resume_checkpoint is not None:
        ckpt = torch.load(run.resume_checkpoint.path, map_location=device, weights_only=False)
        score.load_state_dict(ckpt["score"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        windows_rng.set_state(ckpt["windows_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        best = ckpt["best"]

    def state(epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "config": config, "best": best,
                "score": {k: v.detach().cpu().clone() for k, v in score.state_dict().items()},
                "optimizer": copy.deepcopy(optimizer.state_dict()), "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(), "windows_rng": windows_rng.get_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None}

    tracker = Tracker(cfg.wandb, run, config, resuming=run.resume_checkpoint is not None)
    batches = math.ceil(len(trainset) / cfg.batch_size)
    finished = False
    try:
        epoch = run.start_step
        for epoch in range(run.start_step + 1, cfg.epochs + 1):
            # one random window per trajectory, shuffled into batches
            score.train()
            windows = random_windows(trainset, cfg.window, windows_rng)
            order = torch.randperm(len(windows), generator=windows_rng)
            losses = []
            for i in range(0, len(windows), cfg.batch_size):
                x = windows[order[i:i + cfg.batch_size]].to(device)
                loss = sde.loss(x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            metrics: dict[str, Any] = {"loss_train": sum(losses) / len(losses), "lr": lr}
            ctl = run.poll(epoch, epoch=epoch, epoch_step=batches, epoch_step_total=batches)

            # validation, with a statistics snapshot after each
            if ctl.validate or epoch % cfg.valid_every == 0 or epoch == cfg.epochs:
                score.eval()
                with run.validating():
                    metrics["loss_valid"] = validate(sde, valid_windows, cfg, device)
                best = min(best, metrics["loss_valid"])
                run.snapshot(epoch, {"epoch": epoch, "loss_train": metrics["loss_train"],
                                     "loss_valid": metrics["loss_valid"], "best_loss_valid": best,
                                     "learning_rate_value": lr})
            run.log(epoch, metrics)
            tracker.log(epoch, metrics)

            # samples from the prior
            if epoch % cfg.sample_every == 0 or epoch == cfg.epochs:
                score.eval()
                started = time.perf_counter()
                picture = sample_figure(sde, cfg, device)
                run.image(epoch, "samples", picture)
                tracker.image(epoch, "samples", picture)
                run.event(f"samples drawn at epoch {epoch} ({time.perf_counter() - started:.1f} s)")

            if ctl.save or ctl.stop or epoch % cfg.ckpt_every == 0 or epoch == cfg.epochs:
                run.checkpoint(epoch, state(epoch), torch.save, metric=metrics.get("loss_valid"))
            if ctl.stop:
                break
        else:
            finished = True
        if finished:
            save_state(score, run.dir / STATE_FILE)
            run.event(f"score network saved: {STATE_FILE}")
            print(f"kolmogorov: finished {cfg.epochs} epochs, loss_valid {best:.4f}; run in {run.dir}")
    except BaseException:
        tracker.finish(failed=True)
        raise
    tracker.finish()
