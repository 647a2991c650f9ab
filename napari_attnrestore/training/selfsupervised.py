"""Self-supervised training on the user's own degraded images, with no clean reference.

Denoising: blind-spot masking (Noise2Void / Noise2Self, :class:`BlindSpotLoss`),
neighbour sub-sampling (Neighbor2Neighbor, :class:`Neighbor2NeighborLoss`), or Stein's
unbiased risk estimate for Gaussian noise (:class:`SureLoss`).  Inpainting:
known pixels are hidden behind random masks and the network learns to fill them
(:func:`hide_known`).

Blind-spot denoising:
A random subset of pixels is hidden: each is replaced by a random neighbour from its
5x5 window (never itself), the network restores the whole patch, and the loss compares
the output at the hidden pixels with their original noisy values.  Because the noise
is independent from pixel to pixel, the best prediction of a hidden noisy value from
its neighbours is the clean value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..tasks.inpaint import KINDS
from .gaps import filled, known_pixels, known_target, mean_known


def blind_spot_mask(shape: tuple[int, ...], fraction: float, gen: torch.Generator) -> torch.Tensor:
    """Boolean ``(B, 1, H, W)`` mask hiding about ``fraction`` of the pixels (stratified grid)."""
    b, _, h, w = shape
    cell = max(1, round((1 / max(fraction, 1e-6)) ** 0.5))
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool)
    gh, gw = -(-h // cell), -(-w // cell)
    oy = torch.randint(0, cell, (b, gh, gw), generator=gen)
    ox = torch.randint(0, cell, (b, gh, gw), generator=gen)
    ys = (torch.arange(gh)[:, None] * cell + oy).clamp(max=h - 1)
    xs = (torch.arange(gw)[None, :] * cell + ox).clamp(max=w - 1)
    bi = torch.arange(b)[:, None, None].expand_as(ys)
    mask[bi, 0, ys, xs] = True
    return mask


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror indices at the borders (never onto the pixel itself, unlike clamping)."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i).clamp(0, n - 1)


def replace_with_neighbours(x: torch.Tensor, mask: torch.Tensor, gen: torch.Generator, radius: int = 2) -> torch.Tensor:
    """Replace masked pixels by a random other pixel of their ``(2r+1)^2`` neighbourhood."""
    b, c, h, w = x.shape
    dy = torch.randint(-radius, radius + 1, (b, 1, h, w), generator=gen)
    dx = torch.randint(-radius, radius + 1, (b, 1, h, w), generator=gen)
    same = (dy == 0) & (dx == 0)
    dx = torch.where(same, torch.where(torch.rand(b, 1, h, w, generator=gen) < 0.5, -1, 1), dx)
    y0 = torch.arange(h)[None, None, :, None].expand(b, 1, h, w)
    x0 = torch.arange(w)[None, None, None, :].expand(b, 1, h, w)
    yy, xx = _reflect(y0 + dy, h), _reflect(x0 + dx, w)
    onto_self = (yy == y0) & (xx == x0)  # a reflection at the border can land on the pixel itself
    yy = torch.where(onto_self, y0, yy)
    xx = torch.where(onto_self, torch.where(x0 > 0, x0 - 1, x0 + 1).clamp(0, w - 1), xx)
    flat = x.reshape(b, c, h * w)
    idx = (yy * w + xx).reshape(b, 1, h * w).expand(b, c, h * w)
    shuffled = torch.gather(flat, 2, idx).reshape(b, c, h, w)
    return torch.where(mask, shuffled, x)


class BlindSpotLoss:
    """``loss(model, noisy, noisy)`` for :func:`napari_attnrestore.training.fit`."""

    def __init__(self, fraction: float = 0.02, seed: int = 0, loss: str = "l2") -> None:
        self.fraction = fraction
        self.gen = torch.Generator().manual_seed(seed)
        self.loss = loss

    def __call__(self, model: nn.Module, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = blind_spot_mask(tuple(noisy.shape), self.fraction, self.gen).to(noisy.device)
        inp = replace_with_neighbours(filled(noisy).cpu(), mask.cpu(), self.gen).to(noisy.device)
        out = model(inp)
        target, known = known_target(target)  # the image's own gaps are not scored
        diff = out - target
        return mean_known(diff.abs() if self.loss == "l1" else diff.square(),
                          mask if known is None else mask & known)


#: Ordered pairs of 4-adjacent pixels in a 2x2 cell (indices ``dy * 2 + dx``).
NEIGHBOUR_PAIRS = torch.tensor([(0, 1), (1, 0), (0, 2), (2, 0), (1, 3), (3, 1), (2, 3), (3, 2)])


def neighbour_choice(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random ordered neighbour pair per 2x2 cell of ``x`` (index into :data:`NEIGHBOUR_PAIRS`)."""
    b, _, h, w = x.shape
    return torch.randint(0, len(NEIGHBOUR_PAIRS), (b, 1, h // 2, w // 2), generator=gen)


def neighbour_subsample(x: torch.Tensor, choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two half-size images ``g1(x), g2(x)``: from each 2x2 cell, two adjacent pixels."""
    b, c, h, w = x.shape
    cells = nn.functional.pixel_unshuffle(x[:, :, : h // 2 * 2, : w // 2 * 2], 2).view(b, c, 4, h // 2, w // 2)
    pairs = NEIGHBOUR_PAIRS.to(x.device)[choice[:, 0]]  # (B, h, w, 2)
    take = lambda k: torch.gather(cells, 2, pairs[..., k][:, None, None].expand(b, c, 1, h // 2, w // 2))[:, :, 0]  # noqa: E731
    return take(0), take(1)


class Neighbor2NeighborLoss:
    """Neighbor2Neighbor (Huang et al., CVPR 2021) for :func:`napari_attnrestore.training.fit`.

    Two half-size images are drawn from one noisy patch by taking two adjacent pixels of
    every 2x2 cell; their noise is independent and their signals nearly equal, so the
    network learns to map one onto the other: ``|f(g1) - g2|^2`` plus ``gamma`` times the
    regularizer ``|f(g1) - g2 - (g1(f(y)) - g2(f(y)))|^2`` (``f(y)`` without gradient),
    which corrects for the small signal difference between neighbours.  Every pixel
    contributes, unlike blind-spot training.  Use with ``make_pair = lambda y, gen: (y,
    neighbour_choice(y, gen))`` so the random choice comes from the loop's (resumable)
    generator.
    """

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = gamma

    def __call__(self, model: nn.Module, noisy: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        g1, g2 = neighbour_subsample(noisy, choice)
        out = model(filled(g1))
        # pairs with a gap pixel on either side are not scored
        g2, known = known_target(g2)
        if known is not None:
            known = known & torch.isfinite(g1)
        loss = mean_known((out - g2).square(), known)
        if self.gamma:
            with torch.no_grad():
                full = model(filled(noisy))
            f1, f2 = neighbour_subsample(full, choice)
            loss = loss + self.gamma * mean_known((out - g2 - (f1 - f2)).square(), known)
        return loss


def patch_noise_sigma(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 1, 1)`` noise level of each patch of ``x`` from its finest diagonal Haar
    coefficients (median absolute deviation / 0.6745, Donoho's estimator)."""
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    d = (x[:, :, 0::2, 0::2] - x[:, :, 0::2, 1::2] - x[:, :, 1::2, 0::2] + x[:, :, 1::2, 1::2]) / 2
    d = d.abs().reshape(b, -1)
    mad = d.median(dim=1).values if bool(torch.isfinite(d).all()) else d.nanmedian(dim=1).values  # cells in gaps left out
    return (mad / 0.6745).reshape(b, 1, 1, 1)


def with_sigma_plane(image: np.ndarray, sigma: float) -> np.ndarray:
    """``(2, H, W)``: a gray noisy image and a constant plane holding its noise level, so
    the level travels with every patch the sampler cuts (see :class:`SureLoss`)."""
    im = np.asarray(image, dtype=np.float32)
    return np.stack([im, np.full_like(im, sigma)])


class SureLoss:
    """Stein's unbiased risk estimate (Stein 1981; as a training loss, Soltanayev & Chun,
    NeurIPS 2018, and Metzler et al. 2018) for :func:`napari_attnrestore.training.fit`.

    For Gaussian noise of level ``sigma``,
    ``|f(y) - y|^2 / N - sigma^2 + 2 sigma^2 div f(y) / N`` has the expectation of the
    supervised ``|f(y) - x|^2 / N``, yet needs no clean ``x``: only the noisy patch and its
    noise level, which is estimated from the noisy data itself.  The divergence is a Monte
    Carlo estimate, ``b . (f(y + eps b) - f(y)) / eps`` with ``b`` standard normal.  Both
    passes draw the same random numbers (ACLA's Gumbel key choice is random while
    training), so their difference is the network's response to ``eps b`` alone.
    ``make_pair`` gives ``(noisy, sigma)``, ``sigma`` broadcastable to ``(B, 1, 1, 1)``.
    The passes run in float32 even under bfloat16 training: bfloat16's rounding (about 4e-3
    of the value) would swamp the ``eps`` response.
    """

    def __init__(self, eps: float = 1e-3, seed: int = 0) -> None:
        self.eps = eps
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        var = sigma.reshape(sigma.shape[0], -1)[:, 0].to(noisy).square()
        probe = torch.randn(noisy.shape, generator=self.gen).to(noisy)
        known = known_pixels(noisy)
        if known is not None:
            return self._with_gaps(model, filled(noisy), known, var, probe)
        cuda = [noisy.device] if noisy.device.type == "cuda" else []
        with torch.autocast(noisy.device.type, enabled=False):
            noisy = noisy.float()
            with torch.random.fork_rng(devices=cuda):  # the RNG state is put back, so the second pass replays it
                out = model(noisy)
            shifted = model(noisy + self.eps * probe.float())
        div = (probe * (shifted - out)).flatten(1).sum(1) / self.eps
        risk = (out - noisy).square().flatten(1).mean(1) - var + 2 * var * div / noisy[0].numel()
        return risk.mean()

    def _with_gaps(self, model: nn.Module, noisy: torch.Tensor, known: torch.Tensor, var: torch.Tensor,
                   probe: torch.Tensor) -> torch.Tensor:
        """The risk over the known pixels of patches with gaps (``noisy`` filled): the filled
        pixels are no noisy measurements, so they are neither scored nor probed."""
        cuda = [noisy.device] if noisy.device.type == "cuda" else []
        weight = known.to(noisy.dtype)
        probe = probe * weight
        with torch.autocast(noisy.device.type, enabled=False):
            noisy = noisy.float()
            with torch.random.fork_rng(devices=cuda):
                out = model(noisy)
            shifted = model(noisy + self.eps * probe.float())
        n = weight.flatten(1).sum(1)
        div = (probe * (shifted - out)).flatten(1).sum(1) / self.eps
        scored = (n > 0) & torch.isfinite(var)  # a patch that is all gap, or whose noise level is unknown
        var, n = torch.where(scored, var, torch.zeros_like(var)), n.clamp(min=1)
        risk = ((out - noisy).square() * weight).flatten(1).sum(1) / n - var + 2 * var * div / n
        if not bool(scored.any()):
            return (out * 0).sum()
        return risk[scored].mean()


def denoise_objective(method: str, seed: int = 0):
    """``(loss_fn, make_pair)`` of a self-supervised denoising ``method``.

    ``"sure"`` reads the noise level from a second input channel when there is one
    (:func:`with_sigma_plane`), else estimates it from each patch (:func:`patch_noise_sigma`).
    """
    if method in ("neighbor2neighbor", "nbr2nbr"):
        return Neighbor2NeighborLoss(), lambda y, gen: (y, neighbour_choice(y, gen))
    if method in ("blind-spot", "n2v", "noise2void"):
        return BlindSpotLoss(seed=seed), lambda y, gen: (y, y)
    if method == "sure":
        return SureLoss(seed=seed), lambda y, gen: (y[:, :1], y[:, 1:2] if y.shape[1] == 2 else patch_noise_sigma(y))
    raise ValueError(f"unknown self-supervised denoising method {method!r}; use one of {', '.join(SSL_METHODS)}")


SSL_METHODS = ("neighbor2neighbor", "blind-spot", "sure")


def hole_loss(crit):
    """Inpainting loss over the hole pixels whose target is known (finite).

    The input's last channel is the hole mask.  Known pixels are kept by the engine, so they
    carry no loss; holes the image already had (NaN targets) cannot be scored.
    """

    def loss(model: nn.Module, inp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        scored = (inp[:, -1:] > 0.5).expand_as(target) & torch.isfinite(target)
        if not scored.any():
            return (model(inp) * 0).sum()
        return crit(model(inp)[scored], target[scored])

    return loss


def hide_known(x: torch.Tensor, gen: torch.Generator, kinds: Sequence[str] = KINDS) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-supervised inpainting pair from gapped patches ``x`` (NaN = the image's own holes).

    Random masks (:func:`~napari_attnrestore.tasks.inpaint.make_training_pair`) hide known
    pixels too; the input marks old and new holes, the target is ``x`` itself (NaN where
    nothing is known), so :func:`hole_loss` scores the hidden known pixels only.
    """
    from ..tasks.inpaint import make_training_pair

    own = ~torch.isfinite(x)
    inp, _ = make_training_pair(torch.where(own, torch.zeros_like(x), x), gen, kinds=kinds)
    holes = (inp[:, -1:] > 0.5) | own.any(dim=1, keepdim=True)
    img = torch.where(holes, torch.zeros_like(x), inp[:, :-1])
    return torch.cat([img, holes.to(x.dtype)], dim=1), x
