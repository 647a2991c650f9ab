"""A Shapes layer as an inpainting mask on an image's pixel grid, drawn only where it is read.

Drawing a mask the size of a gigapixel image takes seconds and gigabytes: done on napari's
GUI thread when Run or Preview is pressed, it froze the viewer.  :class:`ShapesMask` copies
the outlines at once (cheap) and draws them later: Preview draws only its crop, Run draws
the whole mask in its worker thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Shapes

__all__ = ["ShapesMask"]


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
        self._types, self._widths = list(shapes.shape_type), list(shapes.edge_width)  # widths: lines, paths

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
        if not self._vertices or 0 in size:
            return np.zeros(size, np.uint8)
        origin = np.array([start for start, _ in spans], float)
        # a fresh layer that no one else edits: it may be drawn in a worker thread
        layer = Shapes([v - origin for v in self._vertices], shape_type=self._types, edge_width=self._widths,
                       ndim=self.ndim)
        return (np.asarray(layer.to_labels(labels_shape=size)) > 0).astype(np.uint8)
