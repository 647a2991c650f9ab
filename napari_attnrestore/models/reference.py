"""Fixed (untrained) reference networks: their output is exactly predictable.

Used by the pipeline benchmarks (what the engine costs when the network costs almost
nothing) and by the tests (tile borders, batching and resumable output checked against an
exact answer).
"""

from __future__ import annotations

import torch
from torch import nn


class MeanFilter3x3(nn.Module):
    """A fixed 3x3 mean filter over one channel, with an 8-pixel halo for the engine."""

    in_channels, out_channels, scale, halo = 1, 1, 1, 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
