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
from napari_attnrestore import zoo
from napari_attnrestore.training import evaluate as ev


def flat_field_scores(model: object, sigmas: tuple[float, ...] = ev.FLAT_SIGMAS, seed: int = 0) -> dict[tuple[float, float], tuple[float, float]]:
    """:func:`~napari_attnrestore.training.evaluate.flat_field_scores` through the engine
    (``normalize='none'``, so a level is the one the network sees)."""
    # a flat field fills a sliver of [0, 1], which the engine warns about: here it is the point
    warnings.filterwarnings("ignore", message="the image's values span", category=ar.AttnRestoreWarning)
    return ev.flat_field_scores(
        lambda noisy: np.asarray(ar.restore(noisy, task="denoise", model=model, normalize="none").compute()),
        ev.FLAT_LEVELS, sigmas, seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None,
                   help="shipped weight names or .safetensors paths (default: every shipped denoiser)")
    p.add_argument("--sigmas", nargs="+", type=float, default=list(ev.FLAT_SIGMAS),
                   help="noise sigmas on the normalized [0, 1] scale (0.01 is 2.55 of 255)")
    p.add_argument("--record", action="store_true",
                   help="write each shipped weight's worst figures into its model card (metrics.flat_fields, "
                        "which zoo.choose_defaults weighs between denoisers tied on Set12); default sigmas only")
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    names = a.models or [w["name"] for w in ar.list_models() if w.get("task") == "denoise"]
    sigmas = tuple(a.sigmas)
    if a.record and sigmas != ev.FLAT_SIGMAS:
        p.error(f"--record keeps the cards' protocol: sigmas {' '.join(map(str, ev.FLAT_SIGMAS))}")
    sep = " | " if a.markdown else "  "
    for name in names:
        model = ar.load_model(name)
        scores = flat_field_scores(model, sigmas)
        head = ["level", *(f"left σ={s:g}" for s in sigmas), *(f"bias σ={s:g}" for s in sigmas)]
        print(f"\n{name}: noise left (output sd / sigma) and bias (/ sigma) on flat fields")
        print(("| " if a.markdown else "") + sep.join(head) + (" |" if a.markdown else ""))
        if a.markdown:
            print("|" + "---|" * len(head))
        for level in ev.FLAT_LEVELS:
            cells = [f"{level:g}", *(f"{scores[(level, s)][0]:.2f}" for s in sigmas),
                     *(f"{scores[(level, s)][1]:+.2f}" for s in sigmas)]
            print(("| " if a.markdown else "") + sep.join(cells) + (" |" if a.markdown else ""))
        worst = ev.flat_field_summary(scores)
        print(f"worst: {worst['noise_left']:.2f} of the noise left at level {worst['level']:g}, sigma "
              f"{worst['sigma']:g}; largest bias {worst['bias']:.2f} sigma")
        if a.record:
            print(f"recorded in {zoo.record_metric(name, 'flat_fields', worst)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
