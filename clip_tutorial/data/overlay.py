"""Writing words on ShapesWorld images: the data and the attack of the typographic experiments.

Explained in Chapter 6.5 ("Typographic attacks"). A word is drawn as a *label*: black letters on a
white rectangle, like the paper label "iPod" that Goh et al. (2021) stuck on an apple. The label is
rendered once per (word, size, image size) with Pillow's built-in font (no download) and pasted
into the image, so only the label's box changes.

Two uses:

* :func:`write_word` writes any word at a given size and position: the attack.
* :func:`overlay_words` turns a fraction of a training set's images into *signs*: a random colour
  name is written on the image, and the caption becomes that word alone. Web data hold many such
  pairs (a photo of a shop sign, captioned with what the sign says), and they are where CLIP
  learned to read: for them the text in the image is the only way to match the caption. A word
  that merely repeats the object's colour teaches nothing new, since the colour is easier to see
  than to read; the scratch runs of Chapter 6.5 found no reading learned from such data.
"""
from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from clip_tutorial.core.checks import check_int, check_number, check_tensor, check_type

from .render import COLOURS, POSITION_CENTRES
from .shapesworld import ShapesWorld

__all__ = ["INK", "PAPER", "OVERLAY_SIZES", "word_label", "word_box", "write_word", "overlay_words"]

#: Colour of the letters and of the label they are written on.
INK: tuple[int, int, int] = (0, 0, 0)
PAPER: tuple[int, int, int] = (255, 255, 255)
#: Range of the letter size, as a fraction of the image side, drawn by :func:`overlay_words`.
OVERLAY_SIZES: tuple[float, float] = (0.15, 0.3)
_PAD = 1  # pixels of paper around the letters


def _check_word(word: object) -> str:
    check_type("word", word, str, "a non-empty word of printable characters")
    if not word or not word.isprintable() or word != word.strip():
        raise ValueError(f"word: expected a non-empty word of printable characters without outer spaces, "
                         f"got {word!r}")
    return word


@lru_cache(maxsize=512)
def _label(word: str, pixels: int) -> np.ndarray:
    font = ImageFont.load_default(size=pixels)
    left, top, right, bottom = font.getbbox(word)
    width, height = right - left + 2 * _PAD, bottom - top + 2 * _PAD
    image = Image.new("RGB", (width, height), PAPER)
    ImageDraw.Draw(image).text((_PAD - left, _PAD - top), word, fill=INK, font=font)
    patch = np.asarray(image).transpose(2, 0, 1).copy()
    patch.setflags(write=False)
    return patch


def word_label(word: str, image_size: int, size: float = 0.2) -> torch.Tensor:
    """The label that :func:`write_word` pastes: a uint8 tensor ``(3, h, w)``.

    Explained in Chapter 6.5. ``size`` is the font size as a fraction of ``image_size`` (at 64
    pixels, 0.2 gives 13-pixel type); the label is the word's ink box plus one pixel of paper.

    Raises:
        TypeError, ValueError: for a word that is not a printable string, or a size outside (0, 1].
    """
    word = _check_word(word)
    image_size = check_int("image_size", image_size, 1)
    pixels = round(check_number("size", size, 0.0, 1.0) * image_size)
    if pixels < 1:
        raise ValueError(f"size: expected a fraction of the image side giving at least one pixel, "
                         f"got {size!r} of {image_size} pixels")
    return torch.from_numpy(_label(word, pixels).copy())


def word_box(word: str, image_size: int, size: float = 0.2,
             position: str | tuple[float, float] = "bottom") -> tuple[int, int, int, int]:
    """Pixel box ``(x0, y0, x1, y1)`` (end-exclusive) that :func:`write_word` would cover.

    Explained in Chapter 6.5. The label is centred on ``position`` (a name of
    :data:`~clip_tutorial.data.POSITIONS`, the centres of a 3x3 grid, or ``(x, y)`` as fractions of
    the side) and then moved inwards until it lies inside the image.

    Raises:
        ValueError: for an unknown position, or a label wider or taller than the image.
    """
    label = word_label(word, image_size, size)
    h, w = label.shape[1:]
    if w > image_size or h > image_size:
        raise ValueError(f"size: the label of {word!r} at size {size} is {w}x{h} pixels, larger than the "
                         f"{image_size}-pixel image; use a smaller size or a shorter word")
    if isinstance(position, str):
        if position not in POSITION_CENTRES:
            raise ValueError(f"position: expected one of {list(POSITION_CENTRES)} or (x, y), got {position!r}")
        x, y = POSITION_CENTRES[position]
    elif isinstance(position, tuple) and len(position) == 2:
        x, y = (check_number("position", v, 0.0, 1.0) for v in position)
    else:
        raise TypeError(f"position: expected a grid position name or a tuple (x, y) of fractions, got {position!r}")
    x0 = min(max(round(x * image_size - w / 2), 0), image_size - w)
    y0 = min(max(round(y * image_size - h / 2), 0), image_size - h)
    return x0, y0, x0 + w, y0 + h


def write_word(images: torch.Tensor, word: str, size: float = 0.2,
               position: str | tuple[float, float] = "bottom") -> torch.Tensor:
    """A copy of ``images`` with ``word`` written on each, as black type on a white label.

    Explained in Chapter 6.5 (the typographic attack). Only the pixels of :func:`word_box` change.

    Args:
        images: uint8 images ``(3, H, W)`` or ``(N, 3, H, W)``, square, as in ``ShapesWorld.images``.
        word: the text to write.
        size: font size as a fraction of the image side.
        position: a grid position name (``"top"``, ``"center"``, ``"bottom left"``, ...) or ``(x, y)``.

    Raises:
        TypeError, ValueError: for images that are not square uint8 RGB, and as :func:`word_box`.
    """
    check_tensor("images", images, dtype=torch.uint8,
                 what="uint8 images (3, H, W) or (N, 3, H, W); float pixels? use ShapesWorld.images")
    if images.ndim not in (3, 4) or images.shape[-3] != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images: expected square RGB images (3, H, H) or (N, 3, H, H), got shape "
                         f"{tuple(images.shape)}")
    x0, y0, x1, y1 = word_box(word, images.shape[-1], size, position)
    out = images.clone()
    out[..., y0:y1, x0:x1] = word_label(word, images.shape[-1], size)
    return out


def overlay_words(data: ShapesWorld, fraction: float, seed: int) -> None:
    """Write a random colour name on ``fraction`` of ``data``'s images and make it their caption, in place.

    Explained in Chapter 6.5. The images are chosen at random; each gets a colour name drawn
    uniformly from :data:`~clip_tutorial.data.COLOURS` (independent of the object, so only reading
    tells it), a random letter size in :data:`OVERLAY_SIZES` and a random centre anywhere in the
    image (the label may cover part of the object). The image's caption becomes the word alone, as
    for a photo of a sign captioned with what it says. All of it is fixed by ``seed``.
    ``data.overlays`` records, for each changed image, ``(index, word, box)``; ``data.attributes``
    still describes the objects drawn.

    Raises:
        TypeError: if ``data`` is not a ShapesWorld.
        ValueError: for a fraction outside [0, 1] or a negative seed.
    """
    check_type("data", data, ShapesWorld)
    fraction = check_number("fraction", fraction, 0.0, 1.0)
    seed = check_int("seed", seed, 0)
    rng = random.Random(f"overlay/{seed}")
    chosen = sorted(rng.sample(range(data.n), round(fraction * data.n)))
    side, words = data.image_size, list(COLOURS)
    overlays = []
    for i in chosen:
        word = rng.choice(words)
        size = rng.uniform(*OVERLAY_SIZES)
        while word_label(word, side, size).shape[-1] > side:  # keep long words inside small images
            size *= 0.9
        position = (rng.random(), rng.random())
        box = word_box(word, side, size, position)
        data.images[i] = write_word(data.images[i], word, size, position)
        data.captions[i] = word
        overlays.append((i, word, box))
    data.overlays = overlays
