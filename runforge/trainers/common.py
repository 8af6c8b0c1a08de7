"""What the torch trainers share: the device, user image files, torch files, output folders, and
one definition each of PSNR, SSIM and the atomic PNG write.

Nothing here imports torch or PIL at module level, so a trainer's config module may use it.
Every function raises the project's own errors (`BadInputError`, `ConfigError`): one line naming
the file or flag, exit 2.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import BadInputError, ConfigError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage


def pick_device(name: str) -> torch.device:
    """`--device auto|cpu|cuda`: auto is CUDA when available; cuda on a machine without it is a ConfigError."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(None, "--device cuda: no CUDA device is available (torch.cuda.is_available() is false); "
                                "use --device cpu")
    return torch.device(name)


def open_image(path: str | os.PathLike[str], max_pixels: int, limit: str, mode: str = "RGB") -> PILImage:
    """The image in `path`, decoded and converted to `mode`.

    The pixel count is checked on the header, before anything is decoded, so a huge (or forged)
    image costs no memory; `limit` says where `max_pixels` comes from. A missing file, one that is
    not an image, or a truncated or corrupt one is a BadInputError naming it.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "is not a file" if path.exists() else "no such image file")
    # PIL warns about damaged tags, palettes and images above its own ceiling (which is above every
    # caller's `max_pixels`): on stderr those would be lines beside the one error line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as exc:
            count = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(count.group(1)):,} pixels" if count else "more pixels than PIL opens"
            raise BadInputError(path, f"has {size}, more than the {max_pixels:,} allowed ({limit})") from None
        except Exception as exc:  # PIL raises many types for a file that is not an image
            raise BadInputError(path, f"cannot be read as an image ({describe(exc)})") from None
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise BadInputError(path, f"is {width}x{height} = {width * height:,} pixels, more than the "
                                          f"{max_pixels:,} allowed ({limit})")
            try:
                return image.convert(mode)  # decodes: a truncated or corrupt file fails here
            except Exception as exc:
                raise BadInputError(path, f"cannot be decoded ({describe(exc)})") from None


def cpu_state(obj: Any) -> Any:
    """A deep copy with every tensor cloned to the CPU: checkpoint state the loop cannot change later
    (`Run.checkpoint` writes it on its background thread)."""
    import copy

    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_state(v) for v in obj)
    return copy.deepcopy(obj)


def torch_load(path: str | os.PathLike[str]) -> Any:
    """`torch.load` on the CPU, tensors and plain containers only (nothing in the file runs), without
    torch's warnings; any failure is a ValueError of one short line."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. the pickle protocol of a file torch did not write
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and EOF errors of every kind
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if lines and lines[0].startswith("Weights only load failed"):
            # the weights-only unpickler's reason comes after a paragraph of advice
            lines = [line for line in lines[1:] if not line.startswith(("Please file", "Check the doc"))] or lines
        raise ValueError(f"{type(exc).__name__}: {lines[0] if lines else 'the file ends early'}") from None


def load_torch_file(path: str | os.PathLike[str], what: str) -> Any:
    """`torch_load` of a file given by the user; a missing or unloadable one is a BadInputError."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, f"no such file; expected {what}")
    try:
        return torch_load(path)
    except ValueError as exc:
        raise BadInputError(path, f"cannot be loaded as {what} ({exc})") from None


def load_model_state(model: torch.nn.Module, state: Any) -> None:
    """`model.load_state_dict(state)`, strict; a state of another architecture is a ValueError
    whose one line starts with torch's list of the missing, unexpected and mis-shaped keys."""
    if not isinstance(state, dict):
        raise ValueError(f"the model state is a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except Exception as exc:  # RuntimeError for keys and shapes, TypeError/AttributeError for values that are no tensors
        raise ValueError(" ".join(str(exc).split())[:400]) from None


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Any) -> None:
    """`optimizer.load_state_dict`, plus what it leaves to the first step: every per-parameter
    value is a tensor, and each moment has its parameter's shape. Any problem is a ValueError."""
    import torch

    try:
        optimizer.load_state_dict(state)
    except Exception as exc:  # ValueError for other parameter groups, KeyError/TypeError for a foreign layout
        raise ValueError(f"optimizer state: {describe(exc)}") from None
    for group in optimizer.param_groups:
        for index, param in enumerate(group["params"]):
            for key, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor):
                    raise ValueError(f"optimizer state {key!r} of parameter {index} is a {type(value).__name__}, "
                                     "not a tensor")
                if value.dim() and value.shape != param.shape:
                    raise ValueError(f"optimizer state {key!r} of parameter {index} has shape "
                                     f"{tuple(value.shape)}, the parameter {tuple(param.shape)}")


def check_output(folder: str | os.PathLike[str], files: Iterable[str] = (), flag: str | None = None) -> None:
    """Refuse, before any work, an output folder that cannot be made or written: a file where it or
    a parent should be, an unwritable parent, or a folder in the place of one of its `files`."""
    folder = Path(folder)
    named = f" ({flag})" if flag else ""
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        problem = "is not a folder" if existing == folder else f"cannot be made: {existing} is not a folder"
        raise BadInputError(folder, f"{problem} (a file is in the way){named}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(existing, f"is not writable{named}")
    for name in files:
        target = folder / name
        if (target.exists() or target.is_symlink()) and not target.is_file():
            raise BadInputError(target, f"is in the way: an output file would replace it, but it is not a file{named}")


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, for one-line errors about a library's failure."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# ---------------------------------------------------------------------- image quality and files


def psnr(x: torch.Tensor, y: torch.Tensor, border: int = 0) -> torch.Tensor:
    """PSNR in dB of each image of a batch (B,), for values in [0, 1]; `border` pixels at each edge of
    the last two dimensions are left out (BasicSR's crop for super-resolution).

    A batch's PSNR is the mean of these, never the PSNR of the batch's mean error, so a score does
    not depend on how views are grouped into batches (as gsplat and BasicSR report it). The error is
    floored at 1e-10, so identical images score 100 dB rather than infinity.
    """
    import torch

    if border:
        x, y = x[..., border:-border, border:-border], y[..., border:-border, border:-border]
    mse = (x - y).square().flatten(1).mean(dim=1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse)


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM of each image of a batch (B,): (B, C, H, W) values in [0, 1], Gaussian window of 11
    pixels and sigma 1.5, constants (0.01, 0.03) (Wang et al. 2004), no padding, channels averaged.

    Differentiable: `1 - ssim(render, target).mean()` is a loss term. Images under 11 pixels on a
    side get the largest odd window that fits.
    """
    import torch
    import torch.nn.functional as F

    size = min(SSIM_WINDOW, x.shape[-2], x.shape[-1])
    size -= 1 - size % 2
    offsets = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    weights = torch.exp(-offsets.square() / (2 * SSIM_SIGMA**2))
    weights = weights / weights.sum()
    channels = x.shape[1]
    # the five local moments in one separable (row, then column) blur over 5C channels
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    groups = stacked.shape[1]
    blurred = F.conv2d(stacked, weights.view(1, 1, 1, size).expand(groups, 1, 1, size), groups=groups)
    blurred = F.conv2d(blurred, weights.view(1, 1, size, 1).expand(groups, 1, size, 1), groups=groups)
    mu_x, mu_y, xx, yy, xy = blurred.split(channels, dim=1)
    var_x, var_y, cov = xx - mu_x.square(), yy - mu_y.square(), xy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return score.flatten(1).mean(dim=1)


def png_bytes(image: Any) -> bytes:
    """A PNG file of `image`: a PIL image, or a uint8 array (H, W), (H, W, 3) or (H, W, 4)."""
    import io

    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: str | os.PathLike[str], image: Any, *, durable: bool = True) -> Path:
    """`png_bytes(image)` written atomically to `path` (its folder is made); a reader never sees half
    an image. `durable=False` skips the fsyncs, for many files that can be made again."""
    from ..run.files import write_bytes

    return write_bytes(path, png_bytes(image), durable=durable)
