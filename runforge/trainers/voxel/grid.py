"""DifferentiableVoxelGrid: occupancy logits [X, Y, Z] and material logits [X, Y, Z, M] as parameters.

    grid = DifferentiableVoxelGrid.initialise("from_map", vmap)
    volume = grid.volume(temperature)          # (V, 4) density + RGB, differentiable in both tensors
    rgb, alpha = render_view(volume, camera, grid.size)
    grid.to_map(vmap)                           # back to blocks (occupancy > 0.5, argmax material != Air)

Material probabilities are softmax(material_logits * occupancy / temperature): the
occupancy scales the material logits, which gives it a second gradient path through colour
and keeps an unoccupied voxel's material undecided.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .map_io import AIR, MATERIAL_INDEX, PALETTE, VoxelMap
from .render import palette_tensor

InitMode = Literal["from_map", "ground_plane", "cube", "empty"]
OCCUPIED_LOGIT = 6.0
"""sigmoid(6) = 0.9975: a block passes 0.25% of the light through one voxel length."""
EMPTY_LOGIT = -8.0
"""sigmoid(-8) = 3.4e-4: 60 empty voxels along a ray still pass 98% of the light."""
MATERIAL_LOGIT = 8.0
"""A block's own material: softmax keeps 88% of it at temperature 2.0 (the start) and all of it at 0.5."""


class DifferentiableVoxelGrid(nn.Module):
    def __init__(self, size: tuple[int, int, int], num_materials: int = len(PALETTE)) -> None:
        super().__init__()
        self.size = tuple(int(s) for s in size)
        self.occupancy_logits = nn.Parameter(torch.full(self.size, EMPTY_LOGIT))
        self.material_logits = nn.Parameter(torch.zeros(*self.size, num_materials))
        self.register_buffer("palette", palette_tensor(), persistent=False)

    @classmethod
    def initialise(cls, mode: InitMode, vmap: VoxelMap, fog: float = 0.0) -> DifferentiableVoxelGrid:
        """A grid of the map's size: a copy of its blocks, a one-layer grass floor, a stone cube, or nothing;
        `fog` > 0 is the occupancy of every voxel the start leaves empty."""
        grid = cls(vmap.size)
        occupied = np.zeros(vmap.size, bool)
        material = np.zeros(vmap.size, np.int64)
        X, Y, Z = vmap.size
        if mode == "from_map":
            occupied = vmap.occupied & (vmap.material != AIR)
            material = vmap.material.astype(np.int64)
        elif mode == "ground_plane":
            occupied[:, 0, :] = True
            material[:, 0, :] = MATERIAL_INDEX["Grass"]
        elif mode == "cube":
            side = max(1, min(X, Y, Z) // 2)
            x0, z0 = (X - side) // 2, (Z - side) // 2
            occupied[x0 : x0 + side, 0:side, z0 : z0 + side] = True
            material[occupied] = MATERIAL_INDEX["Stone"]
        elif mode != "empty":
            raise ValueError(f"unknown init mode {mode!r}")
        with torch.no_grad():
            occ = torch.from_numpy(occupied)
            # A voxel at EMPTY_LOGIT gets ~sigmoid(-8) of the gradient its occupancy would get, so a fit from a
            # floor repaints the floor instead of raising hills; a faint fog lets every voxel feel the views,
            # and the views carve it away where they see through
            empty = EMPTY_LOGIT if fog <= 0 else math.log(fog / (1 - fog))
            grid.occupancy_logits.copy_(torch.where(occ, OCCUPIED_LOGIT, empty))
            one_hot = F.one_hot(torch.from_numpy(material), len(PALETTE)).float() * MATERIAL_LOGIT
            grid.material_logits.copy_(one_hot * occ[..., None])
        return grid

    def occupancy(self) -> torch.Tensor:
        return torch.sigmoid(self.occupancy_logits)

    def channel_probs(self, temperature: float) -> torch.Tensor:
        """(M, X, Y, Z) softmax of the occupancy-modulated material logits, materials first.

        Materials first because a softmax over a leading dim of 8 runs ~5x faster on a CPU than over a trailing
        one; it is the dearest dense op of a training step, so a step computes it once (`volume`, `regularisers`)."""
        modulated = self.material_logits.permute(3, 0, 1, 2) * self.occupancy()
        return torch.softmax(modulated / temperature, dim=0)

    def material_probs(self, temperature: float) -> torch.Tensor:
        """(X, Y, Z, M) softmax of the occupancy-modulated material logits."""
        return self.channel_probs(temperature).permute(1, 2, 3, 0)

    def volume(self, temperature: float, probs: torch.Tensor | None = None) -> torch.Tensor:
        """(V, 4): density softplus(logit) = -log(1 - occupancy) per voxel length, and albedo RGB;
        `probs`: this step's `channel_probs(temperature)`, if already computed."""
        probs = self.channel_probs(temperature) if probs is None else probs
        density = F.softplus(self.occupancy_logits).reshape(-1, 1)
        albedo = (self.palette.T @ probs.reshape(len(probs), -1)).T
        return torch.cat([density, albedo], dim=1)

    @torch.no_grad()
    def to_map(self, template: VoxelMap, threshold: float = 0.5) -> VoxelMap:
        """The blocks: occupancy > threshold and an argmax material other than Air (template's document kept)."""
        material = self.material_logits.argmax(dim=-1).to(torch.int8).cpu().numpy()
        occupied = (self.occupancy() > threshold).cpu().numpy() & (material != AIR)
        return VoxelMap(occupied, np.where(occupied, material, AIR).astype(np.int8), template.block_size,
                        template.document, template.block_extras)

    @torch.no_grad()
    def stats(self, threshold: float = 0.5) -> dict[str, Any]:
        """`grid_stats` (docs/voxel.md): active voxels, density, occupancy moments, material shares (% of active)."""
        occupancy = self.occupancy()
        active = occupancy > threshold
        count = int(active.sum())
        total = occupancy.numel()
        shares: dict[str, float] = {}
        if count:
            kinds = torch.bincount(self.material_logits.argmax(dim=-1)[active], minlength=len(PALETTE))
            for index in torch.argsort(kinds, descending=True).tolist():
                if kinds[index] > 0:
                    shares[PALETTE[index]] = round(100.0 * float(kinds[index]) / count, 2)
        return {
            "num_active_voxels": count,
            "total_voxels": total,
            "density": round(count / total, 6),
            "occupancy_mean": float(occupancy.mean()),
            "occupancy_std": float(occupancy.std()),
            "material_distribution": shares,
        }


def _total_variation(field: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbours along the last three dims (X, Y, Z; any leading channels)."""
    return ((field[..., 1:, :, :] - field[..., :-1, :, :]).abs().mean()
            + (field[..., 1:, :] - field[..., :-1, :]).abs().mean()
            + (field[..., 1:] - field[..., :-1]).abs().mean()) / 3


def regularisers(grid: DifferentiableVoxelGrid, temperature: float,
                 probs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Sparsity (mean occupancy), binary entropy of occupancy, smoothness (total variation of occupancy and of
    material probabilities, which also gives voxels no camera sees their neighbours' material), and support.
    `probs`: this step's `grid.channel_probs(temperature)`, if already computed."""
    logits = grid.occupancy_logits
    p = torch.sigmoid(logits)
    # entropy from logits: H = softplus(x) - x * sigmoid(x), finite even where p rounds to 0 or 1
    entropy = (F.softplus(logits) - logits * p).mean()
    probs = grid.channel_probs(temperature) if probs is None else probs
    smooth = _total_variation(p) + _total_variation(probs)
    # Y is up. In logits, not probabilities: sigmoid' vanishes in empty space and Adam's eps would swallow the
    # push; the voxel above is detached so only the one below moves (fill up, never carve away what is seen)
    support = F.relu(logits[:, 1:].detach() - logits[:, :-1]).mean()
    return {"sparsity": p.mean(), "entropy": entropy, "smooth": smooth, "support": support}
