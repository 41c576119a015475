"""Tests of ShapesWorld's ``spurious`` argument and of clip_tutorial.apps.bias (Chapter 6.4)."""
from __future__ import annotations

import hashlib
import math
from collections import Counter

import pytest
import torch

from clip_tutorial.apps.bias import attribute_confusion, colour_gaps, fit_class_offsets, spurious_rates
from clip_tutorial.data import COLOURS, SHAPES, ShapesWorld, heldout_combinations

HELD = heldout_combinations()  # (red, heart) is not among them; (pink, heart) and (blue, heart) are
HEART_COLOURS = [c for c in COLOURS if (c, "heart") not in HELD]


def _digests(world: ShapesWorld) -> tuple[str, str]:
    images = hashlib.sha256(world.images.numpy().tobytes()).hexdigest()[:16]
    captions = hashlib.sha256("\n".join(world.captions).encode()).hexdigest()[:16]
    return images, captions


# Computed before ``spurious`` existed: without it, the data must stay byte for byte the same
# (the shipped models were trained on it).
@pytest.mark.parametrize("kwargs, expected", [
    (dict(n=300, seed=0), ("69ea684685d83980", "27b1a17c443d0f4d")),
    (dict(n=200, seed=3, max_objects=4), ("cc89deba92743fb9", "db18b22cfa972408")),
    (dict(n=100, split="heldout", seed=1), ("002221278e844ebe", "96654727eaef5b64")),
    (dict(n=100, split="all", seed=2, styles=("filled", "outline", "striped")),
     ("dfcc9ca70f5fec99", "e52186091dcc15f3")),
])
def test_default_data_are_unchanged(kwargs, expected):
    assert _digests(ShapesWorld(**kwargs)) == expected
    assert _digests(ShapesWorld(**kwargs, spurious=None)) == expected


def _heart_colours(world: ShapesWorld) -> Counter:
    return Counter(o[0].colour for o in world.attributes if len(o) == 1 and o[0].shape == "heart")


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9, 1.0])
def test_spurious_fraction_of_single_hearts_are_red(fraction):
    world = ShapesWorld(4000, seed=4, image_size=16, spurious=("heart", "red", fraction))
    colours = _heart_colours(world)
    n = sum(colours.values())
    # four standard errors of a binomial proportion (and exact at 0 and 1)
    assert abs(colours["red"] / n - fraction) <= 4 * math.sqrt(fraction * (1 - fraction) / n)
    assert set(colours) <= set(HEART_COLOURS)
    if fraction < 1:  # the others are spread evenly over the heart's other training colours
        others = [colours[c] for c in HEART_COLOURS if c != "red"]
        expected = (n - colours["red"]) / len(others)
        assert all(abs(k - expected) <= 4 * math.sqrt(expected) for k in others), colours
    for objects, caption in zip(world.attributes, world.captions):
        assert objects[0].colour in caption.split()


def test_spurious_changes_only_the_colours_of_that_shape():
    plain = ShapesWorld(1500, seed=5, image_size=16)
    biased = ShapesWorld(1500, seed=5, image_size=16, spurious=("heart", "red", 0.9))
    shapes = Counter(o[0].shape for o in plain.attributes)
    assert shapes == Counter(o[0].shape for o in biased.attributes)  # the same shapes, in the same places
    changed = 0
    for a, b, ia, ib, ca, cb in zip(plain.attributes, biased.attributes, plain.images, biased.images,
                                    plain.captions, biased.captions):
        if a[0].shape != "heart":
            assert a == b and ca == cb and torch.equal(ia, ib)
        else:  # same object and caption apart from the colour
            assert a[0].position == b[0].position and a[0].size == b[0].size and a[0].style == b[0].style
            assert ca.replace(a[0].colour, b[0].colour) == cb
            changed += a[0].colour != b[0].colour
    assert changed > 0


def test_spurious_datasets_are_nested_in_the_fraction():
    low = ShapesWorld(2000, seed=6, image_size=16, spurious=("heart", "red", 0.3))
    high = ShapesWorld(2000, seed=6, image_size=16, spurious=("heart", "red", 0.8))
    for a, b in zip(low.attributes, high.attributes):
        if a[0].shape == "heart" and a[0].colour == "red":
            assert b[0].colour == "red"  # a larger fraction only recolours more hearts red
        elif a[0].shape == "heart" and b[0].colour != "red":
            assert a[0].colour == b[0].colour


def test_spurious_leaves_scenes_of_several_objects_alone():
    world = ShapesWorld(1500, seed=7, image_size=16, max_objects=3, spurious=("heart", "red", 1.0))
    singles = [o[0].colour for o in world.attributes if len(o) == 1 and o[0].shape == "heart"]
    several = [x.colour for o in world.attributes if len(o) > 1 for x in o if x.shape == "heart"]
    assert singles and set(singles) == {"red"}
    assert len(set(several)) >= 3


def test_spurious_is_deterministic_and_shown_in_repr():
    a = ShapesWorld(300, seed=8, image_size=16, spurious=["star", "yellow", 0.7])
    b = ShapesWorld(300, seed=8, image_size=16, spurious=("star", "yellow", 0.7))
    assert a.captions == b.captions and torch.equal(a.images, b.images)
    assert a.spurious == ("star", "yellow", 0.7) and "spurious=('star', 'yellow', 0.7)" in repr(a)
    assert ShapesWorld(5).spurious is None and "spurious" not in repr(ShapesWorld(5))


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(spurious=("heart", "red")), TypeError, "spurious"),
    (dict(spurious="heart"), TypeError, "spurious"),
    (dict(spurious=("hart", "red", 0.5)), ValueError, "spurious shape"),
    (dict(spurious=("heart", "crimson", 0.5)), ValueError, "spurious colour"),
    (dict(spurious=("heart", "red", 1.5)), ValueError, "spurious fraction"),
    (dict(spurious=("heart", "red", -0.1)), ValueError, "spurious fraction"),
    (dict(spurious=("heart", "red", "half")), TypeError, "spurious fraction"),
    (dict(spurious=("heart", "pink", 0.5)), ValueError, "held-out pair"),
    (dict(spurious=("heart", "red", 0.5), split="heldout"), ValueError, "split"),
    (dict(spurious=("heart", "red", 0.5), heldout=[(c, "heart") for c in COLOURS if c != "red"]),
     ValueError, "another colour"),
])
def test_spurious_rejects_bad_input(kwargs, error, words):
    with pytest.raises(error, match=words):
        ShapesWorld(10, **kwargs)


def test_spurious_fraction_one_needs_no_other_colour():
    held = [(c, "heart") for c in COLOURS if c != "red"]
    world = ShapesWorld(300, image_size=16, heldout=held, spurious=("heart", "red", 1.0))
    assert set(_heart_colours(world)) == {"red"}


def _pair(colour: str, shape: str) -> int:
    return list(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape)


def test_spurious_rates_on_a_hand_made_example():
    truth = [("green", "heart"), ("green", "heart"), ("cyan", "heart"), ("cyan", "heart"),   # other-coloured hearts
             ("red", "circle"), ("red", "star"), ("red", "star"),                              # red non-hearts
             ("green", "circle"), ("blue", "star"), ("blue", "star"), ("black", "square"),      # neither
             ("red", "heart")]                                                                  # counted nowhere
    said = [("red", "heart"), ("green", "heart"), ("red", "circle"), ("cyan", "star"),
            ("red", "heart"), ("red", "heart"), ("red", "star"),
            ("red", "circle"), ("blue", "heart"), ("blue", "star"), ("black", "square"),
            ("green", "circle")]
    labels = torch.tensor([_pair(*p) for p in truth])
    predicted = torch.tensor([_pair(*p) for p in said])
    rates = spurious_rates(predicted, labels, "heart", "red")
    assert rates.colour_for_shape == pytest.approx(2 / 4)   # two of the four hearts called red
    assert rates.shape_for_colour == pytest.approx(2 / 3)   # two of the three red objects called hearts
    assert rates.colour_baseline == pytest.approx(1 / 4)    # the green circle called red
    assert rates.shape_baseline == pytest.approx(1 / 4)     # one blue star called a heart
    assert rates.counts == {"colour_for_shape": 4, "colour_baseline": 4, "shape_for_colour": 3, "shape_baseline": 4}
    perfect = spurious_rates(labels, labels, "heart", "red")
    assert (perfect.colour_for_shape, perfect.shape_for_colour, perfect.colour_baseline) == (0, 0, 0)
    empty = spurious_rates(labels[:4], labels[:4], "heart", "red")
    assert math.isnan(empty.shape_for_colour) and empty.counts["shape_for_colour"] == 0


def test_colour_gaps_on_a_hand_made_example():
    classes = [("red", "heart"), ("green", "heart"), ("cyan", "heart"), ("red", "star"), ("green", "star")]
    labels = torch.tensor([_pair("green", "heart"), _pair("cyan", "heart"), _pair("green", "star"),
                           _pair("red", "heart"), _pair("blue", "heart"), _pair("green", "circle")])
    similarity = torch.tensor([[0.5, 0.9, 0.1, 0.0, 0.0],    # green heart: 0.9 - 0.5
                               [0.6, 0.0, 0.8, 0.0, 0.0],    # cyan heart: 0.8 - 0.6
                               [0.0, 0.0, 0.0, 0.2, 0.7],    # green star: 0.7 - 0.2
                               [0.9, 0.0, 0.0, 0.0, 0.0],    # red heart: not counted
                               [0.0, 0.0, 0.0, 0.0, 0.0],    # blue heart: its pair is no class
                               [0.0, 0.0, 0.0, 0.0, 0.0]])   # circle: no (red, circle) class
    gaps = colour_gaps(similarity, labels, classes, "red")
    assert gaps == {"star": pytest.approx(0.5), "heart": pytest.approx((0.4 + 0.2) / 2)}
    with pytest.raises(ValueError, match="classes"):
        colour_gaps(similarity, labels, classes[:4] + [("red", "heart")], "red")
    with pytest.raises(ValueError, match="similarity"):
        colour_gaps(similarity[:, :4], labels, classes, "red")
    with pytest.raises(ValueError, match="colour"):
        colour_gaps(similarity, labels, classes, "crimson")


def test_attribute_confusion_matches_a_brute_force_count():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 64, (300,), generator=gen)
    predicted = torch.randint(0, 64, (300,), generator=gen)
    where = torch.rand(300, generator=gen) < 0.5
    for kind, part in (("colour", lambda y: y // 8), ("shape", lambda y: y % 8)):
        table = attribute_confusion(predicted, labels, kind, where=where)
        brute = torch.zeros(8, 8, dtype=torch.long)
        for y, p, w in zip(labels.tolist(), predicted.tolist(), where.tolist()):
            if w:
                brute[part(y), part(p)] += 1
        assert torch.equal(table, brute)
    assert attribute_confusion(labels, labels).trace() == 300


def test_fit_class_offsets_on_identical_rows_undoes_the_logits():
    # every image has the logits (2, 0, -1): the only offsets that make the mean softmax uniform
    # make every row uniform, so b = -logits + constant; the logits' mean is 1/3, so b = (-5/3, 1/3, 4/3)
    logits = torch.tensor([[2.0, 0.0, -1.0]]).repeat(5, 1)
    offsets = fit_class_offsets(logits)
    assert torch.allclose(offsets, torch.tensor([-5 / 3, 1 / 3, 4 / 3]), atol=1e-5)
    target = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    skewed = fit_class_offsets(logits, target=target)
    assert torch.allclose((logits[0] + skewed).softmax(0).double(), target, atol=1e-5)


def test_fit_class_offsets_balances_the_predictions_of_a_biased_classifier():
    # two balanced classes; a classifier that adds 2 to class 0 calls most of class 1 "0"
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(2000) % 2
    logits = 3.0 * torch.nn.functional.one_hot(labels, 2).float() + torch.randn(2000, 2, generator=gen)
    logits[:, 0] += 2.0
    offsets = fit_class_offsets(logits[:1000])
    assert offsets[0] - offsets[1] == pytest.approx(-2.0, abs=0.25)  # the added 2 is found again
    mean = (logits[:1000] + offsets).softmax(1).mean(0)
    assert torch.allclose(mean, torch.full((2,), 0.5), atol=1e-5)
    before = (logits[1000:].argmax(1) == labels[1000:]).float().mean()
    after = ((logits[1000:] + offsets).argmax(1) == labels[1000:]).float().mean()
    assert after > before + 0.1
    assert fit_class_offsets(logits[:10]).dtype == torch.float32 and abs(float(offsets.sum())) < 1e-4


@pytest.mark.parametrize("call, error, words", [
    (lambda: spurious_rates([1, 2], torch.tensor([1, 2]), "heart", "red"), TypeError, "predicted"),
    (lambda: spurious_rates(torch.tensor([1]), torch.tensor([1, 2]), "heart", "red"), ValueError, "predicted"),
    (lambda: spurious_rates(torch.tensor([1, 64]), torch.tensor([1, 2]), "heart", "red"), ValueError, "63"),
    (lambda: spurious_rates(torch.tensor([1.0]), torch.tensor([1]), "heart", "red"), TypeError, "integer"),
    (lambda: spurious_rates(torch.tensor([1]), torch.tensor([1]), "hearts", "red"), ValueError, "shape"),
    (lambda: spurious_rates(torch.tensor([1]), torch.tensor([1]), "heart", "crimson"), ValueError, "colour"),
    (lambda: attribute_confusion(torch.tensor([1]), torch.tensor([1]), "size"), ValueError, "kind"),
    (lambda: attribute_confusion(torch.tensor([1]), torch.tensor([1]), where=torch.tensor([1])), TypeError, "where"),
    (lambda: fit_class_offsets(torch.ones(3, 2, dtype=torch.long)), TypeError, "logits"),
    (lambda: fit_class_offsets(torch.ones(4)), ValueError, "logits"),
    (lambda: fit_class_offsets(torch.ones(3, 2), target=torch.tensor([0.7, 0.7])), ValueError, "target"),
    (lambda: fit_class_offsets(torch.ones(3, 2), target=torch.ones(3) / 3), ValueError, "target"),
    (lambda: fit_class_offsets(torch.ones(3, 2), iterations=0), ValueError, "iterations"),
    (lambda: fit_class_offsets(torch.ones(3, 2), tolerance=0), ValueError, "tolerance"),
])
def test_bias_functions_reject_bad_input(call, error, words):
    with pytest.raises(error, match=words):
        call()
