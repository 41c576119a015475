"""One call loads any CLIP: a released model by name, a weights file or folder, or one of our checkpoints.

The package has four ways to get a model; :func:`load` is the front door to the two in this layer:

==================  ====================================================  ==========================================
Way                 Call                                                  What it reads, and returns
==================  ====================================================  ==========================================
shipped             ``clip_tutorial.train.shipped.load_shipped(name)``    a checkpoint inside the package, with its
                                                                          model card: a ``TrainedCLIP``
released weights    ``weights.pretrained.load_pretrained(name)``          OpenAI's file, downloaded and SHA-256
                                                                          checked: a :class:`LoadedCLIP`
our checkpoints     ``weights.checkpoints.load_checkpoint(path)``         a ``.safetensors`` + ``.json`` pair
                                                                          saved by ``save_checkpoint``: a
                                                                          ``Checkpoint`` with its tokenizer
recipes             ``train.shipped.load_or_train(name)``,                the shipped model, else the cached one,
                    ``train.recipes.train_recipe(recipe)``                else it trains: a ``TrainedCLIP``
==================  ====================================================  ==========================================

Underneath they share two readers and one check. Every checkpoint of ours (shipped, cached by
``load_or_train``, or saved by you) is read by :func:`~clip_tutorial.weights.checkpoints.load_checkpoint`.
Every released-format file (OpenAI's TorchScript archives, open_clip's and Hugging Face's state dicts)
is read by :func:`~clip_tutorial.weights.pretrained.read_state_dict`, which runs no code from it, and
built by :func:`~clip_tutorial.weights.convert.from_openai_state_dict` (or
:func:`~clip_tutorial.weights.hf.from_hf_state_dict` for Hugging Face's names). All of them end
in :func:`~clip_tutorial.weights.architecture.check_state_dict` and a strict ``load_state_dict`` into
:class:`~clip_tutorial.model.CLIP`. :func:`load` and ``load_pretrained`` pair the model with its
tokenizer and preprocessing in one place, :func:`~clip_tutorial.weights.pretrained.bundle`;
``load_shipped`` and ``load_or_train`` return the checkpoint's tokenizer without a preprocessing step,
since a ShapesWorld model sees rendered images at its own resolution.

Explained in Chapter 4.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from clip_tutorial.core.storage import sha256_file
from clip_tutorial.data import MEAN, STD
from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.model.config import CONFIGS, OPTIONAL_FIELDS
from .checkpoints import checkpoint_paths, load_checkpoint
from .configs import config_facts, read_config_file
from .convert import from_openai_state_dict
from .hf import from_hf_state_dict
from .pretrained import (PRETRAINED, LoadedCLIP, bundle, clip_tokenizer, list_pretrained, load_pretrained,
                         read_state_dict)
from .torchscript import is_torchscript_archive

__all__ = ["LoadedCLIP", "load"]

# A model folder: its config file and the weights files that may sit beside it, first found wins.
_FOLDERS = {"config.json": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
            "open_clip_config.json": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")}


def _has_hf_names(state_dict: dict[str, Any]) -> bool:
    return any(k.startswith(("text_model.", "vision_model.")) for k in state_dict)


def _check_preprocessing(mean: Any, std: Any, file: Path) -> None:
    """Refuse a model trained with another normalisation than CLIP's, which :class:`Preprocess` applies."""
    for label, given, ours in (("mean", mean, MEAN), ("std", std, STD)):
        if given is not None and (len(given) != 3 or max(abs(a - b) for a, b in zip(given, ours)) > 1e-6):
            raise ValueError(f"{file}: expected CLIP's image {label} {list(ours)}, got {given}; this model was "
                             "trained with another normalisation, which the preprocessing here does not apply")


def _released(state_dict: dict[str, Any], config: Any, stated: dict[str, Any], file: Path) -> CLIP:
    """Our model from a released-format state dict, every error and warning naming ``file``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if not _has_hf_names(state_dict):
                model = from_openai_state_dict(state_dict, config, **stated)
            else:  # transformers' layout: every field must be stated, as its config.json does
                facts = {**config_facts(config), **stated}
                if set(facts) - set(OPTIONAL_FIELDS) != set(CLIPConfig.__dataclass_fields__) - set(OPTIONAL_FIELDS):
                    raise ValueError("its tensors have Hugging Face's names, so its configuration must come from "
                                     "the model's config.json: pass it as config=, or load the model's folder")
                model = from_hf_state_dict(state_dict, CLIPConfig.from_dict(facts))
        except ValueError as error:
            raise ValueError(f"{file}: {error}") from error
    for warning in caught:
        warnings.warn(f"{file}: {warning.message}", warning.category, stacklevel=3)
    return model


def _with_tokenizer(model: CLIP, file: Path) -> LoadedCLIP:
    """A released-format model with CLIP's BPE tokenizer, if the model embeds exactly its ids."""
    tokenizer = clip_tokenizer(model)
    if tokenizer.vocab_size != model.config.vocab_size:
        warnings.warn(f"{file}: the model embeds {model.config.vocab_size} token ids, CLIP's BPE tokenizer has "
                      f"{tokenizer.vocab_size}, so it is not this model's tokenizer; the tokenizer is None",
                      UserWarning, stacklevel=3)
        tokenizer = None
    return bundle(model, tokenizer)


def _folder(folder: Path, config: Any) -> tuple[dict[str, Any], Any, Path]:
    """The state dict, the config and the weights file of a Hugging Face or open_clip model folder."""
    for config_name, weights_names in _FOLDERS.items():
        config_file = folder / config_name
        if not config_file.is_file():
            continue
        found = [folder / n for n in weights_names if (folder / n).is_file()]
        if not found:
            raise FileNotFoundError(f"{folder}: has {config_name} but no weights: expected one of "
                                    f"{list(weights_names)}")
        data = read_config_file(config_file, str(config_file))
        preprocess = data.get("preprocess_cfg", {}) if config_name == "open_clip_config.json" else {}
        _check_preprocessing(preprocess.get("mean"), preprocess.get("std"), config_file)
        resize = (preprocess.get("interpolation", "bicubic"), preprocess.get("resize_mode", "shortest"))
        if resize != ("bicubic", "shortest"):
            raise ValueError(f"{config_file}: expected bicubic resizing of the shortest side (CLIP's "
                             f"preprocessing), got interpolation {resize[0]!r} and resize_mode {resize[1]!r}")
        processor = folder / "preprocessor_config.json"
        if processor.is_file():
            data_p = read_config_file(processor, str(processor))
            _check_preprocessing(data_p.get("image_mean"), data_p.get("image_std"), processor)
        weights = found[0]
        if weights.name.endswith(".index.json"):  # weights sharded over several files
            shards = sorted(set(read_config_file(weights, str(weights)).get("weight_map", {}).values()))
            state = {k: v for shard in shards for k, v in read_state_dict(folder / shard).items()}
        else:
            state = read_state_dict(weights)
        return state, (config_file if config is None else config), weights
    raise ValueError(f"{folder}: expected a model folder with a config (config.json from Hugging Face, or "
                     "open_clip_config.json), found neither; a weights file or one of our checkpoints is "
                     "loaded by its own path")


def _our_checkpoint(path: Path) -> bool:
    """Whether ``path`` names one of our checkpoints: a ``.safetensors``/``.json`` pair that is not a model config."""
    weights, description = checkpoint_paths(path)
    if path.suffix not in ("", ".safetensors", ".json") or not description.is_file():
        return False
    try:
        data = read_config_file(description, str(description))
    except ValueError:
        return True  # let load_checkpoint say what is wrong with it
    return not any(k in data for k in ("vision_cfg", "model_cfg", "vision_config", "model_type"))


def load(source: str | os.PathLike, config: Any = None, *, device: torch.device | str | None = None,
         download_from: str = "openai", timeout: float = 10.0, cache: str | os.PathLike | None = None,
         **stated: Any) -> LoadedCLIP:
    """Load any CLIP as our model (eval mode), with its tokenizer and image preprocessing.

    ``source`` may be:

    * an official name, one of :func:`~clip_tutorial.weights.pretrained.list_pretrained` (e.g.
      ``"ViT-B/32"``): :func:`~clip_tutorial.weights.pretrained.load_pretrained` downloads it (SHA-256
      checked) unless it is cached; ``download_from``, ``timeout`` and ``cache`` go to it;
    * one of our checkpoints (``run/tiny``, ``run/tiny.safetensors`` or ``run/tiny.json``): loaded by
      :func:`~clip_tutorial.weights.checkpoints.load_checkpoint`, with the tokenizer saved in it;
    * a weights file: OpenAI's TorchScript archive (read without running its code), or a state dict
      with OpenAI's / open_clip's names or Hugging Face's, as ``.pt``/``.bin``/``.pth`` (read with
      ``torch.load(weights_only=True)``) or ``.safetensors``;
    * a model folder: Hugging Face's (``config.json`` + ``model.safetensors`` or
      ``pytorch_model.bin``) or open_clip's (``open_clip_config.json`` + ``open_clip_model.safetensors``).

    Released formats get CLIP's BPE tokenizer (``None``, with a warning, if the model embeds another
    number of ids) and CLIP's :class:`~clip_tutorial.data.preprocess.Preprocess` at the model's
    resolution. A file's head counts and activation, which no tensor shape shows, come from ``config``
    or ``stated``; OpenAI's own archives are recognised by their SHA-256. Without them the rules of
    :func:`~clip_tutorial.weights.architecture.config_from_state_dict` apply: OpenAI's choices with a
    warning where they are safe to assume, an error where they are not. Explained in Chapter 4.

    Args:
        source: a name or a path, as above.
        config: what states the model's configuration: a ``CLIPConfig``, a model name (OpenAI's
            ``"ViT-B/32"`` or open_clip's ``"ViT-H-14"``), an open_clip model config or a Hugging Face
            ``config.json`` (a dict or the file's path). A folder's own config is used when it is ``None``.
        device: where to put the model (default: the CPU).
        download_from: ``"openai"`` or ``"hf"``, for an official name (see ``load_pretrained``).
        timeout: seconds to wait for the server, for an official name.
        cache: the download folder, for an official name.
        **stated: CLIPConfig fields for a weights file, e.g. ``vision_heads=16`` or ``vision_head_width=80``.

    Returns:
        ``LoadedCLIP(model, tokenizer, preprocess)``.

    Raises:
        FileNotFoundError: for a path where nothing is, or a folder without its weights file.
        TypeError: for a ``source`` that is neither a str nor a path.
        ValueError: naming the file and what is wrong: a folder without a config, a truncated or
            unknown file, tensors that do not fit ``config``, head counts that cannot be told, or
            ``config``/``stated`` given where the source carries its own configuration.
        PretrainedUnavailableError: when an official model cannot be downloaded.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source: expected a model name or a path, got {type(source).__name__}")
    if isinstance(source, str) and source in list_pretrained():
        if config is not None or stated:
            raise ValueError(f"config: expected none for the official model {source!r}, whose configuration is "
                             f"known, got config={config!r} and {sorted(stated)}")
        return load_pretrained(source, source=download_from, device=device, timeout=timeout, cache=cache)
    path = Path(source)
    if _our_checkpoint(path) or not path.exists() and checkpoint_paths(path)[0].is_file():
        if stated or not isinstance(config, (CLIPConfig, type(None))):
            raise ValueError(f"config: expected None or a CLIPConfig to compare with for our checkpoint {path}, "
                             "which stores its own config")
        checkpoint = load_checkpoint(path, config, map_location=device if device is not None else "cpu")
        return bundle(checkpoint.model, checkpoint.tokenizer)
    if not path.exists():
        raise FileNotFoundError(f"source: expected an official model name {list_pretrained()}, a weights file, a "
                                f"model folder or one of our checkpoints, but {path} does not exist")
    if path.is_dir():
        state, config, file = _folder(path, config)
    else:
        state, file = read_state_dict(path), path
        if config is None and not stated and is_torchscript_archive(path):  # OpenAI's own file, by its hash
            digest = sha256_file(path)
            config = next((CONFIGS[n] for n, e in PRETRAINED.items() if e.sha256 == digest and n in CONFIGS), None)
    model = _released(state, config, stated, file).to(device if device is not None else "cpu").eval()
    return _with_tokenizer(model, file)
