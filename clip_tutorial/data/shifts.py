"""Controlled distribution shifts of ShapesWorld: the same scenes, drawn differently in one respect.

Explained in Chapter 6.1. Each shift changes exactly one thing about how a scene is drawn and keeps
the scene itself (which objects, their colours, shapes, sizes, positions and captions) fixed, so that
the in-distribution test set and a shifted test set made with the same seed form a *paired control*:
image ``i`` shows the same objects in both, and any change of accuracy is caused by the shift.

Scene shifts re-render the scene with :func:`~clip_tutorial.data.render.paint`; what stays fixed is
everything else about each object (shape, colour, style, rotation, position) and the flat background:

- ``"style"``: every object drawn striped, a style the default training data never uses.
- ``"rotation"``: every object turned by a further quarter turn (training rotates by at most 15 degrees);
  circles, squares and crosses look the same after a quarter turn, so their images do not change.
- ``"scale"``: the whole scene shrunk around the image centre (a zoom out): objects are smaller than any
  in training, and their distances from the centre shrink with them.
- ``"background"``: a grey checkerboard behind the objects instead of the flat background (its light
  squares are the original background, its dark squares darker by the strength); the objects are drawn
  exactly as before.

Pixel shifts change the finished uint8 images (:func:`apply_pixel_shift`), every pixel by the same rule:

- ``"hue"``: every pixel's hue rotated by a fixed angle, saturation and value kept (greys do not
  change), small enough that each colour stays nearest its own name in the palette.
- ``"blur"``: a Gaussian blur; the mean brightness is kept.
- ``"noise"``: additive Gaussian pixel noise, a fresh draw for every pixel, seeded by the dataset seed.

Each shift has one strength (an angle, a factor, a standard deviation; see ``SHIFT_DEFAULTS``).
"""
from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clip_tutorial.core.checks import check_choice, check_int, check_number, check_tensor

from .render import BACKGROUND, ShapeSpec, paint
from .shapesworld import ShapesWorld

__all__ = ["SHIFTS", "SHIFT_DEFAULTS", "PIXEL_SHIFTS", "ShiftedWorld", "shifted_world", "describe_shift",
           "apply_pixel_shift", "rotate_hue"]

#: The shifts, scene shifts first, then pixel shifts.
SHIFTS: tuple[str, ...] = ("style", "rotation", "scale", "background", "hue", "blur", "noise")
#: The shifts that act on finished pixels (the others re-render the scene).
PIXEL_SHIFTS: tuple[str, ...] = ("hue", "blur", "noise")
#: Default strength of each shift, in the unit :func:`describe_shift` names (``None``: no strength).
SHIFT_DEFAULTS: dict[str, float | None] = {
    "style": None, "rotation": 90.0, "scale": 0.6, "background": 70.0, "hue": 15.0, "blur": 1.0, "noise": 25.0,
}
# Allowed strengths: (low, high, why). Hue stops at 15 degrees: at 20 degrees cyan is already nearer
# blue than cyan in the palette, so the colour labels would lie.
_LIMITS: dict[str, tuple[float, float, str]] = {
    "rotation": (-360.0, 360.0, "degrees"),
    "scale": (0.3, 0.95, "a factor (smaller objects; below 0.3 small objects vanish)"),
    "background": (1.0, 200.0, "grey levels of checkerboard contrast"),
    "hue": (-15.0, 15.0, "degrees (beyond 15 some colours are nearer another palette colour)"),
    "blur": (0.1, 4.0, "pixels of Gaussian standard deviation"),
    "noise": (0.1, 128.0, "grey levels of noise standard deviation"),
}
_DESCRIPTIONS: dict[str, str] = {
    "style": "objects drawn striped (a style not in training)",
    "rotation": "objects turned by a further {:g} degrees",
    "scale": "scene shrunk to {:.0%} of its size, objects smaller",
    "background": "grey checkerboard background, contrast {:g} levels",
    "hue": "hue rotated by {:g} degrees",
    "blur": "Gaussian blur, standard deviation {:g} px",
    "noise": "Gaussian pixel noise, standard deviation {:g} levels",
}


def _check_shift(shift: object, strength: object) -> float | None:
    """Validate ``shift`` (one of ``SHIFTS``) and return its strength (the default if ``strength`` is None)."""
    check_choice("shift", shift, SHIFTS)
    if shift == "style":
        if strength is not None:
            raise ValueError(f"strength: expected None for shift='style' (it has no strength), got {strength!r}")
        return None
    if strength is None:
        return SHIFT_DEFAULTS[shift]
    low, high, unit = _LIMITS[shift]
    value = check_number("strength", strength, low, high)
    if value == 0:
        raise ValueError(f"strength: expected a non-zero angle for shift={shift!r}, got {strength!r}")
    return value


def describe_shift(shift: str, strength: float | None = None) -> str:
    """One line naming what ``shift`` changes, for tables and figure labels (Chapter 6.1).

    Raises:
        ValueError: for an unknown shift or a strength out of range.
    """
    value = _check_shift(shift, strength)
    return _DESCRIPTIONS[shift].format(value) if value is not None else _DESCRIPTIONS[shift]


def rotate_hue(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate the hue (HSV) of every pixel of uint8 images ``(..., 3, H, W)`` by ``degrees`` (Chapter 6.1).

    Saturation and value are kept; greys (equal channels) are unchanged. Pure red ``(255, 0, 0)``
    turned by 120 degrees is pure green ``(0, 255, 0)``.
    """
    check_tensor("images", images, dtype=torch.uint8, what="a uint8 tensor (..., 3, H, W)")
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"images: expected a uint8 tensor (..., 3, H, W), got shape {tuple(images.shape)}")
    turn = check_number("degrees", degrees) / 60.0
    r, g, b = images.float().unbind(dim=-3)
    maxc, minc = torch.maximum(torch.maximum(r, g), b), torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, ((g - b) / safe) % 6,
                      torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = (hue + turn) % 6
    # HSV back to RGB: channel n (5 red, 3 green, 1 blue) is V - V*S*clamp(min(k, 4 - k), 0, 1), k = (n + H) mod 6
    k = (torch.tensor([5.0, 3.0, 1.0]).view(3, *([1] * hue.ndim)) + hue) % 6
    out = maxc - delta * torch.minimum(k, 4 - k).clamp(0, 1)
    return out.movedim(0, -3).round().clamp(0, 255).to(torch.uint8)


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    if radius >= images.shape[-1] or radius >= images.shape[-2]:
        raise ValueError(f"strength: expected a blur smaller than the image, got sigma={sigma} for "
                         f"{tuple(images.shape[-2:])} images")
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-x**2 / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).float()
    flat = images.reshape(-1, 1, *images.shape[-2:]).float()
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return flat.reshape(images.shape).round().clamp(0, 255).to(torch.uint8)


def _stream(name: str, seed: int) -> int:
    """A 32-bit seed for the random stream ``name`` of dataset seed ``seed`` (stable across runs)."""
    return zlib.crc32(f"shapesworld-shift/{name}/{seed}".encode())


def apply_pixel_shift(images: torch.Tensor, shift: str, strength: float | None = None, seed: int = 0) -> torch.Tensor:
    """Apply one of ``PIXEL_SHIFTS`` to uint8 images ``(N, 3, H, W)``; returns new uint8 images (Chapter 6.1).

    ``"hue"`` is :func:`rotate_hue`; ``"blur"`` a separable Gaussian blur with reflected edges (it keeps
    the mean brightness up to the edges and rounding); ``"noise"`` adds Gaussian noise of standard
    deviation ``strength`` grey levels, drawn from a generator seeded by ``seed``, then rounds and clips
    to 0..255 (clipping lowers the spread only where pixels are near black or white).

    Raises:
        TypeError: if ``images`` is not a uint8 tensor.
        ValueError: for a shift that is not a pixel shift, or a strength out of range.
    """
    check_tensor("images", images, shape=(None, 3, None, None), dtype=torch.uint8,
                 what="a uint8 tensor (N, 3, H, W) of 0-255 values")
    value = _check_shift(shift, strength)
    if shift not in PIXEL_SHIFTS:
        raise ValueError(f"shift: expected one of the pixel shifts {list(PIXEL_SHIFTS)}, got {shift!r}; "
                         "scene shifts need the scene: use shifted_world")
    seed = check_int("seed", seed, 0)
    if shift == "hue":
        return rotate_hue(images, value)
    if shift == "blur":
        return _gaussian_blur(images, value)
    generator = torch.Generator().manual_seed(_stream("noise", seed))
    noise = torch.randn(images.shape, generator=generator) * value
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def _backgrounds(images: torch.Tensor) -> list[tuple[int, int, int]]:
    """Each image's flat background colour: its most common colour of the form ``BACKGROUND + d``."""
    r, g, b = images.long().unbind(dim=1)
    grey = (r - g == BACKGROUND[0] - BACKGROUND[1]) & (g - b == BACKGROUND[1] - BACKGROUND[2])
    delta = torch.where(grey, r - BACKGROUND[0] + 128, torch.zeros_like(r)).clamp(0, 255).flatten(1)
    counts = torch.zeros(len(images), 256, dtype=torch.long).scatter_add_(1, delta, grey.flatten(1).long())
    counts[:, 0] = 0
    return [tuple(int(c) + int(d) - 128 for c in BACKGROUND) for d in counts.argmax(dim=1)]


def _checkerboard(size: int, background: tuple[int, int, int], contrast: float, rng: random.Random) -> Image.Image:
    """A checkerboard of ``background`` and a grey ``contrast`` levels darker, cells an eighth of the side."""
    cell = max(2, size // 8)
    dy, dx = rng.randrange(2 * cell), rng.randrange(2 * cell)
    y, x = np.add.outer(np.arange(size) + dy, np.zeros(size, int)), np.add.outer(np.zeros(size, int), np.arange(size) + dx)
    dark = ((y // cell + x // cell) % 2 == 1)[..., None]
    flat = np.asarray(background, dtype=float)
    pixels = np.where(dark, np.clip(flat - contrast, 0, 255), flat).round().astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def _render(world: ShapesWorld, draw: Callable[[Image.Image, int, list[ShapeSpec], tuple[int, int, int]], None],
            ) -> torch.Tensor:
    """Re-render every scene of ``world`` with ``draw(canvas, top, objects, background)``, in tall blocks."""
    size, block = world.image_size, 256
    backgrounds = _backgrounds(world.images)
    pixels = np.empty((world.n, size, size, 3), dtype=np.uint8)
    canvas = Image.new("RGB", (size, size * block))
    for start in range(0, world.n, block):
        count = min(block, world.n - start)
        for j in range(count):
            draw(canvas, j * size, world.attributes[start + j], backgrounds[start + j])
        pixels[start:start + count] = np.asarray(canvas).reshape(block, size, size, 3)[:count]
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def _scene_shift(world: ShapesWorld, shift: str, value: float | None) -> torch.Tensor:
    size = world.image_size
    if shift == "style":
        return _render(world, lambda c, top, objs, bg: paint(c, top, [replace(o, style="striped") for o in objs],
                                                             size, bg))
    if shift == "rotation":
        return _render(world, lambda c, top, objs, bg: paint(
            c, top, [replace(o, rotation=o.rotation + value) for o in objs], size, bg))
    if shift == "background":
        rng = random.Random(_stream("background", world.seed))
        # paint() pastes its background into the square, so a checkerboard image works as one
        return _render(world, lambda c, top, objs, bg: paint(c, top, objs, size, _checkerboard(size, bg, value, rng)))
    small = max(8, round(size * value))
    offset = (size - small) // 2
    scratch = Image.new("RGB", (small, small))

    def shrunk(canvas: Image.Image, top: int, objects: list[ShapeSpec], background: tuple[int, int, int]) -> None:
        canvas.paste(background, (0, top, size, top + size))
        paint(scratch, 0, objects, small, background)
        canvas.paste(scratch, (offset, top + offset))
    return _render(world, shrunk)


class ShiftedWorld(ShapesWorld):
    """A ShapesWorld whose images are drawn under one shift of ``SHIFTS`` (Chapter 6.1).

    Built like :class:`~clip_tutorial.data.ShapesWorld` with the same arguments, so ``captions``,
    ``attributes`` and ``labels(kind)`` are exactly those of the in-distribution set: they describe
    what is in the scene, not how it is drawn (under ``"style"`` a caption may still say "filled").
    Only ``images`` differ. ``shift`` and ``strength`` record the shift.
    """

    def __init__(self, shift: str | None, n: int = 1000, seed: int = 0, image_size: int = 32,
                 split: str = "train", heldout: Sequence[tuple[str, str]] | None = None,
                 styles: Sequence[str] = ("filled", "outline"), strength: float | None = None,
                 max_objects: int = 1) -> None:
        if shift is None:
            if strength is not None:
                raise ValueError(f"strength: expected None when shift is None, got {strength!r}")
            value = None
        else:
            value = _check_shift(shift, strength)
        super().__init__(n, split=split, seed=seed, image_size=image_size, styles=styles, heldout=heldout,
                         max_objects=max_objects)
        if shift == "style" and "striped" in self.styles:
            raise ValueError(f"styles: shift='style' draws every object striped, a style that must be unseen, "
                             f"but styles={list(self.styles)} includes it")
        self.shift, self.strength = shift, value
        if shift in PIXEL_SHIFTS:
            self.images = apply_pixel_shift(self.images, shift, value, seed=self.seed)
        elif shift is not None:
            self.images = _scene_shift(self, shift, value)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", shift={self.shift!r}, strength={self.strength!r})"


def shifted_world(shift: str | None, n: int = 1000, seed: int = 0, image_size: int = 32, split: str = "train",
                  heldout: Sequence[tuple[str, str]] | None = None, styles: Sequence[str] = ("filled", "outline"),
                  strength: float | None = None, max_objects: int = 1) -> ShiftedWorld:
    """The test set of ShapesWorld scenes for ``seed``, drawn under ``shift`` (``None``: no shift).

    Explained in Chapter 6.1. At a given seed every shift shows the *same* scenes as ``shift=None``
    (same objects, colours, shapes, sizes, positions, backgrounds, captions and labels); only the
    drawing differs, in the one respect the shift names. ``shift=None`` gives exactly the images of
    ``ShapesWorld(n, split, seed, image_size, styles, heldout, max_objects)``. Deterministic given the seed.

    Use a seed the models were not trained on (e.g. 1000 + k): seed 0 of the train split is the
    usual training set.

    Args:
        shift: one of ``SHIFTS``, or ``None`` for the in-distribution images.
        n, seed, image_size, split, heldout, styles, max_objects: as for ``ShapesWorld``.
        strength: the shift's strength (see ``SHIFT_DEFAULTS`` and :func:`describe_shift`); ``None``: default.

    Raises:
        ValueError: for an unknown shift, a strength out of range, or ``shift="style"`` with striped styles.
        TypeError: for arguments of the wrong type.
    """
    return ShiftedWorld(shift, n=n, seed=seed, image_size=image_size, split=split, heldout=heldout, styles=styles,
                        strength=strength, max_objects=max_objects)
