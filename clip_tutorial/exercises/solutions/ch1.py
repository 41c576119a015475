"""Solutions of the exercises of Chapter 1, one function per exercise, named after it.

Read one with ``clip_tutorial.exercises.show_solution("ch1.<name>")``. Explained in Chapter 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["cosine_similarity", "temperature_scaled_logits", "contrastive_loss", "untrained_loss",
           "zero_shot_predict", "shuffled_class_names"]


def cosine_similarity(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Exercise 1. Normalise every row to length one; then dot products are cosines.

    One matrix product compares every image (row of the first matrix) with every text (row of
    the second), so the second is transposed.
    """
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return image_features @ text_features.T


def temperature_scaled_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                              logit_scale: torch.Tensor) -> torch.Tensor:
    """Exercise 2. Exponentiate the stored logarithm, then scale the cosine similarities by it.

    This is OpenAI's forward pass: ``logit_scale.exp()`` with no clamp. The limit of 100 is
    enforced during training, by clipping the parameter itself, not here.
    """
    scale = logit_scale.exp()
    cosines = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    return scale * cosines


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Exercise 3. Row i's right answer is column i, and column i's is row i.

    The cross-entropy of the rows (each image picks its text) and of the columns (each text
    picks its image, the transposed matrix), averaged.
    """
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    loss_images = F.cross_entropy(logits_per_image, labels)
    loss_texts = F.cross_entropy(logits_per_image.T, labels)
    return (loss_images + loss_texts) / 2


def untrained_loss() -> float:
    """Exercise 4. The loss of an untrained CLIP on a batch of 64 pairs: about ln 64 nats.

    Before training, the features point in random directions, so no caption is more similar to
    its own image than the others are: each row (and each column) of the logit matrix is roughly
    uniform. The cross-entropy of a uniform guess among N candidates is -ln(1/N) = ln N, in both
    directions, so their average is ln N too. With N = 64 that is about 4.16 nats. (The measured
    value is a little higher, because random logits are not exactly equal; see the check's
    explanation.)
    """
    batch = 64
    return math.log(batch)


def zero_shot_predict(image_features: torch.Tensor, class_text_features: torch.Tensor) -> torch.Tensor:
    """Exercise 5. Cosine similarity of every image with every class, then the best class per row."""
    similarity = F.normalize(image_features, dim=-1) @ F.normalize(class_text_features, dim=-1).T
    return similarity.argmax(dim=-1)


def shuffled_class_names() -> str:
    """Exercise 6. The diagnosis: (c), the class names are not in the order of the labels.

    Three clues point there. The 16 held-out combinations are a quarter of the 64, so even if
    the model got every one of them wrong, (a) would leave about three quarters of the images
    right. A worse template (b) would lower the accuracy, not take it below chance. And the
    accuracy is *below* chance (1/64), which random guessing would not do: the model answers
    consistently, but its answers are compared with the wrong numbers. ``sorted`` reordered the
    names, so column j of the classifier is no longer class j of ``labels("pair")``, whose
    numbers follow ``clip_tutorial.class_names()``.
    """
    return "c"
