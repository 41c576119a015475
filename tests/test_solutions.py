"""Every exercise solution in the book passes its own check.

A solution is a code cell tagged ``solution`` (and ``hide-input``, so that the book shows it
collapsed). It defines the solution function and ends by asserting the result of a
``clip_tutorial.exercises`` check on it. This test executes each such cell on its own, never a
whole notebook, in a fresh namespace that holds what a solution may assume the notebook has
imported: ``torch``, ``F`` (``torch.nn.functional``) and ``clip_tutorial``.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

import clip_tutorial

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
MIN_SOLUTIONS = 3
#: The chapters whose every check (``clip_tutorial.exercises.<chapter>.check_*``) has a solution cell.
CHAPTERS_WITH_EXERCISES = ("ch1", "ch2", "ch3", "ch5")


def _solution_cells() -> list[tuple[str, int, str]]:
    """``(notebook path relative to the repository, cell index, source)`` of every solution cell."""
    found = []
    notebooks = sorted(p for p in CHAPTERS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and "solution" in cell.get("metadata", {}).get("tags", []):
                found.append((str(path.relative_to(ROOT)), index, cell.source))
    return found


SOLUTIONS = _solution_cells()
IDS = [f"{notebook}::cell{index}" for notebook, index, _ in SOLUTIONS]


def _calls(tree: ast.AST) -> list[str]:
    """Names of the functions called anywhere in ``tree`` (the last part of dotted names)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                names.append(func.attr)
            elif isinstance(func, ast.Name):
                names.append(func.id)
    return names


def test_there_are_enough_solutions():
    assert len(SOLUTIONS) >= MIN_SOLUTIONS, (
        f"expected at least {MIN_SOLUTIONS} code cells tagged 'solution' under chapters/, found {len(SOLUTIONS)}"
    )


@pytest.mark.parametrize("chapter", CHAPTERS_WITH_EXERCISES)
def test_every_check_of_a_chapter_has_a_solution_in_that_chapter(chapter):
    module = importlib.import_module(f"clip_tutorial.exercises.{chapter}")
    checks = {name for name in module.__all__ if name.startswith("check_")}
    solved = {name for notebook, _, source in SOLUTIONS if Path(notebook).parent.name == chapter
              for name in _calls(ast.parse(source)) if name.startswith("check_")}
    assert checks, f"clip_tutorial.exercises.{chapter} defines no check"
    assert checks <= solved, f"checks without a solution cell under chapters/{chapter}/: {sorted(checks - solved)}"


@pytest.mark.parametrize(("notebook", "index", "source"), SOLUTIONS, ids=IDS)
def test_solution_cell_is_well_formed(notebook, index, source):
    tree = ast.parse(source, filename=f"{notebook}::cell{index}")
    checks = [name for name in _calls(tree) if name.startswith("check_")]
    assert checks, "a solution cell must call a check_... function of clip_tutorial.exercises"
    asserted = [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert asserted, "a solution cell must assert the result of its check"
    assert any(name.startswith("check_") for node in asserted for name in _calls(node)), (
        "the assert must be on the check's result, e.g. assert ch1.check_contrastive_loss(solution)"
    )
    tags = nbformat.read(ROOT / notebook, as_version=4).cells[index].metadata.get("tags", [])
    assert "hide-input" in tags, "tag the solution cell 'hide-input' too, so that the book shows it collapsed"


@pytest.mark.parametrize(("notebook", "index", "source"), SOLUTIONS, ids=IDS)
def test_solution_passes_its_check(notebook, index, source, capsys):
    namespace = {"__name__": "__solution__", "torch": torch, "F": F, "clip_tutorial": clip_tutorial}
    code = compile(source, f"{notebook}::cell{index}", "exec")
    exec(code, namespace)  # the cell's own assert on the check's result fails the test
    printed = capsys.readouterr().out
    assert "✅" in printed, f"the check did not report a pass:\n{printed}"
