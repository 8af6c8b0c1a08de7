"""A diffusion classifier: which caption makes the prior best at denoising these renders?

    errors = denoising_errors(unet, scheduler, texts, images, generator)   # (C,) one mean error per caption
    captions[int(errors.argmin())]                                          # the caption the prior recognises

Every caption sees the same noisy images (same noise, same timesteps), so the errors differ only by
the conditioning (Li et al., "Your Diffusion Model is Secretly a Zero-Shot Classifier", 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

CLASSIFIER_TIMESTEPS = (100, 200, 300, 400, 500, 600, 700)
"""Mid-range t's: at small t the image is barely noised and every caption denoises it alike, at large t
the prediction hardly depends on the image."""


@torch.no_grad()
def denoising_errors(unet: Any, scheduler: Any, texts: torch.Tensor, images: torch.Tensor,
                     generator: torch.Generator, timesteps: Sequence[int] = CLASSIFIER_TIMESTEPS,
                     repeats: int = 4) -> torch.Tensor:
    """(C,) mean squared noise-prediction error on `images` (N, 3, H, W) in -1..1 conditioned on each of the
    text embeddings `texts` (C, T, D), over `repeats` noises at each of `timesteps`."""
    size = unet.config.sample_size
    if images.shape[-1] != size:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    alphas = scheduler.alphas_cumprod.to(torch.float32)
    totals = torch.zeros(len(texts))
    for t in timesteps:
        a = alphas[t]
        for _ in range(repeats):
            noise = torch.randn(images.shape, generator=generator)
            noisy = a.sqrt() * images + (1 - a).sqrt() * noise
            steps = torch.full((len(images),), t)
            for c, text in enumerate(texts):
                eps = unet(noisy, steps, encoder_hidden_states=text[None].expand(len(images), -1, -1)).sample
                totals[c] += (eps - noise).pow(2).mean().item()
    return totals / (len(timesteps) * repeats)


class PriorClassifier:
    """A voxel prior folder loaded for classification: the UNet, its scheduler and the captions' embeddings."""

    def __init__(self, model_path: Path, captions: Sequence[str]) -> None:
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from ..guidance import encode_prompt

        local = {"local_files_only": True}
        self.unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet", **local).eval()
        self.scheduler = DDPMScheduler.from_pretrained(model_path, subfolder="scheduler", **local)
        tokenizer = CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer", **local)
        encoder = CLIPTextModel.from_pretrained(model_path, subfolder="text_encoder", **local).eval()
        self.captions = list(captions)
        self.texts = torch.cat([encode_prompt(tokenizer, encoder, c, torch.device("cpu"), False)[0] for c in captions])

    def errors(self, images: torch.Tensor, seed: int = 0) -> dict[str, float]:
        """Each caption's mean denoising error on `images` (N, 3, H, W) in 0..1."""
        errors = denoising_errors(self.unet, self.scheduler, self.texts, images * 2 - 1,
                                  torch.Generator().manual_seed(seed))
        return dict(zip(self.captions, errors.tolist()))
