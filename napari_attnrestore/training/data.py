"""Patch sampling for training: image folders, arrays (numpy, zarr, dask, napari layers)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.images import SLIDE_SUFFIXES
from ..warning import warn

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *SLIDE_SUFFIXES)


def to_float01(img: np.ndarray) -> np.ndarray:
    """Scale an image to float32 of about [0, 1] as restoring it will (the engine's ``auto``).

    uint8 by its range, other types (12-bit data in uint16, int16, float) by the
    percentiles of :func:`~napari_attnrestore.engine.normalize.compute_stats`, one range
    for all channels (a colour picture keeps its colour balance).
    """
    from ..engine.normalize import compute_stats

    a = np.asarray(img)
    if a.dtype == bool:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    lo, hi = compute_stats(a, a.dtype)
    return ((a.astype(np.float64) - lo[0]) / (hi[0] - lo[0])).astype(np.float32)


def drop_alpha(img: np.ndarray) -> np.ndarray:
    """An image without its alpha channel: gray+alpha ``(H, W, 2)`` to ``(H, W)``, RGBA to RGB."""
    if img.ndim == 3 and img.shape[-1] == 2:
        return img[..., 0]
    if img.ndim == 3 and img.shape[-1] == 4:
        return img[..., :3]
    return img


def to_gray(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma for RGB(A) images; gray(+alpha) images pass through (alpha dropped)."""
    img = drop_alpha(img)
    if img.ndim == 3 and img.shape[-1] == 3:
        return (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)
    return img


def load_folder(folder: str | os.PathLike, gray: bool = True, limit: int | None = None) -> list[np.ndarray]:
    """Load every image in ``folder`` (sorted by name) as float32 of about [0, 1] (``(H, W)`` or ``(H, W, C)``).

    A TIFF that is no colour picture gives each of its planes (a stack's pages, a band
    file's channels), scaled as restoring scales the file (percentiles for 16-bit data: a
    little below 0 and above 1 at the extremes).
    """
    from skimage import io as skio

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    out = []
    for p in paths[:limit]:
        if p.suffix.lower() in (".tif", ".tiff"):
            planes = _tiff_planes(p)
            if planes is not None:
                out += planes
                continue
        try:
            img = skio.imread(p)
        except Exception as e:  # a truncated or corrupt file: which one
            raise ValueError(f"{p}: cannot read ({type(e).__name__}: {e})") from None
        img = to_float01(drop_alpha(img))  # alpha says nothing about the intensities
        out.append(to_gray(img) if gray else img)
    return out


def _tiff_planes(path: Path) -> list[np.ndarray] | None:
    """Every plane of a TIFF that is no colour picture, scaled to about [0, 1] as the engine scales it
    (None for a colour picture: read as one image)."""
    from .session import _open

    data, said = _open(path)  # its errors name the file
    if said.get("rgb"):
        return None
    everything = (slice(None), slice(None))
    return [np.asarray(plane[everything]) for plane in planes_of(data, origin=str(path), **said)]


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


def channels_first_rgb(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The colour images among ``images`` as contiguous ``(3, H, W)`` float32 (others dropped)."""
    return [np.ascontiguousarray(np.moveaxis(im[..., :3], -1, 0)) for im in images if im.ndim == 3 and im.shape[-1] in (3, 4)]


def patch_pixels(images: Sequence, patch: int) -> np.ndarray:
    """Pixel count of each image that patches are drawn from: 0 for one smaller than
    ``patch x patch``, which :class:`PatchSampler` skips."""
    return np.array([im.shape[-2] * im.shape[-1] if min(im.shape[-2:]) >= patch else 0 for im in images],
                    dtype=np.float64)


def image_name(image, index: int) -> str:
    """What messages call a training image: its file (a :class:`NormalizedPlane` of one), else its place."""
    origin = image.origin if isinstance(image, NormalizedPlane) else None
    return origin or f"image {index + 1}"


def _sizes(named: Sequence[tuple[str, Sequence[int]]], most: int = 4) -> str:
    """``a.tif (20, 20), image 2 (30, 16), ...``: distinct (name, size) pairs, the first ``most`` of them."""
    seen = list(dict.fromkeys((n, tuple(int(v) for v in size)) for n, size in named))
    text = ", ".join(f"{n} {size}" for n, size in seen[:most])
    return text + (f" and {len(seen) - most} more" if len(seen) > most else "")


#: a patch of a gapped image (gaps kept as NaN) that is mostly gap is drawn again, at most
#: this many times: scored on nothing, its steps reported a loss of 0 while AdamW's momentum
#: still moved the weights
GAP_REDRAWS = 50


def mostly_gaps(crop: np.ndarray) -> bool:
    """Whether fewer than an eighth of a patch's pixels are known (finite)."""
    return bool(np.isnan(crop).any()) and np.count_nonzero(np.isfinite(crop)) < crop.size / 8


class PatchSampler:
    """Random square patches with flips and 90-degree rotations from a set of images.

    Parameters
    ----------
    images
        ``(H, W)`` or channels-first ``(C, H, W)`` float arrays, all with the same channel count
        (or array-likes read lazily: zarr, dask, napari layer data).
    patch
        Patch side in pixels.
    seed
        Seed of the sampler's own generator (its state is saved with training checkpoints).
    weights
        Relative chance of drawing each image (default: its pixel count, so every pixel is
        equally likely).
    """

    def __init__(self, images: Sequence[np.ndarray], patch: int, seed: int = 0,
                 weights: Sequence[float] | None = None) -> None:
        if weights is not None and len(weights) != len(images):
            raise ValueError(f"{len(weights)} sampling weights for {len(images)} images")
        pixels = patch_pixels(images, patch)
        keep = np.flatnonzero(pixels)
        self.images = [images[i] for i in keep]
        small = _sizes([(image_name(images[i], i), images[i].shape[-2:]) for i in range(len(images)) if not pixels[i]])
        if not self.images:
            raise ValueError(f"no training image is at least {patch}x{patch} pixels ({small}); a smaller patch fits them")
        if len(keep) < len(images):
            warn(f"{len(images) - len(keep)} of {len(images)} training planes are smaller than the "
                 f"{patch}x{patch} patch and left out ({small}); a smaller patch keeps them")
        self.patch = patch
        self.rng = np.random.default_rng(seed)
        w = pixels[keep] if weights is None else np.asarray([weights[i] for i in keep], dtype=np.float64)
        self.weights = w / w.sum()
        counts = {im.shape[0] if len(im.shape) == 3 else 1 for im in self.images}
        if len(counts) > 1:
            raise ValueError(f"training images differ in channel count: {sorted(counts)}")
        self.channels = counts.pop()

    def sample(self, batch: int) -> torch.Tensor:
        """A ``(batch, channels, patch, patch)`` float32 tensor."""
        p = self.patch
        out = np.empty((batch, self.channels, p, p), dtype=np.float32)
        idx = self.rng.choice(len(self.images), size=batch, p=self.weights)
        for b, i in enumerate(idx):
            for attempt in range(GAP_REDRAWS + 1):
                im = self.images[i]
                y = self.rng.integers(0, im.shape[-2] - p + 1)
                x = self.rng.integers(0, im.shape[-1] - p + 1)
                crop = np.asarray(im[..., y : y + p, x : x + p], dtype=np.float32)
                k = self.rng.integers(0, 8)
                if attempt == GAP_REDRAWS or not mostly_gaps(crop):
                    break
                i = self.rng.choice(len(self.images), p=self.weights)
            crop = np.rot90(crop, k % 4, axes=(-2, -1))
            if k >= 4:
                crop = crop[..., ::-1]
            out[b] = crop
        return torch.from_numpy(out)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


class NormalizedPlane:
    """A 2D plane of a (possibly lazy) array, scaled to about [0, 1] on the fly.

    The statistics are the engine's (:func:`napari_attnrestore.engine.normalize.compute_stats`
    on a subsample, ``nodata`` pixels excluded), so a model trained here sees what inference
    will feed it: ``stats`` gives the (lo, hi) of the whole image (:func:`planes_of`), else
    they are the plane's own.  Non-finite and ``nodata`` pixels read as 0, or as NaN with
    ``keep_gaps`` (inpainting needs to know the image's own holes).  ``origin`` names the
    file (or array) the plane comes from, for messages.
    """

    def __init__(self, array, index: tuple = (), normalize: str = "auto", nodata: float | None = None,
                 keep_gaps: bool = False, channels: int | None = None,
                 stats: tuple[float, float] | None = None, origin: str | None = None) -> None:
        from ..engine.normalize import compute_stats, needs_float64
        from ..io.geotiff import gaps_as_nan

        self.array, self.index, self.origin = array, tuple(index), origin
        # scaled as the engine scales: in float64 for values float32 cannot hold exactly
        self._work = np.float64 if needs_float64(np.dtype(array.dtype)) else np.float32
        self.nodata, self.keep_gaps = nodata, keep_gaps
        # ``channels``: a channels-first colour picture, its first ``channels`` scaled together
        self._chan = () if channels is None else (slice(0, channels),)
        h, w = array.shape[-2:]
        self.shape = (h, w) if channels is None else (channels, h, w)
        if stats is not None:
            self.lo, self.hi = float(stats[0]), float(stats[1])
            return
        step = max(1, int(max(h, w) // 512))
        raw = np.asarray(array[(*self.index, *self._chan, slice(None, None, step), slice(None, None, step))])
        sample = gaps_as_nan(raw, nodata)
        if not np.isfinite(sample).any():
            raise ValueError(no_finite_pixels(origin, nodata))
        lo, hi = compute_stats(sample, np.dtype(array.dtype), mode=normalize)
        self.lo, self.hi = lo[0], hi[0]

    def values(self, step: int = 1) -> np.ndarray:
        """The plane's own values (every ``step``-th row and column) in float64, gaps NaN."""
        from ..io.geotiff import gaps_as_nan

        raw = np.asarray(self.array[(*self.index, *self._chan, slice(None, None, step), slice(None, None, step))])
        return gaps_as_nan(raw, self.nodata)

    def __getitem__(self, key) -> np.ndarray:
        from ..io.geotiff import nodata_pixels

        raw = np.asarray(self.array[(*self.index, *self._chan, *key[-2:])])
        # values far outside the scaling (beyond float32 once scaled) read as gaps, below: no warning
        with np.errstate(over="ignore", invalid="ignore"):
            out = ((raw.astype(self._work) - self.lo) / (self.hi - self.lo)).astype(np.float32)
        # nodata compared in the image's own values, not after rounding
        gaps = ~np.isfinite(out) | nodata_pixels(raw, self.nodata)
        return np.where(gaps, np.float32(np.nan if self.keep_gaps else 0.0), out)


def no_finite_pixels(origin: str | None, nodata: float | None = None) -> str:
    """The message for a training image without a pixel to learn from."""
    what = "NaN or infinite" + (f" or nodata ({nodata:g})" if nodata is not None else "")
    return f"{origin + ': ' if origin else ''}a training image has no finite pixels (all {what})"


def _stats(origin: str | None, nodata: float | None, shape: tuple[int, ...], dtype: np.dtype, sample: Any,
           nlead: int, rgb: bool, channel_axis: int | None = None, normalize: str = "auto") -> tuple:
    """:func:`~napari_attnrestore.engine.plan.image_stats` and the nodata value, its errors
    naming ``origin``: an undeclared float fill (-3.4e38) is found as restoring finds it, and
    left out of the statistics and the losses."""
    from ..engine.plan import image_stats, remembered, undeclared_fill
    from ..io import ImageReadError

    try:
        sample = remembered(sample)
        if nodata is None:
            nodata = undeclared_fill(shape, dtype, sample, nlead, rgb, channel_axis)
        lo, hi = image_stats(shape, dtype, sample, nlead, rgb, channel_axis, normalize, nodata=nodata,
                             require_finite=True)
        return lo, hi, nodata
    except ImageReadError:  # names its file already
        raise
    except ValueError as e:
        if "no finite pixels" in str(e):
            raise ValueError(no_finite_pixels(origin, nodata)) from None
        if origin:
            raise ValueError(f"{origin}: {e}") from None
        raise


def planes_of(array, rgb: bool | None = None, normalize: str = "auto", channel_axis: int | None = None,
              alpha: bool = False, **plane_kw) -> list[NormalizedPlane]:
    """Every 2D plane of an image (leading axes and RGB channels split), normalized lazily.

    The scaling is the engine's for the whole image (:func:`~napari_attnrestore.engine.plan.image_stats`):
    one (lo, hi) shared by all planes, one per colour for RGB, one per channel along
    ``channel_axis`` (a file's C axis, leading or last).  An alpha channel is no image to
    learn: RGBA's 4th, and with ``alpha`` (a gray + alpha picture, as a PNG's 2 channels are)
    the 2nd of a channel axis of 2 after Y, X (else two bands, as a TIFF's).  ``plane_kw``
    go to :class:`NormalizedPlane` (``nodata``, ``keep_gaps``, ``origin``).
    """
    shape = tuple(array.shape)
    origin, nodata = plane_kw.get("origin"), plane_kw.get("nodata")
    if len(shape) < 2:
        raise ValueError(f"{origin + ': ' if origin else ''}a training image needs at least 2 dimensions; got shape {shape}")
    is_rgb = (len(shape) >= 3 and shape[-1] in (3, 4)) if rgb is None else rgb
    if channel_axis is not None and not is_rgb:  # channels scaled one by one, as restoring does
        c = channel_axis % len(shape)
        gray_alpha = False
        if c >= len(shape) - 2:  # after Y, X (gray + alpha, bands of a GeoTIFF): before them
            gray_alpha = shape[c] == 2 and alpha
            array, c = _MovedAxis(array, c), len(shape) - 3
            shape = tuple(array.shape)
        lo, hi, nodata = _stats(origin, nodata, shape, np.dtype(array.dtype), lambda key: np.asarray(array[key]),
                                len(shape) - 2, False, channel_axis=c, normalize=normalize)
        plane_kw = {**plane_kw, "nodata": nodata}
        return [NormalizedPlane(array, idx, normalize, stats=(lo[idx[c]], hi[idx[c]]), **plane_kw)
                for idx in np.ndindex(*shape[:-2]) if not (gray_alpha and idx[c] == 1)]
    nlead = len(shape) - 2 - int(is_rgb)
    lo, hi, nodata = _stats(origin, nodata, shape, np.dtype(array.dtype), lambda key: np.asarray(array[key]), nlead,
                            is_rgb, normalize=normalize)
    plane_kw = {**plane_kw, "nodata": nodata}
    if is_rgb:
        array = _MovedAxis(array)
        shape = tuple(array.shape)
    lead = shape[:-2]
    if not lead:
        return [NormalizedPlane(array, (), normalize, stats=(lo[0], hi[0]), **plane_kw)]
    return [NormalizedPlane(array, idx, normalize, stats=(lo[idx[-1]], hi[idx[-1]]) if is_rgb else (lo[0], hi[0]),
                            **plane_kw) for idx in np.ndindex(*lead)
            if not (is_rgb and idx[-1] == 3)]  # an RGBA picture's alpha is no image to learn


def colour_pictures_of(array, normalize: str = "auto", channel_axis: int | None = None,
                       origin: str | None = None) -> list[NormalizedPlane]:
    """Every RGB picture of an image as channels-first ``(3, H, W)``, read lazily.

    The colour axis is the last (``(..., Y, X, 3|4)``) or ``channel_axis`` (an OME image's C
    axis, e.g. ``(C, Y, X)``).  The three channels share one scale (the engine scales a mosaic
    as a single plane, so the colour balance must survive); an alpha channel is dropped.
    ``origin`` names the file (or array), for messages.
    """
    shape = tuple(array.shape)
    axis = -1 if channel_axis is None else channel_axis
    if len(shape) < 3 or shape[axis] not in (3, 4):
        where = "last axis" if channel_axis is None else f"axis {channel_axis}"
        raise ValueError(f"{origin + ': ' if origin else ''}demosaicing trains on colour pictures (3 channels on "
                         f"the {where}, e.g. (..., Y, X, 3)); got shape {shape}")
    moved = _MovedAxis(array, axis)
    return [NormalizedPlane(moved, idx, normalize, channels=3, origin=origin) for idx in np.ndindex(*moved.shape[:-3])]


class _MovedAxis:
    """A view of ``array`` with its channel axis ``source`` (default the last, ``(..., Y, X, C)``)
    moved to third from last, ``(..., C, Y, X)``, that slices lazily."""

    def __init__(self, array, source: int = -1) -> None:
        self.array = array
        s = list(array.shape)
        self.source = source % len(s)
        if self.source >= len(s) - 2 and self.source != len(s) - 1:
            raise ValueError(f"axis {source} of shape {tuple(s)} is a spatial axis, not a channel axis")
        c = s.pop(self.source)
        self.shape = (*s[:-2], c, *s[-2:])
        self.dtype = array.dtype

    def __getitem__(self, key):
        key = tuple(key)
        *lead, c, ys, xs = key if len(key) == len(self.shape) else (*key, slice(None), slice(None))
        original = [*lead, ys, xs]
        original.insert(self.source, c)
        out = np.asarray(self.array[tuple(original)])
        if not isinstance(c, slice):
            return out
        kept = sum(not isinstance(k, (int, np.integer)) for k in original[: self.source])  # where C landed
        return np.moveaxis(out, kept, -3)  # channels stay first


class PairedPatchSampler(PatchSampler):
    """Random patches taken at the same place from aligned (input, target) planes."""

    def __init__(self, pairs, patch: int, seed: int = 0) -> None:
        for i, (a, b) in enumerate(pairs):
            if tuple(a.shape[-2:]) != tuple(b.shape[-2:]):
                raise ValueError(f"paired images differ in size: {image_name(a, i)} {tuple(a.shape)} vs its "
                                 f"counterpart {image_name(b, i)} {tuple(b.shape)}")
        super().__init__([a for a, _ in pairs], patch, seed)
        keep = {id(a) for a in self.images}
        self.targets = [b for a, b in pairs if id(a) in keep]

    def sample(self, batch: int) -> torch.Tensor:
        """A ``(batch, 2, patch, patch)`` tensor: channel 0 the input, channel 1 the target."""
        p = self.patch
        out = np.empty((batch, 2, p, p), dtype=np.float32)
        idx = self.rng.choice(len(self.images), size=batch, p=self.weights)
        for b, i in enumerate(idx):
            for attempt in range(GAP_REDRAWS + 1):
                h, w = self.images[i].shape[-2:]
                y = self.rng.integers(0, h - p + 1)
                x = self.rng.integers(0, w - p + 1)
                k = self.rng.integers(0, 8)
                crops = [np.asarray(src[..., y : y + p, x : x + p], dtype=np.float32)
                         for src in (self.images[i], self.targets[i])]
                if attempt == GAP_REDRAWS or not any(mostly_gaps(c) for c in crops):
                    break
                i = self.rng.choice(len(self.images), p=self.weights)
            for c, crop in enumerate(crops):
                crop = np.rot90(crop, k % 4, axes=(-2, -1))
                out[b, c] = crop[..., ::-1] if k >= 4 else crop
        return torch.from_numpy(out)
