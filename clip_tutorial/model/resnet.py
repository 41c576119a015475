"""CLIP's ResNet image encoder: OpenAI's ``ModifiedResNet`` with anti-aliased downsampling and attention pooling.

OpenAI trained five ResNet CLIPs (RN50, RN101, RN50x4, RN50x16, RN50x64) beside the vision
transformers. Their image tower is a ResNet-50-style network with three changes:

* a **stem of three 3x3 convolutions** (the first with stride 2) and an average pool, instead of one
  7x7 convolution and a max pool;
* **anti-aliased downsampling**: no convolution has a stride; where the resolution halves, an average
  pool does it, *before* the 1x1 convolution that follows;
* **attention pooling** instead of global average pooling: the mean of the final feature map asks one
  multi-head attention query over all positions, and its answer is projected into the joint space.

Module and parameter names equal OpenAI's (``conv1``, ``layer1.0.downsample.0``, ``attnpool.q_proj`` ...),
so an official state dict loads key for key.

Explained in Chapter 2.1.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import check_positive_int, check_sequence

__all__ = ["Bottleneck", "AttentionPool2d", "ModifiedResNet"]


class Bottleneck(nn.Module):
    """A ResNet bottleneck block whose downsampling is an average pool (anti-aliased).

    ``1x1 conv -> BN -> ReLU -> 3x3 conv -> BN -> ReLU -> avgpool(stride) -> 1x1 conv (x4 channels) -> BN``,
    then the shortcut is added and a final ReLU applied. When ``stride > 1`` or the channel count
    changes, the shortcut is ``avgpool(stride) -> 1x1 conv -> BN`` (keys ``downsample.0`` for the
    convolution and ``downsample.1`` for the batch norm, as in OpenAI's weights; the pool has none).

    Why the average pool? A strided convolution keeps one position in ``stride`` and throws the rest
    away, so high-frequency detail aliases: shifting the image by one pixel can change the output a
    lot. Averaging each ``stride x stride`` window first is a low-pass filter (a box blur), so the
    subsampling that follows sees a smoothed signal and the features shift more gracefully with the
    input (Zhang, *Making Convolutional Networks Shift-Invariant Again*, 2019).

    Args:
        inplanes: channels of the input.
        planes: channels inside the block; the output has ``planes * Bottleneck.expansion``.
        stride: downsampling factor (1 keeps the resolution).

    Explained in Chapter 2.1.
    """

    #: Output channels are ``planes * expansion``: the bottleneck widens again after its 3x3 convolution.
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        check_positive_int("inplanes", inplanes)
        check_positive_int("planes", planes)
        check_positive_int("stride", stride)
        out = planes * self.expansion
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride > 1 or inplanes != out:
            # OpenAI names the pool "-1" so that the convolution and batch norm keep the keys 0 and 1.
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                ("0", nn.Conv2d(inplanes, out, 1, bias=False)),
                ("1", nn.BatchNorm2d(out)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (batch, inplanes, H, W) to (batch, 4 * planes, H / stride, W / stride)."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Pool a feature map into one vector by letting its mean attend over every position.

    The (batch, channels, H, W) map becomes ``H * W`` tokens; their mean is put in front as an extra
    token, learned positional embeddings are added to all ``H * W + 1`` tokens, and a single
    multi-head attention query, made from the mean token, reads a weighted mix of the values.
    ``c_proj`` (the attention's output projection) maps the result to ``output_dim``.

    Why attention pooling? Global average pooling weighs every position equally. Here the mean is
    only the *question*: each head decides, from content and position, which regions matter, much
    like the class token of a vision transformer, and the output projection doubles as the
    projection into the joint embedding space.

    Args:
        spacial_dim: side of the square feature map (``input_resolution // 32`` in CLIP); OpenAI's spelling.
        embed_dim: channels of the feature map.
        num_heads: attention heads; must divide ``embed_dim``.
        output_dim: size of the pooled vector; ``None`` keeps ``embed_dim``.

    Explained in Chapter 2.1.
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None) -> None:
        super().__init__()
        check_positive_int("spacial_dim", spacial_dim)
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("num_heads", num_heads)
        if output_dim is not None:
            check_positive_int("output_dim", output_dim)
        if embed_dim % num_heads:
            raise ValueError(f"num_heads: expected a divisor of embed_dim={embed_dim}, got {num_heads}")
        self.spacial_dim, self.num_heads = spacial_dim, num_heads
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool (batch, embed_dim, spacial_dim, spacial_dim) into (batch, output_dim)."""
        batch, channels, height, width = x.shape
        if (height, width) != (self.spacial_dim, self.spacial_dim):
            raise ValueError(
                f"x: expected a {self.spacial_dim}x{self.spacial_dim} feature map, got {height}x{width}"
            )
        tokens = x.flatten(2).transpose(1, 2)  # (batch, H * W, channels)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.positional_embedding.to(tokens.dtype)
        head_dim = channels // self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:  # (batch, n, channels) -> (batch, heads, n, head_dim)
            return t.view(batch, -1, self.num_heads, head_dim).transpose(1, 2)

        # Only the mean token asks a question, so only its query is computed.
        q = split(self.q_proj(tokens[:, :1]))
        k, v = split(self.k_proj(tokens)), split(self.v_proj(tokens))
        out = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, 1, head_dim)
        return self.c_proj(out.reshape(batch, channels))


class ModifiedResNet(nn.Module):
    """OpenAI's ResNet image encoder for CLIP: three-conv stem, anti-aliased bottlenecks, attention pooling.

    Layout: ``conv1`` (3x3, stride 2, ``width // 2`` channels) ``-> bn1 -> relu1 -> conv2`` (3x3)
    ``-> bn2 -> relu2 -> conv3`` (3x3, ``width`` channels) ``-> bn3 -> relu3 -> avgpool(2)``, then
    ``layer1`` to ``layer4`` of :class:`Bottleneck` blocks (``width``, ``2 width``, ``4 width`` and
    ``8 width`` planes; the last three halve the resolution), and :class:`AttentionPool2d` over the
    ``input_resolution // 32`` square map of ``width * 32`` channels. The stem's three 3x3
    convolutions (the first strided) see an 11x11 window of the input, a little more than ResNet's
    single 7x7 convolution, and apply three non-linearities where it applies one; being wider,
    they cost more weights and multiply-adds.

    Args:
        layers: number of bottleneck blocks in each of the four stages, e.g. ``(3, 4, 6, 3)`` for RN50.
        output_dim: size of the image features (the joint embedding dimension).
        heads: attention heads of the pooling layer (``width * 32 // 64`` in OpenAI's models).
        input_resolution: side of the square input image; a multiple of 32.
        width: channels after the stem; every stage scales it.

    Explained in Chapter 2.1.
    """

    def __init__(self, layers: Sequence[int], output_dim: int, heads: int, input_resolution: int = 224,
                 width: int = 64) -> None:
        super().__init__()
        layers = check_sequence("layers", layers, expected="four block counts such as (3, 4, 6, 3)")
        if len(layers) != 4:
            raise ValueError(f"layers: expected four block counts such as (3, 4, 6, 3), got {layers!r}")
        for i, count in enumerate(layers):
            check_positive_int(f"layers[{i}]", count)
        check_positive_int("output_dim", output_dim)
        check_positive_int("width", width)
        check_positive_int("input_resolution", input_resolution)
        if input_resolution % 32:
            raise ValueError(f"input_resolution: expected a multiple of 32 (the ResNet's total stride), got {input_resolution}")
        if width % 2:
            raise ValueError(f"width: expected an even number (the stem's first convolutions use width // 2), got {width}")
        self.layers, self.output_dim, self.input_resolution = tuple(layers), output_dim, input_resolution
        half = width // 2
        self.conv1 = nn.Conv2d(3, half, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(half, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes = width * 2**i
            stage = [Bottleneck(inplanes, planes, stride=1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)
        self.init_openai_()

    def init_openai_(self) -> None:
        """OpenAI's initialisation of the ResNet tower, in place.

        The four attention-pool projections are normal with std ``in_features ** -0.5``, and the last
        batch norm of every bottleneck (``bn3.weight``) is zeroed, so each residual branch starts as
        nothing and every block begins as the identity (through its shortcut): a deep network that
        starts shallow trains more stably (Goyal et al., 2017). Convolutions keep torch's default.
        """
        std = self.attnpool.c_proj.in_features**-0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                nn.init.zeros_(block.bn3.weight)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The three-convolution stem and its average pool: (batch, 3, R, R) -> (batch, width, R/4, R/4)."""
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images (batch, 3, R, R) into (batch, output_dim) features, not yet normalised."""
        x = self.stem(x.to(self.conv1.weight.dtype))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)
