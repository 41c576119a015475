"""Checks for the book's exercises: write a function, then let a check compare it with the reference.

In a notebook::

    from clip_tutorial.exercises import ch1

    def cosine_similarity(image_features, text_features):
        ...  # your code

    ch1.check_cosine_similarity(cosine_similarity)

The check prints ✅ or ❌ with an explanation and returns a :class:`CheckResult`, truthy when your
function passed. Each chapter's checks live in ``clip_tutorial.exercises.ch1`` … ``ch5``, and
each of those modules lists its exercises, in the book's order, as ``EXERCISES``: some ask for a
function, others for a prediction made before running an experiment, or for the diagnosis of
something broken. :func:`check_function` is the general machinery they share; :func:`check_estimate` and
:func:`check_choice` check a prediction against an experiment they run. Solutions are not in the
notebooks: :func:`show_solution` prints one on request (see :mod:`clip_tutorial.exercises.registry`).

Explained in Chapter 1 (section "Summary and exercises").
"""
from . import ch1, ch2, ch3, ch4, ch5, ch6, ch7
from .core import CheckResult, Hint, check_function
from .predict import check_choice, check_estimate
from .registry import Exercise, exercises, show_solution, verify_solution

__all__ = ["CheckResult", "Hint", "check_function", "check_choice", "check_estimate", "Exercise", "exercises",
           "show_solution", "verify_solution", "ch1", "ch2", "ch3", "ch4", "ch5", "ch6", "ch7"]
