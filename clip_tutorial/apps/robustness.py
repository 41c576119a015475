"""Effective robustness: accuracy under a shift beyond what in-distribution accuracy predicts.

Explained in Chapter 6.1. Taori et al. (2020) found that, for models trained on the same data, accuracy
on a shifted test set is close to a linear function of in-distribution (ID) accuracy once both are
put on a logit scale. A model's *effective robustness* is how far above that baseline line it lies:

    logit(shifted accuracy) ~ a * logit(ID accuracy) + b        (fitted on the baseline models)
    effective robustness    = shifted accuracy - sigmoid(a * logit(ID accuracy) + b)

measured in accuracy (not logit) units, as in the paper. Zero-shot CLIP models lie well above the line
of ImageNet classifiers; the CLIP paper's Figure 13 is that plot.

:func:`accuracy_over_shifts` measures any set of models (given as predictors: uint8 images to class
indices) on the same scenes under every shift of :mod:`clip_tutorial.data.shifts`;
:func:`clip_predictor` and :func:`cnn_predictor` wrap a zero-shot CLIP and a fixed-class CNN.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clip_tutorial.core.checks import (check_callable, check_choice, check_int, check_number, check_sequence,
                                       check_type)
from clip_tutorial.core.progress import progress_bar
from clip_tutorial.data import class_names, normalize_images
from clip_tutorial.data.shifts import SHIFTS, shifted_world
from clip_tutorial.evaluation.zeroshot import DEFAULT_TEMPLATES, build_zero_shot_classifier, zero_shot_predict
from clip_tutorial.model import CLIP

from .baselines import FixedClassCNN

__all__ = ["IN_DISTRIBUTION", "DEFAULT_EPS", "LogitFit", "logit", "fit_baseline", "effective_robustness",
           "clip_predictor", "cnn_predictor", "ShiftPredictions", "predictions_over_shifts", "accuracy_over_shifts"]

#: The key of the unshifted test set in :func:`accuracy_over_shifts`' results.
IN_DISTRIBUTION = "none"
#: Default clipping of accuracies before the logit (see :func:`logit`).
DEFAULT_EPS = 1e-3

Predictor = Callable[[torch.Tensor], torch.Tensor]  # uint8 images (N, 3, H, W) -> class indices (N,)


def _accuracies(name: str, values: object) -> np.ndarray:
    """Accuracies as a 1-D float array in [0, 1] (a number, a list, an array or a tensor)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, (int, float, np.number)) and not isinstance(values, (bool, np.bool_)):
        values = [values]
    if isinstance(values, np.ndarray):
        values = values.ravel().tolist()
    items = check_sequence(name, values, iterable=True, nonempty=True, expected="accuracies (numbers in [0, 1])")
    return np.array([check_number(f"{name}[{i}]", v, 0.0, 1.0) for i, v in enumerate(items)], dtype=np.float64)


def logit(accuracy: object, eps: float = DEFAULT_EPS) -> np.ndarray:
    """``log(p / (1 - p))`` of accuracies clipped to ``[eps, 1 - eps]`` (Chapter 6.1).

    An accuracy of exactly 0 or 1 has an infinite logit, and a test set of ``n`` images cannot tell
    accuracies closer than ``1 / n`` apart, so accuracies are first clipped: ``eps = 1 / (2 n)`` (half an
    image) is the natural choice for a test set of ``n`` images. Clipping changes nothing in between.

    Raises:
        ValueError: for an accuracy outside [0, 1] or ``eps`` outside (0, 0.5).
    """
    return _logit(_accuracies("accuracy", accuracy), eps)


def _logit(p: np.ndarray, eps: float) -> np.ndarray:
    eps = check_number("eps", eps, 0.0, 0.5, low_open=True, high_open=True)
    p = np.clip(p, eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class LogitFit:
    """The baseline line ``logit(shifted) = slope * logit(ID) + intercept`` (Chapter 6.1).

    Attributes:
        slope, intercept: the least-squares line, ``a`` and ``b``.
        eps: the clipping used before the logit.
        n_points: number of baseline models it was fitted on.
        rmse: root-mean-square residual of the fit, in logit units.
    """

    slope: float
    intercept: float
    eps: float
    n_points: int
    rmse: float

    def predict(self, id_accuracy: object) -> np.ndarray:
        """The shifted accuracy the line predicts for each ID accuracy, in accuracy units."""
        return _sigmoid(self.slope * logit(id_accuracy, self.eps) + self.intercept)


def fit_baseline(id_accuracy: object, shift_accuracy: object, eps: float = DEFAULT_EPS) -> LogitFit:
    """Fit the baseline line on logit-scaled accuracies of baseline models, by least squares (Chapter 6.1).

    Args:
        id_accuracy: in-distribution accuracy of each baseline model, in [0, 1].
        shift_accuracy: the same models' accuracy under the shift, in the same order.
        eps: accuracies are clipped to ``[eps, 1 - eps]`` before the logit (see :func:`logit`).

    Returns:
        A :class:`LogitFit`; for points exactly on a line it recovers that line.

    Raises:
        ValueError: with fewer than two models, mismatched lengths, accuracies outside [0, 1], or
            ID accuracies that are all the same after clipping (no line through them).
    """
    x = _logit(_accuracies("id_accuracy", id_accuracy), eps)
    y = _logit(_accuracies("shift_accuracy", shift_accuracy), eps)
    if len(x) != len(y):
        raise ValueError(f"shift_accuracy: expected one accuracy per model ({len(x)}), got {len(y)}")
    if len(x) < 2:
        raise ValueError(f"id_accuracy: expected at least two baseline models to fit a line, got {len(x)}")
    spread = x - x.mean()
    if not np.any(np.abs(spread) > 1e-12):
        raise ValueError("id_accuracy: expected baseline models of different ID accuracies (after clipping to "
                         f"[{eps}, {1 - eps}]), got all equal to {float(_sigmoid(x[0])):.4g}; no line fits")
    slope = float((spread * (y - y.mean())).sum() / (spread**2).sum())
    intercept = float(y.mean() - slope * x.mean())
    rmse = float(np.sqrt(np.mean((y - (slope * x + intercept)) ** 2)))
    return LogitFit(slope, intercept, eps, len(x), rmse)


def effective_robustness(id_accuracy: object, shift_accuracy: object, fit: LogitFit) -> np.ndarray | float:
    """``shift_accuracy - fit.predict(id_accuracy)``: accuracy above the baseline line (Chapter 6.1).

    Positive: the model keeps more of its accuracy under the shift than baselines of the same ID
    accuracy; zero: it is on the line. A float for one model, an array for several.

    Raises:
        TypeError: if ``fit`` is not a :class:`LogitFit`.
        ValueError: for mismatched lengths or accuracies outside [0, 1].
    """
    check_type("fit", fit, LogitFit, "a LogitFit from fit_baseline")
    x, y = _accuracies("id_accuracy", id_accuracy), _accuracies("shift_accuracy", shift_accuracy)
    if len(x) != len(y):
        raise ValueError(f"shift_accuracy: expected one accuracy per model ({len(x)}), got {len(y)}")
    gap = y - fit.predict(x)
    scalar = not isinstance(id_accuracy, (list, tuple, np.ndarray, torch.Tensor))
    return float(gap[0]) if scalar else gap


def clip_predictor(model: CLIP, tokenizer: Callable[[Sequence[str]], torch.Tensor], classnames: Sequence[str],
                   templates: Sequence[str] = DEFAULT_TEMPLATES) -> Predictor:
    """A zero-shot CLIP as a predictor: uint8 images -> index of the closest class prompt (Chapter 6.1).

    The class embeddings are built once (:func:`~clip_tutorial.evaluation.zeroshot.build_zero_shot_classifier`).
    """
    classifier = build_zero_shot_classifier(model, tokenizer, classnames, templates)
    return lambda images: zero_shot_predict(model, images, classifier)


def cnn_predictor(model: FixedClassCNN) -> Predictor:
    """A fixed-class CNN as a predictor: uint8 images -> its predicted output index (Chapter 6.1)."""
    check_type("model", model, FixedClassCNN)
    return lambda images: model.predict(normalize_images(images))


@dataclass
class ShiftPredictions:
    """Every model's predictions on the same scenes under every shift (Chapter 6.1).

    Attributes:
        classes: the class names, e.g. ``"red circle"``; predictions and truths index into them.
        truth: shift -> true class index of each test image (the same scenes for every shift).
        predicted: model -> shift -> predicted class index of each test image.
    """

    classes: list[str]
    truth: dict[str, torch.Tensor]
    predicted: dict[str, dict[str, torch.Tensor]]

    def accuracy(self, part: str = "pair") -> dict[str, dict[str, float]]:
        """``result[model][shift]``: the fraction of images whose class is right.

        ``part="colour"`` or ``"shape"`` counts a prediction right when that word of the class name
        (first or last of ``"colour shape"``) is right, to see which half of the answer a shift breaks.
        """
        check_choice("part", part, ("pair", "colour", "shape"))
        if part == "pair":
            key = list(range(len(self.classes)))
        else:
            words = [name.split()[0 if part == "colour" else -1] for name in self.classes]
            key = [words.index(w) for w in words]  # classes sharing the word share a key
        key_of = torch.tensor(key)
        return {model: {shift: float((key_of[p] == key_of[self.truth[shift]]).float().mean())
                        for shift, p in shifts.items()} for model, shifts in self.predicted.items()}


def predictions_over_shifts(predictors: Mapping[str, Predictor], classes: Sequence[str],
                            shifts: Sequence[str] = (IN_DISTRIBUTION, *SHIFTS), n: int = 1000, seed: int = 1000,
                            progress: bool = False, **world: object) -> ShiftPredictions:
    """Every model's predictions on the same scenes under every shift (Chapter 6.1).

    For each shift, one test set is drawn by :func:`~clip_tutorial.data.shifts.shifted_world` (``n``
    scenes, ``seed``; the extra keyword arguments ``world`` go to it, e.g. ``split`` or ``image_size``) and
    every predictor classifies its uint8 images among ``classes``. The true class of an image is the
    position of its first object's name (``"red circle"``) in ``classes``. ``IN_DISTRIBUTION`` names the
    unshifted set. Use a seed the models were not trained on.

    Args:
        predictors: model name -> function from uint8 images ``(N, 3, H, W)`` to class indices ``(N,)``
            into ``classes`` (:func:`clip_predictor`, :func:`cnn_predictor`, or your own).
        classes: the class names, e.g. the colour-shape pairs seen in training.
        shifts: which sets to measure, names of ``SHIFTS`` or ``IN_DISTRIBUTION``.

    Raises:
        ValueError: for an unknown shift, no predictors, or an image whose class is not in ``classes``.
        TypeError: if a predictor is not callable or returns something other than one index per image.
    """
    if not isinstance(predictors, Mapping) or not predictors:
        raise ValueError(f"predictors: expected a non-empty dict of name -> predictor, got {predictors!r:.60}")
    for name, predictor in predictors.items():
        check_callable(f"predictors[{name!r}]", predictor, "a function from uint8 images to class indices")
    classes = check_sequence("classes", classes, str, nonempty=True, expected="a list of class names")
    shifts = check_sequence("shifts", shifts, str, nonempty=True, expected=f"names from {[IN_DISTRIBUTION, *SHIFTS]}")
    for shift in shifts:
        if shift != IN_DISTRIBUTION and shift not in SHIFTS:
            raise ValueError(f"shifts: expected names from {[IN_DISTRIBUTION, *SHIFTS]}, got {shift!r}")
    n, seed = check_int("n", n, 1), check_int("seed", seed, 0)
    index = {name: i for i, name in enumerate(classes)}
    names = class_names("pair")
    out = ShiftPredictions(list(classes), {}, {name: {} for name in predictors})
    for shift in progress_bar(shifts, enabled=progress, desc="shifts"):
        data = shifted_world(None if shift == IN_DISTRIBUTION else shift, n=n, seed=seed, **world)
        true = [names[i] for i in data.labels("pair").tolist()]
        missing = sorted(set(true) - set(index))
        if missing:
            raise ValueError(f"classes: expected every test class among them, but {missing[:3]} are missing "
                             "(draw the test set from the split the classes cover, e.g. split='train')")
        out.truth[shift] = torch.tensor([index[t] for t in true])
        for name, predictor in predictors.items():
            predicted = predictor(data.images)
            if not isinstance(predicted, torch.Tensor) or predicted.shape != out.truth[shift].shape:
                raise TypeError(f"predictors[{name!r}]: expected a tensor of {n} class indices, got "
                                f"{type(predicted).__name__} {tuple(getattr(predicted, 'shape', ()))}")
            out.predicted[name][shift] = predicted.cpu().long()
    return out


def accuracy_over_shifts(predictors: Mapping[str, Predictor], classes: Sequence[str],
                         shifts: Sequence[str] = (IN_DISTRIBUTION, *SHIFTS), n: int = 1000, seed: int = 1000,
                         progress: bool = False, **world: object) -> dict[str, dict[str, float]]:
    """Accuracy of every model on the same scenes under every shift: ``results[model][shift]`` (Chapter 6.1).

    :func:`predictions_over_shifts` (same arguments and errors), scored by :meth:`ShiftPredictions.accuracy`.
    """
    return predictions_over_shifts(predictors, classes, shifts, n, seed, progress, **world).accuracy()
