"""Model size and cost as data: parameter counts, FLOPs per image and per text, and the official model table.

Everything here works from a :class:`~clip_tutorial.model.config.CLIPConfig` alone: the model is
built on PyTorch's ``meta`` device, where tensors have shapes and dtypes but no storage, so even
RN50x64's 623 million parameters cost no memory and draw no random numbers.

**FLOP convention.** FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts matrix multiplications (``mm``, ``addmm``, ``bmm``), convolutions and attention at **2 FLOPs
per multiply-accumulate**. Element-wise work (activations, residual additions), normalisation
(LayerNorm, BatchNorm), softmax, pooling and embedding look-ups are not counted; in CLIP they are a
small fraction of the total. One image at the config's resolution, or one text of the full
``context_length`` tokens (CLIP always pads to it), is counted.

The count runs on the ``meta`` device. That is a deliberate choice, not only a memory saving: on
the CPU, ``scaled_dot_product_attention`` dispatches to a fused kernel that ``FlopCounterMode`` does
not recognise, so the attention products would silently go uncounted; on ``meta`` it runs its
reference composition of batched matrix products, which are counted.

Explained in Chapter 2.4.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from clip_tutorial.core.checks import check_choice, check_type

from .clip import CLIP
from .config import CONFIGS, OFFICIAL_MODELS, CLIPConfig

__all__ = ["ModelSummary", "count_parameters", "count_flops", "model_summary", "model_table", "format_model_table"]

_TOWERS = ("image", "text")


def _config_of(model_or_config: CLIP | CLIPConfig | str, argument: str = "model_or_config") -> CLIPConfig:
    check_type(argument, model_or_config, (CLIP, CLIPConfig, str), expected="a CLIP, a CLIPConfig or a config name")
    if isinstance(model_or_config, str):
        name = check_choice(argument, model_or_config, list(CONFIGS),
                            expected=f"a CLIP, a CLIPConfig or one of {list(CONFIGS)}")
        return CONFIGS[name]
    return model_or_config.config if isinstance(model_or_config, CLIP) else model_or_config


def _meta_model(config: CLIPConfig) -> CLIP:
    with torch.device("meta"):
        return CLIP(config).eval()


@functools.lru_cache(maxsize=64)
def _config_parameters(config: CLIPConfig) -> tuple[int, int, int]:
    """``(image, text, total)`` parameters of the config's model, instantiated on the meta device."""
    model = _meta_model(config)
    return _parameters_of(model, "image"), _parameters_of(model, "text"), _parameters_of(model, None)


def _parameters_of(model: CLIP, tower: str | None) -> int:
    total = 0
    for name, parameter in model.named_parameters():
        in_image = name.startswith("visual.")
        if tower is None or (tower == "image" and in_image) or (
            tower == "text" and not in_image and name != "logit_scale"
        ):
            total += parameter.numel()
    return total


def _count_towers(config: CLIPConfig) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """Run one image and one text through a meta model under ``FlopCounterMode``.

    Returns the total FLOPs of each tower and, for each, the FLOPs per module name (names such as
    ``ModifiedResNet.layer2.1`` or ``Transformer.resblocks.1``, relative to the module called).
    """
    model = _meta_model(config)
    side = config.image_resolution
    counts = []
    for run in (lambda: model.encode_image(torch.zeros(1, 3, side, side, device="meta")),
                lambda: model.encode_text(torch.zeros(1, config.context_length, dtype=torch.long, device="meta"))):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run()
        per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
        counts.append((int(counter.get_total_flops()), per_module))
    return counts[0][0], counts[1][0], counts[0][1], counts[1][1]


@functools.lru_cache(maxsize=64)
def _direct_flops(config: CLIPConfig) -> tuple[int, int]:
    """``(image, text)`` FLOPs through every block of the full meta model."""
    image, text, _, _ = _count_towers(config)
    return image, text


def _second_block(per_module: dict[str, int], suffix: str) -> int:
    """FLOPs of the one module whose name ends with ``suffix`` (a stack's second block)."""
    found = [flops for name, flops in per_module.items() if name.endswith(suffix)]
    if len(found) != 1:  # pragma: no cover - would mean FlopCounterMode changed its module names
        raise RuntimeError(f"expected one module named *{suffix} in the FLOP count, found {len(found)}")
    return found[0]


@functools.lru_cache(maxsize=64)
def _extrapolated_flops(config: CLIPConfig) -> tuple[int, int]:
    """Exact ``(image, text)`` FLOPs from a shallow copy with at most two blocks per stack.

    Every block after the first of a stack (a transformer, or one of a ResNet's four stages) has
    the same shapes, so it costs what the shallow copy's second block costs; the full tower costs
    the shallow one plus ``n - 2`` more of those blocks for each stack of ``n > 2`` blocks.
    """
    if config.is_resnet:
        vision_depths = config.vision_layers
        shallow_vision: int | tuple[int, ...] = tuple(min(n, 2) for n in vision_depths)
        vision_suffixes = [f".layer{i + 1}.1" for i in range(4)]
    else:
        vision_depths, shallow_vision = (config.vision_layers,), min(config.vision_layers, 2)
        vision_suffixes = [".resblocks.1"]
    shallow = config.replace(vision_layers=shallow_vision, transformer_layers=min(config.transformer_layers, 2))
    image, text, image_modules, text_modules = _count_towers(shallow)
    for blocks, suffix in zip(vision_depths, vision_suffixes):
        if blocks > 2:
            image += (blocks - 2) * _second_block(image_modules, suffix)
    if config.transformer_layers > 2:
        text += (config.transformer_layers - 2) * _second_block(text_modules, ".resblocks.1")
    return image, text


def count_parameters(model_or_config: CLIP | CLIPConfig | str, tower: str | None = None) -> int:
    """Number of parameters (learned tensors' elements; BatchNorm running statistics excluded).

    Args:
        model_or_config: a :class:`~clip_tutorial.model.clip.CLIP`, whose parameters are counted as
            they are, or a config (or config name), which is instantiated on the ``meta`` device.
        tower: ``None`` for the whole model; ``"image"`` for everything under ``visual``; ``"text"``
            for the token and positional embeddings, the transformer, ``ln_final`` and
            ``text_projection``. The two towers plus the one ``logit_scale`` make the total.

    Explained in Chapter 2.4.
    """
    if tower is not None:
        check_choice("tower", tower, _TOWERS, expected=f"None or one of {list(_TOWERS)}")
    if isinstance(model_or_config, CLIP):
        return _parameters_of(model_or_config, tower)
    image, text, total = _config_parameters(_config_of(model_or_config))
    return {"image": image, "text": text, None: total}[tower]


def count_flops(model_or_config: CLIP | CLIPConfig | str, tower: str = "image", direct: bool = False) -> int:
    """FLOPs (2 per multiply-accumulate) to encode one image or one text; see the module docstring.

    The count depends only on the shapes in the config, so a model argument is rebuilt from its
    config on the ``meta`` device; nothing is computed and no memory is used. Results are cached
    per config.

    Counting through the meta device is slow per operation (each one passes through Python), so by
    default a copy with at most two blocks per repeated stack is counted, and each stack's second
    block stands in for the blocks after it; that is exact, because the blocks after the first in
    a stack all have the same shapes. ``direct=True`` counts every block of the full model instead
    (slower; the tests check that both agree).

    Args:
        model_or_config: a :class:`~clip_tutorial.model.clip.CLIP`, a config or a config name.
        tower: ``"image"`` (one image at ``image_resolution``, through ``encode_image``) or
            ``"text"`` (one text of ``context_length`` tokens, through ``encode_text``).
        direct: count every block of the full model rather than extrapolating from shallow copies.

    Explained in Chapter 2.4.
    """
    check_choice("tower", tower, _TOWERS)
    config = _config_of(model_or_config)
    image, text = _direct_flops(config) if direct else _extrapolated_flops(config)
    return image if tower == "image" else text


@dataclass(frozen=True)
class ModelSummary:
    """One row of the model table: the sizes that define a CLIP, its parameters and its cost.

    ``vision_layers`` is an int for a ViT and four stage depths for a ResNet; ``vision_patch_size``
    is ``None`` for a ResNet; ``image_tokens`` counts the patches of a ViT, or the cells of a
    ResNet's final feature map that its attention pool reads. GFLOPs are 1e9 FLOPs for one input.

    Explained in Chapter 2.4.
    """

    name: str
    vision_type: str
    embed_dim: int
    image_resolution: int
    vision_layers: int | tuple[int, ...]
    vision_width: int
    vision_heads: int
    vision_patch_size: int | None
    image_tokens: int
    text_layers: int
    text_width: int
    text_heads: int
    context_length: int
    vocab_size: int
    params_image: int
    params_text: int
    params_total: int
    gflops_image: float
    gflops_text: float

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain dict."""
        return asdict(self)


def model_summary(name_or_config: str | CLIPConfig, name: str | None = None) -> ModelSummary:
    """Summarise one configuration: its hyper-parameters, parameter counts per tower and GFLOPs per input.

    Args:
        name_or_config: a config name such as ``"RN50"`` or ``"ViT-B/32"``, or a config.
        name: the row's label; defaults to the config name (``"custom"`` for an unnamed config).

    Explained in Chapter 2.4.
    """
    config = _config_of(name_or_config, "name_or_config")
    if name is None:
        name = name_or_config if isinstance(name_or_config, str) else "custom"
    params_image, params_text, params_total = _config_parameters(config)
    return ModelSummary(
        name=name, vision_type=config.vision_type, embed_dim=config.embed_dim,
        image_resolution=config.image_resolution, vision_layers=config.vision_layers,
        vision_width=config.vision_width, vision_heads=config.num_vision_heads,
        vision_patch_size=None if config.is_resnet else config.vision_patch_size,
        image_tokens=config.num_patches, text_layers=config.transformer_layers,
        text_width=config.transformer_width, text_heads=config.transformer_heads,
        context_length=config.context_length, vocab_size=config.vocab_size,
        params_image=params_image, params_text=params_text, params_total=params_total,
        gflops_image=count_flops(config, "image") / 1e9, gflops_text=count_flops(config, "text") / 1e9,
    )


def model_table(names: list[str] | tuple[str, ...] | None = None) -> list[ModelSummary]:
    """:func:`model_summary` for several configs; by default OpenAI's nine released models.

    Explained in Chapter 2.4.
    """
    if names is None:
        names = OFFICIAL_MODELS
    check_type("names", names, (list, tuple), expected="a list of config names or None")
    return [model_summary(name) for name in names]


def format_model_table(rows: list[ModelSummary]) -> str:
    """A Markdown table of :func:`model_table` rows (parameters in millions, GFLOPs to three significant digits).

    Explained in Chapter 2.4.
    """
    header = ("model", "tower", "embed", "res", "layers", "width", "heads", "patch", "text L/W/H",
              "params (M)", "image / text (M)", "GFLOPs image", "GFLOPs text")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        layers = "-".join(map(str, r.vision_layers)) if isinstance(r.vision_layers, tuple) else str(r.vision_layers)
        cells = (
            r.name, "ResNet" if r.vision_type == "resnet" else "ViT", r.embed_dim, r.image_resolution, layers,
            r.vision_width, r.vision_heads, r.vision_patch_size or "-",
            f"{r.text_layers}/{r.text_width}/{r.text_heads}", f"{r.params_total / 1e6:.2f}",
            f"{r.params_image / 1e6:.2f} / {r.params_text / 1e6:.2f}", f"{r.gflops_image:.3g}", f"{r.gflops_text:.3g}",
        )
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)
