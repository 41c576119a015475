"""CLIP's image tower as a classifier, and the cross-entropy loop that trains it.

Explained in Chapter 6.2 (fine-tuning a zero-shot CLIP, WiSE-FT), Chapter 6.3 (a supervised ViT with CLIP's
image tower, trained from scratch on labels) and Chapter 7.4 (that supervised tower, locked, under a text
tower: LiT). A :class:`CLIPClassifier` puts a linear head on the normalised features of an image tower;
:meth:`CLIPClassifier.from_zero_shot` starts the head from CLIP's zero-shot classifier and
:meth:`CLIPClassifier.supervised` from random rows; :func:`fine_tune` trains tower and head end to end.
It lives in the training layer because :func:`~clip_tutorial.train.recipes.train_recipe` uses it to
pre-train the supervised image tower of a LiT recipe.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import check_number, check_positive_int, check_tensor, check_type
from clip_tutorial.core.progress import progress_bar
from clip_tutorial.evaluation.zeroshot import DEFAULT_TEMPLATES, Tokenizer, build_zero_shot_classifier
from clip_tutorial.model import CLIP
from .config import TrainConfig, lr_at, param_groups

__all__ = ["CLIPClassifier", "fine_tune"]


class CLIPClassifier(nn.Module):
    """CLIP's image tower with a linear classification head on its normalised features.

    Explained in Chapter 6.2. The logits are ``head(normalize(visual(images)))``. Built by
    :meth:`from_zero_shot`, the head's weight is the zero-shot classifier times CLIP's logit scale
    and its bias is zero, so the logits are exactly zero-shot CLIP's scaled cosine similarities.

    Args:
        visual: an image tower mapping normalised pixels (N, 3, H, W) to features (N, D).
        head: the linear layer (D -> number of classes).
        image_size: the side of the square images the tower expects.
    """

    def __init__(self, visual: nn.Module, head: nn.Linear, image_size: int) -> None:
        super().__init__()
        self.visual = check_type("visual", visual, nn.Module)
        self.head = check_type("head", head, nn.Linear)
        self.image_size = check_positive_int("image_size", image_size)

    @classmethod
    def from_zero_shot(cls, model: CLIP, tokenizer: Tokenizer, classnames: Sequence[str],
                       templates: Sequence[str] = DEFAULT_TEMPLATES) -> CLIPClassifier:
        """The zero-shot classifier of ``model`` as a :class:`CLIPClassifier` (a copy: ``model`` is untouched).

        Explained in Chapter 6.2. The head's weight (C, D) is ``logit_scale * build_zero_shot_classifier(...).T``, with
        the class prompts made from ``templates``; its bias is zero.
        """
        check_type("model", model, CLIP)
        classifier = build_zero_shot_classifier(model, tokenizer, classnames, templates)  # (D, C)
        head = nn.Linear(*classifier.shape)
        with torch.no_grad():
            head.weight.copy_(model.logit_scale_value().detach().cpu() * classifier.t())
            head.bias.zero_()
        visual = copy.deepcopy(model.visual).cpu()
        device = next(model.parameters()).device
        return cls(visual, head, model.config.image_resolution).to(device).eval()

    @classmethod
    def supervised(cls, model: CLIP, num_classes: int) -> CLIPClassifier:
        """A fresh linear head on ``model``'s own image tower (shared, not copied), to train on labels.

        Explained in Chapter 6.3 (the supervised ViT) and Chapter 7.4 (LiT's supervised tower). The
        head's rows are random with a length of about ``model``'s logit scale and its bias is zero, so
        its logits start as large as CLIP's scaled similarities do. Training the classifier trains
        ``model.visual`` in place. The head is drawn from the global random state (seed it first).

        Raises:
            TypeError: if ``model`` is not a CLIP or ``num_classes`` not an int.
            ValueError: if ``num_classes`` is below 1.
        """
        check_type("model", model, CLIP)
        num_classes = check_positive_int("num_classes", num_classes)
        dim = model.config.embed_dim
        head = nn.Linear(dim, num_classes)
        with torch.no_grad():
            nn.init.normal_(head.weight, std=model.logit_scale_value().item() / dim ** 0.5)
            nn.init.zeros_(head.bias)
        device = next(model.parameters()).device
        return cls(model.visual, head.to(device), model.config.image_resolution)

    @property
    def num_classes(self) -> int:
        """The number of classes, the head's outputs."""
        return self.head.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) of normalised float images (N, 3, image_size, image_size)."""
        _check_images(images, self.image_size)
        return self.head(F.normalize(self.visual(images), dim=-1))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted class of each image, a LongTensor on the CPU (eval mode, in batches)."""
        _check_images(images, self.image_size)
        batch_size = check_positive_int("batch_size", batch_size)
        device, was_training = next(self.parameters()).device, self.training
        self.eval()
        out = [self(images[i: i + batch_size].to(device)).argmax(dim=1).cpu()
               for i in range(0, len(images), batch_size)]
        self.train(was_training)
        return torch.cat(out)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of images whose :meth:`predict` equals ``labels``."""
        _check_labels(labels, len(images), self.num_classes)
        return float((self.predict(images) == labels.cpu()).float().mean())


def _check_images(images: object, image_size: int) -> None:
    check_tensor("images", images, shape=(None, 3, image_size, image_size), floating=True, nonempty=True,
                 what=f"normalised float pixels (N, 3, {image_size}, {image_size}), e.g. ShapesWorld.tensors()")


def _check_labels(labels: object, n: int, num_classes: int) -> None:
    check_tensor("labels", labels, shape=(n,), dtype=torch.long,
                 what=f"a LongTensor of class indices with one label per image ({n})")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels: expected class indices in [0, {num_classes - 1}], got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")


def fine_tune(classifier: CLIPClassifier, images: torch.Tensor, labels: torch.Tensor, steps: int = 200,
              batch_size: int = 128, lr: float = 1e-4, weight_decay: float = 0.1, seed: int = 0,
              device: torch.device | str | None = None, progress: bool = True) -> list[float]:
    """Fine-tune ``classifier`` end to end (tower and head) with cross-entropy; returns every step's loss.

    Explained in Chapter 6.2. The recipe is WiSE-FT's, shrunk: AdamW (no decay on gains and
    biases, :func:`~clip_tutorial.train.param_groups`), a warm-up over a tenth of the steps then
    cosine decay (:func:`~clip_tutorial.train.lr_at`), and a small learning rate, so that the
    weights stay near the zero-shot ones they start from. Batches are drawn without replacement
    in an order fixed by ``seed``. ``classifier`` is changed in place and left in eval mode.

    Raises:
        TypeError: if ``classifier`` is not a :class:`CLIPClassifier`, or images or labels have the
            wrong type.
        ValueError: on mismatched sizes, labels out of range, ``batch_size`` above the number of
            images, or a non-positive ``steps``, ``batch_size`` or ``lr``.
    """
    check_type("classifier", classifier, CLIPClassifier, "a CLIPClassifier (see CLIPClassifier.from_zero_shot)")
    _check_images(images, classifier.image_size)
    _check_labels(labels, len(images), classifier.num_classes)
    steps, batch_size = check_positive_int("steps", steps), check_positive_int("batch_size", batch_size)
    if batch_size > len(images):
        raise ValueError(f"batch_size: expected at most the number of images ({len(images)}), got {batch_size}")
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=check_number("lr", lr, 0, low_open=True),
                         warmup_steps=steps // 10, weight_decay=weight_decay, seed=seed)
    device = torch.device(device) if device is not None else next(classifier.parameters()).device
    classifier.to(device).train()
    optimizer = torch.optim.AdamW(param_groups(classifier, weight_decay), lr=lr)
    order = torch.cat([torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + epoch))
                       for epoch in range(math.ceil(steps * batch_size / len(images)))])
    losses: list[float] = []
    bar = progress_bar(range(steps), enabled=progress, desc="fine-tuning", mininterval=0.5)
    for step in bar:
        index = order[step * batch_size: (step + 1) * batch_size]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        loss = F.cross_entropy(classifier(images[index].to(device)), labels[index].to(device))
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"the loss became {loss.item()} at step {step + 1}; try a lower lr (lr={lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    classifier.eval()
    return losses
