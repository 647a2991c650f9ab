"""A real dask.distributed LocalCluster (two worker processes) gives the threaded result."""

import numpy as np
import pytest
import zarr

import napari_attnrestore as ar


@pytest.mark.slow
def test_local_cluster_matches_threads(tmp_path, tiny_checkpoint):
    import torch
    from distributed import Client, LocalCluster

    img = (np.random.default_rng(0).random((192, 160)) * 60000).astype(np.uint16)
    src = zarr.create_array(str(tmp_path / "src.zarr"), shape=img.shape, chunks=(64, 64), dtype="uint16")
    src[:] = img
    kw = dict(model=str(tiny_checkpoint), chunks=64, tile=64, pyramid=False)
    # a worker of one thread runs torch on one thread; float sums (and so the last bit
    # of a rounded pixel) depend on the thread count, so the reference uses one too
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ar.restore_to_zarr(str(tmp_path / "src.zarr"), tmp_path / "threads.zarr", **kw)
    finally:
        torch.set_num_threads(n)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        seen = []
        ar.restore_to_zarr(str(tmp_path / "src.zarr"), tmp_path / "dist.zarr", scheduler=client,
                           progress=lambda d, t: seen.append((d, t)), **kw)
        assert len(client.scheduler_info()["workers"]) == 2
    a = zarr.open_array(str(tmp_path / "threads.zarr" / "0"))[:]
    b = zarr.open_array(str(tmp_path / "dist.zarr" / "0"))[:]
    np.testing.assert_array_equal(a, b)
    assert seen and seen[-1] == (9, 9)  # 3 x 3 chunks of 64 px


def test_an_unreachable_scheduler_leaves_no_store(tmp_path, rng):
    """The store was created before connecting: a refused connection left an empty output
    marked 'running', and the next run without the scheduler said 'output exists'."""
    import dask
    import distributed  # noqa: F401  (its config defaults loaded first: leaving the set below removed them)
    from standins import Box3

    img = rng.random((64, 64)).astype(np.float32)
    dst = tmp_path / "o.ome.zarr"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(OSError, match="--scheduler"):
        ar.restore_to_zarr(img, dst, model=Box3(), scheduler="tcp://127.0.0.1:1", pyramid=False)
    assert not dst.exists()
    ar.restore_to_zarr(img, dst, model=Box3(), pyramid=False)  # no --overwrite needed


def test_an_opened_tiffs_pixels_are_refused_for_a_cluster_before_the_store(tmp_path):
    """ar.io.open_image("x.tif").data given with a cluster failed on submitting with a bare
    "Could not serialize object of type _HLGExprSequence", after making the store."""
    import tifffile
    from standins import Box3

    tifffile.imwrite(tmp_path / "x.tif", np.zeros((64, 64), np.uint16), tile=(32, 32))
    img = ar.io.open_image(tmp_path / "x.tif")
    for given in (img.data, img.to_dask()):
        with pytest.raises(ValueError, match=r"the input: a TIFF.s open file cannot be sent to dask\.distributed"):
            ar.restore_to_zarr(given, tmp_path / "o.zarr", model=Box3(), scheduler="tcp://127.0.0.1:1")
        assert not (tmp_path / "o.zarr").exists()


def test_local_workers_are_started_deaf_to_ctrl_c():
    """Ctrl-C reached every worker process of --scheduler local, each printing its own
    KeyboardInterrupt traceback (69 lines) after the one-line 'interrupted' message."""
    import signal

    from napari_attnrestore.api import _quiet_local_cluster

    seen = {}

    def fake_cluster(**kw):
        seen["sigint"], seen["kw"] = signal.getsignal(signal.SIGINT), kw
        return "cluster"

    before = signal.getsignal(signal.SIGINT)
    assert _quiet_local_cluster(fake_cluster) == "cluster"
    assert seen["sigint"] is signal.SIG_IGN and signal.getsignal(signal.SIGINT) is before
    assert seen["kw"]["processes"] and seen["kw"]["silence_logs"] >= 40  # errors only


def test_local_cluster_takes_the_worker_count(monkeypatch):
    """num_workers / --workers reaches the LocalCluster (it always started one process per core)."""
    import distributed

    from napari_attnrestore.api import _client_for

    seen = {}

    class Stop(Exception):
        pass

    def fake_cluster(**kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(distributed, "LocalCluster", fake_cluster)
    with pytest.raises(Stop):
        _client_for("local", 3)
    assert seen["n_workers"] == 3 and seen["threads_per_worker"] == 1
    assert seen["dashboard_address"] == ":0"  # None took 8787 and warned when another cluster had it


def test_num_workers_is_checked_before_the_store_is_made(tmp_path):
    from standins import Box3

    img = np.zeros((32, 32), np.float32)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="num_workers must be a whole number"):
            ar.restore_to_zarr(img, tmp_path / "o.ome.zarr", model=Box3(), num_workers=bad)
    with pytest.raises(ValueError, match="has its own workers"):
        ar.restore_to_zarr(img, tmp_path / "o.ome.zarr", model=Box3(), num_workers=2, scheduler="sync")
    assert not (tmp_path / "o.ome.zarr").exists()


def test_a_scheduler_of_another_kind_is_refused_before_the_store_is_made(tmp_path):
    from standins import Box3

    with pytest.raises(TypeError, match="scheduler must be None, 'sync', 'local', a scheduler address"):
        ar.restore_to_zarr(np.zeros((32, 32), np.float32), tmp_path / "o.ome.zarr", model=Box3(), scheduler=123)
    assert not (tmp_path / "o.ome.zarr").exists()


def test_a_zarr_input_a_worker_cannot_see_is_an_error_there_not_zeros(tmp_path, monkeypatch):
    """A worker whose disk lacked the input (or whose working folder differed, for a relative
    path) read every chunk as the fill value: an all-zero result, marked complete."""
    import pickle
    import shutil

    from napari_attnrestore.api import as_source
    from napari_attnrestore.io import ImageReadError

    ar.io.write_ome_zarr(np.ones((64, 64), np.uint8), tmp_path / "in.ome.zarr", axes="yx", pyramid=False)
    monkeypatch.chdir(tmp_path)
    src, _ = as_source("in.ome.zarr")  # relative: travels to the workers as the absolute path
    sent = pickle.dumps(src)
    monkeypatch.chdir("/")
    assert pickle.loads(sent)[:2, :2].tolist() == [[1, 1], [1, 1]]
    shutil.move(tmp_path / "in.ome.zarr", tmp_path / "elsewhere.ome.zarr")  # as on a worker without the disk
    moved = pickle.loads(sent)  # as the scheduler does, which reads nothing (and may lack the disk)
    with pytest.raises(ImageReadError, match=r"in\.ome\.zarr: not found on .*every worker reaches"):
        moved[:2, :2]


def test_a_failed_cluster_job_is_cancelled_and_never_reads_complete(tmp_path, rng):
    """The progress jumped to 100% before the error surfaced, and an interrupted or failed
    job went on computing on a Client the caller passed in."""
    from distributed import Client, LocalCluster
    from standins import Box3

    class Fails(Box3):
        def forward(self, x):
            raise RuntimeError("simulated failure")

    img = rng.random((128, 128)).astype(np.float32)
    seen = []
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with pytest.raises(RuntimeError, match="simulated failure"):
            ar.restore_to_zarr(img, tmp_path / "o.zarr", model=Fails(), chunks=32, tile=32, pyramid=False,
                               scheduler=client, progress=lambda d, t: seen.append((d, t)))
        assert (16, 16) not in seen
        assert not any(client.processing().values())
    from napari_attnrestore.engine.store import job_state

    assert job_state(tmp_path / "o.zarr")["status"] == "failed"  # not complete


def test_a_chunk_run_again_after_its_worker_was_lost_skips_the_network(tmp_path):
    """dask.distributed reruns the chunks whose results a lost worker held: each lost worker
    cost its share of the chunks done, network and all."""
    from napari_attnrestore.engine.graph import _chunk_task
    from napari_attnrestore.engine.store import ZarrSink, marker_name

    (tmp_path / "done").mkdir()
    sink = ZarrSink(str(tmp_path / "o.zarr" / "0"), str(tmp_path / "done"), (8, 8), 2)
    assert not sink.written((0, 1))
    (tmp_path / "done" / marker_name((0, 1))).touch()
    assert sink.written((0, 1))
    # no network, no plan, no pixels: had it computed, these would fail
    assert _chunk_task(None, None, None, None, None, None, None, (), sink, (0, 1), "job") == 1


def test_distributed_progress_never_goes_back_and_a_cluster_without_workers_is_said(monkeypatch):
    import napari_attnrestore.engine.execute as execute

    counts = iter([2, 3, 1, 0, 4])  # a worker lost: its chunks went back to waiting

    class Future:
        polls = 0

        def done(self):
            Future.polls += 1
            return Future.polls > 5

        def result(self):
            return 4

    monkeypatch.setattr(execute, "_distributed_done", lambda client, keys: next(counts))
    monkeypatch.setattr(execute, "_worker_count", lambda client: 0)
    monkeypatch.setattr(execute, "NO_WORKERS_WARN_S", 0)
    monkeypatch.setattr(execute, "WORKER_CHECK_S", 0)
    monkeypatch.setattr("time.sleep", lambda s: None)
    seen = []
    with pytest.warns(UserWarning, match="no workers for 0 s: the job waits for some to join"):
        assert execute._wait_distributed(None, Future(), [1, 2, 3, 4], lambda d, t: seen.append(d), None) == 4
    assert seen == sorted(seen) and seen[-1] == 4
