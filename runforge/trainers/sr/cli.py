"""`runforge upscale`: apply a trained sr model to images (torch is imported only when it runs).

    runforge upscale runs/crimson-cloud-4_6k7cjnx7 photo.png scan.jpg -o upscaled/
    runforge upscale runs/x/ckpts/last.pt photo.png            # any sr checkpoint, not only best.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...errors import BadInputError


def register(commands: Any, data: Any) -> None:
    upscale = commands.add_parser("upscale", help="upscale images with a trained sr model (best.pt of a run)")
    upscale.add_argument("model", metavar="RUN_OR_CKPT", help="an sr run directory (uses ckpts/best.pt) or a .pt file")
    upscale.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    upscale.add_argument("-o", "--output", default=".", metavar="DIR",
                         help="folder for the results, named {stem}_x{scale}.png (default: .)")
    upscale.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run the model")
    upscale.set_defaults(handler=cmd_upscale)


def cmd_upscale(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from ...run._atomic import write_with
    from .config import BEST_CHECKPOINT, CHECKPOINT_DIR
    from .data import load_image
    from .model import SRNet

    path = Path(args.model)
    if path.is_dir():
        path = path / CHECKPOINT_DIR / BEST_CHECKPOINT
    if not path.is_file():
        raise BadInputError(path, "no such sr checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = state["config"]
        model = SRNet(config["scale"], config["channels"], config["blocks"])
        model.load_state_dict(state["model"])
    except Exception as exc:  # unpickling, missing keys, foreign shapes: one answer
        raise BadInputError(path, f"is not an sr checkpoint ({type(exc).__name__}: {exc})") from None
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise BadInputError(None, "--device cuda: no CUDA device is available")
    device = torch.device("cuda" if use_cuda else "cpu")
    model.to(device).eval()
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = [(Path(name), load_image(Path(name), 1)) for name in args.images]  # every file checked before any work
    for source, pixels in inputs:
        with torch.no_grad():
            lr = pixels.float().div(255).unsqueeze(0).to(device)
            sr = model(lr).clamp(0, 1)[0].mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        target = out_dir / f"{source.stem}_x{model.scale}.png"
        write_with(target, lambda f: Image.fromarray(sr).save(f, format="PNG"))
        print(f"{source} ({pixels.shape[2]}x{pixels.shape[1]}) -> {target} ({sr.shape[1]}x{sr.shape[0]})")
    return 0
