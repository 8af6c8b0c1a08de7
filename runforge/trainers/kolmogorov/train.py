"""The training loop: `runforge train kolmogorov [--preset cpu]` (SDA's experiments/kolmogorov/train.py).

Each epoch draws one random window of `window` states from every training
trajectory, takes AdamW steps on the ε-prediction loss of the VPSDE, validates,
and logs `loss_train`, `loss_valid`, `lr` (train.jsonl, TensorBoard, wandb).
The run directory gets config.json at the start and state.pth (the score
network's state_dict) at the end, plus checkpoints, sample figures and snapshots.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from ...config import to_dict
from ...run import Run
from ...run.files import write_with
from ..common import cpu_state, load_model_state, load_optimizer_state, pick_device, torch_load
from .config import Config
from .data import load_split, random_windows
from .figures import grid
from .score import VPSDE, MarkovScore, make_score
from .solver import vorticity
from .tracking import Tracker

STATE_FILE = "state.pth"
RESUME_KEYS = ("epoch", "config", "best", "score", "optimizer", "scheduler", "rng", "windows_rng", "cuda_rng")


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
    state = cpu_state(score.state_dict())
    write_with(path, lambda f: torch.save(state, f))


def make_parts(cfg: Config, device: torch.device) -> tuple[MarkovScore, torch.optim.Optimizer,
                                                            torch.optim.lr_scheduler.LambdaLR]:
    """A fresh score network, its optimizer and learning-rate schedule."""
    score = make_score(to_dict(cfg)).to(device)
    optimizer = build_optimizer(cfg, score.parameters())
    return score, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.scheduler, cfg.epochs))


def restore(state: dict[str, Any], score: MarkovScore, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LambdaLR, windows_rng: torch.Generator, torch_rng: torch.Generator) -> None:
    """Put a checkpoint into the loop's objects; raises on a state of another config."""
    load_model_state(score, state["score"])
    load_optimizer_state(optimizer, state["optimizer"])
    saved, own = state["scheduler"], scheduler.state_dict().keys()
    # LambdaLR.load_state_dict copies every key into the scheduler's attributes: only its own may come in
    if (not isinstance(saved, dict) or not saved.keys() <= own or not {"last_epoch", "base_lrs", "lr_lambdas"} <= saved.keys()
            or saved["lr_lambdas"] != [None] or saved["last_epoch"] != state["epoch"] or not isinstance(saved["base_lrs"], list)
            or len(saved["base_lrs"]) != len(optimizer.param_groups)
            or not all(isinstance(v, float) for v in saved["base_lrs"])):
        raise ValueError("scheduler is not this trainer's LambdaLR state at the checkpoint's epoch")
    scheduler.load_state_dict(saved)
    torch_rng.set_state(state["rng"])
    windows_rng.set_state(state["windows_rng"])


def load_checkpoint(path: Path, cfg: Config) -> dict[str, Any]:
    """A ckpts/ckpt_{epoch}_rank0.pt, checked by restoring it into throwaway objects of `cfg` (the run
    layer calls this before it touches the run, and hands the state to train() as `run.resume_state`)."""
    state = torch_load(path)
    if not isinstance(state, dict) or not set(RESUME_KEYS) <= state.keys():
        raise ValueError("not a kolmogorov checkpoint (expected " + ", ".join(RESUME_KEYS) + ")")
    epoch, best, cuda_rng = state["epoch"], state["best"], state["cuda_rng"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
    if not isinstance(best, float) or math.isnan(best):
        raise ValueError(f"best must be a number (inf before the first validation), got {best!r}")
    if cuda_rng is not None and not (isinstance(cuda_rng, torch.Tensor) and cuda_rng.dtype == torch.uint8):
        raise ValueError("cuda_rng must be a byte tensor or null")
    restore(state, *make_parts(cfg, torch.device("cpu")), torch.Generator(), torch.Generator())
    return state


def train(cfg: Config, run: Run) -> None:
    """One training; several seeds are a `runforge sweep kolmogorov --grid seed=...`."""
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # measured on a 2-core machine: one thread is faster than two
    torch.manual_seed(cfg.seed)
    config = to_dict(cfg)

    trainset = load_split(cfg.data / "train.h5")
    validset = load_split(cfg.data / "valid.h5")
    size = trainset.shape[-1]
    score, optimizer, scheduler = make_parts(cfg, device)
    sde = VPSDE(score.kernel, shape=(cfg.window * 2, size, size))
    windows_rng = torch.Generator().manual_seed(cfg.seed)
    valid_windows = random_windows(validset, cfg.window, torch.Generator().manual_seed(cfg.seed + 1))
    best = math.inf
    run.event(f"kolmogorov: {len(trainset)} train / {len(validset)} valid trajectories of "
              f"{trainset.shape[1]} states at {size}x{size}; score network "
              f"{sum(p.numel() for p in score.parameters()):,} parameters on {device}")

    if run.resume_state is not None:
        ckpt = run.resume_state
        restore(ckpt, score, optimizer, scheduler, windows_rng, torch.default_generator)
        if device.type == "cuda" and ckpt["cuda_rng"] is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        best = ckpt["best"]

    def state(epoch: int) -> dict[str, Any]:
        return cpu_state({"epoch": epoch, "config": config, "best": best, "score": score.state_dict(),
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "rng": torch.get_rng_state(), "windows_rng": windows_rng.get_state(),
                          "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None})

    def validate_now() -> None:
        """loss_valid and the statistics snapshot: on schedule, on a validate command, and while paused
        (the run layer calls it from `poll`); the epoch's train.jsonl line then carries loss_valid."""
        nonlocal best
        score.eval()
        with run.validating():
            metrics["loss_valid"] = validate(sde, valid_windows, cfg, device)
        best = min(best, metrics["loss_valid"])
        run.snapshot(epoch, {"epoch": epoch, "loss_train": metrics["loss_train"], "loss_valid": metrics["loss_valid"],
                             "best_loss_valid": best, "learning_rate_value": lr})

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
            ctl = run.poll(epoch, epoch=epoch, epoch_step=batches, epoch_step_total=batches, on_validate=validate_now)

            # validation, with a statistics snapshot after each
            if ctl.validate or epoch % cfg.valid_every == 0 or epoch == cfg.epochs:
                validate_now()
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
