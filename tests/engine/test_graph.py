"""The chunk graph: how an output chunk reads its region of the source."""

import numpy as np
import pytest
import zarr
from standins import Box3

import napari_attnrestore as ar
from napari_attnrestore.engine import graph


class CountingReads:
    """An array-like over a zarr array that counts the stored chunks each read decodes."""

    def __init__(self, z: zarr.Array) -> None:
        self.z, self.decoded = z, 0
        self.shape, self.dtype, self.chunks, self.ndim = z.shape, z.dtype, z.chunks, z.ndim

    def __getitem__(self, key):
        n = 1
        for k, c, size in zip(key, self.chunks, self.shape, strict=False):
            lo, hi = (k, k + 1) if isinstance(k, int) else (k.start or 0, size if k.stop is None else k.stop)
            n *= (hi - 1) // c - lo // c + 1
        self.decoded += n
        return self.z[key]


@pytest.mark.parametrize("chunks", [(4, 32, 32), (3, 32, 32), (1, 32, 32)], ids=["4-planes", "3-planes", "1-plane"])
def test_a_volume_stored_several_planes_a_chunk_decodes_each_chunk_once_per_region(tmp_path, rng, chunks):
    """A (16, 256, 256)-chunked volume was read plane by plane: every stored chunk decoded
    once for each of its planes.  Now the chunks of a block of planes read it once."""
    img = (rng.random((8, 64, 64)) * 4000).astype(np.uint16)
    z = zarr.create_array(str(tmp_path / "v.zarr"), shape=img.shape, chunks=chunks, dtype=img.dtype)
    z[:] = img
    src = CountingReads(z)
    kw = dict(model=Box3(), chunks=32, tile=32, overlap=8, normalize=(0, 4000))
    lazy = ar.restore(src, **kw)
    src.decoded = 0  # (what planning samples left out)
    np.testing.assert_array_equal(lazy.compute(), ar.restore(img, **kw).compute())
    blocks = -(-8 // chunks[0])  # blocks of planes (3-plane chunks: 3 + 3 + 2)
    assert src.decoded == blocks * 4 * 4  # x 4 output chunks x 4 stored chunks of 32 px (the halo reaches them all)


def test_a_block_of_planes_too_large_to_hold_is_read_plane_by_plane(monkeypatch, tmp_path, rng):
    img = (rng.random((4, 64, 64)) * 255).astype(np.uint8)
    z = zarr.create_array(str(tmp_path / "v.zarr"), shape=img.shape, chunks=(4, 64, 64), dtype=img.dtype)
    z[:] = img
    monkeypatch.setattr(graph, "PLANE_BLOCK_BYTES", 64 * 64 * 3)
    src = CountingReads(z)
    kw = dict(model=Box3(), chunks=64, tile=64, overlap=8, normalize=(0, 255))
    lazy = ar.restore(src, **kw)
    src.decoded = 0
    np.testing.assert_array_equal(lazy.compute(), ar.restore(img, **kw).compute())
    assert src.decoded == 4  # one read a plane
