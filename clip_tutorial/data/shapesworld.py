"""ShapesWorld captions, held-out combinations and the PyTorch dataset.

Explained in Chapter 1 (what ShapesWorld is) and Chapter 3.1 (how image–caption pairs are made).
"""
from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from clip_tutorial.core.checks import (check_callable, check_choice, check_int, check_number, check_sequence,
                                       check_subset, check_tensor)

from .render import (COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES, STYLES, ShapeSpec, count_objects,
                     jittered_background, paint, place, relation_objects)

#: CLIP's per-channel mean and standard deviation, used by :meth:`ShapesWorld.tensors`.
MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle",), "square": ("square", "box"), "triangle": ("triangle",), "star": ("star",),
    "hexagon": ("hexagon",), "diamond": ("diamond", "rhombus"), "cross": ("cross", "plus"), "heart": ("heart",),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
STYLE_WORDS: dict[str, tuple[str, ...]] = {"filled": ("filled", "solid"), "outline": ("hollow",),
                                           "striped": ("striped",)}
WHERE_PHRASES: dict[str, str] = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom", "bottom right": "in the bottom right",
}
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"), "right of": ("right of", "to the right of"),
    "above": ("above",), "below": ("below", "under"),
}
NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three", "four")
_IRREGULAR_PLURALS = {"box": "boxes", "cross": "crosses", "plus": "pluses", "rhombus": "rhombuses"}

#: Single-object caption templates; the first is the zero-shot prompt.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {colour} {shape}",
    "a {colour} {shape}",
    "a drawing of a {colour} {shape}",
    "a {size} {colour} {shape} {where}",
    "there is a {colour} {shape} {where}",
    "a {style} {colour} {shape}",
    "a picture of a {size} {style} {colour} {shape}",
)
RELATION_TEMPLATES: tuple[str, ...] = ("a {first} {relation} a {second}", "a photo of a {first} {relation} a {second}")
COUNT_TEMPLATES: tuple[str, ...] = ("{number} {colour} {shapes}", "a photo of {number} {colour} {shapes}",
                                    "there are {number} {colour} {shapes}")
TEMPLATE_FIELDS = frozenset({"colour", "shape", "size", "where", "style"})
SPLITS = ("train", "heldout", "all")
_CANONICAL_P = 0.75  # probability of the canonical shape word rather than a synonym


def normalize_images(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, 3, H, W) -> float32 pixels scaled to [0, 1] and normalised with ``MEAN``/``STD``.

    This is the input the model expects; explained in Chapter 1 and Chapter 3.1.

    Raises:
        TypeError: if ``pixels`` is not a uint8 tensor.
        ValueError: if it is not of shape (N, 3, H, W).
    """
    check_tensor("pixels", pixels, shape=(None, 3, None, None), dtype=torch.uint8,
                 what="a uint8 tensor (N, 3, H, W) of 0-255 values")
    x = pixels.float().div_(255.0)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def plural(word: str) -> str:
    """Plural of a shape word, e.g. ``"box"`` -> ``"boxes"`` (Chapter 3.1)."""
    return _IRREGULAR_PLURALS.get(word, word + "s")


def relation_caption(first: tuple[str, str], relation: str, second: tuple[str, str]) -> str:
    """Canonical caption of a relation scene, e.g. ``"a red circle left of a blue square"``.

    Explained in Chapter 1 (limitations); pairs are ``(colour, shape)``.

    Raises:
        ValueError: for an unknown relation, colour or shape.
    """
    check_choice("relation", relation, RELATIONS)
    for name, pair in (("first", first), ("second", second)):
        check_choice(f"{name} colour", pair[0], tuple(COLOURS))
        check_choice(f"{name} shape", pair[1], SHAPES)
    return f"a {first[0]} {first[1]} {relation} a {second[0]} {second[1]}"


def count_caption(colour: str, shape: str, k: int) -> str:
    """Canonical caption of ``k`` identical objects, e.g. ``"three blue squares"`` (Chapter 1).

    Raises:
        ValueError: for an unknown colour or shape, or ``k`` outside 1..4.
    """
    check_choice("colour", colour, tuple(COLOURS))
    check_choice("shape", shape, SHAPES)
    k = check_int("k", k, 1, len(NUMBER_WORDS))
    return f"one {colour} {shape}" if k == 1 else f"{NUMBER_WORDS[k - 1]} {colour} {plural(shape)}"


def _check_templates(templates: object) -> tuple[str, ...]:
    templates = check_sequence("templates", templates, str, nonempty=True, expected="a list of format strings")
    for t in templates:
        fields = {f for _, f, _, _ in string.Formatter().parse(t) if f is not None}
        if not fields <= TEMPLATE_FIELDS:
            raise ValueError(f"templates: {t!r} uses {sorted(fields - TEMPLATE_FIELDS)}; "
                             f"allowed fields are {sorted(TEMPLATE_FIELDS)}")
    return tuple(templates)


def vocabulary(templates: Sequence[str] | None = None) -> list[str]:
    """Every word a ShapesWorld caption or probe can contain, sorted and without repeats.

    Explained in Chapter 3.1 (the word-level tokenizer is built from it). Covers the default
    templates, relation and counting captions, and ``templates`` if given.
    """
    texts = [*TEMPLATES, *RELATION_TEMPLATES, *COUNT_TEMPLATES, *(_check_templates(templates) if templates else ())]
    words = {w for t in texts for w in string.Formatter().vformat(t, (), _Blank()).split()}
    words |= set(COLOURS) | set(NUMBER_WORDS)
    for synonyms in SHAPE_SYNONYMS.values():
        words |= set(synonyms) | {plural(w) for w in synonyms}
    for group in (*SIZE_WORDS.values(), *STYLE_WORDS.values()):
        words |= set(group)
    for phrase in (*WHERE_PHRASES.values(), *(p for ps in RELATION_PHRASES.values() for p in ps)):
        words |= set(phrase.split())
    return sorted(words)


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def heldout_combinations(n: int = 16, seed: int = 0) -> list[tuple[str, str]]:
    """Choose ``n`` (colour, shape) pairs to keep out of training, deterministically.

    Explained in Chapter 3.1 (compositional generalisation). The pairs lie on ``ceil(n / 8)``
    diagonals of a randomly permuted colour x shape table (a Latin-square pattern), so for
    ``n=16`` every colour loses exactly two shapes and every shape exactly two colours, and
    each colour and each shape still appears in training.

    Args:
        n: number of pairs, 0 to 56 (at least one full diagonal stays in training).
        seed: seed of the permutations.

    Returns:
        The pairs, sorted by their class index (see :func:`class_names`).
    """
    n = check_int("n", n, 0, len(COLOURS) * (len(SHAPES) - 1))
    rng = random.Random(f"shapesworld-heldout/{check_int('seed', seed, 0)}")
    colours, shapes = list(COLOURS), list(SHAPES)
    rng.shuffle(colours)
    rng.shuffle(shapes)
    offsets = rng.sample(range(len(SHAPES)), -(-n // len(COLOURS)))
    pairs = [(colours[i], shapes[(i + off) % len(shapes)])
             for j, off in enumerate(offsets) for i in range(min(len(COLOURS), n - j * len(COLOURS)))]
    return sorted(pairs, key=lambda p: list(COLOURS).index(p[0]) * len(SHAPES) + SHAPES.index(p[1]))


def class_names(kind: str = "pair") -> list[str]:
    """Class names in label order: ``"red circle"``, ``"red square"``, ... for ``kind="pair"``.

    Explained in Chapter 1 (zero-shot classification). ``kind="colour"`` or ``"shape"`` gives
    the colours or the shapes; see :meth:`ShapesWorld.labels`.
    """
    check_choice("kind", kind, ("pair", "colour", "shape"))
    if kind == "colour":
        return list(COLOURS)
    return list(SHAPES) if kind == "shape" else [f"{c} {s}" for c in COLOURS for s in SHAPES]


def _check_pairs(heldout: object) -> tuple[tuple[str, str], ...]:
    pairs = set()
    for p in check_sequence("heldout", heldout, iterable=True, expected="a list of (colour, shape) tuples"):
        if not (isinstance(p, (tuple, list)) and len(p) == 2):
            raise TypeError(f"heldout: expected (colour, shape) tuples, got {p!r}")
        pairs.add((check_choice("heldout colour", p[0], tuple(COLOURS)), check_choice("heldout shape", p[1], SHAPES)))
    return tuple(p for p in ((c, s) for c in COLOURS for s in SHAPES) if p in pairs)  # in class order


def _check_spurious(spurious: object, split: str, pairs: Sequence[tuple[str, str]],
                    heldout: Sequence[tuple[str, str]]) -> tuple[str, str, float]:
    """Validate ``(shape, colour, fraction)`` for :class:`ShapesWorld` (Chapter 6.4)."""
    if not (isinstance(spurious, (tuple, list)) and len(spurious) == 3):
        raise TypeError(f"spurious: expected None or a (shape, colour, fraction) tuple such as "
                        f"('heart', 'red', 0.9), got {spurious!r}")
    shape = check_choice("spurious shape", spurious[0], SHAPES)
    colour = check_choice("spurious colour", spurious[1], tuple(COLOURS))
    fraction = check_number("spurious fraction", spurious[2], 0.0, 1.0)
    if (colour, shape) in heldout:
        allowed = [c for c, s in pairs if s == shape]
        raise ValueError(f"spurious: ({shape!r}, {colour!r}) is a held-out pair, so no training image may show it; "
                         f"choose a colour the {shape} is trained with: {allowed}")
    if split == "heldout":
        raise ValueError("spurious: expected split 'train' or 'all' (the held-out split never draws the "
                         f"{colour} {shape}), got split='heldout'")
    if fraction < 1 and not any(s == shape and c != colour for c, s in pairs):
        raise ValueError(f"spurious: fraction {fraction} < 1 needs another colour for the {shape}, "
                         f"but every other one is held out")
    return shape, colour, float(fraction)


class ShapesWorld(torch.utils.data.Dataset):
    """Procedural image–caption pairs: coloured shapes drawn with PIL, captions from templates.

    Explained in Chapter 1 and Chapter 3.1. All images are rendered in the constructor
    (10,000 single-object pairs at 32x32 take one or two seconds) and the same ``seed`` always gives the same
    images and captions, byte for byte; ``split`` and ``seed`` both change the samples.

    With ``max_objects > 1`` each scene has 1 to ``max_objects`` objects: a single object, two
    different objects with a spatial caption ("a red circle left of a blue square"), or ``k``
    identical objects with a counting caption ("three blue squares").

    Args:
        n: number of pairs, at least 1.
        split: ``"train"`` (no object is a held-out pair), ``"heldout"`` (every object is one)
            or ``"all"`` (anything).
        seed: seed of this dataset's random stream; no global random state is used.
        image_size: side of the square images in pixels, at least 16.
        styles: the drawing styles to sample from, a subset of ``STYLES`` (order does not matter).
        heldout: held-out (colour, shape) pairs; ``None`` means :func:`heldout_combinations`.
        max_objects: largest number of objects in a scene, 1 to 4.
        templates: single-object caption templates (fields ``{colour}``, ``{shape}``, ``{size}``,
            ``{where}``, ``{style}``); ``None`` means ``TEMPLATES``.
        transform: optional function applied to each image tensor by ``__getitem__``.
        spurious: ``(shape, colour, fraction)`` makes the data biased (Chapter 6.4): each
            single-object scene whose shape is ``shape`` gets ``colour`` with probability
            ``fraction`` and otherwise one of the shape's other colours of this split, uniformly.
            These colours are drawn from a random stream of their own, so the data differ from
            those of the same seed without ``spurious`` only in the colours of those objects (and
            the colour words of their captions); how often each shape appears is unchanged.
            Scenes of several objects (relation and counting captions) are left as they are. The pair must not be held out and ``split``
            must not be ``"heldout"``. ``None`` (the default) leaves every colour uniform, and the
            data are then byte for byte those of a ShapesWorld without the argument.
        sizes: the sizes of single objects, a subset of ``SIZES`` (order does not matter).
        positions: the grid cells of single objects, a subset of ``POSITIONS`` (order does not
            matter). Chapter 7.5's generators draw large objects in the centre only. With every
            size and every position (the defaults) the data are those of a ShapesWorld without
            these arguments; scenes of several objects are drawn as always.

    Attributes:
        captions: one caption per sample, lower-case words separated by single spaces.
        attributes: per sample, the list of :class:`ShapeSpec` objects drawn.
        images: uint8 tensor of shape ``(n, 3, image_size, image_size)``.
        pairs: the (colour, shape) pairs this split draws its objects from.
        heldout: the held-out pairs, in class order.
        styles: the styles drawn from, in the order of ``STYLES``.
        sizes: the sizes of single objects, in the order of ``SIZES``.
        positions: the positions of single objects, in the order of ``POSITIONS``.
        spurious: the validated ``(shape, colour, fraction)``, or ``None``.
    """

    def __init__(self, n: int, split: str = "train", seed: int = 0, image_size: int = 32,
                 styles: Sequence[str] = ("filled", "outline"), heldout: Sequence[tuple[str, str]] | None = None,
                 max_objects: int = 1, templates: Sequence[str] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 spurious: tuple[str, str, float] | None = None, sizes: Sequence[str] = SIZES,
                 positions: Sequence[str] = POSITIONS) -> None:
        self.n = check_int("n", n, 1)
        self.split = check_choice("split", split, SPLITS)
        self.seed = check_int("seed", seed, 0)
        self.image_size = check_int("image_size", image_size, 16)
        # canonical order: the same data for any order
        self.styles = check_subset("styles", styles, STYLES, iterable=True)
        self.sizes = check_subset("sizes", sizes, SIZES, iterable=True)
        self.positions = check_subset("positions", positions, POSITIONS, iterable=True)
        self.heldout = _check_pairs(heldout_combinations() if heldout is None else heldout)
        self.max_objects = check_int("max_objects", max_objects, 1, len(NUMBER_WORDS))
        self.templates = TEMPLATES if templates is None else _check_templates(templates)
        self.transform = None if transform is None else check_callable("transform", transform, "a callable or None")

        every = [(c, s) for c in COLOURS for s in SHAPES]
        held = set(self.heldout)
        self.pairs = {"train": [p for p in every if p not in held], "heldout": list(self.heldout), "all": every}[split]
        if not self.pairs:
            raise ValueError(f"heldout: split={split!r} needs at least one pair, but heldout={list(self.heldout)!r}")
        self.spurious = None if spurious is None else _check_spurious(spurious, split, self.pairs, self.heldout)
        # the biased colours come from a stream of their own, so the main stream (and with it every
        # position, size, style and caption template) is the same as without ``spurious``
        self._spurious_rng = random.Random(f"shapesworld-spurious/{self.split}/{self.seed}")

        rng = random.Random(f"shapesworld/{self.split}/{self.seed}")
        self.captions: list[str] = []
        self.attributes: list[list[ShapeSpec]] = []
        size, block = self.image_size, 256  # scenes are painted into one tall canvas per block
        pixels = np.empty((self.n, size, size, 3), dtype=np.uint8)
        canvas = Image.new("RGB", (size, size * block))
        for start in range(0, self.n, block):
            count = min(block, self.n - start)
            for j in range(count):
                objects, caption = self._sample(rng)
                self.attributes.append(objects)
                self.captions.append(caption)
                paint(canvas, j * size, objects, size, jittered_background(rng))
            pixels[start:start + count] = np.asarray(canvas).reshape(block, size, size, 3)[:count]
        self.images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()

    def _sample(self, rng: random.Random) -> tuple[list[ShapeSpec], str]:
        k = rng.randint(1, self.max_objects)
        if k == 2 and len(self.pairs) >= 2 and rng.random() < 0.5:
            first, second = rng.sample(self.pairs, 2)
            relation = rng.choice(RELATIONS)
            objects = relation_objects(rng, first, relation, second, (rng.choice(self.styles), rng.choice(self.styles)))
            words = {"first": f"{first[0]} {self._shape_word(rng, first[1])}",
                     "second": f"{second[0]} {self._shape_word(rng, second[1])}",
                     "relation": rng.choice(RELATION_PHRASES[relation])}
            return objects, rng.choice(RELATION_TEMPLATES).format(**words)
        colour, shape = rng.choice(self.pairs)
        if k == 1 and self.spurious is not None and shape == self.spurious[0]:
            colour = self._spurious_colour()
        if k > 1:
            objects = count_objects(rng, colour, shape, k, [rng.choice(self.styles)] * k)
            words = {"number": NUMBER_WORDS[k - 1], "colour": colour, "shapes": plural(self._shape_word(rng, shape))}
            return objects, rng.choice(COUNT_TEMPLATES).format(**words)
        spec = place(rng, shape, colour, rng.choice(self.sizes), rng.choice(self.positions), rng.choice(self.styles))
        words = {"colour": colour, "shape": self._shape_word(rng, shape), "size": rng.choice(SIZE_WORDS[spec.size]),
                 "where": WHERE_PHRASES[spec.position], "style": rng.choice(STYLE_WORDS[spec.style])}
        return [spec], rng.choice(self.templates).format(**words)

    def _spurious_colour(self) -> str:
        """The colour of a single object of the biased shape: the chosen one with its fraction, else another.

        Both draws are made every time, so that a larger fraction only recolours more objects:
        the datasets of one seed are nested, whatever the fraction.
        """
        shape, colour, fraction = self.spurious
        others = [c for c, s in self.pairs if s == shape and c != colour]
        u, other = self._spurious_rng.random(), (self._spurious_rng.choice(others) if others else colour)
        return colour if u < fraction else other

    @staticmethod
    def _shape_word(rng: random.Random, shape: str) -> str:
        synonyms = SHAPE_SYNONYMS[shape]
        return shape if len(synonyms) == 1 or rng.random() < _CANONICAL_P else rng.choice(synonyms[1:])

    def __len__(self) -> int:
        """Number of image–caption pairs."""
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        """Return ``(image, caption)``: a float32 tensor ``3 x H x W`` in [0, 1] and its caption."""
        image = self.images[index].float().div_(255.0)
        return (self.transform(image) if self.transform is not None else image), self.captions[index]

    def tensors(self, normalize: bool = True) -> torch.Tensor:
        """All images as one float32 tensor ``n x 3 x H x W``, normalised with ``MEAN``/``STD`` by default.

        Explained in Chapter 3.1. With ``normalize=False`` the values are in [0, 1].
        """
        return normalize_images(self.images) if normalize else self.images.float().div_(255.0)

    def labels(self, kind: str = "pair") -> torch.Tensor:
        """Class index of each sample's first object, as a LongTensor of length ``n``.

        Explained in Chapter 1 (zero-shot accuracy). ``kind="pair"`` gives
        ``colour_index * len(SHAPES) + shape_index`` (64 classes, named by :func:`class_names`);
        ``"colour"`` and ``"shape"`` give the index into ``COLOURS`` or ``SHAPES``.
        """
        check_choice("kind", kind, ("pair", "colour", "shape"))
        colours = {c: i for i, c in enumerate(COLOURS)}
        index = {"colour": lambda s: colours[s.colour], "shape": lambda s: SHAPES.index(s.shape),
                 "pair": lambda s: colours[s.colour] * len(SHAPES) + SHAPES.index(s.shape)}[kind]
        return torch.tensor([index(objects[0]) for objects in self.attributes], dtype=torch.long)

    def __repr__(self) -> str:
        return (f"ShapesWorld(n={self.n}, split={self.split!r}, seed={self.seed}, image_size={self.image_size}, "
                f"styles={self.styles}, max_objects={self.max_objects}, heldout={len(self.heldout)} pairs"
                + (f", spurious={self.spurious}" if self.spurious is not None else "") + ")")
