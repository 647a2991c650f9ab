"""Patch sampling for training: image folders, arrays (numpy, zarr, dask, napari layers)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def to_float01(img: np.ndarray) -> np.ndarray:
    """Scale an image to float32 [0, 1]: by the dtype range for integers, as is for floats."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    return a.astype(np.float32)


def to_gray(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma for RGB(A) images; gray images pass through."""
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        return (img[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)
    return img


def load_folder(folder: str | os.PathLike, gray: bool = True, limit: int | None = None) -> list[np.ndarray]:
    """Load every image in ``folder`` (sorted by name) as float32 [0, 1]."""
    from skimage import io as skio

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    out = []
    for p in paths[:limit]:
        img = to_float01(skio.imread(p))
        out.append(to_gray(img) if gray else img)
    return out


def skimage_pictures(gray: bool = True) -> list[np.ndarray]:
    """scikit-image's bundled pictures as float32 [0, 1] (training extras, demo data).

    Only pictures shipped inside the scikit-image wheel are listed: nothing is downloaded.
    """
    from skimage import data

    names = ["camera", "astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "moon", "text", "page", "clock", "coins", "horse", "hubble_deep_field", "immunohistochemistry", "cell", "retina", "colorwheel"]
    out = []
    for n in names:
        try:
            img = getattr(data, n)()
        except Exception:  # a picture missing from this scikit-image version
            continue
        img = to_float01(img) if img.dtype != bool else img.astype(np.float32)
        out.append(to_gray(img) if gray else img)
    return out


class PatchSampler:
    """Random square patches with flips and 90-degree rotations from a set of 2D images.

    Parameters
    ----------
    images
        2D float arrays (or array-likes read lazily: zarr, dask, napari layer data).
    patch
        Patch side in pixels.
    seed
        Seed of the sampler's own generator (its state is saved with training checkpoints).
    """

    def __init__(self, images: Sequence[np.ndarray], patch: int, seed: int = 0) -> None:
        self.images = [im for im in images if min(im.shape[-2:]) >= patch]
        if not self.images:
            raise ValueError(f"no training image is at least {patch}x{patch} pixels")
        self.patch = patch
        self.rng = np.random.default_rng(seed)
        sizes = np.array([im.shape[-2] * im.shape[-1] for im in self.images], dtype=np.float64)
        self.weights = sizes / sizes.sum()

    def sample(self, batch: int) -> torch.Tensor:
        """A ``(batch, 1, patch, patch)`` float32 tensor."""
        p = self.patch
        out = np.empty((batch, 1, p, p), dtype=np.float32)
        idx = self.rng.choice(len(self.images), size=batch, p=self.weights)
        for b, i in enumerate(idx):
            im = self.images[i]
            y = self.rng.integers(0, im.shape[-2] - p + 1)
            x = self.rng.integers(0, im.shape[-1] - p + 1)
            crop = np.asarray(im[..., y : y + p, x : x + p], dtype=np.float32)
            k = self.rng.integers(0, 8)
            crop = np.rot90(crop, k % 4, axes=(-2, -1))
            if k >= 4:
                crop = crop[..., ::-1]
            out[b, 0] = crop
        return torch.from_numpy(out)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
