"""Image quality of the shipped weights next to classical baselines and published numbers.

    python benchmarks/quality.py --data ../shared/data [--tasks denoise poisson real sr demosaic inpaint]
                                 [--no-bm3d] [--ensemble] [--models NAME ...] [--markdown]

Every shipped model runs through the real engine (``ar.restore``: chunks, tiles, halo,
blending), so the numbers are what users get.  PSNR in dB on [0, 1] images, mean over the
set; the protocols are those of :mod:`napari_attnrestore.training.evaluate`:

* denoise: Set12 + Gaussian noise (sigma 15, 25, 50; unclipped, ``default_rng(0)``), BM3D
  with the known sigma as the classical baseline;
* poisson: Set12 + Poisson-Gaussian noise (60 or 30 photons for white, read noise 5 or 10);
  BM3D after the generalized Anscombe transform;
* real: a real bright-field movie with no clean image, each frame scored against the
  mean of the others (Noise2Noise), the noise floor subtracted; BM3D at the measured noise;
  the weights trained without clean images also after 400 self-supervised steps on the movie;
* SR: Set5, Y channel, border = scale, LR by antialiased bicubic; bicubic as the baseline;
  Set12's gray pictures with the same protocol as a check on other images;
* demosaic: McMaster, all four Bayer patterns, RGB PSNR with a 4-pixel border; Malvar 2004;
* inpaint: Set12 with 8-pixel scan-line stripes over a quarter of the image, the same
  stripes turned upright (``columns``), and free-form strokes; PSNR over the masked pixels;
  biharmonic inpainting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import napari_attnrestore as ar
from napari_attnrestore.tasks.sr import bicubic_baseline
from napari_attnrestore.training import evaluate as ev
from napari_attnrestore.training.data import load_folder

CACHE = Path(__file__).parent / ".cache" / "baselines.json"
TABLES = ("denoise", "poisson", "real", "sr", "demosaic", "inpaint")
#: Poisson-Gaussian settings: (photons for white, read-noise sigma in 8-bit units).
POISSON_SETTINGS = [(60.0, 5.0), (30.0, 10.0)]

#: Published means (PSNR, dB): DnCNN (Zhang et al. 2017), SwinIR (Liang et al. 2021), HAT,
#: GRL and the data README.
PUBLISHED = {
    ("denoise", 15): "BM3D 32.37, DnCNN 32.86",
    ("denoise", 25): "BM3D 29.97, DnCNN 30.44, SwinIR 31.01",
    ("denoise", 50): "BM3D 26.72, DnCNN 27.18",
    ("sr", 2): "bicubic 33.66, VDSR 37.53, SwinIR-light 38.14, HAT 38.73",
    ("sr", 4): "bicubic 28.42, VDSR 31.35, SwinIR-light 32.44, GRL-T 32.56, HAT-S 32.92",
    ("demosaic", None): "bilinear 32.3, Malvar 34.5, GRL-S 40.22 (RGGB)",
    ("inpaint", "stripes"): "biharmonic 21.7 (the issue's figure)",
}


def cached(key: str, compute) -> float:
    """A slow baseline's score, cached on disk (BM3D takes seconds per image)."""
    store = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    if key not in store:
        store[key] = float(compute())
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps(store, indent=1))
    return store[key]


#: ``--models``: only these shipped weights (None: all)
ONLY: set[str] | None = None


def shipped(task: str, scale: int | None = None) -> list[str]:
    return [m["name"] for m in ar.list_models() if m["task"] == task and (scale is None or m.get("scale") == scale)
            and (ONLY is None or m["name"] in ONLY)]


#: ``--ensemble``: every network runs with the 8-orientation self-ensemble (``ar.restore(ensemble=True)``)
ENSEMBLE = False


def engine(name: str, task: str, **kw):
    model = ar.load_model(name)
    kw = {"normalize": "none", "device": "cpu", "ensemble": ENSEMBLE, **kw}
    if task == "demosaic":
        return lambda cfa, pattern: np.asarray(ar.restore(cfa, task=task, model=model, cfa=pattern, **kw).compute())
    if task == "inpaint":
        return lambda image, mask: np.asarray(ar.restore(image, task=task, model=model, mask=mask, **kw).compute())
    return lambda x: np.asarray(ar.restore(x, task=task, model=model, **kw).compute())


def bm3d_set12(clean: list[np.ndarray], sigma: int) -> float:
    """BM3D with the known sigma on Set12 (``clean``), this protocol; cached on disk."""
    from napari_attnrestore.tasks.denoise import bm3d_baseline

    return cached(f"set12_sigma{sigma}_bm3d", lambda: ev.denoise_scores(lambda n: bm3d_baseline(n, sigma), clean, sigma)["psnr"])


def denoise_rows(data: Path, use_bm3d: bool, sigmas: list[int]) -> list[dict]:
    clean = load_folder(data / "bench" / "set12", gray=True)
    models = {name: engine(name, "denoise") for name in shipped("denoise")}
    rows = []
    for sigma in sigmas:
        row: dict = {"set": "Set12", "setting": f"sigma={sigma}"}
        row["input"] = ev.denoise_scores(lambda n: n, clean, sigma)["psnr_in"]
        if use_bm3d:
            row["BM3D (here)"] = bm3d_set12(clean, sigma)
        for name, restore in models.items():
            row[name] = ev.denoise_scores(restore, clean, sigma)["psnr"]
        row["published"] = PUBLISHED[("denoise", sigma)]
        rows.append(row)
    return rows


def poisson_rows(data: Path, use_bm3d: bool, settings: list[tuple[float, float]]) -> list[dict]:
    """Set12 with Poisson-Gaussian noise (shot noise at ``peak`` photons for white, read noise sigma)."""
    from napari_attnrestore.tasks.denoise import gat_bm3d_baseline

    clean = load_folder(data / "bench" / "set12", gray=True)
    models = {name: engine(name, "denoise") for name in shipped("denoise")}
    rows = []
    for peak, sigma in settings:
        row: dict = {"set": "Set12", "setting": f"Poisson peak {peak:g} + sigma {sigma:g}"}
        row["input"] = ev.denoise_scores(lambda n: n, clean, sigma, peak=peak)["psnr_in"]
        if use_bm3d:
            row["BM3D (here)"] = cached(f"set12_peak{peak:g}_sigma{sigma:g}_gat_bm3d", lambda p=peak, s=sigma: ev.denoise_scores(
                lambda n: gat_bm3d_baseline(n, p, s), clean, s, peak=p)["psnr"])
        for name, restore in models.items():
            row[name] = ev.denoise_scores(restore, clean, sigma, peak=peak)["psnr"]
        row["published"] = "BM3D after the generalized Anscombe transform"
        rows.append(row)
    return rows


def real_rows(data: Path, use_bm3d: bool) -> list[dict]:
    """The real bright-field movie (5 noisy frames, no clean image): estimated PSNR per frame.

    See :func:`napari_attnrestore.training.evaluate.frame_scores` for the protocol.  Networks
    run through the engine with its default (percentile) normalization, on the raw counts;
    BM3D gets the noise level measured from the frame differences.
    """
    import tifffile

    from napari_attnrestore.tasks.denoise import bm3d_baseline

    path = data / "samples" / "brightfield_2dt_uint16.tif"
    if not path.exists():
        return []
    frames = tifffile.imread(path).astype(np.float32)
    lo, hi = np.percentile(frames, (0.1, 99.9))
    sigma = ev.frame_noise_sigma(frames)
    row: dict = {"set": "bright-field movie", "setting": f"5 frames, noise {sigma:.1f} counts"}
    row["input"] = ev.frame_scores(lambda x: x, frames)["psnr_in"]
    if use_bm3d:
        row["BM3D (here)"] = cached("brightfield_bm3d", lambda: ev.frame_scores(
            lambda x: bm3d_baseline((x - lo) / (hi - lo), sigma / (hi - lo) * 255) * (hi - lo) + lo, frames)["psnr"])
    for name in shipped("denoise"):
        model = ar.load_model(name)
        models = [(name, model)]
        if model.card.get("training", {}).get("clean_images_used") is False:
            models.append((f"{name} + {MOVIE_STEPS} steps on the movie", movie_fine_tuned(name, path)))
        for label, model in models:
            row[label] = ev.frame_scores(
                lambda x, m=model: np.asarray(ar.restore(x, model=m, device="cpu", ensemble=ENSEMBLE).compute()), frames)["psnr"]
    row["published"] = "none (estimated against the other frames)"
    return [row]


#: Self-supervised fine-tuning on the movie itself (the user's workflow with no clean image).
MOVIE_STEPS = 400


def movie_fine_tuned(name: str, path: Path):
    """A self-supervised shipped weight fine-tuned on the movie's own noisy frames by
    Neighbor2Neighbor (``attnrestore train --self-supervised movie.tif --from NAME --steps 400
    --lr 1e-4``); seeded, so the row repeats."""
    import tifffile

    from napari_attnrestore.benchmarking import fine_tune

    return fine_tune(tifffile.imread(path), "neighbor2neighbor", name, steps=MOVIE_STEPS, lr=1e-4, log_every=MOVIE_STEPS)


def sr_rows(data: Path, scales: list[int]) -> list[dict]:
    """Set5 on the Y channel (the literature's protocol), then Set12's gray images as a check
    on other pictures (no published figures)."""
    sets = [("Set5 (Y)", load_folder(data / "bench" / "set5", gray=False), True),
            ("Set12 (gray)", load_folder(data / "bench" / "set12", gray=True), False)]
    rows = []
    for label, hr, has_published in sets:
        for s in scales:
            row: dict = {"set": label, "setting": f"x{s}, border {s}"}
            row["bicubic (here)"] = ev.sr_scores(lambda lr, s=s: bicubic_baseline(lr, s), hr, s)["psnr"]
            for name in shipped("sr", s):
                row[name] = ev.sr_scores(engine(name, "sr", scale=s), hr, s)["psnr"]
            row["published"] = PUBLISHED[("sr", s)] if has_published else ""
            rows.append(row)
    return rows


def demosaic_rows(data: Path, patterns: list[str]) -> list[dict]:
    from napari_attnrestore.tasks import demosaic as dm

    images = load_folder(data / "bench" / "mcmaster", gray=False)
    models = {name: engine(name, "demosaic") for name in shipped("demosaic")}
    rows = []
    for pattern in patterns:
        row: dict = {"set": "McMaster", "setting": f"{pattern}, border 4"}
        row["bilinear (here)"] = ev.demosaic_scores(lambda c, p: dm.bilinear_baseline(c, p), images, pattern)["psnr"]
        row["Malvar 2004 (here)"] = ev.demosaic_scores(lambda c, p: dm.malvar_baseline(c, p), images, pattern)["psnr"]
        for name, restore in models.items():
            row[name] = ev.demosaic_scores(restore, images, pattern)["psnr"]
        row["published"] = PUBLISHED[("demosaic", None)]
        rows.append(row)
    return rows


def inpaint_rows(data: Path, kinds: list[str]) -> list[dict]:
    from napari_attnrestore.tasks.inpaint import biharmonic_baseline

    clean = load_folder(data / "bench" / "set12", gray=True)
    models = {name: engine(name, "inpaint") for name in shipped("inpaint")}
    rows = []
    for kind in kinds:
        row: dict = {"set": "Set12", "setting": f"{kind}, masked pixels"}
        row["biharmonic (here)"] = cached(f"set12_{kind}_biharmonic", lambda k=kind: ev.inpaint_scores(biharmonic_baseline, clean, k, baseline=False)["psnr"])
        for name, restore in models.items():
            row[name] = ev.inpaint_scores(restore, clean, kind, baseline=False)["psnr"]
        row["published"] = PUBLISHED.get(("inpaint", kind), "")
        rows.append(row)
    return rows


def print_table(title: str, rows: list[dict], markdown: bool) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    cols = [c for c in cols if c != "published"] + ["published"]  # models of other settings before it
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    print(f"\n{title}")
    if markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join("---" for _ in cols) + "|")
        for r in rows:
            print("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
        return
    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="data folder holding bench/set12, set5, mcmaster")
    p.add_argument("--tasks", nargs="+", default=list(TABLES), choices=TABLES)
    p.add_argument("--no-bm3d", action="store_true", help="skip BM3D (slow: ~4 s per 256x256 image, cached after)")
    p.add_argument("--sigmas", type=int, nargs="+", default=[15, 25, 50])
    p.add_argument("--patterns", nargs="+", default=["RGGB", "BGGR", "GRBG", "GBRG"])
    p.add_argument("--ensemble", action="store_true", help="run every network with the x8 self-ensemble (8x slower)")
    p.add_argument("--models", nargs="+", default=None, help="only these shipped weights (default: all)")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    global ENSEMBLE, ONLY
    ENSEMBLE, ONLY = a.ensemble, set(a.models) if a.models else None
    missing = [s for s in ("set12", "set5", "mcmaster") if not (a.data / "bench" / s).exists()]
    if missing:
        print(f"quality.py: {a.data / 'bench'} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    tables = {
        "denoise": lambda: denoise_rows(a.data, not a.no_bm3d, a.sigmas),
        "poisson": lambda: poisson_rows(a.data, not a.no_bm3d, POISSON_SETTINGS),
        "real": lambda: real_rows(a.data, not a.no_bm3d),
        "sr": lambda: sr_rows(a.data, [2, 4]),
        "demosaic": lambda: demosaic_rows(a.data, a.patterns),
        "inpaint": lambda: inpaint_rows(a.data, list(ev.INPAINT_MASKS)),
    }
    titles = {"poisson": "denoise, Poisson-Gaussian (PSNR, dB)",
              "real": "denoise, real microscopy without a clean image (estimated PSNR, dB)"}
    for task in a.tasks:
        title = titles.get(task, f"{task} (PSNR, dB)") + (", networks with the x8 self-ensemble" if a.ensemble else "")
        print_table(title, tables[task](), a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
