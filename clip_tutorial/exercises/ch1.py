"""Checks for the exercises of Chapter 1: cosine similarity, the contrastive loss, zero-shot prediction.

Each ``check_<name>(fn)`` runs your ``fn`` on fresh random inputs of several shapes (a batch of
one included), compares it with the package's reference, prints ✅ or ❌ with an explanation, and
returns a :class:`~clip_tutorial.exercises.CheckResult` that is truthy when you passed.

Explained in Chapter 1 (section "Summary and exercises").
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..loss import clip_loss
from ..model import MAX_LOGIT_SCALE
from .core import CheckResult, Hint, run_check

__all__ = ["check_cosine_similarity", "check_contrastive_loss", "check_zero_shot_predict",
           "check_temperature_scaled_logits", "reference_cosine_similarity", "reference_zero_shot_predict",
           "reference_temperature_scaled_logits"]


def reference_cosine_similarity(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(N, M) cosine similarities of N image and M text feature rows: normalise both, then matmul."""
    return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


def reference_zero_shot_predict(image_features: torch.Tensor, class_text_features: torch.Tensor) -> torch.Tensor:
    """(N,) index of the most similar class text for each image (a LongTensor)."""
    return reference_cosine_similarity(image_features, class_text_features).argmax(dim=-1)


def reference_temperature_scaled_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                                        logit_scale: torch.Tensor) -> torch.Tensor:
    """(N, M) ``logits_per_image``: ``min(exp(logit_scale), 100)`` times the cosine similarities."""
    scale = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    return scale * reference_cosine_similarity(image_features, text_features)


def _features(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    """Random rows with very different lengths, so that forgetting to normalise shows."""
    return torch.randn(n, d, generator=g) * torch.empty(n, 1).uniform_(0.1, 5.0, generator=g)


def _pick(table: list[tuple], g: torch.Generator, trial: int, low: int = 1, high: int = 12) -> tuple:
    if trial < len(table):
        return table[trial]
    return tuple(int(torch.randint(low, high, (), generator=g)) for _ in table[0])


def _two_feature_sets(table: list[tuple]) -> Callable[[torch.Generator, int], tuple]:
    """Inputs maker for functions of two feature matrices: (rows_a, rows_b, dim) drawn from ``table``."""

    def make(g: torch.Generator, trial: int) -> tuple:
        rows_a, rows_b, dim = _pick(table, g, trial)
        return _features(g, rows_a, max(dim, 2)), _features(g, rows_b, max(dim, 2))

    return make


_NORMALISE = ("divide each feature vector by its length first: x / x.norm(dim=-1, keepdim=True) "
              "or F.normalize(x, dim=-1)")
_COSINE_HINTS = [
    Hint(f"You did not normalise the features, so you got dot products, not cosines: {_NORMALISE}.",
         mistake=lambda a, b: a @ b.T),
    Hint("Only one of the two inputs was normalised; normalise both image_features and text_features.",
         mistake=lambda a, b: F.normalize(a, dim=-1) @ b.T),
    Hint("Only one of the two inputs was normalised; normalise both image_features and text_features.",
         mistake=lambda a, b: a @ F.normalize(b, dim=-1).T),
    Hint("You normalised along the wrong dimension: each feature vector is a row, so normalise over dim=-1, "
         "not dim=0.", mistake=lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T),
    Hint("You divided by the squared length (sum of squares); divide by the length, its square root.",
         mistake=lambda a, b: (a / (a * a).sum(-1, keepdim=True)) @ (b / (b * b).sum(-1, keepdim=True)).T),
    Hint("Rows should be images and columns texts: compute image_features @ text_features.T, "
         "not the other way round.", mistake=lambda a, b: reference_cosine_similarity(b, a)),
    Hint("An (N, D) matrix times an (M, D) matrix does not fit: transpose the text features (text_features.T).",
         error_contains="cannot be multiplied"),
]


def check_cosine_similarity(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, trials: int = 6,
                            seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(image_features, text_features)``: the (N, M) matrix of cosine similarities.

    Explained in Chapter 1.

    Args:
        fn: your function; ``image_features`` is (N, D), ``text_features`` is (M, D).
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [(4, 6, 8), (5, 3, 16), (1, 1, 8), (1, 4, 8), (7, 1, 3), (6, 6, 32)]
    return run_check(fn, reference_cosine_similarity, _two_feature_sets(table), _COSINE_HINTS, "cosine_similarity", trials, seed, verbose)


def _ce(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits, torch.arange(logits.shape[0]), reduction=reduction)


_ONE_WAY = ("You computed only one direction. CLIP's loss is symmetric: the cross-entropy of the rows "
            "(each image picks its text) and of the columns (each text picks its image: logits_per_image.T), averaged.")
_LOSS_HINTS = [
    Hint(_ONE_WAY, mistake=lambda x: _ce(x)),
    Hint(_ONE_WAY, mistake=lambda x: _ce(x.T)),
    Hint("You forgot to divide by 2: the loss is the mean of the two directions, (loss_images + loss_texts) / 2.",
         mistake=lambda x: _ce(x) + _ce(x.T)),
    Hint("Check your parentheses: (loss_images + loss_texts) / 2, not loss_images + loss_texts / 2.",
         mistake=lambda x: _ce(x) + _ce(x.T) / 2),
    Hint("You summed the losses of the examples; average them over the batch (cross_entropy's default "
         "reduction='mean').", mistake=lambda x: (_ce(x, "sum") + _ce(x.T, "sum")) / 2),
    Hint("You summed the losses of the examples; average them over the batch (cross_entropy's default "
         "reduction='mean').", mistake=lambda x: _ce(x, "sum") + _ce(x.T, "sum")),
    Hint("F.cross_entropy applies log-softmax itself: pass the raw logits, not probabilities from softmax.",
         mistake=lambda x: (_ce(x.softmax(-1)) + _ce(x.T.softmax(-1))) / 2),
    Hint("The targets are the diagonal: row i matches column i, so the labels are torch.arange(batch_size).",
         error_contains="out of bounds"),
]


def check_contrastive_loss(fn: Callable[[torch.Tensor], torch.Tensor], *, trials: int = 6, seed: int | None = None,
                           verbose: bool = True) -> CheckResult:
    """Check ``fn(logits_per_image)``: CLIP's symmetric InfoNCE loss, a scalar tensor.

    The reference is :func:`clip_tutorial.loss.clip_loss`. The result must also stay differentiable.
    Explained in Chapter 1.

    Args:
        fn: your function; ``logits_per_image`` is (N, N) with the matching pairs on the diagonal.
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [(6,), (5,), (2,), (1,), (12,), (3,)]

    def make(g: torch.Generator, trial: int) -> tuple:
        (n,) = _pick(table, g, trial, 2, 16)
        return (3.0 * torch.randn(n, n, generator=g) + 4.0 * torch.eye(n),)

    def reference(logits_per_image: torch.Tensor) -> torch.Tensor:
        return clip_loss(logits_per_image)

    return run_check(fn, reference, make, _LOSS_HINTS, "contrastive_loss", trials, seed, verbose, require_grad=True)


_ZERO_SHOT_HINTS = [
    Hint("You took the argmax over the wrong dimension: each image (row) picks its best class (column), "
         "so use argmax(dim=-1).", mistake=lambda a, c: reference_cosine_similarity(a, c).argmax(dim=0)),
    Hint("You picked the least similar class: use argmax, not argmin.",
         mistake=lambda a, c: reference_cosine_similarity(a, c).argmin(dim=-1)),
    Hint(f"Normalise the class text features too: without it, classes with longer feature vectors win too often; "
         f"{_NORMALISE}.", mistake=lambda a, c: (a @ c.T).argmax(dim=-1)),
    Hint("You returned the similarity scores; return one class index per image: the argmax over the classes.",
         detect=lambda got, expected, inputs: got.ndim == 2),
    Hint("argmax already returns integer indices (torch.long); do not convert them to float.",
         detect=lambda got, expected, inputs: got.is_floating_point() and bool((got == expected).all())),
]


def check_zero_shot_predict(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, trials: int = 6,
                            seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(image_features, class_text_features)``: the (N,) predicted class index of each image.

    Explained in Chapter 1.

    Args:
        fn: your function; ``image_features`` is (N, D), ``class_text_features`` is (C, D), one row per class.
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    table = [(20, 5, 8), (1, 5, 8), (7, 7, 8), (10, 1, 4), (3, 10, 16), (1, 1, 4)]
    return run_check(fn, reference_zero_shot_predict, _two_feature_sets(table), _ZERO_SHOT_HINTS, "zero_shot_predict", trials, seed, verbose)


_TEMPERATURE_HINTS = [
    Hint("logit_scale is stored as a logarithm: the scale is logit_scale.exp().",
         mistake=lambda a, b, s: s * reference_cosine_similarity(a, b)),
    Hint(f"Clamp the scale at {MAX_LOGIT_SCALE:g} (MAX_LOGIT_SCALE) after taking exp: "
         "logit_scale.exp().clamp(max=100). Clamping the logarithm at 100 has no effect.",
         mistake=lambda a, b, s: s.exp() * reference_cosine_similarity(a, b)),
    Hint("exp(logit_scale) is 1 / temperature: multiply the similarities by it, do not divide.",
         mistake=lambda a, b, s: reference_cosine_similarity(a, b) / s.exp().clamp(max=MAX_LOGIT_SCALE)),
    Hint(f"Normalise the features before the matrix product: {_NORMALISE}.",
         mistake=lambda a, b, s: s.exp().clamp(max=MAX_LOGIT_SCALE) * (a @ b.T)),
    Hint("Rows should be images and columns texts (logits_per_image): image_features @ text_features.T.",
         mistake=lambda a, b, s: reference_temperature_scaled_logits(b, a, s)),
]


def check_temperature_scaled_logits(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                                    trials: int = 6, seed: int | None = None, verbose: bool = True) -> CheckResult:
    """Check ``fn(image_features, text_features, logit_scale)``: CLIP's ``logits_per_image``.

    The logits are ``min(exp(logit_scale), 100)`` times the cosine similarities, as in
    :meth:`clip_tutorial.model.CLIP.forward`; ``logit_scale`` is a 0-dim ``nn.Parameter``.
    Explained in Chapter 1.

    Args:
        fn: your function; ``image_features`` is (N, D), ``text_features`` is (M, D).
        trials: number of random inputs to try.
        seed: seed of the inputs (a fresh one by default).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``fn`` is correct.
    """
    init = math.log(1 / 0.07)
    table = [(4, 6, 8, init), (3, 3, 8, 5.0), (1, 1, 4, init), (5, 2, 16, 0.0), (2, 7, 8, 6.5), (6, 1, 8, 3.2)]

    def make(g: torch.Generator, trial: int) -> tuple:
        if trial < len(table):
            n, m, d, value = table[trial]
        else:
            n, m, d = (int(torch.randint(1, 10, (), generator=g)) for _ in range(3))
            value = float(torch.empty(()).uniform_(0.0, 6.0, generator=g))
        scale = torch.nn.Parameter(torch.tensor(value))
        return _features(g, n, max(d, 2)), _features(g, m, max(d, 2)), scale

    return run_check(fn, reference_temperature_scaled_logits, make, _TEMPERATURE_HINTS, "temperature_scaled_logits",
                trials, seed, verbose)
