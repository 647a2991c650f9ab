"""The Python API: ``restore``, ``restore_to_zarr``, ``load_model``, ``build_model``, ...

Everything here is also what the CLI and the napari widgets call.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
from torch import nn

from .engine import ModelHandle, make_plan, restore_array
from .engine.plan import AUTO, DEFAULT_CHUNK, NoDataError, whole_number
from .io.geotiff import nodata_can_occur
from .io.images import nodata_mask_series
from .io.ome_zarr import ngff_order, omero_in_dtype
from .models import build_model, list_architectures
from .tasks import get_task
from .training.checkpoint import CheckpointError, load_checkpoint, load_state, load_training_state_model
from .training.session import save_model, train
from .warning import warn
from .zoo import list_models, resolve_weight

log = logging.getLogger("attnrestore")

__all__ = ["as_source", "build_model", "list_architectures", "list_models", "load_model", "resolve_model", "restore", "restore_to_zarr", "save_model", "train"]


def load_model(name_or_path: str | os.PathLike | None = None, task: str | None = None,
               scale: int | None = None) -> nn.Module:
    """Load trained weights: ``default:<task>``, a shipped weight's name, or a file.

    None: the default of ``task`` (``denoise`` when none is given; x2 for ``sr`` unless
    ``scale`` says 4).

    Files: a project checkpoint (``.safetensors`` with its ``.json`` card; the card's path
    loads the weights next to it), a training state of :func:`train` (its EMA weights), or a
    third-party checkpoint (HAT, GRL, SwinIR, ... ``.pth``/``.safetensors``) read
    safely and recognised by spandrel.  Pickled code is never executed.
    """
    if name_or_path is None:
        t = get_task(task or "denoise")
        name_or_path = f"default:{t.name}"
        scale = t.check_scale(scale) if t.name == "sr" else scale
    s = str(name_or_path)
    if not s.strip():
        known = ", ".join(m["name"] for m in list_models()) or "none"
        raise ValueError(f"no model named (an empty name); shipped models: {known}; or give a checkpoint file")
    files = (".pth", ".pt", ".safetensors", ".ckpt", ".json")
    shipped = resolve_weight(s, task, scale) if os.path.sep not in s and not s.endswith(files) else None
    if shipped is not None:
        return load_checkpoint(shipped, task=get_task(task).name if task else None, scale=scale)
    p = Path(s)
    if not p.exists():
        if s.startswith("default") or (os.path.sep not in s and "." not in s):
            known = ", ".join(m["name"] for m in list_models()) or "none"
            raise ValueError(f"unknown model {s!r}; shipped models: {known}; or give a checkpoint file")
        if os.path.sep not in s and resolve_weight(p.stem) is not None:  # a shipped name with its extension
            raise CheckpointError(f"{p}: checkpoint not found; the shipped model is named {p.stem!r}, without "
                                  f"{p.suffix}")
        raise CheckpointError(f"{p}: checkpoint not found")
    if p.suffix == ".json":  # a model card: the weights it describes lie next to it
        weights = p.with_suffix(".safetensors")
        if not weights.exists():
            raise CheckpointError(f"{p}: a model card, not weights; its weights {weights.name} are not next to it")
        p = weights
    if p.with_suffix(".json").exists() and p.suffix == ".safetensors":
        return load_checkpoint(p, task=get_task(task).name if task else None, scale=scale)
    ours = _our_weights_without_card(p)
    if ours:  # (it was taken for a third-party checkpoint, and spandrel was asked for)
        raise CheckpointError(f"{p}: attnrestore weights ({ours}) whose model card {p.with_suffix('.json').name} is "
                              "not next to them; keep the card (it holds the network's configuration) with the weights")
    contents = load_state(p)  # read once (a published .pth may be hundreds of MB); refuses pickled code
    if p.suffix in (".pt", ".pth", ".ckpt"):  # a training state of ar.train: its EMA weights
        state_model = load_training_state_model(p, task=get_task(task).name if task else None, scale=scale,
                                                contents=contents)
        if state_model is not None:
            return state_model
    return load_third_party(p, scale=scale, contents=contents)


def _our_weights_without_card(path: Path) -> str | None:
    """What a .safetensors file saved by this package says it holds ("hat, denoise"), or None
    for any other file."""
    if path.suffix != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("attnrestore", "null"))
    except Exception:  # not readable as safetensors: load_state names the problem
        return None
    if not isinstance(meta, dict):
        return None
    return ", ".join(str(meta[k]) for k in ("arch", "task") if meta.get(k)) or "no architecture named"


class SpandrelModule(nn.Module):
    """A third-party network loaded by spandrel, with the attributes the engine reads."""

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        self.net = descriptor.model
        self.arch = f"{descriptor.architecture.name} (spandrel)"
        self.in_channels = int(descriptor.input_channels)
        self.out_channels = int(descriptor.output_channels)
        self.scale = int(descriptor.scale)
        req = descriptor.size_requirements
        self.multiple_of = int(getattr(req, "multiple_of", 1) or 1)
        self.halo = 32
        self.half_safe = bool(descriptor.supports_bfloat16)
        self.tiling = str(descriptor.tiling)

    def forward(self, x):
        return self.net(x)


def load_third_party(path: Path, scale: int | None = None, contents: Any = None) -> nn.Module:
    """Load a published checkpoint through spandrel, reading tensors only (``contents``: what
    :func:`load_state` already read of it)."""
    state = load_state(path) if contents is None else contents  # refuses pickled code before anything else
    try:
        import spandrel
    except ImportError:
        raise CheckpointError(
            f"{path}: no model card next to it, so it would be read as a third-party checkpoint, which "
            "needs spandrel: pip install 'napari-attnrestore[thirdparty]'"
        ) from None
    if isinstance(state, dict):
        for k in ("params_ema", "params", "state_dict", "model"):
            if k in state and isinstance(state[k], dict):
                state = state[k]
                break
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(state)
    except Exception as e:  # spandrel raises UnsupportedModelError and friends
        raise CheckpointError(f"{path}: not a checkpoint of a known architecture ({e})") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise CheckpointError(f"{path}: not an image-to-image restoration model")
    mod = SpandrelModule(desc).eval()
    if scale is not None and mod.scale != int(scale):
        raise CheckpointError(f"{path}: checkpoint is for scale {mod.scale}, not {scale}")
    return mod


def resolve_model(
    model: Any = None, task: str = "denoise", scale: int | None = None, device: str = "auto", precision: str = "auto",
    compile: bool = False, ensemble: bool = False,
) -> ModelHandle:
    """A :class:`ModelHandle` from None (the task's default), a name/path, or an nn.Module.

    A given handle is returned as it is, except that ``compile=True`` / ``ensemble=True``
    switch compiling / the self-ensemble on.
    """
    if isinstance(model, ModelHandle):
        model.compile = model.compile or compile
        model.ensemble = model.ensemble or ensemble
        return model
    t = get_task(task)
    if isinstance(model, nn.Module):  # the caller's: run a copy, the module itself left as it is
        return ModelHandle(_own_copy(model), device=device, precision=precision, compile=compile, ensemble=ensemble)
    if model is None:
        model = f"default:{t.name}"
        if t.name == "sr" and scale is None:
            scale = 2  # a named or given model keeps its own scale
    mod = load_model(model, task=t.name, scale=scale if t.name == "sr" else None)
    card = getattr(mod, "card", None)
    ckpt = str(model) if card is None else card.get("name", str(model))
    return ModelHandle(mod, device=device, precision=precision, checkpoint=ckpt, compile=compile, ensemble=ensemble)


def _unmasked(x: np.ma.MaskedArray, task: str, mask: Any) -> tuple[np.ndarray, Any]:
    """A numpy masked array's pixels, its masked ones as gaps: the inpainting mask (unless one
    is given), NaN for other tasks (no data: the result's fill value).  Its mask was ignored,
    and the masked pixels restored as data."""
    data, masked = np.ma.getdata(x), np.ma.getmaskarray(x)
    if not masked.any():
        return data, mask
    if task == "inpaint":
        if mask is not None:
            raise ValueError("the gaps are given twice: as the masked array's mask and as mask=; give one")
        return data, masked
    if data.dtype.kind != "f":
        raise ValueError(f"a masked {data.dtype} array: its masked pixels cannot be marked as no data (integers hold "
                         "no NaN); give x.filled(value) with nodata=value, or a float array")
    return np.where(masked, np.nan, data), mask


def _own_copy(module: nn.Module) -> nn.Module:
    """A copy of a caller's module, its weights in float32, for the engine to put in eval mode
    and move to its device: the caller's module went on training in eval mode (dropout off)
    or ended up on the GPU, and one in float16 failed on a float32 input.  Forward hooks run
    on the copy.  A module that cannot be copied is used itself (float32 weights and eval mode from
    then on)."""
    try:
        copy_ = copy.deepcopy(module)
    except Exception:
        copy_ = module
    other = {p.dtype for p in copy_.parameters() if p.is_floating_point() and p.dtype != torch.float32}
    if other:  # weights in float16 (bfloat16, float64): float32, and the arithmetic is the precision option's
        copy_._apply(lambda t: t.float() if t.dtype in other else t)  # (a float64 buffer of float32 weights stays)
    return copy_


def as_source(x: Any, stored: bool = False) -> tuple[Any, dict[str, Any]]:
    """The pixel source for ``x`` (array-like or dask array) and its metadata.

    Paths are opened lazily with :func:`napari_attnrestore.io.open_image`, and an image it
    opened (``open_image(path, series=2)``) is used with its file's metadata; ``stored``: an
    RGB OME-Zarr stored ``cyx`` as those channels, not as the channel-last picture it is shown as.
    """
    from .io import GuardedArray, ImageData, as_dask, open_image

    if isinstance(x, (str, os.PathLike, ImageData)):
        img = x if isinstance(x, ImageData) else open_image(x)
        img = img.as_stored() if stored else img
        rgb = img.rgb and not stored  # rgb=False or a channel axis: an RGB file's samples are its channels
        meta = {"axes": img.axes, "scale": img.scale, "translate": img.translate, "units": img.units, "rgb": rgb,
                "channel_axis": img.channel_axis if rgb == img.rgb else img.axes.rfind("c"), "name": img.name,
                "path": img.path, "series": img.meta.get("series"),  # the image of a TIFF holding several
                "nodata_masks": img.meta.get("nodata_masks"),  # GDAL internal masks' series
                "nodata": img.meta.get("nodata"),  # a GeoTIFF's GDAL_NODATA marks pixels without data
                "geotiff": img.meta.get("geotiff"),
                "planar_colour": bool(img.meta.get("planar_colour")),  # a TIFF's separate R, G, B planes
                "palette": bool(img.meta.get("palette")),  # a TIFF's colour indices
                "miniswhite": bool(img.meta.get("miniswhite")),  # a TIFF whose 0 is white
                "cfa": img.meta.get("cfa"),  # a raw TIFF's Bayer pattern
                "alpha": bool(img.meta.get("alpha")),  # gray + alpha: the second sample is opacity
                "omero": (img.meta.get("ome") or {}).get("omero")}  # an OME-Zarr's channel names and colours
        order = ngff_order(img.axes, rgb)  # zcyx (ImageJ, OME-TIFF), a trailing non-RGB channel
        if order != tuple(range(len(order))):
            return _reordered(as_dask(img.data, img.axes, img.path), meta, order)
        data = img.data if isinstance(img.data, (np.ndarray, da.Array)) else GuardedArray(img.data, img.path)
        return data, meta
    if isinstance(x, da.Array):
        if any(np.isnan(n) for n in x.shape):
            raise ValueError(f"a dask array of unknown shape {x.shape} (chunk sizes unknown, as after boolean "
                             "indexing); call .compute_chunk_sizes() on it first")
        return x, {}
    if isinstance(x, torch.Tensor):  # a tensor from the user's own pipeline: its values, on the CPU
        return x.detach().cpu().numpy(), {}
    if hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__"):
        return x, {}
    if isinstance(x, (list, tuple)):
        if any(isinstance(v, (str, os.PathLike)) for v in x):
            raise TypeError(f"restore takes one image, not a list of {len(x)} paths: restore each file on its own "
                            "(ar.train takes lists)")
        try:
            return np.asarray(x), {}
        except ValueError:  # arrays of different shapes
            shapes = ", ".join(str(np.shape(v)) for v in x[:4]) + (", ..." if len(x) > 4 else "")
            raise ValueError(f"a list of arrays is restored as one stack, and these differ in shape ({shapes}); "
                             "restore each on its own") from None
    raise TypeError(f"cannot restore an object of type {type(x).__name__}; give an array, a dask/zarr array or a path")


def _warn_mask_elsewhere(image: dict[str, Any], mask: dict[str, Any]) -> None:
    """Warn when a mask GeoTIFF lies elsewhere than the image GeoTIFF (another pixel size or
    origin): its pixels are taken one for one, and a mask of another place, with as many
    pixels, was used without a word."""
    if not (image.get("geotiff") and mask.get("geotiff")):
        return  # (a plain mask file says nothing of where it lies)
    ours = [*image["scale"][-2:], *image["translate"][-2:]]
    theirs = [*mask["scale"][-2:], *mask["translate"][-2:]]
    if not np.allclose(np.array(ours, float), np.array(theirs, float), rtol=1e-6, atol=1e-3 * abs(float(ours[0]))):
        said = lambda v: ", ".join(f"{float(x):g}" for x in v)  # noqa: E731
        warn(f"{mask.get('path')}: the mask lies elsewhere than the image (pixel size {said(theirs[:2])}, origin "
             f"{said(theirs[2:])} against {said(ours[:2])}, {said(ours[2:])}) but is taken pixel for pixel; give a "
             "mask on the image's grid")


#: windows per side (and their size) in which :func:`_value_under_mask` compares the pixels
#: an internal nodata mask marks with the others
MASK_WINDOWS, MASK_WINDOW = 4, 256


def _value_under_mask(src: Any, meta: dict[str, Any], series: int) -> float | None:
    """The one value the pixels a TIFF's internal nodata mask marks hold (GDAL writes 0 there)
    in windows across the image, when no pixel with data there holds it; else None (several
    values, as under JPEG, or none sampled).  Each window's first plane is read."""
    from .io import open_image

    mask = open_image(meta["path"], series=series).data
    rgb = bool(meta.get("rgb"))
    ny, nx = (src.shape[-3], src.shape[-2]) if rgb else (src.shape[-2], src.shape[-1])
    if tuple(mask.shape[-2:]) != (ny, nx):
        return None
    lead = (0,) * (len(src.shape) - (3 if rgb else 2))
    under, valid = set(), []
    for y in np.linspace(0, max(ny - MASK_WINDOW, 0), MASK_WINDOWS).astype(int):
        for x in np.linspace(0, max(nx - MASK_WINDOW, 0), MASK_WINDOWS).astype(int):
            win = (slice(y, y + MASK_WINDOW), slice(x, x + MASK_WINDOW))
            gaps = np.asarray(mask[(0,) * (mask.ndim - 2) + win]) == 0
            pixels = np.asarray(src[lead + win])
            if rgb:
                gaps = np.repeat(gaps[..., None], pixels.shape[-1], axis=-1)
            under.update(np.unique(pixels[gaps]).tolist())
            valid.append(pixels[~gaps])
            if len(under) > 1:
                return None
    if len(under) != 1:
        return None
    value = under.pop()
    return None if np.isnan(value) or np.any(np.concatenate(valid) == value) else float(value)


def _is_file(x: Any) -> bool:
    """Whether ``x`` is a file: a path, or an image :func:`~napari_attnrestore.io.open_image` opened."""
    from .io import ImageData

    return isinstance(x, (str, os.PathLike)) or (isinstance(x, ImageData) and bool(x.path))


def _file_of(x: Any) -> str | os.PathLike:
    """The path of a file input (:func:`_is_file`)."""
    return x if isinstance(x, (str, os.PathLike)) else x.path


def _reordered(data: da.Array, meta: dict[str, Any], order: Sequence[int]) -> tuple[da.Array, dict[str, Any]]:
    """``data`` and its metadata with the axes put in ``order`` (``source_order`` keeps it)."""
    axes = "".join(meta["axes"][i] for i in order)
    channel = meta["channel_axis"]
    meta = {**meta, "axes": axes, "channel_axis": None if channel is None else order.index(channel),
            "scale": tuple(meta["scale"][i] for i in order), "translate": tuple(meta["translate"][i] for i in order),
            "source_order": order}
    return data.transpose(order), meta


def _stored_shape(shape: Sequence[int], order: Sequence[int]) -> tuple[int, ...]:
    """The shape of an image as stored (a file, the caller's array), from ``shape`` read in
    ``order`` (``source_order``)."""
    return tuple(int(shape[order.index(i)]) for i in range(len(order)))


def _in_file_order(mask: Any, shape: tuple[int, ...], order: Sequence[int]) -> Any:
    """An array mask shaped as a reordered file is stored (an ImageJ tzcyx hyperstack), put
    in the order the file is read in, as a mask file of that layout is; other masks as given."""
    if tuple(mask.shape) != _stored_shape(shape, order):
        return mask  # (y, x) broadcast, or already in the order read: make_plan checks it
    from .io import as_dask

    return as_dask(mask).transpose(order)


def single_channel_mosaic(task: str, src: Any, meta: dict[str, Any],
                          channel_axis: int | None) -> tuple[Any, dict[str, Any], int | None]:
    """A mosaic stored with a channel axis of one (tczyx, cyx, as bioformats2raw writes it)
    without that axis, for ``demosaic``: the colours of the result take its place (a 6th
    axis is more than an OME-Zarr may have).  Other tasks and images are returned as given."""
    if task != "demosaic" or channel_axis is None or src.shape[channel_axis] != 1:
        return src, meta, channel_axis
    return (*_without_axis(src, meta, channel_axis % len(src.shape)), None)


def _without_axis(src: Any, meta: dict[str, Any], axis: int) -> tuple[da.Array, dict[str, Any]]:
    """``src`` without its length-1 ``axis`` (not negative), and its metadata without that axis."""
    from .io import as_dask

    data = src if isinstance(src, da.Array) else as_dask(src, meta.get("axes"))
    drop = lambda values: tuple(v for i, v in enumerate(values) if i != axis)  # noqa: E731
    meta = {**meta, "channel_axis": None, "source_order": None,
            **{k: drop(meta[k]) for k in ("scale", "translate") if meta.get(k) is not None}}
    if isinstance(meta.get("axes"), str) and len(meta["axes"]) == data.ndim:
        meta["axes"] = "".join(drop(meta["axes"]))
    return data[(slice(None),) * axis + (0,)], meta


def _array_in_ngff_order(src: Any, meta: dict[str, Any], rgb: bool | None) -> tuple[Any, dict[str, Any]]:
    """An array with named ``axes`` (``meta``) put in NGFF order, its channel axis named."""
    axes, n = meta["axes"].lower(), len(src.shape)
    if len(axes) != n:
        raise ValueError(f"axes {axes!r} name {len(axes)} axes; the image has {n}: {tuple(src.shape)}")
    if set(axes) - set("tczyx") or len(set(axes)) != n or not {"y", "x"} <= set(axes):
        raise ValueError(f"axes {axes!r}: name each axis once with t, c, z, y or x; y and x are needed")
    trailing_rgb = axes.endswith("c") and (rgb if rgb is not None else src.shape[-1] in (3, 4))
    meta = {"scale": (1.0,) * n, "translate": (0.0,) * n, **meta, "axes": axes, "rgb": bool(trailing_rgb),
            "channel_axis": None if trailing_rgb or "c" not in axes else axes.index("c")}
    order = ngff_order(axes, trailing_rgb)
    if order == tuple(range(n)):
        return src, meta
    from .io import as_dask

    return _reordered(src if isinstance(src, da.Array) else as_dask(src, axes), meta, order)


def channel_named(axes: str, channel_axis: int) -> str:
    """``axes`` with the letter of ``channel_axis`` made ``c`` (a band stack's pages, read as
    ``t``), unless the axes name a channel axis already or that axis is y or x."""
    if "c" in axes or not -len(axes) <= channel_axis < len(axes):
        return axes
    i = channel_axis % len(axes)
    return axes if axes[i] in "yx" else axes[:i] + "c" + axes[i + 1:]


def _axes_with_channel(shape: tuple[int, ...], channel_axis: int) -> str | None:
    """Axis letters of an array with a channel axis given where the layout guess has y or x
    (a ``(Y, X, C)`` array of 2 or 5 channels); None when the guess agrees."""
    from .io import guess_axes

    n = len(shape)
    if not -n <= channel_axis < n:
        return None  # make_plan names the axis that is not one
    c = channel_axis % n
    rest = shape[:c] + shape[c + 1 :]
    if c < n - 2 or not 2 <= len(rest) <= 4:
        return None
    axes, _ = guess_axes(rest, rgb=False)
    return axes[:c] + "c" + axes[c:]


def _native_chunks(src: Any) -> tuple[int, ...] | None:
    """The source's unit of reading: its chunks, or a sharded zarr's shards when they are no
    larger than a default chunk (chunks of its 100-px inner chunks came out 1024 + 176, each
    reading several shards; the inner chunks of larger shards are read on their own)."""
    if isinstance(src, da.Array):
        return tuple(c[0] for c in src.chunks)
    ch = getattr(src, "chunks", None)
    shards = getattr(src, "shards", None)
    if shards and max(tuple(shards)[-2:]) <= DEFAULT_CHUNK:
        ch = tuple(shards)
    if isinstance(ch, tuple) and all(isinstance(c, int) for c in ch):
        return ch
    return None


def _sampler(src: Any):
    """Reads the small windows the global statistics are computed from."""
    if isinstance(src, da.Array):
        return lambda key: src[key].compute()
    if isinstance(src, np.ndarray):
        return lambda key: src[key]
    from .io import read_region

    return lambda key: read_region(src, key)  # a corrupt chunk is named, not a traceback


def _prepare(
    x: Any, task: str, model: Any, scale: int | None, tile: int | str | None, overlap: int | None,
    batch: int | str | None,
    chunks: int | tuple[int, int] | None, device: str, precision: str, rgb: bool | None, channel_axis: int | None,
    normalize: str | tuple[float, float] | list[tuple[float, float]], dtype: Any, meta: dict[str, Any] | None = None, mask: Any = None, nodata: float | None = None,
    cfa: str | None = None, compile: bool = False, ensemble: bool = False, invert_mask: bool = False,
    white_level: float | None = None,
) -> tuple[Any, dict[str, Any], ModelHandle, Any, Any]:
    """Source, metadata, model handle, plan and mask source shared by :func:`restore` and
    :func:`restore_to_zarr`."""
    tname = get_task(task).name
    if scale is not None:  # 2.0 is 2; 2.5, "x2" or 1 for sr are one clear error
        scale = whole_number("scale", scale, 1)
        if tname == "sr":
            scale = get_task("sr").check_scale(scale)
    if tname != "sr" and scale not in (None, 1):
        raise ValueError(f"scale {scale} is for super-resolution (task 'sr'); {tname} keeps the image size")
    if nodata is not None and (isinstance(nodata, (bool, np.bool_)) or not isinstance(nodata, (int, float, np.number))):
        raise ValueError(f"nodata must be a number (the value of the pixels without data), got {nodata!r}")
    if cfa is not None and tname != "demosaic":
        raise ValueError(f"cfa {cfa!r} is for demosaicing (task 'demosaic'), not {tname}")
    if cfa is not None:
        from .tasks.demosaic import check_pattern

        cfa = check_pattern(cfa)  # (an empty one was taken for none)
    if isinstance(x, np.ma.MaskedArray):
        x, mask = _unmasked(x, tname, mask)
    # rgb=False or a channel axis (an axis of the file as stored): an RGB OME-Zarr's cyx channels
    src, src_meta = as_source(x, stored=rgb is False or channel_axis is not None)
    if src_meta.get("palette"):  # (a mask may be one: its indices are what a mask means)
        from .io import ImageReadError

        raise ImageReadError(src_meta["path"], "a palette (indexed-colour) TIFF: its values are colour indices, "
                                               "not intensities; convert it to RGB or gray first")
    if src_meta.get("path") and np.dtype(src.dtype).kind == "b":  # a mask given as the image: say which file
        from .io import ImageReadError

        raise ImageReadError(src_meta["path"], "true/false pixels are no intensities to restore; a mask of gaps "
                                               "goes in mask= (CLI --mask) beside the image")
    internal = nodata_mask_series(src_meta, src_meta.get("path"))  # a GeoTIFF's GDAL internal mask
    nodata_mask = False  # the mask marks pixels without data (denoise, SR), not gaps to fill
    if mask is None and internal is not None:
        under = (_value_under_mask(src, src_meta, internal)
                 if tname != "inpaint" and nodata is None and src_meta.get("nodata") is None else None)
        if under is not None:
            nodata = under
            warn(f"{src_meta['path']}: holds a nodata mask (GDAL's internal mask, series {internal}) whose pixels "
                 f"hold {under:g}, which no pixel with data holds: {under:g} is taken for nodata, so they are kept "
                 "as they are and the result declares it (give nodata= to choose another)")
        elif tname in ("inpaint", "denoise", "sr"):  # (denoise, SR: several values under it, as JPEG leaves)
            from .io import open_image

            mask = open_image(src_meta["path"], series=internal)  # 0 where the image has no data: the gaps
            invert_mask = not invert_mask  # to fill, or (denoise, SR) the pixels kept out of the network
            nodata_mask = tname != "inpaint"
            if nodata_mask:
                fill = "NaN" if np.dtype(src.dtype).kind == "f" else "0"
                chosen = nodata if nodata is not None else src_meta.get("nodata")
                warn(f"{src_meta['path']}: holds a nodata mask (GDAL's internal mask, series {internal}) whose "
                     "pixels hold several values: they are kept out of the network's input and written as "
                     + (f"{chosen:g}, the nodata value" if chosen is not None else
                        f"{fill}; the result carries no mask (give nodata= (CLI --nodata) to write and declare "
                        "a value)"))
        else:
            warn(f"{src_meta['path']}: holds a nodata mask (GDAL's internal mask, series {internal}): "
                 "the pixels it marks have no data, but are restored as data and the result carries no mask; "
                 "inpainting fills them (task='inpaint', CLI --task inpaint, takes the mask), or declare the value "
                 "they hold with nodata= (CLI --nodata) to keep them as they are")
    mask_src, mask_meta = as_source(mask) if mask is not None else (None, {})
    _warn_mask_elsewhere(src_meta, mask_meta)
    if mask_src is not None and not mask_meta and src_meta.get("source_order"):
        mask_src = _in_file_order(mask_src, tuple(src.shape), src_meta["source_order"])
    if invert_mask:
        if mask_src is None:
            raise ValueError("invert_mask inverts a mask; give one (mask=, CLI --mask)")
        from .engine.source import ZeroMarks

        mask_src = ZeroMarks(mask_src)
    meta = {**src_meta, **{k: v for k, v in (meta or {}).items() if v is not None}}
    if rgb is None and "rgb" in meta:
        rgb = meta["rgb"]
    for key in ("scale", "translate"):  # given for an array (or over a file's)
        if meta.get(key) is not None and len(meta[key]) != len(src.shape):
            raise ValueError(f"meta {key!r} has {len(meta[key])} values; the image has {len(src.shape)} axes: "
                             f"{tuple(src.shape)}")
    if (tname == "demosaic" and not src_meta and not meta.get("axes") and channel_axis is None
            and len(src.shape) >= 3 and src.shape[-1] == 1):
        channel_axis = len(src.shape) - 1  # a (Y, X, 1) mosaic: one channel, not planes one pixel wide
    if not src_meta and not meta.get("axes") and channel_axis is not None:
        meta = {**meta, "axes": _axes_with_channel(tuple(src.shape), channel_axis)}  # channel-last, say
        rgb = False if meta["axes"] and rgb is None else rgb  # channels named: no RGB picture
    if not src_meta and isinstance(meta.get("axes"), str):
        src, meta = _array_in_ngff_order(src, meta, rgb)  # an array whose axes the caller named
        if mask_src is not None and not mask_meta and meta.get("source_order"):  # a mask laid out as the array
            mask_src = _in_file_order(mask_src, tuple(src.shape), meta["source_order"])
    if channel_axis is not None and meta.get("source_order"):  # given in the file's (array's) own axis order
        order = meta["source_order"]
        if not -len(order) <= channel_axis < len(order):
            raise ValueError(f"channel_axis {channel_axis} is out of range for an image of {len(order)} axes")
        given, channel_axis = channel_axis, order.index(channel_axis % len(order))
        axes = meta.get("axes")
        if isinstance(axes, str) and len(axes) == len(order) and axes[channel_axis] in "yx":
            raise ValueError(f"channel_axis {given} is the image's {axes[channel_axis].upper()} axis (as stored: shape "
                             f"{_stored_shape(src.shape, order)}); name the axis that holds the channels or bands")
    if channel_axis is not None and src_meta.get("path") and isinstance(meta.get("axes"), str):
        meta = {**meta, "axes": channel_named(meta["axes"], channel_axis)}  # the result says its bands are channels
    if channel_axis is None and meta.get("channel_axis") is not None:
        channel_axis = meta["channel_axis"]
    src, meta, channel_axis = single_channel_mosaic(tname, src, meta, channel_axis)
    if tname == "inpaint" and mask is None:
        _check_gaps_are_marked(np.dtype(src.dtype), nodata if nodata is not None else meta.get("nodata"))
    elif nodata is not None and not np.isnan(nodata) and not nodata_can_occur(np.dtype(src.dtype), nodata):
        warn(f"nodata {nodata:g} cannot occur in this {np.dtype(src.dtype)} image, so it marks no pixel; "
             "check the value (or leave it out)")
    handle = resolve_model(model, task, scale, device, precision, compile=compile, ensemble=ensemble)
    stated = meta.get("cfa")  # a raw TIFF's CFAPattern
    if tname == "demosaic" and cfa is not None and stated and stated != cfa:
        warn(f"demosaic: cfa {cfa} given, but the file states {stated}; {cfa} is used (the wrong one of "
             "the two swaps red and blue)")
    if tname == "demosaic" and cfa is None:  # the file's own, else the model's camera
        cfa = stated or ((getattr(handle.module, "card", None) or {}).get("training") or {}).get("cfa")
    if tname != "demosaic" and stated:
        warn(f"the image states a Bayer pattern ({stated}): it is a raw colour mosaic, whose neighbouring "
             f"pixels are different colours; {tname} sees one gray picture and mixes them, which washes "
             "the colour out. Demosaic it first (task 'demosaic', CLI --task demosaic), then "
             f"{tname} the result")
    assumed_rggb = tname == "demosaic" and cfa is None  # said once the image is known to be a mosaic (below)
    if tname == "sr" and scale is not None and handle.info.scale != int(scale):
        raise ValueError(f"model {handle.info.name!r} upscales x{handle.info.scale}, not x{scale}")
    if tname == "sr" and handle.info.scale == 1:  # (a module gave an image of the same size, silently)
        task_of = f" (a {handle.info.task} model)" if handle.info.task and handle.info.task != "sr" else ""
        raise ValueError(f"model {handle.info.name!r} does not upscale{task_of}; task 'sr' needs a super-resolution "
                         "model (one with a scale of 2 or 4)")
    if tname != "sr" and handle.info.scale != 1:
        raise ValueError(f"model {handle.info.name!r} upscales x{handle.info.scale}; use it with task 'sr', not {tname}")
    memory = None
    if AUTO in (tile, batch):
        from .engine.autotune import measure_memory

        memory = measure_memory(handle)
    try:
        plan = make_plan(
            tuple(src.shape), np.dtype(src.dtype), handle.info, _sampler(src), rgb=rgb, chunk=chunks,
            native_chunks=_native_chunks(src), tile=tile, overlap=overlap, batch=batch, normalize=normalize,
            channel_axis=channel_axis, out_dtype=dtype, task=tname, cfa=cfa,
            nodata=nodata if nodata is not None else meta.get("nodata"),
            mask_shape=tuple(mask_src.shape) if mask_src is not None else None, mask_marks_nodata=nodata_mask,
            memory=memory,
            keep_channel=_opacity_channel(src, meta, channel_axis),
        )
    except NoDataError as e:  # a file's: named, as every message about a bad input file is
        if not meta.get("path"):
            raise
        raise NoDataError(f"{meta['path']}: {e}") from None
    if white_level is not None:
        plan = dataclasses.replace(plan, white=_white_level(white_level, plan))
    if assumed_rggb:
        warn("demosaic: no Bayer pattern given (cfa=, CLI --cfa) and none stated by the file or the "
             "model; assuming RGGB. Another pattern read as RGGB swaps red and blue")
    if memory is not None:
        log.info("tile %d, batch %d chosen from free memory on %s", plan.tile, plan.batch, memory.device)
    if mask_src is not None and not nodata_mask:  # (inpainting's checks of what it is to fill)
        _warn_mostly_marked(mask_src, invert_mask)
        _refuse_nothing_known(src, mask_src, plan)
    if min(plan.height, plan.width) < 8:  # (64, 64, 2) is taken as 64 planes of 64 x 2 pixels
        warn(f"the image's planes are {plan.height} x {plan.width} pixels (y, x: the last two axes"
             f"{', before a colour axis' if plan.rgb else ''}); if an axis of shape {tuple(src.shape)} holds "
             "channels, name it with channel_axis= (e.g. -1 for channels last)")
    return src, meta, handle, plan, mask_src


def _opacity_channel(src: Any, meta: dict[str, Any], channel_axis: int | None) -> int | None:
    """The channel of a gray + alpha file that holds opacity (restored as it came in, as an
    RGBA's alpha is), or None."""
    if not meta.get("alpha") or channel_axis is None or src.shape[channel_axis] != 2:
        return None
    return 1


def _warn_mostly_marked(mask: Any, inverted: bool) -> None:
    """Warn when the mask marks most of the image to fill: more likely a mask of the valid
    pixels (GDAL mask bands and Landsat gap masks are 1 where there is data), which would
    replace the data and keep the gaps."""
    from .engine.plan import stats_windows

    nlead = len(mask.shape) - 2
    if nlead < 0:
        return
    read = _sampler(mask)
    parts = [np.asarray(read(k)) != 0 for k in stats_windows(tuple(mask.shape), nlead, False)]
    share = sum(int(p.sum()) for p in parts) / max(1, sum(p.size for p in parts))
    how = ("without invert_mask (CLI: without --invert-mask)" if inverted
           else "with invert_mask=True (CLI --invert-mask)")
    seen_whole = sum(p.size for p in parts) >= math.prod(mask.shape)
    if share == 1 and (seen_whole or (isinstance(mask, np.ndarray) and bool((mask != 0).all()))):
        raise ValueError(f"the mask marks every pixel to fill ({'zero' if inverted else 'nonzero'} = fill): no known "
                         f"pixel is left to fill from; if it marks the valid pixels instead, run {how}")
    if share > 0.5:
        warn(f"the mask marks about {share:.0%} of the pixels to fill ({'zero' if inverted else 'nonzero'} = fill; "
             f"from the {len(parts)} windows sampled); "
             f"if it marks the valid pixels instead, run {how}")


def _white_level(value: Any, plan: Any) -> float:
    """``white_level`` checked: a finite number above the image's low percentile."""
    try:
        white = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"white_level must be a number (the sensor's saturation value), got {value!r}") from None
    if not math.isfinite(white) or white <= min(plan.norm.lo):
        raise ValueError(f"white_level {value!r} (CLI --white-level) must be a finite value above the image's dark "
                         f"level ({min(plan.norm.lo):.4g}): the sensor's saturation value, e.g. 4095 for 12 bits")
    return white


def _refuse_nothing_known(src: Any, mask: Any, plan: Any, most: int = 1 << 22) -> None:
    """Raise ValueError when the mask and the image's pixels without data (NaN, nodata)
    together leave no known pixel to fill from (a scene's footprint given as the mask came
    back all NaN, exit 0); checked for images of up to ``most`` values."""
    from .io.geotiff import nodata_pixels

    if math.prod(src.shape) > most or math.prod(mask.shape) > most:
        return
    img = np.asarray(src[...])
    bad = nodata_pixels(img, plan.nodata)
    if img.dtype.kind in "fc":
        bad |= ~np.isfinite(img)
    if plan.rgb:
        bad = bad.any(axis=-1)  # a colour pixel is known when all its colours are
    h, w = bad.shape[-2:]
    marked = np.asarray(mask[...]) != 0
    if marked.shape[-2:] != (h, w) or bad.size % marked.size:
        return  # (a layout make_plan checks)
    known = ~bad.reshape(-1, *marked.shape) & ~marked
    if not known.any():
        raise ValueError("the mask and the pixels without data (NaN or the nodata value) leave no known pixel to "
                         "fill from; the mask should mark the gaps within the data")


def restore(
    x: Any,
    task: str = "denoise",
    model: Any = None,
    scale: int | None = None,
    tile: int | str | None = None,
    overlap: int | None = None,
    batch: int | str | None = None,
    chunks: int | tuple[int, int] | None = None,
    device: str = "auto",
    precision: str = "auto",
    rgb: bool | None = None,
    channel_axis: int | None = None,
    normalize: str | tuple[float, float] | list[tuple[float, float]] = "auto",
    dtype: Any = None,
    mask: Any = None,
    nodata: float | None = None,
    cfa: str | None = None,
    compile: bool = False,
    ensemble: bool = False,
    invert_mask: bool = False,
    white_level: float | None = None,
) -> da.Array:
    """Restore an image lazily; returns a dask array (nothing is computed yet).

    Parameters
    ----------
    x
        numpy, dask or zarr array, or a path (.tif/.tiff, .png, .zarr/.ome.zarr), or an image
        ``ar.io.open_image`` opened (``open_image("slide.svs", series=2)``: another image of a
        TIFF than its first).  A file's axes come back in NGFF order (``t``, ``c``, ``z``,
        ``y``, ``x``; RGB stays last), as they are written to OME-Zarr; an array's come back
        in its own order.
    task
        ``denoise``, ``sr`` (with ``scale`` 2 or 4), ``demosaic`` (with ``cfa``) or
        ``inpaint`` (with ``mask`` or ``nodata``).
    model
        None (the task's shipped default), a shipped name, a checkpoint path, or any
        ``torch.nn.Module`` mapping ``(B, C, H, W)`` to ``(B, C', s*H, s*W)``.
    tile, overlap, batch
        Network tile side, tile overlap (also the chunk halo) and tiles per forward
        pass; defaults from the model (256 or the tile its card names, its halo hint, about
        0.25 Mpx a batch).  A network whose result depends on its tile's size (CSAttn: its
        channel attention pools over the whole tile) runs on tiles of its training patches.
        ``tile="auto"``/``batch="auto"``: the largest that fit in a share of the free
        memory of the device, measured with two small probe forward passes (a few
        seconds on a CPU; see :mod:`napari_attnrestore.engine.autotune`).
    chunks
        Side of the dask chunks (read/write unit); default the source's, else 1024.
    device, precision
        ``auto`` (CUDA, then MPS, then CPU; bf16 on CUDA where the model allows), or explicit.
    rgb, channel_axis
        Override the layout guess (trailing 3/4 = RGB); per-channel statistics along
        ``channel_axis`` (for a path, an axis of the file as it is stored).
    normalize
        ``auto`` (dtype range for uint8, 0.1/99.9 percentiles otherwise), ``dtype`` (0 to the
        dtype's maximum for integers, so signed data are taken as non-negative; 0-1 for
        floats), ``percentile``, ``none``, or the intensity range itself as ``(lo, hi)``
        (mapped to 0-1 for the network), or one such range per channel (``[(100, 400),
        (200, 3000)]``, along ``channel_axis`` or RGB's colours).
    dtype
        Output dtype (default: the input's).
    mask, nodata
        Inpainting: pixels to fill are nonzero in ``mask`` (same Y, X; an array or a
        path; one mask per plane is laid out as the input file is stored), else NaN or equal
        to ``nodata``.  With a mask, pixels without data outside it stay without data (a
        scene's frame beyond its footprint).  Known pixels are kept exactly.
    invert_mask
        The mask marks the valid pixels instead (0 = fill), as GDAL mask bands and the
        Landsat-7 gap masks do.
    cfa
        Demosaicing: the Bayer pattern at pixel (0, 0): RGGB, BGGR, GRBG or GBRG (default:
        the one the model was trained on, when its card names one, else RGGB).
    compile
        Run the network through ``torch.compile`` (once per process, when the first
        tiles arrive; if it fails, a warning says so and the network runs uncompiled).
    ensemble
        Self-ensemble: every tile also runs turned and mirrored (8 orientations) and the
        outputs are averaged; a Bayer mosaic, which the demosaicer mirrors back to RGGB, is
        turned and moved by a pixel instead.  Eight times slower, the same memory; about
        0.1-0.2 dB more for the shipped denoiser and demosaicer (``benchmarks/quality.py
        --ensemble``).
    white_level
        The sensor's saturation (white) level in the input's units, e.g. 4095 for a 12-bit
        camera stored as uint16: results are clipped to it (demosaicing and SR overshoot at
        bright edges), and denoising keeps the pixels at or above it as they came.
    """
    src, meta, handle, plan, mask_src = _prepare(x, task, model, scale, tile, overlap, batch, chunks, device,
                                                 precision, rgb, channel_axis, normalize, dtype, mask=mask,
                                                 nodata=nodata, cfa=cfa, compile=compile, ensemble=ensemble,
                                                 invert_mask=invert_mask, white_level=white_level)
    out = restore_array(handle, plan, src, mask=mask_src)
    order = meta.get("source_order")
    if order and not _is_file(x) and out.ndim == len(order):
        out = out.transpose(tuple(int(i) for i in np.argsort(order)))  # an array's channels moved first come back where they were
    return out


def restore_to_tiff(
    x: Any,
    path: str | os.PathLike,
    task: str = "denoise",
    model: Any = None,
    scale: int | None = None,
    tile: int | str | None = None,
    overlap: int | None = None,
    batch: int | str | None = None,
    chunks: int | tuple[int, int] | None = None,
    device: str = "auto",
    precision: str = "auto",
    rgb: bool | None = None,
    channel_axis: int | None = None,
    normalize: str | tuple[float, float] | list[tuple[float, float]] = "auto",
    dtype: Any = None,
    overwrite: bool = False,
    progress: Any = None,
    meta: dict[str, Any] | None = None,
    mask: Any = None,
    nodata: float | None = None,
    cfa: str | None = None,
    compile: bool = False,
    ensemble: bool = False,
    invert_mask: bool = False,
    white_level: float | None = None,
    compression: str | None = "zlib",
) -> str:
    """Restore ``x`` into a tiled BigTIFF at ``path`` (``.ome.tif``: an OME-TIFF), streamed
    band of rows by band of rows, as ``attnrestore restore IN OUT.tif`` writes it.

    The physical pixel sizes (divided by the SR scale), origin, units, channel names and
    colours and a GeoTIFF's georeference and nodata go with it (a bare ``ar.io.write_tiff``
    of ``restore``'s array has none of them).  The file takes its name only once it is
    complete; an existing one is replaced only with ``overwrite``.  ``progress(done, total)``
    counts rows.  ``compression``: ``"zlib"``, ``"zstd"``, ``"lzw"``, ``"jpeg"`` (lossy, for
    8-bit output: a slide's usual storage, several times smaller) or ``"none"``.  ``meta``
    and the other parameters are those of :func:`restore_to_zarr` and :func:`restore`.
    Returns ``path``.
    """
    from .io import refuse_output_over_input, write_tiff
    from .io.geotiff import georeference_tags

    path = os.fspath(path)
    # the result is streamed from the input while it is written: replacing it would lose both
    refuse_output_over_input(path, [_file_of(v) for v in (x, mask) if _is_file(v)])
    src, meta, handle, plan, mask_src = _prepare(x, task, model, scale, tile, overlap, batch, chunks, device,
                                                 precision, rgb, channel_axis, normalize, dtype, meta, mask=mask,
                                                 nodata=nodata, cfa=cfa, compile=compile, ensemble=ensemble,
                                                 invert_mask=invert_mask, white_level=white_level)
    out = restore_array(handle, plan, src, mask=mask_src)
    geom = output_geometry(plan.scale, meta, len(plan.shape), len(plan.out_shape), bool(plan.out_trailing))
    ys, xs = (i for i, ax in enumerate(geom["axes"]) if ax in "yx")
    geo = georeference_tags(meta.get("geotiff"), (out.shape[ys], out.shape[xs]), out.dtype, plan.nodata)
    write_tiff(out, path, axes=geom["axes"], scale=geom["scale"], units=geom["units"] or {},
               translate=geom["translate"], omero=meta.get("omero"),  # an OME-TIFF's origin, channels
               overwrite=overwrite, extratags=geo,  # a GeoTIFF's bands stay one page's samples
               samples="rgb" if meta.get("planar_colour") else None,  # and a colour picture's planes
               miniswhite=bool(meta.get("miniswhite")) and not geom["axes"].endswith("c"), progress=progress,
               compression=compression)
    return path


def output_geometry(plan_scale: int, meta: dict[str, Any], ndim_in: int, out_ndim: int, rgb_out: bool) -> dict[str, Any]:
    """Axes, physical pixel size and origin of the output.

    Super-resolution divides the Y/X pixel size by the scale and shifts the origin so
    that the output pixels tile the input pixels exactly (pixel centres at ``translate
    + i * scale``, as napari and NGFF place them).
    """
    from .io import guess_axes

    axes = meta.get("axes")
    scale = list(meta.get("scale") or [1.0] * ndim_in)
    translate = list(meta.get("translate") or [0.0] * ndim_in)
    added_channel = out_ndim == ndim_in + 1  # e.g. CFA -> RGB
    if not axes or len(axes) != ndim_in:
        rgb_in = rgb_out and not added_channel
        fake_shape = (2,) * (ndim_in - 2 - int(rgb_in)) + (64, 64) + ((3,) if rgb_in else ())
        axes, _ = guess_axes(fake_shape, rgb=rgb_in)
    if added_channel:
        axes, scale, translate = axes + "c", [*scale, 1.0], [*translate, 0.0]
    k = plan_scale
    yx = [i for i, a in enumerate(axes) if a in "yx"][-2:]
    for i in yx:
        translate[i] = translate[i] - scale[i] * (k - 1) / (2 * k)
        scale[i] = scale[i] / k
    return {"axes": axes, "scale": tuple(scale), "translate": tuple(translate), "units": meta.get("units") or {}}


def restore_to_zarr(
    x: Any,
    dst: str | os.PathLike,
    task: str = "denoise",
    model: Any = None,
    scale: int | None = None,
    tile: int | str | None = None,
    overlap: int | None = None,
    batch: int | str | None = None,
    chunks: int | tuple[int, int] | None = None,
    device: str = "auto",
    precision: str = "auto",
    rgb: bool | None = None,
    channel_axis: int | None = None,
    normalize: str | tuple[float, float] | list[tuple[float, float]] = "auto",
    dtype: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    pyramid: bool = True,
    progress: Any = None,
    cancel: Any = None,
    scheduler: Any = None,
    num_workers: int | None = None,
    meta: dict[str, Any] | None = None,
    mask: Any = None,
    nodata: float | None = None,
    cfa: str | None = None,
    compile: bool = False,
    ensemble: bool = False,
    invert_mask: bool = False,
    white_level: float | None = None,
) -> str:
    """Restore ``x`` into a new OME-Zarr (NGFF 0.5, zarr v3) at ``dst``, chunk by chunk.

    Neither input nor output is ever held in memory whole.  Axes and physical pixel
    size are carried over (divided by the SR scale).  ``resume=True`` continues an
    interrupted job, computing only the chunks not recorded as done.  ``progress(done,
    total)`` is called after each chunk; setting the ``cancel`` event stops the job at
    the next chunk, leaving a valid partial store that ``resume`` can complete.
    ``scheduler``: None (threads), ``"sync"``, ``"local"`` (a LocalCluster of worker
    processes), a scheduler address, or a ``distributed.Client``; ``num_workers`` sets the
    threads of the default scheduler or the worker processes of ``"local"`` (default: one
    per core).  ``meta`` gives or
    overrides the input's ``axes``, ``scale``, ``translate`` and ``units`` (physical
    metadata of an array input).  ``mask``/``invert_mask``/``nodata``/``cfa``/``compile``/``ensemble``/
    ``white_level`` as for :func:`restore`.
    Returns ``dst``.
    """
    from .engine import build_graph
    from .engine.device import resolve_device, resolve_precision
    from .engine.execute import execute
    from .engine.graph import changed_since
    from .engine.store import (
        STATE_DIR,
        ZarrSink,
        content_sample,
        data_identity,
        folder_contents,
        job_fingerprint,
        prepare_store,
        release_store,
        set_job_state,
        still_owner,
    )
    from .io import absolute_location, create_ome_zarr, read_ome_metadata
    from .io.geotiff import carried

    if str(dst).lower().rstrip("/\\").endswith((".tif", ".tiff", ".png", ".jpg", ".jpeg")):
        raise ValueError(f"{dst}: restore_to_zarr writes a zarr store, not a {Path(str(dst)).suffix} file; write "
                         "a TIFF with ar.restore_to_tiff(...) or the CLI: attnrestore restore IN OUT.tif")
    if resume and tile == AUTO:  # a resumed job keeps the tile it started with (free memory may differ now)
        from .engine.store import job_state

        tile = job_state(dst).get("job", {}).get("tile", tile)
    src, meta, handle, plan, mask_src = _prepare(x, task, model, scale, tile, overlap, batch, chunks, device,
                                                 precision, rgb, channel_axis, normalize, dtype, meta, mask=mask,
                                                 nodata=nodata, cfa=cfa, compile=compile, ensemble=ensemble,
                                                 invert_mask=invert_mask, white_level=white_level)
    dst = str(dst)
    geom = output_geometry(plan.scale, meta, len(plan.shape), len(plan.out_shape), bool(plan.out_trailing))
    # a file: its resolved path, size and time (rewritten between runs, it is another input);
    # an in-memory array: its bytes; a lazy one (a napari layer, reopened with a new dask name
    # in the next session): its type, shape and dtype; and for all but in-memory arrays a
    # sample of the pixels (one channel of a file opened as a layer per channel is not another)
    lazy_desc = (data_identity(meta["path"]) + (f"#series{meta['series']}" if meta.get("series") else "")
                 if meta.get("path") else f"{type(src).__name__}{tuple(src.shape)}:{np.dtype(src.dtype)}")
    src_desc = data_identity(x) if isinstance(x, np.ndarray) else f"{lazy_desc}:{content_sample(src)}"
    # earlier builds described an input by its file first and sampled no pixels: their stores resume
    earlier_desc = lazy_desc if meta.get("path") or not isinstance(x, np.ndarray) else src_desc
    # the arithmetic: a job begun in bf16 on a GPU and resumed in fp32 would mix chunks made both ways
    arithmetic = str(resolve_precision(handle.precision, resolve_device(handle.device), handle.info.half_safe,
                                       warn=False)).removeprefix("torch.")
    fp = job_fingerprint(plan, handle.weights_digest(), get_task(task).name, str(src_desc), handle.ensemble,
                         mask_id=(data_identity(mask) + (":inverted" if invert_mask else "")) if mask is not None else None,
                         precision=arithmetic, source_files=folder_contents(meta.get("path") or x))
    chunk_shape = tuple(c[0] for c in plan.out_chunks)

    omero, c = meta.get("omero"), geom["axes"].find("c")
    channels = plan.out_shape[c] if c >= 0 else 1  # a single channel's image has no c axis (yx, zyx)
    if not isinstance(omero, dict) or len(omero.get("channels") or []) != channels:
        omero = None  # names and colours go on only to the same channels
    elif np.dtype(plan.out_dtype) != np.dtype(src.dtype):
        omero = omero_in_dtype(omero, plan.out_dtype)  # an 8-bit result has no window up to 4000

    def create() -> None:
        create_ome_zarr(dst, plan.out_shape, np.dtype(plan.out_dtype), chunk_shape, geom["axes"], scale=geom["scale"],
                        translate=geom["translate"], units=geom["units"], name=None, overwrite=False,  # its own file name
                        omero=omero,  # a GeoTIFF's georeference and the nodata this job used: saved as .tif,
                        extra_attrs=carried({**meta, "nodata": plan.nodata} if plan.nodata is not None else meta),  # a GeoTIFF
                        hold_metadata=True)  # an image to other readers only once complete (see _finish)

    inputs = [str(_file_of(v)) for v in (x, mask, meta.get("path")) if _is_file(v)]
    distributed = scheduler not in (None, "threads", "sync", "synchronous")
    tiffs = [p for p in inputs if p.lower().endswith((".tif", ".tiff"))]
    if distributed:  # (a dask input's graph is looked through only then)
        tiffs += ["the input" for v in (x, mask) if _reads_an_open_tiff(v)]  # ar.io.open_image("x.tif").data
    if tiffs and distributed:  # checked before the store exists
        raise ValueError(f"{tiffs[0]}: a TIFF's open file cannot be sent to dask.distributed workers; convert it "
                         f"to OME-Zarr first: ar.io.write_ome_zarr(ar.io.open_image({tiffs[0]!r}), 'x.ome.zarr')")
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1):
        raise ValueError(f"num_workers must be a whole number of at least 1, not {num_workers!r}")
    if num_workers is not None and scheduler not in (None, "threads", "local"):
        raise ValueError(f"num_workers sets the threads of the default scheduler or the processes of 'local'; "
                         f"scheduler {scheduler!r} has its own workers")
    client, owned = _client_for(scheduler, num_workers)  # first: an unreachable scheduler leaves no store behind
    job = uuid.uuid4().hex
    try:
        moved = handle.ensemble and bool(getattr(handle.module, "ensemble_shifts", None))
        done = prepare_store(dst, plan, fp, create, overwrite=overwrite, resume=resume, inputs=inputs,
                             earlier_source=earlier_desc, job=job,
                             changed_since=lambda revision: changed_since(plan, revision, moved))
        if done is None:
            return dst
        # how the store holds the axes: create_ome_zarr's NGFF order (an RGB result yxc as cyx), or
        # channel-last in a store an earlier version started and this run resumes
        stored = "".join(str(a.get("name", ""))[:1].lower() for a in read_ome_metadata(dst).get("axes", []))
        order = (tuple(geom["axes"].index(a) for a in stored) if sorted(stored) == sorted(geom["axes"])
                 else ngff_order(geom["axes"]))
        at = absolute_location(dst)  # where workers elsewhere write (their working folder differs)
        sink = ZarrSink(str(Path(at) / "0"), str(Path(at) / STATE_DIR / "done"), chunk_shape, len(plan.out_shape),
                        job=job, order=None if order == tuple(range(len(order))) else order)
        dsk, name, deps = build_graph(handle, plan, src, sink=sink, skip=lambda i: i in done, mask=mask_src)
        try:
            try:
                execute(dsk, name, deps, progress=progress, cancel=cancel, scheduler=client or scheduler,
                        num_workers=num_workers)
            finally:
                if owned is not None:
                    owned.close()
                    owned = None
            _finish(dst, pyramid, job)
        except BaseException as e:
            try:
                from .engine.execute import Cancelled

                status = "cancelled" if isinstance(e, (Cancelled, KeyboardInterrupt)) else "failed"
                if still_owner(dst, job):  # (a store another job took over is its to describe)
                    set_job_state(dst, status=status, error=_error_line(e))
            except Exception:  # the store itself may be unwritable (disk full); the markers tell the truth
                pass
            raise
    finally:
        if owned is not None:
            owned.close()
        release_store(dst, job)
    return dst


def _error_line(e: BaseException) -> str:
    """The first line of an error, as a store's job state records it (a Ctrl-C or SIGTERM,
    which has no message, as "interrupted")."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return str(e).splitlines()[0][:500] if str(e) else type(e).__name__


def _reads_an_open_tiff(x: Any) -> bool:
    """Whether ``x`` reads its pixels through tifffile's store of an open file (which cannot
    be pickled): the ``data`` of an opened TIFF, or a dask array made from one."""
    arrays = [x] if not isinstance(x, da.Array) else [v for v in dict(x.__dask_graph__()).values()
                                                      if hasattr(v, "shape") and hasattr(v, "dtype")]
    return any(type(getattr(getattr(a, "data", a), "store", None)).__name__.startswith("ZarrTiff") for a in arrays)


def _finish(dst: str, pyramid: bool, job: str) -> None:
    """Write the pyramid and mark the store complete; a failed write names ``dst``.

    Every chunk is written and recorded by now, so a resume after fixing the cause
    (disk full, permissions) only redoes this step.  A store another job took over meanwhile
    is left to it.
    """
    import shutil

    from .engine.store import STATE_DIR, OutputError, output_error, set_job_state, still_owner
    from .io import ImageWriteError, release_ome_metadata, replaced_path, write_pyramid

    if not still_owner(dst, job):
        raise OutputError(f"{dst}: another job replaced or took over this output while this one ran; it is "
                          "that job's now")
    try:
        release_ome_metadata(dst)  # every chunk of level 0 is written: the store is an image now
        if pyramid:
            write_pyramid(dst)
        set_job_state(dst, status="complete", error=None)
    except OSError as e:
        cause = e.__cause__ if isinstance(e, ImageWriteError) and isinstance(e.__cause__, OSError) else e
        raise output_error(dst, "cannot finish the output (pyramid levels, job state)", cause) from e
    # the per-chunk markers are done with (a complete job resumes as complete); zarr warns about
    # the folder whenever a complete store's group is listed
    shutil.rmtree(Path(dst) / STATE_DIR, ignore_errors=True)
    if "://" not in str(dst):  # the output this one replaced (overwrite), kept until now
        shutil.rmtree(replaced_path(dst), ignore_errors=True)


def _check_gaps_are_marked(dtype: np.dtype, nodata: float | None) -> None:
    """Raise ValueError when nothing can mark an inpainting's gaps: an integer image holds no
    NaN, so without a mask its gaps are the nodata value, which it must be able to hold (an
    untagged Landsat band, or --nodata -9999 for bytes, was copied through unfilled)."""
    if dtype.kind == "f":
        return  # NaN marks gaps
    how = "give a mask (CLI --mask; Restore widget: a Labels or Shapes layer) or the gap pixels' value (nodata="
    if nodata is None:
        raise ValueError(f"nothing marks the gaps to fill in this {dtype} image (it holds no NaN): {how}, CLI "
                         "--nodata; e.g. 0 for a Landsat-7 band)")
    if not nodata_can_occur(dtype, nodata):
        raise ValueError(f"nodata {nodata:g} cannot occur in this {dtype} image, so it marks no gap to fill: "
                         f"{how}, CLI --nodata) that the image holds")


def _quiet_local_cluster(local_cluster: Any, n_workers: int | None = None) -> Any:
    """A LocalCluster of worker processes that leave Ctrl-C to this one: started with SIGINT
    ignored (which they inherit), they no longer each print a KeyboardInterrupt traceback
    while this process cancels the job and closes them; their logs only say errors."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        # the dashboard on a free port: None still took 8787, and warned when another cluster had it
        return local_cluster(n_workers=n_workers, processes=True, threads_per_worker=1, dashboard_address=":0",
                             silence_logs=logging.ERROR)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _client_for(scheduler: Any, num_workers: int | None = None) -> tuple[Any, Any]:
    """A distributed Client for ``local`` (``num_workers`` processes)/an address, and what to close afterwards."""
    if scheduler is None or scheduler in ("threads", "sync", "synchronous"):
        return None, None
    if not isinstance(scheduler, str) and not callable(getattr(scheduler, "compute", None)):
        raise TypeError(f"scheduler must be None, 'sync', 'local', a scheduler address or a distributed.Client, "
                        f"not {scheduler!r}")
    if isinstance(scheduler, str):
        from distributed import Client, LocalCluster

        if scheduler == "local":
            cluster = _quiet_local_cluster(LocalCluster, num_workers)
            client = Client(cluster)

            class _Both:
                def close(self) -> None:
                    client.close()
                    cluster.close()

            return client, _Both()
        try:
            client = Client(scheduler)
        except (ValueError, OSError) as e:  # not an address (ValueError), or nothing answers there (OSError)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise type(e)(f"scheduler {scheduler!r} (CLI --scheduler): cannot connect ({first}); give 'local', "
                          "'threads', 'sync' or a running scheduler's address such as tcp://host:8786") from None
        return client, client
    return scheduler, None
