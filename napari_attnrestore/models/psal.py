"""PSAL: Patch-based Stochastic Attention Layer (Cherel, Almansa, Gousseau and Newson,
arXiv 2202.03163, CVIU 2024), in pure PyTorch, hosted in a small conv encoder-decoder.

Mechanism, as in the paper:

* **PatchMatch** (:func:`patchmatch`) finds, for every query pixel, ``k`` approximate
  nearest-neighbour *patches* (``p x p``, odd ``p``) among the key positions: random
  initialisation, propagation from neighbours (all four directions, step lengths
  8, 4, 2, 1 as in jump flooding, so it is vectorised with index shifts instead of the
  sequential scan order of the original algorithm), and random search with a radius
  halving from the image size down to one pixel.  Propagation and random search start from
  all ``k`` current matches (the reference uses the best one only: three times cheaper, but
  the recall of the true nearest patch drops, e.g. from 0.95 to 0.72 on 24x24 smooth
  random features after 6 iterations).  The cost is the mean
  squared difference over the ``C p^2`` values of a patch pair (the reference sums them;
  the mean keeps a temperature of order one meaningful).  The search runs under
  ``torch.no_grad`` and is deterministic for a seeded generator.
* **Attention**: the ``k`` costs are recomputed *differentiably* from the query and key
  features, ``w = softmax(-cost / T)`` (learnable ``T``), and the values are aggregated.
  With ``aggregation`` (the paper's patch aggregation, default) every pixel gathers the
  matches of the ``p^2`` patches covering it, each shifted back by its offset, and the
  softmax runs over those ``p^2 k`` candidates; gradients reach queries, keys and values.
* **Memory** is ``O(H W k)`` (times the constant ``C p^2``): no ``(H W)^2`` matrix exists.
* **Masked variant** (inpainting): keys and values come only from valid positions, i.e.
  whose whole ``p x p`` patch lies outside the hole (the known-region mask eroded by
  ``p // 2``); candidates inside the hole are never picked (cost ``+inf``).  Every query
  (in particular the hole's) then draws from the known region.

Self-attention matches a patch to itself at cost 0; ``exclude_radius`` r (default 1) forbids
key positions at a Chebyshev distance below r from the query: r = 1 forbids the query's own
position only, r = 2 its 8 neighbours too.

**Search area and tiling.** The non-local search covers the whole feature map the layer
sees, i.e. the whole tile the engine feeds in (tile + halo), at the bottleneck resolution
(``2 ** (len(dims) - 1)`` times coarser).  No halo makes a tiled result equal to a global
one: matches outside the tile are out of reach.  :attr:`PSAL.halo` covers the
convolutional receptive field plus the patch; for inpainting, choose tiles much larger than
the holes so that each tile holds enough known texture.

The host network (ours; the paper inserts the layer into existing inpainting/editing
networks) is a U-Net-like encoder-decoder with EDSR residual blocks and the layer at the
bottleneck.  The ``unshuffle`` and ``image_residual`` options are those of HAT.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import HOLE_FILLS, ResidualBlock, RestorationHead, finish, pad_to_multiple

_BIG = 1.0e4  # cost of an excluded candidate inside the differentiable softmax (finite: no NaN)
_GATHER_BUDGET = 1 << 22  # elements per gathered block of candidate patches (16 MB in float32)


@dataclass
class PSALConfig:
    """Configuration of a PSAL network (defaults: the tiny CPU model)."""

    #: Feature widths per level; the PSAL layer runs at the coarsest (``len(dims) - 1`` downsamplings).
    dims: list[int] = field(default_factory=lambda: [24, 48])
    #: Residual blocks per encoder and per decoder level.
    blocks: int = 1
    #: Residual blocks before and after the PSAL layer at the bottleneck (each).
    mid_blocks: int = 2
    #: Channels of the query/key projections used for matching (None: match on the features).
    match_dim: int | None = 8
    k: int = 3
    patch_size: int = 3
    iters: int = 4
    #: Initial softmax temperature on the (mean squared) patch cost.
    temperature: float = 0.1
    learn_temperature: bool = True
    #: Patch aggregation (softmax over the ``p^2 k`` candidates of the covering patches).
    aggregation: bool = True
    #: Key positions at a Chebyshev distance below this from a query are excluded (0: allow
    #: self-matches, 1: only the query's own position, 2: its 8 neighbours too).
    exclude_radius: int = 1
    #: Masked (inpainting) variant: None -> on when the input has two channels (image, mask).
    masked: bool | None = None
    #: Matches propagated and searched around per pixel (None: all ``k``; 1: the reference's best only).
    spread: int | None = None
    #: Eval-mode PatchMatch is seeded with this value (deterministic output).
    seed: int = 0
    #: Average (True) or sum (the reference) the squared differences over a patch.
    mean_cost: bool = True
    unshuffle: int = 1
    image_residual: bool | str = True  # for demosaicing: "bilinear" (True) or "malvar" base
    #: Masked variant: fill the holes smoothly before the network, which then learns a
    #: correction of that fill (its image residual) instead of the pixels: ``"harmonic"``
    #: (or True; ``layers.harmonic_fill``), ``"biharmonic"`` (``layers.biharmonic_fill``),
    #: or False.
    prefill: bool | str = False
    #: Masked variant: transpose every input whose gaps run more down the columns than along
    #: the rows (and its output back), so that the network always sees row-wise gaps, the
    #: orientation of the scan-line stripes it was trained on; vertical gaps such as dead
    #: sensor columns then get the same fill as horizontal ones.
    gap_rows: bool = False


# ----------------------------------------------------------------------------------------
# PatchMatch


def _patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C*p*p)`` patch vectors (borders replicated)."""
    r = p // 2
    if r:
        x = F.pad(x, (r, r, r, r), mode="replicate")
    return F.unfold(x, p).transpose(1, 2).contiguous()  # rows contiguous: fast index_select


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform numbers of ``shape`` (batch first).  From a (seeded) generator every batch item
    gets the same ones, so an item's matches do not depend on the batch it is run in (the
    engine batches tiles; a batch of one draws what it always drew)."""
    if generator is None:
        return torch.rand(shape, device=device)
    one = torch.rand(shape[1:], generator=generator, device=generator.device).to(device)
    return one.unsqueeze(0).expand(shape)


class _Matcher:
    """State shared by the PatchMatch steps of one call (patch vectors, masks, coordinates)."""

    def __init__(
        self, qp: torch.Tensor, kp: torch.Tensor, qhw: tuple[int, int], khw: tuple[int, int],
        valid: torch.Tensor | None, exclude_radius: int, mean: bool,
    ) -> None:
        self.qp = qp  # B, Nq, D
        self.nk = kp.shape[1]
        self.kp = kp.reshape(-1, kp.shape[-1])  # B * Nk, D (rows for index_select)
        self.qn = qp.square().sum(-1)  # B, Nq
        self.kn = self.kp.square().sum(-1)  # B * Nk
        self._buf: torch.Tensor | None = None  # reused gather buffer: fresh large allocations page-fault
        self.hq, self.wq = qhw
        self.hk, self.wk = khw
        self.valid = valid  # (B, Nk) bool or None
        self.excl = exclude_radius
        self.norm = qp.shape[-1] if mean else 1
        dev = qp.device
        n = self.hq * self.wq
        self.qy = torch.arange(n, device=dev) // self.wq  # (Nq,)
        self.qx = torch.arange(n, device=dev) % self.wq

    def cost(self, idx: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Patch costs ``(B, Nq, M)`` of candidate key indices ``idx (B, Nq, M)`` (inf if forbidden).

        The search uses ``|q|^2 + |k|^2 - 2 q.k`` (a batched matrix product, about twice as fast
        on a CPU); ``exact`` sums the squared differences (used for the returned costs).
        """
        b, nq, m = idx.shape
        d = self.qp.shape[-1]
        out = torch.empty(b, nq, m, device=idx.device, dtype=self.qp.dtype)
        rows = max(1, _GATHER_BUDGET // (m * d))
        need = min(rows, nq) * m * d
        if self._buf is None or self._buf.numel() < need:
            self._buf = torch.empty(need, device=idx.device, dtype=self.kp.dtype)
        for bi in range(b):
            flat = idx[bi] + bi * self.nk
            for s in range(0, nq, rows):
                fi = flat[s : s + rows]
                buf = self._buf[: fi.numel() * d].view(-1, d)
                g = torch.index_select(self.kp, 0, fi.reshape(-1), out=buf).view(fi.shape[0], m, d)
                qv = self.qp[bi, s : s + rows]
                if exact:
                    c = (g - qv.unsqueeze(1)).square_().sum(-1)
                else:
                    dot = torch.bmm(g, qv.unsqueeze(-1)).squeeze(-1)
                    c = (self.qn[bi, s : s + rows].unsqueeze(-1) + self.kn[fi] - 2 * dot).clamp_min_(0)
                out[bi, s : s + rows] = c
        if self.norm != 1:
            out /= self.norm
        return out.masked_fill_(~self.allowed(idx), math.inf)

    def allowed(self, idx: torch.Tensor) -> torch.Tensor:
        ok = torch.ones_like(idx, dtype=torch.bool)
        if self.valid is not None:
            ok &= torch.gather(self.valid, 1, idx.flatten(1)).view_as(idx)
        if self.excl > 0:
            ky, kx = idx // self.wk, idx % self.wk
            near = ((ky - self.qy.view(1, -1, 1)).abs() < self.excl) & ((kx - self.qx.view(1, -1, 1)).abs() < self.excl)
            ok &= ~near
        return ok

    def to_index(self, ky: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
        return ky.clamp(0, self.hk - 1) * self.wk + kx.clamp(0, self.wk - 1)


def _merge(idx: torch.Tensor, dist: torch.Tensor, cidx: torch.Tensor, cdist: torch.Tensor, k: int):
    """Keep the ``k`` best distinct candidates of the current set and new ones, sorted by cost."""
    allidx = torch.cat((idx, cidx), -1)
    alld = torch.cat((dist, cdist), -1)
    sidx, order = allidx.sort(-1)
    sd = alld.gather(-1, order)
    dup = torch.zeros_like(sidx, dtype=torch.bool)
    dup[..., 1:] = sidx[..., 1:] == sidx[..., :-1]
    sd = sd.masked_fill(dup, math.inf)
    best, pos = sd.topk(k, dim=-1, largest=False, sorted=True)
    return sidx.gather(-1, pos), best


@torch.no_grad()
def patchmatch(
    query_feat: torch.Tensor,
    key_feat: torch.Tensor,
    k: int,
    patch_size: int = 3,
    iters: int = 5,
    valid_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    *,
    exclude_radius: int = 0,
    steps: tuple[int, ...] = (8, 4, 2, 1),
    mean_cost: bool = True,
    spread: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate k nearest-neighbour patches of every query pixel among the key pixels.

    Parameters
    ----------
    query_feat, key_feat
        ``(B, C, Hq, Wq)`` and ``(B, C, Hk, Wk)``.
    k
        Neighbours per query.
    patch_size
        Odd side ``p`` of the compared patches (borders replicated).
    iters
        PatchMatch iterations (propagation at every step length and direction, then random search).
    valid_mask
        ``(B, Hk, Wk)`` or ``(B, 1, Hk, Wk)``, True where a key position may be matched.  A batch
        element with no valid position is treated as all valid.
    generator
        Random source (``torch.Generator``); seeded, the result is deterministic.
    exclude_radius
        Forbid keys at a Chebyshev distance below this from the query's own position
        (self-attention; 1: the position itself).
    steps
        Propagation step lengths, visited in this order in every iteration.
    mean_cost
        Cost = mean (True) or sum of the squared differences over the ``C p^2`` patch values.
    spread
        How many of the current best matches are propagated and searched around (default all
        ``k``; 1 is the reference's "best only", cheaper but with a lower recall).

    Returns
    -------
    indices, distances
        ``(B, Hq*Wq, k)`` flat key indices (``y * Wk + x``) and their costs, sorted by cost;
        ``inf`` marks a slot for which no allowed candidate was found.

    Memory is ``O(Hq Wq (k + C p^2))``; time
    ``O(Hq Wq C p^2 iters spread (4 len(steps) + log2 max(Hk, Wk)))``.
    """
    if patch_size % 2 != 1:
        raise ValueError(f"patch_size must be odd, got {patch_size}")
    b, c, hq, wq = query_feat.shape
    bk, ck, hk, wk = key_feat.shape
    if (bk, ck) != (b, c):
        raise ValueError("query and key features need the same batch size and channels")
    nq, nk = hq * wq, hk * wk
    dev = query_feat.device
    qp = _patches(query_feat.float(), patch_size)
    kp = _patches(key_feat.float(), patch_size)
    valid = None
    if valid_mask is not None:
        valid = valid_mask.reshape(b, nk).to(device=dev, dtype=torch.bool).clone()
        valid[valid.sum(1) == 0] = True
    mt = _Matcher(qp, kp, (hq, wq), (hk, wk), valid, exclude_radius, mean_cost)

    # random initialisation among the allowed (valid) key positions
    u = _uniform((b, nq, k), generator, dev)
    if valid is None:
        idx = (u * nk).long().clamp_(max=nk - 1)
    else:
        order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices  # valid positions first
        count = valid.sum(1).view(b, 1, 1)
        rank = (u * count).long().minimum(count - 1)
        idx = torch.gather(order, 1, rank.view(b, -1)).view(b, nq, k)
    dist = mt.cost(idx)
    idx, dist = _merge(idx[..., :0], dist[..., :0], idx, dist, k)

    spread = k if spread is None else max(1, min(spread, k))
    steps = tuple(s for s in steps if s < max(hq, wq)) or (1,)  # longer steps only leave the image
    radii = []
    r = max(hk, wk)
    while r >= 1:
        radii.append(r)
        r //= 2
    dirs = ((1, 0), (-1, 0), (0, 1), (0, -1))
    for _ in range(iters):
        # propagation: a neighbour's best matches, shifted back by the step, are candidates
        for s in steps:
            top = idx[..., :spread]  # B, Nq, S
            by, bx = top // wk, top % wk
            cands = []
            for dy, dx in dirs:
                ny, nx = mt.qy + dy * s, mt.qx + dx * s
                inside = (ny >= 0) & (ny < hq) & (nx >= 0) & (nx < wq)
                nb = ny.clamp(0, hq - 1) * wq + nx.clamp(0, wq - 1)
                ci = mt.to_index(by[:, nb] - dy * s, bx[:, nb] - dx * s)
                cands.append(torch.where(inside.view(1, -1, 1), ci, top))  # outside: duplicates
            cidx = torch.cat(cands, -1)
            idx, dist = _merge(idx, dist, cidx, mt.cost(cidx), k)
        # random search around the current best ones, radius halving down to one pixel
        top = idx[..., :spread]
        by, bx = (top // wk).unsqueeze(-1), (top % wk).unsqueeze(-1)  # B, Nq, S, 1
        rad = torch.tensor(radii, device=dev).view(1, 1, 1, -1)
        shape = (*top.shape, len(radii))
        cy = by + ((_uniform(shape, generator, dev) * 2 - 1) * rad).round().long()
        cx = bx + ((_uniform(shape, generator, dev) * 2 - 1) * rad).round().long()
        cidx = mt.to_index(cy, cx).flatten(2)
        idx, dist = _merge(idx, dist, cidx, mt.cost(cidx), k)
    dist = mt.cost(idx, exact=True)  # exact costs of the final matches (the order barely changes)
    dist, order = dist.sort(-1)
    idx = idx.gather(-1, order)
    # a slot left without an allowed match repeats the best one (still flagged by its inf cost)
    return torch.where(torch.isfinite(dist), idx, idx[..., :1]), dist


@torch.no_grad()
def exact_knn(
    query_feat: torch.Tensor,
    key_feat: torch.Tensor,
    k: int,
    patch_size: int = 3,
    valid_mask: torch.Tensor | None = None,
    *,
    exclude_radius: int = 0,
    mean_cost: bool = True,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force k nearest-neighbour patches (same cost and rules as :func:`patchmatch`).

    ``O(Nq Nk)`` time, ``O(chunk * Nk)`` memory: the correctness oracle for small inputs.
    """
    b, _, hq, wq = query_feat.shape
    hk, wk = key_feat.shape[-2:]
    qp = _patches(query_feat.float(), patch_size)
    kp = _patches(key_feat.float(), patch_size)
    norm = qp.shape[-1] if mean_cost else 1
    nk = hk * wk
    valid = None if valid_mask is None else valid_mask.reshape(b, nk).to(torch.bool)
    ky = torch.arange(nk, device=kp.device) // wk
    kx = torch.arange(nk, device=kp.device) % wk
    out_i, out_d = [], []
    for s in range(0, hq * wq, chunk):
        d = torch.cdist(qp[:, s : s + chunk].double(), kp.double()).square().float() / norm  # B, n, Nk
        n = d.shape[1]
        if valid is not None:
            d = d.masked_fill(~valid.unsqueeze(1), math.inf)
        if exclude_radius > 0:
            q = torch.arange(s, s + n, device=kp.device)
            near = ((ky.view(1, -1) - (q // wq).view(-1, 1)).abs() < exclude_radius) & (
                (kx.view(1, -1) - (q % wq).view(-1, 1)).abs() < exclude_radius
            )
            d = d.masked_fill(near.unsqueeze(0), math.inf)
        best, pos = d.topk(k, dim=-1, largest=False)
        out_i.append(pos)
        out_d.append(best)
    return torch.cat(out_i, 1), torch.cat(out_d, 1)


# ----------------------------------------------------------------------------------------
# The attention layer


def _shift_index(idx: torch.Tensor, h: int, w: int, hk: int, wk: int, dy: int, dx: int):
    """Matches of the query neighbour at ``(+dy, +dx)``, shifted back by the same offset.

    ``idx (B, h*w, k)`` -> (indices ``(B, h*w, k)``, neighbour flat positions ``(h*w,)``,
    inside ``(h*w,)`` whether the neighbour exists).
    """
    dev = idx.device
    qy = torch.arange(h * w, device=dev) // w
    qx = torch.arange(h * w, device=dev) % w
    ny, nx = qy + dy, qx + dx
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    nb = ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1)
    m = idx[:, nb]  # B, N, k
    ky = (m // wk - dy).clamp(0, hk - 1)
    kx = (m % wk - dx).clamp(0, wk - 1)
    return ky * wk + kx, nb, inside


def _take_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t (B, Nk, D)``, ``idx (B, N, K)`` -> ``t[b, idx[b, n, j]]`` as ``(B, N, K, D)`` (row gather)."""
    b, nk, d = t.shape
    flat = idx + torch.arange(b, device=idx.device).view(b, 1, 1) * nk
    return t.reshape(b * nk, d).index_select(0, flat.reshape(-1)).view(*idx.shape, d)


def _weighted_sum(wts: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """``sum_j wts[..., j] * vals[..., j, :]`` (a loop over the few ``K``: faster than matmul on a CPU)."""
    out = wts[..., 0:1] * vals[..., 0, :]
    for j in range(1, wts.shape[-1]):
        out = out + wts[..., j : j + 1] * vals[..., j, :]
    return out


def patch_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
    found: torch.Tensor,
    patch_size: int,
    temperature: torch.Tensor | float,
    aggregation: bool = True,
    mean_cost: bool = True,
    cost: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable attention over given matches.

    ``q (B, C, H, W)``, ``k (B, C, Hk, Wk)``, ``v (B, Cv, Hk, Wk)``; ``idx (B, H*W, K)`` the
    matches; ``found (B, H*W, K)`` False for slots without an allowed match.  The costs are
    recomputed from ``q`` and ``k`` (so they carry gradients) unless ``cost (B, H*W, K)`` is
    given (e.g. PatchMatch's exact costs when no gradient is needed); ``w = softmax(-cost / T)``.
    Returns ``(B, Cv, H, W)``.
    """
    b, _, h, w = q.shape
    hk, wk = k.shape[-2:]
    kn = idx.shape[-1]
    if cost is None:
        qp = _patches(q.float(), patch_size)  # B, N, D
        kp = _patches(k.float(), patch_size)  # B, Nk, D
        d = qp.shape[-1]
        # one neighbour slot at a time: O(H W D) alive instead of O(H W K D)
        cost = torch.stack([(_take_rows(kp, idx[..., j : j + 1]).squeeze(2) - qp).square().sum(-1) for j in range(kn)], -1)
        if mean_cost:
            cost = cost / d
    cost = torch.where(found, cost.float(), torch.full_like(cost, _BIG, dtype=torch.float32))
    vf = v.flatten(2).transpose(1, 2).contiguous()  # B, Nk, Cv
    cv = vf.shape[-1]
    if not aggregation:
        wts = torch.softmax(-cost / temperature, dim=-1)  # B, N, K
        out = _weighted_sum(wts, _take_rows(vf, idx))
        return out.transpose(1, 2).reshape(b, cv, h, w)
    r = patch_size // 2
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    logits, shifted = [], []
    for dy, dx in offsets:
        sidx, nb, inside = _shift_index(idx, h, w, hk, wk, dy, dx)
        ncost = cost[:, nb]  # the neighbour's patch costs
        lg = -ncost / temperature
        lg = lg.masked_fill(~inside.view(1, -1, 1), -_BIG)
        logits.append(lg)
        shifted.append(sidx)
    wts = torch.softmax(torch.cat(logits, -1), dim=-1).view(b, h * w, len(offsets), kn)
    out = None
    for j, sidx in enumerate(shifted):  # one offset at a time: O(H W K Cv) alive in inference
        part = _weighted_sum(wts[:, :, j], _take_rows(vf, sidx))
        out = part if out is None else out + part
    return out.transpose(1, 2).reshape(b, cv, h, w)


class PatchStochasticAttention(nn.Module):
    """PSAL block: projections, PatchMatch search, patch attention, fusion and a residual.

    ``forward(x, valid=None)``: ``x (B, C, H, W)``; ``valid (B, 1, H, W)`` bool marks the key
    positions that may be matched (masked variant), None for plain self-attention.
    """

    def __init__(self, dim: int, cfg: PSALConfig) -> None:
        super().__init__()
        md = cfg.match_dim or dim
        self.cfg = cfg
        self.to_q = nn.Conv2d(dim, md, 1)
        self.to_k = nn.Conv2d(dim, md, 1)
        self.to_v = nn.Conv2d(dim, dim, 1)
        self.fuse = nn.Conv2d(2 * dim, dim, 1)
        log_t = torch.tensor(math.log(cfg.temperature))
        if cfg.learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        gen = None
        if not self.training:
            gen = torch.Generator(device=x.device)
            gen.manual_seed(cfg.seed)
        idx, dist = patchmatch(
            q.detach(), k.detach(), cfg.k, cfg.patch_size, cfg.iters, valid, gen,
            exclude_radius=cfg.exclude_radius, mean_cost=cfg.mean_cost, spread=cfg.spread,
        )
        found = torch.isfinite(dist)
        need_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
        att = patch_attention(
            q, k, v, idx, found, cfg.patch_size, self.log_temperature.exp(), cfg.aggregation, cfg.mean_cost,
            cost=None if need_grad else dist,
        )
        return x + self.fuse(torch.cat((x, att.to(x.dtype)), 1))


def gaps_run_down_columns(mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` True where a ``(B, 1, H, W)`` hole mask changes more often along the rows than
    down the columns, that is, where its gaps are mostly vertical (ties: False)."""
    m = (mask > 0.5).float()
    along_rows = (m[..., :, 1:] - m[..., :, :-1]).abs().sum((1, 2, 3))
    down_columns = (m[..., 1:, :] - m[..., :-1, :]).abs().sum((1, 2, 3))
    return along_rows > down_columns


class PSAL(nn.Module):
    """Encoder-decoder with a patch-based stochastic attention layer at the bottleneck."""

    arch = "psal"
    config_class = PSALConfig
    half_safe = True  # matching and attention weights are computed in float32

    def __init__(self, in_channels: int = 1, out_channels: int = 1, scale: int = 1, **config) -> None:
        super().__init__()
        cfg = PSALConfig(**config)
        if cfg.patch_size % 2 != 1:
            raise ValueError(f"patch_size must be odd, got {cfg.patch_size}")
        if cfg.prefill is True:
            cfg.prefill = "harmonic"
        if cfg.prefill and cfg.prefill not in HOLE_FILLS:
            raise ValueError(f"unknown prefill {cfg.prefill!r}; choose from {', '.join(HOLE_FILLS)} or False")
        self.cfg = cfg
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale
        self.masked = (in_channels == 2) if cfg.masked is None else bool(cfg.masked)
        u = cfg.unshuffle
        dims = cfg.dims
        self.unshuffle = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
        self.conv_first = nn.Conv2d(in_channels * u * u, dims[0], 3, padding=1)
        self.enc = nn.ModuleList(
            nn.Sequential(*[ResidualBlock(d) for _ in range(cfg.blocks)]) for d in dims[:-1]
        )
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in itertools.pairwise(dims))
        self.mid1 = nn.Sequential(*[ResidualBlock(dims[-1]) for _ in range(cfg.mid_blocks)])
        self.psal = PatchStochasticAttention(dims[-1], cfg)
        self.mid2 = nn.Sequential(*[ResidualBlock(dims[-1]) for _ in range(cfg.mid_blocks)])
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(b, 4 * a, 3, padding=1), nn.PixelShuffle(2)) for a, b in itertools.pairwise(dims)
        )
        self.dec = nn.ModuleList(
            nn.Sequential(*[ResidualBlock(d) for _ in range(cfg.blocks)]) for d in dims[:-1]
        )
        self.conv_after_body = nn.Conv2d(dims[0], dims[0], 3, padding=1)
        self.head = RestorationHead(dims[0], out_channels, scale, u)

    @property
    def levels(self) -> int:
        return len(self.cfg.dims) - 1

    @property
    def multiple_of(self) -> int:
        """Input sizes are padded internally to this multiple (the downsamplings)."""
        return 2**self.levels * self.cfg.unshuffle

    @property
    def halo(self) -> int:
        """Suggested tile overlap in input pixels.

        The receptive field of the convolutions plus the ``p x p`` patch at the bottleneck,
        in input pixels, rounded up to a multiple of 8 and of :attr:`multiple_of` (at least 16).
        The non-local search itself covers the whole tile and cannot be bounded by a halo:
        tiles should be large (see the module doc).
        """
        cfg, lv = self.cfg, self.levels
        rf = 3  # radius in body pixels: conv_first, conv_after_body, the head's conv
        for j in range(lv):  # encoder and decoder blocks at level j, the down and up convs
            rf += 2 * (2 * cfg.blocks) * 2**j + 2**j + 2 ** (j + 1)
        rf += 2 * (2 * cfg.mid_blocks) * 2**lv  # bottleneck blocks
        rf += 2 * (cfg.patch_size // 2) * 2**lv  # the compared patch and the covering patches
        rf *= cfg.unshuffle
        m = math.lcm(self.multiple_of, 8)
        return max(16, int(math.ceil(rf / m) * m))

    def _valid_keys(self, mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Key positions at the bottleneck whose whole patch lies in the known region."""
        hole = (mask > 0.5).float()
        hole = F.adaptive_max_pool2d(hole, (h, w)) if hole.shape[-2:] != (h, w) else hole
        r = self.cfg.patch_size // 2
        if r:
            hole = F.max_pool2d(hole, 2 * r + 1, stride=1, padding=r)
        return hole < 0.5

    @property
    def orients_itself(self) -> bool:
        """True when the network turns column-wise gaps to rows itself (``gap_rows``): a
        quarter-turned input then gives what its mirror image gives (see
        :attr:`ensemble_orientations`)."""
        return self.masked and bool(self.cfg.gap_rows) and self.scale == 1

    @property
    def ensemble_orientations(self) -> tuple[tuple[int, bool], ...] | None:
        """The self-ensemble's distinct orientations (quarter turns, mirrored), None: all 8.

        A network that turns its gaps to rows (:attr:`orients_itself`) needs only the 4 that
        keep rows as rows.
        """
        return tuple((k, flip) for k in (0, 2) for flip in (False, True)) if self.orients_itself else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.orients_itself:
            turn = gaps_run_down_columns(x[:, -1:])
            if bool(turn.any()):
                keep = ~turn
                y = x.new_empty((x.shape[0], self.out_channels, *x.shape[-2:]))
                if bool(keep.any()):
                    y[keep] = self._restore(x[keep])
                y[turn] = self._restore(x[turn].transpose(-2, -1)).transpose(-2, -1)
                return y
        return self._restore(x)

    def _restore(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = pad_to_multiple(x, self.multiple_of)
        if self.masked and self.cfg.prefill:
            xp = torch.cat([HOLE_FILLS[self.cfg.prefill](xp[:, :1], xp[:, -1:] > 0.5), xp[:, 1:]], dim=1)
        y = self.conv_first(self.unshuffle(xp))
        f0 = y
        skips = []
        for enc, down in zip(self.enc, self.down, strict=True):
            y = enc(y)
            skips.append(y)
            y = down(y)
        y = self.mid1(y)
        valid = self._valid_keys(xp[:, -1:], *y.shape[-2:]) if self.masked else None
        y = self.psal(y, valid)
        y = self.mid2(y)
        for up, dec, skip in zip(self.up[::-1], self.dec[::-1], skips[::-1], strict=True):
            y = dec(up(y) + skip)
        y = self.conv_after_body(y) + f0
        return finish(self.head(y), xp, h, w, self.cfg.image_residual, self.out_channels, self.scale)
