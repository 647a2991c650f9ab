"""Demosaicing of Bayer colour-filter-array (CFA) images: one model for all four patterns.

Input-layout contract (what :func:`prepare_input`, :func:`make_training_pair` and the
engine feed the network, and what a trained demosaicing checkpoint expects)::

    x[0]    the CFA image (one sample per pixel), float, normalized to about [0, 1]
    x[1]    1 where the pixel sits under a red filter, else 0
    x[2]    1 where the pixel sits under a green filter, else 0
    x[3]    1 where the pixel sits under a blue filter, else 0
    output  (3, H, W) RGB at every pixel, same units as x[0]

The three mask channels sum to 1 at every pixel.  They are computed from the pattern of
the whole image and the *global* position of the region (``y0``, ``x0``): a tile that
starts on an odd row or column sees a shifted pattern (RGGB at x0 = 1 reads GRBG), and the
masks say so.  Conditioning on the masks is what lets one network serve RGGB, BGGR, GRBG
and GBRG.

Patterns name the colours of the top-left 2x2 block in reading order: ``"RGGB"`` means
R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1).

Metric: PSNR on RGB, ``border=4`` pixels ignored on each side (the McMaster protocol), see
:func:`demosaic_psnr`.  Everything but :func:`cfa_masks_torch` and
:func:`make_training_pair` is numpy-only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from .base import Task, psnr

PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
_RGB = "RGB"


def check_pattern(pattern: str) -> str:
    """Upper-cased ``pattern``; ValueError for anything but the four Bayer patterns."""
    p = str(pattern).upper()
    if p not in PATTERNS:
        raise ValueError(f"unknown Bayer pattern {pattern!r}; use one of {', '.join(PATTERNS)}")
    return p


def shift_pattern(pattern: str, y0: int = 0, x0: int = 0) -> str:
    """The pattern seen by a region whose top-left pixel is at global (``y0``, ``x0``)."""
    p = check_pattern(pattern)
    dy, dx = y0 % 2, x0 % 2
    return "".join(p[((dy + i) % 2) * 2 + (dx + j) % 2] for i in range(2) for j in range(2))


def colour_index(shape: tuple[int, int], pattern: str = "RGGB", y0: int = 0, x0: int = 0) -> np.ndarray:
    """``(H, W)`` int8 map of the filter colour at each pixel: 0 = R, 1 = G, 2 = B."""
    p = shift_pattern(pattern, y0, x0)
    h, w = int(shape[0]), int(shape[1])
    cell = np.array([_RGB.index(c) for c in p], dtype=np.int8).reshape(2, 2)
    return np.tile(cell, ((h + 1) // 2, (w + 1) // 2))[:h, :w]


def cfa_masks(shape: tuple[int, int], pattern: str = "RGGB", y0: int = 0, x0: int = 0) -> np.ndarray:
    """``(3, H, W)`` float32 one-hot colour masks (R, G, B) of a region at global (y0, x0)."""
    idx = colour_index(shape, pattern, y0, x0)
    return (idx[None] == np.arange(3, dtype=np.int8)[:, None, None]).astype(np.float32)


def mosaic(rgb: np.ndarray, pattern: str = "RGGB", y0: int = 0, x0: int = 0) -> np.ndarray:
    """Sample an ``(H, W, 3)`` RGB image through the CFA: ``(H, W)``, one colour per pixel.

    The dtype is kept (uint8 in, uint8 out); any H, W (odd sizes too).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"mosaic needs an (H, W, 3) RGB image, got shape {rgb.shape}")
    idx = colour_index(rgb.shape[:2], pattern, y0, x0).astype(np.intp)
    return np.take_along_axis(rgb, idx[..., None], axis=-1)[..., 0]


def prepare_input(cfa: np.ndarray, pattern: str = "RGGB", y0: int = 0, x0: int = 0) -> np.ndarray:
    """The network input ``(4, H, W)`` float32 for a CFA region (see the module's contract).

    ``cfa`` should already be normalized (about [0, 1]); ``y0``, ``x0`` are the global
    coordinates of its top-left pixel in the full sensor image.
    """
    cfa = np.asarray(cfa, dtype=np.float32)
    if cfa.ndim != 2:
        raise ValueError(f"a CFA image is single-channel (H, W), got shape {cfa.shape}")
    return np.concatenate([cfa[None], cfa_masks(cfa.shape, pattern, y0, x0)], axis=0)


def _masks_table(patterns: Sequence[str], h: int, w: int, y0: int, x0: int, device=None) -> torch.Tensor:
    import torch

    table = np.stack([cfa_masks((h, w), p, y0, x0) for p in patterns])
    return torch.from_numpy(table).to(device)


def cfa_masks_torch(
    shape: tuple[int, int],
    patterns: str | Sequence[str],
    y0: int = 0,
    x0: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Torch masks: ``(3, H, W)`` for one pattern, ``(B, 3, H, W)`` for a list of B patterns."""
    h, w = int(shape[0]), int(shape[1])
    if isinstance(patterns, str):
        return _masks_table([patterns], h, w, y0, x0, device)[0]
    uniq = sorted(set(check_pattern(p) for p in patterns))
    table = _masks_table(uniq, h, w, y0, x0, device)
    import torch

    sel = torch.tensor([uniq.index(check_pattern(p)) for p in patterns], device=table.device)
    return table[sel]


def quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """Round [0, 1] values to ``bits``-bit levels (the sensor's ADC)."""
    levels = float(2**int(bits) - 1)
    return (np.round(np.clip(x, 0, 1) * levels) / levels).astype(np.float32)


def degrade(
    clean: np.ndarray,
    rng: np.random.Generator | None = None,
    pattern: str = "RGGB",
    bit_depth: int | None = None,
) -> np.ndarray:
    """Training degradation (numpy): ``(H, W, 3)`` RGB in [0, 1] -> ``(H, W)`` CFA image.

    ``bit_depth`` quantizes the samples to that many bits (None: no quantization).
    ``rng`` is accepted for the common ``degrade(clean, rng, **kw)`` signature.
    """
    cfa = mosaic(np.asarray(clean, dtype=np.float32), pattern)
    return quantize(cfa, bit_depth) if bit_depth else cfa


def make_training_pair(
    clean: torch.Tensor,
    gen: torch.Generator,
    patterns: Sequence[str] = PATTERNS,
    bit_depth_range: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input/target pair for an RGB batch ``clean (B, 3, H, W)`` in [0, 1].

    Each sample gets a pattern drawn from ``patterns`` (uniformly, with ``gen``); the input is
    ``(B, 4, H, W)`` as in the module's contract, the target is ``clean`` itself.  With
    ``bit_depth_range=(lo, hi)`` each sample's CFA channel is quantized to a bit depth drawn
    uniformly from lo..hi inclusive (e.g. ``(8, 16)``; off by default).
    """
    import torch

    if clean.ndim != 4 or clean.shape[1] != 3:
        raise ValueError(f"demosaicing trains on RGB batches (B, 3, H, W), got {tuple(clean.shape)}")
    pats = [check_pattern(p) for p in patterns]
    b, _, h, w = clean.shape
    pick = torch.randint(0, len(pats), (b,), generator=gen)
    masks = cfa_masks_torch((h, w), [pats[int(i)] for i in pick], device=clean.device).to(clean.dtype)
    cfa = (clean * masks).sum(dim=1, keepdim=True)
    if bit_depth_range is not None:
        lo, hi = int(bit_depth_range[0]), int(bit_depth_range[1])
        bits = torch.randint(lo, hi + 1, (b, 1, 1, 1), generator=gen).to(clean.device)
        levels = (2.0**bits - 1).to(clean.dtype)
        cfa = torch.round(cfa.clamp(0, 1) * levels) / levels
    return torch.cat([cfa, masks], dim=1), clean


def _as_float(cfa: np.ndarray) -> tuple[np.ndarray, float]:
    a = np.asarray(cfa)
    if a.ndim != 2:
        raise ValueError(f"a CFA image is single-channel (H, W), got shape {a.shape}")
    top = float(np.iinfo(a.dtype).max) if np.issubdtype(a.dtype, np.integer) else 1.0
    return a.astype(np.float64), top


def bilinear_baseline(cfa: np.ndarray, pattern: str = "RGGB", clip: bool = True) -> np.ndarray:
    """Bilinear demosaicing -> ``(H, W, 3)`` float32 (normalized convolution, mirrored edges).

    Values keep the input's units; ``clip`` limits them to [0, 1] for float input or to
    the integer dtype's range.
    """
    from scipy.ndimage import convolve

    x, top = _as_float(cfa)
    masks = cfa_masks(x.shape, pattern).astype(np.float64)
    k = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    out = np.empty((*x.shape, 3), dtype=np.float32)
    for c in range(3):
        m = masks[c]
        est = convolve(x * m, k, mode="mirror") / np.maximum(convolve(m, k, mode="mirror"), 1e-12)
        out[..., c] = np.where(m > 0, x, est)
    return np.clip(out, 0, top) if clip else out


def malvar_baseline(cfa: np.ndarray, pattern: str = "RGGB", clip: bool = True) -> np.ndarray:
    """Malvar-He-Cutler 2004 gradient-corrected bilinear demosaicing (``colour-demosaicing``).

    Returns ``(H, W, 3)`` float32 in the input's units (clipped as in :func:`bilinear_baseline`).
    """
    x, top = _as_float(cfa)
    # colour-demosaicing mirrors edges with the edge pixel repeated, which puts the wrong colour
    # next to the border; a 2-pixel reflection without repeat keeps the Bayer phase
    pad = 2 if min(x.shape[-2:]) > 2 else 0
    x = np.pad(x, pad, mode="reflect") if pad else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # colour's optional-dependency and scipy deprecation notes
        from colour_demosaicing import demosaicing_CFA_Bayer_Malvar2004

        out = np.asarray(demosaicing_CFA_Bayer_Malvar2004(x, check_pattern(pattern)), dtype=np.float32)
    out = out[pad : out.shape[0] - pad, pad : out.shape[1] - pad] if pad else out
    return np.clip(out, 0, top) if clip else out


def demosaic_psnr(reference: np.ndarray, estimate: np.ndarray, border: int = 4, data_range: float = 1.0) -> float:
    """PSNR over all three RGB channels, ``border`` pixels cropped on each side (McMaster)."""
    return psnr(reference, estimate, data_range=data_range, border=border)


TASK = Task(
    name="demosaic",
    in_channels=4,
    out_channels=3,
    scales=(1,),
    degrade=degrade,
    baseline=malvar_baseline,
    baseline_name="Malvar 2004",
    description=(
        "Bayer CFA (Y, X) -> RGB (Y, X, 3); input = CFA + R/G/B position masks, so one model "
        "serves RGGB, BGGR, GRBG and GBRG. Metric: RGB PSNR, border 4."
    ),
    defaults={"cfa": "RGGB", "border": 4},
)
