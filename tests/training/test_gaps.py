"""Training on gapped images: gaps filled in the input as restoring fills them, never scored."""

import numpy as np
import pytest
import torch
from torch import nn

import napari_attnrestore as ar
from napari_attnrestore.engine.graph import fill_gaps
from napari_attnrestore.training import session
from napari_attnrestore.training.gaps import filled, known_loss
from napari_attnrestore.training.selfsupervised import (
    BlindSpotLoss,
    Neighbor2NeighborLoss,
    SureLoss,
    neighbour_choice,
    neighbour_subsample,
    patch_noise_sigma,
)

SMALL = {"dim": 16, "depths": [1], "heads": 2, "window": 8}


def _gapped(rng, size=32):
    y = torch.from_numpy(rng.random((2, 1, size, size)).astype(np.float32))
    y[0, :, 8:14, :] = float("nan")  # a stripe across the first patch
    y[1, :, :, 20:] = float("nan")  # the second's right side
    return y


def test_filled_is_what_restoring_feeds_the_network_and_leaves_gapless_batches_alone(rng):
    y = _gapped(rng)
    f = filled(y)
    bad = ~np.isfinite(y.numpy())
    np.testing.assert_array_equal(f.numpy(), fill_gaps(y.numpy(), bad))
    assert torch.isfinite(f).all() and torch.equal(f[~torch.from_numpy(bad)], y[~torch.from_numpy(bad)])
    clean = torch.rand(2, 1, 8, 8)
    assert filled(clean) is clean


def test_known_loss_scores_the_known_pixels_only():
    target = torch.rand(1, 1, 8, 8)
    target[..., :4] = float("nan")
    w = nn.Parameter(torch.tensor(1.0))
    loss = known_loss(nn.functional.l1_loss)(lambda x: x * w, torch.ones(1, 1, 8, 8), target)
    assert torch.isclose(loss, (1 - target[..., 4:]).abs().mean())
    loss.backward()
    assert torch.isfinite(w.grad)
    everything = torch.rand(1, 1, 8, 8)  # no gap: the plain criterion, exactly
    assert torch.equal(known_loss(nn.functional.l1_loss)(lambda x: x, everything * 0, everything),
                       nn.functional.l1_loss(everything * 0, everything))


def test_neighbor2neighbor_scores_the_pairs_whose_pixels_are_both_known(rng):
    y = _gapped(rng)
    choice = neighbour_choice(y, torch.Generator().manual_seed(0))
    # identity: the regularizer is 0 on known pairs, the loss their squared difference
    loss = Neighbor2NeighborLoss()(nn.Identity(), y, choice)
    g1, g2 = neighbour_subsample(y, choice)
    known = torch.isfinite(g1) & torch.isfinite(g2)
    assert torch.isclose(loss, (g1 - g2)[known].square().mean())


def test_self_supervised_losses_train_on_gapped_patches_with_finite_gradients(rng):
    y = _gapped(rng)
    net = ar.build_model("hat", "denoise", **SMALL)
    choice = neighbour_choice(y, torch.Generator().manual_seed(0))
    for loss_fn, target in ((Neighbor2NeighborLoss(), choice), (BlindSpotLoss(fraction=0.1), y),
                            (SureLoss(), patch_noise_sigma(y))):
        net.zero_grad()
        loss = loss_fn(net, y, target)
        loss.backward()
        assert torch.isfinite(loss), type(loss_fn).__name__
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None), type(loss_fn).__name__


def test_sure_on_gapped_patches_is_the_identity_risk_of_the_known_pixels(rng):
    y = torch.from_numpy(rng.random((2, 1, 128, 128)).astype(np.float32))
    y[:, :, :, 64:] = float("nan")  # half of each patch
    sigma = torch.tensor([0.1, 0.2]).reshape(2, 1, 1, 1)
    # identity: |f(y) - y|^2 = 0 and the divergence about the probed (known) pixel count: risk
    # about sigma^2 (counting the gap's pixels too it would be about 0)
    assert torch.isclose(SureLoss()(nn.Identity(), y, sigma), sigma.square().mean(), rtol=0.1)
    assert torch.isfinite(patch_noise_sigma(_gapped(rng))).all()  # the gap's cells are left out of the estimate


@pytest.mark.parametrize("task, mode", [("denoise", "synthetic"), ("sr", "synthetic"), ("denoise", "paired")])
def test_a_gap_is_filled_in_the_input_and_not_a_target(monkeypatch, rng, task, mode):
    """Read as 0, a nodata stripe was a black target the network learned; restoring fills it
    smoothly before the network and gives it back as nodata."""
    seen = {}

    def capture(net, sample, make_pair, cfg, **kw):
        seen.update(sample=sample, make_pair=make_pair, loss_fn=kw["loss_fn"])
        yield from ()

    monkeypatch.setattr(session, "fit", capture)
    img = (rng.random((64, 64)) * 3000 + 1000).astype(np.float32)
    img[:, 24:40] = -9999  # a gap across the whole image: every 48-px patch meets it
    clean = {"clean": img.copy()} if mode == "paired" else {}
    list(ar.train(img, task=task, mode=mode, nodata=-9999, steps=1, batch=4, patch=48, config=SMALL, **clean))
    batch = seen["sample"](4)
    gaps = ~torch.isfinite(batch[:, :1])
    assert gaps.any(dim=(1, 2, 3)).all()
    inp, target = seen["make_pair"](batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(inp).all()
    assert torch.equal(~torch.isfinite(target[:, :1]), gaps)  # not 0: not scored
    net = ar.build_model("hat", task, scale=2 if task == "sr" else None, **SMALL)
    loss = seen["loss_fn"](net, inp, target)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("method", ["neighbor2neighbor", "blind-spot", "sure"])
def test_self_supervised_training_on_a_gapped_file_keeps_its_gaps(rng, method):
    img = (rng.random((64, 64)) * 3000 + 1000).astype(np.float32)
    img[:, 24:40] = -9999
    events = list(ar.train(img, mode="self-supervised", method=method, nodata=-9999, steps=2, batch=2, patch=32,
                           log_every=1, config=SMALL))
    assert all(np.isfinite(ev.loss) for ev in events)
    out = ar.restore(img, model=events[-1].model, nodata=-9999).compute()
    assert (out[:, 24:40] == -9999).all() and np.isfinite(out).all()


def test_patches_that_are_mostly_gap_are_drawn_again(rng):
    """On a scene that is mostly nodata, 5 of 6 steps scored no pixel and reported a loss of
    0, while AdamW's momentum still moved the weights."""
    from napari_attnrestore.training.data import PatchSampler, planes_of

    img = rng.random((128, 128)).astype(np.float32)
    img[:, 32:] = np.nan  # 96 of 128 columns: most patches would hold no known pixel
    sampler = PatchSampler(planes_of(img, keep_gaps=True), 32, seed=0)
    batch = sampler.sample(32).numpy()
    known = np.isfinite(batch).mean(axis=(1, 2, 3))
    assert (known >= 1 / 8).all() and (known < 1).any()
    clean = PatchSampler(planes_of(rng.random((64, 64)).astype(np.float32)), 32, seed=1)
    state = clean.state()
    first = clean.sample(4)
    clean.set_state(state)
    assert torch.equal(clean.sample(4), first)  # an image without gaps: the draws as before
