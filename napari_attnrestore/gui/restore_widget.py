"""The Restore dock widget: denoise, super-resolve, demosaic or inpaint an image layer, chunk by chunk.

Every computation runs in a napari ``thread_worker``; the viewer never freezes.
Progress per chunk shows in napari's activity dock.  Cancel stops the job at the next
chunk:

- output "new layer": nothing is added (a partial in-memory result is discarded);
- output "zarr file": the store stays valid but incomplete (its ``attnrestore`` status
  is not ``complete``) and is not opened; run again with "if it exists: resume" to
  complete it.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton, RadioButtons
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from ..io.geotiff import CARRIED, carried
from ..io.napari_hooks import layer_axes, layer_omero, layer_units, transforms_beyond_scale
from . import jobs, session_models
from .geometry import channel_axis_of, level0, preview_crop, sr_geometry
from .shapes_mask import ShapesMask
from .widgets import auto_spin_box, layer_nodata, number_or_none, set_value, start_with_a_thread_to_spare, when_removed

if TYPE_CHECKING:
    import napari
    from torch import nn

__all__ = ["CHECKPOINT", "RestoreWidget"]

CHECKPOINT = "checkpoint file..."
TASKS = (("denoise", "denoise"), ("super-resolve", "sr"), ("demosaic", "demosaic"), ("inpaint", "inpaint"))
PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
SUFFIXES = {"denoise": "denoised", "demosaic": "demosaiced", "inpaint": "inpainted"}
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NEW_LAYER, ZARR = "new layer", "zarr file"
EXISTING = ("stop", "resume", "overwrite")
PREVIEW_MAX = 512
MAX_LAYER_BYTES = 4 * 2**30  # beyond this, "new layer" output asks for a zarr file instead

TIPS = {
    "image": "Image layer to restore. Leading axes (time, z, channels) are processed plane by plane.",
    "task": "denoise: same size output. super-resolve: x2 or x4 more pixels per axis. demosaic: a raw "
    "single-channel Bayer (CFA) image to RGB. inpaint: fill masked, NaN or nodata pixels; known pixels are kept.",
    "mask": "Inpainting: a Labels, Shapes or integer Image layer (a mask file opened); nonzero labels / pixels inside shapes are filled. None: only "
    "NaN pixels (and nodata, if set) are filled. Must have the input's Y, X size (Shapes are rasterized to it).",
    "invert_mask": "Inpainting: the mask marks the pixels with data and its 0 pixels are filled (GDAL mask "
    "bands and the Landsat-7 gap masks are made so).",
    "nodata": "Inpainting: pixels equal to this value are filled too (e.g. -9999 or 0). Empty: the layer's own "
    "(a GeoTIFF's declared nodata), which every task keeps as no data.",
    "white_level": "The sensor's saturation value in the layer's units (4095 for a 12-bit camera), or empty: "
    "results are clipped to it (no overshoot above what the camera can record), and denoising keeps the "
    "saturated pixels as they came.",
    "cfa": "Demosaicing: the colour filter at the top-left pixel (0, 0) and its neighbours, read row by row: "
    "RGGB = red, green / green, blue. The input is the raw single-channel CFA image; the result is RGB.",
    "scale": "Upscaling factor for super-resolution.",
    "model": "Shipped weights for this task, a network added from Python (add_model), or a checkpoint file.",
    "checkpoint": "A project checkpoint (.safetensors with its .json card) or a published HAT/GRL/SwinIR checkpoint.",
    "tile": "Side of the square tiles the network sees, in pixels. 0 = auto (256, rounded to the model's "
    "window multiple, or the tile its model card names: a CSAttn network runs on tiles the size of its "
    "training patches). Smaller tiles need less memory; larger tiles run faster on a GPU.",
    "overlap": "Pixels shared by neighbouring tiles, and read around every chunk; overlaps are blended smoothly "
    "so that no seams show. 0 = auto (the model's receptive-field hint).",
    "batch": "Tiles per forward pass. 0 = auto (about a quarter megapixel per batch). Lower it if the GPU "
    "runs out of memory.",
    "chunk": "Side of the blocks read, restored and written at once: the unit of progress, of cancel and of "
    "resume. 0 = auto (the source's own chunks when 256-4096, else 1024).",
    "device": "auto: CUDA, then Apple MPS, then the CPU.",
    "precision": "auto: bf16 on CUDA for models that declare it safe, else fp32.",
    "ensemble": "Also run every tile turned and mirrored (8 orientations; a Bayer mosaic turned and moved by a "
    "pixel) and average the results: a little better (about 0.1-0.2 dB for denoising and demosaicing), 8 times "
    "slower.",
    "output": "new layer: computed into memory (fine up to a few hundred megapixels). zarr file: streamed to an "
    "OME-Zarr on disk chunk by chunk, then opened lazily; use it for large images.",
    "zarr": "Output OME-Zarr (NGFF 0.5) folder; '.ome.zarr' is appended when the name has no .zarr suffix.",
    "existing": "What to do if the zarr file exists: stop with an error, resume an interrupted run made with "
    "the same settings, or overwrite it.",
    "open": "Open the finished zarr file as a new layer (lazily, without loading it).",
    "preview": "Restore only the visible region of the current plane (at most 512x512) into a preview layer. "
    "Normalization statistics come from that region, so intensities may differ slightly from a full run.",
    "run": "Restore the whole layer.",
    "cancel": "Stop at the next chunk.",
}


class RestoreWidget(Container):
    """Denoise or super-resolve an image layer with an attention network.

    Parameters
    ----------
    napari_viewer
        The viewer whose image layers are offered as input and receive the results.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self._viewer = napari_viewer
        self._session_models: dict[str, nn.Module] = dict(session_models.items())  # trained in this session
        self._handles: dict[tuple, Any] = {}
        self._cancel = threading.Event()
        self._closed = False  # the Qt widget is gone (viewer closed): worker signals are ignored
        self._pbar: progress | None = None
        self.worker: Any = None
        self._offered_masks: weakref.WeakSet = weakref.WeakSet()  # nodata masks chosen once (_follow_nodata_mask)

        self._image = ComboBox(label="input", choices=self._image_choices, nullable=False, tooltip=TIPS["image"])
        self._task = ComboBox(label="task", choices=TASKS, value="denoise", tooltip=TIPS["task"])
        self._scale = ComboBox(label="scale", choices=(("x2", 2), ("x4", 4)), value=2, tooltip=TIPS["scale"])
        self._mask = ComboBox(label="mask", choices=self._mask_choices, nullable=True, value=None, tooltip=TIPS["mask"])
        self._invert_mask = CheckBox(text="mask marks the valid pixels", value=False, tooltip=TIPS["invert_mask"])
        self._nodata = LineEdit(label="nodata", value="", tooltip=TIPS["nodata"])
        self._white = LineEdit(label="white level", value="", tooltip=TIPS["white_level"])
        self._cfa = ComboBox(label="Bayer pattern", choices=PATTERNS, value="RGGB", tooltip=TIPS["cfa"])
        self._model = ComboBox(label="model", choices=self._model_choices, tooltip=TIPS["model"])
        self._checkpoint = FileEdit(
            label="checkpoint", mode="r", filter="Checkpoints (*.safetensors *.pth *.pt *.ckpt)", tooltip=TIPS["checkpoint"]
        )
        self._tile = _auto_spin("tile", 4096, 16)
        self._overlap = _auto_spin("overlap", 512, 8)
        self._batch = _auto_spin("batch", 256, 1)
        self._chunk = _auto_spin("chunk", 16384, 256)
        self._device = ComboBox(label="device", choices=DEVICES, value="auto", tooltip=TIPS["device"])
        self._precision = ComboBox(label="precision", choices=PRECISIONS, value="auto", tooltip=TIPS["precision"])
        self._ensemble = CheckBox(text="self-ensemble (8x slower)", value=False, tooltip=TIPS["ensemble"])
        self._output = RadioButtons(
            label="output", choices=(NEW_LAYER, ZARR), value=NEW_LAYER, orientation="horizontal", tooltip=TIPS["output"]
        )
        self._zarr = FileEdit(label="zarr file", mode="w", filter="OME-Zarr (*.zarr)", tooltip=TIPS["zarr"])
        self._existing = ComboBox(label="if it exists", choices=EXISTING, value="stop", tooltip=TIPS["existing"])
        self._open_zarr = CheckBox(text="open result as a layer", value=True, tooltip=TIPS["open"])
        self._preview_btn = PushButton(text="Preview", tooltip=TIPS["preview"])
        self._run_btn = PushButton(text="Run", tooltip=TIPS["run"])
        self._cancel_btn = PushButton(text="Cancel", enabled=False, tooltip=TIPS["cancel"])
        buttons = Container(widgets=[self._preview_btn, self._run_btn, self._cancel_btn], layout="horizontal", labels=False)
        self._status = Label(value="idle")
        super().__init__(
            widgets=[
                self._image, self._task, self._scale, self._mask, self._invert_mask, self._nodata, self._white, self._cfa,
                self._model, self._checkpoint, self._tile, self._overlap,
                self._batch, self._chunk, self._device, self._precision, self._ensemble, self._output, self._zarr, self._existing,
                self._open_zarr, buttons, self._status,
            ]
        )

        self._task.changed.connect(self._on_task)
        self._image.changed.connect(self._follow_pattern)
        self._image.changed.connect(self._follow_nodata_mask)
        self._follow_pattern(self._image.value)
        self._scale.changed.connect(lambda _=None: self._model.reset_choices())
        self._model.changed.connect(self._update_visibility)
        self._output.changed.connect(self._update_visibility)
        self._mask.changed.connect(self._update_visibility)
        self._preview_btn.clicked.connect(self.preview)
        self._run_btn.clicked.connect(self.run)
        self._cancel_btn.clicked.connect(self.cancel)
        events = napari_viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            ev.connect(self._refresh_layers)
        self.native.destroyed.connect(self._on_destroyed)
        when_removed(self, self.cancel)  # the dock closed: nothing else could stop the job
        session_models.subscribe(self._on_session_model)
        self._select_default_model()
        self._update_visibility()

    # ------------------------------------------------------------------ choices

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _mask_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        # and integer or boolean images: a gap mask file (a Landsat gap mask) opens as an Image layer
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, (Labels, Shapes))
                or (isinstance(layer, Image) and not layer.rgb and np.dtype(level0(layer.data).dtype).kind in "biu")]

    def _refresh_layers(self, _event: Any = None) -> None:
        self._image.reset_choices()
        self._mask.reset_choices()
        self._follow_nodata_mask()

    def _model_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari_attnrestore.zoo import default_key, defaults, list_models  # without torch

        task, scale = self._task.value, self._scale.value
        default = defaults().get(default_key(task, scale))
        names = [
            c["name"]
            for c in list_models()
            if c.get("task") == task and (task != "sr" or int(c.get("scale") or 2) == scale)
        ]
        names.sort(key=lambda n: n != default)
        choices: list[tuple[str, Any]] = [(f"{n} (default)" if n == default else n, n) for n in names]
        for name, module in self._session_models.items():
            k, kind = int(getattr(module, "scale", 1) or 1), _module_task(module)
            if (task == "sr" and k == scale) or (task != "sr" and k == 1 and kind in (None, task)):
                choices.append((f"{name} (session)", module))
        choices.append((CHECKPOINT, CHECKPOINT))
        return choices

    def _select_default_model(self) -> None:
        self._model.reset_choices()
        ours = self._model_choices()  # the combo box keeps old items' places, so not its order
        if ours:
            self._model.value = ours[0][1]

    def _on_task(self, _value: Any = None) -> None:
        self._select_default_model()
        self._follow_nodata_mask()
        self._update_visibility()
        if not self._has_model() and self._task.value in ("demosaic", "inpaint"):
            show_info(f"AttnRestore: {self._no_model_message()}")

    def _has_model(self) -> bool:
        """Whether the task has a shipped or session model (besides "checkpoint file...")."""
        return any(c != CHECKPOINT for c in self._model.choices)

    def _no_model_message(self) -> str:
        return (f"no model for {self._task.value} yet: add a checkpoint (model: {CHECKPOINT}) "
                "or a network from Python with add_model(name, module)")

    def _follow_pattern(self, layer: Any = None) -> None:
        """Choose the Bayer pattern a raw's file states (the reader's layer metadata "cfa")."""
        pattern = (getattr(layer, "metadata", None) or {}).get("cfa")
        if pattern in PATTERNS:
            self._cfa.value = pattern

    def _follow_nodata_mask(self, _value: Any = None) -> None:
        """For inpainting with no mask chosen, choose the input's own nodata mask (the reader's
        ``NAME [no data]`` Labels layer of a GeoTIFF's internal mask), once per mask layer:
        set back to none, it stays none."""
        image = self._image.value
        if self._task.value != "inpaint" or image is None or self._mask.value is not None:
            return
        for name, layer in self._mask_choices():
            if isinstance(layer, Labels) and name == f"{image.name} [no data]" and layer not in self._offered_masks:
                self._offered_masks.add(layer)
                self._mask.value = layer
                return

    def _update_visibility(self, _value: Any = None) -> None:
        task = self._task.value
        self._scale.visible = task == "sr"
        self._mask.visible = self._nodata.visible = task == "inpaint"
        self._invert_mask.visible = task == "inpaint" and self._mask.value is not None
        self._cfa.visible = task == "demosaic"
        self._checkpoint.visible = self._model.value == CHECKPOINT
        to_zarr = self._output.value == ZARR
        self._zarr.visible = to_zarr
        self._existing.visible = to_zarr
        self._open_zarr.visible = to_zarr

    def add_model(self, name: str, module: nn.Module, select: bool = True) -> None:
        """Offer a torch module in the model list and (``select``) choose its task.

        The task comes from ``module.scale`` (2/4: super-resolve) and its
        ``in_channels``/``out_channels``: 2 -> 1 inpaint, 4 -> 3 demosaic, else denoise.
        """
        self._session_models[name] = module
        self._model.reset_choices()
        if select:
            k = int(getattr(module, "scale", 1) or 1)
            if k > 1:
                self._task.value = "sr"
                self._scale.value = k
            else:
                self._task.value = _module_task(module) or "denoise"
            self._model.reset_choices()
            self._model.value = module

    def _on_session_model(self, name: str, module: nn.Module) -> None:
        """A model was trained in this session (Train widget): offer it, selected unless busy."""
        self.add_model(name, module, select=not self.busy)

    # ------------------------------------------------------------------ settings

    @property
    def busy(self) -> bool:
        """Whether a preview or run is in progress."""
        return self.worker is not None

    def set_options(self, **values: Any) -> None:
        """Set widget values by name: input, task, scale, mask, invert_mask, nodata, white_level, cfa (or
        pattern), model, checkpoint, tile, overlap, batch, chunk, device, precision, ensemble, output, zarr,
        existing, open_zarr."""
        names = {"input": "_image", "zarr": "_zarr", "existing": "_existing", "open_zarr": "_open_zarr",
                 "pattern": "_cfa", "white_level": "_white"}
        for key in ("nodata", "white_level"):  # number fields: empty is none
            if values.get(key) is not None:
                values[key] = str(values[key])
            elif key in values:
                values[key] = ""
        for key in ("task", "scale"):  # the model list depends on them
            if key in values:
                getattr(self, f"_{key}").value = values.pop(key)
        for key, value in values.items():
            widget = getattr(self, names.get(key, f"_{key}"), None)
            if widget is None:
                raise TypeError(f"unknown option {key!r}")
            set_value(widget, value)

    def _model_spec(self) -> Any:
        value = self._model.value
        if value == CHECKPOINT:
            path = self._checkpoint.value
            if path is None or str(path) in ("", "."):
                raise ValueError(self._no_model_message() if not self._has_model() else "choose a checkpoint file")
            if not Path(path).is_file():
                raise ValueError(f"{path}: checkpoint not found" if not Path(path).exists() else f"{path}: not a file")
            return str(path)
        if value is None:
            raise ValueError(self._no_model_message())
        return value

    def _resolve(self, spec: Any, task: str, scale: int | None, device: str, precision: str, ensemble: bool = False) -> Any:
        """A ModelHandle (built in the worker thread: loading weights takes time), cached for a
        file or a shipped name.  A session module is taken afresh each time: the engine runs
        a copy of it, and a cached copy kept the weights it had at the first run while the
        module trained on."""
        from napari_attnrestore.api import resolve_model

        if not isinstance(spec, str):
            return resolve_model(spec, task, scale, device, precision, ensemble=ensemble)
        key = ((spec, _mtime(spec)), task, scale, device, precision, ensemble)
        handle = self._handles.get(key)
        if handle is None:
            handle = resolve_model(spec, task, scale, device, precision, ensemble=ensemble)
            self._handles[key] = handle
        return handle

    def _request(self) -> tuple[Image, Any, dict[str, Any], Any]:
        """The input layer, its level-0 data, ``ar.restore`` keyword arguments and the model spec."""
        layer = self._image.value
        if layer is None:
            raise ValueError("add an image layer to restore")
        data = level0(layer.data)
        task = self._task.value
        _check_layer(layer, data, task)
        kwargs: dict[str, Any] = {
            "task": task,
            "scale": self._scale.value if task == "sr" else None,
            "tile": self._tile.value or None,
            "overlap": self._overlap.value or None,
            "batch": self._batch.value or None,
            "chunks": self._chunk.value or None,
            "device": self._device.value,
            "precision": self._precision.value,
            "ensemble": bool(self._ensemble.value),
            "rgb": bool(layer.rgb),
            "channel_axis": channel_axis_of(data.shape, layer.rgb, layer.metadata, getattr(layer, "axis_labels", None)),
        }
        if task == "demosaic":
            kwargs["cfa"] = self._cfa.value
        elif task == "inpaint":
            kwargs["mask"] = self._mask_data(layer, data)
            kwargs["invert_mask"] = kwargs["mask"] is not None and bool(self._invert_mask.value)
        # the field (inpainting), else the layer's own (a GeoTIFF's GDAL_NODATA), as the API reads a file's
        nodata = layer_nodata(number_or_none(self._nodata.value, "nodata") if task == "inpaint" else None,
                              layer.metadata)
        if nodata is not None:
            kwargs["nodata"] = nodata
        white = number_or_none(self._white.value, "white level")
        if white is not None:
            kwargs["white_level"] = white
        return layer, data, kwargs, self._model_spec()

    def _mask_data(self, layer: Image, data: Any) -> Any:
        """The inpainting mask for ``layer`` (None: NaN / nodata only), checked against its Y, X."""
        mask_layer = self._mask.value
        if mask_layer is None:
            return None
        spatial = tuple(int(n) for n in data.shape[: data.ndim - int(layer.rgb)])
        if isinstance(mask_layer, Shapes):  # drawn later: a crop for Preview, in the worker for Run
            turned = [lyr.name for lyr in (layer, mask_layer) if _turned(lyr)]
            if turned:  # (the gap drawn was mapped by scale and translate alone: nothing was filled)
                raise ValueError(f"layer {turned[0]!r} is rotated, sheared or given an affine; a Shapes mask is placed "
                                 "on the image by scale and translate only; draw the gaps as Labels over the image's "
                                 "pixels instead")
            mask = ShapesMask(mask_layer, layer, spatial)
        else:
            mask = level0(mask_layer.data)
        shape = tuple(int(n) for n in mask.shape)
        if shape not in (spatial[-2:], spatial):
            raise ValueError(
                f"mask layer {mask_layer.name!r} has shape {shape} but the input {layer.name!r} has "
                f"(Y, X) = {spatial[-2:]}; the mask must have the same Y, X size (or the input's shape {spatial})"
            )
        if isinstance(mask_layer, (Labels, Image)):  # used pixel for pixel: it must lie on the image's pixels
            n = len(shape)
            ours = (tuple(layer.scale[-n:]), tuple(layer.translate[-n:]))
            theirs = (tuple(mask_layer.scale[-n:]), tuple(mask_layer.translate[-n:]))
            if not np.allclose(np.array(ours, dtype=float), np.array(theirs, dtype=float)) or \
                    not _same_turn(layer, mask_layer):  # (a rotated image took an unrotated mask's pixels)
                plain = lambda v: "(" + ", ".join(f"{float(x):g}" for x in v) + ")"  # noqa: E731
                raise ValueError(
                    f"mask layer {mask_layer.name!r} lies elsewhere than the input {layer.name!r} (scale "
                    f"{plain(theirs[0])}, translate {plain(theirs[1])} against scale {plain(ours[0])}, translate "
                    f"{plain(ours[1])}); the mask is read pixel for pixel, so give it the input's geometry"
                )
        return mask

    # ------------------------------------------------------------------ actions

    def preview(self) -> None:
        """Restore the visible region of the current plane into a "(preview)" layer."""
        if self.busy:
            return
        try:
            layer, data, kwargs, spec = self._request()
            dims = self._viewer.dims
            if set(dims.order[-2:]) != {dims.ndim - 2, dims.ndim - 1}:  # Y, X swapped on screen is that plane
                raise ValueError("Preview restores a (Y, X) plane, and the viewer shows other axes (dims order "
                                 f"{tuple(dims.order)}); roll the dims back with the transpose button, or use Run")
            kwargs["chunks"] = None
            box = np.asarray(layer.corner_pixels, dtype=float)
            if layer.multiscale:
                box = box * np.asarray(layer.downsample_factors[layer.data_level])
            point = layer.world_to_data(self._viewer.dims.point)
            crop = preview_crop(data.shape, layer.rgb, point, box, max_side=PREVIEW_MAX)
            ndim = len(data.shape)  # (the crop keeps every axis: a slice each)
            y0, x0 = crop.key[ndim - 2 - int(layer.rgb)].start, crop.key[ndim - 1 - int(layer.rgb)].start
            if kwargs.get("cfa"):
                kwargs["cfa"] = shift_pattern(kwargs["cfa"], y0, x0)
        except Exception as e:  # bad settings: say so, stay idle
            self._on_error(e, "AttnRestore preview")
            return

        def done(result: jobs.JobResult) -> None:
            k = int(result.info.get("scale", 1))
            nlead = ndim - 2 - int(layer.rgb)
            out = crop.trim_output(result.data, k, nlead)
            scale, translate = crop.geometry(layer.scale, layer.translate, k)
            name = f"{layer.name} (preview)"
            if name in self._viewer.layers:
                self._viewer.layers.remove(name)
            self._add_result(layer, out, name, scale, translate, {"task": kwargs["task"], "preview": True},
                             rgb=kwargs["task"] == "demosaic")

        self._start(self._preview_gen, (data, crop.key, kwargs, spec), done, f"preview of {layer.name}")

    def run(self) -> None:
        """Restore the whole input layer into a new layer or an OME-Zarr file."""
        if self.busy:
            return
        try:
            layer, data, kwargs, spec = self._request()
            to_zarr = self._output.value == ZARR
            dst = self._zarr_path() if to_zarr else None
            if to_zarr:
                kwargs["meta"] = layer_meta(layer, data)
                if self._existing.value == "overwrite":
                    self._refuse_replacing_an_open_layer(dst)
            else:
                _check_fits_in_memory(data, kwargs["scale"] or 1, 3 if kwargs["task"] == "demosaic" else 1)
        except Exception as e:  # bad input or settings: say so before any work starts, stay idle
            self._on_error(e)
            return
        existing = self._existing.value
        open_result = self._open_zarr.value

        def done(result: jobs.JobResult) -> None:
            k = int(result.info.get("scale", 1))
            suffix = SUFFIXES.get(kwargs["task"], f"x{k}")
            if result.path is not None and not open_result:
                show_info(f"AttnRestore: wrote {result.path}")
                return
            scale, translate = sr_geometry(layer.scale, layer.translate, k)
            extra = {"task": kwargs["task"], **({"path": result.path} if result.path else {}),
                     **({"nodata": kwargs["nodata"]} if kwargs.get("nodata") is not None else {})}
            self._add_result(layer, result.data, f"{layer.name} ({suffix})", scale, translate, extra,
                             rgb=kwargs["task"] == "demosaic")

        args = (data, kwargs, spec, dst, existing)
        self._start(self._run_gen, args, done, f"{kwargs['task']} {layer.name}")

    def cancel(self) -> None:
        """Ask the running job to stop at the next chunk."""
        if self.busy:
            self._cancel.set()
            self._status.value = "cancelling: stopping at the next chunk..."

    def _zarr_path(self) -> str:
        path = self._zarr.value
        if path is None or str(path) in ("", "."):
            raise ValueError("choose an output zarr file")
        p = Path(path).expanduser()
        if p.suffix != ".zarr":
            p = p.with_name(p.name + ".ome.zarr")
        parent = p.parent
        if not parent.is_dir():
            raise ValueError(f"{p}: folder {parent} does not exist" if not parent.exists() else f"{p}: {parent} is not a folder")
        if not os.access(parent, os.W_OK):
            raise ValueError(f"{p}: folder {parent} is not writable")
        if p.exists() and self._existing.value == "stop":
            raise ValueError(f"{p}: exists; choose 'if it exists: resume' to continue it or 'overwrite' to replace it")
        return str(p)

    def _refuse_replacing_an_open_layer(self, dst: str) -> None:
        """Overwriting a store that a layer reads (an earlier result) would leave that layer
        reading chunks of another shape, or another image under its old name."""
        from ..io import ImageWriteError
        from ..io._output import backing_stores, refuse_output_over_input

        if not os.path.exists(dst):
            return
        for other in self._viewer.layers:
            data = getattr(other, "data", None)
            sources = [(other.metadata or {}).get("path"), getattr(other.source, "path", None), *backing_stores(data)]
            try:
                refuse_output_over_input(dst, [str(p) for p in sources if p])
            except ImageWriteError:
                raise ValueError(f"{dst}: layer {other.name!r} shows this store; remove that layer before "
                                 "overwriting it, or choose another zarr file") from None

    # ------------------------------------------------------------------ workers

    def _with_model(self, kwargs: dict[str, Any], spec: Any) -> tuple[dict[str, Any], int]:
        kw = dict(kwargs)
        handle = self._resolve(spec, kw["task"], kw["scale"], kw["device"], kw["precision"], kw.pop("ensemble", False))
        return {**kw, "model": handle}, int(handle.info.scale)

    def _preview_gen(self, data: Any, key: tuple[slice, ...], kwargs: dict[str, Any], spec: Any,
                     cancel: threading.Event) -> jobs.JobGen:
        # the crop is read here, off the GUI thread: a lazy layer's chunks can take seconds
        pixels = np.asarray(data[key])
        kw, k = self._with_model(kwargs, spec)
        mask = kw.get("mask")
        if mask is not None:
            spatial_key = key[: len(key) - int(bool(kw.get("rgb")))]
            kw["mask"] = np.asarray(mask[spatial_key[-mask.ndim :]])
        result = yield from jobs.preview_job(pixels, kw, cancel)
        result.info["scale"] = k
        return result

    def _run_gen(
        self, data: Any, kwargs: dict[str, Any], spec: Any, dst: str | None, existing: str, cancel: threading.Event
    ) -> jobs.JobGen:
        kw, k = self._with_model(kwargs, spec)
        if isinstance(kw.get("mask"), ShapesMask):  # here, off the GUI thread: a gigapixel mask takes seconds
            kw["mask"] = kw["mask"].rasterize()
        if dst is None:
            result = yield from jobs.layer_job(data, kw, cancel)
        else:
            result = yield from jobs.zarr_job(
                data, dst, kw, cancel, overwrite=existing == "overwrite", resume=existing == "resume"
            )
        result.info["scale"] = k
        if dst is not None:
            result.path = dst
        return result

    def _start(self, gen: Any, args: tuple, on_done: Any, desc: str) -> None:
        self._cancel = cancel = threading.Event()
        self._pbar = progress(total=0, desc=f"AttnRestore: {desc}")
        worker = create_worker(jobs.surfacing_runtime_errors(gen), *args, cancel, _start_thread=False,
                               _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: self._on_returned(result, on_done, desc))
        worker.errored.connect(self._on_error)
        worker.warned.connect(jobs.warning_notifier())
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._set_busy(True, f"{desc}: starting...")
        start_with_a_thread_to_spare(worker)

    def _on_progress(self, value: tuple[int, int]) -> None:
        if not self.busy or self._closed:  # a late event from a run that already ended
            return
        done, total = value
        if not self._cancel.is_set():
            self._status.value = f"running: {done}/{total} chunks"
        # last: napari's progress bar processes Qt events, so the job's end ("done", idle)
        # may be handled inside this call; nothing may overwrite it afterwards
        pbar = self._pbar
        if pbar is not None:
            if pbar.total != total:
                pbar.total = total
            if done > pbar.n:
                pbar.update(done - pbar.n)

    def _on_returned(self, result: jobs.JobResult, on_done: Any, desc: str) -> None:
        if self._closed:  # the viewer is gone: no layer to add, no widget to update
            return
        if result.cancelled:
            where = f"; partial OME-Zarr left at {result.path} (choose 'if it exists: resume' and Run to complete it)" if result.path else ""
            show_info(f"AttnRestore: {desc} cancelled{where}")
            self._status.value = "cancelled"
            return
        try:
            on_done(result)
            self._status.value = "done"
        except Exception as e:
            self._on_error(e)

    def _on_error(self, exc: BaseException, prefix: str = "AttnRestore") -> None:
        """One error notification (one line) and the status line; the widget stays usable."""
        if self._closed:
            return
        msg = " ".join(str(exc).split()) or type(exc).__name__
        show_error(f"{prefix}: {msg}")
        self._status.value = f"error: {msg[:200]}"

    def _on_aborted(self) -> None:  # quit from napari's task manager
        self._cancel.set()
        if not self._closed:
            self._status.value = "cancelled"

    def _on_destroyed(self, *_: Any) -> None:
        self._closed = True  # the viewer closed under a running job: its signals touch nothing
        self._cancel.set()
        session_models.unsubscribe(self._on_session_model)

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        if not self._closed:
            self._set_busy(False)

    def _set_busy(self, busy: bool, status: str | None = None) -> None:
        self._preview_btn.enabled = not busy
        self._run_btn.enabled = not busy
        self._cancel_btn.enabled = busy
        if status is not None:
            self._status.value = status

    # ------------------------------------------------------------------ results

    def _add_result(
        self, layer: Image, data: Any, name: str, scale: tuple, translate: tuple, extra: dict[str, Any],
        rgb: bool = False,
    ) -> Image:
        """Add a result layer; ``rgb``: the result gained a trailing RGB axis (demosaic).

        ``scale``/``translate`` are the input's (one entry per layer axis), which is also
        right for a result with an extra RGB axis (napari's RGB layers have no entry for it),
        in the input's unrotated frame: the input's rotate, shear and affine go on to the
        result, and the shift of its origin turns with them.
        """
        from napari.utils.transforms import Affine

        rgb = rgb or bool(layer.rgb)
        turn = Affine(rotate=layer.rotate, shear=layer.shear, ndim=len(layer.scale)).linear_matrix
        origin = np.asarray(layer.translate, dtype=float)
        translate = tuple(origin + turn @ (np.asarray(translate, dtype=float) - origin))
        # a GeoTIFF's georeference and nodata go on, so the result saves as a GeoTIFF again
        meta = {k: v for k, v in layer.metadata.items() if k in ("axes", "units", *CARRIED)}
        if rgb and not layer.rgb and isinstance(meta.get("axes"), str):
            meta["axes"] += "c"
        meta["attnrestore"] = {"source_layer": layer.name, **extra}
        if extra.get("nodata") is not None:  # the value this job kept as no data (as the CLI's .tif declares it)
            meta["nodata"] = extra["nodata"]
        if extra.get("path"):  # read from its store: writers and restores must not replace it
            meta["path"] = extra["path"]
        kw: dict[str, Any] = {"name": name, "scale": scale, "translate": translate, "metadata": meta,
                              "rgb": rgb, "blending": layer.blending, "rotate": layer.rotate,
                              "shear": layer.shear, "affine": layer.affine}
        if getattr(layer, "units", None) is not None:  # one layer without units hides every scale bar unit
            kw["units"] = layer.units
        if getattr(layer, "axis_labels", None) is not None:  # the dims slider names ('t', 'z', ...)
            kw["axis_labels"] = layer.axis_labels
        if not rgb:
            kw["colormap"] = layer.colormap.name
            if np.dtype(level0(data).dtype) == np.dtype(level0(layer.data).dtype):
                kw["contrast_limits"] = tuple(layer.contrast_limits)
        if isinstance(data, list):
            kw["multiscale"] = True
        return self._viewer.add_image(data, **kw)


def layer_meta(layer: Image, data: Any) -> dict[str, Any]:
    """A layer's axes, pixel size, origin, units and source file, for an output written to disk.

    napari keeps no scale entry for an RGB layer's colour axis; it gets 1 here.
    """
    extra = data.ndim - len(layer.scale)
    meta: dict[str, Any] = {"scale": (*map(float, layer.scale), *[1.0] * extra),
                            "translate": (*map(float, layer.translate), *[0.0] * extra)}
    state = {"rgb": bool(layer.rgb), "metadata": layer.metadata, "units": getattr(layer, "units", None),
             "axis_labels": getattr(layer, "axis_labels", None)}
    axes = meta["axes"] = layer_axes(data.shape, state)[0]  # as the plugin's writers name them
    units = layer_units(state, axes, bool(layer.rgb))
    if units:  # from our reader's metadata, else napari's layer units
        meta["units"] = units
    path = layer.metadata.get("path") or getattr(layer.source, "path", None)
    if path:
        meta["path"] = str(path)
        if layer.metadata.get("series") is not None:  # which image of a TIFF holding several
            meta["series"] = layer.metadata["series"]
    meta.update(carried(layer.metadata))  # a GeoTIFF's, kept in the store
    # the channel's name, colour and display window, as the plugin's OME-Zarr writer keeps them
    omero = layer_omero(layer.as_layer_data_tuple()[1], axes, bool(layer.rgb), data.shape, data.dtype)
    if omero:
        meta["omero"] = omero
    return meta


def _turned(layer: Any) -> bool:
    """Whether a layer is placed by more than scale and translate (rotate, shear, affine)."""
    return bool(transforms_beyond_scale({"rotate": layer.rotate, "shear": layer.shear,
                                         "affine": layer.affine.affine_matrix}))


def _same_turn(a: Any, b: Any) -> bool:
    """Whether two layers are rotated, sheared and given an affine alike (over their last axes)."""
    n = min(a.ndim, b.ndim)
    if not (_turned(a) or _turned(b)):
        return True
    if a.ndim != b.ndim:
        return False
    return (np.allclose(a.rotate, b.rotate) and np.allclose(a.shear, b.shear)
            and np.allclose(a.affine.affine_matrix[-n - 1 :, -n - 1 :], b.affine.affine_matrix[-n - 1 :, -n - 1 :]))


def _check_layer(layer: Image, data: Any, task: str) -> None:
    """Refuse, before any work starts, a layer the engine cannot restore (named in the message)."""
    from napari_attnrestore.engine.plan import check_image

    try:
        check_image(tuple(data.shape), data.dtype, bool(layer.rgb), task)
    except ValueError as e:
        raise ValueError(f"layer {layer.name!r}: {e}") from None
    if not _has_finite(data):
        raise ValueError(f"layer {layer.name!r} has no finite pixels (all NaN or Inf): nothing to restore")


def _has_finite(data: Any, rows: int = 1024) -> bool:
    """Whether an in-memory float array has a finite pixel (stops at the first block that has one).

    Lazy data (dask, zarr) is not scanned: reading it all up front would take as long as the job.
    """
    if not isinstance(data, np.ndarray) or data.dtype.kind != "f":
        return True
    if data.ndim == 2:
        planes = data[None]
    elif data.flags.c_contiguous:
        planes = data.reshape((-1, *data.shape[-2:]))
    else:
        return bool(np.isfinite(data).any())
    for plane in planes:
        for y in range(0, plane.shape[0], rows):
            if np.isfinite(plane[y : y + rows]).any():
                return True
    return False


def _mtime(path: str) -> float | None:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return None


def _module_task(module: Any) -> str | None:
    """The task a session module fits, from its scale and channels; None if it does not say."""
    if int(getattr(module, "scale", 1) or 1) > 1:
        return "sr"
    cin, cout = getattr(module, "in_channels", None), getattr(module, "out_channels", None)
    if cin is None or cout is None:
        return None
    return {(2, 1): "inpaint", (4, 3): "demosaic"}.get((int(cin), int(cout)), "denoise")


def shift_pattern(pattern: str, y0: int, x0: int) -> str:
    """The Bayer pattern at pixel ``(y0, x0)`` of an image whose pixel (0, 0) has ``pattern``."""
    p = pattern.upper()
    return "".join(p[2 * ((i + y0) % 2) + (j + x0) % 2] for i in (0, 1) for j in (0, 1))


def _check_fits_in_memory(data: Any, k: int, channels: int = 1) -> None:
    """Refuse in-memory output beyond :data:`MAX_LAYER_BYTES` (an SR x4 of a large image)."""
    nbytes = int(np.prod(data.shape, dtype=np.float64) * k * k * channels * np.dtype(data.dtype).itemsize)
    if nbytes > MAX_LAYER_BYTES:
        raise ValueError(
            f"the result would take {nbytes / 2**30:.1f} GiB of memory; choose output: zarr file "
            "(it is written chunk by chunk and opened lazily)"
        )


def _auto_spin(name: str, maximum: int, step: int) -> Any:
    return auto_spin_box(name, maximum, step, TIPS[name])
