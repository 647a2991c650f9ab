"""Global intensity normalization: statistics once per image, on a subsample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Percentiles used for data without a fixed range (microscopy, floats).
LOW_PCT, HIGH_PCT = 0.1, 99.9


def intensity_range(value: Any) -> tuple[float, float]:
    """A normalization given as ``(lo, hi)``, checked: two finite numbers, ``lo < hi``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"normalize must be auto, dtype, percentile, none, a (lo, hi) pair or one such pair per "
                         f"channel, not {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"normalize (lo, hi) must be finite with lo < hi, not {tuple(value)!r}")
    return lo, hi


def channel_ranges(value: Any, channels: int) -> list[tuple[float, float]] | None:
    """A normalization given as one ``(lo, hi)`` per channel (``[(100, 400), (200, 3000)]``),
    each checked, for an image of ``channels`` channels (a ValueError when they are not as
    many); None when ``value`` is a name or a single pair."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
        return None
    first = value[0]
    if isinstance(first, str) or not hasattr(first, "__len__"):
        return None  # one pair (numbers), or a name
    if len(value) != channels:
        raise ValueError(f"normalize gives {len(value)} (lo, hi) ranges for {channels} "
                         f"channel{'s' if channels > 1 else ''}; give one per channel, or one pair for all")
    return [intensity_range(v) for v in value]


@dataclass(frozen=True)
class Normalizer:
    """Affine map of the input to about [0, 1] and back, and the cast to the output dtype.

    ``lo`` and ``hi`` are per channel (length 1 for a global normalization).
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    out_dtype: str

    def _bcast(self, values: tuple[float, ...], ndim: int, channel_axis: int | None, dtype: type = np.float32) -> np.ndarray:
        v = np.asarray(values, dtype=dtype)
        if len(v) == 1 or channel_axis is None:
            return v[:1].reshape((1,) * ndim)
        shape = [1] * ndim
        shape[channel_axis] = len(v)
        return v.reshape(shape)

    def forward(self, x: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Map raw values to the network's range (float32; computed in float64 for wide types)."""
        work = np.float64 if needs_float64(x.dtype) else np.float32
        lo = self._bcast(self.lo, x.ndim, channel_axis, work)
        hi = self._bcast(self.hi, x.ndim, channel_axis, work)
        return ((x.astype(work, copy=False) - lo) / (hi - lo)).astype(np.float32, copy=False)

    def inverse(self, y: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Map network output back to raw values and cast (clipped and rounded for integers)."""
        dt = np.dtype(self.out_dtype)
        work = np.float64 if needs_float64(dt) else np.float32
        lo = self._bcast(self.lo, y.ndim, channel_axis, work)
        hi = self._bcast(self.hi, y.ndim, channel_axis, work)
        out = y.astype(work, copy=False) * (hi - lo) + lo
        if dt.kind in "ui":
            info = np.iinfo(dt)
            # 64-bit limits round up to 2**63 / 2**64 as floats, which would wrap around in the cast
            top = float(info.max) if dt.itemsize < 8 else np.nextafter(float(info.max), -np.inf)
            out = np.clip(np.rint(out), info.min, top)
        elif dt == np.bool_:
            out = out > 0.5
        elif dt.kind == "f" and dt.itemsize < np.dtype(work).itemsize:  # float16: beyond 65504 it was inf
            info = np.finfo(dt)
            out = np.clip(out, float(info.min), float(info.max))
        return out.astype(dt, copy=False)


def needs_float64(dtype: np.dtype) -> bool:
    """Whether values of ``dtype`` lose precision in float32 arithmetic (float64, 32/64-bit integers)."""
    dtype = np.dtype(dtype)
    return (dtype.kind in "ui" and dtype.itemsize >= 4) or (dtype.kind == "f" and dtype.itemsize > 4)


def _flat(a: float, b: float, dtype: np.dtype) -> bool:
    """Whether ``[a, b]`` is no range at the precision ``dtype`` is normalized in (float64 for
    wide types, shifted before the cast): relative to the values, so that data in small units
    (picoamperes in amperes, say) keep their contrast."""
    eps = np.finfo(np.float64 if needs_float64(dtype) else np.float32).eps
    return b - a <= eps * max(abs(a), abs(b))


#: A pixel whose (2 r + 1)^2 neighbourhood holds one value throughout is constant: an empty
#: plane, zero padding, a clipped plateau, no noisy measurement (r = 2: 25 equal pixels)
CONSTANT_RADIUS = 2


def constant_pixels(values: np.ndarray, spatial: tuple[int, int] = (-2, -1), radius: int = CONSTANT_RADIUS) -> np.ndarray:
    """Where ``values`` equal every neighbour within ``radius`` along the ``spatial`` axes
    (all of them finite): regions that hold no noise to remove, which a network trained on
    noisy pictures would still change (an empty plane far below the intensity range came
    back as an offset of 40 counts).  Beyond the array's edge the edge pixels repeat."""
    from scipy import ndimage

    v = np.asarray(values)
    if v.dtype == np.float16 or v.dtype.kind == "b":  # (types scipy's filters do not take)
        v = v.astype(np.float32)
    size = [1] * v.ndim
    for ax in spatial:
        size[ax] = 2 * radius + 1
    finite = np.isfinite(v) if v.dtype.kind == "f" else np.ones(v.shape, bool)
    up = down = v
    if not finite.all():  # a NaN or infinite neighbour: not constant
        up, down = np.where(finite, v, np.inf), np.where(finite, v, -np.inf)
    hi = ndimage.maximum_filter(up, size=size, mode="nearest")
    lo = ndimage.minimum_filter(down, size=size, mode="nearest")
    return (hi == lo) & finite


def compute_stats(
    sample: np.ndarray,
    dtype: np.dtype,
    channel_axis: int | None = None,
    mode: str | tuple[float, float] = "auto",
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(lo, hi) from a subsample: the dtype range for uint8, percentiles otherwise.

    ``mode`` is ``auto``, ``dtype`` (full dtype range), ``percentile``, ``none``
    (identity: the data are already in [0, 1]), a ``(lo, hi)`` pair: the range itself, or
    one such pair per channel.
    """
    dtype = np.dtype(dtype)
    nch = 1 if channel_axis is None else sample.shape[channel_axis]
    ranges = channel_ranges(mode, nch)
    if ranges is not None:
        return tuple(r[0] for r in ranges), tuple(r[1] for r in ranges)
    if not isinstance(mode, str):
        lo, hi = intensity_range(mode)
        return (lo,) * nch, (hi,) * nch
    if mode == "none":
        return (0.0,) * nch, (1.0,) * nch
    if mode == "dtype" or (mode == "auto" and dtype == np.uint8):
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return (float(max(info.min, 0)),) * nch, (float(info.max),) * nch
        return (0.0,) * nch, (1.0,) * nch
    if mode not in ("auto", "percentile"):
        raise ValueError(f"unknown normalization {mode!r}; use auto, dtype, percentile or none")
    s = np.asarray(sample, dtype=np.float64)
    if channel_axis is None:
        chans = [s.ravel()]
    else:
        s = np.moveaxis(s, channel_axis, 0)
        chans = [c.ravel() for c in s]
    lo, hi = [], []
    for c in chans:
        c = c[np.isfinite(c)]
        if c.size == 0:
            lo.append(0.0)
            hi.append(1.0)
            continue
        a, b = np.percentile(c, [LOW_PCT, HIGH_PCT])
        if _flat(a, b, dtype):
            a, b = float(c.min()), float(c.max())
            if _flat(a, b, dtype):
                b = a + (abs(a) or 1.0)  # a constant image: its own magnitude as the range
        lo.append(float(a))
        hi.append(float(b))
    return tuple(lo), tuple(hi)
