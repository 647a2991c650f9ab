"""Sample data for napari: degraded versions of scikit-image's bundled pictures.

Every function returns a list of napari ``LayerData`` tuples ``(data, kwargs, "image")``.
The degradations are deterministic (fixed seeds), so a sample is the same on every
machine.  No Qt and no torch are imported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tasks.demosaic import mosaic
from ..tasks.inpaint import scanline_mask

__all__ = [
    "add_gaussian_noise",
    "add_poisson_noise",
    "bayer_mosaic",
    "downscale",
    "gapped_camera",
    "lowres_coins",
    "lowres_moon",
    "mosaicked_astronaut",
    "noisy_astronaut",
    "noisy_camera",
    "noisy_cell",
    "noisy_timelapse",
    "scanline_gaps",
]

LayerData = tuple[Any, dict, str]

SEED = 20240917
SIGMA = 25.0
PEAK = 30.0  # photons at the brightest pixel of the Poisson samples


def add_gaussian_noise(image: np.ndarray, sigma: float = SIGMA, seed: int = SEED) -> np.ndarray:
    """Add white Gaussian noise of ``sigma`` (in uint8 units) and clip back to uint8."""
    rng = np.random.default_rng(seed)
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def add_poisson_noise(image: np.ndarray, peak: float = PEAK, seed: int = SEED, offset: int = 100) -> np.ndarray:
    """Shot noise at ``peak`` photons (plus a camera offset), as a uint16 microscope frame."""
    rng = np.random.default_rng(seed)
    photons = rng.poisson(image.astype(np.float64) / 255.0 * peak)
    gain = 4000.0 / peak  # spread the counts over a 12-bit-like range
    return (photons * gain + offset).astype(np.uint16)


def downscale(image: np.ndarray, factor: int = 2) -> np.ndarray:
    """Area-average downscaling by an integer ``factor`` on Y, X (trailing RGB kept)."""
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    img = image[:h, :w].astype(np.float32)
    blocks = img.reshape(h // factor, factor, w // factor, factor, *img.shape[2:])
    return np.clip(np.rint(blocks.mean(axis=(1, 3))), 0, 255).astype(image.dtype)


def _meta(source: str, degradation: str, **extra: Any) -> dict[str, Any]:
    return {"source": f"skimage.data.{source}", "degradation": degradation, **extra}


def noisy_camera() -> list[LayerData]:
    """Cameraman (512x512 uint8) with Gaussian noise, sigma 25."""
    from skimage import data

    img = add_gaussian_noise(data.camera())
    return [(img, {"name": "camera (noisy σ25)", "metadata": _meta("camera", "gaussian", sigma=SIGMA)}, "image")]


def noisy_astronaut() -> list[LayerData]:
    """Astronaut (512x512 RGB uint8) with Gaussian noise, sigma 25, per channel."""
    from skimage import data

    img = add_gaussian_noise(data.astronaut())
    kw = {"name": "astronaut (noisy σ25)", "rgb": True, "metadata": _meta("astronaut", "gaussian", sigma=SIGMA)}
    return [(img, kw, "image")]


def noisy_cell() -> list[LayerData]:
    """Bright-field cell (660x550) as a low-light uint16 frame with shot noise."""
    from skimage import data

    img = add_poisson_noise(data.cell())
    kw = {"name": "cell (shot noise)", "colormap": "gray", "metadata": _meta("cell", "poisson", peak=PEAK)}
    return [(img, kw, "image")]


def noisy_timelapse(frames: int = 5, size: int = 256) -> list[LayerData]:
    """A 2D+t stack (T, Y, X) uint16: a window drifting over the cell picture, shot noise."""
    from skimage import data

    cell = data.cell()
    stack = []
    for t in range(frames):
        y0, x0 = 150 + 6 * t, 120 + 9 * t
        stack.append(add_poisson_noise(cell[y0 : y0 + size, x0 : x0 + size], seed=SEED + t))
    kw = {
        "name": "cell time-lapse (shot noise)",
        "colormap": "gray",
        "metadata": _meta("cell", "poisson, drifting crop", peak=PEAK, axes="tyx"),
    }
    return [(np.stack(stack), kw, "image")]


def lowres_coins() -> list[LayerData]:
    """Coins downscaled x2 by area averaging (151x192 uint8), for super-resolution."""
    from skimage import data

    img = downscale(data.coins(), 2)
    return [(img, {"name": "coins (low-res x2)", "metadata": _meta("coins", "area downscale x2", factor=2)}, "image")]


def lowres_moon() -> list[LayerData]:
    """Moon surface downscaled x2 by area averaging (256x256 uint8), for super-resolution."""
    from skimage import data

    img = downscale(data.moon(), 2)
    return [(img, {"name": "moon (low-res x2)", "metadata": _meta("moon", "area downscale x2", factor=2)}, "image")]


def bayer_mosaic(rgb: np.ndarray, pattern: str = "RGGB") -> np.ndarray:
    """Sample an RGB image through a Bayer colour filter array: one colour per pixel.

    Cropped to even height and width; see :func:`napari_attnrestore.tasks.demosaic.mosaic`.
    """
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    return mosaic(rgb[:h, :w], pattern)


def scanline_gaps(shape: tuple[int, int], width: int = 8, period: int = 32, slope: float = 0.08, seed: int = SEED) -> np.ndarray:
    """A Landsat-7 SLC-off-like mask (True = no data): slanted stripes that widen sideways.

    See :func:`napari_attnrestore.tasks.inpaint.scanline_mask` (here with ``taper=0.3``).
    """
    rng = np.random.default_rng(seed)
    return scanline_mask(shape, rng, width=width, fraction=width / period, slope=slope, taper=0.3)


def mosaicked_astronaut() -> list[LayerData]:
    """The astronaut through an RGGB Bayer filter (512x512 uint8 CFA image), for demosaicing."""
    from skimage import data

    cfa = bayer_mosaic(data.astronaut(), "RGGB")
    kw = {"name": "astronaut (Bayer RGGB)", "colormap": "gray", "metadata": _meta("astronaut", "Bayer mosaic", cfa="RGGB")}
    return [(cfa, kw, "image")]


def gapped_camera() -> list[LayerData]:
    """The cameraman with scan-line gaps (NaN, float32) plus the gap mask as a Labels layer."""
    from skimage import data

    img = data.camera().astype(np.float32)
    mask = scanline_gaps(img.shape)
    img[mask] = np.nan
    meta = _meta("camera", "scan-line gaps (NaN)", gap_fraction=round(float(mask.mean()), 3))
    return [
        (img, {"name": "camera (gaps)", "colormap": "gray", "metadata": meta}, "image"),
        (mask.astype(np.uint8), {"name": "gap mask", "opacity": 0.4}, "labels"),
    ]
