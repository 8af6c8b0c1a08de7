"""A tiny text-conditioned pixel-space diffusion model of voxel scenes, saved as a diffusers folder.

    folder = train_prior(PriorConfig(), Path("models/voxel-prior"), run)    # generate scenes, train, save

The folder holds what `guidance.load_sds` reads from a Stable Diffusion checkpoint except the VAE:
`unet/` (a `UNet2DConditionModel` on 3-channel 32x32 images in -1..1), `scheduler/` (DDPM),
`text_encoder/` (a 2-layer `CLIPTextModel` built from config and trained with the UNet) and
`tokenizer/` (a `CLIPTokenizer` whose merges spell every caption word as one token), plus
`model_index.json`. Without `vae/`, SDS runs in pixel space. Nothing in it comes from elsewhere.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ....run import Run
from ....run.files import write_json
from ..dataset import orbit_cameras
from ..guidance import SegmentCache
from ..render import hard_volume
from .scenes import CAPTIONS, WORLD_SIZE, make_scene

MAX_TOKENS = 16
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass
class PriorConfig:
    """What `runforge data voxel-prior` trains (its presets below; the flags change steps, seed, threads)."""

    scenes_per_caption: int = 100
    views_per_scene: int = 6  # of the 24 orbit cameras, drawn per scene
    resolution: int = 32  # image side: also the UNet's sample_size, to which SDS resizes its renders
    steps: int = 1000
    batch_size: int = 24
    lr: float = 2e-3
    cond_dropout: float = 0.15  # classifier-free guidance: this share of captions is replaced by ""
    ema_decay: float = 0.995
    channels: tuple[int, ...] = (16, 32, 64)
    text_width: int = 64
    sample_every: int = 250
    log_every: int = 25
    seed: int = 0
    threads: int = 1  # on a shared CPU a second thread mostly spins


PRESETS = {
    "default": PriorConfig(),
    "tiny": PriorConfig(scenes_per_caption=2, views_per_scene=2, resolution=16, steps=4, batch_size=4,
                        channels=(8, 16), text_width=16, sample_every=2, log_every=1, threads=1),
}


def write_tokenizer(folder: Path, captions: tuple[str, ...]) -> Any:
    """A CLIPTokenizer whose vocabulary spells each caption word as one token: letters, plus left-to-right
    merges that build every word (CLIP's byte-level BPE, with merges written here instead of learned)."""
    from transformers import CLIPTokenizer

    vocab = {BOS: 0, EOS: 1}
    merges: list[str] = []
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(letter, len(vocab))
        vocab.setdefault(letter + "</w>", len(vocab))
    for word in sorted({w for caption in captions for w in caption.split()}):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        built = pieces[0]
        for piece in pieces[1:]:
            if built + piece not in vocab:
                merges.append(f"{built} {piece}")
                vocab[built + piece] = len(vocab)
            built += piece
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tokenize(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """The ids `guidance.load_sds` feeds the text encoder: padded to the tokenizer's max length."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def build_models(cfg: PriorConfig, vocab_size: int) -> tuple[Any, Any, Any]:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    levels = len(cfg.channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    unet = UNet2DConditionModel(sample_size=cfg.resolution, in_channels=3, out_channels=3,
                                block_out_channels=cfg.channels, layers_per_block=1, down_block_types=down,
                                up_block_types=up, cross_attention_dim=cfg.text_width, attention_head_dim=8,
                                norm_num_groups=8)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=cfg.text_width,
                                           intermediate_size=2 * cfg.text_width, num_hidden_layers=2,
                                           num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
                                           bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              prediction_type="epsilon")
    return unet, encoder, scheduler


def render_dataset(cfg: PriorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, R, R) in -1..1 of random scenes from the bundled dataset's orbit cameras, and caption ids (N,)."""
    rng = np.random.default_rng(cfg.seed)
    cameras = orbit_cameras(WORLD_SIZE, 24, cfg.resolution)
    segments = SegmentCache(WORLD_SIZE, 1.0, torch.device("cpu"))
    images, labels = [], []
    with torch.no_grad():
        for label, caption in enumerate(CAPTIONS):
            for _ in range(cfg.scenes_per_caption):
                volume = hard_volume(make_scene(caption, rng))
                for position in rng.choice(len(cameras), cfg.views_per_scene, replace=False):
                    images.append(segments.render(volume, cameras[position]).permute(2, 0, 1))
                    labels.append(label)
    return torch.stack(images) * 2 - 1, torch.tensor(labels)


@torch.no_grad()
def sample(unet: Any, encoder: Any, scheduler_config: dict[str, Any], ids: torch.Tensor, uncond: torch.Tensor,
           generator: torch.Generator, guidance: float = 3.0, steps: int = 25) -> torch.Tensor:
    """DDIM samples (N, 3, R, R) in 0..1 for the token ids (N, T), classifier-free guided."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler_config)
    ddim.set_timesteps(steps)
    size = unet.config.sample_size
    x = torch.randn((len(ids), 3, size, size), generator=generator)
    text = encoder(torch.cat([uncond.expand(len(ids), -1), ids])).last_hidden_state
    for t in ddim.timesteps:
        eps_uncond, eps_cond = unet(torch.cat([x, x]), t, encoder_hidden_states=text).sample.chunk(2)
        x = ddim.step(eps_uncond + guidance * (eps_cond - eps_uncond), t, x).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


def _tile(images: torch.Tensor, columns: int) -> torch.Tensor:
    """(N, 3, H, W) -> one (rows*H, columns*W, 3) picture, row by row."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    padded = torch.ones(rows * columns, c, h, w)
    padded[:n] = images
    return padded.reshape(rows, columns, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, columns * w, c)


def write_model(folder: Path, unet: Any, encoder: Any, scheduler: Any) -> None:
    from diffusers import __version__ as diffusers_version

    unet.save_pretrained(folder / "unet")
    encoder.save_pretrained(folder / "text_encoder")
    scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": "VoxelPriorPipeline", "_diffusers_version": diffusers_version,
             "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"]}
    write_json(folder / "model_index.json", index)


def train_prior(cfg: PriorConfig, folder: Path, run: Run) -> None:
    """Render the scenes, train the UNet and the text encoder together, write the diffusers folder at `folder`."""
    import copy

    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    generator = torch.Generator().manual_seed(cfg.seed)
    started = time.process_time()
    images, labels = render_dataset(cfg)
    run.event(f"rendered {len(images)} views of {cfg.scenes_per_caption} scenes per caption "
              f"({len(CAPTIONS)} captions) at {cfg.resolution} px", console=True)
    tokenizer = write_tokenizer(folder / "tokenizer", CAPTIONS)
    ids = tokenize(tokenizer, [*CAPTIONS, ""])  # the last row: the empty caption of classifier-free guidance
    unet, encoder, scheduler = build_models(cfg, len(tokenizer))
    ema = [copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(encoder).requires_grad_(False)]
    params = [*unet.parameters(), *encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warmup = max(1, cfg.steps // 20)

    def lr_at(s: int) -> float:  # linear warm-up over 5% of the steps, then a cosine to zero
        return min(1.0, s / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    alphas = scheduler.alphas_cumprod
    for step in range(1, cfg.steps + 1):
        pick = torch.randint(len(images), (cfg.batch_size,), generator=generator)
        x0, caption = images[pick], labels[pick].clone()
        caption[torch.rand(cfg.batch_size, generator=generator) < cfg.cond_dropout] = len(CAPTIONS)
        t = torch.randint(scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        text = encoder(ids[caption]).last_hidden_state
        loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=text).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))  # warm-up: the random start is forgotten early
        with torch.no_grad():
            for average, model in zip(ema, (unet, encoder)):
                for kept, new in zip(average.parameters(), model.parameters()):
                    kept.lerp_(new, 1 - decay)
        if step % cfg.log_every == 0 or step in (1, cfg.steps):
            run.log(step, {"loss": loss.item(), "lr": schedule.get_last_lr()[0],
                           "cpu_minutes": (time.process_time() - started) / 60})
        stop = run.poll(step).stop
        if step % cfg.sample_every == 0 or step == cfg.steps or stop:
            rows = torch.arange(len(CAPTIONS)).repeat_interleave(4)
            pictures = sample(ema[0], ema[1], dict(scheduler.config), ids[rows], ids[-1:], generator)
            run.image(step, "samples", _tile(pictures, 4 * 2))
            write_model(folder, ema[0], ema[1], scheduler)  # a usable prior before the end, and after a stop
        if stop:
            break
    run.save_json("prior.json", {"captions": list(CAPTIONS), "config": asdict(cfg), "model": str(folder)})
