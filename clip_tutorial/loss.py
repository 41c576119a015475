"""CLIP's symmetric contrastive loss (InfoNCE over the image-text similarity matrix).

Explained in Chapter 1.3 (the idea) and Chapter 2.3 (the maths).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["clip_loss", "contrastive_accuracy"]


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
