"""The dask graph: one task per output chunk, reading its own halo from the source.

No ``map_overlap``: a task reads the halo-extended region straight from the source
(array-likes) or pastes it from the few source blocks it depends on (dask arrays), so
the graph has one node per chunk and memory does not grow with the image.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from .model_handle import ModelHandle
from .plan import Plan
from .source import assemble, dask_region_parts, read_region
from .tiling import run_tiled

#: A sink writes a finished chunk: ``sink(block, index) -> token``.
Sink = Callable[[np.ndarray, tuple[int, ...]], Any]


def pad_region(raw: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Reflect-pad the Y, X axes (the first two) of a region read at the image border."""
    top, bottom, left, right = pads
    if not any(pads):
        return raw
    width = [(top, bottom), (left, right)] + [(0, 0)] * (raw.ndim - 2)
    mode = "symmetric" if min(raw.shape[:2]) > 1 else "edge"
    return np.pad(raw, width, mode=mode)


def to_planes(region: np.ndarray, plan: Plan) -> np.ndarray:
    """``(Y, X[, C])`` raw pixels to the network layout ``(P, C_in, Y, X)``."""
    if not plan.rgb:
        return region[None, None]
    chw = np.moveaxis(region, -1, 0)
    if plan.mode == "rgb-planes":
        return chw[:, None]
    return chw[None]


def from_planes(out: np.ndarray, plan: Plan) -> np.ndarray:
    """Network output ``(P, C_out, Y, X)`` to the output layout ``(Y, X[, C])``."""
    if plan.rgb and plan.mode == "rgb-planes":
        return np.moveaxis(out[:, 0], 0, -1)
    if out.shape[1] == 1 and not plan.rgb:
        return out[0, 0]
    return np.moveaxis(out[0], 0, -1)


def normalize_planes(x: np.ndarray, plan: Plan, lead: tuple[int, ...], inverse: bool = False) -> np.ndarray:
    """Apply the plan's global normalization (or its inverse) to ``(P, C, Y, X)`` data."""
    norm = plan.norm
    if plan.rgb:
        axis = 0 if plan.mode == "rgb-planes" else 1
        nch = len(norm.lo)
        if nch > 1 and x.shape[axis] != nch:  # e.g. RGB stats but a 1-channel output
            axis = None
        return norm.inverse(x, axis) if inverse else norm.forward(x, axis)
    if plan.channel_axis is not None and len(norm.lo) > 1:
        c = lead[plan.channel_axis]
        from .normalize import Normalizer

        norm = Normalizer((norm.lo[c],), (norm.hi[c],), norm.out_dtype)
    return norm.inverse(x) if inverse else norm.forward(x)


def compute_chunk(handle: ModelHandle, plan: Plan, raw: np.ndarray, pads: tuple[int, int, int, int],
                  lead: tuple[int, ...], crop: tuple[int, int, int, int]) -> np.ndarray:
    """Restore one chunk from its (unpadded) halo region; returns the output block."""
    region = pad_region(raw, pads)
    x = normalize_planes(to_planes(region, plan).astype(np.float32), plan, lead)
    bad = ~np.isfinite(x)
    if bad.any():
        x = np.where(bad, 0.0, x).astype(np.float32)
    y = run_tiled(x, handle.infer, plan.tile, plan.overlap, plan.batch, plan.scale)
    s = plan.scale
    cy0, cy1, cx0, cx1 = crop
    y = y[:, :, cy0 * s : cy1 * s, cx0 * s : cx1 * s]
    if bad.any() and s == 1 and y.shape[1] == bad.shape[1]:
        y = np.where(bad[:, :, cy0:cy1, cx0:cx1], np.nan, y)
    out = normalize_planes(y, plan, lead, inverse=True)
    block = from_planes(out, plan)
    return block.reshape((1,) * plan.nlead + block.shape)


def _task_from_array(handle, plan, src, region, pads, crop, sink, index):
    raw = read_region(src, region, plan.rgb)
    block = compute_chunk(handle, plan, raw, pads, region.lead, crop)
    return sink(block, index) if sink is not None else block


def _task_from_blocks(handle, plan, blocks, slices, shape, dtype, region, pads, crop, sink, index):
    raw = assemble(blocks, slices, shape, dtype)
    block = compute_chunk(handle, plan, raw, pads, region.lead, crop)
    return sink(block, index) if sink is not None else block


def chunk_indices(plan: Plan) -> list[tuple[int, ...]]:
    """Block indices of the output (leading axes, then Y, X; a trailing channel block 0)."""
    ys, xs = plan.chunk_bounds()
    ranges = [range(n) for n in plan.lead_shape] + [range(len(ys)), range(len(xs))]
    trail = (0,) if plan.out_trailing else ()
    return [(*idx, *trail) for idx in itertools.product(*ranges)]


def build_graph(
    handle: ModelHandle,
    plan: Plan,
    source: Any,
    sink: Sink | None = None,
    skip: Callable[[tuple[int, ...]], bool] | None = None,
    name: str | None = None,
) -> tuple[dict, str, list[Any]]:
    """Task dict ``{(name, *index): task}`` for every output chunk not skipped.

    Returns the tasks, the graph name, and the dependencies (the source's dask graph).
    """
    name = name or f"attnrestore-{uuid.uuid4().hex[:12]}"
    handle_key = f"model-{name}"
    dsk: dict = {handle_key: handle}
    deps: list[Any] = []
    is_dask = isinstance(source, da.Array)
    if is_dask:
        if plan.rgb and len(source.chunks[-1]) > 1:
            source = source.rechunk({source.ndim - 1: -1})
        deps.append(source)
    else:
        src_key = f"source-{name}"
        dsk[src_key] = source
    ys, xs = plan.chunk_bounds()
    nl = plan.nlead
    for index in chunk_indices(plan):
        if skip is not None and skip(index):
            continue
        lead = index[:nl]
        (y0, y1), (x0, x1) = ys[index[nl]], xs[index[nl + 1]]
        window, pads = plan.read_window(y0, y1, x0, x1)
        region = plan.clipped(lead, window)
        crop = (y0 - window[0], y1 - window[0], x0 - window[2], x1 - window[2])
        if is_dask:
            parts = dask_region_parts(source, region, plan.rgb)
            shape = (region.y1 - region.y0, region.x1 - region.x0) + ((plan.shape[-1],) if plan.rgb else ())
            dsk[(name, *index)] = (
                _task_from_blocks, handle_key, plan, [p[0] for p in parts], [(p[1], p[2]) for p in parts],
                shape, np.dtype(plan.dtype), region, pads, crop, sink, index,
            )
        else:
            dsk[(name, *index)] = (_task_from_array, handle_key, plan, src_key, region, pads, crop, sink, index)
    return dsk, name, deps


def restore_array(handle: ModelHandle, plan: Plan, source: Any) -> da.Array:
    """The lazy restored image as a dask array (one chunk per output block)."""
    dsk, name, deps = build_graph(handle, plan, source)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    meta = np.empty((0,) * len(plan.out_shape), dtype=np.dtype(plan.out_dtype))
    return da.Array(graph, name, chunks=plan.out_chunks, dtype=np.dtype(plan.out_dtype), meta=meta)

