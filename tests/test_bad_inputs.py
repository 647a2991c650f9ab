"""Bad input through the CLI, the API, the reader and the Restore widget: one clear error
naming the problem, or a documented handling.

CLI cases must end with exit status 2 and one line on stderr naming the file; API cases
raise one exception whose message names the problem; widget cases show one error
notification (and the status line) and leave the widget idle and the viewer unchanged,
refused before any work starts where the input itself is bad; "handled" cases document
what the engine does instead (and check it).  The table is counted at the end.
"""

from __future__ import annotations

import errno
import os
import pickle

import numpy as np
import pytest
import tifffile
from standins import FillHalf, SplitCFA
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


def test_tiff_with_a_corrupt_strip_names_the_file(tmp_path, tiny_checkpoint, capsys):
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 4000, (5, 32, 32), dtype=np.uint16), compression="zlib")
    with tifffile.TiffFile(path) as t:
        start, size = t.pages[2].dataoffsets[0], t.pages[2].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[start:start + size] = bytes(size)
    path.write_bytes(bytes(raw))
    err = cli(capsys, "restore", path, tmp_path / "o.zarr", "--weights", tiny_checkpoint, "-q")
    assert "pages.tif" in err and "cannot read chunk 2" in err and "ZarrTiffStore" not in err
    # training read the pixels without the guard: a hundred lines of imagecodecs traceback, exit 1
    err = cli(capsys, "train", path, "--self-supervised", "--steps", "2", "--batch", "2", "--patch", "16",
              "--out", tmp_path / "m.safetensors", "-q")
    assert err.count("pages.tif") == 1 and "cannot read chunk 2" in err and "Traceback" not in err
    SEEN["TIFF with a corrupt strip"] = "cli"


def test_mismatched_checkpoints_and_training_states(tmp_path, tif, tiny_checkpoint, capsys):
    import json
    import shutil

    from napari_attnrestore.models import build_model
    from napari_attnrestore.training import save_checkpoint

    other = save_checkpoint(build_model("hat", "denoise", dim=8, depths=[1], heads=2, window=8, unshuffle=1),
                            tmp_path / "other.safetensors", task="denoise", card={"name": "other"})
    mixed = tmp_path / "mixed.safetensors"
    shutil.copy(other, mixed)
    shutil.copy(tiny_checkpoint.with_suffix(".json"), mixed.with_suffix(".json"))  # the card of another network
    assert "mixed.safetensors: weights do not match" in cli(capsys, "restore", tif, tmp_path / "o.zarr",
                                                            "--weights", mixed)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junkjunk")
    args = ["train", "--self-supervised", tif, "--out", tmp_path / "t.safetensors", "--steps", "1", "--batch", "1",
            "--patch", "32", "--device", "cpu", "-q", "--overwrite"]
    assert "junk.pt: cannot resume" in cli(capsys, *args, "--state", junk)
    assert main([str(a) for a in (*args, "--state", tmp_path / "st.pt")]) == 0
    capsys.readouterr()
    assert "st.pt: this training state was saved by another network" in cli(
        capsys, *args, "--state", tmp_path / "st.pt", "--arch", "psal", "--steps", "2")
    assert "--steps and --batch must be at least 1" in cli(capsys, *args, "--steps", "0")
    assert json.loads(mixed.with_suffix(".json").read_text())["name"] == "tiny"
    SEEN["weights that do not match their card"] = SEEN["unreadable training state"] = "cli"
    SEEN["training state of another network"] = "cli"


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
    refused = cli(capsys, "restore", tif, tmp_path / "o.zarr", "--weights", evil)
    assert "refused" in refused and "weights_only" not in refused  # not torch's advice to unpickle anyway
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
    with pytest.raises(ValueError, match="mask shape"):
        ar.restore(np.zeros((32, 32), np.uint8), task="inpaint", model=FillHalf(), mask=np.zeros((31, 32), bool))
    odd = (np.random.default_rng(1).random((31, 45)) * 255).astype(np.uint8)
    out = ar.restore(odd, task="demosaic", cfa="GBRG", model=SplitCFA()).compute()
    assert out.shape == (31, 45, 3)  # documented: odd-sized CFA images are demosaiced as they are
    with pytest.raises(ValueError, match="unknown task"):
        ar.restore(np.zeros((8, 8), np.uint8), task="colorize", model=Gray())
    SEEN["mask of another shape"] = "api"
    SEEN["odd-sized CFA image"] = "handled"
    SEEN["unknown task"] = "api"


def test_reader_returns_none_for_bad_files_and_a_refusing_reader_for_cut_ones(tmp_path, tif):
    from napari_attnrestore.io.napari_hooks import napari_get_reader

    cut = tmp_path / "cut.tif"
    cut.write_bytes(tif.read_bytes()[:300])
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    text = tmp_path / "text.tif"
    text.write_text("hello")
    for bad in (empty, text, tmp_path / "missing.tif", tmp_path / "x.xyz"):
        assert napari_get_reader(str(bad)) is None  # napari then tries other readers; nothing raises
    with pytest.raises(ValueError, match=r"cut\.tif: truncated TIFF"):  # others would show part of it
        napari_get_reader(str(cut))(str(cut))
    assert napari_get_reader(str(tif)) is not None
    SEEN["reader given broken files"] = "reader"


def test_disk_full_and_permission_denied_while_writing(tmp_path, tif, tiny_checkpoint, capsys, monkeypatch):
    import zarr.storage._local as zarr_local

    put = zarr_local._put
    for code, name in ((errno.ENOSPC, "disk full while writing"), (errno.EACCES, "permission denied while writing")):
        dst = tmp_path / f"{code}.zarr"

        def failing(path, value, exclusive=False, dst=dst, code=code):
            if str(path).startswith(str(dst / "0" / "c")):
                raise OSError(code, os.strerror(code), str(path))
            return put(path, value, exclusive=exclusive)

        monkeypatch.setattr(zarr_local, "_put", failing)
        line = cli(capsys, "restore", tif, dst, "--weights", tiny_checkpoint, "-q")
        assert str(dst) in line and os.strerror(code) in line and "--resume" in line
        from napari_attnrestore.engine.store import job_state

        assert job_state(dst)["status"] == "failed"
        SEEN[name] = "cli"


# ---------------------------------------------------------------- the Restore widget

@pytest.fixture
def gui(make_napari_viewer, qtbot):
    """A viewer, its Restore widget with a gray test model, and the notifications shown."""
    pytest.importorskip("napari")
    from napari.utils.notifications import notification_manager

    from napari_attnrestore.gui.restore_widget import RestoreWidget

    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore")
    widget.add_model("gray", Gray())
    notes: list = []
    notification_manager.notification_ready.connect(notes.append)
    yield viewer, widget, notes
    notification_manager.notification_ready.disconnect(notes.append)
    if widget.busy:
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)


def _errors(notes) -> list[str]:
    return [str(n.message) for n in notes if str(n.severity).lower().endswith("error")]


def widget_error(qtbot, gui, action: str = "run", up_front: bool = True) -> str:
    """Run the widget; exactly one one-line error, the widget idle, no layer added."""
    viewer, widget, notes = gui
    layers = len(viewer.layers)
    getattr(widget, action)()
    if up_front:
        assert not widget.busy, "a bad input must be refused before a worker starts"
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    errors = _errors(notes)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert widget._status.value.startswith("error:")
    assert widget._run_btn.enabled and widget._preview_btn.enabled and not widget._cancel_btn.enabled
    assert len(viewer.layers) == layers
    notes.clear()
    return errors[0]


def widget_result(qtbot, gui, name: str):
    """Run the widget on a layer it handles: no error, a result layer."""
    viewer, widget, notes = gui
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert not _errors(notes), _errors(notes)
    assert widget._status.value == "done", widget._status.value
    return viewer.layers[name]


@pytest.mark.gui
def test_widget_refuses_unrestorable_layers(gui, qtbot):
    viewer, widget, _ = gui
    viewer.add_image(np.full((32, 32), np.nan, np.float32), name="allnan")
    assert "'allnan'" in widget_error(qtbot, gui) and "no finite pixels" in widget_error(qtbot, gui, "preview")
    viewer.add_image(np.zeros((32, 32), bool), name="flags")
    widget.set_options(input=viewer.layers["flags"])
    msg = widget_error(qtbot, gui)
    assert "'flags'" in msg and "unsupported pixel type bool" in msg
    viewer.add_image(np.zeros((16, 16, 3), np.uint8), name="colour", rgb=True)
    widget.add_model("split", SplitCFA())
    widget.set_options(input=viewer.layers["colour"])
    assert "'colour'" in widget_error(qtbot, gui) and "single-channel CFA" in widget_error(qtbot, gui, "preview")
    SEEN["widget: layer with NaN everywhere"] = SEEN["widget: bool layer"] = "widget"
    SEEN["widget: RGB layer for demosaicing"] = "widget"


@pytest.mark.gui
def test_widget_refuses_bad_settings(gui, qtbot, tmp_path):
    viewer, widget, _ = gui
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    widget.set_options(model="checkpoint file...", checkpoint=str(tmp_path / "gone.safetensors"))
    assert "gone.safetensors: checkpoint not found" in widget_error(qtbot, gui)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint" * 10)
    widget.set_options(checkpoint=str(junk))
    assert "junk.safetensors" in widget_error(qtbot, gui, up_front=False)  # read in the worker: it takes time
    widget.set_options(task="inpaint", nodata="minus one")
    assert "nodata must be a number" in widget_error(qtbot, gui)
    SEEN["widget: missing checkpoint file"] = SEEN["widget: corrupt checkpoint file"] = "widget"
    SEEN["widget: nodata not a number"] = "widget"


@pytest.mark.gui
def test_widget_refuses_bad_zarr_outputs(gui, qtbot, tmp_path, monkeypatch):
    import zarr.storage._local as zarr_local

    from napari_attnrestore.engine.store import done_chunks, job_state

    viewer, widget, _ = gui
    viewer.add_image(np.random.default_rng(0).random((600, 600), dtype=np.float32), name="img")
    widget.set_options(output="zarr file", zarr=str(tmp_path / "no" / "such" / "out.ome.zarr"))
    assert "does not exist" in widget_error(qtbot, gui)
    (tmp_path / "a-file").write_text("x")
    widget.set_options(zarr=str(tmp_path / "a-file" / "out.ome.zarr"))
    assert "is not a folder" in widget_error(qtbot, gui)
    (tmp_path / "old.ome.zarr").mkdir()
    widget.set_options(zarr=str(tmp_path / "old.ome.zarr"), existing="stop")
    assert "old.ome.zarr: exists" in widget_error(qtbot, gui)

    dst = tmp_path / "full.ome.zarr"
    put = zarr_local._put
    written: list = []

    def disk_full(path, value, exclusive=False):
        if str(path).startswith(str(dst / "0" / "c")):
            if len(written) >= 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            written.append(path)
        return put(path, value, exclusive=exclusive)

    monkeypatch.setattr(zarr_local, "_put", disk_full)
    widget.set_options(zarr=str(dst), chunk=256)  # 3 x 3 chunks; the disk is full after two
    msg = widget_error(qtbot, gui, up_front=False)
    assert str(dst) in msg and "No space left on device" in msg and "resume" in msg
    assert job_state(dst)["status"] == "failed" and len(done_chunks(dst)) <= 2
    SEEN["widget: zarr output in a missing folder"] = SEEN["widget: zarr output under a file"] = "widget"
    SEEN["widget: existing zarr output"] = SEEN["widget: disk full while writing zarr"] = "widget"


@pytest.mark.gui
def test_widget_handles_odd_shapes(gui, qtbot):
    from napari_attnrestore.tasks.demosaic import mosaic

    viewer, widget, _ = gui
    viewer.add_image(np.full((1, 1), 7, np.uint16), name="dot")
    assert widget_result(qtbot, gui, "dot (denoised)").data.shape == (1, 1)
    six = np.arange(2 * 3 * 16 * 16, dtype=np.uint16).reshape(1, 2, 1, 3, 16, 16)
    viewer.add_image(six, name="six")
    widget.set_options(input=viewer.layers["six"])
    out = widget_result(qtbot, gui, "six (denoised)")
    np.testing.assert_array_equal(np.asarray(out.data), six)  # plane by plane through the identity
    rgb = np.random.default_rng(2).integers(0, 255, (31, 45, 3), dtype=np.uint8)
    viewer.add_image(mosaic(rgb, "GBRG"), name="raw")
    widget.add_model("split", SplitCFA())
    widget.set_options(input=viewer.layers["raw"], cfa="GBRG")
    out = widget_result(qtbot, gui, "raw (demosaiced)")
    assert out.rgb and out.data.shape == (31, 45, 3)
    SEEN["widget: 1x1 layer"] = SEEN["widget: 6-D layer"] = SEEN["widget: odd-sized CFA layer"] = "widget"


def test_zz_all_kinds_were_exercised():
    """At least twenty kinds of bad input, each with a clear error or a documented handling;
    at least ten through the widget when the napari tests ran."""
    assert "EXECUTED" not in SEEN
    assert len(SEEN) >= 20, sorted(SEEN)
    widget = [k for k, door in SEEN.items() if door == "widget"]
    assert not widget or len(widget) >= 10, widget


def test_what_a_scripter_gets_wrong_is_said_at_the_call():
    """A list of paths failed as 'an image needs at least 2 dimensions; got shape (2,)', a
    list of unlike arrays with numpy's own error, an empty model name as "PosixPath('.') has
    an empty name", and a wrong training argument only at the first step."""
    import warnings

    with pytest.raises(TypeError, match="restore takes one image, not a list of 2 paths"):
        ar.restore(["a.tif", "b.tif"])
    with pytest.raises(ValueError, match=r"differ in shape \(\(8, 8\), \(9, 8\)\)"):
        ar.restore([np.zeros((8, 8)), np.zeros((9, 8))])
    with pytest.raises(ValueError, match=r"no model named .*shipped models: "):
        ar.load_model("")
    with pytest.raises(ValueError, match="unknown task 'bogus'"):
        ar.train(np.zeros((64, 64)), task="bogus")  # no next(): the call itself
    assert ar.train.__name__ == "train" and ar.TrainEvent.__name__ == "TrainEvent"
    half = (np.random.default_rng(0).random((64, 64)) * 200).astype(np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" came from every float16 image
        from napari_attnrestore.engine.plan import undeclared_fill

        assert undeclared_fill(half.shape, half.dtype, half.__getitem__, 0, False) is None


def test_a_mask_that_marks_every_pixel_is_refused():
    """An all-True mask restored an 8-bit image into zeros, exit 0, with only the 'marks about
    100%' warning."""
    img = np.full((64, 64), 100, np.uint8)
    with pytest.raises(ValueError, match=r"the mask marks every pixel to fill \(nonzero = fill\): no known pixel"):
        ar.restore(img, task="inpaint", mask=np.ones(img.shape, bool), model=FillHalf())
    with pytest.raises(ValueError, match=r"zero = fill.*without invert_mask"):
        ar.restore(img, task="inpaint", mask=np.zeros(img.shape, np.uint8), invert_mask=True, model=FillHalf())
    SEEN["mask marking every pixel"] = "api"


def test_a_mask_that_with_the_no_data_leaves_nothing_known_is_refused():
    """A NaN-framed scene given its footprint as the mask came back all NaN, exit 0, with
    only the 'marks about 88%' hint."""
    img = np.full((64, 64), np.nan, np.float32)
    img[8:56, 8:56] = 100.0
    footprint = np.isfinite(img)
    with pytest.raises(ValueError, match="leave no known pixel to fill from"):
        ar.restore(img, task="inpaint", mask=footprint, model=FillHalf())
    gaps = np.zeros(img.shape, bool)
    gaps[30:32, 8:56] = True  # the gaps within the data: fine
    assert np.isfinite(ar.restore(img, task="inpaint", mask=gaps, model=FillHalf()).compute()[30]).sum() == 48
    SEEN["mask and no data leaving nothing known"] = "api"
