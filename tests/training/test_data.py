"""Training images are scaled as restoring scales them, without their alpha channel."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage import io as skio

from napari_attnrestore.training.data import PatchSampler, load_folder, planes_of


def test_folder_images_of_every_integer_type_are_scaled_to_about_0_1(tmp_path):
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    skio.imsave(tmp_path / "a_12bit.tif", (ramp * 4095).astype(np.uint16), check_contrast=False)
    skio.imsave(tmp_path / "b_int16.tif", (ramp * 25500).astype(np.int16), check_contrast=False)
    skio.imsave(tmp_path / "c_byte.png", (rng.random((64, 64)) * 255).astype(np.uint8), check_contrast=False)
    for img in load_folder(tmp_path):
        assert img.dtype == np.float32 and -0.05 < img.min() < 0.05 and 0.95 < img.max() < 1.05


def test_gray_alpha_pictures_train_as_gray(tmp_path):
    la = np.zeros((64, 64, 2), np.uint8)
    la[..., 0], la[..., 1] = np.arange(64, dtype=np.uint8)[None] * 4, 255
    skio.imsave(tmp_path / "la.png", la, check_contrast=False)
    (img,) = load_folder(tmp_path, gray=True)
    assert img.shape == (64, 64)
    assert PatchSampler([img], 32).sample(2).shape == (2, 1, 32, 32)


def test_rgba_alpha_is_not_a_training_plane():
    rgba = np.random.default_rng(0).integers(0, 255, (32, 32, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert len(planes_of(rgba)) == 3


def test_rgba_folder_pictures_keep_three_colours(tmp_path):
    skio.imsave(tmp_path / "rgba.png", np.full((64, 64, 4), 200, np.uint8), check_contrast=False)
    (img,) = load_folder(tmp_path, gray=False)
    assert img.shape == (64, 64, 3)


def test_planes_smaller_than_the_patch_are_left_out_with_a_warning():
    with pytest.warns(UserWarning, match=r"1 of 2 training planes are smaller than the 32x32 patch .*\(20, 48\)"):
        sampler = PatchSampler([np.zeros((64, 64), np.float32), np.zeros((20, 48), np.float32)], 32)
    assert len(sampler.images) == 1


def test_gray_alpha_files_train_on_the_gray_plane_only(tmp_path):
    """A (Y, X, 2) PNG opens with a channel axis; its alpha plane was trained on as a second image."""
    from napari_attnrestore.io import open_image

    la = np.zeros((64, 64, 2), np.uint8)
    la[..., 0], la[..., 1] = np.arange(64, dtype=np.uint8)[None] * 4, 255
    skio.imsave(tmp_path / "la.png", la, check_contrast=False)
    from napari_attnrestore.training.session import _planes

    img = open_image(tmp_path / "la.png")
    planes = planes_of(img.data, rgb=img.rgb, channel_axis=img.channel_axis, alpha=True)
    assert len(planes) == 1
    np.testing.assert_array_equal(planes[0][(slice(None), slice(None))] > 0.5, la[..., 0] > 127)
    assert len(_planes([tmp_path / "la.png"])) == 1  # ar.train's planes of the file
    assert len(planes_of(img.data, rgb=False, channel_axis=2)) == 2  # two bands (a TIFF's)
    assert len(planes_of(np.zeros((2, 64, 64), np.uint8), channel_axis=0, alpha=True)) == 2  # C before Y, X: no alpha
    # a TIFF says so with ExtraSamples; two bands without it are two images
    tifffile.imwrite(tmp_path / "la.tif", la, photometric="minisblack", extrasamples=["unassalpha"])
    tifffile.imwrite(tmp_path / "bands.tif", np.moveaxis(la, -1, 0), photometric="minisblack")
    assert open_image(tmp_path / "la.tif").meta.get("alpha") and len(_planes([tmp_path / "la.tif"])) == 1
    assert not open_image(tmp_path / "bands.tif").meta.get("alpha") and len(_planes([tmp_path / "bands.tif"])) == 2


def test_values_beyond_float32_read_as_gaps_without_a_numpy_warning():
    import warnings

    img = np.random.default_rng(0).random((64, 64))
    img[5, 5] = 1e300  # an outlier the scaling leaves out, beyond float32 once scaled
    (plane,) = planes_of(img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plane[(slice(None), slice(None))]
    assert out[5, 5] == 0 and np.isfinite(out).all()


def test_training_errors_name_the_image():
    from napari_attnrestore.training.data import NormalizedPlane, colour_pictures_of

    small = planes_of(np.zeros((20, 24), np.float32), origin="small.tif")
    with pytest.raises(ValueError, match=r"no training image is at least 32x32 pixels \(small.tif \(20, 24\)\)"):
        PatchSampler(small, 32)
    with pytest.raises(ValueError, match=r"no training image is at least 32x32 pixels \(image 1 \(20, 24\)\)"):
        PatchSampler([np.zeros((20, 24), np.float32)], 32)
    with pytest.raises(ValueError, match=r"allnan\.tif: a training image has no finite pixels"):
        planes_of(np.full((40, 40), np.nan, np.float32), origin="allnan.tif")
    with pytest.raises(ValueError, match=r"zeros\.tif: a training image has no finite pixels .*nodata"):
        NormalizedPlane(np.zeros((40, 40), np.float32), nodata=0, origin="zeros.tif")
    with pytest.raises(ValueError, match=r"gray.png: demosaicing trains on colour pictures .*got shape \(40, 40\)"):
        colour_pictures_of(np.zeros((40, 40), np.uint8), origin="gray.png")


def test_nodata_text_a_float32_image_stores_rounded_is_left_out_of_training_scaling():
    """'-9999.9' from a GeoTIFF is -9999.900390625 in a float32 image: compared in float64 it
    matched nothing, and set the low end of the training scaling."""
    from napari_attnrestore.training.data import NormalizedPlane

    img = (600 + 500 * np.random.default_rng(0).random((64, 64))).astype(np.float32)
    img[:8] = -9999.9
    plane = NormalizedPlane(img, nodata=-9999.9, keep_gaps=True)
    assert 599 < plane.lo < plane.hi < 1101 and np.isnan(plane[:, :][:8]).all()


def test_an_undeclared_float_fill_value_is_left_out_of_training():
    """-3.4e38 over 15% of the image set the low end of the range: every real pixel scaled to 1.0."""
    img = np.random.default_rng(0).normal(100, 10, (128, 128)).astype(np.float32)
    img[:20] = -3.4e38
    with pytest.warns(UserWarning, match="a fill value"):
        (plane,) = planes_of(img)
    out = plane[(slice(None), slice(None))]
    assert np.all(out[:20] == 0) and out[20:].std() > 0.1  # gaps read as 0; the data keep their contrast
