"""SDS through a tiny diffusers UNet + VAE built from config: the gradient reaches both logit tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from runforge.cli import main
from runforge.run import read_metrics
from runforge.trainers.voxel.dataset import orbit_cameras
from runforge.trainers.voxel.grid import DifferentiableVoxelGrid
from runforge.trainers.voxel.guidance import SegmentCache, load_sds
from runforge.trainers.voxel.map_io import VoxelMap

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Stable-Diffusion-shaped diffusers folder of tiny random models (~6 MB): unet, vae, scheduler, tokenizer, text_encoder."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8).save_pretrained(root / "unet")
    diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
        norm_num_groups=32, sample_size=32).save_pretrained(root / "vae")
    diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                            beta_end=0.012, prediction_type="epsilon").save_pretrained(root / "scheduler")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(root / "tokenizer" / "vocab.json"), str(root / "tokenizer" / "merges.txt"),
                  model_max_length=8).save_pretrained(root / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(root / "text_encoder")
    return root


def test_sds_gradient_reaches_occupancy_and_material_logits(tiny_model: Path) -> None:
    sds = load_sds(tiny_model, "a stone tower", torch.device("cpu"), cfg_scale=7.5, grad_clip=1.0)
    assert sds.text.cond.shape == (1, 8, 32) and not torch.equal(sds.text.cond, sds.text.uncond)
    vmap = VoxelMap.empty((8, 6, 8))
    grid = DifferentiableVoxelGrid.initialise("cube", vmap)
    camera = orbit_cameras(grid.size, 1, 24)[0]
    image = SegmentCache(grid.size, 1.0, torch.device("cpu")).render(grid.volume(1.5), camera)
    assert image.shape == (24, 24, 3)
    loss = sds.loss(image, 0.3, torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert grid.occupancy_logits.grad.abs().sum() > 0
    assert grid.material_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in sds.unet.parameters())  # the diffusion model stays frozen


def test_timestep_range_anneals_from_coarse_to_fine(tiny_model: Path) -> None:
    sds = load_sds(tiny_model, "x", torch.device("cpu"), t_min=0.02, t_max_start=0.98, t_max_end=0.5)
    assert sds.timestep_range(0.0) == (20, 980)
    assert sds.timestep_range(1.0) == (20, 500)
    low, high = sds.timestep_range(0.5)
    assert low == 20 and 500 < high < 980


def test_sds_training_run_from_the_command_line(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "voxel", "--prompt", "a castle", "--model_path", str(tiny_model), "--steps", "2",
                 "--resolution", "16", "--no_export", "--no_tensorboard", "--progress", "lines"]) == 0
    run = tmp_path / "out_local" / "sds_training"
    last = read_metrics(run)[-1]
    assert last["step"] == 2 and last["losses"]["sds"] > 0 and "photometric" not in last["losses"]
    metadata = json.loads((run / "final_map.json").read_text())["metadata"]
    assert metadata["prompt"] == "a castle" and metadata["guidance"] == "sds"


def test_sdxl_folder_loads_both_text_encoders_and_conditions_on_size(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    root = tmp_path / "tiny_sdxl"
    shutil.copytree(tiny_model, root, ignore=shutil.ignore_patterns("unet"))
    shutil.copytree(root / "tokenizer", root / "tokenizer_2")
    diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8).save_pretrained(root / "unet")
    CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=54, hidden_size=32, intermediate_size=37, num_hidden_layers=2, projection_dim=32, num_attention_heads=4,
        max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)).save_pretrained(root / "text_encoder_2")
    sds = load_sds(root, "a castle", torch.device("cpu"))
    assert sds.text.cond.shape == (1, 8, 64)  # both encoders' penultimate states, concatenated
    assert sds.text.pooled is not None and sds.text.pooled[0].shape == (1, 32)
    assert sds.text.time_ids.tolist() == [[32, 32, 0, 0, 32, 32]]
    image = torch.rand(24, 24, 3, requires_grad=True)
    sds.loss(image, 0.2, torch.Generator().manual_seed(0)).backward()
    assert image.grad.abs().sum() > 0
