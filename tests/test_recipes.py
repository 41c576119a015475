"""Tests of the training recipes and the trained-model cache (with a miniature recipe)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from clip_tutorial.train import recipes, shipped
from clip_tutorial.train import TrainConfig


@pytest.fixture()
def mini(monkeypatch, tmp_path):
    """A recipe small enough to train in a second, registered under its own name, with an empty cache."""
    base = recipes.get_recipe("ch1-demo")
    recipe = dataclasses.replace(
        base, name="mini", n_train=256,
        model=base.model.replace(vision_width=16, transformer_width=16, embed_dim=16),
        train=TrainConfig(steps=4, batch_size=64, warmup_steps=1),
    )
    monkeypatch.setitem(recipes.RECIPES, "mini", recipe)
    monkeypatch.setenv("CLIP_TUTORIAL_CACHE", str(tmp_path))
    monkeypatch.setattr(recipes, "evaluate_zero_shot",
                        lambda model, tokenizer, heldout, styles=(), n=0, seed=0: {"heldout_acc": 0.5, "all_acc": 0.25})
    return recipe


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match="ch1-demo"):
        recipes.get_recipe("no-such-recipe")


def test_fingerprint_follows_every_setting():
    recipe = recipes.get_recipe("ch1-demo")
    assert recipe.fingerprint() == recipes.get_recipe("ch1-demo").fingerprint()
    assert recipe.fingerprint() != dataclasses.replace(recipe, data_seed=1).fingerprint()
    assert recipe.fingerprint() != dataclasses.replace(recipe, train=TrainConfig(steps=700)).fingerprint()


def test_load_or_train_trains_once_then_loads_the_same_weights(mini, tmp_path):
    first = shipped.load_or_train("mini", device="cpu", progress=False)
    assert len(first.history.loss) == mini.train.steps
    assert list(tmp_path.glob("mini-*.safetensors")), "the trained model is cached"
    second = shipped.load_or_train("mini", device="cpu", progress=False)
    assert second.history.loss == [], "a cached model is loaded, not trained"
    assert second.metrics["heldout_acc"] == first.metrics["heldout_acc"]
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a.cpu(), b.cpu()), name
    assert second.tokenizer.itos == first.tokenizer.itos
    third = shipped.load_or_train("mini", device="cpu", progress=False, retrain=True)
    assert len(third.history.loss) == mini.train.steps


def test_train_recipe_uses_the_recipe_and_the_seed_override(mini):
    trained = recipes.train_recipe("mini", device="cpu", progress=False, seed=3)
    assert trained.recipe.data_seed == 3 and trained.recipe.train.seed == 3
    assert trained.model.config.vocab_size == trained.tokenizer.vocab_size
    assert trained.model.config.eot_token_id == trained.tokenizer.eot_id
    assert {"data_seconds", "train_seconds", "heldout_acc", "all_acc"} <= set(trained.metrics)
    assert trained.metrics["eval_n"] == recipes.EVAL_N == 2000, "the card records the evaluation protocol"
    assert trained.metrics["eval_seed"] == recipes.EVAL_SEED
    with pytest.raises(TypeError, match="name"):
        recipes.train_recipe(42)


def test_fingerprint_hashes_the_training_code_that_exists():
    sources = recipes._training_sources()
    assert all(path.is_file() for path in sources), [p for p in sources if not p.is_file()]
    names = {path.name for path in sources}
    assert {"clip.py", "loop.py", "shapesworld.py", "tokenizer.py", "loss.py"} <= names


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_recipe_from_dict_inverts_asdict_and_its_json_round_trip(name):
    import json

    recipe = recipes.RECIPES[name]
    settings = dataclasses.asdict(recipe)
    assert recipes.Recipe.from_dict(settings) == recipe
    assert recipes.Recipe.from_dict(json.loads(json.dumps(settings))) == recipe


def test_recipe_from_dict_fills_new_settings_with_defaults_and_rejects_unknown_ones():
    recipe = recipes.get_recipe("ch1-demo")
    settings = dataclasses.asdict(recipe)
    del settings["max_objects"], settings["train"]["log_every"]  # as in a card written before they existed
    assert recipes.Recipe.from_dict(settings) == recipe
    with pytest.raises(ValueError, match="Recipe"):
        recipes.Recipe.from_dict({**dataclasses.asdict(recipe), "colour_jitter": 0.5})
    with pytest.raises(TypeError, match="data: expected a dict"):
        recipes.Recipe.from_dict([("name", "x")])
