"""Write tiled BigTIFF / OME-TIFF from numpy or dask arrays with bounded memory."""

from __future__ import annotations

import itertools
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tifffile

from ._output import (
    check_axes,
    check_geometry,
    discard,
    ensure_writable_parent,
    live_writer,
    no_image,
    remove_orphans,
    scratch_path,
)
from .errors import ImageReadError, ImageWriteError
from .images import LENGTH_IN_METRES, TIME_IN_SECONDS, _ngff_unit

__all__ = ["write_tiff"]

_BAND_BYTES = 256 * 2**20  # at most this much of the image is held in memory at once
#: OME-XML's symbols (UnitsLength, UnitsTime) for NGFF unit names; an axis in another unit
#: (a GeoTIFF's degrees) gets no OME physical size, which would otherwise read as micrometers
_OME_UNITS = {
    "kilometer": "km",
    "meter": "m",
    "decimeter": "dm",
    "centimeter": "cm",
    "millimeter": "mm",
    "micrometer": "µm",
    "nanometer": "nm",
    "picometer": "pm",
    "angstrom": "Å",
    "inch": "in",
    "foot": "ft",
    "yard": "yd",
    "mile": "mi",
    "day": "d",
    "hour": "h",
    "minute": "min",
    "second": "s",
    "millisecond": "ms",
    "microsecond": "µs",
    "nanosecond": "ns",
}
_GEO_TAGS = {33550, 33922, 34264, 34735}  # ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory
_IMAGEJ_UNITS = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm"}
_TO_MICROMETER = {unit: LENGTH_IN_METRES[unit] * 1e6 for unit in _IMAGEJ_UNITS}
_TO_SECOND = {unit: TIME_IN_SECONDS[unit] for unit in ("second", "millisecond", "microsecond", "minute", "hour")}
_IMAGEJ_DTYPES = {np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16), np.dtype(np.float32)}
_PYRAMID_ABOVE = 2048  # automatic pyramid levels for images larger than this in y or x
_PYRAMID_TOP = 512  # ... halved until y and x are both at most this (as the OME-Zarr writer's)


def _is_rgb(axes: str, shape: Sequence[int]) -> bool:
    """Whether the trailing axis holds RGB(A) samples."""
    return len(shape) >= 3 and axes.endswith("c") and shape[-1] in (3, 4)


def _order(axes: str, rgb: bool) -> list[int]:
    """Axis permutation putting y, x last (before the RGB samples)."""
    if "y" not in axes or "x" not in axes:
        raise ValueError(f"axes '{axes}' must contain 'y' and 'x'")
    tail = [axes.index("y"), axes.index("x")] + ([len(axes) - 1] if rgb else [])
    return [i for i in range(len(axes)) if i not in tail] + tail


def _tiff_axes(axes: str, rgb: bool) -> str:
    """Our axes (already ordered) to tifffile's letters (``'tyxc'`` -> ``'TYXS'``)."""
    letters = []
    for i, ax in enumerate(axes):
        if rgb and i == len(axes) - 1:
            letters.append("S")
        else:
            letters.append(ax.upper() if ax in "tczyx" else "Q")
    return "".join(letters)


def _row_bands(arr: Any, yaxis: int, tile_h: int) -> list[tuple[int, int]]:
    """Row ranges to read: a dask array's chunk rows (a lazy result's chunks are each computed
    once), else multiples of the tile height, memory-capped."""
    ny = arr.shape[yaxis]
    chunks = getattr(arr, "chunks", None)
    row_bytes = max(1, math.prod(arr.shape[yaxis + 1 :]) * arr.dtype.itemsize)
    if chunks and isinstance(chunks[0], tuple):  # dask: whole chunk rows, thin ones joined up to a tile row
        bands: list[tuple[int, int]] = []
        for y0, y1 in itertools.pairwise(np.cumsum((0, *chunks[yaxis])).tolist()):
            if bands and bands[-1][1] - bands[-1][0] < tile_h and (y1 - bands[-1][0]) * row_bytes <= _BAND_BYTES:
                bands[-1] = (bands[-1][0], y1)
            else:
                bands.append((y0, y1))
        return bands
    rows = max(tile_h, (_BAND_BYTES // row_bytes) // tile_h * tile_h)
    return [(y, min(ny, y + rows)) for y in range(0, ny, rows)]


def _compute(block: Any) -> np.ndarray:
    """Materialize one small block of a numpy or dask array."""
    return np.asarray(block.compute() if hasattr(block, "compute") else block)


def _read_rows(block: Any, scratch: str | None) -> Iterator[np.ndarray]:
    """A band of rows, in pieces of at most ``_BAND_BYTES`` when it is a lazy result larger
    than that: its chunks are then computed once each into a hidden zarr at ``scratch`` and
    read back piece by piece (reading part of a dask chunk computes all of it, again)."""
    if not hasattr(block, "compute") or block.nbytes <= _BAND_BYTES or scratch is None:
        yield _compute(block)
        return
    folder = os.path.join(scratch, "rows")
    try:
        store = _computed(block, folder)
        rows = max(1, _BAND_BYTES // max(1, math.prod(block.shape[1:]) * block.dtype.itemsize))
        for y0 in range(0, block.shape[0], rows):
            yield store[y0 : y0 + rows]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _computed(arr: Any, folder: str) -> Any:
    """A dask array computed chunk by chunk (each once) into a new zarr array at ``folder``."""
    import dask.array as da
    import zarr

    store = zarr.create_array(folder, shape=arr.shape, dtype=arr.dtype, chunks=arr.chunksize, overwrite=True)
    da.store(arr, store, lock=True)  # the lock: a ragged dask chunk may share a zarr chunk
    return store


def _tiles(arr: Any, tile: tuple[int, int], rgb: bool,
           on_rows: Callable[[tuple[int, ...], int, np.ndarray], None] | None = None,
           scratch: str | None = None) -> Iterator[np.ndarray]:
    """Yield tiles page by page, row by row, reading one band of rows at a time.

    Rows short of a full row of tiles wait for the next band, so each band (a dask chunk
    row) is read once.  ``on_rows(page, y0, rows)`` sees every row once, in runs of whole
    tile rows (the pyramid's first level is built from them).  ``scratch``: a folder where
    a lazy band too large to hold (see :func:`_read_rows`), or a lazy image whose chunks
    span several pages, is computed to first.
    """
    yaxis = arr.ndim - (3 if rgb else 2)
    ny, nx = arr.shape[yaxis], arr.shape[yaxis + 1]
    th, tw = tile
    chunks = getattr(arr, "chunks", None)
    if scratch is not None and chunks and isinstance(chunks[0], tuple) and any(max(c) > 1 for c in chunks[:yaxis]):
        # a dask chunk spans several pages (channels restored together, say): reading a page
        # would compute the chunk again for each; compute everything once, then read that
        try:
            yield from _tiles(_computed(arr, os.path.join(scratch, "pages")), tile, rgb, on_rows)
        finally:
            shutil.rmtree(os.path.join(scratch, "pages"), ignore_errors=True)
        return
    bands = _row_bands(arr, yaxis, th)
    for page in np.ndindex(*arr.shape[:yaxis]):
        pending: np.ndarray | None = None
        start = 0
        for y0, y1 in bands:
            for piece in _read_rows(arr[(*page, slice(y0, y1))], scratch):
                pending = piece if pending is None else np.concatenate([pending, piece])
                ready = pending.shape[0] if start + pending.shape[0] == ny else pending.shape[0] // th * th
                if not ready:
                    continue
                rows, pending = pending[:ready], pending[ready:]
                if on_rows is not None:
                    on_rows(page, start, rows)
                start += ready
                for ty in range(0, ready, th):
                    for tx in range(0, nx, tw):
                        yield np.ascontiguousarray(rows[ty : ty + th, tx : tx + tw])


def _level_count(ny: int, nx: int, pyramid: int | None) -> int:
    """Pyramid levels below the full image: ``pyramid`` (None: automatic), while both y and x
    can be halved (tifffile takes a level whose 1-pixel side stayed 1 for another image)."""
    if pyramid is not None and int(pyramid) < 0:
        raise ValueError(f"pyramid must be a level count >= 0 or None (automatic), got {pyramid}")
    if pyramid is None and max(ny, nx) <= _PYRAMID_ABOVE:
        return 0
    n = 0
    while ny > 1 and nx > 1 and (n < int(pyramid) if pyramid is not None else max(ny, nx) > _PYRAMID_TOP):
        ny, nx, n = (ny + 1) // 2, (nx + 1) // 2, n + 1
    return n


def _halved(rows: np.ndarray, work_bytes: int = 16 * 2**20) -> np.ndarray:
    """2x2 means of ``rows`` (y, x, samples...) as the OME-Zarr writer's levels: an odd last
    row or column repeated, integers rounded, booleans OR-ed; a few rows at a time, so the
    float copy stays small."""
    from .ome_zarr import mean_dtype, rounded_to

    h, w = rows.shape[:2]
    out = np.empty(((h + 1) // 2, (w + 1) // 2, *rows.shape[2:]), rows.dtype)
    work = np.dtype(bool) if rows.dtype == bool else np.dtype(mean_dtype(rows.dtype))
    step = max(2, work_bytes // max(1, 2 * rows[0].size * work.itemsize) * 2)
    for r0 in range(0, h, step):
        part = rows[r0 : r0 + step]
        pad = [(0, part.shape[0] % 2), (0, w % 2)] + [(0, 0)] * (rows.ndim - 2)
        if pad[0][1] or pad[1][1]:
            part = np.pad(part, pad, mode="edge")
        corners = [part[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
        if rows.dtype == bool:
            half = corners[0] | corners[1] | corners[2] | corners[3]
        else:
            half = corners[0].astype(work)
            for corner in corners[1:]:
                half += corner
            half = rounded_to(half * 0.25, rows.dtype)
        out[r0 // 2 : r0 // 2 + half.shape[0]] = half
    return out


class _Pyramid:
    """The levels below a TIFF's full image, from a hidden zarr of its first level.

    The first level is filled band by band (:meth:`add`) as the full image's tiles are
    written, so a lazy result (a restoration) is computed once; the smaller levels are then
    halved from it, as the OME-Zarr writer's are: means of 2x2 blocks, integers rounded.
    """

    def __init__(self, folder: str, name: str, shape: tuple[int, ...], dtype: Any, yaxis: int, tile_h: int,
                 count: int) -> None:
        import zarr

        self.yaxis, self.count = yaxis, count
        self.path = scratch_path(folder, name, "levels")
        half = list(shape)
        for i in (yaxis, yaxis + 1):
            half[i] = (shape[i] + 1) // 2
        chunks = [1] * yaxis + [max(1, tile_h // 2), half[yaxis + 1]] + list(half[yaxis + 2 :])
        self.first = zarr.create_array(self.path, shape=tuple(half), dtype=dtype, chunks=tuple(chunks),
                                       overwrite=True)

    def add(self, page: tuple[int, ...], y0: int, band: np.ndarray) -> None:
        """Halve rows ``y0 ...`` (an even number of them, unless the last) into the first level."""
        out = _halved(band)
        self.first[(*page, slice(y0 // 2, y0 // 2 + out.shape[0]))] = out

    def levels(self) -> Iterator[Any]:
        """The levels as lazy dask arrays, largest first."""
        import dask.array as da

        from .ome_zarr import _downsample

        level = da.from_zarr(self.first)
        yield level
        for _ in range(self.count - 1):
            chunks = tuple(min(c, 1024) if i in (self.yaxis, self.yaxis + 1) else c
                           for i, c in enumerate(level.chunksize))
            level, _ = _downsample(level, self.yaxis, self.yaxis + 1, "mean", chunks)
            yield level

    def discard(self) -> None:
        """Remove the hidden first level."""
        shutil.rmtree(self.path, ignore_errors=True)


def _physical(scale: Any, axes: str, units: Mapping[str, str] | str | None) -> dict[str, tuple[float, str]]:
    """{axis: (size, unit name)} for the axes with a given pixel size: in micrometers (seconds
    for t) when ``units`` is None, else only for the axes whose unit ``units`` names (an
    uncalibrated image's sizes, halved by super-resolution, are no micrometers)."""
    if scale is None:
        return {}
    if isinstance(scale, Mapping):
        values = {ax: float(scale[ax]) for ax in axes if ax in scale}
    else:
        values = dict(zip(axes, (float(s) for s in scale), strict=True))
    out = {}
    for ax, value in values.items():
        if ax in "cs":  # channels and samples have no physical size
            continue
        if units is None:
            unit = "second" if ax == "t" else "micrometer"
        else:
            unit = units if isinstance(units, str) else units.get(ax)
        if unit:
            out[ax] = (value, _ngff_unit(unit))  # "µm" -> "micrometer"
    return out


def _imagej_layout(axes: str, shape: Sequence[int], dtype: Any, rgb: bool,
                   physical: dict) -> tuple[list[int], dict, dict] | None:
    """How to write a plain TIFF as an ImageJ hyperstack, or None when it cannot be one.

    Fiji opens a tiled TIFF through Bio-Formats, which takes channels, slices and frames
    from an ImageJ description (a stack of planes otherwise).  A hyperstack has its planes
    in T, Z, C order, 8/16-bit or float32 samples (RGB: 8-bit), one length unit for x, y
    and z (microns when they differ) and a frame interval in seconds (Bio-Formats reads no
    other time unit).  Returns the axis permutation, tifffile's ``metadata`` and its extra
    ``imwrite`` arguments.
    """
    lead = axes[: len(axes) - (3 if rgb else 2)]
    if not lead or min(shape[: len(lead)]) < 2 or set(lead) - set("tzc") or np.dtype(dtype) not in _IMAGEJ_DTYPES:
        return None  # one plane, an axis of size 1 (an ImageJ file drops it), or not a hyperstack
    if rgb and (np.dtype(dtype) != np.uint8 or shape[-1] != 3):
        return None
    lengths = {ax: physical[ax] for ax in "xyz" if ax in physical}
    if any(unit not in _TO_MICROMETER for _, unit in lengths.values()) or (("x" in lengths) != ("y" in lengths)):
        return None
    if "t" in physical and physical["t"][1] not in _TO_SECOND:
        return None
    order = sorted(range(len(lead)), key=lambda i: "tzc".index(lead[i]))
    order += list(range(len(lead), len(axes)))
    metadata: dict[str, Any] = {"axes": "".join(axes[i] for i in order).upper()}
    if rgb:
        metadata["axes"] = metadata["axes"][:-1] + "S"
    kwargs: dict[str, Any] = {}
    shared = {unit for _, unit in lengths.values()}
    unit = shared.pop() if len(shared) == 1 else "micrometer"  # else all in microns
    sizes = {ax: size * _TO_MICROMETER[u] / _TO_MICROMETER[unit] for ax, (size, u) in lengths.items()}
    if sizes:
        metadata["unit"] = _IMAGEJ_UNITS[unit]
    if "x" in sizes:
        kwargs["resolution"] = (1.0 / sizes["x"], 1.0 / sizes["y"])  # pixels per unit, as ImageJ writes
    if "z" in sizes:
        metadata["spacing"] = sizes["z"]
    if "t" in physical:
        metadata["finterval"] = physical["t"][0] * _TO_SECOND[physical["t"][1]]
    return order, metadata, kwargs


def _ome_channels_and_origin(axes: str, shape: Sequence[int], rgb: bool, physical: dict,
                             translate: Mapping[str, float], omero: Mapping[str, Any] | None) -> dict[str, Any]:
    """tifffile OME metadata for the channels' names and colours (from NGFF ``omero``) and
    every plane's position (the origin of x, y and z, in their pixel sizes' units) and time
    (DeltaT: the origin of t plus its steps)."""
    out: dict[str, Any] = {}
    channels = (omero or {}).get("channels") if isinstance(omero, Mapping) else None
    n = None if rgb else shape[axes.index("c")] if "c" in axes else 1  # a gray image: one channel
    if n and isinstance(channels, list) and len(channels) == n and all(isinstance(c, Mapping) for c in channels):
        names = [str(c.get("label") or "") for c in channels]
        if any(names):
            out["Channel"] = {"Name": names}
            colours = [str(c.get("color") or "") for c in channels]
            if all(len(h) == 6 for h in colours):
                try:  # OME's Color: RGBA as a signed 32-bit integer
                    out["Channel"]["Color"] = [int(np.int32(np.uint32((int(h, 16) << 8) | 0xFF))) for h in colours]
                except ValueError:
                    pass
    lead = [(a, shape[i]) for i, a in enumerate(axes) if a not in "yx" and not (rgb and a == "c")]
    planes = int(np.prod([n for _, n in lead]))
    # each plane's index along z and t, in the order the planes are written (C order of the lead axes)
    index = np.indices([n for _, n in lead]).reshape(len(lead), planes)
    names = [a for a, _ in lead]
    along = {ax: index[names.index(ax)] if ax in names else np.zeros(planes, int) for ax in "zt"}
    position: dict[str, Any] = {}
    for ax in "xyzt":
        first = float(translate.get(ax) or 0.0)
        if ax in physical and physical[ax][1] in _OME_UNITS and (first or (ax in "zt" and ax in names)):
            step = physical[ax][0] if ax in "zt" else 0.0
            key = "DeltaT" if ax == "t" else f"Position{ax.upper()}"
            position[key] = [first + step * int(k) for k in along.get(ax, along["z"])]
            position[f"{key}Unit"] = [_OME_UNITS[physical[ax][1]]] * planes
    if position:
        out["Plane"] = position
    return out


def _plain_origin(translate: Mapping[str, float], physical: dict, in_pixels: bool) -> dict[str, float]:
    """The origin of x, y, z and t that a plain TIFF keeps: of the axes whose pixel size it
    keeps too (all of them when the sizes are pixels), where it is not 0."""
    return {ax: float(translate[ax]) for ax in "xyzt"
            if translate.get(ax) and (ax in physical or in_pixels)}


#: the compressions the CLI offers for TIFF output (``write_tiff`` takes any of tifffile's)
COMPRESSIONS = ("zlib", "zstd", "lzw", "jpeg", "none")


def _compression(path: str, name: Any, data: Any, rgb: bool) -> dict[str, Any]:
    """tifffile's ``compression`` (and ``compressionargs``) for ``name``.  JPEG is checked
    before anything is computed (it holds 8-bit gray or RGB pages only, where tifffile would
    fail at the first band); other names go to tifffile as they are."""
    if name is None or (isinstance(name, str) and name.lower() == "none"):
        return {"compression": None}
    if not (isinstance(name, str) and name.lower() == "jpeg"):
        return {"compression": name}
    if np.dtype(data.dtype) != np.uint8:
        raise ImageWriteError(path, f"JPEG compression holds 8-bit data, not {np.dtype(data.dtype)}; use zlib, zstd "
                                    "or lzw (lossless)")
    if rgb and data.shape[-1] == 4:
        raise ImageWriteError(path, "JPEG compression holds gray or RGB pages, not RGB + alpha; use zlib, zstd or "
                                    "lzw (lossless)")
    return {"compression": "jpeg", "compressionargs": {"level": 90}}


def _metadata(axes: str, rgb: bool, physical: dict, ome: bool) -> tuple[dict, dict]:
    """(metadata, extra imwrite kwargs) for tifffile."""
    metadata: dict[str, Any] = {"axes": _tiff_axes(axes, rgb)}
    kwargs: dict[str, Any] = {}
    if ome:
        for ax in "xyz":
            if ax in physical and physical[ax][1] in _OME_UNITS:
                value, unit = physical[ax]
                metadata[f"PhysicalSize{ax.upper()}"] = value
                metadata[f"PhysicalSize{ax.upper()}Unit"] = _OME_UNITS[unit]
        if "t" in physical and physical["t"][1] in _OME_UNITS:
            metadata["TimeIncrement"], unit = physical["t"]
            metadata["TimeIncrementUnit"] = _OME_UNITS[unit]
    elif physical:
        # tifffile's JSON description keeps every axis' size (z spacing, time interval)
        # for our reader; X/YResolution below is what other tools read.
        metadata["scale"] = {ax: value for ax, (value, _) in physical.items()}
        metadata["units"] = {ax: unit for ax, (_, unit) in physical.items()}
    if "x" in physical and "y" in physical:  # (OME-TIFF too: tools that skip its XML read these)
        (sx, ux), (sy, uy) = physical["x"], physical["y"]
        if ux in _TO_MICROMETER and uy in _TO_MICROMETER and sx > 0 and sy > 0:
            kwargs["resolution"] = (1e4 / (sx * _TO_MICROMETER[ux]), 1e4 / (sy * _TO_MICROMETER[uy]))
            kwargs["resolutionunit"] = "CENTIMETER"
    return metadata, kwargs


def write_tiff(
    data: Any,
    path: str | os.PathLike,
    axes: str = "yx",
    scale: Sequence[float] | Mapping[str, float] | None = None,
    overwrite: bool = False,
    tile: tuple[int, int] = (256, 256),
    compression: str | None = "zlib",
    units: Mapping[str, str] | str | None = None,
    extratags: Sequence[tuple] = (),
    samples: str | None = None,
    miniswhite: bool = False,
    pyramid: int | None = None,
    translate: Sequence[float] | Mapping[str, float] | None = None,
    omero: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Write a tiled BigTIFF (OME-TIFF when the name ends .ome.tif/.ome.tiff).

    Tiles are computed band by band from the (possibly dask) array, so memory stays
    bounded; the file is written under a temporary name and renamed when complete.  A large
    image gets a pyramid: each plane's halved copies stored as its SubIFDs (the layout of
    pyramidal OME-TIFF, read by Bio-Formats, QuPath and tifffile), so viewers can show the
    whole image without reading all of it.

    Parameters
    ----------
    data : numpy or dask array
        Image with one axis letter per dimension; a trailing 'c' of size 3/4 is RGB(A).
    path : str or os.PathLike
        Output file.
    axes : str
        Axis letters, e.g. ``"yx"``, ``"tyx"``, ``"yxc"``.
    scale : sequence or mapping, optional
        Physical pixel size per axis, in micrometers (seconds for t) when ``units`` is None.
        All ones without ``units`` is napari's default, not a size: nothing is recorded then.
    overwrite : bool
        Replace an existing file.
    tile : (int, int)
        Tile height and width, multiples of 16.
    compression : str or None
        ``"zlib"`` (the default), ``"zstd"``, ``"lzw"``, ``"jpeg"`` (lossy, quality 90,
        8-bit gray or RGB only: what slide scanners store), None / ``"none"``, or any other
        compression tifffile takes (``"deflate"``, ``"lzma"``, a ``tifffile.COMPRESSION``).
    units : mapping or str, optional
        Unit name per axis letter, or one unit for all; given, only the axes it names get a
        size (``{}``: an uncalibrated image, no sizes).
    extratags : sequence of tuples
        More tags in tifffile's ``extratags`` form, e.g. a georeference from
        :func:`napari_attnrestore.io.geotiff.georeference_tags`.
    samples : {None, "bands", "rgb"}
        How the channels of a ``cyx`` image are stored: None, a page each (as ImageJ and
        OME-TIFF keep channels), except in a GeoTIFF; ``"bands"``, as the samples of one
        page (GDAL's bands, a GeoTIFF's default); ``"rgb"``, as one page of separate red,
        green, blue (and alpha) planes (the layout of a planar colour source).
    miniswhite : bool
        Gray values where 0 is white (PhotometricInterpretation MINISWHITE), as the source's.
    pyramid : int, optional
        Number of halved levels to add (0: none).  By default, an image larger than 2048
        pixels in y or x is halved until both are at most 512; a GeoTIFF gets none (GDAL
        reads overviews of its own kind, made with ``gdaladdo``), nor does a z stack in a
        plain TIFF (tifffile would take its levels, halved in y and x only, for other
        images; OME-TIFF keeps them).
    translate : optional
        The origin per axis, in ``scale``'s units: the planes' positions in OME-TIFF, ImageJ's
        x/y/zorigin in an ImageJ hyperstack, tifffile's JSON description otherwise (a
        GeoTIFF's place is its georeference).  Kept for the axes whose pixel size is kept.
    omero : optional
        OME-TIFF only: NGFF ``omero`` metadata whose channel labels and colours become the
        OME channels' names and colours (when it has one entry per channel).
    progress : callable, optional
        ``progress(done, total)`` after each band of rows is computed: rows of all pages.

    Returns
    -------
    str
        ``path``.
    """
    path = os.fspath(path)
    axes = axes.lower()
    _check(data, path, axes, tile, overwrite)
    rgb = _is_rgb(axes, data.shape)
    compressed = _compression(path, compression, data, rgb)
    if scale is not None and not isinstance(scale, Mapping) and len(scale) != len(axes):
        raise ImageWriteError(path, f"scale has {len(scale)} values for {len(axes)} axes '{axes}'")
    values = [float(v) for v in (scale.values() if isinstance(scale, Mapping) else scale or ())]
    shifts = [float(v) for v in ((translate.values() if isinstance(translate, Mapping) else translate) or ())]
    check_geometry(path, values, shifts)
    if not units and all(v == 1.0 for v in values):  # no size known: Fiji would read 1 micrometer
        scale = None
    physical = _physical(scale, axes, units)
    if translate is not None and not isinstance(translate, Mapping):
        translate = dict(zip(axes, (float(v) for v in translate), strict=False))
    order = _order(axes, rgb)
    if order != list(range(len(axes))):
        data = data.transpose(order)
        axes = "".join(axes[i] for i in order)
    ome = path.lower().endswith((".ome.tif", ".ome.tiff"))
    geo = bool(_GEO_TAGS & {int(t[0]) for t in extratags})
    if samples not in (None, "bands", "rgb"):
        raise ImageWriteError(path, f"samples must be None, 'bands' or 'rgb', not {samples!r}")
    if samples == "rgb" and axes == "cyx" and data.shape[0] not in (3, 4):  # (a stack keeps its pages)
        raise ImageWriteError(path, f"samples='rgb' stores 3 or 4 colour channels; this image has {data.shape[0]}")
    if samples is None and geo and not ome:
        samples = "bands"
    planar = samples in ("bands", "rgb") and axes == "cyx" and (samples == "bands" or data.shape[0] in (3, 4))
    metadata, kwargs = _metadata(axes, rgb, physical, ome)
    if ome:
        metadata.update(_ome_channels_and_origin(axes, data.shape, rgb, physical, translate or {}, omero))
    yaxis = data.ndim - (3 if rgb else 2)
    if pyramid and "z" in axes and not ome:  # readers take the levels of a z stack for z-halved ones
        raise ImageWriteError(path, "pyramid levels of a z stack are only kept in OME-TIFF; name the file .ome.tif")
    try:
        count = _level_count(data.shape[yaxis], data.shape[yaxis + 1],
                             0 if pyramid is None and (geo or ("z" in axes and not ome)) else pyramid)
    except ValueError as exc:
        raise ImageWriteError(path, str(exc)) from None
    # a stack without a pyramid (an ImageJ file holds none) is a hyperstack: Fiji (Bio-Formats)
    # sees its channels, slices and frames
    layout = ome or geo or planar or miniswhite or count
    imagej = None if layout else _imagej_layout(axes, data.shape, data.dtype, rgb, physical)
    if imagej is not None:
        ij_order, metadata, kwargs = imagej
        data = data.transpose(ij_order)
        axes = "".join(axes[i] for i in ij_order)
    origin = {} if ome or geo else _plain_origin(translate or {}, physical, scale is None)
    if imagej is not None:  # ImageJ's origin is in pixels: x = (column - xorigin) * pixel width
        # (and "torigin", in frames: ours; ImageJ keeps no origin of time, and ignores the key)
        metadata.update({f"{ax}origin": -t / (physical[ax][0] if ax in physical else 1.0) for ax, t in origin.items()})
    elif origin:  # tifffile's JSON description, beside the pixel sizes
        metadata["translate"] = origin
    if planar:  # one page whose samples are the channels, stored plane by plane
        metadata["axes"] = "SYX"
        kwargs["planarconfig"] = "separate"
        if samples == "rgb" and data.shape[0] == 4:
            kwargs["extrasamples"] = ["unassalpha"]
    final = os.path.realpath(path)  # through a link: the file it names is replaced, the link kept
    folder, name = os.path.dirname(final), os.path.basename(final)
    remove_orphans(folder, name)
    other = live_writer(folder, name)
    if other is not None:  # two jobs, one name: the one that ended last would replace the other's file
        raise ImageWriteError(path, f"another job (process {other} on this machine) is writing this output; wait "
                                    "for it to end, or write another file")
    partial = scratch_path(folder, name, "partial")
    scratch = scratch_path(folder, name, "band")
    common = dict(tile=tuple(tile), **compressed,
                  photometric="rgb" if rgb or (planar and samples == "rgb") else "miniswhite" if miniswhite else "minisblack",
                  **{k: v for k, v in kwargs.items() if k != "resolution"})
    levels, res = None, kwargs.get("resolution")
    try:
        if count:
            levels = _Pyramid(folder, name, tuple(data.shape), data.dtype, yaxis,
                              int(tile[0]), count)
        with warnings.catch_warnings():
            # BigTIFF (no 4 GB limit) and tiles are outside ImageJ's own format; Bio-Formats reads both
            warnings.filterwarnings("ignore", ".*nonconformant BigTIFF ImageJ", UserWarning)
            with tifffile.TiffWriter(partial, bigtiff=True, ome=ome, imagej=imagej is not None) as tif:
                tif.write(_tiles(data, tuple(tile), rgb, _rows_seen(levels, progress, data.shape[: yaxis + 1]), scratch),
                          shape=tuple(data.shape),
                          dtype=data.dtype, metadata=metadata, extratags=list(extratags), subifds=count or None,
                          resolution=res, **common)
                for k, level in enumerate(levels.levels() if levels else (), 1):
                    tif.write(_tiles(level, tuple(tile), rgb, scratch=scratch), shape=tuple(level.shape), dtype=data.dtype,
                              subfiletype=1, metadata={} if ome else {"axes": metadata["axes"]},  # levels are found by their axes
                              resolution=(res[0] / 2**k, res[1] / 2**k) if res else None, **common)
        with open(partial, "rb+") as done:  # on disk before it takes the name: no complete-looking stub after a crash
            os.fsync(done.fileno())
        _take_name(partial, final, path, overwrite)
    except (ImageReadError, ImageWriteError):
        discard(partial)
        raise
    except Exception as exc:
        discard(partial)
        raise ImageWriteError(path, f"cannot write TIFF ({type(exc).__name__}: {exc})") from exc
    except BaseException:  # Ctrl-C, a cancelled job: no half-written file is left behind
        discard(partial)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if levels is not None:
            levels.discard()
    return path


def _rows_seen(levels: Any, progress: Callable[[int, int], None] | None,
               rows_shape: tuple[int, ...]) -> Callable[[tuple[int, ...], int, np.ndarray], None] | None:
    """The ``on_rows`` of :func:`_tiles`: rows go to the pyramid's first level and are counted for ``progress``."""
    if progress is None:
        return levels.add if levels else None
    total, done = math.prod(rows_shape), [0]

    def seen(page: tuple[int, ...], y0: int, rows: np.ndarray) -> None:
        if levels:
            levels.add(page, y0, rows)
        done[0] += rows.shape[0]
        progress(done[0], total)

    return seen


def _take_name(partial: str, final: str, path: str, overwrite: bool) -> None:
    """Give the written file its name; without ``overwrite``, only if no file took the name
    while it was written (another job's: a link fails where the name exists)."""
    if overwrite:
        os.replace(partial, final)
        return
    appeared = ImageWriteError(path, "a file of this name appeared while this one was written (another job's?); "
                                     "it is left as it is: pass overwrite=True (CLI: --overwrite) to replace it")
    try:
        os.link(partial, final)
    except FileExistsError:
        raise appeared from None
    except OSError:  # a file system without hard links
        if os.path.lexists(final):
            raise appeared from None
        os.replace(partial, final)
        return
    os.remove(partial)


def _check(data: Any, path: str, axes: str, tile: Sequence[int], overwrite: bool) -> None:
    """Validate the request before writing anything."""
    check_axes(axes, len(data.shape), path)
    if "y" not in axes or "x" not in axes:
        raise ImageWriteError(path, f"axes '{axes}' must contain 'y' and 'x'")
    problem = no_image(data.shape, data.dtype)
    if problem:
        raise ImageWriteError(path, problem)
    if len(tile) != 2 or any(int(t) <= 0 or int(t) % 16 for t in tile):
        raise ImageWriteError(path, f"tile {tuple(tile)} must be two positive multiples of 16")
    if os.path.lexists(path):
        if not overwrite:
            raise ImageWriteError(path, "already exists; pass overwrite=True (CLI: --overwrite)")
        if os.path.isdir(path):
            raise ImageWriteError(path, "exists and is a folder; refusing to replace it with a TIFF file")
    ensure_writable_parent(path)
