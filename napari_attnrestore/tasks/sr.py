"""Super-resolution x2/x4: antialiased bicubic downsampling, bicubic baseline."""

from __future__ import annotations

import numpy as np

from .base import Task


def downsample(clean: np.ndarray, rng: np.random.Generator | None = None, scale: int = 2, blur: float = 0.0) -> np.ndarray:
    """Antialiased bicubic downsampling by ``scale`` (optionally after a Gaussian blur)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32))[None, None]
    if blur > 0:
        from skimage.filters import gaussian

        x = torch.from_numpy(gaussian(clean, blur).astype(np.float32))[None, None]
    h, w = x.shape[-2:]
    y = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    return y[0, 0].numpy()


def bicubic_baseline(low: np.ndarray, scale: int = 2) -> np.ndarray:
    """Bicubic upsampling by ``scale``."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))[None, None]
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)[0, 0].numpy()


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
