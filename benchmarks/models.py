"""Cost of every architecture: parameters, multiply-adds per pixel, CPU speed, peak memory.

    python benchmarks/models.py [--sizes 256 1024] [--threads 2] [--archs hat grl ...]

For each registered architecture (its tiny preset, 1-channel denoising head) this prints
parameters, multiply-adds per input pixel (torch's FLOP counter at 256x256, /2), and for
each size the CPU forward throughput (Mpx/s, best of 2 after a warm-up) and the peak RSS
of a fresh process running that forward pass (so every number is measured alone).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(arch: str, size: int, threads: int, preset: str) -> dict:
    import torch

    import napari_attnrestore as ar

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ar.build_model(arch, task="denoise", preset=preset).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(1, 1, size, size)
    macs = None
    with torch.inference_mode():
        if size == 256:
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
    return {"arch": arch, "size": size, "params": params, "macs_per_px": macs, "mpx_s": size * size / 1e6 / best, "peak_rss_mb": peak}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--archs", nargs="*", default=None)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.child[0], int(a.child[1]), a.threads, a.preset)))
        return 0
    import napari_attnrestore as ar

    archs = a.archs or ar.list_architectures()
    rows = []
    for arch in archs:
        row: dict = {"arch": arch}
        for size in sorted(a.sizes, key=lambda s: s != 256):
            r = subprocess.run([sys.executable, __file__, "--child", arch, str(size), "--threads", str(a.threads),
                                "--preset", a.preset], capture_output=True, text=True)
            if r.returncode != 0:
                row[f"{size}"] = "failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
                continue
            m = json.loads(r.stdout.strip().splitlines()[-1])
            row["params"] = m["params"]
            if m["macs_per_px"] is not None:
                row["macs_per_px"] = m["macs_per_px"]
            row[f"{size}"] = f"{m['mpx_s']:.3f} Mpx/s, {m['peak_rss_mb']:.0f} MB"
        rows.append(row)
    cols = ["arch", "params", "macs_per_px"] + [str(s) for s in a.sizes]
    head = ["arch", "params", "MACs/px"] + [f"CPU {s}x{s} ({a.threads} threads)" for s in a.sizes]
    fmt = lambda v: f"{v / 1e3:.1f}k" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)  # noqa: E731
    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for r in rows:
            print("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
    else:
        print("  ".join(f"{h:>24s}" for h in head))
        for r in rows:
            print("  ".join(f"{fmt(r.get(c, '')):>24s}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
