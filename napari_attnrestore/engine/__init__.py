"""Lazy chunked inference: plan -> read -> normalize -> tile -> batch -> infer -> blend -> write.

Its names load on first use, so that a module needing only :mod:`.execute` (the napari
widgets' job runner) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .device import resolve_device, resolve_precision
    from .graph import build_graph, compute_chunk, restore_array
    from .model_handle import ModelHandle, ModelInfo, describe
    from .plan import Plan, make_plan

_WHERE = {
    **dict.fromkeys(("resolve_device", "resolve_precision"), ".device"),
    **dict.fromkeys(("build_graph", "compute_chunk", "restore_array"), ".graph"),
    **dict.fromkeys(("ModelHandle", "ModelInfo", "describe"), ".model_handle"),
    **dict.fromkeys(("Plan", "make_plan"), ".plan"),
}

__all__ = [
    "ModelHandle", "ModelInfo", "Plan", "build_graph", "compute_chunk", "describe", "make_plan",
    "resolve_device", "resolve_precision", "restore_array",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
