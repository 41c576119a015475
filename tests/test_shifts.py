"""The shift registry: paired, deterministic shifted test sets, and each shift checked against a reference."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from clip_tutorial.data import COLOURS, ShapesWorld
from clip_tutorial.data.shifts import (PIXEL_SHIFTS, SHIFT_DEFAULTS, SHIFTS, ShiftedWorld, apply_pixel_shift,
                                       describe_shift, rotate_hue, shifted_world)

N, SEED = 96, 7


@pytest.fixture(scope="module")
def plain() -> ShapesWorld:
    return ShapesWorld(N, seed=SEED)


@pytest.fixture(scope="module")
def worlds() -> dict[str, ShiftedWorld]:
    return {shift: shifted_world(shift, n=N, seed=SEED) for shift in SHIFTS}


def _backgrounds(world: ShapesWorld) -> torch.Tensor:
    """(N, 3) the most common colour of each image (its flat background)."""
    out = []
    for image in world.images:
        colours, counts = torch.unique(image.flatten(1).t(), dim=0, return_counts=True)
        out.append(colours[counts.argmax()])
    return torch.stack(out).long()


def _foreground(world: ShapesWorld, backgrounds: torch.Tensor, threshold: int = 40) -> torch.Tensor:
    """(N, H, W) pixels far from the image's background."""
    return (world.images.long() - backgrounds[:, :, None, None]).abs().amax(dim=1) > threshold


# ---------------------------------------------------------------- the registry


def test_registry_has_at_least_six_described_shifts():
    assert len(SHIFTS) >= 6 and len(set(SHIFTS)) == len(SHIFTS)
    assert set(PIXEL_SHIFTS) < set(SHIFTS) and set(SHIFT_DEFAULTS) == set(SHIFTS)
    lines = [describe_shift(s) for s in SHIFTS]
    assert len(set(lines)) == len(SHIFTS) and all("\n" not in line and 10 < len(line) < 70 for line in lines)
    assert "-15" in describe_shift("hue", -15.0) and "15" in describe_shift("hue")


def test_no_shift_is_the_plain_dataset(plain):
    world = shifted_world(None, n=N, seed=SEED)
    assert isinstance(world, ShapesWorld)
    assert torch.equal(world.images, plain.images)
    assert world.captions == plain.captions and world.attributes == plain.attributes
    other = shifted_world(None, n=40, seed=3, image_size=48, split="heldout", styles=("outline",), max_objects=2)
    reference = ShapesWorld(40, split="heldout", seed=3, image_size=48, styles=("outline",), max_objects=2)
    assert torch.equal(other.images, reference.images) and other.captions == reference.captions


@pytest.mark.parametrize("shift", SHIFTS)
def test_same_seed_same_bytes_other_seed_other_images(shift, worlds):
    again = shifted_world(shift, n=N, seed=SEED)
    assert torch.equal(again.images, worlds[shift].images)
    assert not torch.equal(shifted_world(shift, n=N, seed=SEED + 1).images, again.images)


@pytest.mark.parametrize("shift", SHIFTS)
def test_shift_changes_pixels_not_scenes(shift, worlds, plain):
    world = worlds[shift]
    assert world.images.shape == plain.images.shape and world.images.dtype == torch.uint8
    assert world.captions == plain.captions and world.attributes == plain.attributes
    for kind in ("pair", "colour", "shape"):
        assert torch.equal(world.labels(kind), plain.labels(kind))
    changed = (world.images != plain.images).flatten(1).any(dim=1).float().mean().item()
    # a quarter turn leaves circles, squares and crosses as they were (4-fold symmetry): 3 shapes of 8
    assert changed > (0.45 if shift == "rotation" else 0.99), (shift, changed)
    assert world.shift == shift and world.strength == SHIFT_DEFAULTS[shift]
    assert f"shift={shift!r}" in repr(world)


def test_multi_object_scenes_and_other_sizes_are_shifted_too():
    for shift in SHIFTS:
        world = shifted_world(shift, n=24, seed=2, image_size=48, max_objects=3)
        reference = ShapesWorld(24, seed=2, image_size=48, max_objects=3)
        assert world.images.shape == (24, 3, 48, 48) and world.captions == reference.captions
        assert not torch.equal(world.images, reference.images)


# ---------------------------------------------------------------- each shift against a reference


def test_full_turn_redraws_exactly_the_original_scene(plain):
    """Rotation re-renders each scene from its attributes and background: 360 degrees gives the same bytes."""
    assert torch.equal(shifted_world("rotation", n=N, seed=SEED, strength=360.0).images, plain.images)
    multi = ShapesWorld(50, seed=4, max_objects=4)
    assert torch.equal(shifted_world("rotation", n=50, seed=4, strength=-360.0, max_objects=4).images, multi.images)


def test_hue_rotates_pure_colours_by_the_stated_angle():
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)
    assert rotate_hue(red, 120.0).flatten().tolist() == [0, 255, 0]
    assert rotate_hue(red, 240.0).flatten().tolist() == [0, 0, 255]
    assert rotate_hue(red, 60.0).flatten().tolist() == [255, 255, 0]
    assert rotate_hue(red, 30.0).flatten().tolist() == [255, 128, 0]  # 127.5 rounds up


def test_hue_matches_colorsys_and_keeps_greys():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 6, 6), generator=generator, dtype=torch.uint8)
    for degrees in (15.0, -15.0, 97.0):
        out = rotate_hue(images, degrees).permute(0, 2, 3, 1).reshape(-1, 3).numpy().astype(int)
        pixels = images.permute(0, 2, 3, 1).reshape(-1, 3).numpy() / 255
        reference = []
        for p in pixels:
            h, s, v = colorsys.rgb_to_hsv(*p)
            reference.append(colorsys.hsv_to_rgb((h + degrees / 360) % 1, s, v))
        assert np.abs(out - np.round(np.array(reference) * 255)).max() <= 1  # float rounding at .5 only
    grey = torch.full((2, 3, 4, 4), 131, dtype=torch.uint8)
    assert torch.equal(apply_pixel_shift(grey, "hue"), grey)


def test_default_hue_keeps_each_colour_nearest_its_own_name():
    names = list(COLOURS)
    palette = torch.tensor([COLOURS[c] for c in names], dtype=torch.uint8).t().reshape(1, 3, 1, len(names))
    for degrees in (SHIFT_DEFAULTS["hue"], -SHIFT_DEFAULTS["hue"]):
        turned = rotate_hue(palette, degrees).reshape(3, -1).t().float()
        distances = torch.cdist(turned, palette.reshape(3, -1).t().float())
        assert distances.argmin(dim=1).tolist() == list(range(len(names)))
    # and the limit is where that stops being true: at 20 degrees cyan is nearer blue
    turned = rotate_hue(palette, 20.0).reshape(3, -1).t().float()
    assert torch.cdist(turned, palette.reshape(3, -1).t().float()).argmin(dim=1).tolist() != list(range(len(names)))


def test_blur_preserves_the_mean_and_matches_scipy(plain, worlds):
    constant = torch.full((1, 3, 16, 16), 77, dtype=torch.uint8)
    assert torch.equal(apply_pixel_shift(constant, "blur", 2.0), constant)
    blurred = worlds["blur"].images.float()
    assert abs(blurred.mean().item() - plain.images.float().mean().item()) < 0.1
    per_image = (blurred.mean(dim=(1, 2, 3)) - plain.images.float().mean(dim=(1, 2, 3))).abs()
    assert per_image.max().item() < 1.0
    assert blurred.std().item() < plain.images.float().std().item()  # it smooths
    ndimage = pytest.importorskip("scipy.ndimage")
    images = plain.images[:8]
    for sigma in (0.7, 1.5):
        reference = ndimage.gaussian_filter(images.numpy().astype(float), sigma=(0, 0, sigma, sigma),
                                            mode="mirror", truncate=np.ceil(3 * sigma) / sigma)
        out = apply_pixel_shift(images, "blur", sigma).numpy().astype(float)
        assert np.abs(out - np.round(reference)).max() <= 1


def test_noise_has_the_stated_standard_deviation():
    grey = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    for sigma in (5.0, 25.0):
        diff = apply_pixel_shift(grey, "noise", sigma, seed=1).float() - 128
        assert abs(diff.mean().item()) < 0.1
        assert abs(diff.std().item() - sigma) < 0.01 * sigma + 0.05  # 196,608 draws; rounding adds 1/12
    assert not torch.equal(apply_pixel_shift(grey, "noise", seed=1), apply_pixel_shift(grey, "noise", seed=2))
    assert torch.equal(apply_pixel_shift(grey, "noise", seed=1), apply_pixel_shift(grey, "noise", seed=1))


def test_scale_shrinks_objects_by_the_stated_factor(plain, worlds):
    backgrounds = _backgrounds(plain)
    assert torch.equal(_backgrounds(worlds["scale"]), backgrounds)  # the same flat background
    before = _foreground(plain, backgrounds).flatten(1).sum(dim=1).float()
    after = _foreground(worlds["scale"], backgrounds).flatten(1).sum(dim=1).float()
    ratio = (after.sum() / before.sum()).item()
    assert abs(ratio - SHIFT_DEFAULTS["scale"] ** 2) < 0.05, ratio


def test_background_changes_only_the_background(plain, worlds):
    backgrounds = _backgrounds(plain)
    objects = _foreground(plain, backgrounds, threshold=0)  # every pixel that is not pure background
    shifted, original = worlds["background"].images, plain.images
    dark = backgrounds - int(SHIFT_DEFAULTS["background"])
    for i in range(N):
        # where the background showed, it is now a checkerboard of the background and a darker grey
        colours = {tuple(c) for c in shifted[i][:, ~objects[i]].t().tolist()}
        assert colours == {tuple(backgrounds[i].tolist()), tuple(dark[i].tolist())}
        # pixels fully covered by the object (its exact colour) are unchanged
        colour = torch.tensor(COLOURS[plain.attributes[i][0].colour], dtype=torch.uint8)[:, None]
        inside = (original[i].flatten(1) == colour).all(dim=0)
        assert inside.sum() > 0 and torch.equal(shifted[i].flatten(1)[:, inside], original[i].flatten(1)[:, inside])


def test_style_draws_every_object_striped(plain, worlds):
    backgrounds = _backgrounds(plain)
    before = _foreground(plain, backgrounds).flatten(1).sum(dim=1)
    after = _foreground(worlds["style"], backgrounds).flatten(1).sum(dim=1)
    filled = torch.tensor([objs[0].style == "filled" for objs in plain.attributes])
    assert (after[filled] < before[filled]).all()  # stripes leave gaps in filled shapes
    assert (after[~filled] >= before[~filled]).all()  # an outline plus stripes covers at least the outline


# ---------------------------------------------------------------- bad input


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="shift: expected one of"):
        shifted_world("snow", n=4)
    with pytest.raises(TypeError, match="shift"):
        shifted_world(3, n=4)
    with pytest.raises(ValueError, match="strength"):
        shifted_world("hue", n=4, strength=40.0)
    with pytest.raises(ValueError, match="strength"):
        shifted_world("noise", n=4, strength=-1.0)
    with pytest.raises(ValueError, match="strength: expected None"):
        shifted_world("style", n=4, strength=1.0)
    with pytest.raises(ValueError, match="strength: expected None when shift is None"):
        shifted_world(None, n=4, strength=1.0)
    with pytest.raises(ValueError, match="non-zero"):
        shifted_world("rotation", n=4, strength=0.0)
    with pytest.raises(TypeError, match="strength"):
        shifted_world("blur", n=4, strength="big")
    with pytest.raises(ValueError, match="striped"):
        shifted_world("style", n=4, styles=("filled", "striped"))
    with pytest.raises(ValueError, match="n: "):
        shifted_world("blur", n=0)
    with pytest.raises(ValueError, match="shift: expected one of"):
        describe_shift("fog")


def test_pixel_shift_input_checks():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(TypeError, match="uint8"):
        apply_pixel_shift(images.float(), "noise")
    with pytest.raises(ValueError, match="pixel shifts"):
        apply_pixel_shift(images, "rotation")
    with pytest.raises(ValueError, match="blur smaller than the image"):
        apply_pixel_shift(images, "blur", 3.0)
    with pytest.raises(ValueError, match="images"):
        rotate_hue(torch.zeros(4, 8, 8, dtype=torch.uint8), 10.0)
