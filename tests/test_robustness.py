"""Effective robustness: the logit-scale baseline fit, the gap to it, and accuracy over shifts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clip_tutorial.apps.baselines import FixedClassCNN
from clip_tutorial.apps.robustness import (DEFAULT_EPS, IN_DISTRIBUTION, LogitFit, ShiftPredictions,
                                           accuracy_over_shifts, cnn_predictor, effective_robustness, fit_baseline,
                                           logit, predictions_over_shifts)
from clip_tutorial.data import class_names
from clip_tutorial.data.shifts import SHIFTS, shifted_world


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=float)))


# ---------------------------------------------------------------- logit and the fit


def test_logit_by_hand_and_clipping():
    assert logit(0.5)[0] == 0.0
    assert logit(0.75)[0] == pytest.approx(np.log(3))
    assert logit([0.1, 0.9]).tolist() == pytest.approx([-np.log(9), np.log(9)])
    # 0 and 1 are clipped to eps and 1 - eps, so they stay finite
    assert logit([0.0, 1.0], eps=0.01).tolist() == pytest.approx([np.log(0.01 / 0.99), np.log(0.99 / 0.01)])
    assert logit(1.0)[0] == pytest.approx(np.log((1 - DEFAULT_EPS) / DEFAULT_EPS))
    assert logit(torch.tensor([0.2, 0.8])).tolist() == pytest.approx([-np.log(4), np.log(4)])


@pytest.mark.parametrize("a, b", [(1.0, 0.0), (0.6, -1.2), (1.7, 0.4), (-0.3, 2.0)])
def test_points_on_a_line_recover_it(a, b):
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.5, 3.0, size=7)
    fit = fit_baseline(_sigmoid(x), _sigmoid(a * x + b))
    assert isinstance(fit, LogitFit) and fit.n_points == 7
    assert fit.slope == pytest.approx(a, abs=1e-9) and fit.intercept == pytest.approx(b, abs=1e-9)
    assert fit.rmse == pytest.approx(0.0, abs=1e-9)
    # a model on the line has no effective robustness; one above it has exactly its lead
    assert effective_robustness(0.8, _sigmoid(a * np.log(4) + b), fit) == pytest.approx(0.0, abs=1e-9)
    assert effective_robustness(0.8, _sigmoid(a * np.log(4) + b) + 0.05, fit) == pytest.approx(0.05, abs=1e-9)


def test_fit_matches_numpy_polyfit_on_noisy_points():
    rng = np.random.default_rng(1)
    id_acc = rng.uniform(0.3, 0.99, size=12)
    shift_acc = np.clip(id_acc - rng.uniform(0.05, 0.4, size=12), 0.0, 1.0)
    shift_acc[0] = 0.0  # clipped to eps before the logit
    eps = 1 / 2000
    fit = fit_baseline(id_acc, shift_acc, eps=eps)
    x, y = (np.log(p) - np.log1p(-p) for p in (np.clip(id_acc, eps, 1 - eps), np.clip(shift_acc, eps, 1 - eps)))
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope, rel=1e-10) and fit.intercept == pytest.approx(intercept, rel=1e-10)
    assert fit.rmse == pytest.approx(np.sqrt(np.mean((y - (slope * x + intercept)) ** 2)), rel=1e-10)
    assert fit.eps == eps
    predicted = fit.predict([0.5, 0.9])
    assert predicted.tolist() == pytest.approx(_sigmoid([intercept, slope * np.log(9) + intercept]).tolist())


def test_effective_robustness_by_hand():
    fit = LogitFit(slope=1.0, intercept=-np.log(4), eps=1e-3, n_points=2, rmse=0.0)
    # ID accuracy 0.8 has logit log 4, so the line predicts logit 0: a shifted accuracy of 0.5
    assert effective_robustness(0.8, 0.5, fit) == pytest.approx(0.0)
    assert effective_robustness(0.8, 0.7, fit) == pytest.approx(0.2)
    gaps = effective_robustness([0.8, 0.5], [0.4, 0.2], fit)
    assert isinstance(gaps, np.ndarray) and gaps.tolist() == pytest.approx([-0.1, 0.2 - 0.2])


# ---------------------------------------------------------------- accuracy over shifts


class _Oracle:
    """Knows each test scene's answer by its images: it is given the worlds to look them up in."""

    def __init__(self, classes, wrong_under=()):
        self.index = {name: i for i, name in enumerate(classes)}
        self.lookup = {}
        self.wrong_under = wrong_under

    def add(self, world):
        names = class_names("pair")
        for image, label in zip(world.images, world.labels("pair").tolist()):
            self.lookup[image.numpy().tobytes()] = self.index[names[label]]

    def __call__(self, images):
        return torch.tensor([self.lookup.get(image.numpy().tobytes(), -1) for image in images])


def test_accuracy_over_shifts_measures_every_model_on_every_shift():
    seen = [f"{c} {s}" for c, s in shifted_world(None, n=1).pairs]
    oracle = _Oracle(seen)
    for shift in (None, "blur", "noise"):
        oracle.add(shifted_world(shift, n=40, seed=5))
    always_zero = lambda images: torch.zeros(len(images), dtype=torch.long)  # noqa: E731
    results = accuracy_over_shifts({"oracle": oracle, "zero": always_zero}, seen,
                                   shifts=(IN_DISTRIBUTION, "blur", "noise", "hue"), n=40, seed=5)
    assert set(results) == {"oracle", "zero"} and list(results["oracle"]) == [IN_DISTRIBUTION, "blur", "noise", "hue"]
    assert results["oracle"][IN_DISTRIBUTION] == results["oracle"]["blur"] == results["oracle"]["noise"] == 1.0
    assert results["oracle"]["hue"] == 0.0  # it never saw the hue-shifted images
    labels = shifted_world(None, n=40, seed=5).labels("pair")
    expected = float((labels == class_names("pair").index(seen[0])).float().mean())
    assert all(v == pytest.approx(expected) for v in results["zero"].values())  # same scenes under every shift


def test_accuracy_of_the_pair_and_of_each_half_by_hand():
    predictions = ShiftPredictions(["red circle", "red square", "blue circle"], {"none": torch.tensor([0, 1, 2])},
                                   {"m": {"none": torch.tensor([1, 1, 0])}})
    assert predictions.accuracy()["m"]["none"] == pytest.approx(1 / 3)
    assert predictions.accuracy("colour")["m"]["none"] == pytest.approx(2 / 3)  # red/red, red/red, red/blue
    assert predictions.accuracy("shape")["m"]["none"] == pytest.approx(2 / 3)  # square/circle wrong
    with pytest.raises(ValueError, match="part"):
        predictions.accuracy("size")


def test_predictions_over_shifts_keeps_the_same_truth_for_every_shift():
    seen = [f"{c} {s}" for c, s in shifted_world(None, n=1).pairs]
    constant = lambda images: torch.zeros(len(images), dtype=torch.long)  # noqa: E731
    predictions = predictions_over_shifts({"c": constant}, seen, shifts=("none", "scale"), n=30, seed=2)
    assert torch.equal(predictions.truth["none"], predictions.truth["scale"])
    assert predictions.predicted["c"]["scale"].tolist() == [0] * 30


def test_cnn_predictor_matches_the_cnn():
    torch.manual_seed(0)
    cnn = FixedClassCNN(48, width=4)
    world = shifted_world("noise", n=16, seed=1)
    from clip_tutorial.data import normalize_images
    assert torch.equal(cnn_predictor(cnn)(world.images), cnn.predict(normalize_images(world.images)))
    results = accuracy_over_shifts({"cnn": cnn_predictor(cnn)}, [f"{c} {s}" for c, s in world.pairs],
                                   shifts=("noise",), n=16, seed=1)
    seen = {f"{c} {s}": i for i, (c, s) in enumerate(world.pairs)}
    labels = torch.tensor([seen[class_names("pair")[i]] for i in world.labels("pair").tolist()])
    assert results["cnn"]["noise"] == pytest.approx(float((cnn.predict(normalize_images(world.images)) == labels)
                                                          .float().mean()))


# ---------------------------------------------------------------- bad input


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="at least two"):
        fit_baseline([0.5], [0.4])
    with pytest.raises(ValueError, match="one accuracy per model"):
        fit_baseline([0.5, 0.6], [0.4])
    with pytest.raises(ValueError, match=r"id_accuracy\[1\]"):
        fit_baseline([0.5, 1.2], [0.4, 0.5])
    with pytest.raises(ValueError, match="different ID accuracies"):
        fit_baseline([1.0, 0.9999999], [0.4, 0.5])
    with pytest.raises(TypeError, match="accuracy"):
        fit_baseline("0.5", [0.4])
    with pytest.raises(ValueError, match="eps"):
        logit(0.5, eps=0.5)
    with pytest.raises(TypeError, match="fit: expected a LogitFit"):
        effective_robustness(0.5, 0.4, (1.0, 0.0))
    fit = fit_baseline([0.5, 0.9], [0.3, 0.8])
    with pytest.raises(ValueError, match="one accuracy per model"):
        effective_robustness([0.5, 0.6], [0.4], fit)
    seen = ["red circle"]
    constant = lambda images: torch.zeros(len(images), dtype=torch.long)  # noqa: E731
    with pytest.raises(ValueError, match="predictors"):
        accuracy_over_shifts({}, seen)
    with pytest.raises(TypeError, match="predictors"):
        accuracy_over_shifts({"x": 3}, seen)
    with pytest.raises(ValueError, match="shifts: expected names"):
        accuracy_over_shifts({"x": constant}, seen, shifts=("fog",), n=4)
    with pytest.raises(ValueError, match="classes: expected every test class"):
        accuracy_over_shifts({"x": constant}, seen, shifts=(IN_DISTRIBUTION,), n=20)
    every = class_names("pair")
    with pytest.raises(TypeError, match="class indices"):
        accuracy_over_shifts({"x": lambda images: [0] * len(images)}, every, shifts=(SHIFTS[0],), n=4)
