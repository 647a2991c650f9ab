"""Real sample files from ../shared/data/samples (skipped where that folder is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_attnrestore.io import open_image
from napari_attnrestore.io.napari_hooks import napari_get_reader

SAMPLES = Path(os.environ.get("ATTNRESTORE_SAMPLES", Path(__file__).resolve().parents[3] / "shared/data/samples"))


def _sample(name: str) -> Path:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def test_landsat_geotiff_rgb():
    im = open_image(_sample("landsat7_rgb_byte.tif"))
    assert im.axes == "yxc" and im.rgb and im.shape == (718, 791, 3)
    assert im.scale[0] == pytest.approx(300.04, abs=0.01) and im.units["x"] == "meter"
    assert im.translate[:2] == pytest.approx((-2826915.0 + 300.0379 / 2, 101985.0 + 300.0418 / 2))
    ((_data, kwargs, _),) = napari_get_reader(str(im.path))(im.path)
    assert kwargs["rgb"] and len(kwargs["scale"]) == 2


def test_brightfield_big_endian_stack():
    im = open_image(_sample("brightfield_2dt_uint16.tif"))
    assert im.meta["byteorder"] == ">"
    assert im.axes == "tyx" and im.shape == (5, 512, 512) and im.dtype.itemsize == 2
    assert 0 < float(np.mean(im.read((2, slice(0, 64), slice(0, 64))))) < 65535


def test_fluo_nuclei_uint16():
    im = open_image(_sample("fluo_nuclei_2d_uint16.tif"))
    assert im.axes == "yx" and im.shape == (512, 512) and im.dtype == np.uint16


def test_bayer_mosaic_samples_one_colour_per_pixel():
    from napari_attnrestore.io.samples import bayer_mosaic

    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    assert bayer_mosaic(rgb, "RGGB")[:2, :2].tolist() == [[10, 20], [20, 30]]
    assert bayer_mosaic(rgb, "BGGR")[:2, :2].tolist() == [[30, 20], [20, 10]]
    assert bayer_mosaic(rgb, "GRBG")[:2, :2].tolist() == [[20, 10], [30, 20]]
