"""Fog init, several views a step, the ray selection from the segment cache, and the bench's relief world."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runforge.trainers.voxel.grid import DifferentiableVoxelGrid, regularisers
from runforge.trainers.voxel.guidance import _ray_starts, _select_rays
from runforge.trainers.voxel.map_io import VoxelMap
from runforge.trainers.voxel.render import Segments
from runforge.trainers.voxel.worlds import relief_world


def test_fog_fills_only_what_the_start_leaves_empty() -> None:
    grid = DifferentiableVoxelGrid.initialise("ground_plane", VoxelMap.empty((6, 5, 6)), fog=0.05)
    occupancy = grid.occupancy().detach()
    assert torch.all(occupancy[:, 0] > 0.99)
    assert torch.allclose(occupancy[:, 1:], torch.tensor(0.05), atol=1e-6)
    plain = DifferentiableVoxelGrid.initialise("ground_plane", VoxelMap.empty((6, 5, 6)))
    assert float(plain.occupancy().detach()[:, 1:].max()) < 1e-3


def test_shared_probabilities_give_the_same_volume_and_regularisers() -> None:
    grid = DifferentiableVoxelGrid.initialise("cube", VoxelMap.empty((5, 4, 6)), fog=0.1)
    with torch.no_grad():
        grid.material_logits.normal_()
    probs = grid.channel_probs(0.7)
    assert torch.allclose(grid.material_probs(0.7), probs.permute(1, 2, 3, 0))
    reference = torch.cat([torch.nn.functional.softplus(grid.occupancy_logits).reshape(-1, 1),
                           (grid.material_probs(0.7) @ grid.palette).reshape(-1, 3)], dim=1)
    assert torch.allclose(grid.volume(0.7, probs), reference, atol=1e-6)
    shared, own = regularisers(grid, 0.7, probs), regularisers(grid, 0.7)
    assert all(torch.allclose(shared[k], own[k]) for k in own)


def test_selected_rays_match_a_full_scan() -> None:
    generator = torch.Generator().manual_seed(3)
    counts = torch.randint(0, 6, (80,), generator=generator)  # some rays miss the grid: no segments
    ray = torch.repeat_interleave(torch.arange(80), counts)
    seg = Segments(ray, torch.arange(len(ray)) * 7, torch.rand(len(ray), generator=generator),
                   torch.rand(len(ray), generator=generator), 80)
    pixels = torch.randperm(80, generator=generator)[:30].sort().values
    picked = _select_rays(seg, _ray_starts(seg), pixels)
    new_id = torch.full((80,), -1)
    new_id[pixels] = torch.arange(30)
    keep = torch.nonzero(new_id[seg.ray] >= 0).squeeze(1)
    assert picked.num_rays == 30
    assert torch.equal(picked.ray, new_id[seg.ray][keep]) and torch.equal(picked.cell, seg.cell[keep])
    assert torch.equal(picked.length, seg.length[keep]) and torch.equal(picked.shade, seg.shade[keep])


def test_relief_world_is_deterministic_and_has_relief() -> None:
    a, b = relief_world((64, 48, 64), seed=7), relief_world((64, 48, 64), seed=7)
    assert np.array_equal(a.occupied, b.occupied) and np.array_equal(a.material, b.material)
    tops = 47 - np.argmax(a.occupied[:, ::-1, :], axis=1)
    assert a.occupied[:, 0].all() and (tops >= 5).mean() > 0.5  # most of the surface is off the floor
    kinds = set(np.unique(a.material[a.occupied]).tolist())
    assert {1, 2, 3, 4, 5, 6, 7} <= kinds  # stone, grass, dirt, sand, water, plank, leaves


def test_a_run_with_several_views_a_step_and_fog(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runforge.cli import main
    from runforge.run import read_metrics

    monkeypatch.chdir(tmp_path)
    assert main(["train", "voxel", "--steps", "4", "--init_mode", "ground_plane", "--init_fog", "0.05",
                 "--views_per_step", "3", "--resolution", "24", "--rays_per_step", "200", "--no_export",
                 "--no_tensorboard", "--progress", "lines", "--out", "run"]) == 0
    lines = read_metrics(tmp_path / "run")
    assert lines[-1]["step"] == 4 and lines[-1]["losses"]["photometric"] > 0
