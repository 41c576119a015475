"""Typographic attacks: write a wrong colour name on an image and see whether the prediction follows it.

Explained in Chapter 6.5 ("Typographic attacks"). Goh et al. (2021) fooled CLIP with a paper label:
an apple with "iPod" written on it was classified as an iPod. The tiny version writes a wrong
colour name (a word every ShapesWorld tokenizer knows) on test images with
:func:`clip_tutorial.data.overlay.write_word`, classifies them zero-shot among the colour-shape
classes, and counts how often the predicted colour becomes the written word.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from clip_tutorial.core.checks import check_int, check_sequence, check_tensor
from clip_tutorial.data import COLOURS, SHAPES, class_names, normalize_images
from clip_tutorial.data.overlay import write_word
from clip_tutorial.evaluation.zeroshot import DEFAULT_TEMPLATES, build_zero_shot_classifier, encode_images
from clip_tutorial.model import CLIP

__all__ = ["AttackResult", "wrong_colour_words", "typographic_attack", "attack_grid"]

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


@dataclass
class AttackResult:
    """What a typographic attack did to one model's zero-shot predictions.

    Attributes:
        words: the word written on each image.
        labels: true class (colour-shape pair index, as ``ShapesWorld.labels("pair")``) of each image.
        clean: predicted class of each clean image.
        attacked: predicted class of each image with its word written on it.
    """

    words: list[str]
    labels: torch.Tensor
    clean: torch.Tensor
    attacked: torch.Tensor

    @property
    def clean_accuracy(self) -> float:
        """Zero-shot accuracy on the clean images."""
        return (self.clean == self.labels).float().mean().item()

    @property
    def attacked_accuracy(self) -> float:
        """Zero-shot accuracy on the images with words written on them."""
        return (self.attacked == self.labels).float().mean().item()

    @property
    def flipped(self) -> torch.Tensor:
        """Boolean per image: correct when clean, and the written colour once attacked."""
        written = torch.tensor([list(COLOURS).index(w) if w in COLOURS else -1 for w in self.words])
        return (self.clean == self.labels) & (self.attacked // len(SHAPES) == written)

    @property
    def success_rate(self) -> float:
        """Attack success rate: the share of correctly classified clean images whose predicted
        colour becomes the written word."""
        correct = (self.clean == self.labels).sum().item()
        return self.flipped.sum().item() / correct if correct else float("nan")


def wrong_colour_words(colour_labels: torch.Tensor, seed: int = 0, exclude: Sequence[str] = ()) -> list[str]:
    """For each image, a colour name other than its own, drawn uniformly and deterministically.

    Explained in Chapter 6.5. ``colour_labels`` are indices into ``COLOURS``
    (``ShapesWorld.labels("colour")``). Names in ``exclude`` are never drawn: the page excludes
    ``"black"``, the colour of the ink, so that a prediction of the written word cannot come from
    the letters' colour instead of their meaning.
    """
    check_tensor("colour_labels", colour_labels, ndim=1, what="a 1-D tensor of colour indices")
    names = list(COLOURS)
    if len(colour_labels) and not (0 <= int(colour_labels.min()) and int(colour_labels.max()) < len(names)):
        raise ValueError(f"colour_labels: expected indices in [0, {len(names) - 1}], got "
                         f"{int(colour_labels.min())}..{int(colour_labels.max())}")
    exclude = set(check_sequence("exclude", exclude, str, expected="a list of colour names"))
    if not exclude <= set(names) or len(exclude) > len(names) - 2:
        raise ValueError(f"exclude: expected at most {len(names) - 2} names from {names}, got {sorted(exclude)}")
    rng = random.Random(f"typographic/{check_int('seed', seed, 0)}")
    return [rng.choice([n for n in names if n != names[c] and n not in exclude]) for c in colour_labels.tolist()]


def _write_each(images: torch.Tensor, words: Sequence[str], size: float,
                position: str | tuple[float, float]) -> torch.Tensor:
    out = images.clone()
    for word in sorted(set(words)):
        rows = torch.tensor([w == word for w in words])
        out[rows] = write_word(images[rows], word, size, position)
    return out


@torch.no_grad()
def typographic_attack(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor, labels: torch.Tensor,
                       words: Sequence[str], size: float = 0.2, position: str | tuple[float, float] = "bottom",
                       templates: Sequence[str] = DEFAULT_TEMPLATES,
                       defence: Callable[[torch.Tensor], torch.Tensor] | None = None) -> AttackResult:
    """Write ``words[i]`` on image ``i`` and compare zero-shot predictions before and after.

    Explained in Chapter 6.5. The classes are all colour-shape pairs, with prompts from
    ``templates``; ``defence``, if given, maps uint8 images to uint8 images and is applied to the
    clean and the attacked images alike (so its cost on clean accuracy is measured too).

    Args:
        model, tokenizer: the CLIP to attack and its tokenizer.
        images: uint8 images ``(N, 3, H, W)`` (``ShapesWorld.images``).
        labels: their pair labels (``ShapesWorld.labels("pair")``).
        words: one word per image, e.g. from :func:`wrong_colour_words`.
        size, position: as :func:`clip_tutorial.data.overlay.write_word`.
        templates: prompt templates, one or several (prompt ensembling).
        defence: optional uint8 -> uint8 image transform.
    """
    check_tensor("images", images, ndim=4, dtype=torch.uint8, what="uint8 images (N, 3, H, W)")
    check_tensor("labels", labels, shape=(len(images),), what=f"one pair label per image ({len(images)})")
    words = check_sequence("words", words, str, expected="a list of one word per image")
    if len(words) != len(images):
        raise ValueError(f"words: expected one word per image ({len(images)}), got {len(words)}")
    attacked = _write_each(images, words, size, position)
    classifier = build_zero_shot_classifier(model, tokenizer, class_names(), templates)
    predict = defence if defence is not None else (lambda x: x)

    def classify(x: torch.Tensor) -> torch.Tensor:
        return (encode_images(model, normalize_images(predict(x))) @ classifier).argmax(dim=1)

    return AttackResult(list(words), labels.clone(), classify(images), classify(attacked))


def attack_grid(model: CLIP, tokenizer: Tokenizer, images: torch.Tensor, labels: torch.Tensor,
                words: Sequence[str], sizes: Sequence[float], positions: Sequence[str | tuple[float, float]],
                **options) -> torch.Tensor:
    """Attack success rate for every (size, position): a tensor ``(len(sizes), len(positions))``.

    Explained in Chapter 6.5; ``options`` go to :func:`typographic_attack`.
    """
    sizes = check_sequence("sizes", sizes, nonempty=True, expected="a list of sizes")
    positions = check_sequence("positions", positions, nonempty=True, expected="a list of positions")
    return torch.tensor([[typographic_attack(model, tokenizer, images, labels, words, s, p, **options).success_rate
                          for p in positions] for s in sizes])
