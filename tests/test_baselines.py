"""Tests of the fixed-class CNN baseline (clip_tutorial.apps.baselines)."""
from __future__ import annotations

import pytest
import torch

from clip_tutorial.apps.baselines import FixedClassCNN, classifier_accuracy, train_classifier


def _separable(n_per_class: int = 8, num_classes: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is which colour channel is bright: trivially separable."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    images = 0.1 * torch.randn(len(labels), 3, size, size, generator=g)
    images[torch.arange(len(labels)), labels] += 2.0
    return images, labels


def test_output_shapes_and_predict():
    torch.manual_seed(0)
    model = FixedClassCNN(5, width=8, image_size=16)
    logits = model(torch.randn(4, 3, 16, 16))
    assert logits.shape == (4, 5)
    predictions = model.predict(torch.randn(7, 3, 16, 16), batch_size=3)
    assert predictions.shape == (7,) and predictions.dtype == torch.long
    assert predictions.min() >= 0 and predictions.max() < 5


def test_training_on_a_separable_set_reaches_100_percent():
    images, labels = _separable()
    torch.manual_seed(0)
    model = FixedClassCNN(3, width=8, image_size=16)
    losses = train_classifier(model, images, labels, steps=40, batch_size=12, lr=1e-2, progress=False)
    assert len(losses) == 40 and losses[-1] < losses[0]
    assert classifier_accuracy(model, images, labels) == 1.0
    assert not model.training


def test_training_is_deterministic_for_a_seed():
    images, labels = _separable()
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = FixedClassCNN(3, width=8, image_size=16)
        runs.append(train_classifier(model, images, labels, steps=5, batch_size=6, progress=False, seed=3))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("kwargs, error", [
    ({"num_classes": 0}, ValueError), ({"num_classes": 3, "width": 0}, ValueError),
    ({"num_classes": 3, "image_size": 20}, ValueError), ({"num_classes": 2.5}, TypeError),
])
def test_bad_constructor_arguments(kwargs, error):
    with pytest.raises(error, match=next(reversed(kwargs))):
        FixedClassCNN(**kwargs)


def test_bad_images():
    model = FixedClassCNN(3, width=8, image_size=16)
    with pytest.raises(ValueError, match=r"\(N, 3, 16, 16\) tensor, got \(2, 3, 32, 32\)"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="tensor"):
        model.predict([[0.0]])


def test_bad_labels_and_hyper_parameters():
    images, labels = _separable()
    model = FixedClassCNN(3, width=8, image_size=16)
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):
        classifier_accuracy(model, images, labels + 1)
    with pytest.raises(ValueError, match="one label per image"):
        train_classifier(model, images, labels[:-1], steps=1, batch_size=4, progress=False)
    with pytest.raises(TypeError, match="LongTensor"):
        classifier_accuracy(model, images, labels.float())
    with pytest.raises(ValueError, match="batch_size"):
        train_classifier(model, images, labels, steps=1, batch_size=100, progress=False)
    with pytest.raises(ValueError, match="steps"):
        train_classifier(model, images, labels, steps=0, batch_size=4, progress=False)
    with pytest.raises(TypeError, match="FixedClassCNN"):
        train_classifier(torch.nn.Linear(2, 2), images, labels, steps=1, batch_size=4, progress=False)
