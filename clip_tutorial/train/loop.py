"""The training loop: AdamW with weight-decay groups, warm-up plus cosine, a per-step history.

Explained in Chapter 1 (the 60-second run), Chapter 3.2 (line by line), Chapters 3.1 and 3.2 (the
random-crop augmentation) and Chapter 3.4 (the same loop on several processes under ``torchrun``).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from clip_tutorial.core.checks import check_range
from clip_tutorial.data.augment import random_resized_crop, sample_crop_boxes
from clip_tutorial.objectives.distributed import (all_reduce_mean, average_gradients, barrier, broadcast_parameters, distributed_clip_loss,
                          rank_and_world, shard_batch)
from clip_tutorial.model import CLIP, MAX_LOGIT_SCALE

__all__ = ["TrainConfig", "History", "param_groups", "lr_at", "train_clip", "PRECISIONS"]

#: The autocast dtype of each ``TrainConfig.precision`` (``None``: plain fp32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_CROP_SEED_OFFSET = 1_000_003  # the crop generator's seed is the run's seed plus this


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
        if self.crop_scale is not None:  # kept as a tuple of floats, also when given a list (read from JSON)
            object.__setattr__(self, "crop_scale", check_range("TrainConfig.crop_scale", self.crop_scale, upper=1.0))


@dataclass
class History:
    """What happened at each logged step; :meth:`plot` draws it.

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


def _check_data(images: torch.Tensor, tokens: torch.Tensor, batch_size: int) -> None:
    if not isinstance(images, torch.Tensor) or not isinstance(tokens, torch.Tensor):
        raise TypeError(
            f"images, tokens: expected two tensors, got {type(images).__name__} and {type(tokens).__name__}"
        )
    if images.shape[0] != tokens.shape[0]:
        raise ValueError(f"images, tokens: expected one caption per image, got {images.shape[0]} images and {tokens.shape[0]} captions")
    if images.shape[0] < batch_size:
        raise ValueError(f"images: expected at least batch_size={batch_size} pairs, got {images.shape[0]}")


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"config.precision: 'fp16' needs a CUDA GPU (it relies on a gradient scaler), got device {device}; "
            "use precision='bf16' or 'fp32' instead"
        )
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def train_clip(
    model: CLIP,
    images: torch.Tensor,
    tokens: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    device: torch.device | str | None = None,
    eval_fn: Callable[[CLIP], dict[str, float]] | None = None,
    eval_every: int | None = None,
    progress: bool = True,
    checkpoint_every: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
) -> History:
    """Train ``model`` contrastively on matching ``(images[i], tokens[i])`` pairs.

    Each step draws ``batch_size`` pairs without replacement (a fresh permutation every epoch),
    optionally crops them at random (``config.crop_scale``, Chapters 3.1 and 3.2), computes CLIP's
    loss (under autocast when ``config.precision`` asks for it), clips the gradient norm, steps
    AdamW, and clamps the logit scale so that it never exceeds ``log(100)``.

    Under ``torchrun``, once :func:`~clip_tutorial.objectives.distributed.setup_distributed` has joined the
    ``W`` processes, the same call trains like one process on the whole batch (Chapter 3.4): all
    start from rank 0's weights, each encodes its ``batch_size / W`` rows of the same global batch,
    the loss is :func:`~clip_tutorial.objectives.distributed.distributed_clip_loss` and the gradients are
    averaged. All get the same history and call ``eval_fn`` (which may thus communicate itself);
    only rank 0 writes training states, into a ``checkpoint_dir`` that every process can read.

    Args:
        model: the CLIP to train, changed in place.
        images: (N, 3, H, W) normalised pixels.
        tokens: (N, context_length) token ids, one caption per image.
        config: the hyper-parameters.
        device: where to train; the model's device when omitted. ``images`` and ``tokens`` may stay
            on the CPU: each batch is moved (and then cropped there).
        eval_fn: called with the model every ``eval_every`` steps and after the last one; it
            returns a dict of metrics stored in ``History.evals``. Its time is not counted.
        eval_every: steps between evaluations.
        progress: show a ``tqdm`` progress bar with the current loss and temperature (on rank 0).
        checkpoint_every: save the whole training state (see :mod:`clip_tutorial.train.state`)
            into ``checkpoint_dir`` every this many steps and after the last one.
        checkpoint_dir: the folder of those training states.
        resume_from: a training state (or a folder of them, the latest is taken) to continue
            from; the run then ends with exactly the weights an uninterrupted run would have.

    Returns:
        The :class:`History` of the run (including the steps before a resume).

    Raises:
        ValueError: for bad arguments, or a ``batch_size`` that the number of processes does not divide.
        FloatingPointError: if the loss stops being finite; the message names the step, the
            learning rate and the likely causes.
    """
    from .state import capture_training_state, resume_training, save_training_state

    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial CLIP, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every <= 0 or checkpoint_dir is None):
        raise ValueError(f"checkpoint_every: expected a positive int together with a checkpoint_dir, "
                         f"got {checkpoint_every!r} and checkpoint_dir={checkpoint_dir!r}")
    _check_data(images, tokens, config.batch_size)
    rank, world = rank_and_world()
    if config.batch_size % world:
        raise ValueError(f"config.batch_size: expected a multiple of the number of processes ({world}), "
                         f"got {config.batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    autocast = _autocast(device, config.precision)
    model.to(device).train()
    broadcast_parameters(model)  # all processes start from rank 0's weights (a no-op for one process)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr,
                                  betas=config.betas, eps=config.eps)
    scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
    generator = torch.Generator().manual_seed(config.seed)
    # The crops get a generator of their own: switching them on leaves the order of the pairs unchanged.
    crops = torch.Generator().manual_seed(config.seed + _CROP_SEED_OFFSET) if config.crop_scale else None
    history, order, cursor, first = History(), torch.empty(0, dtype=torch.long), 0, 0
    if resume_from is not None:  # model, optimiser, scaler and generators continue where the state left them
        state = resume_training(resume_from, asdict(config), model, optimizer, scaler, generator, crops)
        order, cursor, first, history = state.order, state.cursor, state.step, History(**state.history)
    max_log_scale = math.log(MAX_LOGIT_SCALE)
    bar = tqdm(range(first, config.steps), desc="training", disable=not progress or rank != 0, mininterval=0.5,
               initial=first, total=config.steps)
    start = time.perf_counter() - history.seconds
    for step in bar:
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(images.shape[0], generator=generator), 0
        index = order[cursor: cursor + config.batch_size]  # the global batch, the same on every process
        cursor += config.batch_size
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        mine = shard_batch(index, rank, world)  # this process's rows (all of them for one process)
        batch_images = images[mine].to(device)
        if crops is not None:  # boxes for the whole global batch: W processes crop exactly as one would
            boxes = sample_crop_boxes(len(index), *images.shape[-2:], scale=config.crop_scale, generator=crops)
            batch_images = random_resized_crop(batch_images, boxes=shard_batch(boxes, rank, world))
        with autocast:
            image_features = model.encode_image(batch_images, normalize=True)
            text_features = model.encode_text(tokens[mine].to(device), normalize=True)
            # local_loss=True: each process scores only its rows against the whole batch (B/W x B logits, not
            # B x B), the saving splitting the batch is for; the gradients are the same either way, and logging
            # the global loss costs one all_reduce of a number. One process: exactly clip_loss(model(...)).
            loss = distributed_clip_loss(image_features, text_features, model.logit_scale_value(), local_loss=True)
        loss_value = all_reduce_mean(loss).item()  # the global batch's loss, identical on every process
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"the loss became {loss_value} at step {step + 1} (learning rate {lr:.3g}, peak {config.lr:.3g}, "
                f"precision {config.precision}); likely causes: a learning rate too high or too short a warm-up, "
                "fp16 overflow (try bf16 or fp32), or bad inputs (NaN or inf in the images, out-of-range token ids)"
            )
        optimizer.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()
        average_gradients(model)  # identical gradients, hence identical steps, on every process
        if scaler is not None:
            scaler.unscale_(optimizer)
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
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
            history.evals.append({"step": step + 1, "seconds": paused - start, **eval_fn(model)})
            model.train()
            start += time.perf_counter() - paused
        if checkpoint_every and ((step + 1) % checkpoint_every == 0 or step + 1 == config.steps):
            paused = time.perf_counter()
            history.seconds = paused - start
            if rank == 0:  # the processes hold the same state: one copy is enough
                save_training_state(checkpoint_dir, capture_training_state(
                    step + 1, model, optimizer, scaler, generator, crops, order, cursor, asdict(config),
                    history.to_dict(), device))
            barrier()  # nobody runs ahead (or resumes) before the state is on disk
            start += time.perf_counter() - paused
    history.seconds = time.perf_counter() - start
    bar.close()
    model.eval()
    return history

