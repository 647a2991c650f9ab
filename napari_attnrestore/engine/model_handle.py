"""A picklable reference to a network that is built once per process and reused.

Dask tasks receive a :class:`ModelHandle`, never a live module: on the threaded
scheduler every task shares the cached module; on a dask.distributed worker the handle
is unpickled once and the module is built on first use, then cached by ``key``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..warning import CompileFallbackWarning, warn
from .device import resolve_device, resolve_precision
from .transfer import HostStaging, Pending


class NonFiniteOutputError(FloatingPointError):
    """The network made NaN or infinite values of finite input (damaged weights, an overflow)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the engine needs to know about a network."""

    in_channels: int
    out_channels: int
    scale: int
    multiple_of: int
    halo: int
    half_safe: bool
    name: str
    task: str | None = None  # the task it was trained for, from its model card (None: not known)
    #: the tile it runs best at, from its model card (None: any; the engine's default)
    tile: int | None = None


_CACHE: dict[str, tuple[nn.Module, threading.Lock, torch.device, torch.dtype]] = {}
_CACHE_LOCK = threading.Lock()
#: ``torch.compile`` of a cached module, per handle key (None: compilation failed, run eagerly)
_COMPILED: dict[str, Any] = {}
#: reusable (pinned) host buffers for transfers to and from the device, per handle key
_STAGING: dict[str, HostStaging] = {}

log = logging.getLogger("attnrestore.engine")


#: live handles per key in this process: a worker unpickles its own copies of one handle
_LIVE: dict[str, int] = {}
_LIVE_LOCK = threading.RLock()  # a finalizer may run inside it, in the same thread


def _drop(key: str) -> None:
    _CACHE.pop(key, None)
    _COMPILED.pop(key, None)
    _STAGING.pop(key, None)


def _hold(handle: Any) -> None:
    """Count ``handle`` among its key's live copies; the device copy, compiled module and
    pinned buffers go when the last copy in this process does (each job on a long-lived
    dask.distributed worker left its model behind)."""
    with _LIVE_LOCK:
        _LIVE[handle.key] = _LIVE.get(handle.key, 0) + 1
    weakref.finalize(handle, _let_go, handle.key)


def _let_go(key: str) -> None:
    with _LIVE_LOCK:
        left = _LIVE.get(key, 0) - 1
        if left > 0:
            _LIVE[key] = left
            return
        _LIVE.pop(key, None)
    _drop(key)


def _first_conv_in_channels(module: nn.Module) -> int | None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def describe(module: nn.Module, name: str | None = None) -> ModelInfo:
    """Read a module's declared capabilities, probing a forward pass for what it lacks."""
    cin = getattr(module, "in_channels", None) or _first_conv_in_channels(module) or 1
    cout = getattr(module, "out_channels", None)
    scale = getattr(module, "scale", None)
    if cout is None or scale is None:
        p = next(iter(module.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if (p is not None and p.is_floating_point()) else torch.float32
        with torch.inference_mode():
            was_training = module.training
            module.eval()
            y = module(torch.zeros(1, int(cin), 32, 32, device=dev, dtype=dtype))
            module.train(was_training)
        if y.ndim != 4 or y.shape[-1] % 32 or y.shape[-2] % 32:
            raise ValueError(f"model maps (1, {cin}, 32, 32) to {tuple(y.shape)}; expected (1, C, s*32, s*32)")
        cout, scale = int(y.shape[1]), int(y.shape[-1] // 32)
    return ModelInfo(
        in_channels=int(cin),
        out_channels=int(cout),
        scale=int(scale),
        multiple_of=int(getattr(module, "multiple_of", 1) or 1),
        halo=int(getattr(module, "halo", 16) or 0),
        half_safe=bool(getattr(module, "half_safe", False)),
        name=name or getattr(module, "arch", type(module).__name__),
        task=(getattr(module, "card", None) or {}).get("task"),
        tile=_card_tile(module),
    )


def _card_tile(module: nn.Module) -> int | None:
    """The tile a model card asks for (``"tile"``: a network whose result depends on its
    tile's size runs best on tiles of its training patches), or None."""
    tile = (getattr(module, "card", None) or {}).get("tile")
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 8:
        raise ValueError(f"model card of {getattr(module, 'card', {}).get('name', 'the model')!r}: "
                         f"tile must be a whole number of pixels >= 8, got {tile!r}")
    return tile


class ModelHandle:
    """A network plus the device and precision to run it with.

    Parameters
    ----------
    module
        A ``torch.nn.Module`` (a user's own, or one loaded from a checkpoint).
    device, precision
        As for :func:`napari_attnrestore.restore`; resolved in the process that runs.
    checkpoint
        Path of the checkpoint the module came from (for messages and model cards).
    compile
        Run the network through ``torch.compile`` (once per process, on first use); if
        compiling fails, a warning says so and the network runs uncompiled.
    staging
        Copy batches through reusable host buffers (page-locked, ``non_blocking``
        transfers).  None: on CUDA only; True elsewhere runs the same path unpinned (tests).
    ensemble
        Self-ensemble: run every batch in the 8 orientations of the square (4 rotations,
        each also mirrored), undo each on the output and average.  About 0.1-0.2 dB more
        for denoising, 8 times the compute, the same memory.
    """

    def __init__(self, module: nn.Module, device: str = "auto", precision: str = "auto", checkpoint: str | None = None,
                 compile: bool = False, staging: bool | None = None, ensemble: bool = False) -> None:
        self.module = module.eval()
        self.device = device
        self.precision = precision
        self.checkpoint = checkpoint
        self.compile = bool(compile)
        self.staging = staging
        self.ensemble = bool(ensemble)
        self.info = describe(module, Path(checkpoint).stem if checkpoint else None)
        resolve_precision(precision, resolve_device(device), self.info.half_safe)  # fail early on a typo
        self.key = uuid.uuid4().hex
        # intra-op threads of every forward pass, whichever (dask) thread runs it: float sums,
        # and so the last bit of the output, depend on the thread count
        self.threads = torch.get_num_threads()
        self.forward_seconds = 0.0  # time spent in forward passes in this process (pipeline efficiency)
        self.forward_calls = 0
        # the cached device copy lives as long as this handle and its copies unpickled in
        # this process (they share the key and the cache)
        _hold(self)

    def __getstate__(self) -> dict[str, Any]:
        st = dict(self.__dict__)
        mod = self.module
        if any(p.device.type != "cpu" for p in mod.parameters()):
            mod = copy.deepcopy(mod).to("cpu")  # a worker moves its own copy to its device once
        st["module"] = mod
        st.pop("threads", None)  # a worker process keeps its own thread count
        return st

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.threads = torch.get_num_threads()
        _hold(self)

    def runtime(self) -> tuple[nn.Module, threading.Lock, torch.device, torch.dtype]:
        """The module on its device (moved there once per process), its lock, device, dtype.

        Also sets the calling thread's torch thread count to the handle's (OpenMP keeps one
        per thread, and dask's threads start with the process default).
        """
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        hit = _CACHE.get(self.key)
        if hit is not None:
            return hit
        with _CACHE_LOCK:
            hit = _CACHE.get(self.key)
            if hit is None:
                dev = resolve_device(self.device)
                dtype = resolve_precision(self.precision, dev, self.info.half_safe, warn=False)  # warned in __init__
                # eval mode, as any inference; the parameters are not frozen (forward passes
                # run under inference_mode), so a caller's module can go on training
                mod = self.module.to(dev).eval()
                hit = (mod, threading.Lock(), dev, dtype)
                _CACHE[self.key] = hit
        return hit

    def weights_digest(self) -> str:
        """SHA-256 of the network's tensors: identifies the weights a job was run with."""
        import hashlib

        h = hashlib.sha256(type(self.module).__name__.encode())
        for k, v in self.module.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    def release(self) -> None:
        """Drop this process's cached copy (frees GPU memory)."""
        _drop(self.key)

    def compiled(self) -> Any:
        """This process's ``torch.compile`` of the network; None when not asked for or it failed."""
        if not self.compile:
            return None
        if self.key not in _COMPILED:
            module = self.runtime()[0]
            with _CACHE_LOCK:
                if self.key not in _COMPILED:
                    try:
                        _COMPILED[self.key] = torch.compile(module)
                    except Exception as e:  # no compiler backend on this platform, an old torch, ...
                        self._compile_failed(e)
        return _COMPILED.get(self.key)

    def stager(self) -> HostStaging | None:
        """This process's host buffers for the device transfers (None: copy directly)."""
        dev = self.runtime()[2]
        if not (self.staging if self.staging is not None else dev.type == "cuda"):
            return None
        st = _STAGING.get(self.key)
        if st is None:
            st = _STAGING.setdefault(self.key, HostStaging(pin=dev.type == "cuda"))
        return st

    def _compile_failed(self, error: BaseException) -> None:
        warn_compile_failed(error, "running it uncompiled", subject=self.info.name)
        _COMPILED[self.key] = None

    def _run(self, fn: Any, module: nn.Module, x: torch.Tensor, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The forward pass: compiled when there is a compiled network, else eager."""
        if fn is not None:
            try:
                return _forward(fn, x, dev, dtype, self.ensemble)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # compilation happens on the first calls; a model error recurs eagerly
                self._compile_failed(e)
        return _forward(module, x, dev, dtype, self.ensemble)

    def _finite(self, out: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """``out``, or :class:`NonFiniteOutputError` when the network made NaN/Inf of ordinary
        input (normalized values within a few thousand): damaged weights, or a half-precision
        overflow.  A tile holding an extreme outlier (an undeclared sentinel such as -3.4e38)
        may overflow in attention; it comes out NaN, as it did before this check."""
        if np.isfinite(out).all() or not np.isfinite(batch).all() or float(np.abs(batch).max()) > 1e4:
            return out
        half = self.runtime()[3] in (torch.float16, torch.bfloat16)
        cause = (f"{self.precision} overflowed (use precision='bf16' or 'fp32'), or its weights are damaged" if half
                 else "its weights are damaged")
        raise NonFiniteOutputError(f"the network produced NaN or infinite values from finite input "
                                   f"({self.info.name}, precision {self.precision}): {cause}")

    def infer(self, batch: np.ndarray, eager: bool = False) -> np.ndarray:
        """Run one float32 batch ``(B, C, h, w)`` and return float32 ``(B, C_out, s*h, s*w)``.

        Forward passes are serialized per process: the network itself uses all cores
        (or the GPU), while other threads read, prepare and write chunks meanwhile.
        ``eager`` skips ``torch.compile`` (memory probes).
        """
        module, lock, dev, dtype = self.runtime()
        fn = None if eager else self.compiled()
        stage = self.stager()
        with lock, torch.inference_mode():
            if stage is not None:
                timer = stage.timer(dev)
                y = self._run(fn, module, stage.to_device(batch, dev), dev, dtype)
                pending = stage.start_to_host(y.float(), 0, timer)
                out = pending.wait()
                self.forward_seconds += pending.seconds
            else:
                t0 = time.perf_counter()
                out = self._run(fn, module, torch.from_numpy(batch).to(dev), dev, dtype).float().cpu().numpy()
                self.forward_seconds += time.perf_counter() - t0
            self.forward_calls += 1
        return self._finite(out, batch)

    def infer_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """:meth:`infer` over a stream of batches, pipelined where there is a device to overlap.

        With host staging (CUDA), batch ``k + 1`` is taken from ``batches`` (the caller
        cuts its tiles meanwhile), copied and queued while batch ``k`` computes, and the
        caller blends result ``k`` while ``k + 1`` computes.  The forward lock is held
        until the stream is consumed.  Without staging (CPU) this is ``map(infer, batches)``.
        """
        stage = self.stager()
        if stage is None:
            for b in batches:
                yield self.infer(b)
            return
        module, lock, dev, dtype = self.runtime()
        fn = self.compiled()
        pending: tuple[Pending, np.ndarray] | None = None
        slot = 0
        with lock, torch.inference_mode():
            for b in batches:
                timer = stage.timer(dev)
                y = self._run(fn, module, stage.to_device(b, dev, slot), dev, dtype)
                queued = stage.start_to_host(y.float(), slot, timer)
                if pending is not None:
                    yield self._collect(*pending)
                pending, slot = (queued, b), (slot + 1) % len(stage.inp)
            if pending is not None:
                yield self._collect(*pending)

    def _collect(self, pending: Pending, batch: np.ndarray) -> np.ndarray:
        out = pending.wait()
        self.forward_seconds += pending.seconds
        self.forward_calls += 1
        return self._finite(out, batch)


def warn_compile_failed(error: BaseException, fallback: str, subject: str | None = None) -> None:
    """Log and warn (:class:`CompileFallbackWarning`) that ``torch.compile`` failed with ``error`` and what runs instead."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    msg = f"torch.compile failed{f' for {subject}' if subject else ''} ({type(error).__name__}: {first_line}); {fallback}"
    log.warning(msg)
    warn(msg, CompileFallbackWarning)


#: The 8 orientations of the square: (quarter turns, mirrored left-right afterwards).
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, flip) for k in range(4) for flip in (False, True))


def self_ensemble(fn: Any, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``fn`` over the 8 orientations of ``x``, each output turned back (float32).

    Valid for every task here: the mask channels of inpainting and demosaicing turn with
    the image, so a turned Bayer mosaic arrives with its (turned) pattern.  A network that
    turns or mirrors its inputs itself would repeat some orientations exactly; it names the
    distinct ones (``ensemble_orientations``: PSAL with ``gap_rows`` the 4 that
    keep rows as rows, a GRL demosaicer that mirrors to RGGB upright and quarter-turned),
    and only those run: the same mean at a fraction of the cost.  Such a network may name
    one-pixel shifts that make its repeated passes differ again (``ensemble_shifts``, see
    :func:`shifted`); each orientation then runs once per shift.  An odd height or width
    runs all 8 orientations unshifted (mirroring an odd-sized mosaic keeps its pattern, so
    the GRL network itself sees the mirrored image).
    """
    odd = x.shape[-1] % 2 or x.shape[-2] % 2
    orientations = (None if odd else getattr(fn, "ensemble_orientations", None)) or DIHEDRAL
    moves = (None if odd else getattr(fn, "ensemble_shifts", None)) or ()
    shifts = ((0, 0), *(m for m in moves if tuple(m) != (0, 0)))  # unmoved first: every pixel has a pass
    acc: torch.Tensor | None = None
    count: torch.Tensor | None = None
    for dy, dx in shifts:
        for k, flip in orientations:
            z = torch.rot90(shifted(x, dy, dx), k, (-2, -1))
            y = fn(z.flip(-1) if flip else z).float()
            y = torch.rot90(y.flip(-1) if flip else y, -k, (-2, -1))
            if acc is None or count is None:
                acc, count = torch.zeros_like(y), y.new_zeros(y.shape[-2:])
            s = y.shape[-1] // x.shape[-1]  # output pixels per input pixel (super-resolution)
            h, w = y.shape[-2] - dy * s, y.shape[-1] - dx * s
            acc[..., :h, :w] += y[..., dy * s:, dx * s:]  # moved back: the image's last rows/columns are missing
            count[:h, :w] += 1
    assert acc is not None and count is not None
    return acc / count


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved ``dy`` rows down and ``dx`` columns right, at the same size.

    The rows and columns that come in at the top and left are reflected (row ``-1`` is row
    1, which keeps a Bayer pattern's parity: a moved RGGB mosaic reads GBRG, GRBG or BGGR
    from its corner); those that go out at the bottom and right are dropped, so the moved
    view gives no output for the image's last ``dy`` rows and ``dx`` columns.
    """
    if not (dy or dx):
        return x
    mode = "reflect" if min(x.shape[-2:]) > max(dy, dx) else "replicate"
    return F.pad(x, (dx, 0, dy, 0), mode=mode)[..., : x.shape[-2], : x.shape[-1]]


def _forward(fn: Any, x: torch.Tensor, dev: torch.device, dtype: torch.dtype, ensemble: bool = False) -> torch.Tensor:
    """``fn(x)`` (or its :func:`self_ensemble`), under autocast when the compute dtype is not float32."""
    run = (lambda t: self_ensemble(fn, t)) if ensemble else fn
    if dtype != torch.float32:
        with torch.autocast(device_type=dev.type, dtype=dtype):
            return run(x)
    return run(x)
