"""Image quality of the shipped weights next to classical baselines and published numbers.

    python benchmarks/quality.py --data ../shared/data [--no-bm3d] [--markdown]

The "input" column is the degraded image (denoising) or its bicubic upsampling (SR).

Denoising: Set12 with Gaussian noise (sigma 15, 25, 50; unclipped float noise drawn with
``numpy.random.default_rng(0)``, the DnCNN/SwinIR protocol).  Each shipped denoiser runs
through the real engine (``ar.restore``: chunks, tiles, halo, blending), so the numbers
are what users get.  SR: Set5 on the Y channel, border = scale, HR cropped to a
multiple of the scale and downsampled by antialiased bicubic.  PSNR in dB on [0, 1]
images, mean over the set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import napari_attnrestore as ar
from napari_attnrestore.tasks import psnr
from napari_attnrestore.training.data import load_folder

#: Set12 averages from the DnCNN paper (Zhang et al. 2017) and SwinIR (Liang et al. 2021).
PUBLISHED_SET12 = {
    15: {"BM3D": 32.37, "DnCNN": 32.86},
    25: {"BM3D": 29.97, "DnCNN": 30.44, "SwinIR": 31.01},
    50: {"BM3D": 26.72, "DnCNN": 27.18},
}


def noisy_set(images: list[np.ndarray], sigma: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(im + rng.standard_normal(im.shape) * sigma / 255.0).astype(np.float32) for im in images]


def bm3d_scores(clean: list[np.ndarray], noisy: list[np.ndarray], sigma: float, cache: Path | None) -> float:
    """BM3D (known sigma, as published) PSNR; cached on disk because it is slow."""
    key = f"set12_sigma{sigma:g}"
    store = json.loads(cache.read_text()) if cache and cache.exists() else {}
    if key in store:
        return store[key]
    from napari_attnrestore.tasks.denoise import bm3d_baseline

    val = float(np.mean([psnr(c, np.clip(bm3d_baseline(n, sigma), 0, 1)) for c, n in zip(clean, noisy, strict=True)]))
    if cache:
        store[key] = val
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(store, indent=1))
    return val


def model_scores(name: str, clean: list[np.ndarray], noisy: list[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR and throughput (Mpx/s) of a shipped model run through the engine."""
    model = ar.load_model(name)
    t0, px, vals = time.perf_counter(), 0, []
    for c, n in zip(clean, noisy, strict=True):
        out = ar.restore(n, model=model, normalize="none", device="cpu").compute()
        vals.append(psnr(c, np.clip(out, 0, 1)))
        px += n.size
    return float(np.mean(vals)), px / 1e6 / (time.perf_counter() - t0)


def denoise_table(data: Path, use_bm3d: bool, sigmas: list[int]) -> list[dict]:
    clean = load_folder(data / "bench" / "set12", gray=True)
    models = [m["name"] for m in ar.list_models() if m["task"] == "denoise"]
    rows = []
    for sigma in sigmas:
        noisy = noisy_set(clean, sigma)
        row: dict = {"task": "denoise", "set": "Set12", "setting": f"sigma={sigma}"}
        row["input"] = float(np.mean([psnr(c, np.clip(n, 0, 1)) for c, n in zip(clean, noisy, strict=True)]))
        if use_bm3d:
            row["BM3D (here)"] = bm3d_scores(clean, noisy, sigma, Path(__file__).parent / ".cache" / "bm3d.json")
        for name in models:
            row[name], row[f"{name} Mpx/s"] = model_scores(name, clean, noisy)
        row["published"] = ", ".join(f"{k} {v}" for k, v in PUBLISHED_SET12.get(sigma, {}).items())
        rows.append(row)
    return rows


#: Set5 (Y channel, border = scale) from the SwinIR/HAT papers and the data README.
PUBLISHED_SET5 = {
    2: {"VDSR": 37.53, "SwinIR-light": 38.14, "HAT": 38.73},
    4: {"VDSR": 31.35, "SwinIR-light": 32.44, "GRL-T": 32.56, "HAT-S": 32.92},
}


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma in [16, 235]/255, as the SR literature measures PSNR."""
    return (16.0 + img[..., :3] @ np.array([65.481, 128.553, 24.966])) / 255.0


def sr_table(data: Path, scales: list[int]) -> list[dict]:
    """Set5 SR rows: bicubic input, every shipped SR model of that scale (run on Y), published."""
    from napari_attnrestore.tasks.sr import bicubic_baseline, downsample

    hr_images = [im[..., :3] if im.ndim == 3 else np.stack([im] * 3, -1) for im in load_folder(data / "bench" / "set5", gray=False)]
    rows = []
    for s in scales:
        row: dict = {"task": f"sr x{s}", "set": "Set5 (Y)", "setting": f"border {s}"}
        models = [m["name"] for m in ar.list_models() if m["task"] == "sr" and m.get("scale") == s]
        vals: dict[str, list[float]] = {"bicubic": [], **{n: [] for n in models}}
        for hr in hr_images:
            h, w = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
            y_hr = rgb_to_y(hr[:h, :w].astype(np.float64))
            y_lr = downsample(y_hr.astype(np.float32), scale=s)
            vals["bicubic"].append(psnr(y_hr, np.clip(bicubic_baseline(y_lr, s), 0, 1), border=s))
            for n in models:
                out = ar.restore(y_lr, task="sr", scale=s, model=n, normalize="none", device="cpu").compute()
                vals[n].append(psnr(y_hr, np.clip(out, 0, 1), border=s))
        row["input"] = float(np.mean(vals.pop("bicubic")))  # for SR the input column is bicubic
        for n, v in vals.items():
            row[n] = float(np.mean(v))
        row["published"] = ", ".join(f"{k} {v}" for k, v in PUBLISHED_SET5[s].items())
        rows.append(row)
    return rows


def print_table(rows: list[dict], markdown: bool) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and not k.endswith("Mpx/s")]
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    if markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join("---" for _ in cols) + "|")
        for r in rows:
            print("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
    else:
        widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        for r in rows:
            print("  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="data folder holding bench/set12")
    p.add_argument("--no-bm3d", action="store_true", help="skip BM3D (slow: ~4 s per 256x256 image)")
    p.add_argument("--sigmas", type=int, nargs="+", default=[15, 25, 50])
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--tasks", nargs="+", default=["denoise", "sr"], choices=["denoise", "sr"])
    a = p.parse_args(argv)
    if not (a.data / "bench" / "set12").exists():
        print(f"quality.py: {a.data / 'bench' / 'set12'} not found", file=sys.stderr)
        return 2
    rows = []
    if "denoise" in a.tasks:
        rows += denoise_table(a.data, not a.no_bm3d, a.sigmas)
    if "sr" in a.tasks:
        rows += sr_table(a.data, [2, 4])
    print_table(rows, a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
