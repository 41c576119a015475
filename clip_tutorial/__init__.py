"""clip_tutorial: CLIP built piece by piece, the package behind the CLIP tutorial book.

The package is a house of layers; each imports only from the layers below it (a test checks it):

==================  ===========================================================================
``core``            the device and seeding, argument checks, the storage of weight files
``text``            tokenizers: words, CLIP's byte-pair encoding and its trainer
``data``            ShapesWorld, augmentation, image-caption pairs, CLIP's preprocessing
``model``           the transformer, the vision towers, the whole CLIP, its size and cost
``objectives``      the contrastive loss, alone and across processes
``evaluation``      zero-shot classification and retrieval metrics
``weights``         our checkpoints, OpenAI and Hugging Face formats, released weights, :func:`load`
``train``           the training loop and its state, the recipes, the shipped models
``apps``            search, calibration, linear probes, alt text, tagging, limitations, experiments
``viz``             figures, widgets and :func:`glue`; ``exercises``: the chapters' checks
==================  ===========================================================================

``import clip_tutorial`` is cheap: the names below are imported on first use (:pep:`562`), so a
script that trains a model never pays for matplotlib or scikit-learn.
"""
from __future__ import annotations

import importlib
from typing import Any

from .core.version import __version__

# Public name -> the module that defines it; imported on first access.
_NAMES: dict[str, str] = {
    **dict.fromkeys(["get_device", "seed_everything", "setup_notebook"], "core.device"),
    "glue": "viz.glue",
    **dict.fromkeys(["ShapesWorld", "class_names", "heldout_combinations", "vocabulary"], "data"),
    "Preprocess": "data.preprocess",
    "WordTokenizer": "text.tokenizer",
    "BPETokenizer": "text.bpe",
    "learn_bpe": "text.bpe_trainer",
    **dict.fromkeys(["CLIP", "CLIPConfig", "ModifiedResNet", "VisionTransformer", "get_config", "list_configs"],
                    "model"),
    **dict.fromkeys(["count_flops", "count_parameters", "model_table"], "model.stats"),
    **dict.fromkeys(["clip_loss", "clip_loss_gradient"], "objectives.loss"),
    **dict.fromkeys(["build_zero_shot_classifier", "encode_images", "encode_texts", "zero_shot_accuracy",
                     "zero_shot_predict"], "evaluation.zeroshot"),
    **dict.fromkeys(["recall_at_k", "retrieval_metrics"], "evaluation.retrieval"),
    **dict.fromkeys(["load_checkpoint", "save_checkpoint"], "weights.checkpoints"),
    **dict.fromkeys(["PretrainedUnavailableError", "list_pretrained", "load_pretrained"], "weights.pretrained"),
    **dict.fromkeys(["load", "LoadedCLIP"], "weights.loader"),
    **dict.fromkeys(["History", "TrainConfig", "train_clip"], "train.loop"),
    **dict.fromkeys(["RECIPES", "TrainedCLIP", "train_recipe"], "train.recipes"),
    **dict.fromkeys(["list_shipped", "load_shipped", "load_or_train"], "train.shipped"),
}
_SUBPACKAGES = ("core", "text", "data", "model", "objectives", "evaluation", "weights", "train", "apps", "viz",
                "exercises", "cli")

__all__ = ["__version__", *_NAMES, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    """Import a public name, or a layer, the first time it is used."""
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
