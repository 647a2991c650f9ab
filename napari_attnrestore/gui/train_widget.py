"""The Train dock widget: train or fine-tune a restoration network on an image layer.

Training (``ar.train``) runs in a napari ``thread_worker``: the viewer never freezes.
Each step's loss is drawn in a small live curve (plain ``QPainter``, no plotting
library) and counted in napari's activity dock.

What is learned from what:

- denoise, no clean layer: **self-supervised** (Neighbor2Neighbor) training on the noisy layer
  alone;
- denoise with a clean layer (same shape): **paired**, supervised training;
- super-resolve: the layer is taken as the high-resolution truth and degraded
  synthetically (bicubic downscaling) to make the inputs.

Stop ends training early and still gives a usable model.  ``ar.train`` returns its
(EMA-averaged) model only with its last event, and closing its generator returns
nothing, so this widget builds the network itself (``ar.build_model`` for "new <arch>",
``ar.load_model`` for shipped weights) and passes it as ``model=``: it then holds the very
module being trained.  A run that ends normally gives the final event's EMA model; a
stopped one gives that module as trained so far (switched to ``eval()``).  Stop takes
effect after the current step: ``ar.train`` reports every step, and the widget's loss
curve gets one point per ``steps // 2000`` steps (their mean loss) at most.

Either way the model is added to every Restore widget's model list (as
``trained: <layer> (<n> steps)``, see :mod:`.session_models`), and "Save checkpoint"
writes it with ``ar.save_model`` (``.safetensors`` + ``.json`` card).
"""

from __future__ import annotations

import copy
import math
import sys
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from . import session_models
from .geometry import channel_axis_of, level0
from .jobs import warning_notifier
from .widgets import layer_nodata, number_or_none, set_value, start_with_a_thread_to_spare, when_removed

if TYPE_CHECKING:
    import napari
    from torch import nn

    from ..training.loop import TrainEvent

__all__ = ["TrainError", "TrainRequest", "TrainRun", "TrainWidget", "curve_polyline", "train_job"]

TASKS = (("denoise", "denoise"), ("super-resolve", "sr"), ("demosaic", "demosaic"), ("inpaint", "inpaint"))
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")
MAX_EVENTS = 2000  # events per run at most (longer runs average several steps per event)
CURVE_SIZE = (300, 120)

TIPS = {
    "image": "Image layer to learn from: the noisy data for denoising, the high-resolution truth for "
    "super-resolution. Every 2D plane (time points, z, channels, RGB) is used.",
    "clean": "Optional clean counterpart of the input (same shape): supervised, paired training. "
    "Leave empty to train self-supervised (Neighbor2Neighbor) on the noisy layer alone.",
    "task": "denoise: same-size output. super-resolve: x2 or x4 more pixels per axis (the input layer is "
    "downscaled to make the training inputs). demosaic: Bayer mosaic to RGB; it learns from a colour (RGB) layer, "
    "mosaicked with every Bayer pattern. inpaint: fill gaps (NaN pixels); it learns from the layer alone "
    "by hiding known pixels behind random strokes, boxes and scan lines.",
    "scale": "Upscaling factor for super-resolution.",
    "nodata": "Inpainting: pixels equal to this value are the layer's gaps (e.g. 0 for a Landsat-7 band), "
    "learned around, never as data. Empty: the layer's own (a GeoTIFF's declared nodata), which every task "
    "leaves out.",
    "start": "new <architecture>: an untrained network. A shipped weight or a model trained earlier in this "
    "session: fine-tune it (a copy; the original is left as it is).",
    "preset": "Size of a new network (the architecture's presets; 'tiny' trains fast on a CPU).",
    "steps": "Optimisation steps. A few hundred fine-tune a model; a new one needs thousands (a GPU helps).",
    "batch": "Patches per step. Lower it if memory runs out.",
    "patch": "Side of the square training patches, in pixels (at most the image's smaller side; a multiple of "
    "the scale for super-resolution).",
    "lr": "Peak learning rate (AdamW, with warm-up and cosine decay). Use about a tenth of it to fine-tune.",
    "device": "auto: CUDA, then Apple MPS, then the CPU.",
    "precision": "fp32: full precision. bf16: mixed precision (the network computes in bfloat16, its weights "
    "stay float32); faster on GPUs and on CPUs with bfloat16 instructions.",
    "train": "Start training in the background.",
    "stop": "Stop after the current step; the model trained so far is kept and can be used and saved.",
    "checkpoint": "Where 'Save checkpoint' writes the trained model (.safetensors, with a .json card).",
    "save": "Save the last trained model as a checkpoint (ar.load_model and the Restore widget read it), its "
            "weights as trained (32-bit floats): results from the file are the session model's.",
    "curve": "Training loss per step (light) and its running mean (dark); log scale.",
}


class TrainError(Exception):
    """A training failure, re-raised as a plain Exception.

    napari's generator worker treats a ``RuntimeError`` escaping the function (torch's
    usual error type, out-of-memory included) as "worker deleted" and emits neither
    ``errored`` nor ``finished``; this wrapper makes such errors reach the widget.
    """


@dataclass
class TrainRequest:
    """Everything a training run needs, gathered on the GUI thread."""

    images: Any
    task: str = "denoise"
    clean: Any = None
    mode: str = "self-supervised"
    scale: int | None = None
    start: tuple[str, str] = ("new", "hat")  # ("new", arch) | ("weights", name) | ("session", name)
    preset: str = "tiny"
    config: dict[str, Any] = field(default_factory=dict)
    steps: int = 500
    batch: int = 8
    patch: int = 64
    lr: float = 5e-4
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0  # of the new network's weights and of training's draws (ar.train's seed)
    source: str = ""  # the input layer's name (model name, card)
    nodata: float | None = None  # the value of the layer's gaps (inpainting), or its file's declared one
    channel_axis: int | None = None  # the layer's channel axis (each channel scaled on its own)
    session_model: Any = None  # the module to copy for ("session", name)


@dataclass
class TrainRun:
    """A training run's state, shared by the worker thread (writes) and the widget (reads).

    The worker stores the starting module (``net``; ``ar.train`` trains a copy), the last
    event (whose ``current_model()`` gives the averaged weights so far) and, when training
    ends normally, the final EMA model.  The widget reads them once the worker
    has stopped (returned or aborted), when nothing trains any more.
    """

    request: TrainRequest
    stop: threading.Event = field(default_factory=threading.Event)
    net: Any = None
    last: Any = None
    final: Any = None
    reported: bool = False  # the widget has shown the outcome (set on the GUI thread)

    @property
    def stopped(self) -> bool:
        return self.final is None

    def model(self) -> nn.Module | None:
        """The usable model: the final EMA model, or the averaged weights so far (None before step 1)."""
        if self.final is not None:
            return self.final
        if self.last is None or self.last.step == 0:
            return None
        return self.last.current_model()  # carded by ar.train: planned steps, stopped early


def _starting_model(req: TrainRequest) -> nn.Module:
    import napari_attnrestore as ar

    kind, name = req.start
    scale = req.scale if req.task == "sr" else None
    if kind == "new":
        return ar.build_model(name, task=req.task, scale=scale or 1, preset=req.preset, **req.config)
    if kind == "weights":
        return ar.load_model(name, task=req.task, scale=scale)
    if kind == "session":
        net = copy.deepcopy(req.session_model).train()
        net.requires_grad_(True)  # a session model may have been frozen by its owner
        return net
    raise ValueError(f"unknown starting point {req.start!r}")


def train_job(run: TrainRun) -> Generator[TrainEvent, None, TrainRun]:
    """Train as ``run.request`` says, yielding every :class:`TrainEvent`; stops when ``run.stop`` is set.

    Builds (or loads) the network here, in the worker thread, and passes it to
    ``ar.train`` as ``model=``.  Imports neither Qt nor napari.
    """
    import torch

    import napari_attnrestore as ar

    req = run.request
    if run.stop.is_set():  # Stop right after Train: no network built, no model published
        return run
    _avoid_triton_llvm_clash()  # here, in the worker: the import stalled the viewer for 1-2 s
    try:
        torch.manual_seed(req.seed)  # a new network's weights: the same request trains the same model
        run.net = _starting_model(req)
        events = ar.train(
            req.images, task=req.task, model=run.net, clean=req.clean, mode=req.mode, scale=req.scale,
            steps=req.steps, batch=req.batch, patch=req.patch, lr=req.lr, device=req.device, nodata=req.nodata,
            precision=req.precision, seed=req.seed, log_every=1,  # every step: Stop acts after the current one
            channel_axis=req.channel_axis,
        )
        every = max(1, req.steps // MAX_EVENTS)
        losses: list[float] = []
        try:
            for ev in events:
                if run.last is None and not ev.done and run.stop.is_set():
                    break  # stopped while training was set up: a 1-step model took over the Restore widget
                if ev.done:
                    run.final = ev.model
                    yield ev
                    continue
                run.last = ev
                losses.append(ev.loss)
                if ev.step % every == 0 or ev.step == ev.total or run.stop.is_set():
                    # one event per `every` steps, with their mean loss, for the curve
                    yield replace(ev, loss=sum(losses) / len(losses))
                    losses.clear()
                if run.stop.is_set() and run.final is None:
                    break
        finally:
            events.close()  # stops ar.train (and its loop) right here, in this thread
    except RuntimeError as e:
        raise TrainError(str(e).strip() or type(e).__name__) from e
    except ValueError as e:  # ar.train names arrays by their place: here they are layers
        text = str(e).replace("training image 1", f"layer {req.source!r}").replace("clean image 1", "the clean layer")
        raise ValueError(text) from e
    return run


class TrainWidget(Container):
    """Train or fine-tune a denoising / super-resolution network on an image layer.

    Parameters
    ----------
    napari_viewer
        The viewer whose image layers are offered as training data.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self._viewer = napari_viewer
        self._pbar: progress | None = None
        self._run: TrainRun | None = None
        self.worker: Any = None
        self.model: nn.Module | None = None  # the last trained model
        self.model_name: str | None = None  # its name in the Restore widgets' model lists
        self.history: list[tuple[int, float]] = []  # (step, loss) of the current / last run
        self.config: dict[str, Any] = {}  # extra build_model arguments for a new network (Python only)
        self._trained_on, self._trained_task = "", "denoise"  # the layer and task of self.model
        self._closed = False  # the Qt widget is gone (viewer closed): worker signals are ignored

        self._image = ComboBox(label="input", choices=self._image_choices, nullable=False, tooltip=TIPS["image"])
        self._clean = ComboBox(label="clean (optional)", choices=self._image_choices, nullable=True, value=None,
                               tooltip=TIPS["clean"])
        self._task = ComboBox(label="task", choices=TASKS, value="denoise", tooltip=TIPS["task"])
        self._scale = ComboBox(label="scale", choices=(("x2", 2), ("x4", 4)), value=2, tooltip=TIPS["scale"])
        self._nodata = LineEdit(label="nodata", value="", tooltip=TIPS["nodata"])
        self._mode = Label(value="")
        self._start = ComboBox(label="start from", choices=self._start_choices, tooltip=TIPS["start"])
        self._preset = ComboBox(label="size", choices=self._preset_choices, tooltip=TIPS["preset"])
        self._steps = SpinBox(label="steps", min=1, max=10_000_000, step=100, value=500, tooltip=TIPS["steps"])
        self._batch = SpinBox(label="batch", min=1, max=1024, value=8, tooltip=TIPS["batch"])
        self._patch = SpinBox(label="patch", min=8, max=1024, step=8, value=64, tooltip=TIPS["patch"])
        self._lr = FloatSpinBox(label="learning rate", min=1e-6, max=1e-1, step=1e-4, value=5e-4, tooltip=TIPS["lr"])
        _precise_float_box(self._lr)
        self._device = ComboBox(label="device", choices=DEVICES, value="auto", tooltip=TIPS["device"])
        self._precision = ComboBox(label="precision", choices=PRECISIONS, value="fp32", tooltip=TIPS["precision"])
        self._train_btn = PushButton(text="Train", tooltip=TIPS["train"])
        self._stop_btn = PushButton(text="Stop", enabled=False, tooltip=TIPS["stop"])
        buttons = Container(widgets=[self._train_btn, self._stop_btn], layout="horizontal", labels=False)
        self._curve = Label(label="loss", tooltip=TIPS["curve"])
        self._progress = Label(value="")
        self._status = Label(value="idle")
        self._checkpoint = FileEdit(label="save to", mode="w", filter="Checkpoints (*.safetensors)",
                                    tooltip=TIPS["checkpoint"])
        self._save_btn = PushButton(text="Save checkpoint", enabled=False, tooltip=TIPS["save"])
        super().__init__(
            widgets=[
                self._image, self._clean, self._task, self._scale, self._nodata, self._mode, self._start, self._preset,
                self._steps, self._batch, self._patch, self._lr, self._device, self._precision, buttons,
                self._curve,
                self._progress, self._status, self._checkpoint, self._save_btn,
            ]
        )
        self._plot = LossCurve(self._curve.native, *CURVE_SIZE)
        for label in (self._mode, self._progress, self._status):
            label.native.setWordWrap(True)  # long messages wrap instead of widening the dock

        self._task.changed.connect(self._on_task)
        self._scale.changed.connect(self._on_task)
        self._start.changed.connect(self._on_start)
        self._clean.changed.connect(self._update_visibility)
        self._image.changed.connect(self._update_visibility)
        self._train_btn.clicked.connect(self.train)
        self._stop_btn.clicked.connect(self.stop)
        self._save_btn.clicked.connect(lambda: self.save())
        events = napari_viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            ev.connect(self._refresh_layers)
        self.native.destroyed.connect(self._on_destroyed)
        when_removed(self, self.stop)  # the dock closed: nothing else could stop the training
        session_models.subscribe(self._on_session_model)
        self._update_visibility()

    # ------------------------------------------------------------------ choices

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, _event: Any = None) -> None:
        self._image.reset_choices()
        self._clean.reset_choices()

    def _start_choices(self, _widget: Any = None) -> list[tuple[str, tuple[str, str]]]:
        from napari_attnrestore.models import get_architecture, list_architectures  # without torch
        from napari_attnrestore.zoo import list_models

        task, scale = self._task.value, self._scale.value
        archs = [a for a in list_architectures() if task in get_architecture(a).tasks]
        archs.sort(key=lambda a: a != "hat")  # ar.train's default first
        choices: list[tuple[str, tuple[str, str]]] = [(f"new {a}", ("new", a)) for a in archs]
        for card in list_models():
            if card.get("task") == task and (task != "sr" or int(card.get("scale") or 2) == scale):
                choices.append((f"fine-tune {card['name']}", ("weights", card["name"])))
        from napari_attnrestore.tasks import get_task

        wanted_in = get_task(task).in_channels
        for name, module in session_models.items():
            made_for = (getattr(module, "card", None) or {}).get("task")
            fits = made_for == task if made_for else getattr(module, "in_channels", wanted_in) == wanted_in
            if fits and _model_scale(module) == (scale if task == "sr" else 1):
                choices.append((f"fine-tune {name}", ("session", name)))
        return choices

    def _preset_choices(self, _widget: Any = None) -> list[str]:
        from napari_attnrestore.models.registry import get_architecture

        start = getattr(self, "_start", None)
        if start is None or not start.value or start.value[0] != "new":
            return ["tiny"]
        return list(get_architecture(start.value[1]).presets)

    def _on_session_model(self, _name: str, _module: Any) -> None:
        self._start.reset_choices()  # a trained model can be fine-tuned further

    def _on_task(self, _value: Any = None) -> None:
        self._start.reset_choices()
        self._update_visibility()

    def _on_start(self, _value: Any = None) -> None:
        self._preset.reset_choices()  # the presets of the chosen architecture
        self._update_visibility()

    def _update_visibility(self, _value: Any = None) -> None:
        sr = self._task.value == "sr"
        self._scale.visible = sr
        self._nodata.visible = self._task.value == "inpaint"
        self._clean.visible = self._task.value not in ("sr", "demosaic")
        self._preset.visible = bool(self._start.value) and self._start.value[0] == "new"
        mode = self._mode_name()
        self._mode.value = f"mode: {_MODE_TEXT.get((self._task.value, mode), _MODE_TEXT[mode])}"

    def _mode_name(self) -> str:
        if self._task.value in ("sr", "demosaic"):
            return "synthetic"
        if self._task.value == "inpaint":
            return "self-supervised"
        return "paired" if self._clean.value is not None else "self-supervised"

    # ------------------------------------------------------------------ settings

    @property
    def busy(self) -> bool:
        """Whether training is in progress."""
        return self.worker is not None

    def set_options(self, **values: Any) -> None:
        """Set widget values by name: input, clean, task, scale, nodata, start, preset, steps,
        batch, patch, lr, device, precision, checkpoint; ``config`` (dict) overrides a new
        network's preset.

        ``start`` takes a choice's label ("new hat", "fine-tune <name>"), an architecture
        name, or a choice value such as ``("new", "grl")``.
        """
        names = {"input": "_image", "checkpoint": "_checkpoint"}
        if "nodata" in values:  # a number in a text field; None clears it
            values["nodata"] = "" if values["nodata"] is None else str(values["nodata"])
        if "config" in values:
            self.config = dict(values.pop("config") or {})
        for key in ("task", "scale"):  # the starting points depend on them
            if key in values:
                getattr(self, f"_{key}").value = values.pop(key)
        if "start" in values:
            self._start.value = self._start_value(values.pop("start"))
        for key, value in values.items():
            widget = getattr(self, names.get(key, f"_{key}"), None)
            if widget is None:
                raise TypeError(f"unknown option {key!r}")
            set_value(widget, value)

    def _start_value(self, spec: Any) -> tuple[str, str]:
        choices = self._start_choices()
        for label, value in choices:
            if spec in (label, value) or (isinstance(spec, str) and value == ("new", spec)):
                return value
        raise ValueError(f"no starting point {spec!r} for this task; choose one of: {', '.join(c[0] for c in choices)}")

    def request(self) -> TrainRequest:
        """The training request the widget's settings describe (checked: clear errors)."""
        from napari_attnrestore.engine.plan import check_image

        layer = self._image.value
        if layer is None:
            raise ValueError("add an image layer to train on")
        data = level0(layer.data)
        task, mode = self._task.value, self._mode_name()
        try:  # the engine's check, as the Restore widget's (a bool layer trained, and could not be restored)
            check_image(tuple(data.shape), data.dtype, bool(layer.rgb))
        except ValueError as e:
            raise ValueError(f"layer {layer.name!r}: {e}") from None
        scale = self._scale.value if task == "sr" else None
        patch = self._patch.value
        spatial = data.shape[-3:-1] if layer.rgb else data.shape[-2:]
        if min(spatial) < patch:
            raise ValueError(f"patch ({patch}) is larger than the image ({spatial[0]}x{spatial[1]}); lower it")
        if scale and patch % scale:
            raise ValueError(f"patch ({patch}) must be a multiple of the scale ({scale})")
        clean = None
        if task == "demosaic" and not layer.rgb:
            raise ValueError("demosaicing learns from a colour (RGB) layer, mosaicked to make the inputs; "
                             f"{layer.name!r} is not RGB")
        if task == "inpaint" and self._clean.value is not None:
            raise ValueError("inpainting learns from the gapped layer alone; clear the clean layer")
        if mode == "paired":
            if self._clean.value is layer:
                raise ValueError("the clean layer is the input layer itself; choose its clean counterpart")
            clean = level0(self._clean.value.data)
            if tuple(clean.shape) != tuple(data.shape):
                raise ValueError(f"the clean layer's shape {tuple(clean.shape)} differs from the input's "
                                 f"{tuple(data.shape)}")
        start = self._start.value
        if not start:
            raise ValueError(f"no architecture supports task {task!r}")
        # the field (inpainting), else the layer's own (a GeoTIFF's), as restoring reads them
        nodata = None if task == "demosaic" else layer_nodata(
            number_or_none(self._nodata.value, "nodata") if task == "inpaint" else None, layer.metadata)
        return TrainRequest(
            images=data, task=task, clean=clean, mode=mode, scale=scale, start=start, nodata=nodata,
            preset=self._preset.value or "tiny", config=dict(self.config), steps=self._steps.value,
            batch=self._batch.value, patch=patch, lr=float(self._lr.value), device=self._device.value,
            precision=self._precision.value, source=layer.name, session_model=session_models.get(start[1]) if start[0] == "session" else None,
            # the channels scaled each on its own, as the Restore widget restores them
            channel_axis=None if task == "demosaic" else channel_axis_of(
                data.shape, layer.rgb, layer.metadata, getattr(layer, "axis_labels", None)),
        )

    # ------------------------------------------------------------------ actions

    def train(self) -> None:
        """Start training in a worker thread (does nothing while busy)."""
        if self.busy:
            return
        try:
            req = self.request()
        except Exception as e:  # bad settings: say so, stay idle
            show_error(f"AttnRestore training: {e}")
            self._status.value = f"error: {_first_line(e)}"
            return
        self._run = run = TrainRun(req)
        self.history = []
        self._plot.clear(req.steps)
        self._progress.value = ""
        self._pbar = progress(total=req.steps, desc=f"AttnRestore: training on {req.source}")
        worker = create_worker(train_job, run, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_error)
        worker.warned.connect(warning_notifier("AttnRestore training"))
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._set_busy(True, f"training ({req.mode}): starting...")
        start_with_a_thread_to_spare(worker)

    def stop(self) -> None:
        """Stop after the current step; the model trained so far is kept."""
        if self.busy and self._run is not None:
            self._run.stop.set()
            self._status.value = "stopping after this step..."

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the last trained model (``.safetensors`` + ``.json``) to ``path`` or the chosen file."""
        import napari_attnrestore as ar
        from napari_attnrestore.training.checkpoint import checkpoint_path

        try:
            if self.model is None:
                raise ValueError("train a model first")
            target = path if path is not None else self._checkpoint.value
            if target is None or str(target) in ("", "."):
                raise ValueError("choose a file to save the checkpoint to")
            target = checkpoint_path(Path(target).expanduser())
            card = dict(getattr(self.model, "card", {}) or {})
            training = {**card.get("training", {}), "data": self._trained_on}
            out = ar.save_model(self.model, target, task=card.get("task", self._trained_task),
                                card={"name": target.stem, "training": training})
        except Exception as e:
            show_error(f"AttnRestore: could not save the checkpoint: {e}")
            self._status.value = f"error: {_first_line(e)}"
            return None
        show_info(f"AttnRestore: saved {out}")
        self._status.value = f"saved {out.name}"
        return out

    # ------------------------------------------------------------------ worker signals

    def _on_event(self, ev: TrainEvent) -> None:
        run = self._run
        if ev.done or run is None or run.reported or self._closed:
            return
        self.history.append((ev.step, float(ev.loss)))
        self._plot.update(self.history)
        eta = ev.elapsed / ev.step * (ev.total - ev.step) if ev.step else 0.0
        self._progress.value = (f"step {ev.step}/{ev.total}   loss {ev.loss:.4g}   "
                                f"{_duration(ev.elapsed)} (about {_duration(eta)} left)")
        if not run.stop.is_set():
            self._status.value = f"training ({run.request.mode})"
        # last: napari's progress bar may process pending events (even this run's end) right here
        pbar = self._pbar
        if pbar is not None and ev.step > pbar.n:
            pbar.update(ev.step - pbar.n)

    def _on_returned(self, run: TrainRun) -> None:
        try:
            self._finish(run)
        except Exception as e:
            self._on_error(e)

    def _on_aborted(self) -> None:  # quit from napari's activity dock: keep the model so far
        if self._run is not None:
            self._run.stop.set()
            self._finish(self._run)

    def _finish(self, run: TrainRun) -> None:
        if run.reported or self._closed:
            return
        run.reported = True
        model = run.model()
        req = run.request
        if model is None:
            self._status.value = "stopped before the first step: no model"
            return
        steps = run.last.step if run.last is not None else req.steps
        self.model = model
        self._trained_on, self._trained_task = req.source, req.task
        self.model_name = session_models.add(f"trained: {req.source} ({steps} steps)", model)
        self._save_btn.enabled = True
        what = f"stopped at step {steps}/{req.steps}" if run.stopped else f"done: {steps} steps"
        loss = f", loss {self.history[-1][1]:.4g}" if self.history else ""
        self._status.value = f"{what}{loss}. Restore widget model: '{self.model_name}'"
        show_info(f"AttnRestore: training {what}; '{self.model_name}' added to the Restore widget's models")

    def _on_error(self, exc: BaseException) -> None:
        if self._run is not None:
            self._run.reported = True
        if self._closed:
            return
        msg = str(exc).strip() or type(exc).__name__
        show_error(f"AttnRestore training: {msg}")
        self._status.value = f"error: {_first_line(msg)}"

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        if not self._closed:
            self._set_busy(False)

    def _on_destroyed(self, *_: Any) -> None:
        self._closed = True
        if self._run is not None:
            self._run.stop.set()
        session_models.unsubscribe(self._on_session_model)

    def _set_busy(self, busy: bool, status: str | None = None) -> None:
        self._train_btn.enabled = not busy
        self._stop_btn.enabled = busy
        self._save_btn.enabled = not busy and self.model is not None
        if status is not None:
            self._status.value = status


_MODE_TEXT: dict = {  # by mode, or by (task, mode) where the task does it its own way
    "self-supervised": "self-supervised (Neighbor2Neighbor, noisy layer only)",
    "paired": "supervised (noisy -> clean pairs)",
    "synthetic": "synthetic (input taken as high-res, downscaled)",
    ("inpaint", "self-supervised"): "self-supervised (known pixels hidden behind random masks)",
    ("demosaic", "synthetic"): "synthetic (colour layer mosaicked with every Bayer pattern)",
}


# ---------------------------------------------------------------------- loss curve


def smooth(values: Sequence[float], alpha: float = 0.1) -> list[float]:
    """Exponential running mean (bias-corrected so that it starts at the first value)."""
    out, m, w = [], 0.0, 0.0
    for v in values:
        m = (1 - alpha) * m + alpha * v
        w = (1 - alpha) * w + alpha
        out.append(m / w)
    return out


def curve_polyline(
    steps: Sequence[int], values: Sequence[float], total: int, rect: tuple[float, float, float, float],
    lo: float, hi: float, log: bool = True,
) -> list[tuple[float, float]]:
    """Pixel coordinates of ``(step, value)`` points in ``rect`` = (left, top, width, height).

    x runs over steps ``0..total``, y from ``lo`` (bottom) to ``hi`` (top), on a log10 scale
    if ``log``.  At most one point per pixel column is kept (the last), so that long runs
    draw fast.  Imports no Qt.
    """
    f = (lambda v: math.log10(max(v, 1e-12))) if log else float
    a, b = f(lo), f(hi)
    span = (b - a) or 1.0
    x0, y0, w, h = rect
    cols: dict[int, tuple[float, float]] = {}
    for s, v in zip(steps, values, strict=True):
        if not math.isfinite(v):
            continue
        x = x0 + w * min(s / max(total, 1), 1.0)
        y = y0 + h * (1.0 - (min(max(f(v), a), b) - a) / span)
        cols[int(x)] = (x, y)
    return list(cols.values())


class LossCurve:
    """Draws the loss history into a ``QLabel``'s pixmap with ``QPainter`` (no plotting library)."""

    GUTTER = 44  # room for the axis labels, left of the plot

    def __init__(self, label: Any, width: int, height: int) -> None:
        self.label, self.width, self.height = label, width, height
        self.total = 1
        self.label.setMinimumSize(width, height)
        self.clear(1)

    def clear(self, total: int) -> None:
        self.total = max(int(total), 1)
        self.update([])

    def update(self, history: Sequence[tuple[int, float]]) -> None:
        from qtpy.QtCore import QPointF, QRectF, Qt
        from qtpy.QtGui import QColor, QPainter, QPen, QPixmap, QPolygonF

        pix = QPixmap(self.width, self.height)
        pix.fill(QColor(0, 0, 0, 0))
        rect = (self.GUTTER, 4.0, self.width - self.GUTTER - 5.0, self.height - 9.0)
        p = QPainter(pix)
        try:
            p.setRenderHint(QPainter.Antialiasing)
            font = p.font()
            font.setPointSizeF(max(font.pointSizeF() - 2, 6))
            p.setFont(font)
            p.setPen(QPen(QColor(128, 128, 128), 1))
            p.drawRect(QRectF(*rect))
            values = [v for _, v in history if math.isfinite(v)]
            if not values:
                p.drawText(QRectF(*rect), int(Qt.AlignCenter), "the loss shows here")
                return
            steps = [s for s, v in history if math.isfinite(v)]
            lo, hi = min(values), max(values)
            log = lo > 0
            if hi <= lo:
                lo, hi = (lo / 2, hi * 2) if log else (lo - 1, hi + 1)
            mean = smooth(values)
            for series, color, width in ((values, QColor(120, 160, 220, 140), 1), (mean, QColor(40, 110, 230), 2)):
                pts = curve_polyline(steps, series, self.total, rect, lo, hi, log=log)
                p.setPen(QPen(color, width))
                if len(pts) == 1:
                    p.drawEllipse(QPointF(*pts[0]), 2, 2)
                else:
                    p.drawPolyline(QPolygonF([QPointF(x, y) for x, y in pts]))
            p.setPen(QPen(QColor(150, 150, 150)))
            right = int(Qt.AlignRight)
            p.drawText(QRectF(0, rect[1] - 2, self.GUTTER - 4, 14), right | int(Qt.AlignTop), f"{hi:.3g}")
            p.drawText(QRectF(0, rect[1] + rect[3] - 12, self.GUTTER - 4, 14), right | int(Qt.AlignBottom), f"{lo:.3g}")
            if log:
                mid = QRectF(0, rect[1] + rect[3] / 2 - 7, self.GUTTER - 4, 14)
                p.drawText(mid, right | int(Qt.AlignVCenter), "log")
        finally:
            p.end()
            self.label.setPixmap(pix)


# ---------------------------------------------------------------------- helpers


def _precise_float_box(widget: FloatSpinBox) -> None:
    """Show learning rates down to 1e-6 and step them by about 10% (Qt's adaptive steps)."""
    box = widget.native
    try:
        from qtpy.QtWidgets import QAbstractSpinBox

        box.setDecimals(6)
        box.setStepType(QAbstractSpinBox.AdaptiveDecimalStepType)
    except (AttributeError, ImportError):  # an older Qt: the plain box still works
        pass
    widget.value = widget.value


def _avoid_triton_llvm_clash() -> None:
    """Import ``torch._dynamo`` without Triton when an LLVM is already loaded (Mesa's OpenGL).

    Creating a torch optimizer imports ``torch._dynamo``, which loads Triton when it is
    installed (CUDA wheels).  Triton's LLVM symbols then bind to the ``libLLVM`` that Mesa
    (llvmpipe, radeonsi) loaded for napari's canvas, and the process crashes (SIGSEGV;
    seen under Xvfb).  Importing Triton first would avoid it, but napari has drawn by the
    time a widget trains.  So when an LLVM is mapped and neither module is loaded yet,
    ``torch._dynamo`` is imported with Triton hidden: dynamo then records "no Triton",
    which only matters to ``torch.compile``, unused here.  Elsewhere this does nothing.
    """
    if "torch._dynamo" in sys.modules or "triton" in sys.modules:
        return
    try:
        with open("/proc/self/maps") as f:  # Linux only; elsewhere there is nothing to check
            if "libLLVM" not in f.read():
                return
    except OSError:
        return
    sys.modules["triton"] = None  # type: ignore[assignment]  # "import triton" raises ImportError
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # let training report whatever fails later
        pass
    finally:
        if "triton" in sys.modules and sys.modules["triton"] is None:
            del sys.modules["triton"]


def _model_scale(module: Any) -> int:
    return int(getattr(module, "scale", 1) or 1)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 90:
        return f"{s} s"
    return f"{s // 60} min {s % 60:02d} s" if s < 3600 else f"{s // 3600} h {s % 3600 // 60:02d} min"


def _first_line(msg: Any) -> str:
    lines = str(msg).strip().splitlines() or [""]
    return lines[0][:200]

