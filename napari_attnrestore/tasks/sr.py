"""Super-resolution x2/x4: antialiased bicubic downsampling, bicubic baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Task

if TYPE_CHECKING:
    import torch


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma in [16, 235]/255 of an RGB image in [0, 1], as the SR literature measures PSNR."""
    rgb = np.asarray(img, dtype=np.float64)[..., :3]
    return ((16.0 + rgb @ np.array([65.481, 128.553, 24.966])) / 255.0).astype(np.float32)


def downsample(clean: np.ndarray, rng: np.random.Generator | None = None, scale: int = 2, blur: float = 0.0) -> np.ndarray:
    """Antialiased bicubic downsampling by ``scale`` (optionally after a Gaussian blur).

    The image is first cropped to a multiple of ``scale`` (as the benchmark pairs are), so
    every low-resolution pixel covers exactly ``scale x scale`` of the original.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32))[None, None]
    if blur > 0:
        from skimage.filters import gaussian

        x = torch.from_numpy(gaussian(clean, blur).astype(np.float32))[None, None]
    h, w = x.shape[-2:]
    x = x[..., : h // scale * scale, : w // scale * scale]
    y = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    return y[0, 0].numpy()


def make_training_pair(
    clean: "torch.Tensor", gen: "torch.Generator", scale: int = 2, sigma: tuple[float, float] = (0.0, 0.0)
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Low/high-resolution pair for a batch ``clean (B, C, H, W)`` (H, W multiples of ``scale``).

    The low-resolution input is the antialiased bicubic downsampling of :func:`downsample`;
    with ``sigma=(lo, hi)`` (8-bit units) Gaussian noise of a per-patch level drawn from that
    range is added to it (off by default).
    """
    import torch
    import torch.nn.functional as F

    b, _, h, w = clean.shape
    if h % scale or w % scale:
        raise ValueError(f"SR training patches must be multiples of the scale {scale}, got {h}x{w}")
    low = F.interpolate(clean, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    if sigma[1] > 0:
        s = (sigma[0] + (sigma[1] - sigma[0]) * torch.rand(b, 1, 1, 1, generator=gen)) / 255.0
        low = low + s.to(low.device) * torch.randn(low.shape, generator=gen).to(low.device)
    return low, clean


def bicubic_baseline(low: np.ndarray, scale: int = 2) -> np.ndarray:
    """Bicubic upsampling by ``scale`` with the Keys a = -0.5 kernel (MATLAB's ``imresize``,
    and the kernel of :func:`downsample`); plain ``bicubic`` in PyTorch is a = -0.75."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))[None, None]
    return F.interpolate(x, scale_factor=scale, mode="bicubic", antialias=True, align_corners=False)[0, 0].numpy()


TASK = Task(
    name="sr",
    in_channels=1,
    out_channels=1,
    scales=(2, 4),
    degrade=downsample,
    baseline=bicubic_baseline,
    baseline_name="bicubic",
    description="Super-resolve x2 or x4; gray models run per channel.",
)
