"""Writers stream dask arrays chunk by chunk and refuse to clobber existing output."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_attnrestore.io import (
    ImageWriteError,
    create_ome_zarr,
    open_image,
    read_ome_metadata,
    write_ome_zarr,
    write_pyramid,
    write_tiff,
)


def _big_source():
    rng = da.random.default_rng(42)
    return rng.integers(0, 60000, size=(4096, 4096), chunks=512, dtype=np.uint16)


def test_write_ome_zarr_streams_dask(tmp_path, recorder):
    src = _big_source()
    path = tmp_path / "big.ome.zarr"
    write_ome_zarr(src, path, "yx", scale=(0.3, 0.3))
    assert recorder.count > 64  # chunk by chunk ...
    assert recorder.max_nbytes <= 2 * 1024 * 1024 * 4  # ... never the whole 32 MiB image
    im = open_image(path)
    assert [lv.shape for lv in im.levels] == [(4096, 4096), (2048, 2048), (1024, 1024), (512, 512)]
    assert bool((da.from_zarr(im.data) == src).all().compute())
    assert zarr.open_group(path, mode="r").attrs["attnrestore"] == {"complete": True}
    assert read_ome_metadata(path)["datasets"][3]["coordinateTransformations"][0]["scale"] == [2.4, 2.4]


def test_write_tiff_streams_dask(tmp_path, recorder):
    src = _big_source()
    path = tmp_path / "big.tif"
    write_tiff(src, path, "yx", tile=(256, 256))
    assert recorder.max_nbytes <= 4096 * 512 * 2 * 2  # one band of rows at a time
    im = open_image(path)
    assert im.data.chunks == (256, 256) and im.meta["bigtiff"]
    assert bool((im.to_dask() == src).all().compute())
    assert [lv.shape for lv in im.levels] == [(4096, 4096), (2048, 2048), (1024, 1024), (512, 512)]  # a pyramid
    assert os.listdir(tmp_path) == ["big.tif"]  # no partial file, no hidden first level left


@pytest.mark.parametrize(("name", "axes", "shape"), [("p.tif", "yx", (2101, 999)), ("p.ome.tif", "tcyx", (2, 2, 2101, 99)),
                                                     ("p.tif", "yxc", (2101, 50, 3)), ("p.ome.tif", "czyx", (2, 2, 2101, 40))])
def test_a_large_tiff_gets_a_pyramid_of_halved_levels(tmp_path, name, axes, shape):
    """Levels are SubIFDs of each plane, 2x2 means (integers rounded, odd edges repeated) as
    the OME-Zarr writer's, halved until y and x are at most 512; the reader shows them."""
    from napari_attnrestore.io.ome_zarr import _downsample

    src = np.random.default_rng(0).integers(0, 60000, shape, dtype=np.uint16)
    computed = []

    def restored(block):  # stands for the model: each block must be computed once
        if block.size:
            computed.append(block.shape)
        return block

    lazy = da.from_array(src, chunks=300)
    write_tiff(lazy.map_blocks(restored, dtype=src.dtype), tmp_path / name, axes, tile=(64, 64))
    assert len(computed) == lazy.npartitions  # the levels come from the written bands, not a second pass
    im = open_image(tmp_path / name)
    iy = axes.index("y")
    assert [lv.shape[iy] for lv in im.levels] == [2101, 1051, 526, 263]
    expected = da.from_array(src)
    for lv in im.levels[1:]:
        expected, _ = _downsample(expected, iy, iy + 1, "mean", (1,) * iy + (512, 512) + (3,) * (axes[-1] == "c"))
        np.testing.assert_array_equal(np.asarray(lv[...]), expected.compute())
    with tifffile.TiffFile(tmp_path / name) as tif:
        assert len(tif.series) == 1 and tif.pages[0].subifds is not None and len(tif.pages[0].subifds) == 3


@pytest.mark.parametrize(("shape", "chunks", "axes"), [((600, 500), (300, 100), "yx"),  # a chunk row over the cap
                                                    ((3, 200, 90), (3, 70, 50), "cyx")])  # a chunk over 3 pages
def test_a_lazy_result_is_computed_once_per_chunk(tmp_path, monkeypatch, shape, chunks, axes):
    """Reading part of a dask chunk computes all of it: bands too large to hold, and chunks
    spanning pages, are computed once into a hidden zarr next to the output instead."""
    import napari_attnrestore.io.tiff as tiff

    monkeypatch.setattr(tiff, "_BAND_BYTES", 20_000)
    src = np.random.default_rng(1).integers(0, 60000, shape, dtype=np.uint16)
    computed = []

    def restored(block):
        if block.size:
            computed.append(block.shape)
        return block

    lazy = da.from_array(src, chunks=chunks)
    write_tiff(lazy.map_blocks(restored, dtype=src.dtype), tmp_path / "out.tif", axes, tile=(32, 32))
    assert len(computed) == lazy.npartitions
    np.testing.assert_array_equal(open_image(tmp_path / "out.tif").data[...], src)
    assert os.listdir(tmp_path) == ["out.tif"]


def test_thin_dask_chunk_rows_are_read_together():
    from napari_attnrestore.io.tiff import _BAND_BYTES, _row_bands

    thin = da.zeros((1000, 3000), np.uint8, chunks=(1, 3000))
    assert _row_bands(thin, 0, 256) == [(0, 256), (256, 512), (512, 768), (768, 1000)]  # a tile row each, not 1000
    usual = da.zeros((1000, 3000), np.uint8, chunks=(300, 3000))
    assert _row_bands(usual, 0, 256) == [(0, 300), (300, 600), (600, 900), (900, 1000)]  # a chunk row each
    wide = da.zeros((6, 2 * _BAND_BYTES), np.uint8, chunks=(2, 1000))
    assert _row_bands(wide, 0, 256) == [(0, 2), (2, 4), (4, 6)]  # each over the cap: one chunk row at a time


def test_a_large_mask_opens_with_false_and_true_apart(tmp_path):
    """The smallest level of a mask OR-ed 2x2 blocks to all True; its limits [1, 2] showed
    False and True both black."""
    from napari_attnrestore.io.napari_hooks import napari_get_reader

    mask = np.random.default_rng(0).random((2100, 50)) > 0.5
    write_tiff(mask, tmp_path / "m.tif", "yx")
    data, kwargs, _ = napari_get_reader(str(tmp_path / "m.tif"))(str(tmp_path / "m.tif"))[0]
    assert len(data) > 1 and kwargs["contrast_limits"] == [0.0, 1.0]


def test_tiff_pyramid_levels_on_request_and_never_by_default_for_small_or_geotiffs(tmp_path):
    img = np.zeros((300, 200), np.float32)
    write_tiff(img, tmp_path / "small.tif", "yx")
    write_tiff(img, tmp_path / "asked.tif", "yx", pyramid=2)
    write_tiff(img, tmp_path / "none.tif", "yx", pyramid=0)
    assert [len(open_image(tmp_path / n).levels) for n in ("small.tif", "asked.tif", "none.tif")] == [1, 3, 1]
    assert [lv.shape for lv in open_image(tmp_path / "asked.tif").levels] == [(300, 200), (150, 100), (75, 50)]
    write_tiff(np.zeros((3, 3), np.uint8), tmp_path / "tiny.tif", "yx", pyramid=9)  # down to 1x1, no further
    assert [lv.shape for lv in open_image(tmp_path / "tiny.tif").levels] == [(3, 3), (2, 2), (1, 1)]
    write_tiff(np.zeros((300, 3), np.uint8), tmp_path / "strip.tif", "yx", pyramid=5)  # halved while x can be:
    with tifffile.TiffFile(tmp_path / "strip.tif") as tif:  # a 1-pixel side that stays 1 is no level to tifffile
        assert len(tif.series) == 1 and [lv.shape for lv in tif.series[0].levels] == [(300, 3), (150, 2), (75, 1)]
    scale = (33550, 12, 3, (30.0, 30.0, 0.0), True)  # ModelPixelScale: a GeoTIFF
    write_tiff(np.zeros((2200, 10), np.uint8), tmp_path / "geo.tif", "yx", extratags=[scale])
    assert len(open_image(tmp_path / "geo.tif").levels) == 1  # GDAL makes its own overviews (gdaladdo)
    stack = np.zeros((2, 2200, 10), np.uint8)
    write_tiff(stack, tmp_path / "z.tif", "zyx")  # tifffile would not take its levels for halved ones
    assert len(open_image(tmp_path / "z.tif").levels) == 1
    with pytest.raises(ImageWriteError, match="only kept in OME-TIFF"):
        write_tiff(stack, tmp_path / "bad.tif", "zyx", pyramid=1)
    with pytest.raises(ImageWriteError, match="pyramid must be a level count"):
        write_tiff(img, tmp_path / "bad.tif", "yx", pyramid=-1)
    assert not (tmp_path / "bad.tif").exists()


def test_write_tiff_rgb_and_ome(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (100, 70, 3), dtype=np.uint8)
    write_tiff(rgb, tmp_path / "rgb.tif", "yxc", tile=(32, 32))
    im = open_image(tmp_path / "rgb.tif")
    assert im.axes == "yxc" and im.rgb
    np.testing.assert_array_equal(im.data[:], rgb)
    stack = np.arange(3 * 40 * 50, dtype=np.float32).reshape(3, 40, 50)
    write_tiff(da.from_array(stack, chunks=(1, 20, 20)), tmp_path / "s.ome.tif", "zyx", scale=(2.0, 0.5, 0.25))
    im = open_image(tmp_path / "s.ome.tif")
    assert im.axes == "zyx" and im.scale == (2.0, 0.5, 0.25)
    assert im.units == {"x": "micrometer", "y": "micrometer", "z": "micrometer"}
    np.testing.assert_array_equal(im.data[:], stack)


def test_write_tiff_moves_yx_last(tmp_path):
    a = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    write_tiff(a.T, tmp_path / "t.tif", "xy", scale=(0.25, 0.5))
    im = open_image(tmp_path / "t.tif")
    assert im.axes == "yx" and im.scale == pytest.approx((0.5, 0.25))
    np.testing.assert_array_equal(im.data[:], a)


def test_plain_tiff_scale_roundtrip(tmp_path):
    write_tiff(np.zeros((32, 32), np.uint8), tmp_path / "p.tif", "yx", scale=(0.65, 0.65))
    im = open_image(tmp_path / "p.tif")
    assert im.scale == pytest.approx((0.65, 0.65)) and im.units["x"] == "micrometer"


def test_a_tiff_of_unknown_pixel_size_claims_none(tmp_path):
    """napari's default scale of ones with no unit is written as no size, not 1 micrometer."""
    import tifffile

    for name in ("p.tif", "p.ome.tif"):
        write_tiff(np.zeros((32, 32), np.uint8), tmp_path / name, "yx", scale=(1.0, 1.0))
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert "XResolution" not in tif.pages[0].tags or tif.pages[0].tags["ResolutionUnit"].value == 1
            assert "PhysicalSizeX" not in (tif.ome_metadata or "")
        assert open_image(tmp_path / name).units == {}


def test_plain_tiff_keeps_z_spacing_time_interval_and_units(tmp_path):
    stack = np.zeros((2, 3, 16, 16), np.uint16)
    write_tiff(stack, tmp_path / "tz.tif", "tzyx", scale=(30.0, 2.0, 0.1, 0.1),
               units={"t": "millisecond", "z": "nanometer", "y": "nanometer", "x": "nanometer"})
    im = open_image(tmp_path / "tz.tif")  # an ImageJ hyperstack: its frame interval is in seconds
    assert im.axes == "tzyx" and im.scale == pytest.approx((0.03, 2.0, 0.1, 0.1))
    assert im.units == {"t": "second", "z": "nanometer", "y": "nanometer", "x": "nanometer"}
    write_tiff(stack.astype(np.uint32), tmp_path / "tz32.tif", "tzyx", scale=(30.0, 2.0, 0.1, 0.1),
               units={"t": "millisecond", "z": "nanometer", "y": "nanometer", "x": "nanometer"})
    im = open_image(tmp_path / "tz32.tif")  # no ImageJ dtype: tifffile's description keeps every unit
    assert im.axes == "tzyx" and im.scale == pytest.approx((30.0, 2.0, 0.1, 0.1))
    assert im.units == {"t": "millisecond", "z": "nanometer", "y": "nanometer", "x": "nanometer"}


@pytest.mark.parametrize(("dtype", "axes", "shape", "stored"), [
    (np.uint16, "czyx", (3, 2, 40, 30), "zcyx"), (np.float32, "ctyx", (2, 3, 40, 30), "tcyx"),
    (np.uint8, "tyxc", (2, 40, 30, 3), "tyxc"), (np.int16, "zyx", (4, 40, 30), "zyx")])
def test_a_plain_tiff_stack_is_an_imagej_hyperstack(tmp_path, dtype, axes, shape, stored):
    """Fiji opens our tiled TIFFs through Bio-Formats, which takes channels, slices and frames
    (and z spacing, frame interval, unit) only from an ImageJ description."""
    src = np.random.default_rng(0).integers(0, 120, shape).astype(dtype)
    scale = {"c": 1.0, "t": 2.0, "z": 0.5, "y": 0.2, "x": 0.2}
    write_tiff(src, tmp_path / "h.tif", axes, scale=[scale[a] for a in axes],
               units={"t": "minute", "z": "micrometer", "y": "micrometer", "x": "micrometer"})
    with tifffile.TiffFile(tmp_path / "h.tif") as tif:
        ij = tif.imagej_metadata
        assert tif.is_imagej and ij["hyperstack"] and ij["unit"] == "micron"
        assert ij.get("channels", 1) == (shape[axes.index("c")] if "c" in axes[:-2] else 1)  # RGB: samples
        assert ij.get("slices", 1) == (shape[axes.index("z")] if "z" in axes else 1)
        assert ij.get("frames", 1) == (shape[axes.index("t")] if "t" in axes else 1)
        assert ij.get("spacing") == (0.5 if "z" in axes else None) and ij.get("finterval") == (120.0 if "t" in axes else None)
        assert tif.pages[0].get_resolution() == pytest.approx((5.0, 5.0))  # pixels per micron
    im = open_image(tmp_path / "h.tif")
    assert im.axes == stored
    np.testing.assert_array_equal(np.asarray(im.data[...]), np.transpose(src, [axes.index(a) for a in stored]))
    assert dict(zip(im.axes, im.scale, strict=True)) == pytest.approx({a: {"t": 120.0}.get(a, scale[a]) for a in stored})
    if "z" in axes:
        with pytest.raises(ImageWriteError, match="only kept in OME-TIFF"):
            write_tiff(src, tmp_path / "p.tif", axes, pyramid=1)
    else:  # a pyramid, which an ImageJ file cannot hold, is kept in tifffile's layout
        write_tiff(src, tmp_path / "p.tif", axes, pyramid=1)
        im = open_image(tmp_path / "p.tif")
        assert len(im.levels) == 2 and im.axes == axes and not im.meta.get("imagej")


def test_a_stack_with_a_size_1_axis_or_a_large_one_keeps_tifffiles_layout(tmp_path):
    """An ImageJ file drops size-1 axes (a restore would change the number of dimensions) and
    holds no pyramid (a large multichannel slide lost it)."""
    write_tiff(np.zeros((1, 4, 40, 50), np.uint16), tmp_path / "t1.tif", "tzyx")
    assert open_image(tmp_path / "t1.tif").shape == (1, 4, 40, 50)
    write_tiff(da.zeros((2, 2100, 300), np.uint16, chunks=(1, 512, 300)), tmp_path / "big.tif", "cyx")
    im = open_image(tmp_path / "big.tif")
    assert im.axes == "cyx" and [lv.shape for lv in im.levels][:2] == [(2, 2100, 300), (2, 1050, 150)]


def test_plain_tiff_channels_get_no_length_unit(tmp_path):
    write_tiff(np.zeros((16, 16, 3), np.uint8), tmp_path / "rgb.tif", "yxc", scale=(0.5, 0.5, 1.0))
    write_tiff(np.zeros((2, 16, 16), np.uint16), tmp_path / "cyx.tif", "cyx", scale=(1.0, 0.5, 0.5))
    for name in ("rgb.tif", "cyx.tif"):
        assert set(open_image(tmp_path / name).units) == {"y", "x"}


class _Interrupt(BaseException):
    """Stands for Ctrl-C (a BaseException, not an Exception), without interrupting pytest."""


def test_an_interrupted_tiff_write_leaves_no_partial_file(tmp_path):
    def interrupted(block):
        if block.size:  # not dask's empty probe of the output type
            raise _Interrupt
        return block

    data = da.zeros((64, 64), dtype=np.uint8, chunks=32).map_blocks(interrupted, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
    with pytest.raises(_Interrupt):
        write_tiff(data, tmp_path / "out.tif")
    with pytest.raises(_Interrupt):
        write_tiff(data, tmp_path / "out.tif", pyramid=2)  # its first level's hidden store goes too
    assert os.listdir(tmp_path) == []


def test_refuse_overwrite(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    write_ome_zarr(a, tmp_path / "a.ome.zarr", "yx")
    with pytest.raises(
        ImageWriteError, match=r"a\.ome\.zarr: already exists; pass overwrite=True \(CLI: --overwrite\)"
    ):
        write_ome_zarr(a, tmp_path / "a.ome.zarr", "yx")
    write_ome_zarr(a + 1, tmp_path / "a.ome.zarr", "yx", overwrite=True)
    assert int(open_image(tmp_path / "a.ome.zarr").data[0, 0]) == 1
    write_tiff(a, tmp_path / "a.tif")
    with pytest.raises(ImageWriteError, match="already exists"):
        write_tiff(a, tmp_path / "a.tif")
    write_tiff(a + 2, tmp_path / "a.tif", overwrite=True)
    assert int(open_image(tmp_path / "a.tif").data[0, 0]) == 2
    with pytest.raises(ImageWriteError, match="already exists"):
        create_ome_zarr(tmp_path / "a.ome.zarr", (8, 8), np.uint8, None, "yx")


@pytest.mark.parametrize("fails", [_Interrupt, OSError])
def test_a_failed_overwrite_leaves_the_store_it_was_to_replace(tmp_path, fails):
    """Saving over a good store a layer whose chunk cannot be read deleted the old store first,
    then the new one's partial remains: neither was left."""
    def failing(block):
        if block.size:
            raise fails("a chunk cannot be read")
        return block

    good = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    write_ome_zarr(good, tmp_path / "a.ome.zarr", "yx")
    bad = da.zeros((64, 64), dtype=np.uint16, chunks=32).map_blocks(failing, dtype=np.uint16,
                                                                     meta=np.empty((0, 0), np.uint16))
    with pytest.raises((_Interrupt, ImageWriteError)):
        write_ome_zarr(bad, tmp_path / "a.ome.zarr", "yx", overwrite=True)
    assert os.listdir(tmp_path) == ["a.ome.zarr"]  # nothing aside or half-written left
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "a.ome.zarr").data), good)
    with pytest.raises(ImageWriteError, match="scale must be positive"):  # refused after setting it aside
        write_ome_zarr(good, tmp_path / "a.ome.zarr", "yx", scale=(-1, 1), overwrite=True)
    assert os.listdir(tmp_path) == ["a.ome.zarr"]
    write_ome_zarr(good + 1, tmp_path / "a.ome.zarr", "yx", overwrite=True)
    assert os.listdir(tmp_path) == ["a.ome.zarr"] and int(open_image(tmp_path / "a.ome.zarr").data[0, 0]) == 1


def test_overwrite_never_deletes_a_non_zarr_folder(tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.txt").write_text("do not delete")
    with pytest.raises(ImageWriteError, match="not a zarr store"):
        create_ome_zarr(folder, (8, 8), np.uint8, None, "yx", overwrite=True)
    assert (folder / "thesis.txt").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_parent(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(ImageWriteError, match="not writable"):
            create_ome_zarr(parent / "x.ome.zarr", (8, 8), np.uint8, None, "yx")
    finally:
        parent.chmod(0o700)


def test_create_ome_zarr_metadata(tmp_path):
    z = create_ome_zarr(
        tmp_path / "e.ome.zarr", (2, 3, 100, 80), np.float32, (1, 1, 64, 64), "tcyx",
        scale={"t": 5.0, "y": 0.5, "x": 0.5}, units={"t": "s", "y": "µm", "x": "µm"}, name="empty",
        extra_attrs={"note": "hi"},
    )  # fmt: skip
    assert isinstance(z, zarr.Array) and z.chunks == (1, 1, 64, 64)
    ms = read_ome_metadata(tmp_path / "e.ome.zarr")
    assert ms["name"] == "empty"
    assert [a["type"] for a in ms["axes"]] == ["time", "channel", "space", "space"]
    assert [a.get("unit") for a in ms["axes"]] == ["second", None, "micrometer", "micrometer"]
    assert ms["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [5.0, 1.0, 0.5, 0.5]}]
    assert zarr.open_group(tmp_path / "e.ome.zarr", mode="r").attrs["note"] == "hi"


def test_write_pyramid_levels_and_int_rounding(tmp_path):
    a = np.array([[0, 1, 2], [1, 2, 9], [4, 4, 4]], dtype=np.uint8)
    path = tmp_path / "p.ome.zarr"
    write_ome_zarr(a, path, "yx", pyramid=False)
    paths = write_pyramid(path, levels=2)
    assert paths == ["0", "1", "2"]
    im = open_image(path)
    assert im.levels[1].dtype == np.uint8
    # odd sizes are edge-padded: block (0,1) is [[2, 2], [9, 9]] -> 5.5 -> 6
    np.testing.assert_array_equal(im.levels[1][:], [[1, 6], [4, 4]])
    assert im.levels[2].shape == (1, 1)
    assert write_pyramid(path, levels=1, method="max") == ["0", "1"]
    np.testing.assert_array_equal(open_image(path).levels[1][:], [[2, 9], [4, 4]])


def test_write_ome_zarr_takes_one_number_for_the_chunk_side(tmp_path):
    """`restore` takes chunks=128; the writer raised TypeError: 'int' object is not iterable."""
    write_ome_zarr(np.zeros((3, 300, 200), np.uint8), tmp_path / "c.ome.zarr", axes="zyx", chunks=128, pyramid=False)
    assert zarr.open_array(str(tmp_path / "c.ome.zarr" / "0"), mode="r").chunks == (1, 128, 128)


def test_default_chunks_refuses_a_side_below_one_pixel():
    """default_chunks(size=0) gave one-pixel chunks (a file per pixel)."""
    from napari_attnrestore.io import default_chunks

    assert default_chunks((3, 300, 200), "zyx", 128) == (1, 128, 128)
    for size in (0, -5, 2.5):
        with pytest.raises(ValueError, match="chunk size must be a whole number of at least 1 pixel"):
            default_chunks((300, 200), "yx", size)


def test_rgb_is_stored_in_ngff_axis_order_and_opens_channel_last(tmp_path, rng):
    """NGFF puts channel before space; a ``yxc`` store was invalid (ome-zarr-models: "All space
    axes must be at the end"). It is stored ``cyx`` with red, green and blue channels, pyramid
    included, and opens as the channel-last RGB image it was."""
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / "rgb.ome.zarr"
    write_ome_zarr(rgb, path, "yxc", chunks=16, scale={"y": 0.5, "x": 0.25}, pyramid=False)
    write_pyramid(path, levels=1)
    ms = read_ome_metadata(path)
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 0.5, 0.25]}]
    stored = zarr.open_array(str(path / "0"), mode="r")
    assert stored.shape == (3, 40, 50) and stored.chunks == (3, 16, 16)
    np.testing.assert_array_equal(stored[:], np.moveaxis(rgb, -1, 0))
    im = open_image(path)
    assert (im.axes, im.rgb, im.shape, im.scale, im.channel_axis) == ("yxc", True, (40, 50, 3), (0.5, 0.25, 1.0), None)
    assert im.data.chunks == (16, 16, 3) and im.levels[1].shape == (20, 25, 3)
    np.testing.assert_array_equal(im.read(), rgb)
    np.testing.assert_array_equal(im.to_dask().compute(), rgb)
    np.testing.assert_array_equal(im.read((slice(3, 9), 4)), rgb[3:9, 4])  # ints drop their axes
    np.testing.assert_array_equal(im.data[..., 1], rgb[..., 1])
    np.testing.assert_array_equal(im.data[7], rgb[7])


def test_only_red_green_blue_channels_open_as_rgb(tmp_path, rng):
    """Three 16-bit fluorescence channels that happen to be coloured red, green and blue stay
    channels; a channel axis after z is moved before it (zcyx is stored czyx)."""
    stack = rng.integers(0, 4000, (3, 20, 30), dtype=np.uint16)
    z = create_ome_zarr(tmp_path / "fl.ome.zarr", stack.shape, stack.dtype, None, "cyx", omero={"channels": [
        {"label": name, "color": colour} for name, colour in (("Cy5", "FF0000"), ("GFP", "00FF00"), ("DAPI", "0000FF"))]})
    z[:] = stack
    im = open_image(tmp_path / "fl.ome.zarr")
    assert im.axes == "cyx" and not im.rgb and im.channel_axis == 0
    write_ome_zarr(rng.random((4, 2, 8, 8)).astype(np.float32), tmp_path / "zc.ome.zarr", "zcyx", pyramid=False)
    assert [a["name"] for a in read_ome_metadata(tmp_path / "zc.ome.zarr")["axes"]] == ["c", "z", "y", "x"]
    assert open_image(tmp_path / "zc.ome.zarr").shape == (2, 4, 8, 8)


def test_sizes_without_a_unit_are_not_written_as_micrometers(tmp_path):
    """An uncalibrated image super-resolved x2 has pixel size 0.5 in pixels; it was written
    as 0.5 micrometer (XResolution 20000/cm, OME PhysicalSizeX), and an OME file with only a
    z spacing got X and Y sizes of 1 micrometer."""
    img = np.zeros((16, 16), np.uint8)
    write_tiff(img, tmp_path / "a.ome.tif", "yx", scale=(0.5, 0.5), units={})
    write_tiff(img, tmp_path / "a.tif", "yx", scale=(0.5, 0.5), units={})
    with tifffile.TiffFile(tmp_path / "a.ome.tif") as tif:
        assert "PhysicalSize" not in tif.ome_metadata
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        tags = tif.pages[0].tags
        assert "XResolution" not in tags or tags["ResolutionUnit"].value == 1  # no unit: Fiji reads pixels
    assert open_image(tmp_path / "a.tif").units == {}
    write_tiff(np.zeros((2, 16, 16), np.uint8), tmp_path / "z.ome.tif", "zyx", scale=(0.3, 1.0, 1.0),
               units={"z": "micrometer"})
    with tifffile.TiffFile(tmp_path / "z.ome.tif") as tif:
        xml = tif.ome_metadata
    assert 'PhysicalSizeZ="0.3"' in xml and "PhysicalSizeX" not in xml
    write_tiff(img, tmp_path / "m.tif", "yx", scale=(0.5, 0.5))  # the API without units: micrometers, as documented
    assert open_image(tmp_path / "m.tif").units == {"y": "micrometer", "x": "micrometer"}


def test_ome_units_are_ome_symbols_and_unknown_ones_are_left_out(tmp_path):
    """'minute' and 'degree' made OME-XML that the schema rejects (OME has 'min', and no degrees)."""
    write_tiff(np.zeros((2, 16, 16), np.uint8), tmp_path / "t.ome.tif", "tyx", scale=(2.0, 0.5, 0.5),
               units={"t": "minute", "y": "degree", "x": "degree"})
    with tifffile.TiffFile(tmp_path / "t.ome.tif") as tif:
        xml = tif.ome_metadata
    assert 'TimeIncrementUnit="min"' in xml and "PhysicalSizeX" not in xml and "degree" not in xml


def test_imagej_frame_interval_keeps_its_unit(tmp_path):
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((3, 16, 16), np.uint8), imagej=True,
                     metadata={"axes": "TYX", "finterval": 2.0, "tunit": "min"})
    im = open_image(tmp_path / "ij.tif")
    assert im.scale[0] == 2.0 and im.units["t"] == "minute"  # was 2 seconds


def test_a_killed_writer_leaves_no_hidden_partial_for_long(tmp_path):
    """A SIGKILL mid-write leaves .NAME.partial-PID, which nothing removed; the next write of
    that name removes the partials of processes that are gone, not those of live ones."""
    import subprocess

    finished = subprocess.Popen(["true"])
    finished.wait()
    from napari_attnrestore.io._output import HOST as _HOST

    orphan = tmp_path / f".out.tif.partial-{_HOST}-{finished.pid}"
    live = tmp_path / f".out.tif.partial-{_HOST}-{os.getppid()}"
    elsewhere = tmp_path / f".out.tif.partial-otherhost-{finished.pid}"  # a shared folder: not ours to judge
    elsewhere.write_bytes(b"II*\x00")
    orphan.write_bytes(b"II*\x00")
    live.write_bytes(b"II*\x00")
    levels = tmp_path / f".out.tif.levels-{_HOST}-{finished.pid}"  # a killed writer's pyramid level
    (levels / "c").mkdir(parents=True)
    # a live process writing that name is another job: two jobs writing one .tif both 'succeeded',
    # the one that ended last replacing the other's result
    with pytest.raises(ImageWriteError, match=rf"out\.tif: another job \(process {os.getppid()} on this machine\)"):
        write_tiff(np.zeros((16, 16), np.uint8), tmp_path / "out.tif", "yx")
    assert not orphan.exists() and live.exists() and elsewhere.exists() and not levels.exists()
    live.unlink()
    write_tiff(np.zeros((16, 16), np.uint8), tmp_path / "out.tif", "yx")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.tif", elsewhere.name])


def test_a_tiff_that_appears_while_one_is_written_is_left_as_it_is(tmp_path):
    """Without overwrite, a file of the name that another job wrote meanwhile was replaced."""
    theirs = tmp_path / "out.tif"

    def meanwhile(block):
        if block.size and not theirs.exists():
            tifffile.imwrite(theirs, np.full((8, 8), 7, np.uint8))
        return block

    data = da.zeros((64, 64), dtype=np.uint8, chunks=32).map_blocks(meanwhile, dtype=np.uint8,
                                                                     meta=np.empty((0, 0), np.uint8))
    with pytest.raises(ImageWriteError, match="appeared while this one was written"):
        write_tiff(data, theirs, "yx")
    assert tifffile.imread(theirs).tolist() == np.full((8, 8), 7).tolist()
    assert os.listdir(tmp_path) == ["out.tif"]


def test_ome_sizes_given_with_symbols_are_kept(tmp_path):
    write_tiff(np.zeros((16, 16), np.uint8), tmp_path / "a.ome.tif", "yx", scale=(0.2, 0.2), units="µm")
    with tifffile.TiffFile(tmp_path / "a.ome.tif") as tif:
        assert 'PhysicalSizeX="0.2"' in tif.ome_metadata and 'PhysicalSizeXUnit="µm"' in tif.ome_metadata


def test_ome_tiff_keeps_channel_names_colours_and_origin(tmp_path):
    """OME-TIFF channel names (DAPI, GFP) were lost reading and writing, and its origin on
    writing: '.ome.tif keeps everything' did not hold."""
    a = np.zeros((2, 3, 32, 32), np.uint16)
    omero = {"channels": [{"label": "DAPI", "color": "0000FF"}, {"label": "GFP", "color": "00FF00"}]}
    units = {ax: "micrometer" for ax in "zyx"}
    write_tiff(a, tmp_path / "a.ome.tif", axes="czyx", scale=(1, 2, 0.5, 0.5), units=units, translate=(0, 5, 20, 10),
               omero=omero)
    img = open_image(tmp_path / "a.ome.tif")
    assert img.meta["ome"]["omero"] == omero and img.translate == (0.0, 5.0, 20.0, 10.0)
    # and on to OME-Zarr, as a restore of it would
    back = open_image(write_ome_zarr(img, tmp_path / "a.ome.zarr"))
    assert [c["label"] for c in back.meta["ome"]["omero"]["channels"]] == ["DAPI", "GFP"]
    assert back.translate == img.translate
    # names that do not match the channels are left out, not written wrong
    write_tiff(a, tmp_path / "b.ome.tif", axes="czyx", omero={"channels": [{"label": "only one"}]})
    assert "omero" not in open_image(tmp_path / "b.ome.tif").meta["ome"]


def test_a_plain_tiff_keeps_the_origin_and_ome_planes_their_own_z(tmp_path):
    """A plain .tif dropped the origin, so a super-resolved result (origin a quarter input
    pixel back) or a cropped one no longer lay over its input; an OME-TIFF z stack gave every
    plane the first plane's PositionZ."""
    units = {ax: "micrometer" for ax in "zyx"}
    # one plane: tifffile's description; a hyperstack: ImageJ's origin (in pixels); no sizes: pixels
    cases = [(np.zeros((32, 32), np.uint16), "yx", (0.25, 0.25), (49.875, 99.875)),
             (np.zeros((3, 2, 32, 32), np.uint16), "zcyx", (2.0, 1.0, 0.5, 0.5), (10.0, 0.0, -3.25, 7.5)),
             (np.zeros((32, 32), np.float32), "yx", None, (4.0, -6.0))]
    for k, (a, axes, scale, translate) in enumerate(cases):
        path = tmp_path / f"{k}.tif"
        write_tiff(a, path, axes=axes, scale=scale, units=units if scale else None, translate=translate)
        img = open_image(path)
        assert img.axes == axes and img.translate == pytest.approx(translate)
        assert img.scale == pytest.approx(scale or (1.0, 1.0))
    with tifffile.TiffFile(tmp_path / "1.tif") as tif:  # what Fiji reads
        assert tif.imagej_metadata["xorigin"] == -15.0 and tif.imagej_metadata["yorigin"] == 6.5
    write_tiff(np.zeros((3, 16, 16), np.uint16), tmp_path / "z.ome.tif", axes="zyx", scale=(2.0, 1.0, 1.0),
               units=units, translate=(10.0, 0.0, 0.0))
    with tifffile.TiffFile(tmp_path / "z.ome.tif") as tif:
        planes = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]["Plane"]
    assert [(p["TheZ"], p["PositionZ"]) for p in planes] == [(0, 10.0), (1, 12.0), (2, 14.0)]
    assert open_image(tmp_path / "z.ome.tif").translate == (10.0, 0.0, 0.0)


@pytest.mark.parametrize("name", ["a.ome.tif", "a.tif"])
def test_a_time_origin_is_kept_by_tiff_outputs(tmp_path, name):
    """A time series starting at t = 100 s came back from .tif and .ome.tif at 0 (OME-Zarr
    kept it): OME-TIFF now writes each plane's DeltaT, an ImageJ hyperstack a "torigin"."""
    units = {"t": "second", "y": "micrometer", "x": "micrometer"}
    write_tiff(np.zeros((3, 2, 16, 16), np.uint16), tmp_path / name, axes="tcyx", scale=(2.0, 1.0, 0.5, 0.5),
               units=units, translate=(100.0, 0.0, 1.0, 2.0))
    img = open_image(tmp_path / name)
    assert img.translate == pytest.approx((100.0, 0.0, 1.0, 2.0)) and img.scale[0] == 2.0
    if name.endswith(".ome.tif"):
        with tifffile.TiffFile(tmp_path / name) as tif:
            planes = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]["Plane"]
        assert [(p["TheT"], p["DeltaT"]) for p in planes if p["TheC"] == 0] == [(0, 100.0), (1, 102.0), (2, 104.0)]


def test_ome_plane_positions_in_another_unit_than_the_pixels_are_converted(tmp_path):
    """Positions in nm over pixel sizes in µm (as some acquisition software writes) were
    dropped: the image opened at the origin."""
    xml = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
           '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="16" SizeY="16" '
           'SizeC="1" SizeZ="1" SizeT="1" PhysicalSizeX="0.5" PhysicalSizeXUnit="&#181;m" PhysicalSizeY="0.5" '
           'PhysicalSizeYUnit="&#181;m"><Channel ID="Channel:0:0" SamplesPerPixel="1"/><TiffData IFD="0" PlaneCount="1"/>'
           '<Plane TheC="0" TheZ="0" TheT="0" PositionX="1500" PositionXUnit="nm" PositionY="2.5" '
           'PositionYUnit="mm"/></Pixels></Image></OME>')
    tifffile.imwrite(tmp_path / "p.ome.tif", np.zeros((16, 16), np.uint8), description=xml, metadata=None)
    assert open_image(tmp_path / "p.ome.tif").translate == (2500.0, 1.5)


def test_an_ome_zarr_cut_short_is_no_image_to_other_readers(tmp_path, monkeypatch):
    """A killed write (no chance to remove the store) left full NGFF metadata over unwritten
    chunks: other readers showed zeros as data."""
    import json

    from napari_attnrestore.io import ome_zarr

    def killed(*args, **kwargs):
        raise _Interrupt()

    monkeypatch.setattr(ome_zarr, "_store", killed)
    monkeypatch.setattr(ome_zarr, "remove_output", lambda path: None)  # as after SIGKILL: nothing cleans up
    with pytest.raises(_Interrupt):
        write_ome_zarr(np.ones((64, 64), np.uint8), tmp_path / "a.ome.zarr", axes="yx")
    attrs = json.loads((tmp_path / "a.ome.zarr" / "zarr.json").read_text())["attributes"]
    assert "ome" not in attrs and "multiscales" not in attrs and attrs["attnrestore"]["complete"] is False
    with pytest.raises(ValueError, match="unfinished"):
        open_image(tmp_path / "a.ome.zarr")


def test_writer_options_are_checked(tmp_path):
    """samples='bogus' and 'rgb' on two channels were written as gray pages; chunks=-1 or 0
    made one-pixel chunks (4096 files for 64 x 64), and three sides for two axes passed."""
    from napari_attnrestore.io import ImageWriteError, write_ome_zarr, write_tiff

    two = np.zeros((2, 32, 32), np.uint8)
    with pytest.raises(ImageWriteError, match="samples must be None, 'bands' or 'rgb'"):
        write_tiff(two, tmp_path / "a.tif", axes="cyx", samples="bogus")
    with pytest.raises(ImageWriteError, match="3 or 4 colour channels; this image has 2"):
        write_tiff(two, tmp_path / "a.tif", axes="cyx", samples="rgb")
    for bad, said in ((-1, "at least 1 pixel"), (0, "at least 1 pixel"), ((16, 16, 16), "3 sides for 2 axes")):
        with pytest.raises(ImageWriteError, match=said):
            write_ome_zarr(np.zeros((64, 64), np.uint8), tmp_path / "a.ome.zarr", axes="yx", chunks=bad)
    assert not (tmp_path / "a.tif").exists() and not (tmp_path / "a.ome.zarr").exists()


def test_a_killed_writers_pid_given_to_another_process_blocks_nothing(tmp_path):
    """An OOM-killed write left .out.tif.partial-HOST-PID; once PID named an unrelated live
    process, every write of that name was refused to 'wait for it to end'."""
    from napari_attnrestore.io._output import HOST

    stale = tmp_path / f".out.tif.partial-{HOST}-{os.getppid()}"
    stale.write_bytes(b"II*\x00")
    os.utime(stale, (1.0, 1.0))  # last written before that process started
    write_tiff(np.zeros((16, 16), np.uint8), tmp_path / "out.tif", "yx")
    assert os.listdir(tmp_path) == ["out.tif"]


def test_jpeg_is_refused_before_writing_what_it_cannot_hold_and_other_compressions_pass_through(tmp_path):
    """From a review: RGBA with JPEG failed at the first band ('invalid data shape'), after
    the network had run; tifffile's other compressions ('deflate', a COMPRESSION) were refused."""
    import tifffile

    from napari_attnrestore.io import ImageWriteError, write_tiff

    rgba = np.zeros((32, 32, 4), np.uint8)
    with pytest.raises(ImageWriteError, match="JPEG compression holds gray or RGB pages, not RGB \\+ alpha"):
        write_tiff(rgba, tmp_path / "a.tif", axes="yxc", compression="jpeg")
    with pytest.raises(ImageWriteError, match="JPEG compression holds 8-bit data, not uint16; use zlib"):
        write_tiff(np.zeros((32, 32), np.uint16), tmp_path / "b.tif", axes="yx", compression="jpeg")
    assert not list(tmp_path.iterdir())
    for name in ("deflate", tifffile.COMPRESSION.LZMA):
        path = write_tiff(np.ones((32, 32), np.uint16), tmp_path / f"{name}.tif", axes="yx", compression=name)
        assert tifffile.imread(path).sum() == 32 * 32
