"""CSAttn: Continuous Scaling Attention (Wang et al., arXiv 2403.10336), scaled down.

"How Powerful Potential of Attention on Image Restoration?"  The paper studies transformer
blocks **without a feed-forward network**: each block computes attention continuously in
**three chained stages**, and a few simple operations inside the attention (non-linear
activations, spatial scaling of the values, residual scalings) replace what the FFN did.

One :class:`CSAttnBlock` (``x: (B, C, H, W)``, ``h`` heads)::

    xn = LayerNorm2d(x)
    Q, K, V, V2, V3 = split(DWConv3x3(Conv1x1(xn, C -> 5C)))     # one shared projection
    Y1 = A(Q,  K,  V,                       t1)                   # stage 1: Restormer MDTA
    Y2 = A(Y1, Y1, VNTA2(V2) * act(Y1),     t2) + b2 * Y1         # stage 2: continues from Y1
    Y3 = A(Y2, Y2, VNTA3(V3) * act(Y2),     t3) + b3 * Y2         # stage 3: continues from Y2
    return x + Conv1x1(Y3)                                         # no FFN after this

where ``A(q, k, v, t) = softmax(t * norm(q) @ norm(k)^T) @ v`` is channel ("transposed")
attention per head (a ``C/h x C/h`` map, cost linear in pixels; ``norm`` is the L2 norm
over pixels, ``t`` a learnable per-head temperature), ``act`` the in-attention
non-linearity (GELU), ``VNTA`` the *value non-linear transformation adjustment*
``act(DWConv3x3(v))``, ``act(Y) * ...`` the *spatial scaling* of the next stage's values
by the previous stage's output, and ``b2, b3`` learnable per-channel residual scales.

The network is the paper's multi-scale encoder-decoder (SFNet / MIMO-UNet style, with the
residual blocks replaced by CSAttn blocks): ``levels`` stride-2 downsamplings, the
(down-sampled) input injected at every encoder level, skip connections fused by 1x1
convs, pixel-shuffle upsampling, a long skip around the body and a task head.

Fidelity: the paper's PDF and code were not available.  The first stage (Restormer MDTA
on a 1x1 + depth-wise 3x3 projection split into Q, K, V, V2, V3), the three chained
stages, the absence of an FFN and the encoder-decoder come from descriptions of the paper;
how stages 2 and 3 take their queries/keys (the previous stage's output), the exact form of
spatial scaling, VNTA and the residual scales are this project's reading of those
descriptions.  The flags ``spatial_scaling``, ``vnta`` and ``stage_residual`` switch them
off for ablations.  Multi-scale *outputs* (used only by the paper's training loss) and the
FFT loss are not part of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import RestorationHead, finish, pad_to_multiple

_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


@dataclass
class CSAttnConfig:
    """Configuration of a CSAttn network (defaults: the tiny CPU model)."""

    dim: int = 24  # channels at full resolution; doubled at every level
    levels: int = 2  # stride-2 downsamplings (the paper's 3-level encoder-decoder has 2)
    # blocks per level (encoder and decoder alike); the last entry is the bottleneck
    depths: list[int] = field(default_factory=lambda: [1, 1, 2])
    heads: list[int] = field(default_factory=lambda: [1, 2, 4])  # heads per level
    act: str = "gelu"  # non-linearity inside the attention
    spatial_scaling: bool = True  # stage i+1 values scaled by act(stage i output)
    vnta: bool = True  # value non-linear transformation adjustment act(DWConv(v))
    stage_residual: bool = True  # learnable per-channel residual scale between stages
    multi_scale_input: bool = True  # inject the down-sampled input at every encoder level
    bias: bool = False
    unshuffle: int = 1
    image_residual: bool | str = True  # for demosaicing: "bilinear" (True) or "malvar" base

    def __post_init__(self) -> None:
        self.depths = [int(d) for d in self.depths]
        self.heads = [int(h) for h in self.heads]
        if len(self.depths) != self.levels + 1 or len(self.heads) != self.levels + 1:
            raise ValueError(f"depths and heads need levels + 1 = {self.levels + 1} entries")
        for i, h in enumerate(self.heads):
            if (self.dim * 2**i) % h:
                raise ValueError(f"heads[{i}] = {h} does not divide {self.dim * 2**i} channels")
        if self.act not in _ACTS:
            raise ValueError(f"act must be one of {sorted(_ACTS)}, got {self.act!r}")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` tensor (Restormer's WithBias LN)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


def channel_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Restormer's transposed attention: ``softmax(t * norm(q) @ norm(k)^T) @ v`` per head.

    ``q, k, v: (B, C, H, W)``, ``temperature: (heads, 1, 1)``.  Returns the output
    ``(B, C, H, W)`` and the attention map ``(B, heads, C/heads, C/heads)``.
    """
    b, c, h, w = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, heads, c // heads, h * w)

    qn = F.normalize(split(q).float(), dim=-1)
    kn = F.normalize(split(k).float(), dim=-1)
    attn = torch.softmax((qn @ kn.transpose(-2, -1)) * temperature.float(), dim=-1)
    out = attn.to(v.dtype) @ split(v)
    return out.reshape(b, c, h, w), attn


class CSAttnBlock(nn.Module):
    """Continuous scaling attention: three chained channel-attention stages and NO FFN."""

    n_stages = 3

    def __init__(self, dim: int, heads: int, cfg: CSAttnConfig) -> None:
        super().__init__()
        self.heads = heads
        self.spatial_scaling, self.use_vnta, self.stage_residual = cfg.spatial_scaling, cfg.vnta, cfg.stage_residual
        self.norm = LayerNorm2d(dim)
        # one shared projection for the three stages: Q, K, V (stage 1), V2 (stage 2), V3 (stage 3)
        self.proj_in = nn.Conv2d(dim, 5 * dim, 1, bias=cfg.bias)
        self.dwconv = nn.Conv2d(5 * dim, 5 * dim, 3, padding=1, groups=5 * dim, bias=cfg.bias)
        self.temperature = nn.Parameter(torch.ones(self.n_stages, heads, 1, 1))
        self.act = _ACTS[cfg.act]()
        if cfg.vnta:  # value non-linear transformation adjustment of V2 and V3
            self.vnta = nn.ModuleList(
                nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=cfg.bias) for _ in range(self.n_stages - 1)
            )
        if cfg.stage_residual:
            self.stage_scale = nn.Parameter(torch.ones(self.n_stages - 1, 1, dim, 1, 1))
        self.proj_out = nn.Conv2d(dim, dim, 1, bias=cfg.bias)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        """``(B, C, H, W) -> (B, C, H, W)``; with ``return_attn`` also the three attention maps."""
        q, k, v, *values = self.dwconv(self.proj_in(self.norm(x))).chunk(5, dim=1)
        y, a = channel_attention(q, k, v, self.heads, self.temperature[0])  # stage 1 (MDTA)
        maps = [a]
        for s in range(1, self.n_stages):  # stages 2 and 3 continue from the previous output
            val = values[s - 1]
            if self.use_vnta:
                val = self.act(self.vnta[s - 1](val))
            if self.spatial_scaling:
                val = val * self.act(y)
            z, a = channel_attention(y, y, val, self.heads, self.temperature[s])
            y = z + self.stage_scale[s - 1] * y if self.stage_residual else z
            maps.append(a)
        out = x + self.proj_out(y)
        return (out, maps) if return_attn else out


class _Stack(nn.Sequential):
    def __init__(self, n: int, dim: int, heads: int, cfg: CSAttnConfig) -> None:
        super().__init__(*(CSAttnBlock(dim, heads, cfg) for _ in range(n)))


class CSAttn(nn.Module):
    """FFN-free continuous-scaling-attention encoder-decoder for denoising, SR, demosaicing, inpainting."""

    arch = "csattn"
    config_class = CSAttnConfig
    half_safe = True  # q, k are L2-normalised; the softmax runs in fp32
    #: Channel attention normalises and correlates features over the whole input, so what a
    #: pixel gets depends on the size of the tile around it; checkpoints record the side
    #: they were trained on as their card's ``tile``, the engine's default tile for them.
    tile_dependent = True

    def __init__(self, in_channels: int = 1, out_channels: int = 1, scale: int = 1, **config) -> None:
        super().__init__()
        cfg = CSAttnConfig(**config)
        self.cfg = cfg
        self.in_channels, self.out_channels, self.scale = in_channels, out_channels, scale
        u, L = cfg.unshuffle, cfg.levels
        cin = in_channels * u * u
        dims = [cfg.dim * 2**i for i in range(L + 1)]
        self.unshuffle = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
        self.conv_first = nn.Conv2d(cin, cfg.dim, 3, padding=1)
        self.encoders = nn.ModuleList(_Stack(cfg.depths[i], dims[i], cfg.heads[i], cfg) for i in range(L + 1))
        self.downs = nn.ModuleList(nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1) for i in range(L))
        self.inputs = nn.ModuleList(
            nn.Conv2d(cin, dims[i + 1], 3, padding=1) for i in range(L if cfg.multi_scale_input else 0)
        )
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i + 1], 4 * dims[i], 1, bias=False), nn.PixelShuffle(2)) for i in range(L)
        )
        self.fuse = nn.ModuleList(nn.Conv2d(2 * dims[i], dims[i], 1, bias=cfg.bias) for i in range(L))
        self.decoders = nn.ModuleList(_Stack(cfg.depths[i], dims[i], cfg.heads[i], cfg) for i in range(L))
        self.conv_after_body = nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1)
        self.head = RestorationHead(cfg.dim, out_channels, scale, u)

    @property
    def multiple_of(self) -> int:
        """Input sizes are padded internally to this multiple (one factor 2 per level)."""
        return 2**self.cfg.levels * self.cfg.unshuffle

    @property
    def halo(self) -> int:
        """Suggested tile overlap in input pixels.

        The convolutional receptive field; channel attention pools statistics over the
        whole tile besides, so a checkpoint's card names the tile it runs best on (its
        training patches: ``tile_dependent``).
        """
        return 8 * 2**self.cfg.levels * self.cfg.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = self.cfg.levels
        xp, h, w = pad_to_multiple(x, self.multiple_of)
        inp = self.unshuffle(xp)
        f = self.conv_first(inp)
        y, skips = f, []
        for i in range(L):
            y = self.encoders[i](y)
            skips.append(y)
            y = self.downs[i](y)
            if self.cfg.multi_scale_input:
                y = y + self.inputs[i](F.avg_pool2d(inp, 2 ** (i + 1)))
        y = self.encoders[L](y)
        for i in reversed(range(L)):
            y = self.fuse[i](torch.cat([self.ups[i](y), skips[i]], dim=1))
            y = self.decoders[i](y)
        y = self.conv_after_body(y) + f
        return finish(self.head(y), xp, h, w, self.cfg.image_residual, self.out_channels, self.scale)
