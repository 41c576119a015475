"""A 2-D map of CLIP's joint embedding space: images and prompts projected into one plane.

Explained in Chapter 3.5 (evaluation during training). CLIP puts images and texts in the same
``embed_dim``-dimensional space, so one projection can draw both: each image as a dot coloured by
an attribute (its colour, its shape), each prompt as a labelled marker. Principal component
analysis (PCA) is the projection of choice here: it is linear, deterministic and fast, and its
explained-variance ratios say how much of the space the picture shows. t-SNE, a non-linear map
that keeps neighbourhoods, is offered when scikit-learn is installed; it is never required.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from clip_tutorial.core.checks import check_choice, check_int, check_tensor, describe

__all__ = ["PCA", "fit_pca", "tsne_available", "joint_projection", "nearest_centroid_accuracy",
           "plot_embedding_map"]

_METHODS = ("pca", "tsne")
_FIT_ON = ("both", "images", "texts")


def _check_matrix(x: object, name: str, min_rows: int = 1) -> torch.Tensor:
    expected = f"a torch.Tensor (N, D): 2-D, floating-point, with N >= {min_rows} and D >= 1"
    check_tensor(name, x, ndim=2, floating=True, what=expected)
    if x.shape[0] < min_rows or x.shape[1] == 0:
        raise ValueError(f"{name}: expected {expected}, got {describe(x)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return x


@dataclass(frozen=True)
class PCA:
    """A fitted principal component analysis: ``transform`` projects onto the top components.

    Attributes:
        mean: (D,) the mean the data was centred with.
        components: (k, D) orthonormal principal directions, largest variance first. The sign of
            each is fixed so that its largest-magnitude entry is positive (scikit-learn's rule).
        explained_variance: (k,) the variance of the data along each component (unbiased, N - 1).
        explained_variance_ratio: (k,) that variance as a fraction of the total variance.

    Explained in Chapter 3.5.
    """

    mean: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates (N, k) of the rows of ``x`` (N, D) along the components, after centring."""
        x = _check_matrix(x, "x")
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x: expected {self.mean.shape[0]} columns like the data the PCA was fitted on, "
                             f"got shape {tuple(x.shape)}")
        mean, components = self.mean.to(x.device, torch.float64), self.components.to(x.device, torch.float64)
        return ((x.double() - mean) @ components.T).to(x.dtype)


def fit_pca(x: torch.Tensor, n_components: int = 2) -> PCA:
    """Principal component analysis of the rows of ``x`` by a singular value decomposition.

    The data is centred, ``x - mean = U S V^T``; the rows of ``V^T`` are the principal directions
    and ``S^2 / (N - 1)`` the variances along them. Computed in float64 and returned in the dtype
    of ``x``.

    Args:
        x: (N, D) data, one sample per row, at least two rows.
        n_components: how many components to keep, 1 to ``min(N, D)``.

    Returns:
        The fitted :class:`PCA`.

    Explained in Chapter 3.5.
    """
    x = _check_matrix(x, "x", min_rows=2)
    limit = min(x.shape)
    if not 1 <= check_int("n_components", n_components) <= limit:
        raise ValueError(f"n_components: expected an int from 1 to min(N, D) = {limit}, got {n_components!r}")
    data = x.detach().double()
    mean = data.mean(dim=0)
    _, singular, vh = torch.linalg.svd(data - mean, full_matrices=False)
    components = vh[:n_components]
    biggest = components.abs().argmax(dim=1)
    components = components * components[torch.arange(n_components), biggest].sign()[:, None]
    variance = singular.square() / (x.shape[0] - 1)
    total = variance.sum()
    ratio = variance / total if total > 0 else torch.zeros_like(variance)
    return PCA(mean.to(x.dtype), components.to(x.dtype), variance[:n_components].to(x.dtype),
               ratio[:n_components].to(x.dtype))


def tsne_available() -> bool:
    """``True`` when scikit-learn is installed, so that ``method="tsne"`` can be used."""
    try:
        import sklearn.manifold  # noqa: F401
    except ImportError:
        return False
    return True


def joint_projection(image_features: torch.Tensor, text_features: torch.Tensor | None = None,
                     method: str = "pca", fit_on: str = "both", seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor | None, PCA | None]:
    """Project image and text embeddings into the same two coordinates.

    The features are L2-normalised first, since CLIP compares them by cosine similarity.

    Args:
        image_features: (N, D) image embeddings.
        text_features: (M, D) text embeddings (prompts) to place in the same plane, or ``None``.
        method: ``"pca"``, or ``"tsne"`` (needs scikit-learn; images and texts are embedded
            together, since t-SNE cannot place new points afterwards).
        fit_on: for PCA, which points decide the plane: ``"both"``, ``"images"`` or ``"texts"``;
            the others are projected onto it.
        seed: t-SNE's random state.

    Returns:
        ``(image_xy, text_xy, pca)``: (N, 2) and (M, 2) float32 CPU coordinates (``text_xy`` is
        ``None`` without texts) and the fitted :class:`PCA` (``None`` for t-SNE).

    Raises:
        ImportError: for ``method="tsne"`` without scikit-learn.

    Explained in Chapter 3.5.
    """
    images = F.normalize(_check_matrix(image_features, "image_features").detach().float().cpu(), dim=-1)
    texts = None
    if text_features is not None:
        texts = F.normalize(_check_matrix(text_features, "text_features").detach().float().cpu(), dim=-1)
        if texts.shape[1] != images.shape[1]:
            raise ValueError(f"text_features: expected embed_dim {images.shape[1]} like image_features, "
                             f"got shape {tuple(texts.shape)}")
    check_choice("method", method, _METHODS)
    check_choice("fit_on", fit_on, _FIT_ON)
    if fit_on == "texts" and texts is None:
        raise ValueError("fit_on: 'texts' needs text_features, got None")
    points = images if texts is None else torch.cat([images, texts])
    if method == "tsne":
        if not tsne_available():
            raise ImportError("method: 't-SNE' needs scikit-learn ('pip install scikit-learn'); use method='pca'")
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (points.shape[0] - 1) // 3)))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points.numpy())
        xy, pca = torch.from_numpy(np.asarray(xy, dtype=np.float32)), None
    else:
        basis = {"both": points, "images": images, "texts": texts}[fit_on]
        pca = fit_pca(basis, n_components=2)
        xy = pca.transform(points)
    return xy[:images.shape[0]], (None if texts is None else xy[images.shape[0]:]), pca


def nearest_centroid_accuracy(points: torch.Tensor, labels: torch.Tensor) -> float:
    """How well the classes separate: the fraction of points closest to their own class centroid.

    A simple, parameter-free score for a map: 1 when every class forms its own cluster, about
    ``1 / classes`` when the classes are mixed at random. Distances are Euclidean.

    Args:
        points: (N, d) coordinates, for example a 2-D map.
        labels: (N,) integer class of each point, at least two classes.

    Returns:
        The accuracy, in [0, 1].

    Explained in Chapter 3.5.
    """
    points = _check_matrix(points, "points")
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected an integer tensor (N,), got "
                        f"{labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if labels.shape != (points.shape[0],):
        raise ValueError(f"labels: expected shape ({points.shape[0]},), one per point, got {tuple(labels.shape)}")
    classes, index = labels.cpu().unique(return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"labels: expected at least two classes, got {classes.tolist()}")
    points = points.detach().double().cpu()
    centroids = torch.zeros(len(classes), points.shape[1], dtype=torch.float64).index_add_(0, index, points)
    centroids /= torch.bincount(index, minlength=len(classes))[:, None]
    return float((torch.cdist(points, centroids).argmin(dim=1) == index).double().mean())


def plot_embedding_map(image_features: torch.Tensor, labels: torch.Tensor, label_names: Sequence[str],
                       text_features: torch.Tensor | None = None, text_names: Sequence[str] | None = None,
                       palette: Mapping[str, Any] | None = None, method: str = "pca", fit_on: str = "both",
                       ax: Any = None, title: str | None = None, seed: int = 0) -> Figure:
    """Draw images as dots coloured by an attribute, and prompts as labelled markers, in one plane.

    Args:
        image_features: (N, D) image embeddings.
        labels: (N,) integer attribute of each image, an index into ``label_names``.
        label_names: the attribute's values, e.g. ``["red", "green", ...]``.
        text_features: (M, D) embeddings of prompts to draw in the same plane, or ``None``.
        text_names: the M prompts' labels; a name found in ``label_names`` gets that class's colour.
        palette: colour of each name (any matplotlib colour); default: the ``tab10``/``tab20`` cycle.
        method: ``"pca"`` or ``"tsne"``, see :func:`joint_projection`.
        fit_on: which points decide the PCA plane, see :func:`joint_projection`.
        ax: the matplotlib axes to draw into; a new figure when ``None``.
        title: the panel's title; by default the method and, for PCA, the variance it shows.
        seed: t-SNE's random state.

    Returns:
        The figure holding the axes (not shown: call ``plt.show()``).

    Explained in Chapter 3.5.
    """
    if isinstance(label_names, str) or not isinstance(label_names, Sequence) or not label_names:
        raise TypeError(f"label_names: expected a non-empty list of str, got {label_names!r:.60}")
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.ndim != 1:
        raise TypeError(f"labels: expected a 1-D integer tensor, got "
                        f"{(labels.dtype, tuple(labels.shape)) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if len(labels) != len(image_features):
        raise ValueError(f"labels: expected one per image ({len(image_features)}), got {len(labels)}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(label_names):
        raise ValueError(f"labels: expected indices into label_names (0 to {len(label_names) - 1}), "
                         f"got values from {int(labels.min())} to {int(labels.max())}")
    if (text_features is None) != (text_names is None):
        raise ValueError("text_names: expected together with text_features (both or neither)")
    if text_names is not None and (isinstance(text_names, str) or len(text_names) != len(text_features)):
        raise ValueError(f"text_names: expected one name per text feature ({len(text_features)}), got {text_names!r:.60}")
    image_xy, text_xy, pca = joint_projection(image_features, text_features, method=method, fit_on=fit_on, seed=seed)
    cycle = plt.get_cmap("tab10" if len(label_names) <= 10 else "tab20").colors
    colours = {name: (palette or {}).get(name, cycle[i % len(cycle)]) for i, name in enumerate(label_names)}
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5), layout="constrained")
    for i, name in enumerate(label_names):
        mine = labels.cpu() == i
        if bool(mine.any()):
            ax.scatter(image_xy[mine, 0], image_xy[mine, 1], s=9, alpha=0.55, color=colours[name], label=name,
                       linewidths=0)
    if text_xy is not None:
        for (x, y), name in zip(text_xy.tolist(), text_names):
            ax.scatter([x], [y], marker="*", s=260, color=colours.get(name, "white"), edgecolors="black",
                       linewidths=1.2, zorder=3)
            ax.annotate(name, (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8, zorder=4,
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "linewidth": 0})
    if pca is not None:
        first, second = (100 * float(r) for r in pca.explained_variance_ratio)
        ax.set(xlabel=f"PC 1 ({first:.0f}% of the variance)", ylabel=f"PC 2 ({second:.0f}%)")
        default = f"PCA of the joint space ({first + second:.0f}% of the variance)"
    else:
        ax.set(xlabel="t-SNE 1", ylabel="t-SNE 2")
        default = "t-SNE of the joint space"
    ax.set_title(title if title is not None else default)
    ax.legend(fontsize=7, markerscale=1.5, loc="best", ncol=2 if len(label_names) > 4 else 1,
              title="images (dots), prompts (stars)", title_fontsize=7)
    return ax.figure
