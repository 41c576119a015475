"""Solutions of the exercises of Chapter 3, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch3.<name>")``. Explained in Chapter 3.
"""
from __future__ import annotations
