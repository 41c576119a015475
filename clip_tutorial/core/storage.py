"""Where the package keeps files: the cache folder of trained recipes and downloaded weights.

Explained in Chapter 3.3 (the recipe cache) and Chapter 4.2 (the released weights).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """Where trained recipes and downloads are cached: ``$CLIP_TUTORIAL_CACHE`` or ``~/.cache/clip_tutorial``."""
    return Path(os.environ.get("CLIP_TUTORIAL_CACHE", Path.home() / ".cache" / "clip_tutorial"))
