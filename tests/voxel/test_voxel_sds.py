"""SDS through a tiny diffusers UNet + VAE built from config: the gradient reaches both logit tensors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from runforge.trainers.voxel.dataset import orbit_cameras  # noqa: E402
from runforge.trainers.voxel.grid import DifferentiableVoxelGrid  # noqa: E402
from runforge.trainers.voxel.guidance import SDS, SegmentCache, TextCondition  # noqa: E402
from runforge.trainers.voxel.map_io import VoxelMap  # noqa: E402

torch.set_num_threads(1)


def tiny_sds(**options: float) -> SDS:
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
        norm_num_groups=32, sample_size=32)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                        beta_start=0.00085, beta_end=0.012, prediction_type="epsilon")
    text = TextCondition(cond=torch.randn(1, 7, 32), uncond=torch.randn(1, 7, 32))
    return SDS(unet, vae, scheduler, text, **options)


def test_sds_gradient_reaches_occupancy_and_material_logits() -> None:
    sds = tiny_sds(cfg_scale=7.5, grad_clip=1.0)
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


def test_timestep_range_anneals_from_coarse_to_fine() -> None:
    sds = tiny_sds(t_min=0.02, t_max_start=0.98, t_max_end=0.5)
    assert sds.timestep_range(0.0) == (20, 980)
    assert sds.timestep_range(1.0) == (20, 500)
    low, high = sds.timestep_range(0.5)
    assert low == 20 and 500 < high < 980
