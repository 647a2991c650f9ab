"""restore_to_zarr: OME-Zarr metadata, completion state, failure, resume, cancel."""

import json
import threading
import time
import warnings

import numpy as np
import pytest
import torch
import zarr
from standins import Box3, Identity, NearestUp, SplitCFA

import napari_attnrestore as ar
from napari_attnrestore.engine.execute import Cancelled
from napari_attnrestore.engine.store import OutputError, done_chunks, job_state


def _attrs(path):
    return json.loads((path / "zarr.json").read_text())["attributes"]


def test_writes_ome_zarr_with_metadata(tmp_path, rng):
    img = (rng.random((2, 100, 90)) * 1000).astype(np.uint16)
    dst = tmp_path / "out.ome.zarr"
    ar.restore_to_zarr(img, dst, model=Box3(), chunks=48, tile=32, pyramid=False)
    arr = zarr.open_array(str(dst / "0"), mode="r")
    assert arr.shape == img.shape and arr.dtype == np.uint16 and arr.chunks == (1, 48, 48)
    np.testing.assert_array_equal(arr[:], ar.restore(img, model=Box3(), chunks=48, tile=32).compute())
    ome = _attrs(dst)["ome"]
    assert ome["version"] == "0.5"
    assert [a["name"] for a in ome["multiscales"][0]["axes"]][-2:] == ["y", "x"]
    assert job_state(dst)["status"] == "complete"
    assert not (dst / ".attnrestore").exists()  # the chunk markers are gone: zarr warned on listing the group
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(zarr.open_group(str(dst), mode="r").keys()) == ["0"]


def test_sr_divides_pixel_size_and_shifts_origin(tmp_path, rng):
    from napari_attnrestore.io import write_ome_zarr

    src = write_ome_zarr((rng.random((64, 64)) * 255).astype(np.uint8), tmp_path / "in.ome.zarr", axes="yx",
                         scale=(0.5, 0.5), units={"y": "micrometer", "x": "micrometer"}, pyramid=False)
    dst = tmp_path / "sr.ome.zarr"
    ar.restore_to_zarr(src, dst, task="sr", scale=2, model=NearestUp(), pyramid=False)
    ds = _attrs(dst)["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    scale = next(t["scale"] for t in ds if t["type"] == "scale")
    trans = next((t["translation"] for t in ds if t["type"] == "translation"), [0.0, 0.0])
    assert scale == [0.25, 0.25]
    # output pixel centres tile the input pixel: -0.5 * 0.5 + 0.25 / 2 = -0.125
    assert trans == pytest.approx([-0.125, -0.125])


def test_channel_names_and_colours_go_on_to_the_output(tmp_path, rng):
    from napari_attnrestore.io import create_ome_zarr

    omero = {"channels": [{"label": "GFP", "color": "00FF00"}, {"label": "RFP", "color": "FF0000"}]}
    src = create_ome_zarr(tmp_path / "in.ome.zarr", (2, 32, 32), np.uint16, None, "cyx", omero=omero)
    src[:] = (rng.random((2, 32, 32)) * 1000).astype(np.uint16)
    ar.restore_to_zarr(str(tmp_path / "in.ome.zarr"), tmp_path / "out.ome.zarr", model=Box3(), pyramid=False)
    assert zarr.open_group(str(tmp_path / "out.ome.zarr")).attrs["ome"]["omero"] == omero


def test_a_single_channel_images_name_colour_and_window_go_on_without_a_c_axis(tmp_path, rng):
    # ome-zarr-py writes one channel as yx (no c axis) with one omero channel, NGFF 0.4 on zarr v2
    g = zarr.open_group(str(tmp_path / "in.ome.zarr"), mode="w", zarr_format=2)
    g.create_array("0", shape=(48, 48), dtype=np.uint16, chunks=(32, 32))[...] = (
        rng.random((48, 48)) * 3000).astype(np.uint16)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                               "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}]}]
    channel = {"label": "mCherry", "color": "FF00FF", "active": True,
               "window": {"min": 0, "max": 65535, "start": 600, "end": 2800}}
    g.attrs["omero"] = {"version": "0.4", "channels": [channel]}
    ar.restore_to_zarr(str(tmp_path / "in.ome.zarr"), tmp_path / "out.ome.zarr", model=Box3(), pyramid=False)
    ome = zarr.open_group(str(tmp_path / "out.ome.zarr")).attrs["ome"]
    assert ome["omero"] == {"channels": [channel]}  # and no "version": 0.4 inside an NGFF 0.5 store
    assert ome["version"] == "0.5"


def test_refuses_to_overwrite(tmp_path, rng):
    img = rng.random((40, 40)).astype(np.float32)
    dst = tmp_path / "o.zarr"
    ar.restore_to_zarr(img, dst, model=Box3(), pyramid=False)
    with pytest.raises(OutputError, match=r"exists.*overwrite"):
        ar.restore_to_zarr(img, dst, model=Box3(), pyramid=False)
    ar.restore_to_zarr(img, dst, model=Box3(), pyramid=False, overwrite=True)
    other = tmp_path / "other.ome.zarr"  # a store of someone else's: nothing to resume there
    ar.io.write_ome_zarr(img, other, "yx", pyramid=False)
    with pytest.raises(OutputError, match="cannot resume: it was not written by an attnrestore restore"):
        ar.restore_to_zarr(img, other, model=Box3(), pyramid=False, resume=True)


def test_output_overlapping_its_input_is_refused_and_the_input_kept(tmp_path, rng):
    from napari_attnrestore.io import write_ome_zarr

    img = (rng.random((48, 48)) * 60000).astype(np.uint16)
    src = write_ome_zarr(img, tmp_path / "in.ome.zarr", axes="yx", pyramid=False)
    for dst in (src, tmp_path / "in.ome.zarr" / "0", tmp_path):  # the input, inside it, holding it
        with pytest.raises(OutputError, match="overlap the input"):
            ar.restore_to_zarr(src, dst, model=Box3(), pyramid=False, overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "in.ome.zarr" / "0"))[:], img)


def test_overwrite_deletes_only_zarr_stores(tmp_path, rng):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a zarr store"):
        ar.restore_to_zarr(rng.random((32, 32)).astype(np.float32), folder, model=Box3(), overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"


class FailAfter(Box3):
    """Raises on the n-th forward pass (a crash in the middle of a job)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0
        self.lock = threading.Lock()

    def forward(self, x):
        with self.lock:
            self.calls += 1
            if self.calls > self.n:
                raise RuntimeError("simulated failure")
        return super().forward(x)


def test_an_overwrite_keeps_the_output_it_replaces_until_it_is_complete(tmp_path, rng):
    """--overwrite deleted a complete output when the job started: a job that then failed
    (a crash, a full disk, Ctrl-C) left neither the old output nor a new one."""
    from napari_attnrestore.io import open_image

    img = (rng.random((96, 96)) * 60000).astype(np.uint16)
    kw = dict(chunks=32, tile=32, overlap=8, pyramid=False, num_workers=1)
    dst, aside = tmp_path / "out.zarr", tmp_path / ".out.zarr.replaced"
    ar.restore_to_zarr(img, dst, model=Identity(), **kw)
    with pytest.raises(RuntimeError, match="simulated failure"):
        ar.restore_to_zarr(img, dst, model=FailAfter(3), overwrite=True, **kw)
    assert np.array_equal(np.asarray(open_image(aside).data), img)  # the complete one, aside
    assert job_state(dst)["status"] != "complete"
    with pytest.raises(RuntimeError, match="simulated failure"):  # again: the unfinished one goes, not the old
        ar.restore_to_zarr(img, dst, model=FailAfter(3), overwrite=True, **kw)
    assert np.array_equal(np.asarray(open_image(aside).data), img)
    ar.restore_to_zarr(img, dst, model=Box3(), overwrite=True, **kw)
    assert not aside.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def _a_job_that_failed(tmp_path, img):
    """The same job run whole (``ref``) and failing after 9 chunks (``dst``), 5 x 5 chunks of 32 px."""
    kw = dict(chunks=32, tile=32, overlap=8, pyramid=False, num_workers=1)
    ref, dst = tmp_path / "ref.zarr", tmp_path / "out.zarr"
    ar.restore_to_zarr(img, ref, model=Box3(), **kw)
    with pytest.raises(RuntimeError, match="simulated failure"):
        ar.restore_to_zarr(img, dst, model=FailAfter(9), **kw)
    return ref, dst, kw


def test_failure_is_not_complete_and_resume_finishes_identically(tmp_path, rng):
    img = (rng.random((160, 160)) * 60000).astype(np.uint16)
    ref, dst, kw = _a_job_that_failed(tmp_path, img)
    state = job_state(dst)
    assert state["status"] == "failed" and "simulated failure" in state["error"]
    # no NGFF metadata yet: other readers (napari-ome-zarr, Fiji) showed its unwritten chunks as zeros
    assert "ome" not in _attrs(dst) and "multiscales" not in _attrs(dst)
    done_before = done_chunks(dst)
    assert 0 < len(done_before) < 25
    calls = []

    class Counting(Box3):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    Counting.__name__ = "FailAfter"  # same weights, same class name: the same model for resume

    with pytest.raises(ValueError, match=r"unfinished attnrestore output \(status: failed\).*--resume"):
        ar.io.open_image(dst)  # its missing chunks would read as zeros: it must not open as an image
    with pytest.raises(ValueError, match=r"unfinished attnrestore output"):
        ar.io.open_image(dst / "0")  # nor its level array, opened by its own path
    ar.restore_to_zarr(img, dst, model=Counting(), resume=True, **kw)
    assert job_state(dst)["status"] == "complete" and _attrs(dst)["ome"]["multiscales"][0]["datasets"]
    assert "ome" not in job_state(dst)
    assert ar.io.open_image(dst).shape == img.shape
    assert len(calls) == 25 - len(done_before)  # one forward per remaining chunk (one tile each)
    np.testing.assert_array_equal(zarr.open_array(str(dst / "0"))[:], zarr.open_array(str(ref / "0"))[:])


def test_resume_refuses_other_settings(tmp_path, rng):
    img = rng.random((64, 64)).astype(np.float32)
    dst = tmp_path / "o.zarr"
    with pytest.raises(RuntimeError):
        ar.restore_to_zarr(img, dst, model=FailAfter(1), chunks=32, pyramid=False, num_workers=1)
    with pytest.raises(OutputError, match="other settings"):
        ar.restore_to_zarr(img, dst, model=Box3(), chunks=16, pyramid=False, resume=True)
    # with --overwrite too, the other job's output is replaced (it was refused with "use --overwrite")
    ar.restore_to_zarr(img, dst, model=Box3(), chunks=16, pyramid=False, resume=True, overwrite=True)
    assert job_state(dst)["status"] == "complete"


def test_a_nan_nodata_job_resumes(tmp_path, rng):
    """A float GeoTIFF's nodata is often NaN, which never equals itself: resume was always refused."""
    import tifffile

    img = rng.random((64, 64)).astype(np.float32)
    img[:5] = np.nan
    tifffile.imwrite(tmp_path / "dem.tif", img, extratags=[(42113, "s", 0, "nan", True)])  # GDAL_NODATA
    dst = tmp_path / "o.zarr"
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        ar.restore_to_zarr(tmp_path / "dem.tif", dst, model=Box3(), chunks=32, pyramid=False, num_workers=1,
                           progress=lambda done, total: cancel.set(), cancel=cancel)
    assert json.loads((dst / "zarr.json").read_text()) and job_state(dst)["job"]["nodata"] == "nan"
    ar.restore_to_zarr(tmp_path / "dem.tif", dst, model=Box3(), chunks=32, pyramid=False, resume=True)
    assert job_state(dst)["status"] == "complete"


@pytest.mark.parametrize("kind", ["file", "array"])
def test_resume_refuses_an_input_that_changed(tmp_path, rng, kind):
    """A TIFF rewritten (or an array refilled) between the runs is another input: resuming would
    mix chunks of the old image into the new one's result and call it complete."""
    import tifffile

    img = (rng.random((64, 64)) * 255).astype(np.uint8)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, img)
    x = str(src) if kind == "file" else img
    dst = tmp_path / "o.zarr"
    with pytest.raises(RuntimeError):
        ar.restore_to_zarr(x, dst, model=FailAfter(1), chunks=32, pyramid=False, num_workers=1)
    time.sleep(0.01)
    tifffile.imwrite(src, 255 - img)
    img[:] = 255 - img
    with pytest.raises(OutputError, match="source"):
        ar.restore_to_zarr(x, dst, model=FailAfter(99), chunks=32, pyramid=False, resume=True)


@pytest.mark.parametrize("kind", ["layers", "channels"])
def test_resume_refuses_another_lazy_input_of_the_same_shape(tmp_path, rng, kind):
    """Two lazy layers of one shape and type, or two channels of one file opened as a layer
    each (same path), are other inputs: 'resume' gave the second the first's result, complete."""
    import dask.array as da

    a, b = (rng.random((2, 64, 64)) * 255).astype(np.uint8)
    dst = tmp_path / "o.zarr"
    meta = {"path": str(tmp_path / "two_channels.ome.zarr")} if kind == "channels" else None
    ar.restore_to_zarr(da.from_array(a, chunks=32), dst, model=Box3(), chunks=32, pyramid=False, meta=meta)
    with pytest.raises(OutputError, match="source"):
        ar.restore_to_zarr(da.from_array(b, chunks=32), dst, model=Box3(), chunks=32, pyramid=False, meta=meta,
                           resume=True)
    # the same pixels, reopened (a new dask name), still resume
    ar.restore_to_zarr(da.from_array(a.copy(), chunks=32), dst, model=Box3(), chunks=32, pyramid=False, meta=meta,
                       resume=True)


@pytest.mark.parametrize("kind", ["lazy", "in_memory"])
def test_a_store_of_an_earlier_build_resumes(tmp_path, rng, kind):
    """Earlier builds described a layer read from a file by the file alone (no pixel sample):
    their unfinished stores must still resume, not be refused with 'source differ'."""
    import dask.array as da

    from napari_attnrestore.engine.store import data_identity, set_job_state

    img = (rng.random((64, 64)) * 255).astype(np.uint8)
    path = tmp_path / "in.ome.zarr"
    ar.io.write_ome_zarr(img, path, axes="yx")
    x = da.from_array(img, chunks=32) if kind == "lazy" else img
    dst = tmp_path / "o.zarr"
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        ar.restore_to_zarr(x, dst, model=Box3(), chunks=32, pyramid=False, num_workers=1, meta={"path": str(path)},
                           progress=lambda done, total: cancel.set(), cancel=cancel)
    job = job_state(dst)["job"]
    set_job_state(dst, job={**job, "source": data_identity(str(path))})  # as an earlier build wrote it
    ar.restore_to_zarr(x, dst, model=Box3(), chunks=32, pyramid=False, meta={"path": str(path)}, resume=True)
    assert job_state(dst)["status"] == "complete" and job_state(dst)["job"] == job
    np.testing.assert_array_equal(zarr.open_array(str(dst / "0"))[:], ar.restore(img, model=Box3()).compute())
    # a store of this build compares its own description: another file's is refused
    set_job_state(dst, status="failed", job={**job, "source": data_identity(str(tmp_path)) + ":sample:0"})
    with pytest.raises(OutputError, match="source"):
        ar.restore_to_zarr(x, dst, model=Box3(), chunks=32, pyramid=False, meta={"path": str(path)}, resume=True)


def test_resume_refuses_another_mask(tmp_path, rng):
    from standins import FillHalf

    class FailingFill(FillHalf):
        calls = 0

        def forward(self, x):
            FailingFill.calls += 1
            if FailingFill.calls > 1:
                raise RuntimeError("simulated failure")
            return super().forward(x)

    img = rng.random((64, 64)).astype(np.float32)
    left, right = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    left[:, :20], right[:, 40:] = True, True
    dst = tmp_path / "o.zarr"
    kw = dict(task="inpaint", chunks=32, pyramid=False, num_workers=1)
    with pytest.raises(RuntimeError, match="simulated failure"):
        ar.restore_to_zarr(img, dst, model=FailingFill(), mask=left, **kw)

    class Same(FillHalf):
        pass

    Same.__name__ = "FailingFill"  # the same weights: only the mask differs
    with pytest.raises(OutputError, match=r"\(mask_id differ\)"):
        ar.restore_to_zarr(img, dst, model=Same(), mask=right, resume=True, **kw)
    ar.restore_to_zarr(img, dst, model=Same(), mask=left, resume=True, **kw)
    assert job_state(dst)["status"] == "complete"


def test_cancel_leaves_valid_partial_store(tmp_path, rng):
    img = rng.random((128, 128)).astype(np.float32)
    dst = tmp_path / "c.zarr"
    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        if done >= 3:
            cancel.set()

    with pytest.raises(Cancelled):
        ar.restore_to_zarr(img, dst, model=Box3(), chunks=32, pyramid=False, progress=progress, cancel=cancel, num_workers=1)
    assert job_state(dst)["status"] == "cancelled"  # it said "failed", and so did the reader's refusal
    assert 3 <= len(done_chunks(dst)) < 16
    from napari_attnrestore.io.napari_hooks import napari_get_reader

    with pytest.raises(ValueError, match=r"unfinished attnrestore output \(status: cancelled\)"):
        napari_get_reader(str(dst))(str(dst))  # napari shows why; a None reader said nothing
    ar.restore_to_zarr(img, dst, model=Box3(), chunks=32, pyramid=False, resume=True)
    assert job_state(dst)["status"] == "complete"


_CANCEL = threading.Event()
_AFTER_CANCEL: list = []  # module state: the engine runs its own copy of a given module


class _CountingBox3(Box3):
    """Box3 that counts its forward passes once the job is cancelled."""

    def forward(self, x):
        if _CANCEL.is_set():
            _AFTER_CANCEL.append(1)
        time.sleep(0.01)  # slow enough that the other chunks are under way when one is done
        return super().forward(x)


def test_cancel_stops_every_running_chunk_at_its_next_tile_batch(tmp_path, rng):
    img = rng.random((96, 96)).astype(np.float32)
    cancel, net = _CANCEL, _CountingBox3()
    cancel.clear()
    _AFTER_CANCEL.clear()
    with pytest.raises(Cancelled):
        # 9 chunks of 32 px in 16 px tiles, one per batch: 4 workers start 4 chunks at once
        ar.restore_to_zarr(img, tmp_path / "c.zarr", model=net, chunks=32, tile=16, overlap=4, batch=1,
                           pyramid=False, progress=lambda done, total: cancel.set(), cancel=cancel, num_workers=4)
    assert job_state(tmp_path / "c.zarr")["status"] == "cancelled"
    assert len(done_chunks(tmp_path / "c.zarr")) < 9
    assert len(_AFTER_CANCEL) <= 4  # at most the batch each running chunk was in (a chunk has 9 batches)


def test_pyramid_levels(tmp_path, rng):
    img = (rng.random((1100, 1030)) * 255).astype(np.uint8)
    dst = tmp_path / "p.ome.zarr"
    ar.restore_to_zarr(img, dst, model=Box3(), chunks=512, tile=256)
    ms = _attrs(dst)["ome"]["multiscales"][0]["datasets"]
    assert len(ms) >= 2
    assert zarr.open_array(str(dst / ms[1]["path"])).shape == (550, 515)
    torch.manual_seed(0)


def test_a_channel_last_store_of_an_earlier_version_resumes_channel_last(tmp_path, rng, monkeypatch):
    """RGB results are stored cyx now; an interrupted one that an earlier version began as yxc
    must go on being written yxc (writing cyx blocks into it would scramble the colours)."""
    from napari_attnrestore.io import ome_zarr

    cfa = rng.integers(0, 255, (64, 64)).astype(np.uint8)
    want = ar.restore(cfa, task="demosaic", cfa="GRBG", model=SplitCFA(), chunks=32).compute()
    dst = tmp_path / "old.ome.zarr"
    cancel = threading.Event()
    with monkeypatch.context() as m:
        m.setattr(ome_zarr, "ngff_order", lambda axes: tuple(range(len(axes))))  # the earlier layout
        with pytest.raises(Cancelled):
            ar.restore_to_zarr(cfa, dst, task="demosaic", cfa="GRBG", model=SplitCFA(), chunks=32, pyramid=False,
                               num_workers=1, progress=lambda done, total: cancel.set(), cancel=cancel)
    assert zarr.open_array(str(dst / "0")).shape == (64, 64, 3) and 0 < len(done_chunks(dst)) < 4
    ar.restore_to_zarr(cfa, dst, task="demosaic", cfa="GRBG", model=SplitCFA(), chunks=32, pyramid=False,
                       resume=True)
    np.testing.assert_array_equal(zarr.open_array(str(dst / "0"))[:], want)
    np.testing.assert_array_equal(ar.io.open_image(dst).read(), want)


def test_restore_to_zarr_refuses_a_tiff_name(tmp_path, rng):
    """It wrote a zarr folder called out.tif, which then opened as 'a directory, not a TIFF'."""
    with pytest.raises(ValueError, match=r"writes a zarr store, not a \.tif file"):
        ar.restore_to_zarr(rng.random((32, 32)).astype(np.float32), tmp_path / "out.tif", model=Box3())
    assert not (tmp_path / "out.tif").exists()


def test_the_store_records_the_nodata_the_job_used(tmp_path, rng):
    """--nodata on the command line went into a .tif's GDAL_NODATA but not into a store's
    attributes: the store read back had no nodata, and its gaps were restored as data."""
    img = rng.integers(1, 200, (48, 48)).astype(np.uint8)
    img[:8] = 0
    dst = tmp_path / "o.ome.zarr"
    ar.restore_to_zarr(img, dst, model=Box3(), pyramid=False, nodata=0, normalize="dtype")
    assert _attrs(dst)["nodata"] == 0
    assert ar.io.open_image(dst).meta["nodata"] == 0


def test_resume_refuses_another_precision_or_a_rewritten_chunk_of_a_zarr_input(tmp_path, rng):
    """Resumed in bf16, a job begun in fp32 finished with chunks made both ways; a chunk of the
    input store rewritten in place (the store's folder keeps its time) gave a stale result."""
    from napari_attnrestore.engine.store import set_job_state

    img = (rng.random((96, 96)) * 255).astype(np.uint8)
    src = tmp_path / "in.ome.zarr"
    ar.io.write_ome_zarr(img, src, axes="yx", chunks=32, pyramid=False)
    dst = tmp_path / "o.zarr"
    kw = dict(model=Box3(), chunks=32, pyramid=False)
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        ar.restore_to_zarr(str(src), dst, num_workers=1, progress=lambda done, total: cancel.set(), cancel=cancel, **kw)
    job = job_state(dst)["job"]
    assert job["precision"] == "float32" and job["source_files"]
    with pytest.raises(OutputError, match=r"\(precision differ\)"):
        ar.restore_to_zarr(str(src), dst, resume=True, precision="bf16", **kw)
    set_job_state(dst, job={k: v for k, v in job.items() if k not in ("precision", "source_files")})
    ar.restore_to_zarr(str(src), dst, resume=True, **kw)  # a store of an earlier version: resumes
    assert job_state(dst)["status"] == "complete" and job_state(dst)["job"] == job
    set_job_state(dst, status="failed")
    time.sleep(0.01)
    level = zarr.open_array(str(src / "0"), mode="r+")
    level[64:, :32] = level[64:, :32].T  # the same values, away from the pixels the source sample reads
    with pytest.raises(OutputError, match="source_files"):
        ar.restore_to_zarr(str(src), dst, resume=True, **kw)


def test_a_store_another_live_job_writes_is_not_replaced_and_a_job_taken_over_stops(tmp_path, rng):
    """Two jobs on one output mixed their chunks: a second run with overwrite deleted the
    store under the first, which went on writing into the new one and then marked it failed
    over the second's success (the mixed image was published as complete)."""
    import os
    import subprocess
    import sys

    import psutil

    from napari_attnrestore.engine.store import set_job_state

    img = (rng.random((96, 96)) * 60000).astype(np.uint16)
    kw = dict(model=Box3(), chunks=32, tile=32, overlap=8, pyramid=False, num_workers=1)
    dst = tmp_path / "out.zarr"
    ar.restore_to_zarr(img, dst, **kw)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(other.pid).create_time()
        set_job_state(dst, status="running", owner={"job": "x", "host": job_state(dst)["owner"]["host"],
                                                    "pid": other.pid, "started": started})
        for how in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(OutputError, match=rf"another job \(process {other.pid} on this machine\) is writing"):
                ar.restore_to_zarr(img, dst, **kw, **how)
    finally:
        other.kill()
        other.wait()
    ar.restore_to_zarr(img, dst, **kw, overwrite=True)  # its process has ended: the store is free again
    assert job_state(dst)["owner"]["pid"] == os.getpid()

    def taken_over(done, total):  # another job takes the store after the first chunk
        if done == 1:
            set_job_state(dst, owner={"job": "theirs"}, status="running")

    with pytest.raises(OutputError, match="another job replaced or took over this output while this one ran"):
        ar.restore_to_zarr(img, dst, **kw, overwrite=True, progress=taken_over)
    state = job_state(dst)
    assert state["owner"] == {"job": "theirs"} and state["status"] == "running"  # left as the other job set it
    assert len(done_chunks(dst)) < 9 and "ome" not in _attrs(dst)


def test_a_sink_whose_store_is_gone_says_so_not_that_another_job_took_it(tmp_path):
    """An output a dask.distributed worker could not see (or a relative path, resolved in
    the worker's own folder) was reported as taken over by another job."""
    from napari_attnrestore.engine.store import ZarrSink

    sink = ZarrSink(str(tmp_path / "gone.zarr" / "0"), str(tmp_path / "gone.zarr" / "done"), (8, 8), 2, job="j")
    with pytest.raises(OutputError, match=r"gone\.zarr: not found on .*removed, or this dask\.distributed worker"):
        sink(np.zeros((8, 8), np.uint8), (0, 0))


def test_a_store_another_job_of_this_process_writes_is_not_taken(tmp_path, rng):
    """The owner check spares its own process, so two jobs of one process (API threads, the
    napari console beside the Restore widget) could still replace each other's output."""
    img = (rng.random((96, 96)) * 60000).astype(np.uint16)
    kw = dict(model=Box3(), chunks=32, tile=32, overlap=8, pyramid=False, num_workers=1)
    dst = tmp_path / "out.zarr"
    refused = []

    def second_job(done, total):  # while the first job writes, this process starts another on its output
        if done == 1 and not refused:
            with pytest.raises(OutputError, match="another job of this process is writing this output") as err:
                ar.restore_to_zarr(img, dst, **kw, overwrite=True)
            refused.append(str(err.value))

    ar.restore_to_zarr(img, dst, **kw, progress=second_job)
    assert refused and job_state(dst)["status"] == "complete"
    ar.restore_to_zarr(img, dst, **kw, overwrite=True)  # the first has ended: free again
    with pytest.raises(OutputError, match="output exists"):  # and a refused job holds nothing
        ar.restore_to_zarr(img, dst, **kw)
    ar.restore_to_zarr(img, dst, **kw, resume=True)


def test_one_store_reached_through_a_link_is_held_by_its_job(tmp_path, rng):
    """A second job of the process naming the running job's store through a linked folder
    replaced it (the claim compared the paths as written)."""
    import os

    from napari_attnrestore.engine.store import OutputError, _claim, release_store

    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    _claim(tmp_path / "real" / "o.ome.zarr", "job-a")
    try:
        with pytest.raises(OutputError, match="another job of this process is writing this output"):
            ar.restore_to_zarr(rng.random((32, 32)).astype(np.float32), tmp_path / "link" / "o.ome.zarr",
                               model=Identity(), overwrite=True)
    finally:
        release_store(tmp_path / "real" / "o.ome.zarr", "job-a")


def test_the_output_store_is_named_after_its_own_file(tmp_path, rng):
    """The result took the input's name, and opened beside it in napari as 'scan [1]'."""
    from napari_attnrestore.io import open_image, write_ome_zarr

    src = write_ome_zarr((rng.random((32, 32)) * 255).astype(np.uint8), tmp_path / "scan.ome.zarr", "yx",
                         pyramid=False)
    ar.restore_to_zarr(src, tmp_path / "scan_x2.ome.zarr", task="sr", model=NearestUp(), pyramid=False)
    assert open_image(src).name == "scan" and open_image(tmp_path / "scan_x2.ome.zarr").name == "scan_x2"


def test_a_masked_arrays_mask_is_part_of_what_a_job_resumes(tmp_path, rng):
    """A masked array's mask (the gaps an inpainting fills) was left out of the job's
    fingerprint: resuming with other gaps took the old job's chunks for the new ones."""
    from standins import FillHalf

    img = rng.random((64, 64)).astype(np.float32)
    first = np.ma.MaskedArray(img, mask=np.zeros(img.shape, bool))
    first.mask[10:20, 10:20] = True
    other = np.ma.MaskedArray(img, mask=np.zeros(img.shape, bool))
    other.mask[40:50, 40:50] = True
    dst = tmp_path / "o.zarr"
    kw = dict(task="inpaint", model=FillHalf(), pyramid=False)
    ar.restore_to_zarr(first, dst, **kw)
    ar.restore_to_zarr(first, dst, resume=True, **kw)  # the same: nothing to do
    with pytest.raises(OutputError, match=r"cannot resume.*source"):
        ar.restore_to_zarr(other, dst, resume=True, **kw)


def test_an_unfinished_store_of_an_earlier_engine_resumes_with_its_edge_chunks_redone(tmp_path, rng):
    """Engines before revision 2 read a halo of reflections past the image's edge: an unfinished
    job they began kept those chunks on resume, so its result mixed both edge rules."""
    from napari_attnrestore.engine.store import set_job_state

    img = (rng.random((160, 160)) * 255).astype(np.uint8)
    ref, dst, kw = _a_job_that_failed(tmp_path, img)
    job = job_state(dst)["job"]
    done = done_chunks(dst)
    assert job["revision"] == 2 and len(done) == 9
    set_job_state(dst, job={k: v for k, v in job.items() if k != "revision"})  # as the earlier engine left it
    zarr.open_array(str(dst / "0"), mode="r+")[:] = 0  # its chunks, told apart by their zeros

    class Resumed(Box3):
        pass

    Resumed.__name__ = "FailAfter"  # the same model for resume
    ar.restore_to_zarr(img, dst, model=Resumed(), resume=True, **kw)
    assert job_state(dst)["status"] == "complete" and job_state(dst)["job"] == job
    out, want = zarr.open_array(str(dst / "0"))[:], zarr.open_array(str(ref / "0"))[:]
    kept = np.zeros(out.shape, bool)
    for cy, cx in done:
        if 0 < cy < 4 and 0 < cx < 4:  # done, and its 8-px halo stays inside the image (5 x 5 chunks)
            kept[cy * 32:cy * 32 + 32, cx * 32:cx * 32 + 32] = True
    assert kept.any() and not kept.all()
    np.testing.assert_array_equal(out[~kept], want[~kept])  # redone, or not done before
    assert not out[kept].any()  # kept as the earlier engine left them
