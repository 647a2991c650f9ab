"""Measuring: raw network cost per architecture, and the whole pipeline per model.

:func:`table` (``attnrestore models --measure``, ``benchmarks/models.py``): parameters,
multiply-adds per pixel, CPU speed and peak memory of one whole-image forward pass.
:func:`bench` (``attnrestore bench``, ``benchmarks/pipeline.py``, ``benchmarks/memory.py``):
Mpx/s, peak RSS, peak GPU memory and pipeline efficiency of a zarr-to-zarr restoration.
Each measurement runs in a fresh subprocess so that its peak RSS is its own.
:func:`fine_tune` is the self-supervised workflow that ``benchmarks/selfsupervised.py`` and
``benchmarks/quality.py`` score on the real movie.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def measure(arch: str, size: int, threads: int = 1, preset: str = "tiny") -> dict[str, Any]:
    """Build ``arch`` (1-channel denoising head) and time a ``size x size`` forward pass in this process."""
    import torch

    from .models import build_model

    torch.manual_seed(0)
    return {"arch": arch, **measure_model(build_model(arch, task="denoise", preset=preset), size, threads)}


def measure_model(model: Any, size: int, threads: int = 1) -> dict[str, Any]:
    """Parameters, multiply-adds per input pixel (at sizes up to 256) and CPU forward Mpx/s
    (best of 2 after a warm-up) of ``model`` on a random ``size x size`` input."""
    import torch

    torch.set_num_threads(threads)
    model = model.eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(1, int(getattr(model, "in_channels", 1)), size, size)
    macs = None
    with torch.inference_mode():
        if size <= 256:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            from torch.utils.flop_counter import FlopCounterMode

            # the counter sees scaled_dot_product_attention only in its math form (on the CPU
            # the fused kernels count 0: HAT's window attention went uncounted)
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
                model(x)
            macs = fc.get_total_flops() / 2 / (size * size)
        model(x)  # warm-up
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "params": params, "macs_per_px": macs, "mpx_s": size * size / 1e6 / best, "peak_rss_mb": peak}


def measure_isolated(arch: str, size: int, threads: int = 1, preset: str = "tiny") -> dict[str, Any]:
    """:func:`measure` in a fresh Python process (peak memory of that run alone)."""
    code = (
        "import json, sys; from napari_attnrestore.benchmarking import measure; "
        f"print(json.dumps(measure({arch!r}, {size}, {threads}, {preset!r})))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{arch} at {size}: " + (r.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(r.stdout.strip().splitlines()[-1])


def full_attention_gb(arch: str, size: int, preset: str = "tiny") -> float | None:
    """Memory one full non-local attention map would need at the resolution where ``arch``
    attends (PSAL: its bottleneck, ``2 ** (levels - 1)`` times coarser after its pixel-unshuffle)."""
    if arch != "psal":
        return None
    from .models import build_model

    m = build_model(arch, task="denoise", preset=preset)
    n = (size // (2**m.levels * m.cfg.unshuffle)) ** 2
    return n * n * 4 / 1e9


def table(archs: list[str], sizes: list[int], threads: int = 1, preset: str = "tiny", markdown: bool = False) -> str:
    """Measure every architecture at every size; returns the printed table."""
    rows = []
    for arch in archs:
        row: dict[str, Any] = {"arch": arch}
        for size in sorted(sizes, key=lambda s: s > 256):
            try:
                m = measure_isolated(arch, size, threads, preset)
            except RuntimeError as e:
                row[str(size)] = f"failed ({e})"
                continue
            row["params"] = f"{m['params'] / 1e3:.0f}k"
            if m["macs_per_px"] is not None:
                row["macs"] = f"{m['macs_per_px'] / 1e3:.0f}k"
            row[str(size)] = f"{m['mpx_s']:.3f} Mpx/s, {m['peak_rss_mb']:.0f} MB"
        full = full_attention_gb(arch, max(sizes), preset)
        row["note"] = f"full non-local attention at {max(sizes)}px: {full:,.0f} GB" if full else ""
        rows.append(row)
    cols = ["arch", "params", "macs", *[str(s) for s in sizes], "note"]
    head = ["arch", "params", "MACs/px", *[f"CPU {s}x{s} ({threads} thr): speed, peak RSS" for s in sizes], "note"]
    return render_table(head, [[r.get(c, "") for c in cols] for r in rows], markdown)


def render_table(head: list[str], rows: list[list[Any]], markdown: bool = False) -> str:
    """A plain-text (aligned columns) or markdown table."""
    cells = [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


# --- the whole pipeline: zarr in, restored OME-Zarr out -------------------------------

#: Name of the cheap reference module in :func:`bench` (a fixed 3x3 mean filter).
CHEAP = "conv3x3"


def conv3x3() -> Any:
    """A fixed 3x3 mean filter: what the pipeline costs when the network costs almost nothing."""
    from .models.reference import MeanFilter3x3

    return MeanFilter3x3()


def make_input(path: str | Path, size: int, chunk: int = 1024, channels: int = 0) -> None:
    """A ``size x size`` uint16 zarr (``channels`` > 0: a trailing channel axis), written chunk by chunk.

    A smooth pattern plus noise, so that denoisers and percentile statistics see an image.
    """
    import numpy as np
    import zarr

    chunk = min(chunk, size)
    trail = (channels,) if channels else ()
    arr = zarr.create_array(str(path), shape=(size, size, *trail), chunks=(chunk, chunk, *trail), dtype="uint16",
                            overwrite=True)
    rng = np.random.default_rng(0)
    for y in range(0, size, chunk):
        for x in range(0, size, chunk):
            yy, xx = np.mgrid[y : min(y + chunk, size), x : min(x + chunk, size)].astype(np.float32)
            base = 20000 + 10000 * np.sin(yy / 97.0) * np.cos(xx / 131.0)
            if channels:
                base = base[..., None] * np.linspace(0.8, 1.2, channels, dtype=np.float32)
            arr[y : y + chunk, x : x + chunk] = (base + rng.normal(0, 800, base.shape)).astype(np.uint16)


def model_spec(name: str) -> tuple[Any, str, int | None]:
    """The model to load for a bench name, its task and SR scale."""
    if name == CHEAP:
        return conv3x3(), "denoise", None
    from .zoo import list_models

    card = next((m for m in list_models() if m["name"] == name), None)
    if card is None:  # a checkpoint file or default:<task>: the loaded model's card names its task
        from .api import load_model

        net = load_model(name)
        card = getattr(net, "card", None) or {"task": "sr" if getattr(net, "scale", 1) > 1 else "denoise",
                                               "scale": getattr(net, "scale", 1)}
        name = net
    return name, card.get("task", "denoise"), card.get("scale") if card.get("task") == "sr" else None


def run_pipeline(model: str, size: int, workdir: str | Path, device: str = "auto", precision: str = "fp32",
                 chunks: int = 1024, tile: Any = None, batch: Any = None, compile: bool = False,
                 output: str = "zarr", **options: Any) -> dict[str, Any]:
    """Stream a ``size x size`` uint16 zarr through ``model`` into OME-Zarr (``output="tif"``:
    a tiled TIFF, as ``attnrestore restore IN OUT.tif`` writes it), in this process.

    ``model`` is :data:`CHEAP`, a shipped weight's name or a checkpoint.  One tiny forward
    pass warms the network up first (device transfer, kernel selection) and is not counted;
    with ``compile=True`` compiling is counted (a user's run pays it too).
    Returns the measurements: Mpx/s, wall and forward seconds, pipeline efficiency (forward
    time over wall time), peak RSS of this process and peak GPU memory (CUDA only).
    """
    import shutil

    import numpy as np
    import torch

    import napari_attnrestore as ar

    from .api import resolve_model
    from .engine.autotune import peak_rss_bytes

    module, task, scale = model_spec(model)
    handle = resolve_model(module, task, scale, device, precision, compile=compile)
    info = handle.info
    image_channels = info.in_channels - {"inpaint": 1, "demosaic": 3}.get(task, 0)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / f"in_{size}_{image_channels if image_channels > 1 else 0}.zarr"
    if not src.exists():
        make_input(src, size, channels=image_channels if image_channels > 1 else 0)
    dev = handle.runtime()[2]
    m = max(1, info.multiple_of)
    warm = -(-32 // m) * m
    handle.infer(np.zeros((1, info.in_channels, warm, warm), np.float32), eager=True)  # compiling is part of the run
    handle.forward_seconds, handle.forward_calls = 0.0, 0
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    extra: dict[str, Any] = {"nodata": 0} if task == "inpaint" else {}
    common = dict(task=task, model=handle, scale=scale, chunks=chunks, tile=tile, batch=batch, **extra, **options)
    if output not in ("zarr", "tif"):
        raise ValueError(f"output must be 'zarr' or 'tif', got {output!r}")
    dst = workdir / f"out_{size}.{'ome.zarr' if output == 'zarr' else 'tif'}"
    t0 = time.perf_counter()
    if output == "tif":
        from .io import write_tiff

        lazy = ar.restore(str(src), **common)
        write_tiff(lazy, dst, axes="yxc"[: lazy.ndim], overwrite=True, pyramid=0)
        wall, used_tile = time.perf_counter() - t0, tile if tile is not None else info.tile  # (None: 256)
    else:
        from .engine.store import job_state

        ar.restore_to_zarr(str(src), dst, pyramid=False, overwrite=True, **common)
        wall = time.perf_counter() - t0
        used_tile = job_state(dst).get("job", {}).get("tile")  # the engine's choice when tile was None
    if dst.is_dir():
        shutil.rmtree(dst, ignore_errors=True)
    else:
        dst.unlink(missing_ok=True)
    return {
        "model": model, "size": size, "device": str(dev), "dtype": precision, "tile": used_tile, "compile": compile,
        "output": output,
        "mpx_s": size * size / 1e6 / wall, "wall_s": wall, "forward_s": handle.forward_seconds,
        "forward_calls": handle.forward_calls, "efficiency": handle.forward_seconds / wall,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None,
    }


def run_pipeline_isolated(model: str, size: int, workdir: str | Path, **kw: Any) -> dict[str, Any]:
    """:func:`run_pipeline` in a fresh Python process (its peak RSS is that run's alone)."""
    args = json.dumps({"model": model, "size": size, "workdir": str(workdir), **kw})
    code = ("import json, sys; from napari_attnrestore.benchmarking import run_pipeline; "
            "print(json.dumps(run_pipeline(**json.loads(sys.argv[1]))))")
    r = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench(models: list[str], sizes: list[int], device: str = "auto", dtypes: tuple[str, ...] = ("fp32",),
          workdir: str | Path | None = None, isolate: bool = True, **kw: Any) -> list[dict[str, Any]]:
    """:func:`run_pipeline` for every model x size x dtype; a failed run is a row with ``error``."""
    import shutil
    import tempfile

    tmp = None
    if workdir is None:
        workdir = tmp = tempfile.mkdtemp(prefix="attnrestore-bench-")
    run = run_pipeline_isolated if isolate else run_pipeline
    rows = []
    try:
        for model in models:
            for dtype in dtypes:
                for size in sizes:
                    try:
                        rows.append(run(model, size, workdir, device=device, precision=dtype, **kw))
                    except Exception as e:  # one failing model (e.g. bf16 unsupported) does not stop the table
                        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                        rows.append({"model": model, "size": size, "device": device, "dtype": dtype, "error": msg})
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


BENCH_COLUMNS = ["model", "size", "device", "dtype", "tile", "Mpx/s", "wall s", "forward s", "efficiency", "peak RSS MB",
                 "peak GPU MB"]


def bench_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The rows of :func:`bench` as a table (:data:`BENCH_COLUMNS`)."""
    cells = []
    for r in rows:
        dtype = r["dtype"] + (" compiled" if r.get("compile") else "")
        head = [r["model"], f"{r['size']}x{r['size']}", r["device"], dtype, r.get("tile") or ""]
        if "error" in r:
            cells.append([*head, f"failed: {r['error']}", "", "", "", "", ""])
            continue
        gpu = "-" if r.get("peak_gpu_mb") is None else f"{r['peak_gpu_mb']:.0f}"
        cells.append([*head, f"{r['mpx_s']:.3f}", f"{r['wall_s']:.2f}", f"{r['forward_s']:.2f}",
                      f"{r['efficiency']:.2f}", f"{r['peak_rss_mb']:.0f}", gpu])
    return render_table(BENCH_COLUMNS, cells, markdown)


def fine_tune(raw: Any, method: str, start: Any = None, steps: int = 400, lr: float = 5e-4, batch: int = 8,
              patch: int = 64, log_every: int = 50) -> Any:
    """Self-supervised training on a movie's own noisy frames, seeded so that a rerun repeats.

    ``start`` is a weight to fine-tune (None: a fresh network); returns the trained model.
    """
    import torch

    from . import api
    from .training.session import train_to_end

    torch.manual_seed(0)
    return train_to_end(api.train(raw, mode="self-supervised", method=method, model=start, steps=steps, batch=batch,
                                  patch=patch, lr=lr, device="cpu", log_every=log_every))
