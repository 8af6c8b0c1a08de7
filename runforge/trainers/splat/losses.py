"""The training loss's SSIM: the numba kernels on float32 CPU images, else the shared torch function.

    ssim(render, target) -> (B,)   same contract and window as runforge.trainers.common.ssim

The torch version is a dozen image-sized tensor operations and their backward; the kernels do the five
local moments in one separable pass and the gradient in one transposed pass (tests hold them to it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..common import SSIM_SIGMA, SSIM_WINDOW
from ..common import ssim as ssim_torch
from .raster import numba_ok


def _window(size: int) -> Tensor:
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    weights = torch.exp(-offsets.square() / (2 * SSIM_SIGMA**2))
    return weights / weights.sum()


class _SSIMNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor) -> Tensor:
        from . import kernels

        B, C, H, W = x.shape
        size = min(SSIM_WINDOW, H, W)
        size -= 1 - size % 2
        planes_x = x.detach().reshape(B * C, H, W).contiguous().numpy()
        planes_y = y.detach().reshape(B * C, H, W).contiguous().numpy()
        window = _window(size).numpy()
        moments = torch.empty(B * C, 5, H - size + 1, W - size + 1)
        kernels.set_threads(torch.get_num_threads())
        sums = kernels.ssim_forward(planes_x, planes_y, window, moments.numpy())
        count = C * (H - size + 1) * (W - size + 1)
        ctx.saved = (planes_x, planes_y, window, moments, count, x.shape)
        return torch.from_numpy(sums.reshape(B, C).sum(1) / count).float()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        from . import kernels

        planes_x, planes_y, window, moments, count, shape = ctx.saved
        B, C, H, W = shape
        g_plane = (grad.detach().float() / count).repeat_interleave(C).numpy()
        grad_x = torch.empty(B * C, H, W)
        kernels.set_threads(torch.get_num_threads())
        kernels.ssim_backward(planes_x, planes_y, window, moments.numpy(), g_plane, grad_x.numpy())
        return grad_x.reshape(shape), None


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """SSIM of each image of a batch (B,); x (B, C, H, W) may need gradients, y (the photo) gets none."""
    if y.requires_grad or not numba_ok(x, y):
        return ssim_torch(x, y)
    return _SSIMNumba.apply(x, y)
