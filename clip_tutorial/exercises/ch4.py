"""Checks for the exercises of Chapter 4: the complete implementation and real weights.

Explained in Chapter 4.
"""
from __future__ import annotations

__all__: list[str] = []

EXERCISES: tuple = ()
