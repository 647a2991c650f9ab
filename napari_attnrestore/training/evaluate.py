"""Quality evaluation on benchmark images, shared by recipes and benchmarks/quality.py."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..tasks import psnr, ssim


@torch.inference_mode()
def run_full(model: nn.Module, img: np.ndarray) -> np.ndarray:
    """Run ``model`` on a whole 2D float image in one pass (no tiling)."""
    model.eval()
    dev = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None].to(dev)
    return model(x)[0, 0].float().cpu().numpy()


def denoise_scores(
    restore, images: list[np.ndarray], sigma: float, seed: int = 0
) -> dict[str, float]:
    """Mean PSNR/SSIM of noisy input and of ``restore(noisy)`` at Gaussian ``sigma`` (8-bit units).

    The noise is drawn from ``default_rng(seed)`` image by image, unclipped, as in the
    DnCNN/SwinIR evaluation protocol.
    """
    rng = np.random.default_rng(seed)
    rows = {"psnr_in": [], "psnr": [], "ssim_in": [], "ssim": []}
    for clean in images:
        noisy = (clean + rng.standard_normal(clean.shape) * sigma / 255.0).astype(np.float32)
        out = np.clip(restore(noisy), 0, 1)
        rows["psnr_in"].append(psnr(clean, np.clip(noisy, 0, 1)))
        rows["ssim_in"].append(ssim(clean, np.clip(noisy, 0, 1)))
        rows["psnr"].append(psnr(clean, out))
        rows["ssim"].append(ssim(clean, out))
    return {k: float(np.mean(v)) for k, v in rows.items()}
