"""GeoTIFF georeference: pixel centres in napari, and carried to restored TIFFs (also x2)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_attnrestore.io import open_image, write_tiff
from napari_attnrestore.io.geotiff import georeference_tags

PROJECTED_METRE = (1, 1, 0, 2, 1024, 0, 1, 1, 3076, 0, 1, 9001)
POINT = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 2, 3076, 0, 1, 9001)  # + GTRasterTypeGeoKey = PixelIsPoint


def _geotiff(path, shape=(20, 30), keys=PROJECTED_METRE, corner=(500000.0, 4000000.0), size=(30.0, 30.0),
             nodata=None, data=None):
    tags = [(33550, "d", 3, (*size, 0.0), False), (33922, "d", 6, (0.0, 0.0, 0.0, *corner, 0.0), False),
            (34735, "H", len(keys), keys, False)]
    if nodata is not None:
        tags.append((42113, "s", 0, str(nodata), False))
    if data is None:
        data = np.random.default_rng(0).integers(1, 200, shape, dtype=np.uint8)
    tifffile.imwrite(path, data, extratags=tags)
    return path


def test_scenes_of_one_projection_overlay_at_their_true_offset(tmp_path):
    a = open_image(_geotiff(tmp_path / "a.tif"))
    b = open_image(_geotiff(tmp_path / "b.tif", corner=(500060.0, 4000090.0)))  # 2 px east, 3 px north
    assert np.subtract(b.translate, a.translate) == pytest.approx((-90.0, 60.0))  # up and right in napari
    assert a.translate == pytest.approx((-4000000.0 + 15.0, 500015.0))  # centre of pixel (0, 0)
    point = open_image(_geotiff(tmp_path / "p.tif", keys=POINT))
    assert point.translate == pytest.approx((-4000000.0, 500000.0))  # the tie point is the centre


@pytest.mark.parametrize("keys", [PROJECTED_METRE, POINT], ids=["area", "point"])
def test_a_transformation_matrix_places_the_grid_as_scale_and_tiepoint_do(tmp_path, keys):
    """GDAL writes ModelTransformation alone for some grids; a north-up one without rotation
    opens where the same grid given by scale and tie point does."""
    ref = open_image(_geotiff(tmp_path / "ref.tif", keys=keys))
    matrix = (30.0, 0.0, 0.0, 500000.0, 0.0, -30.0, 0.0, 4000000.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    data = np.zeros((20, 30), np.uint8)
    tifffile.imwrite(tmp_path / "m.tif", data, extratags=[(34264, "d", 16, matrix, False),
                                                          (34735, "H", len(keys), keys, False)])
    im = open_image(tmp_path / "m.tif")
    assert im.scale == pytest.approx(ref.scale) and im.translate == pytest.approx(ref.translate)
    assert im.units == ref.units
    rotated = (21.2, 21.2, 0.0, 500000.0, 21.2, -21.2, 0.0, 4000000.0, *matrix[8:])
    tifffile.imwrite(tmp_path / "r.tif", data, extratags=[(34264, "d", 16, rotated, False),
                                                          (34735, "H", len(keys), keys, False)])
    im = open_image(tmp_path / "r.tif")  # a rotated grid is not placed (its tags are still carried)
    assert im.translate == pytest.approx((0.0, 0.0)) and "34264" in im.meta["geotiff"]["tags"]


def test_a_grid_in_feet_gets_feet(tmp_path):
    feet = (1, 1, 0, 2, 1024, 0, 1, 1, 3076, 0, 1, 9003)  # ProjLinearUnits = US survey foot
    im = open_image(_geotiff(tmp_path / "ft.tif", keys=feet))
    assert im.units == {"x": "foot", "y": "foot"} and im.scale == pytest.approx((30.0, 30.0))


@pytest.mark.parametrize("keys", [PROJECTED_METRE, POINT], ids=["area", "point"])
def test_x2_output_keeps_the_ground_position(tmp_path, keys):
    src = open_image(_geotiff(tmp_path / "in.tif", keys=keys, nodata=0))
    geo = src.meta["geotiff"]
    tags = georeference_tags(geo, (40, 60), np.uint8, src.meta["nodata"])
    write_tiff(np.zeros((40, 60), np.uint8), tmp_path / "x2.tif", "yx", extratags=tags)
    out = open_image(tmp_path / "x2.tif")
    assert out.scale == pytest.approx((15.0, 15.0)) and out.units == {"x": "meter", "y": "meter"}
    # output pixel (0, 0) covers the top-left quarter of input pixel (0, 0)
    assert np.subtract(out.translate, src.translate) == pytest.approx((-7.5, -7.5))
    assert out.meta["nodata"] == 0
    keys = {k: v for k, v in out.meta["geotiff"]["geokeys"].items() if k.endswith("GeoKey")}
    assert keys == {k: v for k, v in geo["geokeys"].items() if k.endswith("GeoKey")} and len(keys) >= 2


@pytest.mark.parametrize("point", [False, True], ids=["area", "point"])
def test_x4_transformation_matrix_maps_output_centres_to_the_same_ground(point):
    m = [20.0, 5.0, 0, 1000.0, 3.0, -20.0, 0, 9000.0, 0, 0, 0, 0, 0, 0, 0, 1]  # rotated/sheared grid
    keys = POINT if point else PROJECTED_METRE
    geo = {"tags": {"34264": m, "34735": list(keys)}, "shape": [10, 10], "pixel_is_point": point}
    ((code, _, _, new, _), _) = georeference_tags(geo, (40, 40))
    assert code == 34264

    def ground(mat, i, j):
        return mat[0] * i + mat[1] * j + mat[3], mat[4] * i + mat[5] * j + mat[7]

    c = 0.0 if point else 0.5  # raster coordinate of a pixel centre
    for i_out, j_out in [(0, 0), (7, 3), (39, 21)]:
        i_in, j_in = (i_out + 0.5) / 4 - 0.5 + c, (j_out + 0.5) / 4 - 0.5 + c
        assert ground(new, i_out + c, j_out + c) == pytest.approx(ground(m, i_in, j_in))


def test_nodata_is_declared_only_when_the_output_holds_it():
    geo = {"tags": {"33550": [1.0, 1.0, 0.0]}, "shape": [4, 4]}
    assert [t[0] for t in georeference_tags(geo, (4, 4), np.uint8, -9999)] == [33550]
    assert georeference_tags(geo, (4, 4), np.float32, -9999)[-1][:4] == (42113, "s", 0, "-9999")
    assert georeference_tags(None, (4, 4)) == [] and georeference_tags(geo, (6, 4)) == []


def test_a_nodata_the_pixels_cannot_hold_is_no_nodata(tmp_path):
    """GDAL_NODATA -9999 in a uint8 file: tifffile gives 0, which made every black pixel
    missing (to be filled by inpainting) and went on into the output; GDAL ignores it."""
    tifffile.imwrite(tmp_path / "u8.tif", np.zeros((8, 8), np.uint8), extratags=[(42113, "s", 0, "-9999", True)])
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((8, 8), np.float32), extratags=[(42113, "s", 0, "-9999", True)])
    assert open_image(tmp_path / "u8.tif").meta.get("nodata") is None
    assert open_image(tmp_path / "f.tif").meta["nodata"] == -9999.0


def test_an_opened_image_converts_to_ome_zarr_with_everything_it_carries(tmp_path):
    """The README's TIFF -> OME-Zarr conversion (for dask.distributed) passed axes and scale
    only: the georeference, nodata, units and channel names were lost on the way."""
    from napari_attnrestore.io import ImageWriteError, write_ome_zarr, write_tiff
    from napari_attnrestore.io.geotiff import georeference_tags

    src = open_image(_geotiff(tmp_path / "scene.tif", nodata=0))
    zarr_path = write_ome_zarr(src, tmp_path / "scene.ome.zarr")
    back = open_image(zarr_path)
    assert back.meta.get("nodata") == 0 and back.meta.get("geotiff") == src.meta.get("geotiff")
    assert back.scale == src.scale and back.translate == src.translate and back.units == src.units
    tags = georeference_tags(back.meta["geotiff"], back.shape, back.dtype, back.meta["nodata"])
    write_tiff(back.to_dask(), tmp_path / "again.tif", axes=back.axes, extratags=tags)
    again = open_image(tmp_path / "again.tif")
    assert again.translate == src.translate and again.meta.get("nodata") == 0

    img = np.zeros((2, 32, 32), np.uint16)
    omero = {"channels": [{"label": "DAPI", "color": "0000FF"}, {"label": "GFP", "color": "00FF00"}]}
    write_ome_zarr(img, tmp_path / "two.ome.zarr", axes="cyx", scale=(1, 0.5, 0.5), units={"x": "micrometer",
                   "y": "micrometer"}, omero=omero)
    copy = open_image(write_ome_zarr(open_image(tmp_path / "two.ome.zarr"), tmp_path / "copy.ome.zarr"))
    assert [c["label"] for c in copy.meta["ome"]["omero"]["channels"]] == ["DAPI", "GFP"]
    assert copy.scale == (1.0, 0.5, 0.5) and copy.units.get("x") == "micrometer"
    with pytest.raises(ImageWriteError, match="give the axes"):
        write_ome_zarr(img, tmp_path / "no_axes.ome.zarr")


@pytest.mark.parametrize("code,value", [(34264, (1.0, 2.0, 3.0)), (33550, (30.0,)), (33922, (0.0, 0.0, 0.0, 5e5))])
def test_a_malformed_placement_tag_is_ignored_with_a_warning(tmp_path, code, value):
    """A ModelTransformation of 3 values made writing the restored GeoTIFF fail with a raw
    IndexError; a one-value ModelPixelScale with "'float' object is not subscriptable"."""
    path = tmp_path / "bad.tif"
    tags = [(code, "d", len(value), value, True)]
    if code == 33922:  # a tie point of 4 values beside a good pixel scale
        tags.append((33550, "d", 3, (30.0, 30.0, 0.0), True))
    tifffile.imwrite(path, np.zeros((20, 30), np.uint8), extratags=tags)
    with pytest.warns(UserWarning, match=r"holds \d values, not .*: the GeoTIFF's placement is ignored"):
        img = open_image(path)
    assert img.translate == (0.0, 0.0) and img.scale == (1.0, 1.0)
    tags = georeference_tags(img.meta.get("geotiff"), (40, 60), np.uint8)
    assert code not in [t[0] for t in tags] and 33922 not in [t[0] for t in tags]
    write_tiff(np.zeros((40, 60), np.uint8), tmp_path / "out.tif", extratags=tags)


def test_a_mask_geotiff_of_another_place_is_warned_about(tmp_path):
    """From a remote-sensing review: a mask GeoTIFF 200 km away at 10 m (the image: 30 m) with
    as many pixels was used pixel for pixel without a word."""
    import warnings

    import napari_attnrestore as ar
    from napari_attnrestore.warning import AttnRestoreWarning

    image = _geotiff(tmp_path / "scene.tif")
    stripe = np.zeros((20, 30), np.uint8)
    stripe[8:10] = 1
    here = _geotiff(tmp_path / "here.tif", data=stripe)
    elsewhere = _geotiff(tmp_path / "elsewhere.tif", corner=(700000.0, 4100000.0), size=(10.0, 10.0), data=stripe)
    with pytest.warns(AttnRestoreWarning, match=r"elsewhere.tif: the mask lies elsewhere than the image \(pixel "
                                                r"size 10, 10, origin .* against 30, 30"):
        ar.restore(image, task="inpaint", mask=elsewhere)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttnRestoreWarning)
        ar.restore(image, task="inpaint", mask=here)  # the same grid: nothing to say
