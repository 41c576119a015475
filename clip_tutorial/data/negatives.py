"""Hard-negative captions: the true caption with two objects' attributes swapped, as in NegCLIP.

Explained in Chapter 6.6. A caption of two objects, "a red circle left of a blue square", has the
same bag of words as "a blue circle left of a red square" (the colours swapped) and as "a red square
left of a blue circle" (the shapes swapped). Both are false of the picture. A batch of ordinary
training captions almost never holds such a pair, so the contrastive loss never asks the model to
tell them apart. NegCLIP (Yuksekgonul et al., 2023) adds one such swapped caption per training pair
to the batch as a *hard negative*.

Only captions that name two objects of different colour or shape can be swapped: a single object
or a group of identical objects has nothing to exchange. For those, :func:`hard_negative_captions`
returns the caption itself, which means "no negative"
(:func:`clip_tutorial.objectives.loss.hard_negative_clip_loss` ignores a negative identical to its caption).
"""
from __future__ import annotations

import random

from clip_tutorial.core.checks import check_choice, check_int, check_sequence, check_type

from .render import COLOURS
from .shapesworld import SHAPE_SYNONYMS, ShapesWorld

__all__ = ["SWAPS", "swap_attributes", "hard_negative_captions"]

#: What a hard negative may exchange between the two objects of a caption.
SWAPS: tuple[str, ...] = ("colour", "shape")

_SHAPE_OF_WORD = {word: shape for shape, words in SHAPE_SYNONYMS.items() for word in words}


def swap_attributes(caption: str, swap: str) -> str | None:
    """``caption`` with its two objects' colours (``swap="colour"``) or shape words (``"shape"``) exchanged.

    Explained in Chapter 6.6. The caption must name exactly two objects, each as a colour word
    followed by a shape word, as ShapesWorld's relation captions do:
    ``swap_attributes("a red circle left of a blue box", "colour")`` is
    ``"a blue circle left of a red box"``. Nothing else in the caption moves.

    Returns:
        The swapped caption, or ``None`` when there is nothing to swap: the caption does not name
        two objects, or both have the same colour (or the same shape, synonyms included), so that the
        swap would not change what it says.

    Raises:
        TypeError: if ``caption`` is not a str.
        ValueError: if ``swap`` is not one of :data:`SWAPS`.
    """
    check_type("caption", caption, str)
    check_choice("swap", swap, SWAPS)
    words = caption.split()
    at = [i for i, w in enumerate(words[:-1]) if w in COLOURS and words[i + 1] in _SHAPE_OF_WORD]
    if len(at) != 2 or sum(w in COLOURS for w in words) != 2:
        return None
    if swap == "shape":
        at = [i + 1 for i in at]
        same = _SHAPE_OF_WORD[words[at[0]]] == _SHAPE_OF_WORD[words[at[1]]]
    else:
        same = words[at[0]] == words[at[1]]
    if same:
        return None
    words[at[0]], words[at[1]] = words[at[1]], words[at[0]]
    return " ".join(words)


def hard_negative_captions(data: ShapesWorld, seed: int, swaps: tuple[str, ...] = SWAPS) -> list[str]:
    """One hard negative per caption of ``data``: its two objects' attributes swapped.

    Explained in Chapter 6.6. For each caption, one of ``swaps`` that changes its meaning is drawn
    at random (see :func:`swap_attributes`); a caption with nothing to swap (one object, or identical
    objects) gets itself back, which the training loss reads as "no negative". In a recipe of up to
    four objects per scene, about one caption in eight or nine names two different objects.

    Args:
        data: a ShapesWorld dataset (its ``captions`` are read, nothing is changed).
        seed: seed of the choice of swap per caption.
        swaps: the swaps to draw from, a non-empty subset of :data:`SWAPS`.

    Returns:
        A list of ``len(data)`` captions, aligned with ``data.captions``.

    Raises:
        TypeError: if ``data`` is not a ShapesWorld.
        ValueError: for a negative ``seed`` or an unknown swap.
    """
    check_type("data", data, ShapesWorld)
    seed = check_int("seed", seed, 0)
    swaps = tuple(check_choice("swaps", s, SWAPS) for s in check_sequence(
        "swaps", swaps, str, nonempty=True, expected=f"a non-empty tuple of names from {list(SWAPS)}"))
    rng = random.Random(f"negatives/{seed}")
    negatives = []
    for caption in data.captions:
        options = [c for c in (swap_attributes(caption, s) for s in swaps) if c is not None]
        negatives.append(rng.choice(options) if options else caption)
    return negatives
