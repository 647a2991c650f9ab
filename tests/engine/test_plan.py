"""Planning: the windows that give an image's global intensity statistics."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_a_strip_uses_all_its_windows():
    keys = stats_windows((100, 5000), 0, False)
    assert len({k[1].start for k in keys}) == 16 and all(k[0] == slice(0, 100) for k in keys)
