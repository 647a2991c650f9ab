"""Reading PNG, plain zarr (v2/v3) and OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on zarr v3)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from napari_attnrestore.io import ImageReadError, open_image, read_ome_metadata, write_ome_zarr, write_pyramid


def test_png_gray_and_rgb(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 255, (20, 30), dtype=np.uint8)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "gray.png", gray)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    g = open_image(tmp_path / "gray.png")
    assert g.axes == "yx" and not g.rgb and g.scale == (1.0, 1.0)
    np.testing.assert_array_equal(g.data, gray)
    c = open_image(tmp_path / "rgb.png")
    assert c.axes == "yxc" and c.rgb and c.channel_axis is None
    np.testing.assert_array_equal(c.data, rgb)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_array(tmp_path, zarr_format):
    a = np.arange(2 * 30 * 40, dtype=np.float32).reshape(2, 30, 40)
    path = tmp_path / "plain.zarr"
    z = zarr.create_array(path, shape=a.shape, chunks=(1, 16, 16), dtype=a.dtype, zarr_format=zarr_format)
    z[:] = a
    im = open_image(path)
    assert isinstance(im.data, zarr.Array)
    assert im.axes == "zyx" and not im.rgb and im.scale == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(im.data[1, 3:5], a[1, 3:5])


def test_plain_zarr_rgb_guess(tmp_path):
    path = tmp_path / "rgb.zarr"
    zarr.create_array(path, shape=(20, 10, 3), chunks=(10, 10, 3), dtype=np.uint8)
    im = open_image(path)
    assert im.axes == "yxc" and im.rgb


def test_group_with_array_0(tmp_path):
    path = tmp_path / "group.zarr"
    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.create_array("0", shape=(32, 32), chunks=(16, 16), dtype=np.uint16)[:] = 5
    im = open_image(path)
    assert im.axes == "yx" and im.shape == (32, 32)
    assert int(im.data[0, 0]) == 5


def test_ome_zarr_05_roundtrip_with_pyramid(tmp_path):
    a = (np.arange(1200 * 700) % 3000).astype(np.uint16).reshape(1200, 700)
    path = tmp_path / "img.ome.zarr"
    out = write_ome_zarr(a, path, "yx", scale=(0.5, 0.25), translate=(10.0, 20.0), units="micrometer")
    assert out == str(path)
    root = zarr.open_group(path, mode="r")
    assert root.metadata.zarr_format == 3
    assert root.attrs["ome"]["version"] == "0.5"
    im = open_image(path)
    assert im.axes == "yx" and im.name == "img"
    assert im.scale == (0.5, 0.25) and im.translate == (10.0, 20.0)
    assert im.units == {"y": "micrometer", "x": "micrometer"}
    assert [lv.shape for lv in im.levels] == [(1200, 700), (600, 350), (300, 175)]
    assert all(isinstance(lv, zarr.Array) for lv in im.levels)
    np.testing.assert_array_equal(im.data[:], a)
    expected = np.round(a[:2, :2].astype(float).mean()).astype(np.uint16)
    assert im.levels[1][0, 0] == expected
    ms = read_ome_metadata(path)
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 0.5]
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [2.0, 1.0]
    assert root["0"].metadata.dimension_names == ("y", "x")


def test_ome_zarr_05_validates_with_ome_zarr_py(tmp_path):
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    path = tmp_path / "v.ome.zarr"
    write_ome_zarr(np.zeros((2, 600, 300), np.uint8), path, "cyx", scale=(1, 2, 2), units={"y": "µm", "x": "µm"})
    loc = io.parse_url(str(path))
    node = next(iter(reader.Reader(loc)()))
    assert [d.shape for d in node.data] == [(2, 600, 300), (2, 300, 150)]


def test_ngff_04_zarr_v2(tmp_path):
    path = tmp_path / "old.ome.zarr"
    g = zarr.open_group(path, mode="w", zarr_format=2)
    a = np.arange(2 * 64 * 48, dtype=np.uint16).reshape(2, 64, 48)
    g.create_array("0", shape=a.shape, chunks=(1, 32, 32), dtype=a.dtype)[:] = a
    g.create_array("1", shape=(2, 32, 24), chunks=(1, 32, 32), dtype=a.dtype)[:] = a[:, ::2, ::2]
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    g.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": "old",
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0, 0.5, 0.5]},
                        {"type": "translation", "translation": [0.0, 3.0, 4.0]},
                    ],
                },
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]},
            ],
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0, 2.0]}],
        }
    ]
    im = open_image(path)
    assert im.axes == "cyx" and im.channel_axis == 0 and not im.rgb
    assert im.scale == (1.0, 1.0, 1.0)
    assert im.translate == (0.0, 6.0, 8.0)
    assert im.units == {"y": "micrometer", "x": "micrometer"}
    assert im.meta["ngff_version"] == "0.4"
    assert len(im.levels) == 2
    np.testing.assert_array_equal(im.levels[1][:], a[:, ::2, ::2])
    assert read_ome_metadata(path)["name"] == "old"


def _ngff_store(path, axes):
    g = zarr.open_group(path, mode="w", zarr_format=2)
    g.create_array("0", shape=(16, 24), chunks=(16, 24), dtype=np.uint8)[:] = 7
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}]}]
    return path


def test_ngff_axes_that_repeat_a_name_or_lack_rows_and_columns_are_refused(tmp_path):
    """Axes [x, x] opened as 'xq' and restored into a store of one space axis; [t, c] opened
    and then failed in napari's reader with a bare "substring not found". Space axes of
    other names are the image's rows and columns."""
    from napari_attnrestore.io import ImageReadError

    dup = _ngff_store(tmp_path / "dup.ome.zarr", [{"name": "x", "type": "space"}, {"name": "x", "type": "space"}])
    with pytest.raises(ImageReadError, match=r"dup\.ome\.zarr: OME axes name 'x' twice"):
        open_image(dup)
    none = _ngff_store(tmp_path / "tc.ome.zarr", [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}])
    with pytest.raises(ImageReadError, match=r"tc.ome.zarr: OME axes \['t', 'c'\] have no y and x"):
        open_image(none)
    named = _ngff_store(tmp_path / "ij.ome.zarr", [{"name": "row", "type": "space", "unit": "micrometer"},
                                                   {"name": "col", "type": "space", "unit": "micrometer"}])
    im = open_image(named)
    assert im.axes == "yx" and im.units == {"y": "micrometer", "x": "micrometer"}
    g = zarr.open_group(tmp_path / "dij.ome.zarr", mode="w", zarr_format=2)
    g.create_array("0", shape=(2, 16, 24), chunks=(1, 16, 24), dtype=np.uint8)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n, "type": "space"} for n in ("depth", "row", "col")],
                               "datasets": [{"path": "0", "coordinateTransformations": [
                                   {"type": "scale", "scale": [2.0, 1.0, 1.0]}]}]}]
    assert open_image(tmp_path / "dij.ome.zarr").axes == "zyx"
    # sizes of 0 or below, or as many as another image's axes, were taken as given or left out
    for scale, message in (([0.0, -1.0], "positive and finite"), ([1.0], "a scale of 1 values for 2 axes")):
        g = zarr.open_group(named, mode="a")
        ms = g.attrs["multiscales"]
        ms[0]["datasets"][0]["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
        g.attrs["multiscales"] = ms
        with pytest.raises(ImageReadError, match=f"ij.ome.zarr: OME .*{message}"):
            open_image(named)


def test_read_ome_metadata_of_non_zarr_is_empty(tmp_path):
    assert read_ome_metadata(tmp_path / "nothing.zarr") == {}


def _coloured(path, data, axes, channels):
    from napari_attnrestore.io import create_ome_zarr

    z = create_ome_zarr(path, data.shape, data.dtype, None, axes,
                        omero={"channels": [{"label": name, "color": colour} for name, colour in channels]})
    z[:] = data
    return open_image(path)


def test_only_channels_labelled_and_coloured_red_green_blue_open_as_rgb(tmp_path, rng):
    """8-bit fluorescence channels coloured red, green and blue, or a 4th channel that is not
    alpha, opened as an RGB(A) picture (napari then took Cy5 for transparency)."""
    rgb = [("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF")]
    fluo = [("Cy5", "FF0000"), ("GFP", "00FF00"), ("DAPI", "0000FF")]
    u8 = rng.integers(0, 255, (3, 10, 12), dtype=np.uint8)
    assert not _coloured(tmp_path / "a.ome.zarr", u8, "cyx", fluo).rgb
    assert _coloured(tmp_path / "b.ome.zarr", u8.astype(np.uint16), "cyx", rgb).rgb  # labels say so, any dtype
    four = rng.integers(0, 255, (4, 10, 12), dtype=np.uint8)
    assert not _coloured(tmp_path / "c.ome.zarr", four, "cyx", [*rgb, ("Cy7", "FF00FF")]).rgb
    im = _coloured(tmp_path / "d.ome.zarr", four, "cyx", [*rgb, ("alpha", "FFFFFF")])
    assert im.rgb and im.axes == "yxc" and im.shape == (10, 12, 4)


def test_an_rgb_view_indexes_and_converts_like_an_array(tmp_path, rng):
    rgb = rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)
    write_ome_zarr(rgb, tmp_path / "v.ome.zarr", "yxc", chunks=16, pyramid=False)
    v = open_image(tmp_path / "v.ome.zarr").data
    assert np.asarray(v).shape == (30, 20, 3) and np.array_equal(np.asarray(v, dtype=np.float32), rgb)
    assert len(list(v)) == 30 and np.array_equal(list(v)[-1], rgb[-1])  # iteration ends at the last row
    assert np.array_equal(v[-1, 2:9:3], rgb[-1, 2:9:3])
    with pytest.raises(IndexError, match="out of bounds"):  # not "cannot read chunk": the file is fine
        v[600]
    with pytest.raises(IndexError, match="step"):
        v[10:2:-3]
    with pytest.raises(AttributeError):  # a selection in the stored order would be the wrong pixels
        _ = v.oindex


def test_a_bioformats2raw_store_of_several_series_says_only_the_first_is_read(tmp_path, rng):
    root = zarr.open_group(str(tmp_path / "plate.zarr"), mode="w", zarr_format=2)
    zarr.open_group(str(tmp_path / "plate.zarr" / "OME"), mode="w", zarr_format=2).attrs["series"] = ["0", "1"]
    for key in ("0", "1"):
        g = root.create_group(key)
        g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                                   "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}]
        g.create_array("0", data=rng.integers(0, 9, (8, 8), dtype=np.uint8))
    with pytest.warns(UserWarning, match="holds 2 images"):
        assert open_image(tmp_path / "plate.zarr").shape == (8, 8)


def test_an_ngff_05_bioformats2raw_store_of_several_series_says_so_too(tmp_path, rng):
    root = zarr.create_group(str(tmp_path / "slide.zarr"), zarr_format=3)
    root.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
    root.create_group("OME").attrs["ome"] = {"version": "0.5", "series": ["0", "1", "2"]}
    for key in ("0", "1", "2"):
        g = root.create_group(key)
        g.attrs["ome"] = {"version": "0.5", "multiscales": [{
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}]}
        g.create_array("0", data=rng.integers(0, 9, (8, 8), dtype=np.uint8))
    with pytest.warns(UserWarning, match="holds 3 images"):
        assert open_image(tmp_path / "slide.zarr").shape == (8, 8)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_an_hcs_plate_is_refused_with_the_path_of_a_field(tmp_path, rng, version):
    root = zarr.create_group(str(tmp_path / "plate.ome.zarr"), zarr_format=2 if version == "0.4" else 3)
    plate = {"columns": [{"name": "3"}], "rows": [{"name": "B"}], "wells": [{"path": "B/3", "rowIndex": 0, "columnIndex": 0}]}
    well = {"images": [{"path": "1"}]}
    field = root.create_group("B").create_group("3")
    if version == "0.4":
        root.attrs["plate"], field.attrs["well"] = {"version": version, **plate}, {"version": version, **well}
    else:
        root.attrs["ome"], field.attrs["ome"] = {"version": version, "plate": plate}, {"version": version, "well": well}
    with pytest.raises(ImageReadError, match=r"an OME-Zarr plate; open one field of a well, e\.g\. .*plate\.ome\.zarr/B/3/1"):
        open_image(tmp_path / "plate.ome.zarr")


def test_a_pyramid_level_opened_by_its_path_keeps_its_pixel_size_axes_and_channels(tmp_path, rng):
    """image.ome.zarr/1 opened as a plain array: pixel size 1, no units, axes guessed."""
    data = rng.integers(0, 4000, (2, 64, 80), dtype=np.uint16)
    omero = {"channels": [{"label": "GFP", "color": "00FF00"}, {"label": "RFP", "color": "FF0000"}]}
    write_ome_zarr(data, tmp_path / "img.ome.zarr", axes="cyx", scale=(1.0, 0.5, 0.5), units={"y": "micrometer"},
                   omero=omero, pyramid=False)
    write_pyramid(tmp_path / "img.ome.zarr", levels=2)
    whole = open_image(tmp_path / "img.ome.zarr")
    level = open_image(tmp_path / "img.ome.zarr" / "1")
    assert level.shape == whole.levels[1].shape and len(level.levels) == len(whole.levels) - 1
    assert level.axes == "cyx" and level.scale == (1.0, 1.0, 1.0) and level.units.get("y") == "micrometer"
    assert level.translate == (0.0, 0.25, 0.25)  # the level's centred origin
    assert level.meta["ome"]["omero"]["channels"][1]["label"] == "RFP"
    assert open_image(tmp_path / "img.ome.zarr" / "0").scale == whole.scale
