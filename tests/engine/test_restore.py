"""The lazy engine: layouts, dtypes, chunk/tile independence, global normalization."""

import re
import warnings
from typing import ClassVar

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr
from standins import Box3, FillHalf, Identity, NearestUp
from torch import nn

import napari_attnrestore as ar


def test_returns_lazy_dask_array(rng):
    img = (rng.random((100, 120)) * 4000).astype(np.uint16)
    out = ar.restore(img, model=Identity(), chunks=64)
    assert isinstance(out, da.Array)
    assert out.shape == img.shape and out.dtype == np.uint16
    assert out.numblocks == (2, 2)
    np.testing.assert_array_equal(out.compute(), img)


@pytest.mark.parametrize(
    "shape,dtype",
    [((50, 70), np.uint8), ((3, 60, 50), np.uint16), ((2, 3, 40, 40), np.float32), ((64, 80, 3), np.uint8), ((33, 47, 4), np.uint16)],
)
def test_layouts_round_trip_through_identity(rng, shape, dtype):
    img = (rng.random(shape) * 200).astype(dtype)
    out = ar.restore(img, model=Identity(), chunks=32, tile=16, overlap=4).compute()
    assert out.shape == img.shape and out.dtype == img.dtype
    np.testing.assert_allclose(out.astype(np.float64), img.astype(np.float64), atol=1e-3 if dtype == np.float32 else 0)


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
def test_sources_agree_and_conv_is_exact_across_chunks(rng, tmp_path, kind):
    img = rng.random((150, 170)).astype(np.float32)
    if kind == "dask":
        src = da.from_array(img, chunks=(47, 61))
    elif kind == "zarr":
        src = zarr.create_array(str(tmp_path / "a.zarr"), shape=img.shape, chunks=(64, 64), dtype="f4")
        src[:] = img
    else:
        src = img
    out = ar.restore(src, model=Box3(), chunks=50, tile=32, overlap=8, normalize="none").compute()
    ref = Box3()(torch.from_numpy(img)[None, None])[0, 0].detach().numpy()
    np.testing.assert_allclose(out[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-5)


def test_output_independent_of_chunking(rng, tiny_hat):
    img = rng.random((96, 112)).astype(np.float32)
    a = ar.restore(img, model=tiny_hat, chunks=32, tile=32, overlap=16, normalize="none").compute()
    b = ar.restore(img, model=tiny_hat, chunks=64, tile=32, overlap=16, normalize="none").compute()
    assert 10 * np.log10(1 / np.mean((a - b) ** 2)) > 45


def test_super_resolution_grid(rng):
    img = (rng.random((2, 45, 61)) * 255).astype(np.uint8)
    out = ar.restore(img, task="sr", scale=2, model=NearestUp(), chunks=32, tile=16, overlap=4)
    assert out.shape == (2, 90, 122) and out.dtype == np.uint8
    np.testing.assert_array_equal(out.compute()[:, ::2, ::2], img)


def test_sr_scale_mismatch_is_an_error(rng):
    with pytest.raises(ValueError, match="x2, not x4"):
        ar.restore(np.zeros((32, 32), np.uint8), task="sr", scale=4, model=NearestUp())


def test_task_settings_that_do_not_apply_are_refused():
    img = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match="scale 4 is for super-resolution"):
        ar.restore(img, task="denoise", scale=4, model=Identity())
    with pytest.raises(ValueError, match="cfa 'RGGB' is for demosaicing"):
        ar.restore(img, task="denoise", cfa="RGGB", model=Identity())
    with pytest.raises(ValueError, match="upscales x2; use it with task 'sr'"):
        ar.restore(img, task="denoise", model=NearestUp())


def test_a_named_sr_model_keeps_its_own_scale():
    from napari_attnrestore.api import resolve_model
    from napari_attnrestore.zoo import list_models

    x4 = next(m["name"] for m in list_models() if m["task"] == "sr" and m.get("scale") == 4)
    assert resolve_model(x4, "sr").info.scale == 4
    assert resolve_model("default:sr-x4", "sr").info.scale == 4
    assert resolve_model(None, "sr").info.scale == 2


@pytest.mark.parametrize("dtype", [np.uint32, np.int32, np.int64])
def test_saturated_wide_integers_do_not_wrap(rng, dtype):
    img = rng.integers(0, 1000, (40, 40)).astype(dtype)
    img[:10] = np.iinfo(dtype).max
    out = ar.restore(img, model=Identity(), chunks=32).compute()
    assert out.dtype == dtype and out[:10].min() > np.iinfo(dtype).max // 2  # not wrapped round to the minimum
    if np.dtype(dtype).itemsize == 4:
        np.testing.assert_array_equal(out, img)


def test_float64_and_wide_integers_keep_their_precision(rng):
    img = 1e6 + rng.random((40, 40))
    np.testing.assert_allclose(ar.restore(img, model=Identity()).compute(), img, rtol=0, atol=1e-6)
    big = (3_000_000_000 + rng.integers(0, 1000, (40, 40))).astype(np.uint32)
    np.testing.assert_array_equal(ar.restore(big, model=Identity()).compute(), big)


def test_trailing_channel_axis_of_a_file_is_restored_per_channel(tmp_path, rng):
    import tifffile

    img = (rng.random((40, 50, 2)) * 255).astype(np.uint8)  # gray + alpha: two samples per pixel, not RGB
    tifffile.imwrite(tmp_path / "la.tif", img, photometric="minisblack", planarconfig="contig")
    out = ar.restore(tmp_path / "la.tif", model=Identity()).compute()
    np.testing.assert_array_equal(out, np.moveaxis(img, -1, 0))  # channels first, in the NGFF order


@pytest.mark.parametrize("task", ["denoise", "sr"])
def test_the_opacity_of_gray_and_alpha_is_kept_not_restored(tmp_path, rng, task):
    """A TIFF whose second sample is declared alpha (ExtraSamples), or a two-channel PNG, had
    its on/off opacity denoised into 26 values; it now comes through as it came in, as an
    RGBA's alpha does."""
    import imageio.v3 as iio
    import tifffile

    gray = rng.integers(0, 255, (40, 48), dtype=np.uint8)
    alpha = np.zeros_like(gray)
    alpha[10:30, 12:40] = 255
    tifffile.imwrite(tmp_path / "ga.tif", np.stack([gray, alpha], -1), photometric="minisblack",
                     extrasamples=["unassalpha"])
    iio.imwrite(tmp_path / "ga.png", np.stack([gray, alpha], -1))
    model = Constant() if task == "denoise" else NearestUp()
    s = 1 if task == "denoise" else 2
    for name in ("ga.tif", "ga.png"):
        out = ar.restore(tmp_path / name, task=task, model=model, device="cpu").compute()
        assert out.shape == (2, 40 * s, 48 * s)
        np.testing.assert_array_equal(out[1], np.repeat(np.repeat(alpha, s, 0), s, 1))
        if task == "denoise":
            assert (out[0] == 128).all()  # the gray went through the network


def test_a_hyperstack_comes_out_in_ngff_axis_order(tmp_path, rng):
    """ImageJ keeps z before c (TZCYX); an OME-Zarr must list them t, c, z, y, x."""
    import tifffile

    img = (rng.random((2, 3, 2, 24, 28)) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "h.tif", img, imagej=True, metadata={"axes": "TZCYX"})
    ar.restore_to_zarr(tmp_path / "h.tif", tmp_path / "h.ome.zarr", model=Identity(), pyramid=False)
    ms = zarr.open_group(str(tmp_path / "h.ome.zarr")).attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["t", "c", "z", "y", "x"]
    out = zarr.open_array(str(tmp_path / "h.ome.zarr" / "0"))[:]
    np.testing.assert_array_equal(out, img.transpose(0, 2, 1, 3, 4))


def test_channel_axis_of_a_path_counts_in_the_file_order(tmp_path, rng):
    import tifffile

    img = np.stack([rng.random((40, 50)) * 1000, rng.random((40, 50)) * 60000], -1).astype(np.uint16)
    tifffile.imwrite(tmp_path / "two.tif", img, photometric="minisblack", planarconfig="contig")
    out = ar.restore(tmp_path / "two.tif", model=Identity(), channel_axis=2).compute()  # yxc as stored
    np.testing.assert_array_equal(out, np.moveaxis(img, -1, 0))


@pytest.mark.parametrize("option", [{"rgb": False}, {"channel_axis": -1}])
def test_an_rgb_files_samples_can_be_restored_as_channels(tmp_path, rng, option):
    """rgb=False on an RGB TIFF ran the network on 64 planes of 48 x 3 pixels and stored
    them as a colour picture; channel_axis=-1 was refused as a spatial axis."""
    import tifffile

    img = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", img, photometric="rgb")
    seen = []

    class Probe(Identity):
        def forward(self, x):
            seen.append(tuple(x.shape[1:]))
            return x

    out = ar.restore(tmp_path / "rgb.tif", model=Probe(), device="cpu", **option).compute()
    np.testing.assert_array_equal(out, np.moveaxis(img, -1, 0))
    assert {c for c, *_ in seen} == {1} and min(min(hw) for _, *hw in seen) >= 32  # whole 64 x 48 planes
    ar.restore_to_zarr(tmp_path / "rgb.tif", tmp_path / "o.ome.zarr", model=Identity(), device="cpu", **option)
    back = ar.io.open_image(tmp_path / "o.ome.zarr")
    assert back.axes == "cyx" and not back.rgb


class Constant(nn.Module):
    """Outputs 0.5 everywhere: reveals the normalization the engine used."""

    in_channels, out_channels, scale = 1, 1, 1

    def forward(self, x):
        return torch.full_like(x, 0.5)


def test_an_arrays_named_axes_place_its_channels(tmp_path, rng):
    """``meta={"axes": ...}`` for an array: channels are scaled each on its own and, when
    they come last, moved first (and super-resolution enlarges y and x, not c)."""
    a = np.stack([rng.random((40, 44)) * 1000, 50000 + rng.random((40, 44)) * 10000]).astype(np.uint16)
    ar.restore_to_zarr(a, tmp_path / "c.ome.zarr", model=Constant(), meta={"axes": "cyx"}, pyramid=False)
    out = zarr.open_array(str(tmp_path / "c.ome.zarr" / "0"))[:]
    assert out[0].mean() < 1000 < 50000 < out[1].mean()  # each channel at its own mid-range
    ar.restore_to_zarr(np.moveaxis(a, 0, -1), tmp_path / "sr.ome.zarr", task="sr", model=NearestUp(),
                       meta={"axes": "yxc"}, pyramid=False)
    img = ar.io.open_image(tmp_path / "sr.ome.zarr")
    assert img.axes == "cyx" and img.shape == (2, 80, 88) and img.scale == (1.0, 0.5, 0.5)


def test_normalization_is_global_not_per_tile(rng):
    img = np.zeros((128, 128), np.uint16)
    img[:, :64] = rng.integers(100, 200, (128, 64))
    img[:, 64:] = rng.integers(3000, 4000, (128, 64))
    out = ar.restore(img, model=Constant(), chunks=64, tile=32, overlap=8).compute()
    assert len(np.unique(out)) == 1  # one statistic for the whole image, so one output value
    lo, hi = np.percentile(img, [0.1, 99.9])
    assert abs(int(out[0, 0]) - (lo + hi) / 2) <= 60  # statistics from a subsample


@pytest.mark.parametrize("unit", [1e-12, 1e-20, 1e6])
def test_data_in_small_or_large_units_keep_their_values(rng, unit):
    """Values under 1e-12 were taken for a constant image and came back 10^8 times larger."""
    img = rng.uniform(0.2, 0.8, (64, 64)).astype(np.float32) * np.float32(unit)
    np.testing.assert_allclose(ar.restore(img, model=Identity(), chunks=64).compute(), img, rtol=1e-5)
    mid = ar.restore(img, model=Constant(), chunks=64).compute()  # 0.5: the middle of the image's range
    assert img.min() < mid.min() and mid.max() < img.max()
    flat = np.full((32, 32), 3 * unit, np.float32)
    np.testing.assert_allclose(ar.restore(flat, model=Identity(), chunks=32).compute(), flat, rtol=1e-5)


def test_wide_types_with_a_large_offset_keep_their_contrast():
    """uint32 1e8 + 0..7 was taken for a constant image once the flat test was relative to float32."""
    from napari_attnrestore.engine.normalize import compute_stats

    wide = (np.uint32(10**8) + np.arange(64 * 64, dtype=np.uint32) % 8).reshape(64, 64)
    (lo,), (hi,) = compute_stats(wide, wide.dtype)
    assert (lo, hi) == pytest.approx((1e8, 1e8 + 7))
    stamps = np.int64(1.7e12) + np.arange(1000, dtype=np.int64) * 100
    (lo,), (hi,) = compute_stats(stamps.reshape(10, 100), stamps.dtype)
    assert hi - lo == pytest.approx(99900, rel=0.01)


def test_options_given_as_numpy_values_are_taken(rng):
    img = rng.random((64, 64)).astype(np.float32)
    out = ar.restore(img, model=Identity(), chunks=np.array([32, 64]), tile=np.float32(32)).compute()
    np.testing.assert_allclose(out, img, atol=1e-6)


def test_a_narrower_output_type_that_clips_or_flattens_the_values_warns(rng):
    """dtype='uint8' turned a float [0, 1] image into 0s and 1s, and 12-bit counts into 255s, silently."""
    import warnings

    with pytest.warns(UserWarning, match="span only 2 of its levels"):
        ar.restore(rng.random((64, 64)).astype(np.float32), model=Identity(), dtype="uint8")
    with pytest.warns(UserWarning, match=r"clips the input's values"):
        ar.restore(rng.integers(0, 4000, (64, 64)).astype(np.uint16), model=Identity(), dtype="uint8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # values that fit: nothing to say
        ar.restore(rng.integers(0, 200, (64, 64)).astype(np.uint16), model=Identity(), dtype="uint8")


def test_a_network_that_makes_nan_of_finite_input_stops_the_restore(rng):
    class Broken(nn.Module):
        def forward(self, x):
            return x * float("nan")

    with pytest.raises(FloatingPointError, match=r"NaN or infinite values from finite input.*weights are damaged"):
        ar.restore(rng.random((64, 64)).astype(np.float32), model=Broken(), chunks=64).compute()

    class Overflowing(nn.Module):  # attention overflows on an undeclared sentinel (-3.4e38 in a GeoTIFF)
        def forward(self, x):
            return torch.where(x.abs().amax(dim=(1, 2, 3), keepdim=True) > 1e4, x * float("inf"), x)

    img = rng.random((64, 64)).astype(np.float32)
    img[10, 10] = 3e20  # (1e30 and beyond is taken for a fill value: no data)
    # clipped for the network, with a word: its tile came out all NaN, silently
    with pytest.warns(UserWarning, match=r"far outside the image's intensity range \(e.g. 3e\+20\) are clipped"):
        out = ar.restore(img, model=Overflowing(), chunks=64, tile=32, overlap=0).compute()
    assert np.isfinite(out).all() and out[10, 10] > 1e3 and np.allclose(out[32:, 32:], img[32:, 32:])
    img[10, 10] = np.inf  # no data, as before: the fill value
    assert np.isnan(ar.restore(img, model=Overflowing(), chunks=64).compute()[10, 10])


def test_an_overlap_larger_than_the_image_reads_no_more_than_the_image(rng):
    """--overlap 1000000 made every chunk read a 2-million-pixel halo (a MemoryError of terabytes)."""
    img = rng.random((64, 80)).astype(np.float32)
    ref = ar.restore(img, model=Box3(), chunks=32).compute()
    np.testing.assert_allclose(ar.restore(img, model=Box3(), chunks=32, overlap=10**6).compute(), ref, atol=1e-6)


@pytest.mark.parametrize(("option", "message"), [
    (dict(chunks=(64,)), r"chunks must be a number of pixels or a \(y, x\) pair"),
    (dict(chunks="abc"), "chunks must be a number of pixels"), (dict(chunks=4), "chunks must be at least 16"),
    (dict(tile=40.5), "tile must be a whole number, got 40.5"), (dict(tile=True), "tile must be a whole number"),
    (dict(overlap=1.5), "overlap must be a whole number"), (dict(overlap=-2), "overlap must be at least 0"),
    (dict(batch=0), "batch must be at least 1"), (dict(channel_axis=5), "channel_axis 5 is not an axis")])
def test_engine_options_are_checked_by_name(rng, option, message):
    with pytest.raises(ValueError, match=message):
        ar.restore(rng.random((64, 64)).astype(np.float32), model=Identity(), **option)


def test_uint8_uses_dtype_range(rng):
    img = rng.integers(100, 120, (64, 64)).astype(np.uint8)
    out = ar.restore(img, model=Constant(), chunks=64).compute()
    assert np.all(out == 128)  # 0.5 * 255 rounds to 128


def test_user_module_without_attributes_is_probed(rng):
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.c(x)

    out = ar.restore(rng.random((40, 40)).astype(np.float32), model=Plain(), chunks=40)
    assert out.shape == (40, 40)
    assert np.isfinite(out.compute()).all()


def test_nan_pixels_stay_nan_and_do_not_spread(rng):
    img = rng.random((64, 64)).astype(np.float32)
    img[10, 20] = np.nan
    out = ar.restore(img, model=Box3(), chunks=64, tile=32, overlap=8).compute()
    assert np.isnan(out[10, 20])
    assert np.isfinite(np.delete(out.ravel(), 10 * 64 + 20)).all()


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ar.restore(np.zeros(10, np.uint8), model=Identity())
    with pytest.raises(ValueError, match="unsupported pixel type"):
        ar.restore(np.zeros((8, 8), complex), model=Identity())
    with pytest.raises(ValueError, match="unknown device"):
        ar.restore(np.zeros((8, 8), np.uint8), model=Identity(), device="tpu")
    with pytest.raises(ValueError, match="unknown task"):
        ar.restore(np.zeros((8, 8), np.uint8), task="colorize", model=Identity())


def test_arguments_of_the_wrong_kind_are_one_clear_error():
    """A string nodata, an unknown-shape dask array and a scale of 1 for sr raised numpy's
    and dask's own errors (or 'no shipped default model for sr-x1')."""
    x = np.random.default_rng(0).integers(1, 255, (32, 32)).astype(np.uint8)
    with pytest.raises(ValueError, match=r"nodata must be a number .* got '0'"):
        ar.restore(x, task="inpaint", nodata="0")
    d = da.from_array(x, chunks=16)
    with pytest.raises(ValueError, match=r"unknown shape \(nan, 32\).*compute_chunk_sizes"):
        ar.restore(d[d[:, 0] > 0], model=Identity())
    with pytest.raises(ValueError, match="task 'sr' supports scale 2, 4, not 1"):
        ar.restore(x, task="sr", scale=1)
    with pytest.raises(ValueError, match=r"scale must be a whole number, got 2\.5"):
        ar.restore(x, task="sr", scale=2.5, model=NearestUp())
    assert ar.restore(x, task="sr", scale=2.0, model=NearestUp()).shape == (64, 64)  # 2.0 is 2
    t = torch.from_numpy(x.astype(np.float32))  # a tensor is restored as its values
    np.testing.assert_array_equal(ar.restore(t, model=Identity(), normalize="none").compute(), t.numpy())


@pytest.mark.parametrize("channels", [2, 3, 5])
def test_a_channel_last_array_is_restored_per_channel_when_named(rng, channels):
    """(Y, X, 2) or (Y, X, 5) was taken as Z, Y, X (SR enlarged x and the channels) and
    channel_axis=-1 was refused as 'a spatial axis'."""
    x = (rng.random((40, 36, channels)) * 200).astype(np.uint8)
    x[..., -1] += 50
    out = ar.restore(x, task="sr", scale=2, model=NearestUp(), channel_axis=-1, normalize="dtype").compute()
    assert out.shape == (80, 72, channels)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(x, 2, axis=0), 2, axis=1))
    if channels != 3:
        with pytest.warns(UserWarning, match=rf"planes are 36 x {channels} pixels.*channel_axis= \(e.g. -1"):
            ar.restore(x, model=Identity())


def test_a_channel_axis_naming_a_files_y_or_x_says_so_in_the_files_terms(tmp_path, rng):
    """--channel-axis 0 on a (256, 256, 6) band-interleaved file said 'channel_axis 1 is a
    spatial axis of shape (6, 256, 256)': an axis and a shape the user never gave."""
    tifffile.imwrite(tmp_path / "bands.tif", (rng.random((32, 30, 6)) * 900).astype(np.int16), photometric="minisblack",
                     planarconfig="contig")
    for axis, name in ((0, "Y"), (1, "X"), (-2, "X")):
        with pytest.raises(ValueError, match=re.escape(f"channel_axis {axis} is the image's {name} axis (as stored: "
                                                       "shape (32, 30, 6))")):
            ar.restore(tmp_path / "bands.tif", model=Identity(), channel_axis=axis)
    assert ar.restore(tmp_path / "bands.tif", model=Identity(), channel_axis=2).shape == (6, 32, 30)


def test_a_mask_laid_out_as_a_channel_last_array_is_taken(rng):
    """A (Y, X, 6) mask for a (Y, X, 6) array with channel_axis=-1 was refused: only the
    internal (6, Y, X) order was; a file of that layout took either."""
    img = (rng.random((40, 36, 6)) * 1000).astype(np.int16)
    mask = np.zeros((40, 36, 6), bool)
    mask[10:12, :, 2] = True
    for given in (mask, np.moveaxis(mask, -1, 0)):
        out = ar.restore(img, task="inpaint", mask=given, channel_axis=-1, model=FillHalf(), normalize=(0, 1000))
        out = np.asarray(out)
        assert out.shape == img.shape and np.array_equal(out[~mask], img[~mask]) and np.all(out[mask] == 500)


def test_named_axes_in_any_order_put_y_and_x_last(tmp_path, rng):
    """meta={"axes": "yxz"} enlarged x and z and labelled the result zyx with y 0.1 um."""
    v = (rng.random((40, 36, 5)) * 4000).astype(np.uint16)
    dst = tmp_path / "yxz.ome.zarr"
    ar.restore_to_zarr(v, dst, task="sr", model=NearestUp(), meta={"axes": "yxz", "scale": (0.2, 0.2, 1.0)},
                       pyramid=False)
    img = ar.io.open_image(dst)
    assert img.axes == "zyx" and img.shape == (5, 80, 72) and img.scale == (1.0, 0.1, 0.1)
    np.testing.assert_array_equal(np.asarray(img.data)[:, ::2, ::2], np.moveaxis(v, -1, 0))
    x = np.zeros((3, 32, 32), np.uint16)
    for meta, says in (({"axes": "tyx", "scale": (0.5, 0.5)}, "meta 'scale' has 2 values; the image has 3 axes"),
                       ({"axes": "yx"}, "axes 'yx' name 2 axes; the image has 3"),
                       ({"axes": "abc"}, "axes 'abc': name each axis once with t, c, z, y or x")):
        with pytest.raises(ValueError, match=re.escape(says)):
            ar.restore_to_zarr(x, tmp_path / "m.ome.zarr", model=Identity(), meta=meta)
        assert not (tmp_path / "m.ome.zarr").exists()


@pytest.mark.parametrize("task", ["denoise", "sr"])
def test_the_alpha_of_rgba_is_kept_not_restored(rng, task):
    """An on/off alpha went through the network and came back with values between."""
    from standins import Box3

    rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    alpha = np.full((40, 48), 255, np.uint8)
    alpha[:, :20] = 0
    model = Box3() if task == "denoise" else NearestUp()
    out = ar.restore(np.dstack([rgb, alpha]), task=task, model=model, chunks=32, tile=32, overlap=8).compute()
    s = 1 if task == "denoise" else 2
    np.testing.assert_array_equal(out[..., 3], np.repeat(np.repeat(alpha, s, axis=0), s, axis=1))
    as_float = ar.restore(np.dstack([rgb, alpha]), task=task, model=model, dtype=np.float32).compute()
    np.testing.assert_allclose(as_float[..., 3], out[..., 3], atol=1e-3)


class OOMAbove(nn.Module):
    """Raises torch's out-of-memory error for inputs larger than ``limit`` values (simulated GPU)."""

    in_channels, out_channels, scale, halo = 1, 1, 1, 8

    seen: ClassVar[list] = []  # (on the class: the engine runs a copy of the module)

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        type(self).seen.clear()

    def forward(self, x):
        type(self).seen.append(tuple(x.shape))
        if x.numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return x * 0.5


def test_out_of_memory_shrinks_batch_then_tile_and_completes(rng):
    img = rng.random((256, 256)).astype(np.float32)
    model = OOMAbove(limit=48 * 48)
    out = ar.restore(img, model=model, chunks=256, tile=128, overlap=8, batch=4, normalize="none").compute()
    np.testing.assert_allclose(out, img * 0.5, atol=1e-6)
    sizes = {s[-1] for s in model.seen}
    assert 128 in sizes and min(sizes) <= 48  # first tried 128-px tiles, finished with smaller ones
    assert any(s[0] == 1 for s in model.seen)  # the batch shrank first


def test_out_of_memory_that_cannot_shrink_fails_clearly(rng):
    with pytest.raises(torch.OutOfMemoryError):
        ar.restore(rng.random((64, 64)).astype(np.float32), model=OOMAbove(limit=1), tile=32, overlap=8).compute()


def _unsampled_bright_block(rng):
    """A dark 1024 x 1024 field with a bright block where no statistics window lies."""
    from napari_attnrestore.engine.plan import stats_windows

    img = (100 + rng.normal(0, 5, (1024, 1024))).astype(np.float32)
    seen = np.zeros(img.shape, bool)
    for key in stats_windows(img.shape, 0, False):
        seen[key] = True
    y, x = next((y, x) for y in range(0, 960, 32) for x in range(0, 960, 32) if not seen[y : y + 64, x : x + 64].any())
    img[y : y + 64, x : x + 64] = 5000 + rng.normal(0, 5, (64, 64))  # noisy: a constant block comes back as it is
    return img


def test_a_region_outside_the_sampled_range_warns_and_a_given_range_is_taken(rng):
    img = _unsampled_bright_block(rng)
    with pytest.warns(UserWarning, match="lies far outside the intensity range sampled"):
        ar.restore(img, model=Identity(), chunks=256).compute()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ar.restore(img, model=Constant(), chunks=256, normalize=(0, 6000)).compute()
    np.testing.assert_allclose(out, 3000)  # 0.5 of the range given
    with warnings.catch_warnings():  # a range given narrower than the data: the caller's choice, unwarned
        warnings.simplefilter("error")
        ar.restore(img, model=Identity(), chunks=256, normalize=(90, 110)).compute()
    with pytest.raises(ValueError, match=r"lo < hi"):
        ar.restore(img, model=Identity(), normalize=(5, 5))


def test_a_once_a_job_warning_is_said_for_every_job():
    """Python's registry keyed the warning by its line: with the default filters, a notebook's
    second job with deep gaps or outliers said nothing."""
    import subprocess
    import sys

    code = ("import numpy as np, napari_attnrestore as ar\n"
            "from standins import Identity\n"
            "img = np.random.default_rng(0).normal(100, 5, (256, 256)).astype(np.float32); img[3, 3] = -3.4e20\n"
            "for _ in range(3):\n"
            "    ar.restore(img, model=Identity(), device='cpu').compute()\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("pixels far outside the image's intensity range") == 3, run.stderr


def test_a_float16_result_is_clipped_to_its_range_not_infinite(rng):
    class Brighter(Identity):
        def forward(self, x):
            return x * 2

    img = (rng.random((48, 48)) * 65504).astype(np.float16)
    out = ar.restore(img, model=Brighter(), device="cpu").compute()
    assert out.dtype == np.float16 and np.isfinite(out).all() and out.max() == np.finfo(np.float16).max


def test_a_store_chunked_small_is_restored_in_chunks_of_a_multiple_of_its_own(tmp_path):
    """A zarr chunked 256 x 256 was restored in 256-px chunks, each reading a halo of 112 px:
    2.2 times slower than 1024."""
    z = zarr.create_array(str(tmp_path / "s.zarr"), shape=(2048, 1500), chunks=(256, 300), dtype="uint16")
    from napari_attnrestore.api import _prepare

    plan = _prepare(z, "denoise", Identity(), None, None, None, None, None, "cpu", "auto", None, None, "auto",
                    None)[3]
    assert plan.chunk == (1024, 900)


def test_a_sharded_store_is_restored_in_chunks_of_a_multiple_of_its_shards(tmp_path):
    """A shard is read whole: chunks of the inner 100 px gave 1024 + 176, each touching
    several 600-px shards."""
    z = zarr.create_array(str(tmp_path / "s.zarr"), shape=(1200, 1200), chunks=(100, 100), shards=(600, 600),
                          dtype="uint16")
    from napari_attnrestore.api import _prepare

    plan = _prepare(z, "denoise", Identity(), None, None, None, None, None, "cpu", "auto", None, None, "auto",
                    None)[3]
    assert plan.chunk == (1200, 1200)
    # the inner chunks of shards larger than a default chunk are read on their own: chunks of
    # 4096-px shards were 16 times the default's area, 5000-px shards gave 1024, across inner chunks
    for inner, shard, chunk in (((512, 512), (4096, 4096), (1024, 1024)), ((500, 500), (5000, 5000), (1000, 1000))):
        z = zarr.create_array(str(tmp_path / f"{shard[0]}.zarr"), shape=(10000, 10000), chunks=inner, shards=shard,
                              dtype="uint16")
        assert _prepare(z, "denoise", Identity(), None, None, None, None, None, "cpu", "auto", None, None, "auto",
                        None)[3].chunk == chunk


def test_restore_to_tiff_keeps_what_the_cli_keeps(tmp_path, rng):
    """The README's ar.io.write_tiff(ar.restore(...)) wrote a super-resolved OME-TIFF with
    pixel size 1, origin 0 and no units: ar.restore returns bare pixels."""
    from napari_attnrestore.io import open_image, write_tiff

    src = write_tiff((rng.random((3, 24, 20)) * 255).astype(np.uint8), tmp_path / "in.ome.tif", axes="zyx",
                     scale=(2.0, 0.65, 0.65), translate=(0.0, 100.0, 200.0), units="micrometer")
    out = ar.restore_to_tiff(src, tmp_path / "out.ome.tif", task="sr", model=NearestUp(), device="cpu")
    img = open_image(out)
    assert img.data.shape == (3, 48, 40) and img.dtype == np.uint8
    assert img.scale == pytest.approx((2.0, 0.325, 0.325))
    assert img.translate == pytest.approx((0.0, 100.0 - 0.1625, 200.0 - 0.1625))  # pixel centres tile the input's
    assert img.units["x"] == "micrometer"
    with pytest.raises(Exception, match="exists"):
        ar.restore_to_tiff(src, out, task="sr", model=NearestUp(), device="cpu")
    with pytest.raises(Exception, match="overlap the input"):
        ar.restore_to_tiff(src, src, task="sr", model=NearestUp(), device="cpu", overwrite=True)


def test_a_white_level_clips_results_and_keeps_saturated_pixels():
    """From a quantitative review: a blob clipped at a 12-bit camera's 4095 came back with
    2573 pixels above it (max 4487), so saturated pixels could no longer be counted; a
    demosaic or SR overshoot past the sensor's white had no option to stop it either."""
    class Brighter(nn.Module):  # a denoiser that overshoots (and so moves every pixel)
        in_channels, out_channels, scale = 1, 1, 1

        def forward(self, x):
            return x * 1.2 + 0.01

    rng = np.random.default_rng(0)
    image = rng.integers(100, 3000, (64, 64)).astype(np.uint16)
    image[20:30, 20:30] = 4095  # saturated
    out = np.asarray(ar.restore(image, model=Brighter(), white_level=4095, chunks=32, tile=32, overlap=8).compute())
    assert out.max() == 4095 and (out[20:30, 20:30] == 4095).all()
    assert (out[image < 2000] != image[image < 2000]).any()  # the rest is restored as before
    free = np.asarray(ar.restore(image, model=Brighter(), chunks=32, tile=32, overlap=8).compute())
    assert free.max() > 4095
    up = np.asarray(ar.restore(image, task="sr", scale=2, model=NearestUp(), white_level=2500,
                               normalize=(0, 4095)).compute())
    assert up.shape == (128, 128) and up.max() == 2500 and (up[40:60, 40:60] == 2500).all()
    with pytest.raises(ValueError, match=r"white_level 50 .*must be a finite value above the image's dark level"):
        ar.restore(image, model=Brighter(), white_level=50)
    with pytest.raises(ValueError, match="white_level must be a number"):
        ar.restore(image, model=Brighter(), white_level="bright")


def test_a_white_level_that_is_also_nodata_makes_no_holes_and_a_range_array_is_a_range():
    """From a review: clipping to a white level equal to the nodata value turned 3583
    restored pixels into nodata (holes for GIS tools); a normalize range given as a numpy
    array raised 'truth value of an array is ambiguous'."""
    class BrighterUp(NearestUp):  # overshoots, as SR does at bright edges
        def forward(self, x):
            return super().forward(x) * 1.2

    rng = np.random.default_rng(0)
    image = rng.integers(3000, 4095, (32, 32)).astype(np.uint16)
    image[:4, :4] = 4095
    out = np.asarray(ar.restore(image, task="sr", scale=2, model=BrighterUp(), nodata=4095, white_level=4095,
                                normalize=np.array([0, 4000])).compute())
    assert (out[:8, :8] == 4095).all() and not (out[8:, 8:] == 4095).any() and out[8:, 8:].max() == 4094


class _Offset(nn.Module):
    """Adds 0.1 of the range everywhere, as a network far from its training range does."""

    in_channels, out_channels, scale = 1, 1, 1

    def forward(self, x):
        return x + 0.1


class _OffsetUp(nn.Module):
    in_channels, out_channels, scale = 1, 1, 2

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=2, mode="nearest") + 0.1


def test_constant_planes_come_back_as_they_are_and_leave_the_range_alone():
    """From a volumetric review: two empty planes of a light-sheet stack came back as an offset of
    about 40 counts (negative values in float32 output), and with the default range they set its
    low end to 0 instead of the background's, so the specimen was denoised 16% worse."""
    v = np.random.default_rng(5).poisson(500, (6, 64, 64)).astype(np.uint16)
    v[2:4] = 0
    v[4, 20:40, 20:40] = 4095  # a clipped plateau inside a plane
    for kw in ({}, {"normalize": (400, 600)}, {"dtype": np.float32}):
        out = ar.restore(v, model=_Offset(), device="cpu", **kw).compute()
        assert (out[2:4] == 0).all() and out[2:4].dtype == (np.float32 if kw.get("dtype") else np.uint16)
        assert (out[4, 22:38, 22:38] == 4095).all()  # the plateau's inside (its edge is not constant)
        assert np.abs(out[[0, 1, 5]].astype(float) - v[[0, 1, 5]]).mean() > 5  # the measured planes are restored
    # the range comes from the measured planes: theirs alone give the same result
    alone = ar.restore(v[[0, 1, 4, 5]], model=_Offset(), device="cpu").compute()
    np.testing.assert_array_equal(ar.restore(v, model=_Offset(), device="cpu").compute()[[0, 1, 4, 5]], alone)
    up = ar.restore(v[2:4], task="sr", model=_OffsetUp(), device="cpu", normalize=(400, 600)).compute()
    assert up.shape == (2, 128, 128) and (up == 0).all()  # super-resolution: each pixel's 2 x 2 block


def test_each_channel_may_be_given_its_own_range(tmp_path, rng):
    """From a volumetric review: normalize=(lo, hi) was one range for every channel (a dim
    channel's range cut the bright ones' maxima by 40%), and a range per channel was refused."""
    from napari_attnrestore.cli import main

    img = np.stack([rng.normal(20000, 50, (32, 32)), rng.normal(400, 5, (32, 32)), rng.normal(3000, 20, (32, 32))])
    img = img.astype(np.uint16)
    out = ar.restore(img, model=Constant(), channel_axis=0, normalize=[(19000, 21000), (300, 500), (0, 6000)])
    np.testing.assert_array_equal(out.compute()[:, 0, 0], [20000, 400, 3000])  # 0.5 of each channel's range
    rgb = np.stack([np.full((16, 16), v, np.float32) for v in (0.2, 0.4, 0.6)], axis=-1)
    rgb += rng.normal(0, 0.01, rgb.shape).astype(np.float32)
    out = ar.restore(rgb, model=Constant(), normalize=[(0, 2), (0, 4), (0, 6)]).compute()
    np.testing.assert_allclose(out[0, 0], [1, 2, 3], rtol=1e-6)
    with pytest.raises(ValueError, match=r"normalize gives 2 \(lo, hi\) ranges for 3 channels"):
        ar.restore(img, model=Constant(), channel_axis=0, normalize=[(0, 1), (0, 2)])
    with pytest.raises(ValueError, match=r"lo < hi"):
        ar.restore(img, model=Constant(), channel_axis=0, normalize=[(0, 1), (5, 2), (0, 1)])
    import tifffile

    tifffile.imwrite(tmp_path / "c.tif", img, metadata={"axes": "CYX"})
    assert main(["restore", str(tmp_path / "c.tif"), str(tmp_path / "o.tif"), "--weights", "denoise-acla-tiny",
                 "--channel-axis", "0", "--normalize", "19000,21000;300,500;0,6000", "-q"]) == 0
