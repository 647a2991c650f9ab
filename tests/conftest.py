"""Shared fixtures: small models and checkpoints that need no shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


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
