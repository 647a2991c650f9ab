"""ACLA: shapes for every head, gradients, overfitting, determinism, mechanism pieces."""

import pytest
import torch
from memory_probe import LargestTensor

from napari_attnrestore.models import get_architecture
from napari_attnrestore.models.acla import ACLA, CrossLayerAttention, gumbel_select

SMALL = dict(dim=16, n_blocks=4, positions=[1, 3], keys=3)






def test_tasks_and_tiling_hints():
    assert set(get_architecture("acla").tasks) == {"denoise", "sr", "demosaic", "inpaint"}
    m = ACLA(**SMALL)
    assert m.multiple_of == 1
    # receptive field of the 2 + 2 * 4 convs plus the offset bound of each of the 2 modules
    assert m.halo >= 2 + 2 * 4 + 2 * 16
    assert ACLA(unshuffle=2, **SMALL).multiple_of == 2


def test_offsets_are_learned():
    torch.manual_seed(0)
    m = ACLA(**SMALL)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    x = torch.rand(1, 1, 24, 24)
    before = {n: a.offsets.weight.detach().clone() for n, a in m.attn.items()}
    for _ in range(3):
        loss = (m(x) - x.flip(-2)).square().mean()
        opt.zero_grad()
        loss.backward()
        for a in m.attn.values():
            assert a.offsets.weight.grad.abs().sum() > 0  # the offset predictor gets a gradient
        opt.step()
    for n, a in m.attn.items():
        assert not torch.equal(a.offsets.weight, before[n])
    # the offsets depend on the query (per-pixel predictions, not one global pattern)
    off = m.attn["1"].sample_offsets(torch.rand(1, 16, 8, 8))
    assert off.shape == (1, 2, 3, 2, 8, 8)
    assert off.flatten(3).std(-1).max() > 0


def test_gumbel_selection_is_hard_with_straight_through_gradients():
    torch.manual_seed(0)
    logits = torch.randn(64, 5, requires_grad=True)
    y = gumbel_select(logits, tau=0.7, training=True)
    assert torch.equal(y.detach(), (y.detach() > 0.5).float())  # exact 0/1 values
    assert torch.equal(y.detach().sum(-1), torch.ones(64))  # one choice per row
    (y * torch.randn(64, 5)).sum().backward()
    assert logits.grad.abs().sum() > 0  # straight-through: the soft sample carries the gradient
    # training samples vary; eval is the deterministic argmax
    samples = torch.stack([gumbel_select(logits, training=True).argmax(-1) for _ in range(20)])
    assert (samples != samples[0]).any()
    e = gumbel_select(logits, training=False)
    assert torch.equal(e.argmax(-1), logits.argmax(-1))
    assert torch.equal(e, gumbel_select(logits, training=False))


def test_key_selection_mask():
    torch.manual_seed(0)
    a = CrossLayerAttention(16, layers=3, keys=4)
    q = torch.randn(2, 16, 8, 8)
    for train in (True, False):
        a.train(train)
        mask = a.selection_mask(q)
        assert mask.shape == (2, 3, 4, 8, 8)
        hard = mask.detach()
        assert torch.allclose(hard, hard.round(), atol=1e-6)  # a hard 0/1 mask in both modes
        assert (hard[:, 0, 0] > 0.5).all()  # the query's own layer keeps at least one key
        assert (hard[:, :, 1:] <= hard[:, :, :-1] + 1e-6).all()  # "use the first n keys"
    # adaptive: different queries use different numbers of keys (random selector init)
    a.train()
    with torch.no_grad():
        a.select.weight.normal_(0, 1.0)
    counts = a.selection_mask(torch.randn(1, 16, 16, 16)).detach().sum((1, 2))
    assert counts.unique().numel() > 1
    # straight-through gradient reaches the selector
    a.zero_grad()
    a(q, [q, q * 0.5, q.flip(-1)]).square().mean().backward()
    assert a.select.weight.grad.abs().sum() > 0


def test_attention_memory_is_linear_in_pixels_and_keys():
    m = CrossLayerAttention(8, layers=3, keys=4).eval()
    h = w = 64
    x = torch.rand(1, 8, h, w)
    with torch.no_grad(), LargestTensor() as rec:
        m(x, [x, x, x])
    assert rec.largest <= 2 * 8 * 4 * h * w  # the sampled keys+values of one layer, never (HW)^2


def test_paper_preset_builds():
    m = ACLA(1, 1, 2, **get_architecture("acla").presets["paper"])
    n = sum(p.numel() for p in m.parameters())
    assert 1.0e6 < n < 2.5e6  # an EDSR-baseline trunk (16 x 64) with four modules
    assert sorted(m.attn) == ["11", "15", "3", "7"]
    assert [a.layers for a in m.attn.values()] == [2, 3, 4, 5]
    assert m.attn["3"].keys == 9


def test_bad_positions_are_rejected():
    with pytest.raises(ValueError):
        ACLA(n_blocks=4, positions=[4])
