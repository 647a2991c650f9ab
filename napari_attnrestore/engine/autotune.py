"""Automatic tile and batch size: probe the network's memory, fit it into free memory.

Two probe forward passes at small tiles (batch 1) measure the peak memory of the
network: ``torch.cuda.max_memory_allocated`` on CUDA.  On the CPU the allocator keeps no
statistics: on Linux the growth of the peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` after ``malloc_trim``) is read; elsewhere the peak of live
tensor storage, tracked op by op with a dispatch mode, times :data:`LIVE_TO_PEAK` (ops'
internal buffers are not tensors).  A power law through the two points (exponent clamped
to [1, 2]: linear for windowed attention and convolutions, quadratic for global
attention) extrapolates to larger tiles, and the largest tile, then batch, whose estimate
fits within a fraction of the free memory wins.  Tiles are chosen so that a chunk's
region splits into ``n x n`` tiles with no wasted margin; the out-of-memory fallback
still guards the estimate.
"""

from __future__ import annotations

import ctypes
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .tiling import round_up, tile_starts

log = logging.getLogger("attnrestore.engine")

#: Share of the free memory the network's activations may use.
GPU_FRACTION = 0.6
CPU_FRACTION = 0.25
#: Most tiles per forward pass (CPU batches bring no speed, only memory).
MAX_BATCH = {"cuda": 32, "cpu": 4}
#: Probe tile sides (rounded up to the model's window multiple).
PROBE_SIDES = (64, 128)
#: Largest automatic tile per device type: on a CPU memory is rarely the limit, and tiles
#: much larger than this ran slower per pixel (a 1104 px tile took 1.3x longer per pixel
#: than 256 px tiles for the shipped HAT denoiser on 2 cores).
MAX_TILE = {"cpu": 512}
MIN_TILE = 32
#: Peak RSS over peak live tensor bytes of a CPU forward pass (measured 2.3-2.9 for HAT).
LIVE_TO_PEAK = 3.0
#: The process's peak RSS (bytes) before a probe reset it; see :func:`peak_rss_bytes`.
_peak_before_reset = 0.0


@dataclass(frozen=True)
class MemoryModel:
    """Measured peak activation memory of the network, and the memory there is for it.

    ``peaks[i]`` bytes were needed by one forward pass of one ``sides[i]``-pixel tile.
    """

    sides: tuple[int, int]
    peaks: tuple[float, float]
    free: float
    fraction: float
    device: str = "cpu"

    @property
    def budget(self) -> float:
        """Bytes the activations of one forward pass may take."""
        return self.free * self.fraction

    @property
    def exponent(self) -> float:
        """Growth of the peak with the pixel count (1: linear ... 2: quadratic)."""
        (s1, s2), (m1, m2) = self.sides, self.peaks
        if s2 <= s1 or m1 <= 0 or m2 <= 0:
            return 1.0
        e = math.log(m2 / m1) / math.log((s2 * s2) / (s1 * s1))
        return min(2.0, max(1.0, e))

    def estimate(self, tile: int, batch: int = 1) -> float:
        """Peak bytes of a forward pass of ``batch`` tiles of ``tile x tile`` pixels."""
        s2, m2 = self.sides[1], max(self.peaks)
        return batch * m2 * ((tile * tile) / (s2 * s2)) ** self.exponent


def tiles_for(region: int, n: int, overlap: int, multiple: int) -> int:
    """The smallest tile (a multiple of ``multiple``) that covers ``region`` with ``n`` tiles."""
    return round_up(-(-(region + (n - 1) * overlap) // n), multiple)


def choose_tile_batch(
    memory: MemoryModel,
    *,
    region: int,
    overlap: int,
    multiple: int = 1,
    planes: int = 1,
    tile: int | None = None,
    batch: int | None = None,
    max_batch: int = 16,
    max_tile: int | None = None,
) -> tuple[int, int]:
    """The largest tile, then the largest batch, whose estimated peak fits the budget.

    ``region`` is the side of a chunk's halo region, the most a tile needs to be; tiles
    split it into ``n x n`` evenly (``n`` as small as fits).  ``planes`` multiplies the
    tiles there are to batch per chunk; ``max_tile`` caps the tile.  A given ``tile`` or
    ``batch`` is kept.  When even the smallest tile does not fit, it is returned with
    batch 1 (the OOM fallback decides).
    """
    m = max(1, multiple)
    smallest = round_up(max(2 * overlap + m, MIN_TILE), m)
    region = max(region, 1)
    fixed_batch = batch if batch is not None else 1
    if tile is None:
        tile = smallest
        n = 1
        while True:
            t = tiles_for(region, n, overlap, m)
            if t < smallest:
                break
            if (max_tile is None or t <= max_tile) and memory.estimate(t, fixed_batch) <= memory.budget:
                tile = t
                break
            n += 1
    if batch is None:
        per_axis = len(tile_starts(region, min(tile, region), overlap)) if tile < region else 1
        cap = max(1, min(max_batch, per_axis * per_axis * planes))
        batch = 1
        while batch < cap and memory.estimate(tile, batch + 1) <= memory.budget:
            batch += 1
    return int(tile), int(batch)


def free_memory(device: Any) -> float:
    """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on CUDA, available RAM elsewhere."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return float(torch.cuda.mem_get_info(dev)[0])
    import psutil

    return float(psutil.virtual_memory().available)


class LiveTensorBytes:
    """Peak bytes of live tensor storage while active (CPU/MPS memory probe).

    A ``TorchDispatchMode`` sees every tensor an op makes; a weak reference to each new
    storage tells when it is freed.  Falls back to the sum of all outputs (an upper
    bound) where storage weak references are unavailable.
    """

    def __init__(self) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        try:
            from torch.multiprocessing.reductions import StorageWeakRef
        except ImportError:  # pragma: no cover - a torch without it
            StorageWeakRef = None
        probe = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        probe._record(t)
                return out

        self._mode = _Mode()
        self._weak = StorageWeakRef
        self._live: dict[int, tuple[Any, int]] = {}
        self._total = 0
        self.peak = 0

    def _record(self, t: Any) -> None:
        st = t.untyped_storage()
        ptr, n = st.data_ptr(), st.nbytes()
        if self._weak is None:
            self._total += n
            self.peak = self._total
            return
        for k in [k for k, (ref, _) in self._live.items() if ref.expired()]:
            del self._live[k]
        if n and ptr not in self._live:
            self._live[ptr] = (self._weak(st), n)
            self.peak = max(self.peak, sum(b for _, b in self._live.values()))

    def __enter__(self) -> LiveTensorBytes:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
        self._live.clear()


def _status_bytes(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
    raise OSError(f"no {key} in /proc/self/status")


def peak_rss_bytes() -> float:
    """This process's peak RSS, including peaks from before a memory probe reset the counter."""
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    try:
        now = max(now, _status_bytes("VmHWM"))
    except OSError:
        pass
    return max(now, _peak_before_reset)


def rss_growth(run: Callable[[], Any]) -> float | None:
    """Linux: how far the resident set grew above its start while ``run()`` ran; None elsewhere.

    Free heap memory is first given back (``malloc_trim``) so that the probe's allocations
    show up as growth, and the peak counter is reset (its old value is kept for
    :func:`peak_rss_bytes`).
    """
    global _peak_before_reset
    if not sys.platform.startswith("linux"):
        return None
    try:
        old_peak = _status_bytes("VmHWM")
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: growth may be underestimated by reused memory
            pass
        base = _status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    _peak_before_reset = max(_peak_before_reset, old_peak)
    run()
    return max(0.0, _status_bytes("VmHWM") - base)


def peak_forward_bytes(handle: Any, side: int) -> float:
    """Peak memory of one forward pass of one ``side x side`` tile (it does not count as work)."""
    import torch

    _, _, dev, _ = handle.runtime()
    x = np.zeros((1, handle.info.in_channels, side, side), np.float32)
    seconds, calls = handle.forward_seconds, handle.forward_calls
    try:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            handle.infer(x, eager=True)
            torch.cuda.synchronize(dev)
            return float(torch.cuda.max_memory_allocated(dev) - base)
        if dev.type == "cpu":
            grown = rss_growth(lambda: handle.infer(x, eager=True))
            if grown is not None:
                return grown
        with LiveTensorBytes() as probe:
            handle.infer(x, eager=True)
        return float(probe.peak) * LIVE_TO_PEAK
    finally:
        handle.forward_seconds, handle.forward_calls = seconds, calls


def measure_memory(handle: Any, fraction: float | None = None) -> MemoryModel:
    """Probe the network at two small tiles and read the free memory of its device."""
    _, _, dev, _ = handle.runtime()
    m = max(1, handle.info.multiple_of)
    s1 = round_up(PROBE_SIDES[0], m)
    s2 = max(round_up(PROBE_SIDES[1], m), 2 * s1)
    peaks = (peak_forward_bytes(handle, s1), peak_forward_bytes(handle, s2))
    if fraction is None:
        fraction = GPU_FRACTION if dev.type == "cuda" else CPU_FRACTION
    mem = MemoryModel((s1, s2), peaks, free_memory(dev), fraction, dev.type)
    log.info("memory probe on %s: %.1f MB at %d px, %.1f MB at %d px; budget %.0f MB", dev, peaks[0] / 2**20, s1,
             peaks[1] / 2**20, s2, mem.budget / 2**20)
    return mem


def max_batch_for(device_type: str) -> int:
    """Most tiles per forward pass worth batching on this kind of device."""
    return MAX_BATCH.get(device_type, MAX_BATCH["cuda"])


def max_tile_for(device_type: str) -> int | None:
    """Largest automatic tile on this kind of device (None: only memory limits it)."""
    return MAX_TILE.get(device_type)
