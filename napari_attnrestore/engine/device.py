"""Device and precision selection."""

from __future__ import annotations

import torch

from .. import warning

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; explicit names are checked."""
    if isinstance(device, torch.device):
        return device
    if device is None:
        device = "auto"
    if not isinstance(device, str):  # (0 was taken as auto, 1 was an AttributeError)
        raise ValueError(f"device must be a name (auto, cpu, cuda, cuda:N or mps), not {device!r}")
    name = device.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):  # xpu, meta, hpu: names torch knows, that the engine does not run on
        raise ValueError(f"device {device!r} is not one the engine runs on; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but Apple MPS is not available on this machine")
    return dev


def resolve_precision(precision: str, device: torch.device, half_safe: bool, warn: bool = True) -> torch.dtype:
    """Compute dtype: ``auto`` is bf16 on CUDA for models that declare half precision safe;
    ``warn``: say that fp16 on a CPU is slow (once, where the job is set up)."""
    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if p == "auto":
        return torch.bfloat16 if (device.type == "cuda" and half_safe) else torch.float32
    if warn and p == "fp16" and device.type == "cpu":
        warning.warn("fp16 on the CPU runs emulated, about 9 times slower than fp32 here; use bf16 or fp32")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p]
