"""npe2 reader/writers: lazy dask layers, never raising for unreadable input; no viewer."""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_attnrestore.io import open_image, write_ome_zarr
from napari_attnrestore.io.napari_hooks import napari_get_reader, write_ome_zarr_layer, write_tiff_layer


def test_io_sources_do_not_import_torch_napari_or_qt():
    import ast
    import pathlib

    import napari_attnrestore.io as io_pkg

    banned = {"torch", "napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui"}
    for source in pathlib.Path(io_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & banned, f"{source.name} imports {names}"


def test_hooks_import_leaves_napari_and_qt_unloaded():
    code = (
        "import sys, napari_attnrestore.io.napari_hooks; "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_reader_tiff_is_lazy(tmp_path, recorder):
    a = np.arange(300 * 200, dtype=np.uint16).reshape(300, 200)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, a, tile=(64, 64))
    reader = napari_get_reader(str(path))
    assert callable(reader)
    layers = reader(str(path))
    assert recorder.count == 0  # nothing computed
    (data, kwargs, kind) = layers[0]
    assert kind == "image" and isinstance(data, da.Array)
    assert kwargs["name"] == "img" and kwargs["rgb"] is False
    assert kwargs["scale"] == (1.0, 1.0) and kwargs["translate"] == (0.0, 0.0)
    assert kwargs["metadata"] == {"axes": "yx", "units": {}, "path": str(path)}
    np.testing.assert_array_equal(data[100:110, 60:70].compute(), a[100:110, 60:70])


def test_reader_pyramid_gives_list_of_dask(tmp_path):
    path = tmp_path / "p.ome.zarr"
    write_ome_zarr(np.zeros((1100, 600), np.uint8), path, "yx", scale=(0.5, 0.5))
    ((data, kwargs, _),) = napari_get_reader(path)(path)
    assert isinstance(data, list) and all(isinstance(d, da.Array) for d in data)
    assert [d.shape for d in data] == [(1100, 600), (550, 300), (275, 150)]
    assert kwargs["multiscale"] is True and kwargs["scale"] == (0.5, 0.5)


def test_reader_rgb_drops_sample_axis_from_scale(tmp_path):
    rgb = np.zeros((40, 30, 3), np.uint8)
    extratags = [(33550, "d", 3, (2.0, 3.0, 0.0), False), (33922, "d", 6, (0, 0, 0, 10.0, 20.0, 0), False)]
    tifffile.imwrite(tmp_path / "geo.tif", rgb, photometric="rgb", extratags=extratags)
    ((data, kwargs, _),) = napari_get_reader(tmp_path / "geo.tif")(None)
    assert data.shape == (40, 30, 3) and kwargs["rgb"] is True
    # pixel centres (the tie point is a corner), north up: napari y is minus the map Y
    assert kwargs["scale"] == (3.0, 2.0) and kwargs["translate"] == (-18.5, 11.0)
    assert "channel_axis" not in kwargs


def test_reader_channel_axis(tmp_path):
    path = tmp_path / "c.ome.zarr"
    write_ome_zarr(np.zeros((2, 5, 64, 64), np.uint16), path, "tcyx", scale=(1.0, 1.0, 0.2, 0.2), pyramid=False)
    ((data, kwargs, _),) = napari_get_reader(path)(path)
    assert data.shape == (2, 5, 64, 64)
    assert kwargs["channel_axis"] == 1 and "rgb" not in kwargs
    assert kwargs["scale"] == (1.0, 0.2, 0.2) and len(kwargs["translate"]) == 3
    assert kwargs["name"] == [f"c [{i}]" for i in range(5)]


def test_reader_gives_every_image_of_a_tiff_holding_several(tmp_path, recwarn):
    """A multi-position OME-TIFF's other positions (a slide's label) came as nothing, with a
    warning that only the first was read: each is a layer now, named by its series, only
    the first shown at first, and its metadata says which series it is."""
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(np.full((40, 44), 7, np.uint16))
        w.write(np.full((2, 30, 32), 9, np.uint16), metadata={"axes": "CYX", "Name": "Label"})
        w.write(np.full((20, 22), 5, np.uint16))
    layers = napari_get_reader(str(path))(str(path))
    assert [ld[0].shape for ld in layers] == [(40, 44), (2, 30, 32), (20, 22)]
    names = [ld[1]["name"] for ld in layers]
    assert names == ["slide [series 0]", ["slide [Label] [0]", "slide [Label] [1]"], "slide [series 2]"]
    assert [ld[1]["visible"] for ld in layers] == [True, False, False]
    assert [ld[1]["metadata"]["series"] for ld in layers] == [0, 1, 2]
    assert [int(np.asarray(ld[0]).max()) for ld in layers] == [7, 9, 5]
    assert not [w for w in recwarn if "images" in str(w.message)]
    tifffile.imwrite(tmp_path / "one.tif", np.ones((8, 8), np.uint8))  # one image: as before
    (_, kw, _), = napari_get_reader(str(tmp_path / "one.tif"))(str(tmp_path / "one.tif"))
    assert kw["name"] == "one" and "series" not in kw["metadata"] and "visible" not in kw


def test_reader_gives_a_gdal_internal_nodata_mask_as_labels_not_as_an_image(tmp_path, recwarn):
    """GDAL's internal nodata mask (NewSubfileType 4, photometric MASK) is no image: the file
    opens as its one image, without a series name or a warning of others, and the mask's
    pixels without data as a Labels layer."""
    path = tmp_path / "masked.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.full((32, 32), 7, np.uint16), photometric="minisblack")
        tw.write(np.where(np.arange(32)[:, None] < 4, 0, 255).repeat(32, 1).astype(np.uint8), photometric="minisblack",
                 extratags=[(254, "I", 1, 4, True)])
    with tifffile.TiffFile(path, mode="r+b") as t:
        t.pages[1].tags["PhotometricInterpretation"].overwrite(4)
    (data, kw, kind), (gaps, gkw, gkind) = napari_get_reader(str(path))(str(path))
    assert kind == "image" and kw["name"] == "masked" and "series" not in kw["metadata"] and data.shape == (32, 32)
    assert not [w for w in recwarn if "images" in str(w.message)]
    # the pixels it marks without data as a Labels layer (1 on them), which inpainting takes as its mask
    assert gkind == "labels" and gkw["name"] == "masked [no data]"
    assert np.asarray(gaps).tolist() == (np.arange(32)[:, None] < 4).repeat(32, 1).astype(np.uint8).tolist()


def test_reader_list_of_paths_is_a_stack(tmp_path):
    """napari hands a reader a list of paths to open them as one stack (File > Open Files as
    Stack); each file came as a layer of its own."""
    for i, name in enumerate(("a.tif", "b.tif")):
        tifffile.imwrite(tmp_path / name, np.full((16, 24), i, np.uint8))
    paths = [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    (data, kw, kind), = napari_get_reader(paths)(paths)
    assert kind == "image" and isinstance(data, da.Array) and data.shape == (2, 16, 24)
    assert np.asarray(data)[:, 0, 0].tolist() == [0, 1]
    assert kw["axis_labels"] == ("t", "y", "x") and len(kw["scale"]) == 3
    assert kw["metadata"]["stacked"] == paths
    (tmp_path / "c.txt").write_text("x")
    assert napari_get_reader([*paths, str(tmp_path / "c.txt")]) is None
    tifffile.imwrite(tmp_path / "d.tif", np.zeros((16, 20), np.uint8))
    with pytest.raises(ValueError, match=r"d\.tif.*cannot be stacked with .*a\.tif"):
        napari_get_reader([paths[0], str(tmp_path / "d.tif")])(paths)
    with pytest.raises(Exception, match="overlap the input"):  # its files are its sources
        write_ome_zarr_layer(paths[1], data, {"rgb": False, "name": "s", "metadata": kw["metadata"]})


@pytest.mark.parametrize("bad", ["missing.tif", "notes.txt", "empty.tif", "folder", "bad.zarr"])
def test_get_reader_returns_none_for_bad_input(tmp_path, bad):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    (tmp_path / "bad.zarr").mkdir()
    assert napari_get_reader(str(tmp_path / bad)) is None


@pytest.mark.parametrize("pages", [1, 10])
def test_a_file_cut_short_gets_a_reader_that_says_so(tmp_path, pages):
    """None let napari's own reader take a truncated file: a stack came as its first plane
    without a word, a single image failed with 'failed to read 16384 bytes, got 8064'."""
    tifffile.imwrite(tmp_path / "whole.tif", np.ones((pages, 64, 64), np.uint16), metadata=None)
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    reader = napari_get_reader(str(tmp_path / "cut.tif"))
    with pytest.raises(ValueError, match=r"cut\.tif: truncated"):
        reader(str(tmp_path / "cut.tif"))


@pytest.mark.parametrize("weird", [None, 42, [], [None], b"bytes.tif"])
def test_get_reader_never_raises_on_weird_input(weird):
    assert napari_get_reader(weird) is None


def test_write_layers_stream_and_keep_geometry(tmp_path, recorder):
    src = da.random.default_rng(0).integers(0, 1000, size=(600, 400), chunks=100, dtype=np.uint16)
    meta = {"name": "den", "scale": (0.5, 0.25), "translate": (1.0, 2.0), "rgb": False,
            "metadata": {"axes": "yx", "units": {"y": "micrometer", "x": "micrometer"}}}  # fmt: skip
    out = write_ome_zarr_layer(str(tmp_path / "den.ome.zarr"), [src, src[::2, ::2]], meta)
    assert out == [str(tmp_path / "den.ome.zarr")]
    assert 0 < recorder.max_nbytes < src.nbytes  # streamed, never the whole layer
    im = open_image(out[0])
    assert im.scale == (0.5, 0.25) and im.translate == (1.0, 2.0) and im.name == "den"
    assert im.units == {"y": "micrometer", "x": "micrometer"}
    assert bool((da.from_zarr(im.data) == src).all().compute())
    recorder.max_nbytes = 0
    out = write_tiff_layer(str(tmp_path / "den.ome.tif"), src, meta)
    assert 0 < recorder.max_nbytes < src.nbytes
    im = open_image(out[0])
    assert im.scale == (0.5, 0.25)
    assert bool((im.to_dask() == src).all().compute())


def test_write_layer_rgb_and_split_channel(tmp_path):
    rgb = da.zeros((64, 48, 3), dtype=np.uint8, chunks=32)
    write_tiff_layer(str(tmp_path / "rgb.tif"), rgb, {"rgb": True, "scale": (2.0, 2.0), "metadata": {}})
    im = open_image(tmp_path / "rgb.tif")
    assert im.axes == "yxc" and im.rgb and im.scale == pytest.approx((2.0, 2.0, 1.0))
    # one channel of a layer split by channel_axis: metadata axes still list 'c'
    plane = da.zeros((2, 32, 32), dtype=np.uint16, chunks=16)
    meta = {"rgb": False, "scale": (3.0, 1.0, 1.0), "metadata": {"axes": "tcyx"}}
    write_ome_zarr_layer(str(tmp_path / "ch.ome.zarr"), plane, meta)
    im = open_image(tmp_path / "ch.ome.zarr")
    assert im.axes == "tyx" and im.scale == (3.0, 1.0, 1.0)
    assert zarr.open_group(tmp_path / "ch.ome.zarr", mode="r").metadata.zarr_format == 3


def test_saving_a_layer_onto_its_own_store_is_refused_and_the_store_kept(tmp_path):
    from napari_attnrestore.io import ImageWriteError
    from napari_attnrestore.io.napari_hooks import layer_data

    img = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    path = write_ome_zarr(img, tmp_path / "a.ome.zarr", axes="yx", pyramid=False)
    data, kwargs, _ = layer_data(open_image(path))
    with pytest.raises(ImageWriteError, match="overlap the input"):
        write_ome_zarr_layer(path, data, kwargs)
    np.testing.assert_array_equal(np.asarray(open_image(path).data), img)


@pytest.mark.parametrize("opened_by", ["dask.from_zarr", "zarr"])
def test_saving_over_the_store_another_reader_opened_is_refused(tmp_path, opened_by):
    """napari's builtin reader (and the Restore widget's results) keep no ``path`` metadata:
    the store behind the data is found from the data itself."""
    from napari_attnrestore.io import ImageWriteError

    img = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    path = write_ome_zarr(img, tmp_path / "b.ome.zarr", axes="yx", pyramid=False)
    arr = zarr.open_group(str(path), mode="r")["0"]
    data = da.from_zarr(arr) if opened_by == "dask.from_zarr" else arr
    for writer, out in ((write_ome_zarr_layer, path), (write_tiff_layer, str(tmp_path / "b.ome.zarr" / "x.tif"))):
        with pytest.raises(ImageWriteError, match="overlap the input"):
            writer(out, data, {"name": "b", "metadata": {}})
    np.testing.assert_array_equal(np.asarray(open_image(path).data), img)


@pytest.mark.parametrize("wrap", ["bare", "dask"])
def test_an_in_memory_zarr_layer_saves_under_the_working_folder(tmp_path, monkeypatch, wrap):
    """A zarr array's own ``.path`` is its key in its store ('' for an in-memory one), not a
    place on disk: taken for one, every save under the working folder was refused."""
    monkeypatch.chdir(tmp_path)
    z = zarr.zeros((64, 64), chunks=(32, 32), dtype="uint16")
    z[:] = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    data = da.from_array(z, chunks=32) if wrap == "dask" else z
    for writer, out in ((write_ome_zarr_layer, "saved.ome.zarr"), (write_tiff_layer, "saved.tif")):
        assert writer(out, data, {"name": "z", "metadata": {}}) == [out]
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "saved.tif").data), z[:])


def test_writers_take_level0_of_napari_multiscale_data_and_napari_units(tmp_path):
    napari = pytest.importorskip("napari")
    from napari.layers._multiscale_data import MultiScaleData

    from napari_attnrestore.gui.geometry import level0

    base = da.random.default_rng(0).integers(0, 255, size=(64, 48), chunks=32, dtype=np.uint8)
    pyramid = MultiScaleData([base, base[::2, ::2]])
    assert level0(pyramid) is base and level0(base) is base
    layer = napari.layers.Image(pyramid, multiscale=True, scale=(0.1, 0.2), units=("nm", "nm"))
    meta = layer._get_state()
    for writer, name in ((write_ome_zarr_layer, "m.ome.zarr"), (write_tiff_layer, "m.ome.tif")):
        im = open_image(writer(str(tmp_path / name), layer.data, meta)[0])
        assert im.data.shape == (64, 48) and im.units == {"y": "nanometer", "x": "nanometer"}
        assert im.scale == pytest.approx((0.1, 0.2))
        assert bool((im.to_dask() == base).all().compute())


def _utm_geotiff(path):
    """A 30 m UTM GeoTIFF with GDAL_NODATA 65535."""
    keys = (1, 1, 0, 2, 1024, 0, 1, 1, 3076, 0, 1, 9001)
    tifffile.imwrite(path, np.ones((30, 20), np.uint16), extratags=[
        (33550, "d", 3, (30.0, 30.0, 0.0), False), (33922, "d", 6, (0, 0, 0, 5e5, 4e6, 0), False),
        (34735, "H", len(keys), keys, False), (42113, "s", 0, "65535", False)])
    return path


def test_tiff_writer_keeps_a_geotiff_layers_georeference(tmp_path):
    ((data, kwargs, _),) = napari_get_reader(_utm_geotiff(tmp_path / "geo.tif"))(None)
    write_tiff_layer(str(tmp_path / "out.tif"), data, kwargs)
    src, out = open_image(tmp_path / "geo.tif"), open_image(tmp_path / "out.tif")
    assert out.translate == pytest.approx(src.translate) and out.units == {"x": "meter", "y": "meter"}
    assert out.meta["nodata"] == 65535


def test_a_geotiff_layer_saved_as_ome_zarr_then_tif_is_a_geotiff_again(tmp_path):
    ((data, kwargs, _),) = napari_get_reader(_utm_geotiff(tmp_path / "geo.tif"))(None)
    write_ome_zarr_layer(str(tmp_path / "geo.ome.zarr"), data, kwargs)
    ((data, kwargs, _),) = napari_get_reader(tmp_path / "geo.ome.zarr")(None)
    write_tiff_layer(str(tmp_path / "again.tif"), data, kwargs)
    src, out = open_image(tmp_path / "geo.tif"), open_image(tmp_path / "again.tif")
    assert out.meta["geotiff"] and out.translate == pytest.approx(src.translate) and out.meta["nodata"] == 65535


def test_writer_names_the_axis_napari_gives_a_time_unit_t(tmp_path):
    meta = {"scale": (5.0, 0.5, 0.25), "units": ("second", "micrometer", "micrometer"), "metadata": {}}
    write_ome_zarr_layer(str(tmp_path / "movie.ome.zarr"), np.zeros((3, 16, 16), np.uint8), meta)
    im = open_image(tmp_path / "movie.ome.zarr")
    assert im.axes == "tyx" and im.units["t"] == "second"  # was a z axis of type space in seconds
    assert im.scale == pytest.approx((5.0, 0.5, 0.25))


def test_writers_name_axes_by_napari_axis_labels(tmp_path):
    meta = {"axis_labels": ("c", "z", "y", "x"), "metadata": {}}
    write_ome_zarr_layer(str(tmp_path / "czyx.ome.zarr"), np.zeros((2, 3, 16, 16), np.uint8), meta)
    assert open_image(tmp_path / "czyx.ome.zarr").axes == "czyx"  # was tzyx: the channels became time points
    meta = {"axis_labels": ("-1", "0", "1"), "metadata": {}}  # napari's defaults say nothing: guessed
    write_ome_zarr_layer(str(tmp_path / "zyx.ome.zarr"), np.zeros((3, 16, 16), np.uint8), meta)
    assert open_image(tmp_path / "zyx.ome.zarr").axes == "zyx"


def test_reader_gives_omero_names_colours_windows_units_and_axis_labels(tmp_path):
    from napari_attnrestore.io import create_ome_zarr
    from napari_attnrestore.io.napari_hooks import read_images

    omero = {"channels": [
        {"label": "DAPI", "color": "0000FF", "window": {"start": 100, "end": 2000, "min": 0, "max": 4000}},
        {"label": "GFP", "color": "00FF00", "window": {"start": 50, "end": 3000, "min": 0, "max": 4000}, "active": False}]}
    z = create_ome_zarr(tmp_path / "cells.ome.zarr", (2, 3, 32, 32), np.uint16, None, "czyx", translate=(0, 5, 0, 0),
                        units={"z": "micrometer", "y": "micrometer", "x": "micrometer"}, omero=omero)
    z[:] = 4000
    ((data, kw, _),) = read_images(tmp_path / "cells.ome.zarr")
    assert kw["name"] == ["DAPI", "GFP"] and kw["colormap"] == ["#0000ff", "#00ff00"] and kw["visible"] == [True, False]
    assert kw["contrast_limits"] == [[100, 2000], [50, 3000]]
    assert kw["axis_labels"] == ("z", "y", "x") and kw["units"] == ("micrometer",) * 3
    napari = pytest.importorskip("napari")
    layers = napari.components.ViewerModel().add_image(data, **kw)  # napari takes every keyword as given
    assert [lyr.colormap.name for lyr in layers] == ["blue", "green"]


def test_reader_contrast_limits_come_from_the_data_not_the_first_plane_shown(tmp_path):
    """A stack placed at z = 5 has no plane at napari's first dims point: it would get (0, 1)."""
    from napari_attnrestore.io.napari_hooks import read_images

    stack = np.full((3, 40, 40), 1000, np.uint16)
    stack[1, :4] = 3999
    write_ome_zarr(stack, tmp_path / "z.ome.zarr", "zyx", translate=(5, 0, 0), pyramid=False)
    ((_, kw, _),) = read_images(tmp_path / "z.ome.zarr")
    assert kw["contrast_limits"] == [1000, 3999] and "units" not in kw


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_reader_shows_separate_colour_planes_as_one_colour_picture(tmp_path, dtype):
    """PlanarConfiguration 2: red, green and blue are planes; napari's default maps for three
    channels (cyan, magenta, yellow) and a range per plane would show wrong colours."""
    from napari_attnrestore.io.napari_hooks import read_images

    rgb = np.zeros((3, 40, 30), dtype)
    rgb[0], rgb[1], rgb[2] = 200, 100, 50
    rgb[:, 0] = 20
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate")
    ((data, kw, _),) = read_images(tmp_path / "planar.tif")
    assert data.shape == (3, 40, 30) and kw["channel_axis"] == 0
    assert kw["colormap"] == ["red", "green", "blue"] and kw["blending"] == "additive"
    expected = [[0.0, 255.0]] * 3 if dtype == np.uint8 else [[20.0, 200.0]] * 3
    assert kw["contrast_limits"] == expected
    tifffile.imwrite(tmp_path / "bands.tif", rgb, photometric="minisblack")  # channels, not colour
    ((_, kw, _),) = read_images(tmp_path / "bands.tif")
    assert "colormap" not in kw and "blending" not in kw
    napari = pytest.importorskip("napari")
    ((data, kw, _),) = read_images(tmp_path / "planar.tif")
    layers = napari.components.ViewerModel().add_image(data, **kw)
    assert [lyr.colormap.name for lyr in layers] == ["red", "green", "blue"]
    assert {lyr.blending for lyr in layers} == {"additive"}


def test_a_layer_of_an_uncalibrated_file_saves_no_micrometers(tmp_path):
    """Super-resolved x2, a layer read from a file without pixel size has scale 0.5, in pixels:
    it was saved as 0.5 micrometer. A scale typed into napari without units still is."""
    layer = da.zeros((32, 32), dtype=np.uint8, chunks=16)
    write_tiff_layer(str(tmp_path / "sr.tif"), layer, {"rgb": False, "scale": (0.5, 0.5),
                                                        "metadata": {"axes": "yx", "units": {}, "path": "in.tif"}})
    assert open_image(tmp_path / "sr.tif").units == {}
    write_tiff_layer(str(tmp_path / "typed.tif"), layer, {"rgb": False, "scale": (0.5, 0.5), "metadata": {}})
    assert open_image(tmp_path / "typed.tif").scale == pytest.approx((0.5, 0.5))


@pytest.mark.parametrize(("data", "message"), [(np.zeros(16, np.uint8), "at least 2 dimensions"),
                                               (np.zeros((16, 16), np.complex64), "unsupported pixel type complex64")])
def test_the_reader_refuses_what_is_no_image_naming_the_file(tmp_path, data, message):
    """napari got layers for these and failed later with messages naming no file."""
    from napari_attnrestore.io import ImageReadError
    from napari_attnrestore.io.napari_hooks import read_images

    tifffile.imwrite(tmp_path / "x.tif", data)
    with pytest.raises(ImageReadError, match=rf"x\.tif.*{message}"):
        read_images(str(tmp_path / "x.tif"))
    zarr.create_array(str(tmp_path / "e.zarr"), shape=(0, 64), dtype=np.uint8)
    with pytest.raises(ImageReadError, match=r"e\.zarr.*the image is empty"):
        read_images(str(tmp_path / "e.zarr"))


@pytest.mark.parametrize("data", [np.zeros(16, np.uint8), np.zeros((0, 8), np.uint8), np.zeros((4, 4), object)])
def test_the_writers_refuse_a_layer_that_holds_no_image(tmp_path, data):
    from napari_attnrestore.io import ImageWriteError

    for writer, name in ((write_tiff_layer, "x.tif"), (write_ome_zarr_layer, "x.ome.zarr")):
        with pytest.raises(ImageWriteError, match="holds no image to save"):
            writer(str(tmp_path / name), data, {"metadata": {}})
    assert not list(tmp_path.iterdir())


def test_the_ome_zarr_writer_refuses_what_ngff_cannot_hold_and_someones_file(tmp_path):
    from napari_attnrestore.io import ImageWriteError

    with pytest.raises(ImageWriteError, match="2 to 5 axes"):
        write_ome_zarr(np.zeros((1, 1, 1, 1, 4, 4), np.uint8), tmp_path / "a.ome.zarr", "tqczyx")
    with pytest.raises(ImageWriteError, match="scale must be positive"):
        write_ome_zarr(np.zeros((4, 4), np.uint8), tmp_path / "a.ome.zarr", "yx", scale=(0.0, -1.0))
    (tmp_path / "f.zarr").write_text("not a store")
    with pytest.raises(ImageWriteError, match="is a file, not a zarr store"):
        write_ome_zarr(np.zeros((4, 4), np.uint8), tmp_path / "f.zarr", "yx", overwrite=True)
    assert (tmp_path / "f.zarr").read_text() == "not a store"


@pytest.mark.parametrize("ext", [".tif", ".ome.zarr"])
def test_a_damaged_source_chunk_is_a_write_error_and_no_output_is_left(tmp_path, ext):
    """napari takes a writer's ValueError (ImageReadError is one) for "not a valid writer" and
    hides it; the OME-Zarr writer also left its half-written store."""
    from napari_attnrestore.io import ImageWriteError

    src = tmp_path / "in.ome.zarr"
    write_ome_zarr(np.random.default_rng(0).integers(0, 255, (600, 600), dtype=np.uint8), str(src), "yx",
                   pyramid=False)
    data, kwargs, _ = napari_get_reader(str(src))(str(src))[0]
    chunk = sorted(p for p in (src / "0").rglob("*") if p.is_file() and p.name != "zarr.json")[-1]
    chunk.write_bytes(b"damaged")
    out = tmp_path / f"out{ext}"
    writer = write_tiff_layer if ext == ".tif" else write_ome_zarr_layer
    with pytest.raises(ImageWriteError, match="cannot read the layer's pixels") as err:
        writer(str(out), data, kwargs)
    assert not isinstance(err.value, ValueError)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_a_scale_typed_into_napari_has_one_meaning_in_both_formats(tmp_path):
    """A layer scaled (0.5, 0.25) with napari's default 'pixel' units came back in micrometers
    from TIFF and without a unit from OME-Zarr; now micrometers from both, and a scale of
    ones (napari's default) no unit from either."""
    layer = da.zeros((16, 24), dtype=np.uint16, chunks=8)
    for scale, units in (((0.5, 0.25), {"y": "micrometer", "x": "micrometer"}), ((1.0, 1.0), {})):
        meta = {"rgb": False, "scale": scale, "units": ("pixel", "pixel"), "metadata": {}}
        for writer, name in ((write_ome_zarr_layer, "a.ome.zarr"), (write_tiff_layer, "a.tif"),
                             (write_tiff_layer, "a.ome.tif")):
            im = open_image(writer(str(tmp_path / name), layer, meta)[0])
            assert (im.units or {}) == units and im.scale == pytest.approx(scale), (name, scale)


@pytest.mark.parametrize("name", ["flip.tif", "flip.ome.tif", "flip.ome.zarr"])
def test_a_flipped_layer_is_refused_by_every_writer(tmp_path, name):
    """scale (-1, 1) (a napari layer flipped upside down) gave an OME-TIFF with PhysicalSizeY
    -1, which the OME schema forbids, and a plain TIFF that reopened unflipped."""
    from napari_attnrestore.io.errors import ImageWriteError

    writer = write_ome_zarr_layer if name.endswith(".zarr") else write_tiff_layer
    with pytest.raises(ImageWriteError, match="scale must be positive and finite"):
        writer(str(tmp_path / name), np.zeros((16, 16), np.uint8), {"rgb": False, "scale": (-1.0, 1.0), "metadata": {}})
    assert not (tmp_path / name).exists()


def test_a_channel_layer_saves_its_name_colour_and_window(tmp_path):
    """A channel layer split from a DAPI + GFP file, saved from napari, lost its name, colour
    and contrast window (the CLI kept them); now both OME writers keep them."""
    layer = da.zeros((16, 24), dtype=np.uint16, chunks=8)
    meta = {"rgb": False, "name": "GFP", "colormap": "green", "contrast_limits": [10, 2000], "visible": True,
            "metadata": {"axes": "cyx", "ome": {"omero": {"channels": [{"label": "DAPI"}, {"label": "GFP"}]}}}}
    zarr_ch = open_image(write_ome_zarr_layer(str(tmp_path / "g.ome.zarr"), layer, meta)[0]).meta["ome"]["omero"]
    assert zarr_ch["channels"] == [{"label": "GFP", "active": True, "color": "00FF00",
                                    "window": {"min": 0.0, "max": 65535.0, "start": 10.0, "end": 2000.0}}]
    tif = open_image(write_tiff_layer(str(tmp_path / "g.ome.tif"), layer, meta)[0]).meta["ome"]["omero"]
    assert tif["channels"] == [{"label": "GFP", "color": "00FF00"}]
    layer = da.zeros((2, 16, 24), dtype=np.uint16, chunks=8)  # the channels kept as one layer: the file's
    both = open_image(write_ome_zarr_layer(str(tmp_path / "c.ome.zarr"), layer, meta | {"name": "c2"})[0])
    assert [ch["label"] for ch in both.meta["ome"]["omero"]["channels"]] == ["DAPI", "GFP"]


def test_a_large_single_level_image_is_shown_through_strided_views(tmp_path):
    """A 20000 x 20000 store without levels reached napari as one dask array, which napari
    reads whole plane by plane (2.7 GB for one uint16 plane); it now gets views of every
    2nd, 4th, ... pixel as a pyramid, level 0 unchanged for the writers and the widgets."""
    z = zarr.create_array(str(tmp_path / "tall.zarr"), shape=(2, 5000, 300), chunks=(1, 1024, 300), dtype="uint16")
    z[1, 4096:, :] = np.broadcast_to(np.arange(300, dtype=np.uint16), (904, 300))
    data, kwargs, _ = napari_get_reader(str(tmp_path / "tall.zarr"))(str(tmp_path / "tall.zarr"))[0]
    assert kwargs["multiscale"] and [d.shape for d in data] == [(2, 5000, 300), (2, 2500, 150), (2, 1250, 75),
                                                                 (2, 625, 38)]
    np.testing.assert_array_equal(data[2][1].compute(), z[1][::4, ::4])
    small = zarr.create_array(str(tmp_path / "small.zarr"), shape=(4096, 64), chunks=(1024, 64), dtype="uint8")
    data, kwargs, _ = napari_get_reader(str(tmp_path / "small.zarr"))(str(tmp_path / "small.zarr"))[0]
    assert not isinstance(data, list) and "multiscale" not in kwargs and data.shape == small.shape


@pytest.mark.parametrize("colormap", ["green", "custom"])
def test_a_layer_saved_as_napari_hands_it_keeps_its_colour_and_visibility(tmp_path, colormap):
    """napari gives writers ``layer.as_layer_data_tuple()``, whose colormap is a dict: the
    colour was dropped, and a hidden single-channel layer reopened shown."""
    import napari
    from napari.utils.colormaps import Colormap

    cmap = "green" if colormap == "green" else Colormap([[0, 0, 0, 1], [1, 0.5, 0, 1]], name="mine")
    layer = napari.components.ViewerModel().add_image(np.arange(64 * 48, dtype=np.uint16).reshape(64, 48),
                                                      name="GFP", colormap=cmap, visible=False)
    data, meta, _ = layer.as_layer_data_tuple()
    path = write_ome_zarr_layer(str(tmp_path / "g.ome.zarr"), data, meta)[0]
    channel = open_image(path).meta["ome"]["omero"]["channels"][0]
    assert channel["color"] == ("00FF00" if colormap == "green" else "FF8000") and channel["active"] is False
    _, kw, _ = napari_get_reader(path)(path)[0]
    assert kw["visible"] is False and kw["colormap"] == ("#00ff00" if colormap == "green" else "#ff8000")


@pytest.mark.parametrize("nodata", ["-9999", "-3.40282346639e+38"])
def test_a_geotiffs_nodata_is_left_out_of_the_contrast_limits(tmp_path, nodata):
    """A DEM with a -9999 (or ArcGIS's float32 minimum) border opened washed out: its limits
    reached down to the nodata value."""
    dem = np.linspace(100, 900, 64 * 64, dtype=np.float32).reshape(64, 64)
    dem[:8] = np.float32(float(nodata))
    tifffile.imwrite(tmp_path / "dem.tif", dem, extratags=[(33550, 12, 3, (30.0, 30.0, 0.0), False),
                                                           (33922, 12, 6, (0, 0, 0, 5e5, 4e6, 0), False),
                                                           (42113, "s", 0, nodata, False)])
    (_, kw, _), = napari_get_reader(str(tmp_path / "dem.tif"))(str(tmp_path / "dem.tif"))
    assert kw["contrast_limits"] == [float(dem[8:].min()), 900.0]


@pytest.mark.parametrize("ext", [".ome.tif", ".ome.zarr"])
def test_a_single_channel_layer_reopens_with_its_name(tmp_path, ext):
    """An OME-TIFF holds the name of a one-channel layer as its channel's; the layer reopened
    named after the file."""
    layer = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    meta = {"rgb": False, "name": "Nuclei", "colormap": "blue", "visible": True}
    writer = write_tiff_layer if ext == ".ome.tif" else write_ome_zarr_layer
    path = writer(str(tmp_path / f"saved{ext}"), layer, meta)[0]
    _, kw, _ = napari_get_reader(path)(path)[0]
    assert kw["name"] == "Nuclei" and kw["colormap"] == "#0000ff"


def test_a_rotation_the_files_cannot_hold_is_warned_about(tmp_path):
    """A rotated layer reopened unrotated, and nothing said so."""
    layer = np.zeros((16, 24), np.uint16)
    turned = {"rgb": False, "name": "rot", "rotate": [[0.866, -0.5], [0.5, 0.866]], "shear": [0.0],
              "affine": np.eye(3).tolist()}
    for writer, ext in ((write_ome_zarr_layer, ".ome.zarr"), (write_tiff_layer, ".ome.tif")):
        with pytest.warns(UserWarning, match="rot: its rotation is not saved"):
            writer(str(tmp_path / f"r{ext}"), layer, turned)
    plain = {**turned, "rotate": np.eye(2).tolist()}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_ome_zarr_layer(str(tmp_path / "p.ome.zarr"), layer, plain)


def test_an_ome_zarrs_label_images_open_as_labels_layers(tmp_path):
    """A store's labels group was ignored, and a label image opened by its path was shown
    as a gray image."""
    path = str(tmp_path / "cells.ome.zarr")
    write_ome_zarr(np.arange(2 * 32 * 40, dtype=np.uint16).reshape(2, 32, 40), path, "cyx", scale=(1, 0.5, 0.5),
                   units="micrometer", pyramid=False)
    labels = zarr.open_group(path, mode="r+").create_group("labels")
    labels.attrs["ome"] = {"version": "0.5", "labels": ["seg", "missing"]}
    seg = labels.create_group("seg")
    seg.create_array("0", data=(np.arange(32 * 40).reshape(32, 40) % 5).astype(np.uint8), chunks=(16, 16))
    seg.attrs["ome"] = {"version": "0.5", "image-label": {"colors": [{"label-value": 1, "rgba": [255, 0, 0, 255]}]},
                        "multiscales": [{"axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                                                  {"name": "x", "type": "space", "unit": "micrometer"}],
                                         "datasets": [{"path": "0", "coordinateTransformations": [
                                             {"type": "scale", "scale": [0.5, 0.5]}]}]}]}
    layers = napari_get_reader(path)(path)
    assert [kind for *_, kind in layers] == ["image", "labels"]  # the broken "missing" left out
    data, kw, _ = layers[1]
    assert kw["name"] == "seg" and tuple(kw["scale"]) == (0.5, 0.5) and "contrast_limits" not in kw
    assert np.asarray(data)[0, :6].tolist() == [0, 1, 2, 3, 4, 0]
    direct = f"{path}/labels/seg"
    assert [kind for *_, kind in napari_get_reader(direct)(direct)] == ["labels"]


def test_a_labels_layer_saves_as_an_ome_zarr_label_image_and_reopens_as_labels(tmp_path):
    """Labels layers (an inpainting mask drawn in napari, a segmentation) could not be saved
    by this plugin: napari only warned that no writer took them."""
    import napari

    from napari_attnrestore.io.napari_hooks import write_labels_ome_zarr_layer

    seg = (np.arange(1200 * 1100).reshape(1200, 1100) // 997 % 7).astype(np.int32)
    layer = napari.components.ViewerModel().add_labels(seg, name="cells", scale=(0.5, 0.5), translate=(3.0, 4.0))
    data, meta, _ = layer.as_layer_data_tuple()
    path = write_labels_ome_zarr_layer(str(tmp_path / "cells.ome.zarr"), data, meta)[0]
    (levels, kw, kind), = napari_get_reader(path)(path)
    assert kind == "labels" and kw["name"] == "cells"
    assert tuple(kw["scale"]) == (0.5, 0.5) and tuple(kw["translate"]) == (3.0, 4.0)
    assert np.array_equal(np.asarray(levels[0]), seg)
    assert set(np.unique(np.asarray(levels[1]))) <= set(np.unique(seg))  # every 2nd pixel, no averaged labels
    with pytest.raises(Exception, match="integer labels"):
        write_ome_zarr(np.zeros((8, 8), np.float32), tmp_path / "f.ome.zarr", "yx", labels=True)
