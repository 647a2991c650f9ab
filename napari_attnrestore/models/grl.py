"""GRL: Global, Regional and Local modelling (Li et al., CVPR 2023), scaled down.

"Efficient and Explicit Modelling of Image Hierarchies for Image Restoration".  Mechanism,
as in the paper:

* **Anchored stripe self-attention** (global range).  The image is cut into stripes
  (horizontal ``sh x sw`` stripes in one block, vertical ``sw x sh`` stripes in the next,
  and cyclically shifted stripes every other pair of blocks).  Anchors are the features
  average-pooled by ``anchor_down`` and projected to the branch width.  Attention within a
  stripe runs in two steps through the anchors: first the anchors attend the stripe's
  keys (``a2w``: an ``N_anchor x N_stripe`` map, gathering ``Z``), then the stripe's
  queries attend the anchors (``w2a``: an ``N_stripe x N_anchor`` map, reading ``Z``).
  The cost is ``2 * N_stripe * N_anchor`` instead of ``N_stripe ** 2``.
* **Window attention v2** (local-regional range): Swin-v2 style (shifted) window
  attention, used for both branches: cosine similarity, a learnable per-head temperature
  ``exp(min(logit_scale, log 100))`` and a continuous position bias
  ``16 * sigmoid(MLP(log-spaced relative coordinates))``.
* **Mixed attention**: one shared ``Linear(C, 3C)`` projection; the window branch and the
  anchored-stripe branch each take half of the channels, run in parallel, and are
  concatenated and projected back (``Linear(C, C)``).
* **Local branch** (GRL-B's ``local_connection``): conv -> GELU -> conv with channel
  attention, added to the block's residual next to the attention.
* **Transformer block** with Swin-v2 residual post-norm
  (``x + LN(attn(x)) [+ CAB(x)]``, then ``x + LN(MLP(x))``); **stages** of blocks followed
  by a 3x3 conv and a residual connection; ``conv_first`` / ``conv_after_body`` and a long
  skip around the body.

Block schedule inside a stage (block ``i``), as in the authors' code: the window branch
is shifted for even ``i``; stripes are horizontal (``stripe`` as given) for even ``i`` and
vertical (sizes swapped) for odd ``i``; stripes are shifted when ``i % 4 in (2, 3)``.

Choices and deviations (see also the presets in :mod:`.registry`):

* The anchor <-> stripe position bias uses the geometric offset between a stripe pixel and
  the *centre* of the anchor's pooling cell (the authors' code uses the raw offset between
  the two grids' indices, which does not encode which anchor is near a pixel).  Parameter
  counts are unaffected.
* The continuous-position-bias MLP is ``cpb_hidden`` wide (512 in the paper, 64 in the tiny
  model).
* Heads come from :class:`~napari_attnrestore.models.layers.RestorationHead` (for SR that
  is conv + LeakyReLU + pixel shuffle + conv, GRL-S/B's ``pixelshuffle``; GRL-T uses
  ``pixelshuffledirect``).  No RGB mean subtraction (inputs are normalised by the engine).
* ``unshuffle`` and ``image_residual`` as in :mod:`.hat`.  The paper's restoration models
  add the input to the output (``image_residual=True``); its SR models do not.
* Stripes have fixed sizes (the authors' ``stripe_groups`` option, a stripe spanning a
  fixed fraction of the image, is not implemented: it would make the output depend on the
  tile size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    ChannelAttentionBlock,
    ContinuousPositionBias,
    Mlp,
    RestorationHead,
    finish,
    pad_to_multiple,
    run_as_rggb,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

_LOGIT_MAX = math.log(100.0)


@dataclass
class GRLConfig:
    """Configuration of a GRL network (defaults: the tiny CPU model)."""

    dim: int = 40
    depths: list[int] = field(default_factory=lambda: [4, 4])  # 4 blocks: every stripe type / shift once
    heads_window: int = 2  # heads of the window branch (divide dim / 2)
    heads_stripe: int = 2  # heads of the anchored stripe branch (divide dim / 2)
    window: int = 8
    stripe: list[int] = field(default_factory=lambda: [16, 32])  # (height, width) of horizontal stripes
    anchor_down: int = 4  # anchor pooling stride ("anchor_window_down_factor")
    mlp_ratio: float = 2.0
    local_conv: bool = True  # conv + channel-attention branch in every block
    compress: int = 4
    squeeze: int = 18
    cpb_hidden: int = 64
    unshuffle: int = 1
    image_residual: bool | str = True  # for demosaicing: "bilinear" (True) or "malvar" base
    canonical_bayer: bool = False  # demosaicing: mirror every mosaic to RGGB (and back) around the network

    def __post_init__(self) -> None:
        self.depths = [int(d) for d in self.depths]
        self.stripe = [int(s) for s in self.stripe]
        half = self.dim // 2
        if self.dim % 2 or half % self.heads_window or half % self.heads_stripe:
            raise ValueError(f"dim/2 = {self.dim / 2} must be divisible by heads_window and heads_stripe")
        if self.window % 2:
            raise ValueError(f"window must be even, got {self.window}")
        if len(self.stripe) != 2 or any(s % (2 * self.anchor_down) for s in self.stripe):
            raise ValueError(
                f"stripe {self.stripe} must be two sizes divisible by 2 * anchor_down = {2 * self.anchor_down}"
            )


# ----------------------------------------------------------------------------- helpers


def _partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """Split ``(B, H, W, C)`` into ``(B * nW, wh * ww, C)`` rectangles (row-major order)."""
    b, h, w, c = x.shape
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)


def _reverse(windows: torch.Tensor, wh: int, ww: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_partition`."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // wh) * (w // ww))
    x = windows.view(b, h // wh, w // ww, wh, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def cosine_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    logit_scale: torch.Tensor,
    bias: torch.Tensor,
    mask: torch.Tensor | None = None,
    return_attn: bool = False,
    fused: bool | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Swin-v2 attention: ``softmax(cos(q, k) * exp(min(s, log 100)) + bias [+ mask]) @ v``.

    ``q: (B', h, Nq, d)``, ``k, v: (B', h, Nk, d)``, ``logit_scale: (h, 1, 1)``,
    ``bias: (h, Nq, Nk)``, ``mask: (nW, Nq, Nk)`` with ``B' = B * nW`` (window-major inside
    each image).  With ``return_attn`` also returns the attention map ``(B', h, Nq, Nk)``.
    ``fused`` selects ``F.scaled_dot_product_attention`` (default: on GPUs; on a CPU the
    explicit product is faster, and it is the only path that returns the map).
    """
    bw, nh, nq, d = q.shape
    nk = k.shape[2]
    scale = torch.clamp(logit_scale, max=_LOGIT_MAX).exp()
    q = F.normalize(q, dim=-1) * scale.to(q.dtype)
    k = F.normalize(k, dim=-1)
    attn_bias = bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        q = q.view(bw // nw, nw, nh, nq, d)
        k = k.view(bw // nw, nw, nh, nk, d)
        v = v.view(bw // nw, nw, nh, nk, v.shape[-1])
        attn_bias = attn_bias + mask.unsqueeze(1)  # nW, h, Nq, Nk
    if fused is None:
        fused = q.device.type != "cpu"
    if return_attn or not fused:
        attn = torch.softmax((q @ k.transpose(-2, -1)).float() + attn_bias.float(), dim=-1).to(v.dtype)
        out = (attn @ v).reshape(bw, nh, nq, -1)
        return (out, attn.reshape(bw, nh, nq, nk)) if return_attn else out
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias.to(q.dtype), scale=1.0)
    return out.reshape(bw, nh, nq, -1)


def _log_spaced(table: torch.Tensor, extent: tuple[float, float]) -> torch.Tensor:
    """Swin-v2 coordinates: normalise to [-8, 8] per axis, then ``sign * log2(|t| + 1) / 3``."""
    t = table / torch.tensor([max(e, 1.0) for e in extent]) * 8.0
    return torch.sign(t) * torch.log2(t.abs() + 1.0) / math.log2(8.0)


def anchor_stripe_geometry(sh: int, sw: int, df: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative coordinates between anchors and stripe pixels.

    Anchor ``(ai, aj)`` summarises the ``df x df`` cell whose centre is at
    ``(ai * df + (df - 1) / 2, aj * df + (df - 1) / 2)`` in stripe pixels.

    Returns
    -------
    coords, index
        ``coords (T, 2)``: the distinct (anchor - pixel) offsets, log-spaced;
        ``index (N_anchor, N_stripe)``: row of ``coords`` for every anchor/pixel pair.
        For the pixel -> anchor direction use ``-coords`` and ``index.T``.
    """
    axes = []
    for n in (sh, sw):
        pix = torch.arange(n, dtype=torch.float64)
        anc = torch.arange(n // df, dtype=torch.float64) * df + (df - 1) / 2
        vals, inv = torch.unique(anc[:, None] - pix[None, :], return_inverse=True)  # (n/df, n)
        axes.append((vals.float(), inv))
    (vy, iy), (vx, ix) = axes
    coords = torch.stack(torch.meshgrid(vy, vx, indexing="ij"), dim=-1).reshape(-1, 2)
    coords = _log_spaced(coords, (sh - 1, sw - 1))
    index = iy[:, None, :, None] * len(vx) + ix[None, :, None, :]  # ash, asw, sh, sw
    return coords, index.reshape((sh // df) * (sw // df), sh * sw)


def _region_labels(h: int, w: int, wh: int, ww: int, sh: int, sw: int) -> torch.Tensor:
    """Swin region labels after a cyclic shift by ``(sh, sw)``, partitioned: ``(nW, wh * ww)``."""

    def axis(n: int, win: int, shift: int) -> torch.Tensor:
        i = torch.arange(n)
        if shift == 0:
            return torch.zeros(n, dtype=torch.long)
        return (i >= n - win).long() + (i >= n - shift).long()

    lab = axis(h, wh, sh)[:, None] * 3 + axis(w, ww, sw)[None, :]
    return _partition(lab[None, :, :, None].float(), wh, ww).squeeze(-1)


_STRIPE_MASKS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def anchor_stripe_masks(
    h: int, w: int, sh: int, sw: int, df: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks ``(nS, N_anchor, N_stripe)`` and ``(nS, N_stripe, N_anchor)`` for shifted stripes (0 / -100)."""
    key = (h, w, sh, sw, df, str(device))
    hit = _STRIPE_MASKS.get(key)
    if hit is not None:
        return hit
    pix = _region_labels(h, w, sh, sw, sh // 2, sw // 2)  # nS, N1
    anc = _region_labels(h // df, w // df, sh // df, sw // df, sh // 2 // df, sw // 2 // df)  # nS, N2
    a2w = torch.zeros(anc.shape[0], anc.shape[1], pix.shape[1])
    a2w = a2w.masked_fill(anc[:, :, None] != pix[:, None, :], -100.0).to(device)
    out = (a2w, a2w.transpose(1, 2).contiguous())
    if len(_STRIPE_MASKS) > 64:
        _STRIPE_MASKS.clear()
    _STRIPE_MASKS[key] = out
    return out


class _CPBMlp(nn.Module):
    """Continuous position bias for fixed coordinates: ``16 * sigmoid(MLP(coords))[index]``."""

    def __init__(self, coords: torch.Tensor, index: torch.Tensor, heads: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, heads, bias=False))
        self.register_buffer("coords", coords, persistent=False)
        self.register_buffer("index", index, persistent=False)

    def forward(self) -> torch.Tensor:
        nq, nk = self.index.shape
        table = self.mlp(self.coords)  # T, heads
        bias = table[self.index.reshape(-1)].view(nq, nk, -1).permute(2, 0, 1)
        return 16.0 * torch.sigmoid(bias)  # heads, Nq, Nk


# ----------------------------------------------------------------------------- attention


class WindowAttentionV2(nn.Module):
    """Swin-v2 (shifted) window attention on a ``(B, H, W, 3c)`` q|k|v map (no projections)."""

    def __init__(self, heads: int, ws: int, shift: bool, cpb_hidden: int) -> None:
        super().__init__()
        self.heads, self.ws, self.shift = heads, ws, ws // 2 if shift else 0
        self.logit_scale = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))
        self.cpb = ContinuousPositionBias(ws, heads, cpb_hidden)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        _, h, w, c3 = qkv.shape
        c, ws, s = c3 // 3, self.ws, self.shift
        mask = None
        if s:
            qkv = torch.roll(qkv, (-s, -s), dims=(1, 2))
            mask = shifted_window_mask(h, w, ws, s, qkv.device)
        win = window_partition(qkv, ws)  # B*nW, N, 3c
        bw, n = win.shape[:2]
        q, k, v = win.view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = cosine_attention(q, k, v, self.logit_scale, self.cpb(), mask)
        out = window_reverse(out.transpose(1, 2).reshape(bw, n, c), ws, h, w)
        if s:
            out = torch.roll(out, (s, s), dims=(1, 2))
        return out


class AnchoredStripeAttention(nn.Module):
    """Two-step stripe attention through anchors (GRL's "regional/global" branch).

    Step 1 (``a2w``): anchors attend the stripe's keys and collect ``Z = A(anchor, K) V``.
    Step 2 (``w2a``): the stripe's queries attend the anchors and read ``Y = A(Q, anchor) Z``.
    Each step has its own temperature and continuous position bias.
    """

    def __init__(self, heads: int, stripe: tuple[int, int], df: int, shift: bool, cpb_hidden: int) -> None:
        super().__init__()
        self.heads, self.df, self.shift = heads, df, shift
        self.sh, self.sw = stripe
        coords, index = anchor_stripe_geometry(self.sh, self.sw, df)
        self.logit_scale1 = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))
        self.cpb1 = _CPBMlp(coords, index, heads, cpb_hidden)  # anchor -> stripe pixels
        self.logit_scale2 = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))
        self.cpb2 = _CPBMlp(-coords, index.t().contiguous(), heads, cpb_hidden)  # stripe pixels -> anchor

    def forward(
        self, qkv: torch.Tensor, anchor: torch.Tensor, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``qkv: (B, H, W, 3c)``, ``anchor: (B, H/df, W/df, c)`` -> ``(B, H, W, c)``.

        With ``return_attn`` also returns the two attention maps,
        ``(B', h, N_anchor, N_stripe)`` and ``(B', h, N_stripe, N_anchor)``.
        """
        _, h, w, c3 = qkv.shape
        c, nh, df = c3 // 3, self.heads, self.df
        sh, sw = self.sh, self.sw
        ash, asw = sh // df, sw // df
        mask_a2w = mask_w2a = None
        if self.shift:
            qkv = torch.roll(qkv, (-(sh // 2), -(sw // 2)), dims=(1, 2))
            anchor = torch.roll(anchor, (-(sh // 2 // df), -(sw // 2 // df)), dims=(1, 2))
            mask_a2w, mask_w2a = anchor_stripe_masks(h, w, sh, sw, df, qkv.device)
        win = _partition(qkv, sh, sw)  # B', N1, 3c
        bw, n1 = win.shape[:2]
        q, k, v = win.view(bw, n1, 3, nh, c // nh).permute(2, 0, 3, 1, 4)  # B', h, N1, d
        a = _partition(anchor, ash, asw)  # B', N2, c
        n2 = a.shape[1]
        a = a.view(bw, n2, nh, c // nh).transpose(1, 2)  # B', h, N2, d
        r1 = cosine_attention(a, k, v, self.logit_scale1, self.cpb1(), mask_a2w, return_attn)
        z = r1[0] if return_attn else r1  # B', h, N2, d: what each anchor gathered
        r2 = cosine_attention(q, a, z, self.logit_scale2, self.cpb2(), mask_w2a, return_attn)
        y = r2[0] if return_attn else r2  # B', h, N1, d
        y = _reverse(y.transpose(1, 2).reshape(bw, n1, c), sh, sw, h, w)
        if self.shift:
            y = torch.roll(y, (sh // 2, sw // 2), dims=(1, 2))
        if return_attn:
            return y, r1[1], r2[1]
        return y


class AnchorProjection(nn.Module):
    """Anchors: average pooling by ``df`` followed by ``Linear(C, C/2)``."""

    def __init__(self, dim: int, df: int) -> None:
        super().__init__()
        self.df = df
        self.proj = nn.Linear(dim, dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.avg_pool2d(x.permute(0, 3, 1, 2), self.df).permute(0, 2, 3, 1)
        return self.proj(a)


class MixedAttention(nn.Module):
    """Shared qkv projection; window attention and anchored stripe attention on channel halves."""

    def __init__(self, cfg: GRLConfig, window_shift: bool, stripe: tuple[int, int], stripe_shift: bool) -> None:
        super().__init__()
        self.dim = cfg.dim
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.anchor = AnchorProjection(cfg.dim, cfg.anchor_down)
        self.window_attn = WindowAttentionV2(cfg.heads_window, cfg.window, window_shift, cfg.cpb_hidden)
        self.stripe_attn = AnchoredStripeAttention(
            cfg.heads_stripe, stripe, cfg.anchor_down, stripe_shift, cfg.cpb_hidden
        )
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv_w, qkv_s = qkv.split(3 * self.dim // 2, dim=-1)
        y_w = self.window_attn(qkv_w.contiguous())
        y_s = self.stripe_attn(qkv_s.contiguous(), self.anchor(x))
        return self.proj(torch.cat([y_w, y_s], dim=-1))


class GRLBlock(nn.Module):
    """Mixed attention (+ local conv branch) and an MLP, with residual post-norm."""

    def __init__(self, cfg: GRLConfig, index: int) -> None:
        super().__init__()
        even = index % 2 == 0
        stripe = (cfg.stripe[0], cfg.stripe[1]) if even else (cfg.stripe[1], cfg.stripe[0])
        self.stripe_type = "H" if even else "W"
        self.attn = MixedAttention(cfg, window_shift=even, stripe=stripe, stripe_shift=index % 4 in (2, 3))
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.cab = ChannelAttentionBlock(cfg.dim, cfg.compress, cfg.squeeze) if cfg.local_conv else None
        self.mlp = Mlp(cfg.dim, cfg.mlp_ratio)
        self.norm2 = nn.LayerNorm(cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.norm1(self.attn(x))
        if self.cab is not None:
            y = y + self.cab(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return y + self.norm2(self.mlp(y))


class GRLStage(nn.Module):
    """Blocks, a 3x3 conv and a residual connection."""

    def __init__(self, cfg: GRLConfig, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(GRLBlock(cfg, i) for i in range(depth))
        self.conv = nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1)

    def start_as_identity(self) -> None:
        """Zero the closing convolution: the stage passes its input through (for growing a network)."""
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for blk in self.blocks:
            y = blk(y)
        return x + self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class GRL(nn.Module):
    """GRL (anchored stripe + window attention) for denoising, SR, demosaicing and inpainting."""

    arch = "grl"
    config_class = GRLConfig
    half_safe = True  # cosine attention: logits bounded by 100 + 16; masks are -100

    def __init__(self, in_channels: int = 1, out_channels: int = 1, scale: int = 1, **config) -> None:
        super().__init__()
        cfg = GRLConfig(**config)
        self.cfg = cfg
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale
        u = cfg.unshuffle
        self.unshuffle = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
        self.conv_first = nn.Conv2d(in_channels * u * u, cfg.dim, 3, padding=1)
        self.norm_start = nn.LayerNorm(cfg.dim)
        self.stages = nn.ModuleList(GRLStage(cfg, d) for d in cfg.depths)
        self.norm_end = nn.LayerNorm(cfg.dim)
        self.conv_after_body = nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1)
        self.head = RestorationHead(cfg.dim, out_channels, scale, u)

    @property
    def multiple_of(self) -> int:
        """Input sizes are padded internally to this multiple (windows, both stripe orientations, anchors)."""
        c = self.cfg
        return math.lcm(c.window, c.stripe[0], c.stripe[1], c.anchor_down) * c.unshuffle

    @property
    def halo(self) -> int:
        """Suggested tile overlap in input pixels (the longer stripe side)."""
        return max(self.cfg.window, *self.cfg.stripe) * self.cfg.unshuffle

    @property
    def mirrors_to_rggb(self) -> bool:
        """True for a demosaicer with ``canonical_bayer``: every pattern is mirrored to RGGB."""
        return bool(self.cfg.canonical_bayer) and self.in_channels == 4 and self.out_channels == 3 and self.scale == 1

    @property
    def ensemble_orientations(self) -> tuple[tuple[int, bool], ...] | None:
        """The self-ensemble's distinct orientations (quarter turns, mirrored), None: all 8.

        Mirroring to RGGB makes the network mirror-equivariant on even-sized mosaics, so of
        the 8 orientations only the upright and the quarter-turned one differ there (the
        engine's tiles are even; :func:`~napari_attnrestore.engine.model_handle.self_ensemble`
        runs all 8 on an odd size).
        """
        return ((0, False), (1, False)) if self.mirrors_to_rggb else None

    @property
    def ensemble_shifts(self) -> tuple[tuple[int, int], ...] | None:
        """One-pixel moves that make the self-ensemble's mirrored passes differ again.

        A mosaic moved by a row reads GBRG from its corner, so the network mirrors it up-down
        to RGGB: it sees the mirrored picture with its 2x2 cells grouped otherwise, which a
        mirrored input alone does not give (it is mirrored straight back).  The 4 moves by
        one row and/or column, upright and quarter-turned, are the 8 passes of a mosaic's
        ensemble (:func:`~napari_attnrestore.engine.model_handle.shifted`).
        """
        return ((0, 0), (0, 1), (1, 0), (1, 1)) if self.mirrors_to_rggb else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mirrors_to_rggb:
            # padded to the window multiple before mirroring, at the bottom and right of the
            # mosaic as it came, as the engine pads an image's edge: a whole image and its tiles
            # then see the same padding whatever the pattern
            xp, h, w = pad_to_multiple(x, self.multiple_of)
            return run_as_rggb(self._restore, xp)[..., :h, :w]
        return self._restore(x)

    def _restore(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = pad_to_multiple(x, self.multiple_of)
        f = self.conv_first(self.unshuffle(xp))
        y = self.norm_start(f.permute(0, 2, 3, 1))
        for stage in self.stages:
            y = stage(y)
        y = self.norm_end(y).permute(0, 3, 1, 2)
        y = self.conv_after_body(y) + f
        return finish(self.head(y), xp, h, w, self.cfg.image_residual, self.out_channels, self.scale)
