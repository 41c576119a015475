"""Behaviour of ShapesWorld: rendering, captions, splits, determinism and input checking."""
from __future__ import annotations

import re
from collections import Counter, deque

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_tutorial.data import (BACKGROUND, COLOURS, MEAN, NUMBER_WORDS, POSITIONS, RELATIONS, SHAPE_SYNONYMS,
                                SHAPES, SIZES, STD, STYLES, TEMPLATES, ShapeSpec, ShapesWorld, class_names,
                                count_caption, count_scene, heldout_combinations, plural, relation_caption,
                                relation_scene, render_scene, vocabulary)

SIZE = 32


# ---------------------------------------------------------------- helpers


def _pixels(image) -> np.ndarray:
    """H x W x 3 int array from a PIL image or a 3 x H x W uint8 tensor."""
    if isinstance(image, torch.Tensor):
        return image.permute(1, 2, 0).numpy().astype(int)
    return np.asarray(image).astype(int)


def _foreground(px: np.ndarray) -> np.ndarray:
    """Pixels clearly different from the image's background (its most common colour)."""
    colours, counts = np.unique(px.reshape(-1, 3), axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return np.abs(px - background).max(axis=2) > 40


def _near(px: np.ndarray, rgb: tuple[int, int, int], tol: int = 30) -> np.ndarray:
    return np.abs(px - np.array(rgb)).max(axis=2) <= tol


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, "nothing drawn"
    return xs.mean(), ys.mean()


def _third(v: float, size: int = SIZE) -> int:
    return min(int(3 * v / size), 2)


def _components(mask: np.ndarray) -> int:
    """Number of 8-connected blobs in a boolean mask (a plain flood fill, no scipy)."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    blobs = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        blobs += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
    return blobs


def _expected_cell(position: str) -> tuple[int, int]:
    """(column, row) thirds of a grid position name."""
    i = POSITIONS.index(position)
    return i % 3, i // 3


WORD_RE = re.compile(r"^[a-z]+( [a-z]+)*$")


@pytest.fixture(scope="module")
def train() -> ShapesWorld:
    return ShapesWorld(600, split="train", seed=1, styles=STYLES)


@pytest.fixture(scope="module")
def multi() -> ShapesWorld:
    return ShapesWorld(400, split="train", seed=2, styles=STYLES, max_objects=4)


# ---------------------------------------------------------------- determinism and splits


def test_same_seed_same_bytes_and_different_seeds_or_splits_differ():
    a, b = ShapesWorld(150, seed=7, max_objects=3), ShapesWorld(150, seed=7, max_objects=3)
    assert torch.equal(a.images, b.images) and a.captions == b.captions and a.attributes == b.attributes
    c = ShapesWorld(150, seed=8, max_objects=3)
    assert a.captions != c.captions and not torch.equal(a.images, c.images)
    d = ShapesWorld(150, seed=7, split="all", max_objects=3)
    assert a.captions != d.captions


def test_train_never_contains_heldout_and_heldout_contains_only_them(train, multi):
    held = set(heldout_combinations())
    for ds in (train, multi):
        assert all((o.colour, o.shape) not in held for objects in ds.attributes for o in objects)
    heldout = ShapesWorld(300, split="heldout", seed=1, max_objects=4)
    assert all((o.colour, o.shape) in held for objects in heldout.attributes for o in objects)
    assert {(o.colour, o.shape) for objects in heldout.attributes for o in objects} == held


def test_every_colour_shape_style_size_position_appears_in_train(train):
    objects = [o for objs in train.attributes for o in objs]
    assert {o.colour for o in objects} == set(COLOURS)
    assert {o.shape for o in objects} == set(SHAPES)
    assert {o.style for o in objects} == set(STYLES)
    assert {o.size for o in objects} == set(SIZES)
    assert {o.position for o in objects} == set(POSITIONS)


def test_styles_not_requested_never_appear():
    ds = ShapesWorld(200, styles=("filled", "outline"), max_objects=4)
    assert {o.style for objs in ds.attributes for o in objs} == {"filled", "outline"}


def test_sizes_and_positions_restrict_single_objects_and_default_to_all():
    every = ShapesWorld(80, max_objects=2, seed=3)
    spelled = ShapesWorld(80, max_objects=2, seed=3, sizes=tuple(reversed(SIZES)), positions=set(POSITIONS))
    assert torch.equal(every.images, spelled.images) and every.captions == spelled.captions
    few = ShapesWorld(300, max_objects=2, seed=3, sizes=["large"], positions=("center", "top"))
    singles = [objs[0] for objs in few.attributes if len(objs) == 1]
    assert {o.size for o in singles} == {"large"} and {o.position for o in singles} == {"center", "top"}
    assert any(len(objs) > 1 for objs in few.attributes), "scenes of several objects are still drawn"
    with pytest.raises(ValueError, match="positions"):
        ShapesWorld(4, positions=["middle"])
    with pytest.raises(ValueError, match="sizes"):
        ShapesWorld(4, sizes=[])


def test_order_of_styles_and_heldout_pairs_does_not_matter():
    pairs = heldout_combinations(8, seed=4)
    a = ShapesWorld(60, styles=("filled", "striped"), heldout=pairs, max_objects=2)
    b = ShapesWorld(60, styles=["striped", "filled", "striped"], heldout=set(reversed(pairs)), max_objects=2)
    assert torch.equal(a.images, b.images) and a.captions == b.captions


def test_custom_heldout_and_split_all():
    ds = ShapesWorld(100, split="heldout", heldout=[("red", "circle")])
    assert all(objs == [o for o in objs if (o.colour, o.shape) == ("red", "circle")] for objs in ds.attributes)
    ds = ShapesWorld(2000, split="all", heldout=[])
    assert len({(o.colour, o.shape) for objs in ds.attributes for o in objs}) == len(COLOURS) * len(SHAPES)


# ---------------------------------------------------------------- captions and vocabulary


def test_single_object_captions_name_colour_and_shape(train):
    canonical = 0
    for caption, (obj,) in zip(train.captions, train.attributes):
        words = caption.split()
        assert WORD_RE.match(caption), caption
        assert obj.colour in words, caption
        assert set(SHAPE_SYNONYMS[obj.shape]) & set(words), caption
        canonical += obj.shape in words
    assert canonical > 0.6 * len(train)
    assert TEMPLATES[0] == "a photo of a {colour} {shape}"
    assert any(c.startswith("a photo of a ") and len(c.split()) == 6 for c in train.captions)


def test_multi_object_captions_match_their_scenes(multi):
    kinds = Counter()
    for caption, objects in zip(multi.captions, multi.attributes):
        words = caption.split()
        assert WORD_RE.match(caption), caption
        assert all(o.colour in words for o in objects), caption
        numbers = [w for w in words if w in NUMBER_WORDS]
        if numbers:
            kinds["count"] += 1
            assert NUMBER_WORDS.index(numbers[0]) + 1 == len(objects) > 1, caption
            assert len({(o.shape, o.colour, o.style, o.size) for o in objects}) == 1, caption
            assert {plural(w) for w in SHAPE_SYNONYMS[objects[0].shape]} & set(words), caption
        elif len(objects) == 2:
            kinds["relation"] += 1
            assert {"left", "right", "above", "below", "under"} & set(words), caption
            assert all(set(SHAPE_SYNONYMS[o.shape]) & set(words) for o in objects), caption
        else:
            kinds["single"] += 1
            assert len(objects) == 1, caption
    assert kinds["count"] and kinds["relation"] and kinds["single"]


def test_every_caption_and_probe_word_is_in_the_vocabulary(train, multi):
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    words = {w for ds in (train, multi) for c in ds.captions for w in c.split()}
    for c in COLOURS:
        for s in SHAPES:
            words |= set(TEMPLATES[0].format(colour=c, shape=s).split())
            words |= set(relation_caption((c, s), RELATIONS[0], ("blue", "square")).split())
            for k in range(1, 5):
                words |= set(count_caption(c, s, k).split())
    words |= {w for r in RELATIONS for w in r.split()}
    assert words <= set(vocab), words - set(vocab)
    assert {"circles", "boxes", "crosses", "two", "four"} <= set(vocab)


def test_custom_templates_are_used_and_extend_the_vocabulary():
    templates = ["an image with one {colour} {shape}"]
    ds = ShapesWorld(50, templates=templates)
    assert all(c.startswith("an image with one ") for c in ds.captions)
    assert {"an", "image", "with"} <= set(vocabulary(templates))


def test_probe_captions():
    assert relation_caption(("red", "circle"), "left of", ("blue", "square")) == "a red circle left of a blue square"
    assert count_caption("blue", "square", 3) == "three blue squares"
    assert count_caption("red", "cross", 1) == "one red cross"
    assert plural("box") == "boxes"


# ---------------------------------------------------------------- pixels


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from(SHAPES), colour=st.sampled_from(list(COLOURS)), size=st.sampled_from(SIZES),
       position=st.sampled_from(POSITIONS), rotation=st.floats(-15, 15))
def test_filled_shape_has_its_colour_and_sits_in_its_cell(shape, colour, size, position, rotation):
    px = _pixels(render_scene([ShapeSpec(shape, colour, size, position, "filled", rotation=rotation)]))
    fg = _foreground(px)
    values, counts = np.unique(px[fg], axis=0, return_counts=True)
    assert tuple(values[counts.argmax()]) == COLOURS[colour]
    x, y = _centroid(fg)
    assert (_third(x), _third(y)) == _expected_cell(position)


def test_background_is_plain_and_jitter_is_deterministic():
    spec = [ShapeSpec("star", "red", "small", "center")]
    px = _pixels(render_scene(spec))
    assert tuple(px[0, 0]) == BACKGROUND
    assert np.array_equal(_pixels(render_scene(spec, seed=3)), _pixels(render_scene(spec, seed=3)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", SIZES)
def test_outline_and_stripes_colour_fewer_pixels_than_filled(shape, size):
    images = {style: _pixels(render_scene([ShapeSpec(shape, "blue", size, "center", style)])) for style in STYLES}
    area = {style: _foreground(px).sum() for style, px in images.items()}
    ink = {style: np.abs(px - np.array(BACKGROUND)).sum() for style, px in images.items()}
    assert 0 < area["outline"] < area["filled"] and ink["outline"] < 0.8 * ink["filled"]
    assert area["striped"] <= area["filled"] and ink["striped"] < 0.95 * ink["filled"]
    if size == "large":  # small shapes are mostly outline, so there the styles differ less
        assert area["outline"] < 0.9 * area["filled"]
        assert ink["outline"] < ink["striped"] < 0.9 * ink["filled"]


def test_dataset_objects_sit_in_their_named_cells(train):
    for image, (obj,) in zip(train.images, train.attributes):
        x, y = _centroid(_foreground(_pixels(image)))
        assert (_third(x), _third(y)) == _expected_cell(obj.position), obj


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_relation_scenes_make_the_relation_true(relation, seed):
    first, second = ("red", "circle"), ("blue", "square")
    for a, b in ((first, second), (second, first)):
        px = _pixels(render_scene(relation_scene(a, relation, b, seed=seed)))
        (ax, ay), (bx, by) = _centroid(_near(px, COLOURS[a[0]])), _centroid(_near(px, COLOURS[b[0]]))
        horizontal, vertical = abs(ax - bx), abs(ay - by)
        expected = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[relation]
        assert expected
        assert (horizontal > 2 * vertical) if relation.endswith("of") else (vertical > 2 * horizontal)


def test_dataset_relation_captions_are_true(multi):
    checked = 0
    for caption, objects in zip(multi.captions, multi.attributes):
        match = re.search(r"(left of|right of|above|below|under)", caption)
        if len(objects) != 2 or not match:
            continue
        (ax, ay), (bx, by) = objects[0].xy, objects[1].xy
        relation = match.group(1)
        assert {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by,
                "under": ay > by}[relation], caption
        assert caption.index(objects[0].colour) < caption.index(relation) < caption.rindex(objects[1].colour)
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_count_scenes_have_k_separate_blobs(shape, k):
    for seed, style in enumerate(STYLES):
        objects = count_scene("green", shape, k, style=style, seed=seed)
        assert len(objects) == k and len({(o.shape, o.colour, o.style) for o in objects}) == 1
        assert _components(_foreground(_pixels(render_scene(objects)))) == k


def test_dataset_count_scenes_show_as_many_blobs_as_the_caption_says(multi):
    checked = 0
    for image, caption, objects in zip(multi.images, multi.captions, multi.attributes):
        words = caption.split()
        number = [w for w in words if w in NUMBER_WORDS]
        if number:
            assert NUMBER_WORDS.index(number[0]) + 1 == len(objects) == _components(_foreground(_pixels(image)))
            checked += 1
    assert checked > 50


# ---------------------------------------------------------------- tensors and labels


def test_tensor_shapes_types_and_ranges(train):
    n = len(train)
    assert train.images.shape == (n, 3, SIZE, SIZE) and train.images.dtype == torch.uint8
    image, caption = train[3]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and caption == train.captions[3]
    raw = train.tensors(normalize=False)
    assert raw.dtype == torch.float32 and torch.allclose(raw * 255, train.images.float())
    norm = train.tensors()
    expected = (raw - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(norm, expected)
    big = ShapesWorld(4, image_size=48, transform=lambda x: x * 2)
    assert big.images.shape == (4, 3, 48, 48) and torch.allclose(big[0][0], big.images[0].float() / 255 * 2)


def test_labels_and_class_names_agree(train):
    names = class_names()
    assert len(names) == len(COLOURS) * len(SHAPES) == 64
    pair, colour, shape = train.labels(), train.labels("colour"), train.labels("shape")
    assert pair.dtype == torch.long and pair.shape == (len(train),)
    assert torch.equal(pair, colour * len(SHAPES) + shape)
    for label, (obj,) in zip(pair.tolist(), train.attributes):
        assert names[label] == f"{obj.colour} {obj.shape}"
    assert class_names("colour") == list(COLOURS) and class_names("shape") == list(SHAPES)


# ---------------------------------------------------------------- held-out combinations


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heldout_combinations_form_a_latin_pattern(seed):
    pairs = heldout_combinations(16, seed)
    assert pairs == heldout_combinations(16, seed) and len(set(pairs)) == 16
    assert set(Counter(c for c, _ in pairs).values()) == {2}
    assert set(Counter(s for _, s in pairs).values()) == {2}
    assert heldout_combinations(16, seed + 10) != pairs


@given(n=st.integers(0, 56), seed=st.integers(0, 10**6))
def test_heldout_combinations_leave_every_colour_and_shape_in_training(n, seed):
    pairs = set(heldout_combinations(n, seed))
    assert len(pairs) == n
    train = {(c, s) for c in COLOURS for s in SHAPES} - pairs
    assert {c for c, _ in train} == set(COLOURS) and {s for _, s in train} == set(SHAPES)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), max_objects=st.integers(1, 4), split=st.sampled_from(["train", "heldout"]))
def test_any_seed_respects_the_split_and_the_vocabulary(seed, max_objects, split):
    ds = ShapesWorld(40, split=split, seed=seed, max_objects=max_objects, styles=STYLES)
    held = set(ds.heldout)
    assert all(((o.colour, o.shape) in held) == (split == "heldout") for objs in ds.attributes for o in objs)
    assert {w for c in ds.captions for w in c.split()} <= set(vocabulary())
    assert all(1 <= len(objs) <= max_objects for objs in ds.attributes)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(n=0), ValueError, "n"),
    (dict(n=-3), ValueError, "n"),
    (dict(n=2.5), TypeError, "n"),
    (dict(n=4, split="test"), ValueError, "split"),
    (dict(n=4, seed=-1), ValueError, "seed"),
    (dict(n=4, styles=("dotted",)), ValueError, "styles"),
    (dict(n=4, styles="filled"), TypeError, "styles"),
    (dict(n=4, styles=()), ValueError, "styles"),
    (dict(n=4, templates=[]), ValueError, "templates"),
    (dict(n=4, image_size=8), ValueError, "image_size"),
    (dict(n=4, heldout=[("mauve", "circle")]), ValueError, "heldout colour"),
    (dict(n=4, heldout=[("red", "blob")]), ValueError, "heldout shape"),
    (dict(n=4, heldout=["red circle"]), TypeError, "heldout"),
    (dict(n=4, split="heldout", heldout=[]), ValueError, "heldout"),
    (dict(n=4, max_objects=0), ValueError, "max_objects"),
    (dict(n=4, max_objects=5), ValueError, "max_objects"),
    (dict(n=4, templates=["a {color} {shape}"]), ValueError, "templates"),
    (dict(n=4, templates="a {colour} {shape}"), TypeError, "templates"),
    (dict(n=4, transform=3), TypeError, "transform"),
])
def test_dataset_rejects_bad_input_naming_the_argument(kwargs, error, name):
    with pytest.raises(error, match=f"^{re.escape(name)}:"):
        ShapesWorld(**kwargs)


@pytest.mark.parametrize("call, error, name", [
    (lambda: ShapeSpec("blob", "red"), ValueError, "shape"),
    (lambda: ShapeSpec("circle", "mauve"), ValueError, "colour"),
    (lambda: ShapeSpec("circle", "red", style="dotted"), ValueError, "style"),
    (lambda: ShapeSpec("circle", "red", position="middle"), ValueError, "position"),
    (lambda: ShapeSpec("circle", "red", centre=(0.5, 1.5)), ValueError, "centre"),
    (lambda: render_scene(ShapeSpec("circle", "red")), TypeError, "objects"),
    (lambda: render_scene([("red", "circle")]), TypeError, "objects"),
    (lambda: render_scene([ShapeSpec("circle", "red")], image_size=10), ValueError, "image_size"),
    (lambda: count_scene("red", "circle", 5), ValueError, "k"),
    (lambda: relation_scene(("red", "circle"), "near", ("blue", "square")), ValueError, "relation"),
    (lambda: heldout_combinations(57), ValueError, "n"),
    (lambda: count_caption("mauve", "circle", 2), ValueError, "colour"),
    (lambda: relation_caption(("red", "blob"), "above", ("blue", "square")), ValueError, "first shape"),
    (lambda: class_names("size"), ValueError, "kind"),
    (lambda: ShapesWorld(2).labels("size"), ValueError, "kind"),
])
def test_helpers_reject_bad_input_naming_the_argument(call, error, name):
    with pytest.raises(error, match=f"^{re.escape(name)}"):
        call()


def test_normalize_images_matches_the_formula_and_rejects_bad_input():
    from clip_tutorial.data import MEAN, STD, normalize_images

    pixels = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([(pixels[:, c].float() / 255 - MEAN[c]) / STD[c] for c in range(3)], dim=1)
    torch.testing.assert_close(normalize_images(pixels), expected)
    with pytest.raises(TypeError, match="pixels"):
        normalize_images(pixels.float())
    with pytest.raises(ValueError, match="pixels"):
        normalize_images(pixels[:, :2])
