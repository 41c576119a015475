"""The package's optimisation skeleton for models other than CLIP: a CNN, a denoiser, a prior.

Explained in Chapters 1.2 and 7.5. CLIP itself trains with :func:`~clip_tutorial.train.loop.train_clip`,
which adds what CLIP needs (the logit scale, several processes, checkpoints); every other model of the
book trains with :func:`fit_minibatches` on a loss of its own.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from clip_tutorial.core.checks import check_int, check_number, check_positive_int
from clip_tutorial.core.progress import progress_bar

from .config import TrainConfig, lr_at, param_groups

__all__ = ["fit_minibatches"]


def fit_minibatches(model: torch.nn.Module, n: int, batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                    *, steps: int, batch_size: int, lr: float, weight_decay: float = 0.0, seed: int = 0,
                    warmup_steps: int | None = None, progress: bool = True, desc: str = "training") -> list[float]:
    """The package's optimisation skeleton for any model and loss; returns the loss of every step.

    Explained in Chapters 1.2 and 7.5. AdamW with decay only on weight matrices
    (:func:`~clip_tutorial.train.config.param_groups`), linear warm-up over ``warmup_steps`` (by default
    a twentieth of the steps, at least one) then cosine decay (:func:`~clip_tutorial.train.config.lr_at`),
    and batches of indices into
    ``range(n)`` drawn without replacement in an order seeded by ``seed``. ``batch_loss(index,
    generator)`` returns the loss of one batch; ``generator`` (seeded by ``seed`` too) is for any
    randomness the loss needs. The model is left in eval mode.

    Raises:
        FloatingPointError: if the loss stops being finite.
    """
    n, steps = check_positive_int("n", n), check_positive_int("steps", steps)
    batch_size = check_int("batch_size", batch_size, 1, n, expected=f"an int in [1, {n}] (at most the samples)")
    lr = check_number("lr", lr, 0.0, low_open=True)
    warmup_steps = max(1, steps // 20) if warmup_steps is None else warmup_steps
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                         weight_decay=weight_decay, seed=seed)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses, order, cursor = [], torch.empty(0, dtype=torch.long), 0
    model.train()
    bar = progress_bar(range(steps), enabled=progress, desc=desc, mininterval=0.5)
    for step in bar:
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(n, generator=generator), 0
        index, cursor = order[cursor: cursor + batch_size], cursor + batch_size
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        loss = batch_loss(index, generator)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss became {losses[-1]} at step {step + 1}; try a lower lr (lr={lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    bar.close()
    model.eval()
    return losses
