"""Automatic multi-label tagging: one score per tag, one calibrated threshold per tag.

Explained in Chapter 5.5 (e-commerce). A catalogue item carries several true tags at once (a
colour, a shape, a size, a style and a position), so tagging is *multi-label*: every tag is a
yes/no decision of its own. A tag's text embedding averages many prompts that name the tag and
range over the attributes it does not mention ("a red circle", "a red square", ...), the way
prompt ensembling averages templates. An image's score for a tag is its cosine similarity with
that embedding, or, with ``relative=True``, the softmax of the similarities within the tag's
attribute (how much more "red" the image looks than any other colour). A per-tag threshold is
chosen on validation data with :func:`~clip_tutorial.apps.calibration.calibrate_threshold`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clip_tutorial.core.checks import check_choice, check_number, check_tensor
from clip_tutorial.data.matching import ATTRIBUTE_VALUES, QueryAttributes, relevance
from clip_tutorial.data.render import COLOURS, SHAPES, STYLES, ShapeSpec
from clip_tutorial.data.shapesworld import STYLE_WORDS, WHERE_PHRASES
from clip_tutorial.model import CLIP
from clip_tutorial.evaluation.zeroshot import build_zero_shot_classifier
from .calibration import CalibratedThreshold, calibrate_threshold, f1_score, precision_recall_at, roc_auc

__all__ = ["TAG_ATTRIBUTES", "Tag", "catalogue_tags", "tag_templates", "build_tag_embeddings", "tag_labels",
           "tag_scores", "calibrate_tags", "predict_tags", "TagMetrics", "tag_metrics"]

#: The attributes of a ShapesWorld object that become tags, in table order.
TAG_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "style", "position")


Tokenizer = Callable[[Sequence[str]], torch.Tensor]


@dataclass(frozen=True)
class Tag:
    """One tag: an attribute of an object and the value it must have, e.g. ``Tag("colour", "red")``.

    Attributes:
        attribute: one of :data:`TAG_ATTRIBUTES`.
        value: a value of that attribute, e.g. ``"red"``, ``"star"``, ``"small"``, ``"outline"``, ``"top left"``.

    Raises:
        ValueError: for an unknown attribute or value.
        TypeError: if either is not a string.

    Explained in Chapter 5.5.
    """

    attribute: str
    value: str

    def __post_init__(self) -> None:
        check_choice("attribute", self.attribute, TAG_ATTRIBUTES)
        check_choice(f"value of {self.attribute}", self.value, ATTRIBUTE_VALUES[self.attribute])

    @property
    def word(self) -> str:
        """How prompts name the value: the style ``"outline"`` is ``"hollow"``, a position is a phrase."""
        if self.attribute == "style":
            return STYLE_WORDS[self.value][0]
        return WHERE_PHRASES[self.value] if self.attribute == "position" else self.value

    def __str__(self) -> str:
        return f"{self.attribute}={self.value}"


def catalogue_tags(attributes: Sequence[str] = TAG_ATTRIBUTES,
                   styles: Sequence[str] = ("filled", "outline")) -> list[Tag]:
    """Every tag of the given attributes, attribute by attribute in the order of the constants.

    Args:
        attributes: which of :data:`TAG_ATTRIBUTES` to tag.
        styles: the style values to include (the shipped models never saw ``"striped"``).

    Returns:
        The tags, e.g. 8 colours + 8 shapes + 2 sizes + 2 styles + 9 positions = 29 by default.

    Raises:
        ValueError: for an unknown attribute or style, or an empty selection.
        TypeError: if ``attributes`` or ``styles`` is a single string.

    Explained in Chapter 5.5.
    """
    for name, given in (("attributes", attributes), ("styles", styles)):
        if isinstance(given, str) or not isinstance(given, Sequence):
            raise TypeError(f"{name}: expected a list of names, got {type(given).__name__} {given!r}")
        if len(given) == 0:
            raise ValueError(f"{name}: expected at least one name, got an empty list")
    chosen = {check_choice("attributes", a, TAG_ATTRIBUTES) for a in attributes}
    kept_styles = {check_choice("styles", s, STYLES) for s in styles}
    return [Tag(a, v) for a in TAG_ATTRIBUTES if a in chosen for v in ATTRIBUTE_VALUES[a]
            if a != "style" or v in kept_styles]


def tag_templates(attribute: str) -> list[str]:
    """Prompt templates that name one value of ``attribute`` (the ``{}``) and vary the others.

    A colour is prompted with every shape (``"a {} circle"``, ``"a {} square"``, ...), a shape with
    every colour, and a size, style or position with every colour-shape pair, so that a tag's
    averaged embedding is about the tag and not about one particular object. Prompts stay within
    ShapesWorld's vocabulary and within ten words.

    Raises:
        ValueError: for an unknown attribute.

    Explained in Chapter 5.5.
    """
    check_choice("attribute", attribute, TAG_ATTRIBUTES)
    colours, shapes = tuple(COLOURS), SHAPES
    if attribute == "colour":
        return [f"a {{}} {shape}" for shape in shapes]
    if attribute == "shape":
        return [f"a {colour} {{}}" for colour in colours]
    if attribute == "position":
        return [f"a {colour} {shape} {{}}" for colour in colours for shape in shapes]
    return [f"a {{}} {colour} {shape}" for colour in colours for shape in shapes]


def _check_tags(tags: object) -> list[Tag]:
    if isinstance(tags, Tag) or not isinstance(tags, Sequence) or len(tags) == 0:
        raise ValueError(f"tags: expected a non-empty list of Tag, got {tags!r}")
    wrong = [t for t in tags if not isinstance(t, Tag)]
    if wrong:
        raise TypeError(f"tags: expected Tag objects (see catalogue_tags), got {wrong[:3]!r}")
    if len(set(tags)) != len(tags):
        raise ValueError(f"tags: expected distinct tags, got repeats in {[str(t) for t in tags]}")
    return list(tags)


def build_tag_embeddings(model: CLIP, tokenizer: Tokenizer, tags: Sequence[Tag]) -> torch.Tensor:
    """Tag embeddings (embed_dim, num_tags): each tag's prompts from :func:`tag_templates`, ensembled.

    Each column is what :func:`~clip_tutorial.evaluation.zeroshot.build_zero_shot_classifier` gives for the
    tag's word with its attribute's templates: the prompts' normalised embeddings, averaged and
    normalised again.

    Raises:
        ValueError: if ``tags`` is empty or repeats a tag.
        TypeError: if an entry is not a :class:`Tag`.

    Explained in Chapter 5.5.
    """
    tags = _check_tags(tags)
    columns: dict[Tag, torch.Tensor] = {}
    for attribute in TAG_ATTRIBUTES:
        group = [t for t in tags if t.attribute == attribute]
        if group:
            weights = build_zero_shot_classifier(model, tokenizer, [t.word for t in group], tag_templates(attribute))
            columns.update(zip(group, weights.t()))
    return torch.stack([columns[t] for t in tags], dim=1)


def tag_labels(attributes: Sequence[Sequence[ShapeSpec]], tags: Sequence[Tag]) -> torch.Tensor:
    """Ground truth (N, num_tags) bool: whether some object of item ``i`` has tag ``j``.

    Computed by :func:`~clip_tutorial.data.matching.relevance`, with each tag as a query that
    names one attribute.

    Args:
        attributes: per item, its objects, e.g. ``ShapesWorld(...).attributes``.
        tags: the tags, e.g. from :func:`catalogue_tags`.

    Raises:
        ValueError: if ``attributes`` is empty or an item has no object.
        TypeError: if an object is not a :class:`~clip_tutorial.data.render.ShapeSpec`.

    Explained in Chapter 5.5.
    """
    tags = _check_tags(tags)
    # a tag is a query that names one attribute: the item has it when one of its objects matches
    return relevance([QueryAttributes(**{t.attribute: t.value}) for t in tags], attributes).T.contiguous()


def tag_scores(image_features: torch.Tensor, tag_embeddings: torch.Tensor, tags: Sequence[Tag] | None = None,
               relative: bool = False, logit_scale: float = 100.0) -> torch.Tensor:
    """Score every image for every tag, (N, num_tags) float32.

    Args:
        image_features: (N, embed_dim) L2-normalised image embeddings.
        tag_embeddings: (embed_dim, num_tags) from :func:`build_tag_embeddings`.
        tags: the tags of the columns; needed only with ``relative``.
        relative: ``False`` gives the cosine similarities. ``True`` gives, within each attribute,
            the softmax of ``logit_scale`` times the similarities over that attribute's tags, so a
            tag scores high only when it beats the other values of its attribute.
        logit_scale: the softmax temperature's inverse, e.g. ``model.logit_scale.exp().item()``.

    Raises:
        ValueError: on shape mismatches, a missing ``tags`` with ``relative``, or a
            ``logit_scale`` that is not positive and finite.
        TypeError: if the features or embeddings are not float tensors, or ``logit_scale`` is not a number.

    Explained in Chapter 5.5.
    """
    for name, value in (("image_features", image_features), ("tag_embeddings", tag_embeddings)):
        check_tensor(name, value, ndim=2, floating=True, what="a 2-D float tensor")
    if image_features.shape[1] != tag_embeddings.shape[0]:
        raise ValueError(f"tag_embeddings: expected shape (embed_dim={image_features.shape[1]}, num_tags), "
                         f"got {tuple(tag_embeddings.shape)}")
    scores = image_features.float().cpu() @ tag_embeddings.float().cpu()
    if not relative:
        return scores
    if tags is None:
        raise ValueError("tags: expected the list of tags of the columns when relative=True, got None")
    tags = _check_tags(tags)
    if len(tags) != scores.shape[1]:
        raise ValueError(f"tags: expected one tag per column ({scores.shape[1]}), got {len(tags)}")
    logit_scale = check_number("logit_scale", logit_scale, 0, low_open=True)
    out = torch.empty_like(scores)
    for attribute in TAG_ATTRIBUTES:
        columns = [j for j, t in enumerate(tags) if t.attribute == attribute]
        if columns:
            out[:, columns] = (logit_scale * scores[:, columns]).softmax(dim=1)
    return out


def _check_scores(scores: object) -> torch.Tensor:
    return check_tensor("scores", scores, ndim=2, what="a (N, num_tags) tensor")


def _check_pair(scores: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    scores = _check_scores(scores)
    shape = tuple(scores.shape)
    check_tensor("labels", labels, shape=shape, what=f"a tensor of the scores' shape {shape}")
    return scores, labels.bool()


def calibrate_tags(val_scores: torch.Tensor, val_labels: torch.Tensor, target: float | None = None,
                   criterion: str = "f1") -> list[CalibratedThreshold]:
    """One threshold per tag (column), chosen on validation data by ``calibrate_threshold``.

    Args:
        val_scores: (N, num_tags) scores from :func:`tag_scores`.
        val_labels: (N, num_tags) ground truth from :func:`tag_labels`; every tag needs a positive.
        target: the precision or recall to reach (``None`` with ``"f1"``).
        criterion: ``"f1"``, ``"precision"`` or ``"recall"``, as in
            :func:`~clip_tutorial.apps.calibration.calibrate_threshold`.

    Returns:
        One :class:`~clip_tutorial.apps.calibration.CalibratedThreshold` per column.

    Raises:
        TypeError: if the scores or labels are not tensors.
        ValueError: on mismatched shapes, or as ``calibrate_threshold`` (e.g. a tag with no positive).

    Explained in Chapter 5.5.
    """
    scores, labels = _check_pair(val_scores, val_labels)
    return [calibrate_threshold(scores[:, j], labels[:, j], target=target, criterion=criterion)
            for j in range(scores.shape[1])]


def _thresholds(thresholds: Sequence[CalibratedThreshold | float], count: int) -> torch.Tensor:
    if isinstance(thresholds, torch.Tensor):
        thresholds = thresholds.tolist()
    if not isinstance(thresholds, Sequence) or len(thresholds) != count:
        raise ValueError(f"thresholds: expected one threshold per tag ({count}), got {thresholds!r}")
    values = [t.threshold if isinstance(t, CalibratedThreshold) else t for t in thresholds]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise TypeError(f"thresholds: expected numbers or CalibratedThreshold objects, got {values[:3]!r}")
    return torch.tensor(values, dtype=torch.float64)


def predict_tags(scores: torch.Tensor, thresholds: Sequence[CalibratedThreshold | float]) -> torch.Tensor:
    """The tags given to each item, (N, num_tags) bool: ``scores[:, j] >= thresholds[j]``.

    Raises:
        ValueError: if ``scores`` is not 2-D or the number of thresholds differs from its columns.
        TypeError: if ``scores`` is not a tensor, or a threshold is neither a number nor a ``CalibratedThreshold``.

    Explained in Chapter 5.5.
    """
    scores = _check_scores(scores)
    return scores.double() >= _thresholds(thresholds, scores.shape[1])


@dataclass(frozen=True)
class TagMetrics:
    """How well one tag is assigned on a split.

    Attributes:
        tag: the tag.
        precision: of the items given the tag, the fraction that have it (``1.0`` if none is given).
        recall: of the items that have the tag, the fraction given it.
        auc: ROC AUC of the tag's scores (threshold-free; ``nan`` without both classes).
        support: how many items have the tag.
    """

    tag: Tag
    precision: float
    recall: float
    auc: float
    support: int

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (:func:`~clip_tutorial.apps.calibration.f1_score`)."""
        return f1_score(self.precision, self.recall)


def tag_metrics(scores: torch.Tensor, labels: torch.Tensor, tags: Sequence[Tag],
                thresholds: Sequence[CalibratedThreshold | float]) -> list[TagMetrics]:
    """Per-tag precision, recall, AUC and support of ``scores >= thresholds`` against ``labels``.

    Args:
        scores: (N, num_tags) scores on the evaluation split.
        labels: (N, num_tags) ground truth; every tag needs at least one positive.
        tags: the tags of the columns.
        thresholds: one threshold (or ``CalibratedThreshold``) per tag, usually from validation.

    Raises:
        TypeError: if the scores or labels are not tensors.
        ValueError: on mismatched shapes or counts, or a tag without a positive.

    Explained in Chapter 5.5.
    """
    scores, labels = _check_pair(scores, labels)
    tags = _check_tags(tags)
    if len(tags) != scores.shape[1]:
        raise ValueError(f"tags: expected one tag per column ({scores.shape[1]}), got {len(tags)}")
    cut = _thresholds(thresholds, scores.shape[1]).tolist()
    rows = []
    for j, tag in enumerate(tags):
        column, truth = scores[:, j].double(), labels[:, j]
        precision, recall = precision_recall_at(column, truth, float(cut[j]))
        auc = roc_auc(column, truth) if not bool(truth.all()) else float(np.nan)
        rows.append(TagMetrics(tag, precision, recall, auc, int(truth.sum())))
    return rows
