"""Recall@K against a plain-Python reference that sorts every query's scores."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.evaluation.retrieval import recall_at_k, retrieval_metrics, retrieval_ranks


def _reference_recall(similarity: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    hits = 0
    for scores, correct in zip(similarity.tolist(), positives.tolist()):
        order = sorted(range(len(scores)), key=lambda j: -scores[j])  # distinct scores: no ties
        hits += any(correct[j] for j in order[:k])
    return hits / len(similarity)


def _random_case(queries: int, gallery: int, seed: int, density: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct random scores and a random relevance matrix with at least one correct item per query."""
    g = torch.Generator().manual_seed(seed)
    similarity = torch.randn(queries, gallery, generator=g, dtype=torch.float64).float()
    positives = torch.rand(queries, gallery, generator=g) < density
    positives[torch.arange(queries), torch.randint(0, gallery, (queries,), generator=g)] = True
    return similarity, positives


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 10_000))
def test_recall_matches_sorting_reference(queries, gallery, seed):
    similarity, positives = _random_case(queries, gallery, seed, 0.3)
    ks = (1, 2, 5, gallery)
    got = recall_at_k(similarity, ks, positives)
    for k in ks:
        assert got[k] == pytest.approx(_reference_recall(similarity, positives, k))


def test_ranks_of_known_orderings():
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
    # query 0's match (item 0) is first; query 1's match (item 1) is last; query 2's match is last
    assert retrieval_ranks(similarity).tolist() == [0, 2, 2]
    assert recall_at_k(similarity, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3), 3: 1.0}


def test_ties_count_in_the_query_favour_and_any_positive_counts():
    similarity = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.7, 0.7]])
    positives = torch.tensor([[True, False, False], [False, False, True]])
    assert retrieval_ranks(similarity, positives).tolist() == [0, 0]
    twins = torch.tensor([[False, True, True], [True, False, False]])
    assert retrieval_ranks(similarity, twins).tolist() == [0, 2]


def test_metrics_both_directions_for_perfect_and_shuffled_pairs():
    torch.manual_seed(0)
    features = torch.randn(32, 16)
    perfect = retrieval_metrics(features, features * 3.0)  # scale does not matter: features are normalised
    assert all(value == 1.0 for value in perfect.values()) and len(perfect) == 6
    shuffled = retrieval_metrics(features, features[torch.roll(torch.arange(32), 1)], ks=(1,))
    assert shuffled == {"image_to_text_R@1": 0.0, "text_to_image_R@1": 0.0}


def test_text_to_image_uses_the_transpose():
    torch.manual_seed(1)
    images, texts = F.normalize(torch.randn(10, 8), dim=-1), F.normalize(torch.randn(10, 8), dim=-1)
    metrics = retrieval_metrics(images, texts, ks=(3,))
    similarity = images @ texts.T
    eye = torch.eye(10, dtype=torch.bool)
    assert metrics["image_to_text_R@3"] == pytest.approx(_reference_recall(similarity, eye, 3))
    assert metrics["text_to_image_R@3"] == pytest.approx(_reference_recall(similarity.T, eye, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: recall_at_k(torch.zeros(3, 4)), ValueError, "positives: needed when the similarity is not square"),
    (lambda: recall_at_k(torch.zeros(3, 3, dtype=torch.long)), TypeError, "similarity: expected a float tensor"),
    (lambda: recall_at_k(torch.zeros(3)), ValueError, r"similarity: expected .*\(queries, gallery\), got a tensor of shape \(3,\)"),
    (lambda: recall_at_k(torch.zeros(2, 2), ks=(0,)), ValueError, "ks: expected"),
    (lambda: recall_at_k(torch.zeros(2, 2), ks=5), TypeError, "ks: expected"),
    (lambda: recall_at_k(torch.zeros(2, 2), positives=torch.ones(2, 2)), TypeError, "positives: expected a bool"),
    (lambda: recall_at_k(torch.zeros(2, 2), positives=torch.tensor([[True, False], [False, False]])), ValueError,
     r"queries \[1\] have none"),
    (lambda: retrieval_metrics(torch.zeros(2, 3), torch.zeros(3, 3)), ValueError, "text_features: expected the shape"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.integers(1, 15), st.integers(0, 10_000))
def test_ranked_recall_precision_matches_a_sorting_reference(queries, gallery, seed):
    from clip_tutorial.evaluation.retrieval import ranked_recall_precision

    similarity, relevant = _random_case(queries, gallery, seed, 0.4)
    ks = tuple(sorted({1, min(3, gallery), gallery}))
    rows = similarity.topk(gallery, dim=1).indices
    got = ranked_recall_precision(rows, relevant, ks)
    expected_recall = recall_at_k(similarity, ks, relevant)  # the full-matrix definition, no ties here
    for k in ks:
        assert got[f"R@{k}"] == pytest.approx(expected_recall[k])
        by_hand = sum(sum(relevant[q, j] for j in sorted(range(gallery), key=lambda j: -similarity[q, j])[:k])
                      for q in range(queries)) / (k * queries)
        assert got[f"P@{k}"] == pytest.approx(float(by_hand))


def test_ranked_recall_precision_rejects_bad_input():
    from clip_tutorial.evaluation.retrieval import ranked_recall_precision

    relevant = torch.tensor([[True, False, False], [False, True, True]])
    rows = torch.tensor([[1, 0], [2, 1]])
    assert ranked_recall_precision(rows, relevant, (1, 2)) == {"R@1": 0.5, "P@1": 0.5, "R@2": 1.0, "P@2": 0.75}
    with pytest.raises(ValueError, match="max\\(ks\\) = 5"):
        ranked_recall_precision(rows, relevant, (5,))
    with pytest.raises(TypeError, match="rows"):
        ranked_recall_precision(rows.float(), relevant, (1,))
    with pytest.raises(TypeError, match="relevant: expected a bool"):
        ranked_recall_precision(rows, relevant.int(), (1,))
    with pytest.raises(ValueError, match="at least one correct item"):
        ranked_recall_precision(rows, torch.tensor([[True, False, False], [False, False, False]]), (1,))
    with pytest.raises(ValueError, match="gallery rows in"):
        ranked_recall_precision(torch.tensor([[3, 0], [0, 1]]), relevant, (1,))
    with pytest.raises(ValueError, match="one row per query"):
        ranked_recall_precision(rows[:1], relevant, (1,))
    with pytest.raises(ValueError, match="ks"):
        ranked_recall_precision(rows, relevant, ())
