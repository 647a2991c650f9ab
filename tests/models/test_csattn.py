"""CSAttn: shapes for every head, gradients, overfitting, determinism, the FFN-free three-stage block."""

import pytest
import torch
from torch import nn

from napari_attnrestore.models import csattn, get_architecture, list_architectures
from napari_attnrestore.models.csattn import CSAttn, CSAttnBlock, CSAttnConfig

SMALL = dict(dim=8, levels=2, depths=[1, 1, 1], heads=[1, 2, 2])




def test_blocks_have_three_chained_attention_stages_and_no_ffn(monkeypatch):
    m = CSAttn(1, 1, 1, **SMALL)
    blocks = [b for b in m.modules() if isinstance(b, CSAttnBlock)]
    assert len(blocks) == 1 + 1 + 1 + 1 + 1  # encoder levels 0-2 and decoder levels 0-1
    for blk in blocks:
        names = [n for n, _ in blk.named_modules()]
        assert not any(isinstance(mod, nn.Linear) for mod in blk.modules())
        assert not any(k in n.lower() for n in names for k in ("mlp", "ffn", "feedforward"))
        c = blk.proj_out.out_channels
        convs = [mod for mod in blk.modules() if isinstance(mod, nn.Conv2d)]
        # the only widening conv is the shared Q|K|V|V2|V3 projection (split, never reduced
        # by another conv); every other conv is C -> C
        assert blk.proj_in.out_channels == 5 * c and blk.dwconv.groups == 5 * c
        assert all(conv.in_channels == conv.out_channels == c for conv in convs if conv not in (blk.proj_in, blk.dwconv))
        assert blk.temperature.shape[0] == 3

    # three channel-attention stages per block, each a (C/h x C/h) map per head
    blk = blocks[1]  # level 1: 16 channels, 2 heads
    x = torch.rand(2, 16, 12, 20)
    calls = []
    orig = csattn.channel_attention

    def counting(q, k, v, heads, t):
        calls.append((q, k))
        return orig(q, k, v, heads, t)

    monkeypatch.setattr(csattn, "channel_attention", counting)
    y, maps = blk(x, return_attn=True)
    assert y.shape == x.shape
    assert len(calls) == 3 and len(maps) == 3
    assert all(a.shape == (2, 2, 8, 8) for a in maps)
    # "continuous": stages 2 and 3 take their queries/keys from the previous stage's output
    assert calls[1][0] is calls[1][1] and calls[2][0] is calls[2][1]
    assert not torch.equal(calls[1][0], calls[2][0])


def test_ablation_flags_and_config_checks():
    m = CSAttn(1, 1, 1, spatial_scaling=False, vnta=False, stage_residual=False, **SMALL)
    blk = next(b for b in m.modules() if isinstance(b, CSAttnBlock))
    assert not hasattr(blk, "vnta") and not hasattr(blk, "stage_scale")
    assert m(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    assert m.multiple_of == 4
    with pytest.raises(ValueError):
        CSAttnConfig(dim=8, levels=2, depths=[1, 1], heads=[1, 2])  # needs levels + 1 entries
    with pytest.raises(ValueError):
        CSAttnConfig(dim=6, levels=1, depths=[1, 1], heads=[4, 4])  # heads must divide channels


def test_paper_light_config_builds():
    m = CSAttn(1, 1, 1, **get_architecture("csattn").presets["paper-light"])
    n = sum(p.numel() for p in m.parameters())
    assert 0.7e6 < n < 1.1e6  # about 0.88M (the paper's own sizes were not available)
    tiny = sum(p.numel() for p in CSAttn(1, 1, 1).parameters())
    assert 150e3 < tiny < 400e3


@pytest.mark.skipif("csattn" not in list_architectures(), reason="CSAttn is not registered yet")
def test_registered_presets_build():
    from napari_attnrestore.models import build_model

    m = build_model("csattn", "denoise", **SMALL)
    assert isinstance(m, CSAttn) and m.arch == "csattn"
    assert m(torch.rand(1, 1, 20, 20)).shape == (1, 1, 20, 20)
