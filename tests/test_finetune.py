"""Tests of WiSE-FT's weight interpolation and of fine-tuning a zero-shot-initialised CLIP classifier."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_tiny_clip
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from clip_tutorial.apps.finetune import CLIPClassifier, fine_tune, interpolate_weights, wise_ft
from clip_tutorial.evaluation.zeroshot import ENSEMBLE_TEMPLATES, build_zero_shot_classifier, zero_shot_predict

CLASSES = ["red circle", "blue square", "green star", "black heart"]


def small_net(seed: int) -> nn.Module:
    """A model with float weights and an integer buffer (batch norm's counter)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))


def trained_pair() -> tuple[nn.Module, nn.Module]:
    a, b = small_net(0), small_net(1)
    b.train()(torch.randn(16, 5, generator=torch.Generator().manual_seed(2)))  # b's counter becomes 1
    return a.eval(), b.eval()


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = make_tiny_clip(12, seed=4)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():  # unit-variance projections, so that the predictions vary from image to image
        model.text_projection.copy_(torch.randn(model.text_projection.shape, generator=g))
        model.visual.proj.copy_(torch.randn(model.visual.proj.shape, generator=g))
    return model, tokenizer, torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def test_alpha_zero_and_one_give_the_endpoints_exactly():
    a, b = trained_pair()
    for alpha, end in ((0, a), (0.0, a), (1, b), (1.0, b)):
        mixed = interpolate_weights(a, b, alpha)
        assert list(mixed) == list(a.state_dict())
        for key, value in end.state_dict().items():
            assert torch.equal(mixed[key], value) and mixed[key].dtype == value.dtype, (alpha, key)


def test_a_hand_computed_mixture():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([-1.0, 0.0])}
    b = {"w": torch.tensor([[3.0, 6.0], [5.0, 0.0]]), "b": torch.tensor([1.0, 8.0])}
    half = interpolate_weights(a, b, 0.5)
    torch.testing.assert_close(half["w"], torch.tensor([[2.0, 4.0], [4.0, 2.0]]), rtol=0, atol=0)
    torch.testing.assert_close(half["b"], torch.tensor([0.0, 4.0]), rtol=0, atol=0)
    quarter = interpolate_weights(a, b, 0.25)   # 0.75 * a + 0.25 * b
    torch.testing.assert_close(quarter["w"], torch.tensor([[1.5, 3.0], [3.5, 3.0]]), rtol=0, atol=1e-7)
    assert a["w"][0, 0] == 1.0 and b["w"][0, 0] == 3.0   # the inputs are untouched


def test_integer_buffers_come_from_the_nearer_end():
    a, b = trained_pair()
    key = "1.num_batches_tracked"
    assert a.state_dict()[key] == 0 and b.state_dict()[key] == 1
    assert interpolate_weights(a, b, 0.49)[key] == 0 and interpolate_weights(a, b, 0.5)[key] == 1
    assert interpolate_weights(a, b, 0.3)[key].dtype == torch.long


def test_a_linear_model_mixes_its_outputs_linearly_and_a_nonlinear_one_does_not():
    torch.manual_seed(0)
    a, b = nn.Linear(6, 4), nn.Linear(6, 4)
    x = torch.randn(9, 6)
    for alpha in (0.1, 0.5, 0.8):
        mixed = wise_ft(a, b, alpha)
        torch.testing.assert_close(mixed(x), (1 - alpha) * a(x) + alpha * b(x), atol=1e-6, rtol=1e-6)
    # control: through a ReLU the same identity fails, so the check above can fail
    deep_a, deep_b = (nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)) for _ in range(2))
    mixed = wise_ft(deep_a, deep_b, 0.5)
    gap = (mixed(x) - 0.5 * deep_a(x) - 0.5 * deep_b(x)).abs().max()
    assert gap > 1e-3


@settings(max_examples=30, deadline=None)
@given(alpha=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_every_mixture_lies_between_its_endpoints(alpha, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = {"x": torch.randn(50, generator=g)}, {"x": torch.randn(50, generator=g)}
    mixed = interpolate_weights(a, b, alpha)["x"]
    low, high = torch.minimum(a["x"], b["x"]), torch.maximum(a["x"], b["x"])
    assert bool(((mixed >= low - 1e-6) & (mixed <= high + 1e-6)).all())
    torch.testing.assert_close(mixed, a["x"] + alpha * (b["x"] - a["x"]), atol=1e-6, rtol=1e-6)


def test_mismatched_models_name_the_first_bad_key():
    a = {"x": torch.zeros(3), "y": torch.zeros(2)}
    with pytest.raises(ValueError, match="'y' is not in b"):
        interpolate_weights(a, {"x": torch.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="'z' is not in a"):
        interpolate_weights(a, {**a, "z": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match=r"key 'x'.*shape \(3,\).*shape \(4,\)"):
        interpolate_weights(a, {"x": torch.zeros(4), "y": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match="key 'y'.*torch.float64"):
        interpolate_weights(a, {"x": torch.zeros(3), "y": torch.zeros(2, dtype=torch.float64)}, 0.5)
    with pytest.raises(ValueError, match="'0.weight'"):
        interpolate_weights(small_net(0), nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                                        nn.Linear(8, 3)), 0.5)


def test_bad_alpha_and_bad_inputs():
    a, b = trained_pair()
    for alpha in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            interpolate_weights(a, b, alpha)
    for alpha in (True, "0.5", None):
        with pytest.raises(TypeError, match="alpha"):
            interpolate_weights(a, b, alpha)
    with pytest.raises(TypeError, match="a: expected an nn.Module or a state dict"):
        interpolate_weights([1, 2], b, 0.5)
    with pytest.raises(TypeError, match="b: expected"):
        interpolate_weights(a, {"x": [1.0]}, 0.5)
    with pytest.raises(TypeError, match="fine_tuned: expected a Sequential"):
        wise_ft(a, nn.Linear(5, 3), 0.5)


def test_wise_ft_leaves_its_inputs_alone():
    a, b = trained_pair()
    before = copy.deepcopy(a.state_dict()), copy.deepcopy(b.state_dict())
    mixed = wise_ft(a, b, 0.4)
    assert mixed is not a and not mixed.training
    for original, now in zip(before, (a.state_dict(), b.state_dict())):
        assert all(torch.equal(original[k], now[k]) for k in original)
    with torch.no_grad():
        mixed[0].weight.add_(1.0)
    assert torch.equal(a[0].weight, before[0]["0.weight"])


def test_the_zero_shot_head_reproduces_zero_shot_clip(tiny):
    model, tokenizer, images = tiny
    classifier = CLIPClassifier.from_zero_shot(model, tokenizer, CLASSES, ENSEMBLE_TEMPLATES)
    text = build_zero_shot_classifier(model, tokenizer, CLASSES, ENSEMBLE_TEMPLATES)
    assert classifier.num_classes == len(CLASSES) and not classifier.training
    predicted = classifier.predict(images)
    assert predicted.unique().numel() >= 2   # a test that a constant answer could not pass
    assert predicted.tolist() == zero_shot_predict(model, images, text).tolist()
    with torch.no_grad():
        expected = model.logit_scale.exp() * model.encode_image(images, normalize=True) @ text
        torch.testing.assert_close(classifier(images), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(classifier.head.bias, torch.zeros(len(CLASSES)))
    classifier.visual.conv1.weight.data.zero_()   # a copy: the CLIP is untouched
    assert model.visual.conv1.weight.abs().sum() > 0


def test_fine_tuning_lowers_the_loss_and_is_deterministic(tiny):
    model, tokenizer, images = tiny
    labels = torch.arange(len(images)) % len(CLASSES)
    runs = []
    for _ in range(2):
        classifier = CLIPClassifier.from_zero_shot(model, tokenizer, CLASSES)
        before = torch.nn.functional.cross_entropy(classifier(images), labels).item()
        losses = fine_tune(classifier, images, labels, steps=15, batch_size=20, lr=1e-2, seed=5, progress=False)
        after = torch.nn.functional.cross_entropy(classifier(images), labels).item()
        runs.append((losses, classifier.state_dict()))
    assert len(losses) == 15 and after < 0.5 * before, (before, after)
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert not classifier.training


def test_fine_tune_rejects_bad_input(tiny):
    model, tokenizer, images = tiny
    classifier = CLIPClassifier.from_zero_shot(model, tokenizer, CLASSES)
    labels = torch.zeros(len(images), dtype=torch.long)
    with pytest.raises(TypeError, match="classifier: expected a CLIPClassifier"):
        fine_tune(model, images, labels, progress=False)
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 3\]"):
        fine_tune(classifier, images, labels + 4, progress=False)
    with pytest.raises(TypeError, match="labels: expected a LongTensor"):
        fine_tune(classifier, images, labels.float(), progress=False)
    with pytest.raises(ValueError, match="labels: expected"):
        fine_tune(classifier, images, labels[:-1], progress=False)
    with pytest.raises(ValueError, match="batch_size: expected at most the number of images"):
        fine_tune(classifier, images, labels, batch_size=41, progress=False)
    with pytest.raises(ValueError, match="images: expected normalised float pixels"):
        fine_tune(classifier, images[:, :, :16], labels, progress=False)
    with pytest.raises(TypeError, match="images: expected normalised float pixels"):
        classifier.predict((images * 50).to(torch.uint8))
    with pytest.raises(ValueError, match="lr"):
        fine_tune(classifier, images, labels, batch_size=20, lr=0.0, progress=False)
