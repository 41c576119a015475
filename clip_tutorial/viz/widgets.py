"""Interactive text-to-image search, with a static figure beside the widget.

Explained in Chapter 1.5 (a tiny image search engine). :func:`text_to_image_search` is the whole
engine: embed the query, compare it with every image embedding, keep the ``k`` best.
:func:`search_figure` draws the results of a few queries, so that a page rendered without a
running kernel still shows them; :func:`search_box` is the interactive version, an ipywidgets
text box whose results update as you type a new query (in Jupyter or Colab). Both also accept an
:class:`~clip_tutorial.apps.search.EmbeddingIndex` of the gallery (Chapter 5.2, a search engine over
50,000 images), and uint8 pixels, which take four times less memory than normalised floats. The
search answers with a :class:`~clip_tutorial.apps.search.SearchResult`, as that index does.

The temperature's playground (Chapter 2.3) lives in :mod:`clip_tutorial.viz.temperature`.
"""
from __future__ import annotations

import html
import io
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from clip_tutorial.apps.search import EmbeddingIndex, SearchResult
from clip_tutorial.core.checks import check_callable, check_int, check_number, check_tensor, check_type, describe
from clip_tutorial.evaluation.zeroshot import encode_images, encode_texts
from clip_tutorial.model import CLIP, check_clip
from .layout import to_display_images

__all__ = ["text_to_image_search", "search_figure", "search_box", "figure_png"]

Tokenizer = Callable[[Sequence[str]], torch.Tensor]
# what the messages about a bad tokenizer or bad pixels expect
_TOKENIZER = "a tokenizer (a callable from texts to token ids)"
_PIXELS = ("normalised float pixels (N, 3, H, W) as ShapesWorld.tensors() returns, "
           "or uint8 pixels as ShapesWorld.images")


def _check_images(images: object) -> torch.Tensor:
    check_tensor("images", images, ndim=4, nonempty=True, what=_PIXELS)
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise TypeError(f"images: expected {_PIXELS}, got {describe(images)}")
    return images


def _display(images: torch.Tensor, rows: Sequence[int]) -> dict[int, Any]:
    """The pictures of the given gallery rows, keyed by row, for ``imshow``."""
    rows = list(rows)
    return dict(zip(rows, to_display_images(images[rows], normalized=images.is_floating_point())))


def _check_query(name: str, query: object) -> str:
    check_type(name, query, str)
    if not query.strip():
        raise ValueError(f"{name}: expected some words to search for, got an empty query")
    return query


def _check_queries(name: str, queries: object) -> list[str]:
    """A non-empty list of queries, each some words."""
    if isinstance(queries, str) or not isinstance(queries, Sequence):
        raise TypeError(f"{name}: expected a list of str, got {describe(queries)}")
    if len(queries) == 0:
        raise ValueError(f"{name}: expected a non-empty list of str, got an empty list")
    return [_check_query(f"{name}[{i}]", q) for i, q in enumerate(queries)]


def _gallery_features(model: CLIP, images_or_features: torch.Tensor) -> torch.Tensor:
    check_tensor("images_or_features", images_or_features, what="a tensor, images (N, 3, H, W) or features (N, D)")
    if images_or_features.ndim == 2:
        if images_or_features.shape[0] == 0 or images_or_features.shape[1] != model.config.embed_dim:
            raise ValueError(f"images_or_features: expected features (N >= 1, embed_dim={model.config.embed_dim}), "
                             f"got shape {tuple(images_or_features.shape)}")
        return F.normalize(images_or_features.float().cpu(), dim=-1)
    if images_or_features.ndim == 4:
        return encode_images(model, _check_images(images_or_features))
    raise ValueError(f"images_or_features: expected images (N, 3, H, W) or features (N, D), "
                     f"got shape {tuple(images_or_features.shape)}")


def text_to_image_search(model: CLIP, tokenizer: Tokenizer, images_or_features: torch.Tensor,
                         query: str | Sequence[str], k: int = 5) -> SearchResult:
    """The ``k`` images most similar to a text query, best first.

    Explained in Chapter 1.5. Embed the gallery once with :func:`~clip_tutorial.evaluation.zeroshot.encode_images`
    and pass the features, so that each query only costs one text embedding and one product with
    the gallery's matrix.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        images_or_features: normalised images ``(N, 3, H, W)``, uint8 pixels, or their image
            embeddings ``(N, D)``.
        query: the text to search for, e.g. ``"a big yellow star"``, or a list of such texts.
        k: how many images to return per query, ``1 <= k <= N``.

    Returns:
        A :class:`~clip_tutorial.apps.search.SearchResult` ``(scores, ids, rows)``, as
        :meth:`EmbeddingIndex.search <clip_tutorial.apps.search.EmbeddingIndex.search>` returns
        it, with one row per query (a single query gives one row): ``scores`` ``(Q, k)`` are the
        cosine similarities with the query in decreasing order, ``rows`` ``(Q, k)`` the gallery
        row numbers of those images, and ``ids`` the same row numbers as lists of ints (a gallery
        given as a tensor has no ids of its own; an index built with the default ids numbers its
        rows the same way). ``result.rows[0]`` are the images found for the first query.

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: for an empty query, ``k`` outside ``[1, N]`` or a gallery of the wrong shape.
    """
    check_clip("model", model)
    check_callable("tokenizer", tokenizer, _TOKENIZER)
    queries = [_check_query("query", query)] if isinstance(query, str) else _check_queries("query", query)
    features = _gallery_features(model, images_or_features)
    k = check_int("k", k, 1, features.shape[0])
    # one matrix-vector product per query: the similarities of each query with every image
    scores = torch.stack([features @ text for text in encode_texts(model, tokenizer, queries)])
    top = scores.topk(k, dim=1)
    return SearchResult(top.values, top.indices.tolist(), top.indices)


def _ranker(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor, features: torch.Tensor | None,
            index: EmbeddingIndex | None, k: int) -> Callable[[str], SearchResult]:
    """A function from one query to its ``k`` best images (a one-row result), from features or an index."""
    if index is None:
        gallery = _gallery_features(model, images if features is None else features)
        if gallery.shape[0] != images.shape[0]:
            raise ValueError(f"features: expected one row per image ({images.shape[0]}), got {gallery.shape[0]}")
        return lambda query: text_to_image_search(model, tokenizer, gallery, query, k)
    check_type("index", index, EmbeddingIndex, "a clip_tutorial.apps.search.EmbeddingIndex or None")
    if features is not None:
        raise ValueError("features: expected None when an index is given (the index holds the embeddings), got a tensor")
    if len(index) != images.shape[0] or index.dim != model.config.embed_dim:
        raise ValueError(f"index: expected {images.shape[0]} rows (one per image, in the same order) of dimension "
                         f"{model.config.embed_dim}, got {len(index)} rows of dimension {index.dim}")

    def rank(query: str) -> SearchResult:
        return index.search(encode_texts(model, tokenizer, [_check_query("query", query)]), k)
    return rank


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes, the picture an ``ipywidgets.Image`` shows.

    Args:
        fig: the figure (a plain :class:`~matplotlib.figure.Figure` is enough: no pyplot state).
        dpi: resolution of the picture.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _draw_results(fig: Figure, pictures: dict[int, Any], rows: list[tuple[str, SearchResult]], k: int,
                  fontsize: float = 8) -> None:
    """One row of axes per ``(query, one-row result)``: its images by gallery row, with their scores."""
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (query, result) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(pictures[int(result.rows[0, c])], interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            ax.set_xlabel(f"#{c + 1}: {float(result.scores[0, c]):.2f}", fontsize=fontsize)
        axes[r, 0].set_ylabel(textwrap.fill(textwrap.shorten(query, 60, placeholder="…"), 16), fontsize=fontsize,
                              rotation=0, ha="right", va="center")


def search_figure(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor, queries: Sequence[str], k: int = 6,
                  features: torch.Tensor | None = None, title: str = "Text-to-image search: top matches per query",
                  index: EmbeddingIndex | None = None, fontsize: float = 8) -> Figure:
    """A grid of search results: one row per query, its ``k`` best images left to right with their scores.

    Explained in Chapter 1.5. This is the static companion of :func:`search_box`.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        images: the gallery, normalised float pixels ``(N, 3, H, W)`` or uint8 pixels.
        queries: the texts to search for.
        k: images shown per query.
        features: the gallery's image embeddings ``(N, D)`` if already computed.
        title: the figure's title.
        index: an :class:`~clip_tutorial.apps.search.EmbeddingIndex` whose row ``i`` is image ``i``
            (Chapter 5.2); the search then runs on the index, and ``features`` must be ``None``.
        fontsize: size in points of the labels (ranks, scores and queries); the title is one
            point larger and the figure widens with the queries' labels. A figure wider than the
            page is shrunk to fit, so for a grid shown at page width choose fewer images per
            query (``k``) or larger text: Chapter 5.2 uses ``k=5`` and ``fontsize=10``.

    Returns:
        The figure; each image is labelled with its rank and cosine similarity.

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: for no queries, an empty query, ``k`` out of range, or features or an index
            that do not match the images.
    """
    check_clip("model", model)
    check_callable("tokenizer", tokenizer, _TOKENIZER)
    images = _check_images(images)
    queries = _check_queries("queries", queries)
    k = check_int("k", k, 1, images.shape[0])
    fontsize = check_number("fontsize", fontsize, 4, 24)
    rank = _ranker(model, tokenizer, images, features, index, k)
    rows = [(q, rank(q)) for q in queries]
    pictures = _display(images, sorted({int(i) for _, result in rows for i in result.rows[0]}))
    grow = fontsize / 8  # the query labels on the left and the label lines grow with the text
    fig = plt.figure(figsize=(1.2 * k + 1.8 * grow, (1.35 + 0.15 * (grow - 1)) * len(queries) + 0.5 * grow),
                     layout="constrained")
    _draw_results(fig, pictures, rows, k, fontsize=fontsize)
    fig.suptitle(title, fontsize=max(12, fontsize + 1))
    fig.supxlabel("rank: cosine similarity with the query", fontsize=fontsize + 1)
    return fig


def search_box(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor, k: int = 8, features: torch.Tensor | None = None,
               value: str = "a big yellow star", index: EmbeddingIndex | None = None) -> Any:
    """An interactive search engine: type a query, see the ``k`` best images of the gallery.

    Explained in Chapter 1.5. Works in Jupyter and Colab; a page rendered without a kernel shows it
    as it was, so pair it with :func:`search_figure`. The results update when the text is submitted
    (press Enter) or the box loses focus.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        images: the gallery, normalised float pixels ``(N, 3, H, W)`` or uint8 pixels.
        k: images shown per query.
        features: the gallery's image embeddings ``(N, D)`` if already computed.
        value: the query shown at first.
        index: an :class:`~clip_tutorial.apps.search.EmbeddingIndex` whose row ``i`` is image ``i``
            (Chapter 5.2); queries then search the index, and ``features`` must be ``None``.

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
                          "use clip_tutorial.viz.widgets.search_figure for a static figure of the results") from err
    check_clip("model", model)
    check_callable("tokenizer", tokenizer, _TOKENIZER)
    images = _check_images(images)
    k = check_int("k", k, 1, images.shape[0])
    rank = _ranker(model, tokenizer, images, features, index, k)
    text = ipywidgets.Text(value=value, description="Search:", placeholder="e.g. a small red heart",
                           continuous_update=False, layout=ipywidgets.Layout(width="420px"))
    status = ipywidgets.HTML()
    picture = ipywidgets.Image(format="png")

    def update(change: Any = None) -> None:
        query = text.value
        if not query.strip():
            status.value, picture.value = "<i>Type a query, e.g. <b>a small red heart</b>.</i>", b""
            return
        result = rank(query)
        fig = Figure(figsize=(1.2 * k, 1.6), layout="constrained")
        _draw_results(fig, _display(images, result.rows[0].tolist()), [(query, result)], k)
        status.value = f"Top {k} of {images.shape[0]} images for <b>{html.escape(query)}</b> (best first)"
        picture.value = figure_png(fig, dpi=100)

    text.observe(update, names="value")
    update()
    return ipywidgets.VBox([text, status, picture])
