"""Saving and loading CLIP models as safetensors files with a JSON description beside them.

A checkpoint is two files with the same stem:

* ``<name>.safetensors``: the weights, written by ``safetensors`` (plain tensors, no pickle, so
  loading a checkpoint can never run code);
* ``<name>.json``: the :class:`~clip_tutorial.model.CLIPConfig`, the tokenizer (a word tokenizer's
  vocabulary; for CLIP's BPE tokenizer only its settings, since its vocabulary ships with the
  package), free metadata (training steps, accuracy, ...) and the SHA-256 of the weights file,
  checked on load.

Both are written and checked by :mod:`clip_tutorial.core.storage`, like every file of tensors the
package writes.

Explained in Chapter 1 (the pre-trained tiny model the book loads) and in the training chapters.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip_tutorial.core import storage
from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.text.bpe import OFFICIAL_NUM_MERGES, BPETokenizer, load_merges
from clip_tutorial.text.tokenizer import BaseTokenizer, WordTokenizer
from .architecture import check_state_dict

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "checkpoint_paths", "read_description", "FORMAT", "VERSION"]

#: The ``"format"`` field of every checkpoint description.
FORMAT = "clip_tutorial-checkpoint"
#: The version of the checkpoint layout written by :func:`save_checkpoint`.
VERSION = 1


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes:
        model: the :class:`~clip_tutorial.model.CLIP` model with the saved weights, in eval mode.
        tokenizer: the saved :class:`~clip_tutorial.text.tokenizer.WordTokenizer` or
            :class:`~clip_tutorial.text.bpe.BPETokenizer`, or ``None`` when the checkpoint was saved
            without one.
        metadata: the free-form dict given to :func:`save_checkpoint` (empty when none was given).
        config: the model's configuration, as stored in the checkpoint.
    """

    model: CLIP
    tokenizer: BaseTokenizer | None
    metadata: dict[str, Any] = field(default_factory=dict)
    config: CLIPConfig | None = None


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The weights file and the JSON description of a checkpoint.

    Explained in Chapter 1.

    Args:
        path: the checkpoint's path, with or without the ``.safetensors`` (or ``.json``) suffix.

    Returns:
        ``(weights_path, json_path)``, e.g. ``(run/tiny.safetensors, run/tiny.json)`` for ``run/tiny``.

    Raises:
        TypeError: if ``path`` is not a str or a path.
        ValueError: if ``path`` is empty.
    """
    return storage.tensor_paths(path)


def _plain(value: Any) -> Any:
    """Turn NumPy scalars and small tensors in metadata into plain numbers and lists."""
    if isinstance(value, torch.Tensor) and value.numel() <= 10_000:
        return value.detach().cpu().tolist()
    if isinstance(value, (np.generic, np.ndarray)) and np.size(value) <= 10_000:
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _tokenizer_description(tokenizer: WordTokenizer | BPETokenizer) -> dict[str, Any]:
    """The JSON description of a tokenizer: a ``"type"`` tag and what rebuilds it.

    A word tokenizer stores its words. A BPE tokenizer whose merges are the first ``n`` of CLIP's
    official list (the vocabulary file shipped in ``clip_tutorial/assets``) stores only ``n``; one
    with merges of its own (e.g. from :func:`~clip_tutorial.text.bpe_trainer.learn_bpe`) stores them.
    """
    if isinstance(tokenizer, WordTokenizer):
        return {"type": "word", **json.loads(tokenizer.to_json())}
    description: dict[str, Any] = {"type": "bpe", "context_length": tokenizer.context_length}
    n = len(tokenizer.merges)
    if n <= OFFICIAL_NUM_MERGES and tokenizer.merges == load_merges(num_merges=n):
        description["num_merges"] = n
    else:
        description["merges"] = [list(pair) for pair in tokenizer.merges]
    return description


def _tokenizer_from_description(description: dict[str, Any], json_path: Path) -> WordTokenizer | BPETokenizer:
    """Rebuild the tokenizer described by :func:`_tokenizer_description` (no tag: a word tokenizer)."""
    kind = description.get("type", "word") if isinstance(description, dict) else None
    try:
        if kind == "word":
            return WordTokenizer.from_json(json.dumps(description))
        if kind == "bpe":
            if "merges" in description:
                merges = [tuple(pair) for pair in description["merges"]]
            else:
                merges = load_merges(num_merges=description["num_merges"])
            return BPETokenizer(merges, context_length=description["context_length"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"checkpoint file {json_path}: expected a valid {kind} tokenizer description, got {err}") from err
    raise ValueError(f"checkpoint file {json_path}: expected a tokenizer of type 'word' or 'bpe', got {kind!r}")


def save_checkpoint(model: CLIP, path: str | os.PathLike, tokenizer: WordTokenizer | BPETokenizer | None = None,
                    metadata: dict[str, Any] | None = None) -> Path:
    """Save a model (and optionally its tokenizer and some metadata) as a safetensors checkpoint.

    Writes ``<path>.safetensors`` and ``<path>.json``; missing parent folders are created. Both
    files are first written under temporary names and then renamed, so an interrupted save never
    leaves a half-written checkpoint behind. Explained in Chapter 1.

    Args:
        model: the model to save; its weights are copied to the CPU first.
        path: where to save, with or without the ``.safetensors`` suffix.
        tokenizer: the tokenizer the model was trained with, saved in the JSON file: a
            :class:`~clip_tutorial.text.tokenizer.WordTokenizer` with its words, or a
            :class:`~clip_tutorial.text.bpe.BPETokenizer` by its settings (its number of official merges,
            or its own merges) and context length.
        metadata: any JSON-serialisable dict (steps trained, accuracy, dataset seed ...); NumPy
            numbers and small tensors in it are stored as plain numbers and lists.

    Returns:
        The path of the ``.safetensors`` file.

    Raises:
        TypeError: if ``model``, ``tokenizer`` or ``metadata`` has the wrong type.
        ValueError: if ``metadata`` is not JSON-serialisable or the tokenizer has more ids than
            the model embeds.
        PermissionError: if the folder cannot be created or written to.
    """
    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial CLIP model, got {type(model).__name__}")
    if tokenizer is not None and not isinstance(tokenizer, (WordTokenizer, BPETokenizer)):
        raise TypeError(f"tokenizer: expected a WordTokenizer, a BPETokenizer or None, got {type(tokenizer).__name__}")
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"tokenizer: expected at most model.config.vocab_size={model.config.vocab_size} ids, "
            f"got a tokenizer with vocab_size={tokenizer.vocab_size}"
        )
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict or None, got {type(metadata).__name__}")
    try:
        metadata = json.loads(json.dumps(metadata, default=_plain))
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata: expected a JSON-serialisable dict (str, numbers, lists, dicts), got {err}") from err
    description = {
        "config": model.config.to_dict(),
        "tokenizer": None if tokenizer is None else _tokenizer_description(tokenizer),
        "metadata": metadata,
    }
    weights_path, _ = storage.save_tensors(path, model.state_dict(), description, format=FORMAT, version=VERSION,
                                           kind="checkpoint")
    return weights_path


def read_description(json_path: Path) -> dict[str, Any]:
    """The JSON description beside a checkpoint's weights, checked to be one of ours (format, version, keys)."""
    description = storage.read_description(json_path, expected_format=FORMAT, version=VERSION, kind="checkpoint")
    return _check_keys(description, json_path)


def _check_keys(description: dict[str, Any], json_path: Path) -> dict[str, Any]:
    missing = [key for key in ("config", "tokenizer", "metadata") if key not in description]
    if missing:
        raise ValueError(f"checkpoint file {json_path}: expected the keys {missing}, which are missing")
    return description


def _config_differences(given: CLIPConfig, stored: CLIPConfig) -> list[str]:
    return [
        f"{f.name} (given {getattr(given, f.name)!r}, checkpoint {getattr(stored, f.name)!r})"
        for f in dataclasses.fields(CLIPConfig)
        if getattr(given, f.name) != getattr(stored, f.name)
    ]


def load_checkpoint(path: str | os.PathLike, config: CLIPConfig | None = None,
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`.

    The SHA-256 of the weights file is checked against the JSON description, the model is built
    from the stored config, and the weights are loaded strictly (every key, every shape).
    Explained in Chapter 1.

    Args:
        path: the checkpoint's path, with or without the ``.safetensors`` (or ``.json``) suffix.
        config: the config you expect; when given it must equal the stored one.
        map_location: the device to put the model on, e.g. ``"cpu"`` or ``"cuda"``.

    Returns:
        A :class:`Checkpoint` with the model (in eval mode), tokenizer, metadata and config.

    Raises:
        FileNotFoundError: if the weights file or the JSON description is missing.
        TypeError: if ``config`` is not a CLIPConfig.
        ValueError: if a file is corrupted or truncated, ``config`` differs from the stored config
            (the differing fields are listed), ``map_location`` is not a device, or the weights do
            not fit the model (missing or unexpected keys, wrong shapes).
    """
    weights_path, json_path = checkpoint_paths(path)
    if config is not None and not isinstance(config, CLIPConfig):
        raise TypeError(f"config: expected a CLIPConfig or None, got {type(config).__name__}")
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"map_location: expected a device such as 'cpu' or 'cuda', got {map_location!r}") from err
    state, description = storage.load_tensors(path, expected_format=FORMAT, version=VERSION, kind="checkpoint")
    _check_keys(description, json_path)
    try:
        stored = CLIPConfig.from_dict(description["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint file {json_path}: expected a valid CLIPConfig, got {err}") from err
    if config is not None:
        differences = _config_differences(config, stored)
        if differences:
            raise ValueError("config: expected the checkpoint's config, got differing fields: " + "; ".join(differences))
    model = CLIP(stored)
    check_state_dict(model.state_dict(), state, f"checkpoint file {weights_path}")
    float_dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(float_dtypes) == 1 and float_dtypes != {torch.float32}:
        model = model.to(float_dtypes.pop())  # keep a half-precision checkpoint in half precision
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    tokenizer = None
    if description["tokenizer"] is not None:
        tokenizer = _tokenizer_from_description(description["tokenizer"], json_path)
    metadata = description["metadata"] if isinstance(description["metadata"], dict) else {}
    return Checkpoint(model=model, tokenizer=tokenizer, metadata=metadata, config=stored)
