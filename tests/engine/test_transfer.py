"""Host staging buffers (pinned on CUDA) and the pipelined batch stream, run unpinned on the CPU."""

import numpy as np
import torch
from standins import Box3, NearestUp

import napari_attnrestore as ar
from napari_attnrestore.engine import ModelHandle
from napari_attnrestore.engine.tiling import run_tiled
from napari_attnrestore.engine.transfer import HostBuffer, HostStaging


def test_buffer_is_reused_and_grows_only_when_too_small():
    buf = HostBuffer(pin=False)
    a = buf.view((2, 1, 8, 8))
    b = buf.view((1, 1, 8, 8))
    assert b.data_ptr() == a.data_ptr() and buf.allocations == 1
    buf.view((4, 1, 8, 8))
    assert buf.allocations == 2
    buf.view((2, 1, 8, 8))
    assert buf.allocations == 2


def test_staged_results_are_copies_not_views_of_the_reused_buffer(rng):
    st = HostStaging(pin=False)
    dev = torch.device("cpu")
    first = st.start_to_host(st.to_device(np.ones((1, 1, 4, 4), np.float32), dev, 0) * 2, 0, st.timer(dev)).wait()
    second = st.start_to_host(st.to_device(np.zeros((1, 1, 4, 4), np.float32), dev, 0), 0, st.timer(dev)).wait()
    assert (first == 2).all() and (second == 0).all()  # the second pass through slot 0 left the first alone


def test_pipelined_stream_gives_every_result_in_order(rng):
    handle = ModelHandle(NearestUp(), device="cpu", staging=True)  # the CUDA code path, unpinned
    assert handle.stager() is not None and not handle.stager().pin
    batches = [rng.random((n, 1, 8, 8)).astype(np.float32) for n in (3, 3, 1)]
    outs = list(handle.infer_many(iter(batches)))
    assert handle.forward_calls == 3
    for b, o in zip(batches, outs, strict=True):
        np.testing.assert_array_equal(o, b.repeat(2, axis=2).repeat(2, axis=3))
    assert ModelHandle(NearestUp(), device="cpu").stager() is None  # CPU default: no staging, no copies


def test_run_tiled_through_the_stream_matches_plain_calls(rng):
    x = rng.random((2, 1, 70, 50)).astype(np.float32)
    handle = ModelHandle(Box3(), device="cpu", staging=True)
    piped = run_tiled(x, handle.infer, 32, 8, 3, infer_many=handle.infer_many)
    plain = run_tiled(x, ModelHandle(Box3(), device="cpu").infer, 32, 8, 3)
    np.testing.assert_array_equal(piped, plain)


def test_stream_releases_the_forward_lock_when_the_consumer_stops(rng):
    handle = ModelHandle(Box3(), device="cpu", staging=True)
    stream = handle.infer_many(iter([np.zeros((1, 1, 8, 8), np.float32)] * 3))
    next(stream)
    stream.close()
    lock = handle.runtime()[1]
    assert lock.acquire(timeout=1)
    lock.release()


def test_restore_with_staging_equals_without(rng):
    img = rng.random((90, 70)).astype(np.float32)
    kw = dict(chunks=40, tile=32, overlap=8, batch=2, normalize="none")
    staged = ar.restore(img, model=ModelHandle(Box3(), device="cpu", staging=True), **kw).compute()
    np.testing.assert_array_equal(staged, ar.restore(img, model=Box3(), **kw).compute())
