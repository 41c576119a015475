"""Progress bars for the package's long loops: tqdm's, in a notebook or a terminal.

Explained in Chapter 1.1 (the live training run). A bar that the caller turned off is off; a bar
that is on follows tqdm's own settings, so ``TQDM_DISABLE=1`` in the environment turns every bar
off (the book's build does so: in a built page a bar is a frozen widget with the build's timings).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)``, or a silent one when ``enabled`` is false.

    ``disable`` is passed to tqdm only to turn a bar off, so that tqdm's environment settings
    (``TQDM_MININTERVAL``, ...) apply to the bars that are on. ``TQDM_DISABLE`` is read here too:
    tqdm's notebook bar ignores it.
    """
    if not enabled or os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no"):
        options["disable"] = True
    return tqdm(iterable, **options)
