"""3D Gaussian splatting from a COLMAP scene (gsplat's simple_trainer); defaults as simple_trainer's."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from ...config import option
from ...errors import BadInputError, ConfigError
from ...run.layout import SNAPSHOT_DIR


MAX_STEPS = 10**7
MAX_BATCH = 10
"""Images per step over all ranks: Adam's beta1 = 1 - 0.1 x batch (gsplat's scaling) must stay >= 0."""


@dataclass
class Config:
    # gsplat's simple_trainer names the run folder --result_dir
    FLAG_ALIASES: ClassVar[dict[str, str]] = {"result_dir": "out"}

    data_dir: Path = field(metadata={"help": "COLMAP scene: images/ and sparse/0/ (binary or text)"})
    data_factor: int = option(4, "downsample images by 1, 2, 4 or 8 (images_{factor}/ when present)", ge=1, le=8)
    test_every: int = option(8, "every N-th image is held out for validation (0: none)", ge=0, le=10**6)
    normalize_world_space: bool = option(True, "centre, align and scale the scene from the cameras")
    global_scale: float = option(1.0, "multiplies scene_scale (1.1 x the camera spread)", gt=0, le=1e6)
    max_steps: int = option(30_000, "training steps", ge=1, le=MAX_STEPS)
    eval_steps: tuple[int, ...] = option((7_000, 30_000), "evaluate after these (1-based) step counts",
                                         ge=1, le=MAX_STEPS)
    save_steps: tuple[int, ...] = option((7_000, 30_000), "checkpoint after these step counts (and the last)",
                                         ge=1, le=MAX_STEPS)
    ply_steps: tuple[int, ...] = option((7_000, 30_000), "write ply/point_cloud_{step}.ply after these step counts",
                                        ge=1, le=MAX_STEPS)
    save_ply: bool = option(True, "export PLY files at ply_steps")
    batch_size: int = option(1, "images per step per rank (learning rates scale with it)", ge=1, le=MAX_BATCH)
    init_type: Literal["sfm", "random"] = option("sfm", "initial Gaussians: the SfM points, or random in a box")
    init_num_pts: int = option(100_000, "Gaussians of a random init", ge=1, le=10**7)
    init_extent: float = option(3.0, "half-size of the random init box, in scene_scale units", gt=0, le=1e6)
    init_opa: float = option(0.1, "initial opacity", gt=0, lt=1)
    init_scale: float = option(1.0, "initial scale multiplier on the 3-nearest-neighbour distance", gt=0, le=1e6)
    sh_degree: int = option(3, "maximum spherical-harmonics degree", ge=0, le=3)
    sh_degree_interval: int = option(1000, "add one SH degree every N steps", ge=1, le=MAX_STEPS)
    means_lr: float = option(1.6e-4, "means learning rate (times scene_scale, decays to 1 percent by max_steps)",
                             gt=0, le=10)
    scales_lr: float = option(5e-3, "log-scales learning rate", gt=0, le=10)
    quats_lr: float = option(1e-3, "quaternions learning rate", gt=0, le=10)
    opacities_lr: float = option(5e-2, "opacity-logits learning rate", gt=0, le=10)
    sh0_lr: float = option(2.5e-3, "SH degree-0 learning rate", gt=0, le=10)
    shN_lr: float = option(2.5e-3 / 20, "higher SH degrees learning rate", gt=0, le=10)
    ssim_lambda: float = option(0.2, "loss = (1 - l) * L1 + l * (1 - SSIM)", ge=0, le=1)
    opacity_reg: float = option(0.0, "weight of mean opacity in the loss", ge=0, le=1e3)
    scale_reg: float = option(0.0, "weight of mean scale in the loss", ge=0, le=1e3)
    near_plane: float = option(0.01, "near clipping plane", gt=0, le=1e6)
    far_plane: float = option(1e10, "far clipping plane", gt=0, le=1e12)
    antialiased: bool = option(False, "anti-aliased rasterization (opacity compensation, as gsplat's mode)")
    strategy: Literal["default", "mcmc"] = option("default", "densification strategy")
    prune_opa: float = option(0.005, "default: prune below this opacity", ge=0, le=1)
    grow_grad2d: float = option(0.0002, "default: densify above this mean 2D gradient", ge=0, le=1e3)
    grow_scale3d: float = option(0.01, "default: split above / clone below this scale (x scene_scale)", ge=0, le=1e3)
    grow_scale2d: float = option(0.05, "default: split above this screen size (x image size) until "
                                       "refine_scale2d_stop_iter", ge=0, le=1e3)
    prune_scale3d: float = option(0.1, "default: prune above this scale (x scene_scale) after the first reset",
                                  ge=0, le=1e3)
    prune_scale2d: float = option(0.15, "default: prune above this screen size until refine_scale2d_stop_iter",
                                  ge=0, le=1e3)
    refine_scale2d_stop_iter: int = option(0, "default: use screen sizes until this step (0: never)", ge=0, le=MAX_STEPS)
    refine_start_iter: int = option(500, "start refining at this step", ge=0, le=MAX_STEPS)
    refine_stop_iter: int = option(15_000, "stop refining at this step (gsplat's mcmc uses 25000)", ge=0, le=MAX_STEPS)
    refine_every: int = option(100, "refine every N steps", ge=1, le=MAX_STEPS)
    reset_every: int = option(3000, "default: reset opacities every N steps", ge=1, le=MAX_STEPS)
    pause_refine_after_reset: int = option(0, "default: no refinement for N steps after a reset", ge=0, le=MAX_STEPS)
    absgrad: bool = option(False, "default: densify on absolute 2D gradients (set grow_grad2d ~0.0008)")
    revised_opacity: bool = option(False, "default: opacity after a split as arXiv:2404.06109")
    cap_max: int = option(1_000_000, "mcmc: maximum number of Gaussians", ge=1, le=10**8)
    noise_lr: float = option(5e5, "mcmc: scale of the noise added to means", ge=0, le=1e9)
    min_opacity: float = option(0.005, "mcmc: relocate Gaussians below this opacity", ge=0, le=1)
    backend: Literal["auto", "torch", "gsplat"] = option("auto", "rasterizer: gsplat on CUDA, this project's on CPU")
    tile_size: int = option(16, "torch backend: tile size in pixels", ge=1, le=256)
    chunk: int = option(32, "torch backend: Gaussians composited per tile per pass", ge=1, le=4096)
    render_traj_path: Literal["interp", "spiral", "ellipse_z"] = option("interp", "trajectory video path")
    traj_frames: int = option(120, "frames of the trajectory video (0: no video)", ge=0, le=10**4)
    traj_fps: int = option(30, "frames per second of the trajectory video", ge=1, le=240)
    lpips_weights: Optional[Path] = option(None, "LPIPS (AlexNet) weights: torchvision alexnet backbone + lpips "
                                                 "alex.pth heads in one .pt")
    ckpt: Optional[Path] = option(None, "evaluate and render this checkpoint instead of training")
    seed: int = option(42, "random seed (each rank adds its rank)", ge=0, le=10**9)
    log_every: int = option(10, "train.jsonl line every N steps", ge=1, le=MAX_STEPS)

    def check(self) -> None:
        """Rules between fields and the ones a range cannot say; the scene, device and files are `check_inputs`'s."""
        if self.data_factor not in (1, 2, 4, 8):
            raise ConfigError(None, f"--data_factor: must be 1, 2, 4 or 8, got {self.data_factor}")
        if not self.near_plane < self.far_plane:
            raise ConfigError(None, f"--near_plane: must be below --far_plane, got {self.near_plane} and "
                                    f"{self.far_plane}")


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
# OpenSplat's schedule choices on the cpu preset: prune below opacity 0.1 and stop densifying at half the steps
# (OpenSplat's cullAlphaThresh and stopSplitAt = iterations / 2): fewer Gaussians, so each step is cheaper.
# 16-px tiles (OpenSplat's and gsplat's): the kernels visit only each Gaussian's footprint inside a tile, so
# larger tiles cost nothing per pixel and list each Gaussian in fewer tiles; the image is the same.
PRESETS["cpu_fast"] = replace(PRESETS["cpu"], prune_opa=0.1, refine_stop_iter=750, tile_size=16)


def check_inputs(cfg: Config) -> None:
    """The scene, the machine and the files the run will read, before a run directory exists or a resumed
    run is touched: the batch over all ranks, the COLMAP model and every image (decoded), the split, the
    SfM points, the backend (gsplat needs CUDA), --ckpt and --lpips_weights."""
    import os

    from .colmap import check_scene, find_sparse_dir, split

    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if cfg.batch_size * world_size > MAX_BATCH:
        raise ConfigError(None, f"--batch_size: {cfg.batch_size} images on each of {world_size} ranks is more than "
                                f"{MAX_BATCH} per step (Adam's beta1 = 1 - 0.1 x batch)")
    rec, sizes = check_scene(Path(cfg.data_dir), cfg.data_factor)
    if cfg.batch_size > 1 and len(sizes) > 1:
        raise ConfigError(None, f"--batch_size: {cfg.batch_size} images per step need images of one size; "
                                f"{cfg.data_dir} holds {len(sizes)} sizes")
    if not split(rec.num_reg_images(), cfg.test_every)[0]:
        raise ConfigError(None, f"--test_every: {cfg.test_every} holds out all {rec.num_reg_images()} images of "
                                f"{cfg.data_dir}; nothing is left to train on")
    if cfg.init_type == "sfm" and rec.num_points3D() == 0:
        raise BadInputError(find_sparse_dir(Path(cfg.data_dir)), "has no 3D points; use --init_type random")

    import torch  # the checks above need not wait for it

    from .backend import choose_backend

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as train.setup_distributed picks it
    backend = choose_backend(cfg.backend, device)  # --backend gsplat without CUDA or gsplat fails here
    if cfg.absgrad and backend == "torch":
        raise ConfigError(None, "--absgrad: needs the gsplat backend (the torch rasterizer gives plain gradients)")
    if cfg.ckpt is not None:
        from .train import read_checkpoint

        if not Path(cfg.ckpt).is_file():
            raise BadInputError(cfg.ckpt, "--ckpt: no such file")
        try:
            read_checkpoint(Path(cfg.ckpt), cfg)
        except ValueError as exc:
            raise BadInputError(cfg.ckpt, f"not a readable checkpoint ({exc})") from None
    if cfg.lpips_weights is not None:
        from .evaluation import LPIPS

        LPIPS(Path(cfg.lpips_weights))  # builds the network once to check every weight's shape


def run_options(cfg: Config) -> dict[str, Any]:
    return {
        # steps are 0-based: status.json's step_max is the last one, so a finished run reads N/N and the
        # ETA counts the steps still to run
        "steps": cfg.max_steps - 1,
        "snapshot_dir": SNAPSHOT_DIR,
        "snapshot_pattern": "val_step{step}.json",
        "snapshot_groups": {"validation": ("psnr", "ssim", "lpips", "ellipse_time", "num_GS")},
        # Every save_steps checkpoint is kept, as simple_trainer keeps them all in its result_dir.
        "checkpoint_options": {"keep_last": None},
    }
