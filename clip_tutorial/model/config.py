"""Model sizes as data: the :class:`CLIPConfig` dataclass and the named configurations.

Explained in Chapter 1 (the tiny models) and Chapter 2.4 (the official hyper-parameters).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["CLIPConfig", "CONFIGS", "get_config", "list_configs"]


@dataclass(frozen=True)
class CLIPConfig:
    """Every size that defines a CLIP model, with the field names of OpenAI's ``CLIP`` constructor.

    Attributes:
        embed_dim: size of the joint image-text embedding space.
        image_resolution: side of the square input image, in pixels.
        vision_layers: number of residual attention blocks in the vision transformer.
        vision_width: width (channels) of the vision transformer.
        vision_patch_size: side of one square patch, in pixels.
        vision_heads: attention heads of the vision transformer; ``None`` means ``vision_width // 64``
            as in OpenAI's models (at least 1).
        context_length: maximum number of text tokens, start and end tokens included.
        vocab_size: number of token ids the text tower embeds.
        transformer_width: width of the text transformer.
        transformer_heads: attention heads of the text transformer.
        transformer_layers: number of residual attention blocks in the text transformer.
        mlp_ratio: hidden size of each block's MLP as a multiple of the width (4 in CLIP).
        quick_gelu: use OpenAI's ``x * sigmoid(1.702 x)`` approximation instead of exact GELU.
        eot_token_id: id of the end-of-text token the text tower pools at; ``None`` pools at the
            highest id in each sequence, as OpenAI's code does (its end token has the highest id).
    """

    embed_dim: int = 64
    image_resolution: int = 32
    vision_layers: int = 2
    vision_width: int = 64
    vision_patch_size: int = 8
    vision_heads: int | None = None
    context_length: int = 16
    vocab_size: int = 128
    transformer_width: int = 64
    transformer_heads: int = 2
    transformer_layers: int = 2
    mlp_ratio: float = 4.0
    quick_gelu: bool = True
    eot_token_id: int | None = None

    def __post_init__(self) -> None:
        positive = (
            "embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
            "context_length", "vocab_size", "transformer_width", "transformer_heads", "transformer_layers",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"CLIPConfig.{name}: expected a positive int, got {value!r}")
        if self.vision_heads is not None and (
            isinstance(self.vision_heads, bool) or not isinstance(self.vision_heads, int) or self.vision_heads <= 0
        ):
            raise ValueError(f"CLIPConfig.vision_heads: expected a positive int or None, got {self.vision_heads!r}")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or not self.mlp_ratio > 0:
            raise ValueError(f"CLIPConfig.mlp_ratio: expected a positive number, got {self.mlp_ratio!r}")
        if self.image_resolution % self.vision_patch_size:
            raise ValueError(
                f"CLIPConfig.image_resolution: expected a multiple of vision_patch_size={self.vision_patch_size}, "
                f"got {self.image_resolution}"
            )
        if self.vision_width % self.num_vision_heads:
            raise ValueError(
                f"CLIPConfig.vision_width: expected a multiple of the {self.num_vision_heads} vision heads, "
                f"got {self.vision_width}"
            )
        if self.transformer_width % self.transformer_heads:
            raise ValueError(
                f"CLIPConfig.transformer_width: expected a multiple of transformer_heads={self.transformer_heads}, "
                f"got {self.transformer_width}"
            )
        if self.eot_token_id is not None and (
            isinstance(self.eot_token_id, bool) or not isinstance(self.eot_token_id, int)
            or not 0 <= self.eot_token_id < self.vocab_size
        ):
            raise ValueError(
                f"CLIPConfig.eot_token_id: expected an id in [0, {self.vocab_size}), got {self.eot_token_id}"
            )

    @property
    def num_vision_heads(self) -> int:
        """Attention heads of the vision transformer (OpenAI's rule ``width // 64`` when unset)."""
        if self.vision_heads is not None:
            return self.vision_heads
        return max(1, self.vision_width // 64)

    @property
    def num_patches(self) -> int:
        """Number of image patches, that is image tokens before the class token."""
        return (self.image_resolution // self.vision_patch_size) ** 2

    def replace(self, **changes: Any) -> "CLIPConfig":
        """Return a copy with some fields changed (validated like a new config)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"replace: unknown CLIPConfig field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CLIPConfig":
        """Build a config from :meth:`to_dict`'s output, rejecting unknown keys."""
        if not isinstance(data, dict):
            raise TypeError(f"data: expected a dict of CLIPConfig fields, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"data: unknown CLIPConfig field(s) {sorted(unknown)}")
        return cls(**data)


def _official_vit(embed_dim: int, resolution: int, layers: int, width: int, patch: int,
                  text_width: int, text_heads: int) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim, image_resolution=resolution, vision_layers=layers, vision_width=width,
        vision_patch_size=patch, context_length=77, vocab_size=49408, transformer_width=text_width,
        transformer_heads=text_heads, transformer_layers=12,
    )


CONFIGS: dict[str, CLIPConfig] = {
    # The book's tiny models, sized to train on a laptop CPU in about a minute.
    "tiny": CLIPConfig(),
    # OpenAI's released vision-transformer CLIPs (the ResNet family arrives in Chapter 2).
    "ViT-B/32": _official_vit(512, 224, 12, 768, 32, 512, 8),
    "ViT-B/16": _official_vit(512, 224, 12, 768, 16, 512, 8),
    "ViT-L/14": _official_vit(768, 224, 24, 1024, 14, 768, 12),
    "ViT-L/14@336": _official_vit(768, 336, 24, 1024, 14, 768, 12),
}


def list_configs() -> list[str]:
    """Names accepted by :func:`get_config`."""
    return list(CONFIGS)


def get_config(name: str, **overrides: Any) -> CLIPConfig:
    """Return the named configuration, optionally with some fields replaced.

    Raises:
        ValueError: if ``name`` is not one of :func:`list_configs`.
    """
    if not isinstance(name, str) or name not in CONFIGS:
        raise ValueError(f"name: expected one of {list_configs()}, got {name!r}")
    config = CONFIGS[name]
    return config.replace(**overrides) if overrides else config
