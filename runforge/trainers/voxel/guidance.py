"""What pulls the render: reference views (photometric) or a text-conditioned diffusion model (SDS).

    photometric = Photometric(dataset_dir, cameras, size, block_size, device)
    loss = photometric.loss(volume, camera_position, generator, rays=4096)

    sds = load_sds(model_path, prompt, device)           # SD 1.x/2.x, SDXL, or a pixel-space voxel prior (no vae/)
    loss = sds.loss(rgb_image, progress, generator)      # surrogate: d loss / d latents = w(t) (eps_cfg - eps)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import BadInputError
from ..common import psnr
from .dataset import Camera, image_path, read_image
from .render import (
    BACKGROUND,
    Segments,
    camera_rays,
    composite,
    over,
    traverse,
    traverse_in_chunks,
)

SEGMENT_CACHE_BYTES = 1 << 30
"""Per-camera ray segments are kept up to this size: training revisits the same cameras."""


def _ray_starts(seg: Segments) -> torch.Tensor:
    """(num_rays + 1,): where each ray's segments begin in the ray-major packing, and the end."""
    counts = torch.bincount(seg.ray, minlength=seg.num_rays)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _select_rays(seg: Segments, starts: torch.Tensor, pixels: torch.Tensor) -> Segments:
    """The segments of the rays `pixels` (sorted), renumbered 0..len(pixels)-1.

    Gathers the rays' ranges of the packing, so a step costs what its rays cost rather than a pass over
    every segment of the camera: several views a step would otherwise pay for several whole images."""
    first, counts = starts[pixels], starts[pixels + 1] - starts[pixels]
    ray = torch.repeat_interleave(torch.arange(len(pixels), device=pixels.device), counts)
    offset = torch.cumsum(counts, 0) - counts
    keep = torch.arange(len(ray), device=pixels.device) + (first - offset).repeat_interleave(counts)
    return Segments(ray, seg.cell[keep], seg.length[keep], seg.shade[keep], len(pixels))


class SegmentCache:
    """Ray segments of the dataset's cameras, kept after the first use: they depend on the camera, not on the grid.

    A camera whose segments could exceed the budget on its own (big images) is never traversed whole:
    its ray subsets are traversed on demand and its full images are rendered in chunks of rays.
    """

    BYTES_PER_SEGMENT = 28  # ray, cell (int64), length, shade (float32)

    def __init__(self, size: Sequence[int], block_size: float, device: torch.device,
                 budget: int = SEGMENT_CACHE_BYTES) -> None:
        self.size, self.block_size, self.device, self.budget = tuple(size), block_size, device, budget
        self._cache: dict[int, tuple[Segments, torch.Tensor]] = {}
        self._bytes = 0

    def _cached(self, camera: Camera) -> tuple[Segments, torch.Tensor] | None:
        cached = self._cache.get(camera.index)
        most = camera.width * camera.height * (sum(self.size) + 3) * self.BYTES_PER_SEGMENT
        if cached is None and self._bytes + most <= self.budget:
            origins, directions = camera_rays(camera, self.block_size, self.device)
            seg = traverse(origins, directions, self.size)
            cached = self._cache[camera.index] = (seg, _ray_starts(seg))
            self._bytes += len(seg.ray) * self.BYTES_PER_SEGMENT
        return cached

    def rays(self, camera: Camera, pixels: torch.Tensor | None = None) -> Segments:
        """The segments of `camera`'s pixels `pixels` (sorted flat indices; None: all), numbered 0..len(pixels)-1."""
        cached = self._cached(camera)
        if cached is not None:
            seg, starts = cached
            return seg if pixels is None else _select_rays(seg, starts, pixels)
        origins, directions = camera_rays(camera, self.block_size, self.device)
        if pixels is not None:
            origins, directions = origins[pixels], directions[pixels]
        return traverse_in_chunks(origins, directions, self.size)

    def render(self, volume: torch.Tensor, camera: Camera, background: Sequence[float] = BACKGROUND) -> torch.Tensor:
        """The full image (H, W, 3) over `background`."""
        premultiplied, alpha = composite(volume, self.rays(camera))
        return over(premultiplied, alpha, background).reshape(camera.height, camera.width, 3)


class Photometric:
    """Mean squared error between the render and the reference view, on RGB over the background and on coverage."""

    name = "photometric"

    def __init__(self, dataset_dir: Path, cameras: Sequence[Camera], segments: SegmentCache,
                 background: Sequence[float] = BACKGROUND) -> None:
        self.segments = segments
        self.background = tuple(background)
        background_rgb = torch.tensor(background, device=segments.device)
        self.targets: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        for camera in cameras:
            path = image_path(dataset_dir, camera.index)
            rgba = torch.from_numpy(read_image(path, camera.width, camera.height)).reshape(-1, 4).to(segments.device)
            has_alpha = _has_alpha(path)
            alpha = rgba[:, 3]
            target_rgb = rgba[:, :3] * alpha[:, None] + (1 - alpha[:, None]) * background_rgb
            self.targets.append((target_rgb, alpha if has_alpha else None))
        self.cameras = list(cameras)

    def loss(self, volume: torch.Tensor, position: int, generator: torch.Generator, rays: int = 0) -> torch.Tensor:
        camera = self.cameras[position]
        target_rgb, target_alpha = self.targets[position]
        count = camera.width * camera.height
        if 0 < rays < count:
            pixels = torch.randperm(count, generator=generator)[:rays].sort().values.to(volume.device)
            target_rgb = target_rgb[pixels]
            target_alpha = None if target_alpha is None else target_alpha[pixels]
        else:
            pixels = None
        premultiplied, alpha = composite(volume, self.segments.rays(camera, pixels))
        rgb = over(premultiplied, alpha, self.background)
        loss = F.mse_loss(rgb, target_rgb)
        if target_alpha is not None:
            loss = loss + F.mse_loss(alpha, target_alpha)
        return loss


    def psnr(self, volume: torch.Tensor) -> float:
        """PSNR (dB) of the whole views over the background against the references: each view's, averaged."""
        scores = []
        for camera, (target_rgb, _) in zip(self.cameras, self.targets):
            rgb = self.segments.render(volume, camera, self.background).reshape(-1, 3)
            scores.append(psnr(rgb[None], target_rgb[None]).item())
        return sum(scores) / len(scores)


def _has_alpha(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


@dataclass
class TextCondition:
    """Prompt and empty-prompt embeddings (+ SDXL's pooled embeddings and size ids)."""

    cond: torch.Tensor  # (1, T, D)
    uncond: torch.Tensor  # (1, T, D)
    pooled: tuple[torch.Tensor, torch.Tensor] | None = None  # SDXL: (1, P) each
    time_ids: torch.Tensor | None = None  # SDXL: (1, 6)


class SDS:
    """Score Distillation Sampling (DreamFusion) with a diffusers UNet, VAE and DDPM-style scheduler.

    Without a VAE (`vae=None`: a pixel-space model such as `runforge data voxel-prior`'s) the "latents" are
    the image itself in -1..1 at the UNet's `sample_size`.

    w(t) = 1 - alpha_bar(t) (DreamFusion's weighting); t ~ U[t_min, t_max(progress)], t_max
    annealing from coarse (large t) to fine; classifier-free guidance with `cfg_scale`; the
    gradient w(t) (eps_cfg - eps) is clamped to +-grad_clip and applied through the surrogate
    0.5 * ||latents - sg(latents - grad)||^2, whose gradient w.r.t. the latents is exactly it.
    """

    name = "sds"

    def __init__(self, unet: Any, vae: Any | None, scheduler: Any, text: TextCondition, *, cfg_scale: float = 7.5,
                 t_min: float = 0.02, t_max_start: float = 0.98, t_max_end: float = 0.5, grad_clip: float = 1.0) -> None:
        self.unet, self.vae, self.scheduler, self.text = unet, vae, scheduler, text
        for module in (unet, vae) if vae is not None else (unet,):
            module.requires_grad_(False)
            module.eval()
        self.cfg_scale, self.grad_clip = cfg_scale, grad_clip
        self.t_min, self.t_max_start, self.t_max_end = t_min, t_max_start, t_max_end
        self.num_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32)
        self.image_size = int((unet if vae is None else vae).config.sample_size)
        self.scaling = 1.0 if vae is None else float(getattr(vae.config, "scaling_factor", 0.18215))

    def timestep_range(self, progress: float) -> tuple[int, int]:
        t_max = self.t_max_start + (self.t_max_end - self.t_max_start) * progress
        low = int(self.t_min * self.num_timesteps)
        return low, max(low + 1, int(t_max * self.num_timesteps))

    def loss(self, rgb: torch.Tensor, progress: float, generator: torch.Generator) -> torch.Tensor:
        """`rgb` (H, W, 3) in 0..1; `progress` in 0..1 along training."""
        dtype = next(self.unet.parameters()).dtype
        device = rgb.device
        image = rgb.permute(2, 0, 1)[None] * 2 - 1
        image = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if self.vae is None:
            latents = image.to(dtype)  # (1, 3, h, w)
        else:
            latents = self.vae.encode(image.to(dtype)).latent_dist.mean * self.scaling  # (1, 4, h, w)
        low, high = self.timestep_range(progress)
        t = torch.randint(low, high, (1,), generator=generator).to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
        with torch.no_grad():
            noisy = self.scheduler.add_noise(latents.detach(), noise, t)
            text = self.text
            extra = {}
            if text.pooled is not None:
                extra["added_cond_kwargs"] = {"text_embeds": torch.cat(text.pooled[::-1]).to(device, dtype),
                                              "time_ids": text.time_ids.repeat(2, 1).to(device, dtype)}
            eps = self.unet(torch.cat([noisy, noisy]), torch.cat([t, t]),
                            encoder_hidden_states=torch.cat([text.uncond, text.cond]).to(device, dtype), **extra).sample
            eps_uncond, eps_cond = eps.chunk(2)
            eps_cfg = eps_uncond + self.cfg_scale * (eps_cond - eps_uncond)
            weight = (1 - self.alphas_cumprod.to(device)[t]).view(-1, 1, 1, 1)
            grad = torch.nan_to_num(weight * (eps_cfg - noise))
            if self.grad_clip > 0:
                grad = grad.clamp(-self.grad_clip, self.grad_clip)
        target = (latents - grad).detach()
        return 0.5 * F.mse_loss(latents.float(), target.float(), reduction="sum")


def encode_prompt(tokenizer: Any, encoder: Any, prompt: str, device: torch.device, penultimate: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    tokens = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        out = encoder(tokens, output_hidden_states=penultimate)
    hidden = out.hidden_states[-2] if penultimate else out.last_hidden_state
    pooled = getattr(out, "text_embeds", None)
    return hidden, pooled


def load_sds(model_path: Path, prompt: str, device: torch.device, **options: Any) -> SDS:
    """Load a diffusers folder (never downloading): UNet, VAE (none: pixel space), scheduler, tokenizer(s) and
    text encoder(s)."""
    from .config import PIXEL_CHANNELS, check_model_folder

    model_path = Path(model_path)
    check_model_folder(model_path)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    local = {"local_files_only": True}
    try:
        unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet", torch_dtype=dtype, **local).to(device)
        vae = (None if unet.config.in_channels == PIXEL_CHANNELS else
               AutoencoderKL.from_pretrained(model_path, subfolder="vae", torch_dtype=dtype, **local).to(device))
        scheduler = DDPMScheduler.from_pretrained(model_path, subfolder="scheduler", **local)
        sdxl = (model_path / "text_encoder_2").is_dir()
        tokenizer = CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer", **local)
        encoder = CLIPTextModel.from_pretrained(model_path, subfolder="text_encoder", torch_dtype=dtype, **local).to(device)
        if not sdxl:
            cond, _ = encode_prompt(tokenizer, encoder, prompt, device, False)
            uncond, _ = encode_prompt(tokenizer, encoder, "", device, False)
            text = TextCondition(cond, uncond)
        else:
            tokenizer_2 = CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer_2", **local)
            encoder_2 = CLIPTextModelWithProjection.from_pretrained(model_path, subfolder="text_encoder_2",
                                                                    torch_dtype=dtype, **local).to(device)
            parts = []
            for p in (prompt, ""):
                hidden_1, _ = encode_prompt(tokenizer, encoder, p, device, True)
                hidden_2, pooled = encode_prompt(tokenizer_2, encoder_2, p, device, True)
                parts.append((torch.cat([hidden_1, hidden_2], dim=-1), pooled))
            size = int((unet if vae is None else vae).config.sample_size)
            time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=dtype, device=device)
            text = TextCondition(parts[0][0], parts[1][0], (parts[0][1], parts[1][1]), time_ids)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise BadInputError(model_path, f"cannot load the diffusers model ({str(exc).splitlines()[0]})") from None
    return SDS(unet, vae, scheduler, text, **options)
