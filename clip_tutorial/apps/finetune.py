"""Fine-tuning CLIP's image tower, and WiSE-FT: mixing the zero-shot and fine-tuned weights.

Explained in Chapter 6.2. Following Wortsman et al. (2022), "Robust fine-tuning of zero-shot
models", a CLIP becomes a classifier by putting a linear head on its image tower, and the head
starts as the zero-shot classifier: the normalised text embeddings of the class prompts, times
the logit scale. At that point the classifier predicts exactly what zero-shot CLIP predicts.
:func:`fine_tune` then trains the tower and the head end to end with cross-entropy on labelled
images. Because the zero-shot model and the fine-tuned one have the same architecture, their
weights can be mixed: :func:`interpolate_weights` computes ``(1 - alpha) * a + alpha * b`` key by
key, and :func:`wise_ft` returns the model with those weights (``alpha = 0`` is the zero-shot
model, ``alpha = 1`` the fine-tuned one).
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import check_number, check_positive_int, check_tensor, check_type
from clip_tutorial.core.progress import progress_bar
from clip_tutorial.evaluation.zeroshot import DEFAULT_TEMPLATES, Tokenizer, build_zero_shot_classifier
from clip_tutorial.model import CLIP
from clip_tutorial.train.config import TrainConfig, lr_at, param_groups

__all__ = ["CLIPClassifier", "fine_tune", "interpolate_weights", "wise_ft"]

StateDict = Mapping[str, torch.Tensor]


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


def _state(name: str, value: object) -> StateDict:
    if isinstance(value, nn.Module):
        return value.state_dict()
    if isinstance(value, Mapping) and all(isinstance(t, torch.Tensor) for t in value.values()):
        return value
    raise TypeError(f"{name}: expected an nn.Module or a state dict (a mapping of names to tensors), "
                    f"got {type(value).__name__}")


def interpolate_weights(a: nn.Module | StateDict, b: nn.Module | StateDict, alpha: float) -> dict[str, torch.Tensor]:
    """The weights ``(1 - alpha) * a + alpha * b`` of two models with the same architecture.

    Explained in Chapter 6.2: WiSE-FT's weight-space ensemble, with ``a`` the zero-shot model
    and ``b`` the fine-tuned one. Every floating-point tensor is mixed with :func:`torch.lerp`,
    which returns ``a`` exactly at ``alpha = 0`` and ``b`` exactly at ``alpha = 1``. Integer and
    boolean tensors (counters such as batch norm's ``num_batches_tracked``, index buffers) have no
    meaningful mixture: they are copied from the nearer end, ``a`` for ``alpha < 0.5`` and ``b``
    otherwise. Extrapolation (``alpha`` outside [0, 1]) is refused.

    Args:
        a: a model or its state dict (``alpha = 0``).
        b: a model or state dict with exactly the same keys, shapes and dtypes (``alpha = 1``).
        alpha: the mixing coefficient in [0, 1].

    Returns:
        A new state dict (fresh tensors, in the key order of ``a``), ready for ``load_state_dict``.

    Raises:
        TypeError: if ``a`` or ``b`` is neither a module nor a state dict, or ``alpha`` not a number.
        ValueError: if ``alpha`` is outside [0, 1], or the keys, shapes or dtypes differ (the
            message names the first key that does not match).
    """
    first, second = _state("a", a), _state("b", b)
    alpha = check_number("alpha", alpha, 0.0, 1.0)
    missing = [key for key in first if key not in second]
    extra = [key for key in second if key not in first]
    if missing or extra:
        where, key = ("b", missing[0]) if missing else ("a", extra[0])
        raise ValueError(f"b: expected the same keys as a (the same architecture), but {key!r} is not in "
                         f"{where} ({len(missing)} keys of a missing from b, {len(extra)} keys of b not in a)")
    mixed: dict[str, torch.Tensor] = OrderedDict()
    for key, x in first.items():
        y = second[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            raise ValueError(f"b: expected the same shapes and dtypes as a; at key {key!r} a has shape "
                             f"{tuple(x.shape)} and dtype {x.dtype}, b has shape {tuple(y.shape)} and dtype {y.dtype}")
        if x.is_floating_point() or x.is_complex():
            mixed[key] = torch.lerp(x.detach(), y.detach().to(x.device), alpha)
        else:
            mixed[key] = (x if alpha < 0.5 else y).detach().clone()
    return mixed


def wise_ft(zero_shot: nn.Module, fine_tuned: nn.Module, alpha: float) -> nn.Module:
    """WiSE-FT: a copy of ``zero_shot`` carrying the weights ``(1 - alpha) * zero_shot + alpha * fine_tuned``.

    Explained in Chapter 6.2. Neither input is changed; the result is in eval mode.

    Raises:
        TypeError: if the two are not modules of the same class, or ``alpha`` is not a number.
        ValueError: as :func:`interpolate_weights`.
    """
    check_type("zero_shot", zero_shot, nn.Module)
    if type(fine_tuned) is not type(zero_shot):
        raise TypeError(f"fine_tuned: expected a {type(zero_shot).__name__}, like zero_shot, "
                        f"got {type(fine_tuned).__name__}")
    weights = interpolate_weights(zero_shot, fine_tuned, alpha)
    model = copy.deepcopy(zero_shot)
    model.load_state_dict(weights)
    return model.eval()
