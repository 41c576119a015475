"""CLIP's symmetric contrastive loss (InfoNCE over the image-text similarity matrix).

Explained in Chapter 1.3 (the idea) and Chapter 2.3 (the maths); SigLIP's sigmoid loss in Chapter 7.1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clip_tutorial.core.checks import check_sequence, check_tensor

__all__ = ["clip_loss", "contrastive_accuracy", "clip_loss_gradient", "caption_positives", "multi_positive_clip_loss",
           "hard_negative_clip_loss", "siglip_loss", "siglip_loss_gradient"]


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


def _siglip_signs(n: int, like: torch.Tensor) -> torch.Tensor:
    """The (n, n) label matrix of SigLIP: +1 on the diagonal (matching pairs), -1 elsewhere."""
    return 2 * torch.eye(n, dtype=like.dtype, device=like.device) - 1


def siglip_loss(logits: torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al., 2023): every image-text pair is its own binary problem.

    Explained in Chapter 7.1. ``logits[i, j] = t * cos(image_i, text_j) + b`` with the learned scale
    ``t`` and bias ``b``. Pair ``(i, j)`` has the label ``+1`` when ``i == j`` and ``-1`` otherwise,
    and the loss is the paper's

    ``L = -sum over i, j of log sigmoid(label_ij * logits_ij) / N``,

    a sum over all ``N^2`` pairs divided by the batch size (not by ``N^2``), as in the paper and
    open_clip's ``SigLipLoss``. No softmax couples the entries: each pair's term needs only its own
    logit, which is what lets the distributed form work block by block
    (:mod:`clip_tutorial.objectives.distributed_siglip`).

    Args:
        logits: (batch, batch) ``t * cos + b``, matching pairs on the diagonal.

    Returns:
        A scalar tensor.
    """
    n = _check_logits(logits)
    return -F.logsigmoid(_siglip_signs(n, logits) * logits).sum() / n


def siglip_loss_gradient(logits: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`siglip_loss` with respect to ``logits``, in closed form.

    Explained in Chapter 7.1. Since ``d/dz [-log sigmoid(y z)] = -y sigmoid(-y z)`` and the sum is
    divided by ``N``:

    ``dL/dlogits_ij = -label_ij * sigmoid(-label_ij * logits_ij) / N``,

    that is ``(sigmoid(z_ii) - 1) / N`` on the diagonal (pull the pair up) and ``sigmoid(z_ij) / N``
    off it (push it down, harder the more it is believed to match). Each entry depends on its own
    logit only, unlike :func:`clip_loss_gradient`, where a softmax mixes a whole row and column.

    Args:
        logits: (batch, batch) ``t * cos + b``, matching pairs on the diagonal.

    Returns:
        A (batch, batch) tensor, equal to what autograd computes for ``siglip_loss(logits)``.
    """
    n = _check_logits(logits)
    signs = _siglip_signs(n, logits)
    return -signs * torch.sigmoid(-signs * logits) / n
