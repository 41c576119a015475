"""Every exercise of the book: enough of them, of the right kinds, each solved, none solved in sight.

Each chapter's ``clip_tutorial.exercises.<chapter>.EXERCISES`` lists its exercises. A solution
lives in ``clip_tutorial.exercises.solutions.<chapter>``, never in a notebook under the stub the
reader is working on; the notebooks call the checks, and ``show_solution`` prints a solution on
request. These tests run every solution through its own check.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from clip_tutorial import exercises
from clip_tutorial.exercises import registry

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
#: At least this many exercises a chapter, of which at least PREDICT_OR_DIAGNOSE check the reader's reasoning.
MIN_EXERCISES = 5
PREDICT_OR_DIAGNOSE = 2
ALL = [exercise for chapter in registry.CHAPTERS for exercise in registry.exercises(chapter)]
NOTEBOOKS = sorted(p for p in CHAPTERS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _code_cells(chapter: str) -> list[str]:
    return [cell.source for path in sorted((CHAPTERS / chapter).glob("*.ipynb"))
            for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


@pytest.mark.parametrize("chapter", registry.CHAPTERS)
def test_every_chapter_has_enough_exercises_of_both_sorts(chapter):
    listed = registry.exercises(chapter)
    kinds = [exercise.kind for exercise in listed]
    assert len(listed) >= MIN_EXERCISES, f"{chapter} has {len(listed)} exercises; at least {MIN_EXERCISES} are needed"
    reasoning = sum(kind in ("predict", "diagnose") for kind in kinds)
    assert reasoning >= PREDICT_OR_DIAGNOSE, (
        f"{chapter} has {reasoning} 'predict, then run' or 'break it and explain' exercises; "
        f"at least {PREDICT_OR_DIAGNOSE} are needed")
    assert len({exercise.key for exercise in listed}) == len(listed), "two exercises share a key"
    assert all(exercise.chapter == chapter for exercise in listed)


@pytest.mark.parametrize("exercise", ALL, ids=[e.key for e in ALL])
def test_solution_passes_its_check(exercise, capsys):
    result = registry.verify_solution(exercise.key)
    assert result, f"the solution of {exercise.key} fails its own check:\n{result.message}"
    assert result.message.startswith("✅"), result.message


@pytest.mark.parametrize("exercise", ALL, ids=[e.key for e in ALL])
def test_the_check_rejects_a_wrong_answer(exercise):
    """A check that passes everything checks nothing: each one fails a plainly wrong answer."""
    if exercise.kind == "implement":
        def wrong(*args, **kwargs):
            raise NotImplementedError("your code here")
        result = exercise.check(wrong, verbose=False)
    else:
        right = registry.solution(exercise.key)()
        wrong = _a_wrong_answer(right)
        result = exercise.check(wrong, verbose=False)
    assert not result, f"{exercise.key}'s check passed a wrong answer"


def _a_wrong_answer(right):
    if isinstance(right, str):
        return "a" if right.strip().lower() != "a" else "b"
    return float(right) * 10 + 100  # far outside any tolerance


@pytest.mark.parametrize("exercise", ALL, ids=[e.key for e in ALL])
def test_the_chapter_calls_the_check_and_offers_the_solution(exercise):
    code = "\n".join(_code_cells(exercise.chapter))
    check_name = exercise.check.__name__
    assert re.search(rf"\b{check_name}\(", code), f"no notebook of {exercise.chapter} calls {check_name}"
    markdown = "\n".join(cell.source for path in sorted((CHAPTERS / exercise.chapter).glob("*.ipynb"))
                         for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown")
    assert f'show_solution("{exercise.key}")' in markdown + code, (
        f'tell the reader how to see the solution: show_solution("{exercise.key}")')


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_no_solution_sits_in_a_notebook(path):
    """A solution in the notebook sits right under the stub in Colab; it belongs in the package."""
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        assert "solution" not in cell.metadata.get("tags", []), f"cell {index} is tagged 'solution'"
        try:
            tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        defined = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
        assert not [name for name in defined if name.endswith("_solution")], f"cell {index} defines a solution"


def test_show_solution_prints_the_source_and_returns_the_function(capsys):
    fn = exercises.show_solution(ALL[0].key)
    printed = capsys.readouterr().out
    assert fn is registry.solution(ALL[0].key)
    assert f"def {ALL[0].name}(" in printed


@pytest.mark.parametrize("key, error", [("ch9.cosine", ValueError), ("ch1.no_such_exercise", ValueError),
                                        ("cosine", ValueError), (3, TypeError)])
def test_show_solution_names_a_bad_key(key, error):
    with pytest.raises(error, match="key"):
        exercises.show_solution(key)


def test_exercise_rejects_a_bad_kind_or_key():
    with pytest.raises(ValueError, match="kind"):
        registry.Exercise("ch1.x", "guess", print, "x")
    with pytest.raises(ValueError, match="key"):
        registry.Exercise("chX.x", "predict", print, "x")
    with pytest.raises(TypeError, match="check"):
        registry.Exercise("ch1.x", "predict", 3, "x")
