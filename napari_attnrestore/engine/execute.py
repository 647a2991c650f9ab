"""Running a chunk graph: progress per chunk, cancellation between tile batches, schedulers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dask
from dask.callbacks import Callback
from dask.highlevelgraph import HighLevelGraph

from ..warning import warn

#: ``progress(done, total)`` is called after each output chunk.
Progress = Callable[[int, int], None]


class Cancelled(RuntimeError):
    """The job was cancelled; chunks already written stay and are recorded as done."""


_CANCELS: dict[str, threading.Event] = {}


@contextlib.contextmanager
def cancellable(name: str, cancel: threading.Event | _Either | None) -> Iterator[None]:
    """While in this block, the chunk tasks of graph ``name`` stop at their next tile batch
    once ``cancel`` is set (the threaded scheduler starts several chunks at once, so
    refusing new ones alone would let those run to the end)."""
    if cancel is None:
        yield
        return
    _CANCELS[name] = cancel
    try:
        yield
    finally:
        _CANCELS.pop(name, None)


class _Either:
    """Set when either of two events is (the caller's cancel, or the job's failure)."""

    def __init__(self, first: threading.Event | None, second: threading.Event) -> None:
        self.first, self.second = first, second

    def is_set(self) -> bool:
        return self.second.is_set() or (self.first is not None and self.first.is_set())


def cancel_event(name: str) -> threading.Event | _Either | None:
    """The cancel event of graph ``name`` while it runs in this process (see :func:`cancellable`)."""
    return _CANCELS.get(name)


class _ChunkCallback(Callback):
    def __init__(self, name: str, total: int, progress: Progress | None, cancel: threading.Event | None) -> None:
        super().__init__()
        self.name, self.total, self.progress, self.cancel = name, total, progress, cancel
        self.done = 0
        self.lock = threading.Lock()

    def _pretask(self, key, dsk, state) -> None:
        if self.cancel is not None and self.cancel.is_set() and isinstance(key, tuple) and key[0] == self.name:
            raise Cancelled("cancelled")

    def _posttask(self, key, result, dsk, state, id) -> None:
        if isinstance(key, tuple) and key and key[0] == self.name:
            with self.lock:
                self.done += 1
                done = self.done
            if self.progress is not None:
                self.progress(done, self.total)


def _count(*tokens: Any) -> int:
    return sum(int(t) for t in tokens)


def execute(
    dsk: dict,
    name: str,
    deps: list[Any],
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    scheduler: Any = None,
    num_workers: int | None = None,
) -> int:
    """Compute every chunk task of ``name`` in ``dsk``; returns the number of chunks run.

    ``scheduler``: None (threads), ``"sync"``, or a ``distributed.Client``.
    """
    keys = [k for k in dsk if isinstance(k, tuple) and k and k[0] == name]
    if not keys:
        return 0
    final = f"{name}-count"
    graph = dict(dsk)
    graph[final] = (_count, *keys)
    hlg = HighLevelGraph.from_collections(final, graph, dependencies=deps)
    from dask.delayed import Delayed

    job = Delayed(final, hlg)
    if scheduler is not None and not isinstance(scheduler, str):  # a distributed Client
        fut = scheduler.compute(job)
        try:
            if progress is not None or cancel is not None:
                return _wait_distributed(scheduler, fut, keys, progress, cancel)
            return int(fut.result())
        except BaseException:  # Ctrl-C, a failed chunk: the cluster stops computing this job
            fut.cancel()
            raise
    cb = _ChunkCallback(name, len(keys), progress, cancel)
    kw: dict[str, Any] = {"scheduler": scheduler or "threads"}
    if num_workers:
        kw["num_workers"] = num_workers
    # an event of the job's own beside the caller's: a Ctrl-C (or a failed chunk) leaves the
    # threaded scheduler's running chunks to run on, which then stop at their next tile batch
    # (the caller's event is left as it is: it may start the next job)
    failed = threading.Event()
    with cb, cancellable(name, _Either(cancel, failed)):
        try:
            return int(dask.compute(job, **kw)[0])
        except BaseException:
            failed.set()
            raise


def _wait_distributed(client: Any, fut: Any, keys: list, progress: Progress | None, cancel: threading.Event | None) -> int:
    import time

    total, shown = len(keys), -1
    checked, workerless = time.monotonic(), None
    while not fut.done():
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        if progress is not None:
            # never backwards: a lost worker's chunks go back to waiting, and rerun at once (their
            # done markers make them skip the network)
            done = max(shown, min(total, _distributed_done(client, keys)))
            if done != shown:  # after each chunk, not every half second
                progress(done, total)
                shown = done
        if time.monotonic() - checked >= WORKER_CHECK_S:  # every worker gone (an allocation ended): said, not a silent wait
            checked = time.monotonic()
            workerless = (workerless or checked) if _worker_count(client) == 0 else None
            if workerless is not None and checked - workerless >= NO_WORKERS_WARN_S:
                warn(f"the dask cluster has had no workers for {NO_WORKERS_WARN_S} s: the job waits for "
                     "some to join (stop it and continue later with --resume / resume=True)")
                workerless = float("inf")  # said once
        time.sleep(0.5)
    result = int(fut.result())  # a failed job raises here, before its progress reads 100%
    if progress is not None and shown != total:
        progress(total, total)
    return result


#: seconds without a single worker before a distributed job says so, and between looks
NO_WORKERS_WARN_S, WORKER_CHECK_S = 60, 5


def _worker_count(client: Any) -> int:
    """How many workers the cluster has (-1 when the scheduler does not answer)."""
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:
        return -1


def _distributed_done(client: Any, keys: list) -> int:
    def count(dask_scheduler, keys=keys):  # runs on the scheduler
        ts = dask_scheduler.tasks
        return sum(1 for k in keys if k in ts and ts[k].state in ("memory", "released", "forgotten"))

    try:
        return int(client.run_on_scheduler(count))
    except Exception:
        return 0
