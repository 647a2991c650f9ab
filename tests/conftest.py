"""Shared fixtures: small models and checkpoints that need no shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


class Identity(nn.Module):
    in_channels, out_channels, scale = 1, 1, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Box3(nn.Module):
    """A fixed 3x3 mean filter: its output is exactly predictable across tile borders."""

    in_channels, out_channels, scale, halo = 1, 1, 1, 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class NearestUp(nn.Module):
    """Nearest-neighbour x2 upsampling (exact reference for SR geometry)."""

    in_channels, out_channels, scale = 1, 1, 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2, mode="nearest")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_hat() -> nn.Module:
    from napari_attnrestore.models import build_model

    torch.manual_seed(0)
    return build_model("hat", "denoise", dim=16, depths=[1], heads=2, window=8, unshuffle=1).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_hat):
    from napari_attnrestore.training import save_checkpoint

    return save_checkpoint(tiny_hat, tmp_path / "tiny.safetensors", task="denoise", card={"name": "tiny"})
