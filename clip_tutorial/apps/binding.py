"""Attribute-binding probes: does the model know *which* object is red, or only *that* something is?

Explained in Chapter 6.6. Chapter 1.6 (:mod:`clip_tutorial.apps.limitations`) found that a tiny CLIP
knows which objects are in a picture but not how they are arranged. This module asks the sharper
question of Winoground (Thrush et al., 2022) and ARO (Yuksekgonul et al., 2023): given two objects,
does the model tie each colour to the right shape? Every probe scene shows two objects that differ
in colour *and* shape, and its false caption uses the same words as the true one:

* :func:`binding_probe`: one image, the true caption against its attributes swapped
  ("a red circle left of a blue square" against "a blue circle left of a red square"), or against
  the same words shuffled (ARO's word-order test). Chance is 1/2.
* :func:`winoground_probe`: Winoground's protocol on minimal pairs of images *and* captions: the
  scene and its swapped twin, drawn at the same positions on the same background, with their two
  captions. It reports Winoground's text, image and group scores (chance 1/4, 1/4 and 1/6).

Only colour-shape combinations in ``pairs`` are drawn, in both the true and the swapped version, so
a false caption never names a combination the model has never seen.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from clip_tutorial.core.checks import check_callable, check_choice, check_int, check_sequence
from clip_tutorial.data import COLOURS, RELATIONS, SHAPES, normalize_images, relation_caption, relation_scene
from clip_tutorial.data.negatives import SWAPS, swap_attributes
from clip_tutorial.evaluation.zeroshot import encode_images, encode_texts
from clip_tutorial.model import CLIP, check_clip
from .limitations import ProbeResult, Tokenizer, multiple_choice_probe, render_probe_images

__all__ = ["CONTRASTS", "WINOGROUND_CHANCE", "WinogroundResult", "binding_probe", "winoground_scores",
           "winoground_probe"]

#: The false captions of :func:`binding_probe`: the two objects' colours or shapes swapped, or the words shuffled.
CONTRASTS: tuple[str, ...] = (*SWAPS, "shuffle")

#: Winoground's chance levels (Thrush et al., 2022): each of the text and image scores needs two
#: independent coin flips to come out right (1/4); the group score needs the two true pairs to
#: beat both false ones, which 4 of the 24 equally likely orders of four scores do (1/6).
WINOGROUND_CHANCE: dict[str, float] = {"text": 1 / 4, "image": 1 / 4, "group": 1 / 6}

Pair = tuple[str, str]


def _valid_pairs(pairs: Sequence[Pair] | None) -> list[Pair]:
    """``pairs`` checked to be (colour, shape) tuples of known names; ``None`` means all 64."""
    if pairs is None:
        return [(c, s) for c in COLOURS for s in SHAPES]
    items = check_sequence("pairs", pairs, (tuple, list), nonempty=True, expected="a list of (colour, shape) tuples")
    for pair in items:
        if len(pair) != 2:
            raise TypeError(f"pairs: expected (colour, shape) tuples, got {pair!r}")
        check_choice("pairs colour", pair[0], tuple(COLOURS))
        check_choice("pairs shape", pair[1], SHAPES)
    return [(pair[0], pair[1]) for pair in items]


def _swapped(first: Pair, second: Pair, swap: str) -> tuple[Pair, Pair]:
    """The two objects after exchanging their colours or their shapes."""
    if swap == "colour":
        return (second[0], first[1]), (first[0], second[1])
    return (first[0], second[1]), (second[0], first[1])


def _draw_objects(rng: random.Random, pairs: list[Pair], n: int) -> list[tuple[Pair, Pair]]:
    """``n`` pairs of objects differing in colour and shape whose swapped versions are also in ``pairs``."""
    allowed = set(pairs)
    options = [(a, b) for a in pairs for b in pairs if a[0] != b[0] and a[1] != b[1]
               and (b[0], a[1]) in allowed and (a[0], b[1]) in allowed]
    if not options:
        raise ValueError("pairs: expected two pairs (c1, s1), (c2, s2) with c1 != c2 and s1 != s2 whose swaps "
                         "(c2, s1), (c1, s2) are pairs too, got none")
    return [rng.choice(options) for _ in range(n)]


def _check_common(model: CLIP, tokenizer: Tokenizer, n: int, seed: int) -> tuple[int, int]:
    check_clip("model", model)
    check_callable("tokenizer", tokenizer, "a tokenizer (a callable from texts to token ids)")
    return check_int("n", n, 1), check_int("seed", seed, 0)


def binding_probe(model: CLIP, tokenizer: Tokenizer, n: int = 200, seed: int = 0, contrast: str = "colour",
                  pairs: Sequence[Pair] | None = None, style: str = "filled") -> ProbeResult:
    """Two objects in a known relation: the true caption against the same words bound differently.

    Explained in Chapter 6.6. Image ``i`` shows two small objects in relation
    ``RELATIONS[i % 4]``, e.g. a red circle left of a blue square. The true caption is
    ``"a red circle left of a blue square"``; the false one is, for ``contrast="colour"``,
    ``"a blue circle left of a red square"``, for ``"shape"``, ``"a red square left of a blue
    circle"`` (:func:`~clip_tutorial.data.negatives.swap_attributes`), and for ``"shuffle"`` the true
    caption's words in another random order, as in ARO's word-order tests. The two candidates come in
    random order; chance is 1/2.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        n: number of images, at least 1.
        seed: seed of the scenes, the false captions and the candidate order.
        contrast: ``"colour"``, ``"shape"`` or ``"shuffle"``, see :data:`CONTRASTS`.
        pairs: the (colour, shape) pairs objects are drawn from (default: all 64); both objects and
            their swapped versions are pairs of this list.
        style: the drawing style of both objects.

    Returns:
        A :class:`~clip_tutorial.apps.limitations.ProbeResult`; ``by_group`` is the accuracy per relation.
    """
    n, seed = _check_common(model, tokenizer, n, seed)
    check_choice("contrast", contrast, CONTRASTS)
    rng = random.Random(f"probe/binding/{contrast}/{seed}")
    scenes, candidates, labels, groups = [], [], [], []
    for i, (first, second) in enumerate(_draw_objects(rng, _valid_pairs(pairs), n)):
        relation = RELATIONS[i % len(RELATIONS)]
        scenes.append(relation_scene(first, relation, second, style=style, seed=rng.randrange(2**31)))
        true = relation_caption(first, relation, second)
        if contrast == "shuffle":
            words = true.split()
            while " ".join(words) == true:
                rng.shuffle(words)
            false = " ".join(words)
        else:
            false = swap_attributes(true, contrast)
        label = rng.randrange(2)
        candidates.append([true, false] if label == 0 else [false, true])
        labels.append(label)
        groups.append(relation)
    images = render_probe_images(scenes, model.config.image_resolution, [rng.randrange(2**31) for _ in scenes])
    return multiple_choice_probe(model, tokenizer, images, candidates, labels, groups, name=f"binding ({contrast})",
                                 scenes=scenes)


@dataclass
class WinogroundResult:
    """Winoground's three scores on minimal pairs (Chapter 6.6).

    Attributes:
        name: what was swapped, e.g. ``"winoground (colour)"``.
        text: fraction of pairs where each image prefers its own caption (chance 1/4).
        image: fraction of pairs where each caption prefers its own image (chance 1/4).
        group: fraction of pairs where both hold (chance 1/6).
        scores: ``(n, 2, 2)`` cosine similarities; ``scores[k, i, j]`` is image ``i`` of pair ``k``
            against caption ``j`` (the true pairs are on the diagonal).
        images: uint8 pixels ``(n, 2, 3, H, W)``, each scene and its swapped twin.
        captions: per pair, the two captions.
    """

    name: str
    text: float
    image: float
    group: float
    scores: torch.Tensor
    images: torch.Tensor
    captions: list[tuple[str, str]]

    @property
    def chance(self) -> dict[str, float]:
        """The three scores of a model that scores at random, :data:`WINOGROUND_CHANCE`."""
        return dict(WINOGROUND_CHANCE)

    def __repr__(self) -> str:
        return (f"WinogroundResult({self.name!r}, text={self.text:.3f}, image={self.image:.3f}, "
                f"group={self.group:.3f}, n={len(self.captions)})")


def winoground_scores(scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per pair, whether Winoground's text, image and group tests pass, from ``(n, 2, 2)`` similarities.

    Explained in Chapter 6.6. With ``s[i, j]`` image ``i`` against caption ``j`` of one pair, the
    text test is ``s[0,0] > s[0,1] and s[1,1] > s[1,0]`` (each image picks its caption), the image
    test is ``s[0,0] > s[1,0] and s[1,1] > s[0,1]`` (each caption picks its image), and the group
    test is both (Thrush et al., 2022).

    Returns:
        ``{"text", "image", "group"}``: bool tensors of shape ``(n,)``.
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim != 3 or scores.shape[1:] != (2, 2):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores: expected a tensor of shape (n, 2, 2), got {shape}")
    s = scores
    text = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    image = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    return {"text": text, "image": image, "group": text & image}


def winoground_probe(model: CLIP, tokenizer: Tokenizer, n: int = 200, seed: int = 0, swap: str = "colour",
                     pairs: Sequence[Pair] | None = None, style: str = "filled") -> WinogroundResult:
    """Winoground on ShapesWorld: two scenes that differ only in which object has which colour (or shape).

    Explained in Chapter 6.6. Pair ``k`` is a scene such as a red circle left of a blue square and its
    twin with the colours (``swap="colour"``) or the shapes (``"shape"``) exchanged, a blue circle left
    of a red square, drawn at the same positions with the same background; the captions are the two
    scenes' relation captions, which use the same words. The relations are used in turn.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        n: number of pairs (2n images), at least 1.
        seed: seed of the scenes.
        swap: ``"colour"`` or ``"shape"``.
        pairs: the (colour, shape) pairs objects are drawn from (default: all 64), for both twins.
        style: the drawing style.

    Returns:
        A :class:`WinogroundResult`.
    """
    n, seed = _check_common(model, tokenizer, n, seed)
    check_choice("swap", swap, SWAPS)
    rng = random.Random(f"probe/winoground/{swap}/{seed}")
    scenes, seeds, captions = [], [], []
    for k, (first, second) in enumerate(_draw_objects(rng, _valid_pairs(pairs), n)):
        relation, layout, background = RELATIONS[k % len(RELATIONS)], rng.randrange(2**31), rng.randrange(2**31)
        twin = _swapped(first, second, swap)
        scenes += [relation_scene(first, relation, second, style=style, seed=layout),
                   relation_scene(twin[0], relation, twin[1], style=style, seed=layout)]
        seeds += [background, background]
        captions.append((relation_caption(first, relation, second), relation_caption(twin[0], relation, twin[1])))
    pixels = render_probe_images(scenes, model.config.image_resolution, seeds)
    image_features = encode_images(model, normalize_images(pixels)).view(n, 2, -1)
    unique = sorted({c for pair in captions for c in pair})
    index = {c: i for i, c in enumerate(unique)}
    text_features = encode_texts(model, tokenizer, unique)[torch.tensor([[index[c] for c in p] for p in captions])]
    scores = torch.einsum("kid,kjd->kij", image_features, text_features)
    passed = winoground_scores(scores)
    text, image, group = (float(passed[k].float().mean()) for k in ("text", "image", "group"))
    return WinogroundResult(f"winoground ({swap})", text, image, group,
                            scores, pixels.view(n, 2, *pixels.shape[1:]), captions)
