"""Tests of the threshold helpers against brute-force counting and against scikit-learn's metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.apps.calibration import (CalibratedThreshold, calibrate_threshold, f1_score, precision_recall_at,
                                       precision_recall_curve, roc_auc, roc_curve, threshold_for_precision,
                                       threshold_for_recall)


def make_data(seed: int, n: int = 200, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Scores that are higher on average for positives; rounded to create many ties."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    labels[:2] = [True, False]
    scores = rng.normal(size=n) + 1.2 * labels
    return (np.round(scores, 1) if ties else scores), labels.astype(int)


def brute_counts(scores, labels, threshold):
    """(tp, fp, fn, tn) of ``scores >= threshold``, counted item by item."""
    tp = fp = fn = tn = 0
    for score, label in zip(scores, labels):
        flagged = score >= threshold
        tp += flagged and label == 1
        fp += flagged and label == 0
        fn += (not flagged) and label == 1
        tn += (not flagged) and label == 0
    return tp, fp, fn, tn


def brute_auc(scores, labels):
    """P(positive scores above negative) + half P(tie), over all pairs."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [True, False])
def test_curves_and_auc_match_brute_force(seed, ties):
    scores, labels = make_data(seed, ties=ties)
    precision, recall, thresholds = precision_recall_curve(scores, labels)
    np.testing.assert_array_equal(thresholds, np.sort(np.unique(scores))[::-1])
    fpr, tpr, roc_thresholds = roc_curve(scores, labels)
    assert roc_thresholds[0] == np.inf and (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    np.testing.assert_array_equal(roc_thresholds[1:], thresholds)
    for i, t in enumerate(thresholds):
        tp, fp, fn, tn = brute_counts(scores, labels, t)
        assert precision[i] == pytest.approx(tp / (tp + fp), abs=1e-12)
        assert recall[i] == pytest.approx(tp / (tp + fn), abs=1e-12)
        assert tpr[i + 1] == pytest.approx(tp / (tp + fn), abs=1e-12)
        assert fpr[i + 1] == pytest.approx(fp / (fp + tn), abs=1e-12)
        assert precision_recall_at(scores, labels, t) == pytest.approx((tp / (tp + fp), tp / (tp + fn)), abs=1e-12)
    assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_curves_and_auc_match_scikit_learn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    scores, labels = make_data(seed)
    fpr, tpr, thresholds = roc_curve(scores, labels)
    ref_fpr, ref_tpr, ref_thresholds = metrics.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    np.testing.assert_array_equal(thresholds[1:], ref_thresholds[1:])
    assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)

    precision, recall, pr_thresholds = precision_recall_curve(scores, labels)
    ref_precision, ref_recall, ref_pr_thresholds = metrics.precision_recall_curve(labels, scores)
    # scikit-learn lists thresholds increasingly and appends the point (precision 1, recall 0).
    assert (ref_precision[-1], ref_recall[-1]) == (1.0, 0.0)
    index = {t: i for i, t in enumerate(pr_thresholds)}
    assert set(ref_pr_thresholds) <= set(index)
    for t, p, r in zip(ref_pr_thresholds, ref_precision[:-1], ref_recall[:-1]):
        assert (precision[index[t]], recall[index[t]]) == pytest.approx((p, r), abs=1e-12)


def test_accepts_tensors_lists_and_booleans():
    scores, labels = make_data(4, n=50)
    expected = precision_recall_curve(scores, labels)
    for s, y in [(torch.tensor(scores), torch.tensor(labels)),
                 (scores.tolist(), labels.astype(bool).tolist()), (scores, labels.astype(bool))]:
        for got, want in zip(precision_recall_curve(s, y), expected):
            np.testing.assert_array_equal(got, want)


def test_thresholds_for_targets_are_the_extreme_ones_reaching_them():
    scores, labels = make_data(5, n=300)
    precision, recall, thresholds = precision_recall_curve(scores, labels)
    for target in [0.5, 0.7, 0.8, 0.9]:
        t = threshold_for_precision(scores, labels, target)
        p, _ = precision_recall_at(scores, labels, t)
        assert p >= target
        assert all(precision[i] < target for i in np.flatnonzero(thresholds < t))
        t = threshold_for_recall(scores, labels, target)
        _, r = precision_recall_at(scores, labels, t)
        assert r >= target
        assert all(recall[i] < target for i in np.flatnonzero(thresholds > t))
    assert threshold_for_recall(scores, labels, 1.0) == pytest.approx(scores[labels == 1].min())


def test_calibrate_threshold():
    scores, labels = make_data(6, n=300)
    by_precision = calibrate_threshold(scores, labels, target=0.8)
    assert isinstance(by_precision, CalibratedThreshold)
    assert by_precision.threshold == threshold_for_precision(scores, labels, 0.8)
    assert (by_precision.precision, by_precision.recall) == precision_recall_at(scores, labels, by_precision.threshold)
    assert by_precision.precision >= 0.8 and by_precision.criterion == "precision" and by_precision.target == 0.8
    by_recall = calibrate_threshold(scores, labels, target=0.9, criterion="recall")
    assert by_recall.threshold == threshold_for_recall(scores, labels, 0.9) and by_recall.recall >= 0.9
    best = calibrate_threshold(scores, labels, criterion="f1")
    brute_f1 = []
    for t in np.unique(scores):
        tp, fp, fn, _ = brute_counts(scores, labels, t)
        brute_f1.append(2 * tp / (2 * tp + fp + fn))
    assert best.f1 == pytest.approx(max(brute_f1), abs=1e-12) and best.target is None


def test_perfect_and_tied_scores():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.5] * 4, [0, 1, 0, 1]) == 0.5
    assert precision_recall_at([0.5] * 4, [0, 1, 0, 1], 0.6) == (1.0, 0.0)  # nothing flagged
    assert threshold_for_precision([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0) == 0.8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.booleans()), min_size=2, max_size=40))
def test_properties(pairs):
    scores = np.array([s / 2 for s, _ in pairs])
    labels = np.array([y for _, y in pairs])
    if not labels.any() or labels.all():
        return
    precision, recall, thresholds = precision_recall_curve(scores, labels)
    assert np.all(np.diff(thresholds) < 0) and np.all(np.diff(recall) >= 0)  # recall rises as the threshold drops
    assert recall[-1] == 1.0 and precision[-1] == pytest.approx(labels.mean())
    fpr, tpr, _ = roc_curve(scores, labels)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels), abs=1e-12)
    assert roc_auc(-scores, labels) == pytest.approx(1 - roc_auc(scores, labels), abs=1e-12)


@pytest.mark.parametrize("scores, labels, error, match", [
    ([], [], ValueError, "scores"),
    ([[0.1, 0.2]], [1, 0], ValueError, "scores"),
    ([0.1, 0.2], [1], ValueError, "labels"),
    ([0.1, 0.2], [1, 2], ValueError, "labels"),
    ([0.1, 0.2], ["a", "b"], ValueError, "labels"),
    ([0.1, float("nan")], [1, 0], ValueError, "scores"),
    ([0.1, float("inf")], [1, 0], ValueError, "scores"),
    (["a", "b"], [1, 0], TypeError, "scores"),
    ([0.1, 0.2], [0, 0], ValueError, "positive"),
])
def test_bad_input(scores, labels, error, match):
    for function in (precision_recall_curve, roc_curve, roc_auc):
        with pytest.raises(error, match=match):
            function(scores, labels)
    with pytest.raises(error, match=match):
        calibrate_threshold(scores, labels, target=0.5)


def test_bad_targets_and_thresholds():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    with pytest.raises(ValueError, match="negative"):
        roc_curve([0.1, 0.2], [1, 1])
    for bad in [0, -0.1, 1.5]:
        with pytest.raises(ValueError, match="target_precision"):
            threshold_for_precision(scores, labels, bad)
        with pytest.raises(ValueError, match="target_recall"):
            threshold_for_recall(scores, labels, bad)
    with pytest.raises(TypeError, match="target_recall"):
        threshold_for_recall(scores, labels, "0.5")
    with pytest.raises(ValueError, match="reaches"):
        threshold_for_precision([0.9, 0.1], [0, 1], 0.9)
    with pytest.raises(ValueError, match="criterion"):
        calibrate_threshold(scores, labels, target=0.5, criterion="accuracy")
    with pytest.raises(ValueError, match="target"):
        calibrate_threshold(scores, labels, criterion="precision")
    with pytest.raises(ValueError, match="target"):
        calibrate_threshold(scores, labels, target=0.5, criterion="f1")
    with pytest.raises(ValueError, match="threshold"):
        precision_recall_at(scores, labels, float("nan"))
    with pytest.raises(TypeError, match="threshold"):
        precision_recall_at(scores, labels, "0.5")


@pytest.mark.parametrize("seed", SEEDS)
def test_false_positive_rate_matches_brute_force_and_the_roc_curve(seed):
    from clip_tutorial.apps.calibration import false_positive_rate_at

    scores, labels = make_data(seed)
    fpr_curve, _, thresholds = roc_curve(scores, labels)
    for threshold in [*thresholds[1:], -np.inf, np.inf, 0.05]:
        tp, fp, fn, tn = brute_counts(scores, labels, threshold)
        assert false_positive_rate_at(scores, labels, threshold) == pytest.approx(fp / (fp + tn))
    for fpr, threshold in zip(fpr_curve[1:], thresholds[1:]):
        assert false_positive_rate_at(scores, labels, float(threshold)) == pytest.approx(fpr)


@pytest.mark.parametrize("seed", SEEDS)
def test_precision_at_prevalence_reproduces_measured_precision_and_resampling(seed):
    from clip_tutorial.apps.calibration import false_positive_rate_at, precision_at_prevalence

    scores, labels = make_data(seed, n=400)
    prevalence = labels.mean()
    for threshold in np.quantile(scores, [0.2, 0.5, 0.9]):
        precision, recall = precision_recall_at(scores, labels, float(threshold))
        fpr = false_positive_rate_at(scores, labels, float(threshold))
        # at the sample's own base rate the formula is exactly the measured precision
        assert precision_at_prevalence(recall, fpr, float(prevalence)) == pytest.approx(precision)
        # replicating every negative 9 times lowers the base rate; the precision follows the formula
        many = np.r_[scores[labels == 1], np.repeat(scores[labels == 0], 9)]
        many_labels = np.r_[np.ones(int(labels.sum())), np.zeros(9 * int((labels == 0).sum()))]
        diluted = precision_recall_at(many, many_labels, float(threshold))[0]
        assert precision_at_prevalence(recall, fpr, float(many_labels.mean())) == pytest.approx(diluted)


def test_precision_at_prevalence_edges_and_errors():
    from clip_tutorial.apps.calibration import false_positive_rate_at, precision_at_prevalence

    assert precision_at_prevalence(0.9, 0.0, 0.01) == 1.0
    assert precision_at_prevalence(0.0, 0.0, 0.5) == 1.0  # nothing flagged: no false alarm
    assert precision_at_prevalence(1.0, 0.01, 0.001) == pytest.approx(0.001 / (0.001 + 0.999 * 0.01))
    with pytest.raises(ValueError, match="prevalence: expected a number in \\(0, 1\\]"):
        precision_at_prevalence(0.5, 0.1, 0.0)
    with pytest.raises(ValueError, match="false_positive_rate"):
        precision_at_prevalence(0.5, 1.5, 0.1)
    with pytest.raises(TypeError, match="recall"):
        precision_at_prevalence("0.5", 0.1, 0.1)
    with pytest.raises(ValueError, match="negative"):
        false_positive_rate_at([0.1, 0.2], [1, 1], 0.1)
    with pytest.raises(TypeError, match="threshold"):
        false_positive_rate_at([0.1, 0.2], [1, 0], None)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_score_matches_scikit_learn_on_numbers_and_curves(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    scores, labels = make_data(seed)
    for threshold in np.unique(scores)[::7]:
        precision, recall = precision_recall_at(scores, labels, float(threshold))
        expected = metrics.f1_score(labels, scores >= threshold, zero_division=0.0)
        assert f1_score(precision, recall) == pytest.approx(expected, abs=1e-12)
    precision, recall, _ = precision_recall_curve(scores, labels)
    curve = f1_score(precision, recall)
    assert isinstance(curve, np.ndarray) and curve.shape == precision.shape
    np.testing.assert_allclose(curve, [f1_score(p, r) for p, r in zip(precision, recall)], rtol=0, atol=0)
    assert f1_score(0.0, 0) == 0.0 and f1_score(1, 1) == 1.0


@pytest.mark.parametrize("args, error, match", [
    (("0.5", 0.5), TypeError, "precision"), ((0.5, True), TypeError, "recall"),
    ((1.5, 0.5), ValueError, "precision"), ((0.5, float("nan")), ValueError, "recall"),
    ((np.ones(3), np.ones(2)), ValueError, "recall"),
])
def test_f1_score_rejects_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        f1_score(*args)
