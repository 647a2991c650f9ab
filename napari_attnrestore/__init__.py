"""napari-attnrestore: restore huge scientific images with attention networks, chunk by chunk.

``import napari_attnrestore as ar``; then ``ar.restore(...)``, ``ar.restore_to_zarr(...)``,
``ar.train(...)``, ``ar.load_model(...)``.  Errors of their own: ``ar.Cancelled`` (a job
whose ``cancel`` event was set), ``ar.CheckpointError`` (a weight or training state that does
not fit), ``ar.OutputError`` (an output that cannot be made or resumed).  Importing this
package never imports Qt.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import io
from .api import (
    build_model,
    list_architectures,
    list_models,
    load_model,
    restore,
    restore_to_zarr,
    save_model,
    train,
)
from .engine.execute import Cancelled
from .engine.store import OutputError
from .training.checkpoint import CheckpointError

__all__ = ["Cancelled", "CheckpointError", "OutputError", "__version__", "build_model", "io", "list_architectures", "list_models", "load_model", "restore", "restore_to_zarr", "save_model", "train"]
