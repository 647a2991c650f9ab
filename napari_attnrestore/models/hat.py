"""HAT: Hybrid Attention Transformer (Chen et al., CVPR 2023), scaled down.

Mechanism, as in the paper:

* **Hybrid attention block (HAB)**: (shifted) window self-attention with a relative
  position bias, in parallel with a convolutional channel-attention block whose output
  is scaled by a small ``alpha``; then an MLP.
* **Overlapping cross-attention block (OCAB)**: queries from ``M x M`` windows, keys and
  values from overlapping ``(1 + gamma) M`` windows (unfolded), with its own
  relative position bias.
* **Residual hybrid attention groups (RHAG)**: several HABs, one OCAB, a 3x3 conv and a
  residual connection.

Two additions for small models that train on a CPU, both off in the paper config:
``unshuffle`` runs the body at reduced resolution after a reversible pixel-unshuffle
(as FFDNet does for denoising), and ``image_residual`` adds the (resized) input to the
output so that the network learns the correction only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    ChannelAttentionBlock,
    Mlp,
    RelativePositionBias,
    RestorationHead,
    WindowAttention,
    finish,
    pad_to_multiple,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


@dataclass
class HATConfig:
    """Configuration of a HAT network (defaults: the tiny CPU model)."""

    dim: int = 48
    depths: list[int] = field(default_factory=lambda: [3, 3])
    heads: int = 4
    window: int = 8
    mlp_ratio: float = 2.0
    compress: int = 3
    squeeze: int = 16
    alpha: float = 0.01
    overlap_ratio: float = 0.5
    unshuffle: int = 1
    image_residual: bool | str = True  # for demosaicing: "bilinear" (True) or "malvar" base
    upsample_features: int | None = None  # SR head width (None: dim; the paper's models use 64)
    patch_norm: bool = False  # LayerNorm on the embedded features before the body (the paper's)


class HybridAttentionBlock(nn.Module):
    """Window self-attention in parallel with ``alpha`` x channel attention, then an MLP."""

    def __init__(self, cfg: HATConfig, shift: int) -> None:
        super().__init__()
        self.ws, self.shift, self.alpha = cfg.window, shift, cfg.alpha
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = WindowAttention(cfg.dim, cfg.heads, cfg.window)
        self.cab = ChannelAttentionBlock(cfg.dim, cfg.compress, cfg.squeeze)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = Mlp(cfg.dim, cfg.mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        y = self.norm1(x)
        conv = self.cab(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        shift = self.shift if min(h, w) > self.ws else 0
        if shift:
            y = torch.roll(y, (-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(h, w, self.ws, shift, x.device)
        else:
            mask = None
        y = self.attn(window_partition(y, self.ws), mask)
        y = window_reverse(y, self.ws, h, w)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(1, 2))
        x = x + y + self.alpha * conv
        return x + self.mlp(self.norm2(x))


class OverlappingCrossAttention(nn.Module):
    """Queries from non-overlapping windows attend keys/values of enlarged, overlapping windows."""

    def __init__(self, cfg: HATConfig) -> None:
        super().__init__()
        self.ws = cfg.window
        self.ows = int(cfg.window * (1 + cfg.overlap_ratio))
        self.ows += (self.ows - self.ws) % 2  # symmetric padding needs an even difference
        self.heads = cfg.heads
        self.scale = (cfg.dim // cfg.heads) ** -0.5
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.rpb = RelativePositionBias(self.ws, cfg.heads, self.ows)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = Mlp(cfg.dim, cfg.mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws, ows, nh = self.ws, self.ows, self.heads
        qkv = self.qkv(self.norm1(x))
        q = window_partition(qkv[..., :c].contiguous(), ws)  # B*nW, ws*ws, C
        kv = qkv[..., c:].permute(0, 3, 1, 2)  # B, 2C, H, W
        kv = F.unfold(kv, kernel_size=ows, stride=ws, padding=(ows - ws) // 2)  # B, 2C*ows*ows, nW
        nw = kv.shape[-1]
        kv = kv.view(b, 2, c, ows * ows, nw).permute(1, 0, 4, 3, 2).reshape(2, b * nw, ows * ows, c)
        k, v = kv[0], kv[1]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], t.shape[1], nh, c // nh).transpose(1, 2)

        bias = self.rpb().unsqueeze(0).to(q.dtype)
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(b * nw, ws * ws, c)
        out = window_reverse(self.proj(out), ws, h, w)
        x = x + out
        return x + self.mlp(self.norm2(x))


class ResidualHybridAttentionGroup(nn.Module):
    """HABs (alternately shifted), one OCAB, a 3x3 conv, and a residual connection."""

    def __init__(self, cfg: HATConfig, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            HybridAttentionBlock(cfg, shift=0 if i % 2 == 0 else cfg.window // 2) for i in range(depth)
        )
        self.ocab = OverlappingCrossAttention(cfg)
        self.conv = nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for blk in self.blocks:
            y = blk(y)
        y = self.ocab(y)
        y = self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + y


class HAT(nn.Module):
    """Hybrid Attention Transformer for denoising, SR, demosaicing and inpainting."""

    arch = "hat"
    config_class = HATConfig
    half_safe = True

    def __init__(self, in_channels: int = 1, out_channels: int = 1, scale: int = 1, **config) -> None:
        super().__init__()
        cfg = HATConfig(**config)
        self.cfg = cfg
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale
        u = cfg.unshuffle
        self.unshuffle = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
        self.conv_first = nn.Conv2d(in_channels * u * u, cfg.dim, 3, padding=1)
        self.patch_norm = nn.LayerNorm(cfg.dim) if cfg.patch_norm else nn.Identity()
        self.groups = nn.ModuleList(ResidualHybridAttentionGroup(cfg, d) for d in cfg.depths)
        self.norm = nn.LayerNorm(cfg.dim)
        self.conv_after_body = nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1)
        self.head = RestorationHead(cfg.dim, out_channels, scale, u, features=cfg.upsample_features)

    @property
    def multiple_of(self) -> int:
        """Input sizes are padded internally to this multiple."""
        return self.cfg.window * self.cfg.unshuffle

    @property
    def halo(self) -> int:
        """Suggested tile overlap in input pixels (about two windows of context)."""
        return 2 * self.cfg.window * self.cfg.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = pad_to_multiple(x, self.multiple_of)
        f = self.conv_first(self.unshuffle(xp))
        y = self.patch_norm(f.permute(0, 2, 3, 1))
        for g in self.groups:
            y = g(y)
        y = self.norm(y).permute(0, 3, 1, 2)
        y = self.conv_after_body(y) + f
        return finish(self.head(y), xp, h, w, self.cfg.image_residual, self.out_channels, self.scale)
