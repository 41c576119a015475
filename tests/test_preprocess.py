"""CLIP's preprocessing against Hugging Face's ``CLIPImageProcessor`` (whose defaults are CLIP's).

Both resize with PIL's bicubic filter on uint8 images, then scale and normalise in float32, so the
pixels agree to float rounding (measured: exactly 0.0); 1e-6 is the tolerance. Two documented
differences are tested as such: HF floors the centre-crop offset where torchvision (OpenAI) rounds
it half-to-even, and HF composites transparent pixels onto white where OpenAI drops the alpha.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clip_tutorial.data import normalize_images
from clip_tutorial.data.preprocess import Preprocess, center_crop, preprocess, resize_shortest_side

ATOL = 1e-6


@pytest.fixture(scope="module")
def hf_processor():
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return transformers.CLIPImageProcessorPil  # the PIL backend (what CLIPImageProcessor falls back to)
        except AttributeError:
            return transformers.CLIPImageProcessor


@functools.lru_cache(maxsize=None)
def _processor(processor_cls, resolution: int, crop: bool):
    return processor_cls(size={"shortest_edge": resolution}, crop_size={"height": resolution, "width": resolution},
                         do_center_crop=crop)


def hf(processor_cls, image: Image.Image, resolution: int = 224, crop: bool = True) -> torch.Tensor:
    out = _processor(processor_cls, resolution, crop)(images=image, return_tensors="np")["pixel_values"]
    return torch.from_numpy(np.asarray(out, dtype=np.float32))


def random_image(rng: np.random.Generator, width: int, height: int, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode)


def torchvision_offset(size: int, resolution: int) -> int:
    return int(round((size - resolution) / 2.0))


SIZES = [(640, 480), (480, 640), (224, 224), (300, 224), (50, 80), (1000, 227), (227, 1000), (225, 500), (7, 3)]


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("width,height", SIZES)
def test_matches_hf_clip_image_processor(hf_processor, width, height, mode):
    """Where both crop at the same offset (all these sizes), the whole pipeline equals HF's."""
    image = random_image(np.random.default_rng(width * 1000 + height), width, height, mode)
    ours = preprocess(image)
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, hf(hf_processor, image), atol=ATOL, rtol=0)


@settings(max_examples=15, deadline=None)
@given(width=st.integers(1, 300), height=st.integers(1, 300), resolution=st.sampled_from([32, 224]),
       seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(["RGB", "L"]))
def test_resize_and_normalise_match_hf_at_any_size(hf_processor, width, height, resolution, seed, mode):
    """HF's resize + normalise (no crop), cropped at torchvision's rounded offset, equals ours."""
    image = random_image(np.random.default_rng(seed), width, height, mode)
    full = hf(hf_processor, image, resolution, crop=False)
    top, left = torchvision_offset(full.shape[2], resolution), torchvision_offset(full.shape[3], resolution)
    expected = full[:, :, top:top + resolution, left:left + resolution]
    torch.testing.assert_close(preprocess(image, resolution), expected, atol=ATOL, rtol=0)


def test_crop_offset_rounds_like_torchvision_not_like_hf(hf_processor):
    """224 x 299 resizes to 224 x 299: 75 spare rows; OpenAI starts at round(37.5) = 38, HF at 37."""
    image = random_image(np.random.default_rng(1), 224, 299)
    full = hf(hf_processor, image, crop=False)
    assert full.shape[2:] == (299, 224)
    torch.testing.assert_close(preprocess(image), full[:, :, 38:262], atol=ATOL, rtol=0)
    torch.testing.assert_close(hf(hf_processor, image), full[:, :, 37:261], atol=ATOL, rtol=0)


def test_rgba_drops_alpha_like_openai(hf_processor):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (150, 260, 4), dtype=np.uint8)
    ours = preprocess(Image.fromarray(rgba, "RGBA"))
    torch.testing.assert_close(ours, hf(hf_processor, Image.fromarray(rgba[:, :, :3], "RGB")), atol=ATOL, rtol=0)
    opaque = rgba.copy()
    opaque[:, :, 3] = 255  # nothing to composite: HF's white background never shows
    torch.testing.assert_close(preprocess(Image.fromarray(opaque, "RGBA")),
                               hf(hf_processor, Image.fromarray(opaque, "RGBA")), atol=ATOL, rtol=0)
    assert (ours - hf(hf_processor, Image.fromarray(rgba, "RGBA"))).abs().max() > 0.5  # HF composites onto white


def test_convert_first_equals_openai_order_for_rgb_and_grayscale():
    """OpenAI converts to RGB after resize and crop; for RGB and L images the order does not matter."""
    rng = np.random.default_rng(3)
    for mode in ("RGB", "L"):
        image = random_image(rng, 333, 250, mode)
        late = center_crop(resize_shortest_side(image, 224), 224).convert("RGB")
        pixels = torch.from_numpy(np.asarray(late).copy()).permute(2, 0, 1)[None]
        torch.testing.assert_close(preprocess(image), normalize_images(pixels), atol=0, rtol=0)


def test_numpy_inputs_and_batches_equal_the_pil_path():
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (64, 200), dtype=np.uint8)
    expected = torch.cat([preprocess(Image.fromarray(rgb)), preprocess(Image.fromarray(gray))])
    torch.testing.assert_close(preprocess([rgb, gray]), expected, atol=0, rtol=0)
    torch.testing.assert_close(preprocess(gray[:, :, None]), expected[1:], atol=0, rtol=0)
    batch = rng.integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    out = preprocess(batch, 32)
    assert out.shape == (3, 3, 32, 32)
    torch.testing.assert_close(out[2:], preprocess(Image.fromarray(batch[2]), 32), atol=0, rtol=0)


def test_preprocess_object():
    pre = Preprocess(336)
    assert repr(pre) == "Preprocess(resolution=336)"
    image = random_image(np.random.default_rng(5), 500, 400)
    out = pre([image, image])
    assert out.shape == (2, 3, 336, 336)
    torch.testing.assert_close(out, preprocess([image, image], 336), atol=0, rtol=0)


def test_normalised_statistics_of_a_constant_image():
    """A pixel equal to 255 * MEAN maps to (about) zero in every channel."""
    from clip_tutorial.data import MEAN

    colour = tuple(round(255 * m) for m in MEAN)
    out = preprocess(Image.new("RGB", (300, 200), colour))
    assert out.abs().max() < 0.01


@pytest.mark.parametrize("bad,error,words", [
    ("photo.jpg", TypeError, "images: expected a PIL image"),
    ([], ValueError, "images: expected at least one image"),
    ([np.zeros((8, 8, 3), dtype=np.float32)], TypeError, "images[0]: image: expected a uint8 array"),
    ([Image.new("RGB", (8, 8)), np.zeros((8, 8, 2), dtype=np.uint8)], ValueError, "images[1]: image: expected an array of shape"),
    ([Image.new("RGB", (0, 8))], ValueError, "images[0]: image: expected a non-empty image"),
    ([torch.zeros(3, 8, 8)], TypeError, "images[0]: image: expected a PIL image or a uint8 numpy array"),
])
def test_bad_images_get_clear_errors(bad, error, words):
    with pytest.raises(error) as info:
        preprocess(bad)
    assert words in str(info.value)


@pytest.mark.parametrize("resolution, error", [(0, ValueError), (-1, ValueError), (22.5, TypeError),
                                               (True, TypeError), ("224", TypeError)])
def test_bad_resolution(resolution, error):
    with pytest.raises(error, match="resolution: expected a positive int"):
        preprocess(Image.new("RGB", (8, 8)), resolution)
    with pytest.raises(error, match="resolution"):
        Preprocess(resolution)
