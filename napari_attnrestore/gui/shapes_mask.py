"""A Shapes layer as an inpainting mask on an image's pixel grid, drawn only where it is read.

Drawing a mask the size of a gigapixel image takes seconds and gigabytes: done on napari's
GUI thread when Run or Preview is pressed, it froze the viewer.  :class:`ShapesMask` copies
the outlines at once (cheap) and draws them later: Preview draws only its crop, Run draws
the whole mask in its worker thread.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from napari.layers import Image, Shapes

__all__ = ["ShapesMask"]

_STROKES = ("path", "line")  # outlines only; other shapes are filled


class ShapesMask:
    """The pixels inside any of ``shapes`` (1, else 0, uint8) on ``image``'s grid.

    Parameters
    ----------
    shapes, image
        The mask layer and the input layer.  Vertices go from the shapes layer's data
        coordinates to the image's through world coordinates (scale, translate).
    spatial
        The image's non-RGB shape.  2D shapes give a (Y, X) mask for every plane; shapes
        with one coordinate per image axis give a mask of ``spatial``.
    """

    def __init__(self, shapes: Shapes, image: Image, spatial: tuple[int, ...]) -> None:
        full = shapes.ndim == len(spatial) and shapes.ndim > 2
        self.shape = tuple(int(n) for n in (spatial if full else spatial[-2:]))
        self.ndim = n = len(self.shape)
        self.dtype = np.dtype(np.uint8)
        s_sh, t_sh = np.asarray(shapes.scale[-n:], float), np.asarray(shapes.translate[-n:], float)
        s_im, t_im = np.asarray(image.scale[-n:], float), np.asarray(image.translate[-n:], float)
        self._vertices = [((np.asarray(v, float)[:, -n:] * s_sh + t_sh) - t_im) / s_im for v in shapes.data]
        self._types = list(shapes.shape_type)  # napari draws lines and paths 1 pixel wide, whatever their width

    def rasterize(self) -> np.ndarray:
        """The whole mask."""
        return self[tuple(slice(None) for _ in self.shape)]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        mask = self.rasterize()
        return mask if dtype is None else mask.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        """A window of the mask; ``key`` holds one slice of step 1 per axis (fewer: the rest whole)."""
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > self.ndim or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
            raise IndexError(f"a Shapes mask is read in windows (slices of step 1), not {key!r}")
        key = key + (slice(None),) * (self.ndim - len(key))
        spans = [k.indices(n)[:2] for k, n in zip(key, self.shape, strict=True)]
        size = tuple(max(0, stop - start) for start, stop in spans)
        out = np.zeros(size, np.uint8)
        if not self._vertices or 0 in size:
            return out
        # shapes of an nD layer lie on the planes their vertices span (as napari draws them):
        # drawn in groups that share planes, each group once on the window's (Y, X)
        groups: dict[tuple[tuple[int, int], ...], list[int]] = {}
        for i, v in enumerate(self._vertices):
            planes = tuple((max(int(np.rint(v[:, d].min())), start), min(int(np.rint(v[:, d].max())) + 1, stop))
                           for d, (start, stop) in enumerate(spans[:-2]))
            if all(lo < hi for lo, hi in planes):
                groups.setdefault(planes, []).append(i)
        origin = np.array([start for start, _ in spans[-2:]], float)
        for planes, members in groups.items():
            where = tuple(slice(lo - start, hi - start) for (lo, hi), (start, _) in zip(planes, spans[:-2], strict=True))
            out[where] |= self._draw(members, origin, size[-2:])
        return out

    def _draw(self, members: list[int], origin: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """Shapes ``members`` on the (Y, X) window of ``size`` at ``origin``."""
        plane = np.zeros(size, bool)
        filled = [i for i in members if self._types[i] not in _STROKES]
        if filled:  # a fresh layer that no one else edits: it may be drawn in a worker thread
            layer = Shapes([self._vertices[i][:, -2:] - origin for i in filled],
                           shape_type=[self._types[i] for i in filled], ndim=2)
            plane |= np.asarray(layer.to_labels(labels_shape=size)) > 0
        for i in members:
            if self._types[i] in _STROKES:
                _draw_stroke(plane, np.rint(self._vertices[i][:, -2:] - origin).astype(int))
        return plane.astype(np.uint8)


def _draw_stroke(plane: np.ndarray, points: np.ndarray) -> None:
    """One-pixel segments through ``points`` (rows, columns), drawn where they cross ``plane``.

    napari draws paths and lines this way, but moves vertices outside the canvas onto its
    border first: a stroke leaving a window then ran along the window's edge."""
    from skimage.draw import line

    h, w = plane.shape
    for (r0, c0), (r1, c1) in itertools.pairwise(points):
        if max(r0, r1) < 0 or min(r0, r1) >= h or max(c0, c1) < 0 or min(c0, c1) >= w:
            continue  # the segment's box misses the window
        rr, cc = line(r0, c0, r1, c1)
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        plane[rr[inside], cc[inside]] = True
