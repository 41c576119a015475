"""CLIP's training augmentation: a random resized crop, for batches of tensors and for PIL photos.

What the published models used, as facts:

- The CLIP paper (Radford et al., 2021, section 2.5) says a random square crop of resized images
  was the *only* data augmentation used in training. The ``openai/CLIP`` repository ships only
  the inference transform (bicubic resize of the shorter side, centre crop, normalise), which
  is :func:`clip_tutorial.data.preprocess.preprocess`.
- ``open_clip``'s ``image_transform(is_train=True)`` applies torchvision's ``RandomResizedCrop``
  with ``scale=(0.9, 1.0)`` (its ``AugmentationCfg`` default), torchvision's default aspect-ratio
  range ``(3/4, 4/3)`` and bicubic resampling, then normalises; no flips and no colour jitter
  unless asked for.
- torchvision's own ``RandomResizedCrop`` defaults are ``scale=(0.08, 1.0)`` and
  ``ratio=(3/4, 4/3)``: a box covering 8% to 100% of the image's area, with a width/height ratio
  drawn log-uniformly, resized to a square.

The box is drawn as torchvision draws it: up to ten tries of (area fraction uniform in
``scale``, aspect ratio log-uniform in ``ratio``, side lengths rounded); the first box that fits
is placed uniformly at random; if none fits, the centre crop of the whole image, clamped to the
ratio range, is used.

Two resampling paths:

- :func:`random_resized_crop` works on a whole batch of tensors at once with one
  ``F.grid_sample`` call (bilinear). Each output pixel's source position inside its box is
  computed as ``F.interpolate(..., align_corners=False)`` computes it and clamped to the box, so
  the result equals cropping each image and calling ``F.interpolate`` on it, with no Python loop
  over images (useful on a GPU). It does not anti-alias, so it suits small images such as
  ShapesWorld's, whose boxes are enlarged, not shrunk by large factors.
- :func:`random_resized_crop_pil` crops and resizes one PIL photo with PIL's bicubic filter (which
  anti-aliases when shrinking), as ``open_clip`` does for real photos.

Explained in Chapter 3.1.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from clip_tutorial.core.checks import check_int, check_positive_int, check_range, check_tensor, check_type

__all__ = ["TORCHVISION_SCALE", "OPEN_CLIP_SCALE", "DEFAULT_RATIO", "sample_crop_boxes", "random_resized_crop",
           "random_resized_crop_pil", "RandomResizedCrop"]

#: torchvision's default area range for ``RandomResizedCrop``.
TORCHVISION_SCALE: tuple[float, float] = (0.08, 1.0)
#: open_clip's default area range for training (``AugmentationCfg.scale``).
OPEN_CLIP_SCALE: tuple[float, float] = (0.9, 1.0)
#: torchvision's default range of the box's width / height.
DEFAULT_RATIO: tuple[float, float] = (3 / 4, 4 / 3)
#: The dtypes :func:`random_resized_crop` resamples: 0-255 pixels or float values.
_PIXEL_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)
_ATTEMPTS = 10


def sample_crop_boxes(n: int, height: int, width: int, scale: Sequence[float] = TORCHVISION_SCALE,
                      ratio: Sequence[float] = DEFAULT_RATIO,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n`` random crop boxes for ``height x width`` images, torchvision's way.

    Args:
        n: number of boxes.
        height: image height in pixels.
        width: image width in pixels.
        scale: range of the box area as a fraction of the image area, ``0 < low <= high <= 1``.
        ratio: range of the box's width / height; drawn log-uniformly.
        generator: source of randomness; the same seeded generator gives the same boxes.

    Returns:
        LongTensor ``(n, 4)``: ``top, left, box_height, box_width`` of each box, inside the image.

    Raises:
        TypeError: if ``scale`` or ``ratio`` is not a pair of numbers.
        ValueError: for a non-positive size or an empty or out-of-range interval.
    """
    n, height, width = (check_positive_int("n", n), check_positive_int("height", height),
                        check_positive_int("width", width))
    s_low, s_high = check_range("scale", scale, upper=1.0)
    r_low, r_high = check_range("ratio", ratio)
    area = height * width
    fraction = s_low + (s_high - s_low) * torch.rand(n, _ATTEMPTS, generator=generator, dtype=torch.float64)
    log_ratio = math.log(r_low) + (math.log(r_high) - math.log(r_low)) * torch.rand(
        n, _ATTEMPTS, generator=generator, dtype=torch.float64)
    aspect = log_ratio.exp()
    w = torch.round(torch.sqrt(area * fraction * aspect)).long()
    h = torch.round(torch.sqrt(area * fraction / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)  # index of the first box that fits
    box_h, box_w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)

    # Fallback when no try fits: the whole image, narrowed to the nearest allowed aspect ratio.
    fallback_h, fallback_w = height, width
    if width / height < r_low:
        fallback_h = int(round(width / r_low))
    elif width / height > r_high:
        fallback_w = int(round(height * r_high))
    none_fit = ~fits.any(dim=1)
    box_h = torch.where(none_fit, torch.full_like(box_h, fallback_h), box_h)
    box_w = torch.where(none_fit, torch.full_like(box_w, fallback_w), box_w)

    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (height - box_h + 1)).long().clamp_(max=height - box_h)
    left = torch.floor(u[:, 1] * (width - box_w + 1)).long().clamp_(max=width - box_w)
    top = torch.where(none_fit, (height - box_h) // 2, top)
    left = torch.where(none_fit, (width - box_w) // 2, left)
    return torch.stack([top, left, box_h, box_w], dim=1)


def _axis_grid(start: torch.Tensor, length: torch.Tensor, out: int, full: int) -> torch.Tensor:
    """Normalised ``grid_sample`` coordinates of ``out`` samples spread over ``[start, start + length)``."""
    steps = torch.arange(out, dtype=torch.float64) + 0.5
    source = start[:, None] + (steps[None, :] * length[:, None] / out - 0.5).clamp(min=0)  # F.interpolate's rule
    source = torch.minimum(source, (start + length - 1)[:, None].double())  # stay inside the box
    return (2 * source + 1) / full - 1  # pixel centre -> [-1, 1] with align_corners=False


def random_resized_crop(images: torch.Tensor, size: int | None = None, scale: Sequence[float] = TORCHVISION_SCALE,
                        ratio: Sequence[float] = DEFAULT_RATIO, generator: torch.Generator | None = None,
                        boxes: torch.Tensor | None = None) -> torch.Tensor:
    """Crop a random box from every image of a batch and resize it to ``size x size`` (bilinear).

    Args:
        images: ``(N, C, H, W)`` uint8 pixels or float values (normalised or not), on any device.
        size: side of the square output; ``None`` keeps ``H`` (which must then equal ``W``).
        scale: range of box areas as a fraction of the image area (open_clip trains with
            ``OPEN_CLIP_SCALE``).
        ratio: range of the boxes' width / height.
        generator: a CPU ``torch.Generator`` for reproducible boxes.
        boxes: use these ``(N, 4)`` boxes (``top, left, height, width``) instead of drawing them.

    Returns:
        ``(N, C, size, size)`` of the input's dtype (uint8 results are rounded and clamped to 0-255).

    Raises:
        TypeError: if ``images`` is not a tensor of uint8 or floating dtype.
        ValueError: for a bad shape, ``size``, ``scale``, ``ratio`` or ``boxes``.
    """
    check_tensor("images", images, dtype=_PIXEL_DTYPES, what="a uint8 or floating-point tensor")
    check_tensor("images", images, ndim=4, nonempty=True, what="a batch of shape (N, C, H, W)")
    n, _, height, width = images.shape
    if size is None:
        if height != width:
            raise ValueError(f"size: expected an int for non-square images of size {height}x{width}, got None")
        size = height
    size = check_positive_int("size", size)
    if boxes is None:
        boxes = sample_crop_boxes(n, height, width, scale, ratio, generator)
    boxes = check_tensor("boxes", boxes, shape=(n, 4)).long().cpu()
    top, left, box_h, box_w = boxes.unbind(1)
    if (box_h < 1).any() or (box_w < 1).any() or (top < 0).any() or (left < 0).any() \
            or (top + box_h > height).any() or (left + box_w > width).any():
        raise ValueError(f"boxes: expected boxes inside the {height}x{width} images, got {boxes.tolist()}")
    ys = _axis_grid(top, box_h, size, height)  # (N, size)
    xs = _axis_grid(left, box_w, size, width)
    grid = torch.stack([xs[:, None, :].expand(n, size, size), ys[:, :, None].expand(n, size, size)], dim=-1)
    work = images.float() if images.dtype == torch.uint8 else images
    out = F.grid_sample(work, grid.to(device=images.device, dtype=work.dtype), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out.round().clamp_(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else out


def random_resized_crop_pil(image: Image.Image, size: int, scale: Sequence[float] = OPEN_CLIP_SCALE,
                            ratio: Sequence[float] = DEFAULT_RATIO,
                            generator: torch.Generator | None = None) -> Image.Image:
    """Crop one random box from a PIL photo and resize it to ``size x size`` with PIL's bicubic filter.

    The defaults are open_clip's training settings. Feed the result to
    :func:`clip_tutorial.data.preprocess.preprocess` with ``resolution=size`` to normalise it (at that
    size preprocessing neither resizes nor crops).

    Raises:
        TypeError: if ``image`` is not a PIL image.
        ValueError: for an empty image or a bad ``size``, ``scale`` or ``ratio``.
    """
    check_type("image", image, Image.Image, expected="a PIL image")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image: expected a non-empty image, got size {image.size}")
    size = check_positive_int("size", size)
    top, left, box_h, box_w = sample_crop_boxes(1, image.height, image.width, scale, ratio, generator)[0].tolist()
    # Crop first, then resize (as torchvision's ``resized_crop`` does): pixels outside the box never leak in.
    return image.crop((left, top, left + box_w, top + box_h)).resize((size, size), Image.Resampling.BICUBIC)


class RandomResizedCrop:
    """CLIP's training augmentation as a callable with its own seeded generator.

    Called on a tensor batch ``(N, C, H, W)`` it uses :func:`random_resized_crop`; called on a PIL
    image it uses :func:`random_resized_crop_pil`. The defaults are open_clip's
    (``scale=(0.9, 1.0)``, ``ratio=(3/4, 4/3)``).

    Args:
        size: side of the square output.
        scale: range of box areas as a fraction of the image area.
        ratio: range of the boxes' width / height.
        seed: seed of the generator; the same seed gives the same sequence of crops.

    Example:
        >>> crop = RandomResizedCrop(32, seed=0)
        >>> crop(torch.zeros(4, 3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, size: int, scale: Sequence[float] = OPEN_CLIP_SCALE, ratio: Sequence[float] = DEFAULT_RATIO,
                 seed: int = 0) -> None:
        self.size = check_positive_int("size", size)
        self.scale = check_range("scale", scale, upper=1.0)
        self.ratio = check_range("ratio", ratio)
        self.seed = check_int("seed", seed)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor | Image.Image) -> torch.Tensor | Image.Image:
        """Crop and resize a tensor batch or one PIL image, advancing the generator."""
        if isinstance(images, Image.Image):
            return random_resized_crop_pil(images, self.size, self.scale, self.ratio, self.generator)
        return random_resized_crop(images, self.size, self.scale, self.ratio, self.generator)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, seed={self.seed})"
