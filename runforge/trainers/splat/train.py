"""The splat training loop (gsplat's simple_trainer on the run layer).

    runforge data synthetic-scene data/synthetic
    runforge train splat --preset cpu --data_dir data/synthetic --out results/synthetic
    runforge train splat --out results/synthetic --resume            # continue from the last checkpoint
    runforge train splat --data_dir data/synthetic --ckpt results/synthetic/ckpts/ckpt_1499_rank0.pt --out results/eval
    torchrun --standalone --nproc_per_node 2 -m runforge train splat --preset cpu --data_dir data/synthetic --out results/ddp

Steps are 0-based as in simple_trainer: `--eval_steps 7000` evaluates after step 6999.
What lands in the run directory (besides the run layer's files):

    ckpts/ckpt_{step}_rank{rank}.pt          splats + optimizers + strategy + scheduler + RNG: --resume continues exactly
    stats/train_step{step}_rank{rank}.json   mem, elapsed time, num_GS at save steps
    stats/val_step{step}.json                psnr, ssim, lpips (null without --lpips_weights), ellipse_time, num_GS
    renders/val_metrics_step{step}.json      the same figures (lpips left out without --lpips_weights)
    renders/val_step{step}/{i:03d}.png       ground truth | render
    renders/traj_{path}_step{step}.mp4       trajectory video
    ply/point_cloud_{step}.ply               standard 3DGS PLY
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...config import to_dict
from ...errors import BadInputError
from ...run import Run
from ...run.files import write_json
from ...run.layout import RENDERS_DIR, SNAPSHOT_DIR
from ...run.system import cuda_peak_gb
from ..common import cpu_state, torch_load, write_png
from ..state_checks import adam_state, generator_state, integer, tensor
from .backend import choose_backend, render
from .colmap import Parser
from .config import MAX_STEPS, Config
from .evaluation import LPIPS, describe, psnr, ssim, to_uint8, trajectory, write_mp4
from .losses import ssim as ssim_loss
from .splats import PARAM_NAMES, create_splats_with_optimizers, write_ply
from .strategy import DefaultStrategy, MCMCStrategy, Strategy, binomial_table


def setup_distributed(run: Run) -> torch.device:
    """Join the torchrun process group (gloo on CPU, NCCL on GPUs) and pick this rank's device."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if run.world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def make_strategy(cfg: Config) -> Strategy:
    if cfg.strategy == "mcmc":
        return MCMCStrategy(cap_max=cfg.cap_max, noise_lr=cfg.noise_lr, refine_start_iter=cfg.refine_start_iter,
                            refine_stop_iter=cfg.refine_stop_iter, refine_every=cfg.refine_every,
                            min_opacity=cfg.min_opacity)
    return DefaultStrategy(prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d, grow_scale3d=cfg.grow_scale3d,
                           grow_scale2d=cfg.grow_scale2d, prune_scale3d=cfg.prune_scale3d,
                           prune_scale2d=cfg.prune_scale2d, refine_scale2d_stop_iter=cfg.refine_scale2d_stop_iter,
                           refine_start_iter=cfg.refine_start_iter, refine_stop_iter=cfg.refine_stop_iter,
                           reset_every=cfg.reset_every, refine_every=cfg.refine_every,
                           pause_refine_after_reset=cfg.pause_refine_after_reset, absgrad=cfg.absgrad,
                           revised_opacity=cfg.revised_opacity)


def initial_points(cfg: Config, parser: Parser, scene_scale: float, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.init_type == "sfm":
        if len(parser.points) == 0:
            raise BadInputError(parser.sparse_dir, "has no 3D points; use --init_type random")
        return torch.from_numpy(parser.points).float(), torch.from_numpy(parser.points_rgb / 255.0).float()
    points = cfg.init_extent * scene_scale * (torch.rand(cfg.init_num_pts, 3, generator=rng) * 2 - 1)
    return points, torch.rand(cfg.init_num_pts, 3, generator=rng)


class Batches:
    """Shuffled epochs over the training images, resumable (its state goes into checkpoints)."""

    def __init__(self, indices: list[int], batch_size: int, seed: int) -> None:
        self.indices = torch.tensor(indices)
        self.batch_size = batch_size
        self.rng = torch.Generator()
        self.rng.manual_seed(seed)
        self.order = torch.randperm(len(indices), generator=self.rng)
        self.pos = 0

    def next(self) -> list[int]:
        if self.pos + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.indices), generator=self.rng)
            self.pos = 0
        picked = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.indices[picked].tolist()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state(), "order": self.order.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])
        self.order, self.pos = state["order"], state["pos"]


def camera_batch(parser: Parser, ids: list[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    pixels = torch.from_numpy(np.stack([parser.images[i] for i in ids])).to(device).float() / 255.0  # [B, H, W, 3]
    c2w = torch.from_numpy(parser.camtoworlds[ids]).to(device)
    Ks = torch.from_numpy(parser.Ks[ids]).to(device)
    return pixels, torch.linalg.inv(c2w), Ks


def strategy_state_for_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.get_state() if isinstance(v, torch.Generator) else
                v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


def load_strategy_state(saved: dict[str, Any], device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for k, v in saved.items():
        if k == "rng":
            state[k] = torch.Generator()
            state[k].set_state(v)
        else:
            state[k] = v.to(device) if isinstance(v, torch.Tensor) else v
    return state


CHECKPOINT_KEYS = ("step", "splats", "optimizers", "strategy", "scheduler", "batches")


def splat_shapes(n: int, sh_degree: int) -> dict[str, tuple[int, ...]]:
    return {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,), "sh0": (n, 1, 3),
            "shN": (n, (sh_degree + 1) ** 2 - 1, 3)}


def read_checkpoint(path: Path, cfg: Config) -> dict[str, Any]:
    """A splat checkpoint with Gaussians `cfg` can render: enough for --ckpt (evaluation only)."""
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or not set(CHECKPOINT_KEYS) <= ckpt.keys():
        raise ValueError(f"not a splat checkpoint (expected {', '.join(CHECKPOINT_KEYS)})")
    integer(ckpt["step"], "step", 0, MAX_STEPS)
    splats = ckpt["splats"]
    if not isinstance(splats, dict) or set(splats) != set(PARAM_NAMES):
        raise ValueError(f"splats must hold exactly {', '.join(PARAM_NAMES)}")
    means = splats["means"]
    if not isinstance(means, torch.Tensor) or means.dim() != 2 or len(means) == 0:
        raise ValueError("splats.means must be a non-empty (N, 3) tensor")
    shapes = splat_shapes(len(means), cfg.sh_degree)
    shn = splats["shN"]
    if isinstance(shn, torch.Tensor) and shn.dim() == 3 and shn.shape[1] != shapes["shN"][1]:
        raise ValueError(f"splats.shN holds {shn.shape[1] + 1} SH coefficients per colour; "
                         f"--sh_degree {cfg.sh_degree} needs {shapes['shN'][1] + 1}")
    for name, shape in shapes.items():
        tensor(splats[name], f"splats.{name}", shape, finite=True)
    return ckpt


def load_checkpoint(path: Path, cfg: Config) -> dict[str, Any]:
    """A checkpoint `checkpoint_state` wrote, checked against what `train` restores from it with `cfg`: the
    Gaussians, one Adam per parameter, the strategy's state, the scheduler and the data order. The run layer
    calls this before it touches the run."""
    from .colmap import check_model, split

    ckpt = read_checkpoint(path, cfg)
    shapes = splat_shapes(len(ckpt["splats"]["means"]), cfg.sh_degree)
    optimizers = ckpt["optimizers"]
    if not isinstance(optimizers, dict) or set(optimizers) != set(PARAM_NAMES):
        raise ValueError(f"optimizers must hold exactly {', '.join(PARAM_NAMES)}")
    for name, shape in shapes.items():
        adam_state(optimizers[name], {name: shape}, f"optimizers.{name}")

    strategy = ckpt["strategy"]
    n = shapes["means"][0]
    expected = {"rng", "binoms"} if cfg.strategy == "mcmc" else {"rng", "grad2d", "count", "radii", "scene_scale"}
    if not isinstance(strategy, dict) or set(strategy) != expected:
        raise ValueError(f"strategy must hold exactly {', '.join(sorted(expected))} (--strategy {cfg.strategy})")
    generator_state(strategy["rng"], "strategy.rng")
    if cfg.strategy == "mcmc":
        tensor(strategy["binoms"], "strategy.binoms", tuple(binomial_table().shape))
    else:
        for key in ("grad2d", "count", "radii"):
            if strategy[key] is not None:
                tensor(strategy[key], f"strategy.{key}", (n,))
        scale = strategy["scene_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise ValueError(f"strategy.scene_scale must be a positive number, got {scale!r}")

    scheduler = ckpt["scheduler"]
    if not isinstance(scheduler, dict) or not {"last_epoch", "gamma", "base_lrs", "_last_lr"} <= scheduler.keys():
        raise ValueError("scheduler is not the state of an ExponentialLR")
    integer(scheduler["last_epoch"], "scheduler.last_epoch", 0, MAX_STEPS)
    for key in ("base_lrs", "_last_lr"):
        values = scheduler[key]
        if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], float):
            raise ValueError(f"scheduler.{key} must be a list of one learning rate, got {values!r}")

    batches = ckpt["batches"]
    if not isinstance(batches, dict) or set(batches) != {"rng", "order", "pos"}:
        raise ValueError("batches must hold exactly rng, order and pos")
    generator_state(batches["rng"], "batches.rng")
    _, rec = check_model(Path(cfg.data_dir))
    train_images = len(split(rec.num_reg_images(), cfg.test_every)[0])
    order = tensor(batches["order"], "batches.order", (train_images,), torch.int64)
    if not torch.equal(order.sort().values, torch.arange(train_images)):
        raise ValueError(f"batches.order is not an order of the {train_images} training images")
    integer(batches["pos"], "batches.pos", 0, train_images)
    return ckpt


def set_splats(splats: torch.nn.ParameterDict, saved: dict[str, torch.Tensor], device: torch.device) -> None:
    for name in list(splats.keys()):
        splats[name] = torch.nn.Parameter(saved[name].to(device))


@torch.no_grad()
def evaluate(cfg: Config, run: Run, parser: Parser, splats: torch.nn.ParameterDict, backend: str, step: int,
             device: torch.device, lpips: LPIPS | None) -> dict[str, Any]:
    """Render every validation image; write renders/val_step{step}/ and stats/val_step{step}.json."""
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "lpips": []}
    elapsed = 0.0
    with run.validating():
        for i, idx in enumerate(parser.val_indices):
            pixels, viewmats, Ks = camera_batch(parser, [idx], device)
            H, W = pixels.shape[1:3]
            t0 = time.perf_counter()
            colors, _, _ = render(backend, splats, viewmats, Ks, W, H, cfg.sh_degree, cfg.near_plane, cfg.far_plane,
                                  cfg.tile_size, cfg.chunk, cfg.antialiased)
            elapsed += time.perf_counter() - t0
            colors = colors.clamp(0, 1)
            write_png(run.dir / RENDERS_DIR / f"val_step{step}" / f"{i:03d}.png",
                      to_uint8(torch.cat([pixels[0], colors[0]], 1)))
            pred, gt = colors.permute(0, 3, 1, 2), pixels.permute(0, 3, 1, 2)
            scores["psnr"].append(psnr(pred, gt))
            scores["ssim"].append(ssim(pred, gt))
            if lpips is not None:
                scores["lpips"].append(lpips(pred, gt))
    n = max(len(parser.val_indices), 1)
    stats = {"psnr": float(np.mean(scores["psnr"])) if scores["psnr"] else None,
             "ssim": float(np.mean(scores["ssim"])) if scores["ssim"] else None,
             "lpips": float(np.mean(scores["lpips"])) if scores["lpips"] else None,
             "ellipse_time": elapsed / n, "num_GS": int(splats["means"].shape[0])}
    run.snapshot(step, stats)
    # the seed's metrics file beside the renders; lpips only when it was computed (--lpips_weights)
    write_json(run.dir / RENDERS_DIR / f"val_metrics_step{step}.json", {k: v for k, v in stats.items() if v is not None})
    run.log(step, {"val": {k: v for k, v in stats.items() if v is not None}})
    run.event(f"step {step} validation ({len(parser.val_indices)} images): {describe(stats)}", console=True)
    return stats


@torch.no_grad()
def render_trajectory(cfg: Config, run: Run, parser: Parser, splats: torch.nn.ParameterDict, backend: str, step: int,
                      device: torch.device) -> None:
    if cfg.traj_frames <= 0:
        return
    c2ws = trajectory(cfg.render_traj_path, parser.camtoworlds.astype(np.float64), cfg.traj_frames)
    K = torch.from_numpy(parser.Ks[0]).to(device)[None]
    H, W = parser.images[0].shape[:2]
    frames = []
    for c2w in c2ws:
        viewmat = torch.linalg.inv(torch.from_numpy(c2w).float().to(device))[None]
        colors, _, _ = render(backend, splats, viewmat, K, W, H, cfg.sh_degree, cfg.near_plane, cfg.far_plane,
                              cfg.tile_size, cfg.chunk, cfg.antialiased)
        frames.append(to_uint8(colors[0]))
    path = write_mp4(run.dir / RENDERS_DIR / f"traj_{cfg.render_traj_path}_step{step}.mp4", frames, cfg.traj_fps)
    run.event(f"trajectory video: {path.relative_to(run.dir)}")


def train(cfg: Config, run: Run) -> None:
    device = setup_distributed(run)
    rank, world_size = run.rank, run.world_size
    backend = choose_backend(cfg.backend, device)
    parser = Parser(cfg.data_dir, cfg.data_factor, cfg.normalize_world_space, cfg.test_every)
    scene_scale = parser.scene_scale * 1.1 * cfg.global_scale
    lpips = LPIPS(cfg.lpips_weights).to(device).eval() if cfg.lpips_weights is not None else None
    # Same seed on every rank: the Gaussians and the strategy's random choices must agree across ranks.
    shared_rng = torch.Generator()
    shared_rng.manual_seed(cfg.seed)
    points, rgbs = initial_points(cfg, parser, scene_scale, shared_rng)
    splats, optimizers = create_splats_with_optimizers(
        points, rgbs, scene_scale, sh_degree=cfg.sh_degree, init_opa=cfg.init_opa, init_scale=cfg.init_scale,
        means_lr=cfg.means_lr, scales_lr=cfg.scales_lr, quats_lr=cfg.quats_lr, opacities_lr=cfg.opacities_lr,
        sh0_lr=cfg.sh0_lr, shN_lr=cfg.shN_lr, batch_size=cfg.batch_size, world_size=world_size, device=device,
        generator=shared_rng)
    strategy = make_strategy(cfg)
    strategy.check_sanity(splats, optimizers)
    strategy_state = strategy.initialize_state(scene_scale, seed=cfg.seed)
    # The means' learning rate decays exponentially to 1% over max_steps.
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizers["means"], gamma=0.01 ** (1.0 / cfg.max_steps))
    batches = Batches(parser.train_indices, cfg.batch_size, cfg.seed + rank)
    run.event(f"splat: {len(parser)} images ({len(parser.train_indices)} train, {len(parser.val_indices)} val), "
              f"{points.shape[0]} initial Gaussians, scene_scale {scene_scale:.3f}, backend {backend}, {world_size} rank(s)")

    if cfg.ckpt is not None:  # evaluate and render a checkpoint, no training
        ckpt = read_checkpoint(cfg.ckpt, cfg)
        set_splats(splats, ckpt["splats"], device)
        if rank == 0:
            evaluate(cfg, run, parser, splats, backend, ckpt["step"], device, lpips)
            render_trajectory(cfg, run, parser, splats, backend, ckpt["step"], device)
        return

    start = 0
    if run.resume_checkpoint is not None:
        # the CLI's Run loaded and checked it; a script's Run without load_checkpoint did not
        ckpt = run.resume_state if run.resume_state is not None else load_checkpoint(run.resume_checkpoint.path, cfg)
        set_splats(splats, ckpt["splats"], device)
        for name, optimizer in optimizers.items():
            optimizer.param_groups[0]["params"] = [splats[name]]
            optimizer.load_state_dict(ckpt["optimizers"][name])
        strategy_state = load_strategy_state(ckpt["strategy"], device)
        scheduler.load_state_dict(ckpt["scheduler"])
        batches.load_state_dict(ckpt["batches"])
        start = ckpt["step"] + 1
        run.event(f"resumed at step {start} with {splats['means'].shape[0]} Gaussians")

    def checkpoint_state(step: int) -> dict[str, Any]:
        return {"step": step, "splats": cpu_state(dict(splats.items())),
                "optimizers": cpu_state({k: o.state_dict() for k, o in optimizers.items()}),
                "strategy": strategy_state_for_checkpoint(strategy_state), "scheduler": scheduler.state_dict(),
                "batches": batches.state_dict(), "config": to_dict(cfg)}

    def validate_now() -> None:
        evaluate(cfg, run, parser, splats, backend, step, device, lpips)
        render_trajectory(cfg, run, parser, splats, backend, step, device)

    eval_at = {s - 1 for s in cfg.eval_steps}
    save_at = {s - 1 for s in cfg.save_steps} | {cfg.max_steps - 1}
    ply_at = {s - 1 for s in cfg.ply_steps}
    t_start = time.perf_counter()
    for step in range(start, cfg.max_steps):
        ids = batches.next()
        pixels, viewmats, Ks = camera_batch(parser, ids, device)
        H, W = pixels.shape[1:3]
        sh_degree = min(step // cfg.sh_degree_interval, cfg.sh_degree)
        colors, alphas, info = render(backend, splats, viewmats, Ks, W, H, sh_degree, cfg.near_plane,
                                      cfg.far_plane, cfg.tile_size, cfg.chunk, cfg.antialiased)
        strategy.step_pre_backward(splats, optimizers, strategy_state, step, info)

        l1 = F.l1_loss(colors, pixels)
        ssim_value = ssim_loss(colors.permute(0, 3, 1, 2), pixels.permute(0, 3, 1, 2)).mean()
        loss = (1.0 - cfg.ssim_lambda) * l1 + cfg.ssim_lambda * (1.0 - ssim_value)
        if cfg.opacity_reg > 0:
            loss = loss + cfg.opacity_reg * torch.sigmoid(splats["opacities"]).mean()
        if cfg.scale_reg > 0:
            loss = loss + cfg.scale_reg * torch.exp(splats["scales"]).mean()
        loss.backward()
        if world_size > 1:  # every rank rendered its own images: average the gradients (DDP's all-reduce)
            import torch.distributed as dist

            for param in splats.values():
                if param.grad is not None:
                    dist.all_reduce(param.grad)
                    param.grad /= world_size
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if isinstance(strategy, MCMCStrategy):
            refined = strategy.step_post_backward(splats, optimizers, strategy_state, step, info,
                                                  lr=scheduler.get_last_lr()[0])
        else:
            refined = strategy.step_post_backward(splats, optimizers, strategy_state, step, info)
        if refined and any(refined.values()):
            run.event(f"step {step}: " + ", ".join(f"{k} {v}" for k, v in refined.items())
                      + f" -> {splats['means'].shape[0]} Gaussians")

        if step % cfg.log_every == 0 or step == cfg.max_steps - 1:
            run.log(step, {"loss": loss.item(), "losses": {"l1": l1.item(), "ssim": ssim_value.item()},
                           "num_GS": int(splats["means"].shape[0]), "sh_degree": sh_degree,
                           "lr": {"means": scheduler.get_last_lr()[0]}})
        # a paused run validates where it is held (rank 0 evaluates, as below)
        ctl = run.poll(step, on_validate=validate_now if rank == 0 else None)
        if step in save_at or ctl.save or ctl.stop:
            mem = cuda_peak_gb() if device.type == "cuda" else None
            write_json(run.dir / SNAPSHOT_DIR / f"train_step{step}_rank{rank}.json",
                       {"mem": mem, "ellipse_time": time.perf_counter() - t_start,
                        "num_GS": int(splats["means"].shape[0])})
            run.checkpoint(step, checkpoint_state(step), torch.save)
        if rank == 0 and cfg.save_ply and step in ply_at:
            write_ply(run.dir / "ply" / f"point_cloud_{step}.ply", splats)
        if rank == 0 and (step in eval_at or ctl.validate):
            validate_now()
        if ctl.stop:
            break
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    how = "stopped" if run.stop_requested else "done"
    run.event(f"splat: {how} after {time.perf_counter() - t_start:.1f} s with {splats['means'].shape[0]} Gaussians",
              console=True)
