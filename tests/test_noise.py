"""ALIGN's noise (Chapter 7.2): corrupt_captions and Recipe.caption_noise."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, strategies as st

from clip_tutorial.data.noise import corrupt_captions
from clip_tutorial.train import recipes

CAPTIONS = [f"a photo of a {c} {s}" for c in ("red", "green", "blue") for s in ("circle", "square")] * 7


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.4, 0.6, 1.0])
def test_exactly_that_fraction_is_replaced_by_other_captions(fraction: float) -> None:
    noisy, replaced = corrupt_captions(CAPTIONS, fraction, seed=1)
    assert replaced.dtype == torch.bool and replaced.shape == (len(CAPTIONS),)
    assert int(replaced.sum()) == round(fraction * len(CAPTIONS))
    for caption, new, was_replaced in zip(CAPTIONS, noisy, replaced.tolist()):
        assert (new != caption) == was_replaced, "every replaced caption is wrong, every other one untouched"
        assert new in CAPTIONS, "a wrong caption is an ordinary caption of the data"


def test_deterministic_and_input_unchanged() -> None:
    copy = list(CAPTIONS)
    first = corrupt_captions(CAPTIONS, 0.4, seed=3)
    assert CAPTIONS == copy
    again = corrupt_captions(CAPTIONS, 0.4, seed=3)
    assert first[0] == again[0] and torch.equal(first[1], again[1])
    assert corrupt_captions(CAPTIONS, 0.4, seed=4)[0] != first[0]


def test_wrong_captions_are_drawn_from_all_other_captions() -> None:
    # With many draws, every other caption turns up as a replacement for "red circle" images.
    captions = ["red circle"] * 50 + ["blue square", "green heart", "cyan star"] * 50
    noisy, replaced = corrupt_captions(captions, 1.0, seed=0)
    given_to_circles = {new for old, new in zip(captions, noisy) if old == "red circle"}
    assert given_to_circles == {"blue square", "green heart", "cyan star"}


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=30), st.floats(0, 1), st.integers(0, 10**6))
def test_property_count_and_wrongness(captions: list[str], fraction: float, seed: int) -> None:
    if len(set(captions)) < 2 and round(fraction * len(captions)):
        with pytest.raises(ValueError, match="two different captions"):
            corrupt_captions(captions, fraction, seed)
        return
    noisy, replaced = corrupt_captions(captions, fraction, seed)
    assert int(replaced.sum()) == round(fraction * len(captions))
    assert all((a != b) == r for a, b, r in zip(captions, noisy, replaced.tolist()))


@pytest.mark.parametrize("args, error, match", [
    ((CAPTIONS, 1.5), ValueError, "fraction"), ((CAPTIONS, -0.1), ValueError, "fraction"),
    ((CAPTIONS, "0.2"), TypeError, "fraction"), (("abc", 0.2), TypeError, "captions"),
    (([], 0.2), ValueError, "captions"), (([1, 2], 0.2), TypeError, "captions"),
    ((CAPTIONS, 0.2, 1.5), TypeError, "seed"), ((["same"] * 4, 0.5), ValueError, "two different"),
])
def test_bad_input(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        corrupt_captions(*args)


def test_recipe_caption_noise_reaches_the_training_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = recipes.get_recipe("ch1-demo")
    recipe = replace(demo, name="test-noise", n_train=300, caption_noise=0.4)
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(model, images, tokens, config, **kwargs):
        seen["tokens"] = tokens
        raise Stop

    monkeypatch.setattr(recipes, "train_clip", fake_train)
    with pytest.raises(Stop):
        recipes.train_recipe(recipe, device="cpu", progress=False)
    from clip_tutorial.data import ShapesWorld, heldout_combinations
    heldout = heldout_combinations(demo.n_heldout, seed=demo.data_seed)
    data = ShapesWorld(300, split="train", seed=demo.data_seed, image_size=32, styles=demo.styles, heldout=heldout)
    tokenizer = recipes.make_tokenizer(demo.model.context_length)
    noisy, replaced = corrupt_captions(data.captions, 0.4, seed=demo.data_seed)
    assert torch.equal(seen["tokens"], tokenizer(noisy))
    assert int(replaced.sum()) == 120


@pytest.mark.parametrize("bad", [-0.1, 1.1, "0.2", True])
def test_recipe_rejects_bad_noise(bad: object) -> None:
    with pytest.raises(ValueError, match="caption_noise"):
        replace(recipes.get_recipe("ch1-demo"), caption_noise=bad)
