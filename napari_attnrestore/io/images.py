"""Open images lazily: TIFF (plain, OME, Geo, Big), PNG/JPEG/BMP, zarr and OME-Zarr.

`open_image` returns an `ImageData`: a lazily sliceable level-0 array (a ``zarr.Array``
for TIFF and zarr inputs, an `AxesView` of one for an RGB OME-Zarr stored ``cyx``, numpy for
small PNG/JPEG files), its axes letters and physical
metadata. Nothing is read from the pixel data at open time, except the cheap checks that
let a broken file fail at once rather than deep inside a dask graph later.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import tifffile
import zarr

from ..warning import warn
from ._output import absolute_location, no_image
from .errors import RESUME, DamagedFileError, ImageReadError, UnfinishedOutputError
from .geotiff import carried, gdal_nodata, read_georeference

__all__ = [
    "SUPPORTED_SUFFIXES",
    "GuardedArray",
    "ImageData",
    "as_dask",
    "file_kind",
    "guess_axes",
    "nodata_mask_series",
    "open_image",
    "read_region",
]

#: the slide scanners' TIFF-based formats tifffile reads (Aperio, Hamamatsu, Leica, Ventana,
#: PerkinElmer): a slide named by its scanner's suffix opens as the TIFF it is
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".qptiff")
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", *SLIDE_SUFFIXES)
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ZARR_SUFFIXES = (".zarr",)
SUPPORTED_SUFFIXES = (".tif", ".tiff", *SLIDE_SUFFIXES, ".png", ".jpg", ".zarr", ".ome.zarr")

_UNITS = {
    "µm": "micrometer",
    "μm": "micrometer",
    "um": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "nm": "nanometer",
    "pm": "picometer",
    "å": "angstrom",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "km": "kilometer",
    "in": "inch",
    "s": "second",
    "sec": "second",
    "ms": "millisecond",
    "µs": "microsecond",
    "us": "microsecond",
    "ns": "nanosecond",
    "min": "minute",
    "minutes": "minute",
    "seconds": "second",
    "h": "hour",
    "hr": "hour",
    "hours": "hour",
}

#: lengths of the NGFF (UDUNITS) length units, in metres
LENGTH_IN_METRES = {"picometer": 1e-12, "angstrom": 1e-10, "nanometer": 1e-9, "micrometer": 1e-6, "millimeter": 1e-3,
                    "centimeter": 1e-2, "decimeter": 0.1, "meter": 1.0, "kilometer": 1e3, "inch": 0.0254,
                    "foot": 0.3048, "yard": 0.9144, "mile": 1609.344}
#: and of the time units, in seconds
TIME_IN_SECONDS = {"nanosecond": 1e-9, "microsecond": 1e-6, "millisecond": 1e-3, "second": 1.0, "minute": 60.0,
                   "hour": 3600.0, "day": 86400.0}


def _in_unit(value: float, unit: str, target: str) -> float | None:
    """``value`` in ``unit`` expressed in ``target`` (both lengths or both times), or None."""
    if unit == target:
        return float(value)
    for table in (LENGTH_IN_METRES, TIME_IN_SECONDS):
        if unit in table and target in table:
            return float(f"{float(value) * table[unit] / table[target]:.12g}")
    return None

# tifffile axis letter -> our letter (None: lower-case of itself)
_TIFF_AXES = {"T": "t", "I": "t", "Q": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}
_SPARE_LETTERS = "qpabdefghijklmnorsuvw"


@dataclass
class ImageData:
    """An opened image: lazy level-0 data, pyramid levels, axes and physical metadata."""

    data: Any
    axes: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: dict[str, str] = field(default_factory=dict)
    rgb: bool = False
    channel_axis: int | None = None
    levels: list[Any] = field(default_factory=list)
    name: str = ""
    path: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.levels:
            self.levels = [self.data]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of level 0."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of the pixels."""
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        """Number of dimensions of level 0."""
        return len(self.shape)

    @property
    def multiscale(self) -> bool:
        """Whether the image has more than one pyramid level."""
        return len(self.levels) > 1

    def read(self, key: Any = (), level: int = 0) -> np.ndarray:
        """Read a region of a level into memory; errors name the file and chunk."""
        return read_region(self.levels[level], key, path=self.path)

    def as_stored(self) -> ImageData:
        """This image in the axis order it is stored in: an RGB OME-Zarr shown channel-last
        through `AxesView` as the ``cyx`` channels it holds; any other image as it is."""
        if not isinstance(self.data, AxesView):
            return self
        order = self.data.order
        back = [order.index(i) for i in range(len(order))]  # stored axis i is the view's axis back[i]
        axes = "".join(self.axes[j] for j in back)
        return replace(self, data=self.data.data, levels=[lv.data for lv in self.levels], axes=axes, rgb=False,
                       scale=tuple(self.scale[j] for j in back), translate=tuple(self.translate[j] for j in back),
                       channel_axis=_channel_axis(axes, False))

    def to_dask(self, level: int | None = 0) -> Any:
        """Level ``level`` as a dask array (all levels as a list when ``level`` is None)."""
        if level is None:
            return [as_dask(lv, self.axes, path=self.path) for lv in self.levels]
        return as_dask(self.levels[level], self.axes, path=self.path)


# --------------------------------------------------------------------------- axes


def guess_axes(shape: Sequence[int], rgb: bool | None = None) -> tuple[str, bool]:
    """Guess axis letters from a shape.

    Parameters
    ----------
    shape : sequence of int
        Array shape.
    rgb : bool, optional
        Whether the trailing axis holds RGB(A) samples; guessed (trailing 3 or 4 on a 3+ D
        array) when None.

    Returns
    -------
    axes, rgb : str, bool
        E.g. ``("yx", False)``, ``("zyx", False)``, ``("yxc", True)``.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if rgb is None:
        rgb = ndim >= 3 and shape[-1] in (3, 4)
    if rgb:
        if ndim < 3:
            raise ValueError(f"an RGB image needs at least 3 dimensions, got shape {shape}")
        return guess_axes(shape[:-1], rgb=False)[0] + "c", True
    base = "tczyx"
    if ndim <= 1:
        return "x"[:ndim], False
    if ndim == 2:
        return "yx", False
    if ndim == 3:
        return "zyx", False
    if ndim == 4:
        return "tzyx", False
    if ndim == 5:
        return base, False
    extra = [c for c in _SPARE_LETTERS if c not in base][: ndim - 5]
    return "".join(extra) + base, False


def _unique_letters(letters: list[str]) -> str:
    """Replace repeated letters by spare ones so that every axis letter is unique."""
    out: list[str] = []
    for letter in letters:
        if letter in out:
            letter = next(c for c in _SPARE_LETTERS if c not in out and c not in letters)
        out.append(letter)
    return "".join(out)


def _tiff_axes(tiff_axes: str, shape: Sequence[int], photometric: Any = None,
               extrasamples: Sequence[int] = ()) -> tuple[str, bool]:
    """Map tifffile axes (e.g. ``'QYXS'``) to ours (``'tyxc'``) and tell if it is RGB: three
    or four samples per pixel that the file calls colour (not MINISBLACK bands, such as a
    red, green, blue and near-infrared GeoTIFF, whose fourth band is no alpha; nor an RGB
    page whose fourth sample ExtraSamples declares unspecified: a band, as NAIP's near-infrared)."""
    colour = photometric is None or _photometric_name(photometric) in ("RGB", "YCBCR")
    rgb = bool(tiff_axes) and tiff_axes[-1] == "S" and len(shape) >= 3 and colour and _colour_samples(shape[-1], extrasamples)
    # Q and I (tifffile's unknown and image-sequence axes) are time unless the file has a T
    letters = [a.lower() if a in "QI" and "T" in tiff_axes else _TIFF_AXES.get(a, a.lower()) for a in tiff_axes]
    if rgb and "c" in letters[:-1]:
        # a channel axis and RGB samples: keep 'c' for the samples
        letters[letters.index("c")] = "q"
    return _unique_letters(letters), rgb


def _colour_samples(n: int, extrasamples: Sequence[int] | None) -> bool:
    """Whether ``n`` samples of a colour page make a colour picture: red, green, blue, and
    alpha as a fourth unless it is declared a band (ExtraSamples 0, unspecified data: the
    near-infrared of a red, green, blue, NIR scene)."""
    return n == 3 or (n == 4 and [int(e) for e in (extrasamples or ())] != [0])


def _photometric_name(photometric: Any) -> str:
    """A TIFF's PhotometricInterpretation as an upper-case name (``'RGB'``, ``'MINISBLACK'``)."""
    return getattr(photometric, "name", str(photometric)).upper()


def _planar_colour(series: Any, rgb: bool, photometric: str) -> bool:
    """Whether a TIFF stores a colour picture as separate red, green, blue (and alpha) planes
    (PlanarConfiguration 2): its samples axis is not last, so it opens as channels."""
    axes = series.axes
    return (not rgb and photometric == "RGB" and "S" in axes and axes.index("S") < len(axes) - 1
            and _colour_samples(series.shape[axes.index("S")], getattr(series.keyframe, "extrasamples", None)))


def _gray_alpha(series: Any, rgb: bool) -> bool:
    """Whether a TIFF holds gray + alpha: two samples per pixel, the second declared opacity
    (ExtraSamples 1, associated, or 2, unassociated alpha), as a PNG's two channels are."""
    extras = [int(e) for e in (getattr(series.keyframe, "extrasamples", None) or ())]
    axes = series.axes
    return not rgb and "S" in axes and series.shape[axes.index("S")] == 2 and extras[-1:] in ([1], [2])


def _channel_axis(axes: str, rgb: bool) -> int | None:
    """Index of a non-RGB channel axis, or None."""
    if "c" not in axes:
        return None
    index = axes.index("c")
    if rgb and index == len(axes) - 1:
        return None
    return index


def _ngff_unit(unit: Any) -> str:
    """Normalize a unit symbol (``'µm'``) to its NGFF/UDUNITS name (``'micrometer'``)."""
    if isinstance(unit, enum.Enum):
        unit = unit.name
    text = str(unit).strip()
    return _UNITS.get(text.lower(), _UNITS.get(text, text.lower()))


# --------------------------------------------------------------------------- lazy reads


def _store_name(data: Any) -> str:
    """A human name for the store behind a zarr array."""
    store_path = getattr(data, "store_path", None)
    if store_path is None:
        return type(data).__name__
    text = str(store_path)
    return text[len("file://") :] if text.startswith("file://") else text


def _basic_key(key: Any, shape: Sequence[int], strict: bool = True) -> Any:
    """``key`` as one int or slice per axis; IndexError for an int out of range or a step
    below 1, before any chunk is read, so that a bad index is not reported as a bad file.
    Other keys (arrays, lists: zarr's orthogonal selections) raise TypeError, or with
    ``strict=False`` are returned as they are."""
    key = key if isinstance(key, tuple) else (key,)
    if sum(k is Ellipsis for k in key) > 1 or not all(
            k is Ellipsis or isinstance(k, (slice, int, np.integer)) for k in key):
        if not strict:
            return key
        raise TypeError(f"only ints, slices and one Ellipsis index a lazily read image, not {key!r}")
    key = _full_key(key, len(shape))
    if len(key) > len(shape):
        raise IndexError(f"{len(key)} indices for an image of {len(shape)} axes")
    for axis, (k, n) in enumerate(zip(key, shape, strict=True)):
        if isinstance(k, slice) and k.step is not None and k.step < 1:
            raise IndexError(f"slice step {k.step} on axis {axis}: lazily read images take steps of 1 or more")
        if not isinstance(k, slice) and not -n <= k < n:
            raise IndexError(f"index {k} is out of bounds for axis {axis} of size {n}")
    return key


def _full_key(key: Any, ndim: int) -> tuple[Any, ...]:
    """``key`` as a tuple with an entry per axis: its (first) Ellipsis expanded, the trailing
    axes it leaves out taken whole."""
    key = key if isinstance(key, tuple) else (key,)
    at = next((i for i, k in enumerate(key) if k is Ellipsis), None)
    if at is not None:
        key = key[:at] + (slice(None),) * (ndim - len(key) + 1) + key[at + 1 :]
    return key + (slice(None),) * (ndim - len(key))


def _normalize_key(key: Any, shape: Sequence[int]) -> list[tuple[int, int]] | None:
    """(start, stop) per dimension for a basic-indexing key, or None if not basic."""
    bounds = []
    for k, n in zip(_full_key(key, len(shape)), shape, strict=False):
        if isinstance(k, slice):
            start, stop, _ = k.indices(n)
            bounds.append((start, max(stop, start + 1)))
        elif isinstance(k, (int, np.integer)):
            i = int(k) + n if k < 0 else int(k)
            bounds.append((i, i + 1))
        else:
            return None
    return bounds


def _chunk_name(data: Any, index: tuple[int, ...]) -> str:
    """Store key of one chunk (``'c/0/1'`` in zarr v3, ``'0.1'`` in v2) or its grid index, and
    the pixels it holds (``[0:256, 1280:1536, 0:3]``: a TIFF's tile grid says little)."""
    encode = getattr(getattr(data, "metadata", None), "encode_chunk_key", None)
    try:
        name = f"chunk {encode(index)}" if encode else f"chunk {index}"
    except Exception:
        name = f"chunk {index}"
    chunks, shape = read_chunks(data), tuple(getattr(data, "shape", ()))
    if not chunks or len(chunks) != len(index) or len(shape) != len(index):
        return name
    spans = ", ".join(f"{i * c}:{min((i + 1) * c, n)}" for i, c, n in zip(index, chunks, shape, strict=True))
    return f"{name} (pixels [{spans}])"


def _find_bad_chunk(data: Any, first: tuple[int, ...], last: tuple[int, ...], chunks: tuple[int, ...]) -> str | None:
    """Read the chunks of a failed region one by one; name the first that fails."""
    grid = [range(a, b + 1) for a, b in zip(first, last, strict=False)]
    if math.prod(len(r) for r in grid) > 64:
        return None
    for index in np.ndindex(*(len(r) for r in grid)):
        chunk = tuple(r[i] for r, i in zip(grid, index, strict=False))
        key = tuple(slice(i * c, (i + 1) * c) for i, c in zip(chunk, chunks, strict=False))
        try:
            data[key]
        except Exception:
            return _chunk_name(data, chunk)
    return None


def _describe_chunks(data: Any, key: Any) -> str:
    """Describe which chunk of ``data`` a failed key hit, e.g. ``'chunk c/0/1'``."""
    chunks = read_chunks(data)
    shape = tuple(data.shape)
    bounds = _normalize_key(key, shape) if chunks else None
    if bounds is None or len(bounds) != len(chunks):
        return f"region {key!r}"
    first = tuple(b[0] // c for b, c in zip(bounds, chunks, strict=False))
    last = tuple((b[1] - 1) // c for b, c in zip(bounds, chunks, strict=False))
    if first == last:
        return _chunk_name(data, first)
    bad = _find_bad_chunk(data, first, last, chunks)
    if bad:
        return bad
    ranges = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in zip(first, last, strict=False))
    return f"chunks ({ranges})"


def read_region(data: Any, key: Any = (), path: str | os.PathLike | None = None) -> np.ndarray:
    """Read ``data[key]`` into a numpy array, turning failures into `ImageReadError`.

    Parameters
    ----------
    data : array-like
        A zarr array (or anything sliceable).
    key : index
        Basic index (ints, slices, Ellipsis).
    path : str, optional
        File or store to name in the error; the zarr store path when None.

    Raises
    ------
    ImageReadError
        Naming the store and the chunk(s) that could not be read or decoded.
    """
    if hasattr(data, "shape") and not isinstance(data, np.ndarray):
        key = _basic_key(key, data.shape, strict=False)  # a bad index is the caller's, not the file's
    try:
        return np.asarray(data[key])
    except ImageReadError:
        raise
    except Exception as exc:
        where = os.fspath(path) if path is not None else _store_name(data)
        if path is not None and getattr(data, "path", ""):
            where = f"{where}/{data.path}" if not where.endswith(str(data.path)) else where
        raise ImageReadError(where, f"cannot read {_describe_chunks(data, key)} ({type(exc).__name__}: {exc})") from exc


def read_chunks(data: Any) -> tuple[int, ...] | None:
    """The unit of reading of an array: shards when sharded, else chunks."""
    shards = getattr(data, "shards", None)
    if shards:
        return tuple(shards)
    try:
        chunks = data.chunks
    except Exception:
        return None
    if chunks and isinstance(chunks[0], tuple):  # dask-style chunks
        return tuple(c[0] for c in chunks)
    return tuple(chunks) if chunks else None


class GuardedArray:
    """Wrap an array so that slicing errors become `ImageReadError` naming the file.

    dask reads through it (``da.from_array(GuardedArray(z, path), chunks=...)``).
    """

    def __init__(self, data: Any, path: str | os.PathLike | None = None) -> None:
        self.data = data
        self.path = None if path is None else os.fspath(path)
        self.shape = tuple(data.shape)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    @property
    def chunks(self) -> Any:
        """The wrapped array's chunks (None when it has none)."""
        return getattr(self.data, "chunks", None)

    @property
    def shards(self) -> Any:
        """The wrapped array's shards (None when it is not sharded)."""
        return getattr(self.data, "shards", None)

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._unchecked:
            self._check_reachable()
        return read_region(self.data, key, path=self.path)

    def __len__(self) -> int:
        return self.shape[0]

    _unchecked = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled (on a dask.distributed worker): checked at its first read, where the
        pixels are read (the scheduler unpickles the graph too, without reading)."""
        self.__dict__.update(state)
        self._unchecked = True

    def _check_reachable(self) -> None:
        """A local zarr store this machine cannot see is an error, not an image of the fill
        value (zarr reads the chunks of a missing folder as absent)."""
        root = getattr(getattr(self.data, "store", None), "root", None)
        if isinstance(root, (str, os.PathLike)) and not os.path.isdir(root):
            import socket

            raise ImageReadError(self.path or os.fspath(root), f"not found on {socket.gethostname()}: a "
                                 "dask.distributed worker reads the input itself, so it must lie on storage every "
                                 "worker reaches, under the same path")
        self._unchecked = False


class AxesView:
    """A read-only view of a lazily sliceable array with its axes reordered: axis ``i`` of
    the view is axis ``order[i]`` of ``data`` (an RGB OME-Zarr stored ``cyx``, shown ``yxc``).

    Basic indexing only (ints, slices, Ellipsis); ``np.asarray`` and iteration follow the
    view's order, and of the wrapped array's attributes only its store and names show through.
    """

    def __init__(self, data: Any, order: Sequence[int], path: str | os.PathLike | None = None) -> None:
        self.data = data
        self.order = tuple(int(i) for i in order)
        if sorted(self.order) != list(range(len(data.shape))):
            raise ValueError(f"{self.order} is not an order of {len(data.shape)} axes")
        self.path = os.fspath(path) if path is not None else getattr(data, "path", "")
        self.shape = tuple(int(data.shape[i]) for i in self.order)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def _reordered(self, sizes: Any) -> tuple[int, ...] | None:
        return tuple(sizes[i] for i in self.order) if sizes else None

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The wrapped array's chunks, in the view's order."""
        return self._reordered(getattr(self.data, "chunks", None))

    @property
    def shards(self) -> tuple[int, ...] | None:
        """The wrapped array's shards, in the view's order (None when it is not sharded)."""
        return self._reordered(getattr(self.data, "shards", None))

    #: what the stored array may answer for the view (names and store, no shapes or selections)
    _PASSED = frozenset({"store", "store_path", "attrs", "fill_value", "name", "basename"})

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._PASSED and "data" in self.__dict__:
            return getattr(self.data, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _basic_key(key, self.shape)
        inner: list[Any] = [slice(None)] * self.ndim
        for view_axis, stored in enumerate(self.order):
            inner[stored] = key[view_axis]
        out = read_region(self.data, tuple(inner), path=self.path or None)  # errors name the stored chunks
        kept = [a for a in self.order if not isinstance(inner[a], (int, np.integer))]
        return out.transpose([sorted(kept).index(a) for a in kept])

    def __len__(self) -> int:
        return self.shape[0]


def _dask_chunks(shape: Sequence[int], native: Sequence[int] | None, axes: str | None, target: int) -> tuple[int, ...]:
    """Dask chunks: multiples of the native chunks, about ``target`` pixels along y and x."""
    shape = tuple(int(s) for s in shape)
    if not native:
        native = tuple(min(s, target) for s in shape)
    axes = axes if axes is not None and len(axes) == len(shape) else guess_axes(shape)[0]
    out = []
    for size, chunk, ax in zip(shape, native, axes, strict=False):
        chunk = max(1, min(int(chunk), size or 1))
        if ax in "yx" and chunk < target:
            chunk = min(size, chunk * max(1, round(target / chunk)))
        out.append(max(1, chunk))
    return tuple(out)


def as_dask(data: Any, axes: str | None = None, path: str | os.PathLike | None = None, target: int = 2048) -> Any:
    """Wrap a lazily sliceable array as a dask array without reading it.

    Chunks are multiples of the array's own chunks (strips or tiles for TIFF), about
    ``target`` pixels along y and x, so that strip TIFFs do not make huge graphs.
    """
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    if isinstance(data, np.ndarray):
        return da.from_array(data, chunks=_dask_chunks(data.shape, None, axes, target))
    chunks = _dask_chunks(data.shape, read_chunks(data), axes, target)
    guarded = GuardedArray(data, path)
    name = f"attnrestore-read-{_token(data, path)}"
    return da.from_array(
        guarded,
        chunks=chunks,
        name=name,
        asarray=True,
        fancy=False,
        lock=False,
        meta=np.empty((0,) * len(chunks), dtype=guarded.dtype),
    )


def _token(data: Any, path: Any) -> str:
    """Dask name for an opened array: stable for one array object, new when reopened."""
    from dask.base import tokenize

    return tokenize(id(data), _store_name(data), getattr(data, "path", ""), str(path), tuple(data.shape))


# --------------------------------------------------------------------------- dispatch


def file_kind(path: str | os.PathLike) -> str:
    """Return ``'tiff'``, ``'plain'`` or ``'zarr'`` from the name; raise `ImageReadError` else."""
    text = os.fspath(path)
    lower = text.lower().rstrip("/\\")
    if lower.endswith(ZARR_SUFFIXES):
        return "zarr"
    if lower.endswith(TIFF_SUFFIXES):
        return "tiff"
    if lower.endswith(PLAIN_SUFFIXES):
        return "plain"
    if os.path.isdir(text) and any(os.path.exists(os.path.join(text, m)) for m in ("zarr.json", ".zgroup", ".zarray")):
        return "zarr"
    suffix = os.path.splitext(lower)[1] or ("(directory)" if os.path.isdir(text) else "(none)")
    supported = ", ".join(SUPPORTED_SUFFIXES)
    raise ImageReadError(text, f"unsupported file type '{suffix}' (supported: {supported})")


def open_image(path: str | os.PathLike, series: int | None = None) -> ImageData:
    """Open an image lazily.

    Parameters
    ----------
    path : str or os.PathLike
        A .tif/.tiff (plain, OME, Geo, Big), .png/.jpg/.bmp, or .zarr/.ome.zarr store.
    series : int, optional
        Which image of a TIFF holding several (the positions of a multi-position OME-TIFF, a
        slide's label and macro pictures), counted from 0.  None: the first, with a warning
        naming the others.  Other files hold one image (series 0).

    Returns
    -------
    ImageData

    Raises
    ------
    ImageReadError
        Missing, empty, truncated, corrupt or unsupported input; the message names the path.
    """
    text = os.fspath(path)
    if not os.path.exists(text):
        raise ImageReadError(text, "no such file or directory")
    kind = file_kind(text)
    if series is not None:
        if isinstance(series, bool) or not isinstance(series, (int, np.integer)) or series < 0:
            raise ValueError(f"series must be a whole number from 0, not {series!r}")
        if kind != "tiff" and series != 0:
            raise ImageReadError(text, f"holds one image (series 0), not series {series}: only TIFF files hold several")
    if kind == "tiff":
        image = _open_tiff(text, None if series is None else int(series))
    else:
        image = _open_plain(text) if kind == "plain" else _open_zarr(text)
    problem = no_image(image.data.shape, image.data.dtype)
    if problem:
        raise ImageReadError(text, problem)
    return image


def _base_name(path: str) -> str:
    """File name without its image suffixes (``a.ome.tif`` -> ``a``)."""
    name = os.path.basename(path.rstrip("/\\"))
    lower = name.lower()
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", *ZARR_SUFFIXES, *TIFF_SUFFIXES, *PLAIN_SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


# --------------------------------------------------------------------------- TIFF


def _open_tiff(path: str, series: int | None = None) -> ImageData:
    """Open a TIFF's image ``series`` (None: the first, warning of others) lazily through
    tifffile's zarr store."""
    if os.path.isdir(path):
        raise ImageReadError(path, "is a directory, not a TIFF file")
    size = os.path.getsize(path)
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    with _TiffFileErrors() as errors:
        try:
            tif = tifffile.TiffFile(path)
            if _split_stack(tif):
                tif.close()
                tif = tifffile.TiffFile(path, is_shaped=False)
        except tifffile.TiffFileError as exc:
            raise ImageReadError(path, f"not a valid TIFF file ({exc})") from exc
        except Exception as exc:
            raise ImageReadError(path, f"cannot open TIFF ({type(exc).__name__}: {exc})") from exc
        with tif:
            try:
                image = _tiff_image(tif, path, size, series)
                if errors.chain and not errors.broken:
                    _refuse_an_unread_tail(tif, path, size, errors.chain[0])
            except (ImageReadError, Warning):  # a warning turned into an error by the caller's filter is theirs
                raise
            except Exception as exc:
                raise ImageReadError(path, f"cannot read TIFF ({type(exc).__name__}: {exc})") from exc
    if errors.broken:  # tifffile fell back to the pages it could reach: a stack cut short reads as one plane
        raise DamagedFileError(path, f"truncated or corrupt TIFF: {errors.broken[0]}; only part of it could be "
                                   f"read ({image.shape} found)")
    return image


class _TiffFileErrors(logging.Handler):
    """Collects, while open, the errors tifffile logs (and recovers from) in this thread;
    ``broken`` names a file cut short: its chain of pages runs past the end *and* its ImageJ,
    OME or shape metadata could not be matched or read.  Either alone is left to tifffile
    (a writer's stray last offset, a stale ImageJ image count, pages appended later)."""

    _CHAIN = ("invalid page offset",)
    _METADATA = ("invalid value offset", "metadata invalid", "corrupted", "invalid shaped series metadata",
                 "failed to reshape")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.chain: list[str] = []
        self.metadata: list[str] = []
        self._thread = threading.get_ident()

    @property
    def broken(self) -> list[str]:
        return self.metadata + self.chain if self.chain and self.metadata else []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread:
            return
        message = record.getMessage()
        text = message.rsplit("> ", 1)[-1]  # without tifffile's object reprs, or the error's
        text = re.sub(r", raised \w+\((['\"])(.*)\1\)$", r" (\2)", text)
        for signs, found in ((self._CHAIN, self.chain), (self._METADATA, self.metadata)):
            if any(sign in message for sign in signs):
                found.append(text)

    def __enter__(self) -> _TiffFileErrors:
        logging.getLogger("tifffile").addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger("tifffile").removeHandler(self)


def _split_stack(tif: tifffile.TiffFile) -> bool:
    """Whether a tifffile-written file stores a stack as one 'shaped' series per page."""
    try:
        series = tif.series
        return (
            tif.is_shaped
            and len(series) > 1
            and all(len(s.pages) == 1 and s.shape == series[0].shape and s.dtype == series[0].dtype for s in series)
        )
    except Exception:
        return False


def _tiff_image(tif: tifffile.TiffFile, path: str, size: int, index: int | None = None) -> ImageData:
    """Build the ImageData of series ``index`` (None: the first) of an open TIFF."""
    if not tif.series or tif.series[0].shape is None or not tif.series[0].shape:
        raise ImageReadError(path, "TIFF contains no image data")
    if index is not None and index >= len(tif.series):
        listed = "; ".join(f"{i}: {_series_said(s)}" for i, s in enumerate(tif.series[:8]))
        raise ImageReadError(path, f"holds {len(tif.series)} image{'s' if len(tif.series) > 1 else ''}, "
                                   f"not series {index} ({listed}{'; ...' if len(tif.series) > 8 else ''})")
    series = tif.series[index or 0]
    if series.shape is None or not series.shape:
        raise ImageReadError(path, f"TIFF series {index} holds no image data")
    missing = sum(page is None for page in series.pages)
    if missing:  # an OME (or Micro-Manager) series names planes the file or its companions lack
        raise DamagedFileError(path, f"truncated or incomplete TIFF: its metadata names {missing} planes that the "
                                   "file (or a file of its set) does not hold; they would read as zeros")
    _check_tiff_offsets(tif, series, path, size)
    axes, rgb = _tiff_axes(series.axes, series.shape, getattr(series.keyframe, "photometric", None),
                           getattr(series.keyframe, "extrasamples", None))
    scale, translate, units, meta = _tiff_metadata(tif, series, axes)
    root = zarr.open(series.aszarr(), mode="r")
    if isinstance(root, zarr.Group):
        levels = [root[str(i)] for i in range(len(series.levels))]
    else:
        levels = [root]
    if tuple(levels[0].shape) != tuple(series.shape):
        raise ImageReadError(path, f"TIFF store shape {levels[0].shape} differs from series shape {series.shape}")
    if len(levels) == 1 and _ContiguousPixels.suits(series, tif.byteorder, read_chunks(levels[0])):
        levels = [_ContiguousPixels(path, series)]
    meta.update(tiff_axes=series.axes, n_series=len(tif.series), byteorder=tif.byteorder, bigtiff=tif.is_bigtiff)
    if index is not None:
        meta["series"] = index
        if _series_name(series):
            meta["series_name"] = _series_name(series)  # a slide's 'Label', 'Macro'
    photometric = _photometric_name(getattr(series.keyframe, "photometric", None))
    if _planar_colour(series, rgb, photometric):
        meta["planar_colour"] = True  # red, green, blue (, alpha) planes: shown as one colour picture
    if photometric == "PALETTE":
        meta["palette"] = True  # colour indices, not intensities
    if _gray_alpha(series, rgb):
        meta["alpha"] = True  # gray + opacity: the second sample is no intensity
    if photometric == "MINISWHITE":
        meta["miniswhite"] = True  # 0 is white: shown with an inverted gray map, written so again
    masks = _nodata_masks(tif)
    if masks:  # GDAL's internal masks: where the image has no data (not images to show or restore)
        meta["nodata_masks"] = masks
    pictures = [i for i in range(len(tif.series)) if i not in masks]
    if len(pictures) > 1 and index is None:  # positions of a multi-position OME-TIFF, a slide's label and macro
        others = ", ".join(f"{i}: {_series_said(tif.series[i])}" for i in pictures[1:4])
        warn(f"{path}: holds {len(pictures)} images; only the first, {_series_said(series)}, is read "
             f"(the others: {others}{', ...' if len(pictures) > 4 else ''}); choose one with series=N "
             "(ar.io.open_image(path, series=N), CLI --series N)")
    _warn_empty_tiles(series, path)
    return ImageData(
        data=levels[0],
        axes=axes,
        scale=scale,
        translate=translate,
        units=units,
        rgb=rgb,
        channel_axis=_channel_axis(axes, rgb),
        levels=levels,
        name=_base_name(path),
        path=path,
        meta=meta,
    )


class _ContiguousPixels:
    """The uncompressed pixels of a TIFF stored as one block (strips one after another, as
    tifffile and ImageJ write them), read region by region, row by row.

    Such a file's strips can hold a whole plane (512 MB for 16384² uint16): read through
    tifffile's zarr store, every region decoded the whole strip, so memory grew with the plane
    and time with its square.  Only the rows of the region are read here.
    """

    #: a read unit (strip or plane) of more pixels than this is read this way
    ABOVE = 4096 * 4096

    def __init__(self, path: str, series: Any) -> None:
        self.path = path
        self.offset = int(series.dataoffset)
        self.shape = tuple(int(n) for n in series.shape)
        self.dtype = np.dtype(series.dtype)
        self.ndim = len(self.shape)
        self.chunks = None

    @classmethod
    def suits(cls, series: Any, byteorder: str, read_unit: Sequence[int] | None) -> bool:
        """Whether ``series`` is one uncompressed block of one sample per pixel in native byte
        order, read in units of more than :attr:`ABOVE` pixels."""
        native = "<" if sys.byteorder == "little" else ">"
        return (getattr(series, "dataoffset", None) is not None and int(series.keyframe.compression) == 1
                and int(series.keyframe.samplesperpixel) == 1  # rows of pixels, not of colour samples
                and byteorder in (native, "=") and np.dtype(series.dtype).isnative and len(series.shape) >= 2
                and read_unit is not None and int(np.prod(read_unit)) > cls.ABOVE)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _basic_key(key, self.shape, strict=True)
        ranges = [range(*k.indices(n)) if isinstance(k, slice) else range(int(k) % n, int(k) % n + 1)
                  for k, n in zip(key, self.shape, strict=True)]
        *lead, rows, cols = ranges
        out = np.empty([len(r) for r in ranges], self.dtype)
        if out.size == 0:
            return out[tuple(0 if isinstance(k, int) else slice(None) for k in key)]
        x0, x1 = min(cols), max(cols) + 1
        width = (x1 - x0) * self.dtype.itemsize
        strides = np.cumprod((*self.shape[1:], 1)[::-1])[::-1]  # elements per step along each axis
        with open(self.path, "rb") as f:
            fd = f.fileno()
            for at in itertools.product(*[enumerate(r) for r in lead]):
                where = tuple(i for i, _ in at)
                base = sum(int(v) * int(s) for (_, v), s in zip(at, strides[:-2], strict=True))
                for i, y in enumerate(rows):
                    start = self.offset + (base + y * self.shape[-1] + x0) * self.dtype.itemsize
                    buf = os.pread(fd, width, start)
                    if len(buf) != width:
                        raise ImageReadError(self.path, f"truncated TIFF: row {y} ends past the end of the file")
                    out[(*where, i)] = np.frombuffer(buf, self.dtype)[cols.start - x0::cols.step]
        return out[tuple(0 if isinstance(k, int) else slice(None) for k in key)]


def _refuse_an_unread_tail(tif: tifffile.TiffFile, path: str, size: int, chain_error: str) -> None:
    """Raise when a TIFF whose chain of pages broke holds, after everything its readable pages
    use, more than half a page of bytes: pages cut off by a truncation (a stack written
    without metadata then reads as its first plane).  A writer's stray last offset leaves no
    such tail."""
    end, page_bytes = 0, 0
    for page in tif.pages:
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        values = [t.valueoffset + t.valuebytecount for t in getattr(page, "tags", {}).values()
                  if getattr(t, "valuebytecount", 0) > 4]  # values stored beyond the IFD (an XMP packet)
        end = max([end, getattr(page, "offset", 0), *values, *(o + c for o, c in zip(offsets, counts, strict=False))])
        page_bytes = page_bytes or sum(counts)
    if size - end > max(page_bytes // 2, 4096):
        raise DamagedFileError(path, f"truncated or corrupt TIFF: {chain_error}, and {size - end} bytes after its "
                                   f"last readable page belong to none; only part of it could be read")


def _nodata_masks(tif: tifffile.TiffFile) -> list[int]:
    """The series of an open TIFF that are nodata masks, not images: GDAL's internal masks
    (NewSubfileType 4, photometric MASK; 0 where the image has no data), which GeoTIFFs
    written with GDAL_TIFF_INTERNAL_MASK and JPEG COGs hold."""
    found = []
    for i, series in enumerate(tif.series):
        page = series.keyframe
        if _photometric_name(getattr(page, "photometric", "")) == "MASK" or int(getattr(page, "subfiletype", 0)) & 4:
            found.append(i)
    return found


def nodata_mask_series(meta: dict[str, Any], path: str | None) -> int | None:
    """The series of the nodata mask a TIFF holds for the image whose metadata is ``meta``
    (GDAL's internal mask: 0 where there is no data), or None: none, or the mask is the image."""
    masks = meta.get("nodata_masks") or []
    if not masks or not path or (meta.get("series") or 0) in masks:
        return None
    return int(masks[0])


def _series_said(series: Any) -> str:
    """A TIFF series for a message: its name where the file gives one (a slide's 'Label',
    'Macro', 'Thumbnail'; tifffile's generic names are left out) and its shape."""
    name = _series_name(series)
    return f"{name} {tuple(series.shape)}" if name else f"{tuple(series.shape)}"


def _series_name(series: Any) -> str:
    """The name a TIFF gives a series (a slide's 'Label'), or '' for none or tifffile's
    generic ones."""
    name = str(getattr(series, "name", "") or "").strip()
    generic = not name or name.lower() in ("shaped", "generic", "uniform", "imagej", "ome", "series") or \
        re.fullmatch(r"(image|series)\s*:?\s*\d+", name.lower()) is not None  # tifffile's own OME names
    return "" if generic else name


def _warn_empty_tiles(series: Any, path: str) -> None:
    """Warn when the image's tiles or strips include some the file does not store (byte count
    0): scanners leave the blank background of a slide so, and they read as 0, black in
    bright-field, which the network then restores as dark squares."""
    try:
        counts = [c for page in series.pages[:64] if page is not None for c in (page.databytecounts or ())]
    except Exception:  # pages that cannot be read are refused elsewhere, when their pixels are
        return
    empty = sum(1 for c in counts if not c)
    if empty:
        warn(f"{path}: {empty} of the {len(counts)} tiles or strips of its first "
             f"{'planes' if len(series.pages) > 1 else 'plane'} are not stored in the file (empty, as scanners leave "
             "blank background); they read as 0")


def _check_tiff_offsets(tif: tifffile.TiffFile, series: Any, path: str, size: int) -> None:
    """Raise if the first/last pages' strips or tiles lie outside the file."""
    pages = [(0, series.keyframe)]
    try:
        n = len(series.pages)
        if n > 1 and series.pages[-1] is not None:
            pages.append((n - 1, series.pages[-1]))
        for level in list(getattr(series, "levels", ()))[1:]:  # a pyramid's smaller levels (napari shows them)
            pages.append((f"pyramid level {tuple(level.shape)}", level.keyframe))
            if len(level.pages) > 1 and level.pages[-1] is not None:
                pages.append((f"pyramid level {tuple(level.shape)}", level.pages[-1]))
    except Exception as exc:
        raise DamagedFileError(path, f"truncated or corrupt TIFF (cannot read the last page: {exc})") from exc
    for index, page in pages:
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        for offset, count in zip(offsets, counts, strict=False):
            if count and offset + count > size:
                raise DamagedFileError(
                    path,
                    f"truncated TIFF ({f'page {index}' if isinstance(index, int) else index} data ends at byte "
                    f"{offset + count}, the file has {size} bytes)",
                )
    dataoffset = getattr(series, "dataoffset", None)
    if dataoffset is not None and series.dtype is not None:
        end = dataoffset + math.prod(series.shape) * series.dtype.itemsize
        if end > size:
            raise DamagedFileError(path, f"truncated TIFF (image data ends at byte {end}, the file has {size} bytes)")


def _tiff_metadata(tif: tifffile.TiffFile, series: Any, axes: str) -> tuple[tuple, tuple, dict, dict]:
    """Scale, translate, units and extra metadata of a TIFF series."""
    scale = {ax: 1.0 for ax in axes}
    translate = {ax: 0.0 for ax in axes}
    units: dict[str, str] = {}
    meta: dict[str, Any] = {}
    page = series.keyframe
    _resolution_scale(page, scale, units)
    if tif.is_imagej and tif.imagej_metadata:
        _imagej_scale(tif.imagej_metadata, page, scale, units, translate)
        meta["imagej"] = {k: v for k, v in tif.imagej_metadata.items() if isinstance(v, (str, int, float, bool))}
    if tif.is_ome and tif.ome_metadata:
        meta["ome"] = _ome_scale(tif.ome_metadata, scale, units, translate)
    if tif.is_shaped and tif.shaped_metadata:
        _shaped_scale(tif.shaped_metadata[0], scale, units, translate)
    if tif.is_svs and "x" not in units:  # Aperio states its pixel size in the description alone
        _aperio_scale(tif.pages.first.description, scale, units)
    if tif.is_geotiff or "ModelPixelScaleTag" in page.tags or "ModelTransformationTag" in page.tags:
        meta["geotiff"] = read_georeference(tif, page, scale, translate, units)
    if "GDAL_NODATA" in page.tags:
        meta["nodata"] = gdal_nodata(page.tags["GDAL_NODATA"].value, page.dtype)
    pattern = _bayer_pattern(page)
    if pattern:
        meta["cfa"] = pattern
    units = {ax: u for ax, u in units.items() if ax in axes}
    return tuple(scale[a] for a in axes), tuple(translate[a] for a in axes), units, meta


#: the 2x2 Bayer patterns a raw's metadata may state (as ``tasks.demosaic.PATTERNS``)
_BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")


def _bayer_pattern(page: Any) -> str | None:
    """The 2x2 Bayer pattern a raw TIFF (TIFF/EP, DNG) states in its CFAPattern tag, or in
    EXIF's (41730, in its own IFD or the EXIF one): "RGGB", "BGGR", "GRBG" or "GBRG", or None."""
    tag, dims = page.tags.get(33422), page.tags.get(33421)  # CFAPattern, CFARepeatPatternDim
    if tag is None:
        return _exif_bayer_pattern(page)
    if dims is not None and tuple(np.ravel(dims.value)) != (2, 2):
        return None
    return _pattern_of(tag.value)


def _exif_bayer_pattern(page: Any) -> str | None:
    """EXIF's CFAPattern: two 16-bit repeat counts (in either byte order), then the colours."""
    tag = page.tags.get(41730)
    exif = page.tags.get(34665)  # the EXIF IFD, which tifffile reads as a dict
    value = tag.value if tag is not None else (exif.value.get("CFAPattern") if exif is not None
                                               and isinstance(exif.value, dict) else None)
    if isinstance(value, (tuple, list)):
        value = bytes(int(v) & 0xFF for v in value)
    if not isinstance(value, bytes) or len(value) != 8 or value[:4] not in (b"\x00\x02\x00\x02", b"\x02\x00\x02\x00"):
        return None
    return _pattern_of(value[4:])


def _pattern_of(value: Any) -> str | None:
    """The Bayer pattern of four colour codes (0 red, 1 green, 2 blue), or None."""
    colours = list(value) if isinstance(value, (bytes, tuple, list)) else list(np.ravel(value))
    if len(colours) != 4 or not all(int(c) in (0, 1, 2) for c in colours):
        return None
    pattern = "".join("RGB"[int(c)] for c in colours)
    return pattern if pattern in _BAYER_PATTERNS else None


def _aperio_scale(description: str, scale: dict, units: dict) -> None:
    """Pixel size from an Aperio SVS description's ``MPP`` (micrometers per pixel)."""
    try:
        from tifffile.tifffile import svs_description_metadata

        mpp = float(svs_description_metadata(description).get("MPP", 0))
    except Exception:  # another layout of the description, or a tifffile without the parser
        return
    if not 1e-4 <= mpp <= 1e4:  # (not finite, zero, negative or absurd: no size rather than a wrong one)
        return
    for ax in ("x", "y"):
        if ax in scale:
            scale[ax], units[ax] = mpp, "micrometer"


def _resolution_scale(page: Any, scale: dict, units: dict) -> None:
    """Pixel size from X/YResolution when the unit is metric (not the 72 dpi default)."""
    factors = {3: 1e4, 4: 1e3, 5: 1.0}  # centimeter, millimeter, micrometer -> micrometer
    try:
        unit = int(page.resolutionunit)
        xres, yres = page.get_resolution()
    except Exception:
        return
    if unit not in factors or not xres or not yres:
        return
    for ax, res in (("x", xres), ("y", yres)):
        if ax in scale:
            scale[ax] = factors[unit] / float(res)
            units[ax] = "micrometer"


def _imagej_scale(ij: dict, page: Any, scale: dict, units: dict, translate: dict | None = None) -> None:
    """Pixel size from ImageJ metadata (unit, spacing, finterval) and resolution; the origin
    (``xorigin``, ...: the pixel at calibrated 0, as ImageJ's Properties set it) as ``translate``."""
    unit = ij.get("unit")
    if unit and unit not in ("pixel", "pixels"):
        unit = _ngff_unit(unit.replace("\\u00B5", "µ"))
        try:
            xres, yres = page.get_resolution()
        except Exception:
            xres = yres = 0
        for ax, res in (("x", xres), ("y", yres)):
            if ax in scale and res:
                scale[ax] = 1.0 / float(res)
                units[ax] = unit
        if "z" in scale and ij.get("spacing"):
            scale["z"] = float(ij["spacing"])
            units["z"] = unit
    if "t" in scale and ij.get("finterval"):
        scale["t"] = float(ij["finterval"])
        units["t"] = _ngff_unit(ij.get("tunit") or "s")  # Fiji's frame interval unit: sec, min, ms, ...
    for ax in "xyzt":  # (torigin, in frames, is our writer's: ImageJ keeps no origin of time)
        origin = ij.get(f"{ax}origin")
        if translate is not None and ax in scale and isinstance(origin, (int, float)) and math.isfinite(origin):
            translate[ax] = -float(origin) * scale[ax]


def _shaped_scale(described: dict, scale: dict, units: dict, translate: dict) -> None:
    """Pixel size and origin per axis that our TIFF writer keeps in tifffile's JSON description."""
    origin = described.get("translate")
    if isinstance(origin, dict):
        for ax, value in origin.items():
            if ax in translate and isinstance(value, (int, float)) and math.isfinite(value):
                translate[ax] = float(value)
    sizes, names = described.get("scale"), described.get("units")
    if not isinstance(sizes, dict):
        return
    for ax, value in sizes.items():
        if ax in scale and isinstance(value, (int, float)) and value > 0:
            scale[ax] = float(value)
            if isinstance(names, dict) and isinstance(names.get(ax), str):
                units[ax] = names[ax]


def _ome_scale(ome_xml: str, scale: dict, units: dict, translate: dict) -> dict:
    """Physical sizes and origin (the first plane's position) from OME-XML; return the OME
    metadata as a dict, with the channels' names and colours as NGFF ``omero`` under "omero"."""
    ome = tifffile.xml2dict(ome_xml).get("OME", {})
    image = ome.get("Image", {})
    if isinstance(image, list):
        image = image[0] if image else {}
    pixels = image.get("Pixels", {}) if isinstance(image, dict) else {}
    for ax in "xyz":
        value = pixels.get(f"PhysicalSize{ax.upper()}")
        if ax in scale and value:
            scale[ax] = float(value)
            units[ax] = _ngff_unit(pixels.get(f"PhysicalSize{ax.upper()}Unit", "µm"))
    if "t" in scale and pixels.get("TimeIncrement"):
        scale["t"] = float(pixels["TimeIncrement"])
        units["t"] = _ngff_unit(pixels.get("TimeIncrementUnit", "s"))
    planes = pixels.get("Plane")
    first = (planes[0] if planes else {}) if isinstance(planes, list) else planes
    for ax in "xyz":  # the position of the first plane, in the pixel size's unit
        value = first.get(f"Position{ax.upper()}") if isinstance(first, dict) else None
        unit = _ngff_unit(first.get(f"Position{ax.upper()}Unit", "µm")) if value is not None else None
        if ax in translate and value is not None:  # (nm positions of µm pixels converted)
            translate[ax] = _in_unit(value, unit, units.get(ax, "micrometer")) or translate[ax]
    delta = first.get("DeltaT") if isinstance(first, dict) else None
    if "t" in translate and delta is not None:  # the first time point's time: the origin of t
        translate["t"] = _in_unit(delta, _ngff_unit(first.get("DeltaTUnit", "s")), units.get("t", "second")) \
            or translate["t"]
    omero = _ome_channels(pixels.get("Channel"))
    if omero:
        ome["omero"] = omero
    return ome


def _ome_channels(channels: Any) -> dict | None:
    """NGFF ``omero`` of OME-XML Channel elements (names, colours), or None when none is named."""
    channels = channels if isinstance(channels, list) else [channels] if isinstance(channels, dict) else []
    if not channels or not any(isinstance(ch, dict) and ch.get("Name") for ch in channels):
        return None
    out = []
    for ch in channels:
        entry: dict[str, Any] = {"label": str(ch.get("Name") or "")} if isinstance(ch, dict) else {"label": ""}
        if isinstance(ch, dict) and isinstance(ch.get("Color"), int):  # signed 32-bit RGBA
            entry["color"] = f"{(ch['Color'] & 0xFFFFFFFF) >> 8:06X}"
        out.append(entry)
    return {"channels": out}


# --------------------------------------------------------------------------- PNG / JPEG


def _open_plain(path: str) -> ImageData:
    """Read a small PNG/JPEG/BMP into memory."""
    if os.path.isdir(path):
        raise ImageReadError(path, "is a directory, not an image file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        import imageio.v3 as iio

        data = np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as exc:
        raise ImageReadError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        axes, rgb = "yx", False
    elif data.ndim == 3:
        axes, rgb = "yxc", data.shape[-1] in (3, 4)
    else:
        raise ImageReadError(path, f"unexpected image shape {data.shape}")
    return ImageData(
        data=data,
        axes=axes,
        scale=(1.0,) * data.ndim,
        translate=(0.0,) * data.ndim,
        units={},
        rgb=rgb,
        channel_axis=_channel_axis(axes, rgb),
        levels=[data],
        name=_base_name(path),
        path=path,
        meta={"alpha": True} if axes == "yxc" and data.shape[-1] == 2 else {},  # a PNG's gray + alpha
    )


# --------------------------------------------------------------------------- zarr


def _open_zarr(path: str) -> ImageData:
    """Open a zarr v2/v3 array or group (OME-Zarr 0.4/0.5 or a group with array '0')."""
    try:  # a local store by its absolute path: a dask.distributed worker elsewhere reads the same one
        node = zarr.open(absolute_location(path), mode="r")
    except Exception as exc:
        raise ImageReadError(path, f"cannot open zarr store ({type(exc).__name__}: {exc})") from exc
    try:
        if isinstance(node, zarr.Array):
            _refuse_unfinished_parent(path)
            return _as_pyramid_level(path) or _plain_zarr(node, path, {})
        return _zarr_group(node, path)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(path, f"cannot read zarr metadata ({type(exc).__name__}: {exc})") from exc


def _multiscales(attrs: dict) -> tuple[list, dict, str | None]:
    """(multiscales list, ome attrs, version) from NGFF 0.5 ('ome') or 0.4 attributes."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return ome["multiscales"], ome, ome.get("version")
    ms = attrs.get("multiscales")
    if ms:
        return ms, attrs, ms[0].get("version")
    return [], {}, None


def _refuse_unfinished(attrs: dict, path: str) -> None:
    """Raise for an output this package has not finished writing: its unwritten chunks read as
    zeros, so it would pass for a whole image."""
    job = attrs.get("attnrestore")
    if not isinstance(job, dict):
        return
    status = job.get("status", "complete" if job.get("complete", True) else "running")
    if status != "complete":
        todo = f"continue it with {RESUME} or write it again" if job.get("job") else "write it again"
        raise UnfinishedOutputError(path, f"an unfinished attnrestore output (status: {status}); its missing chunks "
                                   f"would read as zeros: {todo}")


def _refuse_unfinished_parent(path: str) -> None:
    """:func:`_refuse_unfinished` for the groups holding an array opened by its own path
    (``out.ome.zarr/0``: a level of an unfinished output reads as zeros where unwritten)."""
    parent = os.path.abspath(path.rstrip("/\\"))
    for _ in range(2):  # the image group, and a bioformats2raw root above it
        parent = os.path.dirname(parent)
        try:
            group = zarr.open_group(parent, mode="r")
        except Exception:
            return
        _refuse_unfinished(dict(group.attrs), path)


def _as_pyramid_level(path: str) -> ImageData | None:
    """An array opened by its own path (``image.ome.zarr/1``) that is a level of its group's
    OME pyramid: that level and the coarser ones, with the level's pixel size, axes and
    channel metadata (as a plain array it had pixel size 1 and no units)."""
    location = os.path.abspath(path.rstrip("/\\"))
    try:
        group = zarr.open_group(os.path.dirname(location), mode="r")
    except Exception:
        return None
    multiscales, ome, version = _multiscales(dict(group.attrs))
    name = os.path.basename(location)
    for ms in multiscales:
        keys = [str(ds.get("path")) for ds in ms.get("datasets") or [] if isinstance(ds, dict)]
        if name in keys:
            return _ome_image(group, path, {**ms, "datasets": ms["datasets"][keys.index(name):]}, ome, version)
    return None


def _zarr_group(group: zarr.Group, path: str) -> ImageData:
    """ImageData from a zarr group."""
    attrs = dict(group.attrs)
    _refuse_unfinished(attrs, path)
    multiscales, ome, version = _multiscales(attrs)
    if multiscales:
        return _ome_image(group, path, multiscales[0], ome, version)
    if "0" in group:
        child = group["0"]
        if isinstance(child, zarr.Array):
            return _plain_zarr(child, path, {"attrs": attrs})
        if _multiscales(dict(child.attrs))[0]:  # bioformats2raw layout
            series = _ome_attrs(group["OME"]).get("series") if "OME" in group else None
            if isinstance(series, list) and len(series) > 1:  # a plate's wells, a slide's label and macro pictures
                warn(f"{path}: holds {len(series)} images (series {', '.join(map(str, series[:4]))}"
                     f"{', ...' if len(series) > 4 else ''}); only the first is read")
            return _zarr_group(child, path)
    plate = _ome_attrs(group).get("plate")
    if isinstance(plate, dict):  # an HCS plate: its images are the fields of its wells
        raise ImageReadError(path, f"an OME-Zarr plate; open one field of a well, e.g. {_first_field(group, plate, path)}")
    raise ImageReadError(path, "zarr group has no OME multiscales metadata and no array '0'")


def _ome_attrs(group: zarr.Group) -> dict:
    """A group's OME attributes: under "ome" (NGFF 0.5) or at the top (0.4)."""
    attrs = dict(group.attrs)
    return attrs["ome"] if isinstance(attrs.get("ome"), dict) else attrs


def _first_field(group: zarr.Group, plate: dict, path: str) -> str:
    """Path of a plate's first field (``plate.ome.zarr/A/1/0``), for a message."""
    wells = [w.get("path") for w in plate.get("wells") or [] if isinstance(w, dict) and w.get("path")]
    if not wells:
        return f"{path.rstrip('/')}/A/1/0"
    field = "0"
    try:
        images = _ome_attrs(group[wells[0]]).get("well", {}).get("images") or []
        field = str(images[0].get("path", field)) if images else field
    except (KeyError, AttributeError, TypeError):
        pass
    return f"{path.rstrip('/')}/{wells[0]}/{field}"


def _plain_zarr(array: zarr.Array, path: str, meta: dict) -> ImageData:
    """ImageData for a zarr array without OME metadata (axes guessed from the shape)."""
    names = getattr(array.metadata, "dimension_names", None)
    if names and all(isinstance(n, str) and len(n) == 1 for n in names) and len(set(names)) == len(names):
        axes = "".join(names).lower()
        rgb = axes.endswith("c") and array.shape[-1] in (3, 4)
    else:
        axes, rgb = guess_axes(array.shape)
    return ImageData(
        data=array,
        axes=axes,
        scale=(1.0,) * array.ndim,
        translate=(0.0,) * array.ndim,
        units={},
        rgb=rgb,
        channel_axis=_channel_axis(axes, rgb),
        levels=[array],
        name=_base_name(path),
        path=path,
        meta={**meta, "array_attrs": dict(array.attrs)},
    )


def _ngff_axes(axes_meta: list | None, ndim: int) -> tuple[str, dict[str, str]]:
    """Axis letters and units from NGFF ``axes`` (dicts in 0.4+, strings in 0.3)."""
    if not axes_meta:
        return guess_axes((1,) * ndim, rgb=False)[0], {}
    letters, units, names, space = [], {}, [], []
    type_letter = {"time": "t", "channel": "c"}
    for i, entry in enumerate(axes_meta):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"OME axis {i} is {entry!r}, not a name or an object with one")
        name = str(entry.get("name", "")).lower()
        if name and name in names:
            raise ValueError(f"OME axes name '{name}' twice ({[*names, name]}); NGFF axis names "
                             "are unique")
        names.append(name)
        if entry.get("type") == "space" or name in ("x", "y", "z"):
            space.append(i)
        letters.append(name if len(name) == 1 else type_letter.get(str(entry.get("type")), name[:1] or "q"))
        if entry.get("unit"):
            units[i] = str(entry["unit"])
    if not {"y", "x"} <= set(letters):  # space axes of other names: the last two are rows and columns
        if len(space) < 2 or {"y", "x"} & {letters[i] for i in range(len(letters)) if i not in space[-2:]}:
            raise ValueError(f"OME axes {names} have no y and x: an image needs two space axes, the last "
                             "two being its rows and columns")
        letters[space[-2]], letters[space[-1]] = "y", "x"
        if len(space) > 2 and "z" not in letters:  # and a third before them is depth
            letters[space[-3]] = "z"
    axes = _unique_letters(letters)
    return axes, {axes[i]: unit for i, unit in units.items()}


def _transforms(items: list | None, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Combine a list of NGFF coordinate transformations into (scale, translation)."""
    scale, translation = np.ones(ndim), np.zeros(ndim)
    for item in items or []:
        kind = item.get("type")
        if kind in ("scale", "translation") and kind in item:
            values = np.asarray(item[kind], dtype=float)
            if values.shape != (ndim,):
                raise ValueError(f"a {kind} of {np.size(values)} values for {ndim} axes ({item[kind]!r})")
            if kind == "scale":
                scale, translation = scale * values, translation * values
            else:
                translation = translation + values
    return scale, translation


def is_rgb_omero(omero: Any, channels: int) -> bool:
    """Whether NGFF ``omero`` metadata describe an RGB(A) picture: channels labelled red,
    green and blue (or R, G, B) and coloured so, and a 4th, if any, labelled alpha (or A), as
    `~napari_attnrestore.io.ome_zarr.rgb_omero` writes them.  Fluorescence channels that are
    only coloured red, green and blue (Cy5, GFP, DAPI) stay channels."""
    entries = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(entries, list) or len(entries) != channels or channels not in (3, 4):
        return False
    if not all(isinstance(e, dict) for e in entries):
        return False
    colours = [str(e.get("color", "")).upper().lstrip("#") for e in entries[:3]]
    labels = [str(e.get("label", "")).lower() for e in entries]
    names = ({"red", "r"}, {"green", "g"}, {"blue", "b"}, {"alpha", "a"})
    return colours == ["FF0000", "00FF00", "0000FF"] and all(
        label in allowed for label, allowed in zip(labels, names, strict=False))


def _ome_image(group: zarr.Group, path: str, ms: dict, ome: dict, version: str | None) -> ImageData:
    """ImageData from one NGFF multiscales entry."""
    datasets = ms.get("datasets") or []
    if not datasets:
        raise ImageReadError(path, "OME multiscales metadata lists no datasets")
    levels = []
    for ds in datasets:
        key = str(ds["path"])
        if key not in group:
            raise ImageReadError(path, f"OME multiscales dataset '{key}' is missing from the store")
        levels.append(group[key])
    ndim = levels[0].ndim
    try:
        axes, units = _ngff_axes(ms.get("axes"), ndim)
    except ValueError as exc:
        raise ImageReadError(path, str(exc)) from None
    if len(axes) != ndim:
        raise ImageReadError(path, f"OME axes '{axes}' do not match the array's {ndim} dimensions")
    try:
        s0, t0 = _transforms(datasets[0].get("coordinateTransformations"), ndim)
        s1, t1 = _transforms(ms.get("coordinateTransformations"), ndim)
    except (TypeError, ValueError) as exc:
        raise ImageReadError(path, f"OME coordinate transformations: {exc}") from None
    scale, translate = s0 * s1, t0 * s1 + t1
    if not (np.isfinite(scale).all() and (scale > 0).all() and np.isfinite(translate).all()):
        raise ImageReadError(path, f"OME pixel sizes must be positive and finite, offsets finite; got scale "
                                   f"{scale.tolist()}, translation {translate.tolist()}")
    rgb = axes.endswith("c") and levels[0].shape[-1] in (3, 4) and ndim >= 3
    if not rgb and "c" in axes and ndim >= 3 and is_rgb_omero(ome.get("omero"), levels[0].shape[axes.index("c")]):
        # an RGB(A) image stored as NGFF orders it (cyx): shown channel-last, as napari shows colour
        c = axes.index("c")
        order = [i for i in range(ndim) if i != c] + [c]
        levels = [AxesView(lv, order, path) for lv in levels]
        axes = "".join(axes[i] for i in order)
        scale, translate = scale[order], translate[order]
        rgb = True
    return ImageData(
        data=levels[0],
        axes=axes,
        scale=tuple(float(v) for v in scale),
        translate=tuple(float(v) for v in translate),
        units=units,
        rgb=rgb,
        channel_axis=_channel_axis(axes, rgb),
        levels=levels,
        name=str(ms.get("name") or _base_name(path)),
        path=path,
        # what a restore kept of a GeoTIFF source in the store's attributes (written on to a .tif)
        meta={"ome": ome, "ngff_version": version, "multiscales": ms, **carried(dict(group.attrs)),
              **({"cfa": group.attrs["cfa"]} if group.attrs.get("cfa") in _BAYER_PATTERNS else {})},
    )
