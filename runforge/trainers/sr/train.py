"""The super-resolution training loop: `runforge train sr [--preset cpu|tiny] [--data_root DIR]`.

Each step: a batch of random HR patches, their degraded LR inputs, the model's upscaling, the loss
terms weighted by the adaptive system, a clipped Adam step. Every `val_every` steps (and on a
`validate` command): quality against bicubic on fixed val crops, `Learn/Statistik_{STEP}.json`,
`best.pt` when the quality is a new best. `ckpts/last.pt` every `ckpt_every` steps, on `save`/`stop`
and at the end; `--resume` continues from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...config import to_dict
from ...run import Run
from ...run.files import write_with
from ...run.layout import CHECKPOINT_DIR
from ...run.system import cuda_peak_gb
from ..common import cpu_state, load_model_state, load_optimizer_state, pick_device, torch_load
from .adaptive import AdaptiveSettings, AdaptiveSystem
from .config import BEST_CHECKPOINT, Config
from .data import PatchSampler, degrade, load_split, upscale_bicubic, val_crops
from ..common import psnr, ssim
from .losses import LossTerms, VGGFeatures, load_vgg_features
from .model import SRNet, layer_activity

LOSS_NAMES = ("l1", "ms", "gradient", "perceptual")  # every term a snapshot lists, enabled or not
VAL_BATCH = 8
RESUME_KEYS = ("step", "model", "optimizer", "adaptive", "best_quality", "loss_sums", "loss_steps", "rng", "config")


@dataclass
class ValSet:
    """Fixed validation crops with their LR inputs and the bicubic baseline, scored once."""

    hr: torch.Tensor  # (N, 3, H, W)
    lr: torch.Tensor  # (N, 3, H/s, W/s)
    bicubic: torch.Tensor  # (N, 3, H, W)
    quality_lr: float  # SSIM of bicubic against HR
    psnr_lr: float
    lr_to_gt: float  # mean |bicubic - HR|


def make_val_set(images: list[torch.Tensor], cfg: Config) -> ValSet:
    hr = val_crops(images, cfg.val_crop, cfg.val_crops)
    lr = degrade(hr, cfg.scale, cfg.blur, cfg.noise, torch.Generator().manual_seed(cfg.seed + 1), fixed=True)
    bicubic = upscale_bicubic(lr, cfg.scale)
    return ValSet(hr, lr, bicubic, ssim(bicubic, hr).mean().item(), psnr(bicubic, hr, cfg.scale).mean().item(),
                  (bicubic - hr).abs().mean().item())


def learning_rate(step: int, cfg: Config) -> tuple[float, str]:
    """Linear warmup, then cosine from `lr` down to `min_lr` at the last step."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps, "warmup"
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress)), "cosine"


def adaptive_settings(cfg: Config) -> AdaptiveSettings:
    return AdaptiveSettings(
        warmup_steps=cfg.warmup_steps, rebalance_every=cfg.rebalance_every, trend_window=cfg.trend_window,
        weight_bound=cfg.weight_bound, plateau_patience=cfg.plateau_patience, boost_patience=cfg.boost_patience,
        boost_factor=cfg.boost_factor, boost_steps=cfg.boost_steps, cooldown_steps=cfg.cooldown_steps,
        clip_start=cfg.grad_clip,
    )


@torch.no_grad()
def evaluate(model: SRNet, terms: LossTerms, weights: dict[str, float], val: ValSet, scale: int,
             device: torch.device) -> dict[str, Any]:
    """The snapshot's quality fields (SSIM as quality, mean |x - HR| as distance) plus PSNR."""
    model.eval()
    quality, peak, distance, loss = [], [], [], 0.0
    first = None
    for start in range(0, len(val.hr), VAL_BATCH):
        lr = val.lr[start : start + VAL_BATCH].to(device)
        hr = val.hr[start : start + VAL_BATCH].to(device)
        raw = model(lr)
        sr = raw.clamp(0, 1)
        quality.append(ssim(sr, hr).cpu())
        peak.append(psnr(sr, hr, scale).cpu())
        distance.append((sr - hr).abs().mean(dim=(1, 2, 3)).cpu())
        loss += len(hr) * sum(weights.get(k, 0.0) * v.item() for k, v in terms(raw, hr).items())
        if first is None:
            first = sr[0].cpu()
    activity = layer_activity(model, val.lr[:VAL_BATCH].to(device))
    model.train()
    quality_ki, psnr_ki = torch.cat(quality).mean().item(), torch.cat(peak).mean().item()
    return {
        "quality_lr_value": val.quality_lr,
        "quality_ki_value": quality_ki,
        "quality_improvement_value": quality_ki - val.quality_lr,
        "quality_ki_to_gt_value": torch.cat(distance).mean().item(),
        "quality_lr_to_gt_value": val.lr_to_gt,
        "validation_loss_value": loss / len(val.hr),
        "psnr_ki_value": psnr_ki,
        "psnr_lr_value": val.psnr_lr,
        "psnr_improvement_value": psnr_ki - val.psnr_lr,
        "layer_activity_map": activity,
        "sample": torch.cat([val.bicubic[0], first, val.hr[0]], dim=2),  # bicubic | model | HR, (3, H, 3W)
    }


def adam_momentum_avg(optimizer: torch.optim.Optimizer) -> float | None:
    """Mean |first moment| (Adam's exp_avg) over every parameter element."""
    total, count = 0.0, 0
    for state in optimizer.state.values():
        moment = state.get("exp_avg")
        if moment is not None:
            total += moment.abs().sum().item()
            count += moment.numel()
    return total / count if count else None


def start_weights(cfg: Config) -> dict[str, float]:
    """The loss terms this config trains, with their start weights (perceptual only with VGG weights)."""
    weights = {"l1": cfg.weight_l1, "ms": cfg.weight_ms, "gradient": cfg.weight_gradient}
    if cfg.perceptual_weights is not None:
        weights["perceptual"] = cfg.weight_perceptual
    return weights


def make_parts(cfg: Config, device: torch.device) -> tuple[SRNet, torch.optim.Adam, AdaptiveSystem]:
    """A fresh model, its optimizer and the adaptive system."""
    model = SRNet(cfg.scale, cfg.channels, cfg.blocks).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    return model, optimizer, AdaptiveSystem(start_weights(cfg), adaptive_settings(cfg), enabled=cfg.adaptive)


def restore(state: dict[str, Any], model: SRNet, optimizer: torch.optim.Optimizer, adaptive: AdaptiveSystem,
            data_rng: torch.Generator, torch_rng: torch.Generator) -> None:
    """Put a last.pt state into the loop's objects; raises on a state of another config."""
    load_model_state(model, state["model"])
    load_optimizer_state(optimizer, state["optimizer"])
    adaptive.load_state_dict(state["adaptive"])
    data_rng.set_state(state["rng"]["data"])
    torch_rng.set_state(state["rng"]["torch"])


def load_checkpoint(path: Path, cfg: Config) -> dict[str, Any]:
    """ckpts/last.pt, checked by restoring it into throwaway objects of `cfg` (the run layer calls this
    before it touches the run, and hands the state to train() as `run.resume_state`)."""
    state = torch_load(path)
    if not isinstance(state, dict) or not set(RESUME_KEYS) <= state.keys():
        raise ValueError("not a resumable sr checkpoint (expected " + ", ".join(RESUME_KEYS) + ")")
    if not isinstance(state["rng"], dict) or not {"data", "torch"} <= state["rng"].keys():
        raise ValueError("rng must hold the data and torch generator states")
    sums, count, best = state["loss_sums"], state["loss_steps"], state["best_quality"]
    if not isinstance(sums, dict) or not all(isinstance(k, str) and isinstance(v, float) for k, v in sums.items()):
        raise ValueError("loss_sums must map loss names to numbers")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"loss_steps must be an integer >= 0, got {count!r}")
    if best is not None and not isinstance(best, float):
        raise ValueError(f"best_quality must be a number or null, got {best!r}")
    restore(state, *make_parts(cfg, torch.device("cpu")), torch.Generator(), torch.Generator())
    return state


def train(cfg: Config, run: Run) -> None:
    # --- setup
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)  # patches and degradation, resumable

    train_images, val_images, data_dir = load_split(cfg.data_root, cfg.patch_size, cfg.val_crop)
    source = "bundled procedural textures" if cfg.data_root is None else "data root"
    run.event(f"data: {source} in {data_dir} ({len(train_images)} train, {len(val_images)} val images)", console=True)
    sampler = PatchSampler(train_images, cfg.patch_size)
    val = make_val_set(val_images, cfg)
    steps_per_epoch = sampler.steps_per_epoch(cfg.batch_size)

    model, optimizer, adaptive = make_parts(cfg, device)
    perceptual: VGGFeatures | None = None
    if cfg.perceptual_weights is not None:
        perceptual = load_vgg_features(cfg.perceptual_weights).to(device)
    else:
        run.event("perceptual loss off: no --perceptual_weights given, its weight is 0", console=True)
    terms = LossTerms(perceptual)
    best_quality: float | None = None
    loss_sums: dict[str, float] = {}  # training losses since the last snapshot, for its *_loss_value
    loss_steps = 0

    if run.resume_state is not None:
        state = run.resume_state
        restore(state, model, optimizer, adaptive, generator, torch.default_generator)
        best_quality, loss_sums, loss_steps = state["best_quality"], state["loss_sums"], state["loss_steps"]

    def training_state(step: int) -> dict[str, Any]:
        return cpu_state({
            "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "adaptive": adaptive.state_dict(), "best_quality": best_quality, "loss_sums": loss_sums,
            "loss_steps": loss_steps, "rng": {"data": generator.get_state(), "torch": torch.get_rng_state()},
            "config": to_dict(cfg),
        })

    def validate_now() -> None:
        """Quality on the val crops, best.pt, the statistics snapshot: on schedule, on a validate command,
        and while paused (the run layer calls it from `poll`)."""
        nonlocal best_quality, loss_sums, loss_steps
        with run.validating():
            metrics = evaluate(model, terms, adaptive.weights, val, cfg.scale, device)
        improved = adaptive.observe_quality(step, metrics["quality_ki_value"])
        if best_quality is None or metrics["quality_ki_value"] > best_quality:
            best_quality = metrics["quality_ki_value"]
            best = cpu_state({"step": step, "model": model.state_dict(), "quality": best_quality,
                           "psnr": metrics["psnr_ki_value"], "config": to_dict(cfg)})
            write_with(run.dir / CHECKPOINT_DIR / BEST_CHECKPOINT, lambda f: torch.save(best, f))
        sample = metrics.pop("sample")
        run.image(step, "val_bicubic_model_hr", sample)
        run.log(step, {"val": {"psnr": metrics["psnr_ki_value"], "psnr_bicubic": metrics["psnr_lr_value"],
                               "ssim": metrics["quality_ki_value"], "ssim_bicubic": metrics["quality_lr_value"],
                               "loss": metrics["validation_loss_value"]}})
        means = {k: v / max(1, loss_steps) for k, v in loss_sums.items()}
        loss_sums, loss_steps = {}, 0
        run.snapshot(step, {
            "learning_rate_value": lr_now,
            "lr_phase_name": phase,
            "total_loss_value": means.get("total"),
            **{f"{k}_loss_value": means.get(k) for k in LOSS_NAMES},
            **adaptive.snapshot_fields(LOSS_NAMES),
            "gradient_clip_val": adaptive.clip_value if cfg.grad_clip > 0 else None,
            **metrics,
            "best_quality_ever": best_quality,
            "vram_usage_gb": cuda_peak_gb() if device.type == "cuda" else 0.0,
            "adam_momentum_avg": adam_momentum_avg(optimizer),
        })
        run.event(f"validation at step {step}: PSNR {metrics['psnr_ki_value']:.2f} dB (bicubic "
                  f"{metrics['psnr_lr_value']:.2f}, {metrics['psnr_improvement_value']:+.2f}), SSIM "
                  f"{metrics['quality_ki_value']:.4f} (bicubic {metrics['quality_lr_value']:.4f})"
                  f"{', new best' if improved else ''}; mode {adaptive.mode}", console=True)

    # --- loop
    model.train()
    step = run.start_step
    log_sums: dict[str, float] = {}  # since the last train.jsonl line
    log_steps = 0
    for step in range(run.start_step + 1, cfg.steps + 1):
        scheduled_lr, phase = learning_rate(step, cfg)
        lr_now = scheduled_lr * adaptive.lr_factor()
        if adaptive.lr_factor() != 1.0:
            phase = "boost"
        for group in optimizer.param_groups:
            group["lr"] = lr_now

        hr = sampler.batch(cfg.batch_size, generator)
        lr_in = degrade(hr, cfg.scale, cfg.blur, cfg.noise, generator)
        hr, lr_in = hr.to(device, non_blocking=True), lr_in.to(device, non_blocking=True)
        values = terms(model(lr_in), hr)
        loss = sum(adaptive.weights[k] * v for k, v in values.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        clip = adaptive.clip_value if cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip).item()
        optimizer.step()

        losses = {k: v.item() for k, v in values.items()}
        losses["total"] = loss.item()  # type: ignore[union-attr]
        adaptive.after_step(step, losses, grad_norm)
        for name, value in losses.items():
            loss_sums[name] = loss_sums.get(name, 0.0) + value
            log_sums[name] = log_sums.get(name, 0.0) + value
        loss_steps += 1
        log_steps += 1

        # --- timing, logging
        if step % cfg.log_every == 0 or step == cfg.steps:
            means = {k: v / log_steps for k, v in log_sums.items()}
            log_sums, log_steps = {}, 0
            run.log(step, {"loss": means.pop("total"), "losses": means, "lr": lr_now, "grad_norm": grad_norm,
                           "clip": None if math.isinf(clip) else clip, "weights": dict(adaptive.weights),
                           "adaptive": {"plateau_counter": adaptive.plateau_counter, "lr_factor": adaptive.lr_factor()}})
        ctl = run.poll(step, epoch=(step - 1) // steps_per_epoch + 1, epoch_step=(step - 1) % steps_per_epoch + 1,
                       epoch_step_total=steps_per_epoch, on_validate=validate_now)

        # --- validation, statistics snapshot, best.pt
        if ctl.validate or step % cfg.val_every == 0 or step == cfg.steps:
            validate_now()

        # --- checkpoint, stop
        if ctl.save or ctl.stop or step % cfg.ckpt_every == 0 or step == cfg.steps:
            run.checkpoint(step, training_state(step), torch.save, metric=best_quality)
        if ctl.stop:
            break
    print(f"sr: finished at step {step}; best SSIM {best_quality}; run in {run.dir}")
