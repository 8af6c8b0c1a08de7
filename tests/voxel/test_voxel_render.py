"""The renderer: exact blocks, gradients into both logit tensors, and `runforge data render-views`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runforge.cli import main
from runforge.trainers.voxel.dataset import (
    Camera,
    look_at,
    orbit_cameras,
    read_cameras,
    read_image,
)
from runforge.trainers.voxel.grid import DifferentiableVoxelGrid, regularisers
from runforge.trainers.voxel.map_io import COLORS, MATERIAL_INDEX, VoxelMap, write_map
from runforge.trainers.voxel.render import (
    AMBIENT,
    camera_rays,
    composite,
    hard_volume,
    render_map,
    render_view,
    traverse,
)

torch.set_num_threads(1)


def orthographic_top_camera(size: int, pixels: int) -> Camera:
    """Looks straight down at a size x size floor; pixel (i, j) sees the column x = j, z = i when pixels == size."""
    view = look_at(np.array([size / 2, 50.0, size / 2]), np.array([size / 2, 0.0, size / 2]), (0.0, 0.0, -1.0))
    proj = np.eye(4)
    proj[0, 0] = proj[1, 1] = 2 / size
    proj[2, 2], proj[2, 3] = -2 / 100, -1.0  # depth 0..100 -> -1..1
    return Camera(0, pixels, pixels, view, proj)


def single_block_map(x: int, z: int, kind: str = "Stone", size: int = 4) -> VoxelMap:
    vmap = VoxelMap.empty((size, 2, size))
    vmap.occupied[x, 0, z] = True
    vmap.material[x, 0, z] = MATERIAL_INDEX[kind]
    return vmap


def test_hard_render_fills_exactly_the_block_with_its_lit_colour() -> None:
    camera = orthographic_top_camera(4, 4)  # one pixel per column
    rgba = render_map(single_block_map(2, 1, "Sand"), camera)
    covered = rgba[..., 3] == 255
    assert covered.sum() == 1
    i, j = np.argwhere(covered)[0]
    assert (i, j) == (3 - 1, 2) or (i, j) == (1, 2)  # z = 1, x = 2 (image rows may run along +z or -z)
    top_light = AMBIENT + (1 - AMBIENT) * 1.0 / np.linalg.norm([0.35, 1.0, 0.55])
    expected = np.round(np.clip(np.array(COLORS["Sand"]) * top_light, 0, 1) * 255)
    assert np.abs(rgba[i, j, :3].astype(float) - expected).max() <= 1
    assert (rgba[..., 3][~covered] == 0).all()


def test_early_stop_changes_nothing_visible() -> None:
    grid = DifferentiableVoxelGrid.initialise("cube", VoxelMap.empty((8, 8, 8)))
    camera = orbit_cameras((8, 8, 8), 1, 24)[0]
    origins, directions = camera_rays(camera)
    seg = traverse(origins, directions, grid.size)
    volume = grid.volume(1.0).detach()
    rgb, alpha = composite(volume, seg)
    # the plain sum over every segment, with no early stop and no packing tricks
    tau = volume[seg.cell, 0] * seg.length
    full_rgb = torch.zeros(seg.num_rays, 3)
    full_alpha = torch.zeros(seg.num_rays)
    for ray in range(seg.num_rays):
        mine = seg.ray == ray
        t = torch.exp(-(torch.cumsum(tau[mine], 0) - tau[mine]))
        w = t * (1 - torch.exp(-tau[mine]))
        full_rgb[ray] = ((w * seg.shade[mine])[:, None] * volume[seg.cell[mine], 1:]).sum(0)
        full_alpha[ray] = w.sum()
    assert alpha.max() > 0.99 and alpha.min() < 0.01
    assert torch.allclose(rgb, full_rgb, atol=1e-3) and torch.allclose(alpha, full_alpha, atol=1e-3)


def test_gradients_reach_both_logit_tensors() -> None:
    vmap = single_block_map(1, 1, "Grass", size=6)
    grid = DifferentiableVoxelGrid.initialise("ground_plane", vmap)
    camera = orbit_cameras(grid.size, 1, 16)[0]
    rgb, _ = render_view(grid.volume(1.5), camera, grid.size)
    target = torch.zeros_like(rgb)
    loss = (rgb - target).square().mean() + sum(regularisers(grid, 1.5).values())
    loss.backward()
    occupancy_grad = grid.occupancy_logits.grad
    material_grad = grid.material_logits.grad
    assert occupancy_grad is not None and material_grad is not None
    assert occupancy_grad[:, 0, :].abs().sum() > 0  # the floor the camera sees
    assert occupancy_grad[:, 1, :].abs().sum() > 0  # empty voxels in front of it: they could grow
    assert material_grad.abs().sum() > 0


def test_render_views_orbit_and_given_cameras(tmp_path: Path) -> None:
    vmap = single_block_map(1, 2, "Plank")
    write_map(tmp_path / "map.json", vmap)
    assert main(["data", "render-views", "--map", str(tmp_path / "map.json"), "--out", str(tmp_path / "a"),
                 "--views", "3", "--resolution", "16"]) == 0
    cameras = read_cameras(tmp_path / "a" / "cameras.json")
    assert [c.index for c in cameras] == [0, 1, 2] and {(c.width, c.height) for c in cameras} == {(16, 16)}
    assert sorted(p.name for p in (tmp_path / "a" / "images").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    first = read_image(tmp_path / "a" / "images" / "0000.png", 16, 16)
    assert first[..., 3].max() == 1.0 and first[..., 3].min() == 0.0  # the block, and empty background

    # the same cameras re-used, WebGPU depth convention declared: same pictures
    doc = json.loads((tmp_path / "a" / "cameras.json").read_text())
    for view in doc["views"]:
        proj = np.array(view["proj"])
        proj[2] = (proj[2] + proj[3]) / 2  # map depth -1..1 to 0..1
        view["proj"] = proj.tolist()
    doc["depth"] = "zero_to_one"
    (tmp_path / "webgpu.json").write_text(json.dumps(doc))
    assert main(["data", "render-views", "--map", str(tmp_path / "map.json"), "--out", str(tmp_path / "b"),
                 "--cameras", str(tmp_path / "webgpu.json")]) == 0
    again = read_image(tmp_path / "b" / "images" / "0000.png", 16, 16)
    assert np.abs(again - first).max() <= 2 / 255


def test_bad_cameras_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_map(tmp_path / "map.json", single_block_map(0, 0))
    (tmp_path / "cams.json").write_text(json.dumps({"views": [{"index": 0, "width": 8, "height": 8, "view": [[1, 0]],
                                                               "proj": np.eye(4).tolist()}]}))
    code = main(["data", "render-views", "--map", str(tmp_path / "map.json"), "--out", str(tmp_path / "x"),
                 "--cameras", str(tmp_path / "cams.json")])
    assert code == 2
    assert "views[0].view must be a 4x4 matrix" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_hard_volume_ignores_air() -> None:
    vmap = single_block_map(0, 0)
    vmap.occupied[1, 0, 1] = True  # occupied but Air: not a block
    volume = hard_volume(vmap)
    assert int((volume[:, 0] > 0).sum()) == 1


def test_uncached_and_chunked_paths_render_the_same() -> None:
    from runforge.trainers.voxel.guidance import SegmentCache
    from runforge.trainers.voxel.render import traverse_in_chunks

    grid = DifferentiableVoxelGrid.initialise("cube", VoxelMap.empty((6, 6, 6)))
    camera = orbit_cameras(grid.size, 1, 20)[0]
    volume = grid.volume(1.0).detach()
    cached = SegmentCache(grid.size, 1.0, torch.device("cpu"))
    too_big = SegmentCache(grid.size, 1.0, torch.device("cpu"), budget=0)  # big images: never traversed whole
    assert torch.allclose(cached.render(volume, camera), too_big.render(volume, camera), atol=1e-6)
    pixels = torch.tensor([3, 150, 210, 399])
    for a, b in zip(composite(volume, cached.rays(camera, pixels)), composite(volume, too_big.rays(camera, pixels))):
        assert torch.allclose(a, b, atol=1e-6)
    origins, directions = camera_rays(camera)
    whole, chunked = traverse(origins, directions, grid.size), traverse_in_chunks(origins, directions, grid.size, chunk=7)
    assert torch.equal(whole.ray, chunked.ray) and torch.equal(whole.cell, chunked.cell)


def test_a_camera_that_sees_none_of_the_grid_renders_the_background() -> None:
    grid = DifferentiableVoxelGrid.initialise("cube", VoxelMap.empty((6, 4, 6)))
    away = Camera(0, 8, 6, look_at(np.array([3.0, 2.0, -20.0]), np.array([3.0, 2.0, -40.0])),
                  orbit_cameras((6, 4, 6), 1, 8)[0].proj)
    rgb, alpha = render_view(grid.volume(1.0), away, grid.size)
    assert rgb.shape == (6, 8, 3) and torch.equal(alpha, torch.zeros(6, 8)) and torch.equal(rgb, torch.zeros(6, 8, 3))
