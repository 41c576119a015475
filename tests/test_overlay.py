"""Tests of clip_tutorial.data.overlay: writing words on images (Chapter 6.5)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from clip_tutorial.data import COLOURS, POSITIONS, ShapesWorld
from clip_tutorial.data.overlay import INK, OVERLAY_SIZES, PAPER, overlay_words, word_box, word_label, write_word


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld(40, seed=3, image_size=64)


def _changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(H, W) mask of pixels that differ in any channel."""
    return (before != after).any(dim=0)


def _ink_crop(pixels: np.ndarray) -> np.ndarray:
    """The (H, W, 3) pixels cropped to the bounding box of the non-white ones."""
    rows, cols = np.nonzero(pixels.min(axis=2) < 255)
    return pixels[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


@pytest.mark.parametrize("word, side, size", [("purple", 64, 0.25), ("red", 64, 0.15), ("cyan", 32, 0.3)])
def test_label_holds_the_whole_word_as_pillow_draws_it(word, side, size):
    # Reference: Pillow draws the word on a large white canvas; its inked pixels, cropped, must
    # equal the label's inked pixels, cropped (nothing clipped, nothing added).
    font = ImageFont.load_default(size=round(size * side))
    canvas = Image.new("RGB", (200, 100), PAPER)
    ImageDraw.Draw(canvas).text((20, 20), word, fill=INK, font=font)
    label = word_label(word, side, size).numpy().transpose(1, 2, 0)
    assert np.array_equal(_ink_crop(label), _ink_crop(np.asarray(canvas)))
    assert (label[0] == 255).all() and (label[-1] == 255).all()  # one pixel of paper all round
    assert (label[:, 0] == 255).all() and (label[:, -1] == 255).all()


@pytest.mark.parametrize("position", ["top left", "center", "bottom right", (0.3, 0.9), (0.0, 0.0)])
def test_only_the_box_changes(world, position):
    image = world.images[0]
    word, size = "yellow", 0.2
    out = write_word(image, word, size, position)
    x0, y0, x1, y1 = word_box(word, 64, size, position)
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert not _changed(image, out)[outside].any()
    assert torch.equal(out[:, y0:y1, x0:x1], word_label(word, 64, size))
    assert torch.equal(world.images[0], image)  # the input is not modified


def test_word_is_legible_at_64_pixels(world):
    # Each colour word at the smallest training size: its label differs from every other word's.
    labels = {w: word_label(w, 64, OVERLAY_SIZES[0]) for w in COLOURS}
    for a in COLOURS:
        for b in COLOURS:
            if a < b:
                la, lb = labels[a], labels[b]
                assert la.shape != lb.shape or not torch.equal(la, lb)
    assert all(label.shape[-1] <= 64 for label in labels.values())


def test_position_names_map_to_the_grid():
    lefts = [word_box("red", 64, 0.15, p)[0] for p in POSITIONS]
    tops = [word_box("red", 64, 0.15, p)[1] for p in POSITIONS]
    assert lefts[0] < lefts[1] < lefts[2] and lefts[3] < lefts[4] < lefts[5]
    assert tops[0] < tops[3] < tops[6]
    # the centre label is centred to within a pixel
    x0, y0, x1, y1 = word_box("red", 64, 0.15, "center")
    assert abs((x0 + x1) / 2 - 32) <= 1 and abs((y0 + y1) / 2 - 32) <= 1


def test_batch_equals_one_by_one(world):
    batch = write_word(world.images[:5], "cyan", 0.3, "top")
    singles = torch.stack([write_word(im, "cyan", 0.3, "top") for im in world.images[:5]])
    assert torch.equal(batch, singles)


def test_overlay_words_fraction_determinism_and_words():
    a = ShapesWorld(200, seed=1, image_size=64)
    b = ShapesWorld(200, seed=1, image_size=64)
    clean = a.images.clone()
    captions = list(a.captions)
    overlay_words(a, 0.3, seed=7)
    overlay_words(b, 0.3, seed=7)
    assert torch.equal(a.images, b.images) and a.captions == b.captions  # deterministic
    changed = [i for i in range(200) if not torch.equal(a.images[i], clean[i])]
    assert len(changed) == 60 == len(a.overlays)  # the fraction, exactly
    assert changed == [i for i, _, _ in a.overlays]
    signs = {i: word for i, word, _ in a.overlays}
    for i in range(200):  # a sign's caption is its word; every other caption is unchanged
        assert a.captions[i] == signs.get(i, captions[i])
    assert set(signs.values()) <= set(COLOURS) and len(set(signs.values())) >= 6  # random colour names
    assert sum(signs[i] == a.attributes[i][0].colour for i in signs) <= 20  # independent of the object (~1/8)
    for i, word, (x0, y0, x1, y1) in a.overlays:
        mask = _changed(clean[i], a.images[i])
        outside = torch.ones_like(mask)
        outside[y0:y1, x0:x1] = False
        assert not mask[outside].any()
    c = ShapesWorld(200, seed=1, image_size=64)
    overlay_words(c, 0.3, seed=8)
    assert not torch.equal(a.images, c.images)  # another seed, other choices


def test_overlay_fraction_zero_and_one():
    data = ShapesWorld(20, seed=0, image_size=32)
    clean = data.images.clone()
    overlay_words(data, 0.0, seed=0)
    assert torch.equal(data.images, clean) and data.overlays == []
    overlay_words(data, 1.0, seed=0)
    assert len(data.overlays) == 20
    assert all(label_fits[2][2] <= 32 for label_fits in data.overlays)  # long words shrink to fit 32 px


@pytest.mark.parametrize("kwargs, error, match", [
    ({"word": ""}, ValueError, "word"),
    ({"word": 3}, TypeError, "word"),
    ({"word": "two\nlines"}, ValueError, "word"),
    ({"size": 0.0}, ValueError, "size"),
    ({"size": 1.5}, ValueError, "size"),
    ({"size": 0.9, "word": "yellow"}, ValueError, "larger than"),
    ({"position": "middle"}, ValueError, "position"),
    ({"position": (0.5, 1.5)}, ValueError, "position"),
    ({"position": [0.5, 0.5]}, TypeError, "position"),
])
def test_write_word_errors(world, kwargs, error, match):
    args = {"word": "red", "size": 0.2, "position": "bottom", **kwargs}
    with pytest.raises(error, match=match):
        write_word(world.images[0], **args)


def test_write_word_image_errors(world):
    with pytest.raises(TypeError, match="uint8"):
        write_word(world.tensors()[:2], "red")
    with pytest.raises(ValueError, match="square RGB"):
        write_word(world.images[:, :, :, :40], "red")
    with pytest.raises(ValueError, match="square RGB"):
        write_word(world.images[:, :1], "red")


def test_overlay_words_errors(world):
    with pytest.raises(TypeError, match="data"):
        overlay_words(world.images, 0.5, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        overlay_words(world, 1.5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        overlay_words(world, 0.5, seed=-1)
