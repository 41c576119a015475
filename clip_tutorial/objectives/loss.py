"""CLIP's symmetric contrastive loss (InfoNCE over the image-text similarity matrix).

Explained in Chapter 1.3 (the idea) and Chapter 2.3 (the maths).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["clip_loss", "contrastive_accuracy", "clip_loss_gradient", "caption_positives", "multi_positive_clip_loss"]


def _check_logits(logits_per_image: torch.Tensor) -> None:
    if not isinstance(logits_per_image, torch.Tensor):
        raise TypeError(f"logits_per_image: expected a torch.Tensor, got {type(logits_per_image).__name__}")
    if logits_per_image.ndim != 2 or logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise ValueError(
            "logits_per_image: expected a square (batch, batch) matrix whose diagonal holds the matching pairs, "
            f"got shape {tuple(logits_per_image.shape)}"
        )
    if logits_per_image.shape[0] == 0:
        raise ValueError("logits_per_image: expected a batch of at least one pair, got an empty matrix")
    if not logits_per_image.is_floating_point():
        raise TypeError(f"logits_per_image: expected a floating-point tensor, got dtype {logits_per_image.dtype}")


def clip_loss(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor | None = None) -> torch.Tensor:
    """The symmetric InfoNCE loss of the CLIP paper's pseudocode.

    Row ``i`` of ``logits_per_image`` scores image ``i`` against every text in the batch, and the
    matching text is text ``i``. The loss is the mean of two cross-entropies: images classifying
    their text (over rows) and texts classifying their image (over columns).

    Args:
        logits_per_image: (batch, batch) scaled similarities, matching pairs on the diagonal.
        logits_per_text: its transpose; computed when omitted.

    Returns:
        A scalar tensor: ``(CE(logits_per_image, arange) + CE(logits_per_text, arange)) / 2``.
    """
    _check_logits(logits_per_image)
    if logits_per_text is None:
        logits_per_text = logits_per_image.t()
    elif not isinstance(logits_per_text, torch.Tensor) or not logits_per_text.is_floating_point():
        raise TypeError(
            "logits_per_text: expected a floating-point torch.Tensor, got "
            + (f"dtype {logits_per_text.dtype}" if isinstance(logits_per_text, torch.Tensor) else type(logits_per_text).__name__)
        )
    elif logits_per_text.shape != logits_per_image.shape[::-1]:
        raise ValueError(
            f"logits_per_text: expected shape {tuple(logits_per_image.shape[::-1])} (the transpose), "
            f"got {tuple(logits_per_text.shape)}"
        )
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


@torch.no_grad()
def contrastive_accuracy(logits_per_image: torch.Tensor) -> float:
    """Fraction of rows and columns whose largest logit is on the diagonal (both directions averaged)."""
    _check_logits(logits_per_image)
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    i2t = (logits_per_image.argmax(dim=1) == labels).float().mean()
    t2i = (logits_per_image.argmax(dim=0) == labels).float().mean()
    return float((i2t + t2i) / 2)


def clip_loss_gradient(logits_per_image: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`clip_loss` with respect to ``logits_per_image``, in closed form.

    Explained in Chapter 2.3. Each direction is a mean of ``N`` cross-entropies, whose gradient
    with respect to its logits is ``(softmax - one_hot) / N``. The rows give
    ``softmax(logits, dim=1) - I``, the columns ``softmax(logits, dim=0) - I``, and the loss
    averages the two directions:

    ``dL/dlogits = (softmax(logits, dim=1) + softmax(logits, dim=0) - 2 I) / (2 N)``.

    Args:
        logits_per_image: (batch, batch) scaled similarities, matching pairs on the diagonal.

    Returns:
        A (batch, batch) tensor, equal to what autograd computes for ``clip_loss(logits_per_image)``.
    """
    _check_logits(logits_per_image)
    n = logits_per_image.shape[0]
    eye = torch.eye(n, dtype=logits_per_image.dtype, device=logits_per_image.device)
    return (logits_per_image.softmax(dim=1) + logits_per_image.softmax(dim=0) - 2 * eye) / (2 * n)


def caption_positives(captions: list[str]) -> torch.Tensor:
    """The (batch, batch) boolean matrix that is ``True`` where two captions are the same text.

    Explained in Chapter 2.3: identical captions in one batch are *false negatives* for the
    standard loss. The diagonal is always ``True``.

    Args:
        captions: the batch's captions, one str per pair.

    Returns:
        A bool tensor ``positives`` with ``positives[i, j] == (captions[i] == captions[j])``.
    """
    if isinstance(captions, str) or not isinstance(captions, (list, tuple)) or not captions:
        raise TypeError(f"captions: expected a non-empty list of str, got {captions!r:.60}")
    if not all(isinstance(c, str) for c in captions):
        raise TypeError("captions: expected every caption to be a str, got "
                        f"{sorted({type(c).__name__ for c in captions})}")
    ids = {}
    index = torch.tensor([ids.setdefault(c, len(ids)) for c in captions])
    return index[:, None] == index[None, :]


def multi_positive_clip_loss(logits_per_image: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """The symmetric contrastive loss with several right answers per row and column.

    Explained in Chapter 2.3 as a remedy for false negatives. Row ``i`` counts as right when its
    softmax puts its mass on *any* text ``j`` with ``positives[i, j]``: its loss is
    ``-log(sum of p[i, j] over the positives)``, and column ``j`` likewise over the images ``i``
    with ``positives[i, j]``. The two directions are averaged. A positive is never pushed down, the
    loss reaches 0 when all the mass is on the positives, and with ``positives = I`` it equals
    :func:`clip_loss`. (This is the "multiple-instance" form of InfoNCE, MIL-NCE.)

    Args:
        logits_per_image: (batch, batch) scaled similarities.
        positives: (batch, batch) bool matrix, ``True`` where image ``i`` and text ``j`` match;
            its diagonal must be ``True`` (for example :func:`caption_positives`).

    Returns:
        A scalar tensor.
    """
    _check_logits(logits_per_image)
    if not isinstance(positives, torch.Tensor) or positives.dtype != torch.bool:
        got = f"dtype {positives.dtype}" if isinstance(positives, torch.Tensor) else type(positives).__name__
        raise TypeError(f"positives: expected a bool tensor, got {got}")
    if positives.shape != logits_per_image.shape:
        raise ValueError(f"positives: expected shape {tuple(logits_per_image.shape)} like the logits, "
                         f"got {tuple(positives.shape)}")
    if not bool(positives.diagonal().all()):
        raise ValueError("positives: expected True on the diagonal (each image matches its own caption)")
    positives = positives.to(logits_per_image.device)
    kept = logits_per_image.masked_fill(~positives, -math.inf)  # only the positives' logits
    rows = (logits_per_image.logsumexp(dim=1) - kept.logsumexp(dim=1)).mean()
    cols = (logits_per_image.logsumexp(dim=0) - kept.logsumexp(dim=0)).mean()
    return (rows + cols) / 2
