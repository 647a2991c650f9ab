"""Training on images with gaps (NaN, nodata): the network sees gaps filled as restoring fills
them, and the losses score known pixels only.

Patches keep their gaps as NaN (:class:`~napari_attnrestore.training.data.NormalizedPlane`
with ``keep_gaps``).  Read as 0 they were learned as truth: a denoiser fitted black stripes
with sharp edges that restoring never shows it (it fills gaps smoothly, then gives them back
as nodata).  A batch without NaN takes exactly the path it took before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def filled(x: torch.Tensor) -> torch.Tensor:
    """``x`` (``(B, C, H, W)``) with its non-finite pixels filled as the engine fills them before
    the network (:func:`~napari_attnrestore.engine.graph.fill_gaps`); ``x`` itself when it has none."""
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return x
    from ..engine.graph import fill_gaps

    out = fill_gaps(x.detach().float().cpu().numpy(), bad.cpu().numpy())
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def gap_pairs(make_pair: Callable) -> Callable:
    """``make_pair`` whose input has its gaps filled (the degradation spreads NaN over what it
    touches: a downsampling kernel's footprint) and whose target keeps them as NaN."""

    def pair(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        inp, target = make_pair(x, gen)
        return filled(inp), target

    return pair


def known_loss(crit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """``loss(model, inp, target)``: ``crit`` over the target's finite pixels (all of them, as
    ``crit(model(inp), target)``, when it has no gap); 0 with a gradient of 0 when it has none."""

    def loss(model: nn.Module, inp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = model(inp)
        known = torch.isfinite(target)
        if bool(known.all()):
            return crit(out, target)
        if not bool(known.any()):
            return (out * 0).sum()
        return crit(out[known], target[known])

    return loss


def known_pixels(x: torch.Tensor) -> torch.Tensor | None:
    """Where ``x`` is known (finite), or None when all of it is."""
    known = torch.isfinite(x)
    return None if bool(known.all()) else known


def known_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``target`` with its gaps read as 0 (NaN would reach the gradients through the pixels a
    mask leaves out) and where it is known, or ``(target, None)`` when all of it is."""
    known = torch.isfinite(target)
    if bool(known.all()):
        return target, None
    return torch.where(known, target, torch.zeros_like(target)), known


def mean_known(values: torch.Tensor, known: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``values`` where ``known`` (all of them when None); 0 when nothing is known."""
    if known is None:
        return values.mean()
    known = known.expand_as(values)
    if not bool(known.any()):
        return (values * 0).sum()
    return values[known].mean()
