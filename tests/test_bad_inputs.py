"""Bad input through the CLI and the API: one clear error naming the problem, or a documented handling.

CLI cases must end with exit status 2 and one line on stderr naming the file; API cases
raise one exception whose message names the problem; "handled" cases document what the
engine does instead (and check it).  The table is counted at the end.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile
from torch import nn

import napari_attnrestore as ar
from napari_attnrestore.cli import main

SEEN: dict[str, str] = {}


class Gray(nn.Module):
    in_channels, out_channels, scale, halo = 1, 1, 1, 4

    def forward(self, x):
        return x


class RGBNet(nn.Module):
    in_channels, out_channels, scale = 3, 3, 1

    def forward(self, x):
        return x


def cli(capsys, *args) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("attnrestore: error:"), err
    return err[0]


@pytest.fixture
def tif(tmp_path):
    path = tmp_path / "ok.tif"
    tifffile.imwrite(path, (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    return path


# ---------------------------------------------------------------- files (CLI)

def test_truncated_tiff(tmp_path, tif, tiny_checkpoint, capsys):
    bad = tmp_path / "cut.tif"
    bad.write_bytes(tif.read_bytes()[:300])
    assert "cut.tif" in cli(capsys, "restore", bad, tmp_path / "o.zarr", "--weights", tiny_checkpoint)
    SEEN["truncated TIFF"] = "cli"


def test_corrupt_tiff(tmp_path, tiny_checkpoint, capsys):
    bad = tmp_path / "junk.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    assert "junk.tif" in cli(capsys, "restore", bad, tmp_path / "o.zarr", "--weights", tiny_checkpoint)
    SEEN["corrupt TIFF"] = "cli"


def test_non_image_and_empty_files(tmp_path, tiny_checkpoint, capsys):
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    assert "notes.tif" in cli(capsys, "restore", text, tmp_path / "o.zarr", "--weights", tiny_checkpoint)
    assert "empty.tif" in cli(capsys, "restore", empty, tmp_path / "o2.zarr", "--weights", tiny_checkpoint)
    SEEN["non-image file"] = SEEN["empty file"] = "cli"


def test_missing_path_and_unsupported_types(tmp_path, tif, tiny_checkpoint, capsys):
    assert "nope.tif" in cli(capsys, "restore", tmp_path / "nope.tif", tmp_path / "o.zarr", "--weights", tiny_checkpoint)
    assert "out.jpg" in cli(capsys, "restore", tif, tmp_path / "out.jpg", "--weights", tiny_checkpoint)
    (tmp_path / "in.xyz").write_bytes(b"\x00" * 10)
    assert "in.xyz" in cli(capsys, "restore", tmp_path / "in.xyz", tmp_path / "o3.zarr", "--weights", tiny_checkpoint)
    SEEN["missing path"] = SEEN["unsupported output type"] = SEEN["unsupported input type"] = "cli"


def test_existing_output_and_unwritable_output(tmp_path, tif, tiny_checkpoint, capsys):
    (tmp_path / "done.zarr").mkdir()
    assert "--overwrite" in cli(capsys, "restore", tif, tmp_path / "done.zarr", "--weights", tiny_checkpoint)
    (tmp_path / "afile").write_text("x")
    assert "afile" in cli(capsys, "restore", tif, tmp_path / "afile" / "o.zarr", "--weights", tiny_checkpoint)
    SEEN["existing output without --overwrite"] = SEEN["output folder not writable"] = "cli"


def test_corrupt_zarr_chunk(tmp_path, tiny_checkpoint, capsys):
    from napari_attnrestore.io import write_ome_zarr

    img = (np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)
    src = write_ome_zarr(img, tmp_path / "in.ome.zarr", axes="yx", chunks=(64, 64), pyramid=False)
    (tmp_path / "in.ome.zarr" / "0" / "c" / "0" / "1").write_bytes(b"garbage")
    assert "c/0/1" in cli(capsys, "restore", src, tmp_path / "o.zarr", "--weights", tiny_checkpoint)
    SEEN["corrupt zarr chunk"] = "cli"


# ---------------------------------------------------------------- checkpoints

class _Evil:
    def __reduce__(self):
        return (SEEN.__setitem__, ("EXECUTED", "pickled code ran"))


def test_checkpoints(tmp_path, tif, tiny_checkpoint, capsys):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": {"w": _Evil()}}))
    assert "refused" in cli(capsys, "restore", tif, tmp_path / "o.zarr", "--weights", evil)
    assert "EXECUTED" not in SEEN
    assert "for task 'denoise', not 'sr'" in cli(capsys, "restore", tif, tmp_path / "o2.zarr", "--task", "sr",
                                                 "--scale", "2", "--weights", tiny_checkpoint)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        ar.restore(np.zeros((32, 32), np.uint8), model=RGBNet())
    SEEN["pickled checkpoint"] = SEEN["checkpoint for another task"] = "cli"
    SEEN["model for another channel count"] = "api"


# ---------------------------------------------------------------- arrays (API)

@pytest.mark.parametrize(
    "name,array,match",
    [
        ("0-size array", np.zeros((0, 16), np.uint8), "empty"),
        ("1-D array", np.zeros(16, np.uint8), "at least 2 dimensions"),
        ("bool data", np.zeros((16, 16), bool), "unsupported pixel type bool"),
        ("complex data", np.zeros((16, 16), np.complex64), "unsupported pixel type complex64"),
    ],
)
def test_arrays_refused(name, array, match):
    with pytest.raises(ValueError, match=match):
        ar.restore(array, model=Gray())
    SEEN[name] = "api"


@pytest.mark.parametrize(
    "name,array",
    [
        ("1x1 array", np.full((1, 1), 7, np.uint16)),
        ("image smaller than a tile", np.arange(70, dtype=np.uint16).reshape(7, 10)),
        ("6-D array", np.arange(2 * 16 * 16, dtype=np.uint16).reshape(1, 2, 1, 1, 16, 16)),
        ("int64 data", np.arange(256, dtype=np.int64).reshape(16, 16) - 100),
        ("float64 data", np.linspace(-3, 3, 256).reshape(16, 16)),
    ],
)
def test_arrays_handled_plane_by_plane_in_their_dtype(name, array):
    out = ar.restore(array, model=Gray(), tile=32).compute()
    assert out.shape == array.shape and out.dtype == array.dtype
    np.testing.assert_allclose(out.astype(np.float64), array.astype(np.float64), atol=1e-6 * max(1, np.abs(array).max()))
    SEEN[name] = "handled"


def test_nan_and_inf_pixels_are_marked_not_spread():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    img[3, 4], img[10, 11] = np.nan, np.inf
    out = ar.restore(img, model=nn.Conv2d(1, 1, 3, padding=1), tile=32).compute()
    assert np.isnan(out[3, 4]) and np.isnan(out[10, 11])  # documented: unreadable pixels come back as NaN
    assert np.isfinite(np.delete(out.ravel(), [3 * 32 + 4, 10 * 32 + 11])).all()
    SEEN["NaN pixels"] = SEEN["Inf pixels"] = "handled"


def test_task_inputs():
    class Fill(nn.Module):
        in_channels, out_channels, scale = 2, 1, 1

        def forward(self, x):
            return x[:, :1]

    class Split(nn.Module):
        in_channels, out_channels, scale = 4, 3, 1

        def forward(self, x):
            return x[:, :1] * x[:, 1:]

    with pytest.raises(ValueError, match="mask shape"):
        ar.restore(np.zeros((32, 32), np.uint8), task="inpaint", model=Fill(), mask=np.zeros((31, 32), bool))
    odd = (np.random.default_rng(1).random((31, 45)) * 255).astype(np.uint8)
    out = ar.restore(odd, task="demosaic", cfa="GBRG", model=Split()).compute()
    assert out.shape == (31, 45, 3)  # documented: odd-sized CFA images are demosaiced as they are
    with pytest.raises(ValueError, match="unknown task"):
        ar.restore(np.zeros((8, 8), np.uint8), task="colorize", model=Gray())
    SEEN["mask of another shape"] = "api"
    SEEN["odd-sized CFA image"] = "handled"
    SEEN["unknown task"] = "api"


def test_reader_returns_none_for_bad_files(tmp_path, tif):
    from napari_attnrestore.io.napari_hooks import napari_get_reader

    cut = tmp_path / "cut.tif"
    cut.write_bytes(tif.read_bytes()[:300])
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    text = tmp_path / "text.tif"
    text.write_text("hello")
    for bad in (cut, empty, text, tmp_path / "missing.tif", tmp_path / "x.xyz"):
        assert napari_get_reader(str(bad)) is None  # napari then tries other readers; nothing raises
    assert napari_get_reader(str(tif)) is not None
    SEEN["reader given broken files"] = "reader"


def test_zz_all_kinds_were_exercised():
    """At least twenty kinds of bad input, each with a clear error or a documented handling."""
    assert "EXECUTED" not in SEEN
    assert len(SEEN) >= 20, sorted(SEEN)
