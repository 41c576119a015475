"""Tests of the generator recipes, their training, EMA, saving and loading, the command line, and the shipped files."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from clip_tutorial.core.storage import sha256_file
from clip_tutorial.data.render import SIZES
from clip_tutorial.generate import shipped
from clip_tutorial.generate.__main__ import main
from clip_tutorial.generate.decoder import ema_decay_at, train_denoiser
from clip_tutorial.generate.diffusion import make_schedule
from clip_tutorial.generate.judge import judge_accuracy
from clip_tutorial.generate.recipes import (GENERATOR_RECIPES, GeneratorRecipe, all_prompts, eval_prompt,
                                           get_generator_recipe, recipe_scenes)
from clip_tutorial.generate.trainer import check_loss, evaluate_generator, sample_pictures, train_generator
from clip_tutorial.generate.unet import UNet

TINY = dict(steps=2, n_train=32, batch_size=8, eval_n=4, sample_steps=2, channels=8)


# ---------------------------------------------------------------- EMA
def test_ema_decay_warms_up_then_stays_at_the_decay():
    assert ema_decay_at(1, 0.999) == pytest.approx(2 / 11)
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(100_000, 0.999) == 0.999
    with pytest.raises(ValueError, match="decay"):
        ema_decay_at(1, 1.0)
    with pytest.raises(ValueError, match="update"):
        ema_decay_at(0, 0.9)


class Recorder(UNet):
    """A UNet that remembers its weights each time it is called (once per training step)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def forward(self, *args, **kwargs):
        if self.training:
            self.seen.append([p.detach().clone() for p in self.parameters()])
        return super().forward(*args, **kwargs)


def test_ema_weights_are_the_warmed_up_average_of_every_step():
    gen = torch.Generator().manual_seed(0)
    x, cond = torch.rand(12, 3, 8, 8, generator=gen) * 2 - 1, torch.randn(12, 4, generator=gen)
    schedule = make_schedule("cosine", 20)
    settings = dict(steps=4, batch_size=4, lr=1e-2, seed=3, progress=False, parameterization="x0")

    def net(cls):
        torch.manual_seed(0)
        return cls("pooled", cond_dim=4, channels=8, groups=4, mults=(1, 2))

    raw = net(UNet)
    train_denoiser(raw, schedule, x, cond, **settings)
    recorded = net(Recorder)
    train_denoiser(recorded, schedule, x, cond, ema_decay=0.9, **settings)
    weights = recorded.seen + [[p.detach() for p in raw.parameters()]]  # w_0 ... w_4 (w_4: the raw run's end)
    assert len(weights) == 5
    expected = [w.clone() for w in weights[0]]
    for k, step_weights in enumerate(weights[1:], start=1):
        d = ema_decay_at(k, 0.9)
        expected = [d * e + (1 - d) * w for e, w in zip(expected, step_weights)]
    for got, want, last in zip(recorded.parameters(), expected, weights[-1]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(g, w) for g, w in zip(recorded.parameters(), weights[-1])), "EMA != raw weights"


def test_train_denoiser_refuses_a_bad_ema_decay():
    net = UNet("pooled", cond_dim=4, channels=8, groups=4, mults=(1, 2))
    with pytest.raises(ValueError, match="ema_decay"):
        train_denoiser(net, make_schedule("cosine", 10), torch.zeros(4, 3, 8, 8), torch.zeros(4, 4), steps=1,
                       batch_size=2, ema_decay=1.0, progress=False)


# ---------------------------------------------------------------- recipes
def test_recipes_round_trip_and_name_themselves():
    for name, recipe in GENERATOR_RECIPES.items():
        assert recipe.name == name == get_generator_recipe(name).name
        assert GeneratorRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    pooled, tokens = GENERATOR_RECIPES["ch7-sd-pooled"], GENERATOR_RECIPES["ch7-sd-tokens"]
    differ = {k for k, v in pooled.to_dict().items() if tokens.to_dict()[k] != v}
    assert differ == {"name", "description", "condition"}, "the 7.6 pair differs in its condition only"


@pytest.mark.parametrize("bad, match", [(dict(kind="gan"), "kind"), (dict(condition="sound"), "condition"),
                                        (dict(steps=0), "steps"), (dict(styles=("dotted",)), "styles"),
                                        (dict(sizes=()), "sizes"), (dict(ema_decay=1.0), "ema_decay"),
                                        (dict(positions=("middle",)), "positions")])
def test_bad_recipes_are_refused(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        GeneratorRecipe(name="x", description="x", **bad)
    with pytest.raises(ValueError, match="generator recipes"):
        get_generator_recipe("ch7-nothing")
    with pytest.raises(ValueError, match="unknown keys"):
        GeneratorRecipe.from_dict({"name": "x", "description": "x", "colour": "red"})


def test_recipe_scenes_keep_the_sizes_and_positions_asked_and_a_stable_prefix():
    recipe = GeneratorRecipe(name="x", description="x", sizes=("large",), styles=("filled",),
                             positions=("center", "left"))
    few, more = recipe_scenes(recipe, 10, "train", 5), recipe_scenes(recipe, 40, "train", 5)
    assert torch.equal(few.images, more.images[:10]) and few.captions == more.captions[:10]
    assert all("small" not in c and "little" not in c and "tiny" not in c for c in more.captions)
    assert not any(word in c for c in more.captions for word in ("top", "bottom", " right"))
    assert any("left" in c for c in more.captions) and any("center" in c for c in more.captions)
    centred = recipe_scenes(GENERATOR_RECIPES["ch7-decoder"], 200, "train", 5).images.float()
    anywhere = recipe_scenes(GENERATOR_RECIPES["ch7-judge"], 200, "train", 5).images.float()
    # centred objects leave the corners as background; objects anywhere paint them often
    assert centred[:, :, :6, :6].std(dim=(2, 3)).mean() < 0.5 * anywhere[:, :, :6, :6].std(dim=(2, 3)).mean()
    held = recipe_scenes(recipe, 30, "heldout", 5)
    seen_pairs = set(zip(more.colours.tolist(), more.shapes.tolist()))
    assert not seen_pairs & set(zip(held.colours.tolist(), held.shapes.tolist()))
    assert set(SIZES) >= {"large"}


def test_all_prompts_name_every_pair_in_table_order_and_mark_the_held_out():
    from clip_tutorial.data.render import COLOURS, SHAPES

    held = [("red", "star"), ("cyan", "circle")]
    grid = all_prompts(held, per_pair=3)
    assert len(grid.texts) == 3 * len(COLOURS) * len(SHAPES)
    for i in (0, 5, 100, len(grid.texts) - 1):  # row-major: colour by colour, shape by shape, 3 in a row
        colour, shape = list(COLOURS)[grid.colours[i]], SHAPES[grid.shapes[i]]
        pair = i // 3
        assert (colour, shape) == (list(COLOURS)[pair // len(SHAPES)], SHAPES[pair % len(SHAPES)])
        assert grid.texts[i] == eval_prompt(colour, shape)
        assert bool(grid.heldout[i]) == ((colour, shape) in held)
    assert int(grid.heldout.sum()) == 3 * len(held)


@pytest.mark.parametrize("heldout, per_pair, match", [([("red", "star")], 0, "per_pair"),
                                                      ([("red", "blob")], 1, "shape"),
                                                      (["red star"], 1, "heldout"),
                                                      ("red star", 1, "heldout")])
def test_all_prompts_refuses_bad_input(heldout, per_pair, match):
    with pytest.raises((TypeError, ValueError), match=match):
        all_prompts(heldout, per_pair=per_pair)


# ---------------------------------------------------------------- training, saving, loading
@pytest.fixture(scope="module")
def tiny_judge():
    return train_generator(replace(GENERATOR_RECIPES["ch7-judge"], steps=2, n_train=64, batch_size=16, eval_n=8),
                           progress=False)


@pytest.mark.parametrize("condition", ["image", "tokens"])
def test_a_tiny_recipe_trains_saves_and_loads_the_same_weights(tmp_path, tiny_judge, condition):
    recipe = GeneratorRecipe(name="tiny", description="x", condition=condition, **TINY)
    trained = train_generator(recipe, judge=tiny_judge.model, progress=False)
    assert set(trained.metrics["seen"]) == {"colour", "shape", "both"}
    assert all(0 <= v <= 1 for split in ("seen", "heldout") for v in trained.metrics[split].values())
    path = shipped.save_generator(trained, tmp_path / "g")
    back = shipped.load_generator_file(path)
    assert back.recipe == recipe and back.card["sha256"] == sha256_file(path)
    assert check_loss(back) == pytest.approx(trained.metrics["check_loss"], abs=1e-6)
    again = evaluate_generator(back, tiny_judge.model)
    assert again == {k: trained.metrics[k] for k in ("seen", "heldout")}
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="sha256|SHA-256"):
        shipped.load_generator_file(path)


def test_sampling_needs_a_denoiser_and_the_right_condition(tiny_judge):
    with pytest.raises(ValueError, match="denoiser"):
        sample_pictures(tiny_judge, torch.zeros(2, 64))
    with pytest.raises(ValueError, match="images"):
        from clip_tutorial.generate.trainer import generator_conditions
        generator_conditions(GENERATOR_RECIPES["ch7-decoder"], None)


# ---------------------------------------------------------------- command line
def test_the_command_line_lists_and_refuses_unknown_recipes(capsys):
    assert main(["--list"]) == 0
    assert "ch7-decoder" in capsys.readouterr().out
    assert main(["--recipe", "ch7-nothing"]) == 2
    assert "expected one of" in capsys.readouterr().err


# ---------------------------------------------------------------- the shipped generators
SHIPPED = shipped.list_generators()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_generators_match_their_cards(name):
    """Each shipped file is its current recipe's, its SHA-256 matches, and a cheap measurement repeats its card's."""
    card = shipped.generator_card(name)
    assert card["recipe"] == name and f"--recipe {name}" in card["command"]
    assert GeneratorRecipe.from_dict(card["recipe_settings"]) == GENERATOR_RECIPES[name]
    path = shipped.GENERATORS_DIR / f"{name}.safetensors"
    assert sha256_file(path) == card["sha256"] and path.stat().st_size <= 2_500_000
    trained = shipped.load_generator(name)
    if trained.recipe.kind == "judge":
        scenes = recipe_scenes(trained.recipe, trained.recipe.eval_n, "all", trained.recipe.eval_seed)
        again = judge_accuracy(trained.model, scenes.images, scenes.colours, scenes.shapes)
        for key in ("colour", "shape", "both"):
            assert again[key] == pytest.approx(card["metrics"][key], abs=1.5 / trained.recipe.eval_n)
    else:
        assert card["judge"]["sha256"] == shipped.generator_card(card["judge"]["recipe"])["sha256"]
        assert check_loss(trained) == pytest.approx(card["metrics"]["check_loss"], rel=1e-4)
