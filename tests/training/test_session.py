"""ar.train on the user's own data: self-supervised, paired, synthetic; the CLI front door."""

import numpy as np
import pytest
import tifffile
import torch

import napari_attnrestore as ar
from napari_attnrestore.cli import main
from napari_attnrestore.training.selfsupervised import blind_spot_mask, replace_with_neighbours

SMALL = {"dim": 16, "depths": [1], "heads": 2, "window": 8}


def _noisy(rng, n=2, size=96):
    clean = np.stack([np.kron(rng.random((size // 8, size // 8)), np.ones((8, 8))) for _ in range(n)])
    return (clean * 3000 + 500 + rng.normal(0, 150, clean.shape)).astype(np.uint16), clean


def test_blind_spot_hides_pixels_behind_neighbours():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    mask = blind_spot_mask(tuple(x.shape), 0.02, g)
    assert 0.01 < mask.float().mean() < 0.04
    y = replace_with_neighbours(x, mask, g)
    assert torch.equal(y[~mask], x[~mask])
    assert (y[mask] != x[mask]).all()  # a hidden pixel never sees its own value
    assert ((y[mask] - x[mask]).abs() <= 2 * 64 + 2).all()  # ... but a neighbour's


@pytest.mark.parametrize("mode", ["self-supervised", "synthetic", "paired"])
def test_train_modes_yield_events_and_a_model(rng, mode):
    noisy, clean = _noisy(rng)
    kw = {"clean": clean.astype(np.float32)} if mode == "paired" else {}
    events = list(ar.train(noisy, mode=mode, steps=4, batch=2, patch=32, config=SMALL, log_every=2, **kw))
    assert [e.step for e in events if not e.done] == [2, 4]
    model = events[-1].model
    assert events[-1].done and model is not None
    out = ar.restore(noisy[0], model=model).compute()
    assert out.shape == noisy[0].shape and out.dtype == np.uint16


def test_bad_training_requests(rng):
    noisy, _ = _noisy(rng)
    with pytest.raises(ValueError, match="self-supervised training is for denoising"):
        next(ar.train(noisy, task="sr", scale=2, mode="self-supervised"))
    with pytest.raises(ValueError, match="available for denoise and sr"):
        next(ar.train(noisy, task="inpaint"))
    with pytest.raises(ValueError, match="one clean image per input"):
        next(ar.train([noisy, noisy], clean=[noisy]))


def test_cli_self_supervised_train_then_restore(tmp_path, rng):
    noisy, _ = _noisy(rng, n=1, size=128)
    tifffile.imwrite(tmp_path / "noisy.tif", noisy[0])
    ckpt = tmp_path / "mine.safetensors"
    assert main(["train", "--task", "denoise", "--self-supervised", str(tmp_path / "noisy.tif"), "--out", str(ckpt),
                 "--steps", "3", "--batch", "2", "--patch", "32", "-q"]) == 0
    assert ckpt.exists() and ckpt.with_suffix(".json").exists()
    assert main(["restore", str(tmp_path / "noisy.tif"), str(tmp_path / "out.ome.zarr"), "--weights", str(ckpt), "-q"]) == 0
