"""The book's exercises in one list each: what kind each is, its check, and its solution.

Every chapter module (``clip_tutorial.exercises.ch1`` and so on) declares ``EXERCISES``, a tuple
of :class:`Exercise`. Solutions do not sit in the notebooks, under the exercise the reader is
trying: they live in ``clip_tutorial.exercises.solutions.<chapter>``, one function per exercise
named after it, and :func:`show_solution` prints one on request. The book's tests run every
solution through its check (:func:`verify_solution`).

There are three kinds of exercise:

- ``"implement"``: write a function; the check compares it with the reference on random inputs.
  Its solution is that function.
- ``"predict"``: predict what an experiment will show, then run it; the check runs the experiment
  and compares it with the prediction. Its solution is a function of no arguments that returns
  the prediction, with the reasoning in its docstring.
- ``"diagnose"``: something is broken; say what, and the check confirms the diagnosis by running
  the broken and the mended versions. Its solution returns the diagnosis, reasoning in its docstring.

Explained in Chapter 1 (section "Summary and exercises").
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clip_tutorial.core.checks import check_callable, check_choice, check_type
from .core import CheckResult

__all__ = ["CHAPTERS", "KINDS", "Exercise", "exercises", "solution", "show_solution", "verify_solution"]

#: The chapters that have exercises, in reading order.
CHAPTERS = ("ch1", "ch2", "ch3", "ch4", "ch5", "ch6", "ch7")
#: The kinds of exercise; "predict" and "diagnose" check the reader's reasoning, not only code.
KINDS = ("implement", "predict", "diagnose")


@dataclass(frozen=True)
class Exercise:
    """One exercise of the book.

    Attributes:
        key: ``"<chapter>.<name>"``, e.g. ``"ch1.cosine_similarity"``; the solution function is
            ``clip_tutorial.exercises.solutions.<chapter>.<name>``.
        kind: one of :data:`KINDS`.
        check: the check the reader calls, ``check(answer, verbose=True) -> CheckResult``.
        title: the exercise's title as the book prints it.
    """

    key: str
    kind: str
    check: Callable[..., CheckResult]
    title: str

    def __post_init__(self) -> None:
        chapter, _, name = self.key.partition(".")
        if chapter not in CHAPTERS or not name.isidentifier():
            raise ValueError(f"key: expected '<chapter>.<name>' with a chapter of {CHAPTERS}, got {self.key!r}")
        check_choice("kind", self.kind, KINDS)
        check_callable("check", self.check, "a function")

    @property
    def chapter(self) -> str:
        """The chapter folder, e.g. ``"ch1"``."""
        return self.key.partition(".")[0]

    @property
    def name(self) -> str:
        """The exercise's name within its chapter, e.g. ``"cosine_similarity"``."""
        return self.key.partition(".")[2]


def exercises(chapter: str) -> tuple[Exercise, ...]:
    """The exercises of ``chapter`` (``"ch1"`` … ``"ch5"``), in the book's order."""
    check_choice("chapter", chapter, CHAPTERS)
    return tuple(importlib.import_module(f"clip_tutorial.exercises.{chapter}").EXERCISES)


def _find(key: Any) -> Exercise:
    check_type("key", key, str, "a string such as 'ch1.cosine_similarity'")
    chapter = key.partition(".")[0]
    if chapter not in CHAPTERS:
        raise ValueError(f"key: expected '<chapter>.<name>' with a chapter of {CHAPTERS}, got {key!r}")
    known = {exercise.key: exercise for exercise in exercises(chapter)}
    if key not in known:
        raise ValueError(f"key: no exercise {key!r}; {chapter} has {', '.join(known)}")
    return known[key]


def solution(key: str) -> Callable[..., Any]:
    """The solution function of exercise ``key`` (e.g. ``"ch1.cosine_similarity"``), without printing it."""
    exercise = _find(key)
    module = importlib.import_module(f"clip_tutorial.exercises.solutions.{exercise.chapter}")
    return getattr(module, exercise.name)


def show_solution(key: str) -> Callable[..., Any]:
    """Print the solution of exercise ``key`` with its reasoning, and return the solution function.

    Try the exercise first: the check's hints are written to get you there.
    """
    fn = solution(key)
    print(inspect.getsource(fn).rstrip())
    return fn


def verify_solution(key: str) -> CheckResult:
    """Run the solution of exercise ``key`` through its check, silently; truthy when it passes."""
    exercise = _find(key)
    fn = solution(key)
    answer = fn if exercise.kind == "implement" else fn()
    return exercise.check(answer, verbose=False)
