"""Tests of clip_tutorial.viz.encoders: the image-encoder figures are labelled and reject bad input clearly."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from clip_tutorial.data import MEAN, STD  # noqa: E402
from clip_tutorial.viz import MIN_FONTSIZE, PAGE_WIDTH  # noqa: E402
from clip_tutorial.viz import encoders as viz_encoders  # noqa: E402


pytestmark = pytest.mark.usefixtures("close_figures")


def _image(size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("size, patch", [(32, 8), (24, 6), (64, 32)])
def test_show_patches_cuts_the_image_in_reading_order(size, patch):
    image = _image(size)
    fig = viz_encoders.show_patches(image, patch, title="patches")
    assert isinstance(fig, Figure) and fig.get_suptitle() == "patches"
    whole, apart = fig.get_axes()
    grid, gap = size // patch, max(1, patch // 4)
    pixels = image.permute(1, 2, 0).numpy() / 255.0
    np.testing.assert_allclose(whole.images[0].get_array(), pixels, atol=1e-6)
    montage = np.asarray(apart.images[0].get_array())
    assert montage.shape[:2] == (grid * patch + (grid - 1) * gap,) * 2
    numbers = [t.get_text() for t in apart.texts]
    assert numbers == [str(i) for i in range(grid * grid)]
    for index in range(grid * grid):  # patch number i sits at row i // grid, column i % grid
        r, c = divmod(index, grid)
        top, left = r * (patch + gap), c * (patch + gap)
        np.testing.assert_allclose(montage[top:top + patch, left:left + patch],
                                   pixels[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch], atol=1e-6)
        assert apart.texts[index].get_position() == (left, top)
    assert whole.get_xlabel() and whole.get_ylabel() and whole.get_title() and apart.get_title()


def test_show_patches_undoes_the_normalisation():
    image = _image(16)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    normalised = (image.float() / 255 - mean) / std
    fig = viz_encoders.show_patches(normalised, 8, normalized=True)
    np.testing.assert_allclose(fig.get_axes()[1].images[0].get_array()[:8, :8], image.permute(1, 2, 0).numpy()[:8, :8] / 255,
                               atol=1e-5)


@pytest.mark.parametrize("bad, patch, match", [
    (_image(30), 8, "patch_size"),
    (_image(32), 0, "patch_size"),
    (torch.zeros(2, 3, 32, 32), 8, "one image"),
])
def test_show_patches_rejects_bad_input(bad, patch, match):
    with pytest.raises(ValueError, match=match):
        viz_encoders.show_patches(bad, patch)


def test_plot_position_similarity_lays_each_row_out_as_the_grid():
    torch.manual_seed(0)
    sim = torch.randn(9, 9)
    fig = viz_encoders.plot_position_similarity(sim, title="positions")
    ax = fig.get_axes()[0]
    assert fig.get_suptitle() == "positions"
    canvas = np.ma.filled(ax.images[0].get_array(), np.nan)
    assert canvas.shape == (3 * 3 + 2, 3 * 3 + 2)
    for position in range(9):  # panel (r, c) holds row r * 3 + c of the matrix, laid out 3 x 3
        r, c = divmod(position, 3)
        np.testing.assert_allclose(canvas[r * 4:r * 4 + 3, c * 4:c * 4 + 3], sim[position].reshape(3, 3).numpy(), atol=1e-6)
    assert np.isnan(canvas[3]).all() and np.isnan(canvas[:, 7]).all()  # the gaps between panels
    assert any(a.get_ylabel() == "cosine similarity" for a in fig.get_axes())  # the colour bar
    assert ax.get_xlabel() and ax.get_ylabel()


@pytest.mark.parametrize("bad, match", [(torch.zeros(4, 5), "square"), (torch.zeros(5, 5), "square number"),
                                        (torch.zeros(3), "square")])
def test_plot_position_similarity_rejects_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        viz_encoders.plot_position_similarity(bad)


def test_show_attention_maps_draws_one_map_per_image():
    images = torch.stack([_image(32, seed) for seed in range(3)])
    attention = torch.softmax(torch.randn(3, 16), dim=-1)
    fig = viz_encoders.show_attention_maps(images, attention, captions=["a", "b", "c"], title="attention")
    assert fig.get_suptitle() == "attention"
    maps = [ax for ax in fig.get_axes() if len(ax.images) == 2]
    assert len(maps) == 3
    for row, ax in enumerate(maps):
        np.testing.assert_allclose(ax.images[1].get_array(), attention[row].reshape(4, 4).numpy(), atol=1e-6)
    assert [ax.get_title() for ax in fig.get_axes()[:3]] == ["a", "b", "c"]
    long = viz_encoders.show_attention_maps(images, attention, captions=["a picture of a large hollow black star"] * 3)
    assert "\n" in long.get_axes()[0].get_title()  # long captions are wrapped, not overlapping


@pytest.mark.parametrize("attention, captions, match", [
    (torch.rand(2, 16), None, "one row per image"),
    (torch.rand(3, 15), None, "square number"),
    (torch.rand(3, 16), ["only one"], "one caption per image"),
])
def test_show_attention_maps_rejects_mismatches(attention, captions, match):
    images = torch.stack([_image(32, seed) for seed in range(3)])
    with pytest.raises(ValueError, match=match):
        viz_encoders.show_attention_maps(images, attention, captions=captions)


# -- legible on the page ---------------------------------------------------------------------

def _assert_fits_the_page_legibly(fig):
    assert fig.get_figwidth() <= PAGE_WIDTH + 1e-9
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    small = sorted({(t.get_fontsize(), t.get_text()[:20]) for t in texts if t.get_fontsize() < MIN_FONTSIZE})
    assert not small, f"text smaller than {MIN_FONTSIZE} pt: {small}"


def test_the_encoder_figures_fit_the_page_legibly():
    _assert_fits_the_page_legibly(viz_encoders.show_patches(_image(32), 8))
    _assert_fits_the_page_legibly(viz_encoders.plot_position_similarity(torch.rand(49, 49)))
    images = torch.stack([_image(32, seed) for seed in range(8)])
    fig = viz_encoders.show_attention_maps(images, torch.softmax(torch.randn(8, 16), dim=-1),
                                           captions=["a picture of a large hollow black star"] * 8)
    _assert_fits_the_page_legibly(fig)


def test_show_patches_numbers_only_the_first_patch_of_each_row_on_a_fine_grid():
    fig = viz_encoders.show_patches(_image(224), 16)  # 14 x 14 patches
    _assert_fits_the_page_legibly(fig)
    apart = fig.get_axes()[1]
    assert [t.get_text() for t in apart.texts] == [str(14 * row) for row in range(14)]
    assert "196 patches" in apart.get_title().replace("\n", " ")
