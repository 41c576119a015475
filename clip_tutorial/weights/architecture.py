"""What architecture a state dict holds: its sizes, read off the tensors' shapes, and its head counts.

OpenAI's and open_clip's files come without a configuration, and need none for the sizes: the
tensors' shapes hold every one of them, the way OpenAI's ``build_model`` reads them (the width
from ``ln_final``, the depth by counting blocks, the patch size from ``conv1``, the resolution
from the number of positions, a ResNet's four stage depths).

Two things no tensor shape tells are the number of attention heads and the activation. OpenAI's
models use 64-wide heads and QuickGELU; open_clip's larger ones do not (ViT-H/14 has 80-wide
vision heads, ViT-g/14 88, ViT-bigG/14 104) and its models trained elsewhere use exact GELU. A
wrong guess loads without complaint and computes something else, so :func:`config_from_state_dict`
takes them from what it is told (the fields themselves, or what a model name or a config states:
:func:`~clip_tutorial.weights.configs.config_facts`) and guesses only where OpenAI's rule is safe
to assume. :func:`check_state_dict` is the one check, for every format, that tensors fit a model.

Explained in Chapter 4.1.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from clip_tutorial.model import CLIPConfig
from clip_tutorial.model.config import CONFIGS, OFFICIAL_MODELS

__all__ = ["OPENAI_EXTRA_KEYS", "HEAD_WIDTH_FIELDS", "STATED_FIELDS", "clean_state_dict", "check_state_dict",
           "config_from_state_dict"]

#: Scalar metadata entries of OpenAI's released files that are not parameters.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
#: The two head sizes a caller may give instead of head counts (``width // head_width`` heads).
HEAD_WIDTH_FIELDS = ("vision_head_width", "transformer_head_width")
#: The fields a caller may state about a model, CLIPConfig's and the two head widths.
STATED_FIELDS = frozenset(CLIPConfig.__dataclass_fields__) | frozenset(HEAD_WIDTH_FIELDS)
_SHOW = 10  # how many keys an error message lists before it only counts
_SIZES = ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size", "context_length",
          "vocab_size", "transformer_width", "transformer_layers", "mlp_ratio")


def clean_state_dict(state_dict: Mapping[str, Any], name: str = "state_dict") -> dict[str, Any]:
    """Drop a ``module.`` prefix (DistributedDataParallel), OpenAI's scalar metadata entries and causal masks.

    TorchScript cannot mark a buffer non-persistent, so an archive saved from *our* model carries
    the causal ``attn_mask``, which the model rebuilds itself; OpenAI's files have none. The
    readers of every released format start with this. Explained in Chapter 4.

    Raises:
        TypeError: if ``state_dict`` is not a mapping; the message names it as ``name``.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{name}: expected a mapping of parameter names to tensors, got {type(state_dict).__name__}")
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key not in OPENAI_EXTRA_KEYS and key.rsplit(".", 1)[-1] != "attn_mask":
            out[key] = value
    return out


def _listed(label: str, items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {label}: {', '.join(items[:_SHOW])}{more}"


def check_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping[str, Any], name: str) -> None:
    """Raise a ``ValueError`` listing missing keys, unexpected keys and shape mismatches, if any.

    Args:
        expected: the state dict the model wants (e.g. ``model.state_dict()``).
        got: the tensors on offer.
        name: what ``got`` is, for the message (a file, an argument name).

    Raises:
        ValueError: naming, with counts, the missing keys, the unexpected keys and the shapes that differ.

    Explained in Chapter 4.
    """
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k} (expected {tuple(expected[k].shape)}, got {tuple(getattr(got[k], 'shape', ()))})"
        for k in sorted(set(expected) & set(got))
        if not isinstance(got[k], torch.Tensor) or got[k].shape != expected[k].shape
    ]
    problems = [_listed(label, items) for label, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]
    if problems:
        raise ValueError(f"{name}: the tensors do not fit the model; " + "; ".join(problems))


def _count_blocks(sd: Mapping[str, Any], prefix: str, index: int = 2) -> int:  # distinct block numbers
    return len({k.split(".")[index] for k in sd if k.startswith(prefix)})


def _sizes(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Every size the tensors show, the way OpenAI's ``build_model`` reads them."""
    needed = ["text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight",
              "transformer.resblocks.0.mlp.c_fc.weight"]
    resnet = "visual.proj" not in sd
    needed += (["visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding"] if resnet
               else ["visual.conv1.weight", "visual.positional_embedding",
                     "visual.transformer.resblocks.0.mlp.c_fc.weight"])
    missing = [k for k in needed if k not in sd]
    if missing:
        raise ValueError(f"state_dict: cannot infer the model's sizes, missing keys {missing}")
    width = sd["ln_final.weight"].shape[0]
    sizes: dict[str, Any] = dict(
        embed_dim=sd["text_projection"].shape[1], context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0], transformer_width=width,
        transformer_layers=_count_blocks(sd, "transformer.resblocks."),
        mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
    )
    if resnet:  # four stages of bottleneck blocks; the attention pool sees a 1/32 resolution grid
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        sizes.update(vision_layers=tuple(_count_blocks(sd, f"visual.layer{s}.") for s in (1, 2, 3, 4)),
                     vision_width=sd["visual.layer1.0.conv1.weight"].shape[0], image_resolution=32 * grid,
                     vision_patch_size=None)
    else:
        patch, vision_width = sd["visual.conv1.weight"].shape[-1], sd["visual.conv1.weight"].shape[0]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        sizes.update(vision_layers=_count_blocks(sd, "visual.transformer.resblocks.", 3), vision_width=vision_width,
                     vision_patch_size=patch, image_resolution=patch * grid)
        hidden = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        if hidden != int(vision_width * sizes["mlp_ratio"]):
            raise ValueError(
                f"state_dict: the towers have different MLP ratios (vision {hidden / vision_width:.4g}, text "
                f"{sizes['mlp_ratio']:.4g}), but this CLIP has one mlp_ratio for both (open_clip's ViT-g-14 and "
                "ViT-bigG-14 are such models); it cannot hold these weights")
    return {k: (v if v is None or isinstance(v, (float, tuple)) else int(v)) for k, v in sizes.items()}


def _differences(sizes: Mapping[str, Any], stated: Mapping[str, Any]) -> list[str]:
    """The stated sizes that the tensors contradict (an MLP ratio counts by the widths it gives)."""
    out = []
    for key in set(_SIZES) & set(stated):
        given, found = stated[key], sizes[key]
        given = tuple(given) if isinstance(given, list) else given
        same = (key == "mlp_ratio" and isinstance(given, (int, float))
                and int(sizes["transformer_width"] * given) == int(sizes["transformer_width"] * found))
        if given != found and not same:
            out.append(f"{key} (config {given!r}, tensors {found!r})")
    return sorted(out)


def _heads(sizes: Mapping[str, Any], stated: Mapping[str, Any]) -> dict[str, Any]:
    """``vision_heads`` and ``transformer_heads``: as stated, else known, else OpenAI's rule where it is safe."""
    resnet = isinstance(sizes["vision_layers"], tuple)
    known = next((c for c in CONFIGS.values() if all(getattr(c, k) == sizes[k] for k in _SIZES)), None)
    released = [CONFIGS[n] for n in OFFICIAL_MODELS]
    towers = (("vision_heads", "image", sizes["vision_width"] * (32 if resnet else 1), "vision_width",
               {c.vision_width for c in released if c.is_resnet == resnet}),
              ("transformer_heads", "text", sizes["transformer_width"], "transformer_width",
               {c.transformer_width for c in released}))
    heads, assumed, unknown = {}, [], []
    for field, tower, width, size, openai_widths in towers:
        rule, head_width = max(1, width // 64), stated.get(field.replace("heads", "head_width"))
        if head_width is not None:
            if isinstance(head_width, bool) or not isinstance(head_width, int) or head_width <= 0 or width % head_width:
                raise ValueError(f"{field.replace('heads', 'head_width')}: expected a positive int dividing the "
                                 f"{tower} tower's width {width}, got {head_width!r}")
            if stated.get(field) not in (None, width // head_width):
                raise ValueError(f"{field}: expected {width // head_width} heads, as the head width "
                                 f"{head_width} of the {tower} tower's width {width} gives, got {stated[field]}")
            heads[field] = None if field == "vision_heads" and width // head_width == rule else width // head_width
        elif field in stated:
            heads[field] = stated[field]
        elif known is not None:
            heads[field] = getattr(known, field)
        else:
            heads[field] = None if field == "vision_heads" else rule  # None: CLIPConfig's own spelling of the rule
            guess = f"{field}={rule} ({tower} width {width} / 64)"
            (assumed if sizes[size] in openai_widths else unknown).append(guess)
    if unknown:
        raise ValueError(
            f"state_dict: cannot tell the number of attention heads: {', '.join(unknown)} would follow OpenAI's rule "
            "of 64-wide heads, but no OpenAI model has this width, and a wrong count changes no tensor shape, only "
            "every output. Pass vision_heads=/transformer_heads= (or vision_head_width=/transformer_head_width=), "
            "or config=: an open_clip model name such as 'ViT-H-14', an open_clip model config (dict or JSON file) "
            "or a Hugging Face config.json")
    if assumed:
        warnings.warn(f"state_dict: assumed OpenAI's rule of 64-wide attention heads: {', '.join(assumed)}; the "
                      "widths are OpenAI's but the sizes are not those of a released model. Pass vision_heads=/"
                      "transformer_heads= or config= to state them", UserWarning, stacklevel=3)
    return heads


def config_from_state_dict(state_dict: Mapping[str, Any], **stated: Any) -> CLIPConfig:
    """Infer the :class:`~clip_tutorial.model.CLIPConfig` of an OpenAI / open_clip state dict.

    Every size is read off the tensors' shapes, the way OpenAI's ``build_model`` does it; sizes in
    ``stated`` must agree with them. The head counts, which no shape shows, are taken

    1. from ``stated`` (``vision_heads``/``transformer_heads``, or ``vision_head_width``/
       ``transformer_head_width``: each head's width), else
    2. from the named config of :data:`~clip_tutorial.model.config.CONFIGS` with exactly these sizes
       (OpenAI's nine models and the book's ``tiny``), else
    3. from OpenAI's rule ``width // 64`` with a warning naming it, for a tower whose width is one of
       OpenAI's released models'; for any other width this raises instead of guessing.

    QuickGELU and pooling at the highest token id (``eot_token_id=None``) are OpenAI's choices,
    kept unless ``stated`` says otherwise. Explained in Chapter 4.

    Args:
        state_dict: parameter names to tensors; a ``module.`` prefix and OpenAI's metadata
            entries (``input_resolution``, ``context_length``, ``vocab_size``) are ignored.
        **stated: CLIPConfig fields and head widths, e.g. ``transformer_heads=2, quick_gelu=False``,
            or ``**config_facts("ViT-H-14")``.

    Raises:
        ValueError: if a key needed to infer the sizes is missing, a stated size differs from the
            tensors', a head width does not divide its tower's width, the towers' MLP ratios differ,
            or the head counts cannot be told (step 3).
    """
    unknown = set(stated) - STATED_FIELDS
    if unknown:
        raise ValueError(f"config_from_state_dict: unknown field(s) {sorted(unknown)}; expected CLIPConfig fields "
                         "or vision_head_width / transformer_head_width")
    sizes = _sizes(clean_state_dict(state_dict))
    differences = _differences(sizes, stated)
    if differences:
        raise ValueError("config: expected the sizes of the state dict's tensors, got differing fields: "
                         + "; ".join(differences))
    rest = {k: v for k, v in stated.items() if k not in _SIZES and k not in HEAD_WIDTH_FIELDS}
    return CLIPConfig(**{**sizes, **rest, **_heads(sizes, stated)})
