"""Seams: tiled restoration must match single-tile restoration and show no tile grid."""

import numpy as np
import pytest
from skimage import data, transform

import napari_attnrestore as ar


def _model():
    # the shipped denoiser: a trained network behaves like a local filter, as users see it
    return ar.load_model("default:denoise")


@pytest.mark.slow
def test_tiled_matches_single_tile_without_visible_grid():
    clean = transform.resize(data.camera(), (1024, 1024)).astype(np.float32)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)
    model = _model()
    tiled = ar.restore(noisy, model=model, tile=256, chunks=512, normalize="none").compute()
    single = ar.restore(noisy, model=model, tile=1024, chunks=1024, overlap=0, normalize="none").compute()
    diff = tiled - single
    psnr = 10 * np.log10(1.0 / np.mean(diff**2))
    assert psnr >= 45, psnr
    # a seam is a line of consistent error; tile borders sit every (tile - overlap) px. The
    # image's edge is no exception: a tile there sees it as the whole-image network does
    err = np.abs(diff)
    col, row = err.mean(axis=0), err.mean(axis=1)
    assert col.max() < 0.5 / 255 and row.max() < 0.5 / 255, (col.max() * 255, row.max() * 255)
    assert col.max() < 4 * np.median(col) + 0.1 / 255
    assert row.max() < 4 * np.median(row) + 0.1 / 255


@pytest.mark.parametrize("shape", [(96, 96), (83, 70)])
def test_an_image_within_one_tile_comes_out_as_the_whole_image_network_gives_it(shape):
    # the engine pads the image's edge as the network pads a whole image (to its window
    # multiple, mirrored), so the quality measured on whole images is what users get
    import torch

    model = ar.load_model("denoise-acla-tiny")
    noisy = np.random.default_rng(1).uniform(0.2, 0.8, shape).astype(np.float32)
    out = ar.restore(noisy, model=model, tile=128, normalize="none", device="cpu").compute()
    with torch.no_grad():
        whole = model(torch.from_numpy(noisy)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out, whole, atol=2e-5)
