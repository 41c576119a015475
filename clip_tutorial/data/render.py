"""Drawing ShapesWorld scenes with PIL: shapes, colours, styles and layouts.

Explained in Chapter 1 (what the images look like) and Chapter 3.1 (how the dataset is built).
Every drawing is done at ``SUPERSAMPLE`` times the final resolution and shrunk, so edges are
anti-aliased. Positions and sizes are fractions of the image side, so one scene description
renders at any ``image_size``.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from clip_tutorial.core.checks import check_choice, check_int, check_number, check_sequence

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 75, 225),
    "yellow": (240, 200, 0),
    "purple": (135, 45, 185),
    "pink": (255, 120, 200),
    "cyan": (0, 195, 215),
    "black": (25, 25, 25),
}
BACKGROUND: tuple[int, int, int] = (232, 232, 228)
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right",
)
STYLES: tuple[str, ...] = ("filled", "outline", "striped")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

SUPERSAMPLE = 4
SIZE_RADIUS = {"small": 0.17, "large": 0.26}  # nominal radius, as a fraction of the side
_GRID = (0.25, 0.5, 0.75)  # cell centres of the 3x3 position grid
POSITION_CENTRES = {name: (_GRID[i % 3], _GRID[i // 3]) for i, name in enumerate(POSITIONS)}
_JITTER = 0.03  # largest shift of a centre away from its grid cell, fraction of the side
_MAX_ROTATION = 15.0  # degrees; small enough that a square never looks like a diamond
_OUTLINE = 0.21  # outline width, fraction of the radius
_STRIPE_PERIOD = 0.125  # period of the horizontal stripes, fraction of the side


@dataclass(frozen=True)
class ShapeSpec:
    """One object of a scene: what it is, where it is and how it is drawn.

    Explained in Chapter 1. ``centre`` overrides the grid cell named by ``position``; the
    dataset sets it to a slightly jittered centre and keeps ``position`` for the captions.

    Attributes:
        shape: one of ``SHAPES``.
        colour: one of the keys of ``COLOURS``.
        size: one of ``SIZES``.
        position: one of ``POSITIONS`` (a cell of a 3x3 grid).
        style: one of ``STYLES``.
        centre: optional ``(x, y)`` centre as fractions of the image side, each in [0, 1].
        rotation: rotation in degrees, counter-clockwise.
    """

    shape: str
    colour: str
    size: str = "large"
    position: str = "center"
    style: str = "filled"
    centre: tuple[float, float] | None = None
    rotation: float = 0.0

    def __post_init__(self) -> None:
        check_choice("shape", self.shape, SHAPES)
        check_choice("colour", self.colour, tuple(COLOURS))
        check_choice("size", self.size, SIZES)
        check_choice("position", self.position, POSITIONS)
        check_choice("style", self.style, STYLES)
        if self.centre is not None:
            if not (isinstance(self.centre, tuple) and len(self.centre) == 2):
                raise ValueError(f"centre: expected None or a tuple (x, y) of floats in [0, 1], got {self.centre!r}")
            for v in self.centre:
                check_number("centre", v, 0.0, 1.0)
        check_number("rotation", self.rotation)

    @property
    def xy(self) -> tuple[float, float]:
        """The centre actually drawn, as fractions of the image side.

        This is ``centre`` if given, else the centre of the grid cell, moved inwards if needed
        so that the whole shape fits inside the image.
        """
        if self.centre is not None:
            return self.centre
        r = SIZE_RADIUS[self.size] * _EXTENT[self.shape]
        x, y = POSITION_CENTRES[self.position]
        return min(max(x, r), 1 - r), min(max(y, r), 1 - r)


def _polygon_centroid(points: np.ndarray) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    return np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (6 * area)


def _star(points: int, inner: float, start: float = -90.0) -> list[tuple[float, float]]:
    angles = np.radians(start + np.arange(2 * points) * 180.0 / points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return list(zip(radii * np.cos(angles), radii * np.sin(angles)))


def _unit_polygons() -> dict[str, np.ndarray]:
    """Each shape as polygon vertices (y pointing down), centred on its area centroid."""
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    raw = {
        "circle": (list(zip(np.cos(t[::-1]), np.sin(t[::-1]))), 0.92),
        "square": ([(-1, -1), (1, -1), (1, 1), (-1, 1)], 1.1),
        "triangle": (_star(3, 0.5, -90)[::2], 1.12),
        "star": (_star(5, 0.47), 1.0),
        "hexagon": (_star(6, 1.0, 0)[::2], 0.97),
        "diamond": ([(0, -1), (0.62, 0), (0, 1), (-0.62, 0)], 1.0),
        "cross": ([(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
                   (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)], 1.0),
        "heart": (list(zip(16 * np.sin(t) ** 3,
                           -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)))), 0.97),
    }
    polygons = {}
    for name, (points, scale) in raw.items():
        p = np.asarray(points, dtype=np.float64)
        p = p - _polygon_centroid(p)
        polygons[name] = p * (scale / np.sqrt((p**2).sum(axis=1)).max())
    return polygons


_UNIT = _unit_polygons()
_EXTENT = {name: float(np.sqrt((p**2).sum(axis=1)).max()) for name, p in _UNIT.items()}  # in radii


@lru_cache(maxsize=16)
def _stripes(side: int, image_size: int) -> Image.Image:
    period = max(4, round(_STRIPE_PERIOD * image_size * SUPERSAMPLE))
    rows = np.where(np.arange(side) % period < period // 2, 255, 0).astype(np.uint8)
    return Image.fromarray(np.repeat(rows[:, None], side, axis=1), mode="L")


def _alpha(spec: ShapeSpec, image_size: int) -> tuple[Image.Image, tuple[int, int]]:
    """Coverage of one object as an 8-bit mask over its bounding box, and the box's top-left pixel.

    Drawing only the bounding box (not the whole image) keeps the dataset fast.
    """
    angle = math.radians(spec.rotation)
    rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    pts = (_UNIT[spec.shape] @ rot.T) * (SIZE_RADIUS[spec.size] * image_size) + np.multiply(spec.xy, image_size)
    (x0, y0), (x1, y1) = np.floor(pts.min(axis=0)) - 1, np.ceil(pts.max(axis=0)) + 1
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), image_size), min(int(y1), image_size)
    flat = ((pts - (x0, y0)) * SUPERSAMPLE).ravel().tolist()
    mask = Image.new("L", ((x1 - x0) * SUPERSAMPLE, (y1 - y0) * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(mask)
    if spec.style != "outline":
        draw.polygon(flat, fill=255)
    if spec.style == "striped":
        stripes = _stripes(image_size * SUPERSAMPLE, image_size)
        mask = ImageChops.multiply(mask, stripes.crop((0, y0 * SUPERSAMPLE, mask.width, y1 * SUPERSAMPLE)))
        draw = ImageDraw.Draw(mask)
    if spec.style != "filled":
        width = _OUTLINE * SIZE_RADIUS[spec.size] * image_size * SUPERSAMPLE
        draw.polygon(flat, outline=255, width=max(2, round(width)))
    return mask.reduce(SUPERSAMPLE), (x0, y0)


def paint(canvas: Image.Image, top: int, objects: Sequence[ShapeSpec], image_size: int,
          background: tuple[int, int, int]) -> None:
    """Paint a scene into the square of ``canvas`` whose top row is ``top``; no checks.

    Explained in Chapter 3.1. Objects are painted in order, later ones on top. The dataset
    paints many scenes into one tall canvas, which is much faster than one image per scene.
    """
    canvas.paste(background, (0, top, image_size, top + image_size))
    for spec in objects:
        alpha, (x, y) = _alpha(spec, image_size)
        canvas.paste(COLOURS[spec.colour], (x, top + y, x + alpha.width, top + y + alpha.height), alpha)


def render_scene(objects: Sequence[ShapeSpec], image_size: int = 32, seed: int | None = None) -> Image.Image:
    """Render a scene described explicitly, e.g. for a probe such as "a red circle left of a blue square".

    Explained in Chapter 1. With ``seed=None`` the background is exactly ``BACKGROUND``; with a
    seed its brightness is jittered deterministically, as in the dataset.

    Args:
        objects: the objects to draw, back to front.
        image_size: side of the square image in pixels, at least 16.
        seed: optional seed for the background jitter.

    Returns:
        An RGB ``PIL.Image.Image``.

    Raises:
        TypeError: if ``objects`` is not a sequence of :class:`ShapeSpec`.
        ValueError: if ``image_size`` is below 16.
    """
    objects = check_sequence("objects", objects, ShapeSpec)
    image_size = check_int("image_size", image_size, 16)
    background = BACKGROUND if seed is None else jittered_background(random.Random(check_int("seed", seed, 0)))
    canvas = Image.new("RGB", (image_size, image_size))
    paint(canvas, 0, objects, image_size, background)
    return canvas


def jittered_background(rng: random.Random) -> tuple[int, int, int]:
    """``BACKGROUND`` with its brightness shifted by a random amount in [-12, 12] (Chapter 3.1)."""
    delta = rng.randint(-12, 12)
    return (BACKGROUND[0] + delta, BACKGROUND[1] + delta, BACKGROUND[2] + delta)


def place(rng: random.Random | None, shape: str, colour: str, size: str, position: str, style: str) -> ShapeSpec:
    """Make a :class:`ShapeSpec` whose centre is jittered around its grid cell and kept inside the image.

    Explained in Chapter 3.1. With ``rng=None`` the object sits exactly on its cell, unrotated.
    """
    if rng is None:
        return ShapeSpec(shape, colour, size, position, style)
    r = SIZE_RADIUS[size] * _EXTENT[shape]
    cx, cy = POSITION_CENTRES[position]
    x = min(max(cx + rng.uniform(-_JITTER, _JITTER), r), 1 - r)
    y = min(max(cy + rng.uniform(-_JITTER, _JITTER), r), 1 - r)
    return ShapeSpec(shape, colour, size, position, style, (x, y), rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))


def relation_scene(first: tuple[str, str], relation: str, second: tuple[str, str], style: str = "filled",
                   seed: int | None = None) -> list[ShapeSpec]:
    """Two small objects placed so that "``first`` ``relation`` ``second``" is true and unambiguous.

    Explained in Chapter 1 (limitations). ``("red", "circle"), "left of", ("blue", "square")``
    puts the red circle in the left column and the blue square in the right column of the same
    row; swap the pairs to get the contradicting image. Without a seed the objects sit in the
    middle row (or column), unjittered; with a seed the row (or column) and jitter are random.

    Raises:
        ValueError: for an unknown relation, colour, shape or style.
    """
    check_choice("relation", relation, RELATIONS)
    for name, pair in (("first", first), ("second", second)):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"{name}: expected a (colour, shape) tuple, got {pair!r}")
        check_choice(f"{name} colour", pair[0], tuple(COLOURS))
        check_choice(f"{name} shape", pair[1], SHAPES)
    check_choice("style", style, STYLES)
    rng = None if seed is None else random.Random(check_int("seed", seed, 0))
    return relation_objects(rng, first, relation, second, (style, style))


def relation_objects(rng: random.Random | None, first: tuple[str, str], relation: str, second: tuple[str, str],
                     styles: tuple[str, str]) -> list[ShapeSpec]:
    """Unchecked core of :func:`relation_scene`, drawing row/column and jitter from ``rng`` (Chapter 3.1)."""
    line = 1 if rng is None else rng.randrange(3)
    a, b = {"left of": ((line, 0), (line, 2)), "right of": ((line, 2), (line, 0)),
            "above": ((0, line), (2, line)), "below": ((2, line), (0, line))}[relation]
    return [place(rng, pair[1], pair[0], "small", POSITIONS[3 * row + col], style)
            for pair, (row, col), style in ((first, a, styles[0]), (second, b, styles[1]))]


def count_scene(colour: str, shape: str, k: int, style: str = "filled", seed: int = 0) -> list[ShapeSpec]:
    """``k`` identical small objects (1 to 4) scattered without touching, for counting probes.

    Explained in Chapter 1 (limitations). Objects keep at least a couple of pixels apart so
    they stay separate blobs; their ``position`` is the nearest grid cell.

    Raises:
        ValueError: for an unknown colour, shape or style, or ``k`` outside 1..4.
    """
    check_choice("colour", colour, tuple(COLOURS))
    check_choice("shape", shape, SHAPES)
    check_choice("style", style, STYLES)
    k = check_int("k", k, 1, 4)
    return count_objects(random.Random(check_int("seed", seed, 0)), colour, shape, k, (style,) * k)


def count_objects(rng: random.Random, colour: str, shape: str, k: int, styles: Sequence[str]) -> list[ShapeSpec]:
    """Unchecked core of :func:`count_scene` (Chapter 3.1): well separated random centres.

    Up to three objects are placed by rejection sampling; four get one quadrant each (rejection
    would be slow there), jittered inside the quadrant so that no two come closer than the gap.
    """
    r = SIZE_RADIUS["small"] * _EXTENT[shape]
    gap = 2 * r + 0.06
    lo, hi = (r, max(r, 0.5 - gap / 2)), (min(1 - r, 0.5 + gap / 2), 1 - r)
    centres: list[tuple[float, float]] = []
    while len(centres) < k:
        if k == 4:
            centres = [(rng.uniform(*bx), rng.uniform(*by)) for bx in (lo, hi) for by in (lo, hi)]
            rng.shuffle(centres)
            break
        centres = []
        for _ in range(50 * k):
            c = (rng.uniform(r, 1 - r), rng.uniform(r, 1 - r))
            if all(math.dist(c, o) >= gap for o in centres):
                centres.append(c)
                if len(centres) == k:
                    break
    objects = []
    for (x, y), style in zip(centres, styles):
        col, row = (min(range(3), key=lambda i: abs(_GRID[i] - v)) for v in (x, y))
        objects.append(ShapeSpec(shape, colour, "small", POSITIONS[3 * row + col], style, (x, y),
                                 rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)))
    return objects
