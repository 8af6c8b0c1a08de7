"""Images for super-resolution: HR folders, the bundled texture set, degradation into LR, patches, val crops.

    train, val = load_split(cfg.data_root, min_size=...)      # lists of (path, uint8 tensor (3, H, W))
    sampler = PatchSampler([img for _, img in train], cfg.patch_size)
    hr = sampler.batch(16, generator)                          # (16, 3, P, P) float in [0, 1]
    lr = degrade(hr, scale=2, blur=0.0, noise=0.0, generator=generator)   # (16, 3, P/2, P/2)

The bundled set (used when no data root is given) is procedural: gradients, smooth noise, sharp-edged
shapes, stripes and checkerboards, lines and text strokes, drawn at twice the size and downsampled so
edges are anti-aliased like a photo's. It is generated once and cached in `cache_dir()/sr_textures_v1`.
"""

from __future__ import annotations

import functools
import math
import os
import random
import shutil
import string
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import BadInputError
from ..common import open_image
from .config import blur_radius

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Every image is held in memory as uint8; the header is checked against this before decoding.
MAX_IMAGE_PIXELS = 2**26
BUNDLED_NAME = "sr_textures_v1"
BUNDLED_TRAIN, BUNDLED_VAL, BUNDLED_SIZE = 48, 8, 256


# ---------------------------------------------------------------------- files


def cache_dir() -> Path:
    """Where generated data lives: $RUNFORGE_CACHE, else $XDG_CACHE_HOME/runforge, else ~/.cache/runforge."""
    if os.environ.get("RUNFORGE_CACHE"):
        return Path(os.environ["RUNFORGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "runforge"


def list_images(folder: Path) -> list[Path]:
    """The PNG/JPEG files of a folder by name; hidden ones (`.name`, e.g. macOS `._name` metadata) are skipped."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise BadInputError(folder, f"cannot be listed ({exc.strerror or exc})") from None
    return [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]


def load_image(path: Path, min_size: int, max_pixels: int = MAX_IMAGE_PIXELS,
               limit: str = "sr's ceiling for one image, MAX_IMAGE_PIXELS in runforge/trainers/sr/data.py") -> torch.Tensor:
    """An RGB image as uint8 (3, H, W); unreadable, over `max_pixels` or smaller than `min_size` is a BadInputError."""
    rgb = np.asarray(open_image(path, max_pixels, limit, "RGB"))
    height, width = rgb.shape[:2]
    if min(height, width) < min_size:
        raise BadInputError(path, f"is {width}x{height} pixels; HR images must be at least {min_size}x{min_size} "
                                  "(--patch_size / --val_crop)")
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def split_paths(root: Path) -> tuple[list[Path], list[Path]]:
    """`root/train` and `root/val`, or one folder split 90/10 (every 10th image by name goes to val)."""
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "no such data directory"
        raise BadInputError(root, f"{problem} (--data_root)")
    train_dir, val_dir = root / "train", root / "val"
    if train_dir.is_dir() or val_dir.is_dir():
        for folder in (train_dir, val_dir):
            if not folder.is_dir():
                raise BadInputError(folder, "missing: a data root with train/ needs val/ too (and the reverse)")
        train, val = list_images(train_dir), list_images(val_dir)
        for folder, found in ((train_dir, train), (val_dir, val)):
            if not found:
                raise BadInputError(folder, "holds no PNG or JPEG images")
        return train, val
    images = list_images(root)
    if len(images) < 2:
        raise BadInputError(root, f"holds {len(images)} PNG/JPEG image(s); need at least 2 (or train/ and val/ folders)")
    val = images[9::10] or images[-1:]
    train = [p for p in images if p not in val]
    return train, val


def load_split(data_root: Path | None, min_train: int, min_val: int) -> tuple[list[torch.Tensor], list[torch.Tensor], Path]:
    """Decoded train and val images (uint8, (3, H, W)) and the folder they came from."""
    root = Path(data_root) if data_root is not None else bundled_dataset()
    train_paths, val_paths = split_paths(root)
    train, val = _decode(tuple(map(_stamp, train_paths)), tuple(map(_stamp, val_paths)), min_train, min_val)
    return list(train), list(val), root


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=1)
def _decode(train: tuple[tuple[str, int, int], ...], val: tuple[tuple[str, int, int], ...], min_train: int,
            min_val: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    # check_inputs decodes every image before the run directory exists; train() asks again in the
    # same process and gets these tensors instead of decoding the data set a second time.
    return (tuple(load_image(Path(name), min_train) for name, *_ in train),
            tuple(load_image(Path(name), min_val) for name, *_ in val))


# ---------------------------------------------------------------------- the bundled texture set


def bundled_dataset(cache: Path | None = None) -> Path:
    """The procedural texture set, generated on first use (atomically: build aside, then rename)."""
    target = (cache or cache_dir()) / BUNDLED_NAME
    if (target / "val").is_dir():
        return target
    building = target.parent / f".{BUNDLED_NAME}.{os.getpid()}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(building, ignore_errors=True)
        for split, count, offset in (("train", BUNDLED_TRAIN, 0), ("val", BUNDLED_VAL, 10_000)):
            (building / split).mkdir(parents=True)
            for i in range(count):
                texture(BUNDLED_SIZE, seed=offset + i).save(building / split / f"texture_{i:03d}.png")
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise BadInputError(target.parent, f"cannot hold the bundled textures ({exc.strerror or exc}); "
                                           "set RUNFORGE_CACHE to a writable folder") from None
    try:
        os.rename(building, target)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)  # another process finished first; its copy is identical
    return target


def _random_color(rng: random.Random, dark: bool | None = None) -> tuple[int, int, int]:
    base = rng.random() if dark is None else (rng.uniform(0.0, 0.35) if dark else rng.uniform(0.65, 1.0))
    return tuple(int(255 * min(1.0, max(0.0, base + rng.uniform(-0.25, 0.25)))) for _ in range(3))  # type: ignore[return-value]


def _background(rng: random.Random, size: int) -> np.ndarray:
    """A smooth (size, size, 3) float image: a linear or radial gradient, or multi-octave value noise."""
    y, x = (axis.astype(np.float32) / size for axis in np.ogrid[0:size, 0:size])  # (size, 1), (1, size)
    a, b = np.array(_random_color(rng), np.float32), np.array(_random_color(rng), np.float32)
    kind = rng.choice(("linear", "radial", "noise"))
    if kind == "linear":
        angle = rng.uniform(0, 2 * math.pi)
        t = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle) + 0.5
    elif kind == "radial":
        cx, cy = rng.random(), rng.random()
        t = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / 1.2
    else:
        noise_rng = np.random.default_rng(rng.randrange(2**32))
        t = np.zeros((size, size), np.float32)
        for octave in range(1, 5):
            cells = 2 ** (octave + 1)
            grid = torch.from_numpy(noise_rng.random((1, 1, cells, cells), dtype=np.float32))
            up = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)[0, 0].numpy()
            t += up / 2**octave
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    t = np.clip(t, 0, 1)[..., None]
    return a * (1 - t) + b * t


def texture(size: int, seed: int) -> PILImage:
    """One procedural image with real structure: edges, stripes, lines, text strokes over a gradient."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    big = 2 * size
    image = Image.fromarray(_background(rng, big).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 7)):  # sharp-edged shapes, some filled with stripes or checks
        x0, y0 = rng.uniform(-0.1, 0.9) * big, rng.uniform(-0.1, 0.9) * big
        w, h = rng.uniform(0.08, 0.5) * big, rng.uniform(0.08, 0.5) * big
        box = (x0, y0, x0 + w, y0 + h)
        kind = rng.choice(("rectangle", "ellipse", "polygon", "stripes", "checks"))
        fill = _random_color(rng)
        if kind == "rectangle":
            draw.rectangle(box, fill=fill, outline=_random_color(rng), width=rng.randint(0, 6))
        elif kind == "ellipse":
            draw.ellipse(box, fill=fill, outline=_random_color(rng), width=rng.randint(0, 6))
        elif kind == "polygon":
            cx, cy, r = x0 + w / 2, y0 + h / 2, max(w, h) / 2
            corners = rng.randint(3, 7)
            points = [(cx + r * rng.uniform(0.4, 1) * math.cos(2 * math.pi * (i + rng.random() * 0.5) / corners),
                       cy + r * rng.uniform(0.4, 1) * math.sin(2 * math.pi * (i + rng.random() * 0.5) / corners))
                      for i in range(corners)]
            draw.polygon(points, fill=fill)
        else:
            period = rng.uniform(6, 40)
            angle = rng.uniform(0, math.pi)
            yy, xx = (axis.astype(np.float32) for axis in np.ogrid[0:big, 0:big])
            u = xx * math.cos(angle) + yy * math.sin(angle)
            if kind == "stripes":
                on = (u / period) % 1.0 < rng.uniform(0.3, 0.7)
            else:
                v = -xx * math.sin(angle) + yy * math.cos(angle)
                on = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
            pattern = Image.fromarray(np.where(on[..., None], np.array(fill, np.uint8), np.array(_random_color(rng), np.uint8)))
            mask = Image.new("L", (big, big), 0)
            ImageDraw.Draw(mask).rectangle(box, fill=255)
            image.paste(pattern, (0, 0), mask)
    for _ in range(rng.randint(2, 8)):  # straight strokes of many widths
        points = [(rng.uniform(0, big), rng.uniform(0, big)) for _ in range(2)]
        draw.line(points, fill=_random_color(rng), width=rng.randint(1, 8))
    for _ in range(rng.randint(2, 6)):  # text: the strokes SR is judged on
        font = ImageFont.load_default(size=rng.randint(14, 72))
        length = rng.randint(3, 14)
        text = "".join(rng.choice(string.ascii_letters + string.digits + "  ") for _ in range(length))
        draw.text((rng.uniform(-0.1, 0.8) * big, rng.uniform(0, 0.9) * big), text, fill=_random_color(rng), font=font)
    return image.resize((size, size), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------------- patches and degradation


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


class PatchSampler:
    """Random HR patches with random flips and 90° turns, from images held as uint8 in memory."""

    def __init__(self, images: list[torch.Tensor], patch: int) -> None:
        self.images = images
        self.patch = patch
        # One epoch shows every HR pixel once on average.
        self.pixels = sum(img.shape[1] * img.shape[2] for img in images)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, round(self.pixels / (batch_size * self.patch * self.patch)))

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        p = self.patch
        picks = torch.randint(len(self.images), (batch_size,), generator=generator).tolist()
        patches = []
        for index in picks:
            image = self.images[index]
            top = int(torch.randint(image.shape[1] - p + 1, (1,), generator=generator))
            left = int(torch.randint(image.shape[2] - p + 1, (1,), generator=generator))
            patch = image[:, top : top + p, left : left + p]
            flips, turns = torch.randint(2, (2,), generator=generator).tolist(), int(torch.randint(4, (1,), generator=generator))
            if flips[0]:
                patch = patch.flip(2)
            if flips[1]:
                patch = patch.flip(1)
            patches.append(torch.rot90(patch, turns, (1, 2)))
        return to_float(torch.stack(patches))  # (B, 3, P, P)


def gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 1, 2r+1, 2r+1) normalised Gaussian kernels; sigma 0 gives the identity."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    squared = offsets[None, :] ** 2 + offsets[:, None] ** 2  # (K, K)
    s = sigmas.clamp_min(1e-3).view(-1, 1, 1)
    kernels = torch.exp(-squared[None] / (2 * s * s))
    return (kernels / kernels.sum(dim=(1, 2), keepdim=True)).unsqueeze(1)


def degrade(hr: torch.Tensor, scale: int, blur: float, noise: float, generator: torch.Generator | None = None,
            fixed: bool = False) -> torch.Tensor:
    """LR inputs from HR (B, 3, H, W): optional blur, bicubic downsampling, optional noise, 8-bit rounding.

    Each image draws its blur sigma in [0, blur] and noise std in [0, noise]; `fixed` uses the middle
    of both ranges instead (the validation set).
    """
    b = hr.shape[0]
    if blur > 0:
        sigmas = torch.full((b,), blur / 2) if fixed else torch.rand(b, generator=generator) * blur
        radius = blur_radius(blur)
        kernels = gaussian_kernels(sigmas, radius).repeat_interleave(3, dim=0)  # (B*3, 1, K, K)
        padded = F.pad(hr.reshape(1, b * 3, *hr.shape[2:]), (radius,) * 4, mode="reflect")
        hr = F.conv2d(padded, kernels, groups=b * 3).reshape(hr.shape)
    lr = F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", align_corners=False, antialias=True)
    if noise > 0:
        stds = torch.full((b, 1, 1, 1), noise / 2) if fixed else torch.rand(b, 1, 1, 1, generator=generator) * noise
        lr = lr + stds * torch.randn(lr.shape, generator=generator)
    return (lr.clamp(0, 1) * 255).round() / 255


def upscale_bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The baseline every quality figure is compared with."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def val_crops(images: list[torch.Tensor], crop: int, count: int) -> torch.Tensor:
    """`count` fixed HR crops (count, 3, crop, crop), taken in turn from the images at spread-out positions."""
    crops = []
    for i in range(count):
        image = images[i % len(images)]
        k = i // len(images)
        # The k-th crop of an image moves along its diagonal by a golden-ratio stride, never repeating early.
        frac = (0.5 + k * 0.618034) % 1.0
        top = round(frac * (image.shape[1] - crop))
        left = round(((frac + 0.5 * (k % 2)) % 1.0) * (image.shape[2] - crop))
        crops.append(image[:, top : top + crop, left : left + crop])
    return to_float(torch.stack(crops))
