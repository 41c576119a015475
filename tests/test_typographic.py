"""Tests of clip_tutorial.apps.typographic: measuring typographic attacks (Chapter 6.5)."""
from __future__ import annotations

import pytest
import torch

from clip_tutorial.apps.typographic import AttackResult, attack_grid, typographic_attack, wrong_colour_words
from clip_tutorial.data import COLOURS, ShapesWorld, class_names, normalize_images
from clip_tutorial.data.overlay import write_word
from clip_tutorial.evaluation.zeroshot import build_zero_shot_classifier, zero_shot_predict
from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.train.recipes import make_tokenizer


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tokenizer = make_tokenizer(12)
    config = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=32, vision_patch_size=8,
                        vision_heads=2, context_length=12, transformer_width=32, transformer_heads=2,
                        transformer_layers=1, vocab_size=tokenizer.vocab_size, eot_token_id=tokenizer.eot_id)
    model = CLIP(config).eval()
    data = ShapesWorld(24, split="all", seed=5, image_size=32)
    return model, tokenizer, data


def _pair(colour: str, shape: str) -> int:
    return class_names().index(f"{colour} {shape}")


def test_success_rate_by_hand():
    labels = torch.tensor([_pair("red", "circle"), _pair("blue", "star"), _pair("cyan", "heart"), _pair("red", "cross")])
    clean = labels.clone()
    clean[3] = _pair("pink", "cross")  # wrong when clean: never counted as flipped
    attacked = torch.tensor([_pair("blue", "circle"),  # flipped to the written colour
                             _pair("green", "star"),   # wrong, but not the written word
                             _pair("cyan", "heart"),   # unchanged
                             _pair("blue", "cross")])
    result = AttackResult(["blue", "red", "yellow", "blue"], labels, clean, attacked)
    assert result.flipped.tolist() == [True, False, False, False]
    assert result.success_rate == pytest.approx(1 / 3)
    assert result.clean_accuracy == pytest.approx(3 / 4)
    assert result.attacked_accuracy == pytest.approx(1 / 4)


def test_wrong_colour_words_are_wrong_uniform_and_deterministic():
    colours = torch.arange(len(COLOURS)).repeat(100)
    words = wrong_colour_words(colours, seed=3)
    assert words == wrong_colour_words(colours, seed=3)
    assert words != wrong_colour_words(colours, seed=4)
    names = list(COLOURS)
    assert all(w != names[c] for w, c in zip(words, colours.tolist()))
    for c in range(len(COLOURS)):  # each of the 7 other colours about 100/7 = 14 times
        counts = [sum(w == names[o] for w, k in zip(words, colours.tolist()) if k == c) for o in range(len(COLOURS))]
        assert counts[c] == 0 and min(counts[:c] + counts[c + 1:]) >= 3


def test_wrong_colour_words_exclude():
    colours = torch.arange(len(COLOURS)).repeat(20)
    words = wrong_colour_words(colours, seed=0, exclude=["black"])
    assert "black" not in words and len(set(words)) == len(COLOURS) - 1
    with pytest.raises(ValueError, match="exclude"):
        wrong_colour_words(colours, exclude=["mauve"])


def test_wrong_colour_words_errors():
    with pytest.raises(ValueError, match="colour_labels"):
        wrong_colour_words(torch.tensor([0, 8]))
    with pytest.raises(TypeError, match="colour_labels"):
        wrong_colour_words([0, 1])


def test_attack_matches_zero_shot_predict_by_hand(setup):
    model, tokenizer, data = setup
    words = wrong_colour_words(data.labels("colour"), seed=0)
    result = typographic_attack(model, tokenizer, data.images, data.labels("pair"), words, 0.25, "top")
    classifier = build_zero_shot_classifier(model, tokenizer, class_names())
    by_hand = torch.stack([write_word(im, w, 0.25, "top") for im, w in zip(data.images, words)])
    assert torch.equal(result.clean, zero_shot_predict(model, normalize_images(data.images), classifier))
    assert torch.equal(result.attacked, zero_shot_predict(model, normalize_images(by_hand), classifier))
    assert result.words == words and torch.equal(result.labels, data.labels("pair"))


def test_defence_is_applied_to_both_sides(setup):
    model, tokenizer, data = setup
    words = ["red"] * len(data)
    blank = typographic_attack(model, tokenizer, data.images, data.labels("pair"), words,
                               defence=lambda x: torch.zeros_like(x))
    assert (blank.clean == blank.clean[0]).all() and torch.equal(blank.clean, blank.attacked)


def test_attack_grid_equals_single_attacks(setup):
    model, tokenizer, data = setup
    words = wrong_colour_words(data.labels("colour"), seed=1)
    grid = attack_grid(model, tokenizer, data.images, data.labels("pair"), words, [0.15, 0.25], ["top", "center"])
    assert grid.shape == (2, 2)
    single = typographic_attack(model, tokenizer, data.images, data.labels("pair"), words, 0.25, "center")
    assert grid[1, 1].item() == pytest.approx(single.success_rate, nan_ok=True)


def test_attack_errors(setup):
    model, tokenizer, data = setup
    labels = data.labels("pair")
    with pytest.raises(ValueError, match="one word per image"):
        typographic_attack(model, tokenizer, data.images, labels, ["red"])
    with pytest.raises(TypeError, match="uint8"):
        typographic_attack(model, tokenizer, data.tensors(), labels, ["red"] * len(data))
    with pytest.raises(ValueError, match="labels"):
        typographic_attack(model, tokenizer, data.images, labels[:3], ["red"] * len(data))
    with pytest.raises(ValueError, match="sizes"):
        attack_grid(model, tokenizer, data.images, labels, ["red"] * len(data), [], ["top"])
