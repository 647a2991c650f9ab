"""ar.train on the user's own data: self-supervised, paired, synthetic; the CLI front door."""

import numpy as np
import pytest
import tifffile
import torch

import napari_attnrestore as ar
from napari_attnrestore.cli import main
from napari_attnrestore.training.data import PatchSampler
from napari_attnrestore.training.selfsupervised import (
    Neighbor2NeighborLoss,
    blind_spot_mask,
    hide_known,
    hole_loss,
    neighbour_choice,
    neighbour_subsample,
    replace_with_neighbours,
)
from napari_attnrestore.training.session import train_to_end

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


def test_neighbour_subsample_takes_two_adjacent_pixels_per_cell():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32).repeat(2, 3, 1, 1)
    choice = neighbour_choice(x, g)
    assert choice.shape == (2, 1, 16, 16) and set(choice.unique().tolist()) == set(range(8))
    g1, g2 = neighbour_subsample(x, choice)
    assert g1.shape == g2.shape == (2, 3, 16, 16)
    step = (g2 - g1).abs()
    assert ((step == 1) | (step == 32)).all()  # horizontal or vertical neighbours, never the same pixel
    cell = (g1 // 32 // 2) * 16 + (g1 % 32) // 2  # both pixels lie in the output pixel's 2x2 cell
    assert torch.equal(cell, (g2 // 32 // 2) * 16 + (g2 % 32) // 2)
    assert torch.equal(cell[0, 0], torch.arange(256, dtype=torch.float32).reshape(16, 16))


def test_neighbor2neighbor_loss():
    g = torch.Generator().manual_seed(1)
    y = torch.rand(2, 1, 16, 16, generator=g)
    choice = neighbour_choice(y, g)
    g1, g2 = neighbour_subsample(y, choice)
    # identity network: the regularizer cancels, the loss is the neighbours' squared difference
    assert Neighbor2NeighborLoss()(torch.nn.Identity(), y, choice).item() == pytest.approx((g1 - g2).square().mean().item())
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    Neighbor2NeighborLoss(gamma=2.0)(conv, y, choice).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())


@pytest.mark.parametrize("method", ["neighbor2neighbor", "blind-spot", "sure"])
def test_self_supervised_denoising_learns_from_noisy_images_only(rng, method):
    torch.manual_seed(0)
    yy, xx = np.mgrid[0:96, 0:96] / 96
    clean = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (xx * (1.5 + i) + rng.random())) * np.cos(2 * np.pi * yy * (1 + i))
                      for i in range(2)]) * 3000 + 500
    noisy = (clean + rng.normal(0, 400, clean.shape)).astype(np.uint16)
    model = train_to_end(ar.train(noisy, mode="self-supervised", method=method, steps=60, batch=4, patch=32,
                                  config=SMALL, lr=2e-3, log_every=20))
    assert model.card["training"]["method"] == method
    out = ar.restore(noisy[0], model=model, dtype=np.float32).compute()
    assert np.abs(out - clean[0]).mean() < 0.9 * np.abs(noisy[0] - clean[0]).mean()


def test_self_supervised_method_is_checked(rng):
    noisy, _ = _noisy(rng)
    with pytest.raises(ValueError, match="unknown self-supervised denoising method"):
        next(ar.train(noisy, mode="self-supervised", method="noise2magic", steps=1))
    with pytest.raises(ValueError, match="even patch"):
        next(ar.train(noisy, mode="self-supervised", patch=33, steps=1))


@pytest.mark.parametrize("mode", ["self-supervised", "synthetic", "paired"])
def test_train_modes_yield_events_and_a_model(rng, mode):
    noisy, clean = _noisy(rng)
    kw = {"clean": (clean * 3000 + 500).astype(np.float32)} if mode == "paired" else {}  # in the noisy's units
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
    with pytest.raises(ValueError, match="demosaicing trains on colour pictures"):
        next(ar.train(noisy, task="demosaic"))  # gray planes
    with pytest.raises(ValueError, match="mosaicked to make the inputs"):
        next(ar.train(noisy, task="demosaic", clean=noisy))
    with pytest.raises(ValueError, match="for demosaicing, not denoise"):
        next(ar.train(noisy, cfa="RGGB"))
    with pytest.raises(ValueError, match="not paired"):
        next(ar.train(noisy, task="inpaint", clean=noisy))
    with pytest.raises(ValueError, match="one clean image per input"):
        next(ar.train([noisy, noisy], clean=[noisy]))


def test_cli_self_supervised_train_then_restore(tmp_path, rng, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or module)
    noisy, _ = _noisy(rng, n=1, size=128)
    tifffile.imwrite(tmp_path / "noisy.tif", noisy[0])
    ckpt = tmp_path / "mine.safetensors"
    assert main(["train", "--task", "denoise", "--self-supervised", str(tmp_path / "noisy.tif"), "--out", str(ckpt),
                 "--steps", "3", "--batch", "2", "--patch", "32", "-q"]) == 0
    assert ar.load_model(str(ckpt)).card["training"]["method"] == "neighbor2neighbor"
    blind = tmp_path / "blind.safetensors"
    assert not compiled
    assert main(["train", "--self-supervised", "--method", "blind-spot", str(tmp_path / "noisy.tif"), "--out", str(blind),
                 "--steps", "2", "--batch", "2", "--patch", "32", "--compile", "--precision", "bf16", "-q"]) == 0
    assert ar.load_model(str(blind)).card["training"]["method"] == "blind-spot" and len(compiled) == 1
    assert ar.load_model(str(blind)).card["training"]["precision"] == "bf16"
    assert ar.load_model(str(ckpt)).card["training"]["precision"] == "fp32"
    assert ckpt.exists() and ckpt.with_suffix(".json").exists()
    assert main(["restore", str(tmp_path / "noisy.tif"), str(tmp_path / "out.ome.zarr"), "--weights", str(ckpt), "-q"]) == 0
    (tmp_path / "notes.json").write_text("{}")  # an unrelated card-named file is not replaced either
    assert main(["train", "--self-supervised", str(tmp_path / "noisy.tif"), "--out", str(tmp_path / "notes.safetensors"),
                 "--steps", "1", "-q"]) == 2
    assert (tmp_path / "notes.json").read_text() == "{}"


def test_cli_training_that_diverges_is_one_line(tmp_path, rng, capsys, monkeypatch):
    from napari_attnrestore.training import loop

    monkeypatch.setitem(loop.LOSSES, "charbonnier", lambda out, target: (out - target).sum() * float("nan"))
    _, clean = _noisy(rng, n=1, size=64)
    tifffile.imwrite(tmp_path / "c.tif", clean[0].astype(np.float32))
    assert main(["train", "--mode", "synthetic", str(tmp_path / "c.tif"), "--out", str(tmp_path / "d.safetensors"),
                 "--steps", "2", "--batch", "1", "--patch", "32", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged at step 0" in err[0] and "lower learning rate" in err[0]


def test_hide_known_scores_only_hidden_known_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 48, 48)
    x[:, :, 10:14, :] = float("nan")  # the image's own gap: never scored, always a hole
    inp, target = hide_known(x, g)
    holes = inp[:, 1:] > 0.5
    assert holes[:, :, 10:14].all() and holes.float().mean() > holes[:, :, 10:14].float().sum() / holes.numel()
    assert torch.isfinite(inp).all() and (inp[:, :1][holes] == 0).all()
    assert torch.equal(inp[:, :1][~holes], x[~holes])

    class Echo(torch.nn.Module):  # predicts 0.5 everywhere
        def forward(self, t):
            return torch.full_like(t[:, :1], 0.5)

    loss = hole_loss(torch.nn.functional.l1_loss)(Echo(), inp, target)
    scored = holes & torch.isfinite(target)
    assert loss.item() == pytest.approx((target[scored] - 0.5).abs().mean().item(), rel=1e-5)


def test_cli_self_supervised_inpainting_on_a_gapped_image(tmp_path, rng):
    """Gaps marked by a nodata value; training hides known pixels; the model fills the gaps."""
    yy, xx = np.mgrid[0:128, 0:128]
    img = (1000 + 800 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.uint16)
    img[40:46, :] = 0
    tifffile.imwrite(tmp_path / "gapped.tif", img)
    ckpt = tmp_path / "fill.safetensors"
    assert main(["train", "--task", "inpaint", "--self-supervised", str(tmp_path / "gapped.tif"), "--nodata", "0",
                 "--out", str(ckpt), "--steps", "3", "--batch", "2", "--patch", "48", "-q"]) == 0
    assert ar.load_model(str(ckpt)).card["training"]["mode"] == "self-supervised"
    out = ar.restore(str(tmp_path / "gapped.tif"), task="inpaint", model=str(ckpt), nodata=0).compute()
    assert np.isfinite(out).all() and np.array_equal(out[:40], img[:40])


def test_cli_fine_tunes_a_demosaicer_on_colour_pictures(tmp_path):
    """Colour pictures are mosaicked (the camera's pattern only, with --cfa) and the three
    channels share one scale; the fine-tuned model demosaics through the engine."""
    from napari_attnrestore.tasks import demosaic as dm
    from napari_attnrestore.training.data import colour_pictures_of
    from napari_attnrestore.training.synthetic import dead_leaves

    pic = (np.moveaxis(dead_leaves(96, np.random.default_rng(0)), 0, -1) * 255).round().astype(np.uint8)
    rgb = pic / 255.0  # sharp colour edges, where bilinear and Malvar fail
    (plane,) = colour_pictures_of(pic)
    assert plane.shape == (3, 96, 96)
    np.testing.assert_allclose(plane[..., 10:20, 30:40], np.moveaxis(pic[10:20, 30:40], -1, 0) / 255, atol=1e-6)
    stack = colour_pictures_of(np.stack([pic, pic[::-1]]).astype(np.float32))
    assert len(stack) == 2 and stack[1].shape == (3, 96, 96)
    tczyx = np.moveaxis(np.stack([pic, pic[::-1]]), -1, 1)[:, :, None]  # (T, C, Z, Y, X), an OME layout
    by_axis = colour_pictures_of(tczyx, channel_axis=1)
    assert len(by_axis) == 2 and by_axis[1].shape == (3, 96, 96)
    np.testing.assert_allclose(by_axis[1][..., :, :], np.moveaxis(pic[::-1], -1, 0) / 255, atol=1e-6)
    tifffile.imwrite(tmp_path / "cyx.ome.tif", np.moveaxis(pic, -1, 0), metadata={"axes": "CYX"})
    assert next(ar.train(str(tmp_path / "cyx.ome.tif"), task="demosaic", steps=2, batch=2, patch=32, log_every=2,
                         config={"dim": 16, "depths": [1], "heads": 2, "window": 8})).step == 2
    tifffile.imwrite(tmp_path / "colour.tif", pic, photometric="rgb")
    ckpt = tmp_path / "dm.safetensors"
    assert main(["train", "--task", "demosaic", "--cfa", "BGGR", str(tmp_path / "colour.tif"), "--from",
                 "default:demosaic", "--out", str(ckpt), "--steps", "2", "--batch", "2", "--patch", "32", "--lr", "1e-5",
                 "-q"]) == 0
    card = ar.load_model(str(ckpt)).card
    assert card["task"] == "demosaic" and card["training"]["cfa"] == "BGGR" and card["training"]["mode"] == "synthetic"
    cfa = dm.mosaic(rgb.astype(np.float32), "BGGR")
    out = np.asarray(ar.restore(cfa, task="demosaic", model=str(ckpt), cfa="BGGR", normalize="none").compute())
    assert out.shape == (96, 96, 3)
    assert dm.demosaic_psnr(rgb, np.clip(out, 0, 1)) > dm.demosaic_psnr(rgb, dm.malvar_baseline(cfa, "BGGR")) + 0.5


def test_training_planes_share_the_image_scaling_the_engine_uses(rng):
    from napari_attnrestore.engine.plan import image_stats
    from napari_attnrestore.training.data import planes_of

    bleaching = np.stack([(rng.random((96, 96)) * 4000 / (1 + t)).astype(np.uint16) for t in range(4)])
    planes = planes_of(bleaching)
    lo, hi = image_stats(bleaching.shape, bleaching.dtype, lambda k: bleaching[k], 1, False)
    assert {(p.lo, p.hi) for p in planes} == {(lo[0], hi[0])}  # one scaling, as restore gives the stack
    rgb = (rng.random((40, 40, 3)) * [100, 1000, 10000]).astype(np.uint16)
    assert len({p.hi for p in planes_of(rgb)}) == 3  # one per colour, as the engine


def test_wide_integer_planes_keep_nodata_and_values_apart():
    from napari_attnrestore.training.data import planes_of

    # 2**24 and 2**24 + 1 are one float32 value: only the nodata pixel is a gap
    counts = np.full((8, 8), 2**24 + 1, np.uint32)
    counts[0, 0], counts[1] = 2**24, 2**24 + 9
    plane = planes_of(counts, nodata=2**24, keep_gaps=True)[0][(slice(None), slice(None))]
    assert np.isnan(plane).sum() == 1
    assert plane[1, 0] > plane[2, 0]  # 8 counts apart still tell apart


def test_paired_targets_are_scaled_like_their_inputs(rng, monkeypatch):
    from napari_attnrestore.training import session

    noisy, clean = _noisy(rng)
    seen = {}
    real = session.PairedPatchSampler

    def spy(pairs, *a, **k):
        seen["pairs"] = pairs
        return real(pairs, *a, **k)

    monkeypatch.setattr(session, "PairedPatchSampler", spy)
    next(ar.train(noisy, clean=clean * 3000 + 1000, steps=1, batch=1, patch=32, config=SMALL))
    for a, b in seen["pairs"]:  # inference maps the output back with the input's statistics
        assert (b.lo, b.hi) == (a.lo, a.hi)


@pytest.mark.parametrize("layout", ["tcyx", "yxc"])
def test_a_files_channels_are_scaled_one_by_one_as_restoring_does(tmp_path, rng, layout):
    """A dim and a bright channel each fill [0, 1], in training as in restoring (and a
    channel after Y, X is a channel, not a column)."""
    from napari_attnrestore.api import _prepare
    from napari_attnrestore.training.session import _planes

    dim, bright = rng.random((2, 48, 52)) * 60 + 100, rng.random((2, 48, 52)) * 9000 + 1000
    if layout == "tcyx":
        img = np.stack([dim, bright], axis=1).astype(np.uint16)  # (T, C, Y, X)
        tifffile.imwrite(tmp_path / "f.ome.tif", img, metadata={"axes": "TCYX"})
    else:
        img = np.stack([dim[0], bright[0]], axis=-1).astype(np.uint16)  # (Y, X, C): two bands, not RGB
        tifffile.imwrite(tmp_path / "f.ome.tif", img, photometric="minisblack", planarconfig="contig")
    planes = _planes([tmp_path / "f.ome.tif"])
    assert len(planes) == (4 if layout == "tcyx" else 2) and all(p.shape == (48, 52) for p in planes)
    plan = _prepare(str(tmp_path / "f.ome.tif"), "denoise", "default:denoise", None, None, None, None, None, "cpu",
                    "fp32", None, None, "auto", None)[3]
    scales = sorted({(round(p.lo, 3), round(p.hi, 3)) for p in planes})
    assert scales == sorted(zip(np.round(plan.norm.lo, 3), np.round(plan.norm.hi, 3), strict=True))


def test_a_file_nodata_value_marks_gaps_for_training(tmp_path, rng):
    from napari_attnrestore.training.session import _planes

    img = (rng.random((64, 64)) * 3000 + 1000).astype(np.uint16)
    img[::8] = 0  # scan-line gaps, declared by GDAL_NODATA
    tifffile.imwrite(tmp_path / "g.tif", img, extratags=[(42113, "s", 0, "0", True)])
    plane = _planes([tmp_path / "g.tif"], keep_gaps=True)[0]
    assert plane.nodata == 0 and np.isnan(plane[(slice(None), slice(None))][::8]).all()
    assert plane.lo > 500  # the gaps do not count in the scaling


@pytest.mark.parametrize("task", ["denoise", "sr"])
def test_a_nodata_value_is_left_out_of_the_scaling_for_every_task(monkeypatch, rng, task):
    """``nodata`` is not only for inpainting: a -9999 fill counted in the scaling would squeeze
    the land into a sliver of [0, 1], unlike restoring, which leaves it out."""
    from napari_attnrestore.training import session

    seen = []
    monkeypatch.setattr(session, "PatchSampler", lambda planes, *a, **k: seen.append(planes) or PatchSampler(planes, *a, **k))
    img = (rng.random((96, 96)) * 3000 + 1000).astype(np.float32)
    img[:, :24] = -9999
    train_to_end(ar.train(img, task=task, nodata=-9999, steps=1, batch=1, patch=32, config=SMALL))
    assert seen[0][0].lo > 500


def test_a_trained_model_can_be_trained_again(rng):
    noisy, _ = _noisy(rng)
    first = train_to_end(ar.train(noisy, steps=2, batch=1, patch=32, config=SMALL))
    assert all(p.requires_grad for p in first.parameters())
    again = train_to_end(ar.train(noisy, model=first, steps=2, batch=1, patch=32))
    assert again.card["training"]["init"] == "a HAT module" and "as a whole" in again.card["normalization"]
    tuned = train_to_end(ar.train(noisy, model="default:denoise", steps=1, batch=1, patch=32))
    assert tuned.card["training"]["init"] == ar.zoo.defaults()["denoise"]  # the card names its starting point


def test_training_refuses_what_it_cannot_learn(rng):
    imgs = (rng.random((48, 48)) * 255).astype(np.uint8)
    with pytest.raises(ValueError, match="super-resolution trains on high-resolution images"):
        next(ar.train(imgs, task="sr", clean=imgs, steps=1, patch=32))  # crashed in the loss
    with pytest.raises(ValueError, match="mode 'self-supervised' does not use them"):
        next(ar.train(imgs, mode="self-supervised", clean=imgs, steps=1, patch=32))
    sr4 = ar.build_model("hat", "sr", scale=4, **SMALL)
    with pytest.raises(ValueError, match="the model upscales x4; denoise needs a model that keeps the image size"):
        next(ar.train(imgs, task="denoise", model=sr4, steps=1, patch=32))
    with pytest.raises(ValueError, match="the model takes 1 input channels; inpaint feeds 2"):
        next(ar.train(imgs, task="inpaint", model=ar.build_model("hat", "denoise", **SMALL), steps=1, patch=32))
    events = list(ar.train(imgs, task="sr", model=sr4, steps=1, batch=1, patch=32))  # no scale: the model's x4
    assert events[-1].model is not None and events[-1].model.scale == 4


def test_options_that_do_not_apply_are_refused(rng):
    imgs = (rng.random((48, 48)) * 255).astype(np.uint8)
    cases = [
        (dict(mode="synthetic", method="sure"), "method 'sure' is for self-supervised denoising, not synthetic denoise"),
        (dict(task="inpaint", method="sure"), "method 'sure' is for self-supervised denoising, not self-supervised inpaint"),
        (dict(model="default:denoise", arch="hat"), "arch 'hat' builds a new network; the model given is trained as it is"),
        (dict(task="demosaic", nodata=0), "nodata marks gaps in gray images"),
        (dict(patch=0), "patch must be at least 8 pixels, got 0"),
        (dict(lr=1e8), "lr must be between 0 and 1, got 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            next(ar.train(imgs, steps=1, **kwargs))


def test_paired_training_leaves_nodata_out_of_the_scaling(monkeypatch, rng):
    from napari_attnrestore.training import session

    seen = []
    real = session.PairedPatchSampler
    monkeypatch.setattr(session, "PairedPatchSampler", lambda pairs, *a, **k: seen.append(pairs) or real(pairs, *a, **k))
    clean = (rng.random((64, 64)) * 3000 + 1000).astype(np.float32)
    noisy = clean + rng.normal(0, 100, clean.shape).astype(np.float32)
    clean[:, :16] = noisy[:, :16] = -9999
    train_to_end(ar.train(noisy, clean=clean, nodata=-9999, steps=1, batch=1, patch=32, config=SMALL))
    assert seen[0][0][0].lo > 500 and seen[0][0][1].lo == seen[0][0][0].lo


def test_a_demosaicer_trained_on_one_pattern_restores_that_pattern_by_default(rng, tmp_path):
    pic = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    dm = train_to_end(ar.train(pic, task="demosaic", cfa="GRBG", steps=1, batch=1, patch=32, config=SMALL))
    ar.save_model(dm, tmp_path / "dm.safetensors", task="demosaic")
    from napari_attnrestore.api import _prepare

    plan = _prepare(pic[..., 1], "demosaic", str(tmp_path / "dm.safetensors"), None, None, None, None, None, "cpu",
                    "fp32", None, None, "auto", None)[3]
    assert plan.cfa == "GRBG"


def test_synthetic_inpainting_keeps_the_images_own_gaps_unscored(rng, monkeypatch):
    from napari_attnrestore.training import session

    seen = []

    def spy(x, gen, **kw):
        out = hide_known(x, gen, **kw)
        seen.append(out)
        return out

    monkeypatch.setattr(session, "hide_known", spy)
    img = rng.random((64, 64)).astype(np.float32)
    img[:, 24:40] = np.nan  # a gap band the synthetic masks come on top of
    train_to_end(ar.train(img, task="inpaint", mode="synthetic", steps=2, batch=2, patch=32, **{"config": SMALL}))
    inp, target = seen[0]
    gaps = ~torch.isfinite(target)
    assert gaps.any() and bool((inp[:, -1:][gaps] > 0.5).all())  # marked holes, never scored as 0-valued truth


def test_cli_refuses_contradicting_training_modes(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((40, 40), np.uint8))
    base = ["train", str(tmp_path / "a.tif"), "--out", str(tmp_path / "m.safetensors"), "--steps", "1"]
    assert main([*base, "--self-supervised", "--clean", str(tmp_path / "a.tif")]) == 2
    assert "--self-supervised trains without clean images" in capsys.readouterr().err
    assert main([*base, "--mode", "synthetic", "--clean", str(tmp_path / "a.tif")]) == 2
    assert "--mode synthetic contradicts --clean" in capsys.readouterr().err


def test_interrupted_training_says_how_to_continue(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ar, "train", interrupted)
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((40, 40), np.uint8))
    args = ["train", str(tmp_path / "a.tif"), "--out", str(tmp_path / "m.safetensors")]
    assert main([*args, "--state", str(tmp_path / "s.pt")]) == 130  # before the first step: no state yet
    assert "interrupted; no training step had run; nothing was saved" in capsys.readouterr().err
    (tmp_path / "s.pt").write_bytes(b"a state")
    assert main([*args, "--state", str(tmp_path / "s.pt")]) == 130
    assert f"the training state is saved in {tmp_path / 's.pt'}" in capsys.readouterr().err
    assert main(args) == 130 and "pass --state FILE" in capsys.readouterr().err


def test_sigterm_saves_the_training_state_at_the_step_reached(rng, tmp_path, capsys, monkeypatch):
    """SIGTERM (kill, a batch system's time limit) ended training silently, losing the steps
    since the last periodic save (every max(50, steps // 10)); it now saves as Ctrl-C does."""
    import os
    import signal

    real = ar.train

    def terminated_at_step_3(*args, **kwargs):
        events = real(*args, **kwargs)
        try:
            for ev in events:
                yield ev
                if ev.step == 3:
                    os.kill(os.getpid(), signal.SIGTERM)
        finally:
            events.close()

    monkeypatch.setattr(ar, "train", terminated_at_step_3)
    noisy, _ = _noisy(rng, n=1, size=64)
    tifffile.imwrite(tmp_path / "a.tif", noisy[0])
    before = signal.getsignal(signal.SIGTERM)
    assert main(["train", str(tmp_path / "a.tif"), "--out", str(tmp_path / "m.safetensors"), "--state",
                 str(tmp_path / "s.pt"), "--steps", "1000", "--batch", "1", "--patch", "32", "-q"]) == 143
    assert "attnrestore: terminated; the training state is saved in" in capsys.readouterr().err
    assert torch.load(tmp_path / "s.pt", weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.setattr(ar, "train", real)  # the same command goes on, and says from where (it said nothing)
    assert main(["train", str(tmp_path / "a.tif"), "--out", str(tmp_path / "m.safetensors"), "--state",
                 str(tmp_path / "s.pt"), "--steps", "5", "--batch", "1", "--patch", "32"]) == 0
    assert f"continuing {tmp_path / 's.pt'} from step 3 of 5" in capsys.readouterr().err


def test_a_training_state_is_not_resumed_with_another_objective(rng, tmp_path):
    from napari_attnrestore.training import CheckpointError

    noisy, _ = _noisy(rng, n=1, size=64)
    kw = dict(steps=2, batch=2, patch=32, config=SMALL, state_path=tmp_path / "s.pt")
    train_to_end(ar.train(noisy, method="neighbor2neighbor", **kw))
    with pytest.raises(CheckpointError, match="is for denoise:self-supervised:neighbor2neighbor, not "
                                              "denoise:self-supervised:blind-spot"):
        train_to_end(ar.train(noisy, method="blind-spot", **{**kw, "steps": 4}))


def test_the_training_state_place_is_checked_before_the_first_step(rng, tmp_path, monkeypatch):
    from napari_attnrestore.training import session

    monkeypatch.setattr(session, "fit", lambda *a, **k: pytest.fail("trained before the state's place was checked"))
    (tmp_path / "notes.txt").write_text("hello")
    noisy, _ = _noisy(rng, n=1, size=64)
    with pytest.raises(ValueError, match=r"notes\.txt is a file, not a folder"):
        next(ar.train(noisy, steps=1, patch=32, state_path=tmp_path / "notes.txt" / "s.pt"))
    (tmp_path / "s.pt").mkdir()
    with pytest.raises(ValueError, match=r"s\.pt: is a folder"):
        next(ar.train(noisy, steps=1, patch=32, state_path=tmp_path / "s.pt"))


def test_a_training_state_loads_as_its_ema_model(rng, tmp_path):
    """A state passed as weights said it needed spandrel; it is our own file, with the EMA weights in it."""
    noisy, _ = _noisy(rng, n=1, size=64)
    state = tmp_path / "s5.pt"
    trained = train_to_end(ar.train(noisy, steps=2, batch=1, patch=32, config=SMALL, state_path=state, nodata=np.nan))
    loaded = ar.load_model(state)
    assert loaded.card["task"] == "denoise" and loaded.card["training"]["steps"] == 2
    for (k, a), b in zip(trained.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b), k
    with pytest.raises(ar.training.CheckpointError, match="for task 'denoise', not 'inpaint'"):
        ar.load_model(state, task="inpaint")
    tuned = train_to_end(ar.train(noisy, model=str(state), steps=1, batch=1, patch=32))  # train --from s5.pt
    assert tuned.card["training"]["init"] == "s5"
    out = ar.restore(noisy[0], model=str(state)).compute()  # restore --weights s5.pt
    assert out.shape == noisy[0].shape


def test_a_training_state_that_does_not_describe_its_network_is_refused_in_words(rng, tmp_path):
    from napari_attnrestore.training.loop import TrainConfig, fit

    net = ar.build_model("hat", "denoise", **SMALL)
    state = tmp_path / "old.pt"
    list(fit(net, lambda n: torch.rand(n, 1, 32, 32), lambda x, g: (x, x), TrainConfig(steps=1, batch=1),
             state_path=state))  # as states were written before they named their network
    with pytest.raises(ar.training.CheckpointError, match=r"old\.pt is a training state of attnrestore train; rerun "
                                                          r"the same train command to write a \.safetensors"):
        ar.load_model(state)


def test_a_model_card_given_as_weights_loads_the_weights_next_to_it(tiny_checkpoint, tmp_path):
    from napari_attnrestore.training import CheckpointError

    m = ar.load_model(tiny_checkpoint.with_suffix(".json"))
    assert m.card["name"] == "tiny"
    (tmp_path / "lone.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"lone\.json: a model card, not weights; its weights lone\.safetensors"):
        ar.load_model(tmp_path / "lone.json")


def _weights(model):
    return [t.detach().cpu().clone() for t in model.state_dict().values()]


@pytest.mark.parametrize("start", ["fresh", "acla"])
def test_the_same_call_trains_the_same_weights(rng, start):
    """The seed seeded the patches but not the new network's weights nor ACLA's Gumbel draws."""
    noisy, _ = _noisy(rng, n=1, size=64)

    def once(seed, before):
        torch.manual_seed(before)  # whatever the global generator held before
        kw = dict(config=SMALL) if start == "fresh" else dict(model="denoise-acla-tiny")
        return _weights(train_to_end(ar.train(noisy, steps=2, batch=1, patch=32, seed=seed, **kw)))

    a, a_again, b = once(1, before=100), once(1, before=200), once(2, before=100)
    assert all(torch.equal(x, y) for x, y in zip(a, a_again, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_an_interrupted_acla_fine_tune_resumes_to_the_same_weights(rng, tmp_path):
    noisy, _ = _noisy(rng, n=1, size=64)
    kw = dict(model="denoise-acla-tiny", steps=4, batch=1, patch=32, seed=3, log_every=1)
    whole = _weights(train_to_end(ar.train(noisy, **kw)))
    state = tmp_path / "s.pt"
    events = ar.train(noisy, state_path=state, **kw)
    for ev in events:
        if ev.step == 2:
            break
    events.close()  # interrupted: the state is saved at step 2
    torch.manual_seed(12345)  # another process's global generator
    resumed = _weights(train_to_end(ar.train(noisy, state_path=state, **kw)))
    assert all(torch.equal(x, y) for x, y in zip(whole, resumed, strict=True))


def test_training_errors_name_the_files(tmp_path):
    noisy = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "small.tif", noisy[:20, :20])
    tifffile.imwrite(tmp_path / "allnan.tif", np.full((40, 40), np.nan, np.float32))
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([noisy] * 3))
    tifffile.imwrite(tmp_path / "gray.tif", noisy)
    with pytest.raises(ValueError, match=r"no training image is at least 32x32 pixels \(.*small.tif \(20, 20\)\)"):
        next(ar.train(str(tmp_path / "small.tif"), patch=32))
    with pytest.raises(ValueError, match=r"allnan\.tif: a training image has no finite pixels"):
        next(ar.train(str(tmp_path / "allnan.tif"), patch=32))
    with pytest.raises(ValueError, match=r"gray.tif: demosaicing trains on colour pictures .* got shape \(64, 64\)"):
        next(ar.train(str(tmp_path / "gray.tif"), task="demosaic", patch=32))
    with pytest.raises(ValueError, match=r"paired images have a different number of planes: .*stack.tif has 3, its "
                                         r"clean counterpart .*gray.tif has 1"):
        next(ar.train(str(tmp_path / "stack.tif"), clean=str(tmp_path / "gray.tif"), patch=32))
    with pytest.warns(UserWarning, match=r"left out \(training image 2 \(8, 8\)\)"):
        next(ar.train([noisy, noisy[:8, :8]], patch=32, steps=1, batch=1, config=SMALL))


def test_the_card_records_batch_and_seed(rng):
    noisy, _ = _noisy(rng, n=1, size=64)
    card = train_to_end(ar.train(noisy, steps=1, batch=2, patch=32, seed=7, config=SMALL)).card
    assert card["training"]["batch"] == 2 and card["training"]["seed"] == 7


def test_a_tile_dependent_network_trained_here_names_its_tile_in_memory_and_in_its_state(rng, tmp_path):
    """A CSAttn network fresh from ar.train ran on 256-px tiles, and on 32-px ones once saved."""
    noisy, _ = _noisy(rng, n=1, size=64)
    state = tmp_path / "c.pt"
    small = {"dim": 8, "depths": [1, 1, 1], "heads": [1, 1, 1]}
    net = train_to_end(ar.train(noisy, arch="csattn", steps=1, batch=1, patch=32, config=small, state_path=state))
    assert net.card["tile"] == 32 and ar.load_model(state).card["tile"] == 32
    hat = train_to_end(ar.train(noisy, steps=1, batch=1, patch=32, config=SMALL))
    assert "tile" not in hat.card


def test_the_docstring_names_the_default_self_supervised_method():
    doc = " ".join(ar.train.__doc__.split())
    assert "blind-spot training on noisy images" not in doc and "neighbor2neighbor unless told" in doc


def test_a_module_of_ones_own_without_channels_or_scale_trains(rng, tmp_path):
    """A user's own network may leave ``scale``/``in_channels`` as None ("any"): training
    crashed on int(None) while recording what the state holds."""

    class Own(torch.nn.Module):
        scale, in_channels, out_channels = None, None, None

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    noisy, _ = _noisy(rng, n=1, size=64)
    model = train_to_end(ar.train(noisy, model=Own(), steps=2, batch=1, patch=32, state_path=tmp_path / "s.pt"))
    assert isinstance(model, Own) and (tmp_path / "s.pt").exists()


def test_a_state_is_not_resumed_on_other_images_or_settings(rng, tmp_path):
    """A finished state reused for other images trained nothing and wrote the old model with a
    card naming the new images; an unfinished one took other batch/patch/lr silently."""
    from napari_attnrestore.training import CheckpointError

    noisy, _ = _noisy(rng, n=2, size=64)
    kw = dict(steps=2, batch=2, patch=32, config=SMALL, state_path=tmp_path / "s.pt")
    train_to_end(ar.train(noisy[0], **kw))
    with pytest.raises(CheckpointError, match=r"trained with other inputs: batch 2 \(now 4\)"):
        next(ar.train(noisy[0], **{**kw, "batch": 4, "steps": 4}))
    with pytest.raises(CheckpointError, match=r"images array \(64, 64\) uint16 sample:\w+ \(now array \(2, 64, 64\)"):
        next(ar.train(noisy, **{**kw, "steps": 4}))
    with pytest.raises(CheckpointError, match="trained with other inputs: images"):  # same shape, other pixels
        next(ar.train(noisy[1], **{**kw, "steps": 4}))
    # resumed in the state's random stream, from its weights: a new seed, start or arithmetic would
    # not apply, and the card said it had
    with pytest.raises(CheckpointError, match=r"trained with other inputs: precision fp32 \(now bf16\); seed 0 \(now 7\)"):
        next(ar.train(noisy[0], **{**kw, "steps": 4, "seed": 7, "precision": "bf16"}))
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    for key in ("seed", "init", "precision"):  # a state of an earlier version records none of them
        del state["inputs"][key]
    torch.save(state, tmp_path / "old.pt")
    assert [e.step for e in ar.train(noisy[0], **{**kw, "steps": 3, "state_path": tmp_path / "old.pt"})
            if not e.done] == [3]
    with pytest.raises(ValueError, match="nodata must be a number, not 'x'"):
        next(ar.train(noisy[0], **{**kw, "nodata": "x"}))
    with pytest.warns(UserWarning, match="already at step 2 of 2: nothing more to train"):
        assert train_to_end(ar.train(noisy[0], **kw)) is not None
    assert [e.step for e in ar.train(noisy[0], **{**kw, "steps": 4}) if not e.done] == [4]  # extended


def test_breaking_out_keeps_the_model_so_far_and_the_given_module(rng):
    """Breaking out of ar.train left no model (event.model was None until the end), and a
    module given to train was changed in place."""
    noisy, _ = _noisy(rng, n=1, size=64)
    start = ar.build_model("hat", task="denoise", **SMALL)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    for ev in ar.train(noisy, model=start, steps=50, batch=2, patch=32, log_every=1):
        if ev.step == 3:
            break
    assert ev.model is None
    model = ev.current_model()
    assert model is not start and not model.training
    assert model.card["training"]["steps"] == 3 and model.card["training"]["stopped_early"]
    assert model.card["training"]["planned_steps"] == 50
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    out = ar.restore(noisy[0], model=model).compute()
    assert out.shape == noisy[0].shape


def test_inputs_that_teach_nothing_are_refused_or_warned(rng, tmp_path):
    noisy, clean = _noisy(rng, n=1, size=64)
    with pytest.raises(ValueError, match=r"training image 1: every pixel holds the same value \(500\)"):
        next(ar.train(np.full((64, 64), 500, np.uint16), steps=1, patch=32))
    tifffile.imwrite(tmp_path / "n.tif", noisy[0])
    with pytest.raises(ValueError, match=r"n\.tif is given as its own clean counterpart"):
        next(ar.train(str(tmp_path / "n.tif"), clean=str(tmp_path / "n.tif"), steps=1, patch=32))
    with pytest.warns(UserWarning, match="clean image 1 .* is not in the intensity units of training image 1"):
        next(ar.train(noisy, clean=clean.astype(np.float32), steps=1, patch=32, config=SMALL))
    with pytest.raises(ValueError, match="nodata -9999 cannot occur in this uint16 image"):
        next(ar.train(noisy, task="inpaint", nodata=-9999, steps=1, patch=32))
    with pytest.warns(UserWarning, match="nothing marks gaps in this uint16 image"):
        next(ar.train(noisy, task="inpaint", steps=1, batch=1, patch=32, arch="psal"))


@pytest.mark.parametrize(("kw", "error", "said"), [
    ({"steps": 2.5}, TypeError, "steps must be a whole number, not 2.5"),
    ({"log_every": 0}, ValueError, "log_every must be at least 1"),
    ({"seed": None}, TypeError, "seed must be a whole number"),
    ({"mode": "synthetic", "sigma": (50, 10)}, ValueError, "0 <= low <= high <= 255"),
    ({"sigma": (5, 10)}, ValueError, "sigma .* is for synthetic denoising, not self-supervised denoise"),
])
def test_train_arguments_are_checked(rng, kw, error, said):
    noisy, _ = _noisy(rng, n=1, size=64)
    with pytest.raises(error, match=said):
        next(ar.train(noisy, **{"patch": 32, **kw}))
    with pytest.raises(ValueError, match="complex pixels"):
        next(ar.train(noisy.astype(np.complex64), patch=32))


def test_training_leaves_the_callers_random_stream_alone(rng):
    """ar.train reseeded torch's global generator: the caller's draws after training were the
    same whatever the caller had seeded."""
    stack = rng.random((2, 48, 48)).astype(np.float32)
    afters = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        for _ in ar.train(stack, arch="acla", steps=2, batch=2, patch=32, log_every=1, device="cpu"):
            pass
        afters.append(torch.rand(3))
        torch.manual_seed(seed)
        assert torch.equal(afters[-1], torch.rand(3))  # the caller's stream, as if nothing had drawn from it
    assert not torch.equal(*afters)


def test_a_paused_training_holds_its_state_file(tmp_path, rng):
    """A training left paused (a notebook's generator after break) later saved its step-2
    state over the step-4 state a second run had finished, when it was collected."""
    stack = rng.random((2, 48, 48)).astype(np.float32)
    kw = dict(arch="acla", batch=2, patch=32, log_every=1, device="cpu", state_path=tmp_path / "s.pt")
    paused = ar.train(stack, steps=4, **kw)
    next(paused)
    with pytest.raises(ValueError, match="another training of this process is using this state file"):
        next(ar.train(stack, steps=4, **kw))
    paused.close()  # its state saved, the file free again
    assert train_to_end(ar.train(stack, steps=4, **kw)) is not None
    del paused
    assert torch.load(tmp_path / "s.pt", weights_only=True)["step"] == 4


def test_an_arrays_channels_are_scaled_each_on_its_own_when_named(rng):
    """The Train widget's channel layer (c, y, x) was scaled as one range: a dim channel beside
    a bright one was learned at a hundredth of the range it is restored at."""
    from napari_attnrestore.training import session

    x = np.stack([rng.random((48, 48)) * 3000 + 500, rng.random((48, 48)) * 30 + 5]).astype(np.uint16)
    together = session._planes([x])
    apart = session._planes([x], channel_axis=0)
    assert together[0].hi == together[1].hi
    assert apart[1].hi < 40 < 500 < apart[0].hi
    assert train_to_end(ar.train(x, arch="acla", steps=2, batch=2, patch=32, device="cpu", channel_axis=0)) is not None


def test_a_band_stack_files_stored_axis_holds_channels_when_named(tmp_path, rng):
    """A band stack stored as pages reads as time, one range for both bands; restore took
    --channel-axis for it, train did not, so the dim band was learned at a hundredth of the
    range it is restored at."""
    from napari_attnrestore.training import session

    bands = np.stack([rng.random((48, 48)) * 3000 + 500, rng.random((48, 48)) * 30 + 5]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "bands.tif", bands)
    path = str(tmp_path / "bands.tif")
    together, apart = session._planes([path]), session._planes([path], channel_axis=0)
    assert together[0].hi == together[1].hi
    assert apart[1].hi < 40 < 500 < apart[0].hi
    with pytest.raises(ValueError, match=r"bands\.tif: channel_axis 2 is its X axis"):
        session._planes([path], channel_axis=2)
    with pytest.raises(ValueError, match=r"bands\.tif: channel_axis 3 is out of range for its 3 axes"):
        session._planes([path], channel_axis=3)
    assert main(["train", path, "--channel-axis", "0", "--out", str(tmp_path / "m.safetensors"), "--steps", "1",
                 "--batch", "1", "--patch", "32", "-q"]) == 0


def test_a_saved_model_loads_back_as_it_was_trained(tmp_path, rng):
    """save_model stored float16 without saying so: a fine-tuning's small steps were rounded
    away (17% of the update), and the restored pixels differed."""
    from safetensors import safe_open

    noisy, _ = _noisy(rng)
    model = train_to_end(ar.train(noisy, steps=2, batch=1, patch=32, config=SMALL))
    path = ar.save_model(model, tmp_path / "mine.safetensors", task="denoise")
    with safe_open(str(path), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    again = ar.load_model(str(path))
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b), name
    small = ar.save_model(model, tmp_path / "small.safetensors", task="denoise", half=True)
    with safe_open(str(small), "pt") as f:
        assert torch.float16 in {f.get_tensor(k).dtype for k in f.keys()}
    assert small.stat().st_size < 0.6 * path.stat().st_size


def test_a_state_file_another_process_trains_with_is_refused(tmp_path, rng):
    """Two trainings given one --state in two processes each saved over the other's, and both
    were told that the same command continues them."""
    import os
    import socket

    import psutil

    noisy, _ = _noisy(rng)
    host = socket.gethostname()  # (as a lock records its machine, and a zarr output's owner)
    state = tmp_path / "s.pt"
    lock = tmp_path / "s.pt.lock"
    parent = os.getppid()
    lock.write_text(f"{host} {parent} {psutil.Process(parent).create_time()}\n")  # a live training holds it
    with pytest.raises(ValueError, match=rf"s\.pt: another training \(process {parent} on this machine\)"):
        next(ar.train(noisy, steps=2, batch=1, patch=32, config=SMALL, state_path=state))
    # taken over: a pid that names another process now (the holder was killed), a lock another
    # machine left (a batch job requeued on another node)
    for left in (f"{host} {parent} 12.0", "othernode 123 45.0"):
        lock.write_text(left + "\n")
        assert train_to_end(ar.train(noisy, steps=2, batch=1, patch=32, config=SMALL, state_path=state)) is not None
        assert state.exists() and not lock.exists()  # freed at the end
