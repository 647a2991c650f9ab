"""Same input, weights and device give bitwise-identical output, run after run.

Each run loads the model afresh; the image spans several chunks and several tiles per
chunk, so chunk order on the threaded scheduler, batching and blending are all exercised.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr

import napari_attnrestore as ar

KW = dict(chunks=128, tile=128)  # 3 x 3 chunks of 128, each read with its halo and restored as 2 x 2 tiles
SCRIPT = """
import sys, numpy as np, napari_attnrestore as ar
img = np.load(sys.argv[1])
np.save(sys.argv[2], ar.restore(img, task="denoise", chunks=128, tile=128, device="cpu").compute())
"""


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    rng = np.random.default_rng(21)
    yy, xx = np.mgrid[:300, :300]
    clean = 0.5 + 0.3 * np.sin(yy / 17.0) * np.cos(xx / 23.0)
    return (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)  # float32 output: no rounding hides a drift


@pytest.fixture(scope="module")
def first_run(noisy) -> np.ndarray:
    return ar.restore(noisy, task="denoise", device="cpu", **KW).compute()


def test_shipped_denoiser_is_bitwise_repeatable(noisy, first_run, tmp_path):
    assert first_run.dtype == np.float32 and np.isfinite(first_run).all()
    assert np.abs(first_run - noisy).mean() > 0.01  # it really denoised
    again = ar.restore(noisy, task="denoise", device="cpu", **KW).compute()  # a fresh model load
    np.testing.assert_array_equal(again, first_run)
    sync = ar.restore(noisy, task="denoise", device="cpu", **KW).compute(scheduler="sync")  # another chunk order
    np.testing.assert_array_equal(sync, first_run)
    dst = ar.restore_to_zarr(noisy, tmp_path / "o.zarr", task="denoise", device="cpu", pyramid=False, **KW)
    np.testing.assert_array_equal(zarr.open_array(f"{dst}/0")[:], first_run)


@pytest.mark.slow
def test_shipped_denoiser_same_in_another_process(noisy, first_run, tmp_path):
    np.save(tmp_path / "in.npy", noisy)
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "in.npy"), str(tmp_path / "out.npy")], check=True,
                   timeout=600)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), first_run)


def test_seeded_psal_inpainting_is_bitwise_repeatable(tmp_path):
    """PSAL's PatchMatch is stochastic: seeded in eval mode, two runs must still agree."""
    from napari_attnrestore.models import build_model
    from napari_attnrestore.training.checkpoint import save_checkpoint

    torch.manual_seed(3)
    net = build_model("psal", "inpaint", dims=[8, 16], mid_blocks=1, match_dim=4, iters=2).eval()
    ckpt = save_checkpoint(net, tmp_path / "psal.safetensors", task="inpaint", card={"name": "psal-seeded"})
    rng = np.random.default_rng(5)
    img = rng.random((100, 90)).astype(np.float32)
    mask = np.zeros(img.shape, np.uint8)
    mask[30:50, 40:80] = 1
    img[70:73, 10:80] = np.nan
    mask[70:73, 10:80] = 1  # (no data outside the mask stays no data)
    kw = dict(task="inpaint", model=str(ckpt), mask=mask, chunks=64, tile=32, device="cpu")
    a = ar.restore(img, **kw).compute()
    b = ar.restore(img, **kw).compute()  # loaded again from the checkpoint
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
