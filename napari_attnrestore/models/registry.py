"""Architecture registry: names to model classes, presets and declared capabilities.

Importing it does not import torch: an architecture's class (and torch with it) is loaded
when a network is built, so a napari widget can list architectures and presets at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

#: What every architecture here is built for.
ALL_TASKS = ("denoise", "sr", "demosaic", "inpaint")


@dataclass(frozen=True)
class Architecture:
    """An architecture the project implements.

    ``module`` and ``class_name`` say where its class is: a module of this package (``hat``
    for ``models.hat.HAT``) or a dotted module path of any package; ``presets`` are named
    configurations (``tiny`` is the class's defaults).
    """

    name: str
    module: str
    class_name: str
    presets: dict[str, dict[str, Any]]
    paper: str
    tasks: tuple[str, ...] = ALL_TASKS

    @property
    def cls(self) -> type[nn.Module]:
        """The network class (imports torch and the architecture's module)."""
        module = self.module if "." in self.module else f"{__package__}.{self.module}"
        return getattr(import_module(module), self.class_name)


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


#: Named configurations: ``tiny`` trains on a CPU; ``paper-s`` is HAT-S from the paper.
_HAT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "paper-s": dict(
        dim=144, depths=[6] * 6, heads=6, window=16, mlp_ratio=2.0, compress=24, squeeze=24,
        alpha=0.01, overlap_ratio=0.5, unshuffle=1, image_residual=False, upsample_features=64, patch_norm=True,
    ),
}


#: Named configurations.  ``tiny`` trains on a CPU.  ``paper-t`` is GRL-T (C=64, depths
#: [4,4,4,4], 2/2 heads, no local conv branch, 512-wide CPB MLPs) with the paper's
#: denoising window/stripe settings (window 16, stripes 64x128, anchors /4; pads to 128);
#: ``paper-t-sr`` is GRL-T's body with the SR settings (window 32, stripes 64x64, anchors /4)
#: and this module's conv + pixel-shuffle head, not the paper's one-conv ``pixelshuffledirect``:
#: 1.21M parameters at x4 where GRL-T has 0.91M.
_GRL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "paper-t": dict(
        dim=64, depths=[4, 4, 4, 4], heads_window=2, heads_stripe=2, window=16, stripe=[64, 128],
        anchor_down=4, mlp_ratio=2.0, local_conv=False, cpb_hidden=512, unshuffle=1, image_residual=True,
    ),
    "paper-t-sr": dict(
        dim=64, depths=[4, 4, 4, 4], heads_window=2, heads_stripe=2, window=32, stripe=[64, 64],
        anchor_down=4, mlp_ratio=2.0, local_conv=False, cpb_hidden=512, unshuffle=1, image_residual=False,
    ),
}


#: Named configurations.  ``tiny`` trains on a CPU.  ``paper-light``: the paper's 3-level
#: encoder-decoder (32/64/128 channels, heads 1/2/4, four CSAttn blocks per level).  The
#: paper's own block counts were not available; this is a light configuration of its layout.
_CSATTN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "paper-light": dict(
        dim=32, levels=2, depths=[4, 4, 4], heads=[1, 2, 4], act="gelu", spatial_scaling=True, vnta=True,
        stage_residual=True, multi_scale_input=True, bias=False, unshuffle=1, image_residual=True,
    ),
}


#: Named configurations: ``tiny`` trains on a CPU; ``paper`` is an EDSR-baseline trunk with
#: the authors' four-stage EDSR-CLA wiring (ACLA after every 4th of 16 blocks, K = 9).  The
#: paper's NAS-found insertion positions are not published in a usable form; see the module doc.
_ACLA_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "paper": dict(
        dim=64, n_blocks=16, positions=[3, 7, 11, 15], keys=9, max_key_layers=None, max_offset=16.0,
        init_radius=1.0, tau=1.0, res_scale=1.0, unshuffle=1, image_residual=False,
    ),
}


#: Named configurations: ``tiny`` trains on a CPU; ``paper`` uses the published layer settings
#: (p = 3, K = 3, 5 PatchMatch iterations, summed patch cost, T = 1, patch aggregation, matching on
#: the features themselves) in a larger host network of ours (the paper's host networks differ per task).
_PSAL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "paper": dict(
        dims=[32, 64, 128], blocks=2, mid_blocks=2, match_dim=None, k=3, patch_size=3, iters=5,
        temperature=1.0, learn_temperature=False, aggregation=True, exclude_radius=1, mean_cost=False,
        unshuffle=1, image_residual=False,
    ),
}


register(Architecture("hat", "hat", "HAT", _HAT_PRESETS, "Chen et al., Activating More Pixels in Image Super-Resolution Transformer, CVPR 2023"))
register(Architecture("grl", "grl", "GRL", _GRL_PRESETS, "Li et al., Efficient and Explicit Modelling of Image Hierarchies for Image Restoration, CVPR 2023"))
register(Architecture("csattn", "csattn", "CSAttn", _CSATTN_PRESETS, "How Powerful Potential of Attention on Image Restoration?, arXiv 2403.10336"))
register(Architecture("acla", "acla", "ACLA", _ACLA_PRESETS, "Wang et al., Adaptive Cross-Layer Attention for Image Restoration"))
register(Architecture("psal", "psal", "PSAL", _PSAL_PRESETS, "Cherel et al., Patch-based Stochastic Attention Layer"))
