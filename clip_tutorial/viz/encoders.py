"""Figures of the image encoder's insides: patches, positional embeddings and attention maps.

Like :mod:`clip_tutorial.viz`, every function returns a ``matplotlib.figure.Figure`` without
calling ``plt.show()``; end the notebook line with ``;`` (or assign the figure) so that it is shown
once. Like them, the figures fit the book's text column (:data:`clip_tutorial.viz.PAGE_WIDTH`), so
that their text shows at its size.

Explained in Chapter 2.1.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from clip_tutorial.core.checks import check_positive_int
from clip_tutorial.data import MEAN, STD
from .layout import FONTSIZE, PAGE_WIDTH, as_array, to_display_images, wrap_to_width

__all__ = ["show_patches", "plot_position_similarity", "show_attention_maps"]


def _square_side(count: int, name: str) -> int:
    side = math.isqrt(count)
    if count == 0 or side * side != count:
        raise ValueError(f"{name}: expected a square number of patch positions (4, 9, 16, ...), got {count}")
    return side


def _montage(tiles: np.ndarray, rows: int, cols: int, gap: int, fill: float) -> np.ndarray:
    """Lay ``rows * cols`` tiles (n, h, w) or (n, h, w, 3) out in one array, ``gap`` pixels of ``fill`` apart."""
    height, width = tiles.shape[1:3]
    shape = (rows * (height + gap) - gap, cols * (width + gap) - gap) + tiles.shape[3:]
    canvas = np.full(shape, fill, dtype=float)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, cols)
        canvas[r * (height + gap):r * (height + gap) + height, c * (width + gap):c * (width + gap) + width] = tile
    return canvas


def show_patches(image: Any, patch_size: int, title: str | None = None, normalized: bool = False,
                 mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> Figure:
    """One image with its patch grid drawn on it, beside the patches cut apart and numbered.

    The patches are numbered in the order a vision transformer reads them: row by row, left to
    right, which is the order of ``conv1(image).flatten(2)``.

    Explained in Chapter 2.1.

    Args:
        image: one image (3, H, W) or (H, W, 3), or a batch holding one image, in any layout
            :func:`~clip_tutorial.viz.to_display_images` accepts; H and W multiples of ``patch_size``.
        patch_size: side of a square patch, in pixels.
        title: the figure's title (default: names the grid and the patch size).
        normalized: the pixels were normalised with ``mean`` and ``std``; undo that for display.
        mean: per-channel mean of the normalisation.
        std: per-channel standard deviation of the normalisation.

    Returns:
        The figure with two axes: the whole image with its grid, and the patches pulled apart
        (separated by white gaps of ``max(1, patch_size // 4)`` pixels) and numbered (on a grid
        finer than 8 x 8, only the first patch of each row carries its number, so that the
        numbers stay legible).

    Raises:
        TypeError: if ``patch_size`` is not an int.
        ValueError: if there is not exactly one image, ``patch_size`` is below 1 or does not divide
            the image's sides.
    """
    patch_size = check_positive_int("patch_size", patch_size)
    pictures = to_display_images(image, normalized=normalized, mean=mean, std=std)
    if len(pictures) != 1:
        raise ValueError(f"image: expected one image, got a batch of {len(pictures)}")
    picture = pictures[0]
    height, width = picture.shape[:2]
    if height % patch_size or width % patch_size:
        raise ValueError(f"patch_size: expected a divisor of the image's sides {height} x {width}, got {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    fig, (ax, apart) = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.9), layout="constrained")
    ax.imshow(picture, interpolation="nearest")
    for k in range(1, cols):
        ax.axvline(k * patch_size - 0.5, color="white", linewidth=1.5)
    for k in range(1, rows):
        ax.axhline(k * patch_size - 0.5, color="white", linewidth=1.5)
    panel = 72 * PAGE_WIDTH / 2 - 12  # points of width per panel title
    ax.set_title(wrap_to_width(f"{height} x {width} pixels, {rows} x {cols} patches", panel, FONTSIZE + 1),
                 fontsize=FONTSIZE + 1)
    ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
    tiles = picture.reshape(rows, patch_size, cols, patch_size, 3).transpose(0, 2, 1, 3, 4)
    gap = max(1, patch_size // 4)
    apart.imshow(_montage(tiles.reshape(-1, patch_size, patch_size, 3), rows, cols, gap, 1.0), interpolation="nearest")
    every = rows * cols <= 64  # up to an 8 x 8 grid every patch has room for its number
    for index in range(rows * cols):  # the patch number in its top-left corner
        r, c = divmod(index, cols)
        apart.add_patch(Rectangle((c * (patch_size + gap) - 0.5, r * (patch_size + gap) - 0.5), patch_size, patch_size,
                                  fill=False, edgecolor="0.3", linewidth=0.8))
        if every or c == 0:  # on a finer grid, the first patch of each row only
            apart.text(c * (patch_size + gap), r * (patch_size + gap), str(index), fontsize=FONTSIZE, va="top",
                       ha="left", color="black", bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5, "linewidth": 0})
    numbered = "numbered in reading order" if every else "in reading order, each row's first numbered"
    apart.set(xticks=[], yticks=[])
    apart.set_title(wrap_to_width(f"the {rows * cols} patches, {numbered}", panel, FONTSIZE + 1), fontsize=FONTSIZE + 1)
    apart.spines[:].set_visible(False)
    fig.suptitle(title or f"Cutting an image into {patch_size} x {patch_size} patches")
    return fig


def plot_position_similarity(similarity: Any, title: str = "Cosine similarity of positional embeddings",
                             vmin: float | None = None, vmax: float | None = None) -> Figure:
    """A grid of small heat maps: for each patch position, its similarity with every position.

    The panel in row ``r``, column ``c`` shows how similar the embedding of the patch at
    ``(r, c)`` is to the embedding of every other patch, laid out as the image is, so a learned
    sense of place shows as a bright spot around the panel's own position (the layout of the ViT
    paper's figure).

    Explained in Chapter 2.1.

    Args:
        similarity: a (P, P) matrix over the P = grid * grid patch positions (class token left out),
            e.g. the cosine similarities of ``positional_embedding[1:]``.
        title: the figure's title.
        vmin: lower end of the shared colour scale (default: the smallest value).
        vmax: upper end of the shared colour scale (default: the largest value).

    Returns:
        The figure: one axes holding the grid x grid heat maps (white gaps between them), and a
        colour bar.

    Raises:
        ValueError: if ``similarity`` is not square or P is not a square number.
    """
    sim = as_array(similarity, "similarity").astype(float)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity: expected a square (P, P) matrix, got shape {sim.shape}")
    grid = _square_side(sim.shape[0], "similarity")
    vmin = float(np.nanmin(sim)) if vmin is None else float(vmin)
    vmax = float(np.nanmax(sim)) if vmax is None else float(vmax)
    side = min(1.1 * grid + 1.6, PAGE_WIDTH - 1.2)  # the colour bar takes the rest of the page
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    canvas = _montage(sim.reshape(-1, grid, grid), grid, grid, 1, np.nan)
    image = ax.imshow(canvas, vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest")
    centres = [k * (grid + 1) + (grid - 1) / 2 for k in range(grid)]
    ax.set_xticks(centres, [str(c) for c in range(grid)])
    ax.set_yticks(centres, [str(r) for r in range(grid)])
    ax.set(xlabel="column of the patch", ylabel="row of the patch")
    ax.spines[:].set_visible(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label="cosine similarity")
    fig.suptitle(title)
    return fig


def show_attention_maps(images: Any, attention: Any, captions: Sequence[str] | None = None,
                        title: str = "Where the class token looks", normalized: bool = False,
                        alpha: float = 0.6) -> Figure:
    """Each image above its attention map: how much one query (the class token) attends to each patch.

    Explained in Chapter 2.1.

    Args:
        images: N images in any layout :func:`~clip_tutorial.viz.to_display_images` accepts.
        attention: (N, P) attention weights over the P = grid * grid patches (a softmax row with
            the class token's own weight left out), one row per image.
        captions: one caption per image, or ``None``.
        title: the figure's title.
        normalized: the pixels were normalised with CLIP's mean and std.
        alpha: opacity of the heat map laid over the dimmed image in the second row.

    Returns:
        The figure: images on the top row, attention heat maps over them on the bottom row.

    Raises:
        ValueError: if the number of images, attention rows and captions disagree, or P is not a
            square number.
    """
    pictures = to_display_images(images, normalized=normalized)
    weights = as_array(attention, "attention").astype(float)
    if weights.ndim != 2 or weights.shape[0] != len(pictures):
        raise ValueError(f"attention: expected shape ({len(pictures)}, patches), one row per image, got {weights.shape}")
    grid = _square_side(weights.shape[1], "attention")
    if captions is not None and (isinstance(captions, str) or len(captions) != len(pictures)):
        raise ValueError(f"captions: expected one caption per image ({len(pictures)}), got {captions!r}")
    n = len(pictures)
    cell = min(1.6, (PAGE_WIDTH - 1.2) / n)  # inches per image; the colour bar takes the rest of the page
    labels = ([wrap_to_width(str(c), 72 * cell - 6, FONTSIZE) for c in captions] if captions is not None
              else [f"image {i}" for i in range(n)])
    lines = max(label.count("\n") + 1 for label in labels)
    fig, axes = plt.subplots(2, n, squeeze=False, layout="constrained",
                             figsize=(n * cell + 1.2, 2 * cell + lines * 1.25 * FONTSIZE / 72 + 0.6))
    mesh = None
    for i, picture in enumerate(pictures):
        height, width = picture.shape[:2]
        axes[0, i].imshow(picture, interpolation="nearest")
        axes[0, i].set(xticks=[], yticks=[])
        axes[0, i].set_title(labels[i], fontsize=FONTSIZE)
        axes[1, i].imshow(picture * 0.5, interpolation="nearest")
        mesh = axes[1, i].imshow(weights[i].reshape(grid, grid), cmap="inferno", alpha=alpha, vmin=0.0,
                                 vmax=float(weights.max()), extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                                 interpolation="nearest")
        axes[1, i].set(xticks=[], yticks=[])
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel("attention")
    fig.colorbar(mesh, ax=axes[1, :].tolist(), shrink=0.9, label="attention weight")
    fig.suptitle(title)
    return fig
