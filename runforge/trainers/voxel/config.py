"""Optimise a voxel world (map.json) through a differentiable renderer, guided by SDS or by reference views."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ...config import option
from ...errors import BadInputError, ConfigError

DEFAULT_OUT = "out_local/sds_training"
MODEL_HINT = ("SDS needs a Stable Diffusion 1.x/2.x or SDXL model in diffusers format on disk (nothing is downloaded); "
              "on a machine with internet run e.g. `huggingface-cli download stabilityai/stable-diffusion-2-1-base "
              "--local-dir models/sd21` and pass --model_path models/sd21, or use --guidance photometric")


@dataclass
class Config:
    prompt: str = option("", "text prompt for SDS guidance (empty: photometric guidance against the dataset's images)")
    steps: int = option(500, "training steps (numbered 1..steps)")
    dataset_id: int = option(1, "cameras and reference views from datasets/{id}/ (1 falls back to the bundled sample)")
    map_id: int | None = option(None, "source map maps/{id}/map.json (default: dataset_id)")
    init_mode: Literal["from_map", "ground_plane", "cube", "empty"] = option("from_map", "how the grid starts")
    lr: float = option(0.01, "Adam learning rate of both logit tensors")
    guidance: Literal["auto", "sds", "photometric"] = option("auto", "auto: sds with a --prompt, photometric without")
    model_path: Path | None = option(None, "diffusers model folder (SD 1.x/2.x or SDXL) for SDS")
    cfg_scale: float = option(7.5, "classifier-free guidance scale of SDS")
    t_min: float = option(0.02, "lowest SDS timestep, as a fraction of the scheduler's timesteps")
    t_max_start: float = option(0.98, "highest SDS timestep at step 1 (coarse)")
    t_max_end: float = option(0.5, "highest SDS timestep at the last step (fine)")
    grad_clip: float = option(1.0, "clamp each SDS latent gradient to +-this (0: off)")
    lambda_sparsity: float = option(0.001, "weight of mean occupancy")
    lambda_entropy: float = option(0.001, "weight of the binary entropy of occupancy (pushes voxels to 0 or 1)")
    lambda_smooth: float = option(0.001, "weight of the total variation of occupancy")
    lambda_support: float = option(0.0, "weight of the support prior: no voxel more occupied than the one below it "
                                        "(fills interiors no camera sees, discourages floating blocks)")
    temp_start: float = option(2.0, "material softmax temperature at step 1")
    temp_end: float = option(0.5, "material softmax temperature at the last step")
    threshold: float = option(0.5, "occupancy probability above which a voxel is written as a block")
    resolution: int | None = option(None, "render size: the longer image side in pixels (default: the dataset's camera size)")
    rays_per_step: int = option(4096, "photometric: random rays per step (0: the whole image)")
    image_every: int = option(5, "save a render every N steps (and at step 1 and the last)")
    save_map_every: int = option(50, "save maps/step_N.json and a checkpoint every N steps (and the last)")
    log_every: int = option(10, "write a train.jsonl line every N steps (and at step 1 and the last)")
    keep_last: int = option(3, "checkpoints kept (for --resume)")
    seed: int = option(0, "random seed (camera order, ray subsets, SDS noise)")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "auto: cuda when available")
    threads: int = option(1, "torch CPU threads (0: torch's default); the renderer's gathers gain nothing from more, "
                             "and on a shared CPU extra threads spin and slow every step down")
    export: bool = option(True, "export final_map.json to maps/trained_map_{SOURCE}_{X}/ after training")
    registry: Path = option(Path("maps"), "the registry folder exports go to")

    @property
    def source_map_id(self) -> int:
        return self.dataset_id if self.map_id is None else self.map_id

    @property
    def resolved_guidance(self) -> str:
        if self.guidance == "auto":
            return "sds" if self.prompt else "photometric"
        return self.guidance

    def check(self) -> None:
        """Cross-field rules and the inputs on disk, so bad input fails before a run directory exists."""
        from .dataset import image_path, read_cameras, resolve_dataset, resolve_map
        from .map_io import read_map

        for name in ("steps", "image_every", "save_map_every", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ConfigError(None, f"--{name}: must be at least 1, got {getattr(self, name)}")
        if self.resolution is not None and self.resolution < 8:
            raise ConfigError(None, f"--resolution: must be at least 8, got {self.resolution}")
        if self.rays_per_step < 0 or self.threads < 0 or self.lr <= 0 or min(self.temp_start, self.temp_end) <= 0:
            raise ConfigError(None, "--rays_per_step and --threads must be >= 0, --lr and the temperatures > 0")
        if not 0 < self.threshold < 1:
            raise ConfigError(None, f"--threshold: must be between 0 and 1, got {self.threshold}")
        if not 0 <= self.t_min < self.t_max_end <= 1 or not self.t_min < self.t_max_start <= 1:
            raise ConfigError(None, "SDS timesteps need 0 <= t_min < t_max_end, t_max_start <= 1")
        if self.resolved_guidance == "sds":
            if not self.prompt:
                raise ConfigError(None, "--guidance sds needs a --prompt")
            if self.model_path is None:
                raise ConfigError(None, f"--model_path is missing: {MODEL_HINT}")
            if not (self.model_path / "unet").is_dir():
                raise BadInputError(self.model_path, f"is not a diffusers model folder (no unet/): {MODEL_HINT}")
        dataset_dir = resolve_dataset(self.dataset_id)[0]
        read_map(resolve_map(self.source_map_id)[0])
        cameras = read_cameras(dataset_dir / "cameras.json")
        if self.resolved_guidance == "photometric":
            missing = [c.index for c in cameras if not image_path(dataset_dir, c.index).is_file()]
            if missing:
                raise BadInputError(image_path(dataset_dir, missing[0]),
                                    f"photometric guidance needs a reference image for every view "
                                    f"({len(missing)} missing); render them with `runforge data render-views` "
                                    "or give a --prompt for SDS")


PRESETS = {
    "tiny": Config(steps=6, resolution=32, rays_per_step=0, image_every=2, save_map_every=3, log_every=2, export=False),
    "demo": Config(steps=1500, init_mode="ground_plane", lr=0.1, lambda_support=0.01, image_every=50,
                   save_map_every=500, log_every=25),
}


def run_options(cfg: Config) -> dict[str, Any]:
    return {"steps": cfg.steps, "out": DEFAULT_OUT,
            "checkpoint_options": {"keep_last": cfg.keep_last}}
