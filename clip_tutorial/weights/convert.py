"""OpenAI's format, which open_clip shares: state dicts under the names OpenAI gave the parameters.

Our parameter names *are* OpenAI's (and open_clip's), so this format needs no renaming:
converting is inferring the configuration
(:func:`~clip_tutorial.weights.architecture.config_from_state_dict`) and checking every key and
shape (:func:`~clip_tutorial.weights.architecture.check_state_dict`). It holds the ResNet models
too. Hugging Face's format, which renames, splits and transposes, is :mod:`clip_tutorial.weights.hf`.

Explained in Chapter 4.1.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from clip_tutorial.model import CLIP, CLIPConfig
from .architecture import check_state_dict, clean_state_dict, config_from_state_dict
from .configs import config_facts

__all__ = ["from_openai_state_dict", "to_openai_state_dict"]


def from_openai_state_dict(state_dict: Mapping[str, Any], config: Any = None, **stated: Any) -> CLIP:
    """Build a :class:`~clip_tutorial.model.CLIP` from an OpenAI / open_clip state dict (ViT or ResNet).

    The keys are ours already, so this checks every key and shape strictly and loads the tensors
    (cast to float32). Explained in Chapter 4.

    Args:
        state_dict: e.g. ``torch.jit.load(path).state_dict()`` or an open_clip checkpoint.
        config: a ``CLIPConfig`` is used as it is. Anything else
            :func:`~clip_tutorial.weights.configs.config_facts` reads (a model name such as
            ``"ViT-H-14"``, an open_clip or Hugging Face config, its JSON file) states fields for
            :func:`~clip_tutorial.weights.architecture.config_from_state_dict`, which infers the
            rest; so does ``None``.
        **stated: more fields, e.g. ``vision_heads=16`` or ``vision_head_width=80, quick_gelu=False``.

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: listing the missing keys, unexpected keys and shape mismatches; or when the
            sizes contradict ``config`` or the head counts cannot be told (see
            :func:`~clip_tutorial.weights.architecture.config_from_state_dict`).

    Warns:
        UserWarning: when neither ``config`` nor ``stated`` says which activation the model uses
            and QuickGELU (OpenAI's) is assumed: open_clip's models trained on LAION use GELU.
    """
    sd = clean_state_dict(state_dict)
    if isinstance(config, CLIPConfig) and not stated:
        model_config = config
    else:
        stated = {**config_facts(config), **stated}
        model_config = config_from_state_dict(sd, **stated)
        if "quick_gelu" not in stated:
            warnings.warn("state_dict: assumed OpenAI's QuickGELU activation; open_clip's models trained on other "
                          "data use exact GELU. Pass quick_gelu= or config= (e.g. 'ViT-B-32' for open_clip's GELU "
                          "model, 'ViT-B/32' for OpenAI's) to state it", UserWarning, stacklevel=2)
    model = CLIP(model_config)
    check_state_dict(model.state_dict(), sd, "state_dict")
    model.load_state_dict(sd, strict=True)
    return model.eval()


def to_openai_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """The model's tensors under OpenAI's / open_clip's names (detached copies). Explained in Chapter 4."""
    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial CLIP, got {type(model).__name__}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
