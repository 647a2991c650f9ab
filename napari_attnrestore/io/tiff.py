"""Write tiled BigTIFF / OME-TIFF from numpy or dask arrays with bounded memory."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tifffile

from ._output import check_axes, ensure_writable_parent
from .errors import ImageReadError, ImageWriteError
from .images import _ngff_unit

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
_HOST = "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname())  # a partial file's writer: host, pid
_GEO_TAGS = {33550, 33922, 34264, 34735}  # ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory
_TO_MICROMETER = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "centimeter": 1e4}


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


def _band_rows(arr: Any, yaxis: int, tile_h: int) -> int:
    """Rows read per pass: a multiple of the tile height covering a dask chunk, memory-capped."""
    chunks = getattr(arr, "chunks", None)
    chunk_h = chunks[yaxis][0] if chunks and isinstance(chunks[0], tuple) else tile_h
    rows = tile_h * max(1, math.ceil(chunk_h / tile_h))
    row_bytes = max(1, math.prod(arr.shape[yaxis + 1 :]) * arr.dtype.itemsize)
    cap = max(tile_h, (_BAND_BYTES // row_bytes) // tile_h * tile_h)
    return min(rows, cap)


def _compute(block: Any) -> np.ndarray:
    """Materialize one small block of a numpy or dask array."""
    return np.asarray(block.compute() if hasattr(block, "compute") else block)


def _tiles(arr: Any, tile: tuple[int, int], rgb: bool) -> Iterator[np.ndarray]:
    """Yield tiles page by page, row by row, reading one band of rows at a time."""
    yaxis = arr.ndim - (3 if rgb else 2)
    ny, nx = arr.shape[yaxis], arr.shape[yaxis + 1]
    th, tw = tile
    rows = _band_rows(arr, yaxis, th)
    for page in np.ndindex(*arr.shape[:yaxis]):
        for y0 in range(0, ny, rows):
            band = _compute(arr[(*page, slice(y0, min(ny, y0 + rows)))])
            for ty in range(0, band.shape[0], th):
                for tx in range(0, nx, tw):
                    yield np.ascontiguousarray(band[ty : ty + th, tx : tx + tw])


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
    if not ome and "x" in physical and "y" in physical:
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
) -> str:
    """Write a tiled BigTIFF (OME-TIFF when the name ends .ome.tif/.ome.tiff).

    Tiles are computed band by band from the (possibly dask) array, so memory stays
    bounded; the file is written under a temporary name and renamed when complete.

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
        tifffile compression name ("zlib", "zstd", "lzw", None).
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

    Returns
    -------
    str
        ``path``.
    """
    path = os.fspath(path)
    axes = axes.lower()
    _check(data, path, axes, tile, overwrite)
    rgb = _is_rgb(axes, data.shape)
    if scale is not None and not isinstance(scale, Mapping) and len(scale) != len(axes):
        raise ImageWriteError(path, f"scale has {len(scale)} values for {len(axes)} axes '{axes}'")
    values = scale.values() if isinstance(scale, Mapping) else scale or ()
    if not units and all(float(v) == 1.0 for v in values):  # no size known: Fiji would read 1 micrometer
        scale = None
    physical = _physical(scale, axes, units)
    order = _order(axes, rgb)
    if order != list(range(len(axes))):
        data = data.transpose(order)
        axes = "".join(axes[i] for i in order)
    ome = path.lower().endswith((".ome.tif", ".ome.tiff"))
    if samples is None and extratags and not ome and _GEO_TAGS & {int(t[0]) for t in extratags}:
        samples = "bands"
    planar = samples in ("bands", "rgb") and axes == "cyx" and (samples == "bands" or data.shape[0] in (3, 4))
    metadata, kwargs = _metadata(axes, rgb, physical, ome)
    if planar:  # one page whose samples are the channels, stored plane by plane
        metadata["axes"] = "SYX"
        kwargs["planarconfig"] = "separate"
        if samples == "rgb" and data.shape[0] == 4:
            kwargs["extrasamples"] = ["unassalpha"]
    folder = os.path.dirname(os.path.abspath(path))
    _remove_orphans(folder, os.path.basename(path))
    partial = os.path.join(folder, f".{os.path.basename(path)}.partial-{_HOST}-{os.getpid()}")
    try:
        tifffile.imwrite(
            partial,
            _tiles(data, tuple(tile), rgb),
            shape=tuple(data.shape),
            dtype=data.dtype,
            tile=tuple(tile),
            compression=compression,
            photometric="rgb" if rgb or (planar and samples == "rgb") else "miniswhite" if miniswhite else "minisblack",
            bigtiff=True,
            ome=ome,
            metadata=metadata,
            extratags=list(extratags),
            **kwargs,
        )
        with open(partial, "rb+") as done:  # on disk before it takes the name: no complete-looking stub after a crash
            os.fsync(done.fileno())
        os.replace(partial, path)
    except (ImageReadError, ImageWriteError):
        _discard(partial)
        raise
    except Exception as exc:
        _discard(partial)
        raise ImageWriteError(path, f"cannot write TIFF ({type(exc).__name__}: {exc})") from exc
    except BaseException:  # Ctrl-C, a cancelled job: no half-written file is left behind
        _discard(partial)
        raise
    return path


def _check(data: Any, path: str, axes: str, tile: Sequence[int], overwrite: bool) -> None:
    """Validate the request before writing anything."""
    check_axes(axes, len(data.shape), path)
    if "y" not in axes or "x" not in axes:
        raise ImageWriteError(path, f"axes '{axes}' must contain 'y' and 'x'")
    if len(tile) != 2 or any(int(t) <= 0 or int(t) % 16 for t in tile):
        raise ImageWriteError(path, f"tile {tuple(tile)} must be two positive multiples of 16")
    if os.path.lexists(path):
        if not overwrite:
            raise ImageWriteError(path, "already exists; pass overwrite=True (CLI: --overwrite)")
        if os.path.isdir(path):
            raise ImageWriteError(path, "exists and is a folder; refusing to replace it with a TIFF file")
    ensure_writable_parent(path)


def _remove_orphans(folder: str, name: str) -> None:
    """Delete hidden partial files of ``name`` written on this host by a process that is gone
    (killed); another machine's (a shared folder) are left alone."""
    if os.name != "posix":
        return
    prefix = f".{name}.partial-{_HOST}-"
    for entry in os.listdir(folder):
        pid = entry[len(prefix):]
        if not entry.startswith(prefix) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _discard(os.path.join(folder, entry))
        except OSError:  # alive, another user's
            pass


def _discard(path: str) -> None:
    """Remove a partial output, ignoring errors."""
    try:
        os.remove(path)
    except OSError:
        pass
