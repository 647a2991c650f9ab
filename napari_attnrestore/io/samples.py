"""Sample data for napari: degraded versions of scikit-image's bundled pictures.

Every function returns a list of napari ``LayerData`` tuples ``(data, kwargs, "image")``.
The degradations are deterministic (fixed seeds), so a sample is the same on every
machine.  No Qt and no torch are imported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "add_gaussian_noise",
    "add_poisson_noise",
    "downscale",
    "lowres_coins",
    "lowres_moon",
    "noisy_astronaut",
    "noisy_camera",
    "noisy_cell",
    "noisy_timelapse",
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
