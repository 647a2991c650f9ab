"""Streaming a restoration into an OME-Zarr store, resumably.

Each task writes exactly one zarr chunk of the output and then records the chunk as
done (an empty marker file under ``<store>/.attnrestore/done``).  The job that writes a
store is its ``owner`` (job id, machine, process): a second job may not replace or resume
it while that process lives, and a job whose store another took over stops writing.  The
job's state lives in the group attributes (``attnrestore.status``: ``running`` ->
``complete``); a store is marked complete only after every chunk and the pyramid are
written, so an interrupted or failed job never looks finished, and ``resume=True``
recomputes only the chunks that have no marker.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import absolute_location, refuse_output_over_input, remove_output, set_aside
from ..io._output import other_live_process
from ..io.errors import OVERWRITE, RESUME, ImageWriteError
from .plan import Plan

STATE_DIR = ".attnrestore"
_ARRAYS: dict[str, Any] = {}
_ARRAYS_LOCK = threading.Lock()


class OutputError(OSError):
    """The output cannot be written (exists, not writable, disk full, ...); names the path."""


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS}


def output_error(path: str | os.PathLike, what: str, exc: OSError) -> OutputError:
    """An :class:`OutputError` ``"PATH: what: problem"`` for an OS error met while writing.

    A full disk (or quota) and a permission error say how to finish the job: fix the
    cause, then resume (the chunks written so far are kept).
    """
    problem = exc.strerror or getattr(exc, "problem", None) or str(exc) or type(exc).__name__
    if exc.errno in _NO_SPACE:
        problem += f"; free some space, then continue with {RESUME}"
    elif exc.errno in _NO_ACCESS:
        problem += f"; make it writable, then continue with {RESUME}"
    err = OutputError(f"{os.fspath(path)}: {what}: {problem}")
    err.errno = exc.errno  # callers can still tell a full disk from a permission error
    return err


def _open_array(path: str, job: str) -> Any:
    """The output array, opened once per process and job (a new job never reuses a handle)."""
    import zarr

    key = f"{job}:{path}"
    arr = _ARRAYS.get(key)
    if arr is None:
        with _ARRAYS_LOCK:
            arr = _ARRAYS.get(key)
            if arr is None:
                if len(_ARRAYS) > 32:
                    _ARRAYS.clear()
                arr = zarr.open_array(path, mode="r+")
                _ARRAYS[key] = arr
    return arr


@dataclass(frozen=True)
class ZarrSink:
    """Writes one output chunk into the zarr array at ``array_path`` and records it done.

    Picklable (paths only): on a dask.distributed worker the array is opened once.
    ``order``: the stored array's axes as positions in the block's (NGFF stores an RGB
    ``yxc`` result as ``cyx``: ``(2, 0, 1)``); None when they are the same.
    """

    array_path: str
    done_dir: str
    chunk_shape: tuple[int, ...]
    ndim: int
    job: str = ""
    order: tuple[int, ...] | None = None

    def __call__(self, block: np.ndarray, index: tuple[int, ...]) -> int:
        store = Path(self.array_path).parent
        if "://" not in self.array_path:  # a local folder (the job state is read from it)
            if not store.is_dir():
                raise OutputError(f"{store}: not found on {socket.gethostname()}: it was removed, or this "
                                  "dask.distributed worker cannot see it; the output must lie on storage every "
                                  "worker reaches, under the same path")
            if self.job and not still_owner(store, self.job):
                raise OutputError(f"{store}: another job replaced or took over this output while this one ran; "
                                  "this one stops without writing to it")
        arr = _open_array(self.array_path, self.job)
        sel = tuple(slice(i * c, i * c + n) for i, c, n in zip(index, self.chunk_shape, block.shape, strict=True))
        if self.order is not None:
            sel, block = tuple(sel[i] for i in self.order), block.transpose(self.order)
        try:
            arr[sel] = block
            Path(self.done_dir, marker_name(index)).touch()
        except OSError as e:
            raise output_error(self.array_path, f"cannot write chunk {index}", e) from e
        return 1

    def written(self, index: tuple[int, ...]) -> bool:
        """Whether this job wrote chunk ``index`` already: dask.distributed runs a chunk again
        when the worker holding its result is lost (each lost worker cost its share of the
        chunks done, network and all)."""
        return Path(self.done_dir, marker_name(index)).exists()


def marker_name(index: tuple[int, ...]) -> str:
    return ".".join(str(i) for i in index)


def done_chunks(store: str | os.PathLike) -> set[tuple[int, ...]]:
    """Chunk indices recorded as finished in ``store``."""
    d = Path(store) / STATE_DIR / "done"
    if not d.exists():
        return set()
    return {tuple(int(p) for p in f.name.split(".")) for f in d.iterdir() if f.name.replace(".", "").isdigit()}


def forget_chunks(store: str | os.PathLike, indices: Iterable[tuple[int, ...]]) -> None:
    """Remove the done marks of chunks ``indices`` of ``store`` (they are computed again)."""
    d = Path(store) / STATE_DIR / "done"
    for index in indices:
        (d / marker_name(index)).unlink(missing_ok=True)


def _read_job_state(store: str | os.PathLike) -> dict[str, Any]:
    """The ``attnrestore`` attributes in ``store``'s zarr.json; OSError (FileNotFoundError
    for none) or JSONDecodeError when it cannot be read."""
    return json.loads((Path(store) / "zarr.json").read_text()).get("attributes", {}).get("attnrestore", {})


def job_state(store: str | os.PathLike) -> dict[str, Any]:
    """The ``attnrestore`` attributes of an output store ({} if none)."""
    try:
        return _read_job_state(store)
    except (OSError, json.JSONDecodeError):
        return {}


def owner_record(job: str) -> dict[str, Any]:
    """Who writes a store: the job's id, and this machine and process (with its start time,
    so that a later process given the same number is not taken for it)."""
    import psutil

    return {"job": job, "host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def still_owner(store: str | os.PathLike, job: str) -> bool:
    """Whether ``job`` still owns ``store``: False once it is removed or another job's
    (a store of an earlier version, which names no owner, is anyone's)."""
    for attempt in range(3):
        try:
            state = _read_job_state(store)
            break
        except FileNotFoundError:
            return False
        except (OSError, json.JSONDecodeError):  # read while the job state is rewritten: read again
            time.sleep(0.05 * (attempt + 1))
    else:
        return True  # unreadable: left to the chunk write to fail if the store is gone
    owner = state.get("owner")
    return not isinstance(owner, dict) or owner.get("job") == job


def writing_elsewhere(state: dict[str, Any]) -> str | None:
    """The live process of this machine that is writing a store of this ``state``, or None
    (not running, written elsewhere or by this process, or its process has ended)."""
    owner = state.get("owner")
    if state.get("status") != "running" or not isinstance(owner, dict):
        return None
    return other_live_process(owner.get("host"), owner.get("pid"), owner.get("started"))


def set_job_state(store: str | os.PathLike, **fields: Any) -> None:
    """Update the job state in the group attributes."""
    import zarr

    g = zarr.open_group(str(store), mode="r+")
    state = dict(g.attrs.get("attnrestore", {}))
    state.update(fields)
    g.attrs["attnrestore"] = state


def data_identity(x: Any) -> str:
    """A short description that changes when ``x`` (a path or an array) holds other data.

    Files and folders: resolved path, size and modification time; numpy arrays: a hash of their
    bytes; dask arrays: their graph name (a token of how they were made); other arrays:
    type, shape and dtype.
    """
    if isinstance(x, (str, os.PathLike)):
        p = Path(x).resolve()
        if not p.exists():
            return str(p)
        st = p.stat()  # a folder (zarr store) gets a new time when it is written again
        return f"{p}:{st.st_size}:{st.st_mtime_ns}"
    if isinstance(x, np.ma.MaskedArray):  # its mask is part of it: the gaps an inpainting fills
        digest = hashlib.sha1(np.ascontiguousarray(x.data).view(np.uint8).ravel())
        digest.update(np.ascontiguousarray(np.ma.getmaskarray(x)).view(np.uint8).ravel())
        return "sha1:" + digest.hexdigest()
    if isinstance(x, np.ndarray):
        return "sha1:" + hashlib.sha1(np.ascontiguousarray(x).view(np.uint8).ravel()).hexdigest()
    name = getattr(x, "name", None)
    if hasattr(x, "dask") and isinstance(name, str):
        return f"dask:{name}"
    return f"{type(x).__name__}{tuple(getattr(x, 'shape', ()))}:{getattr(x, 'dtype', '')}"


def content_sample(x: Any, side: int = 32) -> str:
    """A hash of three small windows of ``x`` (its first, middle and last pixels on every axis).

    Tells apart lazy inputs that share a shape, type and file (two channels of one file
    opened as two napari layers, two layers of one size) at the cost of a few chunk reads;
    the identity of a lazy array can be nothing cheaper, since its dask name changes with
    each opening.  Axes of more than 4 elements get windows ``side`` long on the last two
    (three when the last holds RGB(A) samples), one element on the others.
    """
    shape = tuple(int(n) for n in x.shape)
    wide = 3 if len(shape) >= 3 and shape[-1] <= 4 else 2
    windows = []
    for where in (0.0, 0.5, 1.0):
        window = []
        for i, n in enumerate(shape):
            w = n if n <= 4 else min(n, side) if i >= len(shape) - wide else 1
            start = round((n - w) * where)
            window.append(slice(start, start + w))
        windows.append(tuple(window))
    if hasattr(x, "dask"):  # one pass over the graph: a chunk that holds all three is read once
        import dask

        parts = dask.compute(*(x[w] for w in windows))
    else:
        parts = [x[w] for w in windows]
    digest = hashlib.sha1(repr(shape).encode())
    for part in parts:
        digest.update(np.ascontiguousarray(np.asarray(part)).view(np.uint8).ravel().tobytes())
    return "sample:" + digest.hexdigest()[:16]


def _is_nan(value: Any) -> bool:
    return isinstance(value, (float, np.floating)) and bool(np.isnan(value))


def folder_contents(x: Any) -> str | None:
    """For a folder (a local zarr store): how many files it holds, their total size and the
    latest modification time, which change when a chunk deep inside is rewritten in place
    (the folder's own time does not); None for anything else."""
    if not isinstance(x, (str, os.PathLike)) or not os.path.isdir(x):
        return None
    count = size = latest = 0
    for root, _dirs, files in os.walk(x):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            count, size, latest = count + 1, size + st.st_size, max(latest, st.st_mtime_ns)
    return f"{count}:{size}:{latest}"


#: fingerprint keys that stores of earlier versions lack: a store without one resumes when
#: everything else matches (and records it from then on)
LATER_KEYS = ("precision", "source_files", "revision")

#: The engine's revision, recorded in a job's fingerprint; a store without one is revision 1.
#: 2 (2026-11-24): a chunk's region stops at the image's edge instead of reading a halo of
#: reflections past it, and a Bayer demosaicer's self-ensemble runs 8 distinct passes, not 2.
#: An unfinished store of an earlier revision resumes with the chunks that differ redone.
REVISION = 2


def job_fingerprint(plan: Plan, weights_digest: str, task: str, src_desc: str, ensemble: bool = False,
                    mask_id: str | None = None, precision: str | None = None,
                    source_files: str | None = None) -> dict[str, Any]:
    """What must match for ``resume`` to continue a job (input, mask, model, geometry, dtype,
    the arithmetic the network runs in, and a zarr input's files)."""
    return {
        **({"precision": precision} if precision else {}),
        **({"source_files": source_files} if source_files else {}),
        "revision": REVISION,
        "source": src_desc, "weights": weights_digest, "task": task, "shape": list(plan.out_shape),
        "chunks": [list(c[:1]) for c in plan.out_chunks], "tile": plan.tile, "overlap": plan.overlap,
        "dtype": plan.out_dtype, "norm": [list(plan.norm.lo), list(plan.norm.hi)],
        # NaN reads back unequal to itself: "nan", so that a float GeoTIFF's NaN nodata resumes
        "cfa": plan.cfa, "nodata": "nan" if _is_nan(plan.nodata) else plan.nodata, "mask": plan.has_mask,
        **({"ensemble": True} if ensemble else {}),  # absent when off: stores of earlier versions still resume
        **({"mask_id": mask_id} if plan.has_mask and mask_id else {}),
        **({"kept_channel": plan.keep_channel} if plan.keep_channel is not None else {}),  # (as for ensemble)
        **({"white": plan.white} if plan.white is not None else {}),  # (likewise)
    }


def _written_before_samples(old: dict[str, Any], new: dict[str, Any], earlier_source: str | None) -> bool:
    """Whether ``old`` is ``new`` as recorded by a version that described inputs without a pixel sample."""
    source = old.get("source")
    return (earlier_source is not None and isinstance(source, str) and "sample:" not in source
            and source == earlier_source and source != new.get("source")
            and {**old, "source": new.get("source")} == new)


def prepare_store(
    dst: str | os.PathLike,
    plan: Plan,
    fingerprint: dict[str, Any],
    create: Callable[[], Any],
    overwrite: bool,
    resume: bool,
    inputs: Sequence[str | os.PathLike] = (),
    earlier_source: str | None = None,
    job: str = "",
    changed_since: Callable[[int], Iterable[tuple[int, ...]]] | None = None,
) -> set[tuple[int, ...]] | None:
    """Create (or reopen for resume) the output store; returns the chunks already done.

    None means the store is already complete (a resume of a finished job: nothing to do).
    ``inputs``: the files the job reads (image, mask); an output that is one of them, or
    holds one, is refused before anything is deleted.  ``earlier_source``: how versions
    before the pixel sample described the same input; a store they wrote, with no sample in
    its ``source``, resumes when that description and all other settings match.  ``job``:
    this job's id, recorded as the store's owner; a store another live process of this
    machine, or another job of this process, is writing is refused.  The job holds the store
    in this process until :func:`release_store`.  ``changed_since(revision)``: the chunks
    whose result differs between that revision of the engine and this one; an unfinished
    store of an earlier :data:`REVISION` resumes with them redone (their done marks removed
    first, so that no later resume keeps them).
    """
    dst = Path(dst)
    try:
        refuse_output_over_input(dst, inputs)
    except ImageWriteError as exc:
        raise OutputError(str(exc)) from None
    if job:
        _claim(dst, job)
    try:
        done = _prepare(dst, plan, fingerprint, create, overwrite, resume, inputs, earlier_source, job, changed_since)
    except BaseException:
        release_store(dst, job)
        raise
    if done is None:  # complete: nothing to write
        release_store(dst, job)
    return done


#: the stores this process's jobs are writing (absolute path -> job id), which another job
#: of this process (a thread, the napari console beside the Restore widget) may not take
_ACTIVE: dict[str, str] = {}
_ACTIVE_LOCK = threading.Lock()


def _store_key(dst: str | os.PathLike) -> str:
    """The one name of a store, however it is reached: its real path (a folder reached
    through a link is the same store), or its URL."""
    at = absolute_location(dst)
    return at if "://" in at else os.path.realpath(at)


def _claim(dst: Path, job: str) -> None:
    key = _store_key(dst)
    with _ACTIVE_LOCK:
        if _ACTIVE.get(key, job) != job:
            raise OutputError(f"{dst}: another job of this process is writing this output; wait for it to end "
                              f"(or cancel it), then continue with {RESUME} or replace it with {OVERWRITE}")
        _ACTIVE[key] = job


def release_store(dst: str | os.PathLike, job: str) -> None:
    """Let other jobs of this process have ``dst`` again (a job's end, however it ended)."""
    key = _store_key(dst)
    with _ACTIVE_LOCK:
        if _ACTIVE.get(key) == job:
            del _ACTIVE[key]


def _prepare(dst: Path, plan: Plan, fingerprint: dict[str, Any], create: Callable[[], Any], overwrite: bool,
             resume: bool, inputs: Sequence[str | os.PathLike], earlier_source: str | None,
             job: str, changed_since: Callable[[int], Iterable[tuple[int, ...]]] | None = None,
             ) -> set[tuple[int, ...]] | None:
    """:func:`prepare_store` once the store is this job's to prepare."""
    owner = owner_record(job) if job else None
    if dst.exists():
        state = job_state(dst)
        busy = writing_elsewhere(state) if overwrite or resume else None
        if busy:
            raise OutputError(f"{dst}: another job ({busy}) is writing this output; wait for it to end or stop "
                              f"it, then continue with {RESUME} or replace it with {OVERWRITE}")
        if resume and state.get("job"):
            # an earlier version's store is compared without the keys it did not record, and
            # without a pixel sample in its source, then records this version's from now on
            old = {**state["job"], **{k: fingerprint[k] for k in LATER_KEYS if k in fingerprint and k not in state["job"]}}
            if _written_before_samples(old, fingerprint, earlier_source):
                old = fingerprint
            if old == fingerprint and state.get("status") == "complete":
                return None  # (a complete store of an earlier revision is one revision throughout)
            if old == fingerprint and state["job"] != fingerprint:
                earlier = state["job"].get("revision", 1)
                if changed_since is not None and earlier < fingerprint.get("revision", earlier):
                    forget_chunks(dst, changed_since(earlier))
                set_job_state(dst, job=fingerprint)
            if old == fingerprint:
                set_job_state(dst, status="running", error=None, **({"owner": owner} if owner else {}))
                return done_chunks(dst)
            if not overwrite:
                differ = sorted(k for k in {*old, *fingerprint} if old.get(k) != fingerprint.get(k))
                raise OutputError(
                    f"{dst}: cannot resume: the existing output was made with other settings "
                    f"({', '.join(differ)} differ); start again with {OVERWRITE}"
                )
            # resume and overwrite: another job's output is replaced, as overwrite alone would
        elif not overwrite:
            if resume:  # nothing of ours to continue there
                raise OutputError(f"{dst}: cannot resume: it was not written by an attnrestore restore; replace it "
                                  f"with {OVERWRITE}")
            unfinished = state.get("job") and state.get("status") != "complete"
            hint = f"; continue it with {RESUME}" if unfinished else ""
            raise OutputError(f"{dst}: output exists; replace it with {OVERWRITE}{hint}")
        try:
            if state.get("job") and state.get("status") != "complete":
                remove_output(dst)  # an unfinished job's chunks: no output to keep
            elif set_aside(dst) is None:  # a complete output is kept aside until this one is complete
                remove_output(dst)
        except ImageWriteError as exc:
            raise OutputError(str(exc)) from None
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"{dst}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{dst}: folder {parent} is not writable")
    create()
    (dst / STATE_DIR / "done").mkdir(parents=True, exist_ok=True)
    set_job_state(dst, status="running", job=fingerprint, **({"owner": owner} if owner else {}))
    return set()
