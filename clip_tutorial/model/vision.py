"""CLIP's vision transformer: patches -> tokens -> transformer -> one embedding per image.

Explained in Chapter 2.1.
"""
from __future__ import annotations

import torch
from torch import nn

from .transformer import LayerNorm, Transformer

__all__ = ["VisionTransformer"]


class VisionTransformer(nn.Module):
    """The ViT image encoder of CLIP, with OpenAI's parameter names.

    An image is cut into ``patch_size`` squares by a strided convolution without bias, a learned
    class token is prepended, learned positional embeddings are added, then ``ln_pre``, the
    transformer, ``ln_post`` on the class token, and a linear projection ``proj`` into the joint space.
    :meth:`forward_tokens` applies the last two to every token instead (FILIP, Chapter 7.3).
    """

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, mlp_ratio: float = 4.0, quick_gelu: bool = True) -> None:
        super().__init__()
        self.input_resolution, self.patch_size = input_resolution, patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio, quick_gelu)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the class token in front and positions added: (batch, 1 + patches, width)."""
        x = self.conv1(images)  # (batch, width, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (batch, grid * grid, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        return x + self.positional_embedding.to(x.dtype)

    def hidden(self, images: torch.Tensor) -> torch.Tensor:
        """The transformer's output for every token, before ``ln_post``: (batch, 1 + patches, width)."""
        return self.transformer(self.ln_pre(self.tokens(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images (batch, 3, H, W) into (batch, output_dim) features, not yet normalised."""
        return self.ln_post(self.hidden(images)[:, 0]) @ self.proj

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Every output token in the joint space: (batch, 1 + patches, output_dim), class token first.

        Explained in Chapter 7.3 (FILIP). Each token gets what :meth:`forward` gives the class token
        (``ln_post``, then ``proj``), so ``forward_tokens(images)[:, 0]`` equals ``forward(images)``
        up to rounding.
        """
        return self.ln_post(self.hidden(images)) @ self.proj
