"""Zero-shot classification: class names -> prompts -> class embeddings -> predictions.

Explained in Chapter 1.4 (the idea) and Chapter 5.1 (prompt engineering and ensembling).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from clip_tutorial.core.checks import check_positive_int, check_sequence, check_tensor
from clip_tutorial.core.progress import progress_bar
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


def _check_images(images: object) -> torch.Tensor:
    check_tensor("images", images, ndim=4, what="a tensor (N, 3, H, W)")
    if len(images) == 0:
        raise ValueError(f"images: expected a non-empty (N, 3, H, W) tensor, got shape {tuple(images.shape)}")
    return images


@torch.no_grad()
def encode_images(model: CLIP, images: torch.Tensor, batch_size: int = 512, normalize: bool = True,
                  progress: bool = False) -> torch.Tensor:
    """Embed many images in batches, without gradients; returns (N, embed_dim) on the CPU.

    ``images`` are normalised float pixels (``ShapesWorld.tensors()``) or uint8 pixels
    (``ShapesWorld.images``), which are normalised one batch at a time, so that a large collection
    is never held as float32 all at once (four times the memory). ``progress`` shows a ``tqdm``
    bar over the batches (for large collections, Chapter 5.2).
    """
    images = _check_images(images)
    batch_size = check_positive_int("batch_size", batch_size, expected="a positive integer")
    device, was_training = _device_of(model), model.training
    model.eval()
    starts = progress_bar(range(0, images.shape[0], batch_size), enabled=progress, desc="embedding images")
    prepare = normalize_images if images.dtype == torch.uint8 else (lambda batch: batch)
    out = [model.encode_image(prepare(images[i: i + batch_size]).to(device), normalize=normalize).float().cpu()
           for i in starts]
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model: CLIP, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 512,
                 normalize: bool = True) -> torch.Tensor:
    """Tokenize and embed texts in batches, without gradients; returns (N, embed_dim) on the CPU."""
    texts = check_sequence("texts", [texts] if isinstance(texts, str) else texts, nonempty=True,
                           expected="a str or a list of str")
    batch_size = check_positive_int("batch_size", batch_size, expected="a positive integer")
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
    classnames = check_sequence("classnames", classnames, nonempty=True, expected="a list of class names")
    templates = check_sequence("templates", templates, str, nonempty=True,
                               expected="a list of templates containing '{}'")
    marker = "\x00"
    for template in templates:
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
        TypeError: if ``features`` is not a floating-point tensor.
        ValueError: if it is not a non-empty (C, T, D) tensor.
    """
    check_tensor("features", features, ndim=3, floating=True, nonempty=True,
                 what="a floating-point (num_classes, num_templates, embed_dim) tensor")
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
        TypeError: if ``classnames`` or ``templates`` is a single str rather than a list, or a template is
            not a str.
    """
    prompts = _fill_templates(templates, classnames)
    features = encode_texts(model, tokenizer, prompts).view(len(classnames), len(templates), -1)
    return ensemble_prompt_embeddings(features)


def zero_shot_predict(model: CLIP, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Predicted class index of each image: the class embedding closest to the image embedding."""
    image_features = encode_images(model, images)
    dim = image_features.shape[1]
    check_tensor("classifier", classifier, shape=(dim, None), what=f"a tensor (embed_dim={dim}, num_classes)")
    return (image_features @ classifier.float().cpu()).argmax(dim=1)


def zero_shot_accuracy(model: CLIP, images: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor) -> float:
    """Fraction of images whose :func:`zero_shot_predict` equals ``labels``."""
    check_tensor("labels", labels, shape=(len(images),), what=f"a 1-D tensor with one label per image ({len(images)})")
    predictions = zero_shot_predict(model, images, classifier)
    return float((predictions == labels.cpu()).float().mean())
