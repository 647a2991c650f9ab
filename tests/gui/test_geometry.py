"""Geometry of restored layers and preview crops (no display needed)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnrestore.api import output_geometry
from napari_attnrestore.gui.geometry import channel_axis_of, level0, preview_crop, sr_geometry


@pytest.mark.parametrize("k", [1, 2, 4])
def test_sr_geometry_matches_api(k: int) -> None:
    scale, translate = (3.0, 0.5, 0.25), (10.0, 4.0, -2.0)
    s, t = sr_geometry(scale, translate, k)
    ref = output_geometry(k, {"axes": "tyx", "scale": scale, "translate": translate}, 3, 3, False)
    assert s == pytest.approx(ref["scale"])
    assert t == pytest.approx(ref["translate"])
    assert s[0] == 3.0 and t[0] == 10.0


def test_sr_output_covers_input() -> None:
    """The first and last output pixels' outer edges equal the input's."""
    (sy, sx), (ty, tx) = sr_geometry((2.0, 2.0), (1.0, 1.0), 2)
    assert (sy, sx) == (1.0, 1.0) and tx == ty
    assert ty - sy / 2 == pytest.approx(1.0 - 2.0 / 2)
    n = 8
    assert ty + (2 * n - 1) * sy + sy / 2 == pytest.approx(1.0 + (n - 1) * 2.0 + 2.0 / 2)


def test_channel_axis_from_metadata() -> None:
    assert channel_axis_of((2, 64, 64), False, {"axes": "cyx"}) == 0
    assert channel_axis_of((3, 2, 64, 64), False, {"axes": "tcyx"}) == 1
    assert channel_axis_of((2, 64, 64), False, {}) is None
    assert channel_axis_of((64, 64, 3), True, {"axes": "yxc"}) is None


def test_level0() -> None:
    a, b = np.zeros((4, 4)), np.zeros((2, 2))
    assert level0([a, b]) is a and level0(a) is a


def test_preview_crop_plane_and_margin() -> None:
    shape = (3, 100, 120)
    box = np.array([[0, 40, 50], [2, 59, 79]])
    crop = preview_crop(shape, False, point=(1.6, 0, 0), box=box, margin=8)
    assert crop.key == (slice(2, 3), slice(32, 68), slice(42, 88))
    assert crop.origin == (2, 40, 50)
    out = np.zeros((1, 36 * 2, 46 * 2))
    trimmed = crop.trim_output(out, 2, 1)
    assert trimmed.shape == (1, 40, 60)
    s, t = crop.geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), 2)
    assert t == pytest.approx((2.0, 40 - 0.25, 50 - 0.25)) and s == (1.0, 0.5, 0.5)


def test_preview_crop_whole_plane_and_cap() -> None:
    crop = preview_crop((64, 64, 3), True, point=(0, 0), box=np.zeros((2, 2)))
    assert crop.key == (slice(0, 64), slice(0, 64), slice(None)) and crop.trim == (0, 0, 0, 0)
    big = preview_crop((2000, 3000), False, point=(0, 0), box=np.array([[0, 0], [1999, 2999]]), max_side=512, margin=0)
    assert big.key == (slice(744, 1256), slice(1244, 1756))
