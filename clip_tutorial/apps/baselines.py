"""The "traditional" baseline: a small CNN classifier with one output per class of a fixed list.

Explained in Chapter 1.2, where it is trained on the same images as a tiny CLIP and compared with it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import check_positive_int, check_tensor, check_type
from clip_tutorial.model.convnet import conv_pool_stack
from clip_tutorial.train.fit import fit_minibatches

__all__ = ["FixedClassCNN", "train_classifier", "classifier_accuracy"]


class FixedClassCNN(nn.Module):
    """A small convolutional image classifier with one output per class, fixed when it is built.

    Explained in Chapter 1.2. It is a miniature of the ImageNet classifiers that came before
    CLIP: ``stages`` blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling, the width
    doubling from block to block, then global average pooling and one linear layer with exactly
    ``num_classes`` outputs. Whatever the image, it can only answer one of those classes.

    Args:
        num_classes: number of classes, the size of the output layer.
        width: channels of the first block.
        image_size: side of the square input images, a multiple of ``2 ** stages``.
        stages: number of conv blocks.

    Raises:
        TypeError: if an argument is not an int.
        ValueError: if an argument is below 1 or ``image_size`` does not fit ``stages``.
    """

    def __init__(self, num_classes: int, width: int = 16, image_size: int = 32, stages: int = 3) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.image_size = check_positive_int("image_size", image_size)
        width, stages = check_positive_int("width", width), check_positive_int("stages", stages)
        if image_size % 2 ** stages:
            raise ValueError(f"image_size: expected a multiple of 2**stages={2 ** stages}, got {image_size}")
        self.features, channels = conv_pool_stack(width, stages)
        self.head = nn.Linear(channels, num_classes)
        self.to(memory_format=torch.channels_last)  # channels-last convolutions run about 1.5x faster on CPUs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, num_classes)`` for normalised images ``(N, 3, image_size, image_size)``."""
        _check_images(images, self.image_size)
        return self.head(self.features(images.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3)))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted class index of each image (a LongTensor on the CPU), in eval mode and in batches."""
        _check_images(images, self.image_size)
        device, was_training = next(self.parameters()).device, self.training
        self.eval()
        out = [self(images[i: i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, len(images), batch_size)]
        self.train(was_training)
        return torch.cat(out)


def _check_images(images: object, image_size: int) -> None:
    check_tensor("images", images, what="a float tensor (N, 3, H, W)")
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1:] != (3, image_size, image_size):
        raise ValueError(f"images: expected a non-empty (N, 3, {image_size}, {image_size}) tensor, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images: expected float pixels (e.g. ShapesWorld.tensors()), got dtype {images.dtype}")


def _check_data(model: object, images: torch.Tensor, labels: object) -> None:
    check_type("model", model, FixedClassCNN)
    _check_images(images, model.image_size)
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype != torch.long:
        got = f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise TypeError(f"labels: expected a 1-D LongTensor of class indices, got {got}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels: expected one label per image ({images.shape[0]}), got {labels.shape[0]}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= model.num_classes):
        raise ValueError(f"labels: expected class indices in [0, {model.num_classes - 1}], got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]; the model has {model.num_classes} outputs")


def train_classifier(model: FixedClassCNN, images: torch.Tensor, labels: torch.Tensor, steps: int = 250,
                     batch_size: int = 128, lr: float = 1e-2, device: torch.device | str | None = None,
                     progress: bool = True, weight_decay: float = 0.05, seed: int = 0) -> list[float]:
    """Train ``model`` with cross-entropy on ``(images[i], labels[i])`` and return the loss of every step.

    Explained in Chapter 1.2. AdamW (no decay on biases and norms, as
    :func:`~clip_tutorial.train.param_groups`), the schedule :func:`~clip_tutorial.train.lr_at`
    (warm-up over a tenth of the steps, then cosine decay), and batches drawn without replacement
    in an order seeded by ``seed``. ``images`` (normalised, ``(N, 3, H, W)``) and ``labels``
    (class indices in ``[0, num_classes)``) may stay on the CPU; the model trains on ``device``
    (default: where it is) and is left in eval mode.

    Raises:
        TypeError: if the model, images, labels, ``steps`` or ``batch_size`` have the wrong type.
        ValueError: on mismatched sizes, labels out of range, ``batch_size`` above N or bad hyper-parameters.
    """
    _check_data(model, images, labels)
    steps, batch_size = check_positive_int("steps", steps), check_positive_int("batch_size", batch_size)
    if batch_size > images.shape[0]:
        raise ValueError(f"batch_size: expected at most the number of images ({images.shape[0]}), got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)

    def loss_of(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return F.cross_entropy(model(images[index].to(device)), labels[index].to(device))

    losses = fit_minibatches(model, images.shape[0], loss_of, steps=steps, batch_size=batch_size, lr=lr,
                             weight_decay=weight_decay, seed=seed, warmup_steps=steps // 10, progress=progress,
                             desc="training the CNN")
    return losses


def classifier_accuracy(model: FixedClassCNN, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose :meth:`FixedClassCNN.predict` equals ``labels`` (Chapter 1.2).

    Raises:
        ValueError: as :func:`train_classifier`, e.g. for a label the model has no output for.
    """
    _check_data(model, images, labels)
    return float((model.predict(images) == labels).float().mean())
