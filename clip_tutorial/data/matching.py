"""Ground truth for search: which images satisfy what a text query asks for.

Explained in Chapter 5.2 (measuring a search engine). In a collection of 50,000 ShapesWorld images,
hundreds of them are "a red circle", so "the image this caption was written for" is a poor
definition of a correct search result. Here a result is *relevant* when its ground-truth
attributes satisfy **every** attribute the query mentions: for "a small red circle" any small red
circle counts, whatever its position or style; for "a red circle" the size does not matter either.

:func:`parse_query` reads the attributes a ShapesWorld-style query mentions (its words for colour,
shape, size, drawing style and position); :func:`matches` checks one object against them and
:func:`relevance` builds the whole (queries, images) boolean matrix that recall@K needs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from clip_tutorial.core.checks import check_choice, check_sequence, check_type

from .render import COLOURS, POSITIONS, SHAPES, SIZES, STYLES, ShapeSpec
from .shapesworld import SHAPE_SYNONYMS, SIZE_WORDS, STYLE_WORDS, WHERE_PHRASES

__all__ = ["ATTRIBUTE_VALUES", "QueryAttributes", "parse_query", "matches", "relevance"]

_SHAPE_OF = {word: shape for shape, words in SHAPE_SYNONYMS.items() for word in words}
_SIZE_OF = {word: size for size, words in SIZE_WORDS.items() for word in words}
_STYLE_OF = {**{word: style for style, words in STYLE_WORDS.items() for word in words}, **{s: s for s in STYLES}}
_FIELDS = ("colour", "shape", "size", "position", "style")

#: The values each attribute of a :class:`~clip_tutorial.data.ShapeSpec` can take.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES,
                                                "position": POSITIONS, "style": STYLES}


@dataclass(frozen=True)
class QueryAttributes:
    """The attributes a query asks for; ``None`` means the query does not mention that attribute.

    Attributes:
        colour: one of ``COLOURS``.
        shape: one of ``SHAPES`` (synonyms such as "box" are already mapped to "square").
        size: ``"small"`` or ``"large"``.
        position: one of ``POSITIONS``, e.g. ``"top left"``.
        style: one of ``STYLES``.

    Explained in Chapter 5.2.
    """

    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None
    style: str | None = None

    def __post_init__(self) -> None:
        for name in _FIELDS:
            options = ATTRIBUTE_VALUES[name]
            if (value := getattr(self, name)) is not None:
                check_choice(name, value, options, expected=f"None or one of {list(options)}")

    def mentioned(self) -> dict[str, str]:
        """The attributes the query mentions, as ``{name: value}`` (empty for a query that names nothing)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def _one(name: str, found: list[str], query: str) -> str | None:
    if len(set(found)) > 1:
        raise ValueError(f"query: expected at most one {name} (a single-object query), got {sorted(set(found))} "
                         f"in {query!r}")
    return found[0] if found else None


def parse_query(query: str) -> QueryAttributes:
    """Read which colour, shape, size, style and position a single-object query asks for.

    Punctuation is ignored and words are matched case-insensitively against ShapesWorld's vocabulary (``COLOURS``,
    ``SHAPE_SYNONYMS``, ``SIZE_WORDS``, ``STYLE_WORDS`` and the phrases of ``WHERE_PHRASES`` such
    as "in the top left"); every other word ("a", "photo", "of", ...) is ignored.

    Args:
        query: e.g. ``"a picture of a little hollow yellow star"``.

    Returns:
        The :class:`QueryAttributes`, e.g. ``QueryAttributes(colour="yellow", shape="star",
        size="small", style="outline")``.

    Raises:
        TypeError: if ``query`` is not a str.
        ValueError: if the query names two different values of one attribute (e.g. two colours).

    Explained in Chapter 5.2; Chapter 5.3 reads the captions of a caption bank with it.
    """
    check_type("query", query, str)
    words = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in query.lower()).split()  # drop punctuation
    padded = f" {' '.join(words)} "
    places = [place for place, phrase in WHERE_PHRASES.items() if f" {phrase} " in padded]  # no phrase contains another
    return QueryAttributes(
        colour=_one("colour", [w for w in words if w in COLOURS], query),
        shape=_one("shape", [_SHAPE_OF[w] for w in words if w in _SHAPE_OF], query),
        size=_one("size", [_SIZE_OF[w] for w in words if w in _SIZE_OF], query),
        position=_one("position", places, query),
        style=_one("style", [_STYLE_OF[w] for w in words if w in _STYLE_OF], query),
    )


def _as_attributes(query: object, name: str) -> QueryAttributes:
    check_type(name, query, (str, QueryAttributes), expected="a str or QueryAttributes")
    return query if isinstance(query, QueryAttributes) else parse_query(query)


def matches(query: str | QueryAttributes, spec: ShapeSpec) -> bool:
    """Whether one object satisfies every attribute the query mentions.

    Args:
        query: the text of the query, or its parsed :class:`QueryAttributes`.
        spec: the object's ground truth, a :class:`~clip_tutorial.data.ShapeSpec`.

    Returns:
        ``True`` when each mentioned attribute equals the object's (a query mentioning nothing
        matches every object).

    Raises:
        TypeError: if ``query`` or ``spec`` has the wrong type.

    Explained in Chapter 5.2.
    """
    wanted = _as_attributes(query, "query")
    check_type("spec", spec, ShapeSpec)
    return all(getattr(spec, name) == value for name, value in wanted.mentioned().items())


def relevance(queries: Sequence[str | QueryAttributes], attributes: Sequence[Sequence[ShapeSpec]]) -> torch.Tensor:
    """The (queries, images) matrix of ground-truth relevance: which images satisfy each query.

    An image is relevant to a query when at least one of its objects satisfies every attribute
    the query mentions (see :func:`matches`); for single-object images that is the object itself.
    The matrix is computed with vectorised comparisons, so 1,000 queries against 50,000 images
    take a fraction of a second.

    Args:
        queries: texts or :class:`QueryAttributes`.
        attributes: per image, its list of objects, as ``ShapesWorld.attributes`` gives.

    Returns:
        A bool tensor of shape ``(len(queries), len(attributes))``.

    Raises:
        TypeError: if ``queries`` or ``attributes`` is not a list, or an entry has the wrong type.
        ValueError: if there are no queries or no images, an image has no objects, or a query
            names two values of one attribute.

    Explained in Chapter 5.2.
    """
    queries = check_sequence("queries", queries, (str, QueryAttributes), nonempty=True)
    attributes = check_sequence("attributes", attributes, nonempty=True, expected="a list of per-image object lists")
    wanted = [_as_attributes(q, f"queries[{i}]") for i, q in enumerate(queries)]
    owner, codes = [], {name: [] for name in _FIELDS}
    for i, objects in enumerate(attributes):
        for spec in check_sequence(f"attributes[{i}]", objects, ShapeSpec, nonempty=True):
            owner.append(i)
            for name in _FIELDS:
                codes[name].append(ATTRIBUTE_VALUES[name].index(getattr(spec, name)))
    owner_array = np.asarray(owner)
    columns = {name: np.asarray(values, dtype=np.int8) for name, values in codes.items()}
    single = len(owner) == len(attributes)  # one object per image: objects are the images
    result = np.zeros((len(wanted), len(attributes)), dtype=bool)
    for q, query in enumerate(wanted):
        keep = np.ones(len(owner), dtype=bool)
        for name, value in query.mentioned().items():
            keep &= columns[name] == ATTRIBUTE_VALUES[name].index(value)
        if single:
            result[q] = keep
        else:
            result[q, owner_array[keep]] = True
    return torch.from_numpy(result)
