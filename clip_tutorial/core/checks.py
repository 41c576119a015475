"""Argument checks shared by the whole package: every bad input gets an error that names the argument,
what was expected and what arrived ("name: expected X, got Y").

Each check returns the value it accepted (converted where that is useful: an ``int`` for a NumPy
integer, a ``float`` pair for a range), so that a function's first lines can read
``n = check_int("n", n, minimum=1)`` and the maths follows. ``bool`` is refused wherever a number
is expected: ``True`` is an ``int`` to Python but never what a caller meant.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["describe", "check_type", "check_callable", "check_int", "check_positive_int", "check_number",
           "check_choice", "check_subset", "check_range", "check_sequence", "check_tensor"]


def describe(value: object) -> str:
    """A short description of ``value`` for an error message: a tensor's shape and dtype, else its type and repr."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def check_type(name: str, value: Any, types: type | tuple[type, ...], expected: str | None = None) -> Any:
    """Return ``value`` if it is an instance of ``types``, else raise a ``TypeError`` naming ``name``.

    ``expected`` words what was expected (default: the type names).
    """
    if not isinstance(value, types):
        if expected is None:
            names = [t.__name__ for t in (types if isinstance(types, tuple) else (types,))]
            expected = "a " + " or ".join(names)
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    return value


def check_callable(name: str, value: Any, expected: str = "a callable") -> Any:
    """Return ``value`` if it can be called, else raise a ``TypeError`` naming ``name``."""
    if not callable(value):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    return value


def check_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None, *,
              expected: str | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer in ``[minimum, maximum]`` (``None``: unbounded).

    ``expected`` words what was expected, for both errors (default: ``"an int"``, ``"a positive int"``,
    ``"an int in [0, 9]"``, ... from the bounds).

    Raises:
        TypeError: if ``value`` is not an integer (``bool`` is refused too).
        ValueError: if ``value`` is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected {expected or 'an int'}, got {describe(value)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if expected is not None:
            bound = expected
        elif maximum is None:
            bound = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        elif minimum is None:
            bound = f"an int <= {maximum}"
        else:
            bound = f"an int in [{minimum}, {maximum}]"
        raise ValueError(f"{name}: expected {bound}, got {value}")
    return int(value)


def check_positive_int(name: str, value: object, *, expected: str | None = None) -> int:
    """Return ``value`` if it is an int ``>= 1`` (``bool`` refused); ``check_int(name, value, minimum=1)``."""
    return check_int(name, value, minimum=1, expected=expected)


def check_number(name: str, value: object, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """Return ``value`` as a ``float`` if it is a real number within the given bounds.

    Args:
        name: the argument's name, for the message.
        value: what the caller passed (Python or NumPy numbers, or a one-element tensor).
        low, high: bounds, ``None`` for none.
        low_open, high_open: exclude the bound itself (``low_open=True``: ``value > low``).
        finite: refuse ``nan`` and ``inf``.

    Raises:
        TypeError: if ``value`` is not a number (``bool`` is refused too).
        ValueError: if it is out of bounds or not finite.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {describe(value)}")
    number = float(value)
    if math.isnan(number) or (finite and math.isinf(number)):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high}")
        raise ValueError(f"{name}: expected a number {' and '.join(parts)}, got {value!r}")
    return number


def check_choice(name: str, value: object, options: Sequence[str], *, expected: str | None = None) -> str:
    """Return ``value`` if it is one of the strings ``options``.

    ``expected`` words what was expected (default: ``"one of [...]"``, the options listed).

    Raises:
        TypeError: if ``value`` is not a string.
        ValueError: if ``value`` is not one of ``options`` (they are listed).
    """
    if not isinstance(value, str):
        wanted = expected or f"a str, one of {list(options)}"
        raise TypeError(f"{name}: expected {wanted}, got {describe(value)}")
    if value not in options:
        raise ValueError(f"{name}: expected {expected or f'one of {list(options)}'}, got {value!r}")
    return value


def check_subset(name: str, value: object, options: Sequence[str], *, iterable: bool = False) -> tuple[str, ...]:
    """Return the strings of ``value`` as a tuple in the order of ``options``, of which they must be a nonempty subset.

    The order of ``value`` and any repeats in it do not matter, so two callers that list the same
    choices differently get the same tuple (ShapesWorld's styles, sizes and positions; a
    generator recipe's). ``iterable`` also accepts a set or another iterable, not only a sequence.

    Raises:
        TypeError: if ``value`` is not a sequence (an iterable with ``iterable``), or an item is not a str.
        ValueError: if ``value`` is empty or an item is not one of ``options``.
    """
    items = check_sequence(name, value, iterable=iterable, nonempty=True,
                           expected=f"a list of names from {list(options)}")
    given = {check_choice(name, item, options) for item in items}
    return tuple(option for option in options if option in given)


def check_range(name: str, value: object, upper: float | None = None) -> tuple[float, float]:
    """Return ``(low, high)`` as floats if ``value`` is a pair with ``0 < low <= high`` (``<= upper`` if given).

    Raises:
        TypeError: if ``value`` is not a pair of numbers.
        ValueError: if the pair is out of order or out of bounds.
    """
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{name}: expected a pair of numbers (low, high), got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (0 < low <= high) or (upper is not None and high > upper) or not math.isfinite(high):
        bound = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name}: expected 0 < low <= high{bound}, got {value!r}")
    return low, high


def check_sequence(name: str, value: object, of: type | tuple[type, ...] | None = None, *, nonempty: bool = False,
                   iterable: bool = False, expected: str | None = None) -> list:
    """Return ``value`` as a new list if it is a sequence (a list, a tuple, ...) whose items are all ``of``.

    A ``str`` or ``bytes`` is refused: it is a sequence of characters to Python, but a caller who
    passes one where a list is expected meant a list of one.

    Args:
        name: the argument's name, for the message; an item's message names ``name[i]``.
        value: what the caller passed.
        of: the type (or types) every item must have, ``None`` for any.
        nonempty: require at least one item.
        iterable: accept any iterable (a set, a generator, ...), not only a sequence; it is read once.
        expected: how to word the expectation (default: ``"a list"`` or ``"a list of str"``, from ``of``).

    Raises:
        TypeError: if ``value`` is not a sequence (an iterable with ``iterable``), or an item is not ``of``.
        ValueError: if it is empty and ``nonempty`` is set.
    """
    types = () if of is None else of if isinstance(of, tuple) else (of,)
    item = "a " + " or ".join(t.__name__ for t in types) if types else None
    if expected is None:
        expected = "a list" + (f" of {' or '.join(t.__name__ for t in types)}" if types else "")
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable if iterable else Sequence):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}")
    items = list(value)
    if nonempty and not items:
        raise ValueError(f"{name}: expected {expected} with at least one element, got {describe(value)}")
    for i, entry in enumerate(items):
        if types and not isinstance(entry, types):
            raise TypeError(f"{name}[{i}]: expected {item}, got {describe(entry)}")
    return items


def check_tensor(name: str, value: object, *, ndim: int | None = None, shape: Sequence[int | str | None] | None = None,
                 floating: bool = False, dtype: torch.dtype | tuple[torch.dtype, ...] | None = None,
                 nonempty: bool = False, what: str | None = None) -> torch.Tensor:
    """Return ``value`` if it is a ``torch.Tensor`` of the expected rank, shape and kind.

    Args:
        name: the argument's name, for the message.
        value: what the caller passed.
        ndim: the number of dimensions required, ``None`` for any.
        shape: the shape required (implies ``ndim``): an int fixes a dimension, ``None`` leaves it free, and a
            str names it: dimensions with the same name must be equal (``("N", "N")`` is a square matrix).
        floating: require a floating-point dtype.
        dtype: require this dtype, or one of these dtypes.
        nonempty: require at least one element.
        what: how to word the expectation (e.g. ``"image features (N, D)"``); default from the rest.

    Raises:
        TypeError: if ``value`` is not a tensor, or its dtype is not the one required.
        ValueError: if its rank, shape or size is wrong.
    """
    dtypes = None if dtype is None else dtype if isinstance(dtype, tuple) else (dtype,)
    if shape is not None:
        ndim = len(shape)
    if what is None:
        dims = ", ".join("*" if s is None else str(s) for s in shape) if shape is not None else None
        what = ("a floating-point tensor" if floating else "a tensor") + (
            f" of shape ({dims})" if dims is not None else f" with {ndim} dimensions" if ndim is not None else "")
        if dtypes is not None:
            what += f"{' and' if dims is not None or ndim is not None else ' of'} dtype " + " or ".join(
                str(d) for d in dtypes)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected {what}, got {describe(value)}")
    if (floating and not value.is_floating_point()) or (dtypes is not None and value.dtype not in dtypes):
        raise TypeError(f"{name}: expected {what}, got {describe(value)}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name}: expected {what}, got {describe(value)}")
    if shape is not None:
        named: dict[str, int] = {}
        for s, v in zip(shape, value.shape):
            if (isinstance(s, str) and named.setdefault(s, v) != v) or (isinstance(s, int) and s != v):
                raise ValueError(f"{name}: expected {what}, got {describe(value)}")
    if nonempty and value.numel() == 0:
        raise ValueError(f"{name}: expected {what} with at least one element, got {describe(value)}")
    return value
