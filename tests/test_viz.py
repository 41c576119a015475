"""Tests of clip_tutorial.viz: each function returns a labelled Figure and rejects bad input clearly."""
from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from clip_tutorial import viz  # noqa: E402
from clip_tutorial.data import MEAN, STD  # noqa: E402
from clip_tutorial.viz import plots  # noqa: E402


pytestmark = pytest.mark.usefixtures("close_figures")


def _uint8(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


# -- images ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_display_images_undo_the_normalisation(seed):
    pixels = _uint8(4, seed)
    reference = pixels.permute(0, 2, 3, 1).numpy() / 255.0
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    normalised = (pixels.float() / 255 - mean) / std
    for images, kwargs in [(pixels, {}), (pixels.float() / 255, {}), (normalised, {"normalized": True}),
                           (pixels.permute(0, 2, 3, 1).numpy(), {}),
                           ([Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels], {})]:
        shown = viz.to_display_images(images, **kwargs)
        assert len(shown) == 4
        np.testing.assert_allclose(np.stack(shown), reference, atol=1e-6)


def test_display_images_single_and_grey():
    grey = torch.rand(2, 1, 8, 8)
    shown = viz.to_display_images(grey)
    assert shown[0].shape == (8, 8, 3) and np.allclose(shown[0][..., 0], shown[0][..., 2])
    assert len(viz.to_display_images(torch.rand(3, 8, 8))) == 1


def test_show_images_grid_and_captions():
    captions = [f"a red circle number {i} in the middle of the picture" for i in range(10)]
    fig = viz.show_images(_uint8(10), captions, ncols=4, title="ShapesWorld")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 10  # the two empty cells of the 3 x 4 grid are removed
    assert all(len(ax.images) == 1 for ax in fig.axes)
    assert fig.get_suptitle() == "ShapesWorld"
    assert fig.axes[3].get_xlabel().replace("\n", " ") == captions[3]
    assert "\n" in fig.axes[0].get_xlabel()  # wrapped
    assert fig.axes[0].images[0].get_interpolation() == "nearest"
    assert len(viz.show_images(_uint8(3)).axes) == 3


def test_show_images_errors():
    with pytest.raises(ValueError, match=r"captions: expected one caption per image \(3\), got 2"):
        viz.show_images(_uint8(3), ["a", "b"])
    with pytest.raises(TypeError, match="captions: expected a list of str"):
        viz.show_images(_uint8(3), "a red circle")
    with pytest.raises(ValueError, match=r"images: expected a non-empty batch of shape \(N, 3, H, W\).*got \(2, 5, 32, 32\)"):
        viz.show_images(torch.rand(2, 5, 32, 32))
    with pytest.raises(ValueError, match=r"pass normalized=True"):
        viz.show_images(torch.randn(2, 3, 8, 8) * 2)
    with pytest.raises(TypeError, match="images: expected dtype uint8 or float, got int64"):
        viz.show_images(torch.zeros(2, 3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="ncols: expected a positive int, got 0"):
        viz.show_images(_uint8(2), ncols=0)
    with pytest.raises(TypeError, match="images: expected a torch.Tensor"):
        viz.show_images("picture.png")


# -- similarity ------------------------------------------------------------------------------

def test_plot_similarity_small_is_annotated():
    sim = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    fig = viz.plot_similarity(sim, row_labels=["i0", "i1", "i2"], col_labels=["a", "b", "c", "d"], title="sims")
    heat, bar = fig.axes
    assert heat.get_title() == "sims" and heat.get_ylabel() == "images" and heat.get_xlabel() == "texts"
    assert bar.get_ylabel() == "cosine similarity"
    texts = [t.get_text() for t in heat.texts]
    assert len(texts) == 12 and f"{sim[1, 2].item():.2f}" in texts
    np.testing.assert_allclose(heat.images[0].get_array(), sim.numpy())
    assert [t.get_text() for t in heat.get_xticklabels()] == ["a", "b", "c", "d"]


def test_plot_similarity_large_is_not_annotated_and_thumbnails():
    assert len(viz.plot_similarity(np.random.default_rng(0).random((13, 5))).axes[0].texts) == 0
    fig = viz.plot_similarity(torch.rand(5, 3), images=_uint8(3), images_along="cols")
    heat = fig.axes[0]
    assert len(heat.images) == 1 + 3
    assert heat.get_xlabel() == "images" and heat.get_ylabel() == "texts"
    assert len(viz.plot_similarity(torch.rand(2, 6), images=_uint8(2)).axes[0].images) == 3


def test_plot_similarity_errors():
    with pytest.raises(ValueError, match=r"similarity: expected a non-empty 2-D .*got shape \(4,\)"):
        viz.plot_similarity(torch.rand(4))
    with pytest.raises(ValueError, match=r"row_labels: expected 3 labels .*got 2"):
        viz.plot_similarity(torch.rand(3, 4), row_labels=["a", "b"])
    with pytest.raises(ValueError, match=r"col_labels: expected 4 labels .*got 5"):
        viz.plot_similarity(torch.rand(3, 4), col_labels=list("abcde"))
    with pytest.raises(ValueError, match=r"images: expected 3 thumbnails, one per row, got 2"):
        viz.plot_similarity(torch.rand(3, 4), images=_uint8(2))
    with pytest.raises(ValueError, match="images_along: expected 'rows' or 'cols'"):
        viz.plot_similarity(torch.rand(3, 4), images_along="x")
    with pytest.raises(TypeError, match="similarity: expected a torch.Tensor"):
        viz.plot_similarity(None)


# -- history ---------------------------------------------------------------------------------

@dataclass
class _History:
    steps: list = field(default_factory=lambda: [0, 10, 20, 30])
    loss: list = field(default_factory=lambda: [2.0, 1.0, 0.5, 0.4])
    temperature: list = field(default_factory=lambda: [0.07, 0.06, 0.05, 0.05])
    lr: list = field(default_factory=lambda: [0.0, 1e-3, 1e-3, 5e-4])


def test_plot_history_object_and_dict():
    fig = viz.plot_history(_History(), title="run 1")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "temperature", "lr"]
    assert all(ax.get_xlabel() == "step" for ax in fig.axes) and fig.get_suptitle() == "run 1"
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_yscale() == "linear"
    np.testing.assert_allclose(fig.axes[1].lines[0].get_xydata(), [[0, 0.07], [10, 0.06], [20, 0.05], [30, 0.05]])
    fig = viz.plot_history({"loss": [3.0, 2.0, 1.5], "accuracy": [0.1, 0.5, 0.7]}, keys=["accuracy"])
    assert len(fig.axes) == 1 and list(fig.axes[0].lines[0].get_xdata()) == [0, 1, 2]
    fig = viz.plot_history({"loss": list(np.linspace(3, 1, 50))}, smooth=5)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2


def test_plot_history_errors():
    with pytest.raises(ValueError, match=r"keys: expected names recorded in history .*got 'acc'"):
        viz.plot_history(_History(), keys=["loss", "acc"])
    with pytest.raises(ValueError, match=r"expected one 'loss' value per step \(4\), got 3"):
        viz.plot_history({"steps": [0, 1, 2, 3], "loss": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="expected at least one of 'loss', 'temperature', 'lr'"):
        viz.plot_history({"steps": [0], "other": [1.0]})
    with pytest.raises(TypeError, match="history: expected a dict of lists"):
        viz.plot_history([1.0, 2.0])
    with pytest.raises(ValueError, match="keys: expected at least one name to plot"):
        viz.plot_history(_History(), keys=[])
    with pytest.raises(ValueError, match="smooth: expected a positive int"):
        viz.plot_history(_History(), smooth=0)


# -- bars ------------------------------------------------------------------------------------

def test_plot_accuracy_bars():
    values = {"CNN": 0.93, "CLIP zero-shot": torch.tensor(0.78), "held-out": np.float32(0.41)}
    fig = viz.plot_accuracy_bars(values, title="CNN vs CLIP", chance=0.2)
    (ax,) = fig.axes
    assert ax.get_title() == "CNN vs CLIP" and ax.get_ylabel() == "accuracy"
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [0.93, 0.78, 0.41], rtol=1e-6)
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["93.0%", "78.0%", "41.0%"]
    assert ax.lines[0].get_ydata()[0] == pytest.approx(0.2) and "chance" in ax.get_legend().get_texts()[0].get_text()
    fig = viz.plot_accuracy_bars({"a": 12.0, "b": 3.5}, title="loss", ylabel="loss", fmt="{:.1f}")
    assert [t.get_text() for t in fig.axes[0].texts] == ["12.0", "3.5"]


def test_plot_accuracy_bars_errors():
    with pytest.raises(ValueError, match="named_values: expected at least one bar"):
        viz.plot_accuracy_bars({}, title="x")
    with pytest.raises(TypeError, match="named_values: expected a dict"):
        viz.plot_accuracy_bars([0.1, 0.2], title="x")
    with pytest.raises(TypeError, match="named_values: expected a number for 'a', got str"):
        viz.plot_accuracy_bars({"a": "high"}, title="x")
    with pytest.raises(ValueError, match="named_values: expected a finite number for 'a', got nan"):
        viz.plot_accuracy_bars({"a": float("nan")}, title="x")


def test_show_images_keeps_caption_line_breaks():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fig = viz.show_images(images, ["first line\nsecond line", "one line"], ncols=2)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_xlabel() for ax in fig.axes] + \
        [ax.get_title() for ax in fig.axes]
    assert any(t == "first line\nsecond line" for t in texts), texts


# -- legible on the page ---------------------------------------------------------------------

def _texts(fig):
    """Every piece of text the figure shows."""
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]


def assert_legible(fig):
    """The figure's text is at least MIN_FONTSIZE points once the figure is shrunk to the page."""
    shrink = min(1.0, viz.PAGE_WIDTH / fig.get_figwidth())
    small = sorted({(round(t.get_fontsize() * shrink, 2), t.get_text()[:20]) for t in _texts(fig)
                    if t.get_fontsize() * shrink < viz.MIN_FONTSIZE - 1e-6})
    assert not small, f"text smaller than {viz.MIN_FONTSIZE} pt on the page: {small}"


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_legible_fontsize_grows_with_a_figure_wider_than_the_page():
    assert viz.legible_fontsize(viz.PAGE_WIDTH / 2) == 9.0
    assert viz.legible_fontsize(viz.PAGE_WIDTH, 10) == 10.0
    assert viz.legible_fontsize(2 * viz.PAGE_WIDTH, 9) == pytest.approx(18.0)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="fig_width: expected a positive number"):
            viz.legible_fontsize(bad)
    for bad in ("wide", True):  # not a number at all
        with pytest.raises(TypeError, match="fig_width: expected a number"):
            viz.legible_fontsize(bad)
    with pytest.raises(ValueError, match="size: expected a positive number"):
        viz.legible_fontsize(5.0, 0)


@pytest.mark.parametrize("count, ncols, expected", [(16, 8, 8), (12, 12, 6), (20, 20, 7), (3, 8, 3), (9, 4, 3)])
def test_show_images_fits_the_page_and_spreads_rows_evenly(count, ncols, expected):
    captions = [f"a picture of a large hollow black star number {i}" for i in range(count)]
    fig = viz.show_images(_uint8(count), captions, ncols=ncols, title="a grid")
    assert fig.get_figwidth() <= viz.PAGE_WIDTH + 1e-9
    columns = len({round(ax.get_position().x0, 3) for ax in fig.axes})
    assert columns == expected
    assert_legible(fig)


def test_show_images_captions_stay_under_their_image():
    captions = ["a picture of a large filled yellow square in the top left"] * 8
    fig = viz.show_images(_uint8(8), captions, ncols=8)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        label, box = ax.xaxis.label.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert label.width <= box.width * 1.1 + 2, (label.width, box.width)
        assert ax.get_xlabel().replace("\n", " ") == captions[0]
    assert max(ax.get_xlabel().count("\n") for ax in fig.axes) >= 2  # wrapped to the narrow images


def test_show_images_keeps_non_breaking_phrases_whole_with_fewer_columns():
    phrase = "true:\u00a0black\u00a0hexagon CNN:\u00a0purple\u00a0triangle"
    fig = viz.show_images(_uint8(8), [phrase] * 8, ncols=8)
    assert all(ax.get_xlabel() == "true:\u00a0black\u00a0hexagon\nCNN:\u00a0purple\u00a0triangle" for ax in fig.axes)
    assert len({round(ax.get_position().x0, 3) for ax in fig.axes}) < 8  # fewer, wider columns
    fig = viz.show_images(_uint8(2), ["a red circle at the top", "a"], ncols=2, wrap=8)
    assert fig.axes[0].get_xlabel() == "a red\ncircle\nat the\ntop"


def test_show_images_rejects_bad_wrap_and_fontsize():
    with pytest.raises(ValueError, match="wrap: expected a positive int or None, got 0"):
        viz.show_images(_uint8(2), wrap=0)
    with pytest.raises(ValueError, match="fontsize: expected a number >= 8.5"):
        viz.show_images(_uint8(2), fontsize=6)
    for name, bad in (("wrap", 2.5), ("ncols", True), ("fontsize", "10")):  # not a number of the right kind
        with pytest.raises(TypeError, match=f"{name}: expected"):
            viz.show_images(_uint8(2), **{name: bad})


def test_plot_similarity_fits_the_page_with_legible_labels():
    captions = [f"a picture of a small hollow yellow hexagon number {i}" for i in range(8)]
    fig = viz.plot_similarity(torch.rand(8, 8), col_labels=captions, images=_uint8(8))
    assert fig.get_figwidth() <= viz.PAGE_WIDTH + 1e-9
    assert_legible(fig)
    heat = fig.axes[0]
    assert all(t.get_rotation() == 90 for t in heat.get_xticklabels())  # long captions stand upright, whole
    assert [t.get_text() for t in heat.get_xticklabels()] == captions
    fig = viz.plot_similarity(torch.rand(3, 3), col_labels=["circle", "square", "star"])
    assert all(t.get_rotation() == 0 for t in fig.axes[0].get_xticklabels())
    assert_legible(fig)
    assert_legible(viz.plot_similarity(torch.rand(40, 30)))


def test_plot_accuracy_bars_legend_covers_no_bar():
    fig = viz.plot_accuracy_bars({"CNN seen": 0.99, "CLIP seen": 1.0, "CNN unseen": 0.0, "CLIP unseen": 0.97},
                                 chance=1 / 64, xlabel="model and test images")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent(renderer)
    for artist in [*ax.patches, *ax.texts]:
        assert not _overlap(legend, artist.get_window_extent(renderer)), artist
    assert fig.get_figwidth() <= viz.PAGE_WIDTH
    assert_legible(fig)
    many = viz.plot_accuracy_bars({f"a long bar name {i}": 0.1 * i for i in range(9)})
    assert many.get_figwidth() <= viz.PAGE_WIDTH and many.axes[0].get_xticklabels()[0].get_rotation() == 20


def test_plot_history_fits_the_page_and_its_legend_covers_no_curve():
    fig = viz.plot_history({"loss": list(np.linspace(3, 1, 60)), "temperature": [0.07] * 60, "lr": [1e-3] * 60},
                           smooth=5)
    assert fig.get_figwidth() <= viz.PAGE_WIDTH
    assert_legible(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    loss = fig.axes[0]
    assert not _overlap(loss.get_legend().get_window_extent(renderer), loss.get_window_extent(renderer))
    assert len(viz.plot_history({k: [1.0, 2.0] for k in ("a", "b", "c", "d")}, keys=["a", "b", "c", "d"]).axes) == 4


# ---------------------------------------------------------------- a table of pictures (Chapter 7.5)
def test_show_image_table_lays_out_rows_and_columns_with_frames_and_crosses():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    framed = torch.tensor([True, False, False, False, False, True])
    crossed = torch.tensor([False, True, False, False, False, False])
    fig = viz.show_image_table(images, ["red", "blue"], ["circle", "square", "star"], framed=framed, crossed=crossed,
                               title="t")
    axes = fig.axes
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:3]] == ["circle", "square", "star"]
    assert [axes[0].get_ylabel(), axes[3].get_ylabel()] == ["red", "blue"]
    red = matplotlib.colors.to_rgba("red")
    assert [ax.spines["top"].get_edgecolor() == red for ax in axes] == framed.tolist()
    assert [len(ax.lines) == 2 for ax in axes] == crossed.tolist()
    # the pixels shown are the pictures, in row-major order
    assert np.allclose(axes[4].images[0].get_array(), images[4].permute(1, 2, 0).numpy() / 255)
    plt.close(fig)


@pytest.mark.parametrize("kwargs, match", [
    (dict(row_labels=["a"], col_labels=["b", "c", "d"]), "pictures"),
    (dict(row_labels=["a", "b"], col_labels=["c", "d", "e"], framed=[True] * 5), "framed"),
    (dict(row_labels=["a", "b"], col_labels=["c", "d", "e"], crossed=[1, 0, 0, 0, 0, 0]), "crossed"),
    (dict(row_labels="ab", col_labels=["c", "d", "e"]), "row_labels")])
def test_show_image_table_refuses_bad_input(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        viz.show_image_table(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), **kwargs)
