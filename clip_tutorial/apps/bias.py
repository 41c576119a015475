"""Bias learned from data: how a spurious correlation in the training pairs shows up in zero-shot answers.

Explained in Chapter 6.4. A ShapesWorld built with ``spurious=(shape, colour, fraction)`` gives
most objects of one shape one colour (most hearts are red). :func:`spurious_rates` measures, on a
balanced test set, how often a CLIP trained on such data lets one attribute stand in for the other:
how often it calls a heart of another colour red, and how often it calls a red object of another
shape a heart, each beside the same error on objects that have neither attribute.
:func:`attribute_confusion` counts the confusions of one attribute. :func:`fit_class_offsets`
is one mitigation that needs no retraining: an offset per class, fitted on a small balanced set
so that every class is predicted as often as it occurs there.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from clip_tutorial.core.checks import check_choice, check_int, check_number, check_sequence, check_tensor
from clip_tutorial.data import COLOURS, SHAPES

__all__ = ["SpuriousRates", "spurious_rates", "colour_gaps", "attribute_confusion", "fit_class_offsets"]

_N_CLASSES = len(COLOURS) * len(SHAPES)


def _check_labels(name: str, value: object, length: int | None = None) -> torch.Tensor:
    """Pair-class indices (``colour_index * len(SHAPES) + shape_index``), one per image."""
    expected = "a 1-D integer tensor of pair-class indices (ShapesWorld.labels('pair'))"
    check_tensor(name, value, ndim=1, dtype=(torch.int64, torch.int32), what=expected)
    if length is not None and len(value) != length:
        raise ValueError(f"{name}: expected {length} labels, one per image, got {len(value)}")
    if len(value) and (int(value.min()) < 0 or int(value.max()) >= _N_CLASSES):
        raise ValueError(f"{name}: expected indices in [0, {_N_CLASSES - 1}], got values from "
                         f"{int(value.min())} to {int(value.max())}")
    return value.long().cpu()


@dataclass(frozen=True)
class SpuriousRates:
    """How often one attribute stands in for the other, on a balanced test set (Chapter 6.4).

    For the pair (shape, colour) = ("heart", "red"):

    Attributes:
        colour_for_shape: of the hearts of other colours, the fraction given the colour red.
        colour_baseline: of the objects that are neither hearts nor red, the fraction given red:
            the same mistake where the correlation cannot be the cause.
        shape_for_colour: of the red objects of other shapes, the fraction called hearts.
        shape_baseline: of the objects that are neither red nor hearts, the fraction called hearts.
        counts: the number of images behind each rate, under the same names.
    """

    colour_for_shape: float
    colour_baseline: float
    shape_for_colour: float
    shape_baseline: float
    counts: dict[str, int]


def _rate(hits: torch.Tensor, rows: torch.Tensor) -> float:
    return float(hits[rows].float().mean()) if bool(rows.any()) else float("nan")


def spurious_rates(predicted: torch.Tensor, labels: torch.Tensor, shape: str, colour: str) -> SpuriousRates:
    """Measure how often ``colour`` is predicted for other-coloured ``shape`` objects, and the reverse.

    Explained in Chapter 6.4. Both tensors hold pair-class indices in the order of
    :func:`clip_tutorial.data.class_names` (``colour_index * 8 + shape_index``): ``labels`` the
    truth of each image (``ShapesWorld.labels("pair")``), ``predicted`` the zero-shot answers among
    all 64 pairs. A rate is ``nan`` when the test set has no image of its kind.

    Returns:
        A :class:`SpuriousRates`.

    Raises:
        TypeError: if a tensor is not a 1-D integer tensor.
        ValueError: for lengths that differ, indices outside 0..63, or an unknown shape or colour.
    """
    labels = _check_labels("labels", labels)
    predicted = _check_labels("predicted", predicted, len(labels))
    s = SHAPES.index(check_choice("shape", shape, SHAPES))
    c = list(COLOURS).index(check_choice("colour", colour, tuple(COLOURS)))
    true_c, true_s = labels // len(SHAPES), labels % len(SHAPES)
    said_c, said_s = predicted // len(SHAPES), predicted % len(SHAPES)
    groups = {"colour_for_shape": (true_s == s) & (true_c != c), "shape_for_colour": (true_c == c) & (true_s != s)}
    neither = (true_s != s) & (true_c != c)
    return SpuriousRates(
        colour_for_shape=_rate(said_c == c, groups["colour_for_shape"]),
        colour_baseline=_rate(said_c == c, neither),
        shape_for_colour=_rate(said_s == s, groups["shape_for_colour"]),
        shape_baseline=_rate(said_s == s, neither),
        counts={"colour_for_shape": int(groups["colour_for_shape"].sum()), "colour_baseline": int(neither.sum()),
                "shape_for_colour": int(groups["shape_for_colour"].sum()), "shape_baseline": int(neither.sum())})


def colour_gaps(similarity: torch.Tensor, labels: torch.Tensor, classes: Sequence[tuple[str, str]],
                colour: str) -> dict[str, float]:
    """Per shape, how much images of other colours prefer their own prompt to the ``colour`` one.

    Explained in Chapter 6.4. ``similarity`` (N, C) holds each image's similarity to the prompts
    of ``classes``, C (colour, shape) pairs; ``labels`` the true pair-class index of each image,
    as in :func:`spurious_rates`. For every shape whose own pairs and ``(colour, shape)`` are
    among the classes, the result is the mean, over the images of that shape in a colour other
    than ``colour`` (whose own pair is a class), of ``similarity[own pair] - similarity[(colour,
    shape)]``. A positive gap means the right answer wins; a gap that shrinks for one shape only
    means that shape's images have moved towards ``colour``. Shapes with no such images are left out.

    Raises:
        TypeError, ValueError: for tensors of the wrong kind or shape, unknown names, or classes
            that repeat.
    """
    check_tensor("similarity", similarity, ndim=2, floating=True, what="a floating-point (N, C) tensor")
    labels = _check_labels("labels", labels, len(similarity))
    classes = check_sequence("classes", classes, (tuple, list), nonempty=True, expected="a list of (colour, shape)")
    index = {}
    for i, pair in enumerate(classes):
        if len(pair) != 2:
            raise ValueError(f"classes[{i}]: expected a (colour, shape) pair, got {pair!r}")
        key = (check_choice(f"classes[{i}] colour", pair[0], tuple(COLOURS)),
               check_choice(f"classes[{i}] shape", pair[1], SHAPES))
        if key in index:
            raise ValueError(f"classes: expected each pair once, got {key!r} twice")
        index[key] = i
    if similarity.shape[1] != len(classes):
        raise ValueError(f"similarity: expected one column per class ({len(classes)}), got {similarity.shape[1]}")
    check_choice("colour", colour, tuple(COLOURS))
    names = list(COLOURS)
    own = torch.tensor([index.get((names[y // len(SHAPES)], SHAPES[y % len(SHAPES)]), -1) for y in labels.tolist()],
                       dtype=torch.long)
    similarity = similarity.detach().float().cpu()
    gaps = {}
    for s, shape in enumerate(SHAPES):
        rows = (labels % len(SHAPES) == s) & (labels // len(SHAPES) != names.index(colour)) & (own >= 0)
        if (colour, shape) not in index or not bool(rows.any()):
            continue
        mine = similarity[rows].gather(1, own[rows].unsqueeze(1)).squeeze(1)
        gaps[shape] = float((mine - similarity[rows, index[(colour, shape)]]).mean())
    return gaps


def attribute_confusion(predicted: torch.Tensor, labels: torch.Tensor, kind: str = "colour",
                        where: torch.Tensor | None = None) -> torch.Tensor:
    """Count true against predicted colours (or shapes): a (K, K) int64 table, rows the truth.

    Explained in Chapter 6.4. ``predicted`` and ``labels`` are pair-class indices as in
    :func:`spurious_rates`; ``kind`` is ``"colour"`` (8 x 8, in the order of ``COLOURS``) or
    ``"shape"`` (8 x 8, in the order of ``SHAPES``). ``where``, a boolean mask over the images,
    keeps only some of them (for example the hearts).

    Raises:
        TypeError, ValueError: for tensors of the wrong kind or length, or an unknown ``kind``.
    """
    labels = _check_labels("labels", labels)
    predicted = _check_labels("predicted", predicted, len(labels))
    check_choice("kind", kind, ("colour", "shape"))
    if where is not None:
        check_tensor("where", where, shape=(len(labels),), dtype=torch.bool,
                     what=f"a boolean mask with one entry per image ({len(labels)})")
        labels, predicted = labels[where.cpu()], predicted[where.cpu()]
    k = len(COLOURS) if kind == "colour" else len(SHAPES)
    attribute = (lambda y: y // len(SHAPES)) if kind == "colour" else (lambda y: y % len(SHAPES))
    return torch.bincount(attribute(labels) * k + attribute(predicted), minlength=k * k).view(k, k)


def fit_class_offsets(logits: torch.Tensor, target: torch.Tensor | None = None, iterations: int = 200,
                      tolerance: float = 1e-6) -> torch.Tensor:
    """One offset per class so that the mean softmax over a calibration set equals ``target``.

    Explained in Chapter 6.4. ``logits`` (N, C) are the zero-shot logits of N calibration images
    whose classes are known to be balanced (``target`` uniform, the default) or to follow
    ``target``; their labels are not needed. A model that favours a class gives it more than its
    share of probability there; the offsets ``b`` take the surplus away, and a test image is
    then classified by ``argmax(logits + b)``. They are found by alternating normalisations
    (Sinkhorn's iteration): ``b += log(target) - log(mean_i softmax(logits_i + b))``, until no
    offset moves by more than ``tolerance``. The offsets are shifted to mean zero (adding one
    constant to every class changes nothing).

    Args:
        logits: (N, C) float tensor, e.g. ``logit_scale * image_features @ classifier``.
        target: (C,) class frequencies of the calibration set, positive, summing to 1.
        iterations: the most updates to run, at least 1.
        tolerance: stop when the largest change of an offset is below this.

    Returns:
        A float32 (C,) tensor of offsets.

    Raises:
        TypeError: if ``logits`` or ``target`` is not a float tensor.
        ValueError: for wrong shapes, a ``target`` that is not a distribution, or bad settings.
    """
    check_tensor("logits", logits, ndim=2, floating=True, nonempty=True, what="a floating-point (N, C) tensor")
    logits = logits.detach().double().cpu()
    n_classes = logits.shape[1]
    if target is None:
        target = torch.full((n_classes,), 1.0 / n_classes, dtype=torch.float64)
    else:
        check_tensor("target", target, shape=(n_classes,), floating=True,
                     what=f"a floating-point tensor of {n_classes} class frequencies")
        target = target.detach().double().cpu()
        if bool((target <= 0).any()) or abs(float(target.sum()) - 1) > 1e-6:
            raise ValueError(f"target: expected positive frequencies summing to 1, got sum {float(target.sum()):.6g} "
                             f"and minimum {float(target.min()):.6g}")
    iterations = check_int("iterations", iterations, 1)
    tolerance = check_number("tolerance", tolerance, 0, low_open=True)
    offsets = torch.zeros(n_classes, dtype=torch.float64)
    for _ in range(iterations):
        mean_probability = (logits + offsets).softmax(dim=1).mean(dim=0)
        step = target.log() - mean_probability.log()
        offsets += step
        if float(step.abs().max()) < tolerance:
            break
    return (offsets - offsets.mean()).float()
