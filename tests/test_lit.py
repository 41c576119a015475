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
