"""A small UNet denoiser for 32 x 32 RGB, conditioned on a pooled vector or on a sequence of tokens.

Explained in Chapter 7.5 (pooled conditioning: DALL·E 2's decoder reads one CLIP image embedding)
and Chapter 7.6 (token conditioning through cross-attention: Stable Diffusion reads every output
token of CLIP's text tower).

The network follows Ho et al. (2020) in miniature: a stem convolution, residual blocks with
GroupNorm and SiLU at each resolution (32, 16 and 8 pixels by default), strided convolutions down,
nearest-neighbour upsampling and skip connections up. The step ``t`` enters through a sinusoidal
embedding and an MLP; each residual block reads it (plus a pooled condition) as a FiLM scale and
shift. With ``cond_mode="tokens"`` the blocks at the low resolutions also carry a cross-attention
layer whose queries are the pixels and whose keys and values are the condition tokens. A learned
null condition (a vector, or one null token that is always visible) stands for "no condition": rows
marked in ``uncond`` see only it, which is the unconditional branch of classifier-free guidance.

Sizes with ``cond_dim=64`` (the book's CLIPs): ``channels=16`` gives 155,779 parameters pooled and
175,459 with token cross-attention; ``channels=32`` (the default) 608,963 and 657,539. One training
step on 64 images at 32 x 32 takes about 0.36 s (16) or 1.0 s (32) on one idle CPU thread.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import check_choice, check_int, check_sequence, check_tensor

__all__ = ["timestep_embedding", "ResBlock", "CrossAttention", "UNet", "COND_MODES"]

COND_MODES = ("pooled", "tokens", "none")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of integer steps ``t`` (B,), as the Transformer's positions.

    Explained in Chapter 7.5. The first half holds ``cos(t * f_k)``, the second ``sin(t * f_k)``,
    with frequencies ``f_k = max_period ** (-k / (dim / 2))``.
    """
    check_tensor("t", t, ndim=1)
    dim = check_int("dim", dim, 2)
    if dim % 2:
        raise ValueError(f"dim: expected an even int, got {dim}")
    freqs = torch.exp(-math.log(max_period) * torch.arange(dim // 2, dtype=torch.float32, device=t.device) / (dim // 2))
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv; FiLM from the embedding; GroupNorm, SiLU, 3x3 conv; plus a skip.

    Explained in Chapter 7.5. The second convolution starts at zero, so a new block is the identity.
    """

    def __init__(self, channels_in: int, channels_out: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * channels_out)
        self.norm2 = nn.GroupNorm(groups, channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if channels_in == channels_out else nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C_in, H, W), ``emb`` (B, emb_dim) -> (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class CrossAttention(nn.Module):
    """Pixels attend to condition tokens: queries from the feature map, keys and values from the tokens.

    Explained in Chapter 7.6 (Rombach et al., 2022). Residual; the output projection starts at zero.
    """

    def __init__(self, channels: int, context_dim: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads: expected a divisor of channels={channels}, got {heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W); ``context`` (B, L, D); ``visible`` bool (B, L), ``True`` where a token may be read."""
        b, c, h, w = x.shape
        heads, d = self.heads, c // self.heads
        q = self.q(self.norm(x).flatten(2).transpose(1, 2)).view(b, h * w, heads, d).transpose(1, 2)
        k, v = self.kv(context).view(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible[:, None, None, :])
        out = self.out(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).view(b, c, h, w)


class UNet(nn.Module):
    """The denoiser ``model(x_t, t, cond, uncond=mask)`` of :mod:`clip_tutorial.generate.diffusion`.

    Explained in Chapter 7.5 (pooled) and 7.6 (tokens).

    Args:
        cond_mode: ``"pooled"``: ``cond`` is a tensor (B, cond_dim), mapped by an MLP and added to
            the time embedding. ``"tokens"``: ``cond`` is a pair ``(tokens (B, L, cond_dim), mask
            (B, L) bool, True for real tokens)``, read by cross-attention at the resolutions
            listed in ``attention_levels`` (default: every one but the full resolution).
            ``"none"``: unconditional; ``cond`` must be ``None``.
        cond_dim: the width of the condition (CLIP's embedding width).
        channels: the channels at full resolution.
        mults: channel multipliers, one per resolution (each after the first halves the size).
        attention_levels: the indices into ``mults`` that get cross-attention (tokens mode).
        heads: attention heads.
        groups: GroupNorm groups (must divide every channel count).
        image_channels: channels of the images (3 for RGB).
    """

    def __init__(self, cond_mode: str = "pooled", cond_dim: int = 64, channels: int = 32,
                 mults: Sequence[int] = (1, 2, 2), attention_levels: Sequence[int] | None = None, heads: int = 4,
                 groups: int = 8, image_channels: int = 3) -> None:
        super().__init__()
        self.cond_mode = check_choice("cond_mode", cond_mode, COND_MODES)
        self.cond_dim = check_int("cond_dim", cond_dim, 1)
        channels = check_int("channels", channels, 2)
        if channels % 2:
            raise ValueError(f"channels: expected an even int (the time embedding's width), got {channels}")
        mults = [check_int(f"mults[{i}]", m, 1) for i, m in enumerate(check_sequence("mults", mults, nonempty=True))]
        levels = (list(range(1, len(mults))) if attention_levels is None
                  else check_sequence("attention_levels", attention_levels, int))
        if any(not 0 <= i < len(mults) for i in levels):
            raise ValueError(f"attention_levels: expected indices in [0, {len(mults) - 1}], got {levels}")
        self.attention_levels = tuple(sorted(set(levels))) if cond_mode == "tokens" else ()
        widths = [channels * m for m in mults]
        groups = check_int("groups", groups, 1)
        if any(w % groups for w in widths):
            raise ValueError(f"groups: expected a divisor of every width {widths}, got {groups}")
        heads = check_int("heads", heads, 1)
        self.image_channels = check_int("image_channels", image_channels, 1)
        self.emb_dim = emb = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        if cond_mode == "pooled":
            self.cond_mlp = nn.Sequential(nn.Linear(cond_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
            self.null = nn.Parameter(torch.zeros(cond_dim))
        elif cond_mode == "tokens":
            self.null = nn.Parameter(torch.randn(1, 1, cond_dim) * 0.02)

        def attention(level: int) -> nn.Module | None:
            return CrossAttention(widths[level], cond_dim, heads, groups) if level in self.attention_levels else None

        self.stem = nn.Conv2d(image_channels, widths[0], 3, padding=1)
        self.down, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, w in enumerate(widths):
            self.down.append(ResBlock(widths[max(i - 1, 0)], w, emb, groups))
            self.down_attn.append(attention(i) or nn.Identity())
            self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1) if i + 1 < len(widths) else nn.Identity())
        self.mid = ResBlock(widths[-1], widths[-1], emb, groups)
        self.mid_attn = attention(len(widths) - 1) or nn.Identity()
        self.up, self.up_attn = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            out = widths[max(i - 1, 0)]
            self.up.append(ResBlock(2 * widths[i], out, emb, groups))
            self.up_attn.append(CrossAttention(out, cond_dim, heads, groups) if i in self.attention_levels
                                else nn.Identity())
        self.out_norm = nn.GroupNorm(groups, widths[0])
        self.out = nn.Conv2d(widths[0], image_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def num_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _condition(self, cond: Any, uncond: torch.Tensor | None, batch: int
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(pooled embedding to add, context tokens, visible mask) for this batch."""
        if uncond is not None:
            check_tensor("uncond", uncond, shape=(batch,), dtype=torch.bool)
        if self.cond_mode == "none":
            if cond is not None:
                raise ValueError("cond: expected None for an unconditional UNet (cond_mode='none'), got a condition")
            return None, None, None
        drop = torch.ones(batch, dtype=torch.bool) if cond is None else (
            torch.zeros(batch, dtype=torch.bool) if uncond is None else uncond.cpu())
        if self.cond_mode == "pooled":
            if cond is None:
                vectors = self.null.expand(batch, -1)
            else:
                check_tensor("cond", cond, shape=(batch, self.cond_dim), floating=True,
                             what=f"a float tensor (B={batch}, {self.cond_dim}) of pooled embeddings")
                vectors = torch.where(drop.to(cond.device)[:, None], self.null.to(cond.dtype), cond)
            return self.cond_mlp(vectors), None, None
        null = self.null.expand(batch, 1, -1)
        if cond is None:
            return None, null, torch.ones(batch, 1, dtype=torch.bool, device=null.device)
        if not isinstance(cond, (tuple, list)) or len(cond) != 2:
            raise TypeError(f"cond: expected a pair (tokens (B, L, {self.cond_dim}), mask (B, L) bool), "
                            f"got {type(cond).__name__}")
        tokens, mask = cond
        check_tensor("cond tokens", tokens, shape=(batch, "L", self.cond_dim), floating=True)
        check_tensor("cond mask", mask, shape=(batch, tokens.shape[1]), dtype=torch.bool)
        visible = mask & ~drop.to(mask.device)[:, None]
        tokens = torch.where(visible[:, :, None], tokens, torch.zeros((), dtype=tokens.dtype, device=tokens.device))
        context = torch.cat([null.to(tokens.dtype), tokens], dim=1)
        return None, context, torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=mask.device), visible], 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None, *,
                uncond: torch.Tensor | None = None) -> torch.Tensor:
        """The prediction (B, C, H, W) for noisy images ``x`` at steps ``t`` (B,) under condition ``cond``.

        ``cond=None`` or ``uncond[i] = True`` gives row ``i`` the unconditional path (the null condition).
        ``H`` and ``W`` must be divisible by ``2 ** (len(mults) - 1)``.
        """
        check_tensor("x", x, shape=(None, self.image_channels, None, None), floating=True)
        batch = x.shape[0]
        check_tensor("t", t, shape=(batch,), dtype=(torch.int64, torch.int32), what=f"an integer tensor ({batch},)")
        factor = 2 ** (len(self.down) - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"x: expected height and width divisible by {factor}, got {tuple(x.shape[2:])}")
        emb = self.time_mlp(timestep_embedding(t, self.time_mlp[0].in_features).to(x.dtype))
        pooled, context, visible = self._condition(cond, uncond, batch)
        if pooled is not None:
            emb = emb + pooled

        def attend(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
            return layer(h, context, visible) if isinstance(layer, CrossAttention) else h

        h, skips = self.stem(x), []
        for block, attn, down in zip(self.down, self.down_attn, self.downsample):
            h = attend(attn, block(h, emb))
            skips.append(h)
            h = down(h)
        h = attend(self.mid_attn, self.mid(h, emb))
        for i, (block, attn) in enumerate(zip(self.up, self.up_attn)):
            h = attend(attn, block(torch.cat([h, skips.pop()], dim=1), emb))
            if i + 1 < len(self.up):
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.out(F.silu(self.out_norm(h)))
