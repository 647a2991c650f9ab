"""The model zoo: every shipped weight with its cost and its quality.

    python benchmarks/zoo.py [--size 256] [--threads 1] [--choose-defaults] [--markdown]

Per weight: task, architecture, parameters, multiply-adds per input pixel and CPU forward
throughput (``napari_attnrestore.benchmarking.measure_model``, as ``benchmarks/models.py``),
GPU throughput when a GPU run recorded it in the card (``attnrestore bench`` on a GPU
machine), and the headline PSNR of its model card next to the classical baseline measured
with the same protocol and the published numbers (``benchmarks/quality.py`` prints every
setting through the engine).  ``--choose-defaults`` makes the best weight per task the
``default:<task>`` and records the comparison in the cards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quality import bm3d_set12

#: the shared data beside this checkout (``../shared/data`` from its root), wherever the script is run from
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    import napari_attnrestore as ar
    from napari_attnrestore import zoo
    from napari_attnrestore.benchmarking import measure_model, render_table
    from napari_attnrestore.training.data import load_folder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--choose-defaults", action="store_true")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--data", type=Path, default=SHARED_DATA, help="for BM3D on Set12 (cached)")
    a = p.parse_args(argv)
    if not (a.data / "bench" / "set12").is_dir():  # before minutes of measuring, not after
        p.error(f"{a.data / 'bench' / 'set12'} not found (BM3D's Set12 baseline); give --data")
    chosen = zoo.choose_defaults(write=a.choose_defaults)
    defaults = {v["name"]: k for k, v in chosen.items()}
    baseline = {"denoise": "BM3D", "sr": "bicubic", "demosaic": "Malvar 2004", "inpaint": "biharmonic"}
    rows = []
    for card in ar.list_models():
        m = measure_model(ar.load_model(card["name"]), a.size, a.threads)
        key, value = zoo.headline_metric(card)
        if card["task"] == "denoise":  # the classical denoiser, not the card's noisy-input figure
            base = bm3d_set12(load_folder(a.data / "bench" / "set12", gray=True), 25)
        else:
            base = card.get("metrics", {}).get(key, {}).get("psnr_in")
        gpu = card.get("speed", {}).get("gpu_mpx_s")
        task = card["task"] + (f" x{card['scale']}" if card.get("scale", 1) > 1 else "")
        rows.append([
            card["name"] + (" (default)" if card["name"] in defaults else ""), task, card["arch"],
            f"{m['params'] / 1e3:.0f}k", f"{m['macs_per_px'] / 1e3:.0f}k" if m["macs_per_px"] else "",
            f"{m['mpx_s']:.3f}", f"{gpu:.2f}" if gpu else "not measured", key,
            f"{value:.2f}" if value is not None else "", f"{baseline[card['task']]} {base:.2f}" if base is not None else "",
            zoo.trained_on(card),
        ])
    head = ["weight", "task", "arch", "params", "MACs/px", f"CPU Mpx/s ({a.threads} thr)", "GPU Mpx/s", "bench set",
            "PSNR", "baseline (here)", "trained on"]
    print(render_table(head, rows, markdown=a.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
