"""HAT: shapes for every head, gradients, overfitting, determinism, mechanism pieces."""

import pytest
import torch

from napari_attnrestore.models import build_model
from napari_attnrestore.models.hat import PRESETS, HATConfig, OverlappingCrossAttention
from napari_attnrestore.models.layers import (
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

SMALL = dict(dim=16, depths=[1, 1], heads=2, window=8)


@pytest.mark.parametrize("task,scale,unshuffle", [("denoise", 1, 1), ("denoise", 1, 2), ("sr", 2, 1), ("sr", 4, 1)])
def test_odd_sizes_give_right_shape(task, scale, unshuffle):
    m = build_model("hat", task, scale=scale, unshuffle=unshuffle, **SMALL).eval()
    with torch.no_grad():
        y = m(torch.rand(2, 1, 37, 53))
    assert y.shape == (2, 1, 37 * scale, 53 * scale)


def test_gradients_reach_every_parameter():
    m = build_model("hat", "sr", scale=2, **SMALL)
    m(torch.rand(1, 1, 24, 40)).square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_overfits_one_image():
    torch.manual_seed(0)
    m = build_model("hat", "denoise", dim=16, depths=[1], heads=2, window=8, image_residual=False)
    x = torch.rand(1, 1, 32, 32)
    y = x.flip(-1)  # not the identity: the network has to learn it
    opt = torch.optim.Adam(m.parameters(), 2e-3)
    first = None
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(m(x), y)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


def test_eval_is_deterministic():
    m = build_model("hat", "denoise", **SMALL).eval()
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


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
    m = build_model("hat", "sr", scale=4, preset="paper-s")
    n = sum(p.numel() for p in m.parameters())
    assert 8e6 < n < 11e6  # HAT-S has about 9.6M parameters
    assert PRESETS["paper-s"]["window"] == 16
