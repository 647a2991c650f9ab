"""PSAL: PatchMatch against brute force, masked search, shapes, gradients, overfitting, memory."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from memory_probe import LargestTensor
from skimage import data

from napari_attnrestore.models import get_architecture
from napari_attnrestore.models import psal as psal_mod
from napari_attnrestore.models.psal import (
    PSAL,
    PatchStochasticAttention,
    PSALConfig,
    _shift_index,
    exact_knn,
    patchmatch,
)

SMALL = dict(dims=[12, 24], blocks=1, mid_blocks=1, match_dim=4, iters=2)






def smooth_field(c: int, h: int, w: int, seed: int, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian-filtered white noise ``(1, c, h, w)``: coherent, like natural feature maps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, h, w, generator=g)
    r = int(3 * sigma) + 1
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="circular"), k, groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="circular"), k.transpose(2, 3), groups=c)


def camera_features(size: int = 24) -> torch.Tensor:
    """Intensity and its two derivatives on a downsampled crop of scikit-image's camera."""
    a = torch.tensor(data.camera(), dtype=torch.float32)[None, None] / 255
    a = F.avg_pool2d(a, 4)[..., 20 : 20 + size, 40 : 40 + size]
    dy = F.pad(a[..., 1:, :] - a[..., :-1, :], (0, 0, 0, 1))
    dx = F.pad(a[..., :, 1:] - a[..., :, :-1], (0, 1))
    return torch.cat((a, dy, dx), 1)


def recall_of_nearest(found_d: torch.Tensor, true_d: torch.Tensor) -> float:
    """Fraction of queries whose true nearest patch is among the found ones (cost ties count)."""
    return (found_d[..., 0] <= true_d[..., 0] * (1 + 1e-4) + 1e-7).float().mean().item()


# ---------------------------------------------------------------------------- PatchMatch


def test_patchmatch_finds_the_exact_nearest_patches_cross_image():
    q, k = smooth_field(8, 24, 24, seed=1), smooth_field(8, 24, 24, seed=2)
    idx, dist = patchmatch(q, k, k=3, patch_size=3, iters=6, generator=torch.Generator().manual_seed(0))
    assert idx.shape == dist.shape == (1, 24 * 24, 3)
    _, true_d = exact_knn(q, k, 3, 3)
    assert recall_of_nearest(dist, true_d) >= 0.9
    # the returned costs are the exact costs of the returned positions, sorted, and distinct
    qp, kp = psal_mod._patches(q, 3), psal_mod._patches(k, 3)
    ref = (kp[0][idx[0]] - qp[0].unsqueeze(1)).square().mean(-1)
    assert torch.allclose(dist[0], ref, rtol=1e-4, atol=1e-6)
    assert (dist[..., 1:] >= dist[..., :-1]).all()
    s = idx.sort(-1).values
    assert (s[..., 1:] != s[..., :-1]).all()


def test_patchmatch_self_similarity_on_a_natural_image():
    f = camera_features(24)
    gen = torch.Generator().manual_seed(0)
    idx, dist = patchmatch(f, f, k=3, patch_size=3, iters=4, generator=gen, exclude_radius=1)
    _, true_d = exact_knn(f, f, 3, 3, exclude_radius=1)
    assert recall_of_nearest(dist, true_d) >= 0.9
    assert (idx != torch.arange(24 * 24).view(1, -1, 1)).all()  # no trivial self-match


def test_patchmatch_is_deterministic_with_a_seeded_generator():
    q, k = smooth_field(4, 20, 18, seed=3), smooth_field(4, 15, 22, seed=4)  # different sizes work
    a = patchmatch(q, k, 2, 3, 2, generator=torch.Generator().manual_seed(7))
    b = patchmatch(q, k, 2, 3, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].max() < 15 * 22


def test_an_image_restores_the_same_alone_or_in_any_batch():
    torch.manual_seed(0)
    net = PSAL(2, 1, **SMALL).eval()
    a, b = torch.rand(1, 2, 40, 44), torch.rand(1, 2, 40, 44)
    a[:, 1], b[:, 1] = 0, 0
    a[:, 1, 10:26, 12:30] = b[:, 1, 4:12, 5:40] = 1  # holes
    with torch.no_grad():
        alone = net(a)
        first, second = net(torch.cat([a, b]))[:1], net(torch.cat([b, a]))[1:]
    assert torch.allclose(alone, first, atol=1e-5) and torch.allclose(alone, second, atol=1e-5)


def test_masked_search_never_picks_the_hole():
    f = smooth_field(4, 24, 24, seed=5)
    valid = torch.ones(1, 24, 24, dtype=torch.bool)
    valid[:, 6:18, 4:20] = False
    idx, dist = patchmatch(f, f, 3, 3, 3, valid_mask=valid, generator=torch.Generator().manual_seed(0))
    assert valid.view(1, -1)[0][idx.flatten()].all()
    assert torch.isfinite(dist).all()
    _, true_d = exact_knn(f, f, 3, 3, valid_mask=valid)
    assert recall_of_nearest(dist, true_d) >= 0.8


def test_psal_model_inpainting_draws_only_from_the_known_region(monkeypatch):
    torch.manual_seed(0)
    m = PSAL(2, 1, **SMALL).eval()
    assert m.masked
    seen = {}

    def spy(*args, **kwargs):
        out = patchmatch(*args, **kwargs)
        seen["idx"], seen["valid"] = out[0], args[5]
        return out

    monkeypatch.setattr(psal_mod, "patchmatch", spy)
    x = torch.rand(1, 2, 40, 44)
    x[:, 1] = 0
    x[:, 1, 10:26, 12:30] = 1  # the hole
    x[:, 0][x[:, 1] > 0] = 0
    with torch.no_grad():
        m(x)
    idx, valid = seen["idx"], seen["valid"]
    h, w = valid.shape[-2:]
    hole = F.max_pool2d(x[:, 1:], 2) > 0.5  # bottleneck cells touching the hole
    assert not hole.flatten()[idx.flatten()].any()
    # the patch-aggregation candidates (matches of covering patches shifted back) stay outside too
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            sidx, _, _ = _shift_index(idx, h, w, h, w, dy, dx)
            assert not hole.flatten()[sidx.flatten()].any()


# ---------------------------------------------------------------------------- the network


def test_tasks_and_tiling_hints():
    assert {"denoise", "inpaint"} <= set(get_architecture("psal").tasks)
    m = PSAL(**SMALL)
    assert m.multiple_of == 2
    assert m.halo % m.multiple_of == 0 and m.halo >= 16
    assert PSAL(dims=[8, 16, 32]).multiple_of == 4


def test_attention_is_differentiable_in_queries_keys_values():
    torch.manual_seed(0)
    cfg = PSALConfig(k=3, patch_size=3, iters=2)
    q = torch.randn(1, 4, 12, 12, requires_grad=True)
    k = torch.randn(1, 4, 12, 12, requires_grad=True)
    v = torch.randn(1, 6, 12, 12, requires_grad=True)
    idx, dist = patchmatch(q.detach(), k.detach(), cfg.k, 3, 2, generator=torch.Generator().manual_seed(0))
    for agg in (True, False):
        out = psal_mod.patch_attention(q, k, v, idx, torch.isfinite(dist), 3, 0.5, aggregation=agg)
        assert out.shape == (1, 6, 12, 12)
        gq, gk, gv = torch.autograd.grad(out.square().sum(), (q, k, v))
        assert gq.abs().sum() > 0 and gk.abs().sum() > 0 and gv.abs().sum() > 0


def test_inference_reuses_the_search_costs():
    """Without autograd the layer takes PatchMatch's exact costs instead of recomputing them."""
    torch.manual_seed(0)
    layer = PatchStochasticAttention(8, PSALConfig(match_dim=4, iters=2)).eval()
    x = torch.rand(1, 8, 20, 20)
    with torch.no_grad():
        fast = layer(x)
    slow = layer(x.requires_grad_())
    assert torch.allclose(fast, slow, atol=1e-5)


def test_layer_memory_is_linear_in_pixels_and_neighbours():
    """At 256x256 the largest tensor (forward and backward) is O(HW k C), not (HW)^2."""
    torch.manual_seed(0)
    c, h, w = 16, 256, 256
    cfg = PSALConfig(match_dim=4, k=3, patch_size=3, iters=1)
    layer = PatchStochasticAttention(c, cfg)
    x = torch.rand(1, c, h, w, requires_grad=True)
    with LargestTensor() as rec:
        layer(x).square().mean().backward()
    assert rec.largest < 50 * h * w * cfg.k * c
    assert rec.largest < (h * w) ** 2 / 200  # full attention would need an (HW)^2 matrix


def test_paper_preset_builds():
    m = PSAL(2, 1, **get_architecture("psal").presets["paper"])
    assert m.psal.cfg.k == 3 and m.psal.cfg.patch_size == 3 and m.psal.cfg.iters == 5
    assert m.multiple_of == 4
    with torch.no_grad():
        assert m.eval()(torch.rand(1, 2, 20, 20)).shape == (1, 1, 20, 20)


def test_harmonic_fill_keeps_ramps_and_known_pixels():
    from napari_attnrestore.models.layers import harmonic_fill

    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(40.0), indexing="ij")
    ramp = (0.3 + 0.01 * yy - 0.005 * xx)[None, None]
    holes = torch.zeros_like(ramp, dtype=torch.bool)
    holes[..., 10:18, :] = True  # an 8-pixel scan-line stripe across the image
    holes[..., 30:36, 5:20] = True
    filled = harmonic_fill(torch.where(holes, torch.full_like(ramp, float("nan")), ramp), holes)
    assert torch.equal(filled[~holes], ramp[~holes])
    # away from the image's left and right edges (where the fill sees a mirrored, flat border)
    assert (filled - ramp)[..., 8:-8].abs().max() < 3e-3


def test_biharmonic_fill_continues_curvature_and_matches_scikit_image():
    from skimage.restoration import inpaint_biharmonic

    from napari_attnrestore.models.layers import biharmonic_fill, harmonic_fill

    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(40.0), indexing="ij")
    # a quadratic surface: biharmonic (its fill is exact) but not harmonic
    surface = (0.2 + 4e-4 * (yy - 20) ** 2 - 3e-4 * (yy - 20) * (xx - 15) + 2e-4 * (xx - 15) ** 2)[None, None]
    holes = torch.zeros_like(surface, dtype=torch.bool)
    holes[..., 20:28, :] = True
    holed = torch.where(holes, torch.full_like(surface, float("nan")), surface)
    smooth = harmonic_fill(holed, holes)
    curved = biharmonic_fill(holed, holes)
    assert torch.equal(curved[~holes], surface[~holes])
    inner = (..., slice(None), slice(4, -4))  # away from the replicated left and right borders
    assert (curved - surface)[inner].abs().max() < 0.2 * (smooth - surface)[inner].abs().max()
    # converged, it is scikit-image's biharmonic inpainting
    converged = biharmonic_fill(holed, holes, iterations=200)[0, 0].numpy()
    reference = inpaint_biharmonic(np.where(holes[0, 0].numpy(), 0.0, surface[0, 0].numpy()), holes[0, 0].numpy())
    assert np.abs(converged - reference)[:, 8:-8].max() < 1e-3
    assert biharmonic_fill(holed.half(), holes).dtype == torch.float16


@pytest.mark.parametrize("prefill", [True, "harmonic", "biharmonic"])
def test_prefilled_psal_corrects_the_smooth_fill(prefill):
    from napari_attnrestore.models.layers import HOLE_FILLS

    torch.manual_seed(0)
    m = PSAL(2, 1, **SMALL, prefill=prefill).eval()
    x = torch.rand(1, 2, 32, 36)
    x[:, 1] = 0
    x[:, 1, 8:16] = 1
    x[:, 0][x[:, 1] > 0] = 0
    fill = HOLE_FILLS["harmonic" if prefill is True else prefill](x[:, :1], x[:, 1:] > 0.5)
    with torch.no_grad():
        assert not torch.allclose(m(x), fill)
        torch.nn.init.zeros_(m.head.net[0].weight)
        torch.nn.init.zeros_(m.head.net[0].bias)
        assert torch.allclose(m(x), fill, atol=1e-6)  # a silent head leaves exactly the smooth fill


def test_unknown_prefill_is_refused():
    with pytest.raises(ValueError, match="unknown prefill 'poisson'"):
        PSAL(2, 1, **SMALL, prefill="poisson")


def test_gap_rows_turns_vertical_gaps_to_the_trained_orientation():
    from napari_attnrestore.models.psal import gaps_run_down_columns
    from napari_attnrestore.tasks.inpaint import scanline_mask

    rng = np.random.default_rng(0)
    stripes = torch.from_numpy(scanline_mask((40, 48), rng, width=4, fraction=0.25, slope=0.15)).float()
    upright = torch.from_numpy(scanline_mask((48, 40), rng, width=4, fraction=0.25, slope=-0.15)).float().T
    column = torch.zeros(40, 48)
    column[:, 20] = 1  # a dead sensor column
    masks = torch.stack([stripes, upright, column])[:, None]
    assert gaps_run_down_columns(masks).tolist() == [False, True, True]
    assert not gaps_run_down_columns(torch.zeros(1, 1, 8, 8)).any()  # no gaps: left as it is

    torch.manual_seed(0)
    turned, plain = PSAL(2, 1, **SMALL, gap_rows=True).eval(), PSAL(2, 1, **SMALL).eval()
    plain.load_state_dict(turned.state_dict())
    x = torch.rand(2, 2, 32, 32)
    x[:, 1] = 0
    x[0, 1, 8:14] = 1  # row-wise gap: run as it is
    x[1, 1, :, 20:23] = 1  # column-wise gap: run transposed, output turned back
    with torch.no_grad():
        y = turned(x)
        assert torch.equal(y[:1], plain(x[:1]))
        assert torch.equal(y[1:], plain(x[1:].transpose(-2, -1)).transpose(-2, -1))
        assert not torch.allclose(y[1:], plain(x[1:]))
