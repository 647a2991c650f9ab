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


@pytest.mark.parametrize(("name", "shape", "cfa"), [
    ("denoise-acla-tiny", (96, 96), None), ("denoise-acla-tiny", (83, 70), None), ("denoise-acla-tiny", (1, 37), None),
    ("sr-acla-tiny-x2", (45, 61), None), ("inpaint-psal-tiny", (60, 70), None),
    ("demosaic-grl-deep", (52, 66), "RGGB"), ("demosaic-grl-deep", (51, 67), "GRBG"), ("demosaic-grl-deep", (49, 64), "GBRG"),
])
def test_an_image_within_one_tile_comes_out_as_the_whole_image_network_gives_it(name, shape, cfa):
    # the engine pads the image's edge as the network pads a whole image (to its window
    # multiple, mirrored), so the quality measured on whole images is what users get; a
    # demosaicer pads before it mirrors a pattern to RGGB, as the engine does
    import torch

    from napari_attnrestore.tasks.demosaic import cfa_masks

    model, task = ar.load_model(name), name.split("-")[0]
    x = np.random.default_rng(1).uniform(0.2, 0.8, shape).astype(np.float32)
    kw, inp = {}, x[None, None]
    if task == "demosaic":
        kw["cfa"] = cfa
        inp = np.concatenate([x[None], cfa_masks(shape, cfa)])[None]
    if task == "inpaint":
        kw["mask"] = mask = np.zeros(shape, bool)
        mask[20:28] = True
        inp = np.stack([np.where(mask, 0, x), mask])[None]
    out = ar.restore(x, task=task, model=model, tile=128, normalize="none", device="cpu", **kw).compute()
    with torch.no_grad():
        whole = model(torch.from_numpy(inp.astype(np.float32)))[0].numpy()
    whole = np.moveaxis(whole, 0, -1) if whole.shape[0] == 3 else whole[0]
    if task == "inpaint":  # the engine keeps the known pixels as they were
        whole = np.where(mask, whole, x)
    np.testing.assert_allclose(out, whole, atol=2e-5)
