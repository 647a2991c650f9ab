"""Inpainting task: masks, input layout, nodata, training pairs, biharmonic baseline, metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_attnrestore.tasks import get_task
from napari_attnrestore.tasks import inpaint as ip


def _smooth(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / 64.0
    return (0.5 + 0.25 * np.sin(2 * np.pi * xx / 1.3) * np.cos(2 * np.pi * yy / 1.7)).astype(np.float32)


@pytest.mark.parametrize(("width", "fraction"), [(8, 0.25), (4, 0.1), (6, 0.4)])
def test_scanline_mask_fraction_and_width(width, fraction):
    m = ip.scanline_mask((128, 128), np.random.default_rng(3), width=width, fraction=fraction, slope=0.07)
    assert m.dtype == bool and m.shape == (128, 128)
    assert abs(m.mean() - fraction) < 0.05
    # every run of masked rows inside a column (not touching the edges) is `width` tall
    for col in m.T[::7]:
        d = np.diff(col.astype(np.int8))
        starts, ends = np.flatnonzero(d == 1) + 1, np.flatnonzero(d == -1) + 1
        if starts.size and ends.size and ends[0] < starts[0]:
            ends = ends[1:]
        runs = ends[: starts.size] - starts[: ends[: starts.size].size]
        assert runs.size and (runs == width).all()


def test_scanline_mask_slants_and_tapers():
    m = ip.scanline_mask((128, 128), np.random.default_rng(0), slope=0.1)
    assert not np.array_equal(m[:, 0], m[:, 100])  # slanted: columns differ
    t = ip.scanline_mask((128, 128), np.random.default_rng(0), slope=0.0, taper=0.3)
    assert t[:, 64].sum() < t[:, 0].sum()  # narrow at the centre, wide at the edges


def test_masks_deterministic_per_seed():
    shape = (96, 80)
    for fn in (ip.stroke_mask, ip.box_mask, ip.scanline_mask, ip.random_mask):
        a = fn(shape, np.random.default_rng(7))
        b = fn(shape, np.random.default_rng(7))
        assert a.dtype == bool and a.shape == shape
        np.testing.assert_array_equal(a, b)
        assert 0 < a.mean() < 0.9, fn.__name__
    assert not np.array_equal(ip.stroke_mask(shape, np.random.default_rng(1)), ip.stroke_mask(shape, np.random.default_rng(2)))
    kinds = [ip.random_mask(shape, np.random.default_rng(s), kinds=["boxes"]) for s in range(3)]
    assert all(k.any() for k in kinds)
    with pytest.raises(ValueError, match="unknown mask kinds"):
        ip.random_mask(shape, np.random.default_rng(0), kinds=["holes"])


def test_prepare_input_and_nodata():
    img = np.arange(12, dtype=np.float32).reshape(3, 4) / 12
    img[0, 1] = np.nan
    mask = np.zeros((3, 4), bool)
    mask[2, 2] = True
    x = ip.prepare_input(img, mask)
    assert x.shape == (2, 3, 4) and x.dtype == np.float32 and np.isfinite(x).all()
    assert x[1].sum() == 2 and x[1, 0, 1] == 1 and x[1, 2, 2] == 1  # NaN counts as a hole
    assert x[0, 0, 1] == 0 and x[0, 2, 2] == 0 and x[0, 1, 1] == img[1, 1]
    assert ip.prepare_input(img, mask, fill=0.5)[0, 2, 2] == 0.5

    np.testing.assert_array_equal(ip.mask_from_nodata(img), np.isnan(img))
    ints = np.array([[0, 5], [65535, 7]], np.uint16)
    np.testing.assert_array_equal(ip.mask_from_nodata(ints, nodata=65535), [[False, False], [True, False]])
    assert not ip.mask_from_nodata(ints).any()
    f = np.array([[-9999.0, 1.0], [np.nan, 2.0]])
    np.testing.assert_array_equal(ip.mask_from_nodata(f, nodata=-9999), [[True, False], [True, False]])
    np.testing.assert_array_equal(ip.mask_from_nodata(f, nodata=float("nan")), np.isnan(f))


def test_training_pair():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 1, 32, 32, generator=gen) + 0.1
    x, y = ip.make_training_pair(clean, gen)
    assert x.shape == (4, 2, 32, 32) and x.dtype == torch.float32 and y is clean
    m = x[:, 1:]
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0} and m.sum() > 0
    assert (x[:, :1][m > 0] == 0).all()
    assert torch.equal(x[:, :1][m == 0], clean[m == 0])
    assert not torch.equal(m[0], m[1])  # one mask per sample
    x2, _ = ip.make_training_pair(clean, torch.Generator().manual_seed(0))
    x3, _ = ip.make_training_pair(clean, torch.Generator().manual_seed(0))
    assert torch.equal(x2, x3)


def test_masked_psnr_counts_only_masked_pixels():
    ref = np.zeros((8, 8))
    est = np.zeros((8, 8))
    mask = np.zeros((8, 8), bool)
    mask[:2] = True
    est[4:] = 1.0  # errors outside the mask do not count
    assert ip.masked_psnr(ref, est, mask) == float("inf")
    est[0, 0] = 0.1  # one masked pixel off by 0.1 among 16
    assert ip.masked_psnr(ref, est, mask) == pytest.approx(10 * np.log10(16 / 0.01))
    with pytest.raises(ValueError, match="no pixels"):
        ip.masked_psnr(ref, est, np.zeros((8, 8), bool))


def test_biharmonic_fills_a_smooth_image():
    clean = _smooth()
    mask = ip.scanline_mask(clean.shape, np.random.default_rng(0), width=8, fraction=0.25)
    holed = np.where(mask, np.nan, clean)
    out = ip.biharmonic_baseline(holed, mask)
    assert out.shape == clean.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert ip.masked_psnr(clean, out, mask) > 30
    # mask=None takes the NaN pixels; TASK.degrade -> TASK.baseline round trip
    np.testing.assert_allclose(ip.biharmonic_baseline(holed), out, atol=1e-6)
    t = get_task("inpainting")
    deg = t.degrade(clean, np.random.default_rng(1), kinds=["strokes"])
    holes = np.isnan(deg)
    assert holes.any() and ip.masked_psnr(clean, t.baseline(deg), holes) > 25


def test_biharmonic_refuses_a_mask_of_another_shape():
    with pytest.raises(ValueError, match=r"mask shape \(1, 5\) does not match the image's \(4, 5\)"):
        ip.biharmonic_baseline(np.zeros((4, 5), np.float32), np.ones((1, 5), bool))


def test_task_and_model_channels():
    from napari_attnrestore.models import build_model

    t = get_task("inpaint")
    assert (t.name, t.in_channels, t.out_channels, t.scales) == ("inpaint", 2, 1, (1,))
    torch.manual_seed(0)
    net = build_model("hat", task="inpaint", dim=16, depths=[1], heads=2, window=8).eval()
    img = _smooth(32, 32)
    x = torch.from_numpy(ip.prepare_input(img, ip.box_mask(img.shape, np.random.default_rng(0))))[None]
    with torch.no_grad():
        assert net(x).shape == (1, 1, 32, 32)
