"""Tests of NegCLIP's pieces (Chapter 6.6): swapped-attribute captions, the loss with hard negatives against a
hand-computed reference, and the training loop's ``negatives`` argument."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from conftest import make_tiny_clip

from clip_tutorial.data import COLOURS, SHAPE_SYNONYMS, ShapesWorld, heldout_combinations
from clip_tutorial.data.negatives import SWAPS, hard_negative_captions, swap_attributes
from clip_tutorial.objectives.loss import clip_loss, hard_negative_clip_loss
from clip_tutorial.train import TrainConfig, train_clip
from clip_tutorial.train.recipes import RECIPES
import clip_tutorial.train.loop as loop_module


# -- swap_attributes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("caption, swap, expected", [
    ("a red circle left of a blue square", "colour", "a blue circle left of a red square"),
    ("a red circle left of a blue square", "shape", "a red square left of a blue circle"),
    ("a photo of a pink plus to the right of a cyan box", "colour",
     "a photo of a cyan plus to the right of a pink box"),
    ("a photo of a pink plus to the right of a cyan box", "shape", "a photo of a pink box to the right of a cyan plus"),
    ("a red circle above a red square", "shape", "a red square above a red circle"),
])
def test_swap_attributes_exchanges_exactly_two_words(caption, swap, expected):
    swapped = swap_attributes(caption, swap)
    assert swapped == expected
    assert sorted(swapped.split()) == sorted(caption.split())  # the same bag of words
    assert sum(a != b for a, b in zip(swapped.split(), caption.split())) == 2


@pytest.mark.parametrize("caption, swap", [
    ("a red circle above a red square", "colour"),     # same colour: the swap says the same thing
    ("a red box below a blue square", "shape"),         # box and square are one shape
    ("a photo of a red circle", "colour"),              # one object
    ("three blue squares", "shape"),                    # identical objects
    ("a small red circle on the left", "colour"),
    ("", "colour"),
])
def test_swap_attributes_returns_none_when_nothing_changes_meaning(caption, swap):
    assert swap_attributes(caption, swap) is None


def test_swap_attributes_refuses_bad_input():
    with pytest.raises(ValueError, match="swap"):
        swap_attributes("a red circle left of a blue square", "size")
    with pytest.raises(TypeError, match="caption"):
        swap_attributes(["a red circle"], "colour")


# -- hard_negative_captions -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scenes():
    return ShapesWorld(1200, seed=3, max_objects=4, heldout=heldout_combinations(16, seed=0))


def _is_two_objects(objects) -> bool:
    return len(objects) == 2 and (objects[0].colour, objects[0].shape) != (objects[1].colour, objects[1].shape)


def test_every_two_object_caption_gets_a_swap_and_every_other_caption_itself(scenes):
    negatives = hard_negative_captions(scenes, seed=0)
    assert len(negatives) == len(scenes.captions)
    swapped = 0
    for caption, negative, objects in zip(scenes.captions, negatives, scenes.attributes):
        if _is_two_objects(objects):
            assert negative in {swap_attributes(caption, s) for s in SWAPS} - {None}
            swapped += 1
        else:
            assert negative == caption
    # k = 2 objects with probability 1/4, a relation caption half of those times: about 1 in 8
    assert 0.09 <= swapped / len(negatives) <= 0.16, swapped


def test_the_seed_chooses_the_swap_and_both_kinds_occur(scenes):
    a, b = hard_negative_captions(scenes, seed=0), hard_negative_captions(scenes, seed=0)
    c = hard_negative_captions(scenes, seed=1)
    assert a == b and a != c
    kinds = {s: sum(n == swap_attributes(x, s) for x, n in zip(scenes.captions, a)) for s in SWAPS}
    assert min(kinds.values()) >= 0.35 * sum(kinds.values()), kinds
    only_colour = hard_negative_captions(scenes, seed=0, swaps=("colour",))
    assert all(n == x or n == swap_attributes(x, "colour") for x, n in zip(scenes.captions, only_colour))


def test_hard_negative_captions_refuses_bad_input(scenes):
    with pytest.raises(TypeError, match="data"):
        hard_negative_captions(scenes.captions, seed=0)
    with pytest.raises(ValueError, match="seed"):
        hard_negative_captions(scenes, seed=-1)
    with pytest.raises(ValueError, match="swaps"):
        hard_negative_captions(scenes, seed=0, swaps=("size",))
    with pytest.raises(ValueError, match="swaps"):
        hard_negative_captions(scenes, seed=0, swaps=())


def test_every_shape_word_and_colour_is_known_to_the_swap():
    for colour in COLOURS:
        for words in SHAPE_SYNONYMS.values():
            caption = f"a {colour} {words[-1]} above a {'red' if colour != 'red' else 'blue'} heart"
            assert swap_attributes(caption, "colour") is not None


# -- hard_negative_clip_loss against a hand computation --------------------------------------------------

def _reference(image: torch.Tensor, text: torch.Tensor, negative: torch.Tensor, scale: float) -> float:
    """NegCLIP's loss written with Python floats, one log-sum-exp at a time."""
    def dot(a, b):
        return scale * sum(float(x) * float(y) for x, y in zip(a, b))

    n = len(image)
    rows = 0.0
    for i in range(n):
        logits = [dot(image[i], t) for t in text] + [dot(image[i], t) for t in negative]
        rows += math.log(sum(math.exp(v) for v in logits)) - logits[i]
    cols = 0.0
    for j in range(n):
        logits = [dot(image[i], text[j]) for i in range(n)]
        cols += math.log(sum(math.exp(v) for v in logits)) - logits[j]
    return (rows / n + cols / n) / 2


@pytest.mark.parametrize("n, m, seed", [(3, 2, 0), (4, 1, 1), (2, 5, 2), (5, 0, 3)])
def test_hard_negative_loss_matches_a_hand_computation(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    unit = lambda rows: torch.nn.functional.normalize(torch.randn(rows, 6, generator=g, dtype=torch.float64), dim=1)
    image, text, negative, scale = unit(n), unit(n), unit(m), 7.0
    loss = hard_negative_clip_loss(scale * image @ text.T, scale * image @ negative.T)
    assert float(loss) == pytest.approx(_reference(image, text, negative, scale), rel=1e-12)


def test_without_negatives_it_is_clip_loss_and_negatives_only_raise_it():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(8, 8, generator=g) * 3
    assert torch.equal(hard_negative_clip_loss(logits, logits[:, :0]), clip_loss(logits))
    extra = torch.randn(8, 3, generator=g)
    assert hard_negative_clip_loss(logits, extra) > clip_loss(logits)
    # text-to-image ignores the negatives: the gradient reaching them comes from the image rows only
    extra.requires_grad_(True)
    hard_negative_clip_loss(logits, extra).backward()
    probabilities = torch.cat([logits, extra.detach()], dim=1).softmax(dim=1)[:, 8:]
    assert torch.allclose(extra.grad, probabilities / (2 * 8), atol=1e-7)


def test_hard_negative_loss_refuses_bad_shapes():
    with pytest.raises(ValueError, match="logits_negative"):
        hard_negative_clip_loss(torch.zeros(4, 4), torch.zeros(3, 2))
    with pytest.raises(TypeError, match="logits_negative"):
        hard_negative_clip_loss(torch.zeros(4, 4), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="logits_per_image"):
        hard_negative_clip_loss(torch.zeros(4, 3), torch.zeros(4, 2))


# -- train_clip(negatives=...) ----------------------------------------------------------------------------

def _data(n: int = 96, context_length: int = 16):
    g = torch.Generator().manual_seed(0)
    _, tokenizer = make_tiny_clip(context_length)
    images = torch.randn(n, 3, 32, 32, generator=g)
    tokens = torch.randint(2, tokenizer.sot_id, (n, context_length), generator=g)
    tokens[:, 0], tokens[:, -1] = tokenizer.sot_id, tokenizer.eot_id
    return images, tokens


CONFIG = TrainConfig(steps=6, batch_size=32, warmup_steps=2, lr=1e-3)


def _train(images, tokens, **kwargs):
    model, _ = make_tiny_clip(seed=5)
    history = train_clip(model, images, tokens, CONFIG, progress=False, **kwargs)
    return model.state_dict(), history.loss


def test_negatives_none_is_the_loop_without_the_argument():
    images, tokens = _data()
    weights, loss = _train(images, tokens)
    same_weights, same_loss = _train(images, tokens, negatives=None)
    assert loss == same_loss
    assert all(torch.equal(weights[k], same_weights[k]) for k in weights)


def test_negatives_equal_to_their_captions_count_as_none():
    images, tokens = _data()
    weights, loss = _train(images, tokens)
    same_weights, same_loss = _train(images, tokens, negatives=tokens.clone())
    assert same_loss == pytest.approx(loss, rel=1e-5)
    assert all(torch.allclose(weights[k], same_weights[k], atol=1e-5) for k in weights)


def test_one_step_with_negatives_takes_the_loss_of_the_batch_plus_its_negatives():
    images, tokens = _data()
    negatives = tokens.clone()
    negatives[::3, 1] = (tokens[::3, 1] + 1) % 50 + 2  # a third of the pairs get a different caption
    model, _ = make_tiny_clip(seed=5)
    expected_model, _ = make_tiny_clip(seed=5)
    history = train_clip(model, images, tokens, replace(CONFIG, steps=1, warmup_steps=0), progress=False,
                         negatives=negatives)
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(CONFIG.seed))[:CONFIG.batch_size]
    kept = negatives[index][(negatives[index] != tokens[index]).any(dim=1)]
    assert len(kept) > 0
    with torch.no_grad():
        image = expected_model.encode_image(images[index], normalize=True)
        text = expected_model.encode_text(tokens[index], normalize=True)
        hard = expected_model.encode_text(kept, normalize=True)
        scale = expected_model.logit_scale.exp()
        expected = hard_negative_clip_loss(scale * image @ text.T, scale * image @ hard.T)
    assert history.loss[0] == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) > float(clip_loss(scale * image @ text.T))


def test_bad_negatives_and_several_processes_are_refused(monkeypatch):
    images, tokens = _data()
    model, _ = make_tiny_clip()
    with pytest.raises(ValueError, match="negatives"):
        train_clip(model, images, tokens, CONFIG, progress=False, negatives=tokens[:10])
    with pytest.raises(TypeError, match="negatives"):
        train_clip(model, images, tokens, CONFIG, progress=False, negatives=tokens.float())
    monkeypatch.setattr(loop_module, "rank_and_world", lambda: (0, 2))
    with pytest.raises(ValueError, match="one process"):
        train_clip(model, images, tokens, CONFIG, progress=False, negatives=tokens)


def test_the_negclip_recipe_is_ch1_scenes_plus_hard_negatives_only():
    control, remedy = RECIPES["ch1-scenes"], RECIPES["ch6-negclip"]
    assert remedy.hard_negatives and not control.hard_negatives
    assert replace(control, name=remedy.name, hard_negatives=True) == remedy
