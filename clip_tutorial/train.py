"""The training loop: AdamW with weight-decay groups, warm-up plus cosine, a per-step history.

Explained in Chapter 1 (the 60-second run) and Chapter 3.2 (line by line).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .loss import clip_loss
from .model import CLIP, MAX_LOGIT_SCALE

__all__ = ["TrainConfig", "History", "param_groups", "lr_at", "train_clip"]


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
        seed: seeds the order in which pairs are drawn.
        log_every: record loss, temperature and learning rate every this many steps.
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


@dataclass
class History:
    """What happened at each logged step; :meth:`plot` draws it.

    Attributes:
        steps: the logged step numbers (1-based).
        loss: training loss of the batch at that step.
        temperature: ``1 / logit_scale`` after that step.
        lr: learning rate used at that step.
        evals: results of the evaluation callback, each a dict with a ``"step"`` key.
        seconds: wall time of the run, evaluation excluded.
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def plot(self, keys: tuple[str, ...] = ("loss", "temperature", "lr")) -> Any:
        """Plot the logged curves, one panel per key (returns the matplotlib figure)."""
        from .viz import plot_history

        return plot_history(self, keys=keys)

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


def _check_data(images: torch.Tensor, tokens: torch.Tensor, batch_size: int) -> None:
    if not isinstance(images, torch.Tensor) or not isinstance(tokens, torch.Tensor):
        raise TypeError(
            f"images, tokens: expected two tensors, got {type(images).__name__} and {type(tokens).__name__}"
        )
    if images.shape[0] != tokens.shape[0]:
        raise ValueError(f"images, tokens: expected one caption per image, got {images.shape[0]} images and {tokens.shape[0]} captions")
    if images.shape[0] < batch_size:
        raise ValueError(f"images: expected at least batch_size={batch_size} pairs, got {images.shape[0]}")


def train_clip(
    model: CLIP,
    images: torch.Tensor,
    tokens: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    device: torch.device | str | None = None,
    eval_fn: Callable[[CLIP], dict[str, float]] | None = None,
    eval_every: int | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` contrastively on matching ``(images[i], tokens[i])`` pairs.

    Each step draws ``batch_size`` pairs without replacement (a fresh permutation every epoch),
    computes :func:`~clip_tutorial.loss.clip_loss`, clips the gradient norm, steps AdamW, and
    clamps the logit scale so that it never exceeds ``log(100)``.

    Args:
        model: the CLIP to train, changed in place.
        images: (N, 3, H, W) normalised pixels.
        tokens: (N, context_length) token ids, one caption per image.
        config: the hyper-parameters.
        device: where to train; the model's device when omitted. ``images`` and ``tokens`` may stay
            on the CPU: each batch is moved.
        eval_fn: called with the model every ``eval_every`` steps and after the last one; it
            returns a dict of metrics stored in ``History.evals``. Its time is not counted.
        eval_every: steps between evaluations.
        progress: show a ``tqdm`` progress bar with the current loss and temperature.

    Returns:
        The :class:`History` of the run.
    """
    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial CLIP, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    _check_data(images, tokens, config.batch_size)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr,
                                  betas=config.betas, eps=config.eps)
    generator = torch.Generator().manual_seed(config.seed)
    history, order, cursor = History(), torch.empty(0, dtype=torch.long), 0
    max_log_scale = math.log(MAX_LOGIT_SCALE)
    bar = tqdm(range(config.steps), desc="training", disable=not progress, mininterval=0.5)
    start = time.perf_counter()
    for step in bar:
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(images.shape[0], generator=generator), 0
        index = order[cursor: cursor + config.batch_size]
        cursor += config.batch_size
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits_per_image, logits_per_text = model(images[index].to(device), tokens[index].to(device))
        loss = clip_loss(logits_per_image, logits_per_text)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"the loss became {loss_value} at step {step + 1}; likely causes: a learning rate too high "
                f"(lr={config.lr}), no warm-up, or fp16 overflow"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, max_log_scale)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            temperature = float(1 / model.logit_scale.detach().exp())
            history.steps.append(step + 1)
            history.loss.append(loss_value)
            history.temperature.append(temperature)
            history.lr.append(lr)
            bar.set_postfix(loss=f"{loss_value:.3f}", T=f"{temperature:.3f}", refresh=False)
        if eval_fn is not None and eval_every and ((step + 1) % eval_every == 0 or step + 1 == config.steps):
            paused = time.perf_counter()
            model.eval()
            history.evals.append({"step": step + 1, **eval_fn(model)})
            model.train()
            start += time.perf_counter() - paused
    history.seconds = time.perf_counter() - start
    bar.close()
    model.eval()
    return history
