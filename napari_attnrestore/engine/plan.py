"""The plan of a restoration: layout, chunks, tiles, halo and normalization of one image.

Axes: the spatial axes are Y, X, the last two, or the two before a trailing RGB(A)
axis.  Every other leading axis (T, Z, C, ...) is processed plane by plane.  The dask
**chunk** (what is read and written) covers one plane of ``chunk x chunk`` pixels; the
model **tile** (what the network sees) is smaller, overlaps its neighbours and is
batched.  Each chunk reads a halo around itself so that no seam shows between chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io.geotiff import gaps_as_nan
from ..warning import warn
from .normalize import HIGH_PCT, LOW_PCT, Normalizer, channel_ranges, compute_stats, constant_pixels
from .source import Region
from .tiling import round_up

if TYPE_CHECKING:
    from .model_handle import ModelInfo  # imports torch

DEFAULT_CHUNK = 1024
MIN_CHUNK = 16  # smaller chunks only multiply the per-chunk work (a 64 px image in 1 px chunks: minutes)
#: input channels a task adds to the image channels of each plane
TASK_AUX_CHANNELS = {"inpaint": 1, "demosaic": 3}
DEFAULT_TILE = 256
#: ``tile``/``batch`` value that asks for a size chosen from a memory probe
AUTO = "auto"
MAX_STATS_WINDOWS = 16
STATS_WINDOW = 256


@dataclass(frozen=True)
class Plan:
    """Everything a chunk task needs besides the pixels and the network."""

    shape: tuple[int, ...]
    dtype: str
    rgb: bool
    mode: str  # "plane" (1 channel per plane), "rgb-planes" (RGB channels one by one), "rgb" (RGB jointly)
    scale: int
    out_channels: int
    chunk: tuple[int, int]
    tile: int
    overlap: int
    halo: int
    multiple: int
    batch: int
    norm: Normalizer
    channel_axis: int | None
    out_dtype: str
    task: str = "denoise"
    cfa: str | None = None  # demosaic: Bayer pattern at the image's pixel (0, 0)
    nodata: float | None = None  # inpaint: this value (and NaN) marks pixels to fill
    has_mask: bool = False  # inpaint: a mask source is read next to the image
    keep_channel: int | None = None  # along channel_axis: copied through as it came in (gray + alpha's alpha)
    range_sampled: bool = True  # the intensity range comes from sampled windows (not given, nor the type's)
    fill_adopted: bool = False  # nodata is an undeclared fill found in the image: kept, not inpainted
    white: float | None = None  # the sensor's saturation level: results clipped to it, saturated pixels kept

    @property
    def aux_channels(self) -> int:
        """Input channels the task adds to each plane (inpaint: the mask; demosaic: 3 CFA masks)."""
        return TASK_AUX_CHANNELS.get(self.task, 0)

    @property
    def nlead(self) -> int:
        return len(self.shape) - 2 - int(self.rgb)

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return self.shape[: self.nlead]

    @property
    def height(self) -> int:
        return self.shape[self.nlead]

    @property
    def width(self) -> int:
        return self.shape[self.nlead + 1]

    @property
    def out_trailing(self) -> tuple[int, ...]:
        """Trailing channel axis of the output (RGB), if any."""
        if self.rgb:
            return (self.shape[-1] if self.mode == "rgb-planes" else self.out_channels,)
        return (self.out_channels,) if self.out_channels > 1 else ()

    @property
    def out_shape(self) -> tuple[int, ...]:
        s = self.scale
        return (*self.lead_shape, self.height * s, self.width * s, *self.out_trailing)

    def chunk_bounds(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Input-pixel bounds of the chunks along Y and X."""
        cy, cx = self.chunk
        ys = [(y, min(y + cy, self.height)) for y in range(0, self.height, cy)]
        xs = [(x, min(x + cx, self.width)) for x in range(0, self.width, cx)]
        return ys, xs

    @property
    def out_chunks(self) -> tuple[tuple[int, ...], ...]:
        ys, xs = self.chunk_bounds()
        s = self.scale
        return (
            *((1,) * n for n in self.lead_shape),
            tuple((b - a) * s for a, b in ys),
            tuple((b - a) * s for a, b in xs),
            *((c,) for c in self.out_trailing),
        )

    def read_window(self, y0: int, y1: int, x0: int, x1: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """The region to read for the chunk ``[y0, y1) x [x0, x1)``: the chunk and its halo,
        aligned to the window multiple, within the image.

        At the image's edge the region stops where the whole image, padded to the window
        multiple, stops: the network sees the edge of the image as it sees it when it runs
        on the whole image at once (a reflected halo there made the tiled result differ
        from the whole-image one over the model's context from the edge).  Returns
        ``(ry0, ry1, rx0, rx1)`` and the pads ``(top, bottom, left, right)`` (bottom and
        right only, less than the multiple) that reflection must supply.
        """
        m = self.multiple
        ry0 = max(math.floor((y0 - self.halo) / m) * m, 0)
        rx0 = max(math.floor((x0 - self.halo) / m) * m, 0)
        ry1 = min(ry0 + round_up(y1 + self.halo - ry0, m), round_up(self.height, m))
        rx1 = min(rx0 + round_up(x1 + self.halo - rx0, m), round_up(self.width, m))
        pads = (0, max(0, ry1 - self.height), 0, max(0, rx1 - self.width))  # (the region starts inside the image)
        return (ry0, ry1, rx0, rx1), pads

    def read_past_edge_before(self, y0: int, y1: int, x0: int, x1: int) -> bool:
        """Whether engines before :data:`~napari_attnrestore.engine.store.REVISION` 2 read the
        chunk ``[y0, y1) x [x0, x1)`` with a halo of reflections past the image's edge (their
        result for it differs from this engine's): where :meth:`read_window` clips the region."""
        m, h = self.multiple, self.halo
        return (min(y0, x0) < h or round_up(y1 + h, m) > round_up(self.height, m)
                or round_up(x1 + h, m) > round_up(self.width, m))

    def clipped(self, lead: tuple[int, ...], window: tuple[int, int, int, int]) -> Region:
        ry0, ry1, rx0, rx1 = window
        return Region(lead, max(ry0, 0), min(ry1, self.height), max(rx0, 0), min(rx1, self.width))


def detect_rgb(shape: tuple[int, ...], rgb: bool | None) -> bool:
    """napari's rule: a trailing axis of 3 or 4 in an image of 3+ dims is RGB(A)."""
    if rgb is not None:
        if rgb and (len(shape) < 3 or shape[-1] not in (3, 4)):
            raise ValueError(f"rgb=True needs a trailing axis of 3 or 4 samples; the image has shape {shape}")
        return bool(rgb)
    return len(shape) >= 3 and shape[-1] in (3, 4)


def check_image(shape: tuple[int, ...], dtype: Any, rgb: bool | None = None, task: str = "denoise") -> bool:
    """Refuse an image no model can restore (too few axes, empty, non-numeric, RGB for
    demosaicing); returns whether it is RGB(A).  Cheap: needs no pixels and no model."""
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    if len(shape) < 2:
        raise ValueError(f"an image needs at least 2 dimensions (Y, X); got shape {shape}")
    if dtype.kind not in "uif":
        raise ValueError(f"unsupported pixel type {dtype}; use integer or floating-point data")
    is_rgb = detect_rgb(shape, rgb)
    if any(n < 1 for n in shape):
        raise ValueError(f"the image is empty (shape {shape})")
    if task == "demosaic" and is_rgb:
        raise ValueError(f"demosaicing takes the single-channel CFA image (Y, X); got shape {shape}")
    return is_rgb


def _at_most(limit: int | None, tile: int | None) -> int | None:
    """The largest automatic tile: the device's limit, and no more than the tile a model
    card names (larger tiles change such a network's result)."""
    return tile if limit is None else limit if tile is None else min(limit, tile)


def card_overlap(overlap: int, tile: int, multiple: int) -> int:
    """The tile overlap on the tile a model card names: a quarter of it, at most the model's
    ``overlap`` hint.  CSAttn on 64-px tiles gave the same result with a half (at twice
    the cost) and less with an eighth."""
    return tile_overlap(min(overlap, max(multiple, tile // 4 // multiple * multiple)), tile, multiple)


def tile_overlap(overlap: int, tile: int, multiple: int) -> int:
    """The overlap of neighbouring tiles: ``overlap``, at most half a tile (in window
    multiples).  Beyond half a tile the blend ramps cannot grow, and the tile step would
    shrink to a few pixels: a 96-px tile with the default denoiser's 112-px context would
    run the image through the network 2700 times over."""
    return min(overlap, tile // 2 // multiple * multiple)


#: What a task's extra input channels hold, and what its models are called, for messages.
_AUX_WHAT = {"inpaint": "the mask of the pixels to fill", "demosaic": "the mosaic's colour masks"}
_MODEL_OF = {"denoise": "a denoising", "sr": "a super-resolution", "demosaic": "a demosaicing",
             "inpaint": "an inpainting"}


def choose_mode(rgb: bool, info: ModelInfo, nchan: int, aux: int = 0, task: str | None = None,
                model_task: str | None = None) -> str:
    """How the image's channels meet the network's input channels (besides ``aux`` channels
    that ``task`` adds).  ``model_task``: the task the model was trained for (its card), when
    known: a model that cannot take the input is then named as one for another task."""
    image_channels = info.in_channels - aux
    if rgb and image_channels == nchan:
        return "rgb"
    if rgb and image_channels == 3 and nchan == 4:
        raise ValueError("RGBA input with an RGB model: drop the alpha channel first")
    if image_channels == 1:
        return "rgb-planes" if rgb else "plane"
    if task and model_task and model_task != task:  # the path-based route's words (load_checkpoint)
        raise ValueError(f"model {info.name!r} is for task {model_task!r}, not {task!r}; this is "
                         f"{_MODEL_OF.get(model_task, 'a ' + model_task)} model, and task {task!r} needs "
                         f"{_MODEL_OF.get(task, 'a ' + task)} model")
    plural = "s" if info.in_channels != 1 else ""
    what = f"the RGB(A) image's {nchan} (or 1, plane by plane)" if rgb else "the image's 1 (single-channel planes)"
    need = f"{nchan + aux} or {1 + aux}" if rgb else f"{1 + aux}"
    adds = f" plus {aux} for {_AUX_WHAT.get(task or '', 'the task')}" if aux else ""
    hint = f"; use {_MODEL_OF.get(task, 'a ' + task)} model" if task and aux and image_channels < 1 else ""
    raise ValueError(f"model {info.name!r} expects {info.in_channels} input channel{plural}; "
                     f"{f'task {task!r}' if task else 'the input'} feeds {need}: {what}{adds}{hint}")


def _spread_order(ny: int, nx: int) -> list[tuple[int, int]]:
    """The cells of an ``ny x nx`` grid, the one nearest the centre first, then each next one
    as far as possible from those before it (ties: row-major order): any prefix spreads out."""
    cells = [(i, j) for i in range(ny) for j in range(nx)]
    centre = ((ny - 1) / 2, (nx - 1) / 2)
    order = [min(cells, key=lambda c: (c[0] - centre[0]) ** 2 + (c[1] - centre[1]) ** 2)]
    gap = {c: (c[0] - order[0][0]) ** 2 + (c[1] - order[0][1]) ** 2 for c in cells}
    while len(order) < len(cells):
        nxt = max((c for c in cells if c not in order), key=lambda c: gap[c])
        order.append(nxt)
        for c in cells:
            gap[c] = min(gap[c], (c[0] - nxt[0]) ** 2 + (c[1] - nxt[1]) ** 2)
    return order


def stats_windows(plan_shape: tuple[int, ...], nlead: int, rgb: bool, budget: int = MAX_STATS_WINDOWS,
                  channel_axis: int | None = None) -> list[tuple]:
    """Deterministic sample windows for global statistics, spread over the planes and the field.

    ``budget`` windows of at most ``STATS_WINDOW`` pixels (shared among the channels of a
    leading ``channel_axis``, at least 4 each) take distinct cells of a grid over the image, centre
    first, and run through the planes (Z, T, ...) as they go: a stack is sampled over its
    whole field, not at the same few places in every plane.  Small planes, with fewer cells
    than windows, take their cells again on other planes, up to one window per plane.
    """
    lead_shape = plan_shape[:nlead]
    h, w = plan_shape[nlead], plan_shape[nlead + 1]
    wy, wx = min(STATS_WINDOW, h), min(STATS_WINDOW, w)
    channels = [None] if channel_axis is None else list(range(lead_shape[channel_axis]))
    others = [n for i, n in enumerate(lead_shape) if i != channel_axis]
    nplanes = int(np.prod(others)) if others else 1
    n = budget if channel_axis is None else max(4, budget // len(channels))
    # a 2D grid of odd sides, so that one cell is the field's centre, where a specimen
    # usually lies (a 4 x 4 grid left a centred square of a third of the side unsampled)
    ny = 1 if h <= wy else (n if w <= wx else math.ceil(math.sqrt(n)) | 1)
    nx = 1 if w <= wx else (math.ceil(n / ny) | 1 if ny > 1 else n)
    ys = np.linspace(0, h - wy, ny).round().astype(int)
    xs = np.linspace(0, w - wx, nx).round().astype(int)
    cells = list(dict.fromkeys((int(ys[i]), int(xs[j])) for i, j in _spread_order(ny, nx)))[:n]
    # a field of fewer cells than windows (planes of 256 x 256 or less) is sampled again on
    # other planes: one window on plane 0 scaled a whole time-lapse by its first frame
    count = min(n, len(cells) * nplanes)
    keys = []
    for c in channels:
        for k in range(count):
            y, x = cells[k % len(cells)]
            plane = round(k * (nplanes - 1) / max(1, count - 1))
            lead = [int(i) for i in np.unravel_index(plane, others)] if others else []
            if c is not None:
                lead.insert(channel_axis, c)
            keys.append((*lead, slice(y, y + wy), slice(x, x + wx)) + ((slice(None),) if rgb else ()))
    return keys


#: Finite float values this far from zero mark missing pixels (float32's lowest, -3.4e38, is the
#: usual fill of a float raster): no instrument measures them.
FILL_MAGNITUDE = 1e30


def remembered(sample: Any) -> Any:
    """``sample(key)`` reading each window once (the fill value and the statistics look at the
    same windows)."""
    seen: dict[str, np.ndarray] = {}

    def read(key: tuple) -> np.ndarray:
        k = repr(key)
        if k not in seen:
            seen[k] = np.asarray(sample(key))
        return seen[k]

    return read


def undeclared_fill(
    shape: tuple[int, ...], dtype: np.dtype, sample: Any, nlead: int, rgb: bool, channel_axis: int | None = None,
) -> float | None:
    """The fill value of a float image that declares none: the one finite value of magnitude
    :data:`FILL_MAGNITUDE` or more in the windows the statistics sample, or None (none, or
    several).  Scaled as data, -3.4e38 set the low end of the range, and every real pixel
    came out as one value (or beyond the float range)."""
    if np.dtype(dtype).kind != "f" or float(np.finfo(dtype).max) < FILL_MAGNITUDE:  # (float16 holds none)
        return None
    found: set[float] = set()
    for key in stats_windows(shape, nlead, rgb, channel_axis=channel_axis):
        r = np.asarray(sample(key))
        found.update(np.unique(r[np.isfinite(r) & (np.abs(r) >= FILL_MAGNITUDE)]).tolist())
        if len(found) > 1:
            return None
    if not found:
        return None
    value = found.pop()
    warn(f"the image holds {value:g}, a fill value, and declares no nodata: those pixels are taken for missing "
         "data and kept as they are (give nodata=, CLI --nodata, to declare the value, or to fill such "
         "pixels by inpainting)")
    return value


#: zeros set apart from the data (:func:`warn_zero_gaps`): at least this share of the sampled
#: pixels, and under :data:`ZERO_NEIGHBOURS` times as many pixels above 0 and within
#: :data:`ZERO_APART` of the range's top (or two levels)
ZERO_SHARE, ZERO_NEIGHBOURS, ZERO_APART = 0.01, 0.05, 0.05


def warn_zero_gaps(shape: tuple[int, ...], dtype: np.dtype, sample: Any, nlead: int, rgb: bool,
                   channel_axis: int | None = None) -> bool:
    """Warn, and return True, when an integer image that declares no nodata holds zeros set
    apart from its data, as gaps without data look (an untagged Landsat-7 SLC-off band, zero
    padding around a stitched mosaic): denoising took them for dark pixels, restored the
    stripes' edges into the data and darkened valid pixels beside them.  A dim image whose
    noise reaches 0 has values all the way up from it, and is left alone."""
    if np.dtype(dtype).kind not in "ui":
        return False
    values = np.concatenate([np.asarray(sample(k)).ravel() for k in stats_windows(shape, nlead, rgb,
                                                                                  channel_axis=channel_axis)])
    zeros = int(np.count_nonzero(values == 0))
    above = values[values > 0]
    if zeros < ZERO_SHARE * values.size or above.size == 0:
        return False
    top = float(np.percentile(above, HIGH_PCT))
    near = int(np.count_nonzero(above <= max(ZERO_APART * top, 2)))  # (at least the two levels above 0)
    if near >= ZERO_NEIGHBOURS * zeros:
        return False
    warn(f"{zeros / values.size:.0%} of the sampled pixels are 0, set apart from the data (which starts near "
         f"{float(np.percentile(above, LOW_PCT)):.4g}) and no nodata is declared: if they are gaps without data "
         "(scan-line stripes, a frame outside the footprint, padding), give nodata=0 (CLI --nodata 0) so they "
         "are kept as they are and left out of the restoring; else the pixels beside them are restored "
         "against black")
    return True


def image_stats(
    shape: tuple[int, ...], dtype: np.dtype, sample: Any, nlead: int, rgb: bool, channel_axis: int | None = None,
    normalize: str | tuple[float, float] | list[tuple[float, float]] = "auto", nodata: float | None = None, require_finite: bool = False,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalization statistics of a whole image, from :func:`stats_windows` read by ``sample(key)``.

    One (lo, hi) for the image, one per colour for RGB, one per channel for a leading
    ``channel_axis``; ``nodata`` pixels are left out.  Training uses it too, so a model
    sees the scaling that inference will give it; ``require_finite``: raise ValueError when
    no sampled pixel is finite (a training image with nothing to learn from).
    """
    keys = stats_windows(shape, nlead, rgb, channel_axis=channel_axis)
    raw = [np.asarray(sample(k)) for k in keys]
    # pixels to fill say nothing about the intensity range; nodata compared in the image's own type
    pieces = [gaps_as_nan(r, nodata) for r in raw]
    pieces = _without_constant_regions(pieces, rgb)
    known = any(np.isfinite(p).any() for p in pieces)
    if not known:
        if require_finite:
            raise ValueError("a training image has no finite pixels")
        _no_data_sampled(shape, keys, nlead, nodata)
    if rgb:
        flat = np.concatenate([p.reshape(-1, p.shape[-1]) for p in pieces])
        stats = compute_stats(flat, dtype, channel_axis=1, mode=normalize)
    elif channel_axis is None:
        if nlead and normalize in ("auto", "percentile") and not (normalize == "auto" and dtype == np.uint8):
            _warn_planes_apart(shape, sample, nlead, nodata)
        stats = compute_stats(np.concatenate([p.ravel() for p in pieces]), dtype, mode=normalize)
    else:
        lo_l, hi_l = [], []  # one statistic per channel: sample each channel's planes separately
        per_channel = channel_ranges(normalize, shape[channel_axis])
        for c in range(shape[channel_axis]):
            sel = [p for k, p in zip(keys, pieces, strict=True) if k[channel_axis] == c]
            mode = per_channel[c] if per_channel is not None else normalize
            a, b = compute_stats(np.concatenate([s.ravel() for s in sel]), dtype, mode=mode)
            lo_l.append(a[0])
            hi_l.append(b[0])
        stats = tuple(lo_l), tuple(hi_l)
    if known and isinstance(normalize, str) and (normalize == "none" or (normalize == "dtype" and dtype != np.uint8)):
        # (uint8's default is 'dtype'; a range given as (lo, hi) is the caller's choice)
        _warn_range_unfilled(pieces, stats[0][0], stats[1][0], normalize)
    return stats


#: constant regions are left out of the statistics unless fewer than this share of the
#: sampled pixels would remain (a mostly empty image: its few pixels would set the range)
CONSTANT_KEEP = 0.01


def _without_constant_regions(pieces: list[np.ndarray], rgb: bool) -> list[np.ndarray]:
    """The sampled windows with their constant regions (:func:`constant_pixels`: empty planes,
    zero padding, clipped plateaus) as NaN: two empty planes of eight set the range's low end
    to 0 instead of the background's 386, and denoising the specimen came out 16% worse."""
    spatial = (0, 1) if rgb else (-2, -1)
    out = [np.where(constant_pixels(p, spatial) if p.ndim >= 2 else False, np.nan, p) for p in pieces]
    kept = sum(int(np.isfinite(p).sum()) for p in out)
    return out if kept >= CONSTANT_KEEP * sum(int(np.isfinite(p).sum()) for p in pieces) else pieces


#: data spanning less than this share of the range ``normalize='dtype'`` or ``'none'`` scales
#: by reach the network as a faint, flat image (a 12-bit camera stored as uint16 fills 6%)
RANGE_FILLED = 0.1


def _warn_range_unfilled(pieces: list[np.ndarray], lo: float, hi: float, mode: str) -> None:
    """Warn when the sampled values fill only a sliver of the range ``[lo, hi]`` the chosen
    ``mode`` scales by (the same for every channel), or (``'none'``) lie far outside [0, 1]:
    the network then takes real detail for noise (spots lost 93% of their intensity in 12-bit
    data scaled by uint16's range), or sees values it was never trained on.  The default
    percentile range has neither problem."""
    values = np.concatenate([p.ravel() for p in pieces]).astype(np.float64)
    values = values[np.isfinite(values)]
    a, b = (float(v) for v in np.percentile(values, [LOW_PCT, HIGH_PCT]))
    share = (b - a) / (hi - lo)
    outside = (lo, hi) == (0.0, 1.0) and (a < -0.5 or b > 1.5)  # 'none', and 'dtype' for floats
    if share >= RANGE_FILLED and not outside:
        return
    said = f"far outside [0, 1], which normalize='{mode}' takes them to be in" if outside else \
        f"{share:.1%} of the range normalize='{mode}' scales by ([{lo:g}, {hi:g}])"
    warn(f"the image's values span {a:.4g} to {b:.4g}, {said}: the network sees a "
         f"{'scale it was not trained on' if outside else 'faint, flat image (a denoiser takes its detail for noise)'}; "
         "leave normalize at its default (the image's own range) or give the range (normalize=(lo, hi), "
         "CLI --normalize LO,HI)")


#: planes whose intensity spans differ more than this many times are likely no series of one signal
PLANES_APART = 20.0


def _warn_planes_apart(shape: tuple[int, ...], sample: Any, nlead: int, nodata: float | None) -> None:
    """Warn when planes of an image with one shared range differ widely in their spans at the
    same place, and those spans lie apart: more likely bands or channels (a band stack stored
    as pages, read as time) than one signal over time or depth, and the dimmest get a sliver
    of the network's range.  Reads the central 256 px of up to 8 planes (the statistics'
    windows lie at other places in each plane: a background window and a specimen window of
    identical frames are no bands; nor are a z-stack's background planes, whose range meets
    the specimen planes' low end)."""
    h, w = shape[nlead], shape[nlead + 1]
    ys, xs = slice(max(0, h // 2 - 128), min(h, h // 2 + 128)), slice(max(0, w // 2 - 128), min(w, w // 2 + 128))
    count = int(np.prod(shape[:nlead]))
    spans = {}
    for flat in sorted({round(float(v)) for v in np.linspace(0, count - 1, min(count, 8))}):
        index = tuple(int(i) for i in np.unravel_index(flat, shape[:nlead]))
        values = gaps_as_nan(sample((*index, ys, xs)), nodata).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            lo, hi = np.percentile(values, [LOW_PCT, HIGH_PCT])
            spans[index] = (float(lo), float(hi))
    widths = {i: hi - lo for i, (lo, hi) in spans.items() if hi > lo}
    if len(widths) < 2:
        return
    narrow, wide = min(widths, key=widths.get), max(widths, key=widths.get)
    ratio = widths[wide] / widths[narrow]
    apart = spans[narrow][1] < spans[wide][0] or spans[narrow][0] > spans[wide][1]
    if ratio < PLANES_APART or not apart:
        return
    said = "; ".join(f"plane {i if len(i) > 1 else i[0]}: {spans[i][0]:.4g} to {spans[i][1]:.4g}" for i in (narrow, wide))
    warn(f"the planes of this image differ {ratio:.0f}-fold in intensity range ({said}) and share one range, "
         "so the dimmest get a sliver of the network's; if they are channels or bands, say so: channel_axis= "
         "for that axis (CLI restore --channel-axis)")


class NoDataError(ValueError):
    """The image holds no pixel with data (all NaN, infinite or nodata): nothing to restore."""


def _no_data_sampled(shape: tuple[int, ...], keys: list[tuple], nlead: int, nodata: float | None) -> None:
    """No sampled pixel holds data: a ValueError when the windows cover the whole image (it
    holds none: its result would be all NaN or nodata), else a warning (the data lie elsewhere,
    and the statistics fall back to the type's range)."""
    what = "NaN or infinite" + (f", or the nodata value {nodata:g}" if nodata is not None else "")
    planes = int(np.prod(shape[:nlead])) if nlead else 1
    full = all(k[nlead] == slice(0, shape[nlead]) and k[nlead + 1] == slice(0, shape[nlead + 1]) for k in keys)
    if full and len({k[:nlead] for k in keys}) == planes:
        raise NoDataError(f"the image has no data to restore: every pixel is {what}")
    warn(f"no pixel of the {len(keys)} windows sampled for the intensity range holds data (all {what}); "
         "the range falls back to the data type's, which can scale the result badly; give "
         "normalize='none' or crop to the data")


def _warn_narrow(out_dtype: np.dtype, lo: float, hi: float) -> None:
    """Warn when an integer output type cannot hold the input's values ``[lo, hi]`` (its bulk,
    from the statistics): they would be clipped, or squeezed onto a few levels."""
    info = np.iinfo(out_dtype)
    if lo < info.min or hi > info.max:
        warn(f"the result is stored as {out_dtype}, whose range [{info.min}, {info.max}] clips the "
             f"input's values [{lo:.4g}, {hi:.4g}]; keep the input's type or rescale it first")
    elif hi - lo < 16:
        warn(f"the result is stored as {out_dtype}, but the input's values [{lo:.4g}, {hi:.4g}] span "
             f"only {round(hi) - round(lo) + 1} of its levels; keep the input's type or rescale it first")


def whole_number(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``, or a ValueError naming the option."""
    if isinstance(value, (bool, np.bool_)) or not (isinstance(value, (int, np.integer)) or (
            isinstance(value, (float, np.floating)) and float(value).is_integer())):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {int(value)}")
    return int(value)


def make_plan(
    shape: tuple[int, ...],
    dtype: np.dtype,
    info: ModelInfo,
    sample: Any,
    *,
    rgb: bool | None = None,
    chunk: int | tuple[int, int] | None = None,
    native_chunks: tuple[int, ...] | None = None,
    tile: int | str | None = None,
    overlap: int | None = None,
    batch: int | str | None = None,
    normalize: str | tuple[float, float] | list[tuple[float, float]] = "auto",
    channel_axis: int | None = None,
    out_dtype: Any = None,
    task: str = "denoise",
    cfa: str | None = None,
    nodata: float | None = None,
    mask_shape: tuple[int, ...] | None = None,
    mask_marks_nodata: bool = False,
    memory: Any = None,
    keep_channel: int | None = None,
) -> Plan:
    """Validate the request and decide chunks, tiles, halo and normalization.

    ``sample(key)`` reads a small window of the image (used for the global statistics).
    ``keep_channel``: a channel (along ``channel_axis``) the network does not see, copied
    through as it came in: the opacity of a gray + alpha image.  ``mask_marks_nodata``: the
    mask (``mask_shape``) of a task other than inpainting marks pixels without data (a
    file's nodata mask): kept out of the network's input, written as the fill value.
    ``tile``/``batch`` ``"auto"`` choose them from ``memory``, an
    :class:`~napari_attnrestore.engine.autotune.MemoryModel` of the network.
    """
    dtype = np.dtype(dtype)
    is_rgb = check_image(shape, dtype, rgb, task)
    nlead = len(shape) - 2 - int(is_rgb)
    h, w = shape[nlead], shape[nlead + 1]
    nchan = shape[-1] if is_rgb else 1
    aux = TASK_AUX_CHANNELS.get(task, 0)
    if task == "demosaic":
        from ..tasks.demosaic import check_pattern

        cfa = check_pattern(cfa or "RGGB")
    if mask_shape is not None:
        if task != "inpaint" and not mask_marks_nodata:
            raise ValueError(f"a mask is only used for inpainting, not {task}")
        ok = tuple(mask_shape) in ((h, w), tuple(shape[: nlead + 2]))
        if not ok:
            raise ValueError(f"mask shape {tuple(mask_shape)} does not match the image (Y, X) = ({h}, {w})"
                             + (f" or its planes {tuple(shape[: nlead + 2])}" if nlead else ""))
    mode = choose_mode(is_rgb, info, nchan, aux, task=task, model_task=info.task)
    m = max(1, info.multiple_of)

    # chunks: the source's own chunking when it is reasonable, else DEFAULT_CHUNK
    if chunk is None:
        if native_chunks is not None:
            ncy, ncx = native_chunks[nlead], native_chunks[nlead + 1]
            # a multiple of the source's chunk near the default: a chunk of 256 spent most of its
            # work on its halo (3 x 3 tiles for one tile's worth of output; 2.2 times slower)
            near = lambda n: n * max(1, round(DEFAULT_CHUNK / n)) if 256 <= n <= 4096 else DEFAULT_CHUNK  # noqa: E731
            cy, cx = near(ncy), near(ncx)
        else:
            cy = cx = DEFAULT_CHUNK
    elif isinstance(chunk, (int, float, np.integer, np.floating)):
        cy = cx = whole_number("chunks", chunk, MIN_CHUNK)
    elif isinstance(chunk, (tuple, list, np.ndarray)) and len(chunk) == 2:
        cy, cx = (whole_number("chunks", c, MIN_CHUNK) for c in chunk)
    else:
        raise ValueError(f"chunks must be a number of pixels or a (y, x) pair, got {chunk!r}")
    cy, cx = min(cy, h), min(cx, w)

    # tiles: multiples of the window multiple; overlap too (keeps windows aligned globally)
    auto_tile, auto_batch = tile == AUTO, batch == AUTO
    for name, v in (("tile", tile), ("batch", batch)):
        if isinstance(v, str) and v != AUTO:
            raise ValueError(f"{name} must be a number of pixels or 'auto', got {v!r}")
    if (auto_tile or auto_batch) and memory is None:
        raise ValueError("tile='auto' / batch='auto' need a memory probe of the model (memory=...)")
    o = info.halo if overlap is None else whole_number("overlap", overlap, 0)
    o = round_up(o, m)
    # the context each chunk reads around it, whatever the tile size; beyond the image's own
    # size there is nothing to read (and --overlap 1000000 asked for terabytes of tiles)
    halo = min(o, round_up(max(h, w), m))
    # a network whose result depends on its tile's size runs on the tile its card names
    card = round_up(info.tile, m) if info.tile else None
    t = None if auto_tile else round_up((card or DEFAULT_TILE) if tile is None else whole_number("tile", tile, 8), m)
    if card and overlap is None and t in (None, card):  # (also a resumed tile='auto' job's tile)
        o = card_overlap(o, card, m)
    if t is not None:
        o = tile_overlap(o, t, m)
    if auto_tile or auto_batch:
        from .autotune import choose_tile_batch, max_batch_for, max_tile_for

        region = round_up(max(cy, cx) + 2 * o, m) + (m if m > 1 else 0)
        planes = nchan if (is_rgb and mode == "rgb-planes") else 1
        t, b = choose_tile_batch(memory, region=region, overlap=o, multiple=m, planes=planes, tile=t,
                                 batch=None if auto_batch else batch, max_batch=max_batch_for(memory.device),
                                 max_tile=_at_most(max_tile_for(memory.device), card))
        o = tile_overlap(o, t, m)
        batch = b
    assert t is not None

    if batch is None:
        batch = max(1, min(16, (512 * 512) // (t * t)))
    batch = whole_number("batch", batch, 1)

    # normalization statistics, once, on a subsample
    if channel_axis is not None:
        if not -len(shape) <= channel_axis < len(shape):
            raise ValueError(f"channel_axis {channel_axis} is not an axis of shape {shape}")
        channel_axis = channel_axis % len(shape)
        if channel_axis >= nlead:
            raise ValueError(f"channel_axis {channel_axis} is a spatial axis of shape {shape}")
        if task == "demosaic" and shape[channel_axis] > 1:  # its colours would make a second channel axis
            raise ValueError(f"demosaicing takes one Bayer mosaic per plane; axis {channel_axis} of shape {shape} "
                             f"holds {shape[channel_axis]} channels: demosaic one channel at a time")
    sample = remembered(sample)
    adopted = False
    if nodata is None:
        nodata = undeclared_fill(shape, dtype, sample, nlead, is_rgb, channel_axis)
        adopted = nodata is not None
    if nodata is None and task in ("denoise", "sr") and mask_shape is None:
        warn_zero_gaps(shape, dtype, sample, nlead, is_rgb, channel_axis)
    lo, hi = image_stats(shape, dtype, sample, nlead, is_rgb, channel_axis, normalize, nodata)

    odt = np.dtype(out_dtype) if out_dtype is not None else dtype
    if odt.kind not in "uif":
        raise ValueError(f"unsupported output dtype {odt}")
    if odt != dtype and odt.kind in "ui":
        _warn_narrow(odt, min(lo), max(hi))
    out_channels = info.out_channels
    if mode == "rgb-planes" and out_channels != 1:
        raise ValueError(f"model {info.name!r} outputs {out_channels} channels from 1; it cannot run per RGB channel")
    if mode == "plane" and out_channels not in (1, 3):
        raise ValueError(f"model {info.name!r} outputs {out_channels} channels; expected 1 (or 3 for RGB output)")
    if task == "demosaic" and out_channels != 3:
        raise ValueError(f"model {info.name!r} outputs {out_channels} channels; demosaicing needs 3 (RGB)")
    return Plan(
        shape=tuple(int(n) for n in shape), dtype=dtype.str, rgb=is_rgb, mode=mode, scale=info.scale,
        out_channels=out_channels, chunk=(cy, cx), tile=t, overlap=o, halo=halo, multiple=m, batch=int(batch),
        norm=Normalizer(lo, hi, odt.str), channel_axis=channel_axis, out_dtype=odt.str,
        task=task, cfa=cfa, nodata=nodata, has_mask=mask_shape is not None,
        keep_channel=keep_channel if channel_axis is not None else None,
        range_sampled=isinstance(normalize, str) and normalize in ("auto", "percentile"), fill_adopted=adopted,
    )
