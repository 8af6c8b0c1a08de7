"""Super-resolution: a residual CNN trained with l1/ms/gradient/perceptual losses whose weights an adaptive system tunes."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional

from ...config import option
from ...errors import ConfigError
from ...run.layout import CHECKPOINT_DIR

SNAPSHOT_PATTERN = "Statistik_{step}.json"
SNAPSHOT_GROUPS: dict[str, tuple[str, ...]] = {
    "progress": ("step_current", "epoch_num", "step_max", "epoch_step_current", "epoch_step_total"),
    "learning rate": ("learning_rate_value", "lr_phase_name"),
    "losses": ("total_loss_value", "l1_loss_value", "ms_loss_value", "gradient_loss_value", "perceptual_loss_value"),
    "weights": ("l1_weight_current", "ms_weight_current", "gradient_weight_current", "perceptual_weight_current",
                "gradient_clip_val"),
    "adaptive": ("adaptive_mode", "adaptive_is_cooldown", "adaptive_cooldown_remaining", "adaptive_plateau_counter",
                 "adaptive_lr_boost_available", "adaptive_perceptual_trend", "adaptive_boost_remaining",
                 "adaptive_boost_count", "adaptive_l1_trend", "adaptive_ms_trend", "adaptive_gradient_trend"),
    "quality": ("quality_lr_value", "quality_ki_value", "quality_improvement_value", "quality_ki_to_gt_value",
                "quality_lr_to_gt_value", "validation_loss_value", "best_quality_ever",
                "psnr_lr_value", "psnr_ki_value", "psnr_improvement_value"),
    "performance": ("iteration_duration", "vram_usage_gb", "ram_usage_gb", "adam_momentum_avg",
                    "eta_total_formatted", "eta_epoch_formatted", "eta_total_seconds", "memory_rss_bytes"),
    "layers": ("layer_activity_map",),
    "status": ("training_active", "validation_running", "training_paused", "last_update_time"),
}
"""Every field of a Statistik_{STEP}.json, by heading and in file order: recorded in run.json, so
the dashboard shows an sr snapshot in these groups. The loss and weight fields are one per term of
`train.LOSS_NAMES`, enabled or not; progress, performance and status are the run layer's live state
(`Run.status_fields`) plus `adam_momentum_avg` and the GPU peak the trainer measures itself."""
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


MAX_STEPS = 10**9


@dataclass
class Config:
    # --- data
    data_root: Optional[Path] = option(None, "HR images in DIR/train and DIR/val (or one folder, split 90/10); none: the bundled procedural textures")
    scale: Literal[2, 4] = option(4, "upscaling factor; LR inputs are bicubic downsamples of the HR images")
    patch_size: int = option(128, "HR training patch size in pixels (a multiple of --scale)", ge=8, le=1024)
    batch_size: int = option(16, "patches per step", ge=1, le=1024)
    blur: float = option(0.0, "largest Gaussian blur sigma (HR pixels) applied before downsampling; each patch draws one in [0, blur]", ge=0, le=10)
    noise: float = option(0.0, "largest std of Gaussian noise added to the LR input (0..1 units); each patch draws one in [0, noise]", ge=0, le=1)
    # SSIM's 11-pixel window needs crops of at least that size
    val_crop: int = option(192, "HR size of the fixed validation crops (a multiple of --scale)", ge=16, le=2048)
    val_crops: int = option(32, "number of fixed validation crops, taken in turn from the val images", ge=1, le=4096)
    # --- model
    channels: int = option(64, "feature channels of the residual CNN", ge=1, le=512)
    blocks: int = option(16, "residual blocks (Forward_Block_01 ...)", ge=1, le=256)
    # --- optimisation
    steps: int = option(100000, "training steps", ge=1, le=MAX_STEPS)
    lr: float = option(2e-4, "peak Adam learning rate", gt=0, le=1)
    min_lr: float = option(1e-6, "learning rate at the end of the cosine phase (at most --lr)", ge=0, le=1)
    warmup_steps: int = option(1000, "linear LR warmup steps (adaptive mode Warmup)", ge=0, le=MAX_STEPS)
    grad_clip: float = option(1.0, "gradient-norm clip: the fixed value, or the start value of adaptive clipping (0: off)", ge=0, le=1000)
    # --- losses (start weights; the adaptive system moves them)
    weight_l1: float = option(0.6, "start weight of the L1 loss", ge=0, le=100)
    weight_ms: float = option(0.2, "start weight of the multi-scale L1 loss", ge=0, le=100)
    weight_gradient: float = option(0.2, "start weight of the Sobel gradient loss", ge=0, le=100)
    weight_perceptual: float = option(0.1, "start weight of the perceptual loss (used only with --perceptual_weights)", ge=0, le=100)
    perceptual_weights: Optional[Path] = option(None, "local torchvision-style VGG16/19 state dict (.pth) for the perceptual loss; none: the term is off")
    # --- adaptive system
    adaptive: bool = option(True, "rebalance loss weights, boost the LR on plateaus and adapt gradient clipping")
    rebalance_every: int = option(100, "steps between loss-weight rebalancing", ge=1, le=MAX_STEPS)
    # a trend compares two halves of at least two values each
    trend_window: int = option(200, "recent steps each loss term's trend is measured over", ge=4, le=10**6)
    weight_bound: float = option(2.0, "each weight stays within [start / B, start * B]", ge=1, le=100)
    plateau_patience: int = option(2000, "steps without a better validation quality before mode Plateau", ge=0, le=MAX_STEPS)
    boost_patience: int = option(4000, "steps without a better validation quality before an LR boost", ge=0, le=MAX_STEPS)
    boost_factor: float = option(2.0, "LR multiplier during a boost", ge=1, le=10)
    boost_steps: int = option(500, "length of a boost in steps", ge=1, le=MAX_STEPS)
    cooldown_steps: int = option(2000, "steps after a boost before another may fire", ge=0, le=MAX_STEPS)
    # --- schedule of outputs
    val_every: int = option(500, "validate and write Statistik_{STEP}.json every N steps (and on a validate command)", ge=1, le=MAX_STEPS)
    log_every: int = option(50, "write a train.jsonl line every N steps", ge=1, le=MAX_STEPS)
    ckpt_every: int = option(500, "write ckpts/last.pt every N steps", ge=1, le=MAX_STEPS)
    learn_dir: str = option("Learn", "folder for the Statistik_{STEP}.json snapshots: inside the run, or an absolute path (e.g. DATA_ROOT/Learn, shared by runs)")
    # --- machine
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where to train: auto picks cuda when present")
    threads: int = option(0, "torch CPU threads (0: torch's default; 1 is as fast as 2 on a 2-core machine)", ge=0, le=1024)
    seed: int = option(0, "random seed (initialisation, patches, degradation)", ge=0, le=10**9)

    def check(self) -> None:
        for name in ("patch_size", "val_crop"):
            if getattr(self, name) % self.scale:
                raise ConfigError(None, f"--{name}: {getattr(self, name)} is not a multiple of --scale {self.scale}")
        if self.patch_size // self.scale < 4:
            raise ConfigError(None, f"--patch_size: {self.patch_size} leaves LR patches under 4 pixels at --scale {self.scale}")
        if self.min_lr > self.lr:
            raise ConfigError(None, f"--min_lr: {self.min_lr:g} is above --lr {self.lr:g}")
        if self.blur > 0 and blur_radius(self.blur) >= min(self.patch_size, self.val_crop):
            raise ConfigError(None, f"--blur: a sigma of {self.blur:g} needs a {blur_radius(self.blur)}-pixel border, "
                                    f"which --patch_size {self.patch_size} / --val_crop {self.val_crop} cannot give")
        if self.weight_l1 + self.weight_ms + self.weight_gradient <= 0:
            raise ConfigError(None, "--weight_l1, --weight_ms, --weight_gradient: at least one must be positive")
        learn = Path(self.learn_dir)
        if not self.learn_dir.strip() or (not learn.is_absolute() and ".." in learn.parts):
            raise ConfigError(None, f"--learn_dir: {self.learn_dir!r} must be a folder inside the run or an absolute path")


def blur_radius(sigma: float) -> int:
    """The Gaussian blur's kernel radius (3 sigma); reflect padding needs it below the image size."""
    return max(1, math.ceil(3 * sigma))


def check_inputs(cfg: Config) -> None:
    """What a training reads, checked before the run directory exists: the device, every image (decoded
    here; train() gets the same tensors back), the VGG weights, an absolute --learn_dir."""
    from ..common import check_output, pick_device
    from .data import load_split
    from .losses import load_vgg_features

    pick_device(cfg.device)
    load_split(cfg.data_root, cfg.patch_size, cfg.val_crop)
    if cfg.perceptual_weights is not None:
        load_vgg_features(cfg.perceptual_weights)
    if Path(cfg.learn_dir).is_absolute():
        check_output(cfg.learn_dir, flag="--learn_dir")


_CPU = Config(
    scale=2, patch_size=48, batch_size=16, val_crop=96, val_crops=16,
    channels=32, blocks=4, steps=1000, lr=1e-3, min_lr=2e-5, warmup_steps=100,
    rebalance_every=50, trend_window=100, plateau_patience=300, boost_patience=600,
    boost_steps=100, cooldown_steps=400, val_every=250, log_every=25, ckpt_every=250, threads=1,
)

PRESETS = {
    # The quality figure on a CPU (bench/sr_quality.py): x2, a small model, a few minutes.
    "cpu": _CPU,
    # Seconds: every code path (validation, snapshots, checkpoints) in a handful of steps.
    "tiny": replace(_CPU, patch_size=16, batch_size=2, val_crop=32, val_crops=2, channels=8, blocks=2, steps=8,
                    warmup_steps=2, rebalance_every=2, trend_window=4, plateau_patience=4, boost_patience=6,
                    boost_steps=2, cooldown_steps=2, val_every=4, log_every=2, ckpt_every=4),
}


def run_options(cfg: Config) -> dict[str, Any]:
    # last.pt is the one resumable checkpoint: the manager keeps every index entry (keep_last=None)
    # because retention would otherwise unlink the fixed name it has just written.
    return {
        "steps": cfg.steps,
        "snapshot_dir": cfg.learn_dir,
        "snapshot_pattern": SNAPSHOT_PATTERN,
        "snapshot_groups": SNAPSHOT_GROUPS,
        "checkpoint_options": {"folder": CHECKPOINT_DIR, "pattern": LAST_CHECKPOINT, "keep_last": None,
                               "mode": "max"},
    }
