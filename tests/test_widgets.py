"""Tests of clip_tutorial.widgets: the search ranks like a reference computation, the figure and the widget work."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from clip_tutorial import ShapesWorld  # noqa: E402
from conftest import make_tiny_clip  # noqa: E402
from clip_tutorial.widgets import search_box, search_figure, text_to_image_search  # noqa: E402
from clip_tutorial.zeroshot import encode_images, encode_texts  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = make_tiny_clip(12)
    images = ShapesWorld(40, split="all", seed=0).tensors()
    return model, tokenizer, images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_returns_the_ordering_of_a_reference_computation(tiny, seed):
    model, tokenizer, _ = tiny
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(30, 16, generator=g) * torch.rand(30, 1, generator=g).add(0.1)  # unnormalised rows
    query = ["a red circle", "a big yellow star", "two blue squares"][seed]
    indices, scores = text_to_image_search(model, tokenizer, features, query, k=7)
    text = encode_texts(model, tokenizer, [query])[0]
    reference = F.cosine_similarity(features, text[None], dim=-1)
    assert indices.tolist() == reference.argsort(descending=True)[:7].tolist()
    assert torch.allclose(scores, reference[indices], atol=1e-6)
    assert torch.all(scores[:-1] >= scores[1:])


def test_search_over_images_equals_search_over_their_features(tiny):
    model, tokenizer, images = tiny
    by_images = text_to_image_search(model, tokenizer, images, "a hollow green heart", k=5)
    by_features = text_to_image_search(model, tokenizer, encode_images(model, images), "a hollow green heart", k=5)
    assert torch.equal(by_images[0], by_features[0]) and torch.allclose(by_images[1], by_features[1], atol=1e-6)


@pytest.mark.parametrize("query, k, error", [
    ("", 3, ValueError), ("   ", 3, ValueError), (None, 3, TypeError), ("a red circle", 0, ValueError),
    ("a red circle", -1, ValueError), ("a red circle", 41, ValueError), ("a red circle", 2.5, TypeError),
])
def test_search_rejects_bad_queries_and_k(tiny, query, k, error):
    model, tokenizer, images = tiny
    with pytest.raises(error):
        text_to_image_search(model, tokenizer, images, query, k=k)


def test_search_rejects_bad_galleries(tiny):
    model, tokenizer, images = tiny
    with pytest.raises(ValueError, match="embed_dim"):
        text_to_image_search(model, tokenizer, torch.zeros(5, 7), "a red circle")
    with pytest.raises(TypeError, match="images"):
        text_to_image_search(model, tokenizer, torch.zeros(5, 3, 32, 32, dtype=torch.uint8), "a red circle")
    with pytest.raises(TypeError, match="model"):
        text_to_image_search(object(), tokenizer, images, "a red circle")


def test_search_figure_has_one_row_per_query(tiny):
    model, tokenizer, images = tiny
    fig = search_figure(model, tokenizer, images, ["a red circle", "a small blue star"], k=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 8 and fig._suptitle.get_text()
    assert fig.axes[0].get_ylabel() == "a red circle" and fig.axes[4].get_ylabel() == "a small blue\nstar" and fig.axes[0].get_xlabel().startswith("#1: ")
    with pytest.raises(ValueError, match="queries"):
        search_figure(model, tokenizer, images, [], k=4)
    with pytest.raises(ValueError, match="query"):
        search_figure(model, tokenizer, images, ["a red circle", ""], k=4)
    with pytest.raises(ValueError, match="k"):
        search_figure(model, tokenizer, images, ["a red circle"], k=41)
    with pytest.raises(ValueError, match="features"):
        search_figure(model, tokenizer, images, ["a red circle"], k=3, features=torch.zeros(5, 16))


def test_search_box_updates_when_the_query_changes(tiny):
    pytest.importorskip("ipywidgets")
    model, tokenizer, images = tiny
    box = search_box(model, tokenizer, images, k=5, value="a red circle")
    text, status, picture = box.children
    assert text.value == "a red circle" and "a red circle" in status.value
    first = bytes(picture.value)
    assert first.startswith(b"\x89PNG")
    text.value = "four purple hearts"
    assert "four purple hearts" in status.value and bytes(picture.value) != first
    text.value = "  "
    assert picture.value == b"" and "Type a query" in status.value
    text.value = "<b>bold</b>"
    assert "&lt;b&gt;" in status.value  # the query is escaped, not rendered as HTML
    with pytest.raises(ValueError, match="k"):
        search_box(model, tokenizer, images, k=0)
