"""CLIP's symmetric contrastive loss and the contrastive accuracy, against references written out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clip_tutorial.objectives.loss import clip_loss, contrastive_accuracy


def naive_clip_loss(logits: list[list[float]]) -> float:
    """Mean of -log softmax at the diagonal, over rows (image -> text) and over columns (text -> image)."""
    n = len(logits)

    def neg_log_softmax(values: list[float], index: int) -> float:
        top = max(values)
        log_sum = top + math.log(sum(math.exp(v - top) for v in values))
        return log_sum - values[index]

    image_to_text = sum(neg_log_softmax([logits[i][j] for j in range(n)], i) for i in range(n)) / n
    text_to_image = sum(neg_log_softmax([logits[i][j] for i in range(n)], j) for j in range(n)) / n
    return (image_to_text + text_to_image) / 2


def naive_accuracy(logits: list[list[float]]) -> float:
    n = len(logits)
    rows = sum(max(range(n), key=lambda j: logits[i][j]) == i for i in range(n)) / n
    cols = sum(max(range(n), key=lambda i: logits[i][j]) == j for j in range(n)) / n
    return (rows + cols) / 2


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_clip_loss_matches_naive_reference(n, scale):
    g = torch.Generator().manual_seed(n * 1000 + int(scale))
    logits = torch.randn(n, n, generator=g, dtype=torch.float64) * scale / 3
    expected = naive_clip_loss(logits.tolist())
    got = clip_loss(logits)
    assert got.ndim == 0
    assert abs(got.item() - expected) <= 1e-6 * max(1.0, abs(expected))
    # float32 agrees too, at float32 precision
    assert abs(clip_loss(logits.float()).item() - expected) <= 1e-5 * max(1.0, abs(expected))


def test_clip_loss_single_pair_is_zero():
    assert clip_loss(torch.tensor([[3.7]])).item() == pytest.approx(0.0, abs=1e-7)


def test_clip_loss_with_logits_per_text_is_symmetric():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 6, generator=g, dtype=torch.float64) * 5
    a = clip_loss(logits, logits.t())
    b = clip_loss(logits.t(), logits)
    c = clip_loss(logits)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.testing.assert_close(a, c, atol=1e-12, rtol=0)


def test_clip_loss_uses_the_given_logits_per_text():
    # logits_per_text need not be the transpose: the second cross-entropy is taken over it.
    g = torch.Generator().manual_seed(2)
    lpi = torch.randn(4, 4, generator=g, dtype=torch.float64)
    lpt = torch.randn(4, 4, generator=g, dtype=torch.float64)
    n = 4

    def ce(m: list[list[float]]) -> float:
        return sum(-m[i][i] + math.log(sum(math.exp(v) for v in m[i])) for i in range(n)) / n

    expected = (ce(lpi.tolist()) + ce(lpt.tolist())) / 2
    assert clip_loss(lpi, lpt).item() == pytest.approx(expected, abs=1e-9)


def test_perfect_separation_gives_zero_loss():
    logits = torch.full((5, 5), -20.0)
    logits.fill_diagonal_(30.0)
    assert clip_loss(logits).item() < 1e-9
    assert contrastive_accuracy(logits) == 1.0


@pytest.mark.parametrize("n", [1, 2, 5, 32])
def test_uniform_logits_give_log_n(n):
    logits = torch.full((n, n), 3.25, dtype=torch.float64)
    assert clip_loss(logits).item() == pytest.approx(math.log(n), abs=1e-12)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_gradient_matches_analytic_formula(n):
    g = torch.Generator().manual_seed(10 + n)
    logits = (torch.randn(n, n, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    clip_loss(logits).backward()
    with torch.no_grad():
        eye = torch.eye(n, dtype=torch.float64)
        rows = (torch.softmax(logits, dim=1) - eye) / n  # image -> text, over each row
        cols = (torch.softmax(logits, dim=0) - eye) / n  # text -> image, over each column
        expected = (rows + cols) / 2
    torch.testing.assert_close(logits.grad, expected, atol=1e-12, rtol=0)


def test_gradient_flows_through_both_arguments():
    g = torch.Generator().manual_seed(3)
    lpi = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    lpt = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    clip_loss(lpi, lpt).backward()
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(lpi.grad, (torch.softmax(lpi.detach(), 1) - eye) / 6, atol=1e-12, rtol=0)
    torch.testing.assert_close(lpt.grad, (torch.softmax(lpt.detach(), 1) - eye) / 6, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bad", [
    torch.zeros(3, 4), torch.zeros(4, 3), torch.zeros(4), torch.zeros(2, 2, 2), torch.zeros(0, 0),
], ids=["3x4", "4x3", "1d", "3d", "empty"])
def test_clip_loss_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="logits_per_image"):
        clip_loss(bad)
    with pytest.raises(ValueError, match="logits_per_image"):
        contrastive_accuracy(bad)


def test_clip_loss_rejects_integer_logits():
    with pytest.raises(TypeError, match="logits_per_image"):
        clip_loss(torch.eye(3, dtype=torch.long))
    with pytest.raises(TypeError, match="logits_per_image"):
        contrastive_accuracy(torch.eye(3, dtype=torch.long))


def test_clip_loss_rejects_non_tensors():
    with pytest.raises(TypeError, match="logits_per_image"):
        clip_loss([[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("shape", [(2, 2), (3, 4), (4,)])
def test_clip_loss_rejects_mismatched_logits_per_text(shape):
    with pytest.raises(ValueError, match="logits_per_text"):
        clip_loss(torch.zeros(3, 3), torch.zeros(*shape))


@pytest.mark.parametrize("bad", [[[1.0, 0.0], [0.0, 1.0]], torch.eye(2, dtype=torch.long)], ids=["list", "long"])
def test_clip_loss_rejects_non_float_logits_per_text(bad):
    # Checked like logits_per_image: a TypeError naming the argument, not an error from deep in torch.
    with pytest.raises(TypeError, match="logits_per_text"):
        clip_loss(torch.eye(2), bad)


@pytest.mark.parametrize("n", [1, 2, 5, 13, 40])
def test_contrastive_accuracy_matches_loop_reference(n):
    g = torch.Generator().manual_seed(100 + n)
    logits = torch.randn(n, n, generator=g)
    logits += torch.eye(n) * 1.0  # make some, not all, rows and columns right
    got = contrastive_accuracy(logits)
    assert isinstance(got, float)
    assert got == pytest.approx(naive_accuracy(logits.tolist()), abs=1e-6)  # one miss moves it by 1/(2n)


def test_contrastive_accuracy_counts_both_directions():
    # The two directions can disagree on which pairs they get right.
    logits = torch.tensor([[5.0, 4.0, 0.0],
                           [9.0, 8.0, 0.0],
                           [0.0, 0.0, 1.0]])
    # rows: argmax = 0, 0, 2 -> 2/3 right; columns: argmax = 1, 1, 2 -> 2/3 right
    assert contrastive_accuracy(logits) == pytest.approx(2 / 3)
    logits = torch.tensor([[2.0, 1.0],
                           [3.0, 4.0]])
    # rows: 0, 1 -> 1; columns: 1, 1 -> 1/2
    assert contrastive_accuracy(logits) == pytest.approx(0.75)


_square = st.integers(1, 8).flatmap(
    lambda n: arrays(np.float64, (n, n), elements=st.floats(-50, 50, allow_nan=False, allow_infinity=False))
)


@settings(max_examples=60, deadline=None)
@given(matrix=_square, shift=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False))
def test_loss_is_non_negative_and_shift_invariant(matrix, shift):
    logits = torch.from_numpy(matrix)
    loss = clip_loss(logits).item()
    assert loss >= 0.0
    assert clip_loss(logits + shift).item() == pytest.approx(loss, abs=1e-9 * max(1.0, abs(shift)) + 1e-9)
    # And it agrees with the naive reference on every drawn matrix.
    assert loss == pytest.approx(naive_clip_loss(matrix.tolist()), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(matrix=_square, data=st.data())
def test_loss_is_invariant_to_relabelling_the_pairs(matrix, data):
    # Shuffling the pairs (the same permutation of images and texts) keeps every match on the diagonal.
    n = matrix.shape[0]
    perm = data.draw(st.permutations(list(range(n))))
    logits = torch.from_numpy(matrix)
    index = torch.tensor(perm, dtype=torch.long)
    shuffled = logits[index][:, index]
    assert clip_loss(shuffled).item() == pytest.approx(clip_loss(logits).item(), abs=1e-9)
    assert 0.0 <= contrastive_accuracy(logits) <= 1.0


# -- Chapter 2.3: the closed-form gradient and the multi-positive loss ------------------------

from clip_tutorial.objectives.loss import caption_positives, clip_loss_gradient, multi_positive_clip_loss  # noqa: E402


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_clip_loss_gradient_matches_autograd(n, scale):
    g = torch.Generator().manual_seed(100 * n + int(scale))
    logits = (torch.randn(n, n, generator=g, dtype=torch.float64) * scale / 3).requires_grad_(True)
    clip_loss(logits).backward()
    torch.testing.assert_close(clip_loss_gradient(logits.detach()), logits.grad, atol=1e-12, rtol=0)
    # float32 as well, at float32 precision
    torch.testing.assert_close(clip_loss_gradient(logits.detach().float()), logits.grad.float(), atol=1e-6, rtol=1e-5)


def test_clip_loss_gradient_sums_to_zero_and_has_the_right_signs():
    # each softmax sums to one over what it normalises, so the whole gradient sums to zero (shift invariance);
    # matching pairs are pushed up (negative gradient), every mismatch down
    logits = torch.randn(7, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 5
    grad = clip_loss_gradient(logits)
    assert abs(grad.sum().item()) < 1e-12
    assert (grad.diagonal() <= 0).all() and (grad - torch.diag(grad.diagonal()) >= 0).all()


@pytest.mark.parametrize("bad", [torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, 3, dtype=torch.long)])
def test_clip_loss_gradient_rejects_bad_logits(bad):
    with pytest.raises((ValueError, TypeError), match="logits_per_image"):
        clip_loss_gradient(bad)


def test_caption_positives_marks_identical_captions():
    positives = caption_positives(["a red circle", "a blue star", "a red circle", "a red  circle"])
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(positives, expected)
    for bad in ("a red circle", ["a", 3], None):
        with pytest.raises(TypeError, match="captions"):
            caption_positives(bad)
    with pytest.raises(ValueError, match="captions"):
        caption_positives([])


def naive_multi_positive(logits: torch.Tensor, positives: torch.Tensor) -> float:
    """Loop reference: -log of the softmax mass on the positives, averaged over rows, then over columns."""
    n = logits.shape[0]
    rows = cols = 0.0
    for i in range(n):
        row = [math.exp(x) for x in logits[i].tolist()]
        rows -= math.log(sum(row[j] for j in range(n) if positives[i, j]) / sum(row))
        col = [math.exp(x) for x in logits[:, i].tolist()]
        cols -= math.log(sum(col[j] for j in range(n) if positives[j, i]) / sum(col))
    return (rows + cols) / (2 * n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_positive_loss_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(9, 9, generator=g, dtype=torch.float64) * 4
    captions = [["a", "b", "c"][int(k)] for k in torch.randint(0, 3, (9,), generator=g)]
    positives = caption_positives(captions)
    got = multi_positive_clip_loss(logits, positives)
    assert got.item() == pytest.approx(naive_multi_positive(logits, positives), abs=1e-10)
    # with only the diagonal it is CLIP's loss
    eye = torch.eye(9, dtype=torch.bool)
    assert multi_positive_clip_loss(logits, eye).item() == pytest.approx(clip_loss(logits).item(), abs=1e-12)


def test_multi_positive_loss_does_not_push_duplicates_apart():
    # two pairs with the same caption and identical logits: the standard loss pulls their cross logit
    # down (positive gradient), the multi-positive loss does not
    logits = torch.tensor([[5.0, 5.0, 0.0], [5.0, 5.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64, requires_grad=True)
    clip_loss(logits).backward()
    assert logits.grad[0, 1] > 0.05
    logits.grad = None
    loss = multi_positive_clip_loss(logits, caption_positives(["x", "x", "y"]))
    loss.backward()
    assert logits.grad[0, 1] <= 0 and logits.grad[1, 0] <= 0
    # and the loss of this (ideal) batch is nearly 0, where the standard loss cannot fall below log 2 per twin row
    assert loss.item() < 0.02 and clip_loss(logits).item() > 2 / 3 * math.log(2)


def test_multi_positive_loss_rejects_bad_positives():
    logits = torch.zeros(3, 3)
    with pytest.raises(TypeError, match="positives"):
        multi_positive_clip_loss(logits, torch.eye(3))
    with pytest.raises(ValueError, match="positives"):
        multi_positive_clip_loss(logits, torch.eye(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="diagonal"):
        multi_positive_clip_loss(logits, torch.zeros(3, 3, dtype=torch.bool))
