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
    # a seam is a line of consistent error; tile borders sit every (tile - overlap) px. Within
    # the model's context of the image's edge the two runs differ in how the edge is padded
    # (reflected halo against the network's own padding), which is no seam
    edge = max(32, model.halo)
    inner = np.abs(diff[edge:-edge, edge:-edge])
    col, row = inner.mean(axis=0), inner.mean(axis=1)
    assert col.max() < 0.5 / 255 and row.max() < 0.5 / 255, (col.max() * 255, row.max() * 255)
    assert col.max() < 4 * np.median(col) + 0.1 / 255
    assert row.max() < 4 * np.median(row) + 0.1 / 255
