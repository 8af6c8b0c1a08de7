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
              "--local-dir models/sd21` and pass --model_path models/sd21, train the small voxel prior here with "
              "`runforge data voxel-prior runs/voxel-prior`, or use --guidance photometric")


PIXEL_CHANNELS = 3
"""A diffusion UNet with this many input channels denoises RGB images: SDS runs in pixel space, without a VAE."""
MAX_STEPS = 10**7
MAX_RESOLUTION = 4096
MAX_SEED = 10**9


@dataclass
class Config:
    prompt: str = option("", "text prompt for SDS guidance (empty: photometric guidance against the dataset's images)")
    steps: int = option(500, "training steps (numbered 1..steps)", ge=1, le=MAX_STEPS)
    dataset_id: int = option(1, "cameras and reference views from datasets/{id}/ (1 falls back to the bundled sample)",
                             ge=0, le=10**9)
    map_id: int | None = option(None, "source map maps/{id}/map.json (default: dataset_id)", ge=0, le=10**9)
    init_mode: Literal["from_map", "ground_plane", "cube", "empty"] = option("from_map", "how the grid starts")
    init_fog: float | None = option(None, "occupancy of the voxels the start leaves empty (0: empty; default 0.05, "
                                          "and 0 for from_map); a faint fog lets a fit grow hills from a flat floor",
                                    ge=0, lt=0.5)
    lr: float = option(0.01, "Adam learning rate of both logit tensors", gt=0, le=10)
    guidance: Literal["auto", "sds", "photometric"] = option("auto", "auto: sds with a --prompt, photometric without")
    model_path: Path | None = option(None, "diffusers model folder (SD 1.x/2.x or SDXL) for SDS")
    cfg_scale: float = option(7.5, "classifier-free guidance scale of SDS", ge=0, le=1000)
    t_min: float = option(0.02, "lowest SDS timestep, as a fraction of the scheduler's timesteps", ge=0, lt=1)
    t_max_start: float = option(0.98, "highest SDS timestep at step 1 (coarse)", gt=0, le=1)
    t_max_end: float = option(0.5, "highest SDS timestep at the last step (fine)", gt=0, le=1)
    grad_clip: float = option(1.0, "clamp each SDS latent gradient to +-this (0: off)", ge=0, le=1e6)
    lambda_sparsity: float = option(0.001, "weight of mean occupancy", ge=0, le=1e3)
    lambda_entropy: float = option(0.001, "weight of the binary entropy of occupancy (pushes voxels to 0 or 1)",
                                   ge=0, le=1e3)
    lambda_smooth: float = option(0.001, "weight of the total variation of occupancy", ge=0, le=1e3)
    lambda_support: float = option(0.0, "weight of the support prior: no voxel more occupied than the one below it "
                                        "(fills interiors no camera sees, discourages floating blocks)", ge=0, le=1e3)
    temp_start: float = option(2.0, "material softmax temperature at step 1", ge=0.01, le=100)
    temp_end: float = option(0.5, "material softmax temperature at the last step", ge=0.01, le=100)
    threshold: float = option(0.5, "occupancy probability above which a voxel is written as a block", gt=0, lt=1)
    resolution: int | None = option(None, "render size: the longer image side in pixels (default: the dataset's "
                                          "camera size)", ge=8, le=MAX_RESOLUTION)
    rays_per_step: int = option(4096, "photometric: random rays per step (0: the whole image)", ge=0, le=10**7)
    views_per_step: int = option(1, "photometric: cameras per step, rays_per_step shared among them", ge=1,
                                 le=10_000)
    image_every: int = option(5, "save a render every N steps (and at step 1 and the last)", ge=1, le=MAX_STEPS)
    save_map_every: int = option(50, "save maps/step_N.json and a checkpoint every N steps (and the last)",
                                 ge=1, le=MAX_STEPS)
    log_every: int = option(10, "write a train.jsonl line every N steps (and at step 1 and the last)",
                            ge=1, le=MAX_STEPS)
    keep_last: int = option(3, "checkpoints kept (for --resume; 0: none)", ge=0, le=10**6)
    seed: int = option(0, "random seed (camera order, ray subsets, SDS noise)", ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "auto: cuda when available")
    threads: int = option(1, "torch CPU threads (0: torch's default); the renderer's gathers gain nothing from more, "
                             "and on a shared CPU extra threads spin and slow every step down", ge=0, le=1024)
    export: bool = option(True, "export final_map.json to maps/trained_map_{SOURCE}_{X}/ after training")
    registry: Path = option(Path("maps"), "the registry folder exports go to")

    @property
    def source_map_id(self) -> int:
        return self.dataset_id if self.map_id is None else self.map_id

    @property
    def resolved_init_fog(self) -> float:
        if self.init_fog is not None:
            return self.init_fog
        return 0.0 if self.init_mode == "from_map" else 0.05

    @property
    def resolved_guidance(self) -> str:
        if self.guidance == "auto":
            return "sds" if self.prompt else "photometric"
        return self.guidance

    def check(self) -> None:
        """Rules between fields (each field's own range is in its `option`); the inputs on disk are `check_inputs`'s."""
        if not self.t_min < self.t_max_end or not self.t_min < self.t_max_start:
            raise ConfigError(None, f"--t_min: must be below --t_max_start and --t_max_end, got {self.t_min} with "
                                    f"{self.t_max_start} and {self.t_max_end}")
        if self.resolved_guidance == "sds":
            if not self.prompt:
                raise ConfigError(None, "--guidance sds needs a --prompt")
            if self.model_path is None:
                raise ConfigError(None, f"--model_path is missing: {MODEL_HINT}")


def check_model_folder(model_path: Path) -> None:
    """The folders (and their configs) `guidance.load_sds` reads, without loading any weights. A UNet that
    takes RGB images (in_channels 3, e.g. `runforge data voxel-prior`'s) works in pixel space and needs no vae/."""
    from ...run.files import read_json_object

    unet_config = model_path / "unet" / "config.json"
    pixel_space = unet_config.is_file() and (
        read_json_object(unet_config, "UNet config", BadInputError).get("in_channels") == PIXEL_CHANNELS)
    required = {"unet": "config.json", "vae": "config.json", "scheduler": "scheduler_config.json",
                "tokenizer": None, "text_encoder": "config.json"}
    if pixel_space:
        del required["vae"]
    if (model_path / "text_encoder_2").is_dir():  # SDXL
        required.update(tokenizer_2=None, text_encoder_2="config.json")
    for folder, config in required.items():
        if not (model_path / folder).is_dir():
            raise BadInputError(model_path, f"is not a diffusers model folder (no {folder}/): {MODEL_HINT}")
        if config is not None and not (model_path / folder / config).is_file():
            raise BadInputError(model_path, f"is not a diffusers model folder (no {folder}/{config}): {MODEL_HINT}")


PRESETS = {
    "tiny": Config(steps=6, resolution=32, rays_per_step=0, image_every=2, save_map_every=3, log_every=2, export=False),
    "demo": Config(steps=500, init_mode="ground_plane", lr=0.1, lambda_support=0.01, temp_start=1.0, temp_end=0.3,
                   rays_per_step=8192, views_per_step=8, image_every=25, save_map_every=100, log_every=10),
    # SDS with the pixel-space prior of `runforge data voxel-prior` (docs/voxel.md, "SDS with the voxel prior")
    "prior_sds": Config(steps=400, init_mode="ground_plane", init_fog=0.02, resolution=32, lr=0.1, cfg_scale=7.5,
                        t_min=0.3, t_max_start=0.95, t_max_end=0.7, lambda_support=0.01, temp_start=1.0,
                        temp_end=0.3, image_every=50, save_map_every=100, log_every=10),
}


def run_options(cfg: Config) -> dict[str, Any]:
    return {"steps": cfg.steps, "out": DEFAULT_OUT,
            "checkpoint_options": {"keep_last": cfg.keep_last}}


def check_inputs(cfg: Config) -> None:
    """Everything on disk and on the machine the run will use, before a run directory exists or a resumed
    run is touched: the device, the model folder, the map, the cameras, every reference view, the registry."""
    from ..common import pick_device
    from .dataset import image_path, read_cameras, read_image, resolve_dataset, resolve_map
    from .export import check_registry
    from .map_io import read_map

    if cfg.resolved_guidance == "sds":
        assert cfg.model_path is not None  # Config.check
        check_model_folder(cfg.model_path)
    dataset_dir = resolve_dataset(cfg.dataset_id)[0]
    read_map(resolve_map(cfg.source_map_id)[0])
    cameras = read_cameras(dataset_dir / "cameras.json")
    if cfg.resolved_guidance == "photometric":
        missing = [c.index for c in cameras if not image_path(dataset_dir, c.index).is_file()]
        if missing:
            raise BadInputError(image_path(dataset_dir, missing[0]),
                                f"photometric guidance needs a reference image for every view "
                                f"({len(missing)} missing); render them with `runforge data render-views` "
                                "or give a --prompt for SDS")
        for camera in cameras:  # decoded here, so a truncated or oversized image fails before the run exists
            read_image(image_path(dataset_dir, camera.index), camera.width, camera.height)
    if cfg.export:
        check_registry(cfg.registry, "--registry")
    pick_device(cfg.device)  # last: it imports torch, which the checks above need not wait for
