"""A restore killed part-way (SIGKILL, a real process) resumes to a bitwise-identical result."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr

import napari_attnrestore as ar
from napari_attnrestore.engine.store import done_chunks, job_state

SCRIPT = """
import sys, napari_attnrestore as ar
ar.restore_to_zarr(sys.argv[1], sys.argv[2], model=sys.argv[3], chunks=32, tile=32, pyramid=False, num_workers=1)
"""


@pytest.mark.slow
def test_killed_job_resumes_identically(tmp_path, tiny_checkpoint):
    img = (np.random.default_rng(3).random((192, 192)) * 60000).astype(np.uint16)
    src = str(tmp_path / "src.zarr")
    zarr.create_array(src, shape=img.shape, chunks=(64, 64), dtype="uint16")[:] = img
    kw = dict(model=str(tiny_checkpoint), chunks=32, tile=32, pyramid=False, num_workers=1)
    ref = tmp_path / "ref.zarr"
    ar.restore_to_zarr(src, ref, **kw)

    dst = tmp_path / "out.zarr"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, src, str(dst), str(tiny_checkpoint)])
    deadline = time.time() + 120
    while len(done_chunks(dst)) < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = done_chunks(dst)
    assert 6 <= len(done_before) < 36, "the job must be killed part-way"
    assert job_state(dst)["status"] == "running"  # never marked finished

    totals = []
    ar.restore_to_zarr(src, dst, resume=True, progress=lambda d, t: totals.append(t), **kw)
    assert totals and totals[-1] == 36 - len(done_before)  # only unfinished chunks ran
    assert job_state(dst)["status"] == "complete"
    np.testing.assert_array_equal(zarr.open_array(str(dst / "0"))[:], zarr.open_array(str(ref / "0"))[:])


class _FailsOnce(torch.nn.Module):
    """A slow network whose third forward pass fails; counts its passes."""

    in_channels, out_channels, scale, halo = 1, 1, 1, 8
    calls = 0

    def forward(self, x):
        type(self).calls += 1
        if type(self).calls == 3:
            raise ValueError("boom")
        time.sleep(0.02)
        return x


def test_a_failed_job_stops_the_chunks_still_running(tmp_path):
    """On a Ctrl-C or a failed chunk, the threaded scheduler's other running chunks ran on to
    their end (minutes of CPU at the default chunk size) when no cancel event was given; a
    caller's event is left clear (it may start the next job)."""
    import threading

    img = np.random.default_rng(0).random((128, 256)).astype(np.float32)
    for k, cancel in enumerate((None, threading.Event())):
        _FailsOnce.calls = 0
        with pytest.raises(ValueError, match="boom"):
            ar.restore_to_zarr(img, tmp_path / f"{k}.ome.zarr", model=_FailsOnce(), chunks=128, tile=32, overlap=8,
                               batch=1, num_workers=2, cancel=cancel)
        at_failure = _FailsOnce.calls
        time.sleep(1.0)
        assert _FailsOnce.calls <= at_failure + 1  # the other chunk stopped at its next tile batch
        assert cancel is None or not cancel.is_set()


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_second_stop_signal_waits_for_the_first_ones_cleanup(tmp_path, tiny_checkpoint, sig):
    """Ctrl-C twice printed a traceback and aborted the process (signal 6, 'terminate called
    without an active exception'); SIGTERM twice killed it by the signal instead of exit 143."""
    img = (np.random.default_rng(3).random((192, 192)) * 60000).astype(np.uint16)
    src = str(tmp_path / "src.zarr")
    zarr.create_array(src, shape=img.shape, chunks=(64, 64), dtype="uint16")[:] = img
    dst = tmp_path / "out.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "napari_attnrestore.cli", "restore", src, str(dst), "--weights",
                             str(tiny_checkpoint), "--chunks", "32", "--tile", "32", "--workers", "1"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(done_chunks(dst)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    for _ in range(2):
        os.kill(proc.pid, getattr(signal, sig))
        time.sleep(0.2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == "SIGINT" else 143), err
    assert "Traceback" not in err and "terminate called" not in err
    assert job_state(dst)["status"] == "cancelled"
