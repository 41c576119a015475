"""Tests of clip_tutorial.apps.limitations: the captions match the rendered scenes, the scoring is right, bad input is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_clip

from clip_tutorial.data import COLOURS, RELATIONS, SHAPES, count_scene, relation_scene, render_scene
from clip_tutorial.data import MEAN, STD
from clip_tutorial.apps.limitations import (OPPOSITE_RELATION, ProbeResult, choose_caption, counting_probe, fine_grained_probe,
                                  multiple_choice_probe, relation_probe, render_probe_images)


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_clip(16)


def _colour_at(image: torch.Tensor, colour: str) -> torch.Tensor:
    """Boolean (H, W) mask of the pixels close to a ShapesWorld colour."""
    target = torch.tensor(COLOURS[colour]).view(3, 1, 1)
    return (image.int() - target).abs().sum(0) < 40


# -- choose_caption: the pure scoring function ---------------------------------------------------------

def test_choose_caption_is_the_argmax_of_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    images, captions = torch.randn(50, 8, generator=g), torch.randn(50, 5, 8, generator=g)
    scale = torch.rand(50, 5, 1, generator=g) * 10 + 0.1  # lengths must not matter
    reference = torch.stack([torch.nn.functional.cosine_similarity(images[i][None], captions[i], dim=-1).argmax()
                             for i in range(50)])
    assert torch.equal(choose_caption(images, captions * scale), reference)


def test_choose_caption_on_hand_made_embeddings():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    captions = torch.tensor([[[0.0, 1.0], [2.0, 0.0]],      # image 0 points along x -> caption 1
                             [[0.0, 3.0], [1.0, 0.0]],      # image 1 along y -> caption 0
                             [[1.0, 0.0], [1.0, 1.0]]])     # image 2 diagonal -> caption 1
    assert choose_caption(images, captions).tolist() == [1, 0, 1]
    tie = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert choose_caption(torch.tensor([[1.0, 0.0]]), tie).tolist() == [0]  # ties go to the lowest index


@pytest.mark.parametrize("images, captions, error", [
    (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 2, 4), TypeError),
    ([[1.0]], torch.zeros(1, 2, 1), TypeError),
    (torch.zeros(3, 4), torch.zeros(3, 4), ValueError),
    (torch.zeros(3, 4), torch.zeros(2, 2, 4), ValueError),
    (torch.zeros(3, 4), torch.zeros(3, 2, 5), ValueError),
    (torch.zeros(0, 4), torch.zeros(0, 2, 4), ValueError),
])
def test_choose_caption_rejects_bad_shapes(images, captions, error):
    with pytest.raises(error):
        choose_caption(images, captions)


# -- the probe sets: captions that are true of the images ---------------------------------------------

def test_relation_probe_captions_are_true_and_swap_or_flip(tiny):
    model, tokenizer = tiny
    for contrast in ("swap", "flip", "object"):
        result = relation_probe(model, tokenizer, n=24, seed=3, contrast=contrast)
        assert isinstance(result, ProbeResult) and result.n == 24 and result.chance == 0.5
        assert result.images.shape == (24, 3, 32, 32) and result.images.dtype == torch.uint8
        assert sorted(result.by_group) == sorted(RELATIONS) and set(result.labels.tolist()) == {0, 1}
        for image, row, label, relation in zip(result.images, result.candidates, result.labels, result.groups):
            true, false = row[label], row[1 - label]
            words = true.split()  # "a red circle left of a blue square"
            first, second = (words[1], words[2]), (words[-2], words[-1])
            assert first[0] != second[0] and first[1] != second[1]
            assert " ".join(words[3:-3]) == relation
            if contrast == "swap":
                assert false == f"a {second[0]} {second[1]} {relation} a {first[0]} {first[1]}"
                assert sorted(false.split()) == sorted(true.split())  # same words, different order
            elif contrast == "flip":
                assert false == f"a {first[0]} {first[1]} {OPPOSITE_RELATION[relation]} a {second[0]} {second[1]}"
            else:  # same first object and relation, a second object that is not in the image
                words = false.split()
                assert words[:-2] == true.split()[:-2] and words[-2] not in (first[0], second[0])
                assert words[-1] not in (first[1], second[1])
            # the relation really holds in the pixels: compare the centres of the two colours
            ys1, xs1 = torch.nonzero(_colour_at(image, first[0]), as_tuple=True)
            ys2, xs2 = torch.nonzero(_colour_at(image, second[0]), as_tuple=True)
            assert len(xs1) > 5 and len(xs2) > 5
            dx, dy = xs2.float().mean() - xs1.float().mean(), ys2.float().mean() - ys1.float().mean()
            expected = {"left of": dx > 4, "right of": dx < -4, "above": dy > 4, "below": dy < -4}[relation]
            assert expected, (true, float(dx), float(dy))


def _blobs(mask: np.ndarray) -> int:
    """Number of 8-connected components of a boolean mask."""
    seen, blobs = np.zeros_like(mask), 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        blobs, stack = blobs + 1, [(y, x)]
        while stack:
            a, b = stack.pop()
            if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not seen[a, b]:
                seen[a, b] = True
                stack += [(a + i, b + j) for i in (-1, 0, 1) for j in (-1, 0, 1)]
    return blobs


@pytest.mark.parametrize("distractors", [False, True])
def test_counting_probe_candidates_and_counts(tiny, distractors):
    model, tokenizer = tiny
    result = counting_probe(model, tokenizer, n=18, seed=1, distractors=distractors)
    assert result.chance == 0.25 and result.classes == ["1", "2", "3", "4"]
    assert list(result.by_group) == (["1", "2", "3"] if distractors else ["1", "2", "3", "4"])
    assert result.confusion().shape == (4, 4) and int(result.confusion().sum()) == 18
    for image, row, label, scene in zip(result.images, result.candidates, result.labels, result.scenes):
        colour = row[0].split()[1]
        assert row[0].startswith("one ") and row[3].startswith("four ")
        # count the blobs of the named colour, and of every colour
        assert _blobs(_colour_at(image, colour).numpy()) == int(label) + 1, row[label]
        colours = {o.colour for o in scene}
        assert len({o.shape for o in scene}) == 1 and len(colours) == (2 if distractors else 1)
        assert sum(_blobs(_colour_at(image, c).numpy()) for c in colours) == len(scene)
        assert (len(scene) > int(label) + 1) if distractors else (len(scene) == int(label) + 1)



def test_fine_grained_probe_shares_images_and_uses_fixed_classes(tiny):
    model, tokenizer = tiny
    results = fine_grained_probe(model, tokenizer, n=16, seed=0, size="small")
    shape, colour = results["shape"], results["colour"]
    assert torch.equal(shape.images, colour.images) and shape.chance == colour.chance == 1 / 8
    assert shape.classes == list(SHAPES) and colour.classes == list(COLOURS)
    for s_row, s_label, c_row, c_label in zip(shape.candidates, shape.labels, colour.candidates, colour.labels):
        assert s_row[s_label] == c_row[c_label]  # the same true caption
        assert [r.split()[-1] for r in s_row] == list(SHAPES)
        assert [r.split()[-2] for r in c_row] == list(COLOURS)
    assert list(shape.by_group) == list(SHAPES)[:8]


def test_probes_are_deterministic_and_accuracy_matches_predictions(tiny):
    model, tokenizer = tiny
    a, b = relation_probe(model, tokenizer, n=12, seed=5), relation_probe(model, tokenizer, n=12, seed=5)
    assert torch.equal(a.images, b.images) and a.candidates == b.candidates and torch.equal(a.predictions, b.predictions)
    assert relation_probe(model, tokenizer, n=12, seed=6).candidates != a.candidates
    for result in (a, counting_probe(model, tokenizer, n=8), fine_grained_probe(model, tokenizer, n=8)["shape"]):
        assert result.accuracy == pytest.approx(result.correct.float().mean().item())
        assert 0.0 <= result.accuracy <= 1.0 and result.predictions.shape == (result.n,)
        assert "accuracy=" in repr(result)


def test_multiple_choice_probe_matches_a_manual_computation(tiny):
    model, tokenizer = tiny
    scenes = [relation_scene(("red", "circle"), "left of", ("blue", "square")), count_scene("green", "star", 3)]
    pixels = torch.stack([torch.from_numpy(np.array(render_scene(s))).permute(2, 0, 1) for s in scenes])
    candidates = [["a red circle left of a blue square", "a blue square left of a red circle"],
                  ["two green stars", "three green stars"]]
    result = multiple_choice_probe(model, tokenizer, pixels, candidates, [0, 1])
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    x = (pixels.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        logits = torch.stack([model(x[i:i + 1], tokenizer(candidates[i])).logits_per_image[0] for i in range(2)])
    assert result.predictions.tolist() == logits.argmax(1).tolist()
    same = multiple_choice_probe(model, tokenizer, x, candidates, [0, 1])  # normalised floats give the same
    assert torch.equal(same.predictions, result.predictions) and torch.equal(same.images, pixels)
    with pytest.raises(ValueError, match="no fixed classes"):
        result.confusion()


def test_render_probe_images_matches_render_scene_and_normalises_like_shapesworld():
    scenes = [relation_scene(("red", "circle"), "left of", ("blue", "square")), count_scene("green", "star", 2)]
    pixels = render_probe_images(scenes)
    assert pixels.dtype == torch.uint8 and pixels.shape == (2, 3, 32, 32)
    assert torch.equal(pixels[1], torch.from_numpy(np.array(render_scene(scenes[1]))).permute(2, 0, 1))
    normalised = render_probe_images(scenes, seeds=[1, 2], normalize=True)
    expected = (render_probe_images(scenes, seeds=[1, 2]).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(normalised, expected)
    assert render_probe_images(scenes, image_size=48).shape == (2, 3, 48, 48)
    with pytest.raises(ValueError, match="scenes"):
        render_probe_images([])
    with pytest.raises(ValueError, match="seeds"):
        render_probe_images(scenes, seeds=[1])


# -- bad input -----------------------------------------------------------------------------------------

def test_probes_reject_bad_input(tiny):
    model, tokenizer = tiny
    with pytest.raises(TypeError, match="model"):
        relation_probe("not a model", tokenizer)
    with pytest.raises(TypeError, match="tokenizer"):
        counting_probe(model, None)
    with pytest.raises(ValueError, match="n"):
        relation_probe(model, tokenizer, n=0)
    with pytest.raises(ValueError, match="contrast"):
        relation_probe(model, tokenizer, contrast="mirror")
    with pytest.raises(ValueError, match="differ in both"):
        relation_probe(model, tokenizer, pairs=[("red", "circle"), ("red", "square")])
    with pytest.raises(ValueError, match="colour"):
        counting_probe(model, tokenizer, pairs=[("mauve", "circle")])
    with pytest.raises(TypeError, match="distractors"):
        counting_probe(model, tokenizer, distractors="yes")
    with pytest.raises(ValueError, match="max_count"):
        counting_probe(model, tokenizer, max_count=5)
    with pytest.raises(ValueError, match="size"):
        fine_grained_probe(model, tokenizer, size="huge")
    with pytest.raises(ValueError, match="every shape"):
        fine_grained_probe(model, tokenizer, pairs=[("red", "circle")])
    pixels = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="candidates"):
        multiple_choice_probe(model, tokenizer, pixels, [["a", "b"]], [0])
    with pytest.raises(ValueError, match="same number"):
        multiple_choice_probe(model, tokenizer, pixels, [["a", "b"], ["a"]], [0, 0])
    with pytest.raises(ValueError, match="labels"):
        multiple_choice_probe(model, tokenizer, pixels, [["a", "b"], ["a", "b"]], [0, 2])
    with pytest.raises(TypeError, match="images"):
        multiple_choice_probe(model, tokenizer, pixels.int(), [["a", "b"], ["a", "b"]], [0, 1])
    with pytest.raises(ValueError, match=r"images: expected a tensor \(N, 3, H, W\)"):
        multiple_choice_probe(model, tokenizer, pixels[:, :1], [["a", "b"], ["a", "b"]], [0, 1])
    with pytest.raises(TypeError, match="distractors: expected True or False"):
        counting_probe(model, tokenizer, distractors=1)
    with pytest.raises(ValueError, match="labels"):
        multiple_choice_probe(model, tokenizer, pixels, [["a", "b"], ["a", "b"]], [])
    with pytest.raises(ValueError, match="groups"):
        multiple_choice_probe(model, tokenizer, pixels, [["a", "b"], ["a", "b"]], [0, 1], groups=["x"])
