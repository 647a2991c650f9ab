"""A full disk or a permission error while writing: one clear error naming the path, a store
marked ``failed`` (never ``complete``), done markers kept, and a resume that finishes identically.

The faults are injected into the file write zarr's local store uses for every chunk and
metadata document (tests often run as root, where ``chmod`` does not stop a write).
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
import zarr.storage._local as zarr_local
from standins import Box3

import napari_attnrestore as ar
from napari_attnrestore.cli import main
from napari_attnrestore.engine.store import STATE_DIR, OutputError, done_chunks, job_state

KW = dict(chunks=32, tile=32, overlap=8, pyramid=False, num_workers=1)
FAULTS = {
    errno.ENOSPC: "no space left on device",
    errno.EACCES: "permission denied",
}


class Fault:
    """Makes zarr's file writes under ``root`` fail with ``code`` once ``after`` chunks were written.

    ``what``: "chunks" (chunk files of level 0 only), "pyramid" (chunk files of levels 1, 2, ...)
    or "all" (every file, metadata included: a disk that is really full).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path, code: int, after: int, what: str = "chunks") -> None:
        self.root, self.code, self.after, self.what = str(root), code, after, what
        self.written = 0
        self.active = True
        self.lock = threading.Lock()
        self._put = zarr_local._put
        monkeypatch.setattr(zarr_local, "_put", self.put)

    def _targets(self, path: str) -> bool:
        if not path.startswith(self.root + os.sep):
            return False
        rel = Path(path).relative_to(self.root).parts
        is_chunk = len(rel) > 2 and rel[1] == "c"
        if self.what == "all":
            return True
        if self.what == "pyramid":
            return is_chunk and rel[0] != "0"
        return is_chunk and rel[0] == "0"

    def put(self, path: Path, value, exclusive: bool = False) -> int:
        if self.active and self._targets(str(path)):
            with self.lock:
                failing = self.written >= self.after
                if not failing and Path(path).relative_to(self.root).parts[1:2] == ("c",):
                    self.written += 1
            if failing:
                raise OSError(self.code, os.strerror(self.code), str(path))
        return self._put(path, value, exclusive=exclusive)


@pytest.fixture
def img():
    return (np.random.default_rng(7).random((160, 160)) * 60000).astype(np.uint16)  # 5 x 5 chunks


@pytest.fixture
def ref(tmp_path, img):
    out = tmp_path / "ref.zarr"
    ar.restore_to_zarr(img, out, model=Box3(), **KW)
    return zarr.open_array(str(out / "0"))[:]


def _check_done_chunks_are_written(dst: Path, ref: np.ndarray) -> set:
    done = done_chunks(dst)
    out = zarr.open_array(str(dst / "0"))
    for iy, ix in done:
        sl = (slice(32 * iy, 32 * iy + 32), slice(32 * ix, 32 * ix + 32))
        np.testing.assert_array_equal(out[sl], ref[sl])  # a marker only follows a finished chunk
    return done


@pytest.mark.parametrize("code", list(FAULTS))
def test_write_fault_fails_cleanly_and_resumes_identically(tmp_path, img, ref, monkeypatch, code):
    dst = tmp_path / "out.zarr"
    fault = Fault(monkeypatch, dst, code, after=7)
    with pytest.raises(OutputError) as info:
        ar.restore_to_zarr(img, dst, model=Box3(), **KW)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert str(dst) in msg and FAULTS[code] in msg.lower() and "resume" in msg
    assert info.value.errno == code
    state = job_state(dst)
    assert state["status"] == "failed" and FAULTS[code] in state["error"].lower()
    assert len(_check_done_chunks_are_written(dst, ref)) == 7  # the chunks written before the fault

    fault.active = False  # space freed / permissions fixed
    totals: list[int] = []
    ar.restore_to_zarr(img, dst, model=Box3(), resume=True, progress=lambda d, t: totals.append(t), **KW)
    assert totals and totals[-1] == 25 - 7  # only the missing chunks ran
    assert job_state(dst)["status"] == "complete"
    np.testing.assert_array_equal(zarr.open_array(str(dst / "0"))[:], ref)


def test_disk_full_for_metadata_too_never_looks_finished(tmp_path, img, ref, monkeypatch):
    dst = tmp_path / "out.zarr"
    fault = Fault(monkeypatch, dst, errno.ENOSPC, after=4, what="all")
    with pytest.raises(OutputError, match="No space left on device"):
        ar.restore_to_zarr(img, dst, model=Box3(), **KW)
    assert job_state(dst)["status"] == "running"  # "failed" could not be written either: not complete
    assert len(_check_done_chunks_are_written(dst, ref)) == 4
    fault.active = False
    ar.restore_to_zarr(img, dst, model=Box3(), resume=True, **KW)
    assert job_state(dst)["status"] == "complete"
    np.testing.assert_array_equal(zarr.open_array(str(dst / "0"))[:], ref)


def test_fault_while_writing_the_pyramid(tmp_path, monkeypatch):
    img = (np.random.default_rng(8).random((600, 520)) * 255).astype(np.uint8)
    kw = dict(KW, chunks=256, tile=128, pyramid=True)
    dst = tmp_path / "pyr.zarr"
    fault = Fault(monkeypatch, dst, errno.ENOSPC, after=0, what="pyramid")
    with pytest.raises(OutputError) as info:
        ar.restore_to_zarr(img, dst, model=Box3(), **kw)
    assert str(dst) in str(info.value) and "no space left" in str(info.value).lower()
    assert job_state(dst)["status"] == "failed"
    assert len(done_chunks(dst)) == 9  # every level-0 chunk is kept
    fault.active = False
    totals: list[int] = []
    ar.restore_to_zarr(img, dst, model=Box3(), resume=True, progress=lambda d, t: totals.append(t), **kw)
    assert not totals  # nothing recomputed, only the pyramid written
    assert job_state(dst)["status"] == "complete"
    np.testing.assert_array_equal(zarr.open_array(str(dst / "0"))[:],
                                  ar.restore(img, model=Box3(), chunks=256, tile=128, overlap=8).compute())
    assert zarr.open_array(str(dst / "1")).shape == (300, 260)


@pytest.mark.parametrize("code", list(FAULTS))
def test_cli_reports_one_line_exit_2(tmp_path, tiny_checkpoint, monkeypatch, capsys, code):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, (np.random.default_rng(9).random((96, 96)) * 255).astype(np.uint8))
    args = ["restore", str(src), "--weights", str(tiny_checkpoint), "--chunks", "32", "--tile", "32", "-q"]
    assert main([*args[:2], str(tmp_path / "ref.zarr"), *args[2:]]) == 0
    dst = tmp_path / "out.zarr"
    fault = Fault(monkeypatch, dst, code, after=3)
    capsys.readouterr()
    assert main([*args[:2], str(dst), *args[2:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnrestore: error:"), err
    assert str(dst) in err[0] and FAULTS[code] in err[0].lower() and "--resume" in err[0]
    assert job_state(dst)["status"] == "failed"
    assert 3 <= len(done_chunks(dst)) < 9
    assert (dst / STATE_DIR / "done").is_dir()
    fault.active = False
    assert main([*args[:2], str(dst), *args[2:], "--resume"]) == 0
    assert job_state(dst)["status"] == "complete"
    np.testing.assert_array_equal(zarr.open_array(str(dst / "0"))[:], zarr.open_array(str(tmp_path / "ref.zarr" / "0"))[:])
