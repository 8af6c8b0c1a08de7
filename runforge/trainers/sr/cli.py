"""`runforge upscale`: apply a trained sr model to images (torch is imported only when it runs);
`runforge show --plateau`: the plateau warning under an sr run's snapshot.

    runforge upscale runs/crimson-cloud-4_6k7cjnx7 photo.png scan.jpg -o upscaled/
    runforge upscale runs/x/ckpts/last.pt photo.png            # any sr checkpoint, not only best.pt

Everything is checked before the first result is written: the checkpoint, the device, the output
folder and every image (decoded, with its size checked on the header first).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...errors import BadInputError
from ...run.snapshots import is_number

DEFAULT_MAX_PIXELS = 4096 * 4096
# With x2 or x4 results, inputs then stay under the trainer's own ceiling (MAX_IMAGE_PIXELS).
LARGEST_MAX_PIXELS = 2**28


def pixel_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= value <= LARGEST_MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {LARGEST_MAX_PIXELS}, got {value}")
    return value


def register(commands: Any, data: Any) -> None:
    upscale = commands.add_parser("upscale", help="upscale images with a trained sr model (best.pt of a run)")
    upscale.add_argument("model", metavar="RUN_OR_CKPT", help="an sr run directory (uses ckpts/best.pt) or a .pt file")
    upscale.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    upscale.add_argument("-o", "--output", default=".", metavar="DIR",
                         help="folder for the results, named {stem}_x{scale}.png (default: .)")
    upscale.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run the model")
    upscale.add_argument("--max_pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS, metavar="N",
                         help=f"largest result in pixels; a bigger one is refused before its input is decoded "
                              f"(default {DEFAULT_MAX_PIXELS} = 4096x4096, at most {LARGEST_MAX_PIXELS}; the whole "
                              "image goes through the model at once)")
    upscale.set_defaults(handler=cmd_upscale)


PLATEAU_WARNING_STEPS = 300
"""`runforge show` warns when an sr snapshot's `adaptive_plateau_counter` passes this many steps."""


def show_arguments(show: argparse.ArgumentParser) -> None:
    show.add_argument("--plateau", type=int, default=PLATEAU_WARNING_STEPS, metavar="STEPS",
                      help="sr runs: warn when the snapshot's adaptive_plateau_counter passes this "
                           f"(default {PLATEAU_WARNING_STEPS})")


def show_lines(snapshot: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The plateau check under the snapshot `runforge show` prints: for a snapshot asked for by
    --step, and for the latest one when it has a counter."""
    if getattr(args, "step", None) is None and snapshot.get("adaptive_plateau_counter") is None:
        return []
    return plateau_lines(snapshot, getattr(args, "plateau", PLATEAU_WARNING_STEPS))


def plateau_lines(snapshot: dict[str, Any], threshold: int = PLATEAU_WARNING_STEPS) -> list[str]:
    """The plateau warning for one snapshot: how long the validation quality has not improved, and
    whether the adaptive system still has an LR boost to try."""
    plateau = snapshot.get("adaptive_plateau_counter")
    if not is_number(plateau):
        return ["plateau: this run reports no adaptive_plateau_counter"]
    if plateau > threshold:
        lines = [f"⚠️  WARNING: Plateau detected for {plateau} steps!"]
        boost = snapshot.get("adaptive_lr_boost_available")
        if boost is None:
            lines.append("   (the run reports no adaptive_lr_boost_available)")
        elif boost:
            lines.append("   LR Boost is available and will trigger soon")
        else:
            lines.append("   LR Boost is on cooldown")
        return lines
    return [f"✅ Training is progressing (plateau: {plateau} steps)"]


def cmd_upscale(args: argparse.Namespace) -> int:
    import torch

    from ...run.layout import CHECKPOINT_DIR
    from ...run.naming import make_dir
    from ..common import check_output, pick_device, torch_load, write_png
    from .config import BEST_CHECKPOINT
    from .data import load_image
    from .model import model_from_checkpoint

    path = Path(args.model)
    if path.is_dir():
        path = path / CHECKPOINT_DIR / BEST_CHECKPOINT
    if not path.is_file():
        raise BadInputError(path, "no such sr checkpoint")
    try:
        model = model_from_checkpoint(torch_load(path))
    except ValueError as exc:  # unloadable, foreign keys or shapes: one answer
        raise BadInputError(path, f"is not an sr checkpoint ({exc})") from None
    device = pick_device(args.device)
    model.to(device).eval()

    out_dir = Path(args.output)
    sources = [Path(name) for name in args.images]
    targets: dict[Path, Path] = {}
    for source in sources:
        target = out_dir / f"{source.stem}_x{model.scale}.png"
        if target in targets.values():
            other = next(s for s, t in targets.items() if t == target)
            raise BadInputError(source, f"would write {target}, as {other} does; give the inputs distinct names")
        targets[source] = target
    check_output(out_dir, [t.name for t in targets.values()], "-o")
    limit = f"--max_pixels {args.max_pixels} for the x{model.scale} result"
    inputs = [(source, load_image(source, 1, args.max_pixels // model.scale**2, limit)) for source in sources]

    make_dir(out_dir)
    for source, pixels in inputs:
        with torch.no_grad():
            lr = pixels.float().div(255).unsqueeze(0).to(device)
            sr = model(lr).clamp(0, 1)[0].mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        target = targets[source]
        write_png(target, sr)
        print(f"{source} ({pixels.shape[2]}x{pixels.shape[1]}) -> {target} ({sr.shape[1]}x{sr.shape[0]})")
    return 0
