"""Train a score network over windows of Kolmogorov-flow states (SDA's Kolmogorov experiment, seed 004).

The first twelve fields are SDA's CONFIG, with its names and defaults (config.json
starts with exactly those keys); the rest are runforge's additions. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Optional

from ...config import option
from ...errors import ConfigError

WANDB_PROJECT = "sda-kolmogorov"


@dataclass
class Config:
    # SDA's CONFIG: architecture
    window: int = option(5, "states per window seen by the local score network (odd)")
    embedding: int = option(64, "features of the diffusion-time embedding")
    hidden_channels: list[int] = option([96, 192, 384], "U-Net channels per level")
    hidden_blocks: list[int] = option([3, 3, 3], "residual blocks per U-Net level")
    kernel_size: int = option(3, "convolution kernel size (circular padding)")
    activation: Literal["SiLU", "ReLU", "ELU", "GELU"] = option("SiLU", "activation of the U-Net")
    # SDA's CONFIG: training
    epochs: int = option(4096, "epochs (one random window per training trajectory each)")
    batch_size: int = option(32, "windows per optimizer step")
    optimizer: Literal["AdamW", "Adam"] = option("AdamW", "optimizer")
    learning_rate: float = option(2e-4, "initial learning rate")
    weight_decay: float = option(1e-3, "weight decay")
    scheduler: Literal["linear", "constant", "cosine"] = option("linear", "learning-rate schedule over the epochs")
    # runforge
    data: Path = option(Path("data/kolmogorov"), "folder with train.h5 and valid.h5 (`runforge data kolmogorov`)")
    seed: int = option(0, "random seed (initialisation, windows, noise)")
    valid_every: int = option(1, "validate (loss_valid + statistics snapshot) every N epochs")
    sample_every: int = option(256, "save a figure of unconditional samples every N epochs (and at the end)")
    sample_steps: int = option(64, "reverse-diffusion steps for those samples")
    ckpt_every: int = option(64, "resumable checkpoint every N epochs")
    keep_last: int = option(3, "checkpoints kept")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when available with auto")
    wandb: Literal["disabled", "offline", "online"] = option(
        "disabled", f"log to wandb project {WANDB_PROJECT}; only online touches the network")
    array: int = option(1, "launch N runs in parallel (seeds seed..seed+N-1), each in its own run dir")
    backend: Literal["async", "slurm", "submitit"] = option(
        "async", "job-array scheduler: dawgz async (local processes), dawgz slurm, or submitit (local)")
    workers: int = option(2, "parallel processes of a local job array")

    def check(self) -> None:
        if self.window < 1 or self.window % 2 == 0:
            raise ConfigError(None, f"--window: must be a positive odd number, got {self.window}")
        if len(self.hidden_channels) != len(self.hidden_blocks) or not self.hidden_channels:
            raise ConfigError(None, "--hidden_channels and --hidden_blocks: need the same, non-zero number of levels")
        if self.kernel_size % 2 == 0:
            raise ConfigError(None, f"--kernel_size: must be odd, got {self.kernel_size}")
        for name in ("epochs", "batch_size", "embedding", "valid_every", "sample_every", "sample_steps",
                     "ckpt_every", "keep_last", "array", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(None, f"--{name}: must be at least 1, got {getattr(self, name)}")
        if self.embedding % 2:
            raise ConfigError(None, f"--embedding: must be even, got {self.embedding}")


PRESETS = {
    # About 12 minutes on one core, on the 32×32 data of `runforge data kolmogorov --preset cpu`. Measured
    # there (bench/kolmogorov_assim.py): twice the channels lowers loss_valid but not the assimilation
    # error, and samples 2.5× slower; learning rate 2e-3 beats 1e-3.
    "cpu": Config(embedding=32, hidden_channels=[16, 32, 64], hidden_blocks=[2, 2, 2], epochs=1200,
                  batch_size=32, learning_rate=2e-3, valid_every=8, sample_every=300, ckpt_every=100),
    # Seconds: for tests and smoke runs.
    "tiny": Config(embedding=16, hidden_channels=[8, 16], hidden_blocks=[1, 1], epochs=4, batch_size=8,
                   learning_rate=1e-3, valid_every=2, sample_every=4, sample_steps=4, ckpt_every=2),
}


def check_inputs(cfg: Config) -> None:
    from .data import check_dataset  # h5py (and torch), only when a training starts

    check_dataset(cfg.data, cfg.window)


def run_options(cfg: Config) -> dict[str, Any]:
    # samples/ as the spec's run layout for this trainer
    return {"steps": cfg.epochs, "images_dir": "samples", "checkpoint_options": {"keep_last": cfg.keep_last}}


@dataclass
class DataConfig:
    """`runforge data kolmogorov OUT`: trajectories simulated on a fine grid, block-mean coarsened."""

    trajectories: int = option(1024, "trajectories in total (split 80/10/10 into train/valid/test)")
    size: int = option(256, "simulation grid points per side")
    coarsen: int = option(4, "block-mean factor from the simulation grid to the stored grid")
    length: int = option(64, "states kept per trajectory")
    burn_in: int = option(64, "states simulated and dropped before those")
    dt: float = option(0.2, "time between stored states")
    reynolds: float = option(1000.0, "Reynolds number (viscosity 1/Re)")
    drag: float = option(0.1, "linear drag coefficient")
    wavenumber: int = option(4, "Kolmogorov forcing wavenumber")
    max_velocity: float = option(3.0, "largest speed of the random initial states")
    batch: int = option(64, "trajectories simulated together")
    seed: int = option(0, "random seed of the initial states")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when available with auto")

    def check(self) -> None:
        for name in ("trajectories", "size", "coarsen", "length", "batch"):
            if getattr(self, name) < 1:
                raise ConfigError(None, f"--{name}: must be at least 1, got {getattr(self, name)}")
        if self.trajectories < 3:
            raise ConfigError(None, f"--trajectories: need at least 3 for a train/valid/test split, got {self.trajectories}")
        if self.size % self.coarsen:
            raise ConfigError(None, f"--coarsen: {self.coarsen} does not divide --size {self.size}")
        if self.burn_in < 0 or self.dt <= 0 or self.reynolds <= 0:
            raise ConfigError(None, "--burn_in must be >= 0, --dt and --reynolds > 0")


DATA_PRESETS = {
    "default": DataConfig(),
    "cpu": DataConfig(trajectories=64, size=64, coarsen=2, length=64, burn_in=64),
    "tiny": DataConfig(trajectories=10, size=32, coarsen=2, length=12, burn_in=2, batch=10),
}


def data_preset(name: str) -> DataConfig:
    return replace(DATA_PRESETS[name])


@dataclass
class AssimilateConfig:
    """`runforge assimilate RUN`: posterior samples of held-out test trajectories given noisy observations."""

    obs: Literal["coarse", "sparse"] = field(metadata={
        "help": "coarse: block means of FACTOR×FACTOR cells of every state; sparse: every FACTOR-th grid "
                "point of every EVERY-th state"})
    factor: int = option(4, "coarsening factor, or spacing of the sparse grid points")
    every: int = option(1, "sparse: observe every N-th state")
    noise: float = option(0.1, "standard deviation of the observation noise")
    data: Optional[Path] = option(None, "dataset folder with test.h5 (default: the run's --data)")
    trajectory: int = option(0, "first test trajectory")
    trajectories: int = option(1, "how many test trajectories, from --trajectory")
    start: int = option(0, "first state of each trajectory")
    length: int = option(16, "states per assimilated trajectory")
    samples: int = option(4, "posterior samples per trajectory")
    steps: int = option(256, "reverse-diffusion (predictor) steps")
    corrections: int = option(1, "Langevin corrections per step")
    tau: float = option(0.5, "Langevin step amplitude")
    gamma: float = option(1e-2, "likelihood widening γ of SDA's Gaussian posterior score")
    seed: int = option(0, "random seed of the noise and the sampler")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when available with auto")
    out: Optional[Path] = option(None, "output folder (default RUN/assimilation/{obs}_x{factor}_t{trajectory})")

    def check(self) -> None:
        for name in ("factor", "every", "length", "samples", "steps", "trajectories"):
            if getattr(self, name) < 1:
                raise ConfigError(None, f"--{name}: must be at least 1, got {getattr(self, name)}")
        if self.trajectory < 0 or self.start < 0 or self.corrections < 0:
            raise ConfigError(None, "--trajectory, --start and --corrections must be >= 0")
        if self.noise <= 0 or self.tau <= 0 or self.gamma < 0:
            raise ConfigError(None, "--noise and --tau must be positive, --gamma >= 0")
