"""Denoising: blind Gaussian and Poisson-Gaussian noise, BM3D baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from .base import Task


def add_noise(
    clean: np.ndarray,
    rng: np.random.Generator,
    sigma: float | tuple[float, float] = (0.0, 50.0),
    poisson_peak: tuple[float, float] | None = None,
    poisson_prob: float = 0.0,
) -> np.ndarray:
    """Add Gaussian noise (``sigma`` in 8-bit units, a value or a range to draw from).

    With probability ``poisson_prob`` the image is first given signal-dependent Poisson
    noise with a peak photon count drawn log-uniformly from ``poisson_peak`` (Poisson-Gaussian
    model; drawn as :func:`make_training_pair` draws it).
    """
    x = np.asarray(clean, dtype=np.float32)
    if poisson_peak is not None and rng.random() < poisson_prob:
        lo, hi = poisson_peak
        peak = lo * (hi / lo) ** rng.random()
        x = rng.poisson(np.clip(x, 0, None) * peak).astype(np.float32) / peak
    s = rng.uniform(*sigma) if isinstance(sigma, (tuple, list)) else float(sigma)
    return (x + rng.standard_normal(x.shape, dtype=np.float32) * (s / 255.0)).astype(np.float32)


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise level of one noisy image, from itself (wavelet median absolute deviation,
    :func:`skimage.restoration.estimate_sigma`); a little high on textured images."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(np.asarray(image, dtype=np.float64)))


def bm3d_baseline(noisy: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """BM3D (``bm3d`` package); ``sigma`` in 8-bit units, estimated from the image if None."""
    import bm3d

    if sigma is None:
        sigma = estimate_noise_sigma(noisy) * 255.0
    return np.asarray(bm3d.bm3d(noisy.astype(np.float64), sigma_psd=sigma / 255.0), dtype=np.float32)



def gat_bm3d_baseline(noisy: np.ndarray, peak: float, sigma: float) -> np.ndarray:
    """BM3D for Poisson-Gaussian noise: generalized Anscombe transform, BM3D, unbiased inverse.

    ``noisy`` is ``Poisson(peak * clean) / peak`` plus Gaussian read noise ``sigma`` (8-bit
    units).  The transform makes the noise about unit-variance Gaussian; the inverse is the
    closed-form approximation of the exact unbiased inverse (Makitalo and Foi, 2011/2013).
    """
    import bm3d

    read = sigma / 255.0 * peak  # read noise in photons
    f = 2.0 * np.sqrt(np.maximum(np.asarray(noisy, np.float64) * peak + 0.375 + read**2, 0.0))
    top = max(float(f.max()), 1.0)
    d = np.asarray(bm3d.bm3d(f / top, sigma_psd=1.0 / top), np.float64) * top
    d = np.maximum(d, 0.8)  # the inverse's series is for D of order one and above
    r = np.sqrt(1.5)
    inv = d**2 / 4 + r / (4 * d) - 11 / (8 * d**2) + 5 * r / (8 * d**3) - 0.125 - read**2
    return (np.maximum(inv, 0.0) / peak).astype(np.float32)


TASK = Task(
    name="denoise",
    in_channels=1,
    out_channels=1,
    scales=(1,),
    degrade=add_noise,
    baseline=bm3d_baseline,
    baseline_name="BM3D",
    description="Remove Gaussian / Poisson-Gaussian noise (blind); applied per channel.",
)


def make_training_pair(
    clean: torch.Tensor,
    gen: torch.Generator,
    sigma: tuple[float, float] = (0.0, 50.0),
    poisson_prob: float = 0.0,
    poisson_peak: tuple[float, float] = (5.0, 100.0),
    dim_prob: float = 0.0,
    dim_range: tuple[float, float] = (0.03, 0.5),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy/clean training pair for a batch ``(B, 1, H, W)``; sigma drawn per patch (blind).

    ``dim_prob``: the share of patches whose clean picture is first dimmed by a factor drawn
    log-uniformly from ``dim_range``: dark, low-contrast patches (a fluorescence background
    under percentile scaling sits at 2-5% of the range), which photos rarely hold.
    """
    import torch

    b = clean.shape[0]
    if dim_prob > 0:
        lo, hi = dim_range
        factor = lo * (hi / lo) ** torch.rand(b, 1, 1, 1, generator=gen)
        clean = torch.where(torch.rand(b, 1, 1, 1, generator=gen) < dim_prob, clean * factor, clean)
    x = clean
    if poisson_prob > 0:
        use = torch.rand(b, 1, 1, 1, generator=gen) < poisson_prob
        lo, hi = poisson_peak
        peak = lo * (hi / lo) ** torch.rand(b, 1, 1, 1, generator=gen)
        shot = torch.poisson(clean.clamp(min=0) * peak, generator=gen) / peak
        x = torch.where(use, shot, clean)
    s = (sigma[0] + (sigma[1] - sigma[0]) * torch.rand(b, 1, 1, 1, generator=gen)) / 255.0
    noisy = x + s * torch.randn(clean.shape, generator=gen)
    return noisy, clean
