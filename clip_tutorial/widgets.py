"""Interactive playgrounds, each with a static figure: text-to-image search and the temperature.

Explained in Chapter 1.5 (a tiny image search engine). :func:`text_to_image_search` is the whole
engine: embed the query, compare it with every image embedding, keep the ``k`` best.
:func:`search_figure` draws the results of a few queries, so that a page rendered without a
running kernel still shows them; :func:`search_box` is the interactive version, an ipywidgets
text box whose results update as you type a new query (in Jupyter or Colab).

Explained in Chapter 2.3 (what the temperature does): :func:`temperature_figure` draws, for one
similarity matrix and one temperature, a row's softmax, the loss against the temperature and the
gradient on every negative; :func:`temperature_explorer` redraws it from a slider.
"""
from __future__ import annotations

import html
import io
import math
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from .loss import clip_loss, clip_loss_gradient
from .model import CLIP
from .viz import to_display_images
from .zeroshot import encode_images, encode_texts

__all__ = ["text_to_image_search", "search_figure", "search_box", "TEMPERATURE_RANGE", "temperature_figure", "temperature_explorer"]

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


def _check_model(model: object, tokenizer: object) -> None:
    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial.CLIP, got {type(model).__name__}")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer: expected a tokenizer (a callable from texts to token ids), got {type(tokenizer).__name__}")


def _check_images(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0 or not images.is_floating_point():
        got = f"shape {tuple(images.shape)}, dtype {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images: expected normalised float pixels (N, 3, H, W) as ShapesWorld.tensors() returns, got {got}")
    return images


def _check_query(query: object) -> str:
    if not isinstance(query, str):
        raise TypeError(f"query: expected a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query: expected some words to search for, got an empty query")
    return query


def _check_k(k: object, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k: expected an int, got {type(k).__name__}")
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= {n} (the number of images), got {k}")
    return k


def _gallery_features(model: CLIP, images_or_features: torch.Tensor) -> torch.Tensor:
    if not isinstance(images_or_features, torch.Tensor):
        raise TypeError(f"images_or_features: expected a tensor, images (N, 3, H, W) or features (N, D), "
                        f"got {type(images_or_features).__name__}")
    if images_or_features.ndim == 2:
        if images_or_features.shape[0] == 0 or images_or_features.shape[1] != model.config.embed_dim:
            raise ValueError(f"images_or_features: expected features (N >= 1, embed_dim={model.config.embed_dim}), "
                             f"got shape {tuple(images_or_features.shape)}")
        return F.normalize(images_or_features.float().cpu(), dim=-1)
    if images_or_features.ndim == 4:
        return encode_images(model, _check_images(images_or_features))
    raise ValueError(f"images_or_features: expected images (N, 3, H, W) or features (N, D), "
                     f"got shape {tuple(images_or_features.shape)}")


def text_to_image_search(model: CLIP, tokenizer: Tokenizer, images_or_features: torch.Tensor, query: str,
                         k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` images most similar to a text query, best first.

    Explained in Chapter 1.5. Embed the gallery once with :func:`~clip_tutorial.zeroshot.encode_images`
    and pass the features, so that each query only costs one text embedding and one matrix product.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        images_or_features: normalised images ``(N, 3, H, W)`` or their image embeddings ``(N, D)``.
        query: the text to search for, e.g. ``"a big yellow star"``.
        k: how many images to return, ``1 <= k <= N``.

    Returns:
        ``(indices, scores)``: LongTensor ``(k,)`` of gallery indices and their cosine similarities
        ``(k,)`` with the query, in decreasing order of similarity.

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: for an empty query, ``k`` outside ``[1, N]`` or a gallery of the wrong shape.
    """
    _check_model(model, tokenizer)
    query = _check_query(query)
    features = _gallery_features(model, images_or_features)
    k = _check_k(k, features.shape[0])
    scores = features @ encode_texts(model, tokenizer, [query])[0]
    top = scores.topk(k)
    return top.indices, top.values


def _draw_results(fig: Figure, pictures: list, rows: list[tuple[str, torch.Tensor, torch.Tensor]], k: int) -> None:
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (query, indices, scores) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(pictures[int(indices[c])], interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            ax.set_xlabel(f"#{c + 1}: {float(scores[c]):.2f}", fontsize=8)
        axes[r, 0].set_ylabel(textwrap.fill(textwrap.shorten(query, 60, placeholder="…"), 16), fontsize=8,
                              rotation=0, ha="right", va="center")


def search_figure(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor, queries: Sequence[str], k: int = 6,
                  features: torch.Tensor | None = None, title: str = "Text-to-image search: top matches per query") -> Figure:
    """A grid of search results: one row per query, its ``k`` best images left to right with their scores.

    Explained in Chapter 1.5. This is the static companion of :func:`search_box`.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        images: the gallery, normalised float pixels ``(N, 3, H, W)``.
        queries: the texts to search for.
        k: images shown per query.
        features: the gallery's image embeddings ``(N, D)`` if already computed.
        title: the figure's title.

    Returns:
        The figure; each image is labelled with its rank and cosine similarity.

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: for no queries, an empty query, ``k`` out of range, or features that do not
            match the images.
    """
    _check_model(model, tokenizer)
    images = _check_images(images)
    if isinstance(queries, str) or not isinstance(queries, Sequence) or len(queries) == 0:
        raise ValueError(f"queries: expected a non-empty list of str, got {queries!r}")
    queries = [_check_query(q) for q in queries]
    k = _check_k(k, images.shape[0])
    gallery = _gallery_features(model, images if features is None else features)
    if gallery.shape[0] != images.shape[0]:
        raise ValueError(f"features: expected one row per image ({images.shape[0]}), got {gallery.shape[0]}")
    rows = [(q, *text_to_image_search(model, tokenizer, gallery, q, k)) for q in queries]
    needed = sorted({int(i) for _, indices, _ in rows for i in indices})
    pictures = dict(zip(needed, to_display_images(images[needed], normalized=True)))
    fig = plt.figure(figsize=(1.2 * k + 1.8, 1.35 * len(queries) + 0.5), layout="constrained")
    _draw_results(fig, pictures, rows, k)
    fig.suptitle(title)
    fig.supxlabel("rank: cosine similarity with the query", fontsize=9)
    return fig


def search_box(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor, k: int = 8, features: torch.Tensor | None = None,
               value: str = "a big yellow star") -> Any:
    """An interactive search engine: type a query, see the ``k`` best images of the gallery.

    Explained in Chapter 1.5. Works in Jupyter and Colab; a page rendered without a kernel shows it
    as it was, so pair it with :func:`search_figure`. The results update when the text is submitted
    (press Enter) or the box loses focus.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        images: the gallery, normalised float pixels ``(N, 3, H, W)``.
        k: images shown per query.
        features: the gallery's image embeddings ``(N, D)`` if already computed.
        value: the query shown at first.

    Returns:
        An ``ipywidgets.VBox``: the text box (``children[0]``), a status line (``children[1]``,
        an ``HTML`` widget) and the results as a PNG (``children[2]``, an ``Image`` widget).

    Raises:
        ImportError: if ipywidgets is not installed (use :func:`search_figure` instead).
    """
    try:
        import ipywidgets
    except ImportError as err:  # pragma: no cover - ipywidgets is a dependency
        raise ImportError("search_box needs ipywidgets (pip install ipywidgets); without it, "
                          "use clip_tutorial.widgets.search_figure for a static figure of the results") from err
    _check_model(model, tokenizer)
    images = _check_images(images)
    k = _check_k(k, images.shape[0])
    gallery = _gallery_features(model, images if features is None else features)
    if gallery.shape[0] != images.shape[0]:
        raise ValueError(f"features: expected one row per image ({images.shape[0]}), got {gallery.shape[0]}")
    text = ipywidgets.Text(value=value, description="Search:", placeholder="e.g. a small red heart",
                           continuous_update=False, layout=ipywidgets.Layout(width="420px"))
    status = ipywidgets.HTML()
    picture = ipywidgets.Image(format="png")

    def update(change: Any = None) -> None:
        query = text.value
        if not query.strip():
            status.value, picture.value = "<i>Type a query, e.g. <b>a small red heart</b>.</i>", b""
            return
        indices, scores = text_to_image_search(model, tokenizer, gallery, query, k)
        fig = Figure(figsize=(1.2 * k, 1.6), layout="constrained")
        pictures = dict(zip(indices.tolist(), to_display_images(images[indices], normalized=True)))
        _draw_results(fig, pictures, [(query, indices, scores)], k)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        status.value = f"Top {k} of {gallery.shape[0]} images for <b>{html.escape(query)}</b> (best first)"
        picture.value = buffer.getvalue()

    text.observe(update, names="value")
    update()
    return ipywidgets.VBox([text, status, picture])


TEMPERATURE_RANGE = (0.005, 1.0)  #: the temperatures the figure's loss curve and the slider span


def _check_similarity(similarity: object) -> torch.Tensor:
    if not isinstance(similarity, torch.Tensor) or not similarity.is_floating_point():
        got = f"dtype {similarity.dtype}" if isinstance(similarity, torch.Tensor) else type(similarity).__name__
        raise TypeError(f"similarity: expected a float tensor of cosine similarities, got {got}")
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 2:
        raise ValueError(f"similarity: expected a square (N, N) matrix with N >= 2, matches on the diagonal, "
                         f"got shape {tuple(similarity.shape)}")
    return similarity.detach().double().cpu()


def _check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature: expected a float, got {type(temperature).__name__}")
    if not TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1]:
        raise ValueError(f"temperature: expected a value in {list(TEMPERATURE_RANGE)}, got {temperature}")
    return float(temperature)


def _check_row(row: object, n: int) -> int:
    if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < n:
        raise ValueError(f"row: expected an int in [0, {n}), got {row!r}")
    return row


def _draw_temperature(fig: Figure, similarity: torch.Tensor, temperature: float, row: int) -> None:
    n = similarity.shape[0]
    ax_row, ax_loss, ax_grad = fig.subplots(1, 3)
    probs = (similarity[row] / temperature).softmax(0)
    colours = ["tab:orange" if j == row else "tab:blue" for j in range(n)]
    ax_row.bar(range(n), probs.numpy(), color=colours)
    ax_row.set(title=f"softmax of row {row} (orange: its match)", xlabel="text j", ylabel="p(text j | image)",
               ylim=(0, 1.02))
    grid = torch.logspace(math.log10(TEMPERATURE_RANGE[0]), 0, 60, dtype=torch.float64)
    losses = [float(clip_loss(similarity / t)) for t in grid]
    ax_loss.semilogx(grid.numpy(), losses, color="tab:blue")
    ax_loss.axhline(math.log(n), color="grey", ls=":", label=f"chance, log N = {math.log(n):.2f}")
    ax_loss.axvline(temperature, color="tab:red", label=f"temperature {temperature:.3g}")
    ax_loss.set(title="loss of this batch", xlabel="temperature τ (log scale)", ylabel="CLIP loss")
    ax_loss.legend(fontsize=8)
    # dL/d(cosine) = dL/dlogit / τ, for every off-diagonal pair: how hard each negative is pushed away
    grad = clip_loss_gradient(similarity / temperature) / temperature
    off = ~torch.eye(n, dtype=torch.bool)
    ax_grad.scatter(similarity[off].numpy(), grad[off].clamp_min(1e-30).numpy(), s=10, alpha=0.7)
    ax_grad.set_yscale("log")
    ax_grad.set(title="push on each negative", xlabel="cosine similarity of the negative pair",
                ylabel="dL / d(cosine), log scale")
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
    similarity = _check_similarity(similarity)
    temperature = _check_temperature(temperature)
    row = _check_row(row, similarity.shape[0])
    fig = plt.figure(figsize=(13, 3.8), layout="constrained")
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
                          "use clip_tutorial.widgets.temperature_figure") from err
    similarity = _check_similarity(similarity)
    temperature = _check_temperature(temperature)
    row = _check_row(row, similarity.shape[0])
    low, high = (math.log10(t) for t in TEMPERATURE_RANGE)
    slider = ipywidgets.FloatLogSlider(value=temperature, base=10, min=low, max=high, step=0.05,
                                       description="τ:", continuous_update=False, readout_format=".3f",
                                       layout=ipywidgets.Layout(width="420px"))
    picture = ipywidgets.Image(format="png")

    def update(change: Any = None) -> None:
        fig = Figure(figsize=(13, 3.8), layout="constrained")
        _draw_temperature(fig, similarity, float(slider.value), row)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        picture.value = buffer.getvalue()

    slider.observe(update, names="value")
    update()
    return ipywidgets.VBox([slider, picture])
