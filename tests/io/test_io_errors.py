"""Broken inputs fail early with one-line errors that name the file."""

from __future__ import annotations

import logging
import pickle

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_attnrestore.io import ImageReadError, ImageWriteError, as_dask, open_image, write_ome_zarr


def _truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"tile": (32, 32), "compression": "zlib"}],
    ids=["strips", "tiles-zlib"],
)
def test_truncated_tiff_fails_at_open(tmp_path, kwargs):
    path = tmp_path / "noisy.tif"
    tifffile.imwrite(path, np.ones((128, 96), np.uint16), **kwargs)
    _truncate(path)
    with pytest.raises(ImageReadError, match=r"noisy\.tif: truncated TIFF") as info:
        open_image(path)
    assert "\n" not in str(info.value)
    assert info.value.path == str(path)


def test_truncated_stack_fails_at_open(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.ones((4, 64, 64), np.uint16), bigtiff=True, photometric="minisblack")
    _truncate(path, 0.6)
    with pytest.raises(ImageReadError, match=r"stack\.tif: truncated TIFF"):
        open_image(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.tif"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.tif: empty file"):
        open_image(path)


def test_text_file_named_tif(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("hello, this is not an image\n")
    with pytest.raises(ImageReadError, match=r"notes\.tif: not a valid TIFF"):
        open_image(path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, this is not an image\n")
    with pytest.raises(ImageReadError, match=r"notes\.png: cannot decode"):
        open_image(path)


def test_missing_path(tmp_path):
    with pytest.raises(ImageReadError, match="no such file or directory"):
        open_image(tmp_path / "missing.tif")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_bytes(b"1234")
    with pytest.raises(ImageReadError) as info:
        open_image(path)
    assert str(info.value) == (
        f"{path}: unsupported file type '.xyz' (supported: .tif, .tiff, .svs, .ndpi, .scn, .bif, .qptiff, .png, .jpg, .zarr, .ome.zarr)"
    )


def test_not_a_zarr_store(tmp_path):
    path = tmp_path / "empty.zarr"
    path.mkdir()
    with pytest.raises(ImageReadError, match=r"empty\.zarr"):
        open_image(path)


def test_zarr_group_without_image(tmp_path):
    path = tmp_path / "g.zarr"
    zarr.open_group(path, mode="w")
    with pytest.raises(ImageReadError, match="no OME multiscales"):
        open_image(path)


def test_corrupt_zarr_chunk_names_store_and_chunk(tmp_path):
    path = tmp_path / "bad.ome.zarr"
    write_ome_zarr(np.ones((64, 64), np.uint16), path, "yx", chunks=(32, 32), pyramid=False)
    (path / "0" / "c" / "0" / "1").write_bytes(b"garbage, not zstd")
    im = open_image(path)  # metadata is fine: opening works
    np.testing.assert_array_equal(im.read((slice(0, 32), slice(0, 32))), 1)
    with pytest.raises(ImageReadError) as info:
        im.read((slice(0, 32), slice(32, 64)))
    message = str(info.value)
    assert str(path) in message and "chunk c/0/1 (pixels [0:32, 32:64])" in message  # where, for the user
    lazy = as_dask(im.data, im.axes, path=im.path)
    assert isinstance(lazy, da.Array)
    with pytest.raises(ImageReadError, match=r"bad\.ome\.zarr/0: cannot read chunk c/0/1"):
        lazy.compute()


def test_errors_pickle_and_types():
    err = pickle.loads(pickle.dumps(ImageReadError("a.tif", "bad\nthing")))
    assert str(err) == "a.tif: bad thing" and isinstance(err, ValueError)
    werr = ImageWriteError("out.zarr", "already exists")
    assert isinstance(werr, OSError) and str(werr) == "out.zarr: already exists"


@pytest.mark.parametrize("kind", ["imagej", "ome", "tiled", "bare"])
def test_a_stack_cut_short_is_refused_not_read_as_its_first_plane(tmp_path, kind):
    """tifffile logs the broken IFD chain and falls back to the first page: a TZCYX ImageJ or
    OME stack cut in half opened as one 40 x 50 plane, and was restored as that."""
    import tifffile

    whole = tmp_path / "whole.tif"
    if kind == "imagej":
        tifffile.imwrite(whole, np.zeros((2, 3, 2, 40, 50), np.uint8), imagej=True, metadata={"axes": "TZCYX"})
    elif kind == "ome":
        tifffile.imwrite(whole, np.zeros((3, 2, 40, 50), np.uint8), ome=True, metadata={"axes": "ZCYX"})
    else:  # tifffile's shaped tiles, or pages with no metadata at all: only the chain of pages says so
        tifffile.imwrite(whole, np.zeros((10, 2, 128, 128), np.uint8), **(
            {"tile": (64, 64)} if kind == "tiled" else {"metadata": None}))
    assert open_image(whole).ndim >= (3 if kind == "bare" else 4)
    data = whole.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt TIFF"):
        open_image(tmp_path / "cut.tif")


def test_an_ome_tiff_lacking_planes_its_metadata_names_is_refused(tmp_path):
    """tifffile reads the planes an OME series names but the file lacks as zeros, and only
    warns: a tiled stack cut before page 6 of 10, or a SizeZ of 40 over 2 pages, restored
    zero planes as data and was marked complete."""
    stack = np.arange(10 * 64 * 64, dtype=np.uint16).reshape(10, 64, 64)
    whole = tmp_path / "whole.ome.tif"
    tifffile.imwrite(whole, stack, tile=(32, 32), ome=True, metadata={"axes": "ZYX"})
    with tifffile.TiffFile(whole) as tif:
        xml = tif.ome_metadata
    # the OME-XML ahead of the pixels (as Bio-Formats writes it): what remains is consistent
    tifffile.imwrite(whole, stack, tile=(32, 32), description=xml, metadata=None)
    with tifffile.TiffFile(whole) as tif:
        cut_at = tif.pages[6].offset
    (tmp_path / "cut.ome.tif").write_bytes(whole.read_bytes()[:cut_at])
    with pytest.raises(ImageReadError, match=r"truncated or incomplete TIFF: its metadata names 4 planes that the "
                                             r"file \(or a file of its set\) does not hold; they would read as zeros"):
        open_image(tmp_path / "cut.ome.tif")
    tifffile.imwrite(tmp_path / "few.ome.tif", stack[:2], description=xml.replace('SizeZ="10"', 'SizeZ="40"'),
                     metadata=None)
    with pytest.raises(ImageReadError, match=r"its metadata names 38 planes that the file"):
        open_image(tmp_path / "few.ome.tif")
    assert open_image(whole).shape == (10, 64, 64)
    # however quiet tifffile's logger is set (the check read its warnings)
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    try:
        with pytest.raises(ImageReadError, match="38 planes"):
            open_image(tmp_path / "few.ome.tif")
    finally:
        logging.getLogger("tifffile").setLevel(logging.NOTSET)


def test_a_palette_tiff_is_refused_for_restoring(tmp_path):
    """Its values are indices into a colour map: they were denoised as intensities."""
    import napari_attnrestore as ar

    colormap = np.zeros((3, 256), np.uint16)
    colormap[0] = np.arange(256) * 256
    tifffile.imwrite(tmp_path / "pal.tif", np.zeros((16, 16), np.uint8), photometric="palette", colormap=colormap)
    assert open_image(tmp_path / "pal.tif").meta["palette"]  # it still opens, to be looked at
    with pytest.raises(ImageReadError, match="palette"):
        ar.restore(tmp_path / "pal.tif")


def test_a_bool_store_given_as_the_image_is_refused_naming_it(tmp_path):
    """A mask saved as a bool zarr, given by mistake as the input: the error named no file."""
    import napari_attnrestore as ar

    zarr.create_array(str(tmp_path / "gaps.zarr"), shape=(32, 32), chunks=(16, 16), dtype=bool)[...] = True
    with pytest.raises(ImageReadError, match=r"gaps\.zarr: true/false pixels are no intensities.*mask="):
        ar.restore(tmp_path / "gaps.zarr")


def test_a_palette_tiff_still_serves_as_a_mask(tmp_path):
    from standins import FillHalf

    import napari_attnrestore as ar

    mask = np.zeros((32, 32), np.uint8)
    mask[8:12] = 1
    tifffile.imwrite(tmp_path / "m.tif", mask, photometric="palette", colormap=np.zeros((3, 256), np.uint16))
    img = np.full((32, 32), 50, np.uint8)
    out = ar.restore(img, task="inpaint", model=FillHalf(), mask=str(tmp_path / "m.tif")).compute()
    assert (out[8:12] == 128).all() and (out[:8] == 50).all()


def test_valid_tiffs_tifffile_complains_about_still_open(tmp_path):
    """Only a broken page chain together with unmatched metadata means a file cut short: pages
    appended without metadata, or an ImageJ count that is out of date, still open whole."""
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "a.tif", np.ones((16, 16), np.uint8), append=True, metadata=None)
    assert open_image(tmp_path / "a.tif").read().shape[-2:] == (16, 16)
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((4, 16, 16), np.uint8), imagej=True)
    with tifffile.TiffFile(tmp_path / "ij.tif") as tif:
        description = tif.pages[0].description
    data = (tmp_path / "ij.tif").read_bytes().replace(b"images=4", b"images=9")
    assert b"images=9" in data and "images=4" in description
    (tmp_path / "ij.tif").write_bytes(data)
    assert open_image(tmp_path / "ij.tif").shape[-2:] == (16, 16)


def test_read_region_takes_zarr_selections(tmp_path):
    """Lists and arrays (zarr's orthogonal selections) were refused by the index check."""
    from napari_attnrestore.io import read_region

    z = zarr.create_array(str(tmp_path / "z.zarr"), shape=(4, 6), chunks=(2, 3), dtype="uint8")
    z[:] = np.arange(24).reshape(4, 6)
    np.testing.assert_array_equal(read_region(z, ([0, 2],)), z[:][[0, 2]])
    with pytest.raises(IndexError, match="out of bounds"):
        read_region(z, (9,))


def test_a_stray_offset_after_the_last_page_is_no_truncation(tmp_path):
    """Some writers leave garbage in the last page's next-page offset: tifffile logs a broken
    chain, but nothing of the file is left unread, so it opens."""
    import struct

    import tifffile

    path = tmp_path / "stray.tif"
    tifffile.imwrite(path, np.arange(64 * 80, dtype=np.uint16).reshape(64, 80), metadata=None)
    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[ifd : ifd + 2])[0]
    data[ifd + 2 + 12 * entries : ifd + 6 + 12 * entries] = struct.pack("<I", len(data) + 1000)
    path.write_bytes(bytes(data))
    assert open_image(path).shape == (64, 80)
    # and with a large value (an XMP packet) stored after the pixels, at the end of the file
    xmp = b"<x:xmpmeta>" + b" " * 19989
    tifffile.imwrite(path, np.arange(64 * 80, dtype=np.uint16).reshape(64, 80), metadata=None,
                     extratags=[(700, "B", len(xmp), xmp, True)])
    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[ifd : ifd + 2])[0]
    for k in range(entries):  # the XMP's value moved to the end
        at = ifd + 2 + 12 * k
        if struct.unpack("<H", data[at : at + 2])[0] == 700:
            data[at + 8 : at + 12] = struct.pack("<I", len(data))
    data[ifd + 2 + 12 * entries : ifd + 6 + 12 * entries] = struct.pack("<I", len(data) + len(xmp) + 4096)
    path.write_bytes(bytes(data) + xmp)
    assert open_image(path).shape == (64, 80)
