"""Tests of multi-label tagging against direct encoder calls, brute force and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_clip
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from clip_tutorial.apps.calibration import calibrate_threshold
from clip_tutorial.data import ShapesWorld
from clip_tutorial.data.render import COLOURS, POSITIONS, SHAPES
from clip_tutorial.data.shapesworld import vocabulary
from clip_tutorial.apps.tagging import (Tag, build_tag_embeddings, calibrate_tags, catalogue_tags, predict_tags,
                                   tag_labels, tag_metrics, tag_scores, tag_templates)


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_clip(12, seed=5)


@pytest.fixture(scope="module")
def catalogue():
    return ShapesWorld(300, split="all", seed=123, max_objects=2)


def test_catalogue_tags_cover_every_value_and_drop_unseen_styles():
    tags = catalogue_tags()
    assert len(tags) == len(COLOURS) + len(SHAPES) + 2 + 2 + len(POSITIONS) == 29
    assert Tag("style", "striped") not in tags and Tag("style", "striped") in catalogue_tags(styles=["striped"])
    assert [t.value for t in catalogue_tags(["shape"])] == list(SHAPES)
    assert Tag("style", "outline").word == "hollow" and Tag("position", "top left").word == "in the top left"


def test_every_prompt_is_in_vocabulary_and_fits_the_context(tiny):
    known = set(vocabulary())
    for tag in catalogue_tags():
        for template in tag_templates(tag.attribute):
            words = template.format(tag.word).split()
            assert set(words) <= known, (tag, template)
            assert len(words) + 2 <= 12, "start + words + end must fit the shipped models' context of 12"


def test_tag_embeddings_are_ensembles_of_their_prompts(tiny):
    model, tokenizer = tiny
    tags = [Tag("position", "top"), Tag("colour", "red"), Tag("shape", "star"), Tag("size", "small")]
    embeddings = build_tag_embeddings(model, tokenizer, tags)
    assert embeddings.shape == (model.config.embed_dim, 4)
    with torch.no_grad():
        for j, tag in enumerate(tags):
            prompts = [t.format(tag.word) for t in tag_templates(tag.attribute)]
            mean = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1).mean(dim=0)
            torch.testing.assert_close(embeddings[:, j], F.normalize(mean, dim=0), atol=1e-6, rtol=1e-5)


def test_tag_labels_match_brute_force_over_objects(catalogue):
    tags = catalogue_tags()
    labels = tag_labels(catalogue.attributes, tags)
    for i, objects in enumerate(catalogue.attributes):
        for j, tag in enumerate(tags):
            assert bool(labels[i, j]) == any(getattr(o, tag.attribute) == tag.value for o in objects)
    single = [objects[:1] for objects in catalogue.attributes]
    per_attribute = tag_labels(single, tags).view(len(single), -1)
    assert (per_attribute[:, :8].sum(dim=1) == 1).all(), "a single object has exactly one colour"


def test_relative_scores_are_softmax_within_each_attribute():
    tags = catalogue_tags(["colour", "size"])
    features = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    embeddings = F.normalize(torch.randn(16, len(tags), generator=torch.Generator().manual_seed(1)), dim=0)
    raw = tag_scores(features, embeddings)
    torch.testing.assert_close(raw, features @ embeddings)
    relative = tag_scores(features, embeddings, tags, relative=True, logit_scale=20.0)
    torch.testing.assert_close(relative[:, :8], torch.softmax(20 * raw[:, :8], dim=1))
    torch.testing.assert_close(relative[:, 8:], torch.softmax(20 * raw[:, 8:], dim=1))


def test_calibration_prediction_and_metrics_match_sklearn():
    generator = torch.Generator().manual_seed(2)
    labels = torch.rand(400, 5, generator=generator) < 0.3
    scores = labels.float() * 0.8 + torch.rand(400, 5, generator=generator)
    tags = catalogue_tags(["size", "style"]) + [Tag("colour", "red")]
    calibrated = calibrate_tags(scores[:200], labels[:200], target=0.9, criterion="precision")
    for j in range(5):
        assert calibrated[j] == calibrate_threshold(scores[:200, j], labels[:200, j], target=0.9)
    predicted = predict_tags(scores[200:], calibrated)
    thresholds = torch.tensor([c.threshold for c in calibrated])
    assert torch.equal(predicted, scores[200:].double() >= thresholds.double())
    rows = tag_metrics(scores[200:], labels[200:], tags, calibrated)
    for j, row in enumerate(rows):
        truth, guess = labels[200:, j].numpy(), predicted[:, j].numpy()
        assert row.tag == tags[j] and row.support == int(truth.sum())
        assert row.precision == pytest.approx(precision_score(truth, guess, zero_division=1.0))
        assert row.recall == pytest.approx(recall_score(truth, guess))
        assert row.auc == pytest.approx(roc_auc_score(truth, scores[200:, j].numpy()))
        assert 0 <= row.f1 <= 1


def test_tags_without_negatives_get_nan_auc():
    scores, labels = torch.rand(10, 1), torch.ones(10, 1, dtype=torch.bool)
    (row,) = tag_metrics(scores, labels, [Tag("colour", "red")], [0.5])
    assert np.isnan(row.auc) and row.recall == float((scores >= 0.5).float().mean())


@pytest.mark.parametrize("call, error, words", [
    (lambda: Tag("texture", "red"), ValueError, "attribute"),
    (lambda: Tag("colour", "orange"), ValueError, "value of colour"),
    (lambda: catalogue_tags("colour"), TypeError, "attributes"),
    (lambda: catalogue_tags([]), ValueError, "attributes"),
    (lambda: catalogue_tags(styles=["wavy"]), ValueError, "styles"),
    (lambda: tag_templates("texture"), ValueError, "attribute"),
    (lambda: tag_labels([], catalogue_tags()), ValueError, "attributes"),
    (lambda: tag_labels([[]], catalogue_tags()), ValueError, r"attributes\[0\]"),
    (lambda: tag_labels([["red"]], catalogue_tags()), TypeError, "ShapeSpec"),
    (lambda: tag_labels([[]], ["red"]), TypeError, "Tag"),
    (lambda: tag_labels([[]], [Tag("colour", "red")] * 2), ValueError, "distinct"),
    (lambda: tag_scores(torch.ones(2, 4), torch.ones(5, 3)), ValueError, "tag_embeddings"),
    (lambda: tag_scores(torch.ones(2, 4, dtype=torch.long), torch.ones(4, 3)), TypeError, "image_features"),
    (lambda: tag_scores(torch.ones(2, 4), torch.ones(4, 1), relative=True), ValueError, "tags"),
    (lambda: tag_scores(torch.ones(2, 4), torch.ones(4, 1), [Tag("colour", "red")], True, 0.0), ValueError,
     "logit_scale"),
    (lambda: calibrate_tags(torch.ones(4, 2), torch.ones(4, 3)), ValueError, "labels"),
    (lambda: predict_tags(torch.ones(4, 2), [0.5]), ValueError, "thresholds"),
    (lambda: predict_tags(torch.ones(4, 2), ["a", "b"]), TypeError, "thresholds"),
    (lambda: tag_metrics(torch.ones(4, 2), torch.ones(4, 2), [Tag("colour", "red")], [0, 0]), ValueError, "tags"),
])
def test_bad_input_is_named(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_bad_tags_for_build_tag_embeddings_are_named(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="tags: expected a non-empty list"):
        build_tag_embeddings(model, tokenizer, [])
    with pytest.raises(TypeError, match="tags: expected Tag objects"):
        build_tag_embeddings(model, tokenizer, ["red"])
    with pytest.raises(ValueError, match="distinct"):
        build_tag_embeddings(model, tokenizer, [Tag("shape", "star")] * 2)
