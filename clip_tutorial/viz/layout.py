"""How the book's figures fit its page: the column's width, legible font sizes, wrapped captions, displayable pixels.

The figures are sized for the book's text column, :data:`PAGE_WIDTH` inches wide at the notebooks'
100 dpi: a wider figure is shrunk to fit it, and its text with it. So the grids fit the column and
write their text at no less than :data:`MIN_FONTSIZE` points as displayed; captions are wrapped to
the width of their image. :func:`legible_fontsize` gives the font size for a figure of your own, and
:func:`to_display_images` turns normalised tensors back into pictures.

Explained in Chapter 1.1 (the first pictures of ShapesWorld).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.textpath import TextToPath
from matplotlib.font_manager import FontProperties

from clip_tutorial.core.checks import check_number
from clip_tutorial.data import MEAN, STD  # CLIP's per-channel pixel statistics

__all__ = ["PAGE_WIDTH", "MIN_FONTSIZE", "MAX_COLUMNS", "FONTSIZE", "legible_fontsize", "text_width", "wrap_to_width", "as_array",
           "to_display_images"]

#: Width of the book's text column, in inches at the notebooks' 100 dpi (about 750 pixels). A wider
#: figure is shown shrunk to this width, and its text shrinks with it.
PAGE_WIDTH = 7.5
#: The smallest font size, in points as the figure is displayed, of the text in the book's figures.
MIN_FONTSIZE = 8.5
#: The most images :func:`show_images` puts in one row: eight fill the column with images about
#: 90 pixels wide, which leaves room for a caption of a dozen characters per line.
MAX_COLUMNS = 8

#: The size of the grids' text, in points as displayed.
FONTSIZE = 9.0
_TEXT_TO_PATH = TextToPath()  # measures text without drawing it


def legible_fontsize(fig_width: float, size: float = FONTSIZE) -> float:
    """The font size to give text in a figure ``fig_width`` inches wide so that it shows at ``size`` points.

    A figure wider than :data:`PAGE_WIDTH` is displayed shrunk by ``PAGE_WIDTH / fig_width``, so
    its text has to be written that much larger; a narrower figure is displayed as it is.

    Explained in Chapter 1.

    Args:
        fig_width: the figure's width in inches (``fig.get_figwidth()``).
        size: the size, in points, that the text should have on the page (at least
            :data:`MIN_FONTSIZE` for the book's figures).

    Raises:
        TypeError: if ``fig_width`` or ``size`` is not a number.
        ValueError: if ``fig_width`` or ``size`` is not positive and finite.
    """
    values = []
    for name, value in (("fig_width", fig_width), ("size", size)):
        values.append(check_number(name, value))
        if not values[-1] > 0:
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
    fig_width, size = values
    return size * max(1.0, fig_width / PAGE_WIDTH)


def text_width(text: str, fontsize: float) -> float:
    """Width, in points, of one line of ``text`` in the default font at ``fontsize``."""
    if not text:
        return 0.0
    return _TEXT_TO_PATH.get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)[0]


def wrap_to_width(text: str, width_pt: float, fontsize: float, max_chars: int | None = None) -> str:
    """``text`` with line breaks so that no line is wider than ``width_pt`` points (nor ``max_chars`` long).

    Lines break at ordinary spaces only, so a caller keeps a phrase together with non-breaking
    spaces; line breaks already in ``text`` are kept. A word wider than the width on its own is
    cut between characters.
    """
    space = text_width("a a", fontsize) - 2 * text_width("a", fontsize)
    out = []
    for paragraph in str(text).split("\n"):
        lines: list[str] = []
        line, line_width = "", 0.0
        for word in paragraph.split(" "):
            if not word:
                continue
            word_width = text_width(word, fontsize)
            while word_width > width_pt and len(word) > 1:  # cut a word too wide for any line
                cut = len(word) - 1
                while cut > 1 and text_width(word[:cut], fontsize) > width_pt:
                    cut -= 1
                if line:
                    lines.append(line)
                lines.append(word[:cut])
                line, line_width = "", 0.0
                word = word[cut:]
                word_width = text_width(word, fontsize)
            fits = line_width + space + word_width <= width_pt
            short = max_chars is None or len(line) + 1 + len(word) <= max_chars
            if line and fits and short:
                line, line_width = f"{line} {word}", line_width + space + word_width
            else:
                if line:
                    lines.append(line)
                line, line_width = word, word_width
        lines.append(line)
        out.append("\n".join(lines))
    return "\n".join(out)


def as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        if isinstance(x, Sequence) and not isinstance(x, str):
            return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected numbers, got a sequence that is not numeric ({err})") from err
    raise TypeError(f"{name}: expected a torch.Tensor, a numpy array or a list, got {type(x).__name__}")


def to_display_images(images: Any, normalized: bool = False, mean: Sequence[float] = MEAN,
                      std: Sequence[float] = STD) -> list[np.ndarray]:
    """Convert images to a list of float RGB arrays (H, W, 3) in [0, 1], ready for ``imshow``.

    Explained in Chapter 1.

    Args:
        images: a uint8 or float tensor/array (N, 3, H, W), (N, H, W, 3) or one image (3, H, W);
            one-channel images are repeated to grey RGB. A list of PIL images is accepted too.
        normalized: the float pixels were normalised with ``mean`` and ``std``; undo that.
        mean: per-channel mean used for the normalisation.
        std: per-channel standard deviation used for the normalisation.

    Raises:
        TypeError: if ``images`` is not an image batch or its dtype is neither uint8 nor float.
        ValueError: if the shape is not an image batch, the batch is empty, or float pixels lie
            outside [0, 1] although ``normalized`` is False.
    """
    if isinstance(images, Sequence) and len(images) and all(hasattr(im, "convert") for im in images):
        return [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]  # PIL images
    if isinstance(images, Sequence) and len(images) and all(isinstance(im, torch.Tensor) for im in images):
        images = torch.stack(list(images))
    arr = as_array(images, "images")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[0] == 0 or not ({arr.shape[1], arr.shape[-1]} & {1, 3}):
        raise ValueError(f"images: expected a non-empty batch of shape (N, 3, H, W) or (N, H, W, 3), got {arr.shape}")
    if arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)  # channels last -> channels first
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if normalized:
            m, s = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
            if m.shape != (3,) or s.shape != (3,):
                raise ValueError(f"mean, std: expected 3 values each, got {len(m.ravel())} and {len(s.ravel())}")
            arr = arr * s[None, :, None, None] + m[None, :, None, None]
        elif arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
            raise ValueError(
                f"images: expected float pixels in [0, 1], got values in [{arr.min():.2f}, {arr.max():.2f}]; "
                "pass normalized=True if they were normalised with the CLIP mean and std"
            )
    else:
        raise TypeError(f"images: expected dtype uint8 or float, got {arr.dtype}")
    return list(np.clip(arr, 0.0, 1.0).transpose(0, 2, 3, 1))
