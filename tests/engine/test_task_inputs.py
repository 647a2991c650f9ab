"""Inpainting (mask, NaN, nodata) and demosaicing (Bayer phase across chunks) in the engine."""

import warnings

import numpy as np
import pytest
from standins import FillHalf, SplitCFA

import napari_attnrestore as ar
from napari_attnrestore.tasks.demosaic import PATTERNS, mosaic


def test_inpaint_keeps_known_pixels_and_fills_the_mask_or_else_nan_and_nodata(rng):
    img = rng.integers(0, 200, (90, 110)).astype(np.float32)
    img[5, 5] = np.nan
    img[6, 6] = -1  # nodata
    img[44, 3] = np.nan  # under the mask
    mask = np.zeros(img.shape, bool)
    mask[40:48, :] = True
    kw = dict(task="inpaint", model=FillHalf(), nodata=-1, chunks=32, tile=32, overlap=8, normalize="dtype")
    out = ar.restore(img, mask=mask, **kw).compute()
    known = ~mask
    known[5, 5] = known[6, 6] = False
    np.testing.assert_allclose(out[known], img[known], atol=1e-4)
    np.testing.assert_allclose(out[mask], 0.5, atol=1e-6)  # normalize="dtype": floats stay in [0, 1] units
    assert out[5, 5] == out[6, 6] == -1  # no data outside the mask (not asked to fill): the nodata value
    out = ar.restore(img, **kw).compute()  # no mask: NaN and nodata are the gaps
    holes = ~np.isfinite(img) | (img == -1)
    np.testing.assert_allclose(out[~holes], img[~holes], atol=1e-4)
    np.testing.assert_allclose(out[holes], 0.5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint32, np.int32])
def test_inpaint_keeps_known_pixels_bit_for_bit_in_wide_types(rng, dtype):
    """Known pixels went through the float32 scaling and back: a float DEM or 32-bit counts
    came back changed in their last digits."""
    img = (rng.random((64, 64)) * 2e9 + 300).astype(dtype)
    mask = np.zeros(img.shape, bool)
    mask[10:20, 10:20] = True
    out = ar.restore(img, task="inpaint", model=FillHalf(), mask=mask, device="cpu").compute()
    assert out.dtype == img.dtype
    np.testing.assert_array_equal(out[~mask], img[~mask])


@pytest.mark.parametrize("where", ["array", "file"])
def test_a_mask_of_the_valid_pixels_is_inverted_on_request_and_warned_about_otherwise(tmp_path, rng, where):
    """The Landsat-7 gap masks (and GDAL mask bands) are 1 where there is data: given as the
    mask, they replaced 99% of the data and kept the gaps, with no word said."""
    import tifffile

    img = rng.uniform(0.01, 0.99, (64, 64)).astype(np.float32)  # in [0, 1], as normalize='dtype' takes floats
    valid = np.ones(img.shape, np.uint8)
    valid[20:28] = 0
    mask = valid
    if where == "file":
        tifffile.imwrite(tmp_path / "valid.tif", valid)
        mask = tmp_path / "valid.tif"
    kw = dict(task="inpaint", model=FillHalf(), normalize="dtype", chunks=32, tile=32, overlap=8)
    with pytest.warns(UserWarning, match=r"marks about 88% of the pixels to fill .*invert_mask=True \(CLI --invert-mask\)"):
        ar.restore(img, mask=mask, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ar.restore(img, mask=mask, invert_mask=True, **kw).compute()
    gaps = valid == 0
    np.testing.assert_array_equal(out[~gaps], img[~gaps])
    np.testing.assert_allclose(out[gaps], 0.5)
    with pytest.raises(ValueError, match="invert_mask inverts a mask; give one"):
        ar.restore(img, invert_mask=True, nodata=0, **kw)


def test_inpaint_mask_of_another_shape_is_refused(rng):
    with pytest.raises(ValueError, match=r"mask shape \(10, 10\) does not match the image"):
        ar.restore(np.zeros((32, 32), np.uint8), task="inpaint", model=FillHalf(), mask=np.zeros((10, 10), bool))


@pytest.mark.parametrize("z,in_read_order", [(3, False), (2, False), (2, True)])
def test_an_array_mask_of_a_reordered_hyperstack_fills_the_plane_it_marks(tmp_path, rng, z, in_read_order):
    """An ImageJ hyperstack is stored tzcyx and read tczyx. A mask array in the file's own
    layout (z == c) filled plane (c=0, z=1) instead of (z=0, c=1), while the same mask saved
    as a file filled the right one. A mask shaped only as read is taken as it is; one shaped
    both ways (z == c) is in the file's layout, as channel_axis= is."""
    import tifffile

    img = rng.integers(1, 200, (2, z, 3, 32, 24)).astype(np.float32)  # t z c y x
    tifffile.imwrite(tmp_path / "h.tif", img, imagej=True, metadata={"axes": "TZCYX"})
    mask = np.zeros(img.shape, np.uint8)
    mask[0, 0, 1, 8:12] = 1  # z=0, c=1
    given = mask.transpose(0, 2, 1, 3, 4) if in_read_order else mask
    out = ar.restore(str(tmp_path / "h.tif"), task="inpaint", model=FillHalf(), mask=given, device="cpu").compute()
    changed = np.argwhere((out != img.transpose(0, 2, 1, 3, 4)).any(axis=(3, 4)))  # t c z
    assert changed.tolist() == [[0, 1, 0]]


def test_a_stack_of_mosaics_in_several_channels_is_refused_up_front(tmp_path, rng):
    """Two channels of mosaics gave (2, Y, X, 3) in memory, and every writer then failed on
    axes 'cyxc'."""
    import tifffile

    tifffile.imwrite(tmp_path / "m.ome.tif", rng.integers(0, 255, (2, 32, 24), dtype=np.uint8), ome=True,
                     metadata={"axes": "CYX"})
    for call in (lambda: ar.restore(str(tmp_path / "m.ome.tif"), task="demosaic", cfa="RGGB", model=SplitCFA()),
                 lambda: ar.restore_to_zarr(str(tmp_path / "m.ome.tif"), tmp_path / "o.ome.zarr", task="demosaic",
                                            cfa="RGGB", model=SplitCFA())):
        with pytest.raises(ValueError, match=r"one Bayer mosaic per plane; axis 0 .* holds 2 channels"):
            call()
    assert not (tmp_path / "o.ome.zarr").exists()


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("chunks,tile", [(37, 32), (64, 64)])
def test_demosaic_phase_is_global_across_chunks(rng, pattern, chunks, tile):
    rgb = rng.integers(0, 4096, (75, 91, 3)).astype(np.uint16)
    cfa = mosaic(rgb, pattern)
    out = ar.restore(cfa, task="demosaic", cfa=pattern, model=SplitCFA(), chunks=chunks, tile=tile, overlap=8,
                     normalize="dtype").compute()
    assert out.shape == (75, 91, 3) and out.dtype == np.uint16
    np.testing.assert_array_equal(mosaic(out, pattern), cfa)  # each sample stayed under its own filter


def test_demosaic_needs_a_cfa_image(rng):
    with pytest.raises(ValueError, match="single-channel CFA image"):
        ar.restore(np.zeros((32, 32, 3), np.uint8), task="demosaic", model=SplitCFA())
    with pytest.raises(ValueError, match="unknown Bayer pattern"):
        ar.restore(np.zeros((32, 32), np.uint8), task="demosaic", model=SplitCFA(), cfa="RGBG")


def test_demosaic_reads_a_raw_tiffs_pattern_and_warns_when_it_assumes_rggb(rng, tmp_path):
    """The pattern was never read from the file: a BGGR raw stating CFAPattern came back with
    red and blue swapped (RGGB assumed), without a word."""
    import tifffile

    from napari_attnrestore.io import napari_hooks

    rgb = rng.integers(0, 65536, (32, 40, 3)).astype(np.uint16)  # fills the range normalize="dtype" scales by
    raw = mosaic(rgb, "BGGR")
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, raw, photometric=32803, extratags=[(33421, "H", 2, (2, 2)), (33422, "B", 4, bytes([2, 1, 1, 0]))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file says BGGR: nothing to warn about
        out = ar.restore(str(path), task="demosaic", model=SplitCFA(), normalize="dtype").compute()
    np.testing.assert_array_equal(mosaic(out, "BGGR"), raw)
    with pytest.warns(UserWarning, match="no Bayer pattern given .* assuming RGGB"):
        guessed = ar.restore(raw, task="demosaic", model=SplitCFA(), normalize="dtype").compute()
    np.testing.assert_array_equal(mosaic(guessed, "RGGB"), raw)
    assert napari_hooks.napari_get_reader(str(path))(str(path))[0][1]["metadata"]["cfa"] == "BGGR"  # for the widget
    # and through the conversion to OME-Zarr that a cluster job needs
    ar.io.write_ome_zarr(ar.io.open_image(path), tmp_path / "raw.ome.zarr", pyramid=False)
    assert ar.io.open_image(tmp_path / "raw.ome.zarr").meta["cfa"] == "BGGR"


def test_a_raw_is_understood_as_its_camera_states_it(rng, tmp_path):
    """A review with raw camera files: EXIF's CFAPattern was ignored (RGGB assumed), a --cfa
    contradicting the file won silently, denoising a raw washed its colour out without a
    word, cfa="" meant RGGB, and a (Y, X, 1) mosaic was read as planes one pixel wide."""
    import tifffile
    from standins import Identity

    rgb = rng.integers(0, 65536, (32, 40, 3)).astype(np.uint16)  # fills the range normalize="dtype" scales by
    raw = mosaic(rgb, "GBRG")
    exif = tmp_path / "exif.tif"
    tifffile.imwrite(exif, raw, extratags=[(41730, "B", 8, bytes([0, 2, 0, 2, 1, 2, 0, 1]))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ar.restore(str(exif), task="demosaic", model=SplitCFA(), normalize="dtype").compute()
    np.testing.assert_array_equal(mosaic(out, "GBRG"), raw)
    with pytest.warns(UserWarning, match="cfa RGGB given, but the file states GBRG; RGGB is used"):
        ar.restore(str(exif), task="demosaic", cfa="rggb", model=SplitCFA())
    with pytest.warns(UserWarning, match=r"states a Bayer pattern \(GBRG\).*Demosaic it first"):
        ar.restore(str(exif), task="denoise", model=Identity())
    with pytest.raises(ValueError, match="unknown Bayer pattern ''"):
        ar.restore(raw, task="demosaic", cfa="", model=SplitCFA())
    flat = ar.restore(raw[..., None], task="demosaic", cfa="GBRG", model=SplitCFA(), normalize="dtype").compute()
    np.testing.assert_array_equal(flat, out)


def test_tasks_stream_to_ome_zarr(tmp_path, rng):
    import json

    import zarr

    cfa = mosaic(rng.integers(0, 255, (64, 80, 3)).astype(np.uint8), "BGGR")
    dst = tmp_path / "rgb.ome.zarr"
    ar.restore_to_zarr(cfa, dst, task="demosaic", cfa="BGGR", model=SplitCFA(), chunks=32, pyramid=False)
    ome = json.loads((dst / "zarr.json").read_text())["attributes"]["ome"]
    # stored as NGFF orders axes (channel before space), with red, green and blue channels
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == ["c", "y", "x"]
    assert [c["color"] for c in ome["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]
    stored = zarr.open_array(str(dst / "0"))
    assert stored.shape == (3, 64, 80) and stored.chunks == (3, 32, 32)
    np.testing.assert_array_equal(mosaic(np.moveaxis(stored[:], 0, -1), "BGGR"), cfa)
    back = ar.io.open_image(dst)  # and it opens channel-last, as RGB, again
    assert back.axes == "yxc" and back.rgb and np.array_equal(mosaic(back.read(), "BGGR"), cfa)

    img = rng.integers(0, 255, (64, 80)).astype(np.uint8)
    mask = zarr.create_array(str(tmp_path / "mask.zarr"), shape=img.shape, chunks=(16, 16), dtype="uint8")
    mask[:] = 0
    mask[10:20] = 1
    out = tmp_path / "filled.ome.zarr"
    ar.restore_to_zarr(img, out, task="inpaint", model=FillHalf(), mask=str(tmp_path / "mask.zarr"), chunks=32,
                       pyramid=False)
    res = zarr.open_array(str(out / "0"))[:]
    assert (res[10:20] == 128).all() and np.array_equal(res[:10], img[:10])


def test_a_mosaic_stored_with_one_channel_demosaics_into_that_channel_axis(tmp_path, rng):
    """bioformats2raw and ome-zarr-py store a mosaic as tczyx or cyx with C = 1; the colours were
    added as a 6th axis, which no OME-Zarr may have ('axes tczyxc must name each ... once')."""
    from napari_attnrestore.io import write_ome_zarr

    cfa = rng.integers(0, 255, (1, 1, 2, 32, 48)).astype(np.uint8)
    src = write_ome_zarr(cfa, tmp_path / "cfa.ome.zarr", "tczyx", scale={"z": 2.0, "y": 0.5, "x": 0.5}, pyramid=False)
    dst = tmp_path / "rgb.ome.zarr"
    ar.restore_to_zarr(src, dst, task="demosaic", cfa="RGGB", model=SplitCFA(), pyramid=False)
    assert [a["name"] for a in ar.io.read_ome_metadata(dst)["axes"]] == ["t", "c", "z", "y", "x"]  # C = 3 now
    out = ar.io.open_image(dst)  # shown channel-last, as the RGB picture it is
    assert out.axes == "tzyxc" and out.shape == (1, 2, 32, 48, 3) and out.scale == (1.0, 2.0, 0.5, 0.5, 1.0)
    want = ar.restore(cfa[0, 0], task="demosaic", cfa="RGGB", model=SplitCFA()).compute()  # zyx -> zyxc
    np.testing.assert_array_equal(out.read()[0], want)


def test_rgb_false_restores_an_rgb_store_as_its_channels(tmp_path, rng):
    """An 8-bit store whose channels are red, green and blue opens channel-last; rgb=False (or a
    channel_axis, an axis of the file as stored) must give its cyx channels, not filter across
    x and colour."""
    from standins import Box3

    from napari_attnrestore.io import write_ome_zarr

    czyx = rng.integers(0, 255, (3, 2, 24, 20)).astype(np.uint8)
    path = write_ome_zarr(np.moveaxis(czyx, 0, -1), tmp_path / "rgb.ome.zarr", "zyxc", pyramid=False)
    want = ar.restore(czyx, model=Box3(), channel_axis=0).compute()
    np.testing.assert_array_equal(ar.restore(path, model=Box3(), rgb=False).compute(), want)
    np.testing.assert_array_equal(ar.restore(path, model=Box3(), channel_axis=0).compute(), want)
    np.testing.assert_array_equal(ar.restore(path, model=Box3()).compute(), np.moveaxis(want, 0, -1))


def test_a_result_in_another_dtype_gets_windows_of_that_dtype(tmp_path, rng):
    """The source's omero windows (up to 4000 of 65535) were copied into an 8-bit result."""
    import zarr
    from standins import Box3

    from napari_attnrestore.io import create_ome_zarr, read_ome_metadata

    z = create_ome_zarr(tmp_path / "fl.ome.zarr", (2, 16, 16), np.uint16, None, "cyx", omero={"channels": [
        {"label": n, "color": c, "window": {"min": 0, "max": 65535, "start": 100, "end": 4000}}
        for n, c in (("GFP", "00FF00"), ("DAPI", "0000FF"))]})
    z[:] = rng.integers(0, 200, (2, 16, 16))
    dst = tmp_path / "u8.ome.zarr"
    ar.restore_to_zarr(tmp_path / "fl.ome.zarr", dst, model=Box3(), dtype="uint8", pyramid=False)
    channels = zarr.open_group(str(dst), mode="r").attrs["ome"]["omero"]["channels"]
    assert [c["label"] for c in channels] == ["GFP", "DAPI"] and read_ome_metadata(dst)
    assert channels[0]["window"] == {"min": 0.0, "max": 255.0, "start": 100.0, "end": 255.0}


def test_a_negative_channel_axis_of_one_is_the_right_axis_to_drop():
    """channel_axis=-3 on (2, 1, 32, 48) dropped z plane 1 instead of the channel."""
    m = np.random.default_rng(0).integers(0, 255, (2, 1, 32, 48)).astype(np.uint8)
    out = ar.restore(m, task="demosaic", cfa="RGGB", model=SplitCFA(), channel_axis=-3).compute()
    want = ar.restore(m[:, 0], task="demosaic", cfa="RGGB", model=SplitCFA()).compute()
    assert out.shape == (2, 32, 48, 3) and np.array_equal(out, want)


def test_space_axes_are_put_in_z_y_x_order():
    """A store with dimension names y, x, z was restored over the (x, z) plane."""
    from napari_attnrestore.io import ngff_order

    assert ngff_order("yxz") == (2, 0, 1) and ngff_order("xy") == (1, 0) and ngff_order("zcyx") == (1, 0, 2, 3)
    assert ngff_order("yxc", rgb=True) == (0, 1, 2) and ngff_order("yxc") == (2, 0, 1)


def test_a_masked_arrays_mask_marks_its_gaps(rng):
    """A numpy masked array's masked pixels were restored as data (inpainting left them as
    they were); they are now the gaps: filled by inpainting, no data for other tasks."""
    data = rng.integers(1, 200, (48, 48)).astype(np.float32)
    masked = np.ma.masked_array(data, mask=np.zeros(data.shape, bool))
    masked[10:14] = np.ma.masked
    out = ar.restore(masked, task="inpaint", model=FillHalf(), device="cpu").compute()
    assert not np.isclose(out[10:14], data[10:14]).all() and np.array_equal(out[20:], data[20:])
    with pytest.raises(ValueError, match="masked uint8 array: its masked pixels cannot be marked as no data"):
        ar.restore(np.ma.masked_array(data.astype(np.uint8), mask=masked.mask), task="denoise", model=FillHalf())
    with pytest.raises(ValueError, match="the gaps are given twice"):
        ar.restore(masked, task="inpaint", model=FillHalf(), mask=np.zeros(data.shape, bool))
