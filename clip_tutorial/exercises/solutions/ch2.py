"""Solutions of the exercises of Chapter 2, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch2.<name>")``. Explained in Chapter 2.
"""
from __future__ import annotations
