"""What a training run is told and what it records: the hyper-parameters (:class:`TrainConfig`), the
learning-rate schedule they define (:func:`lr_at`), the weight-decay rule (:func:`param_groups`) and the
per-step :class:`History`.

Explained in Chapter 3.2 (the schedule and the weight-decay groups) and Chapter 3.3 (the settings the
experiments vary).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from clip_tutorial.core.checks import check_range

__all__ = ["PRECISIONS", "LOSSES", "TrainConfig", "History", "param_groups", "lr_at"]

#: The training objectives that ``TrainConfig.loss`` names.
LOSSES = ("clip", "siglip", "filip")

#: The autocast dtype of each ``TrainConfig.precision`` (``None``: plain fp32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes:
        steps: optimiser steps.
        batch_size: image-text pairs per step, that is ``batch_size - 1`` negatives per pair.
        lr: peak learning rate, reached after the warm-up.
        warmup_steps: steps of linear warm-up from 0 to ``lr``; a cosine decay to 0 follows.
        weight_decay: AdamW decay for matrices; gains, biases and the temperature get none.
        betas: AdamW betas (CLIP used 0.9 and 0.98).
        eps: AdamW epsilon (CLIP used 1e-6).
        grad_clip: clip the global gradient norm to this value; ``None`` to turn clipping off.
        seed: seeds the order in which pairs are drawn and (offset by a constant) the random crops.
        log_every: record loss, temperature and learning rate every this many steps.
        precision: ``"fp32"``; ``"bf16"`` (autocast to bfloat16, on a GPU or the CPU); or ``"fp16"``
            (autocast to float16 with a gradient scaler, CUDA GPUs only).
        crop_scale: ``(low, high)`` with ``0 < low <= high <= 1``: crop every training image to a
            random box covering that fraction of its area (aspect ratio 3/4 to 4/3) and resize it
            back, CLIP's only augmentation
            (:func:`~clip_tutorial.data.augment.random_resized_crop`, explained in Chapters 3.1 and
            3.2); ``None`` (the default) trains on the images as they are.
        loss: the objective, one of :data:`LOSSES`: ``"clip"`` (CLIP's softmax loss, the default),
            ``"siglip"`` (SigLIP's pairwise sigmoid loss, Chapter 7.1) or ``"filip"`` (FILIP's token-wise
            late interaction, Chapter 7.3).
        lock_image: train the text tower only, against a frozen image tower (LiT, Chapter 7.4).
    """

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    seed: int = 0
    log_every: int = 1
    precision: str = "fp32"
    crop_scale: tuple[float, float] | None = None
    loss: str = "clip"
    lock_image: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"TrainConfig.{name}: expected a positive int, got {value!r}")
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"TrainConfig.warmup_steps: expected an int in [0, steps={self.steps}], got {self.warmup_steps!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr: expected a positive learning rate, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay: expected >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip: expected a positive norm or None, got {self.grad_clip!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision: expected one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"TrainConfig.loss: expected one of {LOSSES}, got {self.loss!r}")
        if not isinstance(self.lock_image, bool):
            raise TypeError(f"TrainConfig.lock_image: expected a bool, got {type(self.lock_image).__name__}")
        if self.crop_scale is not None:  # kept as a tuple of floats, also when given a list (read from JSON)
            object.__setattr__(self, "crop_scale", check_range("TrainConfig.crop_scale", self.crop_scale, upper=1.0))


@dataclass
class History:
    """What happened at each logged step; :func:`clip_tutorial.viz.plot_history` draws it.

    Attributes:
        steps: the logged step numbers (1-based).
        loss: training loss of the (global) batch at that step.
        temperature: ``1 / logit_scale`` after that step.
        lr: learning rate used at that step.
        evals: results of the evaluation callback, each a dict with a ``"step"`` key and a
            ``"seconds"`` key (training time until then, evaluations excluded).
        seconds: wall time of the run, evaluation excluded.
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The history as plain lists (JSON-serialisable)."""
        return asdict(self)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into a decayed group (tensors of two or more dimensions) and the rest.

    Gains, biases, the class embedding and the logit scale have fewer than two dimensions and are
    not decayed: shrinking them towards zero has no regularising meaning.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate at a 0-based ``step``: linear warm-up, then cosine decay to zero."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return 0.5 * config.lr * (1 + math.cos(math.pi * progress))
