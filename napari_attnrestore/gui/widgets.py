"""Small magicgui widgets shared by the dock widgets."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import SpinBox
from magicgui.widgets.bases import RangedWidget

__all__ = ["auto_spin_box"]


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
