"""Interactive text-to-image search, with a static figure beside the widget.

Explained in Chapter 1.5 (a tiny image search engine). :func:`text_to_image_search` is the whole
engine: embed the query, compare it with every image embedding, keep the ``k`` best.
:func:`search_figure` draws the results of a few queries, so that a page rendered without a
running kernel still shows them; :func:`search_box` is the interactive version, an ipywidgets
text box whose results update as you type a new query (in Jupyter or Colab). Both also accept an
:class:`~clip_tutorial.apps.search.EmbeddingIndex` of the gallery (Chapter 5.2, a search engine over
50,000 images), and uint8 pixels, which take four times less memory than normalised floats.

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

from clip_tutorial.model import CLIP
from clip_tutorial.apps.search import EmbeddingIndex
from .plots import to_display_images
from clip_tutorial.evaluation.zeroshot import encode_images, encode_texts

__all__ = ["text_to_image_search", "search_figure", "search_box", "figure_png"]

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


def _check_model(model: object, tokenizer: object) -> None:
    if not isinstance(model, CLIP):
        raise TypeError(f"model: expected a clip_tutorial.CLIP, got {type(model).__name__}")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer: expected a tokenizer (a callable from texts to token ids), got {type(tokenizer).__name__}")


def _check_images(images: object) -> torch.Tensor:
    if (not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0
            or not (images.is_floating_point() or images.dtype == torch.uint8)):
        got = f"shape {tuple(images.shape)}, dtype {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images: expected normalised float pixels (N, 3, H, W) as ShapesWorld.tensors() returns, "
                        f"or uint8 pixels as ShapesWorld.images, got {got}")
    return images


def _display(images: torch.Tensor, rows: Sequence[int]) -> dict[int, Any]:
    """The pictures of the given gallery rows, keyed by row, for ``imshow``."""
    rows = list(rows)
    return dict(zip(rows, to_display_images(images[rows], normalized=images.is_floating_point())))


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

    Explained in Chapter 1.5. Embed the gallery once with :func:`~clip_tutorial.evaluation.zeroshot.encode_images`
    and pass the features, so that each query only costs one text embedding and one matrix product.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        images_or_features: normalised images ``(N, 3, H, W)``, uint8 pixels, or their image
            embeddings ``(N, D)``.
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


def _ranker(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor, features: torch.Tensor | None,
            index: EmbeddingIndex | None, k: int) -> Callable[[str], tuple[torch.Tensor, torch.Tensor]]:
    """A function from a query to its ``k`` best ``(rows, scores)``, from features or an index."""
    if index is None:
        gallery = _gallery_features(model, images if features is None else features)
        if gallery.shape[0] != images.shape[0]:
            raise ValueError(f"features: expected one row per image ({images.shape[0]}), got {gallery.shape[0]}")
        return lambda query: text_to_image_search(model, tokenizer, gallery, query, k)
    if not isinstance(index, EmbeddingIndex):
        raise TypeError(f"index: expected a clip_tutorial.apps.search.EmbeddingIndex or None, got {type(index).__name__}")
    if features is not None:
        raise ValueError("features: expected None when an index is given (the index holds the embeddings), got a tensor")
    if len(index) != images.shape[0] or index.dim != model.config.embed_dim:
        raise ValueError(f"index: expected {images.shape[0]} rows (one per image, in the same order) of dimension "
                         f"{model.config.embed_dim}, got {len(index)} rows of dimension {index.dim}")

    def rank(query: str) -> tuple[torch.Tensor, torch.Tensor]:
        result = index.search(encode_texts(model, tokenizer, [_check_query(query)]), k)
        return result.rows[0].cpu(), result.scores[0].cpu()
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


def _draw_results(fig: Figure, pictures: list, rows: list[tuple[str, torch.Tensor, torch.Tensor]], k: int,
                  fontsize: float = 8) -> None:
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (query, indices, scores) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(pictures[int(indices[c])], interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            ax.set_xlabel(f"#{c + 1}: {float(scores[c]):.2f}", fontsize=fontsize)
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
    _check_model(model, tokenizer)
    images = _check_images(images)
    if isinstance(queries, str) or not isinstance(queries, Sequence) or len(queries) == 0:
        raise ValueError(f"queries: expected a non-empty list of str, got {queries!r}")
    queries = [_check_query(q) for q in queries]
    k = _check_k(k, images.shape[0])
    if isinstance(fontsize, bool) or not isinstance(fontsize, (int, float)) or not 4 <= fontsize <= 24:
        raise ValueError(f"fontsize: expected a size in points between 4 and 24, got {fontsize!r}")
    rank = _ranker(model, tokenizer, images, features, index, k)
    rows = [(q, *rank(q)) for q in queries]
    pictures = _display(images, sorted({int(i) for _, indices, _ in rows for i in indices}))
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
    _check_model(model, tokenizer)
    images = _check_images(images)
    k = _check_k(k, images.shape[0])
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
        indices, scores = rank(query)
        fig = Figure(figsize=(1.2 * k, 1.6), layout="constrained")
        _draw_results(fig, _display(images, indices.tolist()), [(query, indices, scores)], k)
        status.value = f"Top {k} of {images.shape[0]} images for <b>{html.escape(query)}</b> (best first)"
        picture.value = figure_png(fig, dpi=100)

    text.observe(update, names="value")
    update()
    return ipywidgets.VBox([text, status, picture])
