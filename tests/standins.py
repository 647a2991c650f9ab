"""Small stand-in networks whose output is exactly predictable (engine, widget and bad-input tests).

Imported as ``from standins import ...`` (``tests/`` is on ``sys.path``; the name ``conftest``
is ambiguous because ``tests/gui`` has its own).
"""

from __future__ import annotations

import torch
from torch import nn

from napari_attnrestore.models.reference import MeanFilter3x3


class Identity(nn.Module):
    in_channels, out_channels, scale = 1, 1, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


#: A fixed 3x3 mean filter: its output is exactly predictable across tile borders.
Box3 = MeanFilter3x3


class FillHalf(nn.Module):
    """Inpainting stand-in: image + mask in, 0.5 wherever the mask says, the image elsewhere."""

    in_channels, out_channels, scale = 2, 1, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, 1:] > 0.5, torch.full_like(x[:, :1], 0.5), x[:, :1])


class SplitCFA(nn.Module):
    """Demosaicing stand-in: each CFA sample goes to its own colour channel (zeros elsewhere)."""

    in_channels, out_channels, scale = 4, 3, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * x[:, 1:]


class NearestUp(nn.Module):
    """Nearest-neighbour x2 upsampling (exact reference for SR geometry)."""

    in_channels, out_channels, scale = 1, 1, 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2, mode="nearest")


class RightNeighbourMean(nn.Module):
    """Mean of each pixel and its right neighbour: not symmetric under turns and mirrors.

    Its self-ensemble is exactly the plus-shaped filter :func:`plus_filter` (the pixel
    weighted 1/2, each of its four neighbours 1/8).
    """

    in_channels, out_channels, scale = 1, 1, 1
    halo = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        right = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
        return 0.5 * (x + right)


def plus_filter(x):
    """The pixel weighted 1/2 and its four neighbours 1/8 each (interior of a 2D numpy array)."""
    return 0.5 * x[1:-1, 1:-1] + 0.125 * (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:])
