"""Demosaicing task: CFA geometry (all patterns, odd tile offsets), training pairs, baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_attnrestore.tasks import demosaic as dm
from napari_attnrestore.tasks import get_task


def _smooth_rgb(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / 64.0
    return np.stack([
        0.5 + 0.3 * np.sin(2 * np.pi * (xx + 0.3 * yy) / 1.5),
        0.5 + 0.3 * np.cos(2 * np.pi * yy / 1.7),
        0.4 + 0.3 * np.sin(2 * np.pi * (xx - yy) / 2.0),
    ], axis=-1).astype(np.float32)


@pytest.mark.parametrize("pattern", dm.PATTERNS)
def test_mosaic_and_masks_agree(pattern):
    rng = np.random.default_rng(0)
    rgb = rng.random((9, 11, 3)).astype(np.float32)
    for y0, x0 in [(0, 0), (1, 0), (0, 1), (3, 5)]:
        m = dm.cfa_masks(rgb.shape[:2], pattern, y0, x0)
        assert m.shape == (3, 9, 11) and m.dtype == np.float32
        np.testing.assert_array_equal(m.sum(0), 1)
        cfa = dm.mosaic(rgb, pattern, y0, x0)
        np.testing.assert_allclose(cfa, (rgb * m.transpose(1, 2, 0)).sum(-1), atol=1e-7)
        # a tile at (y0, x0) of the full image has the masks of the full image cut there
        full = dm.cfa_masks((20, 20), pattern)
        np.testing.assert_array_equal(m, full[:, y0 : y0 + 9, x0 : x0 + 11])
        # the shifted pattern describes the same tile from its own origin
        np.testing.assert_array_equal(m, dm.cfa_masks((9, 11), dm.shift_pattern(pattern, y0, x0)))
    # the pattern string spells the top-left 2x2 block
    top = dm.colour_index((2, 2), pattern)
    assert "".join("RGB"[i] for i in top.ravel()) == pattern
    assert dm.mosaic((rgb * 255).astype(np.uint8), pattern).dtype == np.uint8


def test_shift_pattern_and_bad_pattern():
    assert dm.shift_pattern("RGGB", 0, 1) == "GRBG"
    assert dm.shift_pattern("RGGB", 1, 0) == "GBRG"
    assert dm.shift_pattern("RGGB", 1, 1) == "BGGR"
    assert dm.shift_pattern("rggb", 2, 4) == "RGGB"
    with pytest.raises(ValueError, match="Bayer pattern"):
        dm.cfa_masks((4, 4), "RGBG")


def test_prepare_input_layout():
    cfa = np.random.default_rng(1).random((6, 7)).astype(np.float32)
    x = dm.prepare_input(cfa, "BGGR", 1, 0)
    assert x.shape == (4, 6, 7) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], cfa)
    np.testing.assert_array_equal(x[1:], dm.cfa_masks((6, 7), "BGGR", 1, 0))


def test_cfa_masks_torch_matches_numpy():
    t = dm.cfa_masks_torch((5, 6), ["GRBG", "RGGB", "GRBG"], y0=1, x0=1)
    assert t.shape == (3, 3, 5, 6) and t.dtype == torch.float32
    np.testing.assert_array_equal(t[0].numpy(), dm.cfa_masks((5, 6), "GRBG", 1, 1))
    np.testing.assert_array_equal(t[1].numpy(), dm.cfa_masks((5, 6), "RGGB", 1, 1))
    assert dm.cfa_masks_torch((5, 6), "GBRG").shape == (3, 5, 6)


def test_training_pair():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(8, 3, 16, 16, generator=gen)
    x, y = dm.make_training_pair(clean, gen)
    assert x.shape == (8, 4, 16, 16) and x.dtype == torch.float32 and y is clean
    seen = set()
    for i in range(8):
        masks = x[i, 1:].numpy()
        pattern = next(p for p in dm.PATTERNS if np.array_equal(masks, dm.cfa_masks((16, 16), p)))
        seen.add(pattern)
        rgb = clean[i].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(x[i, 0].numpy(), dm.mosaic(rgb, pattern), atol=1e-6)
    assert len(seen) > 1  # patterns drawn per sample
    # deterministic per generator seed
    x2, _ = dm.make_training_pair(clean, torch.Generator().manual_seed(0))
    x3, _ = dm.make_training_pair(clean, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x2, x3)
    # quantization: the CFA channel lands on 2^b - 1 levels for some b in 8..16
    xq, _ = dm.make_training_pair(clean, gen, patterns=["RGGB"], bit_depth_range=(8, 8))
    v = xq[:, 0] * 255
    torch.testing.assert_close(v, v.round(), atol=1e-3, rtol=0)
    assert (xq[:, 1:] == dm.cfa_masks_torch((16, 16), ["RGGB"] * 8)).all()


def test_baselines_restore_smooth_image():
    rgb = _smooth_rgb()
    for pattern in ("RGGB", "GBRG"):
        cfa = dm.mosaic(rgb, pattern)
        for fn in (dm.bilinear_baseline, dm.malvar_baseline):
            out = fn(cfa, pattern)
            assert out.shape == (64, 64, 3) and out.dtype == np.float32
            assert dm.demosaic_psnr(rgb, out) > 30, fn.__name__
    # the bilinear baseline keeps the measured samples exactly
    cfa = dm.mosaic(rgb, "GRBG")
    np.testing.assert_allclose(dm.mosaic(dm.bilinear_baseline(cfa, "GRBG"), "GRBG"), cfa, atol=1e-6)


@pytest.mark.parametrize("pattern", dm.PATTERNS)
def test_malvar_baseline_is_exact_on_a_flat_colour_up_to_the_edges(pattern):
    rgb = np.ones((16, 20, 3), np.float32) * np.array([0.2, 0.5, 0.8], np.float32)
    np.testing.assert_allclose(dm.malvar_baseline(dm.mosaic(rgb, pattern), pattern), rgb, atol=1e-6)


def test_malvar_beats_bilinear_on_a_photo():
    from skimage import data

    rgb = data.astronaut()[40:168, 160:288].astype(np.float32) / 255
    cfa = dm.mosaic(rgb, "RGGB")
    bil = dm.demosaic_psnr(rgb, dm.bilinear_baseline(cfa, "RGGB"), border=4)
    mal = dm.demosaic_psnr(rgb, dm.malvar_baseline(cfa, "RGGB"), border=4)
    assert mal > bil + 0.5, (mal, bil)


def test_task_degrade_then_baseline():
    t = get_task("demosaicing")
    assert t is get_task("demosaic") and (t.in_channels, t.out_channels, t.scales) == (4, 3, (1,))
    rgb = _smooth_rgb(32, 32)
    cfa = t.degrade(rgb, np.random.default_rng(0), pattern="BGGR", bit_depth=12)
    assert cfa.shape == (32, 32)
    assert dm.demosaic_psnr(rgb, t.baseline(cfa, "BGGR")) > 30


def test_build_model_for_demosaic():
    from napari_attnrestore.models import build_model

    torch.manual_seed(0)
    net = build_model("hat", task="demosaic", dim=16, depths=[1], heads=2, window=8).eval()
    x = torch.from_numpy(dm.prepare_input(np.random.default_rng(0).random((32, 32)), "RGGB"))[None]
    with torch.no_grad():
        assert net(x).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("pattern", dm.PATTERNS)
@pytest.mark.parametrize(("base", "baseline", "border", "seed"), [
    ("bilinear", dm.bilinear_baseline, 1, 0),
    ("malvar", dm.malvar_baseline, 2, 1),
])
def test_network_skip_is_the_classical_demosaic(pattern, base, baseline, border, seed):
    """Demosaicing networks add ``layers.DEMOSAIC_BASES[base]`` of their input (``image_residual``):
    bilinear, or Malvar 2004 as colour-demosaicing computes it, for every Bayer phase."""
    import torch

    from napari_attnrestore.models.layers import DEMOSAIC_BASES

    rgb = np.random.default_rng(seed).random((24, 30, 3)).astype(np.float32)
    cfa = dm.mosaic(rgb, pattern)
    ours = DEMOSAIC_BASES[base](torch.from_numpy(dm.prepare_input(cfa, pattern))[None])[0].permute(1, 2, 0).numpy()
    ref = baseline(cfa, pattern, clip=False)
    inner = (slice(border, -border), slice(border, -border))
    np.testing.assert_allclose(ours[inner], ref[inner], atol=1e-5)


@pytest.mark.parametrize("arch", ["hat", "grl", "acla", "psal", "csattn"])
def test_every_architecture_can_correct_malvar(arch):
    """``image_residual="malvar"`` works for every architecture: the output moves by exactly
    Malvar minus bilinear when the base changes and the weights stay the same."""
    from napari_attnrestore.models import build_model
    from napari_attnrestore.models.layers import cfa_bilinear, cfa_malvar

    x = torch.from_numpy(dm.prepare_input(np.random.default_rng(0).random((32, 32)), "GRBG"))[None]
    torch.manual_seed(0)
    bil = build_model(arch, task="demosaic").eval()
    mal = build_model(arch, task="demosaic", image_residual="malvar").eval()
    mal.load_state_dict(bil.state_dict())
    with torch.no_grad():
        diff = mal(x) - bil(x)
    torch.testing.assert_close(diff, cfa_malvar(x) - cfa_bilinear(x), atol=1e-5, rtol=0)
