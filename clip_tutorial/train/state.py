"""Saving and restoring a training run mid-way, so that a resumed run matches an uninterrupted one bit for bit.

A training-state checkpoint is two files with the same stem, ``step-000040.safetensors`` and
``step-000040.json``:

* the safetensors file holds every tensor: the model's weights, AdamW's moment estimates and step
  counts, the state of the random generator that orders the data (and of the one that draws the
  augmentation's crops, when the run crops), the current data order, and PyTorch's global random
  states;
* the JSON file holds everything else: the step reached, the position in the data order, the
  optimiser's hyper-parameters, the loss scaler's state, the training configuration and the
  history so far, plus the SHA-256 of the tensor file.

Nothing is pickled, so loading a training state can never run code. Explained in Chapter 3.2.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from clip_tutorial.weights.checkpoints import sha256_file

__all__ = ["TrainingState", "save_training_state", "load_training_state", "latest_training_state",
           "state_path", "capture_training_state", "resume_training", "FORMAT"]

#: The ``"format"`` field of every training-state description.
FORMAT = "clip_tutorial-training-state"
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

    Both files are written under temporary names and renamed, so an interrupted save never leaves
    a half-written state behind.

    Raises:
        PermissionError: if the folder cannot be created or written to.
    """
    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in state.model.items()}
    for index, slots in state.optimizer["state"].items():
        for key, value in slots.items():
            tensors[f"optimizer.{index}.{key}"] = value.detach().to("cpu").contiguous()
    tensors["generator"] = state.generator
    tensors["order"] = state.order.contiguous()
    if state.crop_generator is not None:
        tensors["crop_generator"] = state.crop_generator
    tensors.update({f"rng.{k}": v for k, v in state.rng.items()})
    description = {
        "format": FORMAT, "step": state.step, "cursor": state.cursor,
        "param_groups": state.optimizer["param_groups"], "scaler": state.scaler,
        "config": state.config, "history": state.history,
    }
    stem = state_path(folder, state.step)
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    tmp_weights, tmp_meta = Path(f"{weights}.tmp"), Path(f"{meta}.tmp")
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp_weights))
        description["sha256"] = sha256_file(tmp_weights)
        tmp_meta.write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp_weights, weights)
        os.replace(tmp_meta, meta)
    except OSError as err:
        raise PermissionError(
            f"checkpoint_dir: cannot write a training state to folder '{stem.parent}' ({err.strerror or err}); "
            "expected a writable folder"
        ) from err
    return stem


def latest_training_state(folder: str | os.PathLike) -> Path | None:
    """The stem of the training state with the highest step in ``folder``, or ``None`` when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    steps = [int(m.group(1)) for p in folder.glob("step-*.json") if (m := _STEM.match(p.stem))]
    return state_path(folder, max(steps)) if steps else None


def load_training_state(path: str | os.PathLike) -> TrainingState:
    """Read a training state written by :func:`save_training_state`.

    Args:
        path: the stem of a state (``.../step-000040``, with or without a suffix) or a folder, in
            which case its latest state is read.

    Raises:
        TypeError: if ``path`` is not a str or a path.
        FileNotFoundError: if there is no training state at ``path``.
        ValueError: if the files are corrupted (bad JSON, wrong format, SHA-256 mismatch).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"resume_from: expected a str or a pathlib.Path, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        latest = latest_training_state(path)
        if latest is None:
            raise FileNotFoundError(f"resume_from: expected a folder with step-*.json training states, got none in '{path}'")
        path = latest
    elif path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    weights, meta = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for file in (weights, meta):
        if not file.is_file():
            raise FileNotFoundError(f"resume_from: expected a training state, but {file} is missing")
    try:
        description = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"training state {meta} is corrupted: expected JSON, got a parse error ({err})") from err
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"training state {meta}: expected format {FORMAT!r}")
    if sha256_file(weights) != description["sha256"]:
        raise ValueError(f"training state {weights} is corrupted (sha256 mismatch)")
    tensors = load_file(str(weights))
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


def capture_training_state(step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scaler: torch.amp.GradScaler | None, generator: torch.Generator,
                           crop_generator: torch.Generator | None, order: torch.Tensor, cursor: int,
                           config: dict[str, Any], history: dict[str, Any],
                           device: torch.device) -> TrainingState:
    """Collect a running training loop's state after ``step`` steps, ready for :func:`save_training_state`.

    ``config`` and ``history`` are stored as JSON would read them back (tuples become lists), and
    PyTorch's global random states are taken too (the CUDA one when training on a GPU).
    """
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return TrainingState(step=step, model=model.state_dict(), optimizer=optimizer.state_dict(),
                         generator=generator.get_state(), order=order, cursor=cursor, rng=rng,
                         scaler=scaler.state_dict() if scaler is not None else {},
                         config=json.loads(json.dumps(config)), history=history,
                         crop_generator=crop_generator.get_state() if crop_generator is not None else None)


def resume_training(path: str | os.PathLike, config: dict[str, Any], model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                    generator: torch.Generator, crop_generator: torch.Generator | None) -> TrainingState:
    """Load the training state at ``path`` into a training loop's live objects and return it.

    The model, the optimiser, the loss scaler, the two generators and PyTorch's global random
    states continue where the saved run stopped; the caller takes the data order, the cursor, the
    step and the history from the returned state.

    Raises:
        ValueError: if the state was saved with another training configuration (resuming would
            then match neither run); the message lists the differing fields.
        FileNotFoundError: see :func:`load_training_state`.
    """
    state = load_training_state(path)
    given = json.loads(json.dumps(config))
    differences = [f"{k} (given {given[k]!r}, saved {state.config.get(k)!r})" for k in given
                   if given[k] != state.config.get(k)]
    if differences:
        raise ValueError(f"resume_from: the training state in {str(path)!r} was saved with another config; "
                         "differing fields: " + "; ".join(differences))
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    if scaler is not None and state.scaler:
        scaler.load_state_dict(state.scaler)
    generator.set_state(state.generator)
    if crop_generator is not None:
        crop_generator.set_state(state.crop_generator)
    torch.set_rng_state(state.rng["cpu"])
    if "cuda" in state.rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(state.rng["cuda"])
    return state
