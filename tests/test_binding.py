"""Tests of clip_tutorial.apps.binding (Chapter 6.6): the probes' captions are true of their scenes and the false
ones use the same words, Winoground's scores and chance levels, bad input."""
from __future__ import annotations

import itertools

import pytest
import torch
from conftest import make_tiny_clip

from clip_tutorial.apps.binding import (CONTRASTS, WINOGROUND_CHANCE, binding_probe, winoground_probe,
                                        winoground_scores)
from clip_tutorial.data import COLOURS, RELATIONS, SHAPES, heldout_combinations, relation_caption
from clip_tutorial.data.negatives import swap_attributes

TRAIN_PAIRS = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in heldout_combinations(16, seed=0)]


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_clip(16)


def _objects(scene):
    return [(o.colour, o.shape) for o in scene]


@pytest.mark.parametrize("contrast", CONTRASTS)
def test_binding_probe_offers_the_true_caption_and_a_false_one_with_the_same_words(tiny, contrast):
    model, tokenizer = tiny
    result = binding_probe(model, tokenizer, n=24, seed=1, contrast=contrast, pairs=TRAIN_PAIRS)
    assert result.n == 24 and result.chance == 0.5 and result.name == f"binding ({contrast})"
    assert result.groups == [RELATIONS[i % 4] for i in range(24)]
    labels = result.labels.tolist()
    assert 0 < sum(labels) < 24  # both orders occur
    for scene, row, label, relation in zip(result.scenes, result.candidates, labels, result.groups):
        first, second = _objects(scene)
        assert first[0] != second[0] and first[1] != second[1]
        assert row[label] == relation_caption(first, relation, second)
        false = row[1 - label]
        assert false != row[label] and sorted(false.split()) == sorted(row[label].split())
        if contrast != "shuffle":
            assert false == swap_attributes(row[label], contrast)
        # neither caption names a combination outside the pairs
        swapped = [(second[0], first[1]), (first[0], second[1])]
        assert set(swapped) <= set(TRAIN_PAIRS)


def test_binding_probe_is_deterministic_and_scores_what_it_predicts(tiny):
    model, tokenizer = tiny
    a = binding_probe(model, tokenizer, n=16, seed=3)
    b = binding_probe(model, tokenizer, n=16, seed=3)
    assert a.candidates == b.candidates and torch.equal(a.images, b.images)
    assert a.accuracy == pytest.approx(float((a.predictions == a.labels).float().mean()))
    assert binding_probe(model, tokenizer, n=16, seed=4).candidates != a.candidates


def test_winoground_scores_on_hand_made_similarities():
    scores = torch.tensor([
        [[0.9, 0.1], [0.2, 0.8]],   # both tests pass
        [[0.9, 0.8], [0.95, 0.85]],  # caption 0 wins on both images, image 1 on both captions: both fail
        [[0.5, 0.4], [0.3, 0.6]],   # text passes; image: 0.5 > 0.3 and 0.6 > 0.4 -> passes
        [[0.5, 0.6], [0.4, 0.3]],   # caption 1 always wins on image 0 and caption 0 on image 1: both fail
        [[0.6, 0.5], [0.7, 0.8]],   # text passes; image: 0.6 > 0.7 fails
    ])
    passed = winoground_scores(scores)
    assert passed["text"].tolist() == [True, False, True, False, True]
    assert passed["image"].tolist() == [True, False, True, False, False]
    assert passed["group"].tolist() == [True, False, True, False, False]
    with pytest.raises(ValueError, match="scores"):
        winoground_scores(torch.zeros(3, 2, 3))


def test_winoground_chance_levels_by_enumerating_every_order_of_four_scores():
    orders = list(itertools.permutations(range(4)))
    scores = torch.tensor(orders, dtype=torch.float32).view(-1, 2, 2)
    passed = winoground_scores(scores)
    for key, chance in WINOGROUND_CHANCE.items():
        assert float(passed[key].float().mean()) == pytest.approx(chance)


@pytest.mark.parametrize("swap", ["colour", "shape"])
def test_winoground_twins_differ_only_in_the_swapped_attribute(tiny, swap):
    model, tokenizer = tiny
    result = winoground_probe(model, tokenizer, n=12, seed=2, swap=swap, pairs=TRAIN_PAIRS)
    assert result.scores.shape == (12, 2, 2) and result.images.shape == (12, 2, 3, 32, 32)
    assert result.chance == WINOGROUND_CHANCE
    assert result.group <= min(result.text, result.image)
    for (caption, twin), pair in zip(result.captions, result.images):
        assert twin == swap_attributes(caption, swap)
        assert not torch.equal(pair[0], pair[1])
        background = (pair[0].int() - pair[1].int()).abs().sum(0) == 0
        assert background.float().mean() > 0.6  # same background, same layout: most pixels are equal


def test_colour_twins_have_their_objects_at_the_same_places(tiny):
    model, tokenizer = tiny
    result = winoground_probe(model, tokenizer, n=6, seed=5, swap="colour")
    for pair in result.images:
        drawn = [(image.int() - 232).abs().sum(0) > 60 for image in pair]  # pixels far from the background grey
        assert (drawn[0] == drawn[1]).float().mean() > 0.97


@pytest.mark.parametrize("kwargs, error", [
    ({"contrast": "size"}, ValueError),
    ({"n": 0}, ValueError),
    ({"seed": -1}, ValueError),
    ({"pairs": [("red", "circle"), ("blue", "square")]}, ValueError),   # no swapped pair in the list
    ({"pairs": [("red", "circle")]}, ValueError),
    ({"pairs": "red circle"}, TypeError),
])
def test_binding_probe_refuses_bad_input(tiny, kwargs, error):
    model, tokenizer = tiny
    with pytest.raises(error):
        binding_probe(model, tokenizer, **{"n": 4, **kwargs})


def test_winoground_probe_refuses_bad_input(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="swap"):
        winoground_probe(model, tokenizer, n=4, swap="shuffle")
    with pytest.raises(TypeError, match="model"):
        winoground_probe("a model", tokenizer, n=4)
    with pytest.raises(TypeError, match="tokenizer"):
        winoground_probe(model, "a tokenizer", n=4)
