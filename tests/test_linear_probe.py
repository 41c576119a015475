"""Tests of the linear probe against direct scikit-learn calls and a brute-force choice of C."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from clip_tutorial.apps.linear_probe import DEFAULT_CS, LinearProbe, fit_linear_probe, k_shot_indices


def blobs(n_per_class: int, classes: int = 4, dim: int = 6, seed: int = 0, spread: float = 0.8):
    """Gaussian clusters around random centres: a small, not perfectly separable problem."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123))
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    order = torch.randperm(len(labels), generator=g)
    return features[order], labels[order]


def test_fixed_c_matches_a_direct_scikit_learn_fit_on_normalised_features():
    x, y = blobs(30, seed=1)
    test_x, _ = blobs(20, seed=2)
    probe = fit_linear_probe(x, y, C=3.0)
    xn = (x / x.norm(dim=1, keepdim=True)).double().numpy()
    reference = LogisticRegression(C=3.0, max_iter=1000).fit(xn, y.numpy())
    np.testing.assert_allclose(probe.classifier.coef_, reference.coef_, atol=1e-6)
    np.testing.assert_allclose(probe.classifier.intercept_, reference.intercept_, atol=1e-6)
    tn = (test_x / test_x.norm(dim=1, keepdim=True)).double().numpy()
    assert probe.predict(test_x).tolist() == reference.predict(tn).tolist()
    assert probe.C == 3.0 and probe.val_accuracies == {} and probe.classes.tolist() == [0, 1, 2, 3]


def test_unnormalised_probe_sees_raw_features():
    x, y = blobs(25, seed=3)
    probe = fit_linear_probe(x, y, C=0.5, normalize=False)
    reference = LogisticRegression(C=0.5, max_iter=1000).fit(x.double().numpy(), y.numpy())
    np.testing.assert_allclose(probe.classifier.coef_, reference.coef_, atol=1e-6)


def test_c_is_the_brute_force_best_on_validation_with_ties_to_the_smaller_c():
    x, y = blobs(12, seed=4, spread=1.5)
    vx, vy = blobs(40, seed=5, spread=1.5)
    grid = (0.01, 0.1, 1.0, 10.0, 100.0)
    probe = fit_linear_probe(x, y, val=(vx, vy), Cs=grid)
    xn = (x / x.norm(dim=1, keepdim=True)).double().numpy()
    vn = (vx / vx.norm(dim=1, keepdim=True)).double().numpy()
    accuracies = {c: LogisticRegression(C=c, max_iter=1000).fit(xn, y.numpy()).score(vn, vy.numpy()) for c in grid}
    best = max(accuracies.values())
    assert probe.C == min(c for c, a in accuracies.items() if a == best)
    assert probe.val_accuracies == pytest.approx(accuracies)
    assert probe.accuracy(vx, vy) == pytest.approx(best)
    # the chosen probe was trained on the training rows only
    reference = LogisticRegression(C=probe.C, max_iter=1000).fit(xn, y.numpy())
    np.testing.assert_allclose(probe.classifier.coef_, reference.coef_, atol=1e-6)


def test_probe_learns_a_separable_problem_and_accuracy_counts_matches():
    x, y = blobs(40, seed=6, spread=0.1)
    probe = fit_linear_probe(x, y, C=100.0)
    assert isinstance(probe, LinearProbe)
    assert probe.accuracy(x, y) == 1.0
    flipped = y.clone()
    flipped[:10] = (flipped[:10] + 1) % 4
    assert probe.accuracy(x, flipped) == pytest.approx(1 - 10 / len(y))
    assert probe.accuracy(x.numpy(), y.numpy()) == 1.0  # arrays work too


@settings(max_examples=30, deadline=None)
@given(classes=st.integers(1, 6), extra=st.integers(0, 5), k=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_k_shot_indices_take_exactly_k_distinct_examples_of_every_class(classes, extra, k, seed):
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(rng.permutation(np.repeat(np.arange(classes) * 3, k + extra)))
    idx = k_shot_indices(labels, k, seed)
    assert idx.dtype == torch.long and idx.tolist() == sorted(set(idx.tolist()))
    counts = torch.bincount(labels[idx], minlength=3 * classes)
    assert counts[::3].tolist() == [k] * classes and int(counts.sum()) == k * classes
    assert torch.equal(idx, k_shot_indices(labels, k, seed))  # deterministic


def test_k_shot_draws_differ_between_seeds():
    labels = torch.arange(10).repeat(20)
    draws = {tuple(k_shot_indices(labels, 2, s).tolist()) for s in range(5)}
    assert len(draws) == 5


def test_default_grid_is_increasing_and_positive():
    assert list(DEFAULT_CS) == sorted(DEFAULT_CS) and all(c > 0 for c in DEFAULT_CS)


@pytest.mark.parametrize("call, match", [
    (lambda x, y: fit_linear_probe(x, y), "val: expected"),
    (lambda x, y: fit_linear_probe(x, y, C=0), "C: expected a positive"),
    (lambda x, y: fit_linear_probe(x, y, C=-1.0), "C: expected a positive"),
    (lambda x, y: fit_linear_probe(x, y[:-1], C=1.0), "labels: expected one label per feature row"),
    (lambda x, y: fit_linear_probe(x[0], y, C=1.0), "features: expected a non-empty"),
    (lambda x, y: fit_linear_probe(x, torch.zeros_like(y), C=1.0), "at least two classes"),
    (lambda x, y: fit_linear_probe(x, y, val=(x[:, :3], y)), "val features: expected 6 columns"),
    (lambda x, y: fit_linear_probe(x, y, val=(x, y), Cs=[]), "Cs: expected"),
    (lambda x, y: fit_linear_probe(x, y, val=(x, y), Cs=[1.0, 0.0]), "Cs: expected a positive"),
    (lambda x, y: fit_linear_probe(x * float("nan"), y, C=1.0), "finite"),
    (lambda x, y: fit_linear_probe(x, y, C=1.0).predict(x[:, :2]), "features: expected 6 columns"),
    (lambda x, y: k_shot_indices(y, 0), "k: expected a positive integer"),
    (lambda x, y: k_shot_indices(y, 100), "fewer than k=100"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    x, y = blobs(5, seed=7)
    with pytest.raises(ValueError, match=match):
        call(x, y)


def test_wrong_types_raise_type_error():
    x, y = blobs(5, seed=8)
    with pytest.raises(TypeError, match="features: expected"):
        fit_linear_probe("features", y, C=1.0)
    with pytest.raises(TypeError, match="labels: expected a 1-D integer"):
        fit_linear_probe(x, y.float(), C=1.0)
    with pytest.raises(TypeError, match="val: expected a \\(features, labels\\) pair"):
        fit_linear_probe(x, y, val=x)
