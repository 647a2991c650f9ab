"""Write OME-Zarr (NGFF 0.5 on zarr v3) with zarr's own API, streaming chunk by chunk.

Layout: a group with ``attrs["ome"] = {"version": "0.5", "multiscales": [...]}`` and arrays
``"0"`` (full resolution), ``"1"``, ``"2"``, ... (each 2x smaller in y and x).
Arrays are stored in NGFF's axis order (time, then channel, then space) whatever order
they are given in: an RGB(A) image given channel-last (axes ``"yxc"``, as napari shows it)
is stored ``"cyx"`` with red, green and blue ``omero`` channels, and `open_image` shows such
a store channel-last again (see `is_rgb_omero`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from ._output import check_axes, check_geometry, discard, ensure_writable_parent, unsupported_pixels
from .errors import ImageWriteError
from .images import _multiscales, _ngff_unit, _transforms

__all__ = [
    "create_ome_zarr",
    "default_chunks",
    "ngff_order",
    "omero_in_dtype",
    "read_ome_metadata",
    "release_ome_metadata",
    "rgb_omero",
    "write_ome_zarr",
    "write_pyramid",
]

NGFF_VERSION = "0.5"
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


def default_chunks(shape: Sequence[int], axes: str, size: int = 512) -> tuple[int, ...]:
    """Chunks of ``size`` along y and x, whole trailing RGB axis, 1 along other axes."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"chunk size must be a whole number of at least 1 pixel, not {size!r}")
    out = []
    for i, (n, ax) in enumerate(zip(shape, axes, strict=False)):
        if ax in "yx":
            out.append(max(1, min(size, int(n))))
        elif ax == "c" and i == len(axes) - 1:
            out.append(max(1, int(n)))
        else:
            out.append(1)
    return tuple(out)


def ngff_order(axes: str, rgb: bool = False) -> tuple[int, ...]:
    """The order NGFF lists ``axes`` in: time first, then channel and other named axes (as
    given), then z, y, x; with ``rgb`` a trailing colour axis stays last, as the engine and
    napari keep it.

    Axis ``i`` in that order is axis ``order[i]`` of ``axes``: ``"yxc"`` -> ``(2, 0, 1)``
    (``"cyx"``), ``"zcyx"`` -> ``(1, 0, 2, 3)``, ``"yxz"`` -> ``(2, 0, 1)``.
    """
    n = len(axes) - int(rgb)
    rank = {"t": 0, "z": 2, "y": 3, "x": 4}  # space last, as z, y, x; channel and unnamed axes between
    return (*sorted(range(n), key=lambda i: (rank.get(axes[i], 1), i)), *range(n, len(axes)))


def rgb_omero(channels: int, dtype: Any) -> dict[str, Any]:
    """NGFF ``omero`` rendering metadata of an RGB(A) image: red, green, blue (and alpha)
    channels shown added together over the dtype's range (0-1 for floats)."""
    dtype = np.dtype(dtype)
    top = float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0
    names = [("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"), ("alpha", "FFFFFF")][:channels]
    window = {"min": 0.0, "max": top, "start": 0.0, "end": top}
    return {"channels": [{"label": label, "color": color, "active": label != "alpha", "window": dict(window)}
                         for label, color in names],
            "rdefs": {"model": "color"}}


def omero_in_dtype(omero: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
    """``omero`` rendering metadata for the same channels stored in ``dtype``: each window's
    range becomes the dtype's and its start and end are clipped into it (float windows,
    in the data's own units, stay)."""
    dtype = np.dtype(dtype)
    out = dict(omero)
    if dtype.kind not in "iu" or not isinstance(omero.get("channels"), list):
        return out
    info = np.iinfo(dtype)
    lo, hi = float(info.min), float(info.max)
    channels = []
    for entry in omero["channels"]:
        entry = dict(entry) if isinstance(entry, Mapping) else entry
        window = entry.get("window") if isinstance(entry, dict) else None
        if isinstance(window, Mapping):
            start, end = (min(max(float(window.get(k, d)), lo), hi) for k, d in (("start", lo), ("end", hi)))
            entry["window"] = {**window, "min": lo, "max": hi, "start": start, "end": end}
        channels.append(entry)
    return {**out, "channels": channels}


def _prepare_output(path: str, overwrite: bool) -> None:
    """Refuse to clobber existing output unless asked; make sure the parent is writable."""
    if os.path.lexists(path):
        if not overwrite:
            raise ImageWriteError(path, "already exists; pass overwrite=True (CLI: --overwrite)")
        remove_output(path)
    ensure_writable_parent(path)


def remove_output(path: str | os.PathLike) -> None:
    """Delete an existing output; refuse to delete a folder that is not a zarr store."""
    try:
        if _is_store(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except ImageWriteError:
        raise
    except OSError as exc:
        raise ImageWriteError(path, f"cannot remove the existing output ({exc.strerror or exc})") from exc


def _is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr store (a folder), not a link (False); ImageWriteError for a
    folder or a file that is something else, which no output may replace."""
    if os.path.isdir(path) and not os.path.islink(path):
        entries = os.listdir(path)
        if entries and not any(m in entries for m in _ZARR_MARKERS):
            raise ImageWriteError(path, "exists and is not a zarr store; refusing to delete it")
        return True
    if os.path.isfile(path) and not os.path.islink(path):  # a file named like a store is someone's file
        raise ImageWriteError(path, "exists and is a file, not a zarr store; refusing to delete it")
    return False


def replaced_path(path: str | os.PathLike) -> str:
    """Where an output that overwriting replaces is kept until its replacement is complete:
    ``.NAME.replaced`` beside it."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f".{name}.replaced")


def set_aside(path: str | os.PathLike) -> str | None:
    """Move the zarr store at ``path`` to :func:`replaced_path` (an older one kept there is
    deleted); None when ``path`` is no store (a link, which is replaced as it is)."""
    if not _is_store(path):
        return None
    aside = replaced_path(path)
    try:
        if os.path.lexists(aside):
            remove_output(aside)
        os.rename(path, aside)
    except OSError as exc:
        raise ImageWriteError(os.fspath(path), f"cannot move the existing output aside ({exc.strerror or exc})") from exc
    return aside


def _per_axis(values: Any, axes: str, default: float, path: str, what: str) -> list[float]:
    """Expand scale/translate given per axis (sequence) or by letter (mapping)."""
    if values is None:
        return [default] * len(axes)
    if isinstance(values, Mapping):
        return [float(values.get(ax, default)) for ax in axes]
    values = [float(v) for v in values]
    if len(values) != len(axes):
        raise ImageWriteError(path, f"{what} has {len(values)} values for {len(axes)} axes '{axes}'")
    return values


def _axes_meta(axes: str, units: Mapping[str, str] | str | None) -> list[dict[str, str]]:
    """NGFF ``axes`` entries with types and units."""
    out = []
    for ax in axes:
        entry = {"name": ax}
        if ax in _AXIS_TYPES:
            entry["type"] = _AXIS_TYPES[ax]
        unit = None
        if isinstance(units, str):
            unit = units if entry.get("type") == "space" else None
        elif units:
            unit = units.get(ax)
        if unit and entry.get("type") in ("space", "time"):
            entry["unit"] = _ngff_unit(unit)
        out.append(entry)
    return out


def _transform_list(scale: Sequence[float], translate: Sequence[float]) -> list[dict[str, Any]]:
    """NGFF coordinateTransformations: scale, then translation when not all zero."""
    items: list[dict[str, Any]] = [{"type": "scale", "scale": [float(s) for s in scale]}]
    if any(float(t) != 0.0 for t in translate):
        items.append({"type": "translation", "translation": [float(t) for t in translate]})
    return items


def create_ome_zarr(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: Any,
    chunks: int | Sequence[int] | None,
    axes: str,
    scale: Sequence[float] | Mapping[str, float] | None = None,
    translate: Sequence[float] | Mapping[str, float] | None = None,
    units: Mapping[str, str] | str | None = None,
    name: str | None = None,
    overwrite: bool = False,
    fill_value: Any = 0,
    extra_attrs: Mapping[str, Any] | None = None,
    omero: Mapping[str, Any] | None = None,
    hold_metadata: bool = False,
    rgb: bool | None = None,
    labels: bool = False,
) -> zarr.Array:
    """Create an empty single-scale OME-Zarr (NGFF 0.5, zarr v3) and return its array "0".

    Parameters
    ----------
    path : str or os.PathLike
        Output store (a folder, usually ``*.ome.zarr``).
    shape, dtype, chunks
        Level-0 array geometry; ``chunks=None`` uses `default_chunks`, one number the side
        along y and x.
    axes : str
        One letter per dimension of ``shape``, e.g. ``"yx"``, ``"tczyx"``, ``"yxc"`` (RGB).
        The array is stored in `ngff_order` (``"yxc"`` as ``"cyx"``): write into it through
        that permutation.
    scale, translate : sequence or mapping, optional
        Physical pixel size and origin, per axis or by axis letter.
    units : mapping or str, optional
        Unit per axis letter (``{"x": "micrometer"}``) or one unit for all space axes.
    name : str, optional
        Image name stored in the multiscales metadata.
    overwrite : bool
        Replace an existing store (never a non-zarr folder).
    fill_value : scalar
        Value of chunks never written.
    extra_attrs : mapping, optional
        More group attributes (stored next to ``"ome"``).
    omero : mapping, optional
        NGFF ``omero`` rendering metadata (channel names, colours, windows), e.g. the source's;
        a trailing channel axis of 3 or 4 (RGB(A)) gets `rgb_omero` when None.
    hold_metadata : bool
        Keep the NGFF metadata aside (under ``attnrestore``) until `release_ome_metadata`:
        a store being filled is no image to other readers (napari-ome-zarr, Fiji), which
        would show its unwritten chunks as zeros.
    rgb : bool, optional
        Whether a trailing channel axis of 3 or 4 is a colour picture, labelled red, green,
        blue (alpha); False for bands (a red, green, blue and near-infrared scene, whose
        fourth band is no opacity).  By default, yes.
    labels : bool
        A label image (NGFF ``image-label``: integer labels, as a segmentation; napari opens
        it as a Labels layer).

    Raises
    ------
    ImageWriteError
        The output exists and ``overwrite`` is False, or its folder is not writable.
    """
    path = os.fspath(path)
    shape = tuple(int(s) for s in shape)
    axes = axes.lower()
    check_axes(axes, len(shape), path)
    if not 2 <= len(axes) <= 5:
        raise ImageWriteError(path, f"OME-Zarr (NGFF) images have 2 to 5 axes; got {len(axes)} ('{axes}')")
    problem = unsupported_pixels(dtype)
    if problem:
        raise ImageWriteError(path, problem)
    if chunks is not None and any(int(c) < 1 for c in np.atleast_1d(chunks)):
        raise ImageWriteError(path, f"chunks must be at least 1 pixel, got {chunks!r}")
    if chunks is not None and not isinstance(chunks, (int, np.integer)) and len(chunks) != len(shape):
        raise ImageWriteError(path, f"chunks {tuple(chunks)} has {len(chunks)} sides for {len(shape)} axes '{axes}'")
    if chunks is None or isinstance(chunks, (int, np.integer)):  # one number: the side along y and x
        chunks = default_chunks(shape, axes, *([int(chunks)] if chunks is not None else []))
    chunks = tuple(int(c) for c in chunks)
    scale_l = _per_axis(scale, axes, 1.0, path, "scale")
    translate_l = _per_axis(translate, axes, 0.0, path, "translate")
    check_geometry(path, scale_l, translate_l)
    if omero is None and rgb is not False and axes.endswith("c") and len(axes) >= 3 and shape[-1] in (3, 4):
        omero = rgb_omero(shape[-1], dtype)
    order = ngff_order(axes)
    axes = "".join(axes[i] for i in order)
    shape, chunks = tuple(shape[i] for i in order), tuple(chunks[i] for i in order)
    scale_l, translate_l = [scale_l[i] for i in order], [translate_l[i] for i in order]
    multiscale = {
        "name": name or _default_name(path),
        "axes": _axes_meta(axes, units),
        "datasets": [{"path": "0", "coordinateTransformations": _transform_list(scale_l, translate_l)}],
    }
    ome: dict[str, Any] = {"version": NGFF_VERSION, "multiscales": [multiscale]}
    if labels:
        if np.dtype(dtype).kind not in "iub":
            raise ImageWriteError(path, f"a label image holds integer labels, not {np.dtype(dtype)}")
        ome["image-label"] = {}
    if omero:  # its own "version" (an NGFF 0.4 source's) would contradict the store's
        ome["omero"] = {k: v for k, v in omero.items() if k != "version"}
    attrs: dict[str, Any] = dict(extra_attrs or {})
    if hold_metadata:
        attrs["attnrestore"] = {**dict(attrs.get("attnrestore") or {}), "ome": ome}
    else:
        attrs["ome"] = ome
    _prepare_output(path, overwrite)
    try:
        group = zarr.create_group(store=path, zarr_format=3, attributes=attrs, overwrite=overwrite)
        return group.create_array(
            "0", shape=shape, dtype=dtype, chunks=chunks, fill_value=fill_value, dimension_names=list(axes)
        )
    except ImageWriteError:
        raise
    except Exception as exc:
        raise ImageWriteError(path, f"cannot create OME-Zarr ({type(exc).__name__}: {exc})") from exc


def _default_name(path: str) -> str:
    """Image name from the store's file name."""
    name = os.path.basename(os.path.abspath(path))
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _spatial_indices(axes: str) -> tuple[int, int]:
    """Indices of y and x (else the last two axes, skipping a trailing RGB 'c')."""
    if "y" in axes and "x" in axes:
        return axes.index("y"), axes.index("x")
    n = len(axes) - (1 if axes.endswith("c") else 0)
    return n - 2, n - 1


def mean_dtype(dtype: Any) -> Any:
    """The float type pyramid means of ``dtype`` are taken in."""
    return np.float32 if np.dtype(dtype).itemsize <= 2 else np.float64


def rounded_to(values: np.ndarray, dtype: Any) -> np.ndarray:
    """Means cast back to ``dtype``: integers rounded and clipped to its range (the largest
    float below 2**63 or 2**64 for 64-bit ones, whose maximum a float64 rounds up past)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        top = float(info.max) if dtype.itemsize < 8 else np.nextafter(float(info.max), 0.0)
        values = np.clip(np.rint(values), info.min, top)
    return values.astype(dtype)


def _downsample(arr: Any, iy: int, ix: int, method: str, out_chunks: tuple[int, ...]) -> tuple[Any, list[int]]:
    """2x downsample a dask array along iy, ix; return (array, factor per axis)."""
    import dask.array as da

    factors = [1] * arr.ndim
    for i in (iy, ix):
        factors[i] = 2 if arr.shape[i] >= 2 else 1
    if method == "nearest":
        key = tuple(slice(None, None, f) for f in factors)
        return arr[key].rechunk(out_chunks), factors
    pad = [(0, (arr.shape[i] % 2) if factors[i] == 2 else 0) for i in range(arr.ndim)]
    if any(p[1] for p in pad):
        arr = da.pad(arr, pad, mode="edge")
    arr = arr.rechunk(tuple(c * f for c, f in zip(out_chunks, factors, strict=False)))
    dtype = arr.dtype
    if method == "mean" and dtype.kind != "b":
        work = arr.astype(mean_dtype(dtype))
        out = da.coarsen(np.mean, work, {i: f for i, f in enumerate(factors) if f > 1})
        return out.map_blocks(rounded_to, dtype, dtype=dtype), factors
    func = {"max": np.max, "min": np.min, "mean": np.max}.get(method)
    if func is None:
        raise ValueError(f"unknown pyramid method {method!r} (use 'mean', 'max', 'min' or 'nearest')")
    return da.coarsen(func, arr, {i: f for i, f in enumerate(factors) if f > 1}), factors


def _level_transforms(ds0: dict, ndim: int, total: list[int], method: str) -> list[dict[str, Any]]:
    """Transforms of a level downsampled by ``total`` per axis from dataset 0."""
    s0, t0 = _transforms(ds0.get("coordinateTransformations"), ndim)
    scale = s0 * np.asarray(total, dtype=float)
    shift = 0.0 if method == "nearest" else (np.asarray(total, dtype=float) - 1.0) / 2.0 * s0
    return _transform_list(scale, t0 + shift)


def write_pyramid(path: str | os.PathLike, levels: int | None = None, method: str = "mean") -> list[str]:
    """Add downsampled levels "1", "2", ... to an OME-Zarr written by `create_ome_zarr`.

    Each level is 2x smaller in y and x than the previous one, computed lazily with dask
    from the stored previous level and streamed chunk by chunk. Existing levels above 0
    are replaced.

    Parameters
    ----------
    path : str or os.PathLike
        The OME-Zarr store.
    levels : int, optional
        Number of levels to add; by default, until y and x are both at most 512 pixels.
    method : {"mean", "max", "min", "nearest"}
        Reduction over each 2x2 block; integer means are rounded to the input dtype.

    Returns
    -------
    list of str
        Dataset paths of all levels, "0" first.
    """
    import dask.array as da

    path = os.fspath(path)
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 0):
        raise ImageWriteError(path, f"levels must be a whole number of at least 0 (or None), not {levels!r}")
    try:
        group = zarr.open_group(path, mode="r+")
    except Exception as exc:
        raise ImageWriteError(path, f"cannot open OME-Zarr for writing ({type(exc).__name__}: {exc})") from exc
    attrs = dict(group.attrs)
    multiscales, ome, _ = _multiscales(attrs)
    if not multiscales:
        raise ImageWriteError(path, "not an OME-Zarr image (no multiscales metadata)")
    ms = multiscales[0]
    ds0 = ms["datasets"][0]
    base = group[ds0["path"]]
    axes = "".join(str(a["name"] if isinstance(a, dict) else a)[:1].lower() for a in ms.get("axes", []))
    axes = axes if len(axes) == base.ndim else "".join(str(i) for i in range(base.ndim))
    iy, ix = _spatial_indices(axes)
    for ds in ms["datasets"][1:]:
        if ds["path"] in group:
            del group[ds["path"]]
    datasets, paths = [ds0], [str(ds0["path"])]
    prev = da.from_zarr(base)
    total = [1] * base.ndim
    while _want_level(prev.shape, iy, ix, len(paths) - 1, levels):
        out_chunks = tuple(
            min(c, max(1, (n + 1) // 2 if i in (iy, ix) else n))
            for i, (c, n) in enumerate(zip(base.chunks, prev.shape, strict=False))
        )
        small, factors = _downsample(prev, iy, ix, method, out_chunks)
        key = str(len(paths))
        target = group.create_array(
            key,
            shape=small.shape,
            dtype=base.dtype,
            chunks=out_chunks,
            fill_value=base.fill_value,
            dimension_names=getattr(base.metadata, "dimension_names", None),
            overwrite=True,
        )
        _store(small.rechunk(target.chunks), target, path)
        total = [t * f for t, f in zip(total, factors, strict=False)]
        datasets.append({"path": key, "coordinateTransformations": _level_transforms(ds0, base.ndim, total, method)})
        paths.append(key)
        prev = da.from_zarr(target)
    ms = dict(ms, datasets=datasets)
    if "ome" in attrs:
        group.attrs["ome"] = dict(ome, multiscales=[ms, *multiscales[1:]])
    else:
        group.attrs["multiscales"] = [ms, *multiscales[1:]]
    return paths


def _want_level(shape: Sequence[int], iy: int, ix: int, done: int, levels: int | None) -> bool:
    """Whether to add another level after ``done`` added levels."""
    ny, nx = shape[iy], shape[ix]
    if ny < 2 and nx < 2:
        return False
    if levels is not None:
        return done < levels
    return max(ny, nx) > 512


def _store(arr: Any, target: zarr.Array, path: str) -> None:
    """Stream a dask array into a zarr array chunk by chunk (chunks aligned, no lock)."""
    import dask.array as da

    from .errors import ImageReadError

    try:
        da.store(arr, target, lock=False)
    except (ImageReadError, ImageWriteError):
        raise
    except OSError as exc:
        raise ImageWriteError(path, f"cannot write ({exc.strerror or exc})") from exc


def write_ome_zarr(
    data: Any,
    path: str | os.PathLike,
    axes: str | None = None,
    scale: Sequence[float] | Mapping[str, float] | None = None,
    translate: Sequence[float] | Mapping[str, float] | None = None,
    units: Mapping[str, str] | str | None = None,
    chunks: int | Sequence[int] | None = None,
    pyramid: bool = True,
    overwrite: bool = False,
    name: str | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
    omero: Mapping[str, Any] | None = None,
    rgb: bool | None = None,
    labels: bool = False,
) -> str:
    """Stream a numpy or dask array, or an opened image, into a new OME-Zarr, then add its pyramid.

    The dask array is never computed whole: it is stored chunk by chunk with ``da.store``,
    in `ngff_order` (an RGB image given ``"yxc"`` is stored ``"cyx"``; ``chunks`` are given
    in ``axes`` order).  The group attribute ``attnrestore.complete`` is False until every
    level is written.
    ``extra_attrs``: more group attributes (a GeoTIFF's georeference, kept for a later .tif);
    ``omero``: channel names, colours and windows.  ``data`` may be an image `open_image`
    returned (converting a TIFF: ``write_ome_zarr(open_image("x.tif"), "x.ome.zarr")``): its
    axes, pixel sizes, origin, units, name, channels and a GeoTIFF's georeference and nodata
    go with it, where not given here.  ``rgb``: whether a trailing channel axis of 3 or 4 is
    a colour picture (by default an opened image's own say, else yes; see `create_ome_zarr`).
    ``labels``: a label image (a segmentation), whose pyramid takes every 2nd pixel instead of
    averaging labels.

    Returns
    -------
    str
        ``path``.
    """
    import dask.array as da

    from .geotiff import carried
    from .images import ImageData

    path = os.fspath(path)
    if isinstance(data, ImageData):
        img, data = data, data.to_dask()
        axes, name = axes or img.axes, name or img.name or None
        scale = img.scale if scale is None else scale
        translate = img.translate if translate is None else translate
        units = img.units if units is None else units
        omero = (img.meta.get("ome") or {}).get("omero") if omero is None else omero
        rgb = img.rgb if rgb is None else rgb  # a 4-band MINISBLACK GeoTIFF's bands are no RGBA
        raw = {"cfa": img.meta["cfa"]} if img.meta.get("cfa") else {}  # a raw's Bayer pattern, for demosaicing
        extra_attrs = {**carried(img.meta), **raw, **dict(extra_attrs or {})}
    if not axes:
        raise ImageWriteError(path, "give the axes of the array, one letter per dimension (e.g. 'yx', 'tczyx')")
    axes = axes.lower()
    check_axes(axes, len(data.shape), path)
    # the store it replaces: deleted once the new one is complete, put back if it fails
    aside = set_aside(path) if overwrite and os.path.lexists(path) else None
    try:
        z = create_ome_zarr(
            path,
            data.shape,
            data.dtype,
            chunks,
            axes,
            scale=scale,
            translate=translate,
            units=units,
            name=name,
            overwrite=overwrite,
            extra_attrs={**dict(extra_attrs or {}), "attnrestore": {"complete": False}},
            omero=omero,
            hold_metadata=True,  # a store cut short (a killed process) is no image to other readers
            rgb=rgb,
            labels=labels,
        )
        order = ngff_order(axes)
        arr = data if isinstance(data, da.Array) else da.from_array(data, chunks=tuple(z.chunks[order.index(i)]
                                                                                      for i in range(len(order))))
        _store(da.transpose(arr, order).rechunk(z.chunks), z, path)
        release_ome_metadata(path)
        if pyramid:
            write_pyramid(path, method="nearest" if labels else "mean")
        group = zarr.open_group(path, mode="r+")
        group.attrs["attnrestore"] = {"complete": True}
    except BaseException:  # an unreadable source chunk, a full disk, Ctrl-C: no half store is left,
        try:  # and the store it was to replace is back
            if os.path.lexists(path):
                remove_output(path)
            if aside is not None:
                os.rename(aside, path)
        except (ImageWriteError, OSError):
            pass  # it stays marked incomplete, which the reader refuses (and the old one aside, hidden)
        raise
    if aside is not None:
        discard(aside)
    return path


def read_ome_metadata(path: str | os.PathLike) -> dict:
    """The first NGFF multiscales entry of a zarr group (0.4 or 0.5; or held aside by
    ``create_ome_zarr(hold_metadata=True)``), or ``{}``."""
    try:
        group = zarr.open_group(os.fspath(path), mode="r")
    except Exception:
        return {}
    attrs = dict(group.attrs)
    held = (attrs.get("attnrestore") or {}).get("ome") if isinstance(attrs.get("attnrestore"), dict) else None
    multiscales = _multiscales({"ome": held} if isinstance(held, dict) else attrs)[0]
    return dict(multiscales[0]) if multiscales else {}


def release_ome_metadata(path: str | os.PathLike) -> None:
    """Publish the NGFF metadata ``create_ome_zarr(hold_metadata=True)`` kept aside: from now on
    the store is an image to every reader.  Nothing happens when none is held."""
    group = zarr.open_group(os.fspath(path), mode="r+")
    state = group.attrs.get("attnrestore")
    if not isinstance(state, dict) or not isinstance(state.get("ome"), dict):
        return
    state = dict(state)
    group.attrs["ome"] = state.pop("ome")
    group.attrs["attnrestore"] = state
