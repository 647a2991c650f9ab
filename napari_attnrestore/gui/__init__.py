"""napari widgets (magicgui + Qt). The only package that imports napari and Qt.

Nothing is imported here: napari loads the widgets through ``napari.yaml``, and
``import napari_attnrestore`` never reaches this package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RestoreWidget", "TrainWidget"]


def __getattr__(name: str) -> Any:
    if name == "RestoreWidget":
        from .restore_widget import RestoreWidget

        return RestoreWidget
    if name == "TrainWidget":
        from .train_widget import TrainWidget

        return TrainWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
