"""Restoration tasks: channels, scale, degradation model, classical baseline, metric."""

from __future__ import annotations

from . import demosaic, denoise, inpaint, sr
from .base import Task, psnr, ssim

_TASKS: dict[str, Task] = {t.name: t for t in (denoise.TASK, sr.TASK, demosaic.TASK, inpaint.TASK)}
_ALIASES = {
    "super-resolve": "sr", "superres": "sr", "super_resolution": "sr", "denoising": "denoise",
    "demosaicing": "demosaic", "debayer": "demosaic", "inpainting": "inpaint",
}


def get_task(name: str) -> Task:
    """Look up a task by name (a few aliases accepted)."""
    key = _ALIASES.get(name.lower(), name.lower())
    try:
        return _TASKS[key]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(sorted(_TASKS))}") from None


def list_tasks() -> list[str]:
    """Names of the available tasks."""
    return sorted(_TASKS)


__all__ = ["Task", "get_task", "list_tasks", "psnr", "ssim"]
