"""Solutions of the exercises of Chapter 4, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch4.<name>")``. Explained in Chapter 4.
"""
from __future__ import annotations
