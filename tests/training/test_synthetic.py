"""Dead-leaves pictures: covered, seeded, with sharp colour edges of many saturations."""

from __future__ import annotations

import numpy as np

from napari_attnrestore.tasks import demosaic as dm
from napari_attnrestore.training.synthetic import dead_leaves, dead_leaves_set


def test_dead_leaves_shape_range_and_seed():
    a = dead_leaves(64, np.random.default_rng(3))
    assert a.shape == (3, 64, 64) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, dead_leaves(64, np.random.default_rng(3)))
    assert not np.array_equal(a, dead_leaves(64, np.random.default_rng(4)))
    first, second = dead_leaves_set(2, size=48, seed=7), dead_leaves_set(2, size=48, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))


def test_dead_leaves_cover_the_picture_with_disks_of_many_colours():
    a = dead_leaves(96, np.random.default_rng(0), max_blur=0.0)
    rgb = a.reshape(3, -1).T
    assert np.all(rgb.max(axis=1) > 0)  # no pixel left uncovered (black background)
    chroma = rgb.max(axis=1) - rgb.min(axis=1)
    assert np.quantile(chroma, 0.1) < 0.1 and np.quantile(chroma, 0.9) > 0.3  # grey to saturated
    flat = np.isclose(np.abs(np.diff(a, axis=-1)).max(axis=0), 0).mean()
    assert flat > 0.5  # mostly flat disk interiors, separated by edges


def test_dead_leaves_hold_colour_edges_that_defeat_classical_demosaicing():
    rng = np.random.default_rng(1)
    pics = [dead_leaves(96, rng).transpose(1, 2, 0) for _ in range(3)]
    ramp = np.linspace(0.2, 0.8, 96)[None, :, None] * np.ones((96, 1, 1)) * [1.0, 0.8, 0.6]

    def malvar_db(img):
        cfa = dm.mosaic(np.ascontiguousarray(img, dtype=np.float32), "RGGB")
        return dm.demosaic_psnr(img, dm.malvar_baseline(cfa, "RGGB"))

    assert max(malvar_db(p) for p in pics) < 38 < malvar_db(ramp)
