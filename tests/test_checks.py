"""The shared argument validators of ``clip_tutorial.core.checks``: what each accepts, what it refuses and how it says so.

Every refusal must name the argument first ("name: expected X, got Y"), raise ``TypeError`` for a wrong type and
``ValueError`` for a wrong value, and refuse ``bool`` wherever a number is expected.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clip_tutorial.core.checks import (check_callable, check_choice, check_int, check_number, check_positive_int,
                                       check_range, check_sequence, check_subset, check_tensor, check_type,
                                       describe)

NAMES = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)
NUMPY_INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)


def raises(error: type[Exception], name: str):
    """``pytest.raises`` for a message that starts with the argument's name."""
    return pytest.raises(error, match=f"^{re.escape(name)}: expected ")


# ------------------------------------------------------------------ describe


def test_describe_says_what_arrived():
    assert describe(torch.zeros(2, 3, dtype=torch.int64)) == "a tensor of shape (2, 3) and dtype torch.int64"
    assert describe(np.zeros((4,), dtype=np.uint8)) == "an array of shape (4,) and dtype uint8"
    assert describe(2.5) == "float 2.5"
    assert describe("x" * 100) == "str '" + "x" * 56 + "..."  # long reprs are cut to 60 characters
    assert len(describe(list(range(1000)))) == len("list ") + 60


# ------------------------------------------------------------------ check_int and check_positive_int


@given(name=NAMES, value=st.integers(-10**6, 10**6), low=st.none() | st.integers(-100, 100),
       span=st.none() | st.integers(0, 200))
def test_check_int_accepts_exactly_the_ints_in_range(name, value, low, span):
    high = None if span is None else (0 if low is None else low) + span
    inside = (low is None or value >= low) and (high is None or value <= high)
    if inside:
        result = check_int(name, value, low, high)
        assert result == value and type(result) is int
    else:
        with raises(ValueError, name) as info:
            check_int(name, value, low, high)
        assert str(info.value).endswith(f", got {value}")


@given(value=st.integers(-100, 100), kind=st.sampled_from(NUMPY_INTS))
def test_check_int_accepts_numpy_integers_and_returns_a_python_int(value, kind):
    assume(np.iinfo(kind).min <= value <= np.iinfo(kind).max)
    result = check_int("n", kind(value))
    assert result == value and type(result) is int


@pytest.mark.parametrize("bad", [True, False, np.bool_(True), 3.0, 2.5, "3", None, [3], torch.tensor(3)])
def test_check_int_refuses_non_ints_bool_included(bad):
    with raises(TypeError, "count"):
        check_int("count", bad)
    with raises(TypeError, "count"):
        check_positive_int("count", bad)


@pytest.mark.parametrize("low, high, value, wording", [
    (1, None, 0, "a positive int"), (0, None, -1, "an int >= 0"), (None, 5, 6, "an int <= 5"),
    (1, 4, 5, r"an int in \[1, 4\]"), (2, None, 1, "an int >= 2"),
])
def test_check_int_words_its_bounds(low, high, value, wording):
    with pytest.raises(ValueError, match=f"^k: expected {wording}, got {value}$"):
        check_int("k", value, low, high)


def test_expected_rewords_both_errors_of_check_int():
    wording = "an int >= 2 (room for start and end tokens)"
    with pytest.raises(TypeError, match=re.escape(f"length: expected {wording}, got float 2.5")):
        check_int("length", 2.5, 2, expected=wording)
    with pytest.raises(ValueError, match=re.escape(f"length: expected {wording}, got 1")):
        check_int("length", 1, 2, expected=wording)
    with pytest.raises(ValueError, match=re.escape("size: expected a positive int (e.g. 224), got 0")):
        check_positive_int("size", 0, expected="a positive int (e.g. 224)")


@given(value=st.integers(-50, 50))
def test_check_positive_int_is_check_int_from_one(value):
    if value >= 1:
        assert check_positive_int("n", value) == value
    else:
        with pytest.raises(ValueError, match=f"^n: expected a positive int, got {value}$"):
            check_positive_int("n", value)


# ------------------------------------------------------------------ check_number


FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(value=FINITE, low=st.none() | FINITE, high=st.none() | FINITE, low_open=st.booleans(),
       high_open=st.booleans())
def test_check_number_bounds_open_and_closed(value, low, high, low_open, high_open):
    ok_low = low is None or (value > low if low_open else value >= low)
    ok_high = high is None or (value < high if high_open else value <= high)
    if ok_low and ok_high:
        assert check_number("x", value, low, high, low_open=low_open, high_open=high_open) == value
    else:
        with raises(ValueError, "x"):
            check_number("x", value, low, high, low_open=low_open, high_open=high_open)


def test_check_number_at_the_bound_itself():
    assert check_number("t", 0.0, 0.0) == 0.0 and check_number("t", 1, high=1) == 1.0
    with pytest.raises(ValueError, match=r"^t: expected a number > 0\.0, got 0\.0$"):
        check_number("t", 0.0, 0.0, low_open=True)
    with pytest.raises(ValueError, match=r"^t: expected a number >= 0 and < 1, got 1$"):
        check_number("t", 1, 0, 1, high_open=True)


def test_check_number_refuses_nan_always_and_inf_unless_asked():
    for bad in (math.nan, np.float32("nan"), torch.tensor(math.nan)):
        with raises(ValueError, "scale"):
            check_number("scale", bad)
        with raises(ValueError, "scale"):
            check_number("scale", bad, finite=False)
    with pytest.raises(ValueError, match="^scale: expected a finite number, got inf$"):
        check_number("scale", math.inf)
    assert check_number("scale", -math.inf, finite=False) == -math.inf
    assert check_number("scale", math.inf, 0, finite=False) == math.inf


@pytest.mark.parametrize("good, expected", [
    (3, 3.0), (np.int64(-2), -2.0), (np.float32(0.5), 0.5), (torch.tensor(2.5), 2.5), (torch.tensor([[7]]), 7.0),
])
def test_check_number_accepts_numbers_of_every_kind_and_returns_a_float(good, expected):
    result = check_number("w", good)
    assert result == expected and type(result) is float


@pytest.mark.parametrize("bad", [True, np.bool_(False), torch.tensor(True), "1.0", None, [1.0], torch.ones(2),
                                 1 + 2j])
def test_check_number_refuses_what_is_not_one_real_number(bad):
    with raises(TypeError, "weight"):
        check_number("weight", bad)


# ------------------------------------------------------------------ check_choice, check_type, check_callable


@given(name=NAMES, value=st.text(max_size=8))
def test_check_choice_accepts_only_the_options(name, value):
    options = ("filled", "outline", "striped")
    if value in options:
        assert check_choice(name, value, options) == value
    else:
        with pytest.raises(ValueError, match=re.escape(f"{name}: expected one of {list(options)}, got {value!r}")):
            check_choice(name, value, options)


def test_check_choice_refuses_non_strings_and_can_be_reworded():
    with pytest.raises(TypeError, match=r"^style: expected a str, one of \['a', 'b'\], got int 3$"):
        check_choice("style", 3, ("a", "b"))
    with pytest.raises(ValueError, match="^captions: expected 'first' or 'all', got 'some'$"):
        check_choice("captions", "some", ("first", "all"), expected="'first' or 'all'")
    with pytest.raises(TypeError, match="^captions: expected 'first' or 'all', got NoneType None$"):
        check_choice("captions", None, ("first", "all"), expected="'first' or 'all'")


def test_check_type_and_check_callable():
    assert check_type("path", "a.txt", (str, bytes)) == "a.txt"
    with pytest.raises(TypeError, match=r"^path: expected a str or bytes, got int 3$"):
        check_type("path", 3, (str, bytes))
    with pytest.raises(TypeError, match=r"^model: expected a torch\.nn\.Module, got list \[\]$"):
        check_type("model", [], torch.nn.Module, expected="a torch.nn.Module")
    assert check_callable("f", len) is len
    with pytest.raises(TypeError, match="^transform: expected a callable or None, got int 3$"):
        check_callable("transform", 3, "a callable or None")


# ------------------------------------------------------------------ check_range


@given(low=st.floats(1e-6, 1e6), extra=st.floats(0, 1e6))
def test_check_range_accepts_ordered_positive_pairs(low, extra):
    high = low + extra
    assert check_range("scale", (low, high)) == (low, high)
    assert check_range("scale", [low, high]) == (low, high)


@pytest.mark.parametrize("bad, error", [
    ((0, 1), ValueError), ((-0.5, 1), ValueError), ((0.9, 0.5), ValueError), ((0.5, math.inf), ValueError),
    ((0.5, 1.5), ValueError), (0.5, TypeError), ("ab", TypeError), ((0.1, 0.2, 0.3), TypeError),
    ((True, 1), TypeError), ((0.1, "1"), TypeError),
])
def test_check_range_refuses_bad_pairs(bad, error):
    with raises(error, "scale"):
        check_range("scale", bad, upper=1.0)


# ------------------------------------------------------------------ check_sequence


@given(items=st.lists(st.text(max_size=5), max_size=6), kind=st.sampled_from([list, tuple]))
def test_check_sequence_returns_a_new_list_of_the_items(items, kind):
    given_value = kind(items)
    result = check_sequence("texts", given_value, str)
    assert result == items and type(result) is list and result is not given_value


def test_check_sequence_refuses_strings_and_unordered_collections():
    for bad in ("a red circle", b"bytes", {"a"}, None, 3):
        with raises(TypeError, "texts"):
            check_sequence("texts", bad, str)
    assert sorted(check_sequence("words", {"b", "a"}, str, iterable=True)) == ["a", "b"]
    assert check_sequence("words", (w for w in ["x", "y"]), iterable=True) == ["x", "y"]
    with raises(TypeError, "words"):
        check_sequence("words", "red green", iterable=True)


def test_check_sequence_names_the_bad_item_and_the_empty_list():
    with pytest.raises(TypeError, match=r"^queries\[1\]: expected a str or int, got float 2\.5$"):
        check_sequence("queries", ["a", 2.5], (str, int))
    with pytest.raises(ValueError, match=r"^texts: expected a list of str with at least one element, got list \[\]$"):
        check_sequence("texts", [], str, nonempty=True)
    assert check_sequence("texts", [], str) == []
    with pytest.raises(TypeError, match="^ks: expected positive ints, got int 5$"):
        check_sequence("ks", 5, expected="positive ints")


# ------------------------------------------------------------------ check_tensor


SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)


@given(shape=SHAPES, required=SHAPES)
def test_check_tensor_rank_and_exact_shape(shape, required):
    x = torch.zeros(shape)
    if len(shape) == len(required):
        assert check_tensor("x", x, ndim=len(required)) is x
    else:
        with raises(ValueError, "x"):
            check_tensor("x", x, ndim=len(required))
    if shape == required:
        assert check_tensor("x", x, shape=required) is x
    else:
        with pytest.raises(ValueError, match=re.escape("x: expected a tensor of shape ")) as info:
            check_tensor("x", x, shape=required)
        assert f"got a tensor of shape {shape}" in str(info.value)


@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=2).map(tuple))
def test_check_tensor_free_and_named_dimensions(shape):
    x = torch.zeros(shape)
    assert check_tensor("x", x, shape=(None, None)) is x
    assert check_tensor("x", x, shape=(shape[0], None)) is x
    if shape[0] == shape[1]:
        assert check_tensor("logits", x, shape=("N", "N")) is x
    else:
        with pytest.raises(ValueError, match=r"^logits: expected a tensor of shape \(N, N\), got"):
            check_tensor("logits", x, shape=("N", "N"))
    with raises(ValueError, "x"):
        check_tensor("x", x, shape=(shape[0] + 1, None))


def test_check_tensor_kind_and_dtype():
    ids = torch.zeros(2, 3, dtype=torch.long)
    assert check_tensor("ids", ids, dtype=(torch.int64, torch.int32)) is ids
    with pytest.raises(TypeError, match=r"^ids: expected a tensor of dtype torch\.int64 or torch\.int32, got "):
        check_tensor("ids", ids.float(), dtype=(torch.int64, torch.int32))
    with pytest.raises(TypeError, match=r"^mask: expected a tensor of shape \(2, 3\) and dtype torch\.bool, got"):
        check_tensor("mask", ids, shape=(2, 3), dtype=torch.bool)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        check_tensor("x", ids.to(dtype), floating=True)
    with pytest.raises(TypeError, match=r"^x: expected a floating-point tensor with 2 dimensions, got .*int64"):
        check_tensor("x", ids, ndim=2, floating=True)


def test_check_tensor_type_comes_before_rank_and_emptiness_last():
    for bad in ([[1.0]], np.zeros((2, 2)), 3.0, None):
        with raises(TypeError, "x"):
            check_tensor("x", bad, ndim=2)
    # A wrong dtype is reported as a TypeError even when the rank is wrong too.
    with raises(TypeError, "x"):
        check_tensor("x", torch.zeros(3, dtype=torch.long), ndim=2, floating=True)
    empty = torch.zeros(0, 8)
    assert check_tensor("x", empty, ndim=2) is empty
    with pytest.raises(ValueError, match=r"^x: expected features \(N, D\) with at least one element, got a tensor "
                                         r"of shape \(0, 8\)"):
        check_tensor("x", empty, ndim=2, nonempty=True, what="features (N, D)")


# ------------------------------------------------------------------ every validator names its argument


@settings(max_examples=30)
@given(name=NAMES)
def test_every_refusal_starts_with_the_argument_name(name):
    refusals = [
        (TypeError, lambda: check_type(name, 1, str)),
        (TypeError, lambda: check_callable(name, 1)),
        (TypeError, lambda: check_int(name, True)),
        (ValueError, lambda: check_int(name, 0, 1)),
        (ValueError, lambda: check_positive_int(name, -1)),
        (TypeError, lambda: check_number(name, "1")),
        (ValueError, lambda: check_number(name, math.nan)),
        (TypeError, lambda: check_choice(name, 1, ("a",))),
        (ValueError, lambda: check_choice(name, "b", ("a",))),
        (TypeError, lambda: check_range(name, 1)),
        (ValueError, lambda: check_range(name, (2, 1))),
        (TypeError, lambda: check_sequence(name, "abc")),
        (ValueError, lambda: check_sequence(name, [], nonempty=True)),
        (TypeError, lambda: check_tensor(name, [1])),
        (ValueError, lambda: check_tensor(name, torch.zeros(2), ndim=2)),
    ]
    for error, call in refusals:
        with raises(error, name):
            call()


# ------------------------------------------------------------------ check_subset
def test_check_subset_returns_the_options_order_whatever_the_order_and_repeats():
    options = ("small", "medium", "large")
    assert check_subset("sizes", ["large", "small", "large"], options) == ("small", "large")
    assert check_subset("sizes", {"medium"}, options, iterable=True) == ("medium",)


@pytest.mark.parametrize("value, kwargs, error, match", [
    ([], {}, ValueError, "sizes: expected a list of names from .* at least one element"),
    (["huge"], {}, ValueError, r"sizes: expected one of \['small', 'large'\], got 'huge'"),
    ([3], {}, TypeError, "sizes: expected a str"),
    ("small", {}, TypeError, "sizes: expected a list of names"),
    ({"small"}, {}, TypeError, "sizes: expected a list of names"),  # a set only with iterable=True
])
def test_check_subset_refuses_bad_input(value, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_subset("sizes", value, ("small", "large"), **kwargs)
