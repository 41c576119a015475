"""Solutions of the exercises of Chapter 5, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch5.<name>")``. Explained in Chapter 5.
"""
from __future__ import annotations
