"""Shared layers: padding keeps a Bayer mosaic's phase however long the pad."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_attnrestore.models.layers import pad_to_multiple


@pytest.mark.parametrize("shape", [(24, 30), (5, 3), (2, 2), (65, 3)])
def test_padding_longer_than_the_image_mirrors_as_numpy_reflect(shape):
    h, w = shape
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    padded, ph, pw = pad_to_multiple(x, 64)
    assert (ph, pw) == (h, w) and padded.shape[-2] % 64 == 0 and padded.shape[-1] % 64 == 0
    want = np.pad(x.numpy(), ((0, 0), (0, 0), (0, (-h) % 64), (0, (-w) % 64)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), want)  # every pixel keeps its row/column parity


def test_a_single_pixel_row_or_column_is_replicated():
    x = torch.arange(7, dtype=torch.float32).view(1, 1, 1, 7)
    padded, _, _ = pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 8, 8) and torch.equal(padded[0, 0, 5], padded[0, 0, 0])
