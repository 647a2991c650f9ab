"""Small magicgui widgets shared by the dock widgets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import FileEdit, SpinBox
from magicgui.widgets.bases import RangedWidget, ValueWidget

__all__ = ["auto_spin_box", "set_value", "start_with_a_thread_to_spare", "when_removed"]


def start_with_a_thread_to_spare(worker: Any) -> None:
    """Start a napari worker, first making room in Qt's global thread pool for it and one more.

    The workers run there whole, and so does Qt's own image work: napari's activity spinner
    (animated while a progress bar exists) converts its frames on that pool, and the GUI
    thread waits for a free thread.  With every thread held by a job (a Restore and a Train
    run on 2 cores, or one run on 1) the viewer froze for the whole job (19 to 45 s here).
    """
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    pool.setMaxThreadCount(max(pool.maxThreadCount(), pool.activeThreadCount() + 2))
    worker.start()


def set_value(widget: ValueWidget, value: Any) -> None:
    """``widget.value = value``, except that None, "" or "." clear a file field, as clearing it
    by hand does (magicgui turns "" given to a FileEdit into the working folder)."""
    if isinstance(widget, FileEdit) and value in (None, "", "."):
        widget.line_edit.value = ""
    else:
        widget.value = value


def _auto_backend() -> type | None:
    """A Qt backend for a QSpinBox that reads "auto" at its minimum (0); None if unavailable."""
    try:
        from magicgui.backends._qtpy.widgets import QBaseRangedWidget
        from qtpy.QtWidgets import QSpinBox
    except ImportError:  # magicgui moved its backend: fall back to a plain spin box
        return None

    class AutoSpinBox(QBaseRangedWidget):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(QSpinBox, **kwargs)
            self._qwidget.setSpecialValueText("auto")

    return AutoSpinBox


def auto_spin_box(label: str, maximum: int, step: int, tooltip: str) -> RangedWidget:
    """An integer spin box from 0 to ``maximum`` where 0 means automatic (shown as "auto")."""
    kwargs = {"label": label, "min": 0, "max": maximum, "step": step, "value": 0, "tooltip": tooltip}
    backend = _auto_backend()
    if backend is not None:
        try:
            return RangedWidget(widget_type=backend, **kwargs)
        except Exception:  # an incompatible magicgui: the plain spin box still works
            pass
    return SpinBox(**{**kwargs, "label": f"{label} (0 = auto)"})


def when_removed(owner: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` when ``owner``'s Qt widget is taken out of its window.

    napari's ``remove_dock_widget`` (a dock's close button) unparents the widget without
    deleting it, so its ``destroyed`` signal never comes; a job it started would run on
    with nothing left to stop it.
    """
    from qtpy.QtCore import QEvent, QObject

    class _Watch(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:
            if event.type() == QEvent.Type.ParentChange and obj.parentWidget() is None:
                callback()
            return False

    owner._removal_watch = watch = _Watch(owner.native)
    owner.native.installEventFilter(watch)


def number_or_none(text: Any, name: str) -> float | None:
    """A field's number, None when it is empty (or 'none'); a ValueError naming ``name`` else."""
    value = str(text or "").strip()
    if value.lower() in ("", "none"):
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number or empty, not {value!r}") from None


def layer_nodata(field: Any, metadata: Any) -> float | None:
    """The nodata a widget uses: its field's number, else the one the layer's file declares."""
    declared = (metadata or {}).get("nodata")
    if field is not None:
        return field
    if isinstance(declared, (int, float, np.number)) and not isinstance(declared, bool):
        return float(declared)
    return None

