"""The demo: denoise a bundled picture chunk by chunk, write OME-Zarr and a before/after PNG."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def demo_image(size: int = 1024) -> np.ndarray:
    """A ``size x size`` uint8 gray mosaic of scikit-image's bundled pictures (no download)."""
    from skimage import data, transform
    from skimage.color import rgb2gray

    pics = [data.camera(), rgb2gray(data.astronaut()), rgb2gray(data.coffee()), data.moon()]
    a, b = size // 2, size - size // 2
    shapes = [(a, a), (a, b), (b, a), (b, b)]
    t = [transform.resize(p.astype(np.float32) / (255.0 if p.dtype == np.uint8 else 1.0), s, anti_aliasing=True)
         for p, s in zip(pics, shapes, strict=True)]
    img = np.block([[t[0], t[1]], [t[2], t[3]]])
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def before_after_png(noisy: np.ndarray, restored: np.ndarray, path: Path) -> None:
    """Side-by-side PNG: the whole image (noisy | restored) above a 2x zoom of the centre."""
    from skimage import io as skio

    h, w = noisy.shape
    crop = max(1, min(h, w) // 4)  # two 2x zooms fit under the two full images
    c0, c1 = max(0, h // 2 - crop // 2), max(0, w // 2 - crop // 2)
    zn = np.kron(noisy[c0 : c0 + crop, c1 : c1 + crop], np.ones((2, 2), dtype=np.uint8))
    zr = np.kron(restored[c0 : c0 + crop, c1 : c1 + crop], np.ones((2, 2), dtype=np.uint8))
    gap = np.full((h, 8), 255, np.uint8)
    top = np.concatenate([noisy, gap, restored], axis=1)
    bottom = np.concatenate([zn, np.full((zn.shape[0], 8), 255, np.uint8), zr], axis=1)
    pad = top.shape[1] - bottom.shape[1]
    bottom = np.pad(bottom, ((0, 0), (pad // 2, pad - pad // 2)), constant_values=255)
    skio.imsave(path, np.concatenate([top, np.full((8, top.shape[1]), 255, np.uint8), bottom], axis=0), check_contrast=False)


def run_demo(out: Path, size: int = 1024, sigma: float = 25.0, device: str = "auto", quiet: bool = False,
             progress: Any = None) -> dict:
    """Run the demo into ``out``; prints and returns PSNR/SSIM before and after.  ``progress(done,
    total)`` follows the chunks (a tqdm bar by default, none when ``quiet``)."""
    import zarr

    import napari_attnrestore as ar
    from napari_attnrestore.engine import resolve_device
    from napari_attnrestore.io import write_ome_zarr
    from napari_attnrestore.tasks import psnr, ssim

    resolve_device(device)  # a device this machine lacks is said before anything is written
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is no folder; the demo writes a folder of results")
    out.mkdir(parents=True, exist_ok=True)
    clean = demo_image(size)
    rng = np.random.default_rng(0)
    noisy = np.clip(np.rint(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)
    src = write_ome_zarr(noisy, out / "noisy.ome.zarr", axes="yx", chunks=(256, 256), pyramid=False, overwrite=True)
    dst = out / "restored.ome.zarr"

    bar = None
    if progress is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=0, desc="denoise", unit="chunk", disable=quiet)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

    t0 = time.perf_counter()
    try:
        ar.restore_to_zarr(src, dst, task="denoise", chunks=512, overwrite=True, device=device, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    restored = np.asarray(zarr.open_group(str(dst), mode="r")["0"][:])
    before_after_png(noisy, restored, out / "before_after.png")
    f = lambda a: a.astype(np.float64) / 255.0  # noqa: E731
    res = {
        "psnr_before": psnr(f(clean), f(noisy)), "ssim_before": ssim(f(clean), f(noisy)),
        "psnr_after": psnr(f(clean), f(restored)), "ssim_after": ssim(f(clean), f(restored)),
        "seconds": dt, "megapixels": size * size / 1e6,
    }
    side = min(512, size)
    per_side = (size + side - 1) // side
    chunking = f"{per_side * per_side} chunks of {side} px" if per_side > 1 else "one chunk"
    print(f"demo: {size}x{size} uint8, Gaussian noise sigma={sigma:g}, default denoiser, {chunking}", file=sys.stdout)
    print(f"  before: PSNR {res['psnr_before']:.2f} dB  SSIM {res['ssim_before']:.4f}")
    print(f"  after:  PSNR {res['psnr_after']:.2f} dB  SSIM {res['ssim_after']:.4f}")
    print(f"  {res['megapixels'] / dt:.3f} Mpx/s end to end (model loading and writing included); wrote {out / 'noisy.ome.zarr'}, {dst}, {out / 'before_after.png'}")
    return res
