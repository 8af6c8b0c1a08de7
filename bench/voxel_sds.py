"""Does SDS with the voxel prior grow what the prompt asks for? A diffusion classifier and a geometry statistic.

    .venv/bin/python bench/voxel_sds.py [--prior DIR] [--prompts N] [--keep DIR] [-- extra train flags]

Without --prior it first trains one (`runforge data voxel-prior`, the default preset, ~10-15 CPU minutes).
For each prompt it runs `runforge train voxel --prompt P --model_path PRIOR --init_mode ground_plane` with
RECIPE (flags after `--` are appended and override it), then scores the final world:
1. a diffusion classifier: hard renders of the world from the 24 orbit cameras, noised with the same noise
   at the same t's, denoised by the prior conditioned on each of its six captions; the world is recognised
   when the prompt's caption has the lowest mean error (the judge is checked first on a fresh generated
   scene of each caption);
2. a geometry statistic that fits the caption (a pond's share of water in the floor, a tree's leaves, a
   house's planks, a tower's height), on the final world, on the ground-plane start, and on the world the
   next prompt of the list grew (an unrelated prompt, from the same start with the same recipe).
Bar: every prompt recognised, its statistic above both the start's and the unrelated run's, each run within
10 CPU minutes. Exit 1 below the bar.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from runforge.cli import main as runforge
from runforge.trainers.voxel.map_io import MATERIAL_INDEX, VoxelMap, read_map
from runforge.trainers.voxel.prior.scenes import CAPTIONS, WORLD_SIZE, ground_plane_map, make_scene

if TYPE_CHECKING:
    import torch

BAR_CPU_MINUTES = 10.0
LAYER_BLOCKS = 4
RECIPE = ["--preset", "prior_sds"]
"""400 steps at 32 px from a ground plane in a 0.02 fog, lr 0.1, cfg 7.5, t in [0.3, 0.95 -> 0.7] (config.PRESETS)."""


def structure_height(vmap: VoxelMap) -> float:
    """The highest layer above the floor that holds at least LAYER_BLOCKS blocks (0: none): a tower's height,
    not a stray block's."""
    counts = vmap.occupied[:, 1:, :].sum(axis=(0, 2))
    layers = np.nonzero(counts >= LAYER_BLOCKS)[0]
    return float(layers.max() + 1) if len(layers) else 0.0


def water_share(vmap: VoxelMap) -> float:
    """The share of the floor (y = 0) that is water."""
    floor = vmap.material[:, 0, :]
    return float((vmap.occupied[:, 0, :] & (floor == MATERIAL_INDEX["Water"])).mean())


def blocks_above_floor(name: str) -> Callable[[VoxelMap], float]:
    def count(vmap: VoxelMap) -> float:
        return float((vmap.occupied[:, 1:, :] & (vmap.material[:, 1:, :] == MATERIAL_INDEX[name])).sum())

    count.__doc__ = f"{name} blocks above the floor."
    return count


STATISTICS: dict[str, tuple[str, Callable[[VoxelMap], float]]] = {
    "a stone tower": ("structure height", structure_height),
    "a pond with a sand rim": ("water share of the floor", water_share),
    "a tree": ("leaves above the floor", blocks_above_floor("Leaves")),
    "a wooden house": ("planks above the floor", blocks_above_floor("Plank")),
    "a stone wall": ("stone above the floor", blocks_above_floor("Stone")),
    "a pyramid": ("structure height", structure_height),
}
# the three that pass; the stone prompts grow Leaves (docs/voxel.md, "SDS with the voxel prior")
DEFAULT_PROMPTS = ("a pond with a sand rim", "a tree", "a wooden house")


def orbit_renders(vmap: VoxelMap, resolution: int) -> torch.Tensor:
    """(24, 3, R, R) hard renders over white in 0..1 from the bundled dataset's orbit cameras."""
    import torch

    from runforge.trainers.voxel.dataset import orbit_cameras
    from runforge.trainers.voxel.guidance import SegmentCache
    from runforge.trainers.voxel.render import hard_volume

    segments = SegmentCache(WORLD_SIZE, 1.0, torch.device("cpu"))
    volume = hard_volume(vmap)
    with torch.no_grad():
        return torch.stack([segments.render(volume, c).permute(2, 0, 1) for c in orbit_cameras(WORLD_SIZE, 24, resolution)])


def write_figure(path: Path, vmap: VoxelMap) -> None:
    """Four views around the world at 96 px, side by side."""
    from runforge.trainers.common import write_png

    views = orbit_renders(vmap, 96)[::6]
    write_png(path, (views.permute(2, 0, 3, 1).reshape(96, -1, 3).numpy() * 255 + 0.5).astype(np.uint8))


def grow(prompt: str, prior: Path, out: Path, extra: list[str]) -> tuple[VoxelMap, float, float] | None:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    code = runforge(["train", "voxel", "--prompt", prompt, "--model_path", str(prior), *RECIPE, "--out", str(out),
                     "--overwrite", "--image_every", "100", "--save_map_every", "1000", "--log_every", "50",
                     "--no_export", "--no_tensorboard", "--progress", "off", *extra])
    if code != 0:
        print(f"training {prompt!r} failed with exit code {code}")
        return None
    return read_map(out / "final_map.json"), (time.process_time() - cpu0) / 60, (time.perf_counter() - wall0) / 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prior", type=Path, help="a `runforge data voxel-prior` folder (default: train one)")
    parser.add_argument("--prompts", nargs="+", choices=CAPTIONS, default=list(DEFAULT_PROMPTS), metavar="PROMPT",
                        help=f"at least two of: {', '.join(CAPTIONS)} (default: {', '.join(DEFAULT_PROMPTS)})")
    parser.add_argument("--keep", type=Path, help="keep the workspace here instead of a temporary folder")
    parser.add_argument("--figures", type=Path, help="write voxel_sds_{start,PROMPT}.png (4 views at 96 px) here")
    parser.add_argument("extra", nargs="*", help="more `runforge train voxel` flags (after --)")
    args = parser.parse_args()
    if len(args.prompts) < 2:
        parser.error("--prompts: give at least two (each is the unrelated prompt of another)")
    import torch

    from runforge.trainers.voxel.prior.classifier import PriorClassifier

    torch.set_num_threads(1)
    work = (args.keep or Path(tempfile.mkdtemp(prefix="voxel_sds_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    prior = args.prior.resolve() if args.prior else work / "prior"
    figures = args.figures.resolve() if args.figures else None
    os.chdir(work)
    if args.prior is None:
        cpu0 = time.process_time()
        if runforge(["data", "voxel-prior", str(prior)]) != 0:
            return 1
        print(f"prior trained in {(time.process_time() - cpu0) / 60:.1f} CPU minutes: {prior}")

    classifier = PriorClassifier(prior, CAPTIONS)
    if figures is not None:
        write_figure(figures / "voxel_sds_start.png", ground_plane_map())
    resolution = classifier.unet.config.sample_size
    truth = np.random.default_rng(123)
    judged = []
    for caption in args.prompts:  # the judge itself: a fresh scene of each caption, 8 of its views
        errors = classifier.errors(orbit_renders(make_scene(caption, truth), resolution)[::3])
        judged.append(f"{caption} -> {min(errors, key=errors.__getitem__)}")
    print("classifier on a fresh generated scene of each caption: " + "; ".join(judged))
    start = ground_plane_map()
    worlds: dict[str, VoxelMap] = {}
    ok = True
    rows = []
    for prompt in args.prompts:
        grown = grow(prompt, prior, work / prompt.replace(" ", "_"), args.extra)
        if grown is None:
            return 1
        worlds[prompt], cpu, wall = grown
        if figures is not None:
            write_figure(figures / f"voxel_sds_{prompt.replace(' ', '_')}.png", worlds[prompt])
        errors = classifier.errors(orbit_renders(worlds[prompt], resolution))
        ranked = sorted(errors, key=errors.__getitem__)
        rows.append((prompt, errors, ranked, cpu, wall))
    print(f"\nclassifier: mean denoising error x1000 of the final world's 24 renders under each caption "
          f"(lowest = recognised); prior {prior}")
    print(f"{'prompt':<24}" + "".join(f"{c[:14]:>15}" for c in CAPTIONS) + "  recognised  CPU min  wall min")
    for prompt, errors, ranked, cpu, wall in rows:
        recognised = ranked[0] == prompt
        print(f"{prompt:<24}" + "".join(f"{1000 * errors[c]:>15.2f}" for c in CAPTIONS)
              + f"  {'yes' if recognised else 'no (' + ranked[0] + ')':>10}  {cpu:>7.2f}  {wall:>8.2f}")
        ok &= recognised and cpu <= BAR_CPU_MINUTES
    print(f"\n{'prompt':<24}{'statistic':<28}{'start':>8}{'prompted':>10}{'unrelated':>11}  unrelated prompt")
    for i, prompt in enumerate(args.prompts):
        other = args.prompts[(i + 1) % len(args.prompts)]
        name, statistic = STATISTICS[prompt]
        values = statistic(start), statistic(worlds[prompt]), statistic(worlds[other])
        moved = values[1] > values[0] and values[1] > values[2]
        print(f"{prompt:<24}{name:<28}{values[0]:>8.3g}{values[1]:>10.3g}{values[2]:>11.3g}  {other}"
              + ("" if moved else "   <- not moved"))
        ok &= moved
    load = os.getloadavg()
    print(f"\n{'PASS' if ok else 'FAIL'} (bar: every prompt recognised, its statistic above the start's and the "
          f"unrelated run's, <= {BAR_CPU_MINUTES:g} CPU minutes a run) | load {load[0]:.2f} | workspace {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
