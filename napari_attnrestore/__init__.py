"""napari-attnrestore: restore huge scientific images with attention networks, chunk by chunk.

``import napari_attnrestore as ar``; then ``ar.restore(...)``, ``ar.restore_to_zarr(...)``,
``ar.restore_to_tiff(...)``, ``ar.train(...)`` (a generator of ``ar.TrainEvent``),
``ar.load_model(...)``.  Errors of their own: ``ar.Cancelled`` (a job whose ``cancel`` event
was set), ``ar.CheckpointError`` (a weight or training state that does not fit),
``ar.OutputError`` (an output that cannot be made or resumed).  Its warnings are
``ar.AttnRestoreWarning`` (filter them by that category).  Importing this package never
imports Qt.
"""

from __future__ import annotations

__version__ = "0.1.0"

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import io
from .warning import AttnRestoreWarning

if TYPE_CHECKING:
    from .api import (
        build_model,
        list_architectures,
        list_models,
        load_model,
        restore,
        restore_to_tiff,
        restore_to_zarr,
        save_model,
        train,
    )
    from .engine.execute import Cancelled
    from .engine.store import OutputError
    from .training.checkpoint import CheckpointError
    from .training.loop import TrainEvent

# Loaded on first use, so that napari's reader and writer hooks (``io``) open files without
# importing torch and the networks.
_LAZY = {
    **dict.fromkeys(("build_model", "list_architectures", "list_models", "load_model", "restore",
                     "restore_to_tiff", "restore_to_zarr", "save_model", "train"), ".api"),
    "Cancelled": ".engine.execute",
    "OutputError": ".engine.store",
    "CheckpointError": ".training.checkpoint",
    "TrainEvent": ".training.loop",
}

__all__ = ["AttnRestoreWarning", "Cancelled", "CheckpointError", "OutputError", "TrainEvent", "__version__", "build_model", "io", "list_architectures", "list_models", "load_model", "restore", "restore_to_tiff", "restore_to_zarr", "save_model", "train"]


_SUBMODULES = ("api", "benchmarking", "cli", "demo", "engine", "gui", "models", "tasks", "training", "zoo")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:  # ar.api, ar.models, ... as before the names were loaded lazily
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
