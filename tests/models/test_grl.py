"""GRL: shapes for every head, gradients, overfitting, determinism, anchored stripe attention."""

import pytest
import torch

from napari_attnrestore.models import get_architecture, list_architectures
from napari_attnrestore.models.grl import (
    GRL,
    AnchoredStripeAttention,
    GRLConfig,
    _partition,
    anchor_stripe_geometry,
    anchor_stripe_masks,
    cosine_attention,
)

# four blocks: horizontal / vertical stripes, unshifted / shifted, shifted windows
SMALL = dict(dim=16, depths=[4], heads_window=2, heads_stripe=2, window=8, stripe=[8, 16], anchor_down=2, cpb_hidden=16)


@pytest.mark.parametrize("shift", [False, True])
def test_queries_attend_anchors_and_anchors_attend_keys(shift):
    torch.manual_seed(0)
    heads, (sh, sw), df, c = 2, (8, 16), 2, 8
    att = AnchoredStripeAttention(heads, (sh, sw), df, shift, cpb_hidden=16)
    b, h, w = 2, 16, 32
    qkv, anchor = torch.randn(b, h, w, 3 * c), torch.randn(b, h // df, w // df, c)
    y, a2w, w2a = att(qkv, anchor, return_attn=True)
    n1, n2, nstripes = sh * sw, (sh // df) * (sw // df), b * (h // sh) * (w // sw)
    assert y.shape == (b, h, w, c)
    assert a2w.shape == (nstripes, heads, n2, n1)  # anchors x stripe keys
    assert w2a.shape == (nstripes, heads, n1, n2)  # stripe queries x anchors: no N1 x N1 map
    torch.testing.assert_close(a2w.sum(-1), torch.ones(nstripes, heads, n2))
    torch.testing.assert_close(w2a.sum(-1), torch.ones(nstripes, heads, n1))
    assert torch.allclose(att(qkv, anchor), y, atol=1e-5)
    if not shift:  # the output is exactly the two-step product: Y = A_w2a (A_a2w V)
        v = _partition(qkv[..., 2 * c :].contiguous(), sh, sw).view(nstripes, n1, heads, c // heads).transpose(1, 2)
        two_step = (w2a @ (a2w @ v)).transpose(1, 2).reshape(nstripes, n1, c)
        torch.testing.assert_close(_partition(y, sh, sw), two_step, atol=1e-5, rtol=1e-4)
    else:  # shifted stripes: no attention across the regions that the roll glued together
        mask_a2w, mask_w2a = anchor_stripe_masks(h, w, sh, sw, df, torch.device("cpu"))
        assert (mask_a2w != 0).any()
        leak = a2w.view(b, -1, heads, n2, n1) * (mask_a2w[None, :, None] != 0)
        assert leak.max() < 1e-20
        assert torch.equal(mask_w2a, mask_a2w.transpose(1, 2))


@pytest.mark.parametrize("with_mask", [False, True])
def test_fused_and_explicit_cosine_attention_agree(with_mask):
    torch.manual_seed(0)
    q, k, v = torch.randn(6, 2, 16, 4), torch.randn(6, 2, 8, 4), torch.randn(6, 2, 8, 4)
    scale, bias = torch.randn(2, 1, 1), torch.rand(2, 16, 8)
    mask = torch.where(torch.rand(3, 16, 8) > 0.5, -100.0, 0.0) if with_mask else None
    fused = cosine_attention(q, k, v, scale, bias, mask, fused=True)
    explicit, attn = cosine_attention(q, k, v, scale, bias, mask, return_attn=True)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)
    assert attn.shape == (6, 2, 16, 8)


def test_anchor_position_geometry():
    coords, index = anchor_stripe_geometry(8, 16, 4)
    # distinct anchor-centre minus pixel offsets per axis: 2 * n - df
    assert coords.shape == ((2 * 8 - 4) * (2 * 16 - 4), 2)
    assert index.shape == ((8 // 4) * (16 // 4), 8 * 16)
    assert index.max() == coords.shape[0] - 1
    # pixel (1, 1) and (2, 2) are equally far from the centre (1.5, 1.5) of anchor 0
    assert torch.equal(coords[index[0, 1 * 16 + 1]], -coords[index[0, 2 * 16 + 2]])


def test_block_schedule_and_padding_multiple():
    m = GRL(1, 1, 1, **SMALL)
    blocks = m.stages[0].blocks
    assert [b.stripe_type for b in blocks] == ["H", "W", "H", "W"]
    assert [b.attn.stripe_attn.shift for b in blocks] == [False, False, True, True]
    assert [b.attn.window_attn.shift for b in blocks] == [4, 0, 4, 0]
    assert (blocks[1].attn.stripe_attn.sh, blocks[1].attn.stripe_attn.sw) == (16, 8)
    assert m.multiple_of == 16
    with pytest.raises(ValueError):
        GRLConfig(dim=16, stripe=[8, 12], anchor_down=4)  # shift / anchor stride not integral


def test_paper_config_grl_t_builds():
    # GRL-T for colour denoising has 880,227 parameters in the paper's release
    m = GRL(3, 3, 1, **get_architecture("grl").presets["paper-t"])
    assert sum(p.numel() for p in m.parameters()) == 880_227
    m = GRL(1, 1, 4, **get_architecture("grl").presets["paper-t-sr"])
    n = sum(p.numel() for p in m.parameters())
    assert 0.85e6 < n < 1.3e6  # GRL-T x4 is 0.91M with a lighter (pixelshuffledirect) head
    assert m.multiple_of == 64


@pytest.mark.skipif("grl" not in list_architectures(), reason="GRL is not registered yet")
def test_registered_presets_build():
    from napari_attnrestore.models import build_model

    m = build_model("grl", "denoise", **SMALL)
    assert isinstance(m, GRL) and m.arch == "grl"
    assert m(torch.rand(1, 1, 20, 20)).shape == (1, 1, 20, 20)


def _mosaic_input(rgb: torch.Tensor, pattern: str) -> torch.Tensor:
    """``(1, 4, H, W)`` network input: the RGB image mosaicked with ``pattern`` + its masks."""
    from napari_attnrestore.tasks import demosaic as dm

    cfa = dm.mosaic(rgb.permute(1, 2, 0).numpy(), pattern)
    return torch.from_numpy(dm.prepare_input(cfa, pattern))[None]


@pytest.mark.parametrize("size", [(16, 24), (15, 21)])
def test_run_as_rggb_mirrors_every_pattern_to_rggb_and_back(size):
    from napari_attnrestore.models.layers import run_as_rggb
    from napari_attnrestore.tasks import demosaic as dm

    rgb = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    x = torch.cat([_mosaic_input(rgb, p) for p in dm.PATTERNS])
    seen = []

    def spy(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.clone())
        return t[:, :3] + 2 * t[:, 1:4]  # depends on position, so a wrong mirror back shows

    out = run_as_rggb(spy, x)
    assert out.shape == (4, 3, *size)
    (net_in,) = seen
    assert net_in.shape[-2] % 2 == 0 and net_in.shape[-1] % 2 == 0
    rggb = torch.from_numpy(dm.cfa_masks(net_in.shape[-2:], "RGGB"))
    for b in range(4):
        torch.testing.assert_close(net_in[b, 1:], rggb)  # the network only sees RGGB
        torch.testing.assert_close(out[b], x[b, :3] + 2 * x[b, 1:4])  # and its output lands back in place


def test_canonical_bayer_grl_is_mirror_equivariant_and_ensembles_moved_mosaics():
    from napari_attnrestore.engine import model_handle as mh

    torch.manual_seed(0)
    net = GRL(4, 3, 1, **SMALL, unshuffle=2, image_residual="malvar", canonical_bayer=True).eval()
    plain = GRL(4, 3, 1, **SMALL, unshuffle=2, image_residual="malvar").eval()
    plain.load_state_dict(net.state_dict())
    assert net.ensemble_orientations == ((0, False), (1, False)) and plain.ensemble_orientations is None
    assert plain.ensemble_shifts is None
    rgb = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        up = net(_mosaic_input(rgb, "RGGB"))
        torch.testing.assert_close(up, plain(_mosaic_input(rgb, "RGGB")))  # RGGB itself is not mirrored
        for dims, pattern in (((-1,), "GRBG"), ((-2,), "GBRG"), ((-2, -1), "BGGR")):
            mirrored = net(_mosaic_input(rgb.flip(dims), pattern))
            torch.testing.assert_close(mirrored, up.flip(dims), atol=1e-5, rtol=0)
        x = _mosaic_input(rgb, "GRBG")
        calls = []
        net.register_forward_hook(lambda *_: calls.append(1))
        ens = mh.self_ensemble(net, x)
        assert len(calls) == 8  # upright and quarter-turned, each moved by none, a column, a row, both
        acc, count = torch.zeros_like(ens), torch.zeros(32, 32)
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            moved = mh.shifted(x, dy, dx)
            if (dy, dx) != (0, 0):  # another pattern from its corner: mirrored to RGGB, its 2x2 cells regrouped
                assert not torch.equal(moved[:, 1:, :2, :2], x[:, 1:, :2, :2])
            for k in (0, 1):
                y = torch.rot90(net(torch.rot90(moved, k, (-2, -1))), -k, (-2, -1))
                acc[..., : 32 - dy, : 32 - dx] += y[..., dy:, dx:]
                count[: 32 - dy, : 32 - dx] += 1
        torch.testing.assert_close(ens, acc / count, atol=1e-5, rtol=0)
        upright = torch.stack([torch.rot90(net(torch.rot90(x, k, (-2, -1))), -k, (-2, -1)) for k in (0, 1)]).mean(0)
        assert float((ens - upright).abs().max()) > 1e-3  # the moved passes are not the unmoved ones again


@pytest.mark.parametrize("shape", [(33, 32), (32, 31)], ids=["odd-height", "odd-width"])
def test_canonical_bayer_ensemble_of_an_odd_sized_mosaic_runs_all_eight(shape):
    from napari_attnrestore.engine import model_handle as mh

    torch.manual_seed(0)
    net = GRL(4, 3, 1, **SMALL, unshuffle=2, image_residual="malvar", canonical_bayer=True).eval()
    x = _mosaic_input(torch.rand(3, *shape, generator=torch.Generator().manual_seed(1)), "GBRG")
    every = []
    with torch.no_grad():
        for k, flip in mh.DIHEDRAL:
            z = torch.rot90(x, k, (-2, -1))
            y = net(z.flip(-1) if flip else z)
            every.append(torch.rot90(y.flip(-1) if flip else y, -k, (-2, -1)))
        torch.testing.assert_close(mh.self_ensemble(net, x), torch.stack(every).mean(0), atol=1e-5, rtol=0)
