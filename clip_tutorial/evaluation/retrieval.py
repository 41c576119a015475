"""Retrieval metrics: recall@K from image to text and from text to image.

Explained in Chapter 3.5 (evaluation during training). Recall@K asks, for every query, whether a
correct answer is among the ``K`` gallery items the model scores highest. CLIP's paper reports it
for image-to-text and text-to-image retrieval on Flickr30k and MSCOCO.

A query's *rank* is the number of gallery items that score strictly higher than its best correct
item, so rank 0 means the model put a correct item first. A tie with a wrong item is counted in
the query's favour. When captions repeat (ShapesWorld has many identical captions), pass a
``positives`` matrix so that every identical caption counts as correct, not only the one the
image was paired with.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["retrieval_ranks", "recall_at_k", "retrieval_metrics", "ranked_recall_precision"]


def _check_similarity(similarity: object) -> torch.Tensor:
    if not isinstance(similarity, torch.Tensor) or not similarity.is_floating_point():
        got = f"dtype {similarity.dtype}" if isinstance(similarity, torch.Tensor) else type(similarity).__name__
        raise TypeError(f"similarity: expected a float tensor (queries, gallery), got {got}")
    if similarity.ndim != 2 or 0 in similarity.shape:
        raise ValueError(f"similarity: expected a non-empty 2-D tensor (queries, gallery), got shape {tuple(similarity.shape)}")
    return similarity


def _check_positives(positives: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    if positives is None:
        if shape[0] != shape[1]:
            raise ValueError(f"positives: needed when the similarity is not square (the diagonal pairs), got shape {tuple(shape)}")
        return torch.eye(shape[0], dtype=torch.bool)
    if not isinstance(positives, torch.Tensor) or positives.dtype != torch.bool:
        got = f"dtype {positives.dtype}" if isinstance(positives, torch.Tensor) else type(positives).__name__
        raise TypeError(f"positives: expected a bool tensor marking the correct gallery items, got {got}")
    if positives.shape != shape:
        raise ValueError(f"positives: expected shape {tuple(shape)} like the similarity, got {tuple(positives.shape)}")
    if not bool(positives.any(dim=1).all()):
        missing = (~positives.any(dim=1)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"positives: every query needs at least one correct item; queries {missing} have none")
    return positives


def retrieval_ranks(similarity: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """For each query (row), how many gallery items score strictly above its best correct item.

    Args:
        similarity: (queries, gallery) scores, higher is better (e.g. cosine similarities).
        positives: (queries, gallery) bool, ``True`` where the gallery item is a correct answer;
            ``None`` means the diagonal of a square matrix (query i matches item i).

    Returns:
        A LongTensor (queries,) of ranks; 0 means a correct item came first.

    Explained in Chapter 3.5.
    """
    similarity = _check_similarity(similarity).detach().float().cpu()
    positives = _check_positives(positives, similarity.shape).cpu()
    best_correct = similarity.masked_fill(~positives, float("-inf")).amax(dim=1, keepdim=True)
    return (similarity > best_correct).sum(dim=1)


def recall_at_k(similarity: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                positives: torch.Tensor | None = None) -> dict[int, float]:
    """The fraction of queries with a correct item among the top ``k``, for each ``k`` in ``ks``.

    Args:
        similarity: (queries, gallery) scores, higher is better.
        ks: the cut-offs, positive ints.
        positives: which gallery items are correct for each query; ``None`` means the diagonal.

    Returns:
        ``{k: recall}`` with recalls in [0, 1].

    Explained in Chapter 3.5.
    """
    if isinstance(ks, int) or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in ks) or not ks:
        raise ValueError(f"ks: expected a non-empty sequence of positive ints, got {ks!r}")
    ranks = retrieval_ranks(similarity, positives)
    return {k: float((ranks < k).float().mean()) for k in ks}


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                      positives: torch.Tensor | None = None) -> dict[str, float]:
    """Recall@K in both directions for paired image and text embeddings (row i of each is a pair).

    The features are L2-normalised here, so raw encoder outputs are fine.

    Args:
        image_features: (N, D) image embeddings.
        text_features: (N, D) text embeddings, the caption of image i in row i.
        ks: the cut-offs.
        positives: (N, N) bool, ``True`` where text j is a correct caption for image i (for
            example identical captions); ``None`` means only the pair itself.

    Returns:
        ``{"image_to_text_R@k": ..., "text_to_image_R@k": ...}`` for every ``k``.

    Explained in Chapter 3.5.
    """
    for name, value in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(value, torch.Tensor) or value.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D tensor (N, D), got "
                             f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
    if image_features.shape != text_features.shape:
        raise ValueError(f"text_features: expected the shape of image_features {tuple(image_features.shape)}, "
                         f"got {tuple(text_features.shape)}")
    similarity = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
    image_to_text = recall_at_k(similarity, ks, positives)
    text_to_image = recall_at_k(similarity.T, ks, None if positives is None else positives.T)
    return {**{f"image_to_text_R@{k}": v for k, v in image_to_text.items()},
            **{f"text_to_image_R@{k}": v for k, v in text_to_image.items()}}


def ranked_recall_precision(rows: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K and precision@K from the ranked results of a search engine.

    Explained in Chapter 5.2. When a query has many relevant items (every "red circle" in a
    large collection), recall@K as defined above (at least one relevant item among the top ``K``)
    is joined by precision@K, the fraction of the top ``K`` that is relevant. Both need only the
    rows a search returned, not the full similarity matrix, e.g. ``EmbeddingIndex.search(...).rows``.

    Args:
        rows: (queries, K_max) int64 gallery rows, best first in every row, with ``K_max >= max(ks)``.
        relevant: (queries, gallery) bool, ``True`` where the gallery item is a correct answer;
            every query needs at least one.
        ks: the cut-offs, positive ints.

    Returns:
        ``{"R@k": ..., "P@k": ...}`` for every ``k``, averaged over queries, each in [0, 1].

    Raises:
        TypeError: if ``rows`` is not an integer tensor or ``relevant`` not a bool tensor.
        ValueError: for mismatched shapes, rows outside the gallery, too few ranked results,
            bad ``ks``, or a query without any relevant item.
    """
    if isinstance(ks, int) or not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in ks):
        raise ValueError(f"ks: expected a non-empty sequence of positive ints, got {ks!r}")
    if not isinstance(rows, torch.Tensor) or rows.dtype not in (torch.int64, torch.int32):
        got = f"dtype {rows.dtype}" if isinstance(rows, torch.Tensor) else type(rows).__name__
        raise TypeError(f"rows: expected an int64 tensor (queries, K) of gallery rows, got {got}")
    if not isinstance(relevant, torch.Tensor) or relevant.ndim != 2:
        got = f"shape {tuple(relevant.shape)}" if isinstance(relevant, torch.Tensor) else type(relevant).__name__
        raise TypeError(f"relevant: expected a bool tensor (queries, gallery), got {got}")
    relevant = _check_positives(relevant, relevant.shape).cpu()
    if rows.ndim != 2 or rows.shape[0] != relevant.shape[0]:
        raise ValueError(f"rows: expected shape ({relevant.shape[0]}, K), one row per query of relevant, "
                         f"got {tuple(rows.shape)}")
    if rows.shape[1] < max(ks):
        raise ValueError(f"rows: expected at least max(ks) = {max(ks)} ranked results per query, got {rows.shape[1]}")
    rows = rows.long().cpu()
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= relevant.shape[1]):
        raise ValueError(f"rows: expected gallery rows in [0, {relevant.shape[1]}), got values in "
                         f"[{int(rows.min())}, {int(rows.max())}]")
    hits = relevant.gather(1, rows)
    result = {}
    for k in ks:
        result[f"R@{k}"] = float(hits[:, :k].any(dim=1).float().mean())
        result[f"P@{k}"] = float(hits[:, :k].float().mean())
    return result
