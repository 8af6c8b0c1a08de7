"""`runforge data voxel-prior`: the diffusers folder it writes is what the voxel SDS path loads (in pixel space),
its bad input, and the diffusion classifier's ranking."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from runforge.cli import main
from runforge.run import read_metrics
from runforge.trainers.voxel.dataset import orbit_cameras
from runforge.trainers.voxel.grid import DifferentiableVoxelGrid
from runforge.trainers.voxel.guidance import SegmentCache, load_sds
from runforge.trainers.voxel.prior.classifier import denoising_errors
from runforge.trainers.voxel.prior.scenes import CAPTIONS, WORLD_SIZE, ground_plane_map, make_scene
from tests.conftest import run_cli, tree_digest, write_file

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prior") / "voxel-prior"
    assert main(["data", "voxel-prior", str(out), "--preset", "tiny"]) == 0
    return out


def test_the_command_writes_a_pixel_space_diffusers_folder_and_its_run(tiny_prior: Path) -> None:
    index = json.loads((tiny_prior / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert sorted(p.name for p in tiny_prior.iterdir()) == ["model_index.json", "run", "scheduler", "text_encoder",
                                                            "tokenizer", "unet"]
    assert json.loads((tiny_prior / "unet" / "config.json").read_text())["in_channels"] == 3
    run = tiny_prior / "run"
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4]
    assert all(math.isfinite(m["loss"]) for m in read_metrics(run))
    assert sorted(p.name for p in (run / "images").iterdir()) == ["step_0002_samples.png", "step_0004_samples.png"]
    assert json.loads((run / "prior.json").read_text())["captions"] == list(CAPTIONS)


def test_sds_loads_the_prior_in_pixel_space_and_moves_both_logit_tensors(tiny_prior: Path) -> None:
    sds = load_sds(tiny_prior, "a stone tower", torch.device("cpu"))
    assert sds.vae is None and sds.image_size == 16
    assert not torch.equal(sds.text.cond, sds.text.uncond)
    grid = DifferentiableVoxelGrid.initialise("ground_plane", ground_plane_map(), fog=0.05)
    camera = orbit_cameras(WORLD_SIZE, 1, 24)[0]
    image = SegmentCache(grid.size, 1.0, torch.device("cpu")).render(grid.volume(1.0), camera)
    loss = sds.loss(image, 0.0, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert grid.occupancy_logits.grad.abs().sum() > 0 and grid.material_logits.grad.abs().sum() > 0


def test_a_voxel_sds_run_from_a_ground_plane_with_the_prior(tiny_prior: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "voxel", "--prompt", "a stone tower", "--model_path", str(tiny_prior), "--init_mode",
                 "ground_plane", "--steps", "3", "--resolution", "16", "--no_export", "--no_tensorboard",
                 "--progress", "off", "--out", "sds"]) == 0
    metrics = read_metrics(tmp_path / "sds")
    assert metrics[-1]["step"] == 3
    assert all(math.isfinite(m["losses"]["sds"]) and m["losses"]["sds"] > 0 for m in metrics)
    assert json.loads((tmp_path / "sds" / "final_map.json").read_text())["metadata"]["prompt"] == "a stone tower"


def test_a_latent_unet_without_vae_is_refused_before_a_run_exists(tiny_prior: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(tiny_prior, tmp_path / "model", ignore=shutil.ignore_patterns("run"))
    config = json.loads((tmp_path / "model" / "unet" / "config.json").read_text())
    write_file(tmp_path / "model" / "unet" / "config.json", json.dumps({**config, "in_channels": 4}))
    before = tree_digest(tmp_path)
    result = run_cli("train", "voxel", "--prompt", "a tree", "--model_path", "model", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no vae/" in result.stderr
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("args, prepare, needle", [
    (["OUT", "--steps", "0"], None, "--steps: must be from 1"),
    (["OUT", "--threads", "0"], None, "--threads: must be from 1"),
    (["OUT", "--preset", "huge"], None, "--preset"),
    (["OUT"], lambda w: write_file(w / "OUT" / "keep.txt", "mine"), "not empty"),
    (["afile/OUT"], lambda w: write_file(w / "afile", "x"), "afile"),
], ids=["steps-zero", "threads-zero", "unknown-preset", "out-not-empty", "out-under-a-file"])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path: Path, args: list[str], prepare, needle: str) -> None:
    if prepare is not None:
        prepare(tmp_path)
    before = tree_digest(tmp_path)
    result = run_cli("data", "voxel-prior", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert tree_digest(tmp_path) == before


class PlantedUNet:
    """Knows one clean image per caption: conditioned on caption c it predicts the noise that turns
    images[c] into its input, so the classifier must rank exactly the caption whose image was noised first."""

    def __init__(self, images: torch.Tensor, alphas: torch.Tensor) -> None:
        self.images, self.alphas = images, alphas
        self.config = SimpleNamespace(sample_size=images.shape[-1])

    def __call__(self, noisy: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> SimpleNamespace:
        caption = int(encoder_hidden_states[0, 0, 0])
        a = self.alphas[t].view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(noisy - a.sqrt() * self.images[caption]) / (1 - a).sqrt())


def test_the_diffusion_classifier_ranks_the_planted_caption_first() -> None:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 8, 8, generator=generator) * 2 - 1
    unet = PlantedUNet(images, scheduler.alphas_cumprod)
    texts = torch.arange(3.0).view(3, 1, 1).expand(3, 2, 4)  # caption c's embedding is all c
    for truth in range(3):
        errors = denoising_errors(unet, scheduler, texts, images[truth][None].expand(2, -1, -1, -1),
                                  torch.Generator().manual_seed(1))
        assert int(errors.argmin()) == truth
        assert errors[truth] < 1e-6 and errors.sort().values[1] > 0.1  # the others denoise toward other images


def test_every_caption_makes_a_scene_on_the_ground_plane() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    floor = ground_plane_map()
    for caption in CAPTIONS:
        scene = make_scene(caption, rng)
        assert scene.size == WORLD_SIZE and scene.occupied[:, 0, :].all()
        assert scene.num_blocks != floor.num_blocks or (scene.material != floor.material).any(), caption
