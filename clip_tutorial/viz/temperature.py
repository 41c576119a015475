"""What the temperature does, as a static figure and as a slider that redraws it.

Explained in Chapter 2.3. CLIP divides its cosine similarities by a learned temperature τ before
the softmax. :func:`temperature_figure` draws, for one similarity matrix and one temperature, a
row's softmax, the batch's loss against the temperature and the push on every negative;
:func:`temperature_explorer` is the same figure under an ipywidgets slider, for Jupyter and Colab.
"""
from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from clip_tutorial.core.checks import check_int, check_number, check_tensor, describe
from clip_tutorial.objectives.loss import clip_loss, clip_loss_gradient
from .widgets import figure_png

__all__ = ["TEMPERATURE_RANGE", "temperature_figure", "temperature_explorer"]

TEMPERATURE_RANGE = (0.005, 1.0)  #: the temperatures the figure's loss curve and the slider span


def _check_arguments(similarity: object, temperature: object, row: object) -> tuple[torch.Tensor, float, int]:
    """The similarity matrix (float64, CPU), the temperature and the row, checked."""
    expected = "a float tensor of cosine similarities, a square (N, N) matrix with N >= 2, matches on the diagonal"
    check_tensor("similarity", similarity, ndim=2, floating=True, what=expected)
    if similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 2:
        raise ValueError(f"similarity: expected {expected}, got {describe(similarity)}")
    temperature = check_number("temperature", temperature, *TEMPERATURE_RANGE)
    row = check_int("row", row, 0, similarity.shape[0] - 1)
    return similarity.detach().double().cpu(), temperature, row


#: Size of the temperature figure in inches: the width of a book page, so its text stays legible.
FIGSIZE = (7.5, 6.0)


def _draw_temperature(fig: Figure, similarity: torch.Tensor, temperature: float, row: int) -> None:
    n = similarity.shape[0]
    # The row's softmax across the top, the loss and the gradient below: legible at a page's width.
    axes = fig.subplot_mosaic([["row", "row"], ["loss", "grad"]])
    ax_row, ax_loss, ax_grad = axes["row"], axes["loss"], axes["grad"]
    probs = (similarity[row] / temperature).softmax(0)
    colours = ["tab:orange" if j == row else "tab:blue" for j in range(n)]
    ax_row.bar(range(n), probs.numpy(), color=colours)
    ax_row.set(title=f"softmax of row {row} (orange: its match)", xlabel="text j", ylabel="p(text j | image)",
               ylim=(0, 1.02))
    if n <= 16:
        ax_row.set_xticks(range(n))
    grid = torch.logspace(math.log10(TEMPERATURE_RANGE[0]), 0, 60, dtype=torch.float64)
    losses = [float(clip_loss(similarity / t)) for t in grid]
    ax_loss.semilogx(grid.numpy(), losses, color="tab:blue")
    ax_loss.axhline(math.log(n), color="grey", ls=":", label=f"chance, log N = {math.log(n):.2f}")
    ax_loss.axvline(temperature, color="tab:red", label=f"temperature {temperature:.3g}")
    ax_loss.set(title="loss of this batch", xlabel="temperature τ (log scale)", ylabel="CLIP loss")
    ax_loss.legend(fontsize=9, loc="upper right")
    # dL/d(cosine) = dL/dlogit / τ, for every off-diagonal pair: how hard each negative is pushed away
    grad = clip_loss_gradient(similarity / temperature) / temperature
    off = ~torch.eye(n, dtype=torch.bool)
    ax_grad.scatter(similarity[off].numpy(), grad[off].clamp_min(1e-30).numpy(), s=10, alpha=0.7)
    ax_grad.set_yscale("log")
    ax_grad.set(title="push on each negative", xlabel="cosine of the negative pair",
                ylabel="dL / d(cosine), log")
    fig.suptitle(f"Temperature τ = {temperature:.3g} (logit scale 1/τ = {1 / temperature:.3g})")


def temperature_figure(similarity: torch.Tensor, temperature: float = 0.07, row: int = 0) -> Figure:
    """What the temperature does to one batch: a row's softmax, the loss and the push on each negative.

    Explained in Chapter 2.3. The logits are ``similarity / temperature``. Left: the softmax of
    row ``row``, its match in orange. Middle: the batch's CLIP loss for temperatures across
    :data:`TEMPERATURE_RANGE`, with ``log N`` (chance) and the chosen temperature marked. Right: for
    every mismatched pair, the gradient of the loss with respect to its cosine similarity against
    that similarity: at low temperature the hard negatives (high similarity) get almost all of it.
    This is the static companion of :func:`temperature_explorer`.

    Args:
        similarity: (N, N) cosine similarities with the matching pairs on the diagonal, N >= 2.
        temperature: the temperature τ, within :data:`TEMPERATURE_RANGE`.
        row: the image whose softmax is drawn on the left.

    Returns:
        The figure, three panels.

    Raises:
        TypeError: for a similarity that is not a float tensor or a temperature that is not a number.
        ValueError: for a non-square similarity, a temperature out of range or a row out of range.
    """
    similarity, temperature, row = _check_arguments(similarity, temperature, row)
    fig = plt.figure(figsize=FIGSIZE, layout="constrained")
    _draw_temperature(fig, similarity, temperature, row)
    return fig


def temperature_explorer(similarity: torch.Tensor, temperature: float = 0.07, row: int = 0) -> Any:
    """A slider over the temperature that redraws :func:`temperature_figure` for one similarity matrix.

    Explained in Chapter 2.3. Works in Jupyter and Colab; a page rendered without a kernel shows
    it as it was, so pair it with :func:`temperature_figure`.

    Args:
        similarity: (N, N) cosine similarities with the matching pairs on the diagonal, N >= 2.
        temperature: the slider's starting value, within :data:`TEMPERATURE_RANGE`.
        row: the image whose softmax is drawn.

    Returns:
        An ``ipywidgets.VBox``: the slider (``children[0]``, a ``FloatLogSlider``) and the figure
        as a PNG (``children[1]``, an ``Image`` widget).

    Raises:
        ImportError: if ipywidgets is not installed (use :func:`temperature_figure` instead).
    """
    try:
        import ipywidgets
    except ImportError as err:  # pragma: no cover - ipywidgets is a dependency
        raise ImportError("temperature_explorer needs ipywidgets (pip install ipywidgets); without it, "
                          "use clip_tutorial.viz.temperature.temperature_figure") from err
    similarity, temperature, row = _check_arguments(similarity, temperature, row)
    low, high = (math.log10(t) for t in TEMPERATURE_RANGE)
    slider = ipywidgets.FloatLogSlider(value=temperature, base=10, min=low, max=high, step=0.05,
                                       description="τ:", continuous_update=False, readout_format=".3f",
                                       layout=ipywidgets.Layout(width="420px"))
    picture = ipywidgets.Image(format="png")

    def update(change: Any = None) -> None:
        fig = Figure(figsize=FIGSIZE, layout="constrained")
        _draw_temperature(fig, similarity, float(slider.value), row)
        picture.value = figure_png(fig, dpi=80)

    slider.observe(update, names="value")
    update()
    return ipywidgets.VBox([slider, picture])
