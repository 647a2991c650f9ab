"""Synthetic training pictures: dead-leaves images with sharp, coloured occlusion edges.

The dead-leaves model (Matheron; Lee, Mumford and Huang 2001) stacks opaque disks whose
radii follow a power law (density ``r**-3``), which reproduces the scale invariance and the
edge statistics of natural images.  Demosaicing learns most at colour edges, where a
camera's inter-channel correlation breaks; the training photos here are JPEGs whose colour
was stored at half resolution, so they hold few such edges.  Each disk gets a luminance
and a saturation of its own (from grey to fully saturated), the picture is rendered at
twice the size and averaged 2x2 (antialiased edges), then blurred by a random optical
point spread.
"""

from __future__ import annotations

import numpy as np


def dead_leaves(
    size: int = 128,
    rng: np.random.Generator | None = None,
    r_min: float = 4.0,
    r_max: float | None = None,
    max_disks: int = 20000,
    max_blur: float = 0.8,
) -> np.ndarray:
    """One dead-leaves RGB picture, ``(3, size, size)`` float32 in [0, 1].

    Parameters
    ----------
    size
        Side in pixels.
    rng
        Random generator (the picture is a deterministic function of its state).
    r_min, r_max
        Smallest and largest disk radius in output pixels (``r_max`` defaults to size / 3).
    max_disks
        Upper bound on disks drawn; drawing stops as soon as the picture is covered.
    max_blur
        The Gaussian blur's sigma is drawn uniformly from ``[0, max_blur]`` pixels.
    """
    from scipy.ndimage import gaussian_filter

    rng = rng if rng is not None else np.random.default_rng()
    ss = 2  # supersampling factor
    side = size * ss
    lo, hi = r_min * ss, (r_max if r_max is not None else size / 3) * ss
    img = np.zeros((side, side, 3), dtype=np.float32)
    free = np.ones((side, side), dtype=bool)  # not yet covered by a nearer disk
    for _ in range(max_disks):
        # inverse-CDF draw from the density r**-3 on [lo, hi]
        r = (lo**-2 - rng.random() * (lo**-2 - hi**-2)) ** -0.5
        cy, cx = rng.uniform(-r, side + r, 2)
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, side)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, side)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & free[y0:y1, x0:x1]
        if not disk.any():
            continue
        lum, sat = rng.random(), rng.random() ** 2
        colour = np.clip(lum + sat * (2 * rng.random(3) - 1) * 2 * min(lum, 1 - lum), 0, 1)
        img[y0:y1, x0:x1][disk] = colour
        free[y0:y1, x0:x1] &= ~disk
        if not free.any():
            break
    img = img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    blur = rng.uniform(0, max_blur)
    if blur > 0.1:
        img = gaussian_filter(img, (blur, blur, 0))
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def dead_leaves_set(count: int, size: int = 128, seed: int = 0, **kw: float) -> list[np.ndarray]:
    """``count`` dead-leaves pictures from one seed (the same list on every call)."""
    rng = np.random.default_rng(seed)
    return [dead_leaves(size, rng, **kw) for _ in range(count)]
