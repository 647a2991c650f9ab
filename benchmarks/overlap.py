"""Tile overlap against speed and quality: how much context a shipped denoiser needs.

    python benchmarks/overlap.py --data ../shared/data [--model default:denoise] [--overlaps 0 16 32 48 64]
                                 [--sigma 25] [--size 1024] [--threads 2]

The default overlap (and chunk halo) of a model is its whole receptive field, so chunked
output equals a whole-image pass; a smaller ``--overlap`` computes fewer pixels twice.  For
each overlap this prints Set12 PSNR at ``--sigma`` (unclipped Gaussian noise, seed 0, the
engine's default 256-px tiles: the 512-px pictures are cut into four overlapping tiles),
the largest difference from the default overlap's result, and the throughput on a
``--size`` square picture (best of two passes after a warm-up).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

#: the shared data beside this checkout (``../shared/data`` from its root), wherever the script is run from
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _psnr(clean: np.ndarray, restored: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((clean.astype(np.float64) - restored) ** 2)))


def main(argv: list[str] | None = None) -> int:
    import torch
    from skimage import io

    import napari_attnrestore as ar

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED_DATA)
    p.add_argument("--model", default="default:denoise")
    p.add_argument("--overlaps", type=int, nargs="+", default=[0, 16, 32, 48, 64])
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    files = sorted((a.data / "bench" / "set12").glob("*.png"))
    if not files:
        p.error(f"no Set12 pictures under {a.data / 'bench' / 'set12'}")
    rng = np.random.default_rng(0)
    clean = [io.imread(f).astype(np.float32) for f in files]
    noisy = [c + rng.normal(0, a.sigma, c.shape).astype(np.float32) for c in clean]
    model = ar.load_model(a.model)
    reps = a.size // 512 + 1
    picture = np.tile(noisy[-1], (reps, reps))[: a.size, : a.size]
    default = getattr(model, "halo", None)
    print(f"{a.model}: default overlap {default} px; Set12 sigma {a.sigma:g}; {a.size}^2 picture, "
          f"{a.threads} threads")
    print(f"{'overlap':>10} {'Set12 PSNR':>11} {'max |diff|':>11} {'Mpx/s':>8}")
    reference = None
    for overlap in [None, *a.overlaps]:
        outs = [np.asarray(ar.restore(n, model=model, overlap=overlap).compute()) for n in noisy]
        reference = outs if reference is None else reference
        diff = max(float(np.abs(o - r).max()) for o, r in zip(outs, reference, strict=True))
        psnr = float(np.mean([_psnr(c, o) for c, o in zip(clean, outs, strict=True)]))
        ar.restore(picture[:256, :256], model=model, overlap=overlap).compute()  # warm-up
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            ar.restore(picture, model=model, overlap=overlap).compute()
            best = min(best, time.perf_counter() - t0)
        label = f"{default} (default)" if overlap is None else str(overlap)
        print(f"{label:>10} {psnr:11.3f} {diff:11.2f} {a.size * a.size / best / 1e6:8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
