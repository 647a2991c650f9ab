"""How much noise a denoiser leaves on flat regions, grey level by grey level.

    python benchmarks/flat_levels.py [--models denoise-acla-tiny denoise-hat-tiny ...] [--sigmas 0.005 0.01 0.02]
    python benchmarks/flat_levels.py --models mine.safetensors --markdown

A quantitative user's first check of a denoiser: a flat field (a cell-free background,
the dark of a fluorescence image) at every level of the normalized range, with Gaussian
noise of a few sigmas, restored through the engine (``normalize='none'``, so the level
is the one the network sees; under the default percentile scaling a fluorescence
background lands near 0.02-0.05).  For each model, level and sigma it prints the noise
left (output sd / input sigma: 0 is perfectly flat, 1 is untouched) and the bias of the
mean (in input sigmas; a flat field's mean should stay where it is), then each model's
worst level.  The Set12 tables score textured photos; this catches a network that
denoises photos well but lets the noise of one flat grey level through.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import torch

import napari_attnrestore as ar

LEVELS = (0.0, 0.01, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.1, 0.2, 0.5, 0.9)
SIDE, BORDER = 128, 16


def flat_field_scores(model: object, levels: tuple[float, ...], sigmas: tuple[float, ...],
                      seed: int = 0) -> dict[tuple[float, float], tuple[float, float]]:
    """``{(level, sigma): (noise left, bias)}``, both in units of ``sigma``, scored inside a
    ``BORDER``-pixel margin of a ``SIDE``-pixel flat field restored through the engine."""
    rng = np.random.default_rng(seed)
    scores = {}
    # a flat field fills a sliver of [0, 1], which the engine warns about: here it is the point
    warnings.filterwarnings("ignore", message="the image's values span", category=ar.AttnRestoreWarning)
    for level in levels:
        for sigma in sigmas:
            noisy = (level + rng.normal(0.0, sigma, (SIDE, SIDE))).astype(np.float32)
            out = np.asarray(ar.restore(noisy, task="denoise", model=model, normalize="none").compute())
            inner = out[BORDER:-BORDER, BORDER:-BORDER].astype(np.float64)
            scores[(level, sigma)] = (float(inner.std()) / sigma, (float(inner.mean()) - level) / sigma)
    return scores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None,
                   help="shipped weight names or .safetensors paths (default: every shipped denoiser)")
    p.add_argument("--sigmas", nargs="+", type=float, default=[0.005, 0.01, 0.02],
                   help="noise sigmas on the normalized [0, 1] scale (0.01 is 2.55 of 255)")
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    names = a.models or [w["name"] for w in ar.list_models() if w.get("task") == "denoise"]
    sigmas = tuple(a.sigmas)
    sep = " | " if a.markdown else "  "
    for name in names:
        model = ar.load_model(name)
        scores = flat_field_scores(model, LEVELS, sigmas)
        head = ["level", *(f"left σ={s:g}" for s in sigmas), *(f"bias σ={s:g}" for s in sigmas)]
        print(f"\n{name}: noise left (output sd / sigma) and bias (/ sigma) on flat fields")
        print(("| " if a.markdown else "") + sep.join(head) + (" |" if a.markdown else ""))
        if a.markdown:
            print("|" + "---|" * len(head))
        for level in LEVELS:
            cells = [f"{level:g}", *(f"{scores[(level, s)][0]:.2f}" for s in sigmas),
                     *(f"{scores[(level, s)][1]:+.2f}" for s in sigmas)]
            print(("| " if a.markdown else "") + sep.join(cells) + (" |" if a.markdown else ""))
        (level, sigma), (left, _) = max(scores.items(), key=lambda kv: kv[1][0])
        bias = max(abs(b) for _, b in scores.values())
        print(f"worst: {left:.2f} of the noise left at level {level:g}, sigma {sigma:g}; largest bias {bias:.2f} sigma")
    return 0


if __name__ == "__main__":
    sys.exit(main())
