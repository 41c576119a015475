"""CLIP's symmetric contrastive loss (InfoNCE over the image-text similarity matrix).

Explained in Chapter 1.3 (the idea) and Chapter 2.3 (the maths).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clip_tutorial.core.checks import check_sequence, check_tensor

__all__ = ["clip_loss", "contrastive_accuracy", "clip_loss_gradient", "caption_positives", "multi_positive_clip_loss",
           "hard_negative_clip_loss"]


def _check_logits(logits_per_image: torch.Tensor) -> int:
    """The batch size of ``logits_per_image`` once it is checked to be a non-empty square float matrix."""
    return check_tensor("logits_per_image", logits_per_image, shape=("batch", "batch"), floating=True, nonempty=True,
                        what="a square floating-point (batch, batch) matrix, matching pairs on the diagonal").shape[0]


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
    n = _check_logits(logits_per_image)
    logits_per_text = logits_per_image.t() if logits_per_text is None else check_tensor(
        "logits_per_text", logits_per_text, shape=(n, n), floating=True,
        what=f"a floating-point ({n}, {n}) matrix, the transpose of logits_per_image")
    labels = torch.arange(n, device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


@torch.no_grad()
def contrastive_accuracy(logits_per_image: torch.Tensor) -> float:
    """Fraction of rows and columns whose largest logit is on the diagonal (both directions averaged)."""
    labels = torch.arange(_check_logits(logits_per_image), device=logits_per_image.device)
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
    n = _check_logits(logits_per_image)
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
    captions = check_sequence("captions", captions, str, nonempty=True)
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
    n = _check_logits(logits_per_image)
    check_tensor("positives", positives, shape=(n, n), dtype=torch.bool,
                 what=f"a bool ({n}, {n}) matrix like the logits")
    if not bool(positives.diagonal().all()):
        raise ValueError("positives: expected True on the diagonal (each image matches its own caption)")
    positives = positives.to(logits_per_image.device)
    kept = logits_per_image.masked_fill(~positives, -math.inf)  # only the positives' logits
    rows = (logits_per_image.logsumexp(dim=1) - kept.logsumexp(dim=1)).mean()
    cols = (logits_per_image.logsumexp(dim=0) - kept.logsumexp(dim=0)).mean()
    return (rows + cols) / 2


def hard_negative_clip_loss(logits_per_image: torch.Tensor, logits_negative: torch.Tensor) -> torch.Tensor:
    """CLIP's loss with extra hard-negative captions that the images must also reject (NegCLIP).

    Explained in Chapter 6.6. Image ``i`` classifies its caption among the batch's ``N`` captions
    *plus* ``M`` hard negatives (its own swapped caption and those of the other images), so the
    image-to-text term is a cross-entropy over ``N + M`` columns. The text-to-image term is the usual
    one over the ``N`` images: a hard negative has no image of its own, so it is never a row there.
    This is the loss of Yuksekgonul et al. (2023). With ``M = 0`` it equals :func:`clip_loss`:

    ``L = (CE([logits_per_image | logits_negative], arange) + CE(logits_per_image.T, arange)) / 2``.

    Args:
        logits_per_image: (batch, batch) scaled similarities, matching pairs on the diagonal.
        logits_negative: (batch, M) scaled similarities of each image with the M hard-negative
            captions; M may be 0 (leave out the negatives that are identical to their caption).

    Returns:
        A scalar tensor.
    """
    n = _check_logits(logits_per_image)
    check_tensor("logits_negative", logits_negative, shape=(n, None), floating=True,
                 what=f"a floating-point ({n}, M) matrix: each image's scores with the M hard negatives")
    labels = torch.arange(n, device=logits_per_image.device)
    image_to_text = F.cross_entropy(torch.cat([logits_per_image, logits_negative.to(logits_per_image.dtype)], dim=1),
                                    labels)
    return (image_to_text + F.cross_entropy(logits_per_image.t(), labels)) / 2
