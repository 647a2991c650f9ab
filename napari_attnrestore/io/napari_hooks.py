"""npe2 reader and writers. Imports neither napari nor Qt.

The reader gives napari dask arrays (a list of them for pyramids), so nothing is read
until napari shows a region. The writers stream a layer's data (level 0 of a pyramid)
chunk by chunk into OME-Zarr or a tiled TIFF.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..warning import warn
from ._output import backing_stores, no_image, refuse_output_over_input
from .errors import DamagedFileError, UnfinishedOutputError
from .geotiff import carried, georeference_tags
from .images import ImageData, guess_axes, nodata_mask_series, open_image
from .ome_zarr import write_ome_zarr
from .tiff import write_tiff

__all__ = ["layer_axes", "layer_data", "layer_units", "level0", "napari_get_reader", "read_images", "transforms_beyond_scale", "write_labels_ome_zarr_layer", "write_ome_zarr_layer", "write_tiff_layer"]

LayerData = tuple[Any, dict, str]
logger = logging.getLogger(__name__)


def napari_get_reader(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Callable[..., list[LayerData]] | None:
    """Return a reader for ``path`` (or a list of paths, opened as one stack), or None; never raises.

    The files are opened (headers checked) here, so that a file that is no image of ours
    yields None and napari can try another reader or report that none could open it.  An
    unfinished output of ours, or a file cut short or damaged, gets a reader that raises why:
    other readers would show its unwritten chunks as zeros, or a truncated stack's first
    plane as the whole.
    """
    try:
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths:
            return None
        images = _every_image(paths[0]) if len(paths) == 1 else [open_image(p) for p in paths]
    except (UnfinishedOutputError, DamagedFileError) as exc:  # no reader should show it as an image:
        unfinished = exc  # napari shows why it was refused when the reader raises it

        def refuse(_path: Any = None) -> list[LayerData]:
            raise unfinished

        return refuse
    except Exception as exc:  # the contract is: never raise
        logger.debug("napari-attnrestore cannot read %r: %s", path, exc)
        return None

    def reader(_path: Any = None) -> list[LayerData]:
        if len(paths) > 1:
            return [stacked_layer_data(images)]
        return [*map(layer_data, images), *label_layers(images[0]), *nodata_mask_layers(images[0])]

    return reader


def nodata_mask_layers(image: ImageData) -> list[LayerData]:
    """A Labels layer of the pixels without data that a TIFF's internal nodata mask marks
    (GDAL's: 0 there), 1 on them: the Restore widget's inpainting takes it as its mask."""
    which = nodata_mask_series(image.meta, image.path)
    if which is None:
        return []
    try:
        mask = open_image(image.path, series=which)
    except Exception as exc:
        logger.warning("napari-attnrestore: the nodata mask of %s left out: %s", image.path, exc)
        return []
    gaps = (mask.to_dask(0) == 0).astype(np.uint8)
    kwargs = _label_kwargs(mask, multiscale=False)
    kwargs["name"] = f"{image.name} [no data]"
    return [(gaps, kwargs, "labels")]


def _every_image(path: str | os.PathLike) -> list[ImageData]:
    """Each image a file holds: every series of a TIFF holding several (a multi-position
    OME-TIFF's positions, a slide's label and macro pictures), which napari shows as one
    layer each (the first visible); one image for other files."""
    first = open_image(path, series=0)  # (chosen: no warning that the others are left out)
    masks = first.meta.get("nodata_masks") or ()  # (GDAL's internal nodata masks are no images)
    others = [i for i in range(1, int(first.meta.get("n_series") or 1)) if i not in masks]
    if not others:
        first.meta.pop("series", None)  # (a file of one image: nothing to choose)
        return [first]
    return [first, *(open_image(path, series=i) for i in others)]


def read_images(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """Read one or more paths into napari layer data, one layer per path; raise `ImageReadError` on failure."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [layer_data(open_image(p)) for p in paths]


def stacked_layer_data(images: Sequence[ImageData]) -> LayerData:
    """One layer of ``images`` stacked along a new leading axis (napari hands a reader a list
    of paths only to open them as a stack), named t, else z or c, whichever the files lack;
    they must agree in shape, type and axes.  Stays lazy."""
    import dask.array as da

    from .errors import ImageReadError

    first = images[0]
    for img in images[1:]:
        if (img.shape, img.dtype, img.axes, img.rgb) != (first.shape, first.dtype, first.axes, first.rgb):
            raise ImageReadError(img.path, f"cannot be stacked with {first.path}: shape {img.shape} {img.dtype} "
                                           f"'{img.axes}' against {first.shape} {first.dtype} '{first.axes}'")
    layers = [layer_data(img) for img in images]
    _, kwargs, kind = layers[0]
    levels = [ld[0] if isinstance(ld[0], list) else [ld[0]] for ld in layers]
    if len({len(lv) for lv in levels}) > 1:  # pyramids of different depths: their full resolution
        levels = [lv[:1] for lv in levels]
    stack = [da.stack([lv[k] for lv in levels]) for k in range(len(levels[0]))]
    axis = next(ax for ax in "tzc" if ax not in first.axes) if set("tzc") - set(first.axes) else "n"
    metadata = {**kwargs["metadata"], "axes": axis + first.axes, "path": first.path,
                "stacked": [img.path for img in images]}
    kwargs = {**kwargs, "metadata": metadata, "scale": (1.0, *kwargs["scale"]),
              "translate": (0.0, *kwargs["translate"]), "axis_labels": (axis, *kwargs["axis_labels"])}
    if "channel_axis" in kwargs:
        kwargs["channel_axis"] += 1
    if "units" in kwargs:
        kwargs["units"] = ("pixel", *kwargs["units"])  # (the files say nothing of their spacing)
    if len(stack) > 1:
        kwargs["multiscale"] = True
    return stack if len(stack) > 1 else stack[0], kwargs, kind


def label_layers(image: ImageData) -> list[LayerData]:
    """napari Labels layers of the label images an OME-Zarr image holds (its ``labels`` group),
    as napari's OME-Zarr reader gives them; one that cannot be read is logged and left out."""
    import zarr

    ome = image.meta.get("ome")
    if not (isinstance(ome, dict) and "multiscales" in ome and image.path):
        return []
    try:
        attrs = dict(zarr.open_group(os.path.join(image.path, "labels"), mode="r").attrs)
    except Exception:  # none
        return []
    names = (attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs).get("labels")
    out = []
    for name in names if isinstance(names, list) else []:
        where = os.path.join(image.path, "labels", str(name))
        try:
            found = layer_data(open_image(where))
        except Exception as exc:
            logger.warning("napari-attnrestore: label image %s left out: %s", where, exc)
            continue
        if found[2] == "labels":
            out.append(found)
    return out


def _is_label_image(image: ImageData) -> bool:
    """Whether an OME-Zarr image is a label image (NGFF ``image-label``) of integer labels."""
    ome = image.meta.get("ome")
    return (isinstance(ome, dict) and "image-label" in ome and np.dtype(image.dtype).kind in "iub"
            and image.channel_axis is None and not image.rgb)


def layer_data(image: ImageData) -> LayerData:
    """napari ``(data, kwargs, "image")`` for an opened image (``"labels"`` for an OME-Zarr label
    image); data stay lazy (dask)."""
    levels = [image.to_dask(level) for level in range(len(image.levels))]
    if len(levels) == 1:
        levels = _view_pyramid(levels[0], image.axes)
    data = levels if len(levels) > 1 else levels[0]
    if _is_label_image(image):
        return data, _label_kwargs(image, multiscale=len(levels) > 1), "labels"
    drop = set()
    if image.rgb:
        drop.add(image.ndim - 1)
    series = image.meta.get("series")  # one of several images of a TIFF: named so, the first shown at first
    name = image.name if series is None else f"{image.name} [{image.meta.get('series_name') or f'series {series}'}]"
    kwargs: dict[str, Any] = {
        "name": name,
        "rgb": image.rgb,
        "metadata": {"axes": image.axes, "units": dict(image.units), "path": image.path},
    }
    if series is not None:
        kwargs["metadata"]["series"] = series
        kwargs["visible"] = series == 0
    kwargs["metadata"].update(carried(image.meta))  # written again with a restored layer (GeoTIFF output)
    if image.meta.get("cfa"):  # a raw's Bayer pattern, which the Restore widget takes
        kwargs["metadata"]["cfa"] = image.meta["cfa"]
    if image.channel_axis is not None:
        drop.add(image.channel_axis)
        kwargs["channel_axis"] = image.channel_axis
        n = image.shape[image.channel_axis]
        kwargs["name"] = [f"{name} [{i}]" for i in range(n)]
        del kwargs["rgb"]
    kwargs["scale"] = tuple(s for i, s in enumerate(image.scale) if i not in drop)
    kwargs["translate"] = tuple(t for i, t in enumerate(image.translate) if i not in drop)
    kept = [ax for i, ax in enumerate(image.axes) if i not in drop]
    kwargs["axis_labels"] = tuple(kept)  # the dims sliders say t, z, ... instead of -3, -2
    units = _napari_units(image.units, kept)
    if units:  # the scale bar shows micrometres, not pixels
        kwargs["units"] = units
    kwargs.update(_display(image))
    if len(levels) > 1:
        kwargs["multiscale"] = True
    return data, kwargs, "image"


def _label_kwargs(image: ImageData, multiscale: bool) -> dict[str, Any]:
    """A Labels layer's name, geometry, axis labels and units."""
    kwargs: dict[str, Any] = {"name": image.name, "scale": image.scale, "translate": image.translate,
                              "axis_labels": tuple(image.axes),
                              "metadata": {"axes": image.axes, "units": dict(image.units), "path": image.path}}
    units = _napari_units(image.units, list(image.axes))
    if units:
        kwargs["units"] = units
    if multiscale:
        kwargs["multiscale"] = True
    return kwargs


#: planes larger than this (pixels along y or x) are shown through a pyramid of strided views
VIEW_PYRAMID_ABOVE = 4096


def _view_pyramid(base: Any, axes: str) -> list[Any]:
    """``base`` and, when its planes are large, views of every 2nd, 4th, ... pixel down to at
    most 1024 per side: napari draws a large single-level image (a TIFF, a store without
    levels) from the level that fits the screen, instead of reading whole planes into memory."""
    y, x = axes.index("y"), axes.index("x")
    h, w = base.shape[y], base.shape[x]
    levels = [base]
    if max(h, w) <= VIEW_PYRAMID_ABOVE:
        return levels
    step = 2
    while max(h, w) // (step // 2) > 1024:
        index = [slice(None)] * base.ndim
        index[y] = index[x] = slice(None, None, step)
        levels.append(base[tuple(index)])
        step *= 2
    return levels


def _napari_units(units: dict[str, str], axes: Sequence[str]) -> tuple[str, ...] | None:
    """One unit per layer axis that napari (pint) understands, ``pixel`` where none is known;
    None when none is known or one is not understood (napari would refuse the layer)."""
    if not any(ax in units for ax in axes):
        return None
    try:
        import pint

        registry = pint.get_application_registry()
        for ax in axes:
            if ax in units:
                registry.Unit(units[ax])
    except Exception:  # no pint, or a unit it does not know
        return None
    return tuple(units.get(ax, "pixel") for ax in axes)


def _display(image: ImageData) -> dict[str, Any]:
    """Contrast limits, and an OME-Zarr's ``omero`` channel names, colours and visibility.

    Without ``omero`` windows, the limits are the range of a window of at most 1024 x 1024
    pixels of the smallest pyramid level (its middle plane): napari would take them from the
    first plane it shows, which for a stack placed away from the origin lies outside the data
    and gives (0, 1).
    """
    out: dict[str, Any] = {}
    if image.rgb and image.dtype == "uint8":
        return out
    c = image.channel_axis
    n = image.shape[c] if c is not None else 1
    omero = (image.meta.get("ome") or {}).get("omero") or {}
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if isinstance(channels, list) and len(channels) == n and not image.rgb:
        windows = [ch.get("window") or {} for ch in channels]
        if all("start" in w and "end" in w and float(w["end"]) > float(w["start"]) for w in windows):
            out["contrast_limits"] = [[float(w["start"]), float(w["end"])] for w in windows]
        names = [str(ch.get("label") or "") for ch in channels]
        if all(names) and len(set(names)) == n:  # (one channel: an OME-TIFF keeps its layer's name there)
            out["name"] = names
        colours = [_colour(ch.get("color")) for ch in channels]
        if all(colours):
            out["colormap"] = colours  # napari makes a black-to-colour map of "#rrggbb"
        if any("active" in ch for ch in channels):
            out["visible"] = [bool(ch.get("active", True)) for ch in channels]
        if c is None:  # one channel: napari takes single values, not lists
            out = {k: v[0] for k, v in out.items()}
    if "contrast_limits" not in out:
        limits = _sample_limits(image.levels[-1], image, c)
        if limits is not None:
            out["contrast_limits"] = limits
    if image.meta.get("planar_colour") and c is not None and "colormap" not in out:
        out.update(_colour_planes(image, out.get("contrast_limits"), n))
    if image.meta.get("miniswhite") and not image.rgb and "colormap" not in out:
        out["colormap"] = "gray_r"  # a TIFF whose 0 is white (scans, some cameras)
    return out


def _colour_planes(image: ImageData, limits: Any, n: int) -> dict[str, Any]:
    """Red, green and blue maps added together, with one contrast range for the three (a
    range per plane would change the white balance), for a TIFF's separate colour planes;
    a fourth (alpha) plane is hidden."""
    out: dict[str, Any] = {
        "colormap": ["red", "green", "blue", "gray"][:n],
        "blending": "additive",
        "visible": [True, True, True, False][:n],
    }
    if np.dtype(image.dtype) == np.uint8:
        out["contrast_limits"] = [[0.0, 255.0]] * n
    elif limits is not None:
        rgb = limits[:3]
        out["contrast_limits"] = [[min(lo for lo, _ in rgb), max(hi for _, hi in rgb)]] * 3 + limits[3:]
    return out


def _colour(hex_rgb: Any) -> str | None:
    """An ``omero`` channel colour (``"00FF00"``) as napari's ``"#00ff00"``; None if it is not one."""
    text = str(hex_rgb or "").lstrip("#").lower()
    return f"#{text}" if len(text) == 6 and all(ch in "0123456789abcdef" for ch in text) else None


def _sample_limits(level: Any, image: ImageData, c: int | None) -> Any:
    """Finite min and max (per channel along ``c``) of the central window of at most 1024 x 1024
    pixels of the middle plane of ``level``: a few chunks, however large the image.  A
    GeoTIFF's nodata value is left out (a -9999 border washed a DEM out)."""
    if np.dtype(level.dtype) == bool:  # a mask: False and True, whatever a (smallest, OR-ed) level holds
        return [0.0, 1.0] if c is None or image.rgb else [[0.0, 1.0]] * level.shape[c]
    yx = {i for i, ax in enumerate(image.axes) if ax in "yx"} or {level.ndim - 2, level.ndim - 1}
    rgb = level.ndim - 1 if image.rgb else None
    key = []
    for i, n in enumerate(level.shape):
        if i in (c, rgb):
            key.append(slice(None))
        elif i in yx:
            key.append(slice(max(0, n // 2 - 512), max(0, n // 2 - 512) + 1024))
        else:
            key.append(slice(n // 2, n // 2 + 1))
    from .geotiff import gaps_as_nan

    try:
        raw = np.asarray(level[tuple(key)])
    except Exception:  # a damaged chunk: napari will say so when it reads it
        return None
    sample = gaps_as_nan(raw, image.meta.get("nodata"))
    planes = [sample] if c is None else [np.take(sample, i, axis=c) for i in range(sample.shape[c])]
    limits = []
    for p in planes:
        p = p[np.isfinite(p)]
        if p.size == 0:
            return None
        lo, hi = float(p.min()), float(p.max())
        limits.append([lo, hi if hi > lo else lo + 1])
    if image.rgb:
        return [min(lo for lo, _ in limits), max(hi for _, hi in limits)]
    return limits if c is not None else limits[0]


# --------------------------------------------------------------------------- writers


def level0(data: Any) -> Any:
    """Full-resolution data of a layer: level 0 of a multiscale pyramid (a list, a tuple
    or napari's ``MultiScaleData``, all sequences, unlike numpy, dask and zarr arrays)."""
    if isinstance(data, Sequence) and not isinstance(data, str):
        return data[0]
    return data


def layer_axes(shape: Sequence[int], meta: dict) -> tuple[str, bool]:
    """Axes letters for a layer (``meta``: its state, as writers get it): from our reader's
    metadata when they fit, else napari's ``axis_labels`` when they are t/c/z/y/x, else guessed
    (a leading axis with a time unit is ``t``)."""
    rgb = bool(meta.get("rgb", False))
    axes = (meta.get("metadata") or {}).get("axes")
    ndim = len(shape)
    if isinstance(axes, str) and len(axes) == ndim + 1 and "c" in axes and not axes.endswith("c"):
        axes = axes.replace("c", "")  # one channel of a layer split by channel_axis
    if isinstance(axes, str) and len(axes) == ndim and len(set(axes)) == ndim:
        if rgb and not axes.endswith("c"):
            return guess_axes(shape, rgb=True)
        return axes, rgb
    rgb = rgb if ndim >= 3 and shape[-1] in (3, 4) else False
    labels = axes_of_labels(meta.get("axis_labels"), ndim - int(rgb))
    if labels is not None:
        return labels + ("c" if rgb else ""), rgb
    guessed, rgb = guess_axes(shape, rgb=rgb)
    return _time_axis_by_unit(guessed, rgb, meta.get("units")), rgb


def axes_of_labels(axis_labels: Sequence[Any] | None, ndim: int) -> str | None:
    """napari's ``axis_labels`` as axis letters when they name ``ndim`` axes with t, c, z, y, x
    (each once, y and x last); None for napari's default labels or others."""
    labels = "".join(str(a).lower() for a in axis_labels or ())
    if len(labels) == ndim and len(set(labels)) == ndim and set(labels) <= set("tczyx") and labels.endswith("yx"):
        return labels
    return None


_TIME_UNITS = {"second", "millisecond", "microsecond", "nanosecond", "minute", "hour", "day", "s", "ms", "min", "h"}


def _time_axis_by_unit(axes: str, rgb: bool, units: Any) -> str:
    """Guessed axes with the one leading axis napari gives a time unit named ``t`` (a
    ``tyx`` layer is otherwise guessed ``zyx``, and would be written as space in seconds)."""
    lead = axes[:-3] if rgb else axes[:-2]
    names = [str(u) for u in (units or ())]
    if not lead or len(names) != len(axes) - int(rgb):
        return axes
    timed = [i for i in range(len(lead)) if names[i] in _TIME_UNITS]
    if len(timed) != 1:
        return axes
    others = [ax for ax in lead if ax != "t"]
    others = (others + [ax for ax in "zc" if ax not in others])[: len(lead) - 1]
    new_lead = [*others[:timed[0]], "t", *others[timed[0]:]]
    return "".join(new_lead) + axes[len(lead):]


def _layer_geometry(meta: dict, axes: str, rgb: bool, key: str, default: float) -> list[float]:
    """Scale or translate per axis from napari's layer attributes (no RGB entry there)."""
    given = meta.get(key)
    values = [float(v) for v in (() if given is None else given)]  # a list, a tuple or a numpy array
    n = len(axes) - (1 if rgb else 0)
    values = values[-n:] if len(values) >= n else [default] * (n - len(values)) + values
    return values + ([default] if rgb else [])


def layer_units(meta: dict, axes: str, rgb: bool) -> dict[str, str]:
    """Units per axis letter: from our reader's metadata, else from napari's layer ``units``
    (one per layer axis, none for RGB; ``pixel`` where none was set)."""
    units = (meta.get("metadata") or {}).get("units") or {}
    if isinstance(units, dict) and units:
        return {ax: str(u) for ax, u in units.items() if ax in axes}
    spatial = axes[:-1] if rgb else axes
    given = [str(u) for u in (meta.get("units") or ())][-len(spatial):]
    return {ax: u for ax, u in zip(spatial[-len(given):], given, strict=True) if u not in ("", "pixel")} if given else {}


def _as_dask(data: Any) -> Any:
    """A dask view of the data without loading it."""
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    chunks = "auto" if hasattr(data, "__array__") else None
    return da.from_array(data, chunks=chunks)


def transforms_beyond_scale(meta: dict) -> list[str]:
    """The transforms placing a layer (its state's ``rotate``, ``shear``, ``affine``) beyond
    scale and translate, which neither OME-Zarr nor TIFF can hold: a rotation, a shear, an
    affine that is not the identity."""
    found = []
    for key, rest in (("rotate", "identity"), ("shear", "zeros"), ("affine", "identity")):
        value = meta.get(key)
        if value is None:
            continue
        value = np.asarray(value, dtype=float)
        plain = np.eye(*value.shape) if rest == "identity" and value.ndim == 2 else np.zeros_like(value)
        if value.shape == plain.shape and not np.allclose(value, plain):
            found.append({"rotate": "rotation", "shear": "shear", "affine": "affine transform"}[key])
    return found


def _layer_output(data: Any, meta: dict) -> tuple[Any, str, dict[str, Any]]:
    """The layer's level-0 data as dask, its axes, and the writers' keywords: geometry and channels."""
    unsaved = transforms_beyond_scale(meta)
    if unsaved:
        warn(f"{meta.get('name') or 'the layer'}: its {' and '.join(unsaved)} is not saved (OME-Zarr and "
             "TIFF hold pixel size and origin only); the file reopens without it")
    arr = _as_dask(level0(data))
    axes, rgb = layer_axes(arr.shape, meta)
    units = layer_units(meta, axes, rgb)
    # a file read here records its units, none for an uncalibrated one: its sizes (halved by
    # super-resolution) are pixels, not micrometers; a scale typed into napari without units
    # is taken in micrometers (seconds for t), for the axes whose scale it sets
    read_here = "units" in (meta.get("metadata") or {})
    scale = _layer_geometry(meta, axes, rgb, "scale", 1.0)
    if not (units or read_here):  # said explicitly, so that OME-Zarr and TIFF record the same
        units = {ax: "second" if ax == "t" else "micrometer" for ax, v in zip(axes, scale, strict=True)
                 if ax in "tzyx" and v != 1.0}
        units = units or None
    return arr, axes, {
        "scale": scale,
        "translate": _layer_geometry(meta, axes, rgb, "translate", 0.0),
        "units": units,
        "omero": layer_omero(meta, axes, rgb, arr.shape, arr.dtype),  # the channel's name and colour
    }


def layer_omero(meta: dict, axes: str, rgb: bool, shape: Sequence[int], dtype: Any) -> dict[str, Any] | None:
    """NGFF ``omero`` channel metadata to save with a layer.

    A layer of one channel (napari shows each channel of a file as its own layer) is saved
    with its name, colour, contrast window and visibility; a layer holding a channel axis
    keeps its source's channels when they are as many.
    """
    if rgb:
        return None
    if "c" in axes:
        omero = ((meta.get("metadata") or {}).get("ome") or {}).get("omero")
        channels = omero.get("channels") if isinstance(omero, dict) else None
        return omero if isinstance(channels, list) and len(channels) == shape[axes.index("c")] else None
    channel: dict[str, Any] = {"label": str(meta.get("name") or ""), "active": bool(meta.get("visible", True))}
    colour = _colormap_colour(meta.get("colormap"))
    if colour:
        channel["color"] = colour
    limits = meta.get("contrast_limits")
    if limits is not None and len(limits) == 2 and all(np.isfinite(float(v)) for v in limits):
        start, end = (float(v) for v in limits)
        kind = np.dtype(dtype)
        lo, hi = (float(np.iinfo(kind).min), float(np.iinfo(kind).max)) if kind.kind in "iu" else (start, end)
        channel["window"] = {"min": min(lo, start), "max": max(hi, end), "start": start, "end": end}
    return {"channels": [channel]} if channel["label"] or colour else None


#: napari's black-to-colour maps by name, as ``omero`` colours
_COLORMAPS = {"gray": "FFFFFF", "grey": "FFFFFF", "red": "FF0000", "green": "00FF00", "blue": "0000FF",
              "cyan": "00FFFF", "magenta": "FF00FF", "yellow": "FFFF00"}


def _colormap_colour(colormap: Any) -> str | None:
    """The colour (``"00FF00"``) of a napari black-to-colour map: its name (or ``"#00ff00"``),
    or the map itself as a layer's data tuple gives it to writers (a dict of its name and
    colours); None for other maps."""
    if isinstance(colormap, dict):
        return _colormap_colour(colormap.get("name")) or _black_to_colour(colormap.get("colors"))
    text = str(colormap or "").lower()
    if text in _COLORMAPS:
        return _COLORMAPS[text]
    hex_rgb = _colour(text) if text.startswith("#") else None
    return hex_rgb[1:].upper() if hex_rgb else None


def _black_to_colour(colors: Any) -> str | None:
    """The end colour of a two-stop map from black (RGB(A) rows in 0-1), else None."""
    try:
        stops = np.asarray(colors, dtype=float)
    except (TypeError, ValueError):
        return None
    if stops.shape not in ((2, 3), (2, 4)) or np.abs(stops[0, :3]).max() > 1e-6 or not np.isfinite(stops).all():
        return None
    return "".join(f"{round(float(v) * 255):02X}" for v in np.clip(stops[1, :3], 0, 1))


def _refuse_writing_over_the_source(path: str, data: Any, meta: dict) -> None:
    """The layer's pixels are read lazily from its file or store while the output is written:
    refuse to replace them (its reader's ``path``, or the zarr store behind any reader's data).
    A layer that holds no image (one dimension, no pixels, no numbers) is refused too."""
    from .errors import ImageWriteError

    base = level0(data)
    problem = no_image(getattr(base, "shape", ()), getattr(base, "dtype", object))
    if problem:
        raise ImageWriteError(path, f"the layer holds no image to save: {problem}")
    source = (meta.get("metadata") or {}).get("path")
    stacked = list((meta.get("metadata") or {}).get("stacked") or [])  # the files of a stack opened as one layer
    refuse_output_over_input(path, ([source] if source else []) + stacked + backing_stores(data))


def _layer_read_errors_as_write_errors(writer: Callable[[str, Any, dict], list[str]]) -> Callable[[str, Any, dict], list[str]]:
    """napari takes a ValueError from a writer (our ImageReadError is one: a damaged chunk of
    the layer's source) for "not a valid writer" and hides it; say it as the write's error."""
    import functools

    from .errors import ImageReadError, ImageWriteError

    @functools.wraps(writer)
    def write(path: str, data: Any, meta: dict) -> list[str]:
        try:
            return writer(path, data, meta)
        except ImageReadError as exc:
            raise ImageWriteError(path, f"cannot read the layer's pixels: {exc}") from exc

    return write


@_layer_read_errors_as_write_errors
def write_ome_zarr_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: image layer -> OME-Zarr (NGFF 0.5) with pyramid."""
    _refuse_writing_over_the_source(path, data, meta)
    arr, axes, geometry = _layer_output(data, meta)
    write_ome_zarr(arr, path, axes, name=meta.get("name"), overwrite=True,  # a GeoTIFF's: a GeoTIFF again as .tif
                   extra_attrs=carried(meta.get("metadata") or {}), **geometry)
    return [path]


@_layer_read_errors_as_write_errors
def write_labels_ome_zarr_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: Labels layer -> an OME-Zarr label image (NGFF ``image-label``),
    which this reader opens as Labels again (a mask drawn for inpainting, a segmentation)."""
    _refuse_writing_over_the_source(path, data, meta)
    arr, axes, geometry = _layer_output(data, {**meta, "rgb": False})
    write_ome_zarr(arr, path, axes, name=meta.get("name"), overwrite=True, labels=True,
                   **{**geometry, "omero": None})  # (a label colormap is no channel colour)
    return [path]


@_layer_read_errors_as_write_errors
def write_tiff_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: image layer -> tiled BigTIFF (OME-TIFF for .ome.tif)."""
    _refuse_writing_over_the_source(path, data, meta)
    arr, axes, geometry = _layer_output(data, meta)
    # the origin: OME-TIFF's plane positions, ImageJ's or tifffile's description, a GeoTIFF's tags
    md = meta.get("metadata") or {}
    geo = georeference_tags(md.get("geotiff"), (arr.shape[axes.index("y")], arr.shape[axes.index("x")]), arr.dtype,
                            md.get("nodata"))
    write_tiff(arr, path, axes, overwrite=True, extratags=geo, **geometry)
    return [path]
