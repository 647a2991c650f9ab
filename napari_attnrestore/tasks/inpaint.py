"""Inpainting: fill the pixels a mask marks (strokes, boxes, Landsat-7 scan-line gaps, nodata).

Mask convention everywhere: True / 1 / nonzero = a pixel to fill (a hole, no data).

Input-layout contract (what :func:`prepare_input`, :func:`make_training_pair` and the
engine feed the network, and what a trained inpainting checkpoint expects)::

    x[0]    the image, normalized to about [0, 1], with every hole set to ``fill`` (0.0)
    x[1]    the mask: 1.0 at the pixels to fill, 0.0 where the image is valid
    output  (1, H, W) the whole image; known pixels are normally pasted back by the caller

Non-finite pixels (NaN, inf) always count as holes, so no NaN ever reaches the network.

Metric: PSNR over the masked pixels only (:func:`masked_psnr`); classical baseline:
biharmonic inpainting (scikit-image).  Everything but :func:`make_training_pair` is
numpy-only (no torch import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from .base import Task

KINDS = ("strokes", "boxes", "scanlines")


def _range(v, rng: np.random.Generator, integer: bool = False):
    """A value, or one drawn uniformly from a ``(lo, hi)`` tuple (inclusive for integers)."""
    if isinstance(v, (tuple, list)):
        return int(rng.integers(v[0], v[1] + 1)) if integer else float(rng.uniform(v[0], v[1]))
    return int(v) if integer else float(v)


def _draw_segment(mask: np.ndarray, p0: np.ndarray, p1: np.ndarray, radius: float) -> None:
    """Set the pixels within ``radius`` of the segment p0-p1 (in (y, x)) to True."""
    h, w = mask.shape
    lo = np.floor(np.minimum(p0, p1) - radius).astype(int)
    hi = np.ceil(np.maximum(p0, p1) + radius).astype(int) + 1
    y0, x0 = max(lo[0], 0), max(lo[1], 0)
    y1, x1 = min(hi[0], h), min(hi[1], w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = p1 - p0
    n2 = float(d @ d)
    t = 0.0 if n2 == 0 else np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / n2, 0, 1)
    dist2 = (yy - p0[0] - t * d[0]) ** 2 + (xx - p0[1] - t * d[1]) ** 2
    mask[y0:y1, x0:x1] |= dist2 <= radius * radius


def stroke_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    strokes: int | tuple[int, int] = (1, 5),
    width: float | tuple[float, float] = (4.0, 16.0),
    vertices: int | tuple[int, int] = (3, 10),
    step: float | tuple[float, float] | None = None,
) -> np.ndarray:
    """Random thick free-form strokes (brush-like random walks), as in free-form inpainting.

    ``width`` is the brush diameter in pixels and ``step`` a segment's length (default: up to
    a quarter of the shorter side); tuples are ranges drawn from per stroke / per segment.
    """
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=bool)
    if step is None:
        step = (max(2.0, min(h, w) / 16), max(4.0, min(h, w) / 4))
    for _ in range(_range(strokes, rng, integer=True)):
        radius = _range(width, rng) / 2
        p = np.array([rng.uniform(0, h), rng.uniform(0, w)], dtype=np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(_range(vertices, rng, integer=True)):
            angle += rng.normal(0, 0.8)
            length = _range(step, rng)
            q = p + length * np.array([np.sin(angle), np.cos(angle)], dtype=np.float32)
            q = np.clip(q, [0, 0], [h - 1, w - 1]).astype(np.float32)
            _draw_segment(mask, p, q, radius)
            p = q
    return mask


def box_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    boxes: int | tuple[int, int] = (1, 3),
    size: float | tuple[float, float] = (0.1, 0.4),
) -> np.ndarray:
    """Random axis-aligned rectangles; ``size`` is each side as a fraction of the image side."""
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(_range(boxes, rng, integer=True)):
        bh = max(1, round(_range(size, rng) * h))
        bw = max(1, round(_range(size, rng) * w))
        y0 = int(rng.integers(0, h - bh + 1))
        x0 = int(rng.integers(0, w - bw + 1))
        mask[y0 : y0 + bh, x0 : x0 + bw] = True
    return mask


def scanline_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    width: float = 8,
    fraction: float = 0.25,
    slope: float | None = None,
    taper: float = 1.0,
) -> np.ndarray:
    """Landsat-7 SLC-off-like gaps: parallel, slightly slanted, near-horizontal stripes.

    Stripes repeat every ``width / fraction`` rows; in every column each stripe is ``width``
    rows tall (an integer ``width`` gives runs of exactly that many pixels), so about
    ``fraction`` of the image is masked.  ``slope`` is rows per column (drawn from
    [-0.15, 0.15] when None); the phase is drawn from ``rng``.  ``taper < 1`` mimics the
    real wedge-shaped gaps: the stripe width grows from ``taper * width`` at the centre
    column to ``width`` at the left and right edges (coverage then about
    ``fraction * (1 + taper) / 2``).
    """
    h, w = int(shape[0]), int(shape[1])
    if not 0 < fraction <= 1 or width <= 0:
        raise ValueError(f"need width > 0 and 0 < fraction <= 1, got width={width}, fraction={fraction}")
    period = width / fraction
    offset = rng.uniform(0, period)
    if slope is None:
        slope = float(rng.uniform(-0.15, 0.15))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = (yy + slope * xx + offset) % period
    if taper >= 1:
        return phase < width
    half = max(w / 2, 1e-6)
    widen = width * (taper + (1 - taper) * np.abs(xx - w / 2) / half)
    return phase < widen


def random_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    kinds: Sequence[str] = KINDS,
) -> np.ndarray:
    """A training mask of one kind drawn from ``kinds``, with randomized parameters."""
    kinds = tuple(kinds)
    bad = set(kinds) - set(KINDS)
    if not kinds or bad:
        raise ValueError(f"unknown mask kinds {sorted(bad)}; use {', '.join(KINDS)}")
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "strokes":
        return stroke_mask(shape, rng)
    if kind == "boxes":
        return box_mask(shape, rng)
    return scanline_mask(
        shape, rng,
        width=float(rng.integers(2, 15)),
        fraction=float(rng.uniform(0.1, 0.4)),
        taper=1.0 if rng.random() < 0.5 else float(rng.uniform(0.0, 1.0)),
    )


def mask_from_nodata(image: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """Holes of an image: non-finite pixels (NaN, inf), plus those equal to ``nodata``.

    Element-wise, same shape as ``image``.
    """
    a = np.asarray(image)
    mask = ~np.isfinite(a) if np.issubdtype(a.dtype, np.inexact) else np.zeros(a.shape, dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        mask |= a == nodata
    return mask


def prepare_input(image: np.ndarray, mask: np.ndarray | None = None, fill: float = 0.0) -> np.ndarray:
    """The network input ``(2, H, W)`` float32 (see the module's contract).

    ``mask`` (same H, W; nonzero = hole) may be None to use the image's non-finite pixels.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"inpainting prepares one plane (H, W) at a time, got shape {img.shape}")
    holes = mask_from_nodata(img)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != img.shape:
            raise ValueError(f"mask shape {m.shape} differs from the image's {img.shape}")
        holes |= m.astype(bool)
    return np.stack([np.where(holes, np.float32(fill), img), holes.astype(np.float32)])


def degrade(
    clean: np.ndarray,
    rng: np.random.Generator,
    kinds: Sequence[str] = KINDS,
    fill: float = np.nan,
) -> np.ndarray:
    """Training degradation (numpy): punch a :func:`random_mask` of holes, set to ``fill`` (NaN)."""
    out = np.array(clean, dtype=np.float32)
    out[random_mask(out.shape[:2], rng, kinds)] = fill
    return out


def make_training_pair(
    clean: torch.Tensor,
    gen: torch.Generator,
    kinds: Sequence[str] = KINDS,
    fill: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input/target pair for a batch ``clean (B, C, H, W)`` (C = 1 for the gray task).

    One mask per sample (kind and parameters drawn by :func:`random_mask` from a numpy
    generator seeded by ``gen``), shared by the sample's channels.  Returns
    ``((B, C + 1, H, W), clean)``: the holed image(s) then the mask, as in the contract.
    """
    import torch

    b, _, h, w = clean.shape
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    rng = np.random.default_rng(seed)
    masks = np.stack([random_mask((h, w), rng, kinds) for _ in range(b)])[:, None]
    m = torch.from_numpy(masks).to(device=clean.device)
    holed = torch.where(m, torch.full_like(clean, fill), clean)
    return torch.cat([holed, m.to(clean.dtype)], dim=1), clean


def biharmonic_baseline(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Biharmonic inpainting (``skimage.restoration.inpaint_biharmonic``) -> float32.

    ``image`` (H, W) or (H, W, C); ``mask`` (H, W), nonzero = fill; None uses the
    image's NaN / inf pixels (any channel).
    """
    from skimage.restoration import inpaint_biharmonic

    img = np.asarray(image, dtype=np.float64)
    holes = mask_from_nodata(img)
    if img.ndim == 3:
        holes = holes.any(axis=-1)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != holes.shape:
            raise ValueError(f"mask shape {mask.shape} does not match the image's {holes.shape}")
        holes = holes | mask.astype(bool)
    if not holes.any():
        return img.astype(np.float32)
    img = np.where(holes[..., None] if img.ndim == 3 else holes, 0.0, img)
    out = inpaint_biharmonic(img, holes, channel_axis=-1 if img.ndim == 3 else None)
    return np.asarray(out, dtype=np.float32)


def masked_psnr(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB over the masked (filled) pixels only; ``mask`` (H, W) or the images' shape."""
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    m = np.asarray(mask).astype(bool)
    if m.ndim == ref.ndim - 1:
        m = np.broadcast_to(m[..., None], ref.shape)
    if not m.any():
        raise ValueError("masked_psnr: the mask selects no pixels")
    mse = float(np.mean((ref[m] - est[m]) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


TASK = Task(
    name="inpaint",
    in_channels=2,
    out_channels=1,
    scales=(1,),
    degrade=degrade,
    baseline=biharmonic_baseline,
    baseline_name="biharmonic",
    description=(
        "Fill masked pixels (mask layer/file, NaN or a nodata value); input = image with holes "
        "set to 0 + the mask channel. Metric: PSNR on the filled pixels."
    ),
    defaults={"fill": 0.0},
)
