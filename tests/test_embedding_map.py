"""The joint-space map: PCA against numpy (and scikit-learn when installed), projections, the score, the figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

from clip_tutorial.viz.embedding_map import (PCA, fit_pca, joint_projection, nearest_centroid_accuracy,  # noqa: E402
                                         plot_embedding_map, tsne_available)


def _data(n: int = 120, d: int = 10, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(4.0, 0.2, d, dtype=torch.float64)  # distinct variances: a unique PCA
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scales + 3.0).to(dtype)


def _numpy_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: numpy's SVD of the centred data; signs fixed by the largest-magnitude entry."""
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:k] * np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(axis=1)])[:, None]
    return comps, (s ** 2 / (len(x) - 1))[:k], (s ** 2 / (s ** 2).sum())[:k]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_pca_matches_numpy_svd(k: int) -> None:
    x = _data()
    pca = fit_pca(x, k)
    comps, var, ratio = _numpy_pca(x.numpy(), k)
    np.testing.assert_allclose(pca.components.numpy(), comps, atol=1e-10)
    np.testing.assert_allclose(pca.explained_variance.numpy(), var, rtol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_ratio.numpy(), ratio, rtol=1e-10)
    # The coordinates' variances are the explained variances, and the coordinates are uncorrelated.
    coords = pca.transform(x)
    np.testing.assert_allclose(np.cov(coords.numpy().T).reshape(k, k), np.diag(var), atol=1e-9)
    # Orthonormal components, and the largest entry of each is positive.
    torch.testing.assert_close(pca.components @ pca.components.T, torch.eye(k, dtype=x.dtype))
    assert bool((pca.components[torch.arange(k), pca.components.abs().argmax(dim=1)] > 0).all())


def test_pca_matches_sklearn_when_installed() -> None:
    sklearn_decomposition = pytest.importorskip("sklearn.decomposition")
    x = _data(n=300, d=16, seed=1)
    ours = fit_pca(x, 3)
    ref = sklearn_decomposition.PCA(3, svd_solver="full").fit(x.numpy())
    np.testing.assert_allclose(ours.components.numpy(), ref.components_, atol=1e-10)  # same sign rule
    np.testing.assert_allclose(ours.explained_variance_ratio.numpy(), ref.explained_variance_ratio_, rtol=1e-10)
    fresh = _data(n=50, d=16, seed=2)
    np.testing.assert_allclose(ours.transform(fresh).numpy(), ref.transform(fresh.numpy()), atol=1e-9)


def test_float32_input_and_full_rank_ratios_sum_to_one() -> None:
    x = _data(n=40, d=6, dtype=torch.float32)
    pca = fit_pca(x, 6)
    assert pca.components.dtype == torch.float32 and pca.transform(x).dtype == torch.float32
    assert abs(float(pca.explained_variance_ratio.sum()) - 1) < 1e-5
    assert bool((pca.explained_variance[:-1] >= pca.explained_variance[1:]).all())
    # Projecting on all components and back reconstructs the data.
    back = pca.transform(x) @ pca.components + pca.mean
    torch.testing.assert_close(back, x, atol=1e-4, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 40), d=st.integers(2, 8))
def test_pca_signs_and_shift_invariance(seed: int, n: int, d: int) -> None:
    x = _data(n=n, d=d, seed=seed)
    k = min(2, n, d)
    a, b = fit_pca(x, k), fit_pca(x + 7.5, k)  # a shift changes the mean, nothing else
    torch.testing.assert_close(a.components, b.components, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(a.transform(x), b.transform(x + 7.5), atol=1e-8, rtol=1e-6)
    comps, _, ratio = _numpy_pca(x.numpy(), k)
    np.testing.assert_allclose(a.components.numpy(), comps, atol=1e-8)
    np.testing.assert_allclose(a.explained_variance_ratio.numpy(), ratio, atol=1e-10)


def test_constant_data_has_zero_ratio() -> None:
    pca = fit_pca(torch.ones(5, 3), 2)
    assert float(pca.explained_variance_ratio.abs().sum()) == 0.0


@pytest.mark.parametrize("x, k, error, match", [
    ([[1.0, 2.0]], 1, TypeError, "x: expected a torch.Tensor"),
    (torch.ones(4, 3, dtype=torch.long), 1, TypeError, "floating-point"),
    (torch.ones(1, 3), 1, ValueError, "N >= 2"),
    (torch.ones(4), 1, ValueError, "2-D"),
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 1, ValueError, "finite"),
    (torch.ones(4, 3), 0, ValueError, "n_components"),
    (torch.ones(4, 3), 4, ValueError, "min\\(N, D\\) = 3"),
    (torch.ones(4, 3), True, TypeError, "n_components: expected an int"),
])
def test_fit_pca_bad_input(x: object, k: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        fit_pca(x, k)


def test_transform_wrong_width() -> None:
    with pytest.raises(ValueError, match="x: expected 10 columns"):
        fit_pca(_data(), 2).transform(torch.ones(3, 4, dtype=torch.float64))


def test_joint_projection_normalises_and_shares_the_plane() -> None:
    images, texts = _data(60, 8, seed=3, dtype=torch.float32), _data(5, 8, seed=4, dtype=torch.float32)
    image_xy, text_xy, pca = joint_projection(images * 10, texts)  # scaling must not matter
    both = torch.cat([F.normalize(images, dim=-1), F.normalize(texts, dim=-1)])
    reference = fit_pca(both, 2)
    torch.testing.assert_close(torch.cat([image_xy, text_xy]), reference.transform(both))
    assert isinstance(pca, PCA) and image_xy.shape == (60, 2) and text_xy.shape == (5, 2)
    image_only, none, pca_images = joint_projection(images, fit_on="images")
    assert none is None
    torch.testing.assert_close(pca_images.components, fit_pca(F.normalize(images, dim=-1), 2).components)
    _, text_xy_images, _ = joint_projection(images, texts, fit_on="images")
    torch.testing.assert_close(text_xy_images, pca_images.transform(F.normalize(texts, dim=-1)))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"text_features": torch.ones(3, 5)}, ValueError, "embed_dim 8"),
    ({"method": "umap"}, ValueError, "method"),
    ({"fit_on": "captions"}, ValueError, "fit_on"),
    ({"fit_on": "texts"}, ValueError, "needs text_features"),
])
def test_joint_projection_bad_input(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        joint_projection(torch.ones(4, 8) + torch.eye(4, 8), **kwargs)


def test_tsne_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without scikit-learn, t-SNE is refused with a clear error (running t-SNE itself is too slow for a test)."""
    images = _data(40, 8, seed=5, dtype=torch.float32)
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("sklearn"):
            raise ImportError("no sklearn here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    assert not tsne_available()
    with pytest.raises(ImportError, match="scikit-learn"):
        joint_projection(images, method="tsne")


def test_nearest_centroid_accuracy_against_brute_force() -> None:
    g = torch.Generator().manual_seed(6)
    labels = torch.randint(0, 4, (200,), generator=g) + 10  # class ids need not start at 0
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    points = centres[labels - 10] + 1.2 * torch.randn(200, 2, generator=g)
    expected = 0
    means = {c: points[labels == c].mean(dim=0) for c in range(10, 14)}
    for p, c in zip(points, labels.tolist()):
        distances = {k: float((p - m).norm()) for k, m in means.items()}
        expected += min(distances, key=distances.get) == c
    assert nearest_centroid_accuracy(points, labels) == pytest.approx(expected / 200, abs=1e-12)
    separated = centres[labels - 10] + 0.01 * torch.randn(200, 2, generator=g)
    assert nearest_centroid_accuracy(separated, labels) == 1.0
    mixed = torch.randn(2000, 2, generator=g)
    assert abs(nearest_centroid_accuracy(mixed, torch.randint(0, 4, (2000,), generator=g)) - 0.25) < 0.1


@pytest.mark.parametrize("points, labels, error, match", [
    (torch.ones(3, 2), torch.tensor([0.0, 1.0, 1.0]), TypeError, "integer"),
    (torch.ones(3, 2), torch.tensor([0, 1]), ValueError, "shape \\(3,\\)"),
    (torch.ones(3, 2), torch.tensor([1, 1, 1]), ValueError, "two classes"),
    (torch.ones(3), torch.tensor([0, 1, 1]), ValueError, "points"),
])
def test_nearest_centroid_bad_input(points: torch.Tensor, labels: torch.Tensor, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        nearest_centroid_accuracy(points, labels)


def test_plot_embedding_map_draws_images_and_prompts() -> None:
    images = _data(30, 8, seed=7, dtype=torch.float32)
    labels = torch.arange(30) % 3
    texts = _data(3, 8, seed=8, dtype=torch.float32)
    fig, axes = plt.subplots(1, 2)
    out = plot_embedding_map(images, labels, ["red", "green", "blue"], texts, ["red", "green", "a prompt"],
                             palette={"red": "tab:red"}, ax=axes[0], title="by colour")
    assert out is fig and axes[0].get_title() == "by colour"
    assert [t.get_text() for t in axes[0].texts] == ["red", "green", "a prompt"]
    assert "PC 1" in axes[0].get_xlabel() and "%" in axes[0].get_ylabel()
    dots = axes[0].collections[0]
    np.testing.assert_allclose(dots.get_facecolor()[0][:3], matplotlib.colors.to_rgb("tab:red"))
    assert len(axes[0].collections) == 3 + 3  # three classes of dots, three stars
    alone = plot_embedding_map(images, labels, ["a", "b", "c"])
    assert alone is not fig and "PCA" in alone.axes[0].get_title()
    plt.close("all")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"labels": torch.arange(30) % 3 + 1}, ValueError, "indices into label_names"),
    ({"labels": torch.arange(29) % 3}, ValueError, "one per image"),
    ({"labels": torch.zeros(30)}, TypeError, "integer"),
    ({"label_names": "abc"}, TypeError, "label_names"),
    ({"text_features": torch.ones(2, 8)}, ValueError, "text_names"),
    ({"text_features": torch.ones(2, 8), "text_names": ["x"]}, ValueError, "one name per text"),
])
def test_plot_embedding_map_bad_input(kwargs: dict, error: type, match: str) -> None:
    arguments = {"image_features": _data(30, 8, seed=9, dtype=torch.float32), "labels": torch.arange(30) % 3,
                 "label_names": ["a", "b", "c"], **kwargs}
    with pytest.raises(error, match=match):
        plot_embedding_map(**arguments)
    plt.close("all")
