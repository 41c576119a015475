"""Linear probes: logistic regression on frozen CLIP image features, and k-shot training sets.

Explained in Chapter 5.1. The CLIP paper measures how good its image features are by training a
logistic-regression classifier on them while the encoder stays frozen (a *linear probe*), with
scikit-learn's L-BFGS solver and the inverse regularisation strength ``C`` chosen on a validation
split. The same probe trained on only ``k`` labelled images per class is the *k-shot* baseline
that zero-shot prompts are compared with.
"""
from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from clip_tutorial.core.checks import check_int, check_number, check_positive_int, check_type

__all__ = ["DEFAULT_CS", "LinearProbe", "fit_linear_probe", "k_shot_indices"]

#: The grid of inverse regularisation strengths ``C`` that :func:`fit_linear_probe` searches,
#: from strong (0.01) to weak (10,000) regularisation, a factor of 10 apart.
DEFAULT_CS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)

ArrayLike = torch.Tensor | np.ndarray


def _features(name: str, x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a (N, D) float tensor or array, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected a non-empty (N, D) floating-point tensor, got shape {x.shape} "
                         f"and dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    return x.astype(np.float64)


def _labels(name: str, y: object, n: int | None = None) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    if isinstance(y, (list, tuple)):
        y = np.asarray(y)
    if not isinstance(y, np.ndarray) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name}: expected a 1-D integer tensor of class indices, got "
                        f"{getattr(y, 'dtype', type(y).__name__)} with shape {getattr(y, 'shape', '?')}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name}: expected one label per feature row ({n}), got {y.shape[0]}")
    return y.astype(np.int64)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _check_c(name: str, c: object) -> float:
    value = check_number(name, c)
    if value <= 0:
        raise ValueError(f"{name}: expected a positive finite number, got {c!r}")
    return value


@dataclass
class LinearProbe:
    """A fitted linear probe: scikit-learn's logistic regression and how it was chosen.

    Explained in Chapter 5.1.

    Attributes:
        classifier: the fitted ``sklearn.linear_model.LogisticRegression``.
        C: the inverse regularisation strength it was trained with.
        normalize: whether features are L2-normalised before the classifier sees them.
        val_accuracies: validation accuracy of every ``C`` tried, in grid order (empty when ``C``
            was given).
    """

    classifier: LogisticRegression
    C: float
    normalize: bool = True
    val_accuracies: dict[float, float] = field(default_factory=dict)

    @property
    def classes(self) -> torch.Tensor:
        """The class indices the probe can predict (those present in its training labels)."""
        return torch.from_numpy(self.classifier.classes_.astype(np.int64))

    def _prepare(self, features: ArrayLike) -> np.ndarray:
        x = _features("features", features)
        expected = self.classifier.coef_.shape[1]
        if x.shape[1] != expected:
            raise ValueError(f"features: expected {expected} columns, as in training, got {x.shape[1]}")
        return _normalise(x) if self.normalize else x

    def predict(self, features: ArrayLike) -> torch.Tensor:
        """Predicted class index of each row of ``features`` (N, D), a LongTensor (N,)."""
        with threadpool_limits(1):
            return torch.from_numpy(self.classifier.predict(self._prepare(features)).astype(np.int64))

    def accuracy(self, features: ArrayLike, labels: ArrayLike) -> float:
        """Fraction of rows whose :meth:`predict` equals ``labels``."""
        predictions = self.predict(features)
        y = _labels("labels", labels, predictions.shape[0])
        return float((predictions.numpy() == y).mean())


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> LogisticRegression:
    # One thread: the problem is tiny, and several threads on a busy machine are many times slower.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        return LogisticRegression(C=c, max_iter=max_iter).fit(x, y)


def fit_linear_probe(features: ArrayLike, labels: ArrayLike, C: float | None = None,
                     val: tuple[ArrayLike, ArrayLike] | None = None, Cs: Sequence[float] = DEFAULT_CS,
                     normalize: bool = True, max_iter: int = 1000) -> LinearProbe:
    """Train a logistic-regression probe on frozen features, choosing ``C`` on a validation split.

    Explained in Chapter 5.1. This is the CLIP paper's linear-probe protocol on a small scale:
    multinomial logistic regression with an L2 penalty, fitted by scikit-learn's L-BFGS solver
    (its objective is ``C`` times the summed cross-entropy plus half the squared weight norm, so a
    larger ``C`` means weaker regularisation). Without ``C``, one probe is trained for every value
    in ``Cs`` and the one with the best accuracy on ``val`` is kept (ties go to the smaller ``C``);
    the final probe is trained on ``features`` only, never on the validation rows.

    Args:
        features: image features ``(N, D)``, a tensor or an array (CLIP's frozen embeddings).
        labels: class index of each row ``(N,)``; at least two classes.
        C: the inverse regularisation strength; ``None`` chooses it on ``val``.
        val: ``(features, labels)`` of a validation split, required when ``C`` is ``None``.
        Cs: the values of ``C`` tried when choosing.
        normalize: L2-normalise every feature row first (here, before training and prediction),
            as CLIP's similarities do.
        max_iter: the solver's iteration limit.

    Returns:
        A :class:`LinearProbe`.

    Raises:
        TypeError: if features or labels are not tensors/arrays of the right kind, or ``C``, a value
            of ``Cs``, ``max_iter`` or ``normalize`` is not a number of the right kind.
        ValueError: if shapes disagree, there are fewer than two classes, ``C`` or a value of
            ``Cs`` is not positive, or neither ``C`` nor ``val`` is given.
    """
    x = _features("features", features)
    y = _labels("labels", labels, x.shape[0])
    if np.unique(y).size < 2:
        raise ValueError(f"labels: expected at least two classes, got only {np.unique(y).tolist()}")
    max_iter = check_positive_int("max_iter", max_iter)
    check_type("normalize", normalize, bool, "True or False")
    if normalize:
        x = _normalise(x)
    if C is not None:
        c = _check_c("C", C)
        return LinearProbe(_fit(x, y, c, max_iter), c, normalize)
    if val is None:
        raise ValueError("val: expected (features, labels) of a validation split to choose C, got None "
                         "(or pass C=... to skip the search)")
    if not isinstance(val, (tuple, list)) or len(val) != 2:
        raise TypeError(f"val: expected a (features, labels) pair, got {type(val).__name__}")
    if isinstance(Cs, (str, bytes)) or not isinstance(Cs, Sequence) or len(Cs) == 0:
        raise ValueError(f"Cs: expected a non-empty list of positive numbers, got {Cs!r}")
    grid = [_check_c("Cs", c) for c in Cs]
    vx = _features("val features", val[0])
    if vx.shape[1] != x.shape[1]:
        raise ValueError(f"val features: expected {x.shape[1]} columns, as in features, got {vx.shape[1]}")
    vy = _labels("val labels", val[1], vx.shape[0])
    if normalize:
        vx = _normalise(vx)
    best: LinearProbe | None = None
    scores: dict[float, float] = {}
    for c in grid:
        classifier = _fit(x, y, c, max_iter)
        with threadpool_limits(1):
            scores[c] = float((classifier.predict(vx) == vy).mean())
        if best is None or scores[c] > scores[best.C] or (scores[c] == scores[best.C] and c < best.C):
            best = LinearProbe(classifier, c, normalize)
    assert best is not None
    best.val_accuracies = scores
    return best


def k_shot_indices(labels: ArrayLike, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``k`` randomly chosen examples of every class in ``labels``: a k-shot training set.

    Explained in Chapter 5.1. The draw depends only on ``labels``, ``k`` and ``seed``; different
    seeds give different draws, which is how the spread of k-shot accuracy is measured.

    Args:
        labels: class index of every candidate example ``(N,)``.
        k: examples per class, at least 1.
        seed: seed of the draw.

    Returns:
        A sorted LongTensor of ``k * num_classes`` distinct indices into ``labels``.

    Raises:
        TypeError: if ``k`` or ``seed`` is not an int, or ``labels`` not integer class indices.
        ValueError: if ``k`` is below 1 or a class has fewer than ``k`` examples.
    """
    y = _labels("labels", labels)
    if check_int("k", k) < 1:
        raise ValueError(f"k: expected a positive integer (examples per class), got {k!r}")
    seed = check_int("seed", seed)
    if y.size == 0:
        raise ValueError("labels: expected at least one label, got none")
    rng = random.Random(f"k-shot/{k}/{seed}")
    chosen: list[int] = []
    for c in np.unique(y).tolist():
        members = np.flatnonzero(y == c).tolist()
        if len(members) < k:
            raise ValueError(f"labels: class {c} has {len(members)} examples, fewer than k={k}")
        chosen.extend(rng.sample(members, k))
    return torch.tensor(sorted(chosen), dtype=torch.long)
