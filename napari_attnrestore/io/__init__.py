"""Readers and writers: TIFF/OME-TIFF/GeoTIFF/BigTIFF, PNG/JPEG, zarr and OME-Zarr.

No torch and no Qt here. Files are read lazily: `open_image` returns arrays backed by the
zarr store or TIFF file (a PNG or JPEG, small by nature, is read whole into numpy); the
writers stream dask arrays chunk by chunk.
"""

from ._output import absolute_location, refuse_output_over_input
from .errors import ImageReadError, ImageWriteError
from .images import AxesView, GuardedArray, ImageData, as_dask, guess_axes, open_image, read_chunks, read_region
from .ome_zarr import (
    create_ome_zarr,
    default_chunks,
    ngff_order,
    read_ome_metadata,
    release_ome_metadata,
    remove_output,
    replaced_path,
    set_aside,
    write_ome_zarr,
    write_pyramid,
)
from .tiff import write_tiff

__all__ = [
    "AxesView",
    "GuardedArray",
    "ImageData",
    "ImageReadError",
    "ImageWriteError",
    "absolute_location",
    "as_dask",
    "create_ome_zarr",
    "default_chunks",
    "guess_axes",
    "ngff_order",
    "open_image",
    "read_chunks",
    "read_ome_metadata",
    "read_region",
    "refuse_output_over_input",
    "release_ome_metadata",
    "remove_output",
    "replaced_path",
    "set_aside",
    "write_ome_zarr",
    "write_pyramid",
    "write_tiff",
]
