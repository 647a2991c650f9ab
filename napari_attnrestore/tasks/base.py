"""What every task declares: channels, scale, degradation for training, baseline, metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Task:
    """A restoration task.

    Attributes
    ----------
    name
        Registry name (``denoise``, ``sr``, ...).
    in_channels, out_channels
        Channels of the network's input and output for one plane.
    scales
        Allowed output/input size ratios.
    degrade
        ``degrade(clean, rng, **kw) -> degraded``: the training degradation on float
        images in [0, 1] of shape ``(H, W)``.
    baseline
        ``baseline(degraded, **kw) -> restored``: the classical method users have today.
    baseline_name
        Human-readable name of the baseline.
    """

    name: str
    in_channels: int
    out_channels: int
    scales: tuple[int, ...]
    degrade: Callable[..., np.ndarray]
    baseline: Callable[..., np.ndarray]
    baseline_name: str
    description: str = ""
    defaults: dict = field(default_factory=dict)

    def check_scale(self, scale: int | None) -> int:
        """Validate ``scale`` for this task (None picks the first allowed)."""
        if scale is None:
            return self.scales[0]
        if int(scale) not in self.scales:
            allowed = ", ".join(str(s) for s in self.scales)
            raise ValueError(f"task {self.name!r} supports scale {allowed}, not {scale}")
        return int(scale)


def psnr(reference: np.ndarray, estimate: np.ndarray, data_range: float = 1.0, border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB, optionally ignoring ``border`` pixels on each side."""
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if border:
        ref = ref[border:-border, border:-border]
        est = est[border:-border, border:-border]
    mse = np.mean((ref - est) ** 2)
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


def ssim(reference: np.ndarray, estimate: np.ndarray, data_range: float = 1.0, border: int = 0) -> float:
    """Structural similarity (scikit-image, Gaussian-weighted as in Wang et al. 2004)."""
    from skimage.metrics import structural_similarity

    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if border:
        ref = ref[border:-border, border:-border]
        est = est[border:-border, border:-border]
    channel_axis = -1 if ref.ndim == 3 else None
    return float(
        structural_similarity(
            ref, est, data_range=data_range, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, channel_axis=channel_axis,
        )
    )
