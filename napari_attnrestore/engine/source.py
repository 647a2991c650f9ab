"""Where the engine reads pixels from: array-likes sliced in place, or dask arrays by block.

Array-likes (numpy, zarr, tifffile's zarr store, h5py, ...) are sliced directly inside
each output task, so an output chunk reads exactly its halo-extended region and nothing
stays in memory between tasks.  Dask arrays are read block by block as dependencies of
the tasks that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from ..io import read_region as read_checked  # its errors name the store and the chunk


@dataclass(frozen=True)
class Region:
    """A rectangle of one plane: ``lead`` indexes the leading axes, ``ys``/``xs`` the image."""

    lead: tuple[int | slice, ...]  # slices: a block of planes (see graph.plane_block)
    y0: int
    y1: int
    x0: int
    x1: int


def read_region(arr: Any, region: Region, rgb: bool) -> np.ndarray:
    """Read ``region`` from an array-like: ``(Y, X)`` or ``(Y, X, C)`` for RGB data."""
    key = (*region.lead, slice(region.y0, region.y1), slice(region.x0, region.x1))
    if rgb:
        key = (*key, slice(None))
    if isinstance(arr, np.ndarray):
        return arr[key]
    return read_checked(arr, key)


def dask_region_parts(arr: da.Array, region: Region, rgb: bool) -> list[tuple[tuple, tuple, tuple]]:
    """The blocks of a dask array that cover ``region``.

    Returns ``(block_key, slices_in_block, slices_in_region)`` triples; the task reading
    the region receives the blocks as dependencies and pastes them together.
    """
    nlead = len(region.lead)
    bounds = [np.cumsum((0, *c)) for c in arr.chunks]
    block_lead = []
    in_block_lead = []
    for ax, i in enumerate(region.lead):
        b = int(np.searchsorted(bounds[ax], i, side="right") - 1)
        block_lead.append(b)
        in_block_lead.append(i - int(bounds[ax][b]))

    def spans(ax: int, lo: int, hi: int) -> list[tuple[int, slice, slice]]:
        edges = bounds[ax]
        out = []
        first = int(np.searchsorted(edges, lo, side="right") - 1)
        last = int(np.searchsorted(edges, hi - 1, side="right") - 1)
        for b in range(first, last + 1):
            s0, s1 = max(lo, int(edges[b])), min(hi, int(edges[b + 1]))
            out.append((b, slice(s0 - int(edges[b]), s1 - int(edges[b])), slice(s0 - lo, s1 - lo)))
        return out

    parts = []
    for by, sy, dy in spans(nlead, region.y0, region.y1):
        for bx, sx, dx in spans(nlead + 1, region.x0, region.x1):
            key = (arr.name, *block_lead, by, bx) + ((0,) if rgb else ())
            src = (*in_block_lead, sy, sx) + ((slice(None),) if rgb else ())
            parts.append((key, src, (dy, dx)))
    return parts


def assemble(blocks: list[np.ndarray], slices: list[tuple[tuple, tuple]], shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Paste block pieces into one region array (the inverse of :func:`dask_region_parts`)."""
    out = np.empty(shape, dtype=dtype)
    for blk, (src, dst) in zip(blocks, slices, strict=True):
        out[dst] = np.asarray(blk)[src]
    return out


class ZeroMarks:
    """A mask read inverted: ``True`` where ``mask`` is 0.

    For masks that mark the valid pixels (GDAL mask bands, Landsat gap masks: nonzero =
    data) where inpainting wants the pixels to fill; each slice is read and inverted on
    demand, so a large mask stays on disk.
    """

    def __init__(self, mask: Any) -> None:
        self.mask = mask
        self.shape = tuple(mask.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(bool)
        self.path = getattr(mask, "path", None)  # named in read errors, found by backing_stores

    def __getitem__(self, key: Any) -> np.ndarray:
        return read_checked(self.mask, key) == 0
