"""Seconds per training step of each recipe, eager and through ``torch.compile``.

    python benchmarks/training_speed.py recipes/denoise_csattn_tiny.json recipes/denoise_acla_tiny.json \
        --data ../shared/data [--threads 1] [--steps 8] [--precision bf16] [--markdown]

Each recipe's own network, patches, degradation and loss (``training.recipe.training_parts``)
run through the real training loop (AdamW, EMA, gradient clipping) on the CPU: a few
warm-up steps (which include compiling), then the mean time of ``--steps`` more.  The
first-step time is printed separately, so what compiling costs once is visible.  Nothing
is saved.  Use it to decide a recipe's ``train.compile`` and ``train.precision`` (``bf16``:
mixed precision, which pays on CPUs with bfloat16 instructions and on GPUs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from napari_attnrestore.training.loop import PRECISIONS, TrainConfig, fit
from napari_attnrestore.training.recipe import training_parts


def step_times(recipe: dict, data: Path, compile: bool, steps: int, warmup: int = 3,
               precision: str = "fp32") -> tuple[float, float]:
    """``(first step incl. compiling, mean later step)`` in seconds for one recipe."""
    cfg = replace(TrainConfig(**recipe["train"]), compile=compile, steps=warmup + steps, log_every=1,
                  checkpoint_every=10**9, precision=precision)
    model, sampler, make_pair, loss_fn = training_parts(recipe, data, cfg)
    stamps = [0.0]
    t0 = time.perf_counter()
    for ev in fit(model, sampler.sample, make_pair, cfg, loss_fn=loss_fn):
        if not ev.done:
            stamps.append(time.perf_counter() - t0)
    return stamps[1], (stamps[-1] - stamps[warmup]) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", type=Path, nargs="+")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="for every recipe")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for path in a.recipes:
        recipe = json.loads(path.read_text())
        eager = step_times(recipe, a.data, False, a.steps, precision=a.precision)
        compiled = step_times(recipe, a.data, True, a.steps, precision=a.precision)
        t = recipe["train"]
        rows.append((recipe["name"], f"{t['batch']} x {recipe['patch']}²", f"{eager[1]:.3f}", f"{compiled[1]:.3f}",
                     f"{eager[1] / compiled[1]:.2f}x", f"{compiled[0]:.0f}"))
        print(*rows[-1], sep="  ", file=sys.stderr, flush=True)
    head = ("recipe", "batch x patch", "eager s/step", "compiled s/step", "speed-up", "first compiled step s")
    print(f"training step on the CPU ({a.precision}), {a.threads} thread(s), torch {torch.__version__}")
    if a.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    else:
        for r in (head, *rows):
            print(f"{r[0]:28s} {r[1]:>14s} {r[2]:>13s} {r[3]:>16s} {r[4]:>9s} {r[5]:>22s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
