"""Tests of composed queries and interpolation against independent formulas and geometric properties."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clip_tutorial.apps.query_arithmetic import compose_query, interpolate, slerp


def _unit(seed: int, *shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def _slerp_by_rotation(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Reference: rotate a by t * angle in the plane of a and b (Gram-Schmidt), no sine ratio."""
    a, b = F.normalize(a.double(), dim=0), F.normalize(b.double(), dim=0)
    angle = math.acos(max(-1.0, min(1.0, float(a @ b))))
    ortho = F.normalize(b - (a @ b) * a, dim=0)
    return math.cos(t * angle) * a + math.sin(t * angle) * ortho


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), dim=st.integers(2, 64), t=st.floats(-0.5, 1.5))
def test_slerp_equals_a_rotation_in_the_plane_of_a_and_b(seed, dim, t):
    a, b = 3.0 * _unit(seed, dim), 0.5 * _unit(seed + 1, dim)  # lengths must not matter
    # Nearly equal or nearly opposite directions have no well-defined plane (slerp refuses antipodes);
    # in two dimensions random pairs come close to that often. Those cases have their own tests.
    assume(abs(float(F.normalize(a, dim=0) @ F.normalize(b, dim=0))) < 0.999)
    torch.testing.assert_close(slerp(a.float(), b.float(), t).double(), _slerp_by_rotation(a, b, t), atol=1e-5, rtol=0)


def test_slerp_ends_unit_norm_and_constant_angular_steps():
    a, b = _unit(0, 64).float(), _unit(1, 64).float()
    path = slerp(a, b, torch.linspace(0, 1, 11))
    assert path.shape == (11, 64)
    torch.testing.assert_close(path[0], a, atol=1e-6, rtol=0)
    torch.testing.assert_close(path[-1], b, atol=1e-6, rtol=0)
    torch.testing.assert_close(path.norm(dim=1), torch.ones(11), atol=1e-6, rtol=0)
    steps = torch.acos((path[1:] * path[:-1]).sum(dim=1).clamp(-1, 1).double())
    total = math.acos(float(a.double() @ b.double()))
    torch.testing.assert_close(steps, torch.full((10,), total / 10, dtype=torch.float64), atol=1e-4, rtol=0)


def test_slerp_of_equal_vectors_and_scalar_shape():
    a = _unit(2, 8).float()
    torch.testing.assert_close(slerp(a, 2 * a, 0.3), a, atol=1e-6, rtol=0)
    assert slerp(a, _unit(3, 8).float(), 0.5).shape == (8,)


def test_interpolate_lerp_is_normalised_straight_line_and_differs_from_slerp_in_the_middle():
    a, b = _unit(4, 16).float(), _unit(5, 16).float()
    line = interpolate(a, b, steps=5, method="lerp")
    expected = torch.stack([F.normalize((1 - t) * a + t * b, dim=0) for t in (0.0, 0.25, 0.5, 0.75, 1.0)])
    torch.testing.assert_close(line, expected, atol=1e-6, rtol=0)
    arc = interpolate(a, b, steps=5)
    torch.testing.assert_close(arc[2], line[2], atol=1e-6, rtol=0)  # the midpoint is the same direction
    assert (arc[1] - line[1]).norm() > 1e-3, "lerp moves slower near the ends than slerp"


def test_compose_query_matches_the_formula_and_moves_towards_add():
    images, add, remove = _unit(6, 5, 32).float(), 2 * _unit(7, 5, 32).float(), _unit(8, 32).float()
    query = compose_query(images, add=add, remove=remove, weight=0.7)
    expected = F.normalize(images + 0.7 * (F.normalize(add, dim=-1) - remove), dim=-1)
    torch.testing.assert_close(query, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(compose_query(3 * images, weight=0.0), images, atol=1e-6, rtol=0)
    single = F.normalize(images[0] + F.normalize(add[0], dim=0), dim=0)
    torch.testing.assert_close(compose_query(images[0], add=add[0]), single)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), w1=st.floats(0.0, 5.0), w2=st.floats(0.0, 5.0))
def test_more_weight_never_lowers_the_similarity_to_add(seed, w1, w2):
    image, text = _unit(seed, 16).float(), _unit(seed + 7, 16).float()
    low, high = sorted((w1, w2))
    near = lambda w: float(compose_query(image, add=text, weight=w) @ text)  # noqa: E731
    assert near(high) >= near(low) - 1e-6


@pytest.mark.parametrize("call, error, words", [
    (lambda v: compose_query([1.0, 2.0]), TypeError, "image_features"),
    (lambda v: compose_query(v, add=torch.zeros(8)), ValueError, "add"),
    (lambda v: compose_query(v, remove=torch.ones(7)), ValueError, "remove"),
    (lambda v: compose_query(v.expand(2, 8), add=torch.ones(3, 8)), ValueError, "add"),
    (lambda v: compose_query(v, weight="1"), TypeError, "weight"),
    (lambda v: compose_query(v, add=v, remove=-v, weight=-0.5), ValueError, "weight"),
    (lambda v: slerp(v, -v, 0.5), ValueError, "opposite"),
    (lambda v: slerp(v, v[:4], 0.5), ValueError, "shape"),
    (lambda v: slerp(v, v, float("nan")), ValueError, "t"),
    (lambda v: interpolate(v, v, steps=1), ValueError, "steps"),
    (lambda v: interpolate(v, v, steps=2.0), TypeError, "steps"),
    (lambda v: interpolate(v, v, method="linear"), ValueError, "method"),
    (lambda v: interpolate(v, -v, method="lerp"), ValueError, "opposite"),
])
def test_bad_input_is_named(call, error, words):
    with pytest.raises(error, match=words):
        call(_unit(9, 8).float())
