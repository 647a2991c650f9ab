"""Layer geometry for restored outputs and preview crops. Imports neither Qt nor napari.

napari places pixel ``i`` of an axis at ``translate + i * scale`` (pixel centres).  A
super-resolved output with factor ``k`` has ``k`` pixels per input pixel, so its pixel
size is ``scale / k`` and its first pixel centre lies ``scale * (k - 1) / (2k)`` before
the input's first pixel centre: the output then covers the input exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..io.napari_hooks import axes_of_labels, level0  # one definition for the writers and the widgets

__all__ = ["Crop", "channel_axis_of", "level0", "preview_crop", "sr_geometry"]


def sr_geometry(scale: Sequence[float], translate: Sequence[float], k: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of a layer super-resolved by ``k`` on its last two (Y, X) axes.

    Parameters
    ----------
    scale, translate
        The input layer's per-axis scale and translate (napari's, without the RGB axis).
    k
        Upscaling factor (1 leaves the geometry unchanged).
    """
    s, t = [float(v) for v in scale], [float(v) for v in translate]
    for i in (len(s) - 2, len(s) - 1):
        t[i] = t[i] - s[i] * (k - 1) / (2 * k)
        s[i] = s[i] / k
    return tuple(s), tuple(t)


def channel_axis_of(shape: Sequence[int], rgb: bool, metadata: dict | None,
                    axis_labels: Sequence[str] | None = None) -> int | None:
    """The channel axis named ``c`` in a layer's ``metadata["axes"]`` or, without those, in
    napari's ``axis_labels`` when they are t/c/z/y/x letters (as the writers read them), if it
    is a leading axis."""
    axes = (metadata or {}).get("axes")
    if not (isinstance(axes, str) and len(axes) == len(shape)):
        axes = axes_of_labels(axis_labels, len(shape))
    if rgb or not isinstance(axes, str) or len(axes) != len(shape) or axes.count("c") != 1:
        return None
    i = axes.index("c")
    return i if i < len(shape) - 2 else None


@dataclass(frozen=True)
class Crop:
    """A region of a layer's data to restore for a preview.

    ``key`` reads the padded region (one plane of each leading axis, the visible Y/X box
    plus a margin); ``trim`` cuts the margin off the (``k``-times larger) output;
    ``origin`` is the data index of the region's first kept pixel on every layer axis.
    """

    key: tuple[slice, ...]
    trim: tuple[int, int, int, int]  # top, bottom, left, right margins in input pixels
    origin: tuple[int, ...]

    def trim_output(self, out: np.ndarray, k: int, nlead: int) -> np.ndarray:
        """Remove the margin (``k`` output pixels per input pixel) from a restored crop."""
        top, bottom, left, right = (m * k for m in self.trim)
        h, w = out.shape[nlead], out.shape[nlead + 1]
        idx = [slice(None)] * out.ndim
        idx[nlead] = slice(top, h - bottom)
        idx[nlead + 1] = slice(left, w - right)
        return out[tuple(idx)]

    def geometry(self, scale: Sequence[float], translate: Sequence[float], k: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Scale and translate that place the trimmed output over the input layer."""
        t = [float(tr) + o * float(s) for tr, s, o in zip(translate, scale, self.origin, strict=True)]
        return sr_geometry(scale, t, k)


def preview_crop(
    shape: Sequence[int],
    rgb: bool,
    point: Sequence[float],
    box: np.ndarray | None,
    max_side: int = 512,
    margin: int = 32,
) -> Crop:
    """The region to restore for a preview of the current plane and visible area.

    Parameters
    ----------
    shape
        Shape of the layer's level-0 data (with the RGB axis if ``rgb``).
    rgb
        Whether the last axis holds RGB(A) samples.
    point
        Current position in data coordinates, one value per layer axis (no RGB axis);
        picks the plane of every leading axis.
    box
        ``(2, ndim)`` visible corners in level-0 data pixels (napari's ``corner_pixels``
        scaled to level 0); None or a degenerate box means the whole plane.
    max_side
        Largest side of the previewed region (centred on the visible area).
    margin
        Context read around the region and cut off after restoring, so that the crop's
        border does not show in the preview.
    """
    spatial = len(shape) - int(rgb)
    nlead = spatial - 2
    h, w = int(shape[nlead]), int(shape[nlead + 1])
    lead = [int(min(max(round(float(p)), 0), n - 1)) for p, n in zip(point[:nlead], shape[:nlead], strict=True)]
    y0, y1, x0, x1 = 0, h, 0, w
    if box is not None:
        b = np.asarray(box, dtype=float)
        by0, by1 = math.floor(b[0, -2]), math.ceil(b[1, -2]) + 1
        bx0, bx1 = math.floor(b[0, -1]), math.ceil(b[1, -1]) + 1
        by0, bx0, by1, bx1 = max(by0, 0), max(bx0, 0), min(by1, h), min(bx1, w)
        if by1 - by0 >= 2 and bx1 - bx0 >= 2:
            y0, y1, x0, x1 = by0, by1, bx0, bx1
    y0, y1 = _clamp_side(y0, y1, max_side, h)
    x0, x1 = _clamp_side(x0, x1, max_side, w)
    ry0, ry1, rx0, rx1 = max(y0 - margin, 0), min(y1 + margin, h), max(x0 - margin, 0), min(x1 + margin, w)
    key = (*(slice(i, i + 1) for i in lead), slice(ry0, ry1), slice(rx0, rx1))
    if rgb:
        key += (slice(None),)
    return Crop(key=key, trim=(y0 - ry0, ry1 - y1, x0 - rx0, rx1 - x1), origin=(*lead, y0, x0))


def _clamp_side(a: int, b: int, max_side: int, n: int) -> tuple[int, int]:
    """Shrink ``[a, b)`` to at most ``max_side`` around its centre, inside ``[0, n)``."""
    if b - a <= max_side:
        return a, b
    c = (a + b) // 2
    a = min(max(c - max_side // 2, 0), max(n - max_side, 0))
    return a, min(a + max_side, n)
