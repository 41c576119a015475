"""An independent judge of generated pictures: a small CNN that names the colour and the shape.

Explained in Chapter 7.5. To score a text-to-image model we need something that looks at a picture
and says which colour and which shape it shows, and that owes nothing to CLIP: otherwise CLIP would
be marking its own homework. :class:`AttributeJudge` is trained on ShapesWorld's ground-truth labels
(the colour and shape each scene was drawn with) of single-object scenes of all 64 combinations in
both styles, so it knows no held-out split. Generated pictures are blurrier and noisier than
renders, so training adds light Gaussian blur and pixel noise (:func:`apply_pixel_shift`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clip_tutorial.core.checks import check_int, check_number, check_positive_int, check_tensor, check_type
from clip_tutorial.data.render import COLOURS, SHAPES
from clip_tutorial.data.shapesworld import ShapesWorld, normalize_images
from clip_tutorial.data.shifts import apply_pixel_shift
from clip_tutorial.model.convnet import conv_pool_stack
from clip_tutorial.train.fit import fit_minibatches

__all__ = ["judge_splits", "AttributeJudge", "train_judge", "judge", "judge_accuracy", "scene_labels"]

#: Strength ranges of the training augmentation: blur in pixels of standard deviation, noise in grey levels.
BLUR_RANGE: tuple[float, float] = (0.4, 1.2)
NOISE_RANGE: tuple[float, float] = (4.0, 30.0)


class AttributeJudge(nn.Module):
    """A small CNN with one classification head per attribute: colour (8 classes) and shape (8).

    Explained in Chapter 7.5. ``stages`` blocks of 3x3 convolution, batch norm, ReLU and 2x2 max
    pooling (width doubling each block, as in Chapter 1.2's fixed-class CNN), global average
    pooling, then two linear heads. :meth:`forward` takes normalised images (``ShapesWorld.tensors()``);
    :func:`judge` takes raw pixels.

    Raises:
        TypeError: if an argument is not an int.
        ValueError: if an argument is below 1 or ``image_size`` is not a multiple of ``2 ** stages``.
    """

    def __init__(self, width: int = 16, image_size: int = 32, stages: int = 3) -> None:
        super().__init__()
        self.image_size = check_positive_int("image_size", image_size)
        width, stages = check_positive_int("width", width), check_positive_int("stages", stages)
        if image_size % 2 ** stages:
            raise ValueError(f"image_size: expected a multiple of 2**stages={2 ** stages}, got {image_size}")
        self.features, channels = conv_pool_stack(width, stages)
        self.colour_head = nn.Linear(channels, len(COLOURS))
        self.shape_head = nn.Linear(channels, len(SHAPES))
        self.to(memory_format=torch.channels_last)  # faster convolutions on CPUs

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour logits ``(N, 8)`` and shape logits ``(N, 8)`` of normalised images ``(N, 3, S, S)``."""
        check_tensor("images", images, shape=(None, 3, self.image_size, self.image_size), floating=True,
                     nonempty=True, what=f"normalised float images (N, 3, {self.image_size}, {self.image_size})")
        pooled = self.features(images.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))
        return self.colour_head(pooled), self.shape_head(pooled)


def scene_labels(data: ShapesWorld) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth colour and shape indices (in ``COLOURS``/``SHAPES`` order) of single-object scenes.

    Explained in Chapter 7.5.

    Raises:
        ValueError: if a scene holds more than one object.
    """
    check_type("data", data, ShapesWorld)
    if any(len(objects) != 1 for objects in data.attributes):
        raise ValueError("data: expected single-object scenes (max_objects=1), got a scene of several objects")
    colours, shapes = list(COLOURS), list(SHAPES)
    return (torch.tensor([colours.index(o[0].colour) for o in data.attributes]),
            torch.tensor([shapes.index(o[0].shape) for o in data.attributes]))


def _augment(pixels: torch.Tensor, generator: torch.Generator, seed: int) -> torch.Tensor:
    """Leave the first third of a batch clean, blur the second third and noise the last, at random strengths."""
    third = len(pixels) // 3
    u = torch.rand(2, generator=generator).tolist()
    blurred = apply_pixel_shift(pixels[third: 2 * third], "blur", BLUR_RANGE[0] + u[0] * (BLUR_RANGE[1] - BLUR_RANGE[0]))
    noisy = apply_pixel_shift(pixels[2 * third:], "noise", NOISE_RANGE[0] + u[1] * (NOISE_RANGE[1] - NOISE_RANGE[0]),
                              seed=seed)
    return torch.cat([pixels[:third], blurred, noisy])


def train_judge(n: int = 8000, steps: int = 1500, batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
                width: int = 16, augment: bool = True, progress: bool = True) -> AttributeJudge:
    """Train an :class:`AttributeJudge` on ``n`` fresh single-object scenes of all 64 combinations.

    Explained in Chapter 7.5. The scenes are ``ShapesWorld(n, split="all", seed=seed)`` (filled and
    outline objects, every colour with every shape: the judge knows no held-out split), labelled
    with the colour and shape they were drawn with. The loss is the sum of the two heads'
    cross-entropies; AdamW with warm-up and cosine decay (:func:`~clip_tutorial.train.lr_at`).
    With ``augment``, a third of each batch is blurred and a third noised (``BLUR_RANGE``, ``NOISE_RANGE``).
    Returns the judge in eval mode, on the CPU.

    Raises:
        TypeError, ValueError: for arguments of the wrong type or out of range.
    """
    n, steps = check_int("n", n, 1), check_positive_int("steps", steps)
    batch_size = check_int("batch_size", batch_size, 1, n)
    lr, seed = check_number("lr", lr, 0.0, low_open=True), check_int("seed", seed, 0)
    data = ShapesWorld(n, split="all", seed=seed)
    colours, shapes = scene_labels(data)
    torch.manual_seed(seed)
    model = AttributeJudge(width=width, image_size=data.image_size).train()
    drawn = [0]  # batches drawn so far: each step's augmentation has its own seed

    def loss_of(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        pixels = data.images[index]
        if augment:
            pixels = _augment(pixels, generator, seed * 100_003 + drawn[0])
        drawn[0] += 1
        colour_logits, shape_logits = model(normalize_images(pixels))
        return F.cross_entropy(colour_logits, colours[index]) + F.cross_entropy(shape_logits, shapes[index])

    fit_minibatches(model, n, loss_of, steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.05, seed=seed,
                    warmup_steps=steps // 10, progress=progress, desc="training the judge")
    return model.eval()


def _as_normalised(images: object, image_size: int) -> torch.Tensor:
    check_tensor("images", images, shape=(None, 3, image_size, image_size), nonempty=True,
                 what=f"uint8 pixels or float pixels in [-1, 1], shape (N, 3, {image_size}, {image_size})")
    if images.dtype == torch.uint8:
        return normalize_images(images)
    if not images.is_floating_point():
        raise TypeError(f"images: expected uint8 pixels or float pixels in [-1, 1], got dtype {images.dtype}")
    low, high = float(images.min()), float(images.max())
    if not (math.isfinite(low) and math.isfinite(high)) or low < -1.0 - 1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"images: expected float pixels in [-1, 1] (uint8 for 0-255), got values in "
                         f"[{low:.3g}, {high:.3g}]")
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return normalize_images(pixels)


@torch.no_grad()
def judge(model: AttributeJudge, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted colour and shape indices (two LongTensors of shape ``(N,)``) of raw pictures.

    Explained in Chapter 7.5. ``images`` are either uint8 pixels (0-255, as ``ShapesWorld.images``)
    or float pixels in [-1, 1] (the range a diffusion decoder produces); floats are quantised to
    uint8 first, so both routes see exactly what a saved picture would hold. Index ``i`` of the
    colour answer names ``list(COLOURS)[i]``, of the shape answer ``SHAPES[i]``.

    Raises:
        TypeError: if ``model`` is not an :class:`AttributeJudge`, or ``images`` has another dtype.
        ValueError: for a wrong shape, no images, or floats outside [-1, 1].
    """
    check_type("model", model, AttributeJudge)
    batch_size = check_positive_int("batch_size", batch_size)
    x = _as_normalised(images, model.image_size)
    was_training = model.training
    model.eval()
    colour, shape = [], []
    for i in range(0, len(x), batch_size):
        c, s = model(x[i: i + batch_size])
        colour.append(c.argmax(dim=1))
        shape.append(s.argmax(dim=1))
    model.train(was_training)
    return torch.cat(colour), torch.cat(shape)


def judge_accuracy(model: AttributeJudge, images: torch.Tensor, colours: torch.Tensor,
                   shapes: torch.Tensor) -> dict[str, float]:
    """Fractions of pictures whose colour, shape, and both at once the judge names as given (Chapter 7.5).

    ``colours`` and ``shapes`` are the intended indices, e.g. from :func:`scene_labels` or from the
    prompts of a generator. Returns ``{"colour": ..., "shape": ..., "both": ...}``.

    Raises:
        ValueError: if the label tensors do not hold one index per picture.
    """
    predicted_colour, predicted_shape = judge(model, images)
    for name, labels in (("colours", colours), ("shapes", shapes)):
        check_tensor(name, labels, shape=(len(predicted_colour),), dtype=torch.long,
                     what=f"a LongTensor of {len(predicted_colour)} class indices")
    colour_ok, shape_ok = predicted_colour == colours, predicted_shape == shapes
    return {"colour": colour_ok.float().mean().item(), "shape": shape_ok.float().mean().item(),
            "both": (colour_ok & shape_ok).float().mean().item()}


def judge_splits(model: AttributeJudge, images: torch.Tensor, colours: torch.Tensor, shapes: torch.Tensor,
                 heldout: torch.Tensor) -> dict[str, dict[str, float]]:
    """:func:`judge_accuracy` apart for seen and held-out pairs: ``{"seen": {...}, "held-out": {...}}`` (Chapter 7.5).

    ``heldout`` is a bool tensor, ``True`` for the pictures of held-out pairs (e.g. :class:`Prompts.heldout
    <clip_tutorial.generate.recipes.Prompts>`); both groups must be nonempty.

    Raises:
        TypeError, ValueError: if ``heldout`` is not one bool per picture, or leaves a group empty.
    """
    heldout = check_tensor("heldout", heldout, shape=(len(images),), dtype=torch.bool,
                           what=f"a bool tensor ({len(images)},), True for held-out pairs")
    if heldout.all() or not heldout.any():
        raise ValueError(f"heldout: expected both seen and held-out pictures, got {int(heldout.sum())} held out "
                         f"of {len(images)}")
    return {split: judge_accuracy(model, images[keep], colours[keep], shapes[keep])
            for split, keep in (("seen", ~heldout), ("held-out", heldout))}
