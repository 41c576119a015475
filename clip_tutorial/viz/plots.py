"""The book's figures: image grids, similarity heatmaps, training curves and accuracy bars.

Every function builds a figure with ``matplotlib.pyplot`` and returns the
``matplotlib.figure.Figure`` without calling ``plt.show()``. In a notebook, pyplot figures are shown
at the end of the cell; end the last line with ``;`` (or assign the figure) so that it is not shown
twice, and ``plt.close(fig)`` figures made in a loop.

The figures are sized for the book's text column, :data:`PAGE_WIDTH` inches wide at the notebooks'
100 dpi: a wider figure is shrunk to fit it, and its text with it. So the grids fit the column and
write their text at no less than :data:`MIN_FONTSIZE` points as displayed; captions are wrapped to
the width of their image. :func:`legible_fontsize` gives the font size for a figure of your own.

Explained in Chapter 1 (the first pictures of ShapesWorld and of CLIP's similarity matrix).
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from clip_tutorial.core.checks import check_int, check_number, check_positive_int, check_type

from clip_tutorial.data import MEAN, STD  # CLIP's per-channel pixel statistics
from .layout import (FONTSIZE, MAX_COLUMNS, MIN_FONTSIZE, PAGE_WIDTH, as_array, legible_fontsize, text_width,
                     to_display_images, wrap_to_width)

__all__ = ["show_images", "plot_similarity", "plot_history", "plot_accuracy_bars"]

def show_images(images: Any, captions: Sequence[str] | None = None, ncols: int = 8, title: str | None = None,
                normalized: bool = False, mean: Sequence[float] = MEAN, std: Sequence[float] = STD,
                wrap: int | None = None, fontsize: float = FONTSIZE) -> Figure:
    """A grid of images, each with its caption wrapped underneath, sized to be legible on the page.

    The grid is at most :data:`PAGE_WIDTH` inches wide, so it is displayed at its own size and its
    text at ``fontsize`` points. Rows hold at most :data:`MAX_COLUMNS` images; when ``ncols`` asks
    for more, the images are spread evenly over as few rows as that allows. Each caption is
    wrapped to the width of its image, at ordinary spaces (join words with a non-breaking space,
    ``"\\u00a0"``, to keep them on one line); line breaks in a caption are kept.

    Explained in Chapter 1.

    Args:
        images: the images, in any layout :func:`to_display_images` accepts.
        captions: one caption per image, or ``None``.
        ncols: images per row: fewer when there are fewer images, at most :data:`MAX_COLUMNS`, and
            fewer when a caption holds a word (or a phrase joined by non-breaking spaces) too
            wide for a narrower image.
        title: the figure's title, wrapped to the figure's width.
        normalized: the pixels were normalised with ``mean`` and ``std`` (CLIP's by default).
        mean: per-channel mean of the normalisation.
        std: per-channel standard deviation of the normalisation.
        wrap: also wrap captions after this many characters (default: only where the image ends).
        fontsize: the captions' size in points, on the page (at least :data:`MIN_FONTSIZE`).

    Returns:
        The figure, one axes per image.

    Raises:
        TypeError: if ``captions`` is not a list, or ``ncols``, ``wrap`` or ``fontsize`` is not a number.
        ValueError: if the images are not an image batch, there is not one caption per image, or
            ``ncols``, ``wrap`` or ``fontsize`` is out of range.
    """
    pictures = to_display_images(images, normalized=normalized, mean=mean, std=std)
    if captions is not None:
        if isinstance(captions, str) or not isinstance(captions, Sequence):
            raise TypeError(f"captions: expected a list of str, got {type(captions).__name__}")
        if len(captions) != len(pictures):
            raise ValueError(f"captions: expected one caption per image ({len(pictures)}), got {len(captions)}")
    ncols = check_positive_int("ncols", ncols)
    if wrap is not None and check_int("wrap", wrap) < 1:
        raise ValueError(f"wrap: expected a positive int or None, got {wrap!r}")
    fontsize = check_number("fontsize", fontsize, MIN_FONTSIZE)
    n = len(pictures)
    ncols = min(ncols, n, MAX_COLUMNS)

    def room(columns: int) -> float:  # the width of one image, in points, less a margin between captions
        return 72 * min(1.6, PAGE_WIDTH / columns) - 8

    # The longest unbreakable piece of a caption sets a floor on the width of an image: fewer
    # columns rather than words cut in two.
    pieces = [word for c in (captions or []) for line in str(c).split("\n") for word in line.split(" ") if word]
    widest = max((text_width(word, fontsize) for word in set(pieces)), default=0.0)
    while ncols > 1 and widest > room(ncols):
        ncols -= 1
    ncols = math.ceil(n / math.ceil(n / ncols))  # the same number of rows, filled evenly
    nrows = math.ceil(n / ncols)
    cell = min(1.6, PAGE_WIDTH / ncols)  # inches per image; the grid never outgrows the page
    wrapped = [wrap_to_width(c, room(ncols), fontsize, wrap) for c in captions] if captions is not None else []
    side = cell - 0.1  # constrained layout keeps a small gap around each image
    heights = []  # of each row: the image and its tallest caption
    for row in range(nrows):
        lines = max((w.count("\n") + 1 for w in wrapped[row * ncols:(row + 1) * ncols]), default=0)
        heights.append(side + 0.1 + (lines * 1.2 * fontsize / 72 + 0.05 if lines else 0.0))
    title_text = wrap_to_width(title, 72 * ncols * cell - 8, fontsize + 2) if title else ""
    title_height = (title_text.count("\n") + 1) * 1.3 * (fontsize + 2) / 72 + 0.08 if title else 0.0
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained", height_ratios=heights,
                             figsize=(ncols * cell, sum(heights) + title_height))
    for index, ax in enumerate(axes.flat):
        if index >= len(pictures):
            fig.delaxes(ax)
            continue
        ax.imshow(pictures[index], interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        ax.set_anchor("N")  # any spare height goes below the caption, between the rows
        ax.set_xlabel(wrapped[index] if wrapped else "", fontsize=fontsize, linespacing=1.1)
    if title:
        fig.suptitle(title_text, fontsize=fontsize + 2)
    return fig


def plot_similarity(similarity: Any, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                    title: str = "Cosine similarity between images and texts", images: Any = None,
                    images_along: str = "rows", annotate: bool | None = None, normalized: bool = False,
                    cmap: str = "viridis", value_label: str = "cosine similarity") -> Figure:
    """A heatmap of a similarity matrix, e.g. images (rows) against texts (columns).

    The figure fits :data:`PAGE_WIDTH` when the matrix has up to about a dozen columns (its
    height grows with the rows), and its text is at least :data:`MIN_FONTSIZE` points on the
    page. Column labels are written across, wrapped to their cell, or upright when a word is too
    wide for the cell.

    Explained in Chapter 1.

    Args:
        similarity: a (rows, cols) tensor, array or nested list.
        row_labels: one label per row (default: the row indices).
        col_labels: one label per column (default: the column indices).
        title: the axes' title.
        images: optional thumbnails drawn beside the rows or above the columns (see ``images_along``),
            in any layout :func:`to_display_images` accepts.
        images_along: ``"rows"`` when rows are images and columns are texts (``logits_per_image``),
            ``"cols"`` for the transpose; it also names the axes "images" and "texts".
        annotate: write the values in the cells; by default only when the matrix is at most 12 x 12.
        normalized: the thumbnails are normalised with CLIP's mean and std.
        cmap: the matplotlib colour map.
        value_label: the colour bar's label.

    Returns:
        The figure: the heatmap axes and its colour bar.

    Raises:
        ValueError: if ``similarity`` is not a non-empty 2-D matrix or the labels or thumbnails do
            not match its size.
    """
    sim = as_array(similarity, "similarity").astype(float)
    if sim.ndim != 2 or 0 in sim.shape:
        raise ValueError(f"similarity: expected a non-empty 2-D (rows, cols) matrix, got shape {sim.shape}")
    if images_along not in ("rows", "cols"):
        raise ValueError(f"images_along: expected 'rows' or 'cols', got {images_along!r}")
    rows, cols = sim.shape
    labels = []
    for name, given, count in (("row_labels", row_labels, rows), ("col_labels", col_labels, cols)):
        if given is not None and (isinstance(given, str) or len(given) != count):
            got = "a single str" if isinstance(given, str) else f"{len(given)}"
            raise ValueError(f"{name}: expected {count} labels (the matrix has shape {sim.shape}), got {got}")
        labels.append([str(i) for i in range(count)] if given is None else [str(x) for x in given])
    thumbs = None if images is None else to_display_images(images, normalized=normalized)
    along = rows if images_along == "rows" else cols
    if thumbs is not None and len(thumbs) != along:
        raise ValueError(f"images: expected {along} thumbnails, one per {images_along[:-1]}, got {len(thumbs)}")
    annotate = annotate if annotate is not None else max(rows, cols) <= 12
    font = FONTSIZE
    row_text = [wrap_to_width(textwrap.shorten(x, 60), 72 * 2.0, font) for x in labels[0]]
    label_width = max(max(text_width(line, font) for line in x.split("\n")) for x in row_text) / 72
    # Only the width is bounded (a wider figure is shrunk on the page); the height may grow.
    # Cells are square when thumbnails are drawn, so that the thumbnails are not distorted.
    extra = 1.1 if thumbs is not None else 0.0
    across = cols + (extra if images_along == "rows" else 0)
    down = rows + (extra if images_along == "cols" else 0)
    fixed = label_width + 0.45 + 1.2  # row labels, the y axis title, the colour bar and its label
    floor = 0.42 if annotate else 0.2  # room for "0.52" written in a cell, or for a label's height
    cell_width = min(0.75, max(floor, (PAGE_WIDTH - fixed) / across))
    cell_height = cell_width if thumbs is not None else min(0.75, max(floor, 0.22, cell_width))
    # Column labels are written across when their words fit the cell, otherwise upright.
    room = 72 * cell_width - 4
    col_words = [word for x in labels[1] for word in textwrap.shorten(x, 60).split()]
    upright = any(text_width(word, font) > room for word in col_words)
    col_text = ([textwrap.shorten(x, 60) for x in labels[1]] if upright
                else [wrap_to_width(textwrap.shorten(x, 60), room, font) for x in labels[1]])
    if not upright and max(x.count("\n") + 1 for x in col_text) > 5:
        upright, col_text = True, [textwrap.shorten(x, 60) for x in labels[1]]
    col_height = (max(text_width(x, font) for x in col_text) / 72 if upright
                  else max(x.count("\n") + 1 for x in col_text) * 1.2 * font / 72)
    width = across * cell_width + fixed
    height = down * cell_height + col_height + 0.9
    fig, ax = plt.subplots(figsize=(max(width, 4.0), max(height, 2.5)), layout="constrained")
    font = legible_fontsize(fig.get_figwidth(), font)  # a figure wider than the page is shrunk on it
    mesh = ax.imshow(sim, cmap=cmap, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(cols), col_text, fontsize=font, rotation=90 if upright else 0)
    ax.set_yticks(range(rows), row_text, fontsize=font)
    names = ("images", "texts") if images_along == "rows" else ("texts", "images")
    ax.set_ylabel(names[0], fontsize=font + 1)
    ax.set_xlabel(names[1], fontsize=font + 1)
    ax.set_title(title, fontsize=font + 2)
    if annotate:
        middle = (np.nanmin(sim) + np.nanmax(sim)) / 2
        for r in range(rows):
            for c in range(cols):
                ax.text(c, r, f"{sim[r, c]:.2f}", ha="center", va="center", fontsize=font,
                        color="black" if sim[r, c] > middle else "white")
    if thumbs is not None:
        for i, thumb in enumerate(thumbs):
            extent = (-1.55, -0.65, i + 0.45, i - 0.45) if images_along == "rows" else (i - 0.45, i + 0.45, -0.65, -1.55)
            ax.imshow(thumb, extent=extent, interpolation="nearest", aspect="auto")
        ax.set_xlim(-1.6 if images_along == "rows" else -0.5, cols - 0.5)
        ax.set_ylim(rows - 0.5, -1.6 if images_along == "cols" else -0.5)
        ax.spines[:].set_visible(False)
    bar = fig.colorbar(mesh, ax=ax, shrink=0.8)
    bar.set_label(value_label, fontsize=font)
    bar.ax.tick_params(labelsize=font)
    return fig


def _history_series(history: Any, key: str) -> list[float] | None:
    value = history.get(key) if isinstance(history, Mapping) else getattr(history, key, None)
    return None if value is None else [float("nan") if v is None else float(v) for v in value]


def plot_history(history: Any, keys: Sequence[str] | None = None, title: str = "Training history",
                 smooth: int = 1) -> Figure:
    """Training curves, one panel per recorded quantity against the step.

    Explained in Chapter 1 (and used in every training chapter).

    Args:
        history: an object with a ``steps`` attribute (list of int) and one list of floats per
            quantity, or a dict of such lists (``"steps"`` optional: 0, 1, 2 ... by default).
        keys: the quantities to plot; by default those of ``("loss", "temperature", "lr")`` that
            ``history`` has. Keys containing "loss" get a logarithmic y axis when all positive.
        title: the figure's title.
        smooth: when > 1, also draw a moving average over this many steps of the noisy curves
            (keys containing "loss" or "acc").

    Returns:
        The figure, one axes per key.

    Raises:
        TypeError: if ``history`` is neither a dict nor a history object, or ``smooth`` is not an int.
        ValueError: if a requested key is missing, its list does not have one value per step, or
            ``smooth`` is below 1.
    """
    if not isinstance(history, Mapping) and not hasattr(history, "steps"):
        raise TypeError(f"history: expected a dict of lists or an object with a 'steps' list, got {type(history).__name__}")
    smooth = check_positive_int("smooth", smooth)
    if keys is None:
        keys = [k for k in ("loss", "temperature", "lr") if _history_series(history, k) is not None]
        if not keys:
            raise ValueError("history: expected at least one of 'loss', 'temperature', 'lr', got none; pass keys=")
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("keys: expected at least one name to plot, got an empty list")
    series = {}
    for key in keys:
        values = _history_series(history, key)
        if values is None:
            available = sorted(history) if isinstance(history, Mapping) else [
                k for k in dir(history) if not k.startswith("_")]
            raise ValueError(f"keys: expected names recorded in history ({available}), got {key!r}")
        series[key] = values
    steps = _history_series(history, "steps")
    steps = list(range(len(next(iter(series.values()))))) if steps is None else steps
    for key, values in series.items():
        if len(values) != len(steps):
            raise ValueError(f"history: expected one {key!r} value per step ({len(steps)}), got {len(values)}")
    ncols = min(len(series), 3)  # three panels side by side fill the page; more go on further rows
    nrows = math.ceil(len(series) / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                             figsize=(min(PAGE_WIDTH, 4.2 * ncols), 3.0 * nrows))
    for ax in axes.flat[len(series):]:
        fig.delaxes(ax)
    for ax, (key, values) in zip(axes.flat, series.items()):
        y = np.asarray(values, dtype=float)
        ax.plot(steps, y, label=key)
        if smooth > 1 and len(y) >= smooth and ("loss" in key or "acc" in key):
            kernel = np.ones(smooth) / smooth
            ax.lines[-1].set_alpha(0.35)
            ax.plot(steps[smooth - 1:], np.convolve(y, kernel, mode="valid"), label=f"{key} (mean of {smooth})")
            # under the axes, where it cannot cover the curves
            ax.legend(fontsize=FONTSIZE, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        finite = y[np.isfinite(y)]
        if "loss" in key and finite.size and finite.min() > 0:
            ax.set_yscale("log")
            # plain numbers at 1, 2 and 5 times the powers of ten, rather than crowded 4 x 10^0
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(key, fontsize=FONTSIZE + 1)
        ax.set_xlabel("step", fontsize=FONTSIZE)
        ax.set_ylabel(key, fontsize=FONTSIZE)
        ax.tick_params(labelsize=FONTSIZE)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def plot_accuracy_bars(named_values: Mapping[str, float], title: str = "Accuracy", ylabel: str = "accuracy",
                       chance: float | None = None, xlabel: str | None = None, fmt: str | None = None) -> Figure:
    """A bar chart of named values, e.g. "CNN" vs "CLIP zero-shot", with the values on the bars.

    Explained in Chapter 1.

    Args:
        named_values: bar label -> value, drawn in order.
        title: the axes' title.
        ylabel: the y axis label.
        chance: draw a dashed line at this value (e.g. ``1 / number_of_classes``).
        xlabel: an optional x axis label.
        fmt: a format string for the values, e.g. ``"{:.2f}"``; percentages when all values lie in [0, 1].

    Returns:
        The figure, with one axes.

    Raises:
        TypeError: if ``named_values`` is not a dict of numbers.
        ValueError: if it is empty or holds a value that is not finite.
    """
    check_type("named_values", named_values, Mapping, "a dict of name -> number")
    if not named_values:
        raise ValueError("named_values: expected at least one bar, got an empty dict")
    names, values = [str(k) for k in named_values], []
    for name, value in named_values.items():
        try:
            values.append(float(value))
        except (TypeError, ValueError) as err:
            raise TypeError(f"named_values: expected a number for {name!r}, got {type(value).__name__}") from err
        if not math.isfinite(values[-1]):
            raise ValueError(f"named_values: expected a finite number for {name!r}, got {values[-1]}")
    fractions = all(0.0 <= v <= 1.0 for v in values) and (chance is None or 0.0 <= chance <= 1.0)
    fmt = fmt or ("{:.1%}" if fractions else "{:.3g}")
    widest = max(text_width(line, FONTSIZE) for n in names for line in n.split("\n")) / 72
    # wide enough for the bar labels to stand side by side, if the page allows it
    width = min(PAGE_WIDTH, max(3.5, 1.1 * len(names) + 1.5, len(names) * (widest + 0.2) + 0.9))
    fig, ax = plt.subplots(figsize=(width, 3.5), layout="constrained")
    bars = ax.bar(names, values, color=[f"C{i % 10}" for i in range(len(names))])
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=FONTSIZE)
    if chance is not None:
        ax.axhline(float(chance), color="grey", linestyle="--", label=f"chance ({fmt.format(chance)})")
        # beside the axes, where it cannot cover a bar or its value
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=FONTSIZE, borderaxespad=0.0)
    if fractions:
        ax.set_ylim(0, 1.12)
        ax.set_yticks(np.linspace(0, 1, 6))
    ax.set(title=title, ylabel=ylabel, xlabel=xlabel or "")
    ax.tick_params(labelsize=FONTSIZE)
    if widest + 0.1 > (width - 0.9) / len(names):  # no room side by side: tilt the labels
        ax.tick_params(axis="x", labelrotation=20)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    return fig
