"""The book's figures: image grids, similarity heatmaps, training curves and accuracy bars.

Every function builds a figure with ``matplotlib.pyplot`` and returns the
``matplotlib.figure.Figure`` without calling ``plt.show()``. In a notebook, pyplot figures are shown
at the end of the cell; end the last line with ``;`` (or assign the figure) so that it is not shown
twice, and ``plt.close(fig)`` figures made in a loop.

Explained in Chapter 1 (the first pictures of ShapesWorld and of CLIP's similarity matrix).
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["CLIP_MEAN", "CLIP_STD", "to_display_images", "show_images", "plot_similarity", "plot_history",
           "plot_accuracy_bars"]

from .data import MEAN as CLIP_MEAN, STD as CLIP_STD  # CLIP's per-channel pixel statistics


def _as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        if isinstance(x, Sequence) and not isinstance(x, str):
            return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected numbers, got a sequence that is not numeric ({err})") from err
    raise TypeError(f"{name}: expected a torch.Tensor, a numpy array or a list, got {type(x).__name__}")


def to_display_images(images: Any, normalized: bool = False, mean: Sequence[float] = CLIP_MEAN,
                      std: Sequence[float] = CLIP_STD) -> list[np.ndarray]:
    """Convert images to a list of float RGB arrays (H, W, 3) in [0, 1], ready for ``imshow``.

    Explained in Chapter 1.

    Args:
        images: a uint8 or float tensor/array (N, 3, H, W), (N, H, W, 3) or one image (3, H, W);
            one-channel images are repeated to grey RGB. A list of PIL images is accepted too.
        normalized: the float pixels were normalised with ``mean`` and ``std``; undo that.
        mean: per-channel mean used for the normalisation.
        std: per-channel standard deviation used for the normalisation.

    Raises:
        TypeError: if ``images`` is not an image batch or its dtype is neither uint8 nor float.
        ValueError: if the shape is not an image batch, the batch is empty, or float pixels lie
            outside [0, 1] although ``normalized`` is False.
    """
    if isinstance(images, Sequence) and len(images) and all(hasattr(im, "convert") for im in images):
        return [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]  # PIL images
    if isinstance(images, Sequence) and len(images) and all(isinstance(im, torch.Tensor) for im in images):
        images = torch.stack(list(images))
    arr = _as_array(images, "images")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[0] == 0 or not ({arr.shape[1], arr.shape[-1]} & {1, 3}):
        raise ValueError(f"images: expected a non-empty batch of shape (N, 3, H, W) or (N, H, W, 3), got {arr.shape}")
    if arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)  # channels last -> channels first
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if normalized:
            m, s = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
            if m.shape != (3,) or s.shape != (3,):
                raise ValueError(f"mean, std: expected 3 values each, got {len(m.ravel())} and {len(s.ravel())}")
            arr = arr * s[None, :, None, None] + m[None, :, None, None]
        elif arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
            raise ValueError(
                f"images: expected float pixels in [0, 1], got values in [{arr.min():.2f}, {arr.max():.2f}]; "
                "pass normalized=True if they were normalised with the CLIP mean and std"
            )
    else:
        raise TypeError(f"images: expected dtype uint8 or float, got {arr.dtype}")
    return list(np.clip(arr, 0.0, 1.0).transpose(0, 2, 3, 1))


def show_images(images: Any, captions: Sequence[str] | None = None, ncols: int = 8, title: str | None = None,
                normalized: bool = False, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                wrap: int = 16) -> Figure:
    """A grid of images, each with its caption wrapped underneath.

    Explained in Chapter 1.

    Args:
        images: the images, in any layout :func:`to_display_images` accepts.
        captions: one caption per image, or ``None``.
        ncols: images per row (fewer when there are fewer images).
        title: the figure's title.
        normalized: the pixels were normalised with ``mean`` and ``std`` (CLIP's by default).
        mean: per-channel mean of the normalisation.
        std: per-channel standard deviation of the normalisation.
        wrap: wrap captions after this many characters.

    Returns:
        The figure, one axes per image.

    Raises:
        ValueError: if the images are not an image batch or there is not one caption per image.
    """
    pictures = to_display_images(images, normalized=normalized, mean=mean, std=std)
    if captions is not None:
        if isinstance(captions, str) or not isinstance(captions, Sequence):
            raise TypeError(f"captions: expected a list of str, got {type(captions).__name__}")
        if len(captions) != len(pictures):
            raise ValueError(f"captions: expected one caption per image ({len(pictures)}), got {len(captions)}")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected a positive int, got {ncols!r}")
    ncols = min(ncols, len(pictures))
    nrows = math.ceil(len(pictures) / ncols)
    # Wrap each line of a caption separately, so line breaks the caller put in survive.
    wrapped = (["\n".join(textwrap.fill(line, wrap) for line in str(c).splitlines()) for c in captions]
               if captions is not None else [])
    lines = max((w.count("\n") + 1 for w in wrapped), default=0)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                             figsize=(1.5 * ncols, nrows * (1.5 + 0.17 * lines) + (0.3 if title else 0)))
    for index, ax in enumerate(axes.flat):
        if index >= len(pictures):
            fig.delaxes(ax)
            continue
        ax.imshow(pictures[index], interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        ax.set_xlabel(wrapped[index] if wrapped else "", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_similarity(similarity: Any, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                    title: str = "Cosine similarity between images and texts", images: Any = None,
                    images_along: str = "rows", annotate: bool | None = None, normalized: bool = False,
                    cmap: str = "viridis", value_label: str = "cosine similarity") -> Figure:
    """A heatmap of a similarity matrix, e.g. images (rows) against texts (columns).

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
    sim = _as_array(similarity, "similarity").astype(float)
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
    extra = 1.1 if thumbs is not None else 0.0
    width = 0.75 * (cols + (extra if images_along == "rows" else 0))
    height = 0.75 * (rows + (extra if images_along == "cols" else 0))
    size = (min(max(width + 3.5, 5.0), 12.0), min(max(height + 2.0, 3.5), 10.0))
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    mesh = ax.imshow(sim, cmap=cmap, aspect="auto", interpolation="nearest")
    font = 8 if max(rows, cols) <= 12 else 6
    ax.set_xticks(range(cols), [textwrap.fill(textwrap.shorten(x, 60), 14) for x in labels[1]], fontsize=font)
    ax.set_yticks(range(rows), [textwrap.fill(textwrap.shorten(x, 60), 30) for x in labels[0]], fontsize=font)
    names = ("images", "texts") if images_along == "rows" else ("texts", "images")
    ax.set(ylabel=names[0], xlabel=names[1], title=title)
    if annotate if annotate is not None else max(rows, cols) <= 12:
        middle = (np.nanmin(sim) + np.nanmax(sim)) / 2
        for r in range(rows):
            for c in range(cols):
                ax.text(c, r, f"{sim[r, c]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if sim[r, c] > middle else "white")
    if thumbs is not None:
        for i, thumb in enumerate(thumbs):
            extent = (-1.55, -0.65, i + 0.45, i - 0.45) if images_along == "rows" else (i - 0.45, i + 0.45, -0.65, -1.55)
            ax.imshow(thumb, extent=extent, interpolation="nearest", aspect="auto")
        ax.set_xlim(-1.6 if images_along == "rows" else -0.5, cols - 0.5)
        ax.set_ylim(rows - 0.5, -1.6 if images_along == "cols" else -0.5)
        ax.spines[:].set_visible(False)
    fig.colorbar(mesh, ax=ax, label=value_label, shrink=0.8)
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
        ValueError: if a requested key is missing or its list does not have one value per step.
    """
    if not isinstance(history, Mapping) and not hasattr(history, "steps"):
        raise TypeError(f"history: expected a dict of lists or an object with a 'steps' list, got {type(history).__name__}")
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth: expected a positive int, got {smooth!r}")
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
    fig, axes = plt.subplots(1, len(series), squeeze=False, figsize=(4.2 * len(series), 3.2), layout="constrained")
    for ax, (key, values) in zip(axes.flat, series.items()):
        y = np.asarray(values, dtype=float)
        ax.plot(steps, y, label=key)
        if smooth > 1 and len(y) >= smooth and ("loss" in key or "acc" in key):
            kernel = np.ones(smooth) / smooth
            ax.lines[-1].set_alpha(0.35)
            ax.plot(steps[smooth - 1:], np.convolve(y, kernel, mode="valid"), label=f"{key} (mean of {smooth})")
            ax.legend(fontsize=8)
        finite = y[np.isfinite(y)]
        if "loss" in key and finite.size and finite.min() > 0:
            ax.set_yscale("log")
        ax.set(xlabel="step", ylabel=key, title=key)
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
    if not isinstance(named_values, Mapping):
        raise TypeError(f"named_values: expected a dict of name -> number, got {type(named_values).__name__}")
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
    fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(names) + 1.5), 3.5), layout="constrained")
    bars = ax.bar(names, values, color=[f"C{i % 10}" for i in range(len(names))])
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2)
    if chance is not None:
        ax.axhline(float(chance), color="grey", linestyle="--", label=f"chance ({fmt.format(chance)})")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    if fractions:
        ax.set_ylim(0, 1.12 if chance is None else 1.28)
        ax.set_yticks(np.linspace(0, 1, 6))
    ax.set(title=title, ylabel=ylabel, xlabel=xlabel or "")
    if max(len(n) for n in names) > 12:
        ax.tick_params(axis="x", labelrotation=20)
    return fig
