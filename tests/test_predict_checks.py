"""The checks behind "predict, then run" and "break it and explain" exercises."""
from __future__ import annotations

import math

import pytest
import torch

from clip_tutorial.exercises.predict import check_choice, check_estimate


def test_estimate_passes_within_tolerance_and_fails_outside(capsys):
    measured = lambda: math.log(64)  # noqa: E731
    assert check_estimate(4.2, measured, name="loss", tolerance=0.1, explanation="log N")
    assert "✅" in capsys.readouterr().out
    result = check_estimate(2.0, measured, name="loss", tolerance=0.1, explanation="log N", verbose=False)
    assert not result and "4.159" in result.message and "log N" in result.message


def test_estimate_accepts_a_one_element_tensor():
    assert check_estimate(torch.tensor([3.0]), lambda: 3.05, name="x", tolerance=0.1, explanation="", verbose=False)


def test_an_unanswered_prediction_gets_a_reminder_not_an_error(capsys):
    ran = []
    result = check_estimate(None, lambda: ran.append(1) or 1.0, name="x", tolerance=0.1, explanation="")
    assert not result and "write your prediction first" in capsys.readouterr().out and not ran
    assert not check_choice(None, lambda: "a", CHOICES, name="q", explanation="", verbose=False)


def test_long_feedback_is_printed_within_the_column(capsys):
    check_estimate(1.0, lambda: 1.0, name="x", tolerance=0.1, explanation="word " * 60)
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 88


@pytest.mark.parametrize("prediction, error", [("four", TypeError), (float("nan"), ValueError)])
def test_estimate_names_a_bad_prediction(prediction, error):
    with pytest.raises(error, match="prediction"):
        check_estimate(prediction, lambda: 1.0, name="x", tolerance=0.1, explanation="")


def test_estimate_names_a_bad_tolerance_or_measure():
    with pytest.raises(ValueError, match="tolerance"):
        check_estimate(1.0, lambda: 1.0, name="x", tolerance=0, explanation="")
    with pytest.raises(TypeError, match="measure"):
        check_estimate(1.0, 1.0, name="x", tolerance=0.1, explanation="")


CHOICES = {"a": "it goes up", "b": "it goes down", "c": "it stays"}


def test_choice_compares_with_the_measured_letter():
    assert check_choice(" B ", lambda: "b", CHOICES, name="q", explanation="why", verbose=False)
    result = check_choice("a", lambda: "b", CHOICES, name="q", explanation="why", verbose=False)
    assert not result and "(b): it goes down" in result.message


def test_choice_names_a_bad_answer():
    with pytest.raises(ValueError, match="answer"):
        check_choice("d", lambda: "b", CHOICES, name="q", explanation="")
    with pytest.raises(TypeError, match="answer"):
        check_choice(2, lambda: "b", CHOICES, name="q", explanation="")
