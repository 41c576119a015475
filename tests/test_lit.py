"""LiT (Chapter 7.4): training the text tower against a locked image tower, and Recipe.image_tower."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from clip_tutorial.model import CLIP, CLIPConfig
from clip_tutorial.train.config import TrainConfig
from clip_tutorial.train.loop import train_clip
from clip_tutorial.train.recipes import Recipe, get_recipe, train_recipe
from clip_tutorial.train.state import load_training_state

SMALL = CLIPConfig(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=32, vision_patch_size=8,
                   context_length=8, vocab_size=32, transformer_width=32, transformer_heads=2, transformer_layers=1)


def _data(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=generator), torch.randint(1, 32, (n, 8), generator=generator)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_locked_image_tower_is_bit_identical_and_has_no_optimiser_state(loss: str, tmp_path) -> None:
    images, tokens = _data()
    torch.manual_seed(0)
    model = CLIP(SMALL.replace(init_logit_scale=math.log(10), init_logit_bias=-10.0) if loss == "siglip" else SMALL)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    modes = {"visual": [], "text": []}
    model.visual.register_forward_hook(lambda module, args, out: modes["visual"].append(module.training))
    model.transformer.register_forward_hook(lambda module, args, out: modes["text"].append(module.training))
    config = TrainConfig(steps=3, batch_size=8, warmup_steps=0, lr=1e-2, lock_image=True, loss=loss)
    train_clip(model, images, tokens, config, progress=False, checkpoint_every=3, checkpoint_dir=tmp_path)
    for name, p in model.named_parameters():
        if name.startswith("visual."):
            assert torch.equal(p, before[name]), f"{name} moved although the image tower is locked"
    assert not torch.equal(model.text_projection, before["text_projection"]), "the text tower trains"
    assert not torch.equal(model.token_embedding.weight, before["token_embedding.weight"])
    assert modes["visual"] == [False] * 3 and modes["text"] == [True] * 3, "locked tower in eval mode, text in train"
    state = load_training_state(tmp_path)
    n_text = sum(1 for name, _ in model.named_parameters() if not name.startswith("visual."))
    assert len(state.optimizer["state"]) == n_text, "AdamW keeps no moments for the locked tower"
    assert all(p.requires_grad for p in model.parameters()), "the freeze lasts for the run only"


def test_unlocked_run_moves_the_image_tower() -> None:
    """The control of the test above: the same run without the lock changes the image tower."""
    images, tokens = _data()
    torch.manual_seed(0)
    model = CLIP(SMALL)
    before = model.visual.conv1.weight.detach().clone()
    train_clip(model, images, tokens, TrainConfig(steps=3, batch_size=8, warmup_steps=0, lr=1e-2), progress=False)
    assert not torch.equal(model.visual.conv1.weight, before)


def test_lock_image_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="lock_image"):
        TrainConfig(lock_image=1)


def test_recipe_image_tower_starts_from_the_shipped_tower_and_keeps_it_locked(monkeypatch: pytest.MonkeyPatch) -> None:
    from clip_tutorial.train import recipes
    from clip_tutorial.train.shipped import load_shipped
    monkeypatch.setattr(recipes, "evaluate_zero_shot", lambda *args, **kwargs: {})  # accuracy is not the point here
    demo = get_recipe("ch1-demo")
    recipe = replace(demo, name="test-lit", image_tower="ch1-demo", n_train=256,
                     train=replace(demo.train, steps=2, batch_size=128, warmup_steps=0, lock_image=True))
    trained = train_recipe(recipe, device="cpu", progress=False)
    tower = load_shipped("ch1-demo").model.visual.state_dict()
    for name, weight in trained.model.visual.state_dict().items():
        assert torch.equal(weight, tower[name]), name
    shipped_text = load_shipped("ch1-demo").model.text_projection
    assert not torch.equal(trained.model.text_projection, shipped_text), "the text tower is a fresh one"


def test_recipe_image_tower_checks() -> None:
    demo = get_recipe("ch1-demo")
    assert demo.image_tower is None and demo.caption_noise == 0.0, "existing recipes are unchanged"
    with pytest.raises(ValueError, match="image_tower"):
        replace(demo, image_tower="ch1-demo")  # its own name
    with pytest.raises(ValueError, match="image_tower"):
        replace(demo, name="x", image_tower=3)
    mismatched = replace(demo, name="test-lit-64", image_tower="ch1-demo", n_train=256,
                         model=demo.model.replace(vision_width=32, vision_heads=1),
                         train=replace(demo.train, steps=1, batch_size=128, warmup_steps=0))
    with pytest.raises(ValueError, match="does not fit"):
        train_recipe(mismatched, device="cpu", progress=False)


# -- the supervised tower (Recipe.image_tower="supervised") ---------------------------------------------


TINY_TOWER = {"steps": 4, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.1}


def _tiny_supervised(lock: bool = True, **changes) -> Recipe:
    demo = get_recipe("ch1-demo")
    return replace(demo, name="test-lit-supervised", image_tower="supervised", n_train=64,
                   model=SMALL.replace(image_resolution=32, context_length=12),
                   train=replace(demo.train, steps=2, batch_size=32, warmup_steps=0, lock_image=lock), **changes)


def test_supervised_head_shares_the_tower_and_starts_at_the_logit_scale() -> None:
    from clip_tutorial.train.classifier import CLIPClassifier

    torch.manual_seed(0)
    model = CLIP(SMALL.replace(embed_dim=64))
    classifier = CLIPClassifier.supervised(model, 48)
    assert classifier.visual is model.visual, "training the classifier trains the model's own tower"
    assert classifier.num_classes == 48 and torch.equal(classifier.head.bias, torch.zeros(48))
    lengths = classifier.head.weight.norm(dim=1)  # each row: 64 normals of std scale / 8, length about the scale
    scale = model.logit_scale_value().item()
    assert abs(lengths.mean().item() / scale - 1) < 0.05, (lengths.mean().item(), scale)
    with pytest.raises(TypeError, match="model"):
        CLIPClassifier.supervised(model.visual, 48)
    with pytest.raises(ValueError, match="num_classes"):
        CLIPClassifier.supervised(model, 0)


def test_supervised_tower_learns_the_seen_combinations_and_leaves_the_text_tower(monkeypatch) -> None:
    from clip_tutorial.data import ShapesWorld, heldout_combinations
    from clip_tutorial.train import classifier as classifier_module
    from clip_tutorial.train import recipes

    monkeypatch.setattr(recipes, "SUPERVISED_TOWER", TINY_TOWER)
    data = ShapesWorld(96, split="train", seed=3, heldout=heldout_combinations(16, seed=3))
    seen: dict[str, torch.Tensor] = {}
    real_fine_tune = classifier_module.fine_tune

    def spy(classifier, images, labels, **kwargs):
        seen["labels"], seen["classes"] = labels, classifier.num_classes
        return real_fine_tune(classifier, images, labels, **kwargs)

    monkeypatch.setattr(classifier_module, "fine_tune", spy)
    torch.manual_seed(0)
    model = CLIP(SMALL.replace(image_resolution=32))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    seconds = recipes.train_supervised_tower(model, data, seed=1, progress=False)
    assert seconds > 0 and seen["classes"] == 48, "one class per seen combination"
    for label, objects in zip(seen["labels"].tolist(), data.attributes):  # label i is the i-th seen pair
        assert data.pairs[label] == (objects[0].colour, objects[0].shape)
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == name.startswith("visual."), name


def test_supervised_tower_rejects_scenes_of_several_objects() -> None:
    from clip_tutorial.data import ShapesWorld
    from clip_tutorial.train.recipes import train_supervised_tower

    scenes = ShapesWorld(8, split="train", seed=0, max_objects=4)
    with pytest.raises(ValueError, match="max_objects"):
        train_supervised_tower(CLIP(SMALL.replace(image_resolution=32)), scenes, progress=False)
    with pytest.raises(TypeError, match="data"):
        train_supervised_tower(CLIP(SMALL), [scenes], progress=False)
    with pytest.raises(ValueError, match="max_objects=1 and overlay=0"):
        _tiny_supervised(max_objects=4)
    with pytest.raises(ValueError, match="max_objects=1 and overlay=0"):
        _tiny_supervised(overlay=0.3)


def test_supervised_recipe_is_reproducible_and_locks_the_tower_it_trained(monkeypatch) -> None:
    """train_recipe trains the tower from the recipe's data and seed, then (locked) never moves it."""
    from clip_tutorial.core.device import seed_everything
    from clip_tutorial.data import ShapesWorld, heldout_combinations
    from clip_tutorial.train import recipes

    monkeypatch.setattr(recipes, "SUPERVISED_TOWER", TINY_TOWER)
    monkeypatch.setattr(recipes, "evaluate_zero_shot", lambda *args, **kwargs: {})
    recipe = _tiny_supervised()
    first = train_recipe(recipe, device="cpu", progress=False)
    assert first.metrics["tower_seconds"] > 0
    # the same tower, trained by hand from the same data and seed, without the text tower's run
    tokenizer = recipes.make_tokenizer(recipe.model.context_length)
    seed_everything(recipe.train.seed)
    model = CLIP(recipe.model.replace(vocab_size=tokenizer.vocab_size, eot_token_id=tokenizer.eot_id))
    data = ShapesWorld(recipe.n_train, split="train", seed=recipe.data_seed,
                       heldout=heldout_combinations(recipe.n_heldout, seed=recipe.data_seed))
    untrained = {k: v.clone() for k, v in model.visual.state_dict().items()}
    recipes.train_supervised_tower(model, data, recipe.train.seed, progress=False)
    for name, weight in model.visual.state_dict().items():
        assert torch.equal(first.model.visual.state_dict()[name], weight), name
    assert not torch.equal(untrained["conv1.weight"], model.visual.conv1.weight), "the tower was trained"
    unlocked = train_recipe(_tiny_supervised(lock=False), device="cpu", progress=False)
    assert not torch.equal(unlocked.model.visual.conv1.weight, model.visual.conv1.weight), "the control moves it"


def test_lit_recipes_differ_from_their_controls_only_in_the_lock() -> None:
    from clip_tutorial.train.recipes import SUPERVISED

    for locked, control, tower in (("ch7-lit", "ch7-lit-unlocked", "ch1-demo"),
                                   ("ch7-lit-supervised", "ch7-lit-supervised-unlocked", SUPERVISED)):
        a, b = get_recipe(locked), get_recipe(control)
        assert a.image_tower == b.image_tower == tower and a.train.lock_image and not b.train.lock_image
        assert replace(a, name="x", train=replace(a.train, lock_image=False)) == replace(b, name="x")
        assert replace(a, name="x", image_tower=None, train=replace(a.train, lock_image=False)) \
            == replace(get_recipe("ch1-demo"), name="x"), "otherwise ch1-demo's settings"
