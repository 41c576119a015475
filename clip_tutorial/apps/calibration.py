"""Choosing a threshold on a similarity score to detect a concept: curves, AUC and calibration.

Explained in Chapter 5.4 (content moderation). A detector flags an item when its score (e.g. the
cosine similarity between an image and a concept's text embedding) is **at least** a threshold:
``flagged = scores >= threshold``. Every function here follows that rule. Scores and labels may be
lists, NumPy arrays or tensors; the results are NumPy arrays (curves) and Python floats.
Labels are ``0``/``1`` or booleans, with ``1`` marking the items that show the concept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clip_tutorial.core.checks import check_choice, check_number

__all__ = [
    "precision_recall_curve", "roc_curve", "roc_auc", "precision_recall_at", "threshold_for_precision",
    "threshold_for_recall", "CalibratedThreshold", "calibrate_threshold", "false_positive_rate_at",
    "precision_at_prevalence", "f1_score",
]

CRITERIA = ("precision", "recall", "f1")


def _as_1d_array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence, got shape {array.shape}")
    return array


def _check(scores: Any, labels: Any, *, need_negatives: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(scores as float64, labels as bool)``; positives are always required."""
    score_array, label_array = _as_1d_array(scores, "scores"), _as_1d_array(labels, "labels")
    if score_array.dtype.kind not in "biuf":
        raise TypeError(f"scores: expected real numbers, got dtype {score_array.dtype}")
    score_array = score_array.astype(np.float64)
    if not np.isfinite(score_array).all():
        raise ValueError(f"scores: expected finite numbers, got {int((~np.isfinite(score_array)).sum())} "
                         "NaN or infinite value(s)")
    if label_array.shape != score_array.shape:
        raise ValueError(f"labels: expected one label per score ({score_array.size}), got {label_array.size}")
    if label_array.dtype.kind not in "biuf" or not np.isin(label_array, (0, 1)).all():
        found = np.unique(label_array)[:5] if label_array.dtype.kind in "biuf" else label_array.dtype
        raise ValueError(f"labels: expected 0/1 or booleans, got values such as {found}")
    label_array = label_array.astype(bool)
    if not label_array.any():
        raise ValueError("labels: expected at least one positive (1) label, got none")
    if need_negatives and label_array.all():
        raise ValueError("labels: expected at least one negative (0) label, got only positives")
    return score_array, label_array


def _counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in decreasing order, with the true and false positives of ``scores >= t`` at each."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_positives = np.cumsum(sorted_labels)
    last_of_group = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tp = true_positives[last_of_group].astype(np.float64)
    return sorted_scores[last_of_group], tp, (last_of_group + 1) - tp


def precision_recall_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of ``scores >= t`` for every distinct score ``t``.

    Args:
        scores: one real score per item, higher meaning "more likely to show the concept".
        labels: ``1`` (or ``True``) for items that show the concept, ``0`` otherwise.

    Returns:
        ``(precision, recall, thresholds)``, three float64 arrays of the same length, with
        ``thresholds`` the distinct scores in **decreasing** order (so recall never decreases
        along the arrays). Unlike scikit-learn, no extra end point is appended.

    Raises:
        ValueError: on empty or mismatched input, labels other than 0/1, non-finite scores,
            or no positive label.
        TypeError: if ``scores`` are not numbers.
    """
    thresholds, tp, fp = _counts(*_check(scores, labels))
    return tp / (tp + fp), tp / tp[-1], thresholds


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve: false- and true-positive rates of ``scores >= t`` for every distinct score.

    Args:
        scores: one real score per item.
        labels: ``1``/``True`` for positives, ``0``/``False`` for negatives; both must occur.

    Returns:
        ``(fpr, tpr, thresholds)``, float64 arrays of equal length. The first point is
        ``(0, 0)`` at threshold ``+inf`` (nothing flagged); then ``thresholds`` are the distinct
        scores in decreasing order, ending at ``(1, 1)``. This equals scikit-learn's
        ``roc_curve(labels, scores, drop_intermediate=False)``.

    Raises:
        ValueError: as :func:`precision_recall_curve`, and also when no label is negative.
        TypeError: if ``scores`` are not numbers.
    """
    thresholds, tp, fp = _counts(*_check(scores, labels, need_negatives=True))
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]], np.r_[np.inf, thresholds]


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (trapezoidal rule).

    It equals the probability that a random positive scores higher than a random negative,
    counting ties as one half.

    Args:
        scores: one real score per item.
        labels: ``1``/``True`` for positives, ``0``/``False`` for negatives; both must occur.

    Returns:
        The AUC, between 0 and 1 (0.5 for scores unrelated to the labels).

    Raises:
        ValueError: as :func:`roc_curve`.
        TypeError: if ``scores`` are not numbers.
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def f1_score(precision: Any, recall: Any) -> Any:
    """The harmonic mean ``2 p r / (p + r)`` of precision and recall, ``0`` where both are ``0``.

    Works on numbers (returns a float) and elementwise on arrays (returns an array), e.g. along a
    precision-recall curve. Explained in Chapter 5.4.

    Raises:
        TypeError: if an argument is not a number or an array of numbers.
        ValueError: if a value lies outside [0, 1] (NaN included) or the shapes do not broadcast.
    """
    values = []
    for name, value in (("precision", precision), ("recall", recall)):
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise TypeError(f"{name}: expected a real number or an array of them in [0, 1], got {array.dtype}")
        array = array.astype(np.float64)
        outside = array[~((array >= 0) & (array <= 1))]
        if outside.size:
            raise ValueError(f"{name}: expected values in [0, 1], got {outside[:3].tolist()}")
        values.append(array)
    p, r = values
    try:
        np.broadcast_shapes(p.shape, r.shape)
    except ValueError:
        raise ValueError(f"recall: expected a shape that broadcasts with precision's {p.shape}, got {r.shape}") from None
    f1 = 2 * p * r / np.maximum(p + r, np.finfo(np.float64).tiny)
    return float(f1) if f1.ndim == 0 else f1


def precision_recall_at(scores: Any, labels: Any, threshold: float) -> tuple[float, float]:
    """Precision and recall of the detector ``scores >= threshold``.

    Args:
        scores: one real score per item.
        labels: ``1``/``True`` for positives, ``0``/``False`` for negatives.
        threshold: the decision threshold (any real number, ``inf`` included).

    Returns:
        ``(precision, recall)``. When nothing is flagged, precision is defined as ``1.0``
        (there is no false alarm), as at the end point of scikit-learn's curve.

    Raises:
        ValueError: as :func:`precision_recall_curve`, or if ``threshold`` is NaN.
        TypeError: if ``threshold`` is not a real number.
    """
    threshold = check_number("threshold", threshold, finite=False)
    score_array, label_array = _check(scores, labels)
    flagged = score_array >= threshold
    tp = int((flagged & label_array).sum())
    precision = tp / int(flagged.sum()) if flagged.any() else 1.0
    return precision, tp / int(label_array.sum())


def false_positive_rate_at(scores: Any, labels: Any, threshold: float) -> float:
    """The share of negatives that the detector ``scores >= threshold`` flags.

    Explained in Chapter 5.4. Together with the recall (the share of positives flagged), it does
    not depend on how common the concept is, unlike precision; see :func:`precision_at_prevalence`.

    Args:
        scores: one real score per item.
        labels: ``1``/``True`` for positives, ``0``/``False`` for negatives; both must occur.
        threshold: the decision threshold (any real number, ``inf`` included).

    Returns:
        The false-positive rate, in [0, 1].

    Raises:
        ValueError: as :func:`roc_curve`, or if ``threshold`` is NaN.
        TypeError: if ``threshold`` or the scores are not real numbers.
    """
    threshold = check_number("threshold", threshold, finite=False)
    score_array, label_array = _check(scores, labels, need_negatives=True)
    return float((score_array[~label_array] >= threshold).mean())


def precision_at_prevalence(recall: float, false_positive_rate: float, prevalence: float) -> float:
    """The precision a detector would have where a share ``prevalence`` of the items are positive.

    Explained in Chapter 5.4. Recall and false-positive rate are properties of the detector; the
    precision also depends on the base rate: among ``n`` items, ``prevalence * n * recall`` true
    alarms meet ``(1 - prevalence) * n * false_positive_rate`` false ones. A detector with a
    1% false-positive rate looks excellent on a balanced test set and raises mostly false alarms
    when only one item in a thousand shows the concept.

    Args:
        recall: the true-positive rate, in [0, 1].
        false_positive_rate: the share of negatives flagged, in [0, 1].
        prevalence: the share of positives among the items, in (0, 1].

    Returns:
        ``prevalence * recall / (prevalence * recall + (1 - prevalence) * false_positive_rate)``;
        ``1.0`` when nothing would be flagged (no false alarm), as :func:`precision_recall_at`.

    Raises:
        TypeError: if an argument is not a real number.
        ValueError: if an argument is outside its range.
    """
    values = {}
    for name, value, low_open in (("recall", recall, False), ("false_positive_rate", false_positive_rate, False),
                                  ("prevalence", prevalence, True)):
        number = check_number(name, value)
        if not ((0 < number) if low_open else (0 <= number)) or not number <= 1:
            raise ValueError(f"{name}: expected a number in {'(0, 1]' if low_open else '[0, 1]'}, got {value}")
        values[name] = number
    true_alarms = values["prevalence"] * values["recall"]
    false_alarms = (1 - values["prevalence"]) * values["false_positive_rate"]
    return true_alarms / (true_alarms + false_alarms) if true_alarms + false_alarms > 0 else 1.0


def threshold_for_precision(scores: Any, labels: Any, target_precision: float) -> float:
    """The lowest threshold whose precision reaches ``target_precision`` (it flags the most items).

    Only the distinct scores are candidates, so at least one item is flagged. Precision is not
    monotonic in the threshold: this returns the lowest candidate that meets the target, which
    gives the highest recall among those that do.

    Args:
        scores: one real score per item.
        labels: ``1``/``True`` for positives, ``0``/``False`` for negatives.
        target_precision: the precision required, in (0, 1].

    Returns:
        The threshold, one of the scores.

    Raises:
        ValueError: on bad input (see :func:`precision_recall_curve`), a target outside (0, 1],
            or when no threshold reaches the target.
        TypeError: if the target or the scores are not numbers.
    """
    target = check_number("target_precision", target_precision, 0, 1, low_open=True)
    precision, _, thresholds = precision_recall_curve(scores, labels)
    reached = np.flatnonzero(precision >= target)
    if reached.size == 0:
        raise ValueError(f"target_precision: expected a precision some threshold reaches (best is "
                         f"{precision.max():.4f}), got {target}")
    return float(thresholds[reached[-1]])


def threshold_for_recall(scores: Any, labels: Any, target_recall: float) -> float:
    """The highest threshold whose recall reaches ``target_recall`` (it flags the fewest items).

    Args:
        scores: one real score per item.
        labels: ``1``/``True`` for positives, ``0``/``False`` for negatives.
        target_recall: the fraction of positives that must be flagged, in (0, 1].

    Returns:
        The threshold, one of the scores (recall never decreases as the threshold drops,
        so the lowest score always reaches any target).

    Raises:
        ValueError: on bad input (see :func:`precision_recall_curve`) or a target outside (0, 1].
        TypeError: if the target or the scores are not numbers.
    """
    target = check_number("target_recall", target_recall, 0, 1, low_open=True)
    _, recall, thresholds = precision_recall_curve(scores, labels)
    return float(thresholds[np.flatnonzero(recall >= target - 1e-12)[0]])


@dataclass(frozen=True)
class CalibratedThreshold:
    """A threshold chosen on validation data, with what it achieved there.

    Attributes:
        threshold: flag an item when its score is at least this value.
        precision: precision on the validation data at ``threshold``.
        recall: recall on the validation data at ``threshold``.
        criterion: ``"precision"``, ``"recall"`` or ``"f1"``: what was targeted.
        target: the required precision or recall (``None`` for ``"f1"``).
    """

    threshold: float
    precision: float
    recall: float
    criterion: str
    target: float | None = None

    @property
    def f1(self) -> float:
        """The harmonic mean of precision and recall on the validation data (:func:`f1_score`)."""
        return f1_score(self.precision, self.recall)


def calibrate_threshold(val_scores: Any, val_labels: Any, target: float | None = None,
                        criterion: str = "precision") -> CalibratedThreshold:
    """Choose a threshold on validation data.

    Args:
        val_scores: one real score per validation item.
        val_labels: ``1``/``True`` for positives, ``0``/``False`` for negatives.
        target: the precision or recall to reach, in (0, 1]; must be ``None`` for ``"f1"``.
        criterion: ``"precision"`` (lowest threshold reaching ``target`` precision, see
            :func:`threshold_for_precision`), ``"recall"`` (highest threshold reaching ``target``
            recall, see :func:`threshold_for_recall`) or ``"f1"`` (the threshold with the best F1;
            the highest such one on ties).

    Returns:
        A :class:`CalibratedThreshold` with the validation precision and recall.

    Raises:
        ValueError: on an unknown criterion, a missing or superfluous target, or as the
            functions above.
        TypeError: if the target or the scores are not numbers.
    """
    check_choice("criterion", criterion, CRITERIA)
    if criterion == "f1":
        if target is not None:
            raise ValueError(f"target: expected None with criterion='f1' (F1 is maximised), got {target!r}")
        precision, recall, thresholds = precision_recall_curve(val_scores, val_labels)
        threshold = float(thresholds[int(np.argmax(f1_score(precision, recall)))])
    elif target is None:
        raise ValueError(f"target: expected a {criterion} in (0, 1] with criterion={criterion!r}, got None")
    elif criterion == "precision":
        threshold = threshold_for_precision(val_scores, val_labels, target)
    else:
        threshold = threshold_for_recall(val_scores, val_labels, target)
    precision_at, recall_at = precision_recall_at(val_scores, val_labels, threshold)
    return CalibratedThreshold(threshold, precision_at, recall_at, criterion,
                               None if target is None else float(target))
