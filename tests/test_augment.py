"""Tests of CLIP's training augmentation: box statistics, reproducibility, identity, resampling, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clip_tutorial.data.augment import (DEFAULT_RATIO, OPEN_CLIP_SCALE, TORCHVISION_SCALE, RandomResizedCrop,
                                        random_resized_crop, random_resized_crop_pil, sample_crop_boxes)
from clip_tutorial.data.preprocess import preprocess


def _boxes_respect(boxes: torch.Tensor, height: int, width: int, scale, ratio) -> None:
    top, left, h, w = boxes.T.double()
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    # Side lengths are rounded to whole pixels, so allow half a pixel on each side of the continuous box.
    area_low = ((h - 0.5).clamp(min=0) * (w - 0.5).clamp(min=0)) / (height * width)
    area_high = ((h + 0.5) * (w + 0.5)) / (height * width)
    assert (area_high >= scale[0] - 1e-9).all() and (area_low <= scale[1] + 1e-9).all()
    assert ((w + 0.5) / (h - 0.5).clamp(min=1e-9) >= ratio[0] - 1e-9).all()
    assert ((w - 0.5) / (h + 0.5) <= ratio[1] + 1e-9).all()


@settings(max_examples=60, deadline=None)
@given(height=st.integers(8, 300), width=st.integers(8, 300), s_low=st.floats(0.05, 1.0), s_span=st.floats(0, 1),
       r_low=st.floats(0.5, 1.0), r_span=st.floats(1.0, 2.0), seed=st.integers(0, 2**31))
def test_boxes_lie_inside_the_image_and_within_the_requested_ranges(height, width, s_low, s_span, r_low, r_span, seed):
    scale = (s_low, s_low + (1 - s_low) * s_span)
    ratio = (r_low, r_low * r_span)
    boxes = sample_crop_boxes(64, height, width, scale, ratio, torch.Generator().manual_seed(seed))
    assert boxes.shape == (64, 4) and boxes.dtype == torch.long
    top, left, h, w = boxes.T
    assert (h >= 1).all() and (w >= 1).all() and (top + h <= height).all() and (left + w <= width).all()
    # Boxes that came from the fallback (no try fitted) are central; every other box obeys both ranges.
    drawn = ~((top == (height - h) // 2) & (left == (width - w) // 2) & ((h == height) | (w == width)))
    if drawn.any():
        _boxes_respect(boxes[drawn], height, width, scale, ratio)


def test_box_distribution_matches_torchvision_defaults():
    boxes = sample_crop_boxes(20_000, 64, 64, TORCHVISION_SCALE, DEFAULT_RATIO, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T.double()
    area = h * w / 64**2
    log_ratio = (w / h).log()
    assert area.min() >= 0.06 and area.max() <= 1.0
    assert abs(log_ratio.mean().item()) < 0.02, "log aspect ratio must be symmetric around 0"
    assert log_ratio.abs().max() <= math.log(4 / 3) + 0.1
    # Offsets are uniform over the free room: the mean relative position is about 1/2.
    free = (64 - h).clamp(min=1)
    assert abs((top / free)[h < 64].mean().item() - 0.5) < 0.02


def test_open_clip_scale_keeps_at_least_ninety_percent_of_the_area():
    boxes = sample_crop_boxes(5000, 224, 224, OPEN_CLIP_SCALE, DEFAULT_RATIO, torch.Generator().manual_seed(1))
    area = boxes[:, 2].double() * boxes[:, 3] / 224**2
    assert area.min() > 0.89 and area.max() <= 1.0


def test_no_fitting_try_falls_back_to_a_central_crop_of_allowed_ratio():
    boxes = sample_crop_boxes(3, 10, 100, (0.9, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))
    assert boxes.tolist() == [[0, 45, 10, 10]] * 3


def test_same_seed_same_output_and_different_seed_different_output():
    images = torch.randint(0, 256, (16, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = random_resized_crop(images, 16, generator=torch.Generator().manual_seed(5))
    b = random_resized_crop(images, 16, generator=torch.Generator().manual_seed(5))
    c = random_resized_crop(images, 16, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    crop1, crop2 = RandomResizedCrop(16, seed=3), RandomResizedCrop(16, seed=3)
    first = crop1(images)
    assert torch.equal(first, crop2(images)) and not torch.equal(first, crop1(images)), "the generator advances"


def test_identity_when_the_box_is_the_whole_image():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8, generator=g)
    assert torch.equal(random_resized_crop(pixels, scale=(1, 1), ratio=(1, 1), generator=g), pixels)
    values = torch.randn(4, 3, 20, 20, generator=g)
    torch.testing.assert_close(random_resized_crop(values, 20, scale=(1, 1), ratio=(1, 1)), values,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [7, 16, 40])
def test_equals_cropping_then_f_interpolate_per_image(size):
    g = torch.Generator().manual_seed(size)
    images = torch.randn(12, 3, 18, 26, generator=g)
    boxes = sample_crop_boxes(12, 18, 26, (0.05, 1.0), (0.3, 3.0), g)
    out = random_resized_crop(images, size, boxes=boxes)
    reference = torch.cat([F.interpolate(images[i:i + 1, :, t:t + h, l:l + w], size=(size, size), mode="bilinear",
                                         align_corners=False) for i, (t, l, h, w) in enumerate(boxes.tolist())])
    assert out.shape == (12, 3, size, size) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_uint8_in_uint8_out_and_shapes():
    pixels = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    out = RandomResizedCrop(24)(pixels)
    assert out.shape == (5, 3, 24, 24) and out.dtype == torch.uint8


def test_pil_path_crops_and_resizes_like_pil_on_the_same_box():
    photo = Image.fromarray(torch.randint(0, 256, (60, 90, 3), dtype=torch.uint8).numpy())
    out = random_resized_crop_pil(photo, 32, generator=torch.Generator().manual_seed(2))
    top, left, h, w = sample_crop_boxes(1, 60, 90, OPEN_CLIP_SCALE, DEFAULT_RATIO,
                                        torch.Generator().manual_seed(2))[0].tolist()
    expected = photo.crop((left, top, left + w, top + h)).resize((32, 32), Image.Resampling.BICUBIC)
    assert out.size == (32, 32)
    assert torch.equal(preprocess(out, 32), preprocess(expected, 32))
    assert RandomResizedCrop(32, seed=0)(photo).size == (32, 32)


@pytest.mark.parametrize("call, message", [
    (lambda: random_resized_crop([1, 2, 3]), "images: expected a uint8 or floating-point tensor"),
    (lambda: random_resized_crop(torch.zeros(3, 8, 8, dtype=torch.long)), "images: expected a uint8"),
    (lambda: random_resized_crop(torch.zeros(3, 8, 8)), r"images: expected a batch of shape \(N, C, H, W\), got a tensor of shape \(3, 8, 8\)"),
    (lambda: random_resized_crop(torch.zeros(1, 3, 8, 9)), "size: expected an int for non-square images"),
    (lambda: random_resized_crop(torch.zeros(1, 3, 8, 8), 0), "size: expected a positive int"),
    (lambda: random_resized_crop(torch.zeros(1, 3, 8, 8), scale=(0.5, 1.5)), r"scale: expected 0 < low <= high <= 1.0"),
    (lambda: random_resized_crop(torch.zeros(1, 3, 8, 8), scale=(0.9, 0.5)), "scale: expected 0 < low <= high"),
    (lambda: random_resized_crop(torch.zeros(1, 3, 8, 8), ratio=(0, 1)), "ratio: expected 0 < low <= high"),
    (lambda: random_resized_crop(torch.zeros(1, 3, 8, 8), ratio=0.5), "ratio: expected a pair of numbers"),
    (lambda: random_resized_crop(torch.zeros(2, 3, 8, 8), boxes=torch.zeros(1, 4)), r"boxes: expected a tensor of shape \(2, 4\)"),
    (lambda: random_resized_crop(torch.zeros(1, 3, 8, 8), boxes=torch.tensor([[4, 4, 8, 8]])), "boxes: expected boxes inside"),
    (lambda: random_resized_crop_pil("photo.jpg", 8), "image: expected a PIL image, got str"),
    (lambda: RandomResizedCrop(8, seed=1.5), "seed: expected an int"),
])
def test_clear_errors(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


def test_augments_shapesworld_batches_for_training():
    from clip_tutorial.data import ShapesWorld, normalize_images

    data = ShapesWorld(8, seed=0, image_size=32)
    crop = RandomResizedCrop(32, seed=0)
    batch = normalize_images(crop(data.images))
    assert batch.shape == data.tensors().shape and batch.dtype == torch.float32
    # With open_clip's scale the crop keeps most of the picture: close to, but not equal to, the original.
    assert not torch.equal(batch, data.tensors())
    assert (batch - data.tensors()).abs().mean() < 0.15  # about 0.05; unrelated images differ by about 0.33
