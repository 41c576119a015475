"""Tests of clip_tutorial.viz.widgets: the search ranks like a reference computation, the figure and the widget work."""
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
from clip_tutorial.apps.search import SearchResult  # noqa: E402
from clip_tutorial.viz.widgets import search_box, search_figure, text_to_image_search  # noqa: E402
from clip_tutorial.evaluation.zeroshot import encode_images, encode_texts  # noqa: E402


pytestmark = pytest.mark.usefixtures("close_figures")


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
    result = text_to_image_search(model, tokenizer, features, query, k=7)
    assert isinstance(result, SearchResult) and result.scores.shape == result.rows.shape == (1, 7)
    scores, ids, rows = result  # unpacks as (scores, ids, rows), like what EmbeddingIndex.search returns
    assert scores is result.scores and ids is result.ids and rows is result.rows
    indices, scores = result.rows[0], result.scores[0]
    text = encode_texts(model, tokenizer, [query])[0]
    reference = F.cosine_similarity(features, text[None], dim=-1)
    assert indices.tolist() == reference.argsort(descending=True)[:7].tolist()
    assert result.ids == [indices.tolist()]  # a tensor gallery's ids are its row numbers
    assert torch.allclose(scores, reference[indices], atol=1e-6)
    assert torch.all(scores[:-1] >= scores[1:])


def test_search_of_several_queries_equals_one_search_per_query(tiny):
    model, tokenizer, images = tiny
    features = encode_images(model, images)
    queries = ["a red circle", "a big yellow star", "two blue squares"]
    together = text_to_image_search(model, tokenizer, features, queries, k=4)
    assert together.scores.shape == together.rows.shape == (3, 4) and len(together.ids) == 3
    for q, query in enumerate(queries):
        alone = text_to_image_search(model, tokenizer, features, query, k=4)
        assert together.ids[q] == alone.ids[0] and torch.equal(together.rows[q], alone.rows[0])
        torch.testing.assert_close(together.scores[q], alone.scores[0])
    with pytest.raises(ValueError, match=r"query\[1\]: expected some words"):
        text_to_image_search(model, tokenizer, features, ["a red circle", " "])
    with pytest.raises(ValueError, match="query: expected a non-empty list"):
        text_to_image_search(model, tokenizer, features, [])


def test_search_over_images_equals_search_over_their_features(tiny):
    model, tokenizer, images = tiny
    by_images = text_to_image_search(model, tokenizer, images, "a hollow green heart", k=5)
    by_features = text_to_image_search(model, tokenizer, encode_images(model, images), "a hollow green heart", k=5)
    assert torch.equal(by_images.rows, by_features.rows) and by_images.ids == by_features.ids
    assert torch.allclose(by_images.scores, by_features.scores, atol=1e-6)


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
        text_to_image_search(model, tokenizer, torch.zeros(5, 3, 32, 32, dtype=torch.int32), "a red circle")
    with pytest.raises(TypeError, match="model"):
        text_to_image_search(object(), tokenizer, images, "a red circle")
    with pytest.raises(TypeError, match="tokenizer: expected a tokenizer"):
        text_to_image_search(model, "tokenizer", images, "a red circle")
    with pytest.raises(ValueError, match=r"images: expected .*got a tensor of shape \(40, 3, 32\)"):
        search_figure(model, tokenizer, images[..., 0], ["a red circle"], k=3)


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


def test_search_figure_fontsize_sets_the_labels_and_widens_the_figure(tiny):
    model, tokenizer, images = tiny
    small = search_figure(model, tokenizer, images, ["a red circle"], k=3)
    large = search_figure(model, tokenizer, images, ["a red circle"], k=3, fontsize=12)
    assert small.axes[0].xaxis.label.get_fontsize() == 8 and large.axes[0].xaxis.label.get_fontsize() == 12
    assert large.axes[0].yaxis.label.get_fontsize() == 12
    assert large.get_figwidth() > small.get_figwidth()
    for bad in (3, 30):
        with pytest.raises(ValueError, match="fontsize"):
            search_figure(model, tokenizer, images, ["a red circle"], k=3, fontsize=bad)
    for bad in (True, "10"):  # not a number at all
        with pytest.raises(TypeError, match="fontsize"):
            search_figure(model, tokenizer, images, ["a red circle"], k=3, fontsize=bad)


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


def test_search_with_an_index_equals_search_with_features(tiny):
    from clip_tutorial.data import normalize_images
    from clip_tutorial.apps.search import EmbeddingIndex

    model, tokenizer, images = tiny
    pixels = ShapesWorld(40, split="all", seed=0).images
    torch.testing.assert_close(normalize_images(pixels), images)
    features = encode_images(model, images)
    index = EmbeddingIndex(features.shape[1])
    index.add(features, ids=[f"img{i}" for i in range(40)])  # ids are not rows: the figure must use rows
    queries = ["a red circle", "a small blue star"]
    with_features = search_figure(model, tokenizer, images, queries, k=4, features=features)
    with_index = search_figure(model, tokenizer, pixels, queries, k=4, index=index)
    for a, b in zip(with_features.axes, with_index.axes):
        assert a.get_xlabel() == b.get_xlabel()
        if a.images:  # the same picture, from uint8 pixels or from de-normalised floats
            assert abs(a.images[0].get_array() - b.images[0].get_array()).max() < 1e-5
        else:
            assert not b.images
    expected = text_to_image_search(model, tokenizer, features, "a red circle", 5)
    assert torch.equal(text_to_image_search(model, tokenizer, pixels, "a red circle", 5).rows, expected.rows)
    with pytest.raises(ValueError, match="features: expected None when an index"):
        search_figure(model, tokenizer, images, queries, k=4, features=features, index=index)
    with pytest.raises(ValueError, match="index: expected 39 rows"):
        search_figure(model, tokenizer, images[:39], queries, k=4, index=index)
    with pytest.raises(TypeError, match="index: expected a clip_tutorial.apps.search.EmbeddingIndex"):
        search_figure(model, tokenizer, images, queries, k=4, index=features)


def test_search_box_over_an_index(tiny):
    pytest.importorskip("ipywidgets")
    from clip_tutorial.apps.search import build_image_index

    model, tokenizer, images = tiny
    index = build_image_index(model, images, progress=False)
    box = search_box(model, tokenizer, images, k=3, value="a red circle", index=index)
    plain = search_box(model, tokenizer, images, k=3, value="a red circle")
    text, status, picture = box.children
    assert "Top 3 of 40 images" in status.value and bytes(picture.value) == bytes(plain.children[2].value)
    text.value = "a green square"
    plain.children[0].value = "a green square"
    assert bytes(picture.value) == bytes(plain.children[2].value)


# -- Chapter 2.3: the temperature figure and its slider ----------------------------------------

from clip_tutorial.objectives.loss import clip_loss  # noqa: E402
from clip_tutorial.viz.temperature import TEMPERATURE_RANGE, temperature_explorer, temperature_figure  # noqa: E402


@pytest.fixture(scope="module")
def similarity():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    b = F.normalize(a + 0.5 * torch.randn(8, 16, generator=g), dim=-1)
    return a @ b.T


def test_temperature_figure_draws_what_it_says(similarity):
    fig = temperature_figure(similarity, temperature=0.05, row=3)
    ax_row, ax_loss, ax_grad = fig.axes
    assert all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert "0.05" in fig._suptitle.get_text()
    # left: the bars are the softmax of row 3 at this temperature, its match in another colour
    heights = torch.tensor([p.get_height() for p in ax_row.patches], dtype=torch.float64)
    torch.testing.assert_close(heights, (similarity[3].double() / 0.05).softmax(0), atol=1e-9, rtol=0)
    assert ax_row.patches[3].get_facecolor() != ax_row.patches[0].get_facecolor()
    # middle: the curve is the loss at each temperature, from one end of the range to the other
    x, y = ax_loss.lines[0].get_data()
    assert x[0] == pytest.approx(TEMPERATURE_RANGE[0]) and x[-1] == pytest.approx(TEMPERATURE_RANGE[1])
    for k in (0, 20, -1):
        assert y[k] == pytest.approx(clip_loss(similarity.double() / x[k]).item(), rel=1e-9)
    # right: one point per negative pair
    assert len(ax_grad.collections[0].get_offsets()) == 8 * 7


def test_lower_temperature_concentrates_the_push_on_hard_negatives():
    # every match (0.9) beats every negative (-0.2 to 0.5): the push on a negative grows like exp(cos / τ)
    g = torch.Generator().manual_seed(1)
    easy = torch.empty(8, 8).uniform_(-0.2, 0.5, generator=g).fill_diagonal_(0.9)

    def share_of_hardest(t):
        offsets = temperature_figure(easy, temperature=t).axes[2].collections[0].get_offsets()
        cos, push = torch.tensor(offsets[:, 0]), torch.tensor(offsets[:, 1])
        plt.close("all")
        return float(push[cos.argmax()] / push.sum())
    assert share_of_hardest(0.01) > share_of_hardest(0.1) > share_of_hardest(1.0)


@pytest.mark.parametrize("kwargs, error", [
    (dict(similarity=torch.zeros(3, 4)), ValueError), (dict(similarity=torch.zeros(1, 1)), ValueError),
    (dict(similarity=torch.zeros(3, 3, dtype=torch.long)), TypeError), (dict(similarity=[[1.0]]), TypeError),
    (dict(temperature=0.0), ValueError), (dict(temperature=2.0), ValueError), (dict(temperature="0.07"), TypeError),
    (dict(row=8), ValueError), (dict(row=-1), ValueError),
])
def test_temperature_figure_and_explorer_reject_bad_arguments(similarity, kwargs, error):
    arguments = dict(similarity=similarity) | kwargs
    name = next(iter(kwargs))
    with pytest.raises(error, match=name):
        temperature_figure(**arguments)
    pytest.importorskip("ipywidgets")
    with pytest.raises(error, match=name):
        temperature_explorer(**arguments)


def test_temperature_explorer_redraws_when_the_slider_moves(similarity):
    pytest.importorskip("ipywidgets")
    box = temperature_explorer(similarity, temperature=0.07)
    slider, picture = box.children
    assert slider.value == pytest.approx(0.07, rel=1e-6)
    first = bytes(picture.value)
    assert first.startswith(b"\x89PNG")
    slider.value = 0.5
    assert bytes(picture.value).startswith(b"\x89PNG") and bytes(picture.value) != first
