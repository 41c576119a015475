"""Model sizes as data: the :class:`CLIPConfig` dataclass and the named configurations.

Explained in Chapter 1 (the tiny models) and Chapter 2.4 (the official hyper-parameters).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from clip_tutorial.core.checks import check_choice, check_int, check_number, check_positive_int, check_type

__all__ = ["CLIPConfig", "CONFIGS", "OFFICIAL_MODELS", "OPTIONAL_FIELDS", "get_config", "list_configs"]


#: Fields a CLIP's configuration leaves unset (SigLIP's initialisation, Chapter 7.1): a released
#: model's configuration need not state them, and :meth:`CLIPConfig.to_dict` omits them when unset.
OPTIONAL_FIELDS = ("init_logit_scale", "init_logit_bias")


@dataclass(frozen=True)
class CLIPConfig:
    """Every size that defines a CLIP model, with the field names of OpenAI's ``CLIP`` constructor.

    Attributes:
        embed_dim: size of the joint image-text embedding space.
        image_resolution: side of the square input image, in pixels.
        vision_layers: OpenAI's convention picks the image tower: an int is the number of residual
            attention blocks of a vision transformer; a tuple of four ints is the number of bottleneck
            blocks in each stage of a :class:`~clip_tutorial.model.resnet.ModifiedResNet` (a list is
            turned into a tuple).
        vision_width: width (channels) of the vision transformer, or the ResNet's width after its stem.
        vision_patch_size: side of one square patch, in pixels; unused by ResNets (``None`` allowed there).
        vision_heads: attention heads of the vision transformer or of the ResNet's attention pool;
            ``None`` means OpenAI's rule: ``vision_width // 64`` for a ViT (at least 1) and
            ``vision_width * 32 // 64`` for a ResNet (its pooled features have ``32 * vision_width`` channels).
        context_length: maximum number of text tokens, start and end tokens included.
        vocab_size: number of token ids the text tower embeds.
        transformer_width: width of the text transformer.
        transformer_heads: attention heads of the text transformer.
        transformer_layers: number of residual attention blocks in the text transformer.
        mlp_ratio: hidden size of each block's MLP as a multiple of the width (4 in CLIP).
        quick_gelu: use OpenAI's ``x * sigmoid(1.702 x)`` approximation instead of exact GELU.
        eot_token_id: id of the end-of-text token the text tower pools at; ``None`` pools at the
            highest id in each sequence, as OpenAI's code does (its end token has the highest id).
        init_logit_scale: initial value of the stored ``logit_scale`` (the log of the multiplier);
            ``None`` means CLIP's ``log(1 / 0.07)``. SigLIP starts at ``log(10)`` (Chapter 7.1).
        init_logit_bias: initial value of a learned bias added to every logit (SigLIP uses -10,
            Chapter 7.1); ``None`` (the default) means no bias parameter at all, as in CLIP.
    """

    embed_dim: int = 64
    image_resolution: int = 32
    vision_layers: int | tuple[int, int, int, int] = 2
    vision_width: int = 64
    vision_patch_size: int | None = 8
    vision_heads: int | None = None
    context_length: int = 16
    vocab_size: int = 128
    transformer_width: int = 64
    transformer_heads: int = 2
    transformer_layers: int = 2
    mlp_ratio: float = 4.0
    quick_gelu: bool = True
    eot_token_id: int | None = None
    init_logit_scale: float | None = None
    init_logit_bias: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.vision_layers, list):  # JSON has no tuples: accept the list and store a tuple
            object.__setattr__(self, "vision_layers", tuple(self.vision_layers))
        if isinstance(self.vision_layers, tuple):
            if len(self.vision_layers) != 4:
                raise ValueError(
                    "CLIPConfig.vision_layers: expected a positive int (ViT blocks) or four positive ints "
                    f"(ResNet blocks per stage, e.g. (3, 4, 6, 3)), got {self.vision_layers!r}"
                )
            for i, blocks in enumerate(self.vision_layers):
                check_positive_int(f"CLIPConfig.vision_layers[{i}]", blocks)
        positive = [
            "embed_dim", "image_resolution", "vision_width", "context_length", "vocab_size",
            "transformer_width", "transformer_heads", "transformer_layers",
        ]
        if not self.is_resnet:
            positive += ["vision_layers", "vision_patch_size"]
        elif self.vision_patch_size is not None:
            positive.append("vision_patch_size")
        for name in positive:
            wanted = "a positive int (None only for a ResNet)" if name == "vision_patch_size" else None
            check_positive_int(f"CLIPConfig.{name}", getattr(self, name), expected=wanted)
        if self.vision_heads is not None:
            check_positive_int("CLIPConfig.vision_heads", self.vision_heads, expected="a positive int or None")
        check_number("CLIPConfig.mlp_ratio", self.mlp_ratio, 0, low_open=True)
        if self.is_resnet and self.image_resolution % 32:
            raise ValueError(
                f"CLIPConfig.image_resolution: expected a multiple of 32 (a ResNet's total stride), "
                f"got {self.image_resolution}"
            )
        if self.is_resnet and self.vision_width % 2:
            raise ValueError(f"CLIPConfig.vision_width: expected an even ResNet width, got {self.vision_width}")
        if not self.is_resnet and self.image_resolution % self.vision_patch_size:
            raise ValueError(
                f"CLIPConfig.image_resolution: expected a multiple of vision_patch_size={self.vision_patch_size}, "
                f"got {self.image_resolution}"
            )
        if self.vision_feature_width % self.num_vision_heads:
            raise ValueError(
                f"CLIPConfig.vision_width: expected {'32 x ' if self.is_resnet else ''}vision_width to be a "
                f"multiple of the {self.num_vision_heads} vision heads, got vision_width={self.vision_width}"
            )
        if self.transformer_width % self.transformer_heads:
            raise ValueError(
                f"CLIPConfig.transformer_width: expected a multiple of transformer_heads={self.transformer_heads}, "
                f"got {self.transformer_width}"
            )
        if self.eot_token_id is not None:
            check_int("CLIPConfig.eot_token_id", self.eot_token_id, 0, self.vocab_size - 1,
                      expected=f"an id in [0, {self.vocab_size})")
        for name in OPTIONAL_FIELDS:
            if getattr(self, name) is not None:
                check_number(f"CLIPConfig.{name}", getattr(self, name))

    @property
    def is_resnet(self) -> bool:
        """``True`` when the image tower is a ModifiedResNet (``vision_layers`` is a tuple), else a ViT."""
        return isinstance(self.vision_layers, tuple)

    @property
    def vision_type(self) -> str:
        """``"resnet"`` or ``"vit"``: the kind of image tower."""
        return "resnet" if self.is_resnet else "vit"

    @property
    def vision_feature_width(self) -> int:
        """Channels the vision attention works on: ``vision_width`` for a ViT, ``32 * vision_width`` for a ResNet."""
        return self.vision_width * 32 if self.is_resnet else self.vision_width

    @property
    def num_vision_heads(self) -> int:
        """Attention heads of the image tower (OpenAI's rule ``feature width // 64`` when unset)."""
        if self.vision_heads is not None:
            return self.vision_heads
        return max(1, self.vision_feature_width // 64)

    @property
    def num_patches(self) -> int:
        """Image tokens before the class (or mean) token: patches of a ViT, final feature-map cells of a ResNet."""
        if self.is_resnet:
            return (self.image_resolution // 32) ** 2
        return (self.image_resolution // self.vision_patch_size) ** 2

    def replace(self, **changes: Any) -> "CLIPConfig":
        """Return a copy with some fields changed (validated like a new config)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"replace: unknown CLIPConfig field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain JSON-serialisable dict (a ResNet's ``vision_layers`` becomes a list).

        The SigLIP initialisation fields appear only when set, so a CLIP's dict is what it was before
        they existed (model cards, conversions); :meth:`from_dict` fills them back with ``None``.
        """
        data = dataclasses.asdict(self)
        for name in OPTIONAL_FIELDS:
            if data[name] is None:
                del data[name]
        if isinstance(data["vision_layers"], tuple):
            data["vision_layers"] = list(data["vision_layers"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CLIPConfig":
        """Build a config from :meth:`to_dict`'s output (or its JSON round trip), rejecting unknown keys."""
        check_type("data", data, dict, expected="a dict of CLIPConfig fields")
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


def _official_resnet(embed_dim: int, resolution: int, layers: tuple[int, int, int, int], width: int,
                     text_width: int, text_heads: int) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim, image_resolution=resolution, vision_layers=layers, vision_width=width,
        vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=text_width,
        transformer_heads=text_heads, transformer_layers=12,
    )


CONFIGS: dict[str, CLIPConfig] = {
    # The book's tiny models, sized to train on a laptop CPU in about a minute.
    "tiny": CLIPConfig(),
    # OpenAI's released CLIPs (Chapter 2.4), all with QuickGELU, 77 tokens and 49,408 BPE ids.
    "RN50": _official_resnet(1024, 224, (3, 4, 6, 3), 64, 512, 8),
    "RN101": _official_resnet(512, 224, (3, 4, 23, 3), 64, 512, 8),
    "RN50x4": _official_resnet(640, 288, (4, 6, 10, 6), 80, 640, 10),
    "RN50x16": _official_resnet(768, 384, (6, 8, 18, 8), 96, 768, 12),
    "RN50x64": _official_resnet(1024, 448, (3, 15, 36, 10), 128, 1024, 16),
    "ViT-B/32": _official_vit(512, 224, 12, 768, 32, 512, 8),
    "ViT-B/16": _official_vit(512, 224, 12, 768, 16, 512, 8),
    "ViT-L/14": _official_vit(768, 224, 24, 1024, 14, 768, 12),
    "ViT-L/14@336": _official_vit(768, 336, 24, 1024, 14, 768, 12),
}

#: The nine CLIPs OpenAI released, in the order ``clip.available_models()`` lists them: five ResNets, then four ViTs.
OFFICIAL_MODELS: tuple[str, ...] = (
    "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336",
)


def list_configs() -> list[str]:
    """Names accepted by :func:`get_config`."""
    return list(CONFIGS)


def get_config(name: str, **overrides: Any) -> CLIPConfig:
    """Return the named configuration, optionally with some fields replaced.

    Raises:
        TypeError: if ``name`` is not a str.
        ValueError: if ``name`` is not one of :func:`list_configs`.
    """
    config = CONFIGS[check_choice("name", name, list_configs())]
    return config.replace(**overrides) if overrides else config
