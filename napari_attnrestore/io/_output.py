"""Checks shared by the writers before they create anything (and by the reader: what an image is)."""

from __future__ import annotations

import math
import os
import shutil
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageWriteError


def unsupported_pixels(dtype: Any) -> str | None:
    """Why values of ``dtype`` are no intensities (complex, text, objects), or None."""
    dtype = np.dtype(dtype)
    return None if dtype.kind in "biuf" else f"unsupported pixel type {dtype}: not intensities"


def no_image(shape: Sequence[int], dtype: Any) -> str | None:
    """Why an array of ``shape`` and ``dtype`` is no image to show, restore or save, or None."""
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:  # napari, the engine and the writers all need y and x
        return f"an image needs at least 2 dimensions (y, x); this one has shape {shape}"
    if 0 in shape:
        return f"the image is empty (shape {shape})"
    return unsupported_pixels(dtype)


def check_axes(axes: str, ndim: int, path: str) -> None:
    """Raise ImageWriteError if ``axes`` does not name each of the ``ndim`` dimensions once."""
    if len(axes) != ndim or len(set(axes)) != len(axes):
        raise ImageWriteError(path, f"axes '{axes}' must name each of the {ndim} dimensions once")


def absolute_location(path: str | os.PathLike) -> str:
    """``path`` made absolute unless it is a URL (``s3://...``): where another process, with
    another working folder (a dask.distributed worker), finds the same file or store."""
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)


def check_geometry(path: str, scale: Sequence[float], translate: Sequence[float]) -> None:
    """Raise ImageWriteError unless every pixel size is positive and finite and every offset
    finite (a flipped napari layer has scale -1: OME requires positive sizes, TIFF
    resolutions too)."""
    if not all(math.isfinite(v) and v > 0 for v in scale) or not all(math.isfinite(v) for v in translate):
        raise ImageWriteError(path, f"scale must be positive and finite, translate finite; got {list(scale)}, "
                                    f"{list(translate)}")


def ensure_writable_parent(path: str) -> None:
    """Create the parent folder of ``path`` if needed and check that it is writable."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(path, f"cannot create the parent folder ({exc.strerror or exc})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ImageWriteError(path, f"the parent folder {parent} is not writable")


def refuse_output_over_input(path: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """Raise ImageWriteError when ``path`` is one of ``inputs``, holds one, or lies inside one.

    Replacing such an output would delete the pixels that are about to be read from it.
    """
    out = Path(path).resolve()
    for src in inputs:
        p = Path(src).resolve()
        if p == out or out in p.parents or p in out.parents:
            raise ImageWriteError(path, f"the output would overlap the input {src}; write it somewhere else")


def backing_stores(data: Any) -> list[str]:
    """The zarr stores a layer's lazy data reads from (zarr arrays, directly or under dask;
    every level of a pyramid): writing over one of them would erase what is being written."""
    from .images import AxesView, GuardedArray  # images imports this module

    levels = data if isinstance(data, Sequence) and not isinstance(data, str) else [data]
    found = []
    for level in levels:
        arrays = [level]
        graph = getattr(level, "dask", None)
        for layer in getattr(graph, "layers", {}).values():  # the array dask.from_array/from_zarr keeps
            mapping = getattr(layer, "mapping", None)
            if isinstance(mapping, dict):
                arrays += [v for k, v in mapping.items() if isinstance(k, str) and k.startswith("original-")]
        for a in arrays:
            root = getattr(getattr(a, "store", None), "root", None)
            if root is None and isinstance(a, (GuardedArray, AxesView)) and a.path:  # our reader's wrappers
                root = a.path  # (a zarr array's own .path is its key in the store, not a place on disk)
            if root is not None:
                found.append(str(root))
    return found


HOST = "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname())  # a partial file's writer: host, pid
#: the hidden files a write leaves beside the output until it ends: the file itself, its
#: pyramid's first level, a band of rows too large to hold (TIFF).  (The store an OME-Zarr
#: write replaces, held aside as ``replaced``, is no scratch: after a crash it is the only copy.)
SCRATCH_KINDS = ("partial", "levels", "band")


def scratch_prefix(name: str, kind: str) -> str:
    """The hidden name, less its writer's pid, of ``kind`` (one of ``SCRATCH_KINDS``) for
    output ``name`` on this host."""
    return f".{name}.{kind}-{HOST}-"


def scratch_path(folder: str, name: str, kind: str) -> str:
    """This process's hidden file or folder of ``kind`` for output ``name`` in ``folder``."""
    return os.path.join(folder, scratch_prefix(name, kind) + str(os.getpid()))


def remove_orphans(folder: str, name: str) -> None:
    """Delete hidden partial files of ``name`` written on this host by a process that is gone
    (killed); another machine's (a shared folder) are left alone."""
    if os.name != "posix":
        return
    for path, pid in _scratch_of_others(folder, name, SCRATCH_KINDS):
        if not _writes(pid, path):
            discard(path)


def live_writer(folder: str, name: str) -> int | None:
    """The pid of another process of this host that is writing output ``name`` in ``folder``
    (its hidden partial file is there and it lives), or None."""
    if os.name != "posix" or not os.path.isdir(folder):
        return None
    return next((pid for path, pid in _scratch_of_others(folder, name, ("partial",)) if _writes(pid, path)), None)


def _scratch_of_others(folder: str, name: str, kinds: tuple[str, ...]) -> Iterator[tuple[str, int]]:
    """The hidden files of ``kinds`` for output ``name`` in ``folder`` that other processes of
    this host named after themselves: (path, pid)."""
    prefixes = tuple(scratch_prefix(name, kind) for kind in kinds)
    for entry in os.listdir(folder):
        prefix = next((p for p in prefixes if entry.startswith(p)), None)
        pid = entry[len(prefix):] if prefix else ""
        if pid.isdigit() and int(pid) != os.getpid():
            yield os.path.join(folder, entry), int(pid)


def other_live_process(host: Any, pid: Any, started: Any) -> str | None:
    """``"process N on this machine"`` when ``host``, ``pid`` and ``started`` (its start time,
    as an owner record or a lock keeps them) name a live process of this machine other than
    this one, else None: another machine's, a process that is gone, or one given that pid later."""
    import psutil

    try:
        pid = int(pid)
        if host != socket.gethostname() or pid == os.getpid():
            return None
        if abs(psutil.Process(pid).create_time() - float(started)) > 1.0:
            return None
    except (psutil.Error, TypeError, ValueError):
        return None
    return f"process {pid} on this machine"


def _writes(pid: int, scratch: str) -> bool:
    """Whether process ``pid`` of this host, which a scratch file is named after, can be its
    writer: it lives and started before the file was last written (a killed writer's pid
    given to a later process is not)."""
    import psutil

    try:
        return psutil.Process(pid).create_time() <= os.stat(scratch).st_mtime + 1.0
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):  # another user's, or the file just went: left alone
        return True


def discard(path: str) -> None:
    """Remove a partial output (a file, or a folder), ignoring errors."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except OSError:
        pass
