"""Zero-shot classification: class names -> prompts -> class embeddings -> predictions.

Explained in Chapter 1.4 (the idea) and Chapter 5.1 (prompt engineering and ensembling).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from clip_tutorial.data import normalize_images
from clip_tutorial.model import CLIP

__all__ = [
    "DEFAULT_TEMPLATES", "ENSEMBLE_TEMPLATES", "encode_images", "encode_texts", "ensemble_prompt_embeddings",
    "build_zero_shot_classifier", "zero_shot_predict", "zero_shot_accuracy",
]

#: The book's zero-shot prompt; ``{}`` is replaced by the class name, e.g. "red circle".
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}",)

#: A small prompt ensemble in ShapesWorld's vocabulary (every word is known to its tokenizer),
#: for :func:`build_zero_shot_classifier`; the counterpart of the 80 templates CLIP used for ImageNet.
ENSEMBLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}", "a picture of a {}", "a drawing of a {}", "there is a {}")

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


def _device_of(model: CLIP) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_images(model: CLIP, images: torch.Tensor, batch_size: int = 512, normalize: bool = True,
                  progress: bool = False) -> torch.Tensor:
    """Embed many images in batches, without gradients; returns (N, embed_dim) on the CPU.

    ``images`` are normalised float pixels (``ShapesWorld.tensors()``) or uint8 pixels
    (``ShapesWorld.images``), which are normalised one batch at a time, so that a large collection
    is never held as float32 all at once (four times the memory). ``progress`` shows a ``tqdm``
    bar over the batches (for large collections, Chapter 5.2).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images: expected a tensor (N, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images: expected a non-empty (N, 3, H, W) tensor, got shape {tuple(images.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    device, was_training = _device_of(model), model.training
    model.eval()
    starts = tqdm(range(0, images.shape[0], batch_size), desc="embedding images", disable=not progress)
    prepare = normalize_images if images.dtype == torch.uint8 else (lambda batch: batch)
    out = [model.encode_image(prepare(images[i: i + batch_size]).to(device), normalize=normalize).float().cpu()
           for i in starts]
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model: CLIP, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 512,
                 normalize: bool = True) -> torch.Tensor:
    """Tokenize and embed texts in batches, without gradients; returns (N, embed_dim) on the CPU."""
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise ValueError("texts: expected at least one text, got an empty list")
    device, was_training = _device_of(model), model.training
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[i: i + batch_size]))
        out.append(model.encode_text(tokens.to(device), normalize=normalize).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def _fill_templates(templates: Sequence[str], classnames: Sequence[str]) -> list[str]:
    """Prompts ordered class by class: ``templates[0]`` to ``templates[-1]`` filled with each class name."""
    if isinstance(classnames, str) or len(classnames) == 0:
        raise ValueError(f"classnames: expected a non-empty list of class names, got {classnames!r}")
    if isinstance(templates, str) or len(templates) == 0:
        raise ValueError(f"templates: expected a non-empty list of templates containing '{{}}', got {templates!r}")
    marker = "\x00"
    for template in templates:
        if not isinstance(template, str):
            raise TypeError(f"templates: expected strings, got {type(template).__name__} ({template!r})")
        try:
            filled = template.format(marker)
        except (IndexError, KeyError, ValueError) as error:
            raise ValueError(f"templates: expected a template with exactly one '{{}}' placeholder (write other "
                             f"braces as '{{{{' and '}}}}'), got {template!r} ({error})") from None
        if marker not in filled:
            raise ValueError(f"templates: expected each template to contain '{{}}' for the class name, "
                             f"got {template!r}")
    return [template.format(name) for name in classnames for template in templates]


def ensemble_prompt_embeddings(features: torch.Tensor) -> torch.Tensor:
    """Prompt ensembling: per-template embeddings (C, T, D) -> unit class embeddings (D, C).

    Explained in Chapter 5.1. Each of the ``T`` prompt embeddings of a class is L2-normalised,
    the ``T`` unit vectors are averaged, and the mean is L2-normalised again. The first
    normalisation gives every template the same say; the second puts the class back on the unit
    sphere, where image embeddings are compared by cosine similarity.

    Raises:
        ValueError: if ``features`` is not a non-empty floating-point (C, T, D) tensor.
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 3 or 0 in features.shape \
            or not features.is_floating_point():
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError("features: expected a non-empty floating-point (num_classes, num_templates, embed_dim) "
                         f"tensor, got {got}")
    return F.normalize(F.normalize(features, dim=-1).mean(dim=1), dim=-1).t().contiguous()


def build_zero_shot_classifier(model: CLIP, tokenizer: Tokenizer, classnames: Sequence[str],
                               templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
    """Class embeddings (embed_dim, num_classes) from prompts, one column per class.

    A template is a string with one ``{}`` placeholder, filled with :meth:`str.format`:
    ``"a photo of a {}"`` becomes ``"a photo of a red circle"`` (a literal brace is written
    ``{{`` or ``}}``). With several templates this is CLIP's *prompt ensembling*: every template
    filled with the class name is embedded, each embedding is L2-normalised, the normalised
    embeddings of one class are averaged over the templates, and the mean is L2-normalised again.
    With one template the column is simply the normalised embedding of its prompt.

    Args:
        model: the CLIP whose text tower embeds the prompts (it is put back in its training mode).
        tokenizer: turns a list of prompts into a (N, context_length) token tensor.
        classnames: the class names, e.g. ``["red circle", "blue square"]``.
        templates: the prompt templates, e.g. :data:`DEFAULT_TEMPLATES` or :data:`ENSEMBLE_TEMPLATES`.

    Returns:
        A float32 CPU tensor of shape (embed_dim, num_classes) whose columns have unit norm;
        ``normalised_image_features @ classifier`` gives cosine similarities.

    Raises:
        ValueError: if there are no class names or no templates, or a template has no ``{}``
            (or a placeholder ``str.format`` cannot fill with one class name).
        TypeError: if a template is not a string.
    """
    prompts = _fill_templates(templates, classnames)
    features = encode_texts(model, tokenizer, prompts).view(len(classnames), len(templates), -1)
    return ensemble_prompt_embeddings(features)


def _check_classifier(image_features: torch.Tensor, classifier: torch.Tensor) -> None:
    if classifier.ndim != 2 or classifier.shape[0] != image_features.shape[1]:
        raise ValueError(
            f"classifier: expected shape (embed_dim={image_features.shape[1]}, num_classes), got {tuple(classifier.shape)}"
        )


def zero_shot_predict(model: CLIP, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Predicted class index of each image: the class embedding closest to the image embedding."""
    image_features = encode_images(model, images)
    _check_classifier(image_features, classifier)
    return (image_features @ classifier.float().cpu()).argmax(dim=1)


def zero_shot_accuracy(model: CLIP, images: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor) -> float:
    """Fraction of images whose :func:`zero_shot_predict` equals ``labels``."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"labels: expected a 1-D tensor with one label per image ({images.shape[0]}), "
            f"got {getattr(labels, 'shape', type(labels).__name__)}"
        )
    predictions = zero_shot_predict(model, images, classifier)
    return float((predictions == labels.cpu()).float().mean())
