"""Checks for "predict, then run" and "break it and explain" exercises.

The reader writes down a prediction (a number, or the letter of a choice) before running anything.
The check then runs the experiment itself, so the right answer is measured, not stored, and says
how the prediction compares, with the explanation that makes the result make sense.

Explained in Chapter 1 (section "Summary and exercises"); every later chapter's exercises use it too.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from clip_tutorial.core.checks import check_callable, check_number
from .core import CheckResult, NotANumber, as_number, ask_first, report

__all__ = ["check_estimate", "check_choice", "percentage_hint"]


def check_estimate(prediction: Any, measure: Callable[[], float], *, name: str, tolerance: float,
                   explanation: str, unit: str = "", verbose: bool = True) -> CheckResult:
    """Compare a numeric ``prediction`` with what ``measure()`` finds when it runs the experiment.

    ``None`` (the notebook's stub, not yet filled in) gets a reminder and a falsy result, not an error.

    Args:
        prediction: the reader's number (a float, an int or a one-element tensor).
        measure: runs the experiment and returns the measured value.
        name: the exercise's name, used in the feedback.
        tolerance: how far (absolute) the prediction may be from the measurement.
        explanation: why the measured value is what it is; shown after the verdict either way.
        unit: appended to the numbers in the feedback (e.g. ``" nats"``).
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when the prediction is within ``tolerance``.

    Raises:
        TypeError: if ``prediction`` or ``tolerance`` is not one number, or ``measure`` is not callable.
        ValueError: if ``tolerance`` is not a positive finite number.
    """
    check_callable("measure", measure, "a function")
    check_number("tolerance", tolerance, 0, low_open=True)
    if prediction is None:
        return ask_first(name, "prediction", verbose)
    try:
        guess = as_number(prediction, "your prediction")
    except NotANumber as err:
        raise TypeError(f"prediction: {err}") from None
    if not math.isfinite(guess):
        raise ValueError(f"prediction: expected a finite number, got {guess}")
    measured = float(measure())
    passed = abs(guess - measured) <= tolerance
    verdict = "✅" if passed else "❌"
    message = (f"{verdict} {name}: you predicted {guess:.4g}{unit}; the experiment measured {measured:.4g}{unit} "
               f"({'within' if passed else 'outside'} ±{tolerance:g}).\n{explanation}")
    return report(CheckResult(passed, message, name), verbose)


def check_choice(answer: Any, measure: Callable[[], str], choices: Mapping[str, str], *, name: str,
                 explanation: str, verbose: bool = True) -> CheckResult:
    """Compare the letter the reader chose with the one that ``measure()`` finds true by experiment.

    ``None`` (the notebook's stub, not yet filled in) gets a reminder and a falsy result, not an error.

    Args:
        answer: the reader's letter, e.g. ``"b"`` (case and surrounding spaces are ignored).
        measure: runs the experiment and returns the letter of the choice that it shows to be true.
        choices: letter -> the statement it stands for.
        name: the exercise's name, used in the feedback.
        explanation: why the right choice is right; shown after the verdict either way.
        verbose: print the feedback.

    Returns:
        A :class:`~clip_tutorial.exercises.CheckResult`, truthy when ``answer`` is the measured choice.

    Raises:
        TypeError: if ``answer`` is not a string or ``measure`` is not callable.
        ValueError: if ``answer`` is not one of the letters of ``choices``.
    """
    check_callable("measure", measure, "a function")
    if answer is None:
        return ask_first(name, f"answer ({', '.join(repr(c) for c in choices)})", verbose)
    if not isinstance(answer, str):
        raise TypeError(f"answer: expected one of the letters {', '.join(choices)} as a string, got a {type(answer).__name__}")
    letter = answer.strip().lower()
    if letter not in choices:
        raise ValueError(f"answer: expected one of {', '.join(repr(c) for c in choices)}, got {answer!r}")
    truth = measure()
    if truth not in choices:
        raise RuntimeError(f"{name}: the experiment returned {truth!r}, which is not one of the choices")
    passed = letter == truth
    lines = [f"{'✅' if passed else '❌'} {name}: you chose ({letter}) {choices[letter]}."]
    if not passed:
        lines.append(f"The experiment shows ({truth}): {choices[truth]}.")
    lines.append(explanation)
    return report(CheckResult(passed, "\n".join(lines), name), verbose)


def percentage_hint(result: CheckResult, prediction: Any, quantity: str) -> CheckResult:
    """``result`` with a reminder added when a failed prediction of a fraction looks like a percentage.

    Explained in Chapter 5 (section "Summary and exercises"). A prediction between 1 and 100 of a
    quantity that lies in [0, 1] was most likely written in percent.
    """
    if result or not 1 < as_number(prediction, "your prediction") <= 100:
        return result
    return CheckResult(False, f"{result.message}\nGive the {quantity} as a fraction between 0 and 1 "
                       "(0.5 rather than 50).", result.name)
