"""Evaluation protocols: Poisson-Gaussian Set12 noise, the inpainting masks and the reference-free time-series score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_attnrestore as ar
from napari_attnrestore.training import evaluate as ev


def _scene(t: int, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    clean = 500 + 40 * np.sin(6 * xx) * np.cos(4 * yy)
    rng = np.random.default_rng(seed)
    return clean, clean[None] + rng.standard_normal((t, 96, 96)) * sigma


def test_frame_noise_sigma_of_a_still_scene():
    _, frames = _scene(5, 4.0)
    assert ev.frame_noise_sigma(frames) == pytest.approx(4.0, rel=0.03)


def test_frame_scores_estimate_the_psnr_against_the_unseen_signal():
    clean, frames = _scene(6, 4.0)
    s = ev.frame_scores(lambda x: x, frames)
    expected = 10 * np.log10(s["range"] ** 2 / 4.0**2)  # identity: the error is the noise
    assert s["psnr"] == pytest.approx(s["psnr_in"], abs=1e-4) and s["psnr_in"] == pytest.approx(expected, abs=0.3)
    halved = ev.frame_scores(lambda x: clean + (x - clean) / 2, frames)["psnr"]
    assert halved == pytest.approx(expected + 6.02, abs=0.4)
    assert ev.frame_scores(lambda x: clean, frames)["psnr"] > expected + 20


def test_frame_scores_need_a_time_series():
    with pytest.raises(ValueError, match="time series"):
        ev.frame_scores(lambda x: x, np.zeros((32, 32)))


def test_denoise_scores_poisson_gaussian_input_noise():
    clean = [np.full((64, 64), 0.5, np.float32)] * 3
    gauss = ev.denoise_scores(lambda x: x, clean, 5.0)["psnr_in"]
    pg = ev.denoise_scores(lambda x: x, clean, 5.0, peak=20.0)["psnr_in"]
    # shot noise at half of 20 photons: variance 0.5 / 20, plus the read noise
    expected = -10 * np.log10(0.5 / 20 + (5 / 255) ** 2)
    assert pg == pytest.approx(expected, abs=0.3) and pg < gauss - 10


def test_inpaint_masks_include_upright_stripes():
    from napari_attnrestore.models.psal import gaps_run_down_columns

    stripes, columns = ev.inpaint_mask((60, 80), "stripes", 0), ev.inpaint_mask((60, 80), "columns", 0)
    assert stripes.shape == columns.shape == (60, 80)
    assert abs(stripes.mean() - 0.25) < 0.05 and abs(columns.mean() - 0.25) < 0.05
    turned = torch.from_numpy(np.stack([stripes, columns])[:, None].astype(np.float32))
    assert gaps_run_down_columns(turned).tolist() == [False, True]
    with pytest.raises(ValueError, match="unknown inpainting mask"):
        ev.inpaint_mask((8, 8), "boxes", 0)


@pytest.mark.parametrize("tile", [8, 12, 64])
def test_scoring_on_tiles_takes_the_engines_tiles(tile):
    """A card tile at or under the window multiple made the overlap the whole tile (a crash);
    one off the multiple was run unrounded, unlike the engine."""
    from napari_attnrestore.models import build_model
    from napari_attnrestore.training.evaluate import run_on_tiles

    net = build_model("csattn", task="denoise", dim=8, depths=[1, 1, 1], heads=[1, 1, 1]).eval()
    img = np.random.default_rng(0).random((40, 52)).astype(np.float32)
    out = run_on_tiles(net, img, tile)
    assert out.shape == img.shape and np.isfinite(out).all()
    engine = np.asarray(ar.restore(img, model=net, tile=tile, overlap=min(net.halo, max(4, tile // 4 // 4 * 4)),
                                   normalize="none", device="cpu").compute())
    np.testing.assert_allclose(out, engine, atol=1e-4)
