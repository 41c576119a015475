"""Training a diffusion decoder on CLIP embeddings, and the pixel conversions it needs.

Explained in Chapter 7.5 (DALL·E 2's decoder in miniature: a UNet that turns a CLIP image embedding
into a 32 x 32 image) and Chapter 7.6 (the same loop with per-token text conditions).

The decoder works in pixel space scaled to ``[-1, 1]`` (:func:`to_model_pixels`), not in CLIP's
normalised pixels: the diffusion's noise is standard normal, and data of unit range keep the
signal-to-noise ratio of the schedule as its authors tuned it (Ho et al., 2020).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from clip_tutorial.core.checks import (check_callable, check_number, check_positive_int, check_sequence, check_tensor,
                                       check_type)
from clip_tutorial.evaluation.zeroshot import encode_images
from clip_tutorial.model import CLIP
from clip_tutorial.train.fit import fit_minibatches

from .diffusion import PARAMETERIZATIONS, NoiseSchedule, diffusion_loss

__all__ = ["to_model_pixels", "to_uint8", "image_conditions", "text_token_conditions", "select_condition",
           "ema_decay_at", "train_denoiser"]


def to_model_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, 3, H, W) -> float32 in [-1, 1], the decoder's data space (Chapter 7.5)."""
    check_tensor("images", images, shape=(None, 3, None, None), dtype=torch.uint8)
    return images.float().div(127.5).sub(1.0)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Float pixels in [-1, 1] (values outside are clamped) -> uint8 (Chapter 7.5)."""
    check_tensor("pixels", pixels, floating=True)
    return pixels.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


def image_conditions(model: CLIP, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """CLIP image embeddings (N, D), L2-normalised, of uint8 images: the decoder's condition (Chapter 7.5)."""
    check_type("model", model, CLIP, "a CLIP (use .model of what load_or_train returns)")
    check_tensor("images", images, shape=(None, 3, None, None), dtype=torch.uint8)
    with torch.no_grad():
        return encode_images(model, images, batch_size=batch_size, normalize=True)


def text_token_conditions(model: CLIP, tokenizer: Callable[[list[str]], torch.Tensor], texts: Sequence[str],
                          batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Every output token of CLIP's text tower, and which are real: a cross-attention condition (Chapter 7.6).

    Stable Diffusion conditions on the text encoder's whole output sequence rather than on one
    pooled vector (Rombach et al., 2022). Here each position is projected into the joint space and
    L2-normalised by :meth:`~clip_tutorial.model.CLIP.encode_text_tokens`; the mask is ``True``
    from the first word to the end-of-text token. Returns ``(tokens (N, L, D), mask (N, L))``.
    """
    check_type("model", model, CLIP, "a CLIP (use .model of what load_or_train returns)")
    check_callable("tokenizer", tokenizer)
    texts = check_sequence("texts", texts, str, nonempty=True, expected="a list of str")
    batch_size = check_positive_int("batch_size", batch_size)
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    tokens, masks = [], []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            out, mask = model.encode_text_tokens(tokenizer(texts[i: i + batch_size]).to(device), normalize=True)
            tokens.append(out.float().cpu())
            masks.append(mask.cpu())
    model.train(was_training)
    return torch.cat(tokens), torch.cat(masks)


def select_condition(cond: Any, index: torch.Tensor) -> Any:
    """Rows ``index`` of a condition: a tensor (N, ...), or a tuple of tensors sharing their first dimension."""
    if cond is None:
        return None
    if isinstance(cond, (tuple, list)):
        return tuple(select_condition(c, index) for c in cond)
    return check_tensor("cond", cond)[index]


def _rows(cond: Any) -> int | None:
    if cond is None:
        return None
    if isinstance(cond, (tuple, list)):
        sizes = {_rows(c) for c in cond}
        if len(sizes) != 1:
            raise ValueError(f"cond: expected tensors with the same first dimension, got sizes {sorted(sizes)}")
        return sizes.pop()
    return check_tensor("cond", cond, nonempty=True).shape[0]


def ema_decay_at(update: int, decay: float) -> float:
    """The weight of the old average at the ``update``-th update (1, 2, ...): ``min(decay, (1 + k) / (10 + k))``.

    Explained in Chapter 7.5. A plain average with ``decay`` close to 1 would remember the random
    initial weights for thousands of steps; the warm-up ``(1 + k) / (10 + k)`` (as in TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``) lets a short run's average forget them.
    """
    update = check_positive_int("update", update)
    return min(check_number("decay", decay, 0.0, 1.0, high_open=True), (1 + update) / (10 + update))


def train_denoiser(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, cond: Any = None, *,
                   steps: int = 500, batch_size: int = 64, lr: float = 2e-3, p_uncond: float = 0.1,
                   parameterization: str = "eps", weight_decay: float = 0.0, ema_decay: float = 0.0,
                   seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Train a denoiser with :func:`~clip_tutorial.generate.diffusion.diffusion_loss`; returns its history.

    Explained in Chapter 7.5. The loop is :func:`fit_minibatches`; each row's condition is dropped
    with probability ``p_uncond`` (for classifier-free guidance). ``x0`` is the
    data (N, ...) on the model's device; ``cond`` is ``None``, a tensor (N, ...) or a tuple of such
    tensors (tokens and mask). The model is left in eval mode.

    With ``ema_decay > 0`` an exponential moving average of the weights is kept, updated after
    every optimiser step with the weight :func:`ema_decay_at` on the old average, and the model
    ends with the averaged weights (the last raw weights are discarded). A small diffusion model's
    weights keep jumping around a good solution, step to step; their average sits nearer its
    centre and samples cleaner pictures (Ho et al., 2020, used a decay of 0.9999).

    Returns:
        ``{"loss": [per-step losses], "seconds": training time}``.

    Raises:
        TypeError, ValueError: for bad data, a condition whose rows differ from ``x0``'s, or bad settings.
    """
    check_type("model", model, torch.nn.Module)
    check_type("schedule", schedule, NoiseSchedule, "a NoiseSchedule (see make_schedule)")
    x0 = check_tensor("x0", x0, floating=True, nonempty=True)
    rows = _rows(cond)
    if rows is not None and rows != x0.shape[0]:
        raise ValueError(f"cond: expected {x0.shape[0]} rows (one per sample of x0), got {rows}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization: expected one of {list(PARAMETERIZATIONS)}, got {parameterization!r}")
    ema_decay = check_number("ema_decay", ema_decay, 0.0, 1.0, high_open=True)
    average = [t.detach().clone() for t in model.state_dict().values()] if ema_decay > 0 else None
    updates, calls = [0], [0]

    def update_average() -> None:  # after an optimiser step: fold the current weights into the average
        updates[0] += 1
        decay = ema_decay_at(updates[0], ema_decay)
        with torch.no_grad():
            for avg, now in zip(average, model.state_dict().values()):
                if avg.is_floating_point():
                    avg.lerp_(now, 1 - decay)
                else:
                    avg.copy_(now)

    def loss_of(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if average is not None and calls[0]:  # fit_minibatches stepped the optimiser since the last call
            update_average()
        calls[0] += 1
        return diffusion_loss(model, schedule, x0[index], select_condition(cond, index), p_uncond=p_uncond,
                              parameterization=parameterization, generator=generator)

    start = time.perf_counter()
    losses = fit_minibatches(model, x0.shape[0], loss_of, steps=steps, batch_size=batch_size, lr=lr,
                             weight_decay=weight_decay, seed=seed, progress=progress, desc="training the denoiser")
    if average is not None:
        update_average()  # the last step's weights
        model.load_state_dict(dict(zip(model.state_dict().keys(), average)))
    return {"loss": losses, "seconds": time.perf_counter() - start}
