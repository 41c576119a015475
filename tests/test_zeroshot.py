"""Tests of zero-shot classification against direct computations with the model's encoders."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_clip

from clip_tutorial.evaluation.zeroshot import (DEFAULT_TEMPLATES, ENSEMBLE_TEMPLATES, build_zero_shot_classifier, encode_images,
                                    encode_texts, ensemble_prompt_embeddings, zero_shot_accuracy,
                                    zero_shot_predict)

CLASSES = ["red circle", "blue square", "green star", "black heart", "pink cross"]
TEMPLATES = ["a photo of a {}", "a drawing of a {}", "there is a {}"]


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = make_tiny_clip(12, seed=3)
    with torch.no_grad():  # make the towers less uniform than at initialisation
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    images = torch.randn(21, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    return model, tokenizer, images


def test_classifier_is_the_renormalised_mean_of_normalised_prompt_embeddings(tiny):
    model, tokenizer, _ = tiny
    classifier = build_zero_shot_classifier(model, tokenizer, CLASSES, TEMPLATES)
    assert classifier.shape == (model.config.embed_dim, len(CLASSES))
    with torch.no_grad():
        for c, name in enumerate(CLASSES):
            per_template = F.normalize(model.encode_text(tokenizer([t.format(name) for t in TEMPLATES])), dim=-1)
            expected = F.normalize(per_template.mean(dim=0), dim=0)
            torch.testing.assert_close(classifier[:, c], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(classifier.norm(dim=0), torch.ones(len(CLASSES)))


def test_ensemble_templates_match_a_loop_over_templates_with_encode_text(tiny):
    model, tokenizer, _ = tiny
    classifier = build_zero_shot_classifier(model, tokenizer, CLASSES, ENSEMBLE_TEMPLATES)
    with torch.no_grad():
        columns = []
        for name in CLASSES:
            total = torch.zeros(model.config.embed_dim)
            for template in ENSEMBLE_TEMPLATES:
                embedding = model.encode_text(tokenizer([template.format(name)]))[0]
                total += embedding / embedding.norm()
            mean = total / len(ENSEMBLE_TEMPLATES)
            columns.append(mean / mean.norm())
    torch.testing.assert_close(classifier, torch.stack(columns, dim=1), atol=1e-6, rtol=1e-5)
    unk = tokenizer.unk_id
    assert all(unk not in tokenizer.encode_one(t.format(name)) for t in ENSEMBLE_TEMPLATES for name in CLASSES)


def test_single_template_is_the_normalised_prompt_embedding(tiny):
    model, tokenizer, _ = tiny
    assert DEFAULT_TEMPLATES == ("a photo of a {}",)
    with torch.no_grad():
        expected = F.normalize(model.encode_text(tokenizer([f"a photo of a {name}" for name in CLASSES])), dim=-1).t()
    torch.testing.assert_close(build_zero_shot_classifier(model, tokenizer, CLASSES), expected, atol=1e-6, rtol=1e-5)
    braces = build_zero_shot_classifier(model, tokenizer, CLASSES, ["{{a}} photo of a {}"])
    assert braces.shape == expected.shape  # an escaped brace is literal text, not a placeholder


def test_predictions_and_accuracy_match_a_direct_computation(tiny):
    model, tokenizer, images = tiny
    classifier = build_zero_shot_classifier(model, tokenizer, CLASSES)
    with torch.no_grad():
        logits = F.normalize(model.encode_image(images), dim=-1) @ classifier
    expected = logits.argmax(dim=1)
    assert torch.equal(zero_shot_predict(model, images, classifier), expected)
    labels = torch.randint(0, len(CLASSES), (images.shape[0],), generator=torch.Generator().manual_seed(1))
    labels[:5] = expected[:5]
    assert zero_shot_accuracy(model, images, labels, classifier) == pytest.approx(
        (expected == labels).float().mean().item())


def test_batched_encoding_does_not_change_the_embeddings(tiny):
    model, tokenizer, images = tiny
    torch.testing.assert_close(encode_images(model, images, batch_size=4), encode_images(model, images),
                               atol=1e-6, rtol=1e-5)
    texts = [f"a photo of a {name}" for name in CLASSES]
    torch.testing.assert_close(encode_texts(model, tokenizer, texts, batch_size=2),
                               encode_texts(model, tokenizer, texts), atol=1e-6, rtol=1e-5)
    assert not model.training


@pytest.mark.parametrize("classnames, templates, error, match", [
    ([], TEMPLATES, ValueError, "classnames"), ("red circle", TEMPLATES, TypeError, "classnames"),
    (CLASSES, [], ValueError, "templates"), (CLASSES, ["a photo of a thing"], ValueError, "templates"),
    (CLASSES, "a photo of a {}", TypeError, "templates"), (CLASSES, ["a photo of a {{}}"], ValueError, "templates"),
    (CLASSES, ["a {} and a {}"], ValueError, "templates"),
    (CLASSES, ["a photo of a {classname}"], ValueError, "templates"),
    (CLASSES, ["a photo of a {} {"], ValueError, "templates"),
])
def test_bad_classifier_input(tiny, classnames, templates, error, match):
    model, tokenizer, _ = tiny
    with pytest.raises(error, match=match):
        build_zero_shot_classifier(model, tokenizer, classnames, templates)


def test_template_that_is_not_a_string(tiny):
    model, tokenizer, _ = tiny
    with pytest.raises(TypeError, match="templates"):
        build_zero_shot_classifier(model, tokenizer, CLASSES, ["a photo of a {}", 3])


def test_bad_prediction_input(tiny):
    model, tokenizer, images = tiny
    classifier = build_zero_shot_classifier(model, tokenizer, CLASSES)
    with pytest.raises(ValueError, match="classifier"):
        zero_shot_predict(model, images, classifier.t())
    with pytest.raises(ValueError, match="labels"):
        zero_shot_accuracy(model, images, torch.zeros(3, dtype=torch.long), classifier)
    with pytest.raises(ValueError, match="texts"):
        encode_texts(model, tokenizer, [])
    with pytest.raises(ValueError, match="images"):
        encode_images(model, torch.zeros(0, 3, 32, 32))
    with pytest.raises(TypeError, match="images"):
        encode_images(model, [[0.0]])


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)])
def test_encode_images_rejects_a_bad_batch_size(batch_size, error):
    model, _ = make_tiny_clip(12, seed=1)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with pytest.raises(error, match=r"batch_size: expected a positive integer, got"):
        encode_images(model, images, batch_size=batch_size)


def test_encode_images_with_progress_equals_without():
    model, _ = make_tiny_clip(12, seed=1)
    images = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(encode_images(model, images, batch_size=3, progress=True), encode_images(model, images, batch_size=3))


def test_ensemble_prompt_embeddings_is_normalise_mean_normalise():
    x = torch.randn(5, 3, 8, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([(v / v.norm(dim=1, keepdim=True)).mean(0) for v in x])
    expected = (expected / expected.norm(dim=1, keepdim=True)).t()
    torch.testing.assert_close(ensemble_prompt_embeddings(x), expected)
    with pytest.raises(ValueError, match=r"features: expected a floating-point \(num_classes, num_templates"):
        ensemble_prompt_embeddings(x[0])


def test_encode_images_normalises_uint8_pixels_batch_by_batch(tiny):
    # uint8 pixels (ShapesWorld.images) give exactly the embeddings of the normalised float images.
    from clip_tutorial import ShapesWorld

    world = ShapesWorld(20, seed=4)
    model = tiny[0]
    from_floats = encode_images(model, world.tensors(), batch_size=7)
    from_pixels = encode_images(model, world.images, batch_size=7)
    assert torch.equal(from_pixels, from_floats)
    with pytest.raises(ValueError, match="pixels"):
        encode_images(model, world.images[:, :2])
