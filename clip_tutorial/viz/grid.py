"""A table of pictures: one row per value of one attribute, one column per value of another.

Explained in Chapter 7.5 (DALL·E 2 in miniature), which draws one picture for every colour–shape
prompt and frames the held-out combinations; Chapter 7.6 uses it for Stable Diffusion's
miniature. Returns the ``matplotlib.figure.Figure`` without calling ``plt.show()``, as the other
figures of :mod:`clip_tutorial.viz` do.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from clip_tutorial.core.checks import check_sequence

from .layout import PAGE_WIDTH, to_display_images

__all__ = ["show_image_table"]


def _flags(name: str, values: Any, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=bool)
    flags = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if flags.shape != (n,) or flags.dtype != bool:
        raise ValueError(f"{name}: expected {n} booleans, one per picture, got an array of shape {flags.shape} "
                         f"and dtype {flags.dtype}")
    return flags


def show_image_table(images: Any, row_labels: Sequence[str], col_labels: Sequence[str], framed: Any = None,
                     crossed: Any = None, title: str | None = None) -> Figure:
    """Pictures laid out in a table, row by row, with a label on each row and each column (Chapter 7.5).

    Args:
        images: ``len(row_labels) * len(col_labels)`` pictures in row-major order, in any layout
            :func:`~clip_tutorial.viz.layout.to_display_images` accepts (e.g. uint8 ``(N, 3, H, W)``).
        row_labels: one label per row, written on the left (e.g. the colours).
        col_labels: one label per column, written on top (e.g. the shapes).
        framed: optional booleans, one per picture: ``True`` draws a red frame (e.g. held-out pairs).
        crossed: optional booleans, one per picture: ``True`` draws a grey cross (e.g. judged wrong).
        title: the figure's title.

    Raises:
        TypeError: if a label list is not a sequence of str.
        ValueError: if the number of pictures is not rows times columns, or a flag array has
            the wrong length or is not boolean.
    """
    rows = check_sequence("row_labels", row_labels, str, nonempty=True)
    cols = check_sequence("col_labels", col_labels, str, nonempty=True)
    pictures = to_display_images(images)
    n = len(rows) * len(cols)
    if len(pictures) != n:
        raise ValueError(f"images: expected {len(rows)} x {len(cols)} = {n} pictures, got {len(pictures)}")
    framed, crossed = _flags("framed", framed, n), _flags("crossed", crossed, n)
    width = min(PAGE_WIDTH, 0.8 * len(cols) + 0.6)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(width, width * len(rows) / len(cols) + 0.5),
                             layout="constrained", squeeze=False)
    for i, ax in enumerate(axes.flat):
        side = pictures[i].shape[0]
        ax.imshow(pictures[i])
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(color="red" if framed[i] else "white", linewidth=2.5)
        if crossed[i]:
            ax.plot([0.06 * side, 0.9 * side], [0.06 * side, 0.9 * side], color="grey", lw=1)
            ax.plot([0.06 * side, 0.9 * side], [0.9 * side, 0.06 * side], color="grey", lw=1)
    for ax, label in zip(axes[0], cols):
        ax.set_title(label, fontsize=8)
    for ax, label in zip(axes[:, 0], rows):
        ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
