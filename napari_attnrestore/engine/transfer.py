"""Host-device transfers through reusable (pinned) host buffers, double-buffered.

Copies between pageable host memory and a GPU go through a hidden staging buffer and
block.  Page-locked (pinned) buffers let ``non_blocking`` copies run as DMA, queued on
the stream with the forward pass.  Allocating pinned memory is slow, so each process
keeps two input and two output buffers per network (slots) and reuses them, growing
them when a larger batch arrives.  With two slots, batch ``k + 1`` is staged and queued
while batch ``k`` is still computing.  The caller serializes access (the model handle's
lock) and waits for a slot's result before it reuses that slot, so an in-flight copy
never sees its buffer change.
"""

from __future__ import annotations

import time

import numpy as np
import torch

SLOTS = 2


class HostBuffer:
    """One growable host buffer of float32 (page-locked when ``pin``)."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self._buf: torch.Tensor | None = None
        self.allocations = 0

    def view(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A tensor of ``shape`` on the buffer, which grows (by reallocation) only when too small."""
        n = int(np.prod(shape))
        if self._buf is None or self._buf.numel() < n:
            self._buf = torch.empty(n, dtype=torch.float32, pin_memory=self.pin)
            self.allocations += 1
        return self._buf[:n].view(shape)


class Pending:
    """A result on its way back to the host: :meth:`wait` returns it as a numpy copy."""

    def __init__(self, host: torch.Tensor, start: object, end: object, t0: float) -> None:
        self.host, self.start, self.end = host, start, end
        self.seconds = time.perf_counter() - t0  # a synchronous copy is done already

    def wait(self) -> np.ndarray:
        """Block until the copy is done; :attr:`seconds` is then the device time it took."""
        if self.end is not None:
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000
        return self.host.numpy().copy()


class HostStaging:
    """Batches to the device and results back through reusable host buffers.

    ``pin`` page-locks them (CUDA only).  With ``pin=False`` the same code path runs on
    plain memory, which the CPU tests use; on the CPU the engine does not stage at all.
    """

    def __init__(self, pin: bool, slots: int = SLOTS) -> None:
        self.inp = [HostBuffer(pin) for _ in range(slots)]
        self.out = [HostBuffer(pin) for _ in range(slots)]
        self.pin = pin

    def to_device(self, batch: np.ndarray, device: torch.device, slot: int = 0) -> torch.Tensor:
        """Copy a float32 batch into slot ``slot``'s input buffer and start its transfer."""
        host = self.inp[slot].view(batch.shape)
        host.numpy()[...] = batch
        return host.to(device, non_blocking=self.pin)

    def timer(self, device: torch.device) -> tuple[object, float]:
        """Mark the start of a batch on the device's stream (a CUDA event) and the host clock."""
        start = None
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            start.record(torch.cuda.current_stream(device))
        return start, time.perf_counter()

    def start_to_host(self, y: torch.Tensor, slot: int, timer: tuple[object, float]) -> Pending:
        """Queue the copy of a device result into slot ``slot``'s output buffer."""
        host = self.out[slot].view(tuple(y.shape))
        host.copy_(y, non_blocking=self.pin)
        end = None
        if y.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream(y.device))
        return Pending(host, timer[0], end, timer[1])
