"""The tiny CLIPs that ship inside the package, trained once and loaded in a fraction of a second.

Each shipped model is two files in ``clip_tutorial/weights/shipped/``, written by
:func:`~clip_tutorial.weights.checkpoints.save_checkpoint`:

* ``<name>.safetensors``: the weights;
* ``<name>.json``: the description, whose ``metadata`` is the *model card*: the recipe and all its
  settings, the data seed, the zero-shot metrics measured right after training (with the number
  of evaluation images and their seed), the command that trained it and the library versions;
  the SHA-256 of the weights sits beside it and is checked on every load.

``<name>`` is a recipe of :data:`clip_tutorial.train.recipes.RECIPES`, and
``python -m clip_tutorial.train --recipe <name>`` reproduces the model
(``tools/ship_models.py`` regenerates every shipped file that way).
:func:`load_or_train` returns the shipped model whenever one exists for the
recipe asked for, so the notebooks never retrain what the package already holds.

Explained in Chapter 3.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from clip_tutorial.core.storage import cache_dir
from clip_tutorial.weights.checkpoints import checkpoint_paths, load_checkpoint, read_description, save_checkpoint
from .recipes import WEIGHTS_DIR, Recipe, TrainedCLIP, get_recipe, train_recipe

#: The recorded results of the training grids too long for a page (Chapter 7), one JSON file per grid,
#: written by ``benchmarks/recipe_grid.py`` and shipped so that the pages read them after a plain install.
GRIDS_DIR = WEIGHTS_DIR.parent / "grids"

__all__ = ["WEIGHTS_DIR", "GRIDS_DIR", "shipped_grid", "list_shipped", "shipped_path", "shipped_card", "shipped_recipe", "load_shipped", "load_or_train"]

def list_shipped() -> list[str]:
    """The names of the shipped models (each also a recipe name), sorted.

    A name counts when both its ``.safetensors`` and its ``.json`` file are present.
    """
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file())


def shipped_grid(name: str) -> dict[str, Any]:
    """The recorded results of the training grid ``name`` (e.g. ``"siglip_batch"``): its rows, command and machine.

    Each row is one run, ``train_recipe(row["recipe"], seed=row["seed"])``, with the metrics it measured.

    Raises:
        ValueError: if no grid called ``name`` ships with the package (the shipped ones are listed).
    """
    import json

    known = sorted(p.stem for p in GRIDS_DIR.glob("*.json")) if GRIDS_DIR.is_dir() else []
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"name: expected one of the shipped grids {known}, got {name!r}")
    return json.loads((GRIDS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def shipped_path(name: str) -> Path:
    """The weights file of the shipped model ``name`` (its model card is the ``.json`` beside it).

    Raises:
        TypeError: if ``name`` is not a str.
        ValueError: if no model called ``name`` ships with the package (the shipped names are listed).
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, one of the shipped models {list_shipped()}, got {type(name).__name__}")
    shipped = list_shipped()
    if name not in shipped:
        raise ValueError(f"name: expected one of the shipped models {shipped}, got {name!r}")
    return checkpoint_paths(WEIGHTS_DIR / name)[0]


def shipped_card(name: str) -> dict[str, Any]:
    """The model card of the shipped model ``name``, read without loading the weights.

    Returns:
        The card (the ``metadata`` of the checkpoint description) with the weights' ``"sha256"``
        added: ``recipe``, ``recipe_settings``, ``data_seed``, ``metrics``, ``command``,
        ``versions``, ...
    """
    description = read_description(checkpoint_paths(shipped_path(name))[1])
    card = dict(description["metadata"]) if isinstance(description["metadata"], dict) else {}
    return {**card, "sha256": description["sha256"]}


def shipped_recipe(name: str) -> Recipe:
    """The recipe that trained the shipped model ``name``, rebuilt from the settings its card records.

    :func:`load_or_train` compares it with the current recipe of that name,
    so a recipe edited after the model was shipped is trained afresh rather than answered with
    weights that no longer match it.

    Raises:
        ValueError: if ``name`` is not shipped or its card records no valid recipe settings.
    """
    card = shipped_card(name)
    if "recipe_settings" not in card:
        raise ValueError(f"name: the card of the shipped model {name!r} has no 'recipe_settings'; expected a card "
                         "written by python -m clip_tutorial.train")
    return Recipe.from_dict(card["recipe_settings"])


def load_shipped(name: str, device: torch.device | str | None = None) -> TrainedCLIP:
    """Load the shipped model ``name``: weights (SHA-256 checked), tokenizer, recipe, metrics and card.

    Args:
        name: one of :func:`list_shipped`, e.g. ``"ch1-demo"``.
        device: where to put the model (default: the CPU).

    Returns:
        A :class:`~clip_tutorial.train.recipes.TrainedCLIP` with the model in eval mode, the tokenizer it
        was trained with, the :class:`~clip_tutorial.train.recipes.Recipe` recorded in its card, the
        card's metrics, an empty history and the card itself.

    Raises:
        TypeError: if ``name`` is not a str.
        ValueError: if ``name`` is not shipped (the shipped names are listed) or a file is corrupted.
    """
    path = shipped_path(name)
    checkpoint = load_checkpoint(path, map_location=device if device is not None else "cpu")
    card = shipped_card(name)
    return TrainedCLIP(checkpoint.model.eval(), checkpoint.tokenizer, shipped_recipe(name),
                       metrics=dict(card.get("metrics", {})), card=card)


def load_or_train(name: str, device: torch.device | str | None = None, progress: bool = True,
                  retrain: bool = False) -> TrainedCLIP:
    """The model of recipe ``name``: the shipped one, else a cached one, else train it once and cache it.

    1. When the package ships a checkpoint for ``name`` (:func:`list_shipped`)
       and its model card records exactly the current recipe, that checkpoint is loaded (well
       under a second, no training). If the recipe was changed since, a warning says so and the
       steps below run instead.
    2. Otherwise the cache (:func:`clip_tutorial.core.storage.cache_dir`) is keyed by :meth:`~clip_tutorial.train.recipes.Recipe.fingerprint`, so changing
       a recipe or the package retrains instead of loading a stale model.

    A model loaded from a file has an empty history.

    Args:
        name: a recipe name, see :data:`clip_tutorial.train.recipes.RECIPES`.
        device: where to train and put the model.
        progress: show progress bars while training.
        retrain: train live even when a shipped or cached model exists (and replace the cached one).
    """
    recipe = get_recipe(name)
    if not retrain and recipe.name in list_shipped():
        if shipped_recipe(recipe.name) == recipe:
            return load_shipped(recipe.name, device=device)
        warnings.warn(f"the shipped model {recipe.name!r} was trained with other settings than the current recipe "
                      f"{recipe.name!r}; training the current recipe instead", stacklevel=2)
    path = cache_dir() / f"{recipe.name}-{recipe.fingerprint()}"
    if not retrain and checkpoint_paths(path)[0].exists():
        checkpoint = load_checkpoint(path)
        model = checkpoint.model.to(device if device is not None else "cpu").eval()
        return TrainedCLIP(model, checkpoint.tokenizer, recipe, metrics=checkpoint.metadata.get("metrics", {}))
    trained = train_recipe(recipe, device=device, progress=progress)
    save_checkpoint(trained.model, path, tokenizer=trained.tokenizer,
                    metadata={"recipe": recipe.name, "fingerprint": recipe.fingerprint(), "metrics": trained.metrics})
    return trained
