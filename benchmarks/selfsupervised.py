"""Self-supervised denoising of a real noisy movie, trained on that movie alone.

    python benchmarks/selfsupervised.py --data ../shared/data [--steps 400] [--lr 5e-4] [--methods neighbor2neighbor blind-spot sure] [--ensemble]
    python benchmarks/selfsupervised.py --data ../shared/data --from napari_attnrestore/weights/denoise-acla-tiny-selfsup.safetensors

The user's workflow with no clean image: ``ar.train(movie, mode="self-supervised")`` on the
real bright-field movie (5 noisy frames), then ``ar.restore`` of every frame through the
engine.  There is no clean image, so each frame is scored against the mean of the other
frames with the noise floor subtracted
(:func:`napari_attnrestore.training.evaluate.frame_scores`), next to BM3D at the noise level
measured from the frame differences.  Prints the estimated PSNR (dB) and the training time.

``--from`` starts from a weight instead of a fresh network (printed before and after the
fine-tuning); with a weight that was itself trained self-supervised (its card says
``clean_images_used: false``) no clean image enters anywhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import napari_attnrestore as ar
from napari_attnrestore.benchmarking import fine_tune
from napari_attnrestore.training import evaluate as ev

MOVIE = "samples/brightfield_2dt_uint16.tif"


def bm3d_frames(frames: np.ndarray) -> float:
    """BM3D's estimated PSNR on the movie, at the noise level measured from frame differences."""
    from napari_attnrestore.tasks.denoise import bm3d_baseline

    lo, hi = np.percentile(frames, (0.1, 99.9))
    sigma = ev.frame_noise_sigma(frames) / (hi - lo) * 255
    return ev.frame_scores(lambda x: bm3d_baseline((x - lo) / (hi - lo), sigma) * (hi - lo) + lo, frames)["psnr"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (lower it when fine-tuning with --from)")
    p.add_argument("--methods", nargs="+", default=["neighbor2neighbor", "blind-spot"])
    p.add_argument("--no-bm3d", action="store_true")
    p.add_argument("--ensemble", action="store_true", help="also restore with the x8 self-ensemble (8 times the compute)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--from", dest="start", default=None, help="fine-tune this weight instead of a fresh network")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    import tifffile

    path = a.data / MOVIE
    if not path.exists():
        print(f"selfsupervised.py: {path} not found", file=sys.stderr)
        return 2
    raw = tifffile.imread(path)
    frames = raw.astype(np.float32)
    print(f"{path.name}: {frames.shape}, noise {ev.frame_noise_sigma(frames):.2f} counts (from frame differences)")
    print(f"noisy input                    {ev.frame_scores(lambda x: x, frames)['psnr_in']:.2f} dB")
    if not a.no_bm3d:
        print(f"BM3D (measured sigma)          {bm3d_frames(frames):.2f} dB")
    if a.start:
        start = ar.load_model(a.start, task="denoise")  # loaded once for the 5 frames; training loads its own copy
        card = getattr(start, "card", {})
        print(f"clean images used to train {Path(a.start).name}: {card.get('training', {}).get('clean_images_used', 'not recorded')}")
        score = ev.frame_scores(lambda x: np.asarray(ar.restore(x, model=start, device="cpu").compute()), frames)
        print(f"{Path(a.start).stem + ' as shipped':30s} {score['psnr']:.2f} dB")
    for method in a.methods:
        t0 = time.perf_counter()
        model = fine_tune(raw, method, a.start, steps=a.steps, lr=a.lr, batch=a.batch, patch=a.patch)
        dt = time.perf_counter() - t0
        score = ev.frame_scores(lambda x, m=model: np.asarray(ar.restore(x, model=m, device="cpu").compute()), frames)
        print(f"{method:30s} {score['psnr']:.2f} dB  ({a.steps} steps, batch {a.batch}, patch {a.patch}, lr {a.lr:g}, "
              f"trained in {dt:.0f} s on {torch.get_num_threads()} threads)", flush=True)
        if a.ensemble:
            score = ev.frame_scores(
                lambda x, m=model: np.asarray(ar.restore(x, model=m, device="cpu", ensemble=True).compute()), frames)
            print(f"{method + ', x8 self-ensemble':30s} {score['psnr']:.2f} dB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
