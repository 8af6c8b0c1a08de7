"""The voxel training loop: `runforge train voxel [--prompt TEXT --model_path DIR | --guidance photometric]`.

    runforge train voxel --steps 100 --image_every 5 --save_map_every 25          # fit datasets/1's views
    runforge train voxel --prompt "a medieval stone castle" --model_path models/sd21
    runforge train voxel --out out_local/sds_training --resume                     # continue a stopped run
    runforge export --training_dir out_local/sds_training --source_map_id 1       # export by hand

Each step: pick --views_per_step dataset cameras, build the volume from the grid (temperature
annealed 2.0 -> 0.5), render, take the guidance loss plus the regularisers, and
take one Adam step on both logit tensors. Outputs (docs/voxel.md):
images/step_{STEP:04d}_cam{IDX}.png, maps/step_{STEP:04d}.json with a checkpoint
beside it in ckpts/, train.jsonl, final_map.json == map_optimized.json, and an
export to maps/trained_map_{SOURCE}_{X}/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...run import Run
from ...run.layout import IMAGES_DIR, METRICS_FILE
from ..common import cpu_state, pick_device, torch_load
from .config import MAX_STEPS, Config
from .dataset import SAMPLE_DIR, Camera, read_dataset, resolve_dataset, resolve_map
from .export import COPY_MAP, FINAL_MAP, export_training
from .grid import DifferentiableVoxelGrid, regularisers
from .guidance import SDS, Photometric, SegmentCache, load_sds
from .map_io import PALETTE, read_map
from ..state_checks import adam_state, generator_state, integer, tensor

CHECKPOINT_KEYS = ("step", "grid", "optimizer", "generator")


def fit_resolution(camera: Camera, resolution: int | None) -> Camera:
    """The camera with its longer side at `resolution` pixels, aspect kept (None: as the dataset has it)."""
    if resolution is None:
        return camera
    scale = resolution / max(camera.width, camera.height)
    return camera.resized(max(1, round(camera.width * scale)), max(1, round(camera.height * scale)))


def scheduled(step: int, every: int, last: int) -> bool:
    return step == 1 or step % every == 0 or step == last


def image_steps(cfg: Config) -> list[int]:
    return [s for s in range(1, cfg.steps + 1) if scheduled(s, cfg.image_every, cfg.steps)]


def map_steps(cfg: Config) -> list[int]:
    return [s for s in range(1, cfg.steps + 1) if s % cfg.save_map_every == 0 or s == cfg.steps]


def plan(cfg: Config, blocks: int, width: int, height: int) -> str:
    """The disk table printed at the start: what this run will write, with rough sizes
    (PNG ~0.6 byte/pixel, ~100 bytes/block)."""
    images, maps = len(image_steps(cfg)), len(map_steps(cfg))
    image_kb = width * height * 0.6 / 1024
    map_kb = max(blocks, 1) * 100 / 1024
    log_kb = (cfg.steps // cfg.log_every + 2) * 0.6
    rows = [("Images", images, image_kb), ("Checkpoint maps", maps, map_kb), ("Final maps", 2, map_kb),
            ("Training log", 1, log_kb)]
    total = sum(count * size for _, count, size in rows)
    lines = [f"{'Item':<18}{'Count':>7}{'Size each':>12}{'Total':>12}"]
    lines += [f"{name:<18}{count:>7}{_kb(size):>12}{_kb(count * size):>12}" for name, count, size in rows]
    lines.append(f"{'TOTAL':<18}{'':>7}{'':>12}{_kb(total):>12}  (+ checkpoints in ckpts/, keep_last={cfg.keep_last})")
    return "\n".join(lines)


def _kb(kb: float) -> str:
    return f"~{kb / 1024:.1f}MB" if kb >= 1024 else f"~{kb:.0f}KB"


def map_metadata(cfg: Config, run: Run, step: int) -> dict[str, Any]:
    return {"prompt": cfg.prompt, "step": step, "total_steps": cfg.steps, "cfg_scale": cfg.cfg_scale,
            "source_map_id": cfg.source_map_id, "guidance": cfg.resolved_guidance, "run_id": run.id}


def training_state(step: int, grid: DifferentiableVoxelGrid, optimizer: torch.optim.Optimizer,
                   generator: torch.Generator) -> dict[str, Any]:
    """Everything --resume needs, copied to the CPU so later steps cannot change it."""
    return cpu_state({"step": step, "grid": grid.state_dict(), "optimizer": optimizer.state_dict(),
                      "generator": generator.get_state()})


def load_checkpoint(path: Path, cfg: Config) -> dict[str, Any]:
    """A checkpoint `training_state` wrote, checked against the grid `cfg` trains: logits of the source map's
    size, one Adam over them, a CPU generator state. The run layer calls this before it touches the run."""
    state = torch_load(path)
    if not isinstance(state, dict) or not set(CHECKPOINT_KEYS) <= state.keys():
        raise ValueError(f"not a voxel checkpoint (expected {', '.join(CHECKPOINT_KEYS)})")
    integer(state["step"], "step", 0, MAX_STEPS)
    size = read_map(resolve_map(cfg.source_map_id)[0]).size
    shapes = {"occupancy_logits": size, "material_logits": (*size, len(PALETTE))}  # grid.parameters() order
    if not isinstance(state["grid"], dict) or set(state["grid"]) != set(shapes):
        raise ValueError(f"grid must hold exactly {' and '.join(shapes)}")
    for name, shape in shapes.items():
        tensor(state["grid"][name], f"grid.{name} (map {cfg.source_map_id})", shape, finite=True)
    adam_state(state["optimizer"], shapes, "optimizer")
    generator_state(state["generator"], "generator")
    return state


def summary(run: Run, blocks: int, stats: dict[str, Any]) -> str:
    images = len(list((run.dir / IMAGES_DIR).glob("*.png")))
    maps = len(list((run.dir / "maps").glob("step_*.json")))
    lines = ["", "Training complete!", "", "Output:",
             f"  Final map: {run.dir / FINAL_MAP} ({blocks} blocks)",
             f"  Logs: {run.dir / METRICS_FILE}",
             f"  Images: {run.dir / IMAGES_DIR} ({images} images)",
             f"  Intermediate maps: {run.dir / 'maps'} ({maps} checkpoints)",
             "", "Final grid stats:",
             f"  Active voxels: {stats['num_active_voxels']}/{stats['total_voxels']}",
             f"  Density: {100 * stats['density']:.2f}%",
             "  Material distribution:"]
    lines += [f"    {name}: {share:.1f}%" for name, share in stats["material_distribution"].items()]
    return "\n".join(lines)


def train(cfg: Config, run: Run) -> None:
    device = pick_device(cfg.device)
    if device.type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)

    # ---- the world and the views
    map_path, bundled_map = resolve_map(cfg.source_map_id)
    dataset_dir, bundled_data = resolve_dataset(cfg.dataset_id)
    for missing, bundled in (("maps/1/map.json", bundled_map), ("datasets/1/", bundled_data)):
        if bundled:
            run.event(f"{missing} not found here: using the bundled sample ({SAMPLE_DIR})", console=True)
    source = read_map(map_path)
    dataset = read_dataset(dataset_dir)
    cameras: list[Camera] = [fit_resolution(c, cfg.resolution) for c in dataset.cameras]
    grid = DifferentiableVoxelGrid.initialise(cfg.init_mode, source, cfg.resolved_init_fog).to(device)
    optimizer = torch.optim.Adam(grid.parameters(), lr=cfg.lr)
    segments = SegmentCache(grid.size, source.block_size, device)
    guidance: Photometric | SDS
    if cfg.resolved_guidance == "photometric":
        guidance = Photometric(dataset_dir, cameras, segments)
    else:
        assert cfg.model_path is not None  # Config.check
        guidance = load_sds(cfg.model_path, cfg.prompt, device, cfg_scale=cfg.cfg_scale, t_min=cfg.t_min,
                            t_max_start=cfg.t_max_start, t_max_end=cfg.t_max_end, grad_clip=cfg.grad_clip)

    if run.resume_checkpoint is not None:
        # the CLI's Run loaded and checked it; a script's Run without load_checkpoint did not
        state = run.resume_state if run.resume_state is not None else load_checkpoint(run.resume_checkpoint.path, cfg)
        grid.load_state_dict(state["grid"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
    else:
        run.event(f"source map {map_path} ({source.num_blocks} blocks, grid {'x'.join(map(str, grid.size))}), "
                  f"{len(cameras)} cameras from {dataset_dir}, guidance {guidance.name}", console=True)
        print(plan(cfg, source.num_blocks, cameras[0].width, cameras[0].height), flush=True)

    def validate_now() -> None:
        if isinstance(guidance, Photometric):
            with run.validating(), torch.no_grad():
                psnr = guidance.psnr(grid.volume(temperature))
            run.log(step, {"val": {"psnr": psnr}})
            run.event(f"validation at step {step}: PSNR {psnr:.2f} dB over {len(cameras)} views", console=True)
        else:
            run.event("validation needs reference views (photometric guidance); skipped", "warning")

    stopped = False
    for step in range(run.start_step + 1, cfg.steps + 1):
        progress = (step - 1) / max(cfg.steps - 1, 1)
        temperature = cfg.temp_start + (cfg.temp_end - cfg.temp_start) * progress
        positions = torch.randperm(len(cameras), generator=generator)[: cfg.views_per_step].tolist()
        camera = cameras[positions[0]]

        probs = grid.channel_probs(temperature)  # once a step: the render and the smoothness prior share it
        volume = grid.volume(temperature, probs)
        if isinstance(guidance, Photometric):
            # several views a step: a surface seen from one side only is repainted view by view instead of moved
            rays = -(-cfg.rays_per_step // len(positions))
            guidance_loss = sum(guidance.loss(volume, p, generator, rays) for p in positions) / len(positions)
        else:
            guidance_loss = guidance.loss(segments.render(volume, camera), progress, generator)
        reg = regularisers(grid, temperature, probs)
        total = (guidance_loss + cfg.lambda_sparsity * reg["sparsity"] + cfg.lambda_entropy * reg["entropy"]
                 + cfg.lambda_smooth * reg["smooth"] + cfg.lambda_support * reg["support"])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

        if scheduled(step, cfg.log_every, cfg.steps):
            losses = {"total": total.item(), guidance.name: guidance_loss.item(), **{k: v.item() for k, v in reg.items()}}
            run.log(step, {"temperature": temperature, "camera_index": camera.index, "losses": losses,
                           "grid_stats": grid.stats(cfg.threshold)})
        if scheduled(step, cfg.image_every, cfg.steps):
            with torch.no_grad():
                run.image(step, f"cam{camera.index}", segments.render(grid.volume(temperature), camera).cpu())
        ctl = run.poll(step, on_validate=validate_now)  # a paused run validates where it is held
        if ctl.validate:
            validate_now()
        if step % cfg.save_map_every == 0 or step == cfg.steps or ctl.save or ctl.stop:
            document = grid.to_map(source, cfg.threshold).to_document(map_metadata(cfg, run, step))
            run.save_json(f"maps/step_{step:04d}.json", document)
            run.checkpoint(step, training_state(step, grid, optimizer, generator), torch.save)
        if ctl.stop:
            stopped = True
            break

    if stopped:
        return
    final = grid.to_map(source, cfg.threshold)
    document = final.to_document(map_metadata(cfg, run, cfg.steps))
    run.save_json(FINAL_MAP, document)
    run.save_json(COPY_MAP, document)
    run.wait()
    print(summary(run, final.num_blocks, grid.stats(cfg.threshold)), flush=True)
    if cfg.export:
        print("\nExporting to maps/ directory...", flush=True)
        folder = export_training(run.dir, cfg.source_map_id, cfg.registry)
        run.event(f"✅ Exported to: {folder}", console=True)
