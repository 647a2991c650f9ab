"""GeoTIFF georeference: read it into napari geometry, and carry it to a restored TIFF.

A GeoTIFF ties raster coordinates (I = column, J = row) to map coordinates (X, Y) with
ModelPixelScale + ModelTiepoint or a ModelTransformation matrix.  Its raster type says
whether integer raster coordinates are pixel corners (PixelIsArea, the default) or pixel
centres (PixelIsPoint).  napari places pixel centres at ``translate + index * scale`` with
y growing downwards, so north-up rasters get ``y = -Y``: scenes of one projection then
overlay at their true offsets.

The written tags are the source's, with the pixel grid rescaled when super-resolution
changed the raster size, so GIS tools place the result where the input was.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..warning import warn

__all__ = ["CARRIED", "carried", "gaps_as_nan", "gdal_nodata", "georeference_tags", "nodata_can_occur",
           "read_georeference"]

#: Metadata of a GeoTIFF source kept with its restored layers and stores, so they save as a GeoTIFF again.
CARRIED = ("geotiff", "nodata")

PIXEL_SCALE, TIEPOINT, TRANSFORMATION = 33550, 33922, 34264
KEY_DIRECTORY, DOUBLE_PARAMS, ASCII_PARAMS, GDAL_NODATA = 34735, 34736, 34737, 42113
#: GDAL's XML of dataset and band items: band descriptions, units, and the scale and offset that
#: turn stored counts into physical values (a Landsat band's reflectance), which a restore keeps
GDAL_METADATA = 42112
_RASTER_TYPE_KEY, _PIXEL_IS_POINT = 1025, 2
_TAG_TYPES = {PIXEL_SCALE: "d", TIEPOINT: "d", TRANSFORMATION: "d", KEY_DIRECTORY: "H", DOUBLE_PARAMS: "d",
              ASCII_PARAMS: "s", GDAL_METADATA: "s"}


#: the placement tags and the number of values each holds
_PLACEMENT = {PIXEL_SCALE: "3", TIEPOINT: "6 per tie point", TRANSFORMATION: "16"}


def _well_formed(code: int, value: Any) -> bool:
    """Whether a placement tag holds as many finite numbers as the GeoTIFF spec says."""
    try:
        v = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        return False
    n = v.size
    sized = {PIXEL_SCALE: n in (2, 3), TIEPOINT: n >= 6 and n % 6 == 0, TRANSFORMATION: n == 16}[code]
    return v.ndim == 1 and sized and bool(np.isfinite(v).all())


def _plain(value: Any) -> Any:
    """JSON-friendly copy of a tag or geokey value (enums by name, arrays as lists)."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def carried(meta: Any) -> dict:
    """The :data:`CARRIED` entries of a metadata mapping that are set."""
    return {key: meta[key] for key in CARRIED if meta.get(key) is not None}


def _pixel_is_point(directory: Sequence[int] | None) -> bool:
    """Whether the GeoKeyDirectory says PixelIsPoint (integer raster coordinates are centres)."""
    if not directory or len(directory) < 4:
        return False
    for n in range(int(directory[3])):
        key = directory[4 + 4 * n : 8 + 4 * n]
        if len(key) == 4 and key[0] == _RASTER_TYPE_KEY and key[1] == 0:
            return key[3] == _PIXEL_IS_POINT
    return False


def read_georeference(tif: Any, page: Any, scale: dict, translate: dict, units: dict) -> dict:
    """Fill ``scale``/``translate``/``units`` (per axis letter) from a GeoTIFF page; return its geo metadata.

    The metadata keep the raw georeferencing tags (``tags``) and the raster size they
    describe (``shape``), which :func:`georeference_tags` needs to write them again.
    """
    geo: dict[str, Any] = {}
    try:
        geo["geokeys"] = {k: _plain(v) for k, v in (tif.geotiff_metadata or {}).items()}
    except Exception as exc:  # malformed geokeys should not stop reading pixels
        geo["geokeys_error"] = str(exc)
    tags = page.tags
    raw = {code: tags[code].value for code in _TAG_TYPES if code in tags}
    malformed = [f"{tags[code].name} holds {len(np.atleast_1d(raw[code]))} values, not {need}"
                 for code, need in _PLACEMENT.items() if code in raw and not _well_formed(code, raw[code])]
    if malformed:  # it would place the raster anywhere, or break writing the tags again
        warn(f"{'; '.join(malformed)}: the GeoTIFF's placement is ignored")
        raw = {code: value for code, value in raw.items() if code not in _PLACEMENT}
    geo["tags"] = {str(code): _plain(value) for code, value in raw.items()}
    geo["shape"] = [int(page.imagelength), int(page.imagewidth)]
    point = _pixel_is_point(raw.get(KEY_DIRECTORY))
    geo["pixel_is_point"] = point
    centre = 0.0 if point else 0.5  # raster coordinate of a pixel's centre
    pixel_scale, tiepoint = raw.get(PIXEL_SCALE), raw.get(TIEPOINT)
    if pixel_scale is not None:
        sx, sy = (float(v) for v in pixel_scale[:2])
        geo["pixel_scale"] = [float(v) for v in pixel_scale]
        if sx > 0 and sy > 0:
            scale["x"], scale["y"] = sx, sy
            if tiepoint is not None and len(tiepoint) >= 6:
                i, j, _, wx, wy, _ = (float(v) for v in tiepoint[:6])
                translate["x"] = wx + (centre - i) * sx  # X of column 0's centre
                translate["y"] = -(wy - (centre - j) * sy)  # minus Y of row 0's centre (north up)
                geo["tiepoint"] = [float(v) for v in tiepoint]
                geo["y_axis"] = "napari y = -(map Y): rows run south"
    if TRANSFORMATION in raw:
        m = geo["transformation"] = [float(v) for v in raw[TRANSFORMATION]]
        if pixel_scale is None and len(m) >= 8 and m[1] == m[4] == 0 and m[0] > 0 and m[5] < 0:
            # X = m0 I + m3, Y = m5 J + m7: a north-up grid without rotation, placed as above
            scale["x"], scale["y"] = m[0], -m[5]
            translate["x"] = m[3] + centre * m[0]
            translate["y"] = -(m[7] + centre * m[5])
            geo["y_axis"] = "napari y = -(map Y): rows run south"
    linear = str(geo.get("geokeys", {}).get("ProjLinearUnitsGeoKey", "")).lower()
    model = str(geo.get("geokeys", {}).get("GTModelTypeGeoKey", "")).lower()
    unit = "meter" if "meter" in linear or (not linear and "projected" in model) else None
    unit = "foot" if unit is None and "foot" in linear else unit  # international or US survey feet
    unit = "degree" if unit is None and "geographic" in model else unit
    if unit and (pixel_scale is not None or "y_axis" in geo):  # the grid was placed in map units
        units["x"] = units["y"] = unit
    return geo


def georeference_tags(geo: dict | None, shape_yx: Sequence[int], dtype: Any = None,
                      nodata: float | None = None) -> list[tuple]:
    """tifffile ``extratags`` placing a ``shape_yx`` raster where the source raster of ``geo`` lies.

    A raster ``f`` times larger (super-resolution) gets pixels ``f`` times smaller over the
    same ground; tie points move to the same ground position on the new grid.  ``nodata``
    (the input's) is declared (GDAL_NODATA) when the output ``dtype`` holds it, as the
    engine then writes it where the input had no data.  Returns [] when ``geo`` holds no
    georeference or the sizes are not an integer ratio.
    """
    if not geo or not geo.get("tags") or not geo.get("shape"):
        return []
    (h, w), (oh, ow) = geo["shape"], (int(shape_yx[0]), int(shape_yx[1]))
    if oh % h or ow % w:
        return []
    fy, fx = oh // h, ow // w
    point = bool(geo.get("pixel_is_point"))
    # an output pixel's raster coordinate is (input coordinate) * f + shift
    shift_x, shift_y = ((fx - 1) / 2, (fy - 1) / 2) if point else (0.0, 0.0)
    tags = {int(code): value for code, value in geo["tags"].items()}
    out = []
    for code, kind in _TAG_TYPES.items():
        if code not in tags:
            continue
        value = tags[code]
        if code == PIXEL_SCALE:
            value = [value[0] / fx, value[1] / fy, *value[2:]]
        elif code == TIEPOINT:
            value = list(value)
            for t in range(0, len(value) - 5, 6):
                value[t], value[t + 1] = value[t] * fx + shift_x, value[t + 1] * fy + shift_y
        elif code == TRANSFORMATION:
            m = list(value)
            for r in (0, 4):  # X and Y rows: I = (I' - shift) / f
                a, b = m[r], m[r + 1]
                m[r], m[r + 1] = a / fx, b / fy
                m[r + 3] -= a * shift_x / fx + b * shift_y / fy
            value = m
        if code == GDAL_METADATA:  # the source's pixel statistics no longer hold for the result
            value = re.sub(r"\s*<Item[^>]*name=\"STATISTICS_[^\"]*\"[^>]*>[^<]*</Item>", "", str(value))
        if kind == "s":
            out.append((code, "s", 0, str(value), True))
        else:
            out.append((code, kind, len(value), tuple(value), True))
    if nodata is not None and nodata_can_occur(dtype, nodata):
        out.append((GDAL_NODATA, "s", 0, _nodata_text(nodata), True))
    return out


def gdal_nodata(text: Any, dtype: Any) -> float | None:
    """The nodata value a GDAL_NODATA tag declares for pixels of ``dtype``, or None when
    the tag is unreadable or names a value those pixels cannot hold (``-9999`` in a uint8
    file: GDAL ignores it; taking it as 0 would mark every black pixel as missing)."""
    try:
        value = float(str(text).strip().rstrip("\x00"))
    except ValueError:
        return None
    return value if nodata_can_occur(dtype, value) else None


def nodata_can_occur(dtype: Any, value: float) -> bool:
    """Whether an image of ``dtype`` can hold the value ``value`` exactly (any float image
    can; an integer one only whole numbers in its range, never NaN or infinity)."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return True
    if dt.kind not in "ui" or not np.isfinite(value) or not float(value).is_integer():
        return False
    info = np.iinfo(dt)
    return bool(info.min <= value <= info.max)


def nodata_pixels(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where ``values`` hold ``nodata`` as their own type holds it (GDAL's rule).

    A GeoTIFF's nodata is text ('-9999.9', ArcGIS's '-3.40282346639e+38') that a float32
    image stores rounded: compared in float64 it matched no pixel.  A value the type cannot
    hold (-9999 in uint8, 0.5 in int16) matches none; NaN is not compared here (NaN pixels
    are gaps anyway).
    """
    values = np.asarray(values)
    kind = values.dtype.kind
    if nodata is None or np.isnan(nodata) or kind not in "iuf":
        return np.zeros(values.shape, bool)
    if kind == "f":
        with np.errstate(over="ignore"):  # beyond the type's range: its infinity, as GDAL casts it
            return values == values.dtype.type(nodata)
    if not nodata_can_occur(values.dtype, nodata):
        return np.zeros(values.shape, bool)
    return values == values.dtype.type(int(nodata))


def gaps_as_nan(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """``values`` in float64 with their :func:`nodata_pixels` NaN: what intensity statistics
    are taken of (NaN and infinite pixels stay as they are, left out there too)."""
    values = np.asarray(values)
    return np.where(nodata_pixels(values, nodata), np.nan, values.astype(np.float64))


def _nodata_text(nodata: float) -> str:
    """GDAL's spelling of a nodata value ('0', '-9999', 'nan')."""
    value = float(nodata)
    if np.isnan(value):
        return "nan"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)  # not 39 digits for -3.4e38
