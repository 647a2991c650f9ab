"""Quality evaluation on benchmark images, shared by recipes and benchmarks/quality.py.

Each ``*_scores`` function takes a ``restore`` callable in the task's own terms (noisy
image, low-resolution image, CFA + pattern, or image + mask) so the same protocol scores a
bare network (:func:`model_restorer`, used for model cards: whole images, or the tiles a
network whose result depends on its tile's size runs on) and the tiled engine
(``ar.restore``, used by ``benchmarks/quality.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..tasks import psnr, ssim

#: The evaluation masks for inpainting (Set12): Landsat-7-like 8-pixel scan-line stripes
#: covering a quarter of the image, the same stripes upright, and free-form strokes.
INPAINT_MASKS = ("stripes", "columns", "strokes")


@torch.inference_mode()
def run_full(model: nn.Module, img: np.ndarray) -> np.ndarray:
    """Run ``model`` on a whole image in one pass (no tiling).

    ``img`` is ``(H, W)`` or channels-first ``(C, H, W)``; the output is ``(H', W')`` for one
    output channel, else ``(C', H', W')``.
    """
    model.eval()
    dev = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).to(dev)
    x = x[None, None] if x.ndim == 2 else x[None]
    out = model(x)[0].float().cpu().numpy()
    return out[0] if out.shape[0] == 1 else out


@torch.inference_mode()
def run_on_tiles(model: nn.Module, img: np.ndarray, tile: int) -> np.ndarray:
    """Run ``model`` on ``tile``-px tiles of ``img`` with the overlap and blending the
    engine gives a network whose card names ``tile``."""
    from ..engine.plan import card_overlap
    from ..engine.tiling import round_up, run_tiled

    model.eval()
    dev = next(model.parameters()).device
    x = np.ascontiguousarray(img, dtype=np.float32)
    x = x[None, None] if x.ndim == 2 else x[None]
    m = int(getattr(model, "multiple_of", 1) or 1)
    tile = round_up(tile, m)
    overlap = card_overlap(round_up(int(getattr(model, "halo", 16) or 0), m), tile, m)

    def infer(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch).to(dev)).float().cpu().numpy()

    out = run_tiled(x, infer, tile, overlap, batch=16, scale=int(getattr(model, "scale", 1) or 1))[0]
    return out[0] if out.shape[0] == 1 else out


def model_restorer(model: nn.Module, task: str, tile: int | None = None) -> Callable[..., np.ndarray]:
    """A ``restore`` callable for the ``*_scores`` functions that runs ``model`` untiled, or
    on ``tile``-px tiles (a network whose result depends on its tile's size)."""
    from ..tasks import demosaic as dm
    from ..tasks import inpaint as ip

    def run(x: np.ndarray) -> np.ndarray:
        return run_full(model, x) if tile is None else run_on_tiles(model, x, tile)

    if task == "demosaic":
        return lambda cfa, pattern: np.moveaxis(run(dm.prepare_input(cfa, pattern)), 0, -1)
    if task == "inpaint":
        return lambda image, mask: run(ip.prepare_input(image, mask))
    return run


def _mean(rows: dict[str, list[float]]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in rows.items()}


def denoise_scores(restore, images: list[np.ndarray], sigma: float, seed: int = 0,
                   peak: float | None = None) -> dict[str, float]:
    """Mean PSNR/SSIM of noisy input and of ``restore(noisy)`` at Gaussian ``sigma`` (8-bit units).

    The noise is drawn from ``default_rng(seed)`` image by image, unclipped, as in the
    DnCNN/SwinIR evaluation protocol.  With ``peak`` the image first gets Poisson noise
    at ``peak`` photons for white (Poisson-Gaussian: shot noise plus read noise ``sigma``).
    """
    rng = np.random.default_rng(seed)
    rows: dict[str, list[float]] = {"psnr_in": [], "psnr": [], "ssim_in": [], "ssim": []}
    for clean in images:
        signal = clean if peak is None else rng.poisson(np.clip(clean, 0, None) * peak) / peak
        noisy = (signal + rng.standard_normal(clean.shape) * sigma / 255.0).astype(np.float32)
        out = np.clip(restore(noisy), 0, 1)
        rows["psnr_in"].append(psnr(clean, np.clip(noisy, 0, 1)))
        rows["ssim_in"].append(ssim(clean, np.clip(noisy, 0, 1)))
        rows["psnr"].append(psnr(clean, out))
        rows["ssim"].append(ssim(clean, out))
    return _mean(rows)



def frame_noise_sigma(frames: np.ndarray) -> float:
    """Noise standard deviation of a still time series, from its frame-to-frame differences.

    ``var(x[t+1] - x[t]) / 2``: exact for a static scene, an overestimate where it moves.
    """
    f = np.asarray(frames, dtype=np.float64)
    return float(np.sqrt(np.mean(np.var(np.diff(f, axis=0), axis=(1, 2))) / 2))


def frame_scores(restore, frames: np.ndarray) -> dict[str, float]:
    """Denoising quality on real noisy data without a clean image: a time series ``(T, Y, X)``.

    Each frame is restored and compared with the mean of the other frames, whose noise is
    independent of its own (Noise2Noise).  The expected squared error against that mean is
    the error against the true signal plus ``sigma**2 / (T - 1)``, which is subtracted
    (``sigma`` from :func:`frame_noise_sigma`), so ``psnr`` estimates the PSNR against the
    unseen clean signal, on the stack's 0.1-99.9 percentile range.  Motion between frames
    adds the same error to every method, so it lowers all numbers but keeps their order.
    """
    f = np.asarray(frames, dtype=np.float64)
    t = f.shape[0]
    if f.ndim != 3 or t < 2:
        raise ValueError(f"need a time series (T >= 2, Y, X), got shape {f.shape}")
    lo, hi = np.percentile(f, (0.1, 99.9))
    sigma = frame_noise_sigma(f)
    floor = sigma**2 / (t - 1)
    rows: dict[str, list[float]] = {"psnr_in": [], "psnr": []}
    for i in range(t):
        ref = (f.sum(axis=0) - f[i]) / (t - 1)
        out = np.asarray(restore(f[i].astype(np.float32)), dtype=np.float64)
        for key, x in (("psnr_in", f[i]), ("psnr", out)):
            mse = max(float(np.mean((x - ref) ** 2)) - floor, 1e-12)
            rows[key].append(10 * np.log10((hi - lo) ** 2 / mse))
    return {**_mean(rows), "sigma": sigma, "range": float(hi - lo)}

def sr_pairs(images: list[np.ndarray], scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(HR Y, LR Y) pairs of the SR protocol: Y channel (BT.601, [16, 235]), HR cropped to a
    multiple of ``scale``, LR by antialiased bicubic downsampling."""
    from ..tasks.sr import downsample, rgb_to_y

    pairs = []
    for im in images:
        h, w = (im.shape[0] // scale) * scale, (im.shape[1] // scale) * scale
        y = rgb_to_y(im[:h, :w]) if im.ndim == 3 else np.asarray(im[:h, :w], dtype=np.float32)
        pairs.append((y, downsample(y, scale=scale)))
    return pairs


def sr_scores(restore, images: list[np.ndarray], scale: int) -> dict[str, float]:
    """Mean PSNR/SSIM (Y channel, border = scale) of bicubic (``psnr_in``) and ``restore(lr)``."""
    from ..tasks.sr import bicubic_baseline

    rows: dict[str, list[float]] = {"psnr_in": [], "psnr": [], "ssim": []}
    for hr, lr in sr_pairs(images, scale):
        out = np.clip(restore(lr), 0, 1)
        if out.shape != hr.shape:
            raise ValueError(f"SR output {out.shape} differs from the reference {hr.shape}")
        rows["psnr_in"].append(psnr(hr, np.clip(bicubic_baseline(lr, scale), 0, 1), border=scale))
        rows["psnr"].append(psnr(hr, out, border=scale))
        rows["ssim"].append(ssim(hr, out, border=scale))
    return _mean(rows)


def demosaic_scores(restore, images: list[np.ndarray], pattern: str = "RGGB") -> dict[str, float]:
    """Mean RGB PSNR (border 4) of Malvar 2004 (``psnr_in``) and ``restore(cfa, pattern)``."""
    from ..tasks import demosaic as dm

    rows: dict[str, list[float]] = {"psnr_in": [], "psnr": []}
    for im in images:
        rgb = np.asarray(im[..., :3], dtype=np.float32)
        cfa = dm.mosaic(rgb, pattern)
        rows["psnr_in"].append(dm.demosaic_psnr(rgb, dm.malvar_baseline(cfa, pattern)))
        rows["psnr"].append(dm.demosaic_psnr(rgb, np.clip(restore(cfa, pattern), 0, 1)))
    return _mean(rows)


def inpaint_mask(shape: tuple[int, int], kind: str, index: int) -> np.ndarray:
    """The evaluation mask of image ``index``: ``stripes`` (8 px, a quarter), ``columns``
    (the same stripes turned upright: gaps down the columns, as dead sensor columns are) or
    ``strokes``."""
    from ..tasks import inpaint as ip

    rng = np.random.default_rng(1000 + index)
    if kind == "stripes":
        return ip.scanline_mask(shape, rng, width=8, fraction=0.25)
    if kind == "columns":
        return np.ascontiguousarray(ip.scanline_mask(shape[::-1], rng, width=8, fraction=0.25).T)
    if kind == "strokes":
        return ip.stroke_mask(shape, rng, strokes=(3, 6), width=(6.0, 14.0))
    raise ValueError(f"unknown inpainting mask {kind!r}; choose from {INPAINT_MASKS}")


def inpaint_scores(restore, images: list[np.ndarray], kind: str = "stripes", baseline: bool = True) -> dict[str, float]:
    """Mean PSNR over the masked pixels of biharmonic (``psnr_in``) and ``restore(image, mask)``."""
    from ..tasks import inpaint as ip

    rows: dict[str, list[float]] = {"psnr": [], **({"psnr_in": []} if baseline else {})}
    for i, clean in enumerate(images):
        mask = inpaint_mask(clean.shape, kind, i)
        holed = np.where(mask, np.nan, clean).astype(np.float32)
        rows["psnr"].append(ip.masked_psnr(clean, np.clip(restore(holed, mask), 0, 1), mask))
        if baseline:
            rows["psnr_in"].append(ip.masked_psnr(clean, np.clip(ip.biharmonic_baseline(holed, mask), 0, 1), mask))
    return _mean(rows)


#: Flat-field protocol: grey levels of the normalized range (a fluorescence background lands
#: near 0.02-0.05 under percentile scaling) and noise sigmas on that [0, 1] scale.
FLAT_LEVELS = (0.0, 0.01, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.1, 0.2, 0.5, 0.9)
FLAT_SIGMAS = (0.005, 0.01, 0.02)
FLAT_SIDE, FLAT_BORDER = 128, 16


def flat_field_scores(restore, levels: tuple[float, ...] = FLAT_LEVELS, sigmas: tuple[float, ...] = FLAT_SIGMAS,
                      seed: int = 0) -> dict[tuple[float, float], tuple[float, float]]:
    """``{(level, sigma): (noise left, bias)}`` of ``restore(noisy)`` on flat fields.

    Noise left: the output's standard deviation over ``sigma`` (0: flat, 1: untouched); bias:
    its mean's offset from the level, in ``sigma``; both inside a ``FLAT_BORDER`` margin of a
    ``FLAT_SIDE``-pixel field.  Photos score textures; this catches a denoiser that lets the
    noise of one flat grey level through.
    """
    rng = np.random.default_rng(seed)
    scores = {}
    for level in levels:
        for sigma in sigmas:
            noisy = (level + rng.normal(0.0, sigma, (FLAT_SIDE, FLAT_SIDE))).astype(np.float32)
            inner = np.asarray(restore(noisy), dtype=np.float64)[FLAT_BORDER:-FLAT_BORDER, FLAT_BORDER:-FLAT_BORDER]
            scores[(level, sigma)] = (float(inner.std()) / sigma, (float(inner.mean()) - level) / sigma)
    return scores


def flat_field_summary(scores: dict[tuple[float, float], tuple[float, float]]) -> dict[str, float]:
    """The worst of :func:`flat_field_scores`: the most noise left (with its level and sigma)
    and the largest bias, as a model card records them (``metrics["flat_fields"]``)."""
    (level, sigma), (left, _) = max(scores.items(), key=lambda kv: kv[1][0])
    return {"noise_left": round(left, 3), "level": level, "sigma": sigma,
            "bias": round(max(abs(b) for _, b in scores.values()), 3)}


def recipe_metrics(task: str, model: nn.Module, data_dir: Path, ev: dict[str, Any], scale: int = 1,
                   tile: int | None = None) -> dict[str, Any]:
    """The metrics a recipe's model card records: the task's protocol on ``ev["set"]``, each
    image in one pass, or on ``tile``-px tiles as the engine runs the network."""
    from .data import load_folder

    folder = data_dir / ev["set"]
    restore = model_restorer(model, task, tile)
    name = Path(ev["set"]).name
    if task == "denoise":
        images = load_folder(folder, gray=True)
        scores = {f"{name}_sigma{s}": denoise_scores(restore, images, s) for s in ev.get("sigmas", [25])}
        return {**scores, "flat_fields": flat_field_summary(flat_field_scores(restore))}
    if task == "sr":
        return {f"{name}_x{scale}_Y": sr_scores(restore, load_folder(folder, gray=False), scale)}
    if task == "demosaic":
        images = load_folder(folder, gray=False)
        return {f"{name}_{p}": demosaic_scores(restore, images, p) for p in ev.get("patterns", ["RGGB"])}
    if task == "inpaint":
        images = load_folder(folder, gray=True)
        return {f"{name}_{k}": inpaint_scores(restore, images, k) for k in ev.get("masks", list(INPAINT_MASKS))}
    raise ValueError(f"no evaluation protocol for task {task!r}")
