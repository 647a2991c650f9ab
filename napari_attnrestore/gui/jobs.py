"""Restoration jobs for the widgets: run, report progress per chunk, stop on request.

Imports neither Qt nor napari: each job is a generator that yields ``(done, total)``
after every output chunk and returns a :class:`JobResult`; the widget runs it in a
napari ``thread_worker``.  The computation itself runs in a helper thread so that
progress can be yielded while dask works; setting the ``cancel`` event stops the job
at the next chunk.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dask.callbacks import Callback

from ..engine.execute import Cancelled, cancellable

__all__ = ["JobResult", "compute_in_memory", "layer_job", "preview_job", "run_with_progress", "zarr_job"]

Progress = Callable[[int, int], None]
JobGen = Generator[tuple[int, int], None, "JobResult"]
_DONE = object()


@dataclass
class JobResult:
    """What a job produced: in-memory pixels, or a lazily opened OME-Zarr (and its path)."""

    data: Any = None
    path: str | None = None
    cancelled: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class _ChunkProgress(Callback):
    """Dask callback: count the output chunks of one array, refuse new ones once cancelled."""

    def __init__(self, name: str, total: int, progress: Progress, cancel: threading.Event) -> None:
        super().__init__()
        self.name, self.total, self.progress, self.cancel = name, total, progress, cancel
        self.done = 0

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
        if isinstance(key, tuple) and key and key[0] == self.name:
            self.done += 1
            self.progress(self.done, self.total)


def compute_in_memory(arr: Any, progress: Progress, cancel: threading.Event) -> np.ndarray:
    """Compute a restored dask array into memory with per-chunk progress and cancellation."""
    total = int(np.prod(arr.numblocks))
    progress(0, total)
    with _ChunkProgress(arr.name, total, progress, cancel), cancellable(arr.name, cancel):
        return np.asarray(arr.compute(scheduler="threads"))


def warning_notifier(prefix: str = "AttnRestore") -> Callable[[tuple], None]:
    """A slot for a worker's ``warned`` signal: each distinct user warning of one job as a
    napari warning notification.

    The worker catches the warnings of its job (and of the threads the job runs) and emits
    them; nothing shows them unless a slot does (napari's own relay is not connected in
    0.9), so a mask of the valid pixels or a clean image in other units went unsaid.
    Only this package's warnings (:class:`~napari_attnrestore.warning.AttnRestoreWarning`) are
    shown: the worker catches every warning of the process while it runs (another plugin's, on
    the GUI thread, would read as ours)."""
    from napari.utils.notifications import show_warning

    from ..warning import AttnRestoreWarning

    said: set[str] = set()

    def notify(args: tuple) -> None:
        message, category = args[0], args[1]
        text = str(message)
        if not issubclass(category, AttnRestoreWarning) or text in said:
            return
        said.add(text)
        show_warning(f"{prefix}: {text}")

    return notify


class JobError(Exception):
    """An error from the restoration job (torch's RuntimeErrors are re-raised as this)."""


def surfacing_runtime_errors(gen_fn: Callable[..., JobGen]) -> Callable[..., JobGen]:
    """``gen_fn`` with a RuntimeError leaving it re-raised as :class:`JobError`.

    napari's worker reads a RuntimeError leaving its generator as "worker deleted" and never
    emits errored/finished, so the widget would stay busy: torch raises RuntimeError for
    many model errors, also while a model is set up (its shape probe) before any chunk runs.
    """

    @functools.wraps(gen_fn)
    def wrapped(*args: Any, **kwargs: Any) -> JobGen:
        try:
            return (yield from gen_fn(*args, **kwargs))
        except RuntimeError as err:
            raise JobError(f"{type(err).__name__}: {err}") from err

    return wrapped


def run_with_progress(fn: Callable[[Progress], Any], cancel: threading.Event) -> JobGen:
    """Run ``fn(progress)`` in a helper thread, yielding its ``(done, total)`` reports.

    Returns ``fn``'s :class:`JobResult`; :class:`Cancelled` becomes a result with
    ``cancelled=True``; other errors are re-raised here (run it under
    :func:`surfacing_runtime_errors` in a napari worker).  If the generator is closed
    early (the worker was quit), ``cancel`` is set so the computation stops too.
    """
    q: queue.Queue = queue.Queue()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(lambda done, total: q.put((int(done), int(total))))
        except Cancelled:
            box["result"] = JobResult(cancelled=True)
        except BaseException as e:
            box["error"] = e
        finally:
            q.put(_DONE)

    th = threading.Thread(target=target, name="attnrestore-job", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            yield item
    finally:
        if th.is_alive():
            cancel.set()
    if "error" in box:
        raise box["error"]  # a RuntimeError reaches the widget as JobError (surfacing_runtime_errors)
    return box["result"]


def layer_job(data: Any, kwargs: dict[str, Any], cancel: threading.Event) -> JobGen:
    """Restore ``data`` into memory (for a new layer)."""
    import napari_attnrestore as ar

    def fn(progress: Progress) -> JobResult:
        out = ar.restore(data, **kwargs)
        res = compute_in_memory(out, progress, cancel)
        return JobResult(data=res, cancelled=cancel.is_set())

    return (yield from run_with_progress(fn, cancel))


def preview_job(crop: Any, kwargs: dict[str, Any], cancel: threading.Event) -> JobGen:
    """Restore a small cropped array (already in memory) for a preview."""
    return (yield from layer_job(np.asarray(crop), kwargs, cancel))


def zarr_job(
    data: Any, dst: str, kwargs: dict[str, Any], cancel: threading.Event, overwrite: bool = False, resume: bool = False
) -> JobGen:
    """Stream the restoration into an OME-Zarr at ``dst``; return its levels opened lazily.

    A cancelled job leaves a valid partial store (status not ``complete``) that a run
    with ``resume=True`` completes; nothing is opened then.
    """
    import napari_attnrestore as ar

    def fn(progress: Progress) -> JobResult:
        ar.restore_to_zarr(data, dst, overwrite=overwrite, resume=resume, progress=progress, cancel=cancel, **kwargs)
        return JobResult(data=open_levels(dst, (kwargs.get("meta") or {}).get("axes")), path=dst)

    return (yield from run_with_progress(fn, cancel))


def open_levels(path: str, axes: str | None = None) -> Any:
    """An OME-Zarr's pyramid as lazy dask arrays (a list when it has several levels), its axes
    put in the order ``axes`` names them (the input layer's: the store holds them in NGFF's
    t, c, z, y, x order, and a z-t layer's result came back t-z under the layer's z-t labels)."""
    from ..io import open_image

    img = open_image(path)
    levels = img.to_dask(None)
    if isinstance(axes, str) and len(axes) == len(img.axes) - 1 and "c" not in axes:
        axes += "c"  # a demosaic's colours, after the input's axes
    if isinstance(axes, str) and sorted(axes) == sorted(img.axes) and axes != img.axes:
        order = [img.axes.index(a) for a in axes]
        levels = [level.transpose(order) for level in levels]
    return levels if len(levels) > 1 else levels[0]
