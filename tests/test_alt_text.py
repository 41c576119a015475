"""Tests of alt text by retrieval: describe, compose, parse and score, against direct computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_clip
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.apps.alt_text import (ATTRIBUTE_TEMPLATES, ATTRIBUTES, attribute_accuracy, compose_alt_text,
                                    describe_features, describe_images)
from clip_tutorial.data import COLOURS, POSITIONS, SHAPES, SIZES, STYLES, ShapesWorld, ShapeSpec
from clip_tutorial.data.matching import parse_query
from clip_tutorial.data.shapesworld import SIZE_WORDS, STYLE_WORDS, WHERE_PHRASES
from clip_tutorial.train.shipped import load_shipped
from clip_tutorial.evaluation.zeroshot import encode_images


@pytest.fixture(scope="module")
def tiny():
    """The shipped ch3-best model (trained, so that different images get different descriptions)."""
    trained = load_shipped("ch3-best", device="cpu")
    images = ShapesWorld(16, split="all", seed=9, styles=STYLES).tensors()
    return trained.model, trained.tokenizer, images


@pytest.fixture(scope="module")
def untrained():
    model, tokenizer = make_tiny_clip(12, seed=5)
    return model, tokenizer, ShapesWorld(4, split="all", seed=9).tensors()


def brute_force_description(image_feature, pairs, candidates, templates, embedding):
    """Score every candidate of one image, prompt by prompt, with the prompts' embeddings looked up."""
    def embed(prompts):
        mean = torch.stack([embedding[p] for p in prompts]).mean(dim=0)
        return mean / mean.norm()
    image = image_feature / image_feature.norm()
    scores = [image @ embed([t.format(f"{c} {s}") for t in templates["pair"]]) for c, s in pairs]
    colour, shape = pairs[int(torch.stack(scores).argmax())]
    out = {"colour": colour, "shape": shape}
    for attribute, (values, phrases) in candidates.items():
        scores = [image @ embed([t.format(phrase, colour=colour, shape=shape) for t in templates[attribute]])
                  for phrase in phrases]
        out[attribute] = values[int(torch.stack(scores).argmax())]
    return out


def test_descriptions_match_a_prompt_by_prompt_brute_force(tiny):
    model, tokenizer, images = tiny
    templates = {**ATTRIBUTE_TEMPLATES, "size": ("a {} {colour} {shape}", "a photo of a {} {colour} {shape}")}
    got = describe_images(model, tokenizer, images, styles=STYLES, templates={"size": templates["size"]})
    features = encode_images(model, images)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    candidates = {"size": (SIZES, [SIZE_WORDS[s][0] for s in SIZES]),
                  "style": (STYLES, [STYLE_WORDS[s][0] for s in STYLES]),
                  "position": (POSITIONS, [WHERE_PHRASES[p] for p in POSITIONS])}
    prompts = sorted({t.format(f"{c} {s}") for c, s in pairs for t in templates["pair"]}
                     | {t.format(phrase, colour=c, shape=s) for c, s in pairs for a, (_, phrases) in candidates.items()
                        for phrase in phrases for t in templates[a]})
    with torch.no_grad():  # every prompt embedded straight from the text tower and normalised
        embedding = dict(zip(prompts, F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)))
    for i in range(len(images)):
        assert got[i] == brute_force_description(features[i], pairs, candidates, templates, embedding), i
    assert len({(d["colour"], d["shape"]) for d in got}) > 1  # several pairs exercised


def test_candidate_lists_restrict_the_choices(untrained):
    model, tokenizer, images = untrained
    features = encode_images(model, images)
    pairs = [("red", "circle"), ("blue", "star")]
    got = describe_features(model, tokenizer, features, styles=["striped"], sizes=["small"], positions=["left", "top"],
                            pairs=pairs)
    assert {(d["colour"], d["shape"]) for d in got} <= set(pairs)
    assert {d["style"] for d in got} == {"striped"} and {d["size"] for d in got} == {"small"}
    assert {d["position"] for d in got} <= {"left", "top"}
    assert all(list(d) == ["colour", "shape", "size", "style", "position"] for d in got)


description_strategy = st.fixed_dictionaries(
    {"colour": st.sampled_from(list(COLOURS)), "shape": st.sampled_from(SHAPES)},
    optional={"size": st.sampled_from(SIZES), "style": st.sampled_from(STYLES),
              "position": st.sampled_from(POSITIONS)})


@settings(max_examples=100, deadline=None)
@given(description=description_strategy)
def test_parse_query_reads_back_what_compose_alt_text_wrote(description):
    sentence = compose_alt_text(description)
    assert sentence[0].isupper() and sentence.endswith(".")
    assert parse_query(sentence).mentioned() == description


def test_compose_alt_text_examples():
    assert compose_alt_text({"colour": "red", "shape": "circle"}) == "A red circle."
    full = {"size": "small", "style": "outline", "colour": "cyan", "shape": "heart", "position": "top left"}
    assert compose_alt_text(full) == "A small hollow cyan heart in the top left."


def test_attribute_accuracy_by_hand():
    truth = [ShapeSpec("circle", "red", "small", "top", "filled"),
             [ShapeSpec("star", "blue", "large", "left", "outline")],
             {"shape": "heart", "colour": "pink", "size": "large", "position": "center", "style": "striped"}]
    descriptions = [{"colour": "red", "shape": "circle", "size": "small", "style": "filled", "position": "top"},
                    {"colour": "blue", "shape": "heart", "size": "large", "style": "outline", "position": "left"},
                    {"colour": "pink", "shape": "heart"}]
    got = attribute_accuracy(descriptions, truth)
    assert got == pytest.approx({"size": 2 / 3, "style": 2 / 3, "colour": 1.0, "shape": 2 / 3, "position": 2 / 3,
                                 "all": 1 / 3})
    skipped = attribute_accuracy(descriptions, truth, skip_missing=True)
    assert skipped["size"] == 1.0 and skipped["shape"] == pytest.approx(2 / 3)
    assert skipped["all"] == pytest.approx(1 / 3)
    assert math.isnan(attribute_accuracy([{"colour": "red", "shape": "circle"}], truth[:1], skip_missing=True)["size"])
    assert list(got) == [*ATTRIBUTES, "all"]


@pytest.mark.parametrize("call, error, match", [
    (lambda: compose_alt_text({"colour": "red"}), ValueError, "missing \\['shape'\\]"),
    (lambda: compose_alt_text({"colour": "red", "shape": "oval"}), ValueError, "shape"),
    (lambda: compose_alt_text({"colour": "red", "shape": "circle", "mood": "happy"}), ValueError, "mood"),
    (lambda: compose_alt_text("a red circle"), TypeError, "description: expected a dict"),
    (lambda: attribute_accuracy([], []), ValueError, "descriptions: expected a non-empty"),
    (lambda: attribute_accuracy([{"colour": "red", "shape": "circle"}], []), ValueError, "truth: expected one entry"),
    (lambda: attribute_accuracy([{"colour": "red", "shape": "circle"}], [3]), TypeError, "truth: expected ShapeSpec"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_describe_arguments_are_named(untrained):
    model, tokenizer, images = untrained
    features = encode_images(model, images[:2])
    with pytest.raises(ValueError, match="styles"):
        describe_features(model, tokenizer, features, styles=["dotted"])
    with pytest.raises(ValueError, match="sizes: expected a non-empty"):
        describe_features(model, tokenizer, features, sizes=[])
    with pytest.raises(ValueError, match="has no '\\{\\}'"):
        describe_features(model, tokenizer, features, templates={"size": ["a {colour} {shape}"]})
    with pytest.raises(ValueError, match="templates: expected keys"):
        describe_features(model, tokenizer, features, templates={"mood": ["a {}"]})
    with pytest.raises(ValueError, match="image_features: expected a non-empty"):
        describe_features(model, tokenizer, features[:, :3])
    with pytest.raises(ValueError, match="pairs: expected \\(colour, shape\\) tuples"):
        describe_features(model, tokenizer, features, pairs=["red circle"])
    with pytest.raises(TypeError, match="model: expected a clip_tutorial.CLIP"):
        describe_features("model", tokenizer, features)
    with pytest.raises(ValueError, match="pairs colour"):
        describe_features(model, tokenizer, features, pairs=[("mauve", "circle")])


def test_bad_images_for_describe_images_are_named(untrained):
    model, tokenizer, images = untrained
    with pytest.raises(TypeError, match="images: expected a tensor"):
        describe_images(model, tokenizer, images.tolist())
    with pytest.raises(ValueError, match="images: expected a non-empty"):
        describe_images(model, tokenizer, images[:0])
    with pytest.raises(ValueError, match="batch_size"):
        describe_images(model, tokenizer, images[:2], batch_size=0)
