"""Reading TIFF flavours lazily: plain, OME, Geo, Big, big-endian, pyramids."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from skimage import io as skio

from napari_attnrestore.io import ImageData, ImageReadError, guess_axes, open_image


def _ramp(shape, dtype=np.uint16):
    return (np.arange(int(np.prod(shape))) % 4000).astype(dtype).reshape(shape)


def test_plain_tiff_is_lazy_zarr(tmp_path):
    a = _ramp((100, 80))
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, a)
    im = open_image(path)
    assert isinstance(im, ImageData)
    assert isinstance(im.data, zarr.Array)
    assert im.axes == "yx" and not im.rgb and im.channel_axis is None
    assert im.scale == (1.0, 1.0) and im.translate == (0.0, 0.0)
    assert im.levels == [im.data]
    assert im.name == "plain" and im.path == str(path)
    np.testing.assert_array_equal(im.data[10:20, 5:9], a[10:20, 5:9])


def test_ome_tiff_physical_size(tmp_path):
    a = _ramp((3, 64, 48))
    path = tmp_path / "cells.ome.tif"
    meta = {"axes": "CYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.5, "PhysicalSizeXUnit": "nm"}
    tifffile.imwrite(path, a, metadata=meta)
    im = open_image(path)
    assert im.axes == "cyx" and im.channel_axis == 0 and not im.rgb
    assert im.scale == (1.0, 0.5, 0.25)
    assert im.units == {"y": "micrometer", "x": "nanometer"}
    assert im.name == "cells"
    assert "ome" in im.meta
    np.testing.assert_array_equal(im.data[:], a)


def test_geotiff_scale_and_origin(tmp_path):
    a = _ramp((50, 60), np.uint8)
    path = tmp_path / "geo.tif"
    geokeys = (1, 1, 0, 2, 1024, 0, 1, 1, 3076, 0, 1, 9001)  # projected, metre
    extratags = [
        (33550, "d", 3, (30.0, 15.0, 0.0), False),
        (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), False),
        (34735, "H", len(geokeys), geokeys, False),
    ]
    tifffile.imwrite(path, a, extratags=extratags)
    im = open_image(path)
    assert im.axes == "yx"
    assert im.scale == (15.0, 30.0)
    assert im.translate == (-(4000000.0 - 7.5), 500000.0 + 15.0)  # centre of pixel (0, 0); y = -northing
    assert im.units == {"x": "meter", "y": "meter"}
    geo = im.meta["geotiff"]
    assert geo["pixel_scale"][:2] == [30.0, 15.0]
    assert geo["tiepoint"][3:5] == [500000.0, 4000000.0]
    assert "geokeys" in geo


def test_geotiff_rgb(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    extratags = [(33550, "d", 3, (2.0, 2.0, 0.0), False), (33922, "d", 6, (0, 0, 0, 10.0, 20.0, 0), False)]
    tifffile.imwrite(path, a, photometric="rgb", extratags=extratags)
    im = open_image(path)
    assert im.axes == "yxc" and im.rgb and im.channel_axis is None
    assert im.scale == (2.0, 2.0, 1.0) and im.translate == (-19.0, 11.0, 0.0)
    np.testing.assert_array_equal(im.data[:], a)


def test_bigtiff_multipage_stack(tmp_path):
    a = _ramp((4, 32, 40))
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for plane in a:
            tw.write(plane, compression="zlib", tile=(16, 16))
    im = open_image(path)
    assert im.meta["bigtiff"]
    assert im.shape == (4, 32, 40) and im.axes == "tyx"
    np.testing.assert_array_equal(im.data[2], a[2])


def test_big_endian_uint16_stack(tmp_path):
    a = _ramp((3, 40, 30)).astype(">u2")
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, a, byteorder=">", photometric="minisblack")
    im = open_image(path)
    assert im.meta["byteorder"] == ">"
    assert im.axes == "tyx" and im.dtype.kind == "u" and im.dtype.itemsize == 2
    out = im.read((1, slice(5, 9)))
    np.testing.assert_array_equal(out, a[1, 5:9].astype(np.uint16))
    assert out.dtype.newbyteorder("=") == np.dtype(np.uint16).newbyteorder("=")


def test_ome_tiff_pyramid_subifds(tmp_path):
    a = _ramp((256, 192))
    path = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(a, subifds=2, tile=(64, 64), metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        tw.write(a[::2, ::2], subfiletype=1, tile=(64, 64))
        tw.write(a[::4, ::4], subfiletype=1, tile=(64, 64))
    im = open_image(path)
    assert [lv.shape for lv in im.levels] == [(256, 192), (128, 96), (64, 48)]
    assert all(isinstance(lv, zarr.Array) for lv in im.levels)
    assert im.data is im.levels[0] and im.multiscale
    assert im.scale == (0.5, 0.5)
    np.testing.assert_array_equal(im.levels[2][:], a[::4, ::4])


def test_imagej_hyperstack_spacing(tmp_path):
    a = _ramp((2, 3, 16, 16))
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path, a, imagej=True, resolution=(1 / 0.3, 1 / 0.3), metadata={"axes": "TZYX", "spacing": 2.0, "unit": "um"}
    )
    im = open_image(path)
    assert im.axes == "tzyx"
    assert im.scale[1:] == pytest.approx((2.0, 0.3, 0.3))
    assert im.units["x"] == "micrometer"


@pytest.mark.parametrize(
    ("shape", "rgb", "expected"),
    [
        ((10, 20), None, ("yx", False)),
        ((5, 10, 20), None, ("zyx", False)),
        ((4, 5, 10, 20), None, ("tzyx", False)),
        ((10, 20, 3), None, ("yxc", True)),
        ((10, 20, 4), None, ("yxc", True)),
        ((10, 20, 3), False, ("zyx", False)),
        ((2, 10, 20, 3), None, ("zyxc", True)),
    ],
)
def test_guess_axes(shape, rgb, expected):
    assert guess_axes(shape, rgb=rgb) == expected


def test_generic_multipage_stack(tmp_path):
    a = _ramp((5, 24, 20))
    path = tmp_path / "generic.tif"
    with tifffile.TiffWriter(path, shaped=False) as tw:
        for plane in a:
            tw.write(plane)
    im = open_image(path)
    assert im.shape == (5, 24, 20) and im.axes == "tyx"
    np.testing.assert_array_equal(im.data[:], a)


def test_a_tiff_of_several_images_says_only_the_first_is_read(tmp_path):
    path = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(_ramp((40, 44)))
        w.write(_ramp((2, 30, 32)), metadata={"axes": "CYX"})
    with pytest.warns(UserWarning, match=r"holds 2 images; only the first, \(40, 44\), is read \(the others: 1: "
                                         r"\(2, 30, 32\)\); choose one with series=N"):
        im = open_image(path)
    assert im.shape == (40, 44)


def test_a_chosen_series_of_a_tiff_is_read_without_warning(tmp_path, recwarn):
    """A multi-position OME-TIFF's other positions (a slide's label) could not be read at all:
    the warning named them, and saving each as its own file was the only way."""
    path = tmp_path / "positions.ome.tif"
    second = _ramp((2, 30, 32))
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(_ramp((40, 44)))
        w.write(second, metadata={"axes": "CYX"})
    im = open_image(path, series=1)
    assert im.shape == (2, 30, 32) and im.axes == "cyx" and im.meta["series"] == 1
    np.testing.assert_array_equal(np.asarray(im.data[:]), second)
    assert open_image(path, series=0).shape == (40, 44)
    assert not [w for w in recwarn if "images" in str(w.message)]  # chosen: nothing to warn of
    with pytest.raises(ImageReadError, match=r"holds 2 images, not series 2 \(0: \(40, 44\); 1: \(2, 30, 32\)\)"):
        open_image(path, series=2)
    with pytest.raises(ValueError, match="series must be a whole number"):
        open_image(path, series=-1)
    skio.imsave(tmp_path / "one.png", _ramp((8, 8)).astype(np.uint8), check_contrast=False)
    assert open_image(tmp_path / "one.png", series=0).shape == (8, 8)
    with pytest.raises(ImageReadError, match="holds one image"):
        open_image(tmp_path / "one.png", series=1)


def test_bands_the_file_does_not_call_colour_are_channels_not_rgb(tmp_path):
    bands = _ramp((40, 44, 4))  # red, green, blue, near-infrared: MINISBLACK, the fourth is no alpha
    tifffile.imwrite(tmp_path / "rgbn.tif", bands, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "rgba.tif", bands.astype(np.uint8), photometric="rgb", extrasamples=["unassalpha"])
    im = open_image(tmp_path / "rgbn.tif")
    assert not im.rgb and im.axes == "yxc" and im.channel_axis == 2
    assert open_image(tmp_path / "rgba.tif").rgb


@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
def test_a_fourth_sample_declared_unspecified_is_a_band_not_alpha(tmp_path, planarconfig):
    """A NAIP-style scene (photometric RGB, the fourth sample ExtraSamples 0: unspecified data,
    its near-infrared) opened as RGBA: the near-infrared was carried as opacity, not
    restored, and written back labelled alpha."""
    bands = _ramp((40, 44, 4)).astype(np.uint8)
    stored = bands if planarconfig == "contig" else np.moveaxis(bands, -1, 0)
    tifffile.imwrite(tmp_path / "rgbn.tif", stored, photometric="rgb", extrasamples=[0], planarconfig=planarconfig)
    im = open_image(tmp_path / "rgbn.tif")
    assert not im.rgb and im.data.shape[im.channel_axis] == 4 and not im.meta.get("planar_colour")
    tifffile.imwrite(tmp_path / "rgba.tif", stored, photometric="rgb", extrasamples=["assocalpha"],
                     planarconfig=planarconfig)
    rgba = open_image(tmp_path / "rgba.tif")
    assert rgba.rgb or rgba.meta.get("planar_colour")  # declared opacity: a colour picture with alpha


def test_bands_converted_to_ome_zarr_stay_bands(tmp_path):
    """The README's conversion labelled a 4-band scene red, green, blue, alpha: it reopened as
    RGBA, and the near-infrared band was carried as opacity, not restored."""
    from napari_attnrestore.io import write_ome_zarr

    bands = _ramp((40, 44, 4))
    tifffile.imwrite(tmp_path / "rgbn.tif", bands, photometric="minisblack", planarconfig="contig")
    write_ome_zarr(open_image(tmp_path / "rgbn.tif"), tmp_path / "rgbn.ome.zarr", pyramid=False)
    back = open_image(tmp_path / "rgbn.ome.zarr")
    assert not back.rgb and back.axes == "cyx"
    assert np.array_equal(np.moveaxis(np.asarray(back.data), 0, -1), bands)
    assert "omero" not in zarr.open_group(str(tmp_path / "rgbn.ome.zarr")).attrs["ome"]
    rgba = (bands // 257).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    write_ome_zarr(open_image(tmp_path / "rgba.tif"), tmp_path / "rgba.ome.zarr", pyramid=False)
    assert open_image(tmp_path / "rgba.ome.zarr").rgb  # a colour picture stays one


@pytest.mark.parametrize(("shape", "kw"), [((300, 257), {}), ((3, 2, 130, 90), {}), ((4, 120, 100), {"imagej": True})])
def test_a_one_block_tiff_is_read_row_by_row(tmp_path, monkeypatch, shape, kw):
    """A plain TIFF's single strip (a whole 16384² plane) was decoded whole for every region
    the engine read: 118 s and 1.3 GB for a 512 MB file, 20 s and 0.33 GB read row by row."""
    import napari_attnrestore.io.images as images

    monkeypatch.setattr(images._ContiguousPixels, "ABOVE", 100)  # these small strips count as big
    a = np.random.default_rng(0).integers(0, 60000, shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a, **kw)
    img = open_image(tmp_path / "a.tif")
    b = a.reshape(img.shape)
    assert isinstance(img.levels[0], images._ContiguousPixels)
    np.testing.assert_array_equal(img.to_dask().compute(), b)
    for key in [(..., slice(5, 40), slice(7, 33)), (-1, ...), (..., slice(3, 50, 3), slice(1, 80, 4)), (0,)]:
        np.testing.assert_array_equal(img.levels[0][key], b[key])
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((40, 50, 3), np.uint8))  # samples interleaved: tifffile's store
    assert not isinstance(open_image(tmp_path / "rgb.tif").levels[0], images._ContiguousPixels)


def test_a_one_block_tiff_cut_short_after_opening_is_a_read_error(tmp_path, monkeypatch):
    import napari_attnrestore.io.images as images

    monkeypatch.setattr(images._ContiguousPixels, "ABOVE", 100)
    tifffile.imwrite(tmp_path / "a.tif", np.ones((200, 100), np.uint16))
    img = open_image(tmp_path / "a.tif")
    with open(tmp_path / "a.tif", "r+b") as f:
        f.truncate(img.levels[0].offset + 100 * 100 * 2)
    with pytest.raises(ImageReadError, match="truncated TIFF: row 100 ends past the end of the file"):
        img.to_dask().compute()


def test_an_imagej_origin_is_the_translation(tmp_path):
    """ImageJ's Properties origin (the pixel at calibrated 0) was ignored: translate (0, 0)."""
    tifffile.imwrite(tmp_path / "o.tif", np.zeros((64, 64), np.uint16), imagej=True, resolution=(5.0, 5.0),
                     metadata={"unit": "um", "xorigin": 10, "yorigin": 20})
    img = open_image(tmp_path / "o.tif")
    assert img.scale == pytest.approx((0.2, 0.2)) and img.translate == pytest.approx((-4.0, -2.0))


def test_a_q_axis_beside_a_t_axis_is_not_called_time(tmp_path):
    """tifffile's Q before a real T took the letter t and pushed T to q: the slider named t
    moved through Q."""
    a = np.arange(2 * 3 * 2 * 16 * 16, dtype=np.uint16).reshape(2, 3, 2, 16, 16)
    tifffile.imwrite(tmp_path / "q.tif", a, metadata={"axes": "QTCYX"})
    img = open_image(tmp_path / "q.tif")
    assert img.axes == "qtcyx" and img.shape == a.shape
    np.testing.assert_array_equal(img.to_dask().compute(), a)


def _aperio_slide(path, rng) -> np.ndarray:
    """An Aperio-like slide: tiled RGB baseline and one smaller level, a thumbnail, a label
    and a macro picture, the pixel size only in the description (|MPP = 0.2520|)."""
    base = rng.integers(0, 255, (256, 384, 3), dtype=np.uint8)
    head = "Aperio Image Library v12.0.15 \r\n"
    with tifffile.TiffWriter(path) as tw:
        tw.write(base, tile=(128, 128), photometric="rgb", metadata=None,
                 description=f"{head}384x256 [0,0 384x256] (128x128) RAW/RGB|AppMag = 40|MPP = 0.2520")
        tw.write(base[::4, ::4], photometric="rgb", metadata=None, description=f"{head}384x256 -> 96x64 - ")
        tw.write(base[::2, ::2], tile=(128, 128), photometric="rgb", metadata=None,
                 description=f"{head}384x256 -> 192x128 - ")
        tw.write(base[:40, :60], photometric="rgb", subfiletype=1, metadata=None, description=f"{head}label 60x40")
        tw.write(base[:50, :120], photometric="rgb", subfiletype=9, metadata=None, description=f"{head}macro 120x50")
    return base


def test_a_slide_opens_by_its_scanners_suffix_with_its_pixel_size(tmp_path, rng):
    """From a digital-pathology review: `slide.svs` was refused as an unsupported file type
    (a TIFF tifffile reads), and renamed .tif it lost its 0.252 µm pixels (stated only in the
    description), so a super-resolved slide carried no pixel size; the warning about its
    other images gave shapes, not which is the label or the macro."""
    import warnings

    from napari_attnrestore.io.napari_hooks import napari_get_reader

    base = _aperio_slide(tmp_path / "slide.svs", rng)
    with pytest.warns(UserWarning, match=r"holds 4 images; only the first, Baseline \(256, 384, 3\), is read \(the "
                                         r"others: 1: Thumbnail \(64, 96, 3\), 2: Label \(40, 60, 3\), 3: Macro \(50, 120, 3\)"):
        im = open_image(tmp_path / "slide.svs")
    assert im.rgb and im.scale[:2] == (0.252, 0.252) and im.units == {"y": "micrometer", "x": "micrometer"}
    assert len(im.levels) == 2
    np.testing.assert_array_equal(np.asarray(im.data[100:110, 200:220]), base[100:110, 200:220])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert napari_get_reader(str(tmp_path / "slide.svs")) is not None


def test_unstored_tiles_are_warned_about_and_a_cut_pyramid_level_refused(tmp_path, rng):
    """Scanners leave blank background tiles unstored (byte count 0): they read as black,
    silently. A file cut inside its smaller pyramid levels opened, and failed later when
    napari drew that level."""
    from napari_attnrestore.io.images import DamagedFileError

    image = rng.integers(1, 255, (256, 256), dtype=np.uint8)
    path = tmp_path / "holes.tif"
    tifffile.imwrite(path, image, tile=(64, 64))
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags["TileByteCounts"]
        counts = list(tif.pages.first.databytecounts)
    counts[1] = counts[5] = 0
    with open(path, "r+b") as f:  # as a scanner writes them: two tiles with no bytes stored
        f.seek(tag.valueoffset)
        f.write(np.asarray(counts, {3: "<u2", 4: "<u4", 16: "<u8"}[int(tag.dtype)]).tobytes())
    with pytest.warns(UserWarning, match=r"2 of the 16 tiles or strips of its first plane are not stored"):
        im = open_image(path)
    assert not np.asarray(im.data[0:64, 64:128]).any()

    pyramid = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(pyramid) as tw:
        tw.write(image, subifds=1, tile=(64, 64), compression="zlib")
        tw.write(image[::2, ::2], subfiletype=1, tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(pyramid) as tif:
        level = tif.series[0].levels[1].keyframe
        end = max(o + c for o, c in zip(level.dataoffsets, level.databytecounts, strict=True))
    data = pyramid.read_bytes()
    (tmp_path / "cut.ome.tif").write_bytes(data[:end - 10])  # the smaller level's tiles come last
    with pytest.raises(DamagedFileError, match=r"truncated TIFF \(pyramid level \(128, 128\) data ends at byte"):
        open_image(tmp_path / "cut.ome.tif")
