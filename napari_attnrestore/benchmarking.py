"""Cost of the architectures: parameters, multiply-adds per pixel, CPU speed, peak memory.

Used by ``attnrestore models --measure`` and ``benchmarks/models.py``.  Each (architecture,
size) runs in a fresh subprocess so that its peak RSS is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any


def measure(arch: str, size: int, threads: int = 1, preset: str = "tiny") -> dict[str, Any]:
    """Build ``arch`` (1-channel denoising head) and time a ``size x size`` forward pass in this process."""
    import torch

    from .models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(arch, task="denoise", preset=preset).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(1, 1, size, size)
    macs = None
    with torch.inference_mode():
        if size <= 256:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as fc:
                model(x)
            macs = fc.get_total_flops() / 2 / (size * size)
        model(x)  # warm-up
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"arch": arch, "size": size, "params": params, "macs_per_px": macs, "mpx_s": size * size / 1e6 / best,
            "peak_rss_mb": peak}


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


def full_attention_gb(arch: str, size: int) -> float | None:
    """Memory one full non-local attention map would need at the resolution where ``arch`` attends."""
    if arch != "psal":
        return None
    from .models import build_model

    m = build_model(arch, task="denoise")
    n = (size // getattr(m, "attention_stride", 2)) ** 2
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
        full = full_attention_gb(arch, max(sizes))
        row["note"] = f"full non-local attention at {max(sizes)}px: {full:,.0f} GB" if full else ""
        rows.append(row)
    cols = ["arch", "params", "macs", *[str(s) for s in sizes], "note"]
    head = ["arch", "params", "MACs/px", *[f"CPU {s}x{s} ({threads} thr): speed, peak RSS" for s in sizes], "note"]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    else:
        widths = [max(len(h), *(len(str(r.get(c, ""))) for r in rows)) for h, c in zip(head, cols, strict=True)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
        lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)) for r in rows]
    return "\n".join(lines)
