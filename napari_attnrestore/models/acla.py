"""ACLA: Adaptive Cross-Layer Attention (Wang, Xu and Yang, arXiv 2203.03619), scaled down.

Mechanism, as in the paper:

* **Cross-layer attention**: a query pixel of the current layer attends to keys taken from
  *several previous layers* of the network (here: the head features, the outputs of the
  earlier ACLA insertion points, and the current layer itself), not only its own layer.
* **Deformable key sampling**: instead of all ``H W`` keys of a layer, each query takes
  ``K`` keys per key layer at positions ``p + dp`` whose offsets ``dp`` are *predicted from
  the query* (a 1x1 conv); keys and values are read with bilinear interpolation
  (:func:`torch.nn.functional.grid_sample`), so the offsets are learned by backpropagation.
  Memory is ``O(H W K L)`` for ``L`` key layers, never ``(H W)^2``; in inference the layers
  are visited one at a time with an online softmax, so only ``O(H W K)`` sampled keys are
  alive at once.
* **Adaptive key selection**: per query and per key layer, a Gumbel-softmax chooses how
  many of the ``K`` keys to use (``0 .. K``; ``0`` drops that layer for this query; the
  query's own layer keeps at least one key so the softmax is never empty).  In training the
  choice is a *hard* one-hot sample with straight-through gradients (the soft probabilities
  carry the gradient); in eval it is the deterministic argmax.  The attention is a softmax
  over the selected keys of all key layers, with logits ``q . k / sqrt(C)`` plus a
  query-predicted bias per (layer, key) (the CLA weight branch).
* **Insertion positions**: the paper finds them with a differentiable architecture search;
  here they are a documented configuration, ``positions`` (indices of the residual blocks
  after which an ACLA module is inserted).  The paper preset uses the four-stage EDSR-CLA
  wiring of the authors' repository.

The backbone is EDSR-like (conv, residual blocks, conv + long skip, task head), as in the
paper's SR experiments.  The ``unshuffle`` and ``image_residual`` options are those of HAT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ResidualBlock, RestorationHead, finish, pad_to_multiple

_NEG = -1.0e4  # "minus infinity" that stays finite under Gumbel noise and in half precision


@dataclass
class ACLAConfig:
    """Configuration of an ACLA network (defaults: the tiny CPU model)."""

    dim: int = 32
    n_blocks: int = 8
    #: ACLA modules are inserted after these residual blocks (0-based indices).
    positions: list[int] = field(default_factory=lambda: [3, 7])
    #: ``K``: keys sampled per query in each key layer.
    keys: int = 4
    #: Cap on key layers per module (the current layer first, then the most recent ones); None: all.
    max_key_layers: int | None = None
    #: Offsets are squashed to ``max_offset * tanh(dp / max_offset)`` pixels (bounds the halo).
    max_offset: float = 16.0
    #: Radius (pixels) of the ring on which the keys start (key 0 starts at the query position).
    init_radius: float = 1.0
    #: Gumbel-softmax temperature (anneal with :meth:`ACLA.set_temperature`, e.g. 1 -> 0.1).
    tau: float = 1.0
    res_scale: float = 1.0
    unshuffle: int = 1
    image_residual: bool | str = True  # for demosaicing: "bilinear" (True) or "malvar" base


def gumbel_select(
    logits: torch.Tensor,
    tau: float = 1.0,
    dim: int = -1,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Hard one-hot choice along ``dim``.

    Training: a Gumbel-softmax sample, hard in the forward pass (exact one-hot) with the
    straight-through estimator (the gradient is that of the soft sample).  Eval: the
    deterministic one-hot argmax of ``logits`` (no noise, no gradient through the choice).
    """
    if not training:
        idx = logits.argmax(dim, keepdim=True)
        return torch.zeros_like(logits).scatter_(dim, idx, 1.0)
    u = torch.rand(logits.shape, generator=generator, device=logits.device if generator is None else generator.device)
    u = u.to(device=logits.device, dtype=logits.dtype)
    g = -torch.log((-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10))  # Gumbel(0, 1) noise
    soft = torch.softmax((logits + g) / tau, dim)
    hard = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return hard - soft.detach() + soft


def _initial_offsets(layers: int, keys: int, radius: float) -> torch.Tensor:
    """Starting key offsets ``(L, K, 2)`` as ``(dy, dx)``: key 0 at the query, the others on rings."""
    off = torch.zeros(layers, keys, 2)
    for k in range(1, keys):
        ring = (k - 1) // 8 + 1
        n_on_ring = min(8, keys - 1 - (ring - 1) * 8)
        a = 2 * math.pi * ((k - 1) % 8) / n_on_ring + 0.3 * ring
        off[:, k, 0] = radius * ring * math.sin(a)
        off[:, k, 1] = radius * ring * math.cos(a)
    return off


class CrossLayerAttention(nn.Module):
    """One ACLA module: deformable cross-layer attention with Gumbel key selection.

    ``forward(query, key_layers)``: ``query (B, C, H, W)``; ``key_layers`` a list of ``L``
    maps ``(B, C, H, W)``, the query's own layer first.  Returns ``query + proj(attention)``.
    """

    def __init__(
        self, dim: int, layers: int, keys: int, max_offset: float = 16.0, init_radius: float = 1.0, tau: float = 1.0
    ) -> None:
        super().__init__()
        self.dim, self.layers, self.keys = dim, layers, keys
        self.max_offset, self.tau = max_offset, tau
        self.to_q = nn.Conv2d(dim, dim, 1)
        self.to_kv = nn.Conv2d(dim, 2 * dim, 1)  # shared by the key layers ("conv_refer")
        self.offsets = nn.Conv2d(dim, 2 * layers * keys, 1)  # (dy, dx) per layer and key, from the query
        self.bias = nn.Conv2d(dim, layers * keys, 1)  # query-predicted logit per layer and key (CLA weights)
        self.select = nn.Conv2d(dim, layers * (keys + 1), 1)  # how many keys (0..K) per layer
        self.proj = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.offsets.weight)  # start on a fixed pattern; the pattern is then learned
        with torch.no_grad():
            self.offsets.bias.copy_(_initial_offsets(layers, keys, init_radius).reshape(-1))
            self.proj.weight.mul_(0.1)  # small, not zero: gradients reach every branch from step 0
            self.select.bias.zero_()
            self.select.bias.view(layers, keys + 1)[:, -1] = 1.0  # start by preferring all K keys

    def start_as_identity(self) -> None:
        """Zero the output projection: the module passes its query through (for growing a network)."""
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def selection_mask(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Key mask ``(B, L, K, H, W)``: 1 for the keys a query uses (hard; straight-through in training)."""
        b, _, h, w = q.shape
        logits = self.select(q).view(b, self.layers, self.keys + 1, h, w).float()
        forbid = torch.zeros(self.layers, self.keys + 1, 1, 1, device=q.device)
        forbid[0, 0] = _NEG  # the query's own layer always keeps at least one key
        onehot = gumbel_select(logits + forbid, self.tau, dim=2, training=self.training, generator=generator)
        # option n (use n keys) -> keys 0..n-1: mask_k = sum_{n > k} onehot_n
        return onehot.flip(2).cumsum(2).flip(2)[:, :, 1:]

    def sample_offsets(self, q: torch.Tensor) -> torch.Tensor:
        """Learned offsets in pixels ``(B, L, K, 2, H, W)`` as ``(dy, dx)``."""
        b, _, h, w = q.shape
        off = self.offsets(q).float().view(b, self.layers, self.keys, 2, h, w)
        return self.max_offset * torch.tanh(off / self.max_offset)

    def forward(self, query: torch.Tensor, key_layers: list[torch.Tensor]) -> torch.Tensor:
        assert len(key_layers) == self.layers, f"expected {self.layers} key layers, got {len(key_layers)}"
        b, c, h, w = query.shape
        kk = self.keys
        q = self.to_q(query).float()
        off = self.sample_offsets(query)
        bias = self.bias(query).float().view(b, self.layers, kk, h, w)
        mask = self.selection_mask(query)
        ys = torch.arange(h, device=query.device, dtype=torch.float32).view(1, 1, h, 1)
        xs = torch.arange(w, device=query.device, dtype=torch.float32).view(1, 1, 1, w)
        sy, sx = 2.0 / max(h - 1, 1), 2.0 / max(w - 1, 1)  # align_corners=True normalisation
        run_max = acc = den = None
        for li, feat in enumerate(key_layers):
            kv = self.to_kv(feat).float()  # B, 2C, H, W
            py = ys + off[:, li, :, 0]  # B, K, H, W (pixels)
            px = xs + off[:, li, :, 1]
            grid = torch.stack((px * sx - 1.0, py * sy - 1.0), dim=-1).view(b, kk * h, w, 2)
            grid = torch.nan_to_num(grid)  # a NaN grid crashes grid_sample's CPU backward (segfault)
            s = F.grid_sample(kv, grid, mode="bilinear", padding_mode="border", align_corners=True)
            s = s.view(b, 2 * c, kk, h, w)
            k_s, v_s = s[:, :c], s[:, c:]  # B, C, K, H, W
            logit = (q.unsqueeze(2) * k_s).sum(1) * c**-0.5 + bias[:, li]  # B, K, H, W
            m = mask[:, li]
            layer_max = torch.where(m.detach() > 0.5, logit, torch.full_like(logit, _NEG)).amax(1).detach()
            if run_max is None:
                new_max = layer_max  # layer 0 (the query's own) always has a selected key
                e = m * torch.exp(torch.clamp(logit - new_max.unsqueeze(1), max=0.0))
                den = e.sum(1)
                acc = (e.unsqueeze(1) * v_s).sum(2)
            else:
                new_max = torch.maximum(run_max, layer_max)
                r = torch.exp(run_max - new_max)
                e = m * torch.exp(torch.clamp(logit - new_max.unsqueeze(1), max=0.0))
                den = den * r + e.sum(1)
                acc = acc * r.unsqueeze(1) + (e.unsqueeze(1) * v_s).sum(2)
            run_max = new_max
        out = acc / den.clamp_min(1e-12).unsqueeze(1)
        return query + self.proj(out.to(query.dtype))


class ACLA(nn.Module):
    """EDSR-style residual network with adaptive cross-layer attention modules."""

    arch = "acla"
    config_class = ACLAConfig
    half_safe = True  # the attention itself runs in float32 under autocast

    def __init__(self, in_channels: int = 1, out_channels: int = 1, scale: int = 1, **config) -> None:
        super().__init__()
        cfg = ACLAConfig(**config)
        if any(not 0 <= p < cfg.n_blocks for p in cfg.positions):
            raise ValueError(f"ACLA positions {cfg.positions} must lie in [0, {cfg.n_blocks})")
        if len(set(cfg.positions)) != len(cfg.positions):
            raise ValueError(f"ACLA positions {cfg.positions} must be distinct")
        self.cfg = cfg
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale
        u = cfg.unshuffle
        self.unshuffle = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
        self.conv_first = nn.Conv2d(in_channels * u * u, cfg.dim, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualBlock(cfg.dim, cfg.res_scale) for _ in range(cfg.n_blocks))
        self.attn = nn.ModuleDict()
        for i, p in enumerate(sorted(cfg.positions)):
            n_layers = 2 + i  # the current layer, the head output, the outputs of the i earlier modules
            if cfg.max_key_layers is not None:
                n_layers = max(1, min(n_layers, cfg.max_key_layers))
            self.attn[str(p)] = CrossLayerAttention(
                cfg.dim, n_layers, cfg.keys, cfg.max_offset, cfg.init_radius, cfg.tau
            )
        self.conv_after_body = nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1)
        self.head = RestorationHead(cfg.dim, out_channels, scale, u)

    def set_temperature(self, tau: float) -> None:
        """Set the Gumbel-softmax temperature of every ACLA module (for annealing)."""
        for m in self.attn.values():
            m.tau = float(tau)

    @property
    def multiple_of(self) -> int:
        """Input sizes are padded internally to this multiple (convolutions take any size)."""
        return self.cfg.unshuffle

    @property
    def halo(self) -> int:
        """Suggested tile overlap in input pixels.

        The receptive field of the convolutions (one pixel per 3x3 conv) plus, per ACLA
        module, the largest learned offset ``max_offset`` (offsets are bounded by a tanh) and
        one pixel of bilinear interpolation, in input pixels, rounded up to a multiple of 8.
        """
        cfg = self.cfg
        radius = 3 + 2 * cfg.n_blocks + len(cfg.positions) * (math.ceil(cfg.max_offset) + 1)
        radius *= cfg.unshuffle
        return int(math.ceil(radius / 8) * 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = pad_to_multiple(x, self.multiple_of)
        f0 = self.conv_first(self.unshuffle(xp))
        refs = [f0]  # earlier layers that later modules may attend to
        y = f0
        for i, blk in enumerate(self.blocks):
            y = blk(y)
            mod = self.attn[str(i)] if str(i) in self.attn else None
            if mod is not None:
                y = mod(y, ([y, *refs[::-1]])[: mod.layers])
                refs.append(y)
        y = self.conv_after_body(y) + f0
        return finish(self.head(y), xp, h, w, self.cfg.image_residual, self.out_channels, self.scale)
