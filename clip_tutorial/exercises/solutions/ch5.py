"""Solutions of the exercises of Chapter 5, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch5.<name>")``. Explained in Chapter 5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def zero_shot_weights(text_features: torch.Tensor) -> torch.Tensor:
    """(T, C, D) raw text embeddings of T templates and C classes -> (D, C) unit-norm class weights.

    Normalise each prompt's embedding, so that no template counts more because its embedding
    happens to be long; average over the templates; normalise the mean again, because the mean
    of unit vectors that disagree is shorter than 1, and a class with a short weight vector would
    score lower on every image.
    """
    prompts = F.normalize(text_features, dim=-1)          # (T, C, D), each prompt of unit length
    classes = F.normalize(prompts.mean(dim=0), dim=-1)    # (C, D), one unit vector per class
    return classes.T                                      # (D, C): one column per class


def recall_with_relevance(similarity: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    """The fraction of queries (rows) with at least one relevant item among their k highest scores.

    Only the relevant item that the query scores highest matters for a hit. Mask the others with
    minus infinity, take each row's maximum, and count how many items score strictly higher: the
    query is a hit when fewer than k do. This reduces the problem to the single-answer recall of
    Chapter 3, and it needs no clamping when k exceeds the number of items.
    """
    best = similarity.masked_fill(~relevant, float("-inf")).amax(dim=1, keepdim=True)
    ranks = (similarity > best).sum(dim=1)                # items ahead of the best relevant one
    return (ranks < k).float().mean().item()


def unnormalised_query() -> str:
    """The diagnosis of a search that multiplies the raw text embedding with a normalised index.

    For one query, every score is ``q · x_i``. Leaving ``q`` unnormalised multiplies all of that
    query's scores by the same positive number, its length ``|q|``: ``q · x_i = |q| (q / |q|) · x_i``.
    Multiplying by a positive number keeps the order, so the top k is the same, in the same order
    (this rules out (a)). The scores do change, by a factor that differs from query to query, which
    rules out (c): a cut-off on the score, or a comparison of the scores of two queries, now gives
    a different answer. So the bug hides until someone thresholds or merges scores.
    """
    return "b"


def threshold_for_precision(scores: torch.Tensor, labels: torch.Tensor, target_precision: float) -> float:
    """The lowest score t such that the detector ``scores >= t`` has precision at least ``target_precision``.

    Try every distinct score, from the highest down, as the threshold, and keep the last (lowest)
    one that is precise enough. Flagging ``scores >= t`` flags a tie as a whole, and checking every
    candidate (instead of stopping at the first miss) copes with a precision that dips below the
    target and recovers. This loop takes time proportional to N² for N scores; the package sorts
    once and reads every precision off cumulative sums.
    """
    best = None
    for t in torch.unique(scores).flip(0).tolist():       # distinct scores, highest first
        flagged = scores >= t
        if (flagged & labels).sum() / flagged.sum() >= target_precision:
            best = t
    return best


def precision_at_low_prevalence() -> float:
    """The precision at 1% prevalence of a detector whose precision is 0.9 at 50% prevalence.

    The threshold fixes the detector's recall r (the share of positives it flags) and its
    false-positive rate f (the share of negatives it flags); neither depends on how common the
    positives are. With a share p of positives, a stream of n items holds p n r true alarms and
    (1 - p) n f false ones, so the precision is p r / (p r + (1 - p) f).

    At p = 1/2 the precision is r / (r + f) = 0.9, so f = r (1 - 0.9) / 0.9 = r / 9. At p = 0.01
    the r cancels: 0.01 / (0.01 + 0.99 / 9), about 0.083. Nine alarms in ten are then false.
    """
    balanced, prevalence = 0.9, 0.01
    false_positives_per_recall = (1 - balanced) / balanced          # f / r, read off p = 1/2
    return prevalence / (prevalence + (1 - prevalence) * false_positives_per_recall)


def compose_query(image_features: torch.Tensor, add: torch.Tensor, remove: torch.Tensor,
                  weight: float) -> torch.Tensor:
    """(N, D) raw embeddings -> (N, D) unit queries "like this image, but ``add``, not ``remove``".

    Normalise the three inputs, so that the weight means the same whatever the lengths of the raw
    embeddings; take one step of size ``weight`` from the image along (add - remove); normalise the
    result, because the search compares unit vectors. With a weight of 0 the query is the image.
    """
    image, towards, away = (F.normalize(x, dim=-1) for x in (image_features, add, remove))
    return F.normalize(image + weight * (towards - away), dim=-1)
