"""Tiles inside a region: window-aligned positions, smooth blending weights, batching."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import numpy as np

from .execute import Cancelled


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``.

    When ``length`` and ``tile`` are multiples of the model's window multiple and
    ``tile - overlap`` is too, every start is a multiple as well.
    """
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def ramp_weights(size: int, ramp: int, left: bool, right: bool) -> np.ndarray:
    """1D blending weights: 1 inside, smooth ramps on the sides that overlap a neighbour.

    Over an overlap of ``ramp`` pixels the weight is 0 for the outer quarter (pixels
    whose context the tile cut off), then rises as sin^2, then is 1.  The ramps of two
    tiles that overlap by ``ramp`` or more sum to one (sin^2 + cos^2).
    """
    w = np.ones(size, dtype=np.float32)
    ramp = min(ramp, size // 2)
    if ramp > 0:
        margin = ramp // 4
        n = ramp - 2 * margin
        r = np.zeros(ramp, dtype=np.float32)
        r[margin : margin + n] = np.sin(0.5 * np.pi * (np.arange(n, dtype=np.float32) + 0.5) / n) ** 2
        r[margin + n :] = 1.0
        if left:
            w[:ramp] = r
        if right:
            w[size - ramp :] = r[::-1]
    return w


def run_tiled(
    region: np.ndarray,
    infer: Callable[[np.ndarray], np.ndarray],
    tile: int,
    overlap: int,
    batch: int,
    scale: int = 1,
    infer_many: Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]] | None = None,
    full_batches: bool = False,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """Restore ``region`` ``(P, C, H, W)`` tile by tile and blend the overlaps.

    ``infer`` maps a float32 batch ``(B, C, h, w)`` to ``(B, C_out, s*h, s*w)``.  Tiles
    of all ``P`` planes go through ``infer`` together, ``batch`` at a time.  ``infer_many``
    (optional) maps a stream of batches to their results and may pipeline them: the next
    batch is cut, and the previous result blended, while the device computes.
    ``full_batches`` pads the last batch with blank tiles to ``batch`` tiles, so that every
    forward pass has the same shape (a compiled network then compiles once).
    Once ``cancel`` is set, :class:`~napari_attnrestore.engine.execute.Cancelled` is raised
    before the next batch.
    """
    p, _, h, w = region.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    jobs = [(i, y, x) for i in range(p) for y in ys for x in xs]
    s = scale
    wy = {y: ramp_weights(th * s, overlap * s, y > 0, y + th < h) for y in ys}
    wx = {x: ramp_weights(tw * s, overlap * s, x > 0, x + tw < w) for x in xs}
    acc: np.ndarray | None = None
    norm = np.zeros((h * s, w * s), dtype=np.float32)
    for y in ys:
        for x in xs:
            norm[y * s : (y + th) * s, x * s : (x + tw) * s] += np.outer(wy[y], wx[x])
    groups = [jobs[b0 : b0 + batch] for b0 in range(0, len(jobs), batch)]

    def cut(group: list[tuple[int, int, int]]) -> np.ndarray:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        tiles = np.stack([region[i, :, y : y + th, x : x + tw] for i, y, x in group])
        if full_batches and len(group) < batch:
            tiles = np.concatenate([tiles, np.zeros((batch - len(group), *tiles.shape[1:]), tiles.dtype)])
        return np.ascontiguousarray(tiles, dtype=np.float32)

    batches = (cut(g) for g in groups)
    results = infer_many(batches) if infer_many is not None else map(infer, batches)
    with contextlib.closing(results) if hasattr(results, "close") else contextlib.nullcontext():
        for group, out in zip(groups, results, strict=True):
            if acc is None:
                acc = np.zeros((p, out.shape[1], h * s, w * s), dtype=np.float32)
            for (i, y, x), o in zip(group, out[: len(group)], strict=True):
                acc[i, :, y * s : (y + th) * s, x * s : (x + tw) * s] += o * np.outer(wy[y], wx[x])
    assert acc is not None
    return acc / norm
