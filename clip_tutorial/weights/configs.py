"""What a model's name or configuration states that its tensors cannot: head widths, activation, sizes.

:func:`config_facts` reads :class:`~clip_tutorial.model.CLIPConfig` fields from whatever states
them: a name (OpenAI's ``"ViT-B/32"``, or open_clip's ``"ViT-H-14"`` of
:data:`OPEN_CLIP_ARCHITECTURES`), an open_clip model config, a Hugging Face ``config.json``
(read by :func:`~clip_tutorial.weights.hf.config_from_hf`), or a JSON file holding one of these
(:func:`read_config_file`). :func:`~clip_tutorial.weights.architecture.config_from_state_dict`
joins these facts to the sizes the tensors show.

Explained in Chapter 4.1.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clip_tutorial.model import CLIPConfig
from clip_tutorial.model.config import CONFIGS, OFFICIAL_MODELS
from .architecture import STATED_FIELDS
from .hf import config_from_hf

__all__ = ["OPEN_CLIP_ARCHITECTURES", "read_config_file", "config_facts"]

# open_clip's plain CLIP architectures (its ``model_configs/*.json``): the width of one vision head
# (``vision_cfg.head_width``). All their text towers have 64-wide heads (``text_cfg.width / heads``).
_VISION_HEAD_WIDTHS = {"RN50": 64, "RN101": 64, "RN50x4": 64, "RN50x16": 64, "RN50x64": 64, "ViT-B-32": 64,
                       "ViT-B-16": 64, "ViT-L-14": 64, "ViT-L-14-336": 64, "ViT-H-14": 80, "ViT-H-14-378": 80,
                       "ViT-H-16": 80, "ViT-g-14": 88, "ViT-bigG-14": 104}
#: open_clip's name -> ``(vision head width, text head width, quick_gelu)``. A name ending in
#: ``-quickgelu`` uses QuickGELU (the weights OpenAI trained, or DFN's); the plain names use exact GELU,
#: open_clip's default (LAION's weights). OpenAI's own names (``"ViT-B/32"``, with a slash) are the
#: configs of :data:`clip_tutorial.model.config.CONFIGS`: 64-wide heads everywhere and QuickGELU.
OPEN_CLIP_ARCHITECTURES: dict[str, tuple[int, int, bool]] = {
    **{name: (width, 64, False) for name, width in _VISION_HEAD_WIDTHS.items()},
    **{f"{name}-quickgelu": (width, 64, True) for name, width in _VISION_HEAD_WIDTHS.items()
       if name not in ("ViT-H-16", "ViT-g-14")},  # the two without a QuickGELU config
}


def read_config_file(path: str | os.PathLike, name: str = "config") -> dict[str, Any]:
    """The JSON object in ``path`` (an open_clip model config, a Hugging Face ``config.json``, ...).

    Explained in Chapter 4.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if it is not a JSON object; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: expected a JSON config file, but {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{name}: expected a JSON config file, but {path} does not parse as JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a JSON object in {path}, got a {type(data).__name__}")
    return data


_OC_VISION = {"image_size": 224, "layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0, "patch_size": 16}
_OC_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0}
# Options that do not change what a trained model computes, and the values of the others that mean plain CLIP.
_OC_HARMLESS = {"patch_dropout", "output_tokens", "custom_text", "timm_model_pretrained", "hf_model_pretrained"}
_OC_PLAIN = {"vision_cfg": {"pool_type": "tok", "pos_embed_type": "learnable", "in_chans": 3, "block_type": "default"},
             "text_cfg": {"pool_type": "argmax", "text_arch": "clip", "proj_type": "linear", "block_type": "default"},
             "": {}}


def _unsupported(section: str, cfg: Mapping[str, Any], read: set[str]) -> list[str]:
    """Options in ``cfg`` this CLIP cannot honour (set, and not to what plain CLIP does)."""
    plain = _OC_PLAIN[section]
    return [f"{section + '.' if section else ''}{key}={value!r}" for key, value in cfg.items()
            if key not in read | _OC_HARMLESS and value not in (None, False, 0, "", {}, [])
            and plain.get(key, object()) != value]


def _open_clip_facts(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """CLIPConfig fields (and the vision head width) stated by an open_clip model config."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if not isinstance(vision, Mapping) or not isinstance(text, Mapping) or "embed_dim" not in cfg:
        raise ValueError(f"{name}: expected an open_clip model config with embed_dim, vision_cfg and text_cfg, "
                         f"got the keys {sorted(cfg)}")
    problems = (_unsupported("", cfg, {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"})
                + _unsupported("vision_cfg", vision, set(_OC_VISION)) + _unsupported("text_cfg", text, set(_OC_TEXT)))
    if problems:
        raise ValueError(f"{name}: expected a plain CLIP, got options this CLIP does not implement: "
                         f"{', '.join(problems)}")
    v, t = {**_OC_VISION, **vision}, {**_OC_TEXT, **text}
    resnet = isinstance(v["layers"], (list, tuple))
    size = v["image_size"]
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"{name}: expected a square vision_cfg.image_size, got {size}")
        size = size[0]
    if not resnet and int(v["width"] * v["mlp_ratio"]) != int(v["width"] * t["mlp_ratio"]):
        raise ValueError(f"{name}: the towers have different MLP ratios (vision_cfg {v['mlp_ratio']}, text_cfg "
                         f"{t['mlp_ratio']}), but this CLIP has one mlp_ratio for both; it cannot hold this model")
    return dict(embed_dim=cfg["embed_dim"], image_resolution=size, vision_layers=tuple(v["layers"]) if resnet
                else v["layers"], vision_width=v["width"], vision_patch_size=None if resnet else v["patch_size"],
                vision_head_width=v["head_width"], context_length=t["context_length"], vocab_size=t["vocab_size"],
                transformer_width=t["width"], transformer_heads=t["heads"], transformer_layers=t["layers"],
                mlp_ratio=t["mlp_ratio"], quick_gelu=bool(cfg.get("quick_gelu", False)), eot_token_id=None)


def config_facts(source: Any, name: str = "config") -> dict[str, Any]:
    """What ``source`` says about a model, as :class:`~clip_tutorial.model.CLIPConfig` fields.

    The fields may include ``vision_head_width`` / ``transformer_head_width`` (see
    :data:`~clip_tutorial.weights.architecture.HEAD_WIDTH_FIELDS`), which
    :func:`~clip_tutorial.weights.architecture.config_from_state_dict` turns into head counts.
    Explained in Chapter 4.

    Args:
        source: ``None`` (nothing); a ``CLIPConfig``; a name: OpenAI's (``"ViT-B/32"``, every
            field) or open_clip's (``"ViT-H-14"``, :data:`OPEN_CLIP_ARCHITECTURES`: head widths and
            activation); an open_clip model config (``vision_cfg``/``text_cfg``, also wrapped in the
            hub's ``{"model_cfg": ...}``); a Hugging Face CLIP config (``vision_config``/``text_config``);
            a mapping of CLIPConfig fields; or the path of a JSON file holding one of these.
        name: the argument's name, for error messages.

    Raises:
        TypeError: for a source of another type.
        ValueError: for an unknown name, an unreadable file, or a config this CLIP cannot implement.
        FileNotFoundError: for a path that does not exist.
    """
    if source is None:
        return {}
    if isinstance(source, CLIPConfig):
        return source.to_dict()
    if isinstance(source, str) and source in CONFIGS:
        return CONFIGS[source].to_dict()
    if isinstance(source, str) and source in OPEN_CLIP_ARCHITECTURES:
        vision, text, quick = OPEN_CLIP_ARCHITECTURES[source]
        return {"vision_head_width": vision, "transformer_head_width": text, "quick_gelu": quick}
    if isinstance(source, str) and not source.endswith(".json") and not Path(source).exists():
        raise ValueError(f"{name}: expected an OpenAI model name {list(OFFICIAL_MODELS)}, an open_clip one "
                         f"{list(OPEN_CLIP_ARCHITECTURES)} or a config file, got {source!r}")
    if isinstance(source, (str, os.PathLike)):
        return config_facts(read_config_file(source, name), f"{name} ({source})")
    if not isinstance(source, Mapping):
        raise TypeError(f"{name}: expected a CLIPConfig, a model name, a config dict or a JSON file, "
                        f"got {type(source).__name__}")
    if isinstance(source.get("model_cfg"), Mapping):  # open_clip's open_clip_config.json on the hub
        return _open_clip_facts(source["model_cfg"], name)
    if "vision_cfg" in source or "text_cfg" in source:
        return _open_clip_facts(source, name)
    if "vision_config" in source or "text_config" in source or "model_type" in source:
        return config_from_hf(source, name).to_dict()
    unknown = set(source) - STATED_FIELDS
    if unknown:
        raise ValueError(f"{name}: expected an open_clip config (vision_cfg, text_cfg), a Hugging Face config "
                         f"(vision_config, text_config) or CLIPConfig fields, got the keys {sorted(unknown)}")
    return dict(source)
