"""Train a score network over windows of Kolmogorov-flow states (SDA's Kolmogorov experiment).

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


MAX_EPOCHS = 10**7
MAX_LEVELS = 8


@dataclass
class Config:
    # SDA's CONFIG: architecture
    window: int = option(5, "states per window seen by the local score network (odd)", ge=1, le=63)
    embedding: int = option(64, "features of the diffusion-time embedding (even)", ge=2, le=4096)
    hidden_channels: list[int] = option([96, 192, 384], f"U-Net channels per level (1 to {MAX_LEVELS} levels)", ge=1, le=4096)
    hidden_blocks: list[int] = option([3, 3, 3], "residual blocks per U-Net level", ge=1, le=64)
    kernel_size: int = option(3, "convolution kernel size (odd; circular padding)", ge=1, le=15)
    activation: Literal["SiLU", "ReLU", "ELU", "GELU"] = option("SiLU", "activation of the U-Net")
    # SDA's CONFIG: training
    epochs: int = option(4096, "epochs (one random window per training trajectory each)", ge=1, le=MAX_EPOCHS)
    batch_size: int = option(32, "windows per optimizer step", ge=1, le=65536)
    optimizer: Literal["AdamW", "Adam"] = option("AdamW", "optimizer")
    learning_rate: float = option(2e-4, "initial learning rate", gt=0, le=1)
    weight_decay: float = option(1e-3, "weight decay", ge=0, le=1)
    scheduler: Literal["linear", "constant", "cosine"] = option("linear", "learning-rate schedule over the epochs")
    # runforge
    data: Path = option(Path("data/kolmogorov"), "folder with train.h5 and valid.h5 (`runforge data kolmogorov`)")
    seed: int = option(0, "random seed (initialisation, windows, noise)", ge=0, le=10**9)
    valid_every: int = option(1, "validate (loss_valid + statistics snapshot) every N epochs", ge=1, le=MAX_EPOCHS)
    sample_every: int = option(256, "save a figure of unconditional samples every N epochs (and at the end)", ge=1, le=MAX_EPOCHS)
    sample_steps: int = option(64, "reverse-diffusion steps for those samples", ge=1, le=100000)
    ckpt_every: int = option(64, "resumable checkpoint every N epochs", ge=1, le=MAX_EPOCHS)
    keep_last: int = option(3, "checkpoints kept besides the one with the best loss_valid (0: only that one)", ge=0, le=10**6)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when available with auto")
    wandb: Literal["disabled", "offline", "online"] = option(
        "disabled", f"log to wandb project {WANDB_PROJECT}; only online touches the network")
    # What --array N did is `runforge sweep kolmogorov --grid seed=S..S+N-1` now; the three flags stay
    # so that config.json files and checkpoints of older runs still load.
    array: int = option(1, "N > 1 is refused with the `runforge sweep` command that runs the N seeds", ge=1, le=1024)
    backend: Literal["async", "slurm", "submitit"] = option(
        "async", "with --array: slurm turns into `runforge sweep --executor slurm`")
    workers: int = option(2, "with --array: becomes the sweep's -j", ge=1, le=256)

    def check(self) -> None:
        if self.window % 2 == 0:
            raise ConfigError(None, f"--window: must be odd, got {self.window}")
        if len(self.hidden_channels) != len(self.hidden_blocks) or not 1 <= len(self.hidden_channels) <= MAX_LEVELS:
            raise ConfigError(None, f"--hidden_channels and --hidden_blocks: need the same number of levels, 1 to {MAX_LEVELS}")
        if self.kernel_size % 2 == 0:
            raise ConfigError(None, f"--kernel_size: must be odd, got {self.kernel_size}")
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
    """What a training needs, checked before the run directory exists: one run (not an --array), the
    dataset (read in full and checked; train() gets the same tensors back) and the device."""
    from .dataset_check import check_dataset  # h5py, only when a training starts

    if cfg.array > 1:
        raise ConfigError(None, array_refusal(cfg))
    if cfg.device == "cuda":  # auto and cpu always find a device: only cuda needs torch to ask
        from ..common import pick_device

        pick_device(cfg.device)
    check_dataset(cfg)


def array_refusal(cfg: Config) -> str:
    """`--array N` made a record run beside its N members; a sweep makes just the N runs."""
    last = cfg.seed + cfg.array - 1
    if cfg.backend == "slurm":
        return (f"--array {cfg.array} --backend slurm: job arrays are sweeps now: runforge sweep kolmogorov "
                f"--grid seed={cfg.seed}..{last} --executor slurm [--slurm_gpus 1] [other flags] (sbatch, srun "
                "and sacct on PATH; docs/kolmogorov.md, Job arrays)")
    return (f"--array {cfg.array}: job arrays are sweeps now: runforge sweep kolmogorov --grid "
            f"seed={cfg.seed}..{last} -j {cfg.workers} [other flags] (docs/kolmogorov.md, Job arrays)")


def run_options(cfg: Config) -> dict[str, Any]:
    # samples/ is where docs/kolmogorov.md puts this trainer's sample figures
    return {"steps": cfg.epochs, "images_dir": "samples", "checkpoint_options": {"keep_last": cfg.keep_last}}


# What one simulated batch (velocity at the simulation grid) and the stored data set hold in memory
MAX_BATCH_VALUES = 2**30
MAX_DATASET_VALUES = 2**31


@dataclass
class DataConfig:
    """`runforge data kolmogorov OUT`: trajectories simulated on a fine grid, block-mean coarsened."""

    trajectories: int = option(1024, "trajectories in total (split 80/10/10 into train/valid/test)", ge=3, le=10**6)
    size: int = option(256, "simulation grid points per side", ge=8, le=4096)
    coarsen: int = option(4, "block-mean factor from the simulation grid to the stored grid", ge=1, le=4096)
    length: int = option(64, "states kept per trajectory", ge=1, le=10**5)
    burn_in: int = option(64, "states simulated and dropped before those", ge=0, le=10**6)
    dt: float = option(0.2, "time between stored states", gt=0, le=10)
    reynolds: float = option(1000.0, "Reynolds number (viscosity 1/Re)", gt=0, le=10**6)
    drag: float = option(0.1, "linear drag coefficient", ge=0, le=100)
    wavenumber: int = option(4, "Kolmogorov forcing wavenumber (at most --size / 3, the dealiased band)", ge=1, le=1365)
    max_velocity: float = option(3.0, "largest speed of the random initial states", gt=0, le=100)
    batch: int = option(64, "trajectories simulated together", ge=1, le=65536)
    seed: int = option(0, "random seed of the initial states", ge=0, le=10**9)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when available with auto")

    def check(self) -> None:
        if self.size % self.coarsen:
            raise ConfigError(None, f"--coarsen: {self.coarsen} does not divide --size {self.size}")
        if self.wavenumber > self.size // 3:
            raise ConfigError(None, f"--wavenumber: {self.wavenumber} is above --size {self.size} / 3, where "
                                    "2/3 dealiasing would remove the forcing")
        batch_values = min(self.batch, self.trajectories) * self.length * 2 * self.size**2
        if batch_values > MAX_BATCH_VALUES:
            raise ConfigError(None, f"--batch: {self.batch} trajectories of --length {self.length} at --size "
                                    f"{self.size} are {batch_values:,} values at once, over {MAX_BATCH_VALUES:,}; "
                                    "lower --batch")
        stored = self.trajectories * self.length * 2 * (self.size // self.coarsen) ** 2
        if stored > MAX_DATASET_VALUES:
            raise ConfigError(None, f"--trajectories: {self.trajectories} trajectories of --length {self.length} "
                                    f"at {self.size // self.coarsen}² are {stored:,} values, over {MAX_DATASET_VALUES:,}")


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
    factor: int = option(4, "coarsening factor, or spacing of the sparse grid points (divides the grid size)", ge=1, le=4096)
    every: int = option(1, "sparse: observe every N-th state", ge=1, le=10**5)
    noise: float = option(0.1, "standard deviation of the observation noise", gt=0, le=100)
    data: Optional[Path] = option(None, "dataset folder with test.h5 (default: the run's --data)")
    trajectory: int = option(0, "first test trajectory", ge=0, le=10**6)
    trajectories: int = option(1, "how many test trajectories, from --trajectory", ge=1, le=10**6)
    start: int = option(0, "first state of each trajectory", ge=0, le=10**5)
    length: int = option(16, "states per assimilated trajectory", ge=1, le=10**5)
    samples: int = option(4, "posterior samples per trajectory", ge=1, le=4096)
    steps: int = option(256, "reverse-diffusion (predictor) steps", ge=1, le=100000)
    corrections: int = option(1, "Langevin corrections per step", ge=0, le=100)
    tau: float = option(0.5, "Langevin step amplitude", gt=0, le=100)
    gamma: float = option(1e-2, "likelihood widening γ of SDA's Gaussian posterior score", ge=0, le=100)
    seed: int = option(0, "random seed of the noise and the sampler", ge=0, le=10**9)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when available with auto")
    out: Optional[Path] = option(None, "output folder (default RUN/assimilation/{obs}_x{factor}_t{trajectory})")
