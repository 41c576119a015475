"""Ground-truth relevance for search queries, checked against the captions ShapesWorld writes."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.data import COLOURS, POSITIONS, SHAPES, SIZES, STYLES, ShapesWorld
from clip_tutorial.data.matching import QueryAttributes, matches, parse_query, relevance
from clip_tutorial.data.render import ShapeSpec
from clip_tutorial.data.shapesworld import SHAPE_SYNONYMS, SIZE_WORDS, STYLE_WORDS, TEMPLATES, WHERE_PHRASES


def _spec(**changes) -> ShapeSpec:
    base = dict(shape="circle", colour="red", size="small", position="center", style="filled",
                centre=(0.5, 0.5), rotation=0.0)
    return ShapeSpec(**{**base, **changes})


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(600, split="all", seed=11, styles=STYLES)


def test_every_caption_parses_to_its_own_objects_attributes(world):
    for caption, (spec,) in zip(world.captions, world.attributes):
        wanted = parse_query(caption)
        assert wanted.mentioned(), caption
        for name, value in wanted.mentioned().items():
            assert getattr(spec, name) == value, (caption, name)
        # every template names colour and shape; the others exactly when the template uses them
        assert wanted.colour == spec.colour and wanted.shape == spec.shape


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(TEMPLATES), st.sampled_from(list(COLOURS)), st.sampled_from(SHAPES),
       st.sampled_from(SIZES), st.sampled_from(POSITIONS), st.sampled_from(STYLES), st.integers(0, 99))
def test_parse_inverts_every_template_and_synonym(template, colour, shape, size, position, style, seed):
    rng = random.Random(seed)
    text = template.format(colour=colour, shape=rng.choice(SHAPE_SYNONYMS[shape]), size=rng.choice(SIZE_WORDS[size]),
                           where=WHERE_PHRASES[position], style=rng.choice(STYLE_WORDS[style]))
    got = parse_query(text.upper() if seed % 2 else text)
    assert got.colour == colour and got.shape == shape
    assert got.size == (size if "{size}" in template else None)
    assert got.position == (position if "{where}" in template else None)
    assert got.style == (style if "{style}" in template else None)


def test_matches_requires_every_mentioned_attribute():
    spec = _spec(size="large", position="top left", style="outline")
    assert matches("a red circle", spec) and matches("a big hollow red circle in the top left", spec)
    assert not matches("a small red circle", spec) and not matches("a red circle at the top", spec)
    assert not matches("a blue circle", spec) and not matches("a red box", spec)
    assert matches("anything at all", spec), "a query that names nothing matches every object"
    assert matches(QueryAttributes(colour="red"), spec)


def test_relevance_equals_matches_for_every_pair(world):
    queries = world.captions[:40] + ["a red circle", "a hollow box in the top left", "a striped star"]
    got = relevance(queries, world.attributes)
    assert got.dtype == torch.bool and got.shape == (len(queries), len(world))
    expected = torch.tensor([[any(matches(q, s) for s in objects) for objects in world.attributes] for q in queries])
    assert torch.equal(got, expected)
    assert got[torch.arange(40), torch.arange(40)].all(), "a caption is relevant to its own image"


def test_relevance_in_scenes_needs_one_object_with_all_attributes():
    scenes = [[_spec(colour="red", shape="circle"), _spec(colour="blue", shape="square")],
              [_spec(colour="red", shape="square")], [_spec(colour="blue", shape="circle")]]
    got = relevance(["a red circle", "a blue square", "a red square", "a square", "a red"], scenes)
    assert got.tolist() == [[True, False, False], [True, False, False], [False, True, False],
                            [True, True, False], [True, True, False]]


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="at most one colour"):
        parse_query("a red circle left of a blue square")
    with pytest.raises(TypeError, match="query"):
        parse_query(3)
    with pytest.raises(ValueError, match="colour: expected None or one of"):
        QueryAttributes(colour="crimson")
    with pytest.raises(TypeError, match="spec"):
        matches("a red circle", "red circle")
    with pytest.raises(ValueError, match="queries"):
        relevance([], [[_spec()]])
    with pytest.raises(ValueError, match="attributes"):
        relevance(["a red circle"], [])
    with pytest.raises(ValueError, match=r"attributes\[0\]"):
        relevance(["a red circle"], [[]])
    with pytest.raises(TypeError, match=r"queries\[1\]"):
        relevance(["a red circle", 5], [[_spec()]])
