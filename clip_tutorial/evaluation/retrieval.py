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

from clip_tutorial.core.checks import check_positive_int, check_sequence, check_tensor

__all__ = ["retrieval_ranks", "recall_at_k", "retrieval_metrics", "ranked_recall_precision"]


def _check_ks(ks: object) -> list[int]:
    wanted = "a non-empty sequence of positive ints"
    return [check_positive_int("ks", k, expected=wanted)
            for k in check_sequence("ks", ks, nonempty=True, expected=wanted)]


def _check_positives(positives: torch.Tensor | None, shape: tuple[int | None, int | None],
                     name: str = "positives") -> torch.Tensor:
    if positives is None:
        if shape[0] != shape[1]:
            raise ValueError(f"positives: needed when the similarity is not square (the diagonal pairs), got shape {tuple(shape)}")
        return torch.eye(shape[0], dtype=torch.bool)
    dims = "(queries, gallery)" if None in shape else str(tuple(shape))
    check_tensor(name, positives, shape=tuple(shape), dtype=torch.bool,
                 what=f"a bool tensor {dims} marking the correct gallery items")
    if not bool(positives.any(dim=1).all()):
        missing = (~positives.any(dim=1)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name}: every query needs at least one correct item; queries {missing} have none")
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
    check_tensor("similarity", similarity, ndim=2, floating=True, nonempty=True,
                 what="a float tensor (queries, gallery)")
    similarity = similarity.detach().float().cpu()
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
    ks = _check_ks(ks)
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
        check_tensor(name, value, ndim=2, what="a 2-D tensor (N, D)")
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
        TypeError: if ``rows`` is not an integer tensor, ``relevant`` not a bool tensor, or ``ks`` not a
            sequence of ints.
        ValueError: for mismatched shapes, rows outside the gallery, too few ranked results,
            empty or non-positive ``ks``, or a query without any relevant item.
    """
    ks = _check_ks(ks)
    relevant = _check_positives(relevant, (None, None), "relevant").cpu()
    check_tensor("rows", rows, shape=(relevant.shape[0], None), dtype=(torch.int64, torch.int32),
                 what=f"an int64 tensor ({relevant.shape[0]}, K) of gallery rows, one row per query of relevant")
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
