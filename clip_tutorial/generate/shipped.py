"""The generators that ship inside the package: weights, model cards, and a loader.

Explained in Chapter 7.5. Like the shipped CLIPs (:mod:`clip_tutorial.train.shipped`), each shipped
generator is a pair of files in ``clip_tutorial/weights/generators/``, written by
:func:`~clip_tutorial.core.storage.save_tensors`: ``<name>.safetensors`` (the weights) and
``<name>.json``, whose ``metadata`` is the model card: the recipe and all its settings, the
metrics measured right after training (judged match rates, the loss on a fixed batch), the
command that trained it and the library versions; the SHA-256 of the weights sits beside it and
is checked on every load. ``python -m clip_tutorial.generate --recipe NAME`` trains the model again.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from clip_tutorial.core import storage

from .diffusion import make_schedule
from .recipes import GeneratorRecipe, get_generator_recipe
from .trainer import TrainedGenerator, build_generator

__all__ = ["GENERATORS_DIR", "FORMAT", "save_generator", "load_generator_file", "list_generators",
           "generator_card", "load_generator"]

#: Where the shipped generators live.
GENERATORS_DIR = Path(__file__).resolve().parent.parent / "weights" / "generators"
#: The ``"format"`` field of a generator's description.
FORMAT = "clip_tutorial-generator"


def save_generator(trained: TrainedGenerator, path: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write a trained generator to ``<path>.safetensors`` and its description to ``<path>.json`` (Chapter 7.5).

    The description holds the recipe's settings, the width of its condition (``cond_dim``) and
    ``metadata``: the model card (``card``, by default the recipe and the metrics).
    Returns the weights file.
    """
    metadata = card if card is not None else {"recipe": trained.recipe.name, "metrics": trained.metrics}
    model = trained.model
    description = {"recipe_settings": trained.recipe.to_dict(), "cond_dim": getattr(model, "cond_dim", None),
                   "metadata": metadata}
    return storage.save_tensors(path, model.state_dict(), description, format=FORMAT, kind="generator")[0]


def load_generator_file(path: str | Path) -> TrainedGenerator:
    """Load a generator written by :func:`save_generator`, its SHA-256 checked (Chapter 7.5).

    Raises:
        FileNotFoundError, ValueError: for a missing, corrupted or foreign file.
    """
    tensors, description = storage.load_tensors(path, expected_format=FORMAT, kind="generator")
    recipe = GeneratorRecipe.from_dict(description["recipe_settings"])
    model = build_generator(recipe, cond_dim=description["cond_dim"] or 64)
    model.load_state_dict(tensors)
    card = {**description.get("metadata", {}), "sha256": description["sha256"]}
    schedule = None if recipe.kind == "judge" else make_schedule("cosine", recipe.diffusion_steps)
    return TrainedGenerator(model.eval(), recipe, schedule, dict(card.get("metrics", {})), card)


def list_generators() -> list[str]:
    """The names of the shipped generators (each also a generator recipe), sorted (Chapter 7.5)."""
    if not GENERATORS_DIR.is_dir():
        return []
    return sorted(p.stem for p in GENERATORS_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file())


def _shipped_path(name: str) -> Path:
    shipped = list_generators()
    if not isinstance(name, str) or name not in shipped:
        raise ValueError(f"name: expected one of the shipped generators {shipped}, got {name!r}")
    return GENERATORS_DIR / name


def generator_card(name: str) -> dict[str, Any]:
    """The model card of the shipped generator ``name`` (with its ``"sha256"``), without loading the weights."""
    description = storage.read_description(_shipped_path(name), expected_format=FORMAT, kind="generator")
    return {**description.get("metadata", {}), "recipe_settings": description["recipe_settings"],
            "sha256": description["sha256"]}


def load_generator(name: str, progress: bool = True) -> TrainedGenerator:
    """The generator of recipe ``name``: the shipped one, or trained now when none ships (Chapter 7.5).

    The shipped file is used when its card records exactly the current recipe; otherwise (or when
    nothing ships) the recipe is trained in this process, with a warning if a stale file exists.
    A denoiser trained here is not judged (its ``metrics`` hold the loss and time only).

    Raises:
        ValueError: if ``name`` is not a generator recipe.
    """
    recipe = get_generator_recipe(name)
    if name in list_generators():
        trained = load_generator_file(_shipped_path(name))
        if trained.recipe == recipe:
            return trained
        warnings.warn(f"the shipped generator {name!r} was trained with other settings than the current recipe; "
                      "training the current recipe instead", stacklevel=2)
    from .trainer import train_generator

    return train_generator(recipe, progress=progress)

