"""The dask graph: one task per output chunk, reading its own halo from the source.

No ``map_overlap``: a task reads the halo-extended region straight from the source
(array-likes) or pastes it from the few source blocks it depends on (dask arrays), so
the graph has one node per chunk and memory does not grow with the image.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from ..io import read_chunks
from ..io.geotiff import nodata_pixels
from ..warning import AttnRestoreWarning
from .execute import cancel_event
from .model_handle import ModelHandle
from .normalize import Normalizer, constant_pixels
from .plan import Plan
from .source import Region, assemble, dask_region_parts, read_region
from .tiling import round_up, run_tiled

log = logging.getLogger("attnrestore.engine")
_WARN_LOCK = threading.Lock()
# the plans (jobs) that have warned, by id, with a weak reference: a later job's plan may
# get the id of an ended one, and must warn again
_WARNED_DEEP_GAPS: dict[int, weakref.ref] = {}
_WARNED_OUTLIERS: dict[int, weakref.ref] = {}
_WARNED_RANGE: dict[int, weakref.ref] = {}

#: A sink writes a finished chunk: ``sink(block, index) -> token``.
Sink = Callable[[np.ndarray, tuple[int, ...]], Any]


def pad_region(raw: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Pad the Y, X axes (the first two) of a region read at the image's bottom or right edge
    up to the window multiple, as the network pads a whole image (``pad_to_multiple``).

    Mirrored about the edge pixel (row ``h`` = row ``h - 2``), which keeps every padded
    pixel under the colour filter of its position (Bayer CFA data); along a 1-pixel side it
    is repeated.
    """
    top, bottom, left, right = pads
    for axis, before, after in ((0, top, bottom), (1, left, right)):
        if before or after:
            width = [(0, 0)] * raw.ndim
            width[axis] = (before, after)
            raw = np.pad(raw, width, mode="edge" if raw.shape[axis] == 1 else "reflect")
    return raw


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
        norm = Normalizer((norm.lo[c],), (norm.hi[c],), norm.out_dtype)
    return norm.inverse(x) if inverse else norm.forward(x)


def task_inputs(x: np.ndarray, plan: Plan, mask: np.ndarray | None, origin: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Add the task's channels to normalized planes ``(P, C, Y, X)``; returns them and the holes.

    Inpainting: holes (mask, NaN, nodata) are set to 0 and appended as a mask channel.
    Demosaicing: the three CFA-position masks of the region, at its global origin.
    """
    if plan.task == "inpaint":  # the contract of tasks.inpaint.prepare_input, for C channels a plane
        holes = ~np.isfinite(x).all(axis=1, keepdims=True)
        if mask is not None:
            holes |= mask[None, None] if mask.ndim == 2 else mask[:, None]
        filled = np.where(holes, np.float32(0.0), x)
        holes_b = np.broadcast_to(holes, x.shape)
        return np.concatenate([filled, holes.astype(np.float32)], axis=1).astype(np.float32), holes_b
    if plan.task == "demosaic":
        from ..tasks.demosaic import cfa_masks

        masks = cfa_masks(x.shape[-2:], plan.cfa or "RGGB", y0=origin[0], x0=origin[1])
        return np.concatenate([x, np.broadcast_to(masks, (x.shape[0], *masks.shape))], axis=1), None
    return x, None


def fill_value(plan: Plan) -> float:
    """What the output holds where the input had no data (NaN, Inf or the nodata value).

    The nodata value when one is given and the output dtype can hold it, else NaN for
    floating-point output and 0 for integer output.
    """
    dt = np.dtype(plan.out_dtype)
    nd = plan.nodata
    if dt.kind == "f":
        return float("nan") if nd is None else float(nd)
    if nd is not None and np.isfinite(nd) and float(nd).is_integer():
        info = np.iinfo(dt)
        if info.min <= nd <= info.max:
            return float(nd)
    return 0.0


def keep_under_white(out: np.ndarray, raw: np.ndarray, plan: Plan) -> None:
    """Clip restored pixels to the sensor's white level ``plan.white`` (a demosaic or SR
    overshoot past a 12-bit camera's 4095 is no light it recorded) and, when denoising, keep
    the saturated input pixels as they came: their noise is clipped away already and their
    true value is unknown, so they stay countable as saturated."""
    white = float(plan.white)
    if out.dtype.kind in "ui":
        white = min(white, float(np.iinfo(out.dtype).max))
    np.minimum(out, out.dtype.type(white), out=out)
    if plan.task == "denoise" and raw.shape == out.shape:
        saturated = raw >= plan.white
        out[saturated] = np.minimum(raw[saturated], white).astype(out.dtype)


#: tasks whose constant input regions come back as they are (:func:`keep_constant`)
KEEPS_CONSTANT = ("denoise", "sr")


def keep_constant(out: np.ndarray, planes: np.ndarray, constant: np.ndarray, crop: tuple[int, int, int, int],
                  plan: Plan) -> None:
    """Give the constant pixels of the input (:func:`~.normalize.constant_pixels`: an empty
    plane, zero padding, a clipped plateau) their own value in ``out`` (each one's ``s x s``
    block after super-resolution): they hold no noise and no detail to recover, and a network
    trained on noisy pictures turned an all-zero plane far below the intensity range into an
    offset of 40 counts (negative values in float output)."""
    cy0, cy1, cx0, cx1 = crop
    keep, values = constant[:, :, cy0:cy1, cx0:cx1], planes[:, :, cy0:cy1, cx0:cx1]
    if not keep.any():
        return
    s = plan.scale
    if s > 1:
        keep, values = (np.repeat(np.repeat(a, s, axis=2), s, axis=3) for a in (keep, values))
    v = values[keep]
    if out.dtype.kind in "ui" and not np.can_cast(v.dtype, out.dtype):  # (int64 as it is: no float round trip)
        info = np.iinfo(out.dtype)
        v = np.clip(np.rint(v.astype(np.float64)), info.min, info.max)
    out[keep] = v.astype(out.dtype)


def keep_off_nodata(out: np.ndarray, plan: Plan) -> None:
    """Move restored pixels that came out as the nodata value one step towards the data.

    An undershoot clipped to 0 in a scene whose nodata is 0, or a gap filled with 0, would
    read as a new hole in GIS tools (the output declares the same nodata).
    """
    hit = nodata_pixels(out, plan.nodata)
    if not hit.any():
        return
    nodata = out.dtype.type(plan.nodata)
    up = plan.nodata <= min(plan.norm.lo)  # the data lie above nodata (0, -9999): step up
    if out.dtype.kind == "f":
        out[hit] = np.nextafter(nodata, out.dtype.type(np.inf if up else -np.inf))
    else:
        info = np.iinfo(out.dtype)
        out[hit] = int(nodata) + 1 if (up and nodata < info.max) or nodata == info.min else int(nodata) - 1


def empty_block(plan: Plan, crop: tuple[int, int, int, int]) -> np.ndarray:
    """The output block of a chunk with no data at all: every pixel is :func:`fill_value`."""
    cy0, cy1, cx0, cx1 = crop
    s = plan.scale
    shape = (1,) * plan.nlead + ((cy1 - cy0) * s, (cx1 - cx0) * s) + plan.out_trailing
    return np.full(shape, fill_value(plan), dtype=np.dtype(plan.out_dtype))


def _to_output_grid(bad: np.ndarray, crop: tuple[int, int, int, int], scale: int, out_channels: int) -> np.ndarray:
    """Input-pixel mask ``(P, C, H, W)`` cropped to the chunk and mapped onto the output pixels."""
    cy0, cy1, cx0, cx1 = crop
    b = bad[:, :, cy0:cy1, cx0:cx1]
    if b.shape[1] != out_channels:  # e.g. CFA -> RGB: a pixel without data has no colour either
        b = b.any(axis=1, keepdims=True)
    if scale > 1:
        b = np.repeat(np.repeat(b, scale, axis=2), scale, axis=3)
    return b


def _warn_deep_gaps(holes: np.ndarray, crop: tuple[int, int, int, int], plan: Plan) -> None:
    """Warn (once a job) when a gap in the chunk lies farther from known pixels than the halo
    the chunk reads around itself: the fill then depends on where the chunk borders fall, and
    the chunks of a cloud 200 px across were filled as four flat blocks with steps between
    them (a scan-line stripe, a few pixels from known ones, is filled alike by every chunk)."""
    from scipy import ndimage

    cy0, cy1, cx0, cx1 = crop
    plane = holes.any(axis=(0, 1))
    if _has_warned(_WARNED_DEEP_GAPS, plan) or not plane[cy0:cy1, cx0:cx1].any() or plane.all():
        return
    ys, xs = plan.chunk_bounds()
    if len(ys) == 1 and len(xs) == 1:  # one chunk a plane: no chunk borders for the fill to step at
        return
    depth = float(ndimage.distance_transform_edt(plane)[cy0:cy1, cx0:cx1].max())
    if depth > max(plan.halo, 1):
        _warn_once(_WARNED_DEEP_GAPS, plan, f"gaps deeper than the {plan.halo}-px halo each chunk reads around "
                   "itself: their fill can differ between chunks (steps at chunk borders); pass a larger overlap "
                   "(CLI --overlap), at least half the width of the widest gap. If they are no gaps but the frame "
                   "beyond the image's footprint (nodata there too), give the gaps alone as the mask (CLI --mask): "
                   "no data outside a mask stays no data")


def _has_warned(seen: dict[int, weakref.ref], plan: Plan) -> bool:
    ref = seen.get(id(plan))
    return ref is not None and ref() is plan


def _warn_once(seen: dict[int, weakref.ref], plan: Plan, message: str) -> None:
    """Warn ``message`` once a job (``plan``): its chunks run in threads, and warning filters
    change under ``catch_warnings``, so Python's own once-only rule does not hold."""
    with _WARN_LOCK:
        if _has_warned(seen, plan):
            return
        for key in [k for k, ref in seen.items() if ref() is None]:  # the jobs that have ended
            del seen[key]
        seen[id(plan)] = weakref.ref(plan)
    # with a registry of its own: Python's registry, keyed by the line, said it for the first job only
    caller = sys._getframe(2)
    warnings.warn_explicit(message, AttnRestoreWarning, caller.f_code.co_filename, caller.f_lineno,
                           module=caller.f_globals.get("__name__"), registry={}, module_globals=caller.f_globals)


#: a chunk with more than 1% of its pixels beyond [-1, 2] on the normalized scale (an intensity
#: range past the one sampled) holds a region the statistics missed
BEYOND, BEYOND_SHARE = (-1.0, 2.0), 0.01


def _warn_unsampled_range(x: np.ndarray, planes: np.ndarray, plan: Plan, kept: np.ndarray | None = None) -> None:
    """Warn once a job when a chunk holds a region far outside the sampled intensity range: a
    bright specimen no statistics window touched reaches the network far from its training
    range and comes out badly.  ``kept``: constant pixels, which come back as they are."""
    if plan.task == "inpaint" or _has_warned(_WARNED_RANGE, plan):
        return
    finite = np.isfinite(x) if kept is None else np.isfinite(x) & ~kept
    beyond = finite & ((x < BEYOND[0]) | (x > BEYOND[1]))
    if beyond.sum() <= BEYOND_SHARE * max(1, finite.sum()):
        return
    values = planes[beyond]
    lo, hi = min(plan.norm.lo), max(plan.norm.hi)
    _warn_once(_WARNED_RANGE, plan, f"part of the image lies far outside the intensity range sampled for "
               f"normalization ([{lo:.4g}, {hi:.4g}]; values from {values.min():.4g} to {values.max():.4g} here), "
               "so the network restores it poorly; give the range yourself (normalize=(lo, hi), CLI --normalize "
               "LO,HI)")


#: normalized values beyond this (10000 times the image's intensity range) are clipped to it
#: for the network: an undeclared sentinel such as -3.4e38 overflowed in attention and turned
#: every pixel of its tiles into NaN
OUTLIER = 1e4


def _clip_outliers(x: np.ndarray, planes: np.ndarray, plan: Plan) -> None:
    """Clip finite normalized values beyond :data:`OUTLIER` in place, warning once a job."""
    far = np.isfinite(x) & (np.abs(x) > OUTLIER)
    if not far.any():
        return
    example = planes[far].flat[0]
    x[far] = np.copysign(np.float32(OUTLIER), x[far])
    _warn_once(_WARNED_OUTLIERS, plan, f"pixels far outside the image's intensity range (e.g. {example:g}) are "
               "clipped for the network and restore as very bright or dark spots; if they mark missing data, "
               "declare that value as nodata (CLI --nodata)")


def fill_gaps(x: np.ndarray, bad: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """``(P, C, Y, X)`` planes with their bad pixels filled smoothly from the good ones
    around them (a normalized Gaussian average, then the nearest such value deep inside a
    gap; 0 in a plane with no good pixel): what the network sees in a gap whose output is
    the fill value anyway.  Black (the 0.1th percentile) there spoiled the good pixels
    beside a gap, and copying the edge pixels in copies their noise, which then looks like
    structure."""
    from scipy import ndimage

    out = x.copy()
    for p in range(x.shape[0]):
        for c in range(x.shape[1]):
            b = bad[p, c]
            if not b.any():
                continue
            if b.all():
                out[p, c] = 0.0
                continue
            good = (~b).astype(np.float32)
            weight = ndimage.gaussian_filter(good, sigma)
            smooth = ndimage.gaussian_filter(np.where(b, 0.0, x[p, c]).astype(np.float32), sigma)
            reached = weight > 1e-3
            smooth = np.where(reached, smooth / np.maximum(weight, 1e-3), 0.0)
            if not reached.all():
                iy, ix = ndimage.distance_transform_edt(~reached, return_distances=False, return_indices=True)
                smooth = smooth[iy, ix]
            out[p, c] = np.where(b, smooth, x[p, c])
    return out


def pixel_normal(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A standard normal number for each global pixel ``(ys[:, None], xs[None, :])``, the same
    in every chunk and run (a splitmix64 hash of the coordinates, then Box-Muller).  Any
    integer coordinates, negative ones included."""

    def mix(v: np.ndarray) -> np.ndarray:
        v = (v ^ (v >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        v = (v ^ (v >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return v ^ (v >> np.uint64(31))

    with np.errstate(over="ignore"):
        key = ((np.asarray(ys, np.int64).view(np.uint64)[:, None] << np.uint64(32))
               + np.asarray(xs, np.int64).view(np.uint64)[None, :])
        a = mix(key * np.uint64(2) + np.uint64(0x9E3779B97F4A7C15))
        b = mix(key * np.uint64(2) + np.uint64(1) + np.uint64(0x9E3779B97F4A7C15))
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = (b >> np.uint64(11)).astype(np.float64) / 2.0**53
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def noise_in_gaps(x: np.ndarray, bad: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """``(P, C, Y, X)`` planes whose filled gaps get Gaussian noise of the plane's own level
    (from the differences of neighbouring good pixels), for a blind denoiser: next to a
    noise-free fill it judged the noise weaker and left more of it on the good pixels beside
    a gap (41% more error there for the 32-block denoiser, 15% with the noise).  The noise
    of a pixel is the same in every chunk (:func:`pixel_normal`)."""
    z = pixel_normal(np.arange(x.shape[-2]) + origin[0], np.arange(x.shape[-1]) + origin[1])
    out = x.copy()
    for p in range(x.shape[0]):
        for c in range(x.shape[1]):
            b = bad[p, c]
            if not b.any() or b.all():
                continue
            both = ~b[:, 1:] & ~b[:, :-1]
            d = np.diff(x[p, c], axis=1)[both]
            if d.size < 16:
                continue
            level = float(np.median(np.abs(d))) / (0.6745 * np.sqrt(2.0))
            out[p, c] = np.where(b, x[p, c] + level * z, x[p, c])
    return out


def compute_chunk(handle: ModelHandle, plan: Plan, raw: np.ndarray, pads: tuple[int, int, int, int],
                  lead: tuple[int, ...], crop: tuple[int, int, int, int], mask: np.ndarray | None = None,
                  origin: tuple[int, int] = (0, 0), cancel: threading.Event | None = None) -> np.ndarray:
    """Restore one chunk from its (unpadded) halo region; returns the output block.

    ``mask`` is the inpainting mask of the same region (other tasks: the pixels without
    data, as a file's nodata mask marks them), ``origin`` the global (y, x) of the
    padded region's first pixel (it fixes the Bayer phase).  Pixels without data (NaN, Inf,
    ``plan.nodata``) come back as :func:`fill_value`; inpainting fills them instead.  A
    chunk whose whole halo region has no data (inpainting: no known pixel) skips the
    network and is written as :func:`fill_value` directly.
    """
    region = pad_region(raw, pads)
    planes = to_planes(region, plan)
    if plan.keep_channel is not None and lead[plan.channel_axis] == plan.keep_channel:
        return _as_it_came(planes, crop, plan, lead)
    x = normalize_planes(planes, plan, lead)  # float32 out; wide types are shifted in float64 first
    x[nodata_pixels(planes, plan.nodata)] = np.nan
    if mask is not None:
        mask = pad_region(np.asarray(mask), pads) != 0
        if plan.task != "inpaint":  # a file's nodata mask (GDAL's internal one): no data there, as NaN
            x[np.broadcast_to(mask[None, None] if mask.ndim == 2 else mask[:, None], x.shape)] = np.nan
            mask = None
    _clip_outliers(x, planes, plan)
    constant = constant_pixels(planes) if plan.task in KEEPS_CONSTANT else None
    if plan.range_sampled:  # (a range given, or the type's, is the caller's to choose)
        _warn_unsampled_range(x, planes, plan, constant)
    bad = ~np.isfinite(x)
    if plan.task == "inpaint":  # nothing known to fill from: leave it as nodata (when there is a fill value)
        no_known = bool(bad.all()) or (mask is not None and bool((bad.any(axis=1) | mask).all()))
        if no_known and (plan.nodata is not None or np.dtype(plan.out_dtype).kind == "f"):
            return empty_block(plan, crop)
    elif bad.all():
        return empty_block(plan, crop)
    if plan.task != "inpaint" and bad.any():  # inpainting fills them; other tasks return the fill value
        x = fill_gaps(x, bad)
        if plan.task == "denoise":
            x = noise_in_gaps(x, bad, origin)
    inp, holes = task_inputs(x, plan, mask, origin)
    if holes is not None:
        _warn_deep_gaps(holes, crop, plan)
    y = run_tiled_shrinking(inp, handle, plan, cancel)  # raises Cancelled at a batch once ``cancel`` is set
    s = plan.scale
    cy0, cy1, cx0, cx1 = crop
    y = y[:, :, cy0 * s : cy1 * s, cx0 * s : cx1 * s]
    if holes is not None:  # known pixels are kept exactly; the network fills the holes
        known = np.where(np.isfinite(x), x, 0.0)[:, :, cy0:cy1, cx0:cx1]
        y = np.where(holes[:, :, cy0:cy1, cx0:cx1], y, known)
    out = normalize_planes(y, plan, lead, inverse=True)
    if constant is not None:
        keep_constant(out, planes, constant, crop, plan)
    if plan.white is not None:  # (first: a clip onto a nodata equal to the white level is stepped off it)
        keep_under_white(out, planes[:, :, cy0:cy1, cx0:cx1], plan)
    keep_off_nodata(out, plan)
    if holes is not None and np.dtype(plan.out_dtype) == planes.dtype:
        # the known pixels themselves, not their float32 round trip (a float DEM, 32-bit counts)
        keep = ~holes[:, :, cy0:cy1, cx0:cx1]
        out[keep] = planes[:, :, cy0:cy1, cx0:cx1][keep]
    if holes is None and bad.any():
        nodata_out = np.broadcast_to(_to_output_grid(bad, crop, s, out.shape[1]), out.shape)
        out[nodata_out] = fill_value(plan)
    if holes is not None and plan.fill_adopted:  # an undeclared fill (-3.4e38 beyond a footprint) is no gap
        out[nodata_pixels(planes, plan.nodata)[:, :, cy0:cy1, cx0:cx1]] = fill_value(plan)
    if holes is not None and mask is not None:  # a mask says what to fill: the pixels without data
        # outside it (a scene's nodata frame beyond its footprint) stay without data
        out[(bad & ~(mask[None, None] if mask.ndim == 2 else mask[:, None]))[:, :, cy0:cy1, cx0:cx1]] = fill_value(plan)
    if plan.rgb and plan.mode == "rgb-planes" and planes.shape[0] == 4:
        out[3] = _alpha(planes, x, crop, plan, lead, out.dtype)
    block = from_planes(out, plan)
    return block.reshape((1,) * plan.nlead + block.shape)


def _as_it_came(planes: np.ndarray, crop: tuple[int, int, int, int], plan: Plan, lead: tuple[int, ...]) -> np.ndarray:
    """The output block of a channel the network does not see (the opacity of gray + alpha):
    its pixels as they came in, repeated for super-resolution, in the output type."""
    cy0, cy1, cx0, cx1 = crop
    out = _grown(planes[:, :, cy0:cy1, cx0:cx1], plan.scale)
    if out.dtype != np.dtype(plan.out_dtype):
        out = normalize_planes(normalize_planes(out, plan, lead), plan, lead, inverse=True)
    block = from_planes(np.ascontiguousarray(out), plan)
    return block.reshape((1,) * plan.nlead + block.shape)


def _alpha(planes: np.ndarray, x: np.ndarray, crop: tuple[int, int, int, int], plan: Plan, lead: tuple[int, ...],
           dtype: np.dtype) -> np.ndarray:
    """The alpha plane of an RGBA chunk as it came in, pixel for pixel (repeated for
    super-resolution), in the output type: transparency is no intensity to restore, and the
    network turned an on/off alpha mask into values between."""
    cy0, cy1, cx0, cx1 = crop
    if planes.dtype == dtype:
        return _grown(planes[3, :, cy0:cy1, cx0:cx1], plan.scale)
    return normalize_planes(_grown(x[:, :, cy0:cy1, cx0:cx1], plan.scale), plan, lead, inverse=True)[3]


def _grown(a: np.ndarray, s: int) -> np.ndarray:
    """Each pixel repeated ``s`` times along the last two axes (kept pixels under super-resolution)."""
    return np.repeat(np.repeat(a, s, axis=-2), s, axis=-1) if s > 1 else a


def run_tiled_shrinking(inp: np.ndarray, handle: ModelHandle, plan: Plan,
                        cancel: threading.Event | None = None) -> np.ndarray:
    """:func:`run_tiled`, retried with half the batch, then half the tile, on out-of-memory.

    The job completes on a smaller device (or a busy one) instead of failing; the tile never
    shrinks below twice the overlap or the model's window multiple.
    """
    import torch

    tile, batch = plan.tile, plan.batch
    while True:
        try:
            return run_tiled(inp, handle.infer, tile, plan.overlap, batch, plan.scale, infer_many=handle.infer_many,
                             full_batches=handle.compile, cancel=cancel)
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            smaller = round_up(tile // 2, plan.multiple)
            if batch > 1:
                batch //= 2
            elif smaller >= max(2 * plan.overlap + plan.multiple, 16) and smaller < tile:
                tile = smaller
            else:
                raise
            log.warning("out of memory: retrying this chunk with tile %d, batch %d", tile, batch)


def _chunk_task(handle, plan, raw, mask, pads, crop, origin, lead, sink, index, name):
    """One output chunk: ``raw`` and ``mask`` arrive already read (nested tasks)."""
    written = getattr(sink, "written", None)
    if written is not None and written(index):  # run again after its worker was lost: it is in the store
        return 1
    block = compute_chunk(handle, plan, raw, pads, lead, crop, mask, origin, cancel=cancel_event(name))
    return sink(block, index) if sink is not None else block


#: At most this many bytes of an array-like source are read at once for a block of planes.
PLANE_BLOCK_BYTES = 256 * 2**20


def plane_block(source: Any, plan: Plan, region: Region) -> tuple[tuple[int, int], ...] | None:
    """The leading-axis span ``(start, stop)`` per axis of the stored chunk that holds the
    plane of ``region``, when an array-like source stores several planes a chunk (a
    ``(16, 256, 256)``-chunked volume); None when it stores one (or the span's region would
    pass :data:`PLANE_BLOCK_BYTES`).

    Reading plane by plane would decode each chunk once per plane; the chunks of a plane
    block read the block's region once and take their plane from it.
    """
    nl = plan.nlead
    chunks = read_chunks(source) if nl else None
    if not chunks or len(chunks) < nl or all(int(c) <= 1 for c in chunks[:nl]):
        return None
    per_chunk = [int(c) for c in chunks[:nl]]
    starts = [int(i) // c * c for i, c in zip(region.lead, per_chunk, strict=True)]
    spans = tuple((a, min(a + c, int(n))) for a, c, n in zip(starts, per_chunk, plan.lead_shape, strict=True))
    planes = int(np.prod([b - a for a, b in spans]))
    size = (region.y1 - region.y0) * (region.x1 - region.x0) * (plan.shape[-1] if plan.rgb else 1)
    if planes <= 1 or planes * size * np.dtype(source.dtype).itemsize > PLANE_BLOCK_BYTES:
        return None
    return spans


def _plane_of(block: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    """One plane of a block of planes read at once."""
    return block[offsets]


def _region_reader(source: Any, src_key: str | None, region, rgb: bool, shape_rgb: int | None) -> tuple:
    """A nested task that reads ``region``: sliced from an array-like, or pasted from dask blocks."""
    if isinstance(source, da.Array):
        parts = dask_region_parts(source, region, rgb)
        shape = (region.y1 - region.y0, region.x1 - region.x0) + ((shape_rgb,) if rgb else ())
        return (assemble, [p[0] for p in parts], [(p[1], p[2]) for p in parts], shape, np.dtype(source.dtype))
    return (read_region, src_key, region, rgb)


def chunk_indices(plan: Plan) -> list[tuple[int, ...]]:
    """Block indices of the output (leading axes, then Y, X; a trailing channel block 0)."""
    ys, xs = plan.chunk_bounds()
    ranges = [range(n) for n in plan.lead_shape] + [range(len(ys)), range(len(xs))]
    trail = (0,) if plan.out_trailing else ()
    return [(*idx, *trail) for idx in itertools.product(*ranges)]


def changed_since(plan: Plan, revision: int, moved_passes: bool = False) -> list[tuple[int, ...]]:
    """The chunks whose result differs between engine ``revision`` and this one
    (:data:`~napari_attnrestore.engine.store.REVISION`): before 2, those whose halo reached
    past the image's edge, and every chunk of an ensemble whose network moves its mosaic
    (``moved_passes``: a demosaicer's ``ensemble_shifts``)."""
    if revision >= 2:
        return []
    if moved_passes:
        return chunk_indices(plan)
    ys, xs = plan.chunk_bounds()
    nl = plan.nlead
    return [i for i in chunk_indices(plan) if plan.read_past_edge_before(*ys[i[nl]], *xs[i[nl + 1]])]


def build_graph(
    handle: ModelHandle,
    plan: Plan,
    source: Any,
    sink: Sink | None = None,
    skip: Callable[[tuple[int, ...]], bool] | None = None,
    name: str | None = None,
    mask: Any = None,
) -> tuple[dict, str, list[Any]]:
    """Task dict ``{(name, *index): task}`` for every output chunk not skipped.

    Returns the tasks, the graph name, and the dependencies (the sources' dask graphs).
    ``mask`` (inpainting) is read region by region like the image.
    """
    name = name or f"attnrestore-{uuid.uuid4().hex[:12]}"
    handle_key = f"model-{name}"
    dsk: dict = {handle_key: handle}
    deps: list[Any] = []
    sources = {"image": source, "mask": mask}
    keys: dict[str, str | None] = {}
    for role, src in list(sources.items()):
        if src is None:
            keys[role] = None
        elif isinstance(src, da.Array):
            if role == "image" and plan.rgb and len(src.chunks[-1]) > 1:
                src = src.rechunk({src.ndim - 1: -1})
                sources[role] = src
            deps.append(src)
            keys[role] = None
        else:
            keys[role] = f"{role}-{name}"
            dsk[keys[role]] = src
    ys, xs = plan.chunk_bounds()
    nl = plan.nlead
    rgb_n = plan.shape[-1] if plan.rgb else None
    mask_src = sources["mask"]
    mask_per_plane = mask_src is not None and len(mask_src.shape) > 2
    for index in chunk_indices(plan):
        if skip is not None and skip(index):
            continue
        lead = index[:nl]
        (y0, y1), (x0, x1) = ys[index[nl]], xs[index[nl + 1]]
        window, pads = plan.read_window(y0, y1, x0, x1)
        region = plan.clipped(lead, window)
        crop = (y0 - window[0], y1 - window[0], x0 - window[2], x1 - window[2])
        spans = plane_block(sources["image"], plan, region) if keys["image"] is not None else None
        if spans is None:
            raw = _region_reader(sources["image"], keys["image"], region, plan.rgb, rgb_n)
        else:  # one read of the block's region, shared by the chunks of its planes
            read_key = (f"read-{name}", *(a for a, _ in spans), region.y0, region.y1, region.x0, region.x1)
            if read_key not in dsk:
                block = Region(tuple(slice(a, b) for a, b in spans), region.y0, region.y1, region.x0, region.x1)
                dsk[read_key] = (read_region, keys["image"], block, plan.rgb)
            raw = (_plane_of, read_key, tuple(i - a for i, (a, _) in zip(lead, spans, strict=True)))
        mask_arg = None
        if mask_src is not None:
            mregion = region if mask_per_plane else plan.clipped((), window)
            mask_arg = _region_reader(mask_src, keys["mask"], mregion, False, None)
        dsk[(name, *index)] = (_chunk_task, handle_key, plan, raw, mask_arg, pads, crop, (window[0], window[2]),
                               lead, sink, index, name)
    return dsk, name, deps


def restore_array(handle: ModelHandle, plan: Plan, source: Any, mask: Any = None) -> da.Array:
    """The lazy restored image as a dask array (one chunk per output block)."""
    dsk, name, deps = build_graph(handle, plan, source, mask=mask)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    meta = np.empty((0,) * len(plan.out_shape), dtype=np.dtype(plan.out_dtype))
    return da.Array(graph, name, chunks=plan.out_chunks, dtype=np.dtype(plan.out_dtype), meta=meta)

