"""The training loop: AdamW with weight-decay groups, warm-up plus cosine, a per-step history.

Explained in Chapter 1 (the 60-second run), Chapter 3.2 (line by line), Chapters 3.1 and 3.2 (the
random-crop augmentation) and Chapter 3.4 (the same loop on several processes under ``torchrun``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from clip_tutorial.core.checks import check_tensor
from clip_tutorial.core.progress import progress_bar

from clip_tutorial.data.augment import random_resized_crop, sample_crop_boxes
from clip_tutorial.model import CLIP, MAX_LOGIT_SCALE
from clip_tutorial.objectives.distributed import (all_reduce_mean, average_gradients, barrier, broadcast_parameters,
                                                  distributed_clip_loss, rank_and_world, shard_batch)
from clip_tutorial.objectives.distributed_siglip import distributed_siglip_loss
from clip_tutorial.objectives.filip import filip_loss
from clip_tutorial.objectives.loss import hard_negative_clip_loss, siglip_loss
from .config import PRECISIONS, History, TrainConfig, param_groups, lr_at
from .state import (TrainingState, global_rng_states, load_training_state, save_training_state,
                    set_global_rng_states)

__all__ = ["LoopState", "train_clip"]

_CROP_SEED_OFFSET = 1_000_003  # the crop generator's seed is the run's seed plus this


@dataclass
class LoopState:
    """Everything the training loop carries from one step to the next: what a training state saves.

    :meth:`snapshot` turns it into a :class:`~clip_tutorial.train.state.TrainingState` and
    :meth:`restore` sets it back from one, so that a resumed run continues bit for bit.
    Explained in Chapter 3.2.

    Attributes:
        config, model, device: the run's hyper-parameters, the CLIP it trains and where.
        optimizer: AdamW over :func:`param_groups`; scaler: the fp16 gradient scaler, else ``None``.
        generator: the seeded generator that shuffles the pairs.
        crops: the generator of the random crops, seeded apart so that cropping leaves the order
            of the pairs unchanged; ``None`` when the run does not crop.
        step: optimiser steps taken so far.
        order, cursor: the current shuffle of the pairs, and where the next batch starts in it.
        history: what has been logged so far.
        clock: ``time.perf_counter()`` at which the run would have started had it never paused
            (for evaluation or saving): ``perf_counter() - clock`` is its training time.
    """

    config: TrainConfig
    model: CLIP
    device: torch.device
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator
    crops: torch.Generator | None
    step: int = 0
    order: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    cursor: int = 0
    history: History = field(default_factory=History)
    clock: float = 0.0

    @classmethod
    def start(cls, model: CLIP, config: TrainConfig, device: torch.device) -> LoopState:
        """Put ``model`` on ``device`` in training mode (rank 0's weights on every process) and build the rest."""
        model.to(device)
        if config.lock_image:  # LiT (Chapter 7.4): no gradient, hence no AdamW state, for the image tower
            model.visual.requires_grad_(False)
        _train_mode(model, config)
        broadcast_parameters(model)  # a no-op for one process
        optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr,
                                      betas=config.betas, eps=config.eps)
        scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        crops = torch.Generator().manual_seed(config.seed + _CROP_SEED_OFFSET) if config.crop_scale else None
        return cls(config, model, device, optimizer, scaler, torch.Generator().manual_seed(config.seed), crops)

    def next_batch(self, n_pairs: int) -> torch.Tensor:
        """The indices of the next batch: a slice of the shuffle, reshuffled when too few are left (a new epoch)."""
        if self.cursor + self.config.batch_size > len(self.order):
            self.order, self.cursor = torch.randperm(n_pairs, generator=self.generator), 0
        index = self.order[self.cursor: self.cursor + self.config.batch_size]
        self.cursor += self.config.batch_size
        return index

    def snapshot(self) -> TrainingState:
        """The whole state after :attr:`step` steps, for :func:`~clip_tutorial.train.state.save_training_state`."""
        return TrainingState(
            step=self.step, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            generator=self.generator.get_state(), order=self.order, cursor=self.cursor,
            rng=global_rng_states(self.device), scaler=self.scaler.state_dict() if self.scaler is not None else {},
            config=json.loads(json.dumps(asdict(self.config))), history=self.history.to_dict(),
            crop_generator=self.crops.get_state() if self.crops is not None else None)

    def restore(self, state: TrainingState) -> None:
        """Continue from ``state``: weights, optimiser, scaler, generators, global random states, position, history."""
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.generator.set_state(state.generator)
        if self.crops is not None:
            self.crops.set_state(state.crop_generator)
        set_global_rng_states(state.rng)
        self.step, self.order, self.cursor = state.step, state.order, state.cursor
        self.history = History(**state.history)

    @contextlib.contextmanager
    def paused(self) -> Iterator[float]:
        """Stop the training clock while the block runs; yields the training seconds so far."""
        paused = time.perf_counter()
        yield paused - self.clock
        self.clock += time.perf_counter() - paused


def _train_mode(model: CLIP, config: TrainConfig) -> None:
    """Training mode, except a locked image tower (LiT, Chapter 7.4), which stays in eval mode."""
    model.train()
    if config.lock_image:
        model.visual.eval()


def _check_arguments(model: CLIP, images: torch.Tensor, tokens: torch.Tensor, config: TrainConfig,
                     checkpoint_every: int | None, checkpoint_dir: str | os.PathLike | None, world: int) -> None:
    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial CLIP, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every <= 0 or checkpoint_dir is None):
        raise ValueError(f"checkpoint_every: expected a positive int together with a checkpoint_dir, "
                         f"got {checkpoint_every!r} and checkpoint_dir={checkpoint_dir!r}")
    if not isinstance(images, torch.Tensor) or not isinstance(tokens, torch.Tensor):
        raise TypeError(f"images, tokens: expected two tensors, got {type(images).__name__} and {type(tokens).__name__}")
    if images.shape[0] != tokens.shape[0]:
        raise ValueError(f"images, tokens: expected one caption per image, got {images.shape[0]} images and {tokens.shape[0]} captions")
    if images.shape[0] < config.batch_size:
        raise ValueError(f"images: expected at least batch_size={config.batch_size} pairs, got {images.shape[0]}")
    if config.batch_size % world:
        raise ValueError(f"config.batch_size: expected a multiple of the number of processes ({world}), "
                         f"got {config.batch_size}")


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


def _local_batch(loop: LoopState, images: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor, rank: int,
                 world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's rows of the global batch ``index`` (all of them for one process), on the device and cropped."""
    mine = shard_batch(index, rank, world)
    batch_images = images[mine].to(loop.device)
    if loop.crops is not None:  # boxes for the whole global batch: W processes crop exactly as one would
        boxes = sample_crop_boxes(len(index), *images.shape[-2:], scale=loop.config.crop_scale, generator=loop.crops)
        batch_images = random_resized_crop(batch_images, boxes=shard_batch(boxes, rank, world))
    return batch_images, tokens[mine].to(loop.device)


def _loss(model: CLIP, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's loss of this process's rows against the whole (global) batch.

    ``local_loss=True``: each process scores only its rows against the whole batch (B/W x B logits, not
    B x B), the saving that splitting the batch is for; the gradients are the same either way. One
    process: exactly ``clip_loss(*model(images, tokens))``.
    """
    image_features = model.encode_image(images, normalize=True)
    text_features = model.encode_text(tokens, normalize=True)
    return distributed_clip_loss(image_features, text_features, model.logit_scale_value(), local_loss=True)


def _siglip_loss(model: CLIP, images: torch.Tensor, tokens: torch.Tensor, world: int) -> torch.Tensor:
    """SigLIP's sigmoid loss (Chapter 7.1): :func:`siglip_loss` on one process, the ring form on several.

    Several processes: :func:`~clip_tutorial.objectives.distributed_siglip.distributed_siglip_loss`, whose
    mean over processes (and, after gradient averaging, whose gradients) are those of the whole batch.
    """
    if model.logit_bias is None:
        raise ValueError("model: expected a CLIP with a logit_bias for TrainConfig(loss='siglip'); build it with "
                         "CLIPConfig(init_logit_scale=math.log(10), init_logit_bias=-10.0), SigLIP's initialisation")
    image_features = model.encode_image(images, normalize=True)
    text_features = model.encode_text(tokens, normalize=True)
    if world == 1:
        return siglip_loss(model.logit_scale_value() * image_features @ text_features.t() + model.logit_bias)
    return distributed_siglip_loss(image_features, text_features, model.logit_scale_value(), model.logit_bias)


def _hard_negative_loss(model: CLIP, images: torch.Tensor, tokens: torch.Tensor,
                        negatives: torch.Tensor) -> torch.Tensor:
    """NegCLIP's loss on one process (Chapter 6.6): the images also reject the batch's hard negatives.

    A negative identical to its caption means "this caption has none" and is left out, so with no
    negatives left this is CLIP's loss again. Captions and negatives go through the text encoder together.
    """
    kept = negatives[(negatives != tokens).any(dim=1)]
    image_features = model.encode_image(images, normalize=True)
    texts = model.encode_text(torch.cat([tokens, kept]), normalize=True)
    scale = model.logit_scale_value()
    logits = scale * image_features @ texts.t()
    return hard_negative_clip_loss(logits[:, :len(tokens)], logits[:, len(tokens):])


def _check_negatives(negatives: torch.Tensor, tokens: torch.Tensor, world: int) -> None:
    check_tensor("negatives", negatives, shape=tuple(tokens.shape), dtype=tokens.dtype,
                 what=f"token ids like tokens ({tuple(tokens.shape)}, {tokens.dtype}), one hard negative per pair")
    if world > 1:
        raise ValueError(f"negatives: hard negatives are supported on one process only, got {world} processes; "
                         "train without negatives under torchrun, or on one process")


def _filip_loss(model: CLIP, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """FILIP's loss on one process (Chapter 7.3): unit tokens of both towers, token-wise late interaction."""
    text_tokens, text_mask = model.encode_text_tokens(tokens, normalize=True)
    return filip_loss(model.encode_image_tokens(images, normalize=True), text_tokens, text_mask,
                      model.logit_scale_value())


def _check_filip(model: CLIP, negatives: torch.Tensor | None, world: int) -> None:
    if model.config.is_resnet:
        raise ValueError("config.loss: 'filip' needs a ViT image tower (it matches patch tokens), "
                         "got a ResNet model")
    if negatives is not None:
        raise ValueError("negatives: hard negatives are supported with TrainConfig(loss='clip') only, got loss='filip'")
    if world > 1:
        raise ValueError(f"config.loss: 'filip' is supported on one process only, got {world} processes; "
                         "train it without torchrun, or on one process")


def _check_finite(loss: float, step: int, lr: float, config: TrainConfig) -> float:
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"the loss became {loss} at step {step + 1} (learning rate {lr:.3g}, peak {config.lr:.3g}, "
            f"precision {config.precision}); likely causes: a learning rate too high or too short a warm-up, "
            "fp16 overflow (try bf16 or fp32), or bad inputs (NaN or inf in the images, out-of-range token ids)"
        )
    return loss


def _clip_and_step(loop: LoopState) -> None:
    """Clip the global gradient norm (after unscaling fp16 gradients) and take the AdamW step."""
    if loop.scaler is not None:
        loop.scaler.unscale_(loop.optimizer)
    if loop.config.grad_clip is not None:
        nn.utils.clip_grad_norm_(loop.model.parameters(), loop.config.grad_clip)
    if loop.scaler is None:
        loop.optimizer.step()
    else:  # skips the step if the gradients overflowed, and adapts the scale
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()


def _due(steps: int, every: int | None, last: int) -> bool:
    """Whether something done every ``every`` steps (and after the ``last``) is due after ``steps`` steps."""
    return bool(every) and (steps % every == 0 or steps == last)


def _evaluate(loop: LoopState, eval_fn: Callable[[CLIP], dict[str, float]]) -> None:
    """Call ``eval_fn`` on the model in eval mode, off the training clock, and record its metrics."""
    with loop.paused() as seconds:
        loop.model.eval()
        loop.history.evals.append({"step": loop.step, "seconds": seconds, **eval_fn(loop.model)})
        _train_mode(loop.model, loop.config)


def _save(loop: LoopState, folder: str | os.PathLike, rank: int) -> None:
    """Save the whole training state into ``folder``, off the clock; rank 0 writes, as all hold the same state."""
    with loop.paused() as seconds:
        loop.history.seconds = seconds
        if rank == 0:
            save_training_state(folder, loop.snapshot())
        barrier()  # nobody runs ahead (or resumes) before the state is on disk


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
    negatives: torch.Tensor | None = None,
) -> History:
    """Train ``model`` contrastively on matching ``(images[i], tokens[i])`` pairs.

    Each step draws ``batch_size`` pairs without replacement (a fresh permutation every epoch),
    optionally crops them at random (``config.crop_scale``, Chapters 3.1 and 3.2), computes CLIP's
    loss (under autocast when ``config.precision`` asks for it), clips the gradient norm, steps
    AdamW, and clamps the logit scale so that it never exceeds ``log(100)``.

    ``config.loss="siglip"`` (Chapter 7.1) trains with SigLIP's pairwise sigmoid loss instead
    (:func:`~clip_tutorial.objectives.loss.siglip_loss`; on several processes the ring form
    :func:`~clip_tutorial.objectives.distributed_siglip.distributed_siglip_loss`); the model needs a
    ``logit_bias`` (``CLIPConfig.init_logit_bias``, -10 with ``init_logit_scale=log(10)`` as in the paper).
    The logit scale keeps the same clamp at 100: open_clip's training loop applies it to every model,
    SigLIP's included, while the paper starts the scale at 10 and mentions no clip. The clamp only acts
    if the scale would pass 100, and keeping it makes a CLIP-vs-SigLIP comparison differ in the loss
    alone. The bias is not clamped.

    ``config.lock_image=True`` (LiT, Chapter 7.4) trains the text tower (and the scale and bias)
    only: the image tower gets no gradient and no AdamW state (so no weight decay either), stays in
    eval mode and ends bit-identical. Its ``requires_grad`` flags are restored after the run.

    ``config.loss="filip"`` (Chapter 7.3) trains with FILIP's token-wise late interaction
    (:func:`~clip_tutorial.objectives.filip.filip_loss` on the unit tokens of
    :meth:`~clip_tutorial.model.CLIP.encode_image_tokens` and :meth:`~clip_tutorial.model.CLIP.encode_text_tokens`),
    with CLIP's logit scale and its clamp; ViT image towers only, one process, no hard negatives.

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
        negatives: (N, context_length) token ids of one hard-negative caption per pair (Chapter 6.6,
            :func:`~clip_tutorial.data.negatives.hard_negative_captions`); each image then also
            rejects the batch's negatives (:func:`~clip_tutorial.objectives.loss.hard_negative_clip_loss`).
            A negative equal to its caption counts as none. ``None`` (the default) trains exactly as without
            the argument. One process only.

    Returns:
        The :class:`History` of the run (including the steps before a resume).

    Raises:
        ValueError: for bad arguments, or a ``batch_size`` that the number of processes does not divide.
        FloatingPointError: if the loss stops being finite; the message names the step, the
            learning rate and the likely causes.
    """
    rank, world = rank_and_world()
    _check_arguments(model, images, tokens, config, checkpoint_every, checkpoint_dir, world)
    if negatives is not None:
        _check_negatives(negatives, tokens, world)
    if config.loss == "siglip" and negatives is not None:
        raise ValueError("negatives: hard negatives are supported with TrainConfig(loss='clip') only, got loss='siglip'")
    if config.loss == "filip":
        _check_filip(model, negatives, world)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    autocast = _autocast(device, config.precision)
    loop = LoopState.start(model, config, device)
    if resume_from is not None:  # everything continues where the saved run stopped
        loop.restore(load_training_state(resume_from, config=asdict(config)))
    optimizer, scaler, history = loop.optimizer, loop.scaler, loop.history
    bar = progress_bar(range(loop.step, config.steps), enabled=progress and rank == 0, desc="training",
                       mininterval=0.5, initial=loop.step, total=config.steps)
    loop.clock = time.perf_counter() - history.seconds
    for step in bar:
        index = loop.next_batch(images.shape[0])  # 1. a batch: the same global one on every process
        lr = lr_at(step, config)  # 2. the schedule
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch_images, batch_tokens = _local_batch(loop, images, tokens, index, rank, world)
        with autocast:  # 3. forward and loss
            if config.loss == "siglip":  # Chapter 7.1
                loss = _siglip_loss(model, batch_images, batch_tokens, world)
            elif config.loss == "filip":  # Chapter 7.3: one process, so this process's rows are the whole batch
                loss = _filip_loss(model, batch_images, batch_tokens)
            elif negatives is None:
                loss = _loss(model, batch_images, batch_tokens)
            else:  # NegCLIP (Chapter 6.6): one process, so this process's rows are the whole batch
                loss = _hard_negative_loss(model, batch_images, batch_tokens, negatives[index].to(loop.device))
        loss_value = _check_finite(all_reduce_mean(loss).item(), step, lr, config)  # the global batch's loss
        optimizer.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()  # 4. backward
        average_gradients(model)  # identical gradients, hence identical steps, on every process
        _clip_and_step(loop)  # 5. clip the gradient norm, 6. the AdamW step
        with torch.no_grad():  # 7. clip the logit scale (SigLIP too, as open_clip does; see the docstring)
            model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
        loop.step = step + 1
        if _due(loop.step, config.log_every, config.steps):  # log
            temperature = float(1 / model.logit_scale.detach().exp())
            history.steps.append(loop.step)
            history.loss.append(loss_value)
            history.temperature.append(temperature)
            history.lr.append(lr)
            bar.set_postfix(loss=f"{loss_value:.3f}", T=f"{temperature:.3f}", refresh=False)
        if eval_fn is not None and _due(loop.step, eval_every, config.steps):
            _evaluate(loop, eval_fn)
        if _due(loop.step, checkpoint_every, config.steps):
            _save(loop, checkpoint_dir, rank)
    history.seconds = time.perf_counter() - loop.clock
    bar.close()
    if config.lock_image:  # the tower was frozen for this run only
        model.visual.requires_grad_(True)
    model.eval()
    return history
