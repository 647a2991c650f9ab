"""Architecture registry: names to model classes, presets and declared capabilities."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import acla, csattn, grl, hat, psal


@dataclass(frozen=True)
class Architecture:
    """An architecture the project implements."""

    name: str
    cls: type[nn.Module]
    presets: dict[str, dict[str, Any]]
    paper: str

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.cls.tasks)  # type: ignore[attr-defined]


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> None:
    """Add an architecture to the registry (names are unique)."""
    if arch.name in _REGISTRY:
        raise ValueError(f"architecture {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch


def list_architectures() -> list[str]:
    """Names of the registered architectures, sorted."""
    return sorted(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    """Look up an architecture by name, with a clear error for unknown names."""
    try:
        return _REGISTRY[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(list_architectures())}") from None


def build_model(
    name: str,
    task: str = "denoise",
    scale: int | None = None,
    in_channels: int | None = None,
    out_channels: int | None = None,
    preset: str = "tiny",
    **config: Any,
) -> nn.Module:
    """Build an untrained network for ``task``.

    Channel counts default to the task's (see :mod:`napari_attnrestore.tasks`), ``scale``
    to its first (1, or 2 for super-resolution); keyword arguments override the preset's
    configuration.
    """
    from ..tasks import get_task

    for label, count in (("in_channels", in_channels), ("out_channels", out_channels)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"{label} must be a whole number of at least 1, not {count!r}")
    arch = get_architecture(name)
    t = get_task(task)
    if t.name not in arch.tasks:
        raise ValueError(f"architecture {arch.name!r} does not support task {t.name!r}")
    if preset not in arch.presets:
        raise ValueError(f"unknown preset {preset!r} for {arch.name}; choose one of {sorted(arch.presets)}")
    scale = t.check_scale(scale)
    settings = {f.name for f in dataclasses.fields(arch.cls.config_class)}  # type: ignore[attr-defined]
    unknown = sorted(set(config) - settings)
    if unknown:
        raise ValueError(f"{arch.name} has no setting {', '.join(map(repr, unknown))}; "
                         f"its settings are {', '.join(sorted(settings))}")
    cfg = {**arch.presets[preset], **config}
    return arch.cls(
        in_channels=in_channels or t.in_channels,
        out_channels=out_channels or t.out_channels,
        scale=scale,
        **cfg,
    )


register(Architecture("hat", hat.HAT, hat.PRESETS, "Chen et al., Activating More Pixels in Image Super-Resolution Transformer, CVPR 2023"))
register(Architecture("grl", grl.GRL, grl.PRESETS, "Li et al., Efficient and Explicit Modelling of Image Hierarchies for Image Restoration, CVPR 2023"))
register(Architecture("csattn", csattn.CSAttn, csattn.PRESETS, "How Powerful Potential of Attention on Image Restoration?, arXiv 2403.10336"))
register(Architecture("acla", acla.ACLA, acla.PRESETS, "Wang et al., Adaptive Cross-Layer Attention for Image Restoration"))
register(Architecture("psal", psal.PSAL, psal.PRESETS, "Cherel et al., Patch-based Stochastic Attention Layer"))
