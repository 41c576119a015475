"""Probes that turn CLIP's known limitations into numbers: spatial relations, counting, fine detail.

Explained in Chapter 1.6. Each probe renders ShapesWorld images whose content is known exactly,
gives the model a few candidate captions per image (one true, the others false), and counts how
often the model's most similar caption is the true one. The answer is a :class:`ProbeResult`
with the accuracy and the accuracy of guessing (the chance level), so "the model fails at X"
becomes "accuracy on X is a% against a chance level of c%".

The scoring itself is the pure function :func:`choose_caption`; :func:`multiple_choice_probe`
runs any probe you build yourself.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from clip_tutorial.data import COLOURS, MEAN, RELATIONS, SHAPES, SIZES, STD, count_caption, count_scene, relation_caption
from clip_tutorial.data import normalize_images, relation_scene, render_scene
from clip_tutorial.core.checks import check_callable, check_choice, check_int, check_tensor, check_type
from clip_tutorial.data.render import POSITIONS, ShapeSpec, place
from clip_tutorial.model import CLIP, check_clip
from clip_tutorial.evaluation.zeroshot import encode_images, encode_texts

__all__ = ["ProbeResult", "OPPOSITE_RELATION", "choose_caption", "render_probe_images", "multiple_choice_probe",
           "relation_probe", "counting_probe", "fine_grained_probe"]

#: The relation that describes the same two objects the other way round.
OPPOSITE_RELATION: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

#: The prompt of the fine-grained probe, the book's zero-shot prompt.
ATTRIBUTE_PROMPT = "a photo of a {colour} {shape}"

Tokenizer = Callable[[Sequence[str]], torch.Tensor]
_TOKENIZER = "a tokenizer (a callable from texts to token ids)"  # what a bad tokenizer's message expects


@dataclass
class ProbeResult:
    """The outcome of a multiple-choice probe: one image, several candidate captions, one true.

    Explained in Chapter 1.6.

    Attributes:
        name: what was probed, e.g. ``"relation (swap)"``.
        accuracy: fraction of images whose chosen caption is the true one.
        chance: the accuracy of guessing uniformly among the candidates.
        images: the probe images, uint8 ``(N, 3, H, W)``.
        candidates: per image, the candidate captions.
        labels: per image, the index of the true caption in its candidates (LongTensor ``(N,)``).
        predictions: per image, the index of the caption the model chose (LongTensor ``(N,)``).
        groups: per image, the name of its group (e.g. the relation or the count), for :attr:`by_group`.
        classes: when candidate ``i`` means the same class for every image (e.g. "three"), the class
            names in candidate order, so that :meth:`confusion` makes sense; otherwise ``None``.
        scenes: per image, the objects drawn (a list of :class:`~clip_tutorial.data.ShapeSpec`),
            when the probe rendered the images itself; otherwise ``None``.
    """

    name: str
    accuracy: float
    chance: float
    images: torch.Tensor
    candidates: list[list[str]]
    labels: torch.Tensor
    predictions: torch.Tensor
    groups: list[str]
    classes: list[str] | None = None
    scenes: list[list[ShapeSpec]] | None = None

    @property
    def n(self) -> int:
        """Number of probe images."""
        return len(self.candidates)

    @property
    def correct(self) -> torch.Tensor:
        """Boolean tensor ``(N,)``: did the model choose the true caption?"""
        return self.predictions == self.labels

    @property
    def by_group(self) -> dict[str, float]:
        """Accuracy within each group, groups in order of first appearance."""
        correct = self.correct.tolist()
        totals: dict[str, list[int]] = {}
        for group, ok in zip(self.groups, correct):
            totals.setdefault(group, []).append(int(ok))
        return {group: sum(v) / len(v) for group, v in totals.items()}

    def confusion(self) -> torch.Tensor:
        """Counts ``(C, C)``: row = true class, column = chosen class (class names in :attr:`classes`).

        Raises:
            ValueError: if the candidates are not the same classes for every image.
        """
        if self.classes is None:
            raise ValueError(f"confusion: probe {self.name!r} has no fixed classes (its candidates are shuffled "
                             "per image); use by_group or correct instead")
        c = len(self.classes)
        matrix = torch.zeros(c, c, dtype=torch.long)
        matrix.index_put_((self.labels, self.predictions), torch.ones_like(self.labels), accumulate=True)
        return matrix

    def __repr__(self) -> str:
        return f"ProbeResult({self.name!r}, accuracy={self.accuracy:.3f}, chance={self.chance:.3f}, n={self.n})"


def choose_caption(image_features: torch.Tensor, caption_features: torch.Tensor) -> torch.Tensor:
    """Index of the most similar candidate caption for each image, by cosine similarity.

    Explained in Chapter 1.6. This is zero-shot prediction with a different set of candidates per
    image. Features need not be normalised; ties go to the lowest index.

    Args:
        image_features: ``(N, D)`` one row per image.
        caption_features: ``(N, C, D)``, the ``C`` candidate captions of each image.

    Returns:
        LongTensor ``(N,)`` of indices in ``[0, C)``.

    Raises:
        TypeError: if either argument is not a floating-point tensor.
        ValueError: if the shapes do not match.
    """
    for name, x in (("image_features", image_features), ("caption_features", caption_features)):
        check_tensor(name, x, floating=True, what="a floating-point torch.Tensor")
    if image_features.ndim != 2 or image_features.shape[0] == 0:
        raise ValueError(f"image_features: expected shape (N, D) with N >= 1, got {tuple(image_features.shape)}")
    n, d = image_features.shape
    if caption_features.ndim != 3 or caption_features.shape[0] != n or caption_features.shape[2] != d \
            or caption_features.shape[1] == 0:
        raise ValueError(f"caption_features: expected shape (N={n}, C, D={d}) with C >= 1, "
                         f"got {tuple(caption_features.shape)}")
    image = F.normalize(image_features.float(), dim=-1)
    captions = F.normalize(caption_features.float(), dim=-1)
    return torch.einsum("nd,ncd->nc", image, captions).argmax(dim=1)


def multiple_choice_probe(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor, candidates: Sequence[Sequence[str]],
                          labels: Sequence[int] | torch.Tensor, groups: Sequence[str] | None = None,
                          name: str = "probe", classes: Sequence[str] | None = None,
                          scenes: Sequence[Sequence[ShapeSpec]] | None = None) -> ProbeResult:
    """Score a probe of your own: for each image, which of its candidate captions does the model prefer?

    Explained in Chapter 1.6. Every distinct caption is embedded once.

    Args:
        model: a CLIP.
        tokenizer: the model's tokenizer.
        images: uint8 pixels ``(N, 3, H, W)`` (normalised here with ``MEAN``/``STD``), or float pixels
            already normalised, as :meth:`ShapesWorld.tensors` returns them.
        candidates: per image, the same number ``C >= 2`` of candidate captions.
        labels: per image, the index of the true caption.
        groups: per image, a group name for :attr:`ProbeResult.by_group` (default: all ``"all"``).
        name: the probe's name.
        classes: class names in candidate order, when they are the same for every image.
        scenes: per image, the objects drawn, kept in the result for figures and analysis.

    Returns:
        A :class:`ProbeResult` with chance level ``1 / C``.

    Raises:
        TypeError: for a model, tokenizer or images of the wrong type.
        ValueError: if the images are not ``(N, 3, H, W)``, the numbers of images, candidate lists,
            labels and groups differ, the candidate lists differ in length or hold fewer than two
            captions, or a label is out of range.
    """
    check_clip("model", model)
    check_callable("tokenizer", tokenizer, _TOKENIZER)
    check_tensor("images", images, shape=(None, 3, None, None), what="a tensor (N, 3, H, W)")
    if images.dtype == torch.uint8:
        pixels, inputs = images, normalize_images(images)
    elif images.is_floating_point():
        inputs = images
        std, mean = torch.tensor(STD).view(1, 3, 1, 1), torch.tensor(MEAN).view(1, 3, 1, 1)
        pixels = (images.detach().cpu() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    else:
        raise TypeError(f"images: expected uint8 pixels or normalised float pixels, got dtype {images.dtype}")
    n = images.shape[0]
    if isinstance(candidates, str) or len(candidates) != n or n == 0:
        raise ValueError(f"candidates: expected one list of captions per image ({n}), got "
                         f"{'a str' if isinstance(candidates, str) else len(candidates)}")
    candidates = [list(c) for c in candidates]
    c = len(candidates[0])
    if c < 2 or any(len(row) != c for row in candidates):
        raise ValueError(f"candidates: expected the same number (>= 2) of captions for every image, got lengths "
                         f"{sorted({len(row) for row in candidates})}")
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if labels.shape != (n,) or int(labels.min()) < 0 or int(labels.max()) >= c:
        raise ValueError(f"labels: expected {n} indices in [0, {c}), got {labels.tolist()}")
    groups = ["all"] * n if groups is None else [str(g) for g in groups]
    if len(groups) != n:
        raise ValueError(f"groups: expected one group name per image ({n}), got {len(groups)}")
    if classes is not None and len(classes) != c:
        raise ValueError(f"classes: expected {c} class names, one per candidate, got {len(classes)}")
    if scenes is not None and len(scenes) != n:
        raise ValueError(f"scenes: expected one list of objects per image ({n}), got {len(scenes)}")

    unique = sorted({caption for row in candidates for caption in row})
    index = {caption: i for i, caption in enumerate(unique)}
    text_features = encode_texts(model, tokenizer, unique)
    caption_features = text_features[torch.tensor([[index[x] for x in row] for row in candidates])]
    predictions = choose_caption(encode_images(model, inputs), caption_features)
    accuracy = float((predictions == labels).float().mean())
    return ProbeResult(name, accuracy, 1.0 / c, pixels, candidates, labels, predictions, groups,
                       None if classes is None else list(classes), None if scenes is None else [list(o) for o in scenes])


def _check_pairs(pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if pairs is None:
        return [(c, s) for c in COLOURS for s in SHAPES]
    if isinstance(pairs, str) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs: expected a list of (colour, shape) tuples, got {type(pairs).__name__}")
    out = []
    for p in pairs:
        if not (isinstance(p, (tuple, list)) and len(p) == 2):
            raise TypeError(f"pairs: expected (colour, shape) tuples, got {p!r}")
        out.append((check_choice("pairs colour", p[0], tuple(COLOURS)), check_choice("pairs shape", p[1], SHAPES)))
    if not out:
        raise ValueError("pairs: expected at least one (colour, shape) pair, got an empty list")
    return out


def render_probe_images(scenes: Sequence[Sequence[ShapeSpec]], image_size: int = 32,
                        seeds: Sequence[int] | None = None, normalize: bool = False) -> torch.Tensor:
    """Render scenes described object by object into one batch of images.

    Explained in Chapter 1.6. Each scene is drawn with :func:`~clip_tutorial.data.render_scene`.

    Args:
        scenes: per image, the objects to draw (e.g. from :func:`~clip_tutorial.data.relation_scene`).
        image_size: side of the images in pixels.
        seeds: per image, the seed of its background brightness jitter; ``None`` draws every
            background exactly ``BACKGROUND``.
        normalize: return float pixels normalised with ``MEAN`` and ``STD``, ready for the model,
            as :meth:`ShapesWorld.tensors` does; otherwise uint8 pixels.

    Returns:
        A tensor ``(N, 3, image_size, image_size)``.

    Raises:
        ValueError: if there are no scenes or the number of seeds differs from the number of scenes.
    """
    if isinstance(scenes, ShapeSpec) or not isinstance(scenes, Sequence) or len(scenes) == 0:
        raise ValueError(f"scenes: expected a non-empty list of scenes (each a list of ShapeSpec), got {scenes!r}")
    if seeds is not None and len(seeds) != len(scenes):
        raise ValueError(f"seeds: expected one seed per scene ({len(scenes)}), got {len(seeds)}")
    arrays = [np.asarray(render_scene(scene, image_size, seed=None if seeds is None else seeds[i]))
              for i, scene in enumerate(scenes)]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return normalize_images(images) if normalize else images


def _render(scenes: list[list[ShapeSpec]], image_size: int, rng: random.Random) -> torch.Tensor:
    return render_probe_images(scenes, image_size, [rng.randrange(2**31) for _ in scenes])


def relation_probe(model: CLIP, tokenizer: Tokenizer, n: int = 200, seed: int = 0, contrast: str = "swap",
                   pairs: Sequence[tuple[str, str]] | None = None, style: str = "filled") -> ProbeResult:
    """Two objects in a known relation: does the model prefer the true caption to a false one with the same words?

    Explained in Chapter 1.6. Each image shows two objects that differ in colour and in shape,
    e.g. a red circle left of a blue square (:func:`~clip_tutorial.data.relation_scene`). The
    true caption is ``"a red circle left of a blue square"``. The false one is, for
    ``contrast="swap"``, the same words with the objects swapped (``"a blue square left of a red
    circle"``) and, for ``contrast="flip"``, the opposite relation (``"a red circle right of a blue
    square"``). As a control, ``contrast="object"`` keeps the words' order and replaces the second
    object by one that is not in the image (``"a red circle left of a green star"``): a model that
    fails the first two but passes this one knows *what* is in the picture but not *where*. The
    two candidates are shown in random order; chance is 0.5. The relations
    (:data:`~clip_tutorial.data.RELATIONS`) are used in turn, so each is a quarter of the images.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        n: number of images, at least 1.
        seed: seed of the scenes and of the candidate order.
        contrast: ``"swap"``, ``"flip"`` or ``"object"``.
        pairs: the (colour, shape) pairs objects are drawn from (default: all 64); at least two
            must differ in both colour and shape.
        style: the drawing style of both objects.

    Returns:
        A :class:`ProbeResult`; :attr:`~ProbeResult.by_group` is the accuracy per relation.
    """
    check_clip("model", model)
    check_callable("tokenizer", tokenizer, _TOKENIZER)
    n, seed = check_int("n", n, 1), check_int("seed", seed, 0)
    check_choice("contrast", contrast, ("swap", "flip", "object"))
    pairs = _check_pairs(pairs)
    if not any(a[0] != b[0] and a[1] != b[1] for a in pairs for b in pairs):
        raise ValueError("pairs: expected two pairs that differ in both colour and shape, got none")
    every = _check_pairs(None)
    rng = random.Random(f"probe/relation/{contrast}/{seed}")
    scenes, candidates, labels, groups = [], [], [], []
    for i in range(n):
        relation = RELATIONS[i % len(RELATIONS)]
        while True:
            first, second = rng.sample(pairs, 2) if len(pairs) > 1 else (pairs[0], pairs[0])
            if first[0] != second[0] and first[1] != second[1]:
                break
        scenes.append(relation_scene(first, relation, second, style=style, seed=rng.randrange(2**31)))
        true = relation_caption(first, relation, second)
        if contrast == "swap":
            false = relation_caption(second, relation, first)
        elif contrast == "flip":
            false = relation_caption(first, OPPOSITE_RELATION[relation], second)
        else:
            def absent(options: list[tuple[str, str]]) -> list[tuple[str, str]]:
                return [p for p in options if p[0] not in (first[0], second[0]) and p[1] not in (first[1], second[1])]
            false = relation_caption(first, relation, rng.choice(absent(pairs) or absent(every)))
        label = rng.randrange(2)
        candidates.append([true, false] if label == 0 else [false, true])
        labels.append(label)
        groups.append(relation)
    images = _render(scenes, model.config.image_resolution, rng)
    return multiple_choice_probe(model, tokenizer, images, candidates, labels, groups, name=f"relation ({contrast})",
                                 scenes=scenes)


def counting_probe(model: CLIP, tokenizer: Tokenizer, n: int = 200, seed: int = 0,
                   pairs: Sequence[tuple[str, str]] | None = None, style: str = "filled", max_count: int = 4,
                   distractors: bool = False) -> ProbeResult:
    """``k`` objects: does the model pick the right number among "one ...", "two ...", ...?

    Explained in Chapter 1.6. Without distractors, image ``i`` shows ``k = i % max_count + 1``
    identical small objects (:func:`~clip_tutorial.data.count_scene`), as in the counting
    captions of training. With ``distractors=True`` it shows ``k = i % (max_count - 1) + 1`` objects
    of the named colour plus one or more copies of the same shape in another colour, up to
    ``max_count`` objects in all: the caption counts only some of the objects, so counting every
    object gives the wrong answer. The candidates are
    :func:`~clip_tutorial.data.count_caption` for ``1 .. max_count`` in that order, so chance is
    ``1 / max_count`` and :meth:`ProbeResult.confusion` is a count-by-count table.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        n: number of images, at least 1.
        seed: seed of the scenes.
        pairs: the (colour, shape) pairs drawn from (default: all 64); with distractors, the
            distractor colour also makes a pair of ``pairs`` with the shape when possible.
        style: the drawing style.
        max_count: the largest count, 2 to 4.
        distractors: add objects of another colour that the caption does not count.

    Returns:
        A :class:`ProbeResult`; :attr:`~ProbeResult.by_group` is the accuracy per count ("1" to "4"),
        and :attr:`~ProbeResult.scenes` says how many objects each image shows in all.
    """
    check_clip("model", model)
    check_callable("tokenizer", tokenizer, _TOKENIZER)
    n, seed = check_int("n", n, 1), check_int("seed", seed, 0)
    max_count = check_int("max_count", max_count, 2, 4)
    check_type("distractors", distractors, bool, "True or False")
    pairs = _check_pairs(pairs)
    rng = random.Random(f"probe/counting/{'distractors/' if distractors else ''}{seed}")
    scenes, candidates, labels, groups = [], [], [], []
    for i in range(n):
        colour, shape = rng.choice(pairs)
        if distractors:
            k = i % (max_count - 1) + 1
            objects = count_scene(colour, shape, rng.randint(k + 1, max_count), style=style, seed=rng.randrange(2**31))
            other = rng.choice([c for c, s in pairs if s == shape and c != colour]
                               or [c for c in COLOURS if c != colour])
            objects = [o if j < k else replace(o, colour=other) for j, o in enumerate(objects)]
        else:
            k = i % max_count + 1
            objects = count_scene(colour, shape, k, style=style, seed=rng.randrange(2**31))
        scenes.append(objects)
        candidates.append([count_caption(colour, shape, j) for j in range(1, max_count + 1)])
        labels.append(k - 1)
        groups.append(str(k))
    images = _render(scenes, model.config.image_resolution, rng)
    return multiple_choice_probe(model, tokenizer, images, candidates, labels, groups,
                                 name="counting (distractors)" if distractors else "counting",
                                 classes=[str(k) for k in range(1, max_count + 1)], scenes=scenes)


def fine_grained_probe(model: CLIP, tokenizer: Tokenizer, n: int = 400, seed: int = 0, size: str = "small",
                       pairs: Sequence[tuple[str, str]] | None = None, style: str = "filled") -> dict[str, ProbeResult]:
    """A fine distinction (which shape) and a coarse one (which colour), on the same single-object images.

    Explained in Chapter 1.6. Each image shows one object of the given ``size`` at a random
    grid position. For the ``"shape"`` task the candidates are ``"a photo of a {colour} {shape}"``
    with the true colour and each of the eight shapes; for the ``"colour"`` task, the true shape
    and each of the eight colours. Chance is 1/8 for both. Shapes are used in turn, so each is an
    eighth of the images, and candidates follow ``SHAPES`` and ``COLOURS`` order, so
    :meth:`ProbeResult.confusion` gives the shape-by-shape and colour-by-colour confusions.

    Args:
        model: a CLIP.
        tokenizer: its tokenizer.
        n: number of images, at least 1.
        seed: seed of the images.
        size: ``"small"`` or ``"large"``, one of :data:`~clip_tutorial.data.SIZES`.
        pairs: the (colour, shape) pairs drawn from (default: all 64); every shape needs one.
        style: the drawing style.

    Returns:
        ``{"shape": ProbeResult, "colour": ProbeResult}``.
    """
    check_clip("model", model)
    check_callable("tokenizer", tokenizer, _TOKENIZER)
    n, seed = check_int("n", n, 1), check_int("seed", seed, 0)
    check_choice("size", size, SIZES)
    pairs = _check_pairs(pairs)
    missing = [s for s in SHAPES if not any(p[1] == s for p in pairs)]
    if missing:
        raise ValueError(f"pairs: expected at least one pair for every shape, got none for {missing}")
    rng = random.Random(f"probe/fine/{size}/{seed}")
    objects = []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        colour = rng.choice([c for c, s in pairs if s == shape])
        objects.append(place(rng, shape, colour, size, rng.choice(POSITIONS), style))
    images = _render([[o] for o in objects], model.config.image_resolution, rng)
    shape_candidates = [[ATTRIBUTE_PROMPT.format(colour=o.colour, shape=s) for s in SHAPES] for o in objects]
    colour_candidates = [[ATTRIBUTE_PROMPT.format(colour=c, shape=o.shape) for c in COLOURS] for o in objects]
    return {
        "shape": multiple_choice_probe(model, tokenizer, images, shape_candidates, [SHAPES.index(o.shape) for o in objects],
                                       [o.shape for o in objects], name=f"shape ({size})", classes=list(SHAPES),
                                       scenes=[[o] for o in objects]),
        "colour": multiple_choice_probe(model, tokenizer, images, colour_candidates,
                                        [list(COLOURS).index(o.colour) for o in objects], [o.colour for o in objects],
                                        name=f"colour ({size})", classes=list(COLOURS),
                                        scenes=[[o] for o in objects]),
    }
