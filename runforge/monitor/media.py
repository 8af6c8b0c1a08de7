"""The run page's media: the images and videos a run wrote, one series per kind.

    {images_dir}/step_{step:04d}_{name}.png     `Run.image`; the name's trailing index is its view
    renders/val_step{step}/{i:03d}.png          splat: ground truth | render of held-out view i
    renders/{kind}_step{step}.mp4               splat: the trajectory video (traj_interp, ...)

A kind is an image name without its camera/view/index tail: voxel saves one camera
per image step (`cam20`, `cam23`, ...), so those are one series `cam` whose step
slider spans all of training, with the camera as the caption. Every path is
checked by `RunEntry.path` (a file or folder that links out of the run is left out).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..run.layout import RENDERS_DIR
from .catalog import RunEntry

_VIEW = re.compile(r"^(?P<kind>.*?[A-Za-z])[_.\-]?\d+$")
"""`cam20`, `view_3`, `sample-0`: a kind and its view; a name of digits only is a kind of its own."""
_VALIDATION = re.compile(r"^val_step(?P<step>\d+)$")
_VIDEO = re.compile(r"^(?P<kind>.+)_step(?P<step>\d+)\.mp4$")

VALIDATION_KIND = "validation renders"
PANELS: dict[str, list[str]] = {
    # sr's validate_now: torch.cat([bicubic, model, hr], dim=2) of the first val crop
    "val_bicubic_model_hr": ["LR (bicubic)", "SR (model)", "HR"],
    # splat's evaluate: torch.cat([pixels, colors], 1) of each held-out view
    VALIDATION_KIND: ["ground truth", "render"],
}
"""The side-by-side panels of an image kind, left to right, for the kinds whose writer is known."""


def images_by_name(entry: RunEntry) -> dict[str, list[dict[str, Any]]]:
    """{name: [{step, file}]} of the images `Run.image` wrote, each name's in step order."""
    images: dict[str, list[dict[str, Any]]] = {}
    for path in entry.images():
        step, _, name = path.stem.removeprefix("step_").partition("_")
        if step.isdigit():
            images.setdefault(name, []).append({"step": int(step), "file": entry.relative(path)})
    for shots in images.values():
        shots.sort(key=lambda shot: shot["step"])  # step_{step:04d}: names sort wrong past 9999
    return images


def run_media(entry: RunEntry, images: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The series of the run page: [{kind, panels, video, shots: [{step, view, file}]}], the kinds of
    `images` (`images_by_name`) in name order, then splat's validation renders, then its videos;
    shots by step, then view."""
    kinds: dict[str, list[dict[str, Any] | None]] = {}
    for name, shots in images.items():
        match = _VIEW.match(name)
        kinds.setdefault(match["kind"] if match else name, []).extend(
            {**shot, "view": name if match else None} for shot in shots)
    found = [_series(kind, shots) for kind, shots in sorted(kinds.items())]
    validation: list[dict[str, Any] | None] = []
    videos: dict[str, list[dict[str, Any] | None]] = {}
    for item in _listing(entry.path(RENDERS_DIR)):
        if (folder := _VALIDATION.match(item.name)) and item.is_dir():
            validation += [_shot(entry, folder["step"], f"view {Path(png.name).stem}", Path(png.path))
                           for png in _listing(Path(item.path)) if png.name.endswith(".png")]
        elif (video := _VIDEO.match(item.name)) and item.is_file():
            videos.setdefault(video["kind"], []).append(_shot(entry, video["step"], None, Path(item.path)))
    found.append(_series(VALIDATION_KIND, validation))
    found += [_series(kind, shots, video=True) for kind, shots in sorted(videos.items())]
    return [series for series in found if series["shots"]]


def _listing(folder: Path | None) -> list[os.DirEntry[str]]:
    """The entries of a folder; [] for none (absent, a file, or `RunEntry.path` refused it)."""
    if folder is None:
        return []
    try:
        return list(os.scandir(folder))
    except OSError:
        return []


def _shot(entry: RunEntry, step: str, view: str | None, path: Path) -> dict[str, Any] | None:
    """One image or video at a step; None when its real path leaves the run (a link out)."""
    real = entry.path(path)
    if real is None or not real.is_file():
        return None
    return {"step": int(step), "view": view, "file": entry.relative(real)}


def _series(kind: str, shots: list[dict[str, Any] | None], video: bool = False) -> dict[str, Any]:
    kept = [shot for shot in shots if shot is not None]
    kept.sort(key=lambda shot: (shot["step"], shot["view"] or ""))  # step_{step:04d} sorts wrong past 9999
    return {"kind": kind, "panels": PANELS.get(kind), "video": video, "shots": kept}
