"""Hugging Face's format: ``transformers.CLIPModel``, its tensors' names and its configuration.

Hugging Face names every tensor differently (:func:`hf_names`), splits the packed q/k/v
projection of each attention block into three, and stores the two projections into the joint
space transposed (as ``nn.Linear`` weights). The activation and the token the text tower pools at
go into its config (:func:`hf_config`, :func:`config_from_hf`). ``transformers`` has no CLIP with
OpenAI's ModifiedResNet, so the converters here refuse a ResNet model; the OpenAI format
(:mod:`clip_tutorial.weights.convert`) holds those. ``transformers`` is imported only when a
function needs it.

Explained in Chapter 4.1.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clip_tutorial.model import CLIP, CLIPConfig
from .architecture import check_state_dict, clean_state_dict

__all__ = ["hf_config", "config_from_hf", "hf_names", "hf_towers", "to_hf_state_dict", "from_hf_state_dict", "to_hf",
           "from_hf", "export_hf"]


def _transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - transformers is a test dependency
        raise ImportError("the Hugging Face converters need transformers: pip install transformers safetensors") from err
    return transformers


def _vit_only(config: CLIPConfig) -> None:
    if config.is_resnet:
        raise ValueError(
            "config: expected a vision-transformer CLIP, got a ResNet one (vision_layers="
            f"{config.vision_layers}); Hugging Face transformers has no CLIP with OpenAI's ModifiedResNet, "
            "so use the OpenAI / open_clip format (to_openai_state_dict) for it"
        )


def hf_config(config: CLIPConfig) -> Any:
    """The ``transformers.CLIPConfig`` with the same sizes as ``config`` (ViT models only).

    ``eos_token_id`` is the token the text tower pools at: ``eot_token_id``, or the highest id when
    that is ``None`` (OpenAI's end token 49407 is the highest id). Explained in Chapter 4.

    Raises:
        ValueError: for a ResNet config (``transformers`` has none), or an end token of id 2 that is
            not the highest id (``transformers`` treats ``eos_token_id=2`` as a legacy "pool at the
            highest id" flag).
    """
    if not isinstance(config, CLIPConfig):
        raise TypeError(f"config: expected a clip_tutorial CLIPConfig, got {type(config).__name__}")
    _vit_only(config)
    eot = config.vocab_size - 1 if config.eot_token_id is None else config.eot_token_id
    if eot == 2 and config.vocab_size != 3:
        raise ValueError("config: eot_token_id=2 cannot be expressed in transformers, which reads "
                         "eos_token_id=2 as 'pool at the highest id'; give the end token another id")
    act = "quick_gelu" if config.quick_gelu else "gelu"
    common = dict(hidden_act=act, layer_norm_eps=1e-5)
    text = dict(vocab_size=config.vocab_size, hidden_size=config.transformer_width,
                intermediate_size=int(config.transformer_width * config.mlp_ratio),
                num_hidden_layers=config.transformer_layers, num_attention_heads=config.transformer_heads,
                max_position_embeddings=config.context_length, pad_token_id=0,
                bos_token_id=max(0, config.vocab_size - 2), eos_token_id=eot, **common)
    vision = dict(hidden_size=config.vision_width, intermediate_size=int(config.vision_width * config.mlp_ratio),
                  num_hidden_layers=config.vision_layers, num_attention_heads=config.num_vision_heads,
                  image_size=config.image_resolution, patch_size=config.vision_patch_size, num_channels=3, **common)
    return _transformers().CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.embed_dim)


def config_from_hf(hf: Any, name: str = "hf_model") -> CLIPConfig:
    """Our :class:`~clip_tutorial.model.CLIPConfig` from a ``transformers.CLIPConfig`` or its ``config.json`` dict.

    Explained in Chapter 4.

    Raises:
        ValueError: for another model type, or sizes and activations our CLIP cannot express.
    """
    if isinstance(hf, Mapping):
        if hf.get("model_type", "clip") != "clip":
            raise ValueError(f"{name}: expected a Hugging Face CLIP config (model_type 'clip'), "
                             f"got model_type {hf.get('model_type')!r}")
        hf = _transformers().CLIPConfig.from_dict(dict(hf))
    text, vision = hf.text_config, hf.vision_config
    acts = {text.hidden_act, vision.hidden_act}
    if not acts <= {"quick_gelu", "gelu"} or len(acts) != 1:
        raise ValueError(f"{name}: expected hidden_act 'quick_gelu' or 'gelu' in both towers, got {sorted(acts)}")
    ratios = {text.intermediate_size / text.hidden_size, vision.intermediate_size / vision.hidden_size}
    if len(ratios) != 1:
        raise ValueError(f"{name}: expected the same MLP ratio in both towers, got {sorted(ratios)}")
    eos, heads = text.eos_token_id, vision.num_attention_heads
    return CLIPConfig(
        embed_dim=hf.projection_dim, image_resolution=vision.image_size, vision_layers=vision.num_hidden_layers,
        vision_width=vision.hidden_size, vision_patch_size=vision.patch_size,
        vision_heads=None if heads == max(1, vision.hidden_size // 64) else heads, context_length=text.max_position_embeddings,
        vocab_size=text.vocab_size, transformer_width=text.hidden_size, transformer_heads=text.num_attention_heads,
        transformer_layers=text.num_hidden_layers, mlp_ratio=ratios.pop(), quick_gelu=acts.pop() == "quick_gelu",
        # transformers pools at the first eos token; at the highest id that is where argmax pools too.
        eot_token_id=None if eos in (2, text.vocab_size - 1) else eos,
    )


_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_BLOCK = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def hf_names(config: CLIPConfig) -> dict[str, str]:
    """Our name -> Hugging Face's name for every tensor except the packed q/k/v projections. Explained in Chapter 4."""
    v, t = "vision_model", "text_model"
    names = {"visual.conv1.weight": f"{v}.embeddings.patch_embedding.weight",
             "visual.class_embedding": f"{v}.embeddings.class_embedding",
             "visual.positional_embedding": f"{v}.embeddings.position_embedding.weight",
             "token_embedding.weight": f"{t}.embeddings.token_embedding.weight",
             "positional_embedding": f"{t}.embeddings.position_embedding.weight",
             "logit_scale": "logit_scale", **_TRANSPOSED}
    for ours, theirs in (("visual.ln_pre", f"{v}.pre_layrnorm"), ("visual.ln_post", f"{v}.post_layernorm"),
                         ("ln_final", f"{t}.final_layer_norm")):  # "layrnorm" (sic) is HF's spelling
        names.update({f"{ours}.{kind}": f"{theirs}.{kind}" for kind in ("weight", "bias")})
    for ours, theirs, layers in hf_towers(config):
        for i in range(layers):
            for a, b in _BLOCK.items():
                names.update({f"{ours}.{i}.{a}.{kind}": f"{theirs}.{i}.{b}.{kind}" for kind in ("weight", "bias")})
    return names


def hf_towers(config: CLIPConfig) -> list[tuple[str, str, int]]:
    """``(our prefix, Hugging Face's prefix, layers)`` of each tower's attention blocks (ViT models).

    Each block's packed ``attn.in_proj_weight``/``attn.in_proj_bias`` under our prefix is split into
    ``self_attn.q_proj``, ``k_proj`` and ``v_proj`` under Hugging Face's. Explained in Chapter 4.
    """
    return [("visual.transformer.resblocks", "vision_model.encoder.layers", config.vision_layers),
            ("transformer.resblocks", "text_model.encoder.layers", config.transformer_layers)]


def _to_hf(sd: Mapping[str, torch.Tensor], config: CLIPConfig) -> dict[str, torch.Tensor]:
    out = {theirs: (sd[ours].t() if ours in _TRANSPOSED else sd[ours]) for ours, theirs in hf_names(config).items()}
    for ours, theirs, layers in hf_towers(config):
        for i in range(layers):
            for kind in ("weight", "bias"):  # the packed rows are q, then k, then v
                q, k, v = sd[f"{ours}.{i}.attn.in_proj_{kind}"].chunk(3, dim=0)
                out.update({f"{theirs}.{i}.self_attn.{n}_proj.{kind}": x for n, x in zip("qkv", (q, k, v))})
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def to_hf_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """The model's tensors under ``transformers.CLIPModel``'s names (ViT models only). Explained in Chapter 4."""
    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial CLIP, got {type(model).__name__}")
    _vit_only(model.config)
    return _to_hf(model.state_dict(), model.config)


def from_hf_state_dict(state_dict: Mapping[str, torch.Tensor], config: CLIPConfig) -> CLIP:
    """Build our CLIP from a ``transformers.CLIPModel`` state dict, checking every key and shape.

    Explained in Chapter 4.

    Args:
        state_dict: Hugging Face names to tensors (``position_ids`` buffers are ignored).
        config: the sizes, e.g. from :func:`from_hf`'s reading of the Hugging Face config.

    Raises:
        ValueError: for a ResNet config, or listing missing keys, unexpected keys and shape mismatches.
    """
    if not isinstance(config, CLIPConfig):
        raise TypeError(f"config: expected a clip_tutorial CLIPConfig, got {type(config).__name__}")
    _vit_only(config)
    sd = {k: v for k, v in clean_state_dict(state_dict).items() if not k.endswith("position_ids")}
    with torch.device("meta"):
        expected = _to_hf(CLIP(config).state_dict(), config)
    check_state_dict(expected, sd, "state_dict")
    ours = {o: (sd[h].t() if o in _TRANSPOSED else sd[h]) for o, h in hf_names(config).items()}
    for prefix, theirs, layers in hf_towers(config):
        for i in range(layers):
            for kind in ("weight", "bias"):
                ours[f"{prefix}.{i}.attn.in_proj_{kind}"] = torch.cat(
                    [sd[f"{theirs}.{i}.self_attn.{n}_proj.{kind}"] for n in "qkv"], dim=0)
    model = CLIP(config)
    model.load_state_dict(ours, strict=True)
    return model.eval()


def to_hf(model: CLIP) -> Any:
    """A ``transformers.CLIPModel`` (eval mode) computing what ``model`` computes. Explained in Chapter 4."""
    state = to_hf_state_dict(model)
    hf = _transformers().CLIPModel(hf_config(model.config))
    hf.load_state_dict(state, strict=True)
    return hf.to(model.logit_scale.device).eval()


def from_hf(hf_model: Any) -> CLIP:
    """Our :class:`~clip_tutorial.model.CLIP` (eval mode) from a ``transformers.CLIPModel``. Explained in Chapter 4."""
    if not all(hasattr(hf_model, a) for a in ("config", "state_dict", "text_model", "vision_model")):
        raise TypeError(f"hf_model: expected a transformers.CLIPModel, got {type(hf_model).__name__}")
    return from_hf_state_dict(hf_model.state_dict(), config_from_hf(hf_model.config))


def export_hf(model: CLIP, folder: str | os.PathLike) -> Path:
    """Write ``model`` to ``folder`` (``config.json``, ``model.safetensors``) and return its path.

    ``transformers.CLIPModel.from_pretrained(folder)`` loads it. ResNet models cannot be exported:
    ``transformers`` has no CLIP with OpenAI's ModifiedResNet. Explained in Chapter 4.
    """
    folder = Path(folder)
    to_hf(model).save_pretrained(folder)
    return folder
