import itertools

import numpy as np
import pytest

from napari_attnrestore.engine.tiling import ramp_weights, run_tiled, tile_starts


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (256, 64, 16), (64, 64, 16), (30, 64, 8), (129, 32, 0)])
def test_tiles_cover_and_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + min(tile, length)] = True
    assert covered.all()
    for a, b in itertools.pairwise(starts):
        assert a + tile - b >= overlap


def test_ramps_sum_to_one_over_exact_overlap():
    t, o = 64, 16
    a = ramp_weights(t, o, left=False, right=True)
    b = ramp_weights(t, o, left=True, right=False)
    total = np.zeros(2 * t - o)
    total[:t] += a
    total[t - o :] += b
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert b[0] == 0.0  # the pixels whose context the tile cut off get no weight


def test_run_tiled_identity_is_exact(rng):
    x = rng.random((2, 1, 90, 130)).astype(np.float32)
    out = run_tiled(x, lambda b: b, tile=32, overlap=8, batch=5)
    np.testing.assert_allclose(out, x, atol=1e-6)


def test_run_tiled_scale(rng):
    x = rng.random((1, 1, 40, 48)).astype(np.float32)
    out = run_tiled(x, lambda b: b.repeat(2, axis=2).repeat(2, axis=3), tile=16, overlap=4, batch=3, scale=2)
    np.testing.assert_allclose(out[0, 0, ::2, ::2], x[0, 0], atol=1e-6)


def test_full_batches_pad_the_last_batch_and_drop_the_padding():
    x = np.random.default_rng(0).random((1, 1, 50, 50)).astype(np.float32)
    shapes = []

    def infer(b):
        shapes.append(b.shape)
        return b

    out = run_tiled(x, infer, tile=32, overlap=8, batch=3, full_batches=True)
    assert set(shapes) == {(3, 1, 32, 32)} and len(shapes) == 2  # 4 tiles: 3 + 1 padded to 3
    np.testing.assert_allclose(out, x, atol=1e-6)
