"""3D Gaussian splatting from a COLMAP scene (gsplat's simple_trainer); defaults as the seed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Optional

from ...config import option
from ...errors import ConfigError


@dataclass
class Config:
    data_dir: Path = field(metadata={"help": "COLMAP scene: images/ and sparse/0/ (binary or text)"})
    data_factor: int = option(4, "downsample images by 1, 2, 4 or 8 (images_{factor}/ when present)")
    test_every: int = option(8, "every N-th image is held out for validation")
    normalize_world_space: bool = option(True, "centre, align and scale the scene from the cameras")
    global_scale: float = option(1.0, "multiplies scene_scale (1.1 x the camera spread)")
    max_steps: int = option(30_000, "training steps")
    eval_steps: tuple[int, ...] = option((7_000, 30_000), "evaluate after these (1-based) step counts")
    save_steps: tuple[int, ...] = option((7_000, 30_000), "checkpoint after these step counts (and the last)")
    ply_steps: tuple[int, ...] = option((7_000, 30_000), "write ply/point_cloud_{step}.ply after these step counts")
    save_ply: bool = option(True, "export PLY files at ply_steps")
    batch_size: int = option(1, "images per step per rank (learning rates scale with it)")
    init_type: Literal["sfm", "random"] = option("sfm", "initial Gaussians: the SfM points, or random in a box")
    init_num_pts: int = option(100_000, "Gaussians of a random init")
    init_extent: float = option(3.0, "half-size of the random init box, in scene_scale units")
    init_opa: float = option(0.1, "initial opacity")
    init_scale: float = option(1.0, "initial scale multiplier on the 3-nearest-neighbour distance")
    sh_degree: int = option(3, "maximum spherical-harmonics degree")
    sh_degree_interval: int = option(1000, "add one SH degree every N steps")
    means_lr: float = option(1.6e-4, "means learning rate (times scene_scale, decays to 1 percent by max_steps)")
    scales_lr: float = option(5e-3, "log-scales learning rate")
    quats_lr: float = option(1e-3, "quaternions learning rate")
    opacities_lr: float = option(5e-2, "opacity-logits learning rate")
    sh0_lr: float = option(2.5e-3, "SH degree-0 learning rate")
    shN_lr: float = option(2.5e-3 / 20, "higher SH degrees learning rate")
    ssim_lambda: float = option(0.2, "loss = (1 - l) * L1 + l * (1 - SSIM)")
    opacity_reg: float = option(0.0, "weight of mean opacity in the loss")
    scale_reg: float = option(0.0, "weight of mean scale in the loss")
    near_plane: float = option(0.01, "near clipping plane")
    far_plane: float = option(1e10, "far clipping plane")
    antialiased: bool = option(False, "anti-aliased rasterization (opacity compensation, as gsplat's mode)")
    strategy: Literal["default", "mcmc"] = option("default", "densification strategy")
    prune_opa: float = option(0.005, "default: prune below this opacity")
    grow_grad2d: float = option(0.0002, "default: densify above this mean 2D gradient")
    grow_scale3d: float = option(0.01, "default: split above / clone below this scale (x scene_scale)")
    grow_scale2d: float = option(0.05, "default: split above this screen size (x image size) until refine_scale2d_stop_iter")
    prune_scale3d: float = option(0.1, "default: prune above this scale (x scene_scale) after the first reset")
    prune_scale2d: float = option(0.15, "default: prune above this screen size until refine_scale2d_stop_iter")
    refine_scale2d_stop_iter: int = option(0, "default: use screen sizes until this step (0: never)")
    refine_start_iter: int = option(500, "start refining at this step")
    refine_stop_iter: int = option(15_000, "stop refining at this step (gsplat's mcmc uses 25000)")
    refine_every: int = option(100, "refine every N steps")
    reset_every: int = option(3000, "default: reset opacities every N steps")
    pause_refine_after_reset: int = option(0, "default: no refinement for N steps after a reset")
    absgrad: bool = option(False, "default: densify on absolute 2D gradients (set grow_grad2d ~0.0008)")
    revised_opacity: bool = option(False, "default: opacity after a split as arXiv:2404.06109")
    cap_max: int = option(1_000_000, "mcmc: maximum number of Gaussians")
    noise_lr: float = option(5e5, "mcmc: scale of the noise added to means")
    min_opacity: float = option(0.005, "mcmc: relocate Gaussians below this opacity")
    backend: Literal["auto", "torch", "gsplat"] = option("auto", "rasterizer: gsplat on CUDA, this project's on CPU")
    tile_size: int = option(16, "torch backend: tile size in pixels")
    chunk: int = option(32, "torch backend: Gaussians composited per tile per pass")
    render_traj_path: Literal["interp", "spiral", "ellipse_z"] = option("interp", "trajectory video path")
    traj_frames: int = option(120, "frames of the trajectory video (0: no video)")
    traj_fps: int = option(30, "frames per second of the trajectory video")
    lpips_weights: Optional[Path] = option(None, "LPIPS (AlexNet) weights: torchvision alexnet backbone + lpips alex.pth heads in one .pt")
    ckpt: Optional[Path] = option(None, "evaluate and render this checkpoint instead of training")
    seed: int = option(42, "random seed (each rank adds its rank)")
    log_every: int = option(10, "train.jsonl line every N steps")

    def check(self) -> None:
        if self.data_factor not in (1, 2, 4, 8):
            raise ConfigError(None, f"--data_factor: must be 1, 2, 4 or 8, got {self.data_factor}")
        for name in ("max_steps", "batch_size", "refine_every", "reset_every", "sh_degree_interval", "log_every",
                     "tile_size", "chunk"):
            if getattr(self, name) < 1:
                raise ConfigError(None, f"--{name}: must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.sh_degree <= 3:
            raise ConfigError(None, f"--sh_degree: must be 0..3, got {self.sh_degree}")
        if not 0 < self.init_opa < 1:
            raise ConfigError(None, f"--init_opa: must be in (0, 1), got {self.init_opa}")
        for name in ("ckpt", "lpips_weights"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(path, f"--{name}: no such file")


# The synthetic scene at full resolution (128x96) on a CPU: a compressed schedule, fewer and larger splits.
CPU = dict(data_factor=1, max_steps=1500, eval_steps=(1500,), save_steps=(1500,), ply_steps=(1500,), sh_degree=1,
           sh_degree_interval=500, refine_start_iter=200, refine_stop_iter=1000, refine_every=100, reset_every=600,
           grow_grad2d=0.0004, tile_size=8, traj_frames=60)
PRESETS: dict[str, Any] = {
    "default": Config(data_dir=Path("data/synthetic")),
    "mcmc": Config(data_dir=Path("data/synthetic"), strategy="mcmc", init_opa=0.5, init_scale=0.1, opacity_reg=0.01,
                   scale_reg=0.01, refine_stop_iter=25_000),
    "cpu": Config(data_dir=Path("data/synthetic"), **CPU),  # type: ignore[arg-type]
    "tiny": Config(data_dir=Path("data/synthetic"), data_factor=1, max_steps=8, eval_steps=(8,), save_steps=(4, 8),
                   ply_steps=(8,), sh_degree=1, sh_degree_interval=4, refine_start_iter=2, refine_stop_iter=7,
                   refine_every=2, reset_every=6, tile_size=8, traj_frames=3, log_every=2),
}
PRESETS["cpu_mcmc"] = replace(PRESETS["mcmc"], **CPU, cap_max=6000)


def check_inputs(cfg: Config) -> None:
    from .colmap import check_scene  # numpy + pycolmap, no torch

    check_scene(Path(cfg.data_dir))


def run_options(cfg: Config) -> dict[str, Any]:
    return {
        "steps": cfg.max_steps,
        "snapshot_dir": "stats",
        "snapshot_pattern": "val_step{step}.json",
        # Every save_steps checkpoint is kept, as the seed's result_dir shows them all.
        "checkpoint_options": {"keep_last": None},
    }
