"""The transformer both CLIP towers share: attention, the pre-LN residual block and the stack.

Parameter names follow OpenAI's CLIP (``attn.in_proj_weight``, ``mlp.c_fc``, ``ln_1`` ...), so a
state dict of the official model maps onto these modules key for key.

Explained in Chapter 2.1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import check_positive_int

__all__ = ["LayerNorm", "QuickGELU", "MultiheadAttention", "ResidualAttentionBlock", "Transformer", "causal_mask"]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, so it stays accurate under fp16/bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of ``x`` in float32 and return it in ``x``'s dtype."""
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """OpenAI's GELU approximation ``x * sigmoid(1.702 * x)``, which its released weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``x * sigmoid(1.702 x)`` element-wise."""
        if torch.is_grad_enabled() and x.requires_grad:
            return x * torch.sigmoid(1.702 * x)
        # Without autograd the temporary can be reused in place: the same numbers, bit for bit, with
        # two fewer allocations of the block's widest activation (a measurable share of inference).
        return torch.mul(x, 1.702).sigmoid_().mul_(x)


class MultiheadAttention(nn.Module):
    """Multi-head scaled dot-product attention with one packed q/k/v projection.

    The packed ``in_proj_weight`` of shape ``(3 * width, width)`` holds the query, key and value
    projections stacked in that order, as in ``torch.nn.MultiheadAttention`` and OpenAI's weights.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        width, heads = check_positive_int("width", width), check_positive_int("heads", heads)
        if width % heads:
            raise ValueError(f"heads: expected a divisor of width={width}, got {heads}")
        self.width, self.heads = width, heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over the sequence dimension of ``x`` (batch, tokens, width).

        Args:
            x: the token sequence, batch first.
            attn_mask: an additive float mask of shape (tokens, tokens), ``-inf`` where a query
                may not look, as CLIP's causal text mask, or a boolean mask that is ``True`` where a
                query may not look (torch's convention); ``None`` lets every token see every token.
        """
        batch, tokens, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # (batch, tokens, 3 * width) -> three tensors of (batch, heads, tokens, head_dim)
        q, k, v = qkv.view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # torch's boolean convention: True marks a position that may NOT be attended to.
            attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(attn_mask, -math.inf)
        elif attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(batch, tokens, width)
        return self.out_proj(out)


class ResidualAttentionBlock(nn.Module):
    """A pre-LN transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = True) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = LayerNorm(width)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", QuickGELU() if quick_gelu else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the attention and MLP sub-blocks, each with its residual connection."""
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of :class:`ResidualAttentionBlock` s sharing one optional attention mask."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = True) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, quick_gelu) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``x`` (batch, tokens, width) through every block."""
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x

    def init_openai_(self) -> None:
        """Initialise the blocks as OpenAI's text tower does (normal with width/depth-scaled std)."""
        proj_std = self.width**-0.5 * (2 * self.layers) ** -0.5
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The additive causal mask: ``-inf`` above the diagonal, so token i only sees tokens <= i."""
    return torch.full((length, length), -math.inf, device=device).triu_(1)
