"""Saving and restoring a training run mid-way, so that a resumed run matches an uninterrupted one bit for bit.

A training state is two files with the same stem, ``step-000040.safetensors`` and
``step-000040.json``, written and checked by :mod:`clip_tutorial.core.storage`:

* the safetensors file holds every tensor: the model's weights, AdamW's moment estimates and step
  counts, the state of the random generator that orders the data (and of the one that draws the
  augmentation's crops, when the run crops), the current data order, and PyTorch's global random
  states;
* the JSON file holds everything else: the step reached, the position in the data order, the
  optimiser's hyper-parameters, the loss scaler's state, the training configuration and the
  history so far, plus the SHA-256 of the tensor file.

Nothing is pickled, so loading a training state can never run code. The training loop turns its
live state into a :class:`TrainingState` and back (:class:`~clip_tutorial.train.loop.LoopState`).
Explained in Chapter 3.2.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clip_tutorial.core.checks import check_type
from clip_tutorial.core.storage import load_tensors, save_tensors

__all__ = ["TrainingState", "save_training_state", "load_training_state", "latest_training_state",
           "state_path", "global_rng_states", "set_global_rng_states", "FORMAT", "VERSION"]

#: The ``"format"`` field of every training-state description.
FORMAT = "clip_tutorial-training-state"
#: The version of the training-state layout (states written before versions were recorded are version 1).
VERSION = 1
_STEM = re.compile(r"^step-(\d+)$")


@dataclass
class TrainingState:
    """Everything needed to continue a run, as read by :func:`load_training_state`.

    Attributes:
        step: optimiser steps already taken.
        model: the model's ``state_dict``.
        optimizer: the optimiser's ``state_dict``, ready for ``load_state_dict``.
        generator: the state of the generator that shuffles the data.
        order: the current permutation of the training pairs.
        cursor: the position of the next batch in ``order``.
        rng: PyTorch's global random states (``"cpu"``, and ``"cuda"`` when it was saved on a GPU).
        scaler: the fp16 loss scaler's ``state_dict`` (empty when no scaler was used).
        config: the training configuration as a dict.
        history: the history so far as a dict.
        crop_generator: the state of the generator that draws the random crops (Chapter 3.1), or
            ``None`` when the run does not crop.
    """

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    order: torch.Tensor
    cursor: int
    rng: dict[str, torch.Tensor]
    scaler: dict[str, Any]
    config: dict[str, Any]
    history: dict[str, Any]
    crop_generator: torch.Tensor | None = None


def state_path(folder: str | os.PathLike, step: int) -> Path:
    """The stem of the training state saved after ``step`` in ``folder``, e.g. ``folder/step-000040``."""
    return Path(folder) / f"step-{step:06d}"


def save_training_state(folder: str | os.PathLike, state: TrainingState) -> Path:
    """Write ``state`` into ``folder`` (created if missing) and return the stem of the two files.

    Both files are written atomically (:func:`~clip_tutorial.core.storage.save_tensors`), so an
    interrupted save never leaves a half-written state behind.

    Raises:
        PermissionError: if the folder cannot be created or written to.
    """
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    for index, slots in state.optimizer["state"].items():
        tensors.update({f"optimizer.{index}.{key}": value for key, value in slots.items()})
    tensors["generator"], tensors["order"] = state.generator, state.order
    if state.crop_generator is not None:
        tensors["crop_generator"] = state.crop_generator
    tensors.update({f"rng.{k}": v for k, v in state.rng.items()})
    description = {"step": state.step, "cursor": state.cursor, "param_groups": state.optimizer["param_groups"],
                   "scaler": state.scaler, "config": state.config, "history": state.history}
    stem = state_path(folder, state.step)
    save_tensors(stem, tensors, description, format=FORMAT, version=VERSION, name="checkpoint_dir",
                 kind="training state")
    return stem


def latest_training_state(folder: str | os.PathLike) -> Path | None:
    """The stem of the training state with the highest step in ``folder``, or ``None`` when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    steps = [int(m.group(1)) for p in folder.glob("step-*.json") if (m := _STEM.match(p.stem))]
    return state_path(folder, max(steps)) if steps else None


def load_training_state(path: str | os.PathLike, config: dict[str, Any] | None = None) -> TrainingState:
    """Read a training state written by :func:`save_training_state`.

    Args:
        path: the stem of a state (``.../step-000040``, with or without a suffix) or a folder, in
            which case its latest state is read.
        config: the training configuration of the run about to resume, as a dict; when given,
            the state must have been saved with the same one (resuming would otherwise match
            neither run).

    Raises:
        TypeError: if ``path`` is not a str or a path.
        FileNotFoundError: if there is no training state at ``path``.
        ValueError: if the files are corrupted (bad JSON, wrong format, SHA-256 mismatch), or the
            state was saved with another ``config`` (the message lists the differing fields).
    """
    check_type("resume_from", path, (str, os.PathLike), "a str or a pathlib.Path")
    if Path(path).is_dir():
        latest = latest_training_state(path)
        if latest is None:
            raise FileNotFoundError(f"resume_from: expected a folder with step-*.json training states, got none in '{path}'")
        path = latest
    tensors, description = load_tensors(path, expected_format=FORMAT, version=VERSION, name="resume_from",
                                        kind="training state")
    if config is not None:
        given = json.loads(json.dumps(config))
        differences = [f"{k} (given {given[k]!r}, saved {description['config'].get(k)!r})" for k in given
                       if given[k] != description["config"].get(k)]
        if differences:
            raise ValueError(f"resume_from: the training state in {str(path)!r} was saved with another config; "
                             "differing fields: " + "; ".join(differences))
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in description["param_groups"]]
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return TrainingState(step=description["step"], model=model, optimizer={"state": slots, "param_groups": groups},
                         generator=tensors["generator"], order=tensors["order"], cursor=description["cursor"],
                         rng=rng, scaler=description["scaler"], config=description["config"],
                         history=description["history"], crop_generator=tensors.get("crop_generator"))


def global_rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """PyTorch's global random states, as :attr:`TrainingState.rng` holds them: ``"cpu"``, and ``"cuda"`` on a GPU."""
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_global_rng_states(rng: dict[str, torch.Tensor]) -> None:
    """Restore the states taken by :func:`global_rng_states` (the CUDA one when a GPU is present)."""
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
