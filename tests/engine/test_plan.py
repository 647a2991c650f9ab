"""Planning: the windows that give an image's global intensity statistics."""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pytest
import torch

from napari_attnrestore.engine.plan import image_stats, stats_windows


def _disc(size: int = 1024, inside: float = 3000.0) -> np.ndarray:
    """A specimen in the middle of the field, dark background around it."""
    yy, xx = np.mgrid[:size, :size]
    plane = np.full((size, size), 100.0)
    plane[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 < (size * 0.3) ** 2] = inside
    return plane.astype(np.uint16)


def test_a_stack_is_scaled_like_its_planes_when_the_specimen_is_central():
    """Every plane of a stack sampled at the same four corners saw only background: a plane
    in a 4-plane stack was scaled to 5x the range it has alone."""
    plane = _disc()
    stack = np.stack([plane] * 4)
    alone = image_stats(plane.shape, plane.dtype, lambda k: plane[k], 0, False)
    assert alone == ((100.0,), (3000.0,))
    assert image_stats(stack.shape, stack.dtype, lambda k: stack[k], 1, False) == alone
    keys = stats_windows(stack.shape, 1, False)
    assert len({(k[1].start, k[2].start) for k in keys}) == 16 and {k[0] for k in keys} == {0, 1, 2, 3}


def test_every_channel_gets_windows_over_the_field():
    """A channel that no sampled plane fell on got one window, at the corner (0, 0)."""
    x = np.broadcast_to(_disc(), (2, 3, 2, 1024, 1024))  # t c z y x
    keys = stats_windows(x.shape, 3, False, channel_axis=1)
    assert [sum(k[1] == c for k in keys) for c in range(3)] == [5, 5, 5]
    lo, hi = image_stats(x.shape, x.dtype, lambda k: np.asarray(x[k]), 3, False, channel_axis=1)
    assert lo == (100.0,) * 3 and hi == pytest.approx((3000.0,) * 3, rel=0.05)


@pytest.mark.parametrize("side", [96, 256, 257])
def test_a_stack_of_small_planes_is_sampled_on_many_planes(side):
    """Planes of 256 x 256 or less got one window, on plane 0: a time-lapse with a dim (or
    empty) first frame was scaled by it, and restored worse than its noisy input."""
    keys = stats_windows((20, side, side), 1, False)
    assert len(keys) == 16 and len({k[0] for k in keys}) == 16
    assert len(stats_windows((3, side, side), 1, False)) == (3 if side <= 256 else 12)
    movie = np.stack([np.full((side, side), 10.0 if t == 0 else 1000.0 + t) for t in range(20)]).astype(np.float32)
    movie[1:, : side // 2] = 3000.0
    movie += np.random.default_rng(0).normal(0, 1, movie.shape).astype(np.float32)  # measured: noisy
    lo, hi = image_stats(movie.shape, movie.dtype, lambda k: movie[k], 1, False)
    assert 5 < lo[0] < 10 and hi[0] >= 2999  # all the frames, not the first one alone
    movie[0] = np.nan  # an empty first frame: the scaling comes from the others
    lo, hi = image_stats(movie.shape, movie.dtype, lambda k: movie[k], 1, False)
    assert lo[0] > 900 and hi[0] >= 2999


def test_a_strip_uses_all_its_windows():
    keys = stats_windows((100, 5000), 0, False)
    assert len({k[1].start for k in keys}) == 16 and all(k[0] == slice(0, 100) for k in keys)


class _WideContext(torch.nn.Module):
    """A 3x3 box filter that asks for the default denoiser's context (112 px, multiple 2)
    and counts the pixels it is given."""

    in_channels, out_channels, scale, multiple_of, halo = 1, 1, 1, 2, 112
    seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).seen += x.shape[0] * x.shape[-2] * x.shape[-1]
        return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)


@pytest.mark.parametrize("tile", [96, 64, 8])
def test_small_tiles_overlap_by_half_a_tile_at_most(tile):
    """The tile overlap was clamped to tile - 2 only: a 96-px tile stepped by 2 px and the
    network saw the image 2700 times over; the chunks' halo stays the model's context."""
    import napari_attnrestore as ar
    from napari_attnrestore.engine.plan import tile_overlap

    assert tile_overlap(112, tile, 2) == min(112, tile // 2)
    img = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    net = _WideContext()
    _WideContext.seen = 0
    out = ar.restore(img, model=net, tile=tile, chunks=256, normalize="none", device="cpu").compute()
    region = (256 + 2 * 112) ** 2  # one chunk and its halo
    assert _WideContext.seen < 5 * region  # tiles stepped by half a tile cover it about 4 times
    whole = ar.restore(img, model=net, tile=512, chunks=128, normalize="none", device="cpu").compute()
    np.testing.assert_allclose(out, whole, atol=1e-6)  # exact across tile and chunk borders


@pytest.mark.parametrize("side", [600, 1024, 3000, 8000])
def test_the_centre_of_the_field_is_sampled(side):
    """The 4 x 4 grid of windows had no centre cell: a specimen in the middle of a large dark
    field was never sampled, and its restore came out worse than the noisy input."""
    keys = stats_windows((side, side), 0, False)
    assert len(keys) == 16
    assert any(k[0].start <= side // 2 < k[0].stop and k[1].start <= side // 2 < k[1].stop for k in keys)
    plane = _disc(side, 3000.0)
    assert image_stats(plane.shape, plane.dtype, lambda k: plane[k], 0, False)[1][0] == 3000.0


def test_planes_far_apart_in_range_warn_and_a_fading_series_does_not():


    rng = np.random.default_rng(0)
    bands = np.stack([rng.uniform(100, 300, (64, 64)), rng.uniform(20000, 40000, (64, 64))])
    with pytest.warns(UserWarning, match=r"differ \d+-fold in intensity range \(plane 0: .*; plane 1: .*channel_axis="):
        image_stats(bands.shape, np.dtype(np.uint16), bands.__getitem__, 1, False)
    fading = np.stack([rng.uniform(100, 100 + 3000 * 0.7**t, (64, 64)) for t in range(6)])  # bleaching: 6x
    stack = rng.normal(100, 5, (5, 64, 64))  # a z-stack: the specimen in the middle plane, background around
    stack[2, 16:48, 16:48] += 3000
    frame = rng.uniform(1000, 4000, (2048, 2048))  # identical frames, a background strip on the left: their
    frame[:, :300] = rng.normal(100, 2, (2048, 300))  # statistics windows lie at other places in each frame
    frames = np.broadcast_to(frame, (16, 2048, 2048))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image_stats(fading.shape, np.dtype(np.uint16), fading.__getitem__, 1, False)
        image_stats(stack.shape, np.dtype(np.uint16), stack.__getitem__, 1, False)
        image_stats(frames.shape, np.dtype(np.uint16), frames.__getitem__, 1, False)
        image_stats(bands.shape, np.dtype(np.uint16), bands.__getitem__, 1, False, channel_axis=0)  # each its own


def test_a_range_the_data_fill_a_sliver_of_is_warned_about(tiny_checkpoint):
    """From a quantitative review: normalize='dtype' scaled 12-bit data stored as uint16 by
    [0, 65535] and the denoiser took their spots for noise (93% of their intensity lost), and
    'none' took ADU for [0, 1]; neither said a word, and the range warning even advised 'dtype'."""
    import napari_attnrestore as ar

    rng = np.random.default_rng(0)
    twelve_bit = rng.integers(100, 4096, (48, 48)).astype(np.uint16)
    with pytest.warns(ar.AttnRestoreWarning, match=r"span .* of the range normalize='dtype' scales by \(\[0, 65535\]\)"):
        ar.restore(twelve_bit, model=str(tiny_checkpoint), normalize="dtype")
    with pytest.warns(ar.AttnRestoreWarning, match=r"far outside \[0, 1\], which normalize='none' takes them to be in"):
        ar.restore(twelve_bit, model=str(tiny_checkpoint), normalize="none")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ar.AttnRestoreWarning)
        ar.restore(twelve_bit, model=str(tiny_checkpoint))  # its own range
        ar.restore(twelve_bit * 16, model=str(tiny_checkpoint), normalize="dtype")  # fills uint16
        ar.restore(rng.integers(0, 20, (48, 48)).astype(np.uint8), model=str(tiny_checkpoint), normalize="dtype")
        ar.restore(rng.random((48, 48)).astype(np.float32), model=str(tiny_checkpoint), normalize="none")


def test_zeros_set_apart_from_the_data_are_warned_about_as_gaps(tiny_checkpoint):
    """From a remote-sensing review: an untagged Landsat-7 SLC-off band (gaps and frame 0,
    data from about 20) was denoised without a word; the stripes' edges came out as data and
    valid pixels beside them 14% darker.  A dim image whose noise reaches 0 is no such case."""
    import napari_attnrestore as ar

    rng = np.random.default_rng(0)
    scene = rng.integers(20, 200, (64, 64)).astype(np.uint8)
    scene[::8, :] = 0  # scan-line stripes
    scene[:, 6:8] = 0
    with pytest.warns(ar.AttnRestoreWarning, match=r"are 0, set apart from the data .* give nodata=0"):
        ar.restore(scene, model=str(tiny_checkpoint))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ar.AttnRestoreWarning)
        ar.restore(scene, model=str(tiny_checkpoint), nodata=0)  # declared: nothing to say
        ar.restore(rng.poisson(1.5, (64, 64)).astype(np.uint16), model=str(tiny_checkpoint))  # dim, noisy
        ar.restore(np.where(scene == 0, 1, scene).astype(np.uint16) * 8, model=str(tiny_checkpoint))  # no zeros


class _TileSized(torch.nn.Module):
    """A network whose result depends on its tile's size (as CSAttn's channel attention
    does): it subtracts the tile's mean.  Its card names the tile it was trained on."""

    in_channels, out_channels, scale, multiple_of, halo = 1, 1, 1, 4, 32
    sides: ClassVar[set[int]] = set()

    def __init__(self) -> None:
        super().__init__()
        self.card = {"task": "denoise", "tile": 64}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).sides.add(int(x.shape[-1]))
        return x - x.mean(dim=(-2, -1), keepdim=True)


def test_a_network_runs_on_the_tile_its_card_names_unless_told_otherwise():
    """A CSAttn denoiser trained on 64-px patches lost 0.13 dB on 256-px tiles: the engine's
    default tile, and the most an automatic one takes, is the tile its card names."""
    import napari_attnrestore as ar

    img = np.random.default_rng(0).random((300, 300)).astype(np.float32)

    def run(**kw):
        _TileSized.sides = set()
        out = ar.restore(img, model=_TileSized(), normalize="none", device="cpu", **kw).compute()
        return out, _TileSized.sides

    card, sides = run()
    assert sides == {64}
    np.testing.assert_array_equal(card, run(tile=64, overlap=16)[0])
    np.testing.assert_array_equal(card, run(tile="auto")[0])  # (its memory probe runs other sides)
    given, sides = run(tile=128)
    assert sides == {128} and np.abs(given - card).max() > 0.01


def test_a_card_tile_overlaps_by_a_quarter_and_keeps_the_context():
    from napari_attnrestore.engine.model_handle import describe
    from napari_attnrestore.engine.plan import make_plan

    info = describe(_TileSized())
    assert info.tile == 64
    img = np.zeros((300, 300), np.float32)
    plan = make_plan(img.shape, img.dtype, info, lambda k: img[k], task="denoise", normalize="none")
    assert (plan.tile, plan.overlap, plan.halo) == (64, 16, 32)
    given = make_plan(img.shape, img.dtype, info, lambda k: img[k], task="denoise", normalize="none", tile=64,
                      overlap=24)
    assert (given.tile, given.overlap, given.halo) == (64, 24, 24)
    # the card's tile given (a resumed tile='auto' job gives the tile it chose) runs as the default does
    same = make_plan(img.shape, img.dtype, info, lambda k: img[k], task="denoise", normalize="none", tile=64)
    assert (same.tile, same.overlap, same.halo) == (64, 16, 32)
    other = make_plan(img.shape, img.dtype, info, lambda k: img[k], task="denoise", normalize="none", tile=128)
    assert (other.tile, other.overlap) == (128, 32)


@pytest.mark.parametrize("tile", [4, 64.5, "64", True])
def test_a_card_tile_that_is_no_tile_is_named(tile):
    from napari_attnrestore.engine.model_handle import describe

    net = _TileSized()
    net.card = {"name": "mine", "tile": tile}
    with pytest.raises(ValueError, match="model card of 'mine': tile must be a whole number"):
        describe(net)
