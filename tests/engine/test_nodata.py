"""Pixels and chunks without data: nodata/NaN come back as the fill value; empty chunks skip the network."""

import re

import numpy as np
import pytest
from standins import Box3, FillHalf, Identity, NearestUp

import napari_attnrestore as ar
from napari_attnrestore.engine import ModelHandle


def _run(img, model, **kw):
    handle = ModelHandle(model, device="cpu")
    # chunk 32 + halo 8 on each side = one 48 px tile per chunk: one forward call per chunk run
    out = ar.restore(img, model=handle, chunks=32, tile=48, overlap=8, batch=1, **kw).compute()
    return out, handle.forward_calls


@pytest.mark.parametrize("dtype,nodata", [(np.uint16, 0), (np.float32, -9999.0), (np.float32, None)])
def test_chunk_without_data_skips_the_network(rng, dtype, nodata):
    img = rng.integers(1, 1000, (96, 96)).astype(dtype)
    fill = np.nan if nodata is None else nodata
    img[:48, :48] = fill  # the whole halo region of chunk (0, 0)
    img[70, 71] = fill  # a lone pixel in a chunk that runs
    out, calls = _run(img, Identity(), nodata=nodata, normalize="none")
    assert calls == 8  # 9 chunks, 1 skipped
    assert out.dtype == img.dtype
    np.testing.assert_array_equal(out, img)  # the identity keeps data; no data stays the fill value


def test_image_without_any_data_is_refused_and_a_plane_without_any_never_calls_the_network(tmp_path, capsys):
    """An all-NaN (or all-nodata) image restored 'successfully' into an all-NaN result."""
    img = np.full((64, 96), np.nan, np.float32)
    with pytest.raises(ValueError, match="no data to restore: every pixel is NaN or infinite"):
        _run(img, Identity())
    with pytest.raises(ValueError, match="or the nodata value 0"):
        _run(np.zeros((64, 96), np.uint8), FillHalf(), task="inpaint", nodata=0)
    import tifffile

    from napari_attnrestore.cli import main

    path = tmp_path / "empty.tif"  # a file's: named (from a volumetric review, the CLI's line did not)
    tifffile.imwrite(path, img)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: the image has no data to restore"):
        ar.restore(str(path), model=Identity())
    assert main(["restore", str(path), str(tmp_path / "o.tif"), "-q"]) == 2
    assert f"{path}: the image has no data" in capsys.readouterr().err
    stack = np.stack([img, np.ones_like(img)])
    out, calls = _run(stack, Identity())
    assert calls == 6 and np.isnan(out[0]).all() and (out[1] == 1).all()


def test_nodata_in_super_resolution_covers_the_upscaled_pixels(rng):
    img = rng.integers(1, 200, (64, 64)).astype(np.uint8)
    img[:48, :48] = 0
    img[50, 60] = 0
    out, calls = _run(img, NearestUp(), task="sr", scale=2, nodata=0, normalize="dtype")
    assert calls == 3  # chunks (0, 1), (1, 0), (1, 1)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(img, 2, axis=0), 2, axis=1))


def test_nodata_not_representable_in_the_output_dtype_becomes_zero(rng):
    img = rng.random((40, 40)).astype(np.float32) + 1
    img[:5] = -1
    out, _ = _run(img, Identity(), nodata=-1, dtype=np.uint8, normalize="none")
    assert (out[:5] == 0).all()


def test_inpainting_region_without_known_pixel_stays_nodata(rng):
    img = rng.random((96, 96)).astype(np.float32)
    img[:48, :48] = -1  # chunk (0, 0): nothing known to inpaint from
    img[60:64, 60:70] = -1  # a hole with known pixels around it
    out, calls = _run(img, FillHalf(), task="inpaint", nodata=-1, normalize="none")
    assert calls == 8
    assert (out[:32, :32] == -1).all()  # left as nodata, not invented
    np.testing.assert_allclose(out[60:64, 60:70], 0.5)  # filled
    np.testing.assert_array_equal(out[48:60], img[48:60])  # known pixels kept


def test_inpainting_with_a_mask_covering_a_whole_region(rng):
    img = rng.random((96, 96)).astype(np.float32)
    mask = np.zeros(img.shape, bool)
    mask[:48, :48] = True
    out, calls = _run(img, FillHalf(), task="inpaint", mask=mask, normalize="none")
    assert calls == 8 and np.isnan(out[:32, :32]).all()  # float output: NaN
    ints = (img * 200).astype(np.uint8)  # integer output with no nodata value: the network still fills
    out, calls = _run(ints, FillHalf(), task="inpaint", mask=mask, normalize="dtype")
    assert calls == 9 and (out[:32, :32] == 128).all()


@pytest.mark.parametrize("dtype, nodata", [(np.uint16, 0), (np.float32, None)])
def test_a_mask_says_what_to_fill_and_the_nodata_frame_beyond_it_stays(rng, dtype, nodata):
    """A Landsat scene (nodata 0 beyond its footprint and in its scan-line gaps) inpainted
    with its gap mask had its frame filled too: invented land outside the footprint."""
    img = rng.integers(100, 1000, (96, 96)).astype(dtype)
    frame = np.zeros(img.shape, bool)
    frame[:, :20] = True
    img[frame] = 0 if nodata == 0 else np.nan
    mask = np.zeros(img.shape, bool)
    mask[40:44, 10:] = True  # a stripe across the footprint, and across the frame's edge
    img[mask] = 0 if nodata == 0 else np.nan
    out, _ = _run(img, FillHalf(), task="inpaint", mask=mask, nodata=nodata, normalize="none")
    gap = mask & ~frame
    assert (out[gap] != 0).all() and np.isfinite(out[gap].astype(float)).all()  # the gap asked for: filled
    left = frame & ~mask
    assert (out[left] == 0).all() if nodata == 0 else np.isnan(out[left]).all()  # the frame: still without data
    assert (out[mask & frame] != 0).all() and np.isfinite(out[mask & frame].astype(float)).all()  # masked: filled
    np.testing.assert_array_equal(out[~mask & ~frame], img[~mask & ~frame])


def test_gaps_are_filled_smoothly_before_the_network():
    from napari_attnrestore.engine.graph import fill_gaps

    x = np.full((2, 1, 32, 32), 0.7, np.float32)
    bad = np.zeros(x.shape, bool)
    bad[0, 0, :, 10:20] = True  # a stripe: filled from both sides
    bad[1] = True  # a plane with no data at all
    out = fill_gaps(x, bad)
    np.testing.assert_allclose(out[0], 0.7, atol=1e-5)
    assert (out[1] == 0).all() and np.isfinite(out).all()


def test_pixels_beside_a_gap_are_denoised_almost_as_without_it():
    """A Landsat-7-like stripe of NaN was given to the denoiser as black: the good pixels
    beside it came out with 37% more error than without the stripe."""
    from skimage import data, transform

    rng = np.random.default_rng(0)
    clean = transform.resize(data.camera(), (256, 256)).astype(np.float32) * 0.6 + 0.2
    noisy = (clean + rng.normal(0, 0.08, clean.shape)).astype(np.float32)
    gapped = noisy.copy()
    gapped[:, 120:130] = np.nan
    plain = ar.restore(noisy, device="cpu").compute()
    out = ar.restore(gapped, device="cpu").compute()
    assert np.isnan(out[:, 120:130]).all()
    beside = np.r_[117:120, 130:133]
    err = [np.sqrt(np.mean((o[:, beside] - clean[:, beside]) ** 2)) for o in (out, plain)]
    assert err[0] < 1.2 * err[1], err


@pytest.mark.parametrize("nodata", [-9999.9, -3.40282346639e38])  # a GeoTIFF's text; ArcGIS's float32 minimum
def test_nodata_text_a_float32_image_stores_rounded_is_its_nodata(rng, tmp_path, nodata):
    """The intensity statistics compared the pixels in float64 with the text's value: no pixel
    matched, nodata set the scaling's low end and the result was garbage (or inf)."""
    from napari_attnrestore.engine.store import job_state
    from napari_attnrestore.io.geotiff import nodata_pixels

    img = (600 + 500 * rng.random((96, 96))).astype(np.float32)
    img[10:20] = nodata  # stored as float32 rounds it
    out = ar.restore(img, model=Identity(), nodata=nodata, chunks=48).compute()
    assert np.isfinite(out).all() and out[30:].min() >= 599 and out[30:].max() <= 1101
    np.testing.assert_allclose(out[30:], img[30:], atol=0.05)
    assert (out[10:20] == img[10:20]).all()  # kept as nodata
    ar.restore_to_zarr(img, tmp_path / "o.zarr", model=Identity(), nodata=nodata, pyramid=False)
    (lo,), (hi,) = job_state(tmp_path / "o.zarr")["job"]["norm"]
    assert 599 < lo < hi < 1101  # the scaling of the data, not of nodata
    assert nodata_pixels(img, nodata)[10:20].all() and not nodata_pixels(img, nodata)[30:].any()
    assert not nodata_pixels(np.zeros(3, np.uint8), -9999).any()  # a value uint8 cannot hold marks nothing
    assert not nodata_pixels(np.zeros(3, np.int16), 0.5).any() and nodata_pixels(np.zeros(3, np.int16), 0.0).all()


@pytest.mark.parametrize("dtype,nodata", [(np.uint16, 0), (np.uint8, 255), (np.float32, -9999.0)])
def test_restored_pixels_never_come_out_as_the_nodata_value(rng, dtype, nodata):
    """An undershoot clipped to 0 in a scene whose nodata is 0 read as a new hole in GIS tools
    (the output declares the same nodata); such pixels step one level towards the data."""
    import torch

    class Darker(Identity):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x - 10.0 if nodata == 0 or nodata < 0 else x + 10.0  # far past the type's range

    img = rng.integers(100, 200, (64, 64)).astype(dtype)
    img[:4] = nodata
    out = ar.restore(img, model=Darker(), nodata=nodata, chunks=32).compute()
    assert (out[:4] == nodata).all() and not (out[4:] == nodata).any()
    if dtype != np.float32:
        step = 1 if nodata == 0 else -1
        assert (out[4:] == nodata + step).all()


def test_inpainting_with_nothing_marking_the_gaps_says_so(rng):
    """An untagged Landsat band (uint8, gaps of 0) without --nodata, or --nodata -9999 for bytes,
    came back as an unchanged copy, exit status 0."""
    from standins import FillHalf

    img = rng.integers(1, 255, (64, 64)).astype(np.uint8)
    img[20:28] = 0
    with pytest.raises(ValueError, match=r"nothing marks the gaps to fill in this uint8 image.*--nodata"):
        ar.restore(img, task="inpaint", model=FillHalf())
    with pytest.raises(ValueError, match=r"nodata -9999 cannot occur in this uint8 image"):
        ar.restore(img, task="inpaint", model=FillHalf(), nodata=-9999)
    out = ar.restore(img, task="inpaint", model=FillHalf(), nodata=0).compute()
    assert (out[20:28] != 0).all() and (out[:20] == img[:20]).all()
    holes = np.zeros(img.shape, bool)
    holes[20:28] = True
    assert ar.restore(img, task="inpaint", model=FillHalf(), mask=holes).compute().shape == img.shape
    floats = img.astype(np.float32)
    floats[20:28] = np.nan  # NaN marks the gaps of a float image
    assert np.isfinite(ar.restore(floats, task="inpaint", model=FillHalf()).compute()).all()


def test_gaps_deeper_than_the_halo_warn_once_and_thin_ones_do_not(rng):
    """A cloud 40 px across in chunks with an 8-px halo was filled as blocks with steps at
    the chunk borders, silently."""
    import warnings

    from standins import FillHalf

    img = rng.random((96, 96)).astype(np.float32)
    stripes = img.copy()
    stripes[::12, :] = np.nan  # one-pixel scan lines: every gap pixel is beside known ones
    cloud = img.copy()
    cloud[28:68, 28:68] = np.nan
    kw = dict(task="inpaint", model=FillHalf(), chunks=32, tile=48)
    for x, overlap, deep in ((stripes, 8, False), (cloud, 8, True), (cloud, 32, False)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            ar.restore(x, overlap=overlap, **kw).compute()
        messages = [str(w.message) for w in seen if "deeper than the" in str(w.message)]
        assert len(messages) == int(deep) and all("8-px halo" in m for m in messages), (overlap, messages)
        # a frame beyond a footprint is deep too: its way out is a mask of the gaps alone
        assert all("give the gaps alone as the mask" in m for m in messages)
    with warnings.catch_warnings(record=True) as seen:  # one chunk: no borders to step at
        warnings.simplefilter("always")
        ar.restore(cloud, overlap=8, task="inpaint", model=FillHalf(), chunks=96, tile=48).compute()
    assert not [w for w in seen if "deeper than the" in str(w.message)]


def test_a_job_whose_plan_has_an_ended_jobs_id_still_warns():
    """The once-a-job warnings kept the ids of plans: a later job's plan given the memory (and
    so the id) of an ended one, as CPython does in a notebook's second run, said nothing."""
    import gc
    import warnings

    from napari_attnrestore.engine import graph

    class Job:  # a stand-in for a Plan: only its identity matters
        pass

    ended = Job()
    graph._warn_once(graph._WARNED_OUTLIERS, ended, "first job")
    later = Job()
    graph._WARNED_OUTLIERS[id(later)] = graph._WARNED_OUTLIERS.pop(id(ended))  # as if later had ended's id
    del ended
    gc.collect()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        graph._warn_once(graph._WARNED_OUTLIERS, later, "second job")
        graph._warn_once(graph._WARNED_OUTLIERS, later, "second job")
    assert [str(w.message) for w in seen] == ["second job"]


def test_an_undeclared_float_fill_value_is_taken_for_missing_data(rng):
    """-3.4e38 over 15% of a float32 raster set the low end of the intensity range: every real
    pixel came out near -1e36, some infinite."""
    img = rng.normal(100, 10, (128, 128)).astype(np.float32)
    img[:20] = -3.4e38
    with pytest.warns(UserWarning, match=r"holds -3\.4e\+38, a fill value.*missing data"):
        out = ar.restore(img, model=Identity(), tile=64, overlap=8)
    assert np.array_equal(out[:20], img[:20])  # kept as it came
    assert np.allclose(out[20:], img[20:], atol=1e-3)
    # inpainting fills the gap asked for, not the fill beyond the footprint (a quarter of a raster was invented)
    mask = np.zeros(img.shape, bool)
    mask[60:68, 60:68] = True
    with pytest.warns(UserWarning, match="a fill value"):
        filled = ar.restore(img, task="inpaint", mask=mask, model=FillHalf(), tile=64, overlap=8).compute()
    assert np.array_equal(filled[:20], img[:20]) and np.array_equal(filled[20:][~mask[20:]], img[20:][~mask[20:]])
    assert np.all(np.abs(filled[60:68, 60:68] - 100) < 50)  # the network's fill, in the data's range
    from napari_attnrestore.engine.plan import undeclared_fill

    several = img.copy()
    several[:20] = -3.4e38 * np.linspace(0.5, 1, 128, dtype=np.float32)  # no one value to call the fill
    assert undeclared_fill(several.shape, several.dtype, several.__getitem__, 0, False) is None
    assert undeclared_fill(img.shape, np.int32, img.astype(np.int32).__getitem__, 0, False) is None


def test_float32s_lowest_as_nodata_is_written_as_gdal_spells_it_and_reads_back(tmp_path):
    """-3.4028234663852886e38 was written as its 39 integer digits, which tifffile could not read back."""
    import tifffile

    from napari_attnrestore.io import open_image
    from napari_attnrestore.io.geotiff import georeference_tags

    low = float(np.finfo(np.float32).min)
    keys = (1, 1, 0, 1, 1024, 0, 1, 1)
    geo = {"tags": {"33550": [30.0, 30.0, 0.0], "33922": [0, 0, 0, 5e5, 4e6, 0], "34735": list(keys)}, "shape": [8, 8]}
    tags = georeference_tags(geo, (8, 8), np.float32, low)
    assert [t[3] for t in tags if t[0] == 42113] == ["-3.4028234663852886e+38"]
    tifffile.imwrite(tmp_path / "f.tif", np.full((8, 8), low, np.float32), extratags=tags)
    assert open_image(tmp_path / "f.tif").meta["nodata"] == low


def _with_internal_mask(path, img, valid):
    """A TIFF of ``img`` holding GDAL's internal nodata mask (NewSubfileType 4, photometric
    MASK; 255 where there is data), as GDAL_TIFF_INTERNAL_MASK and JPEG COGs write it."""
    import tifffile

    with tifffile.TiffWriter(path) as tw:
        tw.write(img, photometric="minisblack", tile=(32, 32))
        tw.write((valid * 255).astype(np.uint8), photometric="minisblack", tile=(32, 32),
                 extratags=[(254, "I", 1, 4, True)])
    with tifffile.TiffFile(path, mode="r+b") as t:
        t.pages[1].tags["PhotometricInterpretation"].overwrite(4)


def test_a_tiffs_internal_nodata_mask_marks_the_gaps_to_fill(rng, tmp_path, recwarn):
    """From a remote-sensing review: GDAL's internal mask was read as a second image (the
    warning offered it as series 1), the masked pixels went through the network as data, and
    inpainting refused the file ('nothing marks the gaps'). Inpainting fills what it marks;
    other tasks say they restore those pixels as data."""
    img = (rng.random((64, 64)) * 3000 + 500).astype(np.uint16)
    valid = np.ones((64, 64), bool)
    valid[20:24, :] = False  # a scan-line gap
    img[~valid] = 0
    _with_internal_mask(tmp_path / "masked.tif", img, valid)
    im = ar.io.open_image(tmp_path / "masked.tif")
    assert im.meta["nodata_masks"] == [1]
    assert not [w for w in recwarn if "images" in str(w.message)]  # one image, not two
    out = np.asarray(ar.restore(tmp_path / "masked.tif", task="inpaint", model=ModelHandle(FillHalf()),
                                normalize=(0, 4000), overlap=8))
    np.testing.assert_array_equal(out[valid], img[valid])
    assert np.all(out[~valid] == 2000)  # the stand-in's 0.5 of the range: filled
    # other tasks: the one value under the mask, which no pixel with data holds, is its nodata
    with pytest.warns(ar.AttnRestoreWarning, match=r"series 1\) whose pixels hold 0, .* 0 is taken for nodata"):
        out = np.asarray(ar.restore(tmp_path / "masked.tif", model=ModelHandle(Box3()), overlap=8))
    assert np.all(out[~valid] == 0) and np.all(out[valid] > 0)
    img[30, 30] = 0  # a pixel with data holds it too: it cannot mark the gaps
    _with_internal_mask(tmp_path / "shared.tif", img, valid)
    with pytest.warns(ar.AttnRestoreWarning, match=r"holds a nodata mask \(GDAL's internal mask, series 1\) whose "
                                                   r"pixels hold several values: they are kept out"):
        out = np.asarray(ar.restore(tmp_path / "shared.tif", model=ModelHandle(Identity())))
    np.testing.assert_array_equal(out[valid], img[valid])  # (the 0 with data restored as data)


@pytest.mark.parametrize(("task", "model", "scale"), [("denoise", Box3, 1), ("sr", NearestUp, 2)])
def test_an_internal_mask_over_several_values_keeps_them_out_of_the_network(rng, tmp_path, task, model, scale):
    """A JPEG COG's masked pixels hold JPEG's ringing, not one value: they were restored as
    data, and pulled the pixels with data beside them towards it. Now they are no data: kept
    out of the network's input and written as 0 (or the nodata value given)."""
    img = (rng.random((64, 64)) * 1000 + 2000).astype(np.uint16)
    valid = np.ones((64, 64), bool)
    valid[20:24, :] = False
    img[~valid] = rng.integers(0, 60000, int((~valid).sum()))  # ringing under the mask, far off the data
    _with_internal_mask(tmp_path / "jpeg.tif", img, valid)
    big = np.kron(valid, np.ones((scale, scale), bool))
    with pytest.warns(ar.AttnRestoreWarning, match=r"hold several values: .* written as 0; the result carries no "):
        out = np.asarray(ar.restore(tmp_path / "jpeg.tif", task=task, model=ModelHandle(model()), overlap=8,
                                    normalize=(0, 4000)))
    assert np.all(out[~big] == 0)
    assert out[big].max() <= 3500  # the ringing (30000 on average) reached none of them
    with pytest.warns(ar.AttnRestoreWarning, match=r"written as 7, the nodata value"):
        out = np.asarray(ar.restore(tmp_path / "jpeg.tif", task=task, model=ModelHandle(model()), overlap=8,
                                    normalize=(0, 4000), nodata=7))
    assert np.all(out[~big] == 7)


def test_a_denoiser_sees_noise_of_the_image_level_in_a_filled_gap():
    """A noise-free fill made blind denoisers judge the noise beside a gap weaker; the noise
    put there has the plane's level and is the same for a pixel in every chunk."""
    from napari_attnrestore.engine.graph import fill_gaps, noise_in_gaps, pixel_normal

    rng = np.random.default_rng(1)
    x = (0.5 + rng.normal(0, 0.05, (1, 1, 96, 96))).astype(np.float32)
    bad = np.zeros(x.shape, bool)
    bad[..., 40:60] = True
    out = noise_in_gaps(fill_gaps(x, bad), bad, (0, 0))
    assert abs(float(out[0, 0, :, 42:58].std()) - 0.05) < 0.01  # the fill alone is flat: std under 0.01
    np.testing.assert_array_equal(out[~bad], x[~bad])
    z = pixel_normal(np.arange(100, 200), np.arange(300, 400))
    np.testing.assert_array_equal(z[10:, 20:], pixel_normal(np.arange(110, 200), np.arange(320, 400)))
    edge = pixel_normal(np.arange(-8, 8), np.arange(-8, 8))  # negative coordinates: their own numbers, the others' kept
    np.testing.assert_array_equal(edge[8:, 8:], pixel_normal(np.arange(0, 8), np.arange(0, 8)))
    assert len(np.unique(edge)) == edge.size
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
