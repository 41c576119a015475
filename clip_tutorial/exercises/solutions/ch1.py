"""Solutions of the exercises of Chapter 1, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch1.<name>")``. Explained in Chapter 1.
"""
from __future__ import annotations
