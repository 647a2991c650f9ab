"""Lazy chunked inference: plan -> read -> normalize -> tile -> batch -> infer -> blend -> write."""

from .device import resolve_device, resolve_precision
from .graph import build_graph, compute_chunk, restore_array
from .model_handle import ModelHandle, ModelInfo, describe
from .plan import Plan, make_plan

__all__ = [
    "ModelHandle", "ModelInfo", "Plan", "build_graph", "compute_chunk", "describe", "make_plan",
    "resolve_device", "resolve_precision", "restore_array",
]
