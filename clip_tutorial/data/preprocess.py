"""CLIP's image preprocessing: any photo in, a normalised ``3 x R x R`` tensor out.

The steps OpenAI's models were trained with, in order:

1. convert to RGB (grayscale is repeated over three channels, an alpha channel is dropped);
2. resize with PIL's bicubic filter so that the *shorter* side equals the resolution ``R``
   (the longer side becomes ``int(R * long / short)``, keeping the aspect ratio);
3. crop the central ``R x R`` square, its offset rounded as torchvision's ``CenterCrop`` does
   (``round((size - R) / 2)``, Python's round-half-to-even);
4. scale the 0-255 pixels to [0, 1] and normalise each channel with CLIP's ``MEAN`` and ``STD``
   (:func:`clip_tutorial.data.normalize_images`).

OpenAI's own pipeline converts to RGB after the crop rather than first; for RGB and grayscale
images that gives identical pixels. Hugging Face's ``CLIPImageProcessor`` floors the crop offset
instead of rounding it, so where ``size - R`` is 3 more than a multiple of 4 its crop sits one
pixel higher or further left than OpenAI's.

Explained in Chapter 4.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from clip_tutorial.core.checks import check_positive_int, check_type

from .shapesworld import normalize_images

__all__ = ["ImageInput", "to_rgb", "resize_shortest_side", "center_crop", "preprocess", "Preprocess"]

#: What :func:`preprocess` accepts: a PIL image, a uint8 array (H x W, H x W x C or N x H x W x C) or a list of them.
ImageInput = Union[Image.Image, np.ndarray, Sequence[Union[Image.Image, np.ndarray]]]


def _check_resolution(resolution: Any) -> int:
    return check_positive_int("resolution", resolution, expected="a positive int (e.g. 224)")


def to_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image in RGB mode, from a PIL image of any mode or a uint8 array (H x W, H x W x 1/3/4)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image: expected a uint8 array of 0-255 pixels, got dtype {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(f"image: expected an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) "
                             f"(channels last), got {image.shape}")
        image = Image.fromarray(np.ascontiguousarray(image))
    check_type("image", image, Image.Image, expected="a PIL image or a uint8 numpy array")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image: expected a non-empty image, got size {image.size}")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_shortest_side(image: Image.Image, resolution: int) -> Image.Image:
    """Bicubic resize so that the shorter side is ``resolution``, keeping the aspect ratio (step 2)."""
    resolution = _check_resolution(resolution)
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(resolution * long / short)
    size = (resolution, new_long) if width <= height else (new_long, resolution)
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, resolution: int) -> Image.Image:
    """The central ``resolution x resolution`` square, offsets rounded like torchvision's (step 3)."""
    resolution = _check_resolution(resolution)
    width, height = image.size
    if width < resolution or height < resolution:
        raise ValueError(f"image: expected both sides >= resolution={resolution} (resize first), got {image.size}")
    top = int(round((height - resolution) / 2.0))
    left = int(round((width - resolution) / 2.0))
    return image.crop((left, top, left + resolution, top + resolution))


def _as_list(images: ImageInput) -> list[Image.Image | np.ndarray]:
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images: expected at least one image, got an empty list")
        return list(images)
    raise TypeError(f"images: expected a PIL image, a uint8 numpy array or a list of them, got {type(images).__name__}")


def preprocess(images: ImageInput, resolution: int = 224) -> torch.Tensor:
    """CLIP's preprocessing of one or more images: RGB, resize, centre crop, normalise.

    Args:
        images: a PIL image (any mode), a uint8 array (H x W, H x W x 1/3/4, or a batch N x H x W x C)
            or a list of these, of any sizes.
        resolution: the side ``R`` of the model's square input (224 for most official models,
            288/384/448 for the larger ResNets, 336 for ``ViT-L/14@336``).

    Returns:
        float32 tensor of shape ``(N, 3, R, R)``, normalised with CLIP's mean and std.

    Raises:
        TypeError: if an image is not a PIL image or a uint8 array, or ``resolution`` is not an int.
        ValueError: for an empty list, an empty image, a bad array shape or a ``resolution`` below 1.
    """
    resolution = _check_resolution(resolution)
    pixels = []
    for i, image in enumerate(_as_list(images)):
        try:
            rgb = to_rgb(image)
        except (TypeError, ValueError) as error:
            raise type(error)(f"images[{i}]: {error}") from None
        square = center_crop(resize_shortest_side(rgb, resolution), resolution)
        pixels.append(torch.from_numpy(np.asarray(square, dtype=np.uint8).copy()).permute(2, 0, 1))
    return normalize_images(torch.stack(pixels))


class Preprocess:
    """CLIP's preprocessing at a fixed resolution, as a callable (what ``load_pretrained`` returns).

    Args:
        resolution: the side of the model's square input, e.g. ``model.config.image_resolution``.

    Example:
        >>> pre = Preprocess(224)
        >>> pre(Image.new("RGB", (640, 480))).shape
        torch.Size([1, 3, 224, 224])
    """

    def __init__(self, resolution: int = 224) -> None:
        self.resolution = _check_resolution(resolution)

    def __call__(self, images: ImageInput) -> torch.Tensor:
        """Apply :func:`preprocess` at this object's resolution."""
        return preprocess(images, self.resolution)

    def __repr__(self) -> str:
        return f"Preprocess(resolution={self.resolution})"
