"""ShapesMask: a Shapes layer drawn on the image's grid only where it is read."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.layers import Image, Shapes

from napari_attnrestore.gui.shapes_mask import ShapesMask


def _shapes(**kw) -> Shapes:
    return Shapes([np.array([[5, 6], [15, 20]]), np.array([[30, 30], [40, 50]]), np.array([[2, 40], [12, 60]])],
                  shape_type=["rectangle", "ellipse", "line"], edge_width=[1, 1, 3], **kw)


def test_the_whole_mask_is_what_napari_draws_and_a_window_is_its_crop():
    shapes, image = _shapes(), Image(np.zeros((48, 64), np.float32))
    mask = ShapesMask(shapes, image, (48, 64))
    whole = np.asarray(mask)
    np.testing.assert_array_equal(whole, shapes.to_labels(labels_shape=(48, 64)) > 0)
    assert whole.dtype == np.uint8 and mask.shape == (48, 64) and whole.sum() > 100
    np.testing.assert_array_equal(mask[3:37, 10:55], whole[3:37, 10:55])
    np.testing.assert_array_equal(mask[40:], whole[40:])  # fewer slices than axes: the rest whole
    with pytest.raises(IndexError, match="windows"):
        mask[::2]


def test_shapes_on_another_grid_are_drawn_on_the_images_pixels():
    shapes = Shapes([np.array([[10, 10], [20, 30]])], shape_type="rectangle", scale=(2, 2), translate=(4, 0))
    image = Image(np.zeros((64, 80), np.float32), scale=(1, 1))
    ys, xs = np.nonzero(np.asarray(ShapesMask(shapes, image, (64, 80))))
    assert (ys.min(), ys.max()) == (24, 44) and (xs.min(), xs.max()) == (20, 60)


def test_a_2d_mask_of_a_stack_has_its_y_x_shape_and_no_shapes_give_zeros():
    image = Image(np.zeros((3, 48, 64), np.float32))
    assert ShapesMask(_shapes(), image, (3, 48, 64)).shape == (48, 64)
    empty = ShapesMask(Shapes([]), image, (3, 48, 64))
    assert np.asarray(empty).shape == (48, 64) and not np.asarray(empty).any()


def test_a_stroke_leaving_a_window_is_cut_there_not_drawn_along_its_edge():
    """napari moves a path's vertices outside the canvas onto its border: drawn on a window,
    a path crossing its edge gained a stroke along that edge."""
    shapes = Shapes([np.array([[4, 4], [40, 60], [8, 60]]), np.array([[20, 2], [30, 62]])],
                    shape_type=["path", "line"])
    mask = ShapesMask(shapes, Image(np.zeros((48, 64), np.float32)), (48, 64))
    whole = np.asarray(mask)
    np.testing.assert_array_equal(whole, shapes.to_labels(labels_shape=(48, 64)) > 0)  # all inside: as napari
    for window in ((slice(10, 30), slice(20, 50)), (slice(0, 24), slice(32, 64)), (slice(30, 48), slice(0, 40))):
        np.testing.assert_array_equal(mask[window], whole[window])


def test_shapes_of_a_stack_are_drawn_on_their_own_planes_in_any_window():
    """A window of planes 2..4 shifted a plane-0 shape to index -2, which wrapped onto plane 3."""
    shapes = Shapes([np.array([[0, 5, 5], [0, 5, 20], [0, 20, 20], [0, 20, 5]]),
                     np.array([[3, 10, 2], [3, 10, 30]])], shape_type=["polygon", "line"], ndim=3)
    mask = ShapesMask(shapes, Image(np.zeros((5, 32, 32), np.float32)), (5, 32, 32))
    whole = np.asarray(mask)
    assert mask.shape == (5, 32, 32) and whole[0].sum() > 100 and whole[3].sum() == 29
    assert not whole[[1, 2, 4]].any()
    np.testing.assert_array_equal(whole, shapes.to_labels(labels_shape=(5, 32, 32)) > 0)
    np.testing.assert_array_equal(mask[2:5, 8:], whole[2:5, 8:])
    np.testing.assert_array_equal(mask[0:1, 4:12, 4:12], whole[0:1, 4:12, 4:12])
